/* The lab's runner: one range function over [0, n) in chunks, serially, on
 * libasync's thread executor or on its process executor.
 *
 * A chunk is one job: its input is the range {lo, hi} (16 bytes), its output
 * nothing; the range function writes its results into shared memory that the
 * job's context points to, so the parent reads every mode's results the same
 * way.  When a progress bar can be drawn (stderr is a terminal), parallel
 * runs go through async_executor_imap (unordered, every chunk in flight at
 * once) and the parent advances the bar as each chunk completes; otherwise
 * (output redirected, or the chunk-size sweep, which has no bar because it
 * measures dispatch itself) they use async_executor_map, which leaves the
 * parent asleep until the last chunk is done instead of waking it per chunk
 * on a machine whose cores the workers need.
 *
 * When the library is built without the process backend (async_executor_new
 * says ASYNC_ENOTSUP), the processes mode falls back to forking its workers
 * for the run: they inherit the data mapped before the fork, take chunks from
 * one atomic counter in shared memory, and the parent waits on a pipe that
 * reaches end-of-file when the last worker exits, redrawing the bar from a
 * shared counter meanwhile. */
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "async/executor.h"
#include "lab.h"

const char *const lab_mode_name[LAB_NMODES] = {"serial", "threads", "processes", "mpi"};

const char *lab_backend(lab_mode_t mode)
{
    switch (mode) {
    case LAB_SERIAL: return "a plain loop";
    case LAB_THREADS: return "libasync thread executor";
    case LAB_MPI: return "libasync MPI executor (libasync-mpi)";
    default: return "libasync process executor";
    }
}

/* Shared between the parent and every worker, in shared memory. */
typedef struct job {
    _Atomic size_t next;    /* next chunk to hand out */
    _Atomic uint64_t done;  /* items finished, for the progress bar */
    lab_range_fn fn;
    void *ctx;
    size_t n, chunk, nchunks;
    async_progress_t *bar;  /* serial only: the loop adds to it directly */
} job_t;

static void work(job_t *j)
{
    for (;;) {
        size_t c = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
        if (c >= j->nchunks) return;
        size_t lo = c * j->chunk, hi = lo + j->chunk < j->n ? lo + j->chunk : j->n;
        j->fn(j->ctx, lo, hi);
        if (j->bar) async_progress_add(j->bar, hi - lo);
        else atomic_fetch_add_explicit(&j->done, hi - lo, memory_order_relaxed);
    }
}

typedef struct range {
    size_t lo, hi;
} range_t;

/* The executor's work function: one chunk. */
static int range_work(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out, (void)out_size;
    const range_t *r = in;
    job_t *j = ctx;
    j->fn(j->ctx, r->lo, r->hi);
    return 0;
}

/* Runs the job's chunks on ex; returns the seconds from the first submit. */
static double run_executor(async_executor_t *ex, job_t *j, async_progress_t *bar, bool use_map)
{
    range_t *ranges = malloc(j->nchunks * sizeof *ranges);
    if (!ranges) lab_die("out of memory");
    for (size_t c = 0; c < j->nchunks; c++) {
        ranges[c].lo = c * j->chunk;
        ranges[c].hi = ranges[c].lo + j->chunk < j->n ? ranges[c].lo + j->chunk : j->n;
    }
    double t0 = lab_now();
    if (use_map) {
        async_map_t m = {.fn = range_work, .ctx = j, .in = ranges, .in_size = sizeof *ranges,
                         .n = j->nchunks, .chunksize = 1};
        async_map_error_t err;
        int rc = async_executor_map(ex, &m, &err);
        if (rc != 0) lab_die("map failed at chunk %zu: %s: %s", err.index, async_strerror(rc), err.message);
    } else {
        async_imap_t m = {.fn = range_work, .ctx = j, .in = ranges, .in_size = sizeof *ranges,
                          .n = j->nchunks, .chunksize = 1, .unordered = true,
                          .window = j->nchunks < 4096 ? j->nchunks : 4096};
        async_imap_iter_t *it;
        int rc = async_executor_imap(&it, ex, &m);
        if (rc != 0) lab_die("imap: %s", async_strerror(rc));
        size_t index;
        char dummy;
        while ((rc = async_imap_next(it, &dummy, &index)) == 0)
            async_progress_add(bar, ranges[index].hi - ranges[index].lo);
        if (rc != ASYNC_EEOF) lab_die("chunk %zu failed: %s: %s", index, async_strerror(rc), async_imap_message(it));
        async_imap_free(it);
    }
    double t = lab_now() - t0;
    free(ranges);
    return t;
}

static double run_once(lab_mode_t mode, unsigned workers, lab_range_fn fn, void *ctx, size_t n, size_t chunk,
                       const char *label, double *start_s)
{
    if (chunk == 0) chunk = 1;
    if (workers == 0) workers = 1;
    job_t *j = lab_shared_alloc(sizeof *j);
    j->fn = fn;
    j->ctx = ctx;
    j->n = n;
    j->chunk = chunk;
    j->nchunks = (n + chunk - 1) / chunk;
    char text[64];
    snprintf(text, sizeof text, "%s %s", label ? label : "", lab_mode_name[mode]);
    async_progress_t *bar = NULL;
    if (label && async_progress_new(&bar, text, n) != 0) bar = NULL;
    if (start_s) *start_s = 0;
    double t;
    if (mode == LAB_SERIAL) {
        j->bar = bar;
        double t0 = lab_now();
        work(j);
        t = lab_now() - t0;
    } else {
        /* The pool starts after the job's memory is mapped, so that worker
         * processes see it; its start-up is timed apart from the work. */
        async_executor_opts_t o = {.backend = mode == LAB_THREADS ? ASYNC_BACKEND_THREADS : ASYNC_BACKEND_PROCESSES,
                                   .workers = workers};
        async_executor_t *ex;
        double t0 = lab_now();
        int rc = async_executor_new(&ex, &o);
        if (rc != 0) lab_die("cannot start a %s pool: %s", lab_mode_name[mode], async_strerror(rc));
        if (start_s) *start_s = lab_now() - t0;
        t = run_executor(ex, j, bar, !async_progress_enabled(bar));
        async_executor_free(ex);
    }
    async_progress_free(bar);
    lab_shared_free(j, sizeof *j);
    return t;
}

double lab_run_async(lab_mode_t mode, unsigned workers, lab_range_fn fn, void *ctx, size_t n, size_t chunk)
{
    if (chunk == 0) chunk = 1;
    job_t *j = lab_shared_alloc(sizeof *j);
    *j = (job_t){.fn = fn, .ctx = ctx, .n = n, .chunk = chunk, .nchunks = (n + chunk - 1) / chunk};
    range_t *ranges = malloc(j->nchunks * sizeof *ranges);
    if (!ranges) lab_die("out of memory");
    for (size_t c = 0; c < j->nchunks; c++) {
        ranges[c].lo = c * chunk;
        ranges[c].hi = ranges[c].lo + chunk < n ? ranges[c].lo + chunk : n;
    }
    async_executor_opts_t o = {.backend = mode == LAB_THREADS ? ASYNC_BACKEND_THREADS : ASYNC_BACKEND_PROCESSES,
                               .workers = workers ? workers : 1};
    async_executor_t *ex;
    int rc = async_executor_new(&ex, &o);
    if (rc != 0) lab_die("cannot start a %s pool: %s", lab_mode_name[mode], async_strerror(rc));
    async_map_t m = {.fn = range_work, .ctx = j, .in = ranges, .in_size = sizeof *ranges, .n = j->nchunks,
                     .chunksize = 1};
    async_future_t *f;
    double t0 = lab_now();
    rc = async_executor_map_async(&f, ex, &m, NULL, NULL, NULL);
    if (rc != 0) lab_die("map_async: %s", async_strerror(rc));
    /* The caller is free here, as after Python's map_async; it just waits. */
    rc = async_future_wait(f);
    double t = lab_now() - t0;
    if (rc == 0) rc = async_future_error(f);
    if (rc != 0) lab_die("map_async failed: %s: %s", async_strerror(rc), async_future_message(f));
    async_future_unref(f);
    async_executor_free(ex);
    free(ranges);
    lab_shared_free(j, sizeof *j);
    return t;
}

double lab_last_others;

double lab_best_of(double (*once)(void *arg, double *start_s), void *arg, double *start_s)
{
    /* With --repeat, the best of the runs: the one least disturbed by other
     * work on the machine.  Runs under 0.1 s, where one context switch
     * shows, are always repeated 5 times, at little cost.  Every range
     * function writes its results rather than accumulating them, so a
     * repeated run leaves the same results. */
    lab_load_t load;
    lab_load_begin(&load);
    double best = once(arg, start_s);
    lab_last_others = lab_load_end(&load);
    unsigned runs = lab_opt.repeat > 1 ? lab_opt.repeat : 1;
    if (best < 0.1 && runs < 5) runs = 5;
    for (unsigned k = 1; k < runs; k++) {
        lab_load_begin(&load);
        double t = once(arg, NULL);
        if (t < best) {
            best = t;
            lab_last_others = lab_load_end(&load);
        }
    }
    return best;
}

typedef struct run_args {
    lab_mode_t mode;
    unsigned workers;
    lab_range_fn fn;
    void *ctx;
    size_t n, chunk;
    const char *label;
} run_args_t;

static double run_args_once(void *arg, double *start_s)
{
    run_args_t *a = arg;
    return run_once(a->mode, a->workers, a->fn, a->ctx, a->n, a->chunk, a->label, start_s);
}

double lab_run(lab_mode_t mode, unsigned workers, lab_range_fn fn, void *ctx, size_t n, size_t chunk,
               const char *label, double *start_s)
{
    if (mode >= LAB_NPOOLS) lab_die("lab_run: mode %s has no pool of its own", lab_mode_name[mode]);
    run_args_t a = {mode, workers, fn, ctx, n, chunk, label};
    return lab_best_of(run_args_once, &a, start_s);
}

void lab_modes_mpi(lab_result_t *r, lab_range_fn fn, void *ctx, size_t n, size_t chunk, const char *label,
                   void *out, size_t out_size, const lab_mpi_kind_t *kind, const void *in, size_t in_size)
{
    for (lab_mode_t m = 0; m < LAB_NMODES; m++) {
        if (!lab_want(m)) continue;
        if (m == LAB_MPI && !kind) {
            printf("  (mpi: this workload does not run over MPI)\n");
            continue;
        }
        memset(out, 0, out_size);
        if (m == LAB_MPI)
            r->secs[m] = lab_mpi_call(&(lab_mpi_call_t){.kind = kind, .own = ctx}, in, in_size, n, chunk, out, out_size,
                                      &r->start[m]);
        else r->secs[m] = lab_run(m, m == LAB_SERIAL ? 1 : lab_opt.workers, fn, ctx, n, chunk, label, &r->start[m]);
        r->others[m] = lab_last_others;
        r->sum[m] = lab_fnv(out, out_size, 0);
        r->ran[m] = true;
    }
}

void lab_modes(lab_result_t *r, lab_range_fn fn, void *ctx, size_t n, size_t chunk, const char *label,
               void *out, size_t out_size)
{
    lab_modes_mpi(r, fn, ctx, n, chunk, label, out, out_size, NULL, NULL, 0);
}
