/* Rank 0's side of the MPI backend (exec/backend_internal.h): ex->workers
 * driver slots, each a thread that takes a job from the executor's queue,
 * turns it into a message for the serving rank with the fewest jobs of
 * ours in flight (two slots per rank by default, so a rank holds its next
 * job while it runs one), waits for the reply and finishes the job; one progress thread, which
 * makes the MPI calls of the slots' jobs and of bcasts; and the direct path
 * of async_executor_run (run_direct), on which the calling thread sends its
 * job to an idle rank and receives the reply itself.
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
#include <dlfcn.h>
#include <mpi.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "mpi_internal.h"
#include "exec/executor_internal.h"
#include "exec/future_internal.h"

typedef struct sendreq {
    struct sendreq *next;
    int rank, tag;
    unsigned slot;       /* a job's driver slot */
    const void *buf;
    size_t len;
    bool owned;          /* free buf once sent */
    struct bcast *bc;    /* the bcast this send belongs to, or NULL */
    MPI_Request req;
} sendreq_t;

/* One async_mpi_bcast: a header and the data for every serving rank.  Its
 * caller waits until `left` is 0, or until its deadline: then it sets
 * `abandoned` and the last send to complete frees the bcast (under mu). */
typedef struct bcast {
    unsigned left;
    bool abandoned;
    share_hdr_t h;
    sendreq_t q[];
} bcast_t;

typedef struct slot {
    struct mpib *b;
    unsigned index;
    int rank;      /* under b->mu: the rank its job in flight went to */
    bool awaiting; /* under b->mu: its job is sent and its reply still to come */
    pthread_t tid;
    pthread_cond_t cv;
    char *reply; /* under b->mu */
    size_t reply_len;
    _Atomic bool ready; /* reply is set: lets the slot spin before it sleeps */
} slot_t;

typedef struct mpib {
    async_executor_t *ex;
    pthread_mutex_t mpi_mu; /* held around every MPI call */
    pthread_mutex_t mu;
    pthread_cond_t wake; /* the progress thread waits here for sends */
    pthread_cond_t sent; /* bcast callers wait here */
    sendreq_t *head, **tail;
    _Atomic bool queued; /* head is non-empty: lets the progress thread spin */
    bool stop;
    /* Per rank (index 0 unused), under mu: jobs sent to it whose reply has
     * not come, by slots and direct runs.  A direct run takes only a rank
     * at 0, so that it never waits behind another job. */
    unsigned *busy;
    /* Per rank, under mu: a direct run gave up at its deadline and its
     * reply is still to come; the progress thread receives and drops it
     * (and only then is the rank idle).  orphans counts them. */
    bool *orphan;
    unsigned orphans;
    unsigned directs;     /* direct runs under way */
    bool joining;         /* join() began: no new direct run */
    pthread_cond_t direct_idle; /* join waits here for directs == 0 */
    pthread_t progress;
    unsigned started; /* slot threads */
    slot_t s[];
} mpib_t;

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
        bool waiting = b->orphan[r];
        pthread_mutex_unlock(&b->mu);
        int flag = 0, count = 0;
        MPI_Status st;
        if (waiting) MPI_Iprobe(r, TAG_DIRECT, MPI_COMM_WORLD, &flag, &st);
        if (!flag) continue;
        MPI_Get_count(&st, MPI_BYTE, &count);
        /* Received with memory or without, and dropped: the rank is free. */
        async__free(async__mpi_recv_probed(r, TAG_DIRECT, count, NULL, 0));
        pthread_mutex_lock(&b->mu);
        b->orphan[r] = false;
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
 * too short to name its slot, a slot out of range, idle, or waiting on
 * another rank.  Serving ranks never send one; handing it to some slot
 * anyway would give that slot's job a wrong answer now and its own reply
 * to the slot's next job later. */
static slot_t *reply_slot(mpib_t *b, const res_hdr_t *h, int count, int source)
{
    if (count < (int)sizeof *h || h->slot >= b->ex->workers) return NULL;
    slot_t *s = &b->s[h->slot];
    return s->awaiting && s->rank == source ? s : NULL;
}

static void *progress_main(void *arg)
{
    mpib_t *b = arg;
    /* Its naps are short: without this, Linux's default 50 us timer slack
     * stretches each of them. */
    prctl(PR_SET_TIMERSLACK, 1000UL);
    sendreq_t **pend = NULL;
    size_t npend = 0, cap = 0;
    size_t inflight = 0;
    async__mpi_backoff_t backoff = {0};
    /* When each slot's job was sent, for the typical job time (backoff). */
    int64_t *sent_at = async__calloc(b->ex->workers, sizeof *sent_at);
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
        bool active = list != NULL;
        for (sendreq_t *r = list, *next; r; r = next) {
            next = r->next;
            if (npend == cap) {
                size_t nc = cap ? cap * 2 : 64;
                sendreq_t **np = async__malloc(nc * sizeof *np);
                if (np) {
                    if (pend) memcpy(np, pend, npend * sizeof *np);
                    async__free(pend);
                    pend = np;
                    cap = nc;
                }
            }
            MPI_Isend(r->buf, (int)r->len, MPI_BYTE, r->rank, r->tag, MPI_COMM_WORLD, &r->req);
            if (r->tag == TAG_JOB) {
                inflight++;
                if (sent_at) sent_at[r->slot] = async_now();
            }
            if (npend < cap) pend[npend++] = r;
            else { /* no memory for the list: wait for this one here */
                MPI_Wait(&r->req, MPI_STATUS_IGNORE);
                sent(b, r);
            }
        }
        for (;;) {
            int flag = 0, count = 0;
            MPI_Status st;
            MPI_Iprobe(MPI_ANY_SOURCE, TAG_RESULT, MPI_COMM_WORLD, &flag, &st);
            if (!flag) break;
            MPI_Get_count(&st, MPI_BYTE, &count);
            /* Without memory for the reply the header still names its
             * slot, which gets no_memory_reply: parse fails its job with
             * ASYNC_ENOMEM. */
            res_hdr_t h;
            char *buf = async__mpi_recv_probed(st.MPI_SOURCE, TAG_RESULT, count, &h, sizeof h);
            pthread_mutex_lock(&b->mu);
            slot_t *s = reply_slot(b, &h, count, st.MPI_SOURCE);
            if (!s) { /* never sent by a serving rank for a job of ours: dropped */
                pthread_mutex_unlock(&b->mu);
                async__free(buf);
                atomic_fetch_add_explicit(&async__mpi_stray_replies, 1, memory_order_relaxed);
                active = true;
                continue;
            }
            b->busy[s->rank]--;
            s->awaiting = false;
            s->reply = buf ? buf : no_memory_reply;
            s->reply_len = buf ? (size_t)count : 0;
            atomic_store(&s->ready, true);
            pthread_cond_signal(&s->cv);
            pthread_mutex_unlock(&b->mu);
            if (sent_at && sent_at[h.slot]) {
                int64_t took = async_now() - sent_at[h.slot];
                backoff.job_ns = backoff.job_ns ? (7 * backoff.job_ns + took) / 8 : took;
            }
            inflight--;
            active = true;
        }
        for (size_t i = 0; i < npend;) {
            int done = 0;
            MPI_Test(&pend[i]->req, &done, MPI_STATUS_IGNORE);
            if (!done) {
                i++;
                continue;
            }
            sendreq_t *r = pend[i];
            pend[i] = pend[--npend];
            sent(b, r);
            active = true;
        }
        if (orphans && drop_orphans(b)) active = true;
        pthread_mutex_unlock(&b->mpi_mu);
        if (stop && !inflight && !npend && !orphans) break;
        if (active) {
            async__mpi_active(&backoff);
            continue;
        }
        if (!inflight && !npend && !orphans) {
            pthread_mutex_lock(&b->mu);
            while (!b->head && !b->stop && !b->orphans) pthread_cond_wait(&b->wake, &b->mu);
            pthread_mutex_unlock(&b->mu);
            async__mpi_active(&backoff);
            continue;
        }
        async__mpi_nap(&backoff);
    }
    /* Every job has its reply and no direct run is left (join waited for
     * them): release the serving ranks. */
    pthread_mutex_lock(&b->mpi_mu);
    for (int r = 1; r < async__mpi_size_; r++) MPI_Send(NULL, 0, MPI_BYTE, r, TAG_STOP, MPI_COMM_WORLD);
    pthread_mutex_unlock(&b->mpi_mu);
    async__free(pend);
    async__free(sent_at);
    return NULL;
}

/* Builds the message of a job of rows for slot (DIRECT_SLOT for a direct
 * run); on error fills why. */
static int build(uint32_t slot, const async__rows_t *rw, bool var_ok, int64_t deadline, char **out,
                 size_t *len, char why[ASYNC_FUTURE_MSG_MAX])
{
    job_hdr_t h = {.slot = slot, .var_ok = var_ok, .count = rw->count,
                   .in_size = rw->in_size, .out_size = rw->out_size, .remaining = NO_DEADLINE};
    if (async__mpi_fn_index(rw->fn, &h.fn)) {
        Dl_info di;
        const char *name = dladdr((void *)rw->fn, &di) && di.dli_sname ? di.dli_sname : "(no symbol)";
        snprintf(why, ASYNC_FUTURE_MSG_MAX,
                 "work function %s at %p is not registered for MPI: call async_mpi_register or "
                 "ASYNC_MPI_WORK on every rank",
                 name, (void *)rw->fn);
        return ASYNC_EINVAL;
    }
    if (async__mpi_ctx_index(rw->ctx, &h.ctx)) {
        snprintf(why, ASYNC_FUTURE_MSG_MAX,
                 "ctx %p is neither NULL nor data registered with async_mpi_register_data or "
                 "async_mpi_bcast",
                 rw->ctx);
        return ASYNC_EINVAL;
    }
    size_t in_bytes = rw->in ? rw->in_size * rw->count : 0;
    if (!rw->in) h.in_size = 0;
    if (in_bytes > (size_t)INT32_MAX - sizeof h ||
        (rw->out_size && rw->count > ((size_t)INT32_MAX - 512) / rw->out_size)) {
        snprintf(why, ASYNC_FUTURE_MSG_MAX, "the job's input or output exceeds 2 GiB, MPI's limit");
        return ASYNC_EINVAL;
    }
    if (deadline != ASYNC_FOREVER) {
        int64_t left = deadline - async_now();
        h.remaining = left > 0 ? left : 1;
    }
    char *m = async__malloc(sizeof h + in_bytes);
    if (!m) {
        snprintf(why, ASYNC_FUTURE_MSG_MAX, "no memory for the job's message");
        return ASYNC_ENOMEM;
    }
    memcpy(m, &h, sizeof h);
    if (in_bytes) memcpy(m + sizeof h, rw->in, in_bytes);
    *out = m;
    *len = sizeof h + in_bytes;
    return 0;
}

/* Fills oc from a reply (NULL: rank 0 had no memory to receive it) to a
 * job of count rows of out_size bytes, and
 * points *rows at the output rows in it (*rows_len bytes, at most count *
 * out_size; 0 for a failed job or a variable result, which oc->var_out
 * points at instead). */
static void parse(const char *reply, size_t len, size_t count, size_t out_size, async__outcome_t *oc,
                  const char **rows, size_t *rows_len)
{
    memset(oc, 0, sizeof *oc);
    *rows = NULL;
    *rows_len = 0;
    res_hdr_t h;
    if (!reply) {
        oc->err = ASYNC_ENOMEM;
        snprintf(oc->msg, sizeof oc->msg, "rank 0: no memory for a job's reply");
        return;
    }
    if (len < sizeof h) {
        oc->err = ASYNC_EIO;
        snprintf(oc->msg, sizeof oc->msg, "a malformed reply (%zu bytes)", len);
        return;
    }
    memcpy(&h, reply, sizeof h);
    size_t ml = h.msg_len < sizeof oc->msg - 1 ? h.msg_len : sizeof oc->msg - 1;
    if (sizeof h + h.msg_len + h.data_size != len) {
        oc->err = ASYNC_EIO;
        snprintf(oc->msg, sizeof oc->msg, "a malformed reply (%zu bytes)", len);
        return;
    }
    memcpy(oc->msg, reply + sizeof h, ml);
    oc->msg[ml] = '\0';
    oc->err = h.err;
    oc->failed_row = h.failed_row;
    oc->result_size = h.result_size;
    const char *data = reply + sizeof h + h.msg_len;
    if (h.err) return;
    if (h.var) {
        oc->var_out = (void *)data; /* copied by async__exec_finish */
        oc->var_size = h.data_size;
        oc->var_owned = false;
        return;
    }
    size_t cap = out_size * count;
    size_t n = h.data_size < cap ? h.data_size : cap;
    *rows = data;
    *rows_len = n;
    if (count == 1) oc->result_size = n;
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
        int r = build(s->index, &job->rows, job->var_ok, job->deadline, &m, &len, oc.msg);
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
        pthread_mutex_lock(&b->mu);
        while (!s->reply) pthread_cond_wait(&s->cv, &b->mu);
        char *reply = s->reply;
        size_t rlen = s->reply_len;
        s->reply = NULL;
        atomic_store(&s->ready, false);
        pthread_mutex_unlock(&b->mu);
        const char *rows;
        size_t n;
        parse(reply == no_memory_reply ? NULL : reply, rlen, job->rows.count, job->rows.out_size, &oc, &rows,
              &n);
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
        pthread_cond_init(&b->s[i].cv, NULL);
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

/* --- the direct path of async_executor_run ------------------------------------
 *
 * A run on a plain thread, with the queue empty and a rank that has nothing
 * of ours to do, skips the driver slot, the progress thread and the future:
 * the calling thread sends the job to the rank itself, polls for its reply
 * (tag TAG_DIRECT, which nobody else receives) and copies the result into
 * the caller's buffer.  The trip is then MPI's latency and the rank's run,
 * with no thread of rank 0 to wake on either side.  While it waits the
 * thread spins, then naps as the progress thread does (mpi_internal.h).
 * At the job's deadline it stops waiting (a rank without a pool cannot stop
 * the job) and leaves the reply to the progress thread, which drops it. */

_Atomic uint64_t async__mpi_direct_runs;

/* Claims an idle rank for a direct run: 0 when there is none, the pool is
 * closing, or sends are queued for the progress thread. */
static int claim_rank(mpib_t *b)
{
    int rank = 0;
    pthread_mutex_lock(&b->mu);
    if (!b->joining && !b->stop && !b->head)
        for (int r = 1; r < async__mpi_size_ && !rank; r++)
            if (!b->busy[r]) rank = r;
    if (rank) {
        b->busy[rank]++;
        b->directs++;
    }
    pthread_mutex_unlock(&b->mu);
    return rank;
}

/* The direct run on rank is over; orphaned: its reply is still to come,
 * for the progress thread to drop, and the rank stays busy until then. */
static void release_rank(mpib_t *b, int rank, bool orphaned)
{
    pthread_mutex_lock(&b->mu);
    if (orphaned) {
        b->orphan[rank] = true;
        b->orphans++;
        pthread_cond_signal(&b->wake);
    } else {
        b->busy[rank]--;
    }
    if (!--b->directs && b->joining) pthread_cond_broadcast(&b->direct_idle);
    pthread_mutex_unlock(&b->mu);
}

/* Sends the job message under mpi_mu, unless sends are queued for the
 * progress thread (a bcast: it must reach the rank first, and MPI keeps
 * the order of sends, not of enqueues).  False when it did not send. */
static bool send_direct(mpib_t *b, int rank, const char *m, size_t len, MPI_Request *req)
{
    pthread_mutex_lock(&b->mpi_mu);
    pthread_mutex_lock(&b->mu);
    bool clear = !b->head;
    pthread_mutex_unlock(&b->mu);
    if (clear) MPI_Isend(m, (int)len, MPI_BYTE, rank, TAG_JOB, MPI_COMM_WORLD, req);
    pthread_mutex_unlock(&b->mpi_mu);
    return clear;
}

/* Polls until the send has completed and the reply has come.  Returns 0
 * with the reply in *reply (OUT, async__malloc'd, *len bytes);
 * ASYNC_ENOMEM when it came but no memory could hold it (it was received
 * and dropped: the rank is free); ASYNC_ETIMEDOUT when deadline passed
 * first (the send has completed then: the job is on the rank, its reply
 * still to come). */
static int await_direct(mpib_t *b, int rank, MPI_Request *req, int64_t deadline, char **reply, size_t *len)
{
    async__mpi_backoff_t backoff = {0};
    bool sent_all = false;
    for (;;) {
        *reply = NULL;
        pthread_mutex_lock(&b->mpi_mu);
        if (!sent_all) {
            int done = 0;
            MPI_Test(req, &done, MPI_STATUS_IGNORE);
            sent_all = done;
        }
        MPI_Status st;
        int flag = 0;
        if (sent_all) MPI_Iprobe(rank, TAG_DIRECT, MPI_COMM_WORLD, &flag, &st);
        int count = 0;
        if (flag) {
            MPI_Get_count(&st, MPI_BYTE, &count);
            *reply = async__mpi_recv_probed(rank, TAG_DIRECT, count, NULL, 0);
        }
        pthread_mutex_unlock(&b->mpi_mu);
        if (flag) {
            *len = (size_t)count;
            return *reply ? 0 : ASYNC_ENOMEM;
        }
        if (sent_all && deadline != ASYNC_FOREVER && async_now() > deadline) return ASYNC_ETIMEDOUT;
        async__mpi_nap(&backoff);
    }
}

/* The caller's answer from a reply, as async_executor_run gives it on the
 * ordinary path: the result copied only for a job that succeeded in time. */
static int answer(const char *reply, size_t rlen, const async_job_t *job, int64_t deadline, void *out,
                  size_t *out_len, char *msg, size_t msg_cap)
{
    async__outcome_t oc;
    const char *rows;
    size_t n;
    parse(reply, rlen, 1, job->out_size, &oc, &rows, &n);
    /* async__exec_finish's rule: a result past the deadline is a failure. */
    if (!oc.err && deadline != ASYNC_FOREVER && async_now() > deadline) {
        oc.err = ASYNC_ETIMEDOUT;
        snprintf(oc.msg, sizeof oc.msg, "finished after its deadline");
    }
    size_t size = 0;
    if (!oc.err) {
        const char *data = oc.var_out ? oc.var_out : rows;
        size = oc.var_out ? oc.var_size : oc.result_size;
        size_t copy = size < job->out_size ? size : job->out_size;
        if (out && copy) memcpy(out, data, copy);
    }
    if (out_len) *out_len = size;
    if (msg && msg_cap) snprintf(msg, msg_cap, "%s", oc.err ? oc.msg : "");
    return oc.err;
}

static bool run_direct(async_executor_t *ex, const async_job_t *job, int64_t deadline, void *out,
                       size_t *out_len, char *msg, size_t msg_cap, int *code)
{
    mpib_t *b = ex->backend;
    int rank = claim_rank(b);
    if (!rank) return false;
    async__rows_t rw = {.fn = job->fn, .ctx = job->ctx, .in = job->in, .in_size = job->in_size,
                        .out_size = job->out_size, .count = 1};
    char *m, why[ASYNC_FUTURE_MSG_MAX];
    size_t len;
    int r = build(DIRECT_SLOT, &rw, true, deadline, &m, &len, why);
    if (r == ASYNC_ENOMEM) { /* the ordinary path says so with its own codes */
        release_rank(b, rank, false);
        return false;
    }
    if (r) { /* what a slot would fail the job with: unregistered, bad ctx, too large */
        release_rank(b, rank, false);
        *code = r;
        if (out_len) *out_len = 0;
        if (msg && msg_cap) snprintf(msg, msg_cap, "%s", why);
        atomic_fetch_add_explicit(&async__mpi_direct_runs, 1, memory_order_relaxed);
        return true;
    }
    MPI_Request req;
    if (!send_direct(b, rank, m, len, &req)) {
        async__free(m);
        release_rank(b, rank, false);
        return false;
    }
    size_t rlen = 0;
    char *reply;
    r = await_direct(b, rank, &req, deadline, &reply, &rlen);
    async__free(m);
    release_rank(b, rank, r == ASYNC_ETIMEDOUT);
    if (!r) {
        *code = answer(reply, rlen, job, deadline, out, out_len, msg, msg_cap);
        async__free(reply);
    } else if (r == ASYNC_ENOMEM) { /* as a slot's job fails (parse) */
        *code = r;
        if (out_len) *out_len = 0;
        if (msg && msg_cap) snprintf(msg, msg_cap, "rank 0: no memory for a job's reply (%zu bytes)", rlen);
    } else { /* as the thread backend's watchdog says it */
        *code = ASYNC_ETIMEDOUT;
        if (out_len) *out_len = 0;
        if (msg && msg_cap)
            snprintf(msg, msg_cap, "still running on rank %d at its deadline (%s)", rank,
                     async__mpi_opts.rank_processes
                         ? "the rank's process pool stops it; its result is dropped"
                         : "without rank_processes a rank cannot stop a job: it runs on, its "
                           "result is dropped");
    }
    atomic_fetch_add_explicit(&async__mpi_direct_runs, 1, memory_order_relaxed);
    return true;
}

const async__backend_ops_t async__mpi_backend = {
    .name = "mpi",
    .default_workers = default_workers,
    .start = start,
    .join = join,
    .terminate = NULL,
    .free = free_backend,
    .run = run_direct,
};
