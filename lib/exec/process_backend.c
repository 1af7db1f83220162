/* The process backend of the executor (backend_internal.h) on the process
 * pool engine (exec/procpool/procpool_internal.h).
 *
 * One feeder thread takes jobs from the executor's queue and submits them to
 * the pool; the pool's supervisor thread finishes them.  A job crosses as a
 * header plus its input rows; in the worker, run_rows rebuilds the rows
 * around the shared-memory copy and runs them with async__rows_run, exactly
 * as a worker thread would, then leaves an outcome header, the output rows,
 * and on failure the message in the job's result.  Input and output rows
 * that already live in the pool's shared memory (async_executor_shm_alloc)
 * are passed by address: a map over them copies nothing per row.
 *
 * How many jobs are taken: one per worker, so that priorities, cancellation
 * and the queue bound behave as on the thread backend, plus, when recent jobs
 * were short, enough to keep each worker busy for about 2 ms (at most
 * PREFETCH), as ProcessPoolExecutor keeps a call queue: those count as
 * running (they can no longer be cancelled or overtaken by a higher
 * priority), and they spare the workers a round trip through the feeder
 * between small jobs.  Until a job has finished nothing is prefetched, and
 * jobs of 2 ms or more are never prefetched.
 *
 * async_executor_run on an idle pool takes a shorter way (run_direct, the
 * backend's run op): no feeder, no supervisor, no future; the worker wakes
 * the calling thread itself, two hand-overs instead of four.  A map that
 * its caller waits for does the same with all its chunks at once
 * (map_direct, the map op), when its rows are in the pool's shared memory. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include "backend_internal.h"
#include "exec/procpool/procpool_internal.h"

#define PREFETCH 512            /* most jobs taken beyond one per worker */
#define PREFETCH_NS 2000000.0   /* of work per worker, by the recent job time */
#define RESULT_AREA (4u << 20)

typedef struct procs {
    async_executor_t *ex;
    async__procpool_t *pool;
    pthread_t feeder;
    bool feeder_started;
    pthread_mutex_t mu;
    pthread_cond_t room;
    unsigned inflight;     /* taken and not finished */
    double avg_ns;         /* recent jobs' run time in the worker (0: none yet) */
    unsigned wake_at;      /* the feeder waits until inflight <= wake_at */
    bool feeder_waiting;
    /* The feeder counts a job in inflight before it blocks in take: while it
     * waits there, that count is a reservation, not a busy worker. */
    _Atomic bool feeder_taking;
    unsigned direct;       /* direct runs under way (counted in inflight too) */
    bool joining;          /* join() began: no new direct run */
    pthread_cond_t direct_idle; /* join waits here for direct == 0 */
} procs_t;

/* What crosses to the worker in front of the input rows. */
typedef struct hdr {
    async_work_fn fn;
    async_chunk_fn chunk;   /* a map's chunk function: fn is NULL then */
    void *ctx;
    const char *in_shared;  /* rows already in shared memory, else NULL */
    char *out_shared;
    uint64_t in_size, out_size, count, max_result;
    int64_t deadline;
    bool var_ok;
} hdr_t;

/* What comes back in front of the output rows. */
typedef struct res {
    int32_t err;
    uint32_t msg_len;
    uint64_t failed_row, result_size, var_size;
    int64_t ns;            /* the rows' run time */
} res_t;

/* --- in the worker process ------------------------------------------------ */

static void *grow(void *arg, size_t size)
{
    async__procout_t *out = arg;
    if (async__procout_set_size(out, sizeof(res_t) + size)) return NULL;
    return (char *)async__procout_data(out) + sizeof(res_t);
}

static int run_rows(void *unused, const void *in, size_t in_len, async__procout_t *out)
{
    (void)unused;
    (void)in_len;
    hdr_t h;
    memcpy(&h, in, sizeof h);
    size_t rows_bytes = h.out_shared ? 0 : h.out_size * h.count;
    char *base = async__procout_data(out);
    async__chunk_call_t call = {h.chunk, h.ctx};
    async__rows_t rows = {
        .fn = h.fn, .ctx = h.fn ? h.ctx : &call,
        .in = h.in_shared ? h.in_shared : (const char *)in + sizeof h, .in_size = h.in_size,
        .out = h.out_shared ? h.out_shared : (h.out_size ? base + sizeof(res_t) : NULL),
        .out_size = h.out_size, .count = h.count,
    };
    /* Rows passed by address were written by the parent: mapped here at
     * once rather than a fault a page (async__procpool_prefault). */
    if (h.in_shared) async__procpool_prefault(h.in_shared, h.in_size * h.count, false);
    if (h.out_shared) async__procpool_prefault(h.out_shared, h.out_size * h.count, true);
    async__outcome_t oc;
    int64_t t0 = async_now();
    async__rows_run(&rows, (unsigned)async__procpool_self(), h.deadline, h.var_ok, grow, out,
                    h.max_result, &oc);
    /* A failed job's variable result is dropped by the parent: not sent,
     * and above all not kept in front of the message, which would need a
     * second block of the result ring beside it, and a result past half of
     * the ring would leave none, so that the job's message was lost. */
    bool var = oc.var_out && !oc.err;
    if (!var && async__procout_data(out) != base) {
        /* Grown, then shrunk back (or failed): the rows were written where
         * they began. */
        async__procout_set_size(out, sizeof(res_t) + rows_bytes);
        memcpy((char *)async__procout_data(out) + sizeof(res_t), base + sizeof(res_t), rows_bytes);
    }
    size_t used = sizeof(res_t) + (var ? oc.var_size : rows_bytes);
    res_t r = {.err = oc.err, .failed_row = oc.failed_row, .result_size = oc.result_size,
               .var_size = var ? oc.var_size : 0, .ns = async_now() - t0};
    if (oc.err && oc.msg[0]) {
        size_t n = strnlen(oc.msg, sizeof oc.msg - 1);
        if (async__procout_set_size(out, used + n) == 0) {
            memcpy((char *)async__procout_data(out) + used, oc.msg, n);
            r.msg_len = (uint32_t)n;
            used += n;
        }
    }
    async__procout_set_size(out, used);
    memcpy(async__procout_data(out), &r, sizeof r);
    return 0;
}

static int run_init(void *arg, char *msg, size_t cap)
{
    char m[ASYNC_FUTURE_MSG_MAX];
    int rc = async__run_init(arg, (unsigned)async__procpool_self(), m);
    if (rc) snprintf(msg, cap, "%s", m);
    return rc;
}

/* --- in the parent ---------------------------------------------------------- */

static void ended_locked(procs_t *s, int64_t ns)
{
    s->inflight--;
    if (ns >= 0) s->avg_ns = s->avg_ns ? s->avg_ns * 0.875 + ns * 0.125 : ns;
    if (s->feeder_waiting && s->inflight <= s->wake_at) pthread_cond_signal(&s->room);
}

static void job_ended(procs_t *s, int64_t ns)
{
    pthread_mutex_lock(&s->mu);
    ended_locked(s, ns);
    pthread_mutex_unlock(&s->mu);
}

static void finish_err(procs_t *s, async__job_t *job, int err, const char *msg)
{
    async__outcome_t oc = {.err = err};
    snprintf(oc.msg, sizeof oc.msg, "%s", msg ? msg : async_strerror(err));
    async__exec_finish(s->ex, job, &oc);
    job_ended(s, -1);
}

/* Whether the outcome header a worker wrote in front of a result of len
 * bytes (the engine checked that those lie where they should) agrees with
 * it: a work function may have overwritten it (the rows' neighbours in
 * shared memory), and each size and row number is used to copy.  Says what
 * is wrong in msg (cap bytes) when it does not. */
static bool res_ok(const res_t *r, size_t len, size_t rows_bytes, size_t count, char *msg,
                   size_t cap)
{
    size_t room = len >= sizeof *r ? len - sizeof *r : 0;
    size_t body = r->var_size ? r->var_size : rows_bytes;
    if (len < sizeof *r)
        snprintf(msg, cap, "the worker's result (%zu bytes) is shorter than its header", len);
    else if (body > room)
        snprintf(msg, cap, "the worker's result announces %llu bytes of rows in %zu",
                 (unsigned long long)body, room);
    else if (r->err && r->failed_row >= (count ? count : 1))
        snprintf(msg, cap, "the worker's result names row %llu as failed, of %zu",
                 (unsigned long long)r->failed_row, count);
    else if (r->err > 0)
        snprintf(msg, cap, "the worker's result holds the error code %d", (int)r->err);
    else
        return true;
    size_t n = strlen(msg);
    snprintf(msg + n, cap - n, " (the pool's shared memory was overwritten)");
    return false;
}

static void on_done(void *user, void *arg, int err, const char *msg, const void *out,
                    size_t len)
{
    procs_t *s = user;
    async__job_t *job = arg;
    if (err) {
        finish_err(s, job, err, msg);
        return;
    }
    res_t r = {0};
    if (len >= sizeof r) memcpy(&r, out, sizeof r);
    const char *data = (const char *)out + sizeof r;
    bool out_shared = job->rows.out && async__procpool_owns(s->pool, job->rows.out);
    size_t rows_bytes = out_shared ? 0 : job->rows.out_size * job->rows.count;
    char bad[ASYNC_FUTURE_MSG_MAX];
    if (!res_ok(&r, len, rows_bytes, job->rows.count, bad, sizeof bad)) {
        finish_err(s, job, ASYNC_EIO, bad);
        return;
    }
    async__outcome_t oc = {.err = r.err, .failed_row = r.failed_row,
                           .result_size = r.result_size};
    if (r.var_size) {
        oc.var_out = (void *)data;
        oc.var_size = r.var_size;
    } else if (rows_bytes && job->rows.out) {
        size_t ran = r.err ? r.failed_row : job->rows.count;
        memcpy(job->rows.out, data, ran * job->rows.out_size);
    }
    if (r.msg_len) {
        size_t at = sizeof r + (r.var_size ? r.var_size : rows_bytes);
        size_t n = r.msg_len < sizeof oc.msg - 1 ? r.msg_len : sizeof oc.msg - 1;
        if (at <= len && n <= len - at) memcpy(oc.msg, (const char *)out + at, n);
        else n = 0;
        oc.msg[n] = '\0';
    }
    async__exec_finish(s->ex, job, &oc);
    job_ended(s, r.ns);
}

/* The header in front of a job's input rows: the same for a submit and a
 * direct run. */
static void make_hdr(hdr_t *h, const async__rows_t *rw, bool in_shared, bool out_shared,
                     int64_t deadline, bool var_ok)
{
    /* Zeroed whole, padding too: the header is copied into shared memory,
     * and a tool that follows it there (valgrind) must find no undefined
     * bytes. */
    memset(h, 0, sizeof *h);
    if (rw->fn) {
        h->fn = rw->fn;
        h->ctx = rw->ctx;
    } else { /* the call's address is the parent's: its two fields cross */
        const async__chunk_call_t *call = rw->ctx;
        h->chunk = call->fn;
        h->ctx = call->ctx;
    }
    h->in_shared = in_shared ? rw->in : NULL;
    h->out_shared = out_shared ? rw->out : NULL;
    h->in_size = rw->in_size;
    h->out_size = rw->out_size;
    h->count = rw->count;
    h->max_result = RESULT_AREA - 4096;
    h->deadline = deadline;
    h->var_ok = var_ok;
}

static void submit_job(procs_t *s, async__job_t *job)
{
    async_executor_t *ex = s->ex;
    const async__rows_t *rw = &job->rows;
    bool in_shared = rw->in && async__procpool_owns(s->pool, rw->in);
    bool out_shared = rw->out && async__procpool_owns(s->pool, rw->out);
    size_t in_bytes = in_shared || !rw->in ? 0 : rw->in_size * rw->count;
    size_t out_bytes = sizeof(res_t) + (out_shared ? 0 : rw->out_size * rw->count);
    if (ex->opts.max_job_bytes && in_bytes + out_bytes > ex->opts.max_job_bytes) {
        finish_err(s, job, ASYNC_EINVAL, "the job is larger than max_job_bytes");
        return;
    }
    hdr_t h;
    make_hdr(&h, rw, in_shared, out_shared, job->deadline, job->var_ok);
    async__procjob_t pj = {.fn = (async__anyfn_t)run_rows, .in = &h, .in_len = sizeof h,
                           .in2 = rw->in, .in2_len = in_bytes, .out_cap = out_bytes,
                           .deadline = job->deadline, .done = on_done, .arg = job};
    int rc = async__procpool_submit(s->pool, &pj, NULL);
    if (rc) {
        char msg[ASYNC_FUTURE_MSG_MAX];
        if (rc != ASYNC_ECLOSED && async__procpool_error(s->pool, NULL, 0) == rc)
            async__procpool_error(s->pool, msg, sizeof msg);
        else if (rc == ASYNC_ECLOSED) snprintf(msg, sizeof msg, "the process pool was terminated");
        else snprintf(msg, sizeof msg, "%s", async_strerror(rc));
        finish_err(s, job, rc == ASYNC_ECLOSED ? ASYNC_ECANCELED : rc, msg);
    }
}

static _Thread_local const procs_t *tls_feeder_of;

static void *feeder(void *arg)
{
    procs_t *s = arg;
    tls_feeder_of = s;
    async_executor_t *ex = s->ex;
    unsigned workers = ex->workers;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        for (;;) {
            double extra = s->avg_ns > 0 ? workers * PREFETCH_NS / s->avg_ns : 0;
            unsigned ahead = extra > PREFETCH ? PREFETCH : (unsigned)extra;
            if (s->inflight < workers + ahead) break;
            /* Refill in batches when prefetching, at once otherwise. */
            s->wake_at = ahead > 1 ? workers + ahead / 2 : workers + ahead - 1;
            s->feeder_waiting = true;
            pthread_cond_wait(&s->room, &s->mu);
            s->feeder_waiting = false;
        }
        s->inflight++;
        atomic_store_explicit(&s->feeder_taking, true, memory_order_relaxed);
        pthread_mutex_unlock(&s->mu);
        async__job_t *job;
        int taken = async__exec_take(ex, 0, &job);
        atomic_store_explicit(&s->feeder_taking, false, memory_order_relaxed);
        if (taken != 0) {
            pthread_mutex_lock(&s->mu);
            s->inflight--;
            pthread_mutex_unlock(&s->mu);
            break;
        }
        submit_job(s, job);
    }
    return NULL;
}

/* --- the direct path of async_executor_run ------------------------------------
 *
 * A run on a plain thread with the queue empty and a worker free skips the
 * feeder, the supervisor and the future: async__procpool_call hands the job
 * to a worker and the worker wakes this thread, which copies the result
 * straight into the caller's buffer.  The job crosses with the header a
 * submit would build, so the worker side (run_rows) is the same, and the
 * results are read as on_done reads them. */

_Atomic uint64_t async__procs_direct_runs;

typedef struct direct {
    int64_t deadline;
    void *out;             /* the caller's, or NULL */
    size_t out_size;
    int code;
    size_t len;            /* the result's whole size */
    int64_t ns;            /* the rows' run time; -1: unknown */
    char msg[ASYNC_FUTURE_MSG_MAX];
} direct_t;

/* Exactly once, before async__procpool_call returns: here on success, on the
 * supervisor thread when the job failed there (its worker died, its deadline
 * passed, terminate).  Writes the caller's out only for a job that
 * succeeded, as the ordinary path copies only a DONE future's result. */
static void on_direct_done(void *user, void *arg, int err, const char *msg, const void *out,
                           size_t len)
{
    (void)user;
    direct_t *d = arg;
    if (err) {
        d->code = err;
        snprintf(d->msg, sizeof d->msg, "%s", msg ? msg : async_strerror(err));
        return;
    }
    res_t r = {0};
    if (len >= sizeof r) memcpy(&r, out, sizeof r);
    if (!res_ok(&r, len, d->out_size, 1, d->msg, sizeof d->msg)) {
        d->code = ASYNC_EIO;
        return;
    }
    d->ns = r.ns;
    const char *data = (const char *)out + sizeof r;
    if (r.err) {
        d->code = r.err;
        if (r.msg_len) {
            size_t at = sizeof r + (r.var_size ? r.var_size : d->out_size);
            size_t n = r.msg_len < sizeof d->msg - 1 ? r.msg_len : sizeof d->msg - 1;
            if (at <= len && n <= len - at) memcpy(d->msg, (const char *)out + at, n);
            else n = 0;
            d->msg[n] = '\0';
        }
        return;
    }
    /* async__exec_finish's rule: a result that arrives past the job's
     * deadline is a failure. */
    if (d->deadline != ASYNC_FOREVER && async_now() > d->deadline) {
        d->code = ASYNC_ETIMEDOUT;
        snprintf(d->msg, sizeof d->msg, "finished after its deadline");
        return;
    }
    size_t size = r.var_size ? r.var_size
                             : (r.result_size < d->out_size ? r.result_size : d->out_size);
    if (d->out && size) memcpy(d->out, data, size < d->out_size ? size : d->out_size);
    d->len = size;
}

static void direct_ended(procs_t *s, int64_t ns)
{
    pthread_mutex_lock(&s->mu);
    ended_locked(s, ns);
    if (!--s->direct && s->joining) pthread_cond_broadcast(&s->direct_idle);
    pthread_mutex_unlock(&s->mu);
}

/* The pool's own threads run future callbacks: the supervisor (results,
 * deaths, deadlines) and the feeder (jobs it could not place).  A run or a
 * map there would wait for a result that only that thread could deliver:
 * executor.c refuses them before they reach run_direct or map_direct. */
static bool on_own_thread(const async_executor_t *ex)
{
    const procs_t *s = ex->backend;
    return s && (async__procpool_on_supervisor(s->pool) || tls_feeder_of == s);
}

static bool run_direct(async_executor_t *ex, const async_job_t *job, int64_t deadline, void *out,
                       size_t *out_len, char *msg, size_t msg_cap, int *code)
{
    procs_t *s = ex->backend;
    /* The submit path's rules: an untimed borrowed input already in shared
     * memory goes by address, any other input is copied; the output comes
     * back through the job's result. */
    bool in_shared = job->in && job->borrow_input && deadline == ASYNC_FOREVER &&
                     async__procpool_owns(s->pool, job->in);
    size_t in_bytes = in_shared || !job->in ? 0 : job->in_size;
    size_t out_bytes = sizeof(res_t) + job->out_size;
    if (ex->opts.max_job_bytes && in_bytes + out_bytes > ex->opts.max_job_bytes)
        return false; /* the ordinary path says why */
    pthread_mutex_lock(&s->mu);
    /* A free worker: the call then starts at once, and the feeder, which
     * counts this run, takes no more than the workers can hold. */
    unsigned busy = s->inflight - atomic_load_explicit(&s->feeder_taking, memory_order_relaxed);
    bool go = !s->joining && busy < ex->workers;
    if (go) {
        s->inflight++;
        s->direct++;
    }
    pthread_mutex_unlock(&s->mu);
    if (!go) return false;
    async__rows_t rw = {.fn = job->fn, .ctx = job->ctx, .in = job->in, .in_size = job->in_size,
                        .out = NULL, .out_size = job->out_size, .count = 1};
    hdr_t h;
    make_hdr(&h, &rw, in_shared, false, deadline, true);
    direct_t d = {.deadline = deadline, .out = out, .out_size = job->out_size, .ns = -1};
    async__procjob_t pj = {.fn = (async__anyfn_t)run_rows, .in = &h, .in_len = sizeof h,
                           .in2 = job->in, .in2_len = in_bytes, .out_cap = out_bytes,
                           .deadline = deadline, .done = on_direct_done, .arg = &d};
    int rc = async__procpool_call(s->pool, &pj);
    direct_ended(s, rc ? -1 : d.ns);
    /* Not run (EAGAIN: no slot free or jobs pending in the engine; ECLOSED;
     * the pool broken; ENOMEM): the ordinary path gives the answer a
     * submit gives, with the executor's codes and messages. */
    if (rc) return false;
    atomic_fetch_add_explicit(&async__procs_direct_runs, 1, memory_order_relaxed);
    *code = d.code;
    if (out_len) *out_len = d.code ? 0 : d.len;
    if (msg && msg_cap) snprintf(msg, msg_cap, "%s", d.code ? d.msg : "");
    return true;
}

/* --- the direct path of a map ---------------------------------------------------
 *
 * A map from a plain thread on an idle pool skips the feeder and the
 * supervisor: every chunk goes straight into a slot at once
 * (async__procpool_call_n), in chunk order, which is the order the workers
 * claim them in, and each worker hands its chunk's outcome back to this
 * thread, which finishes the chunk as on_done would on the supervisor.
 * The chunks share one wake-up: this thread sleeps until the worker that
 * hands over the last one wakes it (the batch of procpool_internal.h), so
 * a map costs one sleep here and one per worker, whatever its chunks.
 * Only rows in the pool's shared memory qualify: a chunk then crosses as
 * its 80-byte header alone, which sits in the slot, so placing allocates
 * nothing and cannot fail half-way.  A worker that dies mid-chunk, a chunk
 * past its deadline, and terminate are the supervisor's, as for a direct
 * run: it fails that chunk and wakes this thread. */

_Atomic uint64_t async__procs_direct_maps;

static bool rows_shared(const procs_t *s, const async__rows_t *all)
{
    bool in_ok = !all->in || !all->in_size || async__procpool_owns(s->pool, all->in);
    bool out_ok = !all->out || !all->out_size || async__procpool_owns(s->pool, all->out);
    return in_ok && out_ok;
}

/* Claims the pool for a direct map of up to n chunks: every worker idle,
 * so that the chunks start at once; they count in inflight from here, so
 * that the feeder and other callers hold back meanwhile. */
static bool direct_map_begin(procs_t *s, size_t n)
{
    pthread_mutex_lock(&s->mu);
    unsigned busy = s->inflight - atomic_load_explicit(&s->feeder_taking, memory_order_relaxed);
    bool go = !s->joining && busy == 0 && n <= s->ex->workers + PREFETCH;
    if (go) {
        s->direct++;
        s->inflight += (unsigned)n;
    }
    pthread_mutex_unlock(&s->mu);
    return go;
}

static void direct_map_end(procs_t *s)
{
    pthread_mutex_lock(&s->mu);
    if (!--s->direct && s->joining) pthread_cond_broadcast(&s->direct_idle);
    pthread_mutex_unlock(&s->mu);
}

static bool map_direct(async_executor_t *ex, async__job_t *tickets, size_t n,
                       const async__rows_t *all, bool (*take)(async__job_t *ticket))
{
    procs_t *s = ex->backend;
    if (n > PP_CALL_MAX || !rows_shared(s, all)) return false;
    if (ex->opts.max_job_bytes && sizeof(res_t) > ex->opts.max_job_bytes) return false;
    /* The headers, then the engine's jobs pointing at them: one block. */
    hdr_t *h = async__malloc(n * (sizeof *h + sizeof(async__procjob_t)));
    if (!h) return false;
    async__procjob_t *pj = (async__procjob_t *)(h + n);
    if (!direct_map_begin(s, n)) {
        async__free(h);
        return false;
    }
    size_t m = 0;
    for (size_t k = 0; k < n; k++) {
        async__job_t *job = &tickets[k];
        if (!take(job)) continue;
        const async__rows_t *rw = &job->rows;
        make_hdr(&h[m], rw, rw->in && rw->in_size, rw->out != NULL, job->deadline, job->var_ok);
        pj[m] = (async__procjob_t){.fn = (async__anyfn_t)run_rows, .in = &h[m],
                                   .in_len = sizeof h[m], .out_cap = sizeof(res_t),
                                   .deadline = job->deadline, .done = on_done, .arg = job};
        m++;
    }
    /* Chunks take finished (cancelled, past their deadline) never run: on_done
     * or finish_err ends each of the m others. */
    pthread_mutex_lock(&s->mu);
    for (size_t k = m; k < n; k++) ended_locked(s, -1);
    pthread_mutex_unlock(&s->mu);
    if (m && async__procpool_call_n(s->pool, pj, m) != 0) {
        /* Not placed (a slot taken meanwhile, the pool closing or broken):
         * the ordinary engine path, which gives a submit's codes. */
        for (size_t k = 0; k < m; k++) submit_job(s, pj[k].arg);
    } else if (m) {
        atomic_fetch_add_explicit(&async__procs_direct_maps, 1, memory_order_relaxed);
    }
    async__free(h);
    direct_map_end(s);
    return true;
}

/* The pool's message already names the worker and the cause. */
static void on_broken(void *arg, int code, const char *msg)
{
    async__exec_break(arg, code, msg);
}

static unsigned default_workers(void) { return async__default_workers(async_cpu_count(), 1, 0); }

static int start(async_executor_t *ex)
{
    procs_t *s = async__calloc(1, sizeof *s);
    if (!s) return ASYNC_ENOMEM;
    s->ex = ex;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->room, NULL);
    pthread_cond_init(&s->direct_idle, NULL);
    async__procpool_opts_t o = {
        .workers = ex->workers,
        .max_tasks_per_worker = ex->opts.max_tasks_per_worker,
        .init = ex->opts.initializer ? run_init : NULL,
        .init_arg = ex,
        .result_area = RESULT_AREA,
        .on_broken = on_broken,
        .broken_arg = ex,
        .user = s,
        .idle_spin_ns = -1,
    };
    int rc = async__procpool_new(&o, &s->pool);
    if (rc) goto fail;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&s->feeder, NULL, feeder, s) ? ASYNC_EAGAIN : 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc) goto fail;
    s->feeder_started = true;
    ex->backend = s;
    return 0;
fail:
    async__procpool_free(s->pool);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->room);
    pthread_cond_destroy(&s->direct_idle);
    async__free(s);
    return rc; /* ENOMEM, EAGAIN, EMFILE, ENFILE: the caller learns which limit it hit */
}

static void join(async_executor_t *ex)
{
    procs_t *s = ex->backend;
    pthread_mutex_lock(&s->mu);
    s->joining = true;
    pthread_mutex_unlock(&s->mu);
    if (s->feeder_started) {
        pthread_join(s->feeder, NULL);
        s->feeder_started = false;
    }
    /* The direct runs and maps that began before joining first: a direct
     * map has claimed its chunks, so it is accepted work, but it may not
     * have placed them yet, and a pool already draining would refuse them
     * (they failed as if terminated).  The pool stays open meanwhile, so
     * its supervisor still fails their jobs if workers die; and once they
     * are done no thread of theirs is left in the pool's memory, which
     * free() unmaps.  Then every accepted job is waited for. */
    pthread_mutex_lock(&s->mu);
    while (s->direct) pthread_cond_wait(&s->direct_idle, &s->mu);
    pthread_mutex_unlock(&s->mu);
    async__procpool_shutdown(s->pool, true);
}

static void terminate(async_executor_t *ex)
{
    procs_t *s = ex->backend;
    async__procpool_terminate(s->pool);
}

static void free_backend(async_executor_t *ex)
{
    procs_t *s = ex->backend;
    if (!s) return;
    async__procpool_free(s->pool);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->room);
    pthread_cond_destroy(&s->direct_idle);
    async__free(s);
    ex->backend = NULL;
}

static int shm_alloc(async_executor_t *ex, size_t size, void **out)
{
    procs_t *s = ex->backend;
    return async__procpool_shm_alloc(s->pool, size ? size : 1, out);
}

static void shm_free(async_executor_t *ex, void *ptr)
{
    procs_t *s = ex->backend;
    async__procpool_shm_free(s->pool, ptr);
}

const async__backend_ops_t async__procs_backend = {
    .name = "processes",
    .default_workers = default_workers,
    .start = start,
    .join = join,
    .terminate = terminate,
    .free = free_backend,
    .shm_alloc = shm_alloc,
    .shm_free = shm_free,
    .max_result = RESULT_AREA - 4096,
    .run = run_direct,
    .on_own_thread = on_own_thread,
    .map = map_direct,
};
