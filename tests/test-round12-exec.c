/* Round 12's hostile review of the executor: the parameters a careless or
 * hostile caller passes (chunk sizes and item counts whose products wrap,
 * maps of more chunks than memory holds), every allocation of a pool's life
 * failing in turn (a fail-at-N sweep over new, submit, submit_batch, map,
 * map_async and imap on both backends), and worker processes SIGKILLed from
 * outside at random instants while lazy maps and submits with callbacks are
 * in flight.
 *
 * Each test says in its comment what it caught, or what broken code it
 * would catch. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <async.h>
#include <async/executor.h>
#include <async/future.h>
#include "support/alloc.h"
#include "support/teardown.h"

/* Under the sanitizers, malloc of a size no machine has (2^40 chunks'
 * tickets) aborts by default; make it fail as glibc's does, so the
 * library's own ASYNC_ENOMEM path is what the test sees. */
TEST_ALLOCATOR_MAY_RETURN_NULL();

static void setup(void) { test_alloc_install(); }
static void teardown(void)
{
    TEARDOWN_CHECK_NO_LEAK();
    test_alloc_uninstall();
}
TestSuite(round12_exec, .init = setup, .fini = teardown);

static int twice(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out_size, (void)ctx;
    *(int64_t *)out = 2 * *(const int64_t *)in;
    return 0;
}

static int nothing(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in, (void)in_size, (void)out, (void)out_size, (void)ctx;
    return 0;
}

static async_executor_t *threads(unsigned workers)
{
    async_executor_t *ex = NULL;
    int r = async_executor_new(&ex, &(async_executor_opts_t){.backend = ASYNC_BACKEND_THREADS,
                                                             .workers = workers});
    cr_assert_eq(r, 0, "executor_new: %s", async_strerror(r));
    return ex;
}

/* The pool still maps after the hostile call. */
static void still_maps(async_executor_t *ex)
{
    int64_t in[5] = {1, 2, 3, 4, 5}, out[5] = {0};
    async_map_t m;
    async_map_init(&m);
    m.fn = twice, m.in = in, m.in_size = sizeof in[0], m.out = out, m.out_size = sizeof out[0];
    m.n = 5;
    cr_assert_eq(async_executor_map(ex, &m, NULL), 0);
    for (int i = 0; i < 5; i++) cr_assert_eq(out[i], 2 * in[i]);
}

/* --- hostile sizes ------------------------------------------------------------ */

/* A source that yields count items of 8 bytes, then ASYNC_EEOF. */
typedef struct counted {
    int64_t next, count;
} counted_t;

static int counted_source(void *arg, void *item)
{
    counted_t *c = arg;
    if (c->next >= c->count) return ASYNC_EEOF;
    memcpy(item, &c->next, sizeof c->next);
    c->next++;
    return 0;
}

/* A lazy map whose chunk of chunksize items does not fit a size_t of bytes:
 * (2^61 + 2) items of 8 bytes is 2^64 + 16 bytes, which wraps to 16.  The
 * chunk was allocated with the wrapped size and the source then wrote its
 * items past its end (ASan: heap-buffer-overflow in counted_source, called
 * from imap.c's build_chunk).  Refused now with ASYNC_EINVAL before any
 * item is pulled. */
Test(round12_exec, imap_chunk_bytes_that_wrap_are_refused, .timeout = 30)
{
    async_executor_t *ex = threads(2);
    counted_t src = {0, 5};
    int64_t out[5];
    async_imap_t m;
    async_imap_init(&m);
    m.fn = twice, m.in_size = sizeof(int64_t), m.out_size = sizeof(int64_t);
    m.source = counted_source, m.source_arg = &src;
    m.chunksize = ((size_t)1 << 61) + 2;
    async_imap_iter_t *it = (async_imap_iter_t *)0x1;
    cr_expect_eq(async_executor_imap(&it, ex, &m), ASYNC_EINVAL);
    cr_expect_eq(it, (async_imap_iter_t *)0x1, "*out untouched");
    cr_expect_eq(src.next, 0, "no item pulled");
    /* The same over an array: n items fit the input, but not the output. */
    static const int64_t few[1] = {7};
    async_imap_init(&m);
    m.fn = nothing, m.in = few, m.in_size = 0, m.out_size = 16;
    m.n = ((size_t)1 << 60) + 1, m.chunksize = m.n;
    cr_expect_eq(async_executor_imap(&it, ex, &m), ASYNC_EINVAL);
    /* Chunks of SIZE_MAX / 2 items of 8 bytes: 2^64 - 8 bytes after the
     * wrap, which malloc refused (ASYNC_ENOMEM, as if a retry could help). */
    async_imap_init(&m);
    m.fn = twice, m.in_size = sizeof(int64_t), m.out_size = sizeof(int64_t);
    m.source = counted_source, m.source_arg = &src;
    m.chunksize = SIZE_MAX / 2;
    cr_expect_eq(async_executor_imap(&it, ex, &m), ASYNC_EINVAL);
    cr_expect_eq(src.next, 0, "no item pulled");
    /* Sane chunks still work: 5 items in chunks of 2. */
    async_imap_init(&m);
    m.fn = twice, m.in_size = sizeof(int64_t), m.out_size = sizeof(int64_t);
    m.source = counted_source, m.source_arg = &src, m.chunksize = 2;
    cr_assert_eq(async_executor_imap(&it, ex, &m), 0);
    size_t idx, got = 0;
    int r;
    while ((r = async_imap_next(it, &out[got], &idx)) == 0) {
        cr_assert_eq(idx, got);
        cr_assert_eq(out[got], 2 * (int64_t)got);
        got++;
    }
    cr_expect_eq(r, ASYNC_EEOF);
    cr_expect_eq(got, 5);
    async_imap_free(it);
    still_maps(ex);
    async_executor_free(ex);
}

/* A map of SIZE_MAX empty items in chunks of 1 has more chunks than memory
 * can hold: map_plan counted them one by one (2^64 steps, the call never
 * returned) before map_new found the count too large.  Now the count is
 * computed, and the call fails at once with ASYNC_ENOMEM.  The same with
 * 2^40 items: 2^40 steps (minutes) before the allocation failed. */
Test(round12_exec, a_map_of_too_many_chunks_fails_at_once, .timeout = 30)
{
    async_executor_t *ex = threads(2);
    async_map_t m;
    async_map_init(&m);
    m.fn = nothing, m.n = SIZE_MAX, m.chunksize = 1;
    async_map_error_t err;
    cr_expect_eq(async_executor_map(ex, &m, &err), ASYNC_ENOMEM);
    m.n = (size_t)1 << 40;
    cr_expect_eq(async_executor_map(ex, &m, &err), ASYNC_ENOMEM);
    async_future_t *f = (async_future_t *)0x1;
    cr_expect_eq(async_executor_map_async(&f, ex, &m, NULL, NULL, NULL), ASYNC_ENOMEM);
    cr_expect_eq(f, (async_future_t *)0x1);
    still_maps(ex);
    async_executor_free(ex);
}

/* Guided chunks (chunksize 0) of SIZE_MAX items: Pool.map's
 * ceil(n / (4 * workers)) was computed as (n + d - 1) / d, which wraps for
 * n near SIZE_MAX to 0 (then 1): chunks of one item, planned one by one,
 * and the call never returned.  With the division that cannot wrap the
 * map has about 36 * workers chunks; a time limit already past fails them
 * all without running, so the call returns at once with ASYNC_ETIMEDOUT,
 * blaming item 0. */
Test(round12_exec, guided_chunks_of_a_huge_map_are_planned_without_wrapping, .timeout = 30)
{
    async_executor_t *ex = threads(2);
    async_map_t m;
    async_map_init(&m);
    m.fn = nothing, m.n = SIZE_MAX, m.timeout_ns = -1;
    async_map_error_t err;
    cr_expect_eq(async_executor_map(ex, &m, &err), ASYNC_ETIMEDOUT);
    cr_expect_eq(err.index, 0);
    cr_expect_eq(err.code, ASYNC_ETIMEDOUT);
    still_maps(ex);
    async_executor_free(ex);
}

/* --- every allocation failing in turn ---------------------------------------- */

/* The sweep's own allocator: fails the allocation after the next `countdown`
 * ones, once, and says whether it did, so that the sweep knows when a run
 * went through without reaching its failure (then every allocation of the
 * scenario has been failed once). */
static atomic_long sw_live, sw_countdown = -1;
static atomic_bool sw_fired;

static bool sw_fail_now(void)
{
    long left = atomic_load(&sw_countdown);
    if (left < 0 || atomic_fetch_sub(&sw_countdown, 1) != 0) return false;
    atomic_store(&sw_fired, true);
    return true;
}

static void *sw_malloc(size_t size, void *ud)
{
    (void)ud;
    if (sw_fail_now()) return NULL;
    void *p = malloc(size);
    if (p) atomic_fetch_add(&sw_live, 1);
    return p;
}

static void *sw_realloc(void *ptr, size_t size, void *ud)
{
    if (!ptr) return sw_malloc(size, ud);
    if (sw_fail_now()) return NULL;
    return realloc(ptr, size);
}

static void sw_free(void *ptr, void *ud)
{
    (void)ud;
    if (!ptr) return;
    atomic_fetch_sub(&sw_live, 1);
    free(ptr);
}

static void sw_setup(void)
{
    static const async_allocator_t a = {sw_malloc, sw_realloc, sw_free, NULL};
    atomic_store(&sw_live, 0);
    atomic_store(&sw_countdown, -1);
    async_set_allocator(&a);
}
static void sw_teardown(void)
{
    TEARDOWN_CHECK(atomic_load(&sw_live) == 0, "leaked %ld allocations", atomic_load(&sw_live));
    async_set_allocator(NULL);
}
TestSuite(round12_oom, .init = sw_setup, .fini = sw_teardown);

/* A job whose result is 1,000 bytes, more than its out_size: async_work_output
 * allocates (thread backend) or takes shared memory (process backend). */
static int big_result(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out, (void)out_size, (void)ctx;
    unsigned char *buf = async_work_output(1000);
    if (!buf) return async_work_fail(ASYNC_ENOMEM, "no buffer for the result");
    memset(buf, *(const unsigned char *)in, 1000);
    return 0;
}

static atomic_int sw_callbacks, sw_done_cbs;
static void sw_on_done(async_future_t *f, void *arg)
{
    (void)f, (void)arg;
    atomic_fetch_add(&sw_done_cbs, 1);
}
static void sw_on_success(async_future_t *f, void *arg)
{
    (void)f, (void)arg;
    atomic_fetch_add(&sw_callbacks, 1);
}

/* The outcome of a call under the sweep: 0, or the out-of-memory it was
 * given.  Anything else (or a crash, a hang, a leak) is a defect. */
#define EXPECT_OK_OR_NOMEM(r, what)                                                        \
    cr_assert((r) == 0 || (r) == ASYNC_ENOMEM, "%s at failure %ld: %s", what, at,         \
              async_strerror(r))

/* One future of twice(v): DONE with 2 * v, or FAILED with ASYNC_ENOMEM. */
static void expect_twice(async_future_t *f, int64_t v, long at)
{
    int e = async_future_wait(f);
    cr_assert_eq(e, async_future_error(f));
    EXPECT_OK_OR_NOMEM(e, async_future_message(f));
    if (e) return;
    const void *data;
    size_t size;
    cr_assert_eq(async_future_result(f, &data, &size), 0);
    cr_assert_eq(size, sizeof(int64_t));
    cr_assert_eq(*(const int64_t *)data, 2 * v);
}

/* A pool's whole life with the allocation after the first `at` ones failing:
 * each call returns 0 or ASYNC_ENOMEM, every future is final with its result
 * or ASYNC_ENOMEM, the lazy map yields each of its items once (an
 * ASYNC_ENOMEM from async_imap_next loses nothing), and after the free
 * nothing is left allocated. */
static void life(async_backend_t backend, long at)
{
    async_executor_t *ex = NULL;
    atomic_store(&sw_callbacks, 0);
    int r = async_executor_new(&ex, &(async_executor_opts_t){.backend = backend, .workers = 2});
    EXPECT_OK_OR_NOMEM(r, "executor_new");
    if (r) {
        cr_assert_null(ex, "*out untouched");
        return;
    }
    /* submit */
    int64_t v = 21;
    async_future_t *f = NULL;
    r = async_executor_submit(&f, ex, &(async_job_t){.fn = twice, .in = &v, .in_size = sizeof v,
                                                     .out_size = sizeof v});
    EXPECT_OK_OR_NOMEM(r, "submit");
    if (!r) expect_twice(f, v, at), async_future_unref(f);
    /* a variable result */
    unsigned char c = 9;
    r = async_executor_submit(&f, ex, &(async_job_t){.fn = big_result, .in = &c, .in_size = 1,
                                                     .out_size = 8});
    EXPECT_OK_OR_NOMEM(r, "submit of a big result");
    if (!r) {
        int e = async_future_wait(f);
        cr_assert_eq(e, async_future_error(f));
        EXPECT_OK_OR_NOMEM(e, async_future_message(f));
        const void *data;
        size_t size;
        if (!e) {
            cr_assert_eq(async_future_result(f, &data, &size), 0);
            cr_assert_eq(size, 1000);
            cr_assert_eq(((const unsigned char *)data)[999], 9);
        }
        async_future_unref(f);
    }
    /* submit_batch */
    int added = 0;
    atomic_store(&sw_done_cbs, 0);
    int64_t vs[4] = {1, 2, 3, 4};
    async_job_t jobs[4];
    for (int i = 0; i < 4; i++)
        jobs[i] = (async_job_t){.fn = twice, .in = &vs[i], .in_size = sizeof vs[i],
                                .out_size = sizeof vs[i]};
    async_future_t *fs[4] = {0};
    r = async_executor_submit_batch(fs, ex, jobs, 4);
    EXPECT_OK_OR_NOMEM(r, "submit_batch");
    if (!r) {
        /* waits that listen through allocations, a callback, as_completed */
        size_t idx = SIZE_MAX;
        r = async_futures_wait(fs, 4, ASYNC_WAIT_FIRST_COMPLETED, &idx);
        EXPECT_OK_OR_NOMEM(r, "futures_wait");
        if (!r) cr_assert(idx < 4 && async_future_done(fs[idx]));
        r = async_future_on_done(fs[3], sw_on_done, NULL);
        EXPECT_OK_OR_NOMEM(r, "on_done");
        added = !r;
        async_as_completed_t *ac = NULL;
        r = async_as_completed_new(&ac, fs, 4);
        EXPECT_OK_OR_NOMEM(r, "as_completed_new");
        if (!r) {
            bool seen[4] = {0};
            for (int k = 0; k < 4; k++) {
                cr_assert_eq(async_as_completed_next_dl(ac, &idx, ASYNC_FOREVER), 0);
                cr_assert(idx < 4 && !seen[idx]);
                seen[idx] = true;
            }
            cr_assert_eq(async_as_completed_next_dl(ac, &idx, ASYNC_FOREVER), ASYNC_EEOF);
            async_as_completed_free(ac);
        }
        for (int i = 0; i < 4; i++) expect_twice(fs[i], vs[i], at), async_future_unref(fs[i]);
    }
    /* more jobs than the process pool has slots, some with a time limit */
    enum { MANY = 40 };
    async_future_t *many[MANY];
    int64_t mv[MANY];
    for (int i = 0; i < MANY; i++) {
        mv[i] = i;
        r = async_executor_submit(&many[i], ex, &(async_job_t){
            .fn = twice, .in = &mv[i], .in_size = sizeof mv[i], .out_size = sizeof mv[i],
            .timeout_ns = i % 3 ? 0 : ASYNC_SEC(60)});
        EXPECT_OK_OR_NOMEM(r, "submit of many");
        if (r) many[i] = NULL;
    }
    for (int i = 0; i < MANY; i++)
        if (many[i]) expect_twice(many[i], mv[i], at), async_future_unref(many[i]);
    /* map, then map_async with a callback */
    int64_t in[40], out[40];
    for (int i = 0; i < 40; i++) in[i] = i;
    async_map_t m;
    async_map_init(&m);
    m.fn = twice, m.in = in, m.in_size = sizeof in[0], m.out = out, m.out_size = sizeof out[0];
    m.n = 40, m.chunksize = 7;
    async_map_error_t err;
    r = async_executor_map(ex, &m, &err);
    EXPECT_OK_OR_NOMEM(r, r ? err.message : "map");
    if (!r)
        for (int i = 0; i < 40; i++) cr_assert_eq(out[i], 2 * in[i]);
    m.chunksize = 0;
    atomic_store(&sw_callbacks, 0);
    r = async_executor_map_async(&f, ex, &m, sw_on_success, NULL, NULL);
    EXPECT_OK_OR_NOMEM(r, "map_async");
    if (!r) {
        int e = async_future_wait(f);
        cr_assert_eq(e, async_future_error(f));
        EXPECT_OK_OR_NOMEM(e, async_future_message(f));
        cr_assert_eq(atomic_load(&sw_callbacks), e ? 0 : 1);
        async_future_unref(f);
    }
    /* imap from a source, ordered, then unordered */
    for (int unordered = 0; unordered < 2; unordered++) {
        counted_t src = {0, 10};
        async_imap_t im;
        async_imap_init(&im);
        im.fn = twice, im.in_size = im.out_size = sizeof(int64_t);
        im.source = counted_source, im.source_arg = &src, im.chunksize = 3;
        im.unordered = unordered;
        async_imap_iter_t *it = NULL;
        r = async_executor_imap(&it, ex, &im);
        EXPECT_OK_OR_NOMEM(r, "imap");
        if (r) continue;
        bool seen[10] = {0};
        int got = 0, nomem = 0;
        for (;;) {
            int64_t o = -1;
            size_t idx = SIZE_MAX;
            r = async_imap_next(it, &o, &idx);
            if (r == ASYNC_EEOF) break;
            EXPECT_OK_OR_NOMEM(r, async_imap_message(it));
            if (r == ASYNC_ENOMEM) {
                cr_assert_lt(++nomem, 100, "imap_next keeps failing at failure %ld", at);
                continue;
            }
            cr_assert_lt(idx, 10);
            cr_assert(!seen[idx], "item %zu twice at failure %ld", idx, at);
            seen[idx] = true;
            cr_assert_eq(o, 2 * (int64_t)idx);
            got++;
        }
        cr_assert_eq(got, 10, "%s imap yielded %d of its 10 items at failure %ld",
                     unordered ? "an unordered" : "an ordered", got, at);
        async_imap_free(it);
    }
    async_executor_free(ex);
    /* Waiters wake before callbacks run: the free waits for both. */
    cr_assert_eq(atomic_load(&sw_done_cbs), added, "at failure %ld", at);
}

static void sweep(async_backend_t backend)
{
    long at = 0;
    for (;; at++) {
        cr_assert_lt(at, 5000, "the sweep does not end");
        atomic_store(&sw_fired, false);
        atomic_store(&sw_countdown, at);
        life(backend, at);
        atomic_store(&sw_countdown, -1);
        cr_assert_eq(atomic_load(&sw_live), 0, "%ld allocations left after failure %ld",
                     atomic_load(&sw_live), at);
        if (!atomic_load(&sw_fired)) break;
    }
    cr_log_info("%ld allocations failed in turn", at);
    cr_expect_gt(at, 10);
}

Test(round12_oom, every_allocation_of_a_thread_pools_life_fails_in_turn, .timeout = 120)
{
    sweep(ASYNC_BACKEND_THREADS);
}

#if defined(__SANITIZE_THREAD__)
Test(round12_oom, every_allocation_of_a_process_pools_life_fails_in_turn, .timeout = 5)
{
    cr_skip_test("ThreadSanitizer cannot follow the process pool's cross-process hand-overs: this test "
                 "runs under the other builds");
}
#else
Test(round12_oom, every_allocation_of_a_process_pools_life_fails_in_turn, .timeout = 240)
{
    sweep(ASYNC_BACKEND_PROCESSES);
}
#endif

#if !defined(__SANITIZE_THREAD__)
/* A job that sleeps 20 s whatever its deadline says. */
static int deaf_sleeper(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in, (void)in_size, (void)out, (void)out_size, (void)ctx;
    for (int i = 0; i < 2000; i++) usleep(10 * 1000);
    return 0;
}

/* A job with a time limit on the process backend is killed at its deadline
 * even when an allocation on its way to a worker fails: it then fails with
 * ASYNC_ENOMEM (or the submit does), or is killed at its deadline, never
 * runs on to its end.  The deadline heap's growth (procpool.c's
 * deadline_push) dropped the deadline when its realloc failed ("never fails
 * a job"): the job ran its 20 s past a 200 ms limit, and its future failed
 * only then ("finished after its deadline").  The wait is allowed 10 s, a
 * bound for a hang, not for speed. */
Test(round12_oom, a_deadline_is_kept_when_an_allocation_of_its_submit_fails, .timeout = 120)
{
    long at = 0;
    for (;; at++) {
        cr_assert_lt(at, 200, "the sweep does not end");
        async_executor_t *ex = NULL;
        cr_assert_eq(async_executor_new(&ex, &(async_executor_opts_t){
                         .backend = ASYNC_BACKEND_PROCESSES, .workers = 1}), 0);
        atomic_store(&sw_fired, false);
        atomic_store(&sw_countdown, at);
        async_future_t *f = NULL;
        int r = async_executor_submit(&f, ex, &(async_job_t){.fn = deaf_sleeper, .out_size = 8,
                                                             .timeout_ns = ASYNC_MSEC(200)});
        EXPECT_OK_OR_NOMEM(r, "submit");
        if (!r) {
            /* The job reaches the pool on its dispatcher thread: the
             * failure stays armed until the job is final. */
            int64_t t0 = async_now();
            int e = async_future_wait(f);
            int64_t waited = async_now() - t0;
            atomic_store(&sw_countdown, -1);
            cr_assert_lt(waited, ASYNC_SEC(10), "a job with a 200 ms limit ran %.1f s (%s) at failure %ld",
                         (double)waited / 1e9, async_future_message(f), at);
            cr_assert(e == ASYNC_ETIMEDOUT || e == ASYNC_ENOMEM,
                      "a job with a 200 ms limit ended with %s (%s) at failure %ld", async_strerror(e),
                      async_future_message(f), at);
            async_future_unref(f);
        }
        atomic_store(&sw_countdown, -1);
        bool fired = atomic_load(&sw_fired);
        async_executor_free(ex);
        cr_assert_eq(atomic_load(&sw_live), 0, "%ld allocations left after failure %ld",
                     atomic_load(&sw_live), at);
        if (!fired) break;
    }
    cr_log_info("%ld allocations of a timed submit failed in turn", at);
}
#endif

/* --- workers SIGKILLed from outside at random instants ------------------------ */

#if !defined(__SANITIZE_THREAD__)
enum { STORM_WORKERS = 2, STORM_ROUNDS = 25, STORM_ITEMS = 120, STORM_JOBS = 40 };

/* Shared with the workers (async_executor_shm_alloc): the pid of the worker
 * running each index, for the killer. */
typedef struct storm_shm {
    _Atomic int pid[STORM_WORKERS];
} storm_shm_t;

static int storm_twice(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out_size;
    storm_shm_t *sh = ctx;
    int w = async_work_worker();
    if (w >= 0 && w < STORM_WORKERS) atomic_store(&sh->pid[w], (int)getpid());
    usleep(200);
    *(int64_t *)out = 2 * *(const int64_t *)in;
    return 0;
}

typedef struct killer {
    storm_shm_t *sh;
    atomic_bool stop;
    int kills;
    unsigned seed;
} killer_t;

static void *killer_main(void *arg)
{
    killer_t *k = arg;
    while (!atomic_load(&k->stop)) {
        usleep(2000 + rand_r(&k->seed) % 6000);
        int w = (int)(rand_r(&k->seed) % STORM_WORKERS);
        int pid = atomic_exchange(&k->sh->pid[w], 0);
        if (pid > 0 && kill(pid, SIGKILL) == 0) k->kills++;
    }
    return NULL;
}

static int count_fds(void)
{
    int n = 0;
    char path[64];
    for (int fd = 0; fd < 1024; fd++) {
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        n += access(path, F_OK) == 0;
    }
    return n;
}

static atomic_int storm_cb_runs[STORM_ROUNDS * STORM_JOBS];
static void storm_on_done(async_future_t *f, void *arg)
{
    (void)f;
    atomic_fetch_add(&storm_cb_runs[(intptr_t)arg], 1);
}

/* A died worker fails what it held with ASYNC_EWORKERDIED; the rest of its
 * chunk did not run (ASYNC_ECANCELED); anything else is a result. */
static void expect_value_or_died(int r, int64_t got, int64_t want, const char *what, const char *msg)
{
    if (r == 0) cr_assert_eq(got, want, "%s: %lld, not %lld", what, (long long)got, (long long)want);
    else cr_assert(r == ASYNC_EWORKERDIED || r == ASYNC_ECANCELED, "%s: %s (%s)", what,
                   async_strerror(r), msg);
}

/* Lazy maps (ordered over an array, unordered from a source), submits with
 * callbacks, map_async and run, while a thread SIGKILLs a worker every 2 to
 * 8 ms: each item is yielded once with its result or its worker's death,
 * each future is final, each callback ran once, the pool is not broken and
 * serves afterwards, and its free leaves no descriptor open. */
Test(round12_exec, kill_storm_over_lazy_maps_and_callbacks, .timeout = 240)
{
    int fds_before = count_fds();
    async_executor_t *ex = NULL;
    cr_assert_eq(async_executor_new(&ex, &(async_executor_opts_t){
                     .backend = ASYNC_BACKEND_PROCESSES, .workers = STORM_WORKERS}), 0);
    storm_shm_t *sh;
    cr_assert_eq(async_executor_shm_alloc((void **)&sh, ex, sizeof *sh), 0);
    killer_t k = {.sh = sh, .seed = (unsigned)time(NULL)};
    cr_log_info("kill storm seed %u", k.seed);
    pthread_t kt;
    cr_assert_eq(pthread_create(&kt, NULL, killer_main, &k), 0);
    static int64_t in[STORM_ITEMS], out[STORM_ITEMS];
    for (int i = 0; i < STORM_ITEMS; i++) in[i] = i;
    int died = 0, ok = 0;
    for (int round = 0; round < STORM_ROUNDS; round++) {
        /* imap, ordered over the array, then unordered from a source */
        for (int unordered = 0; unordered < 2; unordered++) {
            counted_t src = {0, STORM_ITEMS};
            async_imap_t im;
            async_imap_init(&im);
            im.fn = storm_twice, im.ctx = sh, im.in_size = im.out_size = sizeof(int64_t);
            im.chunksize = 3, im.unordered = unordered;
            if (unordered) im.source = counted_source, im.source_arg = &src;
            else im.in = in, im.n = STORM_ITEMS;
            async_imap_iter_t *it;
            cr_assert_eq(async_executor_imap(&it, ex, &im), 0);
            static bool seen[STORM_ITEMS];
            memset(seen, 0, sizeof seen);
            int r, got = 0;
            int64_t o;
            size_t idx;
            while ((r = async_imap_next(it, &o, &idx)) != ASYNC_EEOF) {
                cr_assert_lt(idx, STORM_ITEMS);
                cr_assert(!seen[idx], "item %zu twice", idx);
                seen[idx] = true;
                if (!unordered) cr_assert_eq(idx, (size_t)got, "ordered imap out of order");
                expect_value_or_died(r, o, 2 * (int64_t)idx, "imap item", async_imap_message(it));
                r ? died++ : ok++;
                got++;
            }
            cr_assert_eq(got, STORM_ITEMS, "%d of %d items yielded", got, STORM_ITEMS);
            async_imap_free(it);
        }
        /* submits with callbacks */
        async_future_t *fs[STORM_JOBS];
        for (int j = 0; j < STORM_JOBS; j++) {
            cr_assert_eq(async_executor_submit(&fs[j], ex, &(async_job_t){
                             .fn = storm_twice, .ctx = sh, .in = &in[j], .in_size = sizeof in[j],
                             .out_size = sizeof in[j]}), 0);
            intptr_t slot = round * STORM_JOBS + j;
            cr_assert_eq(async_future_on_done(fs[j], storm_on_done, (void *)slot), 0);
        }
        /* map_async beside them */
        async_map_t m;
        async_map_init(&m);
        m.fn = storm_twice, m.ctx = sh, m.in = in, m.in_size = sizeof in[0], m.out = out;
        m.out_size = sizeof out[0], m.n = STORM_ITEMS, m.chunksize = 4;
        async_future_t *mf;
        memset(out, 0xff, sizeof out);
        cr_assert_eq(async_executor_map_async(&mf, ex, &m, NULL, NULL, NULL), 0);
        /* and run */
        for (int j = 0; j < 5; j++) {
            int64_t v = j, w = -1;
            char msg[ASYNC_FUTURE_MSG_MAX];
            int r = async_executor_run(ex, &(async_job_t){.fn = storm_twice, .ctx = sh, .in = &v,
                                                          .in_size = sizeof v, .out_size = sizeof w},
                                       &w, NULL, msg, sizeof msg);
            expect_value_or_died(r, w, 2 * v, "run", msg);
        }
        for (int j = 0; j < STORM_JOBS; j++) {
            int e = async_future_wait(fs[j]);
            const void *data = NULL;
            size_t size = 0;
            if (!e) cr_assert_eq(async_future_result(fs[j], &data, &size), 0);
            expect_value_or_died(e, e ? 0 : *(const int64_t *)data, 2 * in[j], "submit",
                                 async_future_message(fs[j]));
            async_future_unref(fs[j]);
        }
        int e = async_future_wait(mf);
        if (e) {
            cr_assert_eq(e, ASYNC_EWORKERDIED, "map_async: %s", async_future_message(mf));
        } else {
            for (int i = 0; i < STORM_ITEMS; i++) cr_assert_eq(out[i], 2 * in[i]);
        }
        async_future_unref(mf);
    }
    atomic_store(&k.stop, true);
    pthread_join(kt, NULL);
    cr_log_info("%d kills: %d imap items failed with their worker, %d done", k.kills, died, ok);
    cr_expect_gt(k.kills, 0);
    char why[ASYNC_FUTURE_MSG_MAX];
    cr_assert_eq(async_executor_error(ex, why, sizeof why), 0, "the storm broke the pool: %s", why);
    still_maps(ex);
    async_executor_shm_free(ex, sh);
    async_executor_free(ex);
    for (int i = 0; i < STORM_ROUNDS * STORM_JOBS; i++)
        cr_assert_eq(atomic_load(&storm_cb_runs[i]), 1, "callback %d ran %d times", i,
                     atomic_load(&storm_cb_runs[i]));
    cr_expect_eq(count_fds(), fds_before, "descriptors left open by the pool");
}
#endif

/* --- callbacks that submit into a full queue ----------------------------------- */

/* Gates in the pool's shared memory (heap memory on the thread backend):
 * a held job waits until its gate opens and counts itself as started. */
typedef struct gates {
    _Atomic int open[2];
    _Atomic int started;
} gates_t;

static int held(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out, (void)out_size;
    gates_t *g = ctx;
    int which = *(const int *)in;
    atomic_fetch_add(&g->started, 1);
    while (!atomic_load(&g->open[which])) usleep(500);
    return 0;
}

typedef struct resubmit {
    async_executor_t *ex;
    _Atomic int rc;
    _Atomic bool ran;
    async_future_t *f;
} resubmit_t;

/* A callback that submits one more job, blocking while the queue is full. */
static void resubmit_cb(async_future_t *f, void *arg)
{
    (void)f;
    resubmit_t *r = arg;
    async_job_t job;
    async_job_init(&job);
    job.fn = nothing;
    atomic_store(&r->rc, async_executor_submit(&r->f, r->ex, &job));
    atomic_store(&r->ran, true);
}

static async_executor_t *bounded(async_backend_t backend, unsigned workers, size_t max_queued)
{
    async_executor_t *ex = NULL;
    int rc = async_executor_new(&ex, &(async_executor_opts_t){.backend = backend, .workers = workers,
                                                              .max_queued = max_queued});
    cr_assert_eq(rc, 0, "executor_new: %s", async_strerror(rc));
    return ex;
}

static async_future_t *submit_held(async_executor_t *ex, gates_t *g, const int *which)
{
    async_future_t *f = NULL;
    cr_assert_eq(async_executor_submit(&f, ex, &(async_job_t){.fn = held, .ctx = g, .in = which,
                                                              .in_size = sizeof *which}), 0);
    return f;
}

static void wait_started(gates_t *g, int n)
{
    int64_t until = async_deadline_after(ASYNC_SEC(20));
    while (atomic_load(&g->started) < n) {
        cr_assert_lt(async_now(), until, "%d of %d held jobs started", atomic_load(&g->started), n);
        usleep(500);
    }
}

static void wait_ran(resubmit_t *r)
{
    int64_t until = async_deadline_after(ASYNC_SEC(20));
    while (!atomic_load(&r->ran)) {
        cr_assert_lt(async_now(), until, "the callback's submit never returned");
        usleep(1000);
    }
}

/* A pool of one worker thread and a queue bound of 1: the worker, in a
 * callback, submits into the full queue.  Only the worker could make room,
 * and it waits for room: the submit blocked for ever (the test timed out).
 * Now ASYNC_EDEADLK at once, and the pool serves on. */
Test(round12_exec, the_only_worker_submitting_into_a_full_queue_gets_edeadlk, .timeout = 60)
{
    async_executor_t *ex = bounded(ASYNC_BACKEND_THREADS, 1, 1);
    gates_t *g;
    cr_assert_eq(async_executor_shm_alloc((void **)&g, ex, sizeof *g), 0);
    memset(g, 0, sizeof *g);
    static const int gate0 = 0;
    resubmit_t rs = {.ex = ex};
    async_future_t *a = submit_held(ex, g, &gate0);
    cr_assert_eq(async_future_on_done(a, resubmit_cb, &rs), 0);
    wait_started(g, 1);
    async_future_t *b = NULL;
    cr_assert_eq(async_executor_submit(&b, ex, &(async_job_t){.fn = nothing}), 0); /* the queue is full */
    atomic_store(&g->open[0], 1);
    wait_ran(&rs);
    cr_expect_eq(atomic_load(&rs.rc), ASYNC_EDEADLK, "%s", async_strerror(atomic_load(&rs.rc)));
    cr_expect_eq(async_future_wait(a), 0);
    cr_expect_eq(async_future_wait(b), 0);
    async_future_unref(a);
    async_future_unref(b);
    if (atomic_load(&rs.rc) == 0) async_future_unref(rs.f);
    still_maps(ex);
    async_executor_shm_free(ex, g);
    async_executor_free(ex);
}

/* Two workers, both in callbacks that submit into the full queue: the first
 * waits for room (the other worker may still make it), the last one would
 * leave nobody to take a job and gets ASYNC_EDEADLK; it then takes the
 * queued job, which gives the first its room.  Catches a rule that refuses
 * any worker's wait (the first must succeed) and one that lets all wait. */
Test(round12_exec, the_last_worker_to_wait_for_room_gets_edeadlk, .timeout = 60)
{
    async_executor_t *ex = bounded(ASYNC_BACKEND_THREADS, 2, 1);
    gates_t *g;
    cr_assert_eq(async_executor_shm_alloc((void **)&g, ex, sizeof *g), 0);
    memset(g, 0, sizeof *g);
    static const int gate[2] = {0, 1};
    resubmit_t rs[2] = {{.ex = ex}, {.ex = ex}};
    async_future_t *a = submit_held(ex, g, &gate[0]);
    async_future_t *b = submit_held(ex, g, &gate[1]);
    cr_assert_eq(async_future_on_done(a, resubmit_cb, &rs[0]), 0);
    cr_assert_eq(async_future_on_done(b, resubmit_cb, &rs[1]), 0);
    wait_started(g, 2);
    async_future_t *c = NULL;
    cr_assert_eq(async_executor_submit(&c, ex, &(async_job_t){.fn = nothing}), 0); /* the queue is full */
    atomic_store(&g->open[0], 1);
    usleep(20 * 1000); /* the order does not matter: whichever waits first gets its room */
    atomic_store(&g->open[1], 1);
    wait_ran(&rs[0]);
    wait_ran(&rs[1]);
    int r0 = atomic_load(&rs[0].rc), r1 = atomic_load(&rs[1].rc);
    cr_expect((r0 == 0 && r1 == ASYNC_EDEADLK) || (r0 == ASYNC_EDEADLK && r1 == 0),
              "the callbacks' submits: %s, %s", async_strerror(r0), async_strerror(r1));
    for (int i = 0; i < 2; i++)
        if (atomic_load(&rs[i].rc) == 0) {
            cr_expect_eq(async_future_wait(rs[i].f), 0);
            async_future_unref(rs[i].f);
        }
    async_future_t *fs[3] = {a, b, c};
    cr_expect_eq(async_futures_wait(fs, 3, ASYNC_WAIT_ALL, NULL), 0);
    for (int i = 0; i < 3; i++) async_future_unref(fs[i]);
    still_maps(ex);
    async_executor_shm_free(ex, g);
    async_executor_free(ex);
}

#if !defined(__SANITIZE_THREAD__)
/* The process backend runs callbacks on its supervisor thread, which frees
 * the slots that its feeder needs to take queued jobs: a callback's submit
 * into the full queue blocked for ever (the test timed out).  Now it returns
 * ASYNC_EDEADLK, as run and map do there, unless the feeder made room first
 * (then it is queued), and the pool serves on. */
Test(round12_exec, a_process_pool_callback_submitting_into_a_full_queue_returns, .timeout = 60)
{
    int deadlk = 0, queued = 0;
    for (int round = 0; round < 5; round++) {
        async_executor_t *ex = bounded(ASYNC_BACKEND_PROCESSES, 1, 1);
        gates_t *g;
        cr_assert_eq(async_executor_shm_alloc((void **)&g, ex, sizeof *g), 0);
        memset(g, 0, sizeof *g);
        static const int gate0 = 0;
        resubmit_t rs = {.ex = ex};
        async_future_t *a = submit_held(ex, g, &gate0);
        cr_assert_eq(async_future_on_done(a, resubmit_cb, &rs), 0);
        wait_started(g, 1);
        async_future_t *more[8];
        int n = 0;
        while (n < 8 && async_executor_trysubmit(&more[n], ex, &(async_job_t){.fn = nothing}) == 0) n++;
        cr_assert_lt(n, 8, "the queue never filled");
        atomic_store(&g->open[0], 1);
        wait_ran(&rs);
        int rc = atomic_load(&rs.rc);
        cr_assert(rc == ASYNC_EDEADLK || rc == 0, "%s", async_strerror(rc));
        rc ? deadlk++ : queued++;
        cr_expect_eq(async_future_wait(a), 0);
        for (int i = 0; i < n; i++) {
            cr_expect_eq(async_future_wait(more[i]), 0);
            async_future_unref(more[i]);
        }
        if (rc == 0) {
            cr_expect_eq(async_future_wait(rs.f), 0);
            async_future_unref(rs.f);
        }
        async_future_unref(a);
        still_maps(ex);
        async_executor_shm_free(ex, g);
        async_executor_free(ex);
    }
    cr_log_info("callbacks' submits: %d ASYNC_EDEADLK, %d queued", deadlk, queued);
}
#endif

/* --- a lazy map over a pool that stops ------------------------------------------ */

static int slow_twice(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    usleep(300);
    return twice(in, in_size, out, out_size, ctx);
}

/* A lazy map from a source, its pool shut down (queued work cancelled)
 * after 10 results, or terminated.  Each later async_imap_next pulled
 * another chunk of items from the source, dropped them and returned
 * ASYNC_ECLOSED, for ever: the input was eaten, the chunks already queued
 * never yielded their outcomes, and the end never came.  Now nothing is
 * pulled once the pool is stopped: every item pulled is yielded once (its
 * result or ASYNC_ECANCELED), then ASYNC_ECLOSED once with a message saying
 * where the input was cut, then ASYNC_EEOF. */
static void imap_over_a_stopping_pool(async_backend_t backend, bool terminate, bool unordered)
{
    async_executor_t *ex = NULL;
    cr_assert_eq(async_executor_new(&ex, &(async_executor_opts_t){.backend = backend, .workers = 2}), 0);
    counted_t src = {0, 100000};
    async_imap_t im;
    async_imap_init(&im);
    im.fn = slow_twice, im.in_size = im.out_size = sizeof(int64_t);
    im.source = counted_source, im.source_arg = &src, im.chunksize = 3, im.unordered = unordered;
    async_imap_iter_t *it;
    cr_assert_eq(async_executor_imap(&it, ex, &im), 0);
    static bool seen[100000];
    memset(seen, 0, sizeof seen);
    int yielded = 0, closed = 0, r;
    for (int calls = 0;; calls++) {
        cr_assert_lt(calls, 2000, "async_imap_next never reached the end (%d ECLOSED, %lld pulled)",
                     closed, (long long)src.next);
        if (calls == 10) {
            if (terminate) cr_assert_eq(async_executor_terminate(ex), 0);
            else cr_assert_eq(async_executor_shutdown(ex, false, true), 0);
        }
        int64_t o = -1;
        size_t idx = SIZE_MAX;
        r = async_imap_next(it, &o, &idx);
        if (r == ASYNC_EEOF) break;
        if (r == ASYNC_ECLOSED) {
            cr_assert_eq(closed++, 0, "ASYNC_ECLOSED twice");
            cr_assert(strstr(async_imap_message(it), "stopped taking work"), "%s",
                      async_imap_message(it));
            continue;
        }
        cr_assert_eq(closed, 0, "an item after the pool's code");
        cr_assert_lt(idx, (size_t)src.next);
        cr_assert(!seen[idx], "item %zu twice", idx);
        seen[idx] = true;
        yielded++;
        if (r == 0) cr_assert_eq(o, 2 * (int64_t)idx);
        else cr_assert_eq(r, ASYNC_ECANCELED, "item %zu: %s (%s)", idx, async_strerror(r),
                          async_imap_message(it));
    }
    cr_expect_eq(closed, 1);
    cr_expect_eq(yielded, src.next, "%d items yielded of %lld pulled", yielded, (long long)src.next);
    cr_expect_eq(async_imap_next(it, NULL, NULL), ASYNC_EEOF, "the end stays the end");
    async_imap_free(it);
    async_executor_free(ex);
}

Test(round12_exec, imap_over_a_pool_shut_down_loses_no_item, .timeout = 60)
{
    imap_over_a_stopping_pool(ASYNC_BACKEND_THREADS, false, false);
    imap_over_a_stopping_pool(ASYNC_BACKEND_THREADS, false, true);
    imap_over_a_stopping_pool(ASYNC_BACKEND_THREADS, true, false);
}

#if !defined(__SANITIZE_THREAD__)
Test(round12_exec, imap_over_a_process_pool_terminated_loses_no_item, .timeout = 60)
{
    imap_over_a_stopping_pool(ASYNC_BACKEND_PROCESSES, true, false);
    imap_over_a_stopping_pool(ASYNC_BACKEND_PROCESSES, true, true);
    imap_over_a_stopping_pool(ASYNC_BACKEND_PROCESSES, false, false);
}
#endif
