/* Eager maps (map, starmap, map_async): one future for n items, cut into
 * chunks that are jobs of the executor's queue (kind JOB_MAP).  The chunks
 * live in the map's future allocation, after its state, so queueing a map
 * allocates once whatever n.  The items' input and output stay in the
 * caller's arrays: a chunk reads and writes them in place, which is why a
 * map that its caller gives up on still waits for its running chunks.
 *
 * A chunk can be run by a worker or, with caller_runs, by the thread that
 * waits for the map: whoever claims it first (claimed) runs it.  The
 * executor's reference to the map goes when every chunk has both left the
 * queue and finished, two events a chunk (events), since the caller may
 * finish a chunk that still sits in the queue. */
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include "executor_internal.h"
#include "future_internal.h"

/* A map's state, in its future's extra bytes, followed by its chunks. */
typedef struct map_state {
    async_future_t *f;
    pthread_mutex_t mu;     /* guards remaining and the failure */
    size_t remaining;       /* chunks not finished */
    int fail_code;
    size_t fail_index;
    char msg[ASYNC_FUTURE_MSG_MAX];
    _Atomic bool abandoned; /* skip chunks not started yet */
    size_t nchunks;
    _Atomic size_t events;  /* see the top of this file */
    async_future_cb on_success, on_error;
    void *cb_arg;
    async__job_t jobs[];
} map_state_t;

size_t async__default_chunksize(const async_executor_t *ex, size_t n)
{
    size_t d = (size_t)4 * ex->workers;
    size_t c = (n + d - 1) / d;
    return c ? c : 1;
}

/* --- chunks: claiming, counting, finishing --------------------------------- */

static bool chunk_claim(async__job_t *job)
{
    return !atomic_exchange_explicit(&job->claimed, 1, memory_order_acq_rel);
}

/* Counts one of a chunk's two events (left the queue, finished); the last of
 * all drops the executor's reference to the map. */
static void map_event(map_state_t *st)
{
    if (atomic_fetch_sub_explicit(&st->events, 1, memory_order_acq_rel) == 1)
        async_future_unref(st->f);
}

void async__map_chunk_done(async__job_t *job, int err, size_t row, const char *msg)
{
    map_state_t *st = job->owner;
    pthread_mutex_lock(&st->mu);
    if (err) {
        size_t index = job->first + row;
        if (!st->fail_code || index < st->fail_index) {
            st->fail_code = err;
            st->fail_index = index;
            snprintf(st->msg, sizeof st->msg, "%s", msg ? msg : "");
        }
    }
    bool last = --st->remaining == 0;
    pthread_mutex_unlock(&st->mu);
    if (!last) {
        map_event(st);
        return;
    }
    async_future_t *f = st->f;
    if (st->fail_code) {
        char full[ASYNC_FUTURE_MSG_MAX + 32];
        (void)!snprintf(full, sizeof full, "item %zu: %s", st->fail_index,
                 st->msg[0] ? st->msg : async_strerror(st->fail_code));
        async__future_fail_at(f, st->fail_code, full, st->fail_index);
    } else {
        async__future_finish(f, FS_DONE, 0, NULL, NULL, 0, false);
    }
    map_event(st); /* st may be gone now */
}

/* Claims a chunk to run it here; false when it must not run (someone else
 * has it, or the map was cancelled, or its deadline passed: then it has been
 * finished). */
static bool chunk_start(async__job_t *job)
{
    map_state_t *st = job->owner;
    if (!chunk_claim(job)) return false;
    if (atomic_load_explicit(&st->abandoned, memory_order_acquire) ||
        async__future_start(st->f) == ASYNC_ECANCELED) {
        async__map_chunk_done(job, ASYNC_ECANCELED, 0, "map cancelled before this item ran");
        return false;
    }
    if (job->deadline != ASYNC_FOREVER && async_now() >= job->deadline) {
        async__map_chunk_done(job, ASYNC_ETIMEDOUT, 0, "deadline passed before it ran");
        return false;
    }
    return true;
}

bool async__map_chunk_take(async__job_t *job)
{
    map_state_t *st = job->owner;
    bool run = chunk_start(job);
    map_event(st); /* it left the queue (st may be gone now) */
    return run;
}

void async__map_chunk_skip(async__job_t *job, int err, const char *msg)
{
    map_state_t *st = job->owner;
    if (chunk_claim(job)) async__map_chunk_done(job, err, 0, msg); /* unless it ran elsewhere */
    map_event(st); /* it left the queue */
}

/* --- map_async --------------------------------------------------------------- */

static void map_cb(async_future_t *f, void *arg)
{
    map_state_t *st = arg;
    async_future_cb cb = async_future_error(f) ? st->on_error : st->on_success;
    if (cb) cb(f, st->cb_arg);
}

static int check_map(async_executor_t *ex, const async_map_t *m)
{
    if (!ex || !m || async__size_bad(m) || !m->fn) return ASYNC_EINVAL;
    if (m->n && m->in_size && !m->in) return ASYNC_EINVAL;
    if (m->n && m->out_size && !m->out) return ASYNC_EINVAL;
    /* n items must fit the caller's arrays: a product that wraps would run
     * "every" item over a few bytes. */
    if (m->in_size && m->n > SIZE_MAX / m->in_size) return ASYNC_EINVAL;
    if (m->out_size && m->n > SIZE_MAX / m->out_size) return ASYNC_EINVAL;
    return 0;
}

/* A map's future with room for nchunks chunks, one reference, its state
 * initialised and its callbacks added (they run first when it finishes);
 * NULL when out of memory. */
static async_future_t *map_new(size_t nchunks, async_future_cb on_success,
                               async_future_cb on_error, void *cb_arg)
{
    if (nchunks > (SIZE_MAX - sizeof(map_state_t)) / sizeof(async__job_t)) return NULL;
    async_future_t *f = async__future_alloc(sizeof(map_state_t) + nchunks * sizeof(async__job_t));
    if (!f) return NULL;
    map_state_t *st = (map_state_t *)f->extra;
    pthread_mutex_init(&st->mu, NULL);
    st->f = f;
    st->remaining = st->nchunks = nchunks;
    atomic_init(&st->events, 2 * nchunks);
    st->fail_code = 0;
    st->fail_index = 0;
    st->msg[0] = '\0';
    atomic_init(&st->abandoned, false);
    st->on_success = on_success;
    st->on_error = on_error;
    st->cb_arg = cb_arg;
    /* The callbacks return before any wait on f does (executor.h). */
    f->early_cb = on_success || on_error;
    if ((on_success || on_error) && async_future_on_done(f, map_cb, st)) {
        pthread_mutex_destroy(&st->mu);
        async_future_unref(f);
        return NULL;
    }
    return f;
}

/* Fills the map's chunks of `chunk` items each over m's arrays, linked
 * through next as async__q_enqueue wants them. */
static void map_chunks(map_state_t *st, const async_map_t *m, size_t chunk)
{
    int64_t dl = async__limit_deadline(m->timeout_ns);
    for (size_t i = 0; i < st->nchunks; i++) {
        async__job_t *job = &st->jobs[i];
        size_t first = i * chunk;
        size_t count = m->n - first < chunk ? m->n - first : chunk;
        job->rows = (async__rows_t){
            m->fn, m->ctx, m->in_size ? (const char *)m->in + first * m->in_size : m->in,
            m->in_size, m->out_size ? (char *)m->out + first * m->out_size : NULL, m->out_size, count};
        job->first = first;
        job->priority = m->priority;
        job->deadline = dl;
        job->var_ok = false;
        job->kind = JOB_MAP;
        atomic_init(&job->claimed, 0);
        job->owner = st;
        job->next = i + 1 < st->nchunks ? &st->jobs[i + 1] : NULL;
    }
}

int async_executor_map_async_dl(async_future_t **out, async_executor_t *ex, const async_map_t *m,
                                async_future_cb on_success, async_future_cb on_error, void *cb_arg,
                                int64_t deadline)
{
    int r = check_map(ex, m);
    if (r || !out) return r ? r : ASYNC_EINVAL;
    size_t chunk = m->chunksize ? m->chunksize : async__default_chunksize(ex, m->n);
    size_t nchunks = m->n ? (m->n - 1) / chunk + 1 : 0;
    async_future_t *f = map_new(nchunks, on_success, on_error, cb_arg);
    if (!f) return ASYNC_ENOMEM;
    map_state_t *st = (map_state_t *)f->extra;
    if (!nchunks) { /* nothing to run: done at once (callbacks run here) */
        async__future_finish(f, FS_DONE, 0, NULL, NULL, 0, false);
        *out = f;
        return 0;
    }
    map_chunks(st, m, chunk);
    atomic_store_explicit(&f->refs, 2, memory_order_relaxed);
    f->exec_owned = true;
    r = async__q_enqueue(ex, st->jobs, nchunks, false, deadline);
    if (r) { /* never finished: its callbacks never run */
        pthread_mutex_destroy(&st->mu);
        async_future_unref(f);
        async_future_unref(f);
        return r;
    }
    *out = f;
    return 0;
}

int async_executor_map_async(async_future_t **out, async_executor_t *ex, const async_map_t *m,
                             async_future_cb on_success, async_future_cb on_error, void *cb_arg)
{
    return async_executor_map_async_dl(out, ex, m, on_success, on_error, cb_arg, ASYNC_FOREVER);
}

/* --- map: waiting for it ------------------------------------------------------ */

/* The caller's share of the work (caller_runs): runs chunks nobody has
 * claimed, from the end (workers start from the front), until deadline. */
static void help_map(async_executor_t *ex, map_state_t *st, int64_t deadline)
{
    for (size_t i = st->nchunks; i-- > 0 && (deadline == ASYNC_FOREVER || async_now() < deadline);) {
        async__job_t *job = &st->jobs[i];
        if (atomic_load_explicit(&job->claimed, memory_order_relaxed) || !chunk_start(job)) continue;
        async__outcome_t oc;
        async__rows_run(&job->rows, UINT_MAX, job->deadline, false, NULL, NULL, 0, &oc);
        async__exec_finish(ex, job, &oc);
    }
}

/* Waits for the map until deadline: a task awaits; a thread sleeps, or first
 * runs chunks itself when the pool is set to let the caller run. */
static int map_wait(async_executor_t *ex, async_future_t *f, int64_t deadline)
{
    if (async__in_task()) return async_future_await_dl(f, deadline);
    /* Not with an initializer (the caller never ran it) nor on the process
     * backend: chunks run by the caller so that the map does not wait for
     * sleeping workers to get a CPU back. */
    if (ex->opts.caller_runs && ex->opts.backend == ASYNC_BACKEND_THREADS && !ex->opts.initializer)
        help_map(ex, (map_state_t *)f->extra, deadline);
    return async__future_wait(f, deadline, false);
}

/* Ends a map its caller gave up on (deadline, cancelled task): chunks still
 * queued are skipped, and the call waits for the running ones, which write
 * into the caller's out, through the loop when in a task. */
static void abandon_map(async_future_t *f)
{
    map_state_t *st = (map_state_t *)f->extra;
    atomic_store_explicit(&st->abandoned, true, memory_order_release);
    if (async__in_task()) async__future_await_shielded(f);
    else async__future_wait(f, ASYNC_FOREVER, false);
}

/* Fills *err for a map that returns r: final (given_up false) or given up
 * at its deadline or by a cancelled task (given_up true, index the lowest
 * item that failed or did not run). */
static void map_report(async_map_error_t *err, const map_state_t *st, size_t n, int r,
                       bool given_up)
{
    if (!err) return;
    err->code = r;
    if (given_up) {
        err->index = st->fail_code ? st->fail_index : n;
        snprintf(err->message, sizeof err->message, "%s",
                 r == ASYNC_ETIMEDOUT ? "the map's deadline passed before it finished"
                                      : "the awaiting task was cancelled");
    } else {
        err->index = r ? st->fail_index : 0;
        snprintf(err->message, sizeof err->message, "%s",
                 r ? (st->msg[0] ? st->msg : async_strerror(r)) : "");
    }
}

int async_executor_map_dl(async_executor_t *ex, const async_map_t *m, async_map_error_t *err,
                          int64_t deadline)
{
    async_future_t *f;
    int r = async_executor_map_async_dl(&f, ex, m, NULL, NULL, NULL, deadline);
    if (r) return r;
    r = map_wait(ex, f, deadline);
    bool given_up = !async_future_done(f); /* ASYNC_ETIMEDOUT or ASYNC_ECANCELED */
    if (given_up) abandon_map(f);
    else r = async_future_error(f);
    map_report(err, (map_state_t *)f->extra, m->n, r, given_up);
    async_future_unref(f);
    return r;
}

int async_executor_map(async_executor_t *ex, const async_map_t *m, async_map_error_t *err)
{
    return async_executor_map_dl(ex, m, err, ASYNC_FOREVER);
}
