/* The executor and futures misused through the public API, as a hostile or
 * careless caller would, on both backends: NULL arguments, zero sizes,
 * sizes whose products overflow, huge pools, deadlines in the past, calls
 * after shutdown, repeated shutdowns and frees of NULL.  Each misuse must
 * return a documented error (or do its documented no-op) at once: no
 * crash, no hang, nothing queued, no leak (the counting allocator checks
 * after every test), and the pool must serve normally afterwards.
 *
 * Sizes whose product wraps (n * in_size, n * out_size) are refused on both
 * backends and for imap; a negative job or map time limit has expired; async_executor_shm_free of a pointer the process pool did not
 * hand out is ignored (on the thread backend it is undefined: free()). */
#include <criterion/criterion.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <async.h>
#include "support/alloc.h"
#include "support/teardown.h"

/* Under AddressSanitizer, malloc of a size no machine has (a 4e9-worker
 * table, SIZE_MAX bytes) aborts by default; make it fail as glibc's does,
 * so the library's own ASYNC_ENOMEM path is what the test sees. */
TEST_ALLOCATOR_MAY_RETURN_NULL();

static void setup(void) { test_alloc_install(); }
static void teardown(void)
{
    TEARDOWN_CHECK_NO_LEAK();
    test_alloc_uninstall();
}
TestSuite(misuse_threads, .init = setup, .fini = teardown, .timeout = 60);
TestSuite(misuse_procs, .init = setup, .fini = teardown, .timeout = 60);

#define ON_BOTH(name)                                                              \
    static void name(async_backend_t backend);                                     \
    Test(misuse_threads, name) { name(ASYNC_BACKEND_THREADS); }                    \
    Test(misuse_procs, name) { name(ASYNC_BACKEND_PROCESSES); }                    \
    static void name(async_backend_t backend)

static int fill(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)ctx;
    unsigned char sum = 0;
    for (size_t i = 0; i < in_size; i++) sum = (unsigned char)(sum + ((const unsigned char *)in)[i]);
    if (out_size) memset(out, sum, out_size);
    return 0;
}

static int sleepy(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in, (void)in_size, (void)out, (void)out_size, (void)ctx;
    usleep(300 * 1000);
    return 0;
}

static async_executor_t *pool(async_backend_t backend, unsigned workers)
{
    async_executor_t *ex = NULL;
    int r = async_executor_new(&ex, &(async_executor_opts_t){.backend = backend, .workers = workers});
    cr_assert_eq(r, 0, "executor_new: %s", async_strerror(r));
    return ex;
}

/* The pool still runs a job and returns its result. */
static void still_serves(async_executor_t *ex)
{
    unsigned char in[3] = {1, 2, 3}, out[4] = {0};
    size_t len = 0;
    char msg[ASYNC_FUTURE_MSG_MAX];
    int r = async_executor_run(ex, &(async_job_t){.fn = fill, .in = in, .in_size = 3, .out_size = 4}, out, &len, msg, sizeof msg);
    cr_assert_eq(r, 0, "after the misuse: %s (%s)", async_strerror(r), msg);
    cr_assert_eq(out[0], 6);
    cr_assert_eq(out[3], 6);
}

Test(misuse_threads, new_with_bad_arguments)
{
    async_executor_t *ex = (async_executor_t *)0x1;
    cr_expect_eq(async_executor_new(NULL, NULL), ASYNC_EINVAL);
    cr_expect_eq(async_executor_new(&ex, &(async_executor_opts_t){.backend = (async_backend_t)77}), ASYNC_EINVAL);
    cr_expect_eq(ex, (async_executor_t *)0x1, "*out untouched on error");
}

/* Four billion workers: refused at once (no thread or process is started
 * first and then leaked), with the address space bounded so that a pool
 * that tried would fail fast rather than take the machine. */
ON_BOTH(new_with_absurd_pool_size)
{
    struct rlimit rl;
    cr_assert_eq(getrlimit(RLIMIT_AS, &rl), 0);
#ifndef __SANITIZE_ADDRESS__ /* ASan's shadow memory needs terabytes of address space */
    struct rlimit small = {(rlim_t)4 << 30, rl.rlim_max};
    if (rl.rlim_max != RLIM_INFINITY && small.rlim_cur > rl.rlim_max) small.rlim_cur = rl.rlim_max;
    cr_assert_eq(setrlimit(RLIMIT_AS, &small), 0);
#endif
    async_executor_t *ex = NULL;
    int64_t t0 = async_now();
    int r = async_executor_new(&ex, &(async_executor_opts_t){.backend = backend, .workers = 4000000000u});
    setrlimit(RLIMIT_AS, &rl);
    cr_assert(r == ASYNC_ENOMEM || r == ASYNC_EAGAIN || r == ASYNC_EINVAL, "got %d (%s)", r, async_strerror(r));
    cr_expect_null(ex);
    cr_expect_lt(async_now() - t0, ASYNC_SEC(20), "refused only after %.1f s", (double)(async_now() - t0) / 1e9);
}

ON_BOTH(submit_with_bad_arguments)
{
    async_executor_t *ex = pool(backend, 2);
    char buf[8] = {0};
    async_future_t *f = (async_future_t *)0x1, *fs[2] = {NULL, NULL};
    cr_expect_eq(async_executor_submit(&f, NULL, &(async_job_t){.fn = fill}), ASYNC_EINVAL);
    cr_expect_eq(async_executor_submit(&f, ex, NULL), ASYNC_EINVAL);
    cr_expect_eq(async_executor_submit(NULL, ex, &(async_job_t){.fn = fill}), ASYNC_EINVAL);
    cr_expect_eq(async_executor_submit(&f, ex, &(async_job_t){.fn = NULL}), ASYNC_EINVAL);
    cr_expect_eq(async_executor_submit(&f, ex, &(async_job_t){.fn = fill, .in = NULL,
                                       .in_size = 5}), ASYNC_EINVAL);
    /* Sizes no allocation can hold, and sizes whose sum overflows. */
    cr_expect_neq(async_executor_submit(&f, ex, &(async_job_t){.fn = fill, .in = buf,
                                        .in_size = SIZE_MAX}), 0);
    cr_expect_neq(async_executor_submit(&f, ex, &(async_job_t){.fn = fill, .out_size = SIZE_MAX}),
                  0);
    cr_expect_neq(async_executor_submit(&f, ex, &(async_job_t){.fn = fill, .in = buf, .in_size = 8,
                                        .out_size = SIZE_MAX - 4}), 0);
    cr_expect_eq(async_executor_trysubmit(&f, ex, NULL), ASYNC_EINVAL);
    cr_expect_eq(async_executor_submit_dl(&f, ex, NULL, async_now() + ASYNC_SEC(1)), ASYNC_EINVAL);
    cr_expect_eq(f, (async_future_t *)0x1, "*out untouched on error");
    cr_expect_eq(async_executor_submit_batch(fs, ex, NULL, 3), ASYNC_EINVAL);
    cr_expect_eq(async_executor_submit_batch(fs, ex, (async_job_t[]){{.fn = fill}, {.fn = NULL}},
                                             2), ASYNC_EINVAL);
    cr_expect_null(fs[0], "a refused batch queues nothing");
    cr_expect_eq(async_executor_submit_batch(NULL, ex, &(async_job_t){.fn = fill}, 0), 0,
                 "an empty batch");
    cr_expect_eq(async_executor_run(ex, NULL, NULL, NULL, NULL, 0), ASYNC_EINVAL);
    cr_expect_eq(async_executor_queued(ex), 0, "nothing was queued");
    /* Zero sizes are fine: no input, no output. */
    cr_assert_eq(async_executor_submit(&f, ex, &(async_job_t){.fn = fill}), 0);
    cr_expect_eq(async_future_wait(f), 0);
    const void *data = (const void *)0x1;
    size_t size = 99;
    cr_expect_eq(async_future_result(f, &data, &size), 0);
    cr_expect_eq(size, 0);
    async_future_unref(f);
    still_serves(ex);
    async_executor_free(ex);
}

ON_BOTH(map_with_bad_arguments)
{
    async_executor_t *ex = pool(backend, 2);
    char buf[16] = {0};
    async_map_error_t e;
    async_future_t *f = NULL;
    cr_expect_eq(async_executor_map(NULL, &(async_map_t){.fn = fill}, &e), ASYNC_EINVAL);
    cr_expect_eq(async_executor_map(ex, NULL, &e), ASYNC_EINVAL);
    cr_expect_eq(async_executor_map(ex, &(async_map_t){.fn = NULL, .n = 1}, &e), ASYNC_EINVAL);
    cr_expect_eq(async_executor_map(ex, &(async_map_t){.fn = fill, .in_size = 1, .n = 4}, &e), ASYNC_EINVAL);
    cr_expect_eq(async_executor_map(ex, &(async_map_t){.fn = fill, .in = buf, .in_size = 1, .out_size = 1, .n = 4}, &e),
                 ASYNC_EINVAL);
    cr_expect_eq(async_executor_map(ex, &(async_map_t){.fn = fill, .n = 0}, NULL), 0, "n = 0 is an empty map");
    /* n items of in_size or out_size bytes that wrap size_t: refused, never
     * run over the few bytes there are. */
    cr_expect_eq(async_executor_map(ex, &(async_map_t){.fn = fill, .in = buf, .in_size = 2, .n = SIZE_MAX / 2 + 1}, &e),
                 ASYNC_EINVAL);
    cr_expect_eq(async_executor_map(ex,
                                    &(async_map_t){.fn = fill, .in = buf, .in_size = 1, .out = buf, .out_size = 2,
                                                   .n = SIZE_MAX / 2 + 1},
                                    &e),
                 ASYNC_EINVAL);
    cr_expect_eq(async_executor_map_async(&f, ex,
                                          &(async_map_t){.fn = fill, .in = buf, .in_size = 4, .n = SIZE_MAX / 2}, NULL, NULL, NULL),
                 ASYNC_EINVAL);
    /* A negative map time limit has expired. */
    cr_expect_eq(async_executor_map(ex, &(async_map_t){.fn = sleepy, .in = buf, .in_size = 1, .n = 2, .timeout_ns = -5}, &e),
                 ASYNC_ETIMEDOUT);
    cr_expect_eq(async_executor_map_async(NULL, ex, &(async_map_t){.fn = fill, .n = 0}, NULL, NULL,
                                          NULL),
                 ASYNC_EINVAL);
    /* A chunk size past n is one chunk. */
    cr_assert_eq(async_executor_map_async(&f,
                                          ex,
                                          &(async_map_t){.fn = fill, .in = buf, .in_size = 1, .out = buf, .out_size = 1,
                                                         .n = 16, .chunksize = SIZE_MAX}, NULL, NULL, NULL),
                 0);
    cr_expect_eq(async_future_wait_dl(f, async_now() + ASYNC_SEC(20)), 0);
    async_future_unref(f);
    /* A map whose time limit has expired runs nothing and says so. */
    cr_expect_eq(async_executor_map(ex, &(async_map_t){.fn = sleepy, .in = buf, .in_size = 1, .n = 8, .timeout_ns = -1}, &e),
                 ASYNC_ETIMEDOUT);
    async_imap_iter_t *it = NULL;
    cr_expect_eq(async_executor_imap(&it, ex, NULL), ASYNC_EINVAL);
    cr_expect_eq(async_executor_imap(&it, ex, &(async_imap_t){.fn = fill, .in = buf, .in_size = 2,
                                     .n = SIZE_MAX / 2 + 1}),
                 ASYNC_EINVAL, "an array imap whose size wraps");
    cr_expect_null(it);
    cr_expect_eq(async_executor_imap(NULL, ex, &(async_imap_t){.fn = fill, .in = buf, .in_size = 1,
                                     .n = 3}),
                 ASYNC_EINVAL);
    cr_expect_eq(async_executor_imap(&it, ex, &(async_imap_t){.fn = NULL, .in = buf, .in_size = 1,
                                     .n = 3}),
                 ASYNC_EINVAL);
    cr_expect_null(it);
    /* A huge window and chunk over two items, and next after the end. */
    cr_assert_eq(async_executor_imap(&it,
                                     ex,
                                     &(async_imap_t){.fn = fill, .in = buf, .in_size = 1, .out_size = 1, .n = 2,
                                                     .window = SIZE_MAX, .chunksize = SIZE_MAX}),
                 0);
    char out[1];
    size_t ix, got = 0;
    int r;
    while ((r = async_imap_next_dl(it, out, &ix, async_now() + ASYNC_SEC(20))) == 0) got++;
    cr_expect_eq(r, ASYNC_EEOF);
    cr_expect_eq(got, 2);
    cr_expect_eq(async_imap_next(it, out, &ix), ASYNC_EEOF, "the end stays the end");
    async_imap_free(it);
    async_imap_free(NULL);
    still_serves(ex);
    async_executor_free(ex);
}

/* Waits whose deadline has already passed return ASYNC_ETIMEDOUT at once,
 * whatever the past value (0, negative, INT64_MIN), and leave the work
 * running; ASYNC_FOREVER waits. */
ON_BOTH(waits_with_past_deadlines)
{
    async_executor_t *ex = pool(backend, 1);
    async_future_t *f;
    cr_assert_eq(async_executor_submit(&f, ex, &(async_job_t){.fn = sleepy}), 0);
    static const int64_t past[] = {0, 1, -1, INT64_MIN};
    int64_t t0 = async_now();
    for (size_t i = 0; i < 4; i++) cr_expect_eq(async_future_wait_dl(f, past[i]), ASYNC_ETIMEDOUT, "deadline %lld", (long long)past[i]);
    cr_expect_eq(async_future_wait_dl(f, async_now() - ASYNC_SEC(1)), ASYNC_ETIMEDOUT);
    cr_expect_lt(async_now() - t0, ASYNC_SEC(5), "past deadlines do not wait for the job");
    async_future_t *one[1] = {f};
    cr_expect_eq(async_futures_wait_dl(one, 1, ASYNC_WAIT_ALL, NULL, 1), ASYNC_ETIMEDOUT);
    async_as_completed_t *it = NULL;
    size_t ix;
    cr_assert_eq(async_as_completed_new(&it, one, 1), 0);
    cr_expect_eq(async_as_completed_next_dl(it, &ix, 1), ASYNC_ETIMEDOUT);
    cr_expect_eq(async_as_completed_unfinished(it), 1);
    cr_expect_str_eq(async_as_completed_message(it), "1 of 1 futures unfinished");
    async_as_completed_free(it);
    cr_expect_eq(async_future_wait_dl(f, ASYNC_FOREVER), 0);
    cr_expect_eq(async_future_wait_dl(f, 0), 0, "a final future answers even a past deadline");
    async_future_unref(f);
    /* A job whose time limit expired before it was queued never runs. */
    cr_assert_eq(async_executor_submit(&f, ex, &(async_job_t){.fn = sleepy, .timeout_ns = -1}), 0);
    cr_expect_eq(async_future_wait_dl(f, async_now() + ASYNC_SEC(20)), ASYNC_ETIMEDOUT);
    cr_expect_str_eq(async_future_message(f), "deadline passed before it ran");
    async_future_unref(f);
    still_serves(ex);
    async_executor_free(ex);
}

Test(misuse_threads, many_futures_with_bad_arguments)
{
    async_future_t *g = NULL, *fs[1] = {NULL};
    size_t ix;
    cr_expect_eq(async_futures_wait_dl(fs, 1, ASYNC_WAIT_ALL, NULL, 0), ASYNC_EINVAL, "a NULL entry");
    cr_expect_eq(async_futures_wait_dl(NULL, 1, ASYNC_WAIT_ALL, NULL, 0), ASYNC_EINVAL);
    cr_expect_eq(async_futures_wait_dl(NULL, 0, ASYNC_WAIT_ALL, &ix, 0), 0, "n = 0 holds at once");
    cr_assert_eq(async_future_new(&g), 0);
    fs[0] = g;
    cr_expect_eq(async_futures_wait_dl(fs, 1, (async_wait_mode_t)9, NULL, 0), ASYNC_EINVAL, "a bad mode");
    async_as_completed_t *it = NULL;
    cr_expect_eq(async_as_completed_new(&it, NULL, 1), ASYNC_EINVAL);
    cr_assert_eq(async_as_completed_new(&it, NULL, 0), 0);
    cr_expect_eq(async_as_completed_next_dl(it, &ix, 1), ASYNC_EEOF);
    async_as_completed_free(it);
    cr_expect_eq(async_future_new(NULL), ASYNC_EINVAL);
    /* Finishing twice, cancelling a final future. */
    cr_expect_eq(async_future_set_error(g, 5, NULL), 0);
    cr_expect_eq(async_future_error(g), ASYNC_EWORK, "a positive code becomes ASYNC_EWORK");
    cr_expect_eq(async_future_set_result(g, NULL, 0), ASYNC_EDONE);
    cr_expect_eq(async_future_set_error(g, ASYNC_EIO, "again"), ASYNC_EDONE);
    cr_expect_eq(async_future_cancel(g), ASYNC_EDONE);
    cr_expect_eq(async_future_error(g), ASYNC_EWORK, "the first outcome stays");
    async_future_unref(g);
    async_future_unref(NULL);
}

/* A future an executor returned is finished by its worker alone. */
ON_BOTH(executor_futures_refuse_producer_calls)
{
    async_executor_t *ex = pool(backend, 1);
    async_future_t *f;
    cr_assert_eq(async_executor_submit(&f, ex, &(async_job_t){.fn = sleepy}), 0);
    cr_expect_eq(async_future_set_result(f, "x", 1), ASYNC_EPERM);
    cr_expect_eq(async_future_set_error(f, ASYNC_EIO, "forged"), ASYNC_EPERM);
    cr_expect_eq(async_future_set_running(f), ASYNC_EPERM);
    cr_expect_eq(async_future_wait_dl(f, async_now() + ASYNC_SEC(20)), 0);
    async_future_unref(f);
    async_executor_free(ex);
}

/* Returns the code its input names; through async_work_fail, with a
 * message, when the code is odd. */
static int return_code(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out, (void)out_size, (void)ctx;
    int code;
    memcpy(&code, in, sizeof code);
    return code & 1 ? async_work_fail(code, "failed with %d", code) : code;
}

/* executor.h: a work function's negative code is the job's, whatever it is
 * (the program's own codes pass through, as a Python exception does); a
 * positive one becomes ASYNC_EWORK.  The header promised ASYNC_EWORK for a
 * negative code that is no ASYNC_E* one, which neither backend did
 * (procexec18's find): the text now says what they do, and this holds
 * them to it, INT_MIN included, through async_work_fail too. */
ON_BOTH(a_negative_code_is_the_jobs_and_a_positive_one_ework)
{
    async_executor_t *ex = pool(backend, 1);
    static const struct {
        int code, want;
    } cases[] = {{-100000, -100000}, {-100001, -100001}, {INT_MIN, INT_MIN},
                 {ASYNC_EIO, ASYNC_EIO}, {ASYNC_ETIMEDOUT, ASYNC_ETIMEDOUT}, {7, ASYNC_EWORK},
                 {INT_MAX, ASYNC_EWORK}, {-99999, -99999}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        async_future_t *f;
        async_job_t j = {.fn = return_code, .in = &cases[i].code, .in_size = sizeof(int)};
        cr_assert_eq(async_executor_submit(&f, ex, &j), 0);
        int got = async_future_wait(f);
        cr_expect_eq(got, cases[i].want, "code %d: %d", cases[i].code, got);
        if (cases[i].code & 1) {
            char want[64];
            snprintf(want, sizeof want, "failed with %d", cases[i].code);
            cr_expect_str_eq(async_future_message(f), want, "code %d", cases[i].code);
        }
        async_future_unref(f);
    }
    async_executor_free(ex);
}

ON_BOTH(calls_after_shutdown)
{
    async_executor_t *ex = pool(backend, 2);
    async_future_t *f = NULL;
    cr_expect_eq(async_executor_shutdown(ex, false, false), 0);
    cr_expect_eq(async_executor_shutdown(ex, true, true), 0, "again, upgraded to wait and cancel");
    cr_expect_eq(async_executor_submit(&f, ex, &(async_job_t){.fn = fill}), ASYNC_ECLOSED);
    cr_expect_eq(async_executor_trysubmit(&f, ex, &(async_job_t){.fn = fill}), ASYNC_ECLOSED);
    cr_expect_null(f);
    char buf[1];
    cr_expect_eq(async_executor_map(ex, &(async_map_t){.fn = fill, .in = buf, .in_size = 1, .n = 1}, NULL), ASYNC_ECLOSED);
    cr_expect_eq(async_executor_terminate(ex), 0);
    cr_expect_eq(async_executor_terminate(ex), 0, "terminate twice");
    char msg[4] = "x";
    cr_expect_eq(async_executor_error(ex, msg, sizeof msg), 0, "a pool shut down is not broken");
    cr_expect_str_eq(msg, "");
    cr_expect_eq(async_executor_error(ex, NULL, 0), 0);
    msg[0] = 'x';
    cr_expect_eq(async_executor_error(ex, msg, 0), 0);
    cr_expect_eq(msg[0], 'x', "cap 0 writes nothing");
    async_executor_free(ex);
    async_executor_free(NULL);
}

ON_BOTH(shared_memory_with_bad_arguments)
{
    async_executor_t *ex = pool(backend, 1);
    void *p = (void *)0x1;
    cr_expect_eq(async_executor_shm_alloc(NULL, ex, 64), ASYNC_EINVAL);
    cr_expect_eq(async_executor_shm_alloc(&p, ex, SIZE_MAX), ASYNC_ENOMEM);
    cr_expect_eq(p, (void *)0x1, "*out untouched on error");
    cr_assert_eq(async_executor_shm_alloc(&p, ex, 0), 0, "a zero-size block");
    async_executor_shm_free(ex, p);
    async_executor_shm_free(ex, NULL);
    async_executor_shm_free(NULL, NULL);
    if (backend == ASYNC_BACKEND_PROCESSES) {
        int local = 0; /* not the pool's: ignored, not an abort */
        async_executor_shm_free(ex, &local);
    }
    still_serves(ex);
    async_executor_free(ex);
}

/* A job's and a map's time limit counts from the submit: a limit of 30 s
 * (as an absolute time, 30 s after boot: long past) leaves the job time to
 * run, and 0 means no limit. */
ON_BOTH(time_limit_is_relative_to_the_submit)
{
    async_executor_t *ex = pool(backend, 1);
    unsigned char in[2] = {1, 2}, out[8] = {0};
    async_future_t *f = NULL;
    cr_assert_eq(async_executor_submit(&f, ex,
                                       &(async_job_t){.fn = fill, .in = in, .in_size = 2, .out_size = 1,
                                                          .timeout_ns = ASYNC_SEC(30)}),
                 0);
    cr_expect_eq(async_future_wait_dl(f, async_now() + ASYNC_SEC(20)), 0, "%s", async_future_message(f));
    async_future_unref(f);
    async_map_error_t e;
    cr_expect_eq(async_executor_map(ex, &(async_map_t){.fn = fill, .in = out, .in_size = 1, .out = out,
                                                       .out_size = 1, .n = 8, .timeout_ns = ASYNC_SEC(30)},
                                    &e),
                 0, "%s", e.message);
    async_executor_free(ex);
}

/* A job whose time limit is negative has expired: it fails with
 * ASYNC_ETIMEDOUT without running. */
ON_BOTH(negative_job_deadline_has_passed)
{
    async_executor_t *ex = pool(backend, 1);
    async_future_t *f = NULL;
    cr_assert_eq(async_executor_submit(&f, ex, &(async_job_t){.fn = sleepy, .timeout_ns = -5}), 0);
    int64_t t0 = async_now();
    cr_expect_eq(async_future_wait_dl(f, async_now() + ASYNC_SEC(20)), ASYNC_ETIMEDOUT);
    cr_expect(async_future_done(f), "final, not the wait's own timeout");
    cr_expect_eq(async_future_error(f), ASYNC_ETIMEDOUT, "got %s", async_strerror(async_future_error(f)));
    cr_expect_lt(async_now() - t0, ASYNC_MSEC(250), "it did not run (the job sleeps 300 ms)");
    async_future_unref(f);
    still_serves(ex);
    async_executor_free(ex);
}

/* Option structs carry their size: 0 (a designated initialiser) and
 * sizeof (the _init functions) work, a size below the struct's is refused
 * with ASYNC_EINVAL and nothing happens. */
ON_BOTH(option_struct_sizes)
{
    async_executor_t *ex = NULL;
    async_executor_opts_t o;
    async_executor_opts_init(&o);
    cr_expect_eq(o.size, sizeof o);
    o.backend = backend;
    o.workers = 1;
    cr_assert_eq(async_executor_new(&ex, &o), 0);
    async_executor_t *bad = NULL;
    o.size = 1;
    cr_expect_eq(async_executor_new(&bad, &o), ASYNC_EINVAL);
    cr_expect_null(bad);

    unsigned char in[4] = {1, 2, 3, 4}, out[4] = {0};
    async_future_t *f = NULL;
    async_job_t j;
    async_job_init(&j);
    j.fn = fill, j.in = in, j.in_size = 4, j.out_size = 1;
    cr_expect_eq(async_executor_run(ex, &j, out, NULL, NULL, 0), 0);
    cr_expect_eq(out[0], 10);
    j.size = 0;
    cr_expect_eq(async_executor_run(ex, &j, out, NULL, NULL, 0), 0);
    j.size = 1;
    cr_expect_eq(async_executor_submit(&f, ex, &j), ASYNC_EINVAL);
    cr_expect_eq(async_executor_run(ex, &j, out, NULL, NULL, 0), ASYNC_EINVAL);
    cr_expect_null(f);

    async_map_t m;
    async_map_init(&m);
    m.fn = fill, m.in = in, m.in_size = 1, m.out = out, m.out_size = 1, m.n = 4;
    cr_expect_eq(async_executor_map(ex, &m, NULL), 0);
    cr_expect_eq(out[3], 4);
    m.size = 1;
    cr_expect_eq(async_executor_map(ex, &m, NULL), ASYNC_EINVAL);
    cr_expect_eq(async_executor_map_async(&f, ex, &m, NULL, NULL, NULL), ASYNC_EINVAL);
    cr_expect_null(f);

    async_imap_t im;
    async_imap_init(&im);
    im.fn = fill, im.in = in, im.in_size = 1, im.out_size = 1, im.n = 4;
    async_imap_iter_t *it = NULL;
    cr_assert_eq(async_executor_imap(&it, ex, &im), 0);
    size_t idx;
    for (int i = 0; i < 4; i++) cr_expect_eq(async_imap_next(it, out, &idx), 0);
    cr_expect_eq(async_imap_next(it, out, &idx), ASYNC_EEOF);
    async_imap_free(it);
    it = NULL;
    im.size = 1;
    cr_expect_eq(async_executor_imap(&it, ex, &im), ASYNC_EINVAL);
    cr_expect_null(it);
    still_serves(ex);
    async_executor_free(ex);
}
