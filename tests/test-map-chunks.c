/* How an eager map cuts its items into chunks and who runs them: the
 * default (chunksize 0) chunks shrink towards the end of the map and are
 * never larger than Pool.map's ceil(n / (4 * workers)); an explicit
 * chunksize is kept exactly; chunks are claimed in order, so a caller that
 * helps (caller_runs) and the workers together run every item exactly once
 * and report the lowest failing one; a map cancelled by shutdown fails the
 * chunks that never ran without writing their output; async_work_output
 * gives each item its own output slot.  Chunk bounds are
 * observed through the rule that a chunk stops at its first failing item:
 * when every item fails, exactly the first item of each chunk runs.  The
 * counting allocator checks for leaks after every test. */
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <async.h>
#include <async/future.h>
#include <async/executor.h>
#include "support/alloc.h"
#include "support/teardown.h"

static void setup(void) { test_alloc_install(); }
static void teardown(void)
{
    TEARDOWN_CHECK_NO_LEAK();
    test_alloc_uninstall();
}
TestSuite(map_chunks, .init = setup, .fini = teardown);

/* An executor on backend with workers workers. */
static async_executor_t *pool_on(async_backend_t backend, unsigned workers, bool caller_runs)
{
    async_executor_opts_t o;
    async_executor_opts_init(&o);
    o.backend = backend;
    o.workers = workers;
    o.caller_runs = caller_runs;
    async_executor_t *ex;
    cr_assert_eq(async_executor_new(&ex, &o), 0);
    return ex;
}

static async_executor_t *pool(unsigned workers, bool caller_runs)
{
    return pool_on(ASYNC_BACKEND_THREADS, workers, caller_runs);
}

static async_executor_t *process_pool(unsigned workers)
{
    return pool_on(ASYNC_BACKEND_PROCESSES, workers, false);
}

/* A map of chunk function fn over n items of in_size bytes at in, results
 * of out_size bytes at out, in chunks of chunksize (0: the default). */
static async_map_t chunk_map(async_chunk_fn fn, const void *in, size_t in_size, void *out,
                             size_t out_size, size_t n, size_t chunksize)
{
    async_map_t m;
    async_map_init(&m);
    m.chunk_fn = fn;
    m.in = in;
    m.in_size = in_size;
    m.out = out;
    m.out_size = out_size;
    m.n = n;
    m.chunksize = chunksize;
    return m;
}

/* Marks its item as run in ctx (one atomic counter per item) and fails. */
static int fail_every_item(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)out, (void)out_size, (void)in_size;
    size_t i;
    memcpy(&i, in, sizeof i);
    atomic_fetch_add((_Atomic int *)ctx + i, 1);
    return async_work_fail(ASYNC_EINVAL, "item %zu fails", i);
}

/* Runs a map of n failing items and returns the chunk starts it ran, in
 * order (*count, OUT), checking that the lowest item is reported. */
static size_t *chunk_starts(async_executor_t *ex, size_t n, size_t chunksize, size_t *count)
{
    size_t *in = malloc(n * sizeof *in), *starts = malloc(n * sizeof *starts);
    _Atomic int *ran = calloc(n, sizeof *ran);
    cr_assert(in && starts && ran);
    for (size_t i = 0; i < n; i++) in[i] = i;
    async_map_t m;
    async_map_init(&m);
    m.fn = fail_every_item;
    m.ctx = ran;
    m.in = in;
    m.in_size = sizeof *in;
    m.n = n;
    m.chunksize = chunksize;
    async_map_error_t err;
    cr_expect_eq(async_executor_map(ex, &m, &err), ASYNC_EINVAL);
    cr_expect_eq(err.index, 0, "the lowest failing item is reported");
    cr_expect_str_eq(err.message, "item 0 fails");
    *count = 0;
    for (size_t i = 0; i < n; i++) {
        cr_expect_leq(atomic_load(&ran[i]), 1, "item %zu ran once at most", i);
        if (atomic_load(&ran[i])) starts[(*count)++] = i;
    }
    free(in);
    free((void *)ran);
    return starts;
}

Test(map_chunks, default_chunks_shrink_towards_the_end, .timeout = 30)
{
    async_executor_t *ex = pool(2, false);
    size_t n = 100000, count;
    size_t *starts = chunk_starts(ex, n, 0, &count);
    size_t pool_map = (n + 7) / 8; /* Pool.map's ceil(n / (4 * workers)) */
    cr_assert_geq(count, 2);
    cr_expect_eq(starts[0], 0);
    size_t first = starts[1] - starts[0], last = n - starts[count - 1];
    for (size_t k = 0; k < count; k++) {
        size_t size = (k + 1 < count ? starts[k + 1] : n) - starts[k];
        cr_expect_leq(size, pool_map, "chunk %zu: %zu items, more than Pool.map's %zu", k, size, pool_map);
        if (k + 1 < count) {
            size_t next = (k + 2 < count ? starts[k + 2] : n) - starts[k + 1];
            cr_expect_leq(next, size, "chunk %zu (%zu items) is larger than chunk %zu (%zu)", k + 1, next, k,
                          size);
        }
    }
    cr_expect_eq(first, pool_map, "the map starts with Pool.map's chunk size");
    cr_expect_leq(last * 4, first, "the last chunk (%zu items) is at most a quarter of the first (%zu)", last,
                  first);
    /* Fewer than Pool.map's 8 chunks plus 4 per worker. */
    cr_expect_leq(count, 8 + 4 * 2 + 2, "%zu chunks", count);
    free(starts);
    async_executor_free(ex);
}

Test(map_chunks, an_explicit_chunksize_is_kept, .timeout = 30)
{
    async_executor_t *ex = pool(2, false);
    size_t count;
    size_t *starts = chunk_starts(ex, 1003, 10, &count);
    cr_expect_eq(count, 101);
    for (size_t k = 0; k < count; k++) cr_expect_eq(starts[k], 10 * k);
    free(starts);
    async_executor_free(ex);
}

Test(map_chunks, small_maps_have_a_chunk_per_item_at_most, .timeout = 30)
{
    async_executor_t *ex = pool(4, false);
    for (size_t n = 1; n <= 40; n++) {
        size_t count;
        size_t *starts = chunk_starts(ex, n, 0, &count);
        cr_expect(count >= 1 && count <= n, "n %zu: %zu chunks", n, count);
        free(starts);
    }
    async_executor_free(ex);
}

/* Counts its item's runs in ctx and writes 3 * the item. */
static int triple(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out_size;
    int v;
    memcpy(&v, in, sizeof v);
    atomic_fetch_add((_Atomic int *)ctx + v, 1);
    v *= 3;
    memcpy(out, &v, sizeof v);
    return 0;
}

Test(map_chunks, the_caller_and_the_workers_run_every_item_once, .timeout = 60)
{
    enum { N = 20011, MAPS = 50 };
    int *in = malloc(N * sizeof *in), *out = malloc(N * sizeof *out);
    _Atomic int *ran = calloc(N, sizeof *ran);
    cr_assert(in && out && ran);
    for (int i = 0; i < N; i++) in[i] = i;
    async_executor_t *ex = pool(2, true);
    for (int r = 0; r < MAPS; r++) {
        memset(out, 0xff, N * sizeof *out);
        async_map_t m;
        async_map_init(&m);
        m.fn = triple;
        m.ctx = ran;
        m.in = in;
        m.in_size = sizeof *in;
        m.out = out;
        m.out_size = sizeof *out;
        m.n = N;
        m.chunksize = r % 2 ? 0 : (size_t)(r + 1) * 37; /* default and explicit sizes */
        cr_assert_eq(async_executor_map(ex, &m, NULL), 0);
        for (int i = 0; i < N; i++) {
            cr_assert_eq(out[i], 3 * i, "map %d, item %d", r, i);
            cr_assert_eq(atomic_load(&ran[i]), r + 1, "map %d, item %d ran %d times", r, i,
                         atomic_load(&ran[i]));
        }
    }
    async_executor_free(ex);
    free(in);
    free(out);
    free((void *)ran);
}

/* Counts its start in ctx (an atomic int), sleeps its item's milliseconds,
 * and marks its output. */
static int nap_ms(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size;
    int ms;
    memcpy(&ms, in, sizeof ms);
    atomic_fetch_add((_Atomic int *)ctx, 1);
    usleep((useconds_t)ms * 1000);
    memset(out, 1, out_size);
    return 0;
}

Test(map_chunks, shutdown_fails_the_chunks_that_never_ran, .timeout = 30)
{
    enum { N = 12 };
    async_executor_t *ex = pool(1, false);
    int in[N];
    char out[N];
    for (int i = 0; i < N; i++) in[i] = 50;
    memset(out, 0, sizeof out);
    async_map_t m;
    async_map_init(&m);
    _Atomic int started = 0;
    m.fn = nap_ms;
    m.ctx = (void *)&started;
    m.in = in;
    m.in_size = sizeof in[0];
    m.out = out;
    m.out_size = 1;
    m.n = N;
    m.chunksize = 1;
    async_future_t *f;
    cr_assert_eq(async_executor_map_async(&f, ex, &m, NULL, NULL, NULL), 0);
    /* Shut down once the first chunk is running: a fixed sleep was too
     * short under load, and then no chunk had run at all. */
    while (!atomic_load(&started)) usleep(1000);
    cr_assert_eq(async_executor_shutdown(ex, true, true), 0);
    cr_expect_eq(async_future_wait(f), ASYNC_ECANCELED);
    size_t index = N;
    cr_expect_eq(async_future_error_index(f, &index), 0);
    cr_expect(index >= 1 && index < N, "the first item that did not run: %zu", index);
    for (size_t i = 0; i < N; i++)
        cr_expect_eq(out[i], i < index, "item %zu %s", i, i < index ? "ran" : "never ran");
    async_future_unref(f);
    async_executor_free(ex);
}

/* Writes its item plus 1 through async_work_output, never through out. */
static int output_next(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out, (void)out_size, (void)ctx;
    int v;
    memcpy(&v, in, sizeof v);
    int *buf = async_work_output(sizeof v);
    if (!buf) return async_work_fail(ASYNC_ENOMEM, "no output for item %d", v);
    *buf = v + 1;
    if (async_work_output(sizeof v + 1)) return async_work_fail(ASYNC_EINVAL, "item %d grew", v);
    return 0;
}

Test(map_chunks, work_output_is_each_items_own_slot, .timeout = 30)
{
    enum { N = 1000 };
    int in[N], out[N];
    for (int i = 0; i < N; i++) in[i] = i;
    memset(out, 0xff, sizeof out);
    async_executor_t *ex = pool(2, true);
    async_map_t m;
    async_map_init(&m);
    m.fn = output_next;
    m.in = in;
    m.in_size = sizeof in[0];
    m.out = out;
    m.out_size = sizeof out[0];
    m.n = N;
    m.chunksize = 64; /* rows well inside each chunk, by the caller and the workers */
    cr_assert_eq(async_executor_map(ex, &m, NULL), 0);
    for (int i = 0; i < N; i++) cr_assert_eq(out[i], i + 1, "item %d", i);
    async_executor_free(ex);
}

/* --- chunk functions (async_map_t.chunk_fn) --------------------------------- */

/* Squares its run of items; counts its calls and items in ctx (two atomic
 * counters, NULL on the process backend, whose workers are other
 * processes).  Checks that async_work_output has nothing to give. */
static int square_run(const void *in, size_t in_size, void *out, size_t out_size, size_t count,
                      size_t *failed, void *ctx)
{
    (void)in_size, (void)out_size, (void)failed;
    const int *x = in;
    long *y = out;
    for (size_t k = 0; k < count; k++) y[k] = (long)x[k] * x[k];
    if (async_work_output(sizeof *y)) return async_work_fail(ASYNC_EINVAL, "work output in a chunk");
    if (ctx) {
        atomic_fetch_add((_Atomic size_t *)ctx, 1);
        atomic_fetch_add((_Atomic size_t *)ctx + 1, count);
    }
    return 0;
}

/* Runs a squares map of n items over ex with chunk_fn and checks every
 * result; returns the number of calls when counted (threads). */
static size_t chunk_squares(async_executor_t *ex, int *in, long *out, size_t n, size_t chunksize,
                            bool counted)
{
    for (size_t i = 0; i < n; i++) in[i] = (int)i - 7;
    memset(out, 0xff, n * sizeof *out);
    _Atomic size_t calls[2] = {0, 0};
    async_map_t m = chunk_map(square_run, in, sizeof *in, out, sizeof *out, n, chunksize);
    m.ctx = counted ? (void *)calls : NULL;
    async_map_error_t err;
    int r = async_executor_map(ex, &m, &err);
    cr_assert_eq(r, 0, "map: %s (%s)", async_errname(r), err.message);
    for (size_t i = 0; i < n; i++) cr_assert_eq(out[i], (long)in[i] * in[i], "item %zu", i);
    if (counted) cr_expect_eq(atomic_load(&calls[1]), n, "every item once");
    return atomic_load(&calls[0]);
}

Test(map_chunks, a_chunk_function_runs_every_item_once_a_call_a_chunk, .timeout = 60)
{
    enum { N = 10007 };
    static int in[N];
    static long out[N];
    async_executor_t *threads = pool(2, false), *helped = pool(2, true);
    cr_expect_eq(chunk_squares(threads, in, out, N, 7, true), (N + 6) / 7, "one call a chunk");
    size_t calls = chunk_squares(threads, in, out, N, 0, true);
    cr_expect(calls > 1 && calls <= 64 * 2, "guided chunks: %zu calls", calls);
    chunk_squares(helped, in, out, N, 0, true);
    chunk_squares(helped, in, out, 1, 0, true);
    async_executor_free(threads);
    async_executor_free(helped);
    /* Processes: rows copied to the workers, and rows in shared memory. */
    async_executor_t *procs = process_pool(2);
    chunk_squares(procs, in, out, N, 1000, false);
    int *sin;
    long *sout;
    cr_assert_eq(async_executor_shm_alloc((void **)&sin, procs, N * sizeof *sin), 0);
    cr_assert_eq(async_executor_shm_alloc((void **)&sout, procs, N * sizeof *sout), 0);
    chunk_squares(procs, sin, sout, N, 0, false);
    async_executor_shm_free(procs, sin);
    async_executor_shm_free(procs, sout);
    async_executor_free(procs);
}

/* Fails at the first item whose value is negative, with a message. */
static int fail_at_negative(const void *in, size_t in_size, void *out, size_t out_size,
                            size_t count, size_t *failed, void *ctx)
{
    (void)in_size, (void)out_size, (void)ctx;
    const int *x = in;
    int *y = out;
    for (size_t k = 0; k < count; k++) {
        if (x[k] < 0) {
            *failed = k;
            return async_work_fail(ASYNC_EINVAL, "value %d below 0", x[k]);
        }
        y[k] = x[k];
    }
    return 0;
}

static void expect_failure_at(async_executor_t *ex, size_t chunksize)
{
    enum { N = 3000, BAD = 1234 };
    static int in[N], out[N];
    for (int i = 0; i < N; i++) in[i] = i == BAD || i == BAD + 500 ? -i : i;
    memset(out, 0, sizeof out);
    async_map_t m = chunk_map(fail_at_negative, in, sizeof in[0], out, sizeof out[0], N, chunksize);
    async_map_error_t err;
    cr_expect_eq(async_executor_map(ex, &m, &err), ASYNC_EINVAL);
    cr_expect_eq(err.index, BAD, "the lowest failing item: %zu", err.index);
    cr_expect_str_eq(err.message, "value -1234 below 0");
    for (int i = 0; i < BAD; i++) cr_assert_eq(out[i], i, "item %d before the failure", i);
}

Test(map_chunks, a_chunk_function_names_its_failing_item, .timeout = 60)
{
    async_executor_t *ex = pool(2, true);
    expect_failure_at(ex, 0);
    expect_failure_at(ex, 100);
    async_executor_free(ex);
    ex = process_pool(2);
    expect_failure_at(ex, 0);
    async_executor_free(ex);
}

static int identity(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)ctx;
    memcpy(out, in, in_size < out_size ? in_size : out_size);
    return 0;
}

Test(map_chunks, fn_or_chunk_fn_exactly_one_and_the_0_2_layout_has_none, .timeout = 30)
{
    async_executor_t *ex = pool(1, false);
    int in[3] = {1, 2, 3}, out[3];
    async_map_t m;
    async_map_init(&m);
    m.in = in;
    m.in_size = sizeof in[0];
    m.out = out;
    m.out_size = sizeof out[0];
    m.n = 3;
    cr_expect_eq(async_executor_map(ex, &m, NULL), ASYNC_EINVAL, "neither");
    m.fn = identity;
    m.chunk_fn = fail_at_negative;
    cr_expect_eq(async_executor_map(ex, &m, NULL), ASYNC_EINVAL, "both");
    /* A program built against 0.2 passes its struct's size, which ends
     * before chunk_fn: whatever lies there is not read. */
    m.size = offsetof(async_map_t, chunk_fn);
    cr_expect_eq(async_executor_map(ex, &m, NULL), 0, "the 0.2 layout, fn only");
    cr_expect_eq(out[2], 3);
    m.size = offsetof(async_map_t, chunk_fn) - 1;
    cr_expect_eq(async_executor_map(ex, &m, NULL), ASYNC_EINVAL, "smaller than the 0.2 struct");
    async_executor_free(ex);
}

/* Writes each item's value, except in the run that holds item 15, which
 * fails with *failed out of range and writes nothing. */
static int fail_out_of_range(const void *in, size_t in_size, void *out, size_t out_size,
                             size_t count, size_t *failed, void *ctx)
{
    (void)in_size, (void)out_size, (void)ctx;
    const int *x = in;
    int *y = out;
    if (x[0] <= 15 && 15 < x[0] + (int)count) {
        *failed = SIZE_MAX;
        return async_work_fail(ASYNC_EINVAL, "run from %d refused", x[0]);
    }
    for (size_t k = 0; k < count; k++) y[k] = x[k];
    return 0;
}

static void expect_run_blamed(async_executor_t *ex)
{
    enum { N = 30 };
    int in[N], out[N];
    for (int i = 0; i < N; i++) in[i] = i;
    memset(out, 0x7f, sizeof out);
    async_map_t m = chunk_map(fail_out_of_range, in, sizeof in[0], out, sizeof out[0], N, 10);
    async_map_error_t err;
    cr_expect_eq(async_executor_map(ex, &m, &err), ASYNC_EINVAL);
    cr_expect_eq(err.index, 10, "the run's first item is blamed: %zu", err.index);
    for (int i = 10; i < 20; i++) cr_expect_eq(out[i], 0x7f7f7f7f, "item %d was never written", i);
}

Test(map_chunks, a_failed_index_out_of_range_blames_the_runs_first_item, .timeout = 30)
{
    async_executor_t *ex = pool(2, false);
    expect_run_blamed(ex);
    async_executor_free(ex);
    ex = process_pool(1);
    expect_run_blamed(ex); /* rows copied back: none of the failing run's */
    async_executor_free(ex);
}
