/* Every allocation of an executor's life failing in turn: a fail-at-N sweep
 * over new, submit, submit_batch, map, map_async and imap on both backends,
 * and a deadline kept when an allocation of its submit fails.  Each test
 * says in its comment what it caught, or what broken code it would catch. */
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
#include "support/exec_jobs.h"

/* Under the sanitizers, malloc of a size no machine has (2^40 chunks'
 * tickets) aborts by default; make it fail as glibc's does, so the
 * library's own ASYNC_ENOMEM path is what the test sees. */
TEST_ALLOCATOR_MAY_RETURN_NULL();


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
TestSuite(executor_oom, .init = sw_setup, .fini = sw_teardown);

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

Test(executor_oom, every_allocation_of_a_thread_pools_life_fails_in_turn, .timeout = 120)
{
    sweep(ASYNC_BACKEND_THREADS);
}

#if defined(__SANITIZE_THREAD__)
Test(executor_oom, every_allocation_of_a_process_pools_life_fails_in_turn, .timeout = 5)
{
    cr_skip_test("ThreadSanitizer cannot follow the process pool's cross-process hand-overs: this test "
                 "runs under the other builds");
}
#else
Test(executor_oom, every_allocation_of_a_process_pools_life_fails_in_turn, .timeout = 240)
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
Test(executor_oom, a_deadline_is_kept_when_an_allocation_of_its_submit_fails, .timeout = 120)
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
