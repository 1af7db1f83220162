/* A thread pool's lean jobs (executor_internal.h's async__lean_job_t): a
 * small submit's job of one cache line after its future, which
 * async__exec_take hands to its worker as a full job in that worker's own
 * slot.  What a work function sees of each kind of input the line packs
 * (copied, borrowed, an empty one with a pointer, none), jobs held by both
 * workers at once (one slot a worker), and lean jobs cancelled while queued
 * or mixed with full ones in a batch.  Each test says what broken code it
 * catches; each was seen to fail with that breakage put in by hand. */
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <async.h>
#include <async/executor.h>
#include <async/future.h>
#include "support/alloc.h"
#include "support/gate.h"
#include "support/pool.h"
#include "support/teardown.h"

static void setup(void) { test_alloc_install(); }
static void teardown(void)
{
    TEARDOWN_CHECK_NO_LEAK();
    test_alloc_uninstall();
}
TestSuite(executor_lean, .init = setup, .fini = teardown);

/* What a work function was handed. */
typedef struct {
    const void *in;
    size_t in_size;
    void *out;
    size_t out_size;
    unsigned char first;
} seen_t;

static int record(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    seen_t *s = ctx;
    *s = (seen_t){in, in_size, out, out_size, in && in_size ? *(const unsigned char *)in : 0};
    if (out_size) memset(out, 0xab, out_size);
    return 0;
}

static seen_t run_one(async_executor_t *ex, const void *in, size_t in_size, size_t out_size,
                      bool borrow)
{
    seen_t s;
    memset(&s, 0x5c, sizeof s);
    async_job_t j = {.fn = record, .ctx = &s, .in = in, .in_size = in_size, .out_size = out_size,
                     .borrow_input = borrow};
    async_future_t *f;
    cr_assert_eq(async_executor_submit(&f, ex, &j), 0);
    cr_assert_eq(async_future_wait(f), 0);
    const void *data;
    size_t size;
    cr_assert_eq(async_future_result(f, &data, &size), 0);
    cr_expect_eq(size, out_size);
    for (size_t i = 0; i < size; i++) cr_expect_eq(((const unsigned char *)data)[i], 0xab);
    async_future_unref(f);
    return s;
}

/* Each input kind as the general path hands it: no input is NULL, an empty
 * input with a pointer is that pointer (nothing to copy), a copied one is a
 * copy, a borrowed one the caller's own bytes, sizes kept, and an output
 * pointer only with an output size.  Catches an unpack that reads LEAN_NONE
 * as a copy (a non-NULL input for none), that swaps or drops the borrowed
 * pointer and size, or that puts the output over the borrowed pair. */
Test(executor_lean, each_kind_of_input_reaches_the_work_function_as_submitted, .timeout = 30)
{
    async_executor_t *ex = test_thread_pool(1, 0);
    unsigned char buf[48];
    for (int i = 0; i < 48; i++) buf[i] = (unsigned char)(i + 1);

    seen_t s = run_one(ex, NULL, 0, 4, false);
    cr_expect_null(s.in, "no input arrived as %p", s.in);
    cr_expect_eq(s.in_size, 0);
    cr_expect_not_null(s.out);
    cr_expect_eq(s.out_size, 4);

    s = run_one(ex, buf, 0, 0, false);
    cr_expect_eq(s.in, buf, "an empty input is its pointer, not a copy");
    cr_expect_eq(s.in_size, 0);
    cr_expect_null(s.out, "no output size, no output pointer");

    s = run_one(ex, buf + 3, 5, 16, false);
    cr_expect_neq(s.in, buf + 3, "a copied input was not copied");
    cr_expect_eq(s.in_size, 5);
    cr_expect_eq(s.first, 4);

    for (size_t out = 0; out <= 17; out += 8) { /* 16 fits beside the pair, 17 not */
        s = run_one(ex, buf + 7, 40, out, true);
        cr_expect_eq(s.in, buf + 7, "a borrowed input (out %zu) arrived as %p", out, s.in);
        cr_expect_eq(s.in_size, 40);
        cr_expect_eq(s.first, 8);
        cr_expect_eq(s.out_size, out);
    }
    s = run_one(ex, buf, 8, 17, true); /* the general path */
    cr_expect_eq(s.in, buf);
    cr_expect_eq(s.in_size, 8);
    async_executor_free(ex);
}

static int twice_slow(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out_size, (void)ctx;
    uint32_t v;
    memcpy(&v, in, sizeof v);
    /* Every third job holds its worker long enough for the other worker to
     * take and unpack several jobs meanwhile. */
    if (v % 3 == 0) {
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
    v = v * 2 + 1;
    memcpy(out, &v, sizeof v);
    return 0;
}

/* Two workers each hold a lean job while the other takes more: every
 * future gets its own job's output.  Catches one slot shared by the
 * workers (a worker's finish would complete the other's future with the
 * other's rows) or a slot indexed by anything but the worker. */
Test(executor_lean, two_workers_holding_lean_jobs_finish_each_its_own, .timeout = 60)
{
    enum { N = 600 };
    async_executor_t *ex = test_thread_pool(2, 0);
    static async_future_t *fs[N];
    for (uint32_t i = 0; i < N; i++) {
        async_job_t j = {.fn = twice_slow, .in = &i, .in_size = sizeof i, .out_size = sizeof i};
        cr_assert_eq(async_executor_submit(&fs[i], ex, &j), 0);
    }
    for (uint32_t i = 0; i < N; i++) {
        cr_assert_eq(async_future_wait(fs[i]), 0, "job %u failed", i);
        const void *data;
        size_t size;
        cr_assert_eq(async_future_result(fs[i], &data, &size), 0);
        cr_assert_eq(size, sizeof(uint32_t));
        uint32_t v;
        memcpy(&v, data, sizeof v);
        cr_expect_eq(v, i * 2 + 1, "job %u got %u", i, v);
        async_future_unref(fs[i]);
    }
    async_executor_free(ex);
}

static atomic_int ran[256];

static int count_run(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)ctx;
    unsigned char k = *(const unsigned char *)in;
    atomic_fetch_add(&ran[k], 1);
    memset(out, k, out_size);
    return 0;
}

/* Lean jobs queued behind a held worker, every other one cancelled, with
 * single submits, a batch, and a batch with a priority (full jobs) in the
 * same queue: the cancelled ones never run and end CANCELLED, the rest run
 * once with their own input, in a pool whose futures all go back (the
 * leak check at its end).  Catches a take that runs a lean job whose start
 * failed (a cancelled job would run), or a drop missing for a cancelled
 * lean job (its block and the pool's slabs would leak). */
Test(executor_lean, lean_jobs_cancelled_while_queued_never_run, .timeout = 60)
{
    enum { N = 240 };
    memset(ran, 0, sizeof ran);
    async_executor_t *ex = test_thread_pool(1, 0);
    gate_t g;
    async_future_t *held = block_worker(ex, &g);
    static async_future_t *fs[N];
    static unsigned char in[N];
    static async_job_t jobs[N];
    for (int i = 0; i < N; i++) {
        in[i] = (unsigned char)i;
        jobs[i] = (async_job_t){.fn = count_run, .in = &in[i], .in_size = 1, .out_size = 3,
                                .priority = i >= 200 ? 1 : 0};
    }
    for (int i = 0; i < 100; i++) cr_assert_eq(async_executor_submit(&fs[i], ex, &jobs[i]), 0);
    cr_assert_eq(async_executor_submit_batch(&fs[100], ex, &jobs[100], 100), 0);
    cr_assert_eq(async_executor_submit_batch(&fs[200], ex, &jobs[200], N - 200), 0);
    for (int i = 0; i < N; i += 2) cr_expect_eq(async_future_cancel(fs[i]), 0, "cancel %d", i);
    open_gate(&g, held);
    for (int i = 0; i < N; i++) {
        int r = async_future_wait(fs[i]);
        if (i % 2 == 0) {
            cr_expect_eq(r, ASYNC_ECANCELED, "job %d: %d", i, r);
            cr_expect_eq(async_future_state(fs[i]), ASYNC_FUTURE_CANCELLED);
        } else {
            cr_expect_eq(r, 0, "job %d: %d", i, r);
            const void *data;
            size_t size;
            cr_assert_eq(async_future_result(fs[i], &data, &size), 0);
            cr_expect_eq(size, 3);
            cr_expect_eq(((const unsigned char *)data)[2], (unsigned char)i);
        }
        async_future_unref(fs[i]);
    }
    async_executor_free(ex); /* joins: every job that will run has run */
    /* In the body: a failed expectation in .fini is printed but does not
     * fail the test. */
    cr_expect_eq(test_alloc_live(), 0, "%ld allocations left", test_alloc_live());
    for (int i = 0; i < N; i++)
        cr_expect_eq(atomic_load(&ran[i]), i % 2 ? 1 : 0, "job %d ran %d times", i,
                     atomic_load(&ran[i]));
}
