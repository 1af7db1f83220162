/* The backend-independent executor: options, creating and ending a pool, the
 * worker side of jobs (taking, finishing, expiring), submit and run, and the
 * broken-pool state.  Backends (thread_backend.c, process_backend.c) take
 * jobs from the queue and finish them, as backend_internal.h describes;
 * nothing here knows whether a job runs in a thread or in a process.  Eager
 * maps live in map.c, lazy maps (imap) in imap.c, the queue in job_queue.c,
 * the work-function side (frames, async_work_*) in work.c.
 *
 * The queue itself (job_queue.c) takes no lock on the submit side.  A job's
 * memory lives in its future's allocation (submit) or its map's (map), so
 * queueing allocates nothing more.
 *
 * Locking: no lock is held while a user callback, a work function or a
 * backend call runs; futures are finished outside every lock. */
#include <assert.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "executor_internal.h"
#include "future_internal.h"

static _Thread_local async_executor_t *tls_worker_of ASYNC_TLS;

/* --- finishing jobs ----------------------------------------------------------- */

/* Finishes a job that never ran, with err and msg. */
static void skip_job(async__job_t *job, int err, const char *msg)
{
    switch (async__job_kind(job)) {
    case JOB_SUBMIT: {
        async_future_t *f = async__job_owner(job);
        if (err == ASYNC_ECANCELED) async_future_cancel(f);
        else async__future_finish(f, FS_FAILED, err, msg, NULL, 0, false);
        async_future_unref(f); /* the executor's reference */
        break;
    }
    case JOB_MAP:
        async__map_chunk_skip(job, err, msg);
        break;
    case JOB_IMAP:
        async__imap_chunk_done(job, err, 0, msg);
        break;
    }
}

/* Finishes every job of a drained list (linked through qnext, as
 * async__q_stop returns it), reading each link before the finish that may
 * free its job. */
static void skip_list(async__job_t *list, int err, const char *msg)
{
    while (list) {
        async__job_t *next = atomic_load_explicit(&list->qnext, memory_order_relaxed);
        skip_job(list, err, msg);
        list = next;
    }
}

/* Moves a job from queued to running; false when it must not run (cancelled,
 * or its deadline passed while queued: then it has been finished here). */
static __attribute__((noinline)) bool start_job(async__job_t *job)
{
    switch (async__job_kind(job)) {
    case JOB_MAP:
        return async__map_chunk_take(job); /* it checks the map's deadline itself */
    case JOB_SUBMIT:
        if (async__future_start(job->owner) != 0) { /* cancelled while queued */
            async__future_drop(job->owner);
            return false;
        }
        break;
    case JOB_IMAP:
        if (!async__imap_chunk_start(job)) return false;
        break;
    }
    if (__builtin_expect(job->deadline != ASYNC_FOREVER, 0) && async_now() >= job->deadline) {
        skip_job(job, ASYNC_ETIMEDOUT, "deadline passed before it ran");
        return false;
    }
    return true;
}

bool async__exec_on_worker(const async_executor_t *ex) { return tls_worker_of == ex; }

/* One of the pool's own threads: a worker, or a backend thread that runs
 * future callbacks.  A wait for the pool from there waits for itself. */
static bool on_pool_thread(const async_executor_t *ex)
{
    return tls_worker_of == ex || (ex->ops->on_own_thread && ex->ops->on_own_thread(ex));
}

/* Hands a lean job over as a full one, in the worker's slot: only the rows
 * and the owner change from job to job (async_executor_new wrote the rest). */
static inline __attribute__((always_inline)) async__job_t *lean_unpack(exec_priv_t *p, unsigned worker,
                                                                      async__job_t *job,
                                                                      async_future_t *f)
{
    const async__lean_job_t *l = (const async__lean_job_t *)job;
    async__job_t *s = &p->slots[worker];
    const char *in = (const char *)l->data;
    size_t in_size = l->in_size, in_room = (in_size + 7) & ~(size_t)7;
    if (__builtin_expect(l->in_how != LEAN_COPIED, 0)) {
        in = NULL;
        in_room = in_size = 0;
        if (l->in_how == LEAN_BORROWED) {
            memcpy(&in, l->data, sizeof in);
            memcpy(&in_size, l->data + sizeof in, sizeof in_size);
            in_room = 16;
        }
    }
    s->rows = (async__rows_t){l->fn, l->ctx, in, in_size,
                              l->out_size ? (char *)l->data + in_room : NULL, l->out_size, 1};
    s->owner = f;
    return s;
}

int async__exec_take(async_executor_t *ex, unsigned worker, async__job_t **out)
{
    tls_worker_of = ex;
    while (async__q_take(ex->priv, out) == 0) {
        async__job_t *job = *out;
        if (job->kind & JOB_LEAN) { /* a small submit's job: no deadline */
            async_future_t *f = async__job_owner(job);
            if (async__future_start(f) == 0) {
                *out = lean_unpack(ex->priv, worker, job, f);
                return 0;
            }
            async__future_drop(f); /* cancelled while queued */
            continue;
        }
        /* The usual full job, a submit without a deadline, is started here;
         * start_job, out of line, takes the rest, so that this loop needs
         * few registers saved. */
        if (async__job_kind(job) != JOB_SUBMIT || job->deadline != ASYNC_FOREVER) {
            if (start_job(job)) return 0;
        } else if (async__future_start(job->owner) == 0) {
            return 0;
        } else { /* cancelled while queued */
            async__future_drop(job->owner);
        }
    }
    return ASYNC_ECLOSED;
}

/* Finishes a submit's future from its outcome: DONE with its output rows or
 * its variable result, else FAILED; then drops the executor's reference. */
static void finish_submit(async__job_t *job, async__outcome_t *oc)
{
    async_future_t *f = job->owner;
    if (oc->err) {
        async__future_finish(f, FS_FAILED, oc->err, oc->msg, NULL, 0, false);
    } else if (oc->var_out) {
        void *data = oc->var_out;
        if (!oc->var_owned) {
            data = async__malloc(oc->var_size);
            if (data) memcpy(data, oc->var_out, oc->var_size);
        }
        if (data || !oc->var_size)
            async__future_finish(f, FS_DONE, 0, NULL, data, oc->var_size, data != NULL);
        else
            async__future_finish(f, FS_FAILED, ASYNC_ENOMEM, "no memory for the result", NULL, 0,
                                 false);
    } else {
        size_t n = oc->result_size < job->rows.out_size ? oc->result_size : job->rows.out_size;
        async__future_finish(f, FS_DONE, 0, NULL, job->rows.out, n, false);
    }
    async__future_drop(f);
}

/* async__exec_finish's general path, out of line so that the usual case
 * needs few registers saved. */
static __attribute__((noinline)) void finish_job(async__job_t *job, async__outcome_t *oc)
{
    bool late = job->deadline != ASYNC_FOREVER && async_now() > job->deadline;
    if (!oc->err && late) {
        oc->err = ASYNC_ETIMEDOUT;
        oc->failed_row = 0;
        snprintf(oc->msg, sizeof oc->msg, "finished after its deadline");
    }
    if (oc->err && oc->var_out) { /* a failed job keeps no result */
        if (oc->var_owned) async__free(oc->var_out);
        oc->var_out = NULL;
    }
    switch (async__job_kind(job)) {
    case JOB_SUBMIT:
        finish_submit(job, oc);
        break;
    case JOB_MAP:
        async__map_chunk_done(job, oc->err, oc->failed_row, oc->msg);
        break;
    case JOB_IMAP:
        async__imap_chunk_done(job, oc->err, oc->failed_row, oc->msg);
        break;
    }
}

void async__exec_finish(async_executor_t *ex, async__job_t *job, async__outcome_t *oc)
{
    (void)ex;
    /* The usual submit: no deadline, no error, its result in its own rows.
     * Finished inline, without the general path's claim and copies. */
    if (async__job_kind(job) == JOB_SUBMIT && job->deadline == ASYNC_FOREVER && !oc->err &&
        !oc->var_out) {
        async_future_t *f = job->owner;
        size_t n = oc->result_size < job->rows.out_size ? oc->result_size : job->rows.out_size;
        if (async__future_done_sole(f, job->rows.out, n)) {
            async__future_drop(f); /* the executor's reference */
            return;
        }
    }
    finish_job(job, oc);
}

bool async__exec_expirable(const async__job_t *job)
{
    return async__job_kind(job) == JOB_SUBMIT && job->deadline != ASYNC_FOREVER;
}

void async__exec_expire(async_executor_t *ex, async__job_t *job)
{
    (void)ex;
    assert(async__exec_expirable(job));
    /* The executor's reference, dropped by async__exec_finish only, keeps
     * the job and its output buffer alive for the function still running;
     * the late finish then finds the future final and drops the result. */
    async__future_finish(job->owner, FS_FAILED, ASYNC_ETIMEDOUT,
                         "still running at its deadline (a thread cannot be stopped: the job "
                         "runs on and its result is dropped)",
                         NULL, 0, false);
}

void async__exec_break(async_executor_t *ex, int code, const char *msg)
{
    exec_priv_t *p = ex->priv;
    /* The first report wins.  Its message is written, then the pool turns
     * broken, both under broken_mu: a later report sees broken under the
     * same lock and writes nothing, so readers never see the message
     * change. */
    pthread_mutex_lock(&p->broken_mu);
    if (!atomic_load(&p->broken)) {
        (void)!snprintf(p->broken_msg, sizeof p->broken_msg, "%s", msg ? msg : async_strerror(code));
        atomic_store(&p->broken, code);
    }
    pthread_mutex_unlock(&p->broken_mu);
    /* Every report drains, and fails what it drained: two workers whose
     * initializers fail at once both get here, and a job the second one's
     * drain takes must fail too, or its future waits forever. */
    async__job_t *list;
    async__q_stop(p, code, true, &list);
    skip_list(list, atomic_load(&p->broken), p->broken_msg);
}

void async__exec_broken(async_executor_t *ex, unsigned worker, int code, const char *msg)
{
    char full[ASYNC_FUTURE_MSG_MAX + 64];
    (void)!snprintf(full, sizeof full, "worker %u initializer failed: %s%s%s", worker,
                    async_errname(code >= 0 ? ASYNC_EWORK : code), msg && *msg ? ": " : "",
                    msg ? msg : "");
    async__exec_break(ex, ASYNC_EINIT, full);
}

/* Submits whose future, job, input copy and output fit in the pool's block
 * (FUTURE_BLOCK, or LEAN_BLOCK below on a pool that queues lean jobs) reuse
 * freed futures; the executor carves up to FUTURE_CACHE of them (46 MiB
 * at most) and keeps them until it is freed.  Three cache lines: the
 * future's and the job's two, whose `small` area holds up to 32 bytes of
 * input and output.  A job of priority 0 ends at its `next` field: the
 * queue links it through qnext alone and never touches `next` or `bucket`
 * (job_queue.c), so a small submit's job leaves them out, and the block is
 * a quarter smaller than the whole job would make it, which every submit
 * pays for in memory faulted in and streamed through.  A job with a
 * priority may head a bucket, so it takes its whole size, a plain
 * allocation. */
#define FUTURE_BLOCK 192
#define FUTURE_CACHE 250000
/* A pool that queues lean jobs (exec_priv_t's `lean`) carves blocks of the
 * future and one job line: a small submit's whole block is two lines, and
 * 200,000 of them fault in a third less memory.  Its other submits do not
 * fit and are plain allocations. */
#ifndef LEAN_BLOCK
#  define LEAN_BLOCK 128
#endif
_Static_assert(sizeof(async_future_t) + sizeof(async__lean_job_t) <= LEAN_BLOCK, "a lean job fits a block");
#define SMALL_JOB offsetof(async__job_t, next)
_Static_assert(sizeof(async_future_t) + SMALL_JOB <= FUTURE_BLOCK, "a small submit fits a block");
_Static_assert(offsetof(async__job_t, small) + sizeof ((async__job_t *)0)->small <= SMALL_JOB &&
               offsetof(async__job_t, qnext) < SMALL_JOB &&
               offsetof(async__job_t, bucket) > SMALL_JOB,
               "a small submit's job has every field but next and bucket");

/* --- creating and ending ---------------------------------------------------- */

/* Frees what async_executor_new made besides the backend's own state: after
 * a failed start, or at the end of async_executor_free. */
static void release(async_executor_t *ex)
{
    exec_priv_t *p = ex->priv;
    async__fpool_close(p->futures);
    async__free(p->slots);
    async__q_destroy(p);
    pthread_mutex_destroy(&p->join_mu);
    pthread_mutex_destroy(&p->broken_mu);
    async__free(p);
    async__free(ex);
}

int async_executor_new(async_executor_t **out, const async_executor_opts_t *opts)
{
    if (!out || (opts && async__size_bad(opts))) return ASYNC_EINVAL;
    async_executor_opts_t o = {0};
    if (opts) o = *opts;
    const async__backend_ops_t *ops;
    if (o.backend == ASYNC_BACKEND_THREADS) ops = &async__threads_backend;
    else if (o.backend == ASYNC_BACKEND_PROCESSES) ops = &async__procs_backend;
    else if (o.backend == ASYNC_BACKEND_MPI) {
        if (!&async__mpi_backend) return ASYNC_ENOTSUP;
        ops = &async__mpi_backend;
    } else return ASYNC_EINVAL;

    async_executor_t *ex = async__calloc(1, sizeof *ex);
    exec_priv_t *p = async__calloc(1, sizeof *p);
    if (!ex || !p) {
        async__free(ex);
        async__free(p);
        return ASYNC_ENOMEM;
    }
    ex->ops = ops;
    ex->opts = o;
    ex->workers = o.workers ? o.workers : ops->default_workers();
    ex->opts.workers = ex->workers;
    ex->priv = p;
    p->lean = ops->lean_jobs && !o.max_queued;
    if (p->lean && !(p->slots = async__calloc(ex->workers, sizeof *p->slots))) {
        async__free(ex);
        async__free(p);
        return ASYNC_ENOMEM;
    }
    for (unsigned i = 0; p->lean && i < ex->workers; i++) {
        async__job_t *s = &p->slots[i];
        s->priority = 0;
        s->kind = JOB_SUBMIT;
        s->var_ok = true;
        s->deadline = ASYNC_FOREVER;
        s->first = 0;
    }
    if (!(p->futures = async__fpool_new(p->lean ? LEAN_BLOCK : FUTURE_BLOCK, FUTURE_CACHE))) {
        async__free(p->slots);
        async__free(ex);
        async__free(p);
        return ASYNC_ENOMEM;
    }
    async__q_init(p);
    p->workers = ex->workers;
    if (!ops->cpu_workers) p->cap = UINT_MAX; /* no cap: see cpu_workers */
    p->bounded = o.max_queued != 0;
    pthread_mutex_init(&p->join_mu, NULL);
    pthread_mutex_init(&p->broken_mu, NULL);
    int r = ops->start(ex);
    if (r) {
        release(ex);
        return r;
    }
    *out = ex;
    return 0;
}

unsigned async_executor_workers(const async_executor_t *ex) { return ex->workers; }
async_backend_t async_executor_backend(const async_executor_t *ex) { return ex->opts.backend; }

int async_executor_error(async_executor_t *ex, char *msg, size_t cap)
{
    if (!ex) return ASYNC_EINVAL;
    exec_priv_t *p = ex->priv;
    /* The message is written under broken_mu before broken is set. */
    pthread_mutex_lock(&p->broken_mu);
    int code = atomic_load(&p->broken);
    if (msg && cap) snprintf(msg, cap, "%s", code ? p->broken_msg : "");
    pthread_mutex_unlock(&p->broken_mu);
    return code;
}

size_t async_executor_queued(async_executor_t *ex)
{
    return async__q_count(ex->priv);
}

static void join_once(async_executor_t *ex)
{
    exec_priv_t *p = ex->priv;
    pthread_mutex_lock(&p->join_mu);
    if (!p->joined) {
        ex->ops->join(ex);
        p->joined = true;
    }
    pthread_mutex_unlock(&p->join_mu);
}

int async_executor_shutdown(async_executor_t *ex, bool wait, bool cancel_pending)
{
    if (!ex) return ASYNC_EINVAL;
    async__job_t *list;
    async__q_stop(ex->priv, ASYNC_ECLOSED, cancel_pending, &list);
    skip_list(list, ASYNC_ECANCELED, "cancelled by the executor's shutdown");
    if (!wait) return 0;
    if (on_pool_thread(ex)) return ASYNC_EDEADLK; /* it would join itself */
    join_once(ex);
    return 0;
}

int async_executor_terminate(async_executor_t *ex)
{
    if (!ex) return ASYNC_EINVAL;
    async_executor_shutdown(ex, false, true);
    if (on_pool_thread(ex)) return ASYNC_EDEADLK;
    if (ex->ops->terminate) ex->ops->terminate(ex);
    join_once(ex);
    return 0;
}

void async_executor_free(async_executor_t *ex)
{
    if (!ex) return;
    if (on_pool_thread(ex)) {
        /* The worker would join itself, and the pool's memory, which this
         * very worker runs on, would go: a programming error, caught here
         * as free() catches a bad pointer rather than left to corrupt. */
        fprintf(stderr, "libasync: async_executor_free(%p) called from one of that executor's own "
                        "threads (a worker, a future's callback on the thread backend's deadline "
                        "watchdog or on the process backend); an "
                        "executor must be freed from outside its pool\n",
                (void *)ex);
        abort();
    }
    async_executor_shutdown(ex, true, true);
    ex->ops->free(ex);
    release(ex);
}

int async_executor_shm_alloc(void **out, async_executor_t *ex, size_t size)
{
    if (!ex || !out) return ASYNC_EINVAL;
    if (ex->ops->shm_alloc) return ex->ops->shm_alloc(ex, size, out);
    void *m = async__malloc(size);
    if (!m) return ASYNC_ENOMEM;
    *out = m;
    return 0;
}

void async_executor_shm_free(async_executor_t *ex, void *ptr)
{
    if (!ex || !ptr) return;
    if (ex->ops->shm_free) ex->ops->shm_free(ex, ptr);
    else async__free(ptr);
}

/* --- submit --------------------------------------------------------------------- */

enum { BLOCK, TRY };

#define ALIGN_UP(n) (((n) + 15) & ~(size_t)15)

/* check_job and make_job are inlined into each submit: on the path of every
 * single submit, a call's saved registers cost about as much as their work. */
#define SUBMIT_INLINE static inline __attribute__((always_inline))

SUBMIT_INLINE int check_job(const async_job_t *j)
{
    if (!j || async__size_bad(j) || !j->fn || (!j->in && j->in_size)) return ASYNC_EINVAL;
    if ((j->in_size | j->out_size) > SIZE_MAX / 4) return ASYNC_EINVAL; /* either past it */
    return 0;
}

/* memcpy, with the sizes of a small input (up to 32 bytes) copied inline
 * by two fixed-size moves that overlap, never reading past the input: a
 * call to memcpy for 4 bytes costs more than the rest of the copy. */
SUBMIT_INLINE void copy_in(char *dst, const char *src, size_t n)
{
    if (n > 32 || n == 0) {
        if (n) memcpy(dst, src, n);
    } else if (n >= 16) {
        memcpy(dst, src, 16);
        memcpy(dst + n - 16, src + n - 16, 16);
    } else if (n >= 8) {
        memcpy(dst, src, 8);
        memcpy(dst + n - 8, src + n - 8, 8);
    } else if (n >= 4) {
        memcpy(dst, src, 4);
        memcpy(dst + n - 4, src + n - 4, 4);
    } else {
        for (size_t i = 0; i < n; i++) dst[i] = src[i];
    }
}

/* The bytes of a lean job's `data` that a job of priority 0 without a
 * deadline needs, copying in_copy bytes of its input (0: none, or
 * borrowed); more than 32 when it does not fit.  Each size is looked at on
 * its own first, so that no sum can wrap. */
SUBMIT_INLINE size_t lean_need(const async_job_t *j, size_t in_copy)
{
    if (in_copy > 32 || j->out_size > 32) return SIZE_MAX;
    return (in_copy ? (in_copy + 7) & ~(size_t)7 : j->in ? 16 : 0) + j->out_size;
}

/* Writes a lean job (kind given) for j, copying in_copy bytes of its input;
 * lean_need said it fits.  qnext is the queue's to write. */
SUBMIT_INLINE void lean_fill(async__lean_job_t *l, const async_job_t *j, size_t in_copy,
                             unsigned char kind)
{
    l->priority = 0;
    l->kind = kind;
    l->out_size = (unsigned char)j->out_size;
    l->in_size = (unsigned char)in_copy;
    l->fn = j->fn;
    l->ctx = j->ctx;
    if (in_copy) {
        l->in_how = LEAN_COPIED;
        copy_in((char *)l->data, j->in, in_copy);
    } else if (j->in) {
        l->in_how = LEAN_BORROWED;
        memcpy(l->data, &j->in, sizeof j->in);
        memcpy(l->data + sizeof j->in, &j->in_size, sizeof j->in_size);
    } else {
        l->in_how = LEAN_NONE;
    }
}

/* A just-allocated future f that make_job filled: two references (the
 * caller's and the executor's), finished by its worker alone unless a
 * deadline can contest it. */
SUBMIT_INLINE async_future_t *held_by_executor(async_future_t *f, bool contested)
{
    atomic_store_explicit(&f->refs, 2, memory_order_relaxed);
    f->exec_owned = true;
    f->contested = contested;
    return f;
}

/* A future with its job inside, two references (the caller's and the
 * executor's), not queued yet. */
SUBMIT_INLINE async_future_t *make_job(async_executor_t *ex, const async_job_t *j)
{
    int64_t deadline = async__limit_deadline(j->timeout_ns);
    /* A job with a deadline may outlive its future on the thread backend
     * (the future fails at the deadline, the function runs on), so its input
     * is always copied into the job, which lives until the function returns. */
    bool timed = deadline != ASYNC_FOREVER;
    size_t in_copy = j->borrow_input && !timed ? 0 : j->in_size;
    if (ex->priv->lean && !timed && !j->priority &&
        lean_need(j, in_copy) <= sizeof(((async__lean_job_t *)0)->data)) {
        async_future_t *f = async__future_alloc_pooled(ex->priv->futures, sizeof(async__lean_job_t));
        if (!f) return NULL;
        lean_fill((async__lean_job_t *)f->extra, j, in_copy, JOB_SUBMIT | JOB_LEAN);
        return held_by_executor(f, false);
    }
    /* Input and output go in the job's `small` area when they fit, else
     * after the job. */
    size_t in_room = (in_copy + 7) & ~(size_t)7, need = in_room + j->out_size;
    bool small = need <= sizeof(((async__job_t *)0)->small);
    /* Only a job with a priority needs `next` and `bucket` (see FUTURE_BLOCK). */
    size_t job_size = j->priority ? sizeof(async__job_t) : ALIGN_UP(SMALL_JOB);
    size_t extra = job_size + (small ? 0 : ALIGN_UP(in_room) + j->out_size);
    async_future_t *f = async__future_alloc_pooled(ex->priv->futures, extra);
    if (!f) return NULL;
    async__job_t *job = (async__job_t *)f->extra;
    char *in = small ? (char *)job->small : (char *)job + job_size;
    char *outbuf = in + (small ? in_room : ALIGN_UP(in_room));
    copy_in(in, j->in, in_copy);
    job->rows = (async__rows_t){j->fn, j->ctx, in_copy ? in : j->in, j->in_size,
                                j->out_size ? outbuf : NULL, j->out_size, 1};
    job->first = 0;
    job->priority = j->priority;
    job->deadline = deadline;
    job->var_ok = true;
    job->kind = JOB_SUBMIT;
    job->owner = f;
    /* job->next is never written: a job of priority 0 has none (see
     * FUTURE_BLOCK), and the queue, a batch and a drain all link through
     * qnext. */
    return held_by_executor(f, timed);
}

static void unmake(async_future_t *f)
{
    async_future_unref(f);
    async_future_unref(f);
}

/* A submit's job that did not stand: never queued (kept false: the job and
 * both references go), or queued, then found the pool stopped and cancelled
 * before anything took it (kept: the queue holds the executor's reference
 * until a worker or a drain drops it).  Out of line and called last, so that
 * a submit's straight path saves no registers for it. */
static __attribute__((noinline)) int submit_failed(async_future_t *f, int r, bool kept)
{
    if (kept) async_future_unref(f);
    else unmake(f);
    return r;
}

/* The rest of a small submit whose job is written: the look at the pool's
 * state, the push and the wake-up. */
SUBMIT_INLINE int submit_small_queue(exec_priv_t *p, async_future_t *f, async__job_t *job,
                                     async_future_t **out)
{
    int r = async__q_stopped(p);
    if (__builtin_expect(r != 0, 0)) return submit_failed(f, r, false);
    bool kept = false;
    if (__builtin_expect((r = async__q_push_lone(p, job, &kept)) != 0, 0)) return submit_failed(f, r, kept);
    *out = f;
    return 0;
}

/* The usual submit, on one straight path: a job of priority 0 without a
 * time limit whose input copy and output fit the job's `small` area, to an
 * unbounded pool, with a block on this thread's magazine.  It does what
 * make_job and async__q_enqueue_one do for such a job, with none of their
 * branches for the rare cases (those take submit's general path), and
 * writes each field once.  Returns 1 when the job is not such a job (and
 * nothing was done), else the submit's result. */
SUBMIT_INLINE int submit_small(async_executor_t *ex, const async_job_t *j, async_future_t **out)
{
    /* The size first: a job shorter than async_job_t may end before the
     * fields read after it (check_job's order). */
    if (!ex || !out || !j || async__size_bad(j) || !j->fn || j->timeout_ns || j->priority ||
        (!j->in && j->in_size))
        return 1;
    exec_priv_t *p = ex->priv;
    size_t in_copy = j->borrow_input ? 0 : j->in_size, out_size = j->out_size;
    size_t in_room = (in_copy + 7) & ~(size_t)7;
    async__magazine_t *m = &async__mag;
    if (__builtin_expect(p->lean, 1)) { /* a thread pool's: one line of job */
        if (j->in_size > SIZE_MAX / 4 || lean_need(j, in_copy) > sizeof(((async__lean_job_t *)0)->data) ||
            m->pool != p->futures || !m->n)
            return 1;
        async_future_t *f = async__mag_pop(m); /* a block of LEAN_BLOCK bytes */
        async__future_init_exec(f, false);
        async__job_t *job = (async__job_t *)f->extra;
        lean_fill((async__lean_job_t *)job, j, in_copy, JOB_SUBMIT | JOB_LEAN | JOB_LONE);
        return submit_small_queue(p, f, job, out);
    }
    /* Each size on its own first, so that no sum can wrap. */
    if (in_copy > 32 || out_size > 32 || j->in_size > SIZE_MAX / 4 || in_room + out_size > sizeof(((async__job_t *)0)->small) ||
        p->bounded || m->pool != p->futures || !m->n)
        return 1;
    async_future_t *f = async__mag_pop(m); /* a block of FUTURE_BLOCK bytes: see there */
    async__future_init_exec(f, false);
    async__job_t *job = (async__job_t *)f->extra;
    char *in = (char *)job->small;
    copy_in(in, j->in, in_copy);
    job->rows = (async__rows_t){j->fn, j->ctx, in_copy ? in : j->in, j->in_size,
                                out_size ? in + in_room : NULL, out_size, 1};
    job->first = 0;
    job->priority = 0;
    job->deadline = ASYNC_FOREVER;
    job->var_ok = true;
    job->kind = JOB_SUBMIT | JOB_LONE;
    job->owner = f;
    return submit_small_queue(p, f, job, out);
}

/* Every other submit, out of line, so that the small one's path saves no
 * registers for it. */
static __attribute__((noinline)) int submit_general(async_executor_t *ex, const async_job_t *j,
                                                    async_future_t **out, int how, int64_t deadline)
{
    if (!ex || !out || check_job(j)) return ASYNC_EINVAL;
    async_future_t *f = make_job(ex, j);
    if (!f) return ASYNC_ENOMEM;
    bool kept;
    int r = async__q_enqueue_one(ex, (async__job_t *)f->extra, how == TRY, deadline, &kept);
    if (r) return submit_failed(f, r, kept);
    *out = f;
    return 0;
}

SUBMIT_INLINE int submit(async_executor_t *ex, const async_job_t *j, async_future_t **out, int how,
                         int64_t deadline)
{
    int r = submit_small(ex, j, out);
    if (__builtin_expect(r != 1, 1)) return r;
    return submit_general(ex, j, out, how, deadline);
}

int async_executor_submit_batch_dl(async_future_t **out, async_executor_t *ex,
                                   const async_job_t *jobs,
                                   size_t n, int64_t deadline)
{
    if (!ex || (n && (!jobs || !out))) return ASYNC_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (check_job(&jobs[i])) return ASYNC_EINVAL;
    if (!n) return 0;
    /* Linked through qnext as the queue wants them: a job of priority 0
     * has no `next`. */
    async__job_t *prev = NULL;
    size_t prio = 0;
    for (size_t i = 0; i < n; i++) {
        if (!(out[i] = make_job(ex, &jobs[i]))) {
            while (i--) unmake(out[i]);
            return ASYNC_ENOMEM;
        }
        async__job_t *job = (async__job_t *)out[i]->extra;
        if (prev) atomic_store_explicit(&prev->qnext, job, memory_order_relaxed);
        prev = job;
        prio += job->priority != 0;
    }
    int r = async__q_enqueue_linked(ex, (async__job_t *)out[0]->extra, prev, n, prio, false,
                                    deadline);
    if (r)
        for (size_t i = 0; i < n; i++) unmake(out[i]);
    return r;
}

int async_executor_submit_batch(async_future_t **out, async_executor_t *ex, const async_job_t *jobs,
                                size_t n)
{
    return async_executor_submit_batch_dl(out, ex, jobs, n, ASYNC_FOREVER);
}

int async_executor_submit(async_future_t **out, async_executor_t *ex, const async_job_t *job)
{
    return submit(ex, job, out, BLOCK, ASYNC_FOREVER);
}

int async_executor_submit_dl(async_future_t **out, async_executor_t *ex, const async_job_t *job,
                             int64_t deadline)
{
    return submit(ex, job, out, BLOCK, deadline);
}

int async_executor_trysubmit(async_future_t **out, async_executor_t *ex, const async_job_t *job)
{
    return submit(ex, job, out, TRY, ASYNC_FOREVER);
}


int async_executor_run_dl(async_executor_t *ex, const async_job_t *job, void *out, size_t *out_len,
                          char *msg, size_t msg_cap, int64_t deadline)
{
    if (msg && msg_cap) msg[0] = '\0';
    if (ex && ex->ops->on_own_thread && ex->ops->on_own_thread(ex)) {
        /* The result could only come through this very thread, queued
         * jobs or not. */
        if (out_len) *out_len = 0;
        if (msg && msg_cap)
            snprintf(msg, msg_cap, "async_executor_run called from a future's callback on the %s "
                                   "backend: callbacks run on the pool's own thread, which would have "
                                   "to deliver the result", ex->ops->name);
        return ASYNC_EDEADLK;
    }
    if (ex && ex->ops->run && !check_job(job) && async__exec_direct_ok(ex->priv)) {
        /* The direct path (backend_internal.h): only where it cannot change
         * what the call means.  It never overtakes queued work (the queue
         * is empty), and it waits for the job to end, so the call's own
         * deadline must not be able to end the wait first; a job whose
         * deadline already passed takes the ordinary path, which fails it
         * without running it. */
        int64_t jdl = async__limit_deadline(job->timeout_ns);
        bool bounded = deadline == ASYNC_FOREVER || (jdl != ASYNC_FOREVER && jdl <= deadline);
        int code;
        if (bounded && (jdl == ASYNC_FOREVER || async_now() < jdl) &&
            ex->ops->run(ex, job, jdl, out, out_len, msg, msg_cap, &code))
            return code;
    }
    /* A call that can give up (a deadline, a cancellable task) returns
     * without waiting for a running job, and its caller may then release
     * the input: a borrowed input would still be read by the job.  Copied,
     * as for a job with a time limit. */
    async_job_t copied;
    if (job && !check_job(job) && job->borrow_input &&
        (deadline != ASYNC_FOREVER || async__in_task())) {
        copied = *job;
        copied.borrow_input = false;
        job = &copied;
    }
    async_future_t *f;
    int r = async_executor_submit_dl(&f, ex, job, deadline);
    if (r) return r;
    r = async__in_task() ? async_future_await_dl(f, deadline) : async__future_wait(f, deadline, true);
    if (!async_future_done(f)) {
        /* The deadline passed or the awaiting task was cancelled.  The job
         * writes only into its own buffer, which the executor keeps until
         * the function returns, so nothing waits here: a queued job is
         * cancelled, a running one runs on and its result is dropped. */
        async_future_cancel(f);
        async_future_unref(f);
        if (msg && msg_cap)
            snprintf(msg, msg_cap, "%s", r == ASYNC_ETIMEDOUT ? "the call's deadline passed"
                                                              : "the awaiting task was cancelled");
        return r;
    }
    const void *data;
    size_t size;
    r = async_future_result(f, &data, &size);
    if (!r && out && size) memcpy(out, data, size < job->out_size ? size : job->out_size);
    if (out_len) *out_len = size;
    if (msg && msg_cap) snprintf(msg, msg_cap, "%s", async_future_message(f));
    async_future_unref(f);
    return r;
}

int async_executor_run(async_executor_t *ex, const async_job_t *job, void *out, size_t *out_len,
                       char *msg, size_t msg_cap)
{
    return async_executor_run_dl(ex, job, out, out_len, msg, msg_cap, ASYNC_FOREVER);
}
