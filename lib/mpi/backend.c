/* Rank 0's side of the MPI backend (exec/backend_internal.h): ex->workers
 * driver slots, each a thread that takes a job from the executor's queue,
 * turns it into a message for the serving rank with the fewest jobs of
 * ours in flight (two slots per rank by default, so a rank holds its next
 * job while it runs one), waits for the reply and finishes the job; one progress thread, which
 * makes the MPI calls of the slots' jobs and of bcasts; and the direct path
 * of async_executor_run (direct_run.c), on which the calling thread sends
 * its job to an idle rank and receives the reply itself.
 *
 * MPI runs at MPI_THREAD_SERIALIZED: any thread may call it, one at a time.
 * b->mpi_mu is held around every MPI call of rank 0 after init; the
 * progress thread holds it for one pass of its loop and never while it
 * sleeps.
 *
 * The progress thread sends with MPI_Isend only, so a large job or a slow
 * rank never holds up the others, polls for results with MPI_Iprobe, and
 * hands each reply to its slot.  It sleeps on a condition variable while
 * nothing is in flight; while jobs are out it polls, spinning briefly and
 * then backing off (mpi_internal.h), so that a long job costs rank 0 almost
 * no CPU.
 *
 * Locking: b->mu guards the send list, the slots' replies, the bcast
 * counters, the ranks' busy counts and `stop`; no MPI call and no executor
 * call is made under it.  Order: mpi_mu before mu. */
#include <errno.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "rank0.h"
#include "exec/executor_internal.h"
#include "exec/future_internal.h"


/* One slot more per serving rank than the rank runs at once, so that a
 * rank finishing a job finds the next already in its MPI queue: with one
 * slot per rank it waited for the reply to reach rank 0, the slot to wake
 * and the progress thread to send again, 4 ms a job on the loaded 2 cores
 * (docs/mpi.md, "Measured"). */
static unsigned default_workers(void)
{
    unsigned per = async__mpi_opts.rank_processes ? async__mpi_opts.rank_processes : 1;
    return async__default_workers(async__mpi_size_ > 1 ? (unsigned)async__mpi_size_ - 1 : 1, per + 1, 0);
}

_Atomic unsigned async__mpi_slot_cap;

/* While async__mpi_slot_cap excludes this slot (a benchmark's A/B), it
 * takes no job; it naps, as it must also see the executor close. */
static void park_while_capped(const slot_t *s)
{
    unsigned cap;
    while ((cap = atomic_load_explicit(&async__mpi_slot_cap, memory_order_relaxed)) && s->index >= cap &&
           !atomic_load(&s->b->ex->priv->closed))
        nanosleep(&(struct timespec){0, 1000000}, NULL);
}

/* Under mu: the serving rank with the fewest jobs of ours (the lowest of
 * equals).  A slot's job goes there, not to a rank fixed per slot: with
 * more slots than ranks, two jobs could otherwise both go to one rank
 * while another idles. */
static int least_busy_rank(const mpib_t *b)
{
    int best = 1;
    for (int r = 2; r < async__mpi_size_; r++)
        if (b->busy[r] < b->busy[best]) best = r;
    return best;
}

/* Queues r for the progress thread; a job's goes to the least busy rank,
 * which becomes its slot's rank until the reply. */
static void enqueue(mpib_t *b, sendreq_t *r, slot_t *s)
{
    r->next = NULL;
    pthread_mutex_lock(&b->mu);
    if (s) {
        s->awaiting = true;
        s->seq = async__mpi_job_seq(r->buf);
        s->rank = r->rank = least_busy_rank(b);
        b->busy[r->rank]++;
    }
    *b->tail = r;
    b->tail = &r->next;
    atomic_store(&b->queued, true);
    pthread_cond_signal(&b->wake);
    pthread_mutex_unlock(&b->mu);
}

/* A send completed: release its buffer and request, or tell its bcast. */
static void sent(mpib_t *b, sendreq_t *r)
{
    if (r->owned) async__free((void *)r->buf);
    bcast_t *bc = r->bc;
    if (!bc) {
        async__free(r);
        return;
    }
    /* A bcast's requests belong to the bcast, which its caller frees once
     * `left` is 0, or the last send frees if the caller stopped waiting: r
     * must not be touched after the decrement. */
    pthread_mutex_lock(&b->mu);
    if (--bc->left == 0) {
        if (bc->abandoned) async__free(bc);
        else pthread_cond_broadcast(&b->sent);
    }
    pthread_mutex_unlock(&b->mu);
}

/* Under mpi_mu: receives and drops the replies of direct runs that gave up
 * at their deadline, which free their ranks.  True if one came. */
static bool drop_orphans(mpib_t *b)
{
    bool any = false;
    for (int r = 1; r < async__mpi_size_; r++) {
        pthread_mutex_lock(&b->mu);
        uint64_t seq = b->orphan[r];
        pthread_mutex_unlock(&b->mu);
        int flag = 0, count = 0;
        MPI_Status st;
        if (seq) MPI_Iprobe(r, TAG_DIRECT, MPI_COMM_WORLD, &flag, &st);
        if (!flag) continue;
        MPI_Get_count(&st, MPI_BYTE, &count);
        /* Received with memory or without, and dropped: the rank is free
         * once the orphan's own reply came (any other answers no run). */
        res_hdr_t h;
        async__free(async__mpi_recv_probed(r, TAG_DIRECT, count, &h, sizeof h));
        any = true;
        if (count < (int)sizeof h || h.seq != seq) {
            atomic_fetch_add_explicit(&async__mpi_stray_replies, 1, memory_order_relaxed);
            continue;
        }
        pthread_mutex_lock(&b->mu);
        b->orphan[r] = 0;
        b->orphans--;
        b->busy[r]--;
        pthread_mutex_unlock(&b->mu);
        any = true;
    }
    return any;
}

/* What a slot finds in its reply when rank 0 had no memory to receive it. */
static char no_memory_reply[1];

_Atomic uint64_t async__mpi_stray_replies;

/* Under mu: the slot a result of count bytes from source with header h
 * answers, or NULL when no job of ours is waiting for it there - a reply
 * too short to name its slot, a slot out of range, idle, waiting on
 * another rank, or for another job (its seq).  Serving ranks never send
 * one; handing it to some slot anyway would give that slot's job a wrong
 * answer now and its own reply to the slot's next job later. */
static slot_t *reply_slot(mpib_t *b, const res_hdr_t *h, int count, int source)
{
    if (count < (int)sizeof *h || h->slot >= b->ex->workers) return NULL;
    slot_t *s = &b->s[h->slot];
    return s->awaiting && s->rank == source && s->seq == h->seq ? s : NULL;
}

/* The progress thread's own state between passes. */
typedef struct progress {
    sendreq_t **pend;  /* sends started, not yet complete */
    size_t npend, cap;
    size_t inflight;   /* jobs sent whose reply has not come */
    async__mpi_backoff_t backoff;
    int64_t *sent_at;  /* per slot: when its job was sent, for backoff.job_ns; NULL without memory */
} progress_t;

/* Under mpi_mu: starts the sends of list.  A send that finds no room in
 * the pending list (no memory to grow it) is waited for here. */
static void start_sends(mpib_t *b, progress_t *p, sendreq_t *list)
{
    for (sendreq_t *r = list, *next; r; r = next) {
        next = r->next;
        if (p->npend == p->cap) {
            size_t nc = p->cap ? p->cap * 2 : 64;
            sendreq_t **np = async__malloc(nc * sizeof *np);
            if (np) {
                if (p->pend) memcpy(np, p->pend, p->npend * sizeof *np);
                async__free(p->pend);
                p->pend = np;
                p->cap = nc;
            }
        }
        if (r->started) {
            /* A direct run's send, handed over (direct_run.c): its reply is
             * an orphan's, which drop_orphans takes. */
        } else {
            MPI_Isend(r->buf, (int)r->len, MPI_BYTE, r->rank, r->tag, MPI_COMM_WORLD, &r->req);
        }
        if (r->tag == TAG_JOB && !r->started) {
            p->inflight++;
            if (p->sent_at) p->sent_at[r->slot] = async_now();
        }
        if (p->npend < p->cap) p->pend[p->npend++] = r;
        else {
            MPI_Wait(&r->req, MPI_STATUS_IGNORE);
            sent(b, r);
        }
    }
}

/* Under mpi_mu: hands every result that has come to its slot, or drops it
 * when it answers no job of ours.  True if one came. */
static bool take_results(mpib_t *b, progress_t *p)
{
    bool any = false;
    for (;;) {
        int flag = 0, count = 0;
        MPI_Status st;
        MPI_Iprobe(MPI_ANY_SOURCE, TAG_RESULT, MPI_COMM_WORLD, &flag, &st);
        if (!flag) return any;
        any = true;
        MPI_Get_count(&st, MPI_BYTE, &count);
        /* Without memory for the reply the header still names its slot,
         * which gets no_memory_reply: async__mpi_reply_outcome fails its
         * job with ASYNC_ENOMEM. */
        res_hdr_t h;
        char *buf = async__mpi_recv_probed(st.MPI_SOURCE, TAG_RESULT, count, &h, sizeof h);
        pthread_mutex_lock(&b->mu);
        slot_t *s = reply_slot(b, &h, count, st.MPI_SOURCE);
        if (!s) { /* never sent by a serving rank for a job of ours: dropped */
            pthread_mutex_unlock(&b->mu);
            async__free(buf);
            atomic_fetch_add_explicit(&async__mpi_stray_replies, 1, memory_order_relaxed);
            continue;
        }
        b->busy[s->rank]--;
        s->awaiting = false;
        s->reply = buf ? buf : no_memory_reply;
        s->reply_len = buf ? (size_t)count : 0;
        atomic_store(&s->ready, true);
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&b->mu);
        if (p->sent_at && p->sent_at[h.slot]) {
            int64_t took = async_now() - p->sent_at[h.slot];
            p->backoff.job_ns = p->backoff.job_ns ? (7 * p->backoff.job_ns + took) / 8 : took;
        }
        p->inflight--;
    }
}

/* Under mpi_mu: releases the sends that have completed.  True if one had. */
static bool reap_sends(mpib_t *b, progress_t *p)
{
    bool any = false;
    for (size_t i = 0; i < p->npend;) {
        int done = 0;
        MPI_Test(&p->pend[i]->req, &done, MPI_STATUS_IGNORE);
        if (!done) {
            i++;
            continue;
        }
        sendreq_t *r = p->pend[i];
        p->pend[i] = p->pend[--p->npend];
        sent(b, r);
        any = true;
    }
    return any;
}

static void *progress_main(void *arg)
{
    mpib_t *b = arg;
    /* Its naps are short: without this, Linux's default 50 us timer slack
     * stretches each of them. */
    prctl(PR_SET_TIMERSLACK, 1000UL);
    progress_t p = {.sent_at = async__calloc(b->ex->workers, sizeof *p.sent_at)};
    for (;;) {
        /* Taken before the send list, so that a direct run, which checks
         * under mpi_mu that the list is empty, cannot send ahead of a job or
         * bcast already taken from it (the ranks rely on MPI's order). */
        pthread_mutex_lock(&b->mpi_mu);
        pthread_mutex_lock(&b->mu);
        sendreq_t *list = b->head;
        b->head = NULL;
        b->tail = &b->head;
        atomic_store(&b->queued, false);
        bool stop = b->stop;
        unsigned orphans = b->orphans;
        pthread_mutex_unlock(&b->mu);
        start_sends(b, &p, list);
        bool active = list != NULL;
        active |= take_results(b, &p);
        active |= reap_sends(b, &p);
        if (orphans && drop_orphans(b)) active = true;
        pthread_mutex_unlock(&b->mpi_mu);
        bool idle = !p.inflight && !p.npend && !orphans;
        if (stop && idle) break;
        if (active) {
            async__mpi_active(&p.backoff);
            continue;
        }
        if (idle) {
            pthread_mutex_lock(&b->mu);
            while (!b->head && !b->stop && !b->orphans) pthread_cond_wait(&b->wake, &b->mu);
            pthread_mutex_unlock(&b->mu);
            async__mpi_active(&p.backoff);
            continue;
        }
        async__mpi_nap(&p.backoff);
    }
    /* Every job has its reply and no direct run is left (join waited for
     * them): release the serving ranks. */
    pthread_mutex_lock(&b->mpi_mu);
    for (int r = 1; r < async__mpi_size_; r++) MPI_Send(NULL, 0, MPI_BYTE, r, TAG_STOP, MPI_COMM_WORLD);
    pthread_mutex_unlock(&b->mpi_mu);
    async__free(p.pend);
    async__free(p.sent_at);
    return NULL;
}

/* With rank_processes a rank's pool kills a job at its deadline and its
 * reply says so ("... was killed ..."), which is the better answer: the
 * slot gives the rank this long past the deadline before it gives up on
 * it (a rank stopped or stuck). */
#define POOL_GRACE_NS ASYNC_SEC(1)

/* When a slot fails its submit if no reply came: the deadline, or with
 * rank pools a grace period after it (saturated). */
static int64_t expiry(const async__job_t *job)
{
    if (!async__mpi_opts.rank_processes) return job->deadline;
    return job->deadline > ASYNC_FOREVER - 1 - POOL_GRACE_NS ? ASYNC_FOREVER - 1 : job->deadline + POOL_GRACE_NS;
}

/* Why a job still on rank fails at its deadline. */
static void expiry_message(char *msg, size_t cap, int rank)
{
    if (async__mpi_opts.rank_processes)
        snprintf(msg, cap,
                 "rank %d did not answer within 1 s of the job's deadline (its process pool stops a job at its "
                 "deadline: the rank is stopped or stuck); its result, if it comes, is dropped",
                 rank);
    else
        snprintf(msg, cap,
                 "still running on rank %d at its deadline (without rank_processes a rank cannot stop a job: "
                 "it runs on, its result is dropped)",
                 rank);
}

/* Fails a submit still on rank at its deadline; the slot finishes the job
 * with the late reply, which the final future drops. */
static void expire(async__job_t *job, int rank)
{
    char msg[ASYNC_FUTURE_MSG_MAX];
    expiry_message(msg, sizeof msg, rank);
    async__future_finish(job->owner, FS_FAILED, ASYNC_ETIMEDOUT, msg, NULL, 0, false);
}

static void *slot_main(void *arg)
{
    slot_t *s = arg;
    mpib_t *b = s->b;
    async_executor_t *ex = b->ex;
    async__job_t *job;
    for (;;) {
        park_while_capped(s);
        if (async__exec_take(ex, s->index, &job)) break;
        async__outcome_t oc = {0};
        char *m;
        size_t len;
        int r = async__mpi_job_message(s->index, &job->rows, job->var_ok, job->deadline, &m, &len, oc.msg);
        if (r) {
            oc.err = r;
            async__exec_finish(ex, job, &oc);
            continue;
        }
        sendreq_t *q = async__calloc(1, sizeof *q);
        if (!q) {
            async__free(m);
            oc.err = ASYNC_ENOMEM;
            snprintf(oc.msg, sizeof oc.msg, "no memory to send the job");
            async__exec_finish(ex, job, &oc);
            continue;
        }
        *q = (sendreq_t){.tag = TAG_JOB, .slot = s->index, .buf = m, .len = len, .owned = true};
        enqueue(b, q, s);
        /* A submit with a deadline fails at it, as on the thread backend,
         * whatever its rank does: a rank without a pool cannot stop a job,
         * and a rank that is stopped (SIGSTOP) or stuck sends nothing (a
         * rank with a pool gets POOL_GRACE_NS to say it killed the job).  The
         * slot still waits for the reply (its job's rows live until then,
         * and a reply for this slot must not reach its next job) and
         * finishes the job with it, which then finds the future final and
         * drops the result.  A map chunk with a deadline (the map's
         * timeout_ns) fails at it too: unlike a thread, the rank writes
         * only into its reply, which the slot copies into the caller's out;
         * so the slot finishes the chunk at once (the map may then end and
         * its out go away) and drops the late reply unread. */
        bool watched = job->deadline != ASYNC_FOREVER, chunk_gone = false;
        int64_t give_up = watched ? expiry(job) : ASYNC_FOREVER;
        pthread_mutex_lock(&b->mu);
        while (!s->reply) {
            if (!watched) {
                pthread_cond_wait(&s->cv, &b->mu);
                continue;
            }
            if (async__cond_wait_dl(&s->cv, &b->mu, give_up) != ETIMEDOUT || s->reply) continue;
            watched = false;
            int rank = s->rank;
            pthread_mutex_unlock(&b->mu); /* finishing runs callbacks */
            if (async__exec_expirable(job)) {
                expire(job, rank);
            } else {
                async__outcome_t late = {.err = ASYNC_ETIMEDOUT};
                expiry_message(late.msg, sizeof late.msg, rank);
                async__exec_finish(ex, job, &late);
                chunk_gone = true;
            }
            pthread_mutex_lock(&b->mu);
        }
        char *reply = s->reply;
        size_t rlen = s->reply_len;
        s->reply = NULL;
        atomic_store(&s->ready, false);
        pthread_mutex_unlock(&b->mu);
        if (chunk_gone) { /* finished at its deadline: job may be freed */
            if (reply != no_memory_reply) async__free(reply);
            continue;
        }
        const char *rows;
        size_t n;
        async__mpi_reply_outcome(reply == no_memory_reply ? NULL : reply, rlen, job->rows.count, job->rows.out_size,
                                 &oc, &rows, &n);
        if (n && job->rows.out) memcpy(job->rows.out, rows, n);
        async__exec_finish(ex, job, &oc);
        if (reply != no_memory_reply) async__free(reply);
    }
    return NULL;
}

static void join(async_executor_t *ex)
{
    mpib_t *b = ex->backend;
    for (unsigned i = 0; i < b->started; i++) pthread_join(b->s[i].tid, NULL);
    b->started = 0;
    pthread_mutex_lock(&b->mu);
    b->joining = true;
    while (b->directs) pthread_cond_wait(&b->direct_idle, &b->mu);
    b->stop = true;
    pthread_cond_signal(&b->wake);
    pthread_mutex_unlock(&b->mu);
    pthread_join(b->progress, NULL);
}

static void destroy(mpib_t *b, unsigned slots)
{
    for (unsigned i = 0; i < slots; i++) pthread_cond_destroy(&b->s[i].cv);
    pthread_cond_destroy(&b->wake);
    pthread_cond_destroy(&b->sent);
    pthread_cond_destroy(&b->direct_idle);
    pthread_mutex_destroy(&b->mu);
    pthread_mutex_destroy(&b->mpi_mu);
    async__free(b->busy);
    async__free(b->orphan);
    async__free(b);
}

/* The serving ranks exit with the first MPI executor: there is no second. */
static _Atomic bool used;

static int start(async_executor_t *ex)
{
    if (async__mpi_rank_ != 0) return ASYNC_ENOTSUP; /* async_mpi_init first */
    if (ex->opts.initializer) return ASYNC_ENOTSUP;
    async_executor_t *none = NULL;
    if (!atomic_compare_exchange_strong(&async__mpi_ex, &none, ex)) return ASYNC_EBUSY;
    if (atomic_exchange(&used, true)) { /* the serving ranks exited with the first */
        atomic_store(&async__mpi_ex, NULL);
        return ASYNC_ECLOSED;
    }
    mpib_t *b = async__calloc(1, sizeof *b + ex->workers * sizeof b->s[0]);
    if (b) {
        b->busy = async__calloc((size_t)async__mpi_size_, sizeof *b->busy);
        b->orphan = async__calloc((size_t)async__mpi_size_, sizeof *b->orphan);
    }
    if (!b || !b->busy || !b->orphan) {
        if (b) {
            async__free(b->busy);
            async__free(b->orphan);
        }
        async__free(b);
        atomic_store(&async__mpi_ex, NULL);
        atomic_store(&used, false);
        return ASYNC_ENOMEM;
    }
    b->ex = ex;
    b->tail = &b->head;
    pthread_mutex_init(&b->mpi_mu, NULL);
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->direct_idle, NULL);
    pthread_cond_init(&b->wake, NULL);
    async__cond_init_monotonic(&b->sent, false); /* bcast deadlines */
    for (unsigned i = 0; i < ex->workers; i++) {
        b->s[i] = (slot_t){.b = b, .index = i, .rank = 1};
        async__cond_init_monotonic(&b->s[i].cv, false); /* submit deadlines */
    }
    ex->backend = b;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int r = pthread_create(&b->progress, NULL, progress_main, b) ? ASYNC_EAGAIN : 0;
    bool progress = !r;
    for (unsigned i = 0; !r && i < ex->workers; i++) {
        if (pthread_create(&b->s[i].tid, NULL, slot_main, &b->s[i])) r = ASYNC_EAGAIN;
        else b->started++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r) {
        async_executor_shutdown(ex, false, true);
        if (progress) join(ex); /* stops the serving ranks too */
        destroy(b, ex->workers);
        ex->backend = NULL;
        atomic_store(&async__mpi_ex, NULL);
        if (!progress) atomic_store(&used, false); /* the ranks still serve */
    }
    return r;
}

void async__mpi_stop_all(void)
{
    /* Only when no executor ever started: one that did stopped the ranks
     * when it was freed.  No progress thread exists then, so this thread
     * may call MPI. */
    if (atomic_exchange(&used, true)) return;
    for (int r = 1; r < async__mpi_size_; r++) MPI_Send(NULL, 0, MPI_BYTE, r, TAG_STOP, MPI_COMM_WORLD);
}

static void free_backend(async_executor_t *ex)
{
    if (ex->backend) destroy(ex->backend, ex->workers);
    ex->backend = NULL;
    atomic_store(&async__mpi_ex, NULL);
}

int async__mpi_share(async_executor_t *ex, const void *data, size_t size, int64_t deadline)
{
    if (!ex || ex->ops != &async__mpi_backend || !data || !size || size > INT32_MAX)
        return ASYNC_EINVAL;
    if (atomic_load(&ex->priv->closed)) return ASYNC_ECLOSED;
    /* Nothing can be sent by a deadline already past: refuse before the
     * data is registered, so that nothing goes on behind the caller. */
    if (deadline != ASYNC_FOREVER && deadline <= async_now()) return ASYNC_ETIMEDOUT;
    mpib_t *b = ex->backend;
    int n = async__mpi_size_ - 1;
    bcast_t *bc = async__calloc(1, sizeof *bc + (size_t)n * 2 * sizeof bc->q[0]);
    if (!bc) return ASYNC_ENOMEM;
    int id = async__mpi_data_add((void *)data, false);
    if (id < 0) {
        async__free(bc);
        return id;
    }
    bc->h = (share_hdr_t){.id = (uint32_t)id, .size = size};
    bc->left = (unsigned)n * 2;
    /* Enqueued under one lock hold so that another bcast cannot interleave
     * its header between ours and our data (the ranks read them in pairs). */
    pthread_mutex_lock(&b->mu);
    for (int i = 0; i < n; i++) {
        bc->q[2 * i] = (sendreq_t){.rank = i + 1, .tag = TAG_SHARE, .buf = &bc->h, .len = sizeof bc->h, .bc = bc};
        bc->q[2 * i + 1] = (sendreq_t){.rank = i + 1, .tag = TAG_SHARE_DATA, .buf = data, .len = size, .bc = bc};
        *b->tail = &bc->q[2 * i];
        bc->q[2 * i].next = &bc->q[2 * i + 1];
        b->tail = &bc->q[2 * i + 1].next;
    }
    atomic_store(&b->queued, true);
    pthread_cond_signal(&b->wake);
    int r = 0;
    while (bc->left && !r)
        if (async__cond_wait_dl(&b->sent, &b->mu, deadline) == ETIMEDOUT && bc->left) r = ASYNC_ETIMEDOUT;
    /* Timed out: the sends go on (MPI cannot take back a started send);
     * the progress thread frees the bcast after the last one. */
    if (r) bc->abandoned = true;
    pthread_mutex_unlock(&b->mu);
    if (!r) async__free(bc);
    return r;
}

const async__backend_ops_t async__mpi_backend = {
    .name = "mpi",
    .default_workers = default_workers,
    .start = start,
    .join = join,
    .terminate = NULL,
    .free = free_backend,
    .run = async__mpi_run_direct,
};
