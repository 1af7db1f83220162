/* Eager maps (map, starmap, map_async): one future for n items, cut into
 * chunks run by jobs of the executor's queue (kind JOB_MAP).  The jobs and
 * the chunks' bounds live in the map's future allocation, after its state,
 * so queueing a map allocates once whatever n.  The items' input and output
 * stay in the caller's arrays: a chunk reads and writes them in place, which
 * is why a map that its caller gives up on still waits for its running
 * chunks.
 *
 * A queued job is a ticket, not a given chunk: whoever runs a chunk (a
 * worker that took a ticket, or, with caller_runs, the thread that waits
 * for the map) claims the next one in order with one atomic increment of
 * next_chunk, and a ticket that finds every chunk claimed runs nothing.  So
 * chunks run strictly in order, whoever runs them, and a helping caller
 * never scans for unclaimed chunks nor races a worker for the same one.
 * That order is what the default chunk sizes need: they shrink towards the
 * end of the map (map_plan), so the last chunks, which decide when the map
 * ends, are small, and a worker that woke late or lost its CPU for a while
 * costs at most one small chunk of idle time on the others.
 *
 * The executor's reference to the map goes when every ticket has left the
 * queue and every chunk has finished, two events per chunk (events), since
 * the caller may finish chunks while tickets still sit in the queue.
 *
 * A map that its caller waits for may skip the queue: a backend with a map
 * op (the process backend) takes the tickets in order itself and hands the
 * chunks straight to idle workers (backend_internal.h says when). */
#include <limits.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include "executor_internal.h"
#include "future_internal.h"

/* A map's state, in its future's extra bytes, followed by its tickets and
 * then nchunks + 1 chunk bounds (chunk k is items bounds[k] .. bounds[k+1]). */
typedef struct map_state {
    async_future_t *f;
    pthread_mutex_t mu;     /* guards the failure */
    _Atomic size_t remaining; /* chunks not finished */
    int fail_code;
    size_t fail_index;
    char msg[ASYNC_FUTURE_MSG_MAX];
    _Atomic bool abandoned; /* skip chunks not started yet */
    size_t nchunks;
    _Atomic size_t next_chunk; /* the next chunk to claim (>= nchunks: none left) */
    _Atomic size_t events;  /* see the top of this file */
    async__rows_t all;      /* the whole map's items: count is n */
    async__chunk_call_t chunk_call; /* with chunk_fn: all.ctx points here */
    const size_t *bounds;
    async_future_cb on_success, on_error;
    void *cb_arg;
    async__job_t jobs[];
} map_state_t;

size_t async__default_chunksize(const async_executor_t *ex, size_t n)
{
    size_t d = (size_t)4 * ex->workers;
    size_t c = n / d + (n % d != 0); /* ceil, without (n + d - 1) wrapping near SIZE_MAX */
    return c ? c : 1;
}

/* --- planning the chunks ------------------------------------------------------ */

/* Chunk sizes for chunksize 0, guided as OpenMP's schedule(guided): each
 * chunk is 1/(2 * workers) of the items not yet planned, never more than
 * Pool.map's ceil(n / (4 * workers)) (so no chunk is larger, and no job
 * bigger, than with that rule) nor less than n / (32 * workers).  The map
 * starts with full-size chunks and ends with small ones: the idle time at
 * the end is at most one small chunk, where equal chunks leave up to one
 * full chunk (an eighth of the map on 2 workers).  About 4 * workers chunks
 * more than Pool.map's rule, whatever n. */
static size_t guided_size(size_t left, size_t cap, size_t floor, size_t workers)
{
    size_t c = left / (2 * workers) + (left % (2 * workers) != 0);
    if (c > cap) c = cap;
    if (c < floor) c = floor;
    return c < left ? c : left;
}

/* The number of chunks of a map of n items, and their bounds into bounds
 * (OUT, nchunks + 1 entries) unless it is NULL. */
static size_t map_plan(const async_executor_t *ex, size_t n, size_t chunksize, size_t *bounds)
{
    size_t workers = ex->workers ? ex->workers : 1;
    size_t cap = chunksize ? chunksize : async__default_chunksize(ex, n);
    size_t d = 32 * workers;
    /* Fixed chunks are counted, not walked: a map of SIZE_MAX items in
     * chunks of 1 must fail at map_new's bound, not loop 2^64 times first.
     * The ceilings are n / d + (n % d != 0): (n + d - 1) / d wraps near
     * SIZE_MAX, to chunks of one item. */
    if (chunksize && !bounds) return n / chunksize + (n % chunksize != 0);
    size_t floor = chunksize ? chunksize : n / d + (n % d != 0);
    if (!floor) floor = 1;
    size_t k = 0, first = 0;
    while (first < n) {
        if (bounds) bounds[k] = first;
        first += guided_size(n - first, cap, floor, workers);
        k++;
    }
    if (bounds) bounds[k] = n;
    return k;
}

/* --- chunks: claiming, counting, finishing --------------------------------- */

/* Claims the next chunk for job, a ticket or the caller's own job, and
 * points job's rows at its items; false when every chunk is claimed. */
static bool chunk_claim(map_state_t *st, async__job_t *job)
{
    size_t k = atomic_fetch_add_explicit(&st->next_chunk, 1, memory_order_relaxed);
    if (k >= st->nchunks) return false;
    size_t first = st->bounds[k], count = st->bounds[k + 1] - first;
    const async__rows_t *all = &st->all;
    job->rows = (async__rows_t){
        all->fn, all->ctx, all->in_size ? (const char *)all->in + first * all->in_size : all->in,
        all->in_size, all->out_size ? (char *)all->out + first * all->out_size : NULL,
        all->out_size, count};
    job->first = first;
    return true;
}

/* Counts one of a chunk's two events (a ticket left the queue, a chunk
 * finished); the last of all drops the executor's reference to the map. */
static void map_event(map_state_t *st)
{
    if (atomic_fetch_sub_explicit(&st->events, 1, memory_order_acq_rel) == 1)
        async_future_unref(st->f);
}
/* A chunk that succeeded takes no lock: with chunks of a few microseconds,
 * two workers finishing at once made a contended mutex, and so a futex
 * wait and wake, on most small maps.  A failure is recorded under mu before
 * the chunk is counted; the last count (acq_rel, the end of every earlier
 * count's release sequence) therefore sees every failure. */
void async__map_chunk_done(async__job_t *job, int err, size_t row, const char *msg)
{
    map_state_t *st = job->owner;
    if (err) {
        size_t index = job->first + row;
        pthread_mutex_lock(&st->mu);
        if (!st->fail_code || index < st->fail_index) {
            st->fail_code = err;
            st->fail_index = index;
            snprintf(st->msg, sizeof st->msg, "%s", msg ? msg : "");
        }
        pthread_mutex_unlock(&st->mu);
    }
    if (atomic_fetch_sub_explicit(&st->remaining, 1, memory_order_acq_rel) != 1) {
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

/* Whether a chunk just claimed may run; false when the map was cancelled or
 * its deadline passed (the chunk has been finished then). */
static bool chunk_may_run(async__job_t *job)
{
    map_state_t *st = job->owner;
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
    bool run = chunk_claim(st, job) && chunk_may_run(job);
    map_event(st); /* the ticket left the queue (st may be gone now unless run) */
    return run;
}

void async__map_chunk_skip(async__job_t *job, int err, const char *msg)
{
    map_state_t *st = job->owner;
    /* The ticket fails the next chunk nobody has claimed, if any is left. */
    if (chunk_claim(st, job)) async__map_chunk_done(job, err, 0, msg);
    map_event(st); /* the ticket left the queue */
}

/* --- map_async --------------------------------------------------------------- */

static void map_cb(async_future_t *f, void *arg)
{
    map_state_t *st = arg;
    async_future_cb cb = async_future_error(f) ? st->on_error : st->on_success;
    if (cb) cb(f, st->cb_arg);
}

/* async_map_t as 0.2 laid it out ends before chunk_fn: a size that covers
 * only that much is the 0.2 struct, whose chunk_fn is not there to read. */
#define MAP_SIZE_0_2 offsetof(async_map_t, chunk_fn)

static async_chunk_fn map_chunk_fn(const async_map_t *m)
{
    return m->size >= MAP_SIZE_0_2 + sizeof m->chunk_fn ? m->chunk_fn : NULL;
}

static int check_map(async_executor_t *ex, const async_map_t *m)
{
    if (!ex || !m || (m->size && m->size < MAP_SIZE_0_2)) return ASYNC_EINVAL;
    async_chunk_fn chunk = map_chunk_fn(m);
    if (!m->fn == !chunk) return ASYNC_EINVAL; /* exactly one of the two */
    if (m->n && m->in_size && !m->in) return ASYNC_EINVAL;
    if (m->n && m->out_size && !m->out) return ASYNC_EINVAL;
    /* n items must fit the caller's arrays: a product that wraps would run
     * "every" item over a few bytes. */
    if (m->in_size && m->n > SIZE_MAX / m->in_size) return ASYNC_EINVAL;
    if (m->out_size && m->n > SIZE_MAX / m->out_size) return ASYNC_EINVAL;
    return 0;
}

/* A map's future with room for nchunks tickets and their chunks' bounds,
 * one reference, its state initialised and its callbacks added (they run
 * first when it finishes); NULL when out of memory. */
static async_future_t *map_new(size_t nchunks, async_future_cb on_success,
                               async_future_cb on_error, void *cb_arg)
{
    size_t per_chunk = sizeof(async__job_t) + sizeof(size_t);
    if (nchunks > (SIZE_MAX - sizeof(map_state_t) - sizeof(size_t)) / per_chunk) return NULL;
    async_future_t *f =
        async__future_alloc(sizeof(map_state_t) + nchunks * per_chunk + sizeof(size_t));
    if (!f) return NULL;
    map_state_t *st = (map_state_t *)f->extra;
    pthread_mutex_init(&st->mu, NULL);
    st->f = f;
    st->nchunks = nchunks;
    atomic_init(&st->remaining, nchunks);
    atomic_init(&st->next_chunk, 0);
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

/* Plans the map's chunks over m's arrays and fills its tickets, linked
 * through next as async__q_enqueue wants them. */
static void map_tickets(async_executor_t *ex, map_state_t *st, const async_map_t *m)
{
    size_t *bounds = (size_t *)(st->jobs + st->nchunks);
    map_plan(ex, m->n, m->chunksize, bounds);
    st->bounds = bounds;
    st->chunk_call = (async__chunk_call_t){map_chunk_fn(m), m->ctx};
    st->all = (async__rows_t){m->fn, m->fn ? m->ctx : &st->chunk_call, m->in, m->in_size, m->out,
                              m->out_size, m->n};
    int64_t dl = async__limit_deadline(m->timeout_ns);
    for (size_t i = 0; i < st->nchunks; i++) {
        async__job_t *job = &st->jobs[i];
        job->rows = (async__rows_t){0}; /* set when the ticket claims a chunk */
        job->first = 0;
        job->priority = m->priority;
        job->deadline = dl;
        job->var_ok = false;
        job->kind = JOB_MAP;
        job->owner = st;
        job->next = i + 1 < st->nchunks ? &st->jobs[i + 1] : NULL;
    }
}

/* Whether a map may take the backend's direct path (backend_internal.h):
 * only a waiting call (direct), from a plain thread, with no deadline of
 * its own, and where it cannot overtake queued work. */
static bool direct_ok(async_executor_t *ex, bool direct, int64_t deadline)
{
    return direct && ex->ops->map && deadline == ASYNC_FOREVER && async__exec_direct_ok(ex->priv);
}

/* async_executor_map_async_dl, or, with direct, the start of a map that its
 * caller then waits for. */
static int map_start(async_future_t **out, async_executor_t *ex, const async_map_t *m,
                     async_future_cb on_success, async_future_cb on_error, void *cb_arg,
                     int64_t deadline, bool direct)
{
    int r = check_map(ex, m);
    if (r || !out) return r ? r : ASYNC_EINVAL;
    size_t nchunks = map_plan(ex, m->n, m->chunksize, NULL);
    async_future_t *f = map_new(nchunks, on_success, on_error, cb_arg);
    if (!f) return ASYNC_ENOMEM;
    map_state_t *st = (map_state_t *)f->extra;
    if (!nchunks) { /* nothing to run: done at once (callbacks run here) */
        async__future_finish(f, FS_DONE, 0, NULL, NULL, 0, false);
        *out = f;
        return 0;
    }
    map_tickets(ex, st, m);
    atomic_store_explicit(&f->refs, 2, memory_order_relaxed);
    f->exec_owned = true;
    if (direct_ok(ex, direct, deadline) &&
        ex->ops->map(ex, st->jobs, nchunks, &st->all, async__map_chunk_take)) {
        *out = f;
        return 0;
    }
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

int async_executor_map_async_dl(async_future_t **out, async_executor_t *ex, const async_map_t *m,
                                async_future_cb on_success, async_future_cb on_error, void *cb_arg,
                                int64_t deadline)
{
    return map_start(out, ex, m, on_success, on_error, cb_arg, deadline, false);
}

int async_executor_map_async(async_future_t **out, async_executor_t *ex, const async_map_t *m,
                             async_future_cb on_success, async_future_cb on_error, void *cb_arg)
{
    return async_executor_map_async_dl(out, ex, m, on_success, on_error, cb_arg, ASYNC_FOREVER);
}

/* --- map: waiting for it ------------------------------------------------------ */

/* The caller's share of the work (caller_runs): claims and runs chunks, in
 * the same order as the workers, until none is left or deadline.  Its job
 * is never queued: it only carries a chunk to async__exec_finish. */
static void help_map(async_executor_t *ex, map_state_t *st, int64_t deadline)
{
    /* A map of no items has no ticket to read the deadline from: its state
     * ends where the first would start. */
    if (!st->nchunks) return;
    async__job_t job;
    memset(&job, 0, sizeof job);
    job.kind = JOB_MAP;
    job.owner = st;
    job.deadline = st->jobs[0].deadline; /* every ticket's; never rewritten */
    while (deadline == ASYNC_FOREVER || async_now() < deadline) {
        if (!chunk_claim(st, &job)) return;
        if (!chunk_may_run(&job)) continue;
        async__outcome_t oc;
        async__rows_run(&job.rows, UINT_MAX, job.deadline, false, NULL, NULL, 0, &oc);
        async__exec_finish(ex, &job, &oc);
    }
}

/* How long a thread that waits for a map looks at it before it sleeps.
 * Sleeping costs the map's end two hops: the last chunk's finisher makes a
 * futex call to wake the caller, which then waits for a CPU (on a VM, for
 * its vCPU to come out of halt), several microseconds at best and tens
 * under load: most of what a map of 50 us of work costs beyond its rows
 * when maps run back to back.  The budget adapts as the job queue's spin
 * does: a spin that caught the map's end, or a sleep that ended within
 * twice the budget (a near miss), doubles it, up to MAP_SPIN_MAX; a longer
 * sleep halves it, down to MAP_SPIN_MIN, so that a thread whose maps run
 * for milliseconds burns little.  The budget is the waiting thread's: each
 * caller learns from its own maps.  The spinner yields its CPU every
 * MAP_SPIN_YIELD looks at the clock: a worker woken for the map and queued
 * behind it on the same CPU then runs at once, so the spin never holds up
 * the work it waits for (with caller_runs off, the caller is one thread
 * more than the workers, and may share a CPU with one). */
#define MAP_SPIN_MIN ASYNC_USEC(5)
#define MAP_SPIN_MAX ASYNC_USEC(100)
#define MAP_SPIN_POLL 16
#define MAP_SPIN_YIELD 8

static _Thread_local int64_t map_spin_budget ASYNC_TLS = MAP_SPIN_MAX;

/* Spins until f is final (true) or until passes (false). */
static bool spin_until_final(async_future_t *f, int64_t until)
{
    for (unsigned i = 1;; i++) {
        if (async__fs_final(atomic_load_explicit(&f->state, memory_order_acquire))) return true;
        async__cpu_relax();
        if (i % MAP_SPIN_POLL) continue;
        if (async_now() >= until) return false;
        if (i % (MAP_SPIN_POLL * MAP_SPIN_YIELD) == 0) sched_yield();
    }
}

/* A thread's wait for f until deadline: spins for its budget, then sleeps. */
static int spin_then_sleep(async_future_t *f, int64_t deadline)
{
    int64_t spin = map_spin_budget, from = async_now(), until = from + spin;
    bool caught = spin_until_final(f, deadline < until ? deadline : until);
    int r = async__future_wait(f, deadline, false);
    if (!caught && async_now() - from > 2 * spin) spin /= 2;
    else spin *= 2;
    map_spin_budget = spin < MAP_SPIN_MIN ? MAP_SPIN_MIN : spin > MAP_SPIN_MAX ? MAP_SPIN_MAX : spin;
    return r;
}

/* Waits for the map until deadline: a task awaits; a thread spins a little
 * and then sleeps, or first runs chunks itself when the pool is set to let
 * the caller run. */
static int map_wait(async_executor_t *ex, async_future_t *f, int64_t deadline)
{
    if (async__in_task()) return async_future_await_dl(f, deadline);
    /* Not with an initializer (the caller never ran it) nor on the process
     * backend: chunks run by the caller so that the map does not wait for
     * sleeping workers to get a CPU back. */
    if (ex->opts.caller_runs && ex->opts.backend == ASYNC_BACKEND_THREADS && !ex->opts.initializer)
        help_map(ex, (map_state_t *)f->extra, deadline);
    return spin_then_sleep(f, deadline);
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
    if (ex && ex->ops->on_own_thread && ex->ops->on_own_thread(ex)) {
        /* A future's callback on the pool's own thread: the results could
         * only come through this very thread (backend_internal.h). */
        if (err) {
            err->code = ASYNC_EDEADLK;
            err->index = 0;
            snprintf(err->message, sizeof err->message,
                     "async_executor_map called from a future's callback on the %s backend: "
                     "callbacks run on the pool's own thread, which would have to deliver the results",
                     ex->ops->name);
        }
        return ASYNC_EDEADLK;
    }
    async_future_t *f;
    int r = map_start(&f, ex, m, NULL, NULL, NULL, deadline, true);
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
