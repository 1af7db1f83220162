/* How a blocking map's caller waits for the map's end: it looks at the
 * map's future for a while and then sleeps, and whichever way the end
 * reaches it, it returns with every row of out written and the lowest
 * failing item reported.  Maps run back to back here (the case the look
 * before sleeping is for), on threads with and without caller_runs and on
 * processes with the rows in shared memory; a map that outlasts the look
 * ends through the sleep; a deadline shorter than the look still ends the
 * wait.  Back-to-back maps of one item per worker, each item waiting for
 * the others, show that a map reaches every worker, spinning or asleep,
 * map after map.  Chunks that fail at the same moment on different threads still
 * leave the lowest failing item as the map's error.  The counting
 * allocator checks for leaks after every test. */
#include <criterion/criterion.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
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
TestSuite(map_wait, .init = setup, .fini = teardown);

static async_executor_t *pool(async_backend_t backend, unsigned workers, bool caller_runs)
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

/* out = 3 * in + ctx's offset: a stale row from an earlier map differs. */
static int triple_plus(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out_size;
    int v;
    memcpy(&v, in, sizeof v);
    v = 3 * v + *(const int *)ctx;
    memcpy(out, &v, sizeof v);
    return 0;
}

/* The offset each map on threads adds; ctx points here.  A process pool's
 * workers see the parent's memory as it was when they started, so maps on
 * processes change their rows instead and use triple. */
static int offset;

static int triple(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out_size, (void)ctx;
    int v;
    memcpy(&v, in, sizeof v);
    v *= 3;
    memcpy(out, &v, sizeof v);
    return 0;
}

/* MAPS maps of N rows each, back to back, on ex, rows in in/out (shared
 * memory for processes); every map's every row is checked. */
static void back_to_back(async_executor_t *ex, int *in, int *out, bool procs)
{
    enum { N = 3001, MAPS = 400 };
    for (int r = 0; r < MAPS; r++) {
        int add = procs ? 0 : r;
        offset = add;
        for (int i = 0; i < N; i++) in[i] = procs ? i + r : i;
        memset(out, 0xff, N * sizeof *out);
        async_map_t m;
        async_map_init(&m);
        m.fn = procs ? triple : triple_plus;
        m.ctx = &offset;
        m.in = in;
        m.in_size = sizeof *in;
        m.out = out;
        m.out_size = sizeof *out;
        m.n = N;
        cr_assert_eq(async_executor_map(ex, &m, NULL), 0, "map %d", r);
        for (int i = 0; i < N; i++) {
            int want = procs ? 3 * (i + r) : 3 * i + add;
            cr_assert_eq(out[i], want, "map %d, row %d: %d, not %d", r, i, out[i], want);
        }
    }
}

Test(map_wait, back_to_back_maps_return_with_every_row_written, .timeout = 120)
{
    enum { N = 3001 };
    int *in = malloc(N * sizeof *in), *out = malloc(N * sizeof *out);
    cr_assert(in && out);
    for (int cr = 0; cr < 2; cr++) {
        async_executor_t *ex = pool(ASYNC_BACKEND_THREADS, 2, cr);
        back_to_back(ex, in, out, false);
        async_executor_free(ex);
    }
    free(in);
    free(out);
    async_executor_t *px = pool(ASYNC_BACKEND_PROCESSES, 2, false);
    int *pin, *pout;
    cr_assert_eq(async_executor_shm_alloc((void **)&pin, px, N * sizeof *pin), 0);
    cr_assert_eq(async_executor_shm_alloc((void **)&pout, px, N * sizeof *pout), 0);
    back_to_back(px, pin, pout, true);
    async_executor_shm_free(px, pin);
    async_executor_shm_free(px, pout);
    async_executor_free(px);
}

/* A map of fn over n ints into n ints, one item a chunk. */
static async_map_t int_map(async_work_fn fn, void *ctx, int *in, int *out, size_t n)
{
    async_map_t m;
    async_map_init(&m);
    m.fn = fn;
    m.ctx = ctx;
    m.in = in;
    m.in_size = sizeof *in;
    m.out = out;
    m.out_size = sizeof *out;
    m.n = n;
    m.chunksize = 1;
    return m;
}

/* One item of a meeting of as many items as workers: counts itself in and
 * waits, yielding its CPU, until all have come (they must run at once) or
 * 10 s have passed (a failure). */
static int meet(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in, (void)in_size, (void)out_size;
    _Atomic int *arrived = ctx;
    int want = *(const int *)in;
    atomic_fetch_add(arrived, 1);
    int64_t until = async_deadline_after(ASYNC_SEC(10));
    while (atomic_load(arrived) < want)
        if (async_now() > until) return async_work_fail(ASYNC_ETIMEDOUT, "only %d came", atomic_load(arrived));
        else sched_yield();
    *(int *)out = 1;
    return 0;
}

/* Several idle workers spin between jobs, and a kick brings back only one
 * of them; the one it brings hands a kick on to the next.  A map of one
 * item per worker, each waiting for all the others to be running, can only
 * end if every spinner (and every sleeper) was brought back for it, map
 * after map. */
Test(map_wait, back_to_back_maps_reach_every_spinning_worker, .timeout = 120)
{
    enum { WORKERS = 3, MAPS = 300 };
    async_executor_t *ex = pool(ASYNC_BACKEND_THREADS, WORKERS, false);
    int in[WORKERS], out[WORKERS];
    for (int i = 0; i < WORKERS; i++) in[i] = WORKERS;
    for (int r = 0; r < MAPS; r++) {
        _Atomic int arrived = 0;
        memset(out, 0, sizeof out);
        async_map_t m = int_map(meet, (void *)&arrived, in, out, WORKERS);
        async_map_error_t err;
        cr_assert_eq(async_executor_map(ex, &m, &err), 0, "map %d: %s", r, err.message);
        for (int i = 0; i < WORKERS; i++) cr_assert_eq(out[i], 1, "map %d, item %d", r, i);
    }
    async_executor_free(ex);
}

/* Sleeps its item's milliseconds, then writes 1. */
static int nap_ms(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out_size, (void)ctx;
    int ms;
    memcpy(&ms, in, sizeof ms);
    usleep((useconds_t)ms * 1000);
    *(int *)out = 1;
    return 0;
}

/* A map of n naps (in[i] ms each), one item a chunk. */
static async_map_t nap_map(int *in, int *out, size_t n) { return int_map(nap_ms, NULL, in, out, n); }

static void cheap_maps(async_executor_t *ex, int rounds)
{
    int in[64], out[64];
    for (int r = 0; r < rounds; r++) {
        for (int i = 0; i < 64; i++) in[i] = i;
        memset(out, 0, sizeof out);
        offset = 1;
        async_map_t m;
        async_map_init(&m);
        m.fn = triple_plus;
        m.ctx = &offset;
        m.in = in;
        m.in_size = sizeof *in;
        m.out = out;
        m.out_size = sizeof *out;
        m.n = 64;
        cr_assert_eq(async_executor_map(ex, &m, NULL), 0);
        for (int i = 0; i < 64; i++) cr_assert_eq(out[i], 3 * i + 1, "round %d, row %d", r, i);
    }
}

/* Maps far longer than any look before sleeping, between runs of short
 * ones: each long one ends through the sleep, each short one either way. */
Test(map_wait, a_map_longer_than_the_look_ends_through_the_sleep, .timeout = 60)
{
    for (int cr = 0; cr < 2; cr++) {
        async_executor_t *ex = pool(ASYNC_BACKEND_THREADS, 2, cr);
        for (int round = 0; round < 3; round++) {
            cheap_maps(ex, 50);
            int in[4] = {30, 30, 30, 30}, out[4] = {0};
            async_map_t m = nap_map(in, out, 4);
            int64_t t0 = async_now();
            cr_assert_eq(async_executor_map(ex, &m, NULL), 0);
            int64_t took = async_now() - t0;
            for (int i = 0; i < 4; i++) cr_assert_eq(out[i], 1, "item %d", i);
            /* Four naps of 30 ms on at most three threads: two rounds. */
            cr_expect_geq(took, ASYNC_MSEC(60), "the map returned after %lld ns", (long long)took);
        }
        async_executor_free(ex);
    }
}

/* A deadline that passes before the map's end, however short: the call
 * returns ASYNC_ETIMEDOUT (after the running chunks end), never 0. */
Test(map_wait, a_deadline_inside_the_look_still_times_out, .timeout = 60)
{
    for (int cr = 0; cr < 2; cr++) {
        async_executor_t *ex = pool(ASYNC_BACKEND_THREADS, 1, cr);
        cheap_maps(ex, 20);
        int in[8], out[8] = {0};
        for (int i = 0; i < 8; i++) in[i] = 40;
        async_map_t m = nap_map(in, out, 8);
        async_map_error_t err;
        int r = async_executor_map_dl(ex, &m, &err, async_deadline_after(ASYNC_USEC(20)));
        cr_expect_eq(r, ASYNC_ETIMEDOUT, "%s", async_strerror(r));
        cr_expect_eq(err.code, ASYNC_ETIMEDOUT);
        cr_expect_lt(err.index, 8, "some item did not run: index %zu", err.index);
        cheap_maps(ex, 20); /* the pool serves on */
        async_executor_free(ex);
    }
}

/* Fails the items whose index is in ctx's set (a byte per item), else
 * writes 1. */
static int fail_marked(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out_size;
    int i;
    memcpy(&i, in, sizeof i);
    if (((const unsigned char *)ctx)[i]) return async_work_fail(ASYNC_EINVAL, "item %d fails", i);
    *(int *)out = 1;
    return 0;
}

/* Many small chunks, some failing at different items at once on different
 * threads, others succeeding: the map reports the lowest failing item,
 * with its own message, every time. */
Test(map_wait, the_lowest_failure_wins_when_chunks_fail_at_once, .timeout = 60)
{
    enum { N = 4000, MAPS = 60 };
    int *in = malloc(N * sizeof *in), *out = malloc(N * sizeof *out);
    unsigned char *fails = malloc(N);
    cr_assert(in && out && fails);
    for (int i = 0; i < N; i++) in[i] = i;
    srand(7);
    for (int cr = 0; cr < 2; cr++) {
        async_executor_t *ex = pool(ASYNC_BACKEND_THREADS, 2, cr);
        for (int r = 0; r < MAPS; r++) {
            memset(fails, 0, N);
            int lowest = N;
            for (int k = 0; k < 20; k++) {
                int i = rand() % N;
                fails[i] = 1;
                if (i < lowest) lowest = i;
            }
            async_map_t m;
            async_map_init(&m);
            m.fn = fail_marked;
            m.ctx = fails;
            m.in = in;
            m.in_size = sizeof *in;
            m.out = out;
            m.out_size = sizeof *out;
            m.n = N;
            m.chunksize = r % 2 ? 0 : 7;
            async_map_error_t err;
            cr_assert_eq(async_executor_map(ex, &m, &err), ASYNC_EINVAL, "map %d", r);
            cr_assert_eq(err.index, (size_t)lowest, "map %d: item %zu reported, %d is the lowest", r,
                         err.index, lowest);
            char want[64];
            snprintf(want, sizeof want, "item %d fails", lowest);
            cr_assert_str_eq(err.message, want, "map %d", r);
        }
        async_executor_free(ex);
    }
    free(in);
    free(out);
    free(fails);
}
