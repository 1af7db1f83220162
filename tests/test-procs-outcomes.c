/* What a process-backend job's outcome carries back (process_backend.c,
 * run_rows and its readers on_done and on_direct_done): a job that grew a
 * variable result and then failed keeps its own code and message, through
 * a submit and through a direct run, whatever size it had asked for. */
#if defined(__SANITIZE_THREAD__)
/* As test-procs.c: ThreadSanitizer cannot follow the process pool's
 * cross-process hand-overs. */
#include <criterion/criterion.h>
Test(tsan, process_pool_tests_skipped, .timeout = 5)
{
    cr_skip_test("ThreadSanitizer cannot follow the process pool's cross-process hand-overs: this file runs "
                 "under the other builds");
}
#else
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <async.h>
#include <async/executor.h>
#include "support/alloc.h"
#include "support/teardown.h"

extern _Atomic uint64_t async__procs_direct_runs;

static void setup(void) { test_alloc_install(); }
static void teardown(void)
{
    TEARDOWN_CHECK_NO_LEAK();
    test_alloc_uninstall();
}
TestSuite(procs_outcomes, .init = setup, .fini = teardown);

/* Asks for a variable result of the input's size, fills it, then fails. */
static int grow_then_fail(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out, (void)out_size, (void)ctx;
    size_t n;
    memcpy(&n, in, sizeof n);
    char *p = async_work_output(n);
    if (!p) return async_work_fail(ASYNC_ENOMEM, "no result of %zu bytes", n);
    memset(p, 0x5a, n);
    return async_work_fail(ASYNC_EPERM, "row of %zu bytes out of range", n);
}

static async_executor_t *pool(void)
{
    async_executor_t *ex;
    async_executor_opts_t o;
    async_executor_opts_init(&o);
    o.backend = ASYNC_BACKEND_PROCESSES;
    o.workers = 1;
    cr_assert_eq(async_executor_new(&ex, &o), 0);
    return ex;
}

static void expect_failure(async_executor_t *ex, size_t n)
{
    char want[128];
    snprintf(want, sizeof want, "row of %zu bytes out of range", n);
    async_job_t j;
    async_job_init(&j);
    j.fn = grow_then_fail;
    j.in = &n;
    j.in_size = sizeof n;
    j.out_size = 8;

    async_future_t *f;
    cr_assert_eq(async_executor_submit(&f, ex, &j), 0);
    cr_assert_eq(async_future_wait(f), ASYNC_EPERM, "submit, %zu bytes: %s", n,
                 async_errname(async_future_error(f)));
    cr_expect_str_eq(async_future_message(f), want, "submit, %zu bytes", n);
    async_future_unref(f);

    /* Until one run took the direct path (a run right after a result may
     * find the worker still counted busy, and take the queued one). */
    for (int tries = 0; tries < 100; tries++) {
        uint64_t direct = atomic_load(&async__procs_direct_runs);
        char out[8], msg[ASYNC_FUTURE_MSG_MAX];
        size_t len = 1;
        cr_assert_eq(async_executor_run(ex, &j, out, &len, msg, sizeof msg), ASYNC_EPERM,
                     "run, %zu bytes", n);
        cr_assert_str_eq(msg, want, "run, %zu bytes", n);
        cr_assert_eq(len, 0);
        if (atomic_load(&async__procs_direct_runs) > direct) return;
    }
    cr_assert_fail("no run took the direct path");
}

static int grow_only(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out, (void)out_size, (void)ctx;
    size_t n;
    memcpy(&n, in, sizeof n);
    return async_work_output(n) ? 0 : ASYNC_ENOMEM;
}

static size_t largest_output(async_executor_t *ex)
{
    size_t lo = 0, hi = (size_t)1 << 32; /* lo succeeds, hi fails */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        async_job_t j;
        async_job_init(&j);
        j.fn = grow_only;
        j.in = &mid;
        j.in_size = sizeof mid;
        int rc = async_executor_run(ex, &j, NULL, NULL, NULL, 0);
        if (rc == 0) lo = mid;
        else hi = mid;
    }
    return lo;
}

/* The sizes: small, two thirds of the backend's limit, and that limit
 * (async_work_output's largest size that succeeds, found by halving). */
Test(procs_outcomes, failure_after_a_large_variable_result_keeps_its_message, .timeout = 60)
{
    async_executor_t *ex = pool();
    size_t max = largest_output(ex);
    cr_assert_gt(max, 4096, "the backend allows variable results (%zu)", max);
    expect_failure(ex, 100);
    expect_failure(ex, max / 3 * 2);
    expect_failure(ex, max);
    async_executor_free(ex);
}
#endif
