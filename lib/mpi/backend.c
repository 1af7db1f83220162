/* Rank 0's side of the MPI backend (exec/backend_internal.h): ex->workers
 * driver slots, each a thread that takes a job from the executor's queue,
 * turns it into a message for its rank (slot i serves rank 1 + i % (N-1)),
 * waits for the reply and finishes the job; and one progress thread, the
 * only thread of rank 0 that calls MPI once async_mpi_init has returned.
 *
 * The progress thread sends with MPI_Isend only, so a large job or a slow
 * rank never holds up the others, polls for results with MPI_Iprobe, and
 * hands each reply to its slot.  It sleeps on a condition variable while
 * nothing is in flight; while jobs are out it polls, spinning briefly and
 * then backing off (mpi_internal.h), so that a long job costs rank 0 almost
 * no CPU.
 *
 * Locking: b->mu guards the send list, the slots' replies, the bcast
 * counters and `stop`; no MPI call and no executor call is made under it. */
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
    int rank;
    pthread_t tid;
    pthread_cond_t cv;
    char *reply; /* under b->mu */
    size_t reply_len;
    _Atomic bool ready; /* reply is set: lets the slot spin before it sleeps */
} slot_t;

typedef struct mpib {
    async_executor_t *ex;
    pthread_mutex_t mu;
    pthread_cond_t wake; /* the progress thread waits here for sends */
    pthread_cond_t sent; /* bcast callers wait here */
    sendreq_t *head, **tail;
    _Atomic bool queued; /* head is non-empty: lets the progress thread spin */
    bool stop;
    pthread_t progress;
    unsigned started; /* slot threads */
    slot_t s[];
} mpib_t;

static unsigned default_workers(void)
{
    unsigned per = async__mpi_opts.rank_processes ? async__mpi_opts.rank_processes : 1;
    return async__default_workers(async__mpi_size_ > 1 ? (unsigned)async__mpi_size_ - 1 : 1, per, 0);
}

static void enqueue(mpib_t *b, sendreq_t *r)
{
    r->next = NULL;
    pthread_mutex_lock(&b->mu);
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
    for (;;) {
        pthread_mutex_lock(&b->mu);
        sendreq_t *list = b->head;
        b->head = NULL;
        b->tail = &b->head;
        atomic_store(&b->queued, false);
        bool stop = b->stop;
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
            if (r->tag == TAG_JOB) inflight++;
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
            char *buf = async__malloc(count > 0 ? (size_t)count : 1);
            MPI_Recv(buf ? buf : (char[sizeof(res_hdr_t)]){0}, buf ? count : 0, MPI_BYTE,
                     st.MPI_SOURCE, TAG_RESULT, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            /* Which slot: the header's, or, without memory for the reply,
             * the rank's only slot that waits (the slot then fails). */
            res_hdr_t h = {0};
            if (buf && count >= (int)sizeof h) memcpy(&h, buf, sizeof h);
            if (h.slot >= b->ex->workers) h.slot = 0;
            slot_t *s = &b->s[h.slot];
            pthread_mutex_lock(&b->mu);
            s->reply = buf ? buf : (char *)"";
            s->reply_len = buf ? (size_t)count : 0;
            atomic_store(&s->ready, true);
            pthread_cond_signal(&s->cv);
            pthread_mutex_unlock(&b->mu);
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
        if (stop && !inflight && !npend) break;
        if (active) {
            async__mpi_active(&backoff);
            continue;
        }
        if (!inflight && !npend) {
            pthread_mutex_lock(&b->mu);
            while (!b->head && !b->stop) pthread_cond_wait(&b->wake, &b->mu);
            pthread_mutex_unlock(&b->mu);
            async__mpi_active(&backoff);
            continue;
        }
        async__mpi_nap(&backoff);
    }
    /* Every job has its reply: release the serving ranks. */
    for (int r = 1; r < async__mpi_size_; r++) MPI_Send(NULL, 0, MPI_BYTE, r, TAG_STOP, MPI_COMM_WORLD);
    async__free(pend);
    return NULL;
}

/* Builds the job message for job; on error fills why. */
static int build(slot_t *s, async__job_t *job, char **out, size_t *len, char why[ASYNC_FUTURE_MSG_MAX])
{
    const async__rows_t *rw = &job->rows;
    job_hdr_t h = {.slot = s->index, .var_ok = job->var_ok, .count = rw->count,
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
    if (job->deadline != ASYNC_FOREVER) {
        int64_t left = job->deadline - async_now();
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

/* Fills oc (and the job's output rows) from a reply. */
static void parse(async__job_t *job, const char *reply, size_t len, async__outcome_t *oc)
{
    memset(oc, 0, sizeof *oc);
    res_hdr_t h;
    if (len < sizeof h) {
        oc->err = ASYNC_ENOMEM;
        snprintf(oc->msg, sizeof oc->msg, "rank 0: no memory for a job's reply");
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
    size_t cap = job->rows.out_size * job->rows.count;
    size_t n = h.data_size < cap ? h.data_size : cap;
    if (n && job->rows.out) memcpy(job->rows.out, data, n);
    if (job->rows.count == 1) oc->result_size = n;
}

static void *slot_main(void *arg)
{
    slot_t *s = arg;
    mpib_t *b = s->b;
    async_executor_t *ex = b->ex;
    async__job_t *job;
    while (async__exec_take(ex, s->index, &job) == 0) {
        async__outcome_t oc = {0};
        char *m;
        size_t len;
        int r = build(s, job, &m, &len, oc.msg);
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
        *q = (sendreq_t){.rank = s->rank, .tag = TAG_JOB, .buf = m, .len = len, .owned = true};
        enqueue(b, q);
        pthread_mutex_lock(&b->mu);
        while (!s->reply) pthread_cond_wait(&s->cv, &b->mu);
        char *reply = s->reply;
        size_t rlen = s->reply_len;
        s->reply = NULL;
        atomic_store(&s->ready, false);
        pthread_mutex_unlock(&b->mu);
        parse(job, reply, rlen, &oc);
        async__exec_finish(ex, job, &oc);
        if (rlen) async__free(reply);
    }
    return NULL;
}

static void join(async_executor_t *ex)
{
    mpib_t *b = ex->backend;
    for (unsigned i = 0; i < b->started; i++) pthread_join(b->s[i].tid, NULL);
    b->started = 0;
    pthread_mutex_lock(&b->mu);
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
    pthread_mutex_destroy(&b->mu);
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
    if (!b) {
        atomic_store(&async__mpi_ex, NULL);
        atomic_store(&used, false);
        return ASYNC_ENOMEM;
    }
    b->ex = ex;
    b->tail = &b->head;
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->wake, NULL);
    async__cond_init_monotonic(&b->sent, false); /* bcast deadlines */
    for (unsigned i = 0; i < ex->workers; i++) {
        b->s[i] = (slot_t){.b = b, .index = i, .rank = 1 + (int)(i % (unsigned)(async__mpi_size_ - 1))};
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

const async__backend_ops_t async__mpi_backend = {
    .name = "mpi",
    .default_workers = default_workers,
    .start = start,
    .join = join,
    .terminate = NULL,
    .free = free_backend,
};
