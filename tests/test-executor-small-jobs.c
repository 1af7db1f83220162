/* The executor's small-submit path (executor.c's submit_small), the last
 * unref that frees without its read-modify-write (future.c), and the inlined
 * wake-ups (executor_internal.h, job_queue.c), as a hostile user would make
 * it: truncated jobs, every size at the edges of the job's 32-byte inline
 * area, copied and borrowed inputs, jobs that must not take the straight
 * path (a priority, a time limit, a bounded pool), submits racing a
 * shutdown, unrefs racing the worker's drop, and a thread's magazine across
 * two pools and across a free on another thread.  Then the 192-byte submit
 * block with its qnext-only queue: small priority-0 submits packed next to
 * each other in the future pool, mixed with prioritised jobs and batches,
 * cancelled and shut down while queued; a write into a small job's missing
 * `next` or `bucket` would land in the neighbouring block and corrupt its
 * future.
 *
 * Each test says in its comment what broken code it catches; each was seen
 * to fail with that breakage put in by hand.  Under ASan every future is its
 * own allocation (future.c: FUTURE_SLABS), so the straight path never runs
 * there: the plain, TSan and ucontext builds are the ones that exercise it,
 * and the first test checks that they do. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <async.h>
#include <async/executor.h>
#include <async/future.h>
#include "support/alloc.h"
#include "support/gate.h"
#include "support/jitter.h"
#include "support/pool.h"
#include "support/teardown.h"

static void setup(void) { test_alloc_install(); }
static void teardown(void)
{
    TEARDOWN_CHECK_NO_LEAK();
    test_alloc_uninstall();
}
TestSuite(executor_small_jobs, .init = setup, .fini = teardown);

/* The leak check inside a test's body: a failed expectation in .fini is
 * printed but does not fail the test. */
static void expect_nothing_left(void)
{
    cr_expect_eq(test_alloc_live(), 0, "%ld allocations left", test_alloc_live());
}

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#else
#define SANITIZED 0
#endif
#if defined(__SANITIZE_ADDRESS__)
#define ASAN 1
#else
#define ASAN 0
#endif

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int nothing(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in, (void)in_size, (void)out, (void)out_size, (void)ctx;
    return 0;
}

/* --- the straight path runs on this build ------------------------------- */

/* A stream of submit, wait, unref takes its futures off this thread's
 * magazine, which is where the straight path takes its block: on the plain,
 * TSan and ucontext builds 400 serial submits allocate one slab or two, not
 * a future each.  Catches a build that never runs the straight path (the
 * slabs turned off outside ASan: FUTURE_SLABS 0), which would leave every
 * test below testing only the general path there. */
Test(executor_small_jobs, the_magazine_serves_a_stream_of_submits_on_this_build, .timeout = 30)
{
    if (ASAN) cr_skip_test("ASan: every future is its own allocation (future.c)");
    async_executor_t *ex = test_thread_pool(1, 0);
    enum { N = 400 };
    long before = test_alloc_total();
    for (int i = 0; i < N; i++) {
        async_job_t j = {.fn = nothing, .out_size = 8};
        async_future_t *f;
        cr_assert_eq(async_executor_submit(&f, ex, &j), 0);
        cr_assert_eq(async_future_wait(f), 0);
        async_future_unref(f);
    }
    long made = test_alloc_total() - before;
    cr_expect_leq(made, 8, "%ld allocations for %d serial submits: no magazine", made, N);
    async_executor_free(ex);
    expect_nothing_left();
}

/* --- a truncated job ------------------------------------------------------ */

/* A job whose size says it is shorter than async_job_t is refused with
 * ASYNC_EINVAL (executor.h, common.h), and the fields past its size are
 * not there to read: the struct here ends at a page whose neighbour is
 * unmapped.  Catches a submit that reads timeout_ns or priority before it
 * checks the size (submit_small did: a segfault here, on every build). */
Test(executor_small_jobs, a_truncated_job_is_refused_before_its_missing_fields_are_read, .timeout = 30)
{
    long page = sysconf(_SC_PAGESIZE);
    char *m = mmap(NULL, 2 * (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(m, MAP_FAILED);
    cr_assert_eq(mprotect(m + page, (size_t)page, PROT_NONE), 0);
    async_executor_t *ex = test_thread_pool(1, 0);
    /* Warm the magazine, so that a submit that got past the checks would
     * find its block. */
    async_future_t *w;
    async_job_t warm = {.fn = nothing};
    cr_assert_eq(async_executor_submit(&w, ex, &warm), 0);
    cr_assert_eq(async_future_wait(w), 0);
    async_future_unref(w);
    static const size_t sizes[] = {offsetof(async_job_t, fn) + sizeof(void *),
                                   offsetof(async_job_t, ctx) + sizeof(void *),
                                   offsetof(async_job_t, priority) + sizeof(int),
                                   offsetof(async_job_t, timeout_ns) + sizeof(int64_t)};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t sz = sizes[i];
        async_job_t full = {.size = sz, .fn = nothing, .out_size = 8};
        /* Aligned as a job must be: the page ends at most 4 bytes after
         * the size, and before the next field. */
        async_job_t *j = (async_job_t *)(m + page - ((sz + 7) & ~(size_t)7));
        memcpy(j, &full, sz);
        async_future_t *f = (async_future_t *)&full; /* must stay untouched */
        cr_expect_eq(async_executor_submit(&f, ex, j), ASYNC_EINVAL, "size %zu", sz);
        cr_expect_eq(async_executor_trysubmit(&f, ex, j), ASYNC_EINVAL, "size %zu", sz);
        cr_expect_eq(async_executor_submit_dl(&f, ex, j, ASYNC_FOREVER), ASYNC_EINVAL, "size %zu", sz);
        cr_expect_eq(f, (async_future_t *)&full, "size %zu: *out written", sz);
        char out[8];
        cr_expect_eq(async_executor_run(ex, j, out, NULL, NULL, 0), ASYNC_EINVAL, "size %zu", sz);
    }
    async_executor_free(ex);
    munmap(m, 2 * (size_t)page);
    expect_nothing_left();
}

/* --- jobs that must not take the straight path ------------------------------ */

/* Small jobs queued behind a held worker: a priority-7 one submitted last
 * runs first, a priority -3 one last.  Catches a straight path that takes a
 * job with a priority (it writes priority 0 and never counts prio_jobs: the
 * job runs in submit order). */
Test(executor_small_jobs, a_small_job_with_a_priority_runs_in_priority_order, .timeout = 30)
{
    async_executor_t *ex = test_thread_pool(1, 0);
    gate_t g;
    async_future_t *b = block_worker(ex, &g);
    atomic_store(&order_next, 0);
    int prios[] = {0, -3, 0, 0, 7, 0};
    enum { N = sizeof prios / sizeof prios[0] };
    async_future_t *fs[N];
    for (int i = 0; i < N; i++) {
        async_job_t j = {.fn = record_order, .in = &i, .in_size = sizeof i, .out_size = sizeof(int),
                         .priority = prios[i]};
        cr_assert_eq(async_executor_submit(&fs[i], ex, &j), 0);
    }
    open_gate(&g, b);
    int at[N];
    for (int i = 0; i < N; i++) at[i] = order_of(fs[i]);
    cr_expect_eq(at[4], 0, "the priority-7 job ran %d-th", at[4]);
    cr_expect_eq(at[1], N - 1, "the priority -3 job ran %d-th", at[1]);
    cr_expect(at[0] < at[2] && at[2] < at[3] && at[3] < at[5], "priority 0 out of order");
    for (int i = 0; i < N; i++) async_future_unref(fs[i]);
    async_executor_free(ex);
    expect_nothing_left();
}

static atomic_int runs_of_timed;

/* Copies its input to its output, and counts its runs. */
static int echo_counted(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&runs_of_timed, 1);
    memcpy(out, in, in_size < out_size ? in_size : out_size);
    return 0;
}

/* Small jobs with a time limit: one whose limit passes while it is queued
 * fails ASYNC_ETIMEDOUT without running; one with a negative limit fails at
 * once, without running; one with a long limit and borrow_input runs on a
 * copy of its input (executor.h: a job with a time limit is always copied).
 * Catches a straight path that takes a timed job (it writes the deadline
 * ASYNC_FOREVER: all three run, and the third sees the changed input). */
Test(executor_small_jobs, a_small_job_with_a_time_limit_keeps_its_deadline_and_its_copy, .timeout = 30)
{
    async_executor_t *ex = test_thread_pool(1, 0);
    gate_t g;
    async_future_t *b = block_worker(ex, &g);
    atomic_store(&runs_of_timed, 0);
    char buf[8] = "abcdefg";
    async_job_t j = {.fn = echo_counted, .in = buf, .in_size = 8, .out_size = 8,
                     .timeout_ns = ASYNC_MSEC(1), .borrow_input = true};
    async_future_t *expiring, *expired, *copied;
    cr_assert_eq(async_executor_submit(&expiring, ex, &j), 0);
    j.timeout_ns = -1;
    cr_assert_eq(async_executor_submit(&expired, ex, &j), 0);
    j.timeout_ns = ASYNC_SEC(60);
    cr_assert_eq(async_executor_submit(&copied, ex, &j), 0);
    memcpy(buf, "XXXXXXX", 8);
    sleep_ms(20);
    open_gate(&g, b);
    cr_expect_eq(async_future_wait(expiring), ASYNC_ETIMEDOUT);
    cr_expect_eq(async_future_wait(expired), ASYNC_ETIMEDOUT);
    cr_assert_eq(async_future_wait(copied), 0);
    const void *d;
    size_t n;
    cr_assert_eq(async_future_result(copied, &d, &n), 0);
    cr_expect_eq(n, 8);
    cr_expect_str_eq((const char *)d, "abcdefg", "a timed job ran on the borrowed input");
    cr_expect_eq(atomic_load(&runs_of_timed), 1, "%d runs: an expired job ran", atomic_load(&runs_of_timed));
    async_future_unref(expiring);
    async_future_unref(expired);
    async_future_unref(copied);
    async_executor_free(ex);
    expect_nothing_left();
}

/* Opens the gate of the held worker (b), waits for each of fs[0..n) to
 * succeed and lets it go, then checks that nothing is queued, that a
 * shutdown with wait returns, and that nothing is left once ex is freed. */
static void release_and_drain(async_executor_t *ex, gate_t *g, async_future_t *b,
                              async_future_t **fs, int n)
{
    open_gate(g, b);
    for (int i = 0; i < n; i++) {
        cr_expect_eq(async_future_wait(fs[i]), 0);
        async_future_unref(fs[i]);
    }
    cr_expect_eq(async_executor_queued(ex), 0);
    cr_expect_eq(async_executor_shutdown(ex, true, false), 0);
    async_executor_free(ex);
    expect_nothing_left();
}

/* A bounded pool (max_queued 2) whose worker is held: two small submits
 * fill it, a third trysubmit gets ASYNC_EAGAIN, a submit_dl times out, and
 * queued says 2 throughout; once the worker runs them all, queued is 0 and
 * the pool shuts down.  Catches a straight path that takes a bounded pool's
 * job (nothing counts it against the bound: the third submit is accepted). */
Test(executor_small_jobs, a_bounded_pool_keeps_its_bound_for_small_jobs, .timeout = 30)
{
    async_executor_t *ex = test_thread_pool(1, 2);
    gate_t g;
    async_future_t *b = block_worker(ex, &g);
    async_future_t *fs[2], *extra = NULL;
    async_job_t j = {.fn = nothing, .out_size = 4};
    for (int i = 0; i < 2; i++) cr_assert_eq(async_executor_submit(&fs[i], ex, &j), 0);
    cr_expect_eq(async_executor_queued(ex), 2);
    cr_expect_eq(async_executor_trysubmit(&extra, ex, &j), ASYNC_EAGAIN);
    cr_expect_eq(async_executor_submit_dl(&extra, ex, &j, async_deadline_after(ASYNC_MSEC(10))),
                 ASYNC_ETIMEDOUT);
    cr_expect_null(extra);
    cr_expect_eq(async_executor_queued(ex), 2);
    release_and_drain(ex, &g, b, fs, 2);
}

/* Lone small submits to an unbounded pool are counted by queued while they
 * wait and not after they ran, and a shutdown with wait then returns.
 * Catches a straight path that leaves JOB_LONE off its job: the worker
 * counts it in `taken` though nobody counted it in `submitted`, so queued
 * wraps to a huge number and a stop waits for jobs that never come. */
Test(executor_small_jobs, lone_small_submits_are_queued_then_gone, .timeout = 30)
{
    async_executor_t *ex = test_thread_pool(1, 0);
    gate_t g;
    async_future_t *b = block_worker(ex, &g);
    enum { N = 5 };
    async_future_t *fs[N];
    async_job_t j = {.fn = nothing, .out_size = 8};
    for (int i = 0; i < N; i++) cr_assert_eq(async_executor_submit(&fs[i], ex, &j), 0);
    cr_expect_eq(async_executor_queued(ex), N);
    release_and_drain(ex, &g, b, fs, N);
}

/* --- the edges of the inline area ---------------------------------------- */

#define MAXSZ 64

static unsigned char in_byte(size_t in_size, size_t out_size, size_t k, int borrowed)
{
    return (unsigned char)(k * 7 + in_size * 3 + out_size + (size_t)borrowed * 101 + 1);
}

static unsigned char out_byte(size_t in_size, size_t out_size, size_t k)
{
    return (unsigned char)(k * 13 + in_size + out_size * 5 + 2);
}

/* Writes its whole output first, then checks its input byte by byte (ctx
 * says whether the input was borrowed, and so changed after the submit),
 * and fails with ASYNC_EWORK at the first wrong byte: an output that
 * overlaps the input's copy, or a copy cut short, shows here. */
static int write_then_check(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    int borrowed = ctx != NULL;
    if (!out_size != !out) return -2;
    if (!in_size && in) return -3;
    for (size_t k = 0; k < out_size; k++) ((unsigned char *)out)[k] = out_byte(in_size, out_size, k);
    for (size_t k = 0; k < in_size; k++) {
        unsigned char want = in_byte(in_size, out_size, k, borrowed);
        if (borrowed && k == 0) want ^= 0x5a;
        if (((const unsigned char *)in)[k] != want) return -4;
    }
    return 0;
}

/* Every input size 0..64 (copied and borrowed) with every output size
 * 0..64, all queued at once behind a held worker, so that neighbouring
 * blocks of the slabs are all live: after the submits the copied inputs are
 * overwritten and each borrowed one changed in its first byte.  Every job
 * must see its input (copied: as it was; borrowed: as changed), and every
 * result must be exactly its out_size bytes as written.  Also: in NULL with
 * in_size 0 and an output only, in NULL with in_size > 0 refused, *out
 * untouched.  Catches an output placed over the input's copy (at in, not
 * in + in_room), a straight path that takes a
 * job too big for the area (it writes past the job into the next block: a
 * neighbour's result or input changes), a copy of the wrong length, and a
 * borrowed input copied or a copied one borrowed. */
Test(executor_small_jobs, every_size_to_64_in_and_out_copied_and_borrowed, .timeout = 60)
{
    async_executor_t *ex = test_thread_pool(1, 0);
    gate_t g;
    async_future_t *b = block_worker(ex, &g);
    static unsigned char bufs[2][MAXSZ + 1][MAXSZ + 1][MAXSZ];
    static async_future_t *fs[2][MAXSZ + 1][MAXSZ + 1];
    for (int bo = 0; bo < 2; bo++)
        for (size_t i = 0; i <= MAXSZ; i++)
            for (size_t o = 0; o <= MAXSZ; o++) {
                unsigned char *buf = bufs[bo][i][o];
                for (size_t k = 0; k < i; k++) buf[k] = in_byte(i, o, k, bo);
                async_job_t j = {.fn = write_then_check, .in = i ? buf : NULL, .in_size = i,
                                 .out_size = o, .ctx = bo ? (void *)1 : NULL, .borrow_input = bo};
                int r = async_executor_submit(&fs[bo][i][o], ex, &j);
                cr_assert_eq(r, 0, "in %zu out %zu: %s", i, o, async_strerror(r));
            }
    for (size_t i = 0; i <= MAXSZ; i++)
        for (size_t o = 0; o <= MAXSZ; o++) {
            memset(bufs[0][i][o], 0xee, MAXSZ);
            bufs[1][i][o][0] ^= 0x5a;
        }
    async_future_t *untouched = (async_future_t *)bufs, *f = untouched;
    async_job_t bad = {.fn = nothing, .in = NULL, .in_size = 1, .out_size = 4};
    cr_expect_eq(async_executor_submit(&f, ex, &bad), ASYNC_EINVAL);
    cr_expect_eq(f, untouched);
    async_job_t only_out = {.fn = write_then_check, .out_size = 32};
    async_future_t *fo;
    cr_assert_eq(async_executor_submit(&fo, ex, &only_out), 0);
    open_gate(&g, b);
    for (int bo = 0; bo < 2; bo++)
        for (size_t i = 0; i <= MAXSZ; i++)
            for (size_t o = 0; o <= MAXSZ; o++) {
                async_future_t *fut = fs[bo][i][o];
                int r = async_future_wait(fut);
                cr_expect_eq(r, 0, "%s in %zu out %zu: %s (%s)", bo ? "borrowed" : "copied", i, o,
                             async_strerror(r), async_future_message(fut));
                const void *d;
                size_t n;
                if (!r && async_future_result(fut, &d, &n) == 0) {
                    cr_expect_eq(n, o, "in %zu out %zu: %zu bytes", i, o, n);
                    size_t bad_at = SIZE_MAX;
                    for (size_t k = 0; k < n && bad_at == SIZE_MAX; k++)
                        if (((const unsigned char *)d)[k] != out_byte(i, o, k)) bad_at = k;
                    cr_expect_eq(bad_at, SIZE_MAX, "%s in %zu out %zu: result byte %zu",
                                 bo ? "borrowed" : "copied", i, o, bad_at);
                }
                async_future_unref(fut);
            }
    cr_expect_eq(async_future_wait(fo), 0);
    const void *d;
    size_t n;
    cr_assert_eq(async_future_result(fo, &d, &n), 0);
    cr_expect_eq(n, 32);
    for (size_t k = 0; k < n; k++) cr_expect_eq(((const unsigned char *)d)[k], out_byte(0, 32, k));
    async_future_unref(fo);
    async_executor_free(ex);
    expect_nothing_left();
}

static int failing_init(void *ctx)
{
    (void)ctx;
    return ASYNC_EINVAL;
}

static void expect_refused(async_executor_t *ex, int code)
{
    /* Warm this thread's magazine for ex first: the straight path then
     * takes a block before it looks at the pool's state. */
    async_job_t j = {.fn = nothing, .in = "abc", .in_size = 4, .out_size = 8};
    for (int i = 0; i < 3; i++) {
        async_future_t *f = (async_future_t *)&j, *g = f, *h = f;
        cr_expect_eq(async_executor_submit(&f, ex, &j), code);
        cr_expect_eq(async_executor_trysubmit(&g, ex, &j), code);
        cr_expect_eq(async_executor_submit_dl(&h, ex, &j, async_deadline_after(ASYNC_MSEC(5))), code);
        cr_expect(f == (async_future_t *)&j && g == f && h == f, "a refused submit wrote *out");
    }
    cr_expect_eq(async_executor_queued(ex), 0);
}

/* Small submits to a pool that was shut down get ASYNC_ECLOSED, and to a
 * pool broken by its initializer ASYNC_EINIT, with *out untouched, nothing
 * queued, and the block they took off the magazine given back (the leak
 * check: a block kept would keep its slab and the pool).  Catches a
 * straight path whose refusal before the push keeps the block
 * (submit_failed skipping its unmake for a job never queued: 5 allocations
 * left), and one without
 * its look at the pool's state before the push (the job is queued and
 * cancelled there, and queued counts it). */
Test(executor_small_jobs, a_stopped_or_broken_pool_refuses_small_submits_and_keeps_nothing, .timeout = 30)
{
    async_executor_t *ex = test_thread_pool(1, 0);
    async_future_t *w;
    async_job_t warm = {.fn = nothing, .out_size = 8};
    cr_assert_eq(async_executor_submit(&w, ex, &warm), 0);
    cr_assert_eq(async_future_wait(w), 0);
    async_future_unref(w);
    cr_assert_eq(async_executor_shutdown(ex, true, false), 0);
    expect_refused(ex, ASYNC_ECLOSED);
    async_executor_free(ex);

    async_executor_opts_t o = {.backend = ASYNC_BACKEND_THREADS, .workers = 1,
                               .initializer = failing_init};
    cr_assert_eq(async_executor_new(&ex, &o), 0);
    /* The first submit may come before the initializer failed (its
     * future fails then with the pool) or after. */
    int r = async_executor_submit(&w, ex, &warm);
    if (r == 0) {
        cr_expect_eq(async_future_wait(w), ASYNC_EINIT);
        async_future_unref(w);
    } else {
        cr_expect_eq(r, ASYNC_EINIT, "%s", async_strerror(r));
    }
    for (int i = 0; i < 2000 && !async_executor_error(ex, NULL, 0); i++) usleep(1000);
    cr_assert_eq(async_executor_error(ex, NULL, 0), ASYNC_EINIT);
    expect_refused(ex, ASYNC_EINIT);
    async_executor_free(ex);
    expect_nothing_left();
}

/* --- submits racing a shutdown ------------------------------------------- */

enum { RACE_JOBS = 2000, NOT_TRIED = 1 };

typedef struct {
    async_executor_t *ex;
    atomic_int *runs; /* RACE_JOBS of them, one a job */
    atomic_int started;
    async_future_t *fs[RACE_JOBS];
    int code[RACE_JOBS];
} racer_t;

static int count_run(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out_size;
    int id;
    memcpy(&id, in, sizeof id);
    atomic_fetch_add(&((atomic_int *)ctx)[id], 1);
    memcpy(out, &id, sizeof id);
    return 0;
}

/* Submits until a few submits after the first refused one (the rest are
 * NOT_TRIED), so that the stop lands inside a stream of submits. */
static void *race_submits(void *arg)
{
    racer_t *rc = arg;
    int after = -1;
    for (int i = 0; i < RACE_JOBS; i++) {
        rc->fs[i] = NULL;
        rc->code[i] = NOT_TRIED;
    }
    for (int i = 0; i < RACE_JOBS && after < 4; i++) {
        async_job_t j = {.fn = count_run, .in = &i, .in_size = sizeof i, .out_size = sizeof i,
                         .ctx = rc->runs};
        rc->code[i] = async_executor_submit(&rc->fs[i], rc->ex, &j);
        if (i == 0) atomic_store(&rc->started, 1);
        if (after >= 0 || rc->code[i]) after++;
    }
    return NULL;
}

/* Two threads submit small jobs while the main thread shuts the pool down
 * (with wait; half the rounds cancelling what is queued), at a random point
 * once both streams run.  Afterwards, with the pool freed: a submit that
 * returned ASYNC_ECLOSED left *out untouched and its job never ran; one
 * that returned 0 has a final future, DONE with its own id after exactly
 * one run, or (only when the shutdown cancels) CANCELLED without a run.
 * Catches a job run twice, a job lost (pending for ever; or accepted by a
 * shutdown that does not cancel, yet never run: pushed after the workers
 * left, the straight path without its second look at the pool's state),
 * and a refused submit whose job still runs (the second look without its
 * cancel). */
Test(executor_small_jobs, submits_racing_a_shutdown_run_once_or_never, .timeout = 120)
{
    int rounds = SANITIZED ? 150 : 1000;
    long closed = 0, cancelled = 0, done = 0;
    for (int r = 0; r < rounds; r++) {
        async_executor_t *ex = test_thread_pool(1 + (unsigned)(r & 1), 0);
        bool cancel = (r & 2) != 0;
        static atomic_int runs[2][RACE_JOBS];
        static racer_t rc[2];
        pthread_t th[2];
        for (int t = 0; t < 2; t++) {
            for (int i = 0; i < RACE_JOBS; i++) atomic_store(&runs[t][i], 0);
            rc[t].ex = ex;
            rc[t].runs = runs[t];
            atomic_store(&rc[t].started, 0);
            cr_assert_eq(pthread_create(&th[t], NULL, race_submits, &rc[t]), 0);
        }
        while (!atomic_load(&rc[0].started) || !atomic_load(&rc[1].started)) sched_yield();
        for (volatile unsigned i = 0, n = (unsigned)((r * 7919u) % 20000u); i < n; i++) {
        }
        cr_assert_eq(async_executor_shutdown(ex, true, cancel), 0);
        for (int t = 0; t < 2; t++) pthread_join(th[t], NULL);
        async_executor_free(ex);
        for (int t = 0; t < 2; t++)
            for (int i = 0; i < RACE_JOBS; i++) {
                int n = atomic_load(&runs[t][i]);
                async_future_t *f = rc[t].fs[i];
                if (rc[t].code[i] == NOT_TRIED) {
                    cr_assert_eq(n, 0);
                    continue;
                }
                if (rc[t].code[i] == ASYNC_ECLOSED) {
                    closed++;
                    cr_assert_null(f, "round %d: a closed submit wrote *out", r);
                    cr_assert_eq(n, 0, "round %d: a closed submit's job ran %d times", r, n);
                    continue;
                }
                cr_assert_eq(rc[t].code[i], 0, "round %d: %s", r, async_strerror(rc[t].code[i]));
                cr_assert(async_future_done(f), "round %d: an accepted job is still pending", r);
                int w = async_future_error(f);
                if (w == ASYNC_ECANCELED) {
                    cr_assert(cancel, "round %d: a shutdown that does not cancel cancelled job %d", r, i);
                    cr_assert_eq(n, 0, "round %d: a cancelled job ran %d times", r, n);
                    cancelled++;
                } else {
                    cr_assert_eq(w, 0, "round %d: %s", r, async_strerror(w));
                    cr_assert_eq(n, 1, "round %d: a done job ran %d times", r, n);
                    int id;
                    const void *d;
                    cr_assert_eq(async_future_result(f, &d, NULL), 0);
                    memcpy(&id, d, sizeof id);
                    cr_assert_eq(id, i, "round %d: job %d has job %d's result", r, i, id);
                    done++;
                }
                async_future_unref(f);
            }
        cr_assert_eq(test_alloc_live(), 0, "round %d: %ld allocations left", r, test_alloc_live());
    }
    cr_log_info("%d rounds: %ld closed, %ld cancelled, %ld done", rounds, closed, cancelled, done);
}

/* --- unrefs racing the worker's drop -------------------------------------- */

/* A random delay of 0 to about a microsecond (sometimes a yield): enough to
 * land on either side of a worker's few-instruction finish and drop. */
static void jitter(void) { test_jitter(16, 300); }

static inline void relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static int echo_jittered(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)ctx;
    jitter();
    memcpy(out, in, in_size < out_size ? in_size : out_size);
    return 0;
}

static void unref_in_cb(async_future_t *f, void *arg)
{
    (void)arg;
    async_future_unref(f);
}

#define UNREF_ROUNDS (SANITIZED ? 4000 : 40000)

typedef struct {
    async_future_t *f;
    _Atomic int ready;
} handoff_t;

static void *wait_and_drop(void *arg)
{
    handoff_t *h = arg;
    for (int i = 0; i < UNREF_ROUNDS / 4; i++) {
        while (!atomic_load_explicit(&h[i].ready, memory_order_acquire)) sched_yield();
        async_future_wait(h[i].f);
        async_future_unref(h[i].f);
    }
    return NULL;
}

/* Small submits whose caller's reference goes every way while the worker
 * drops the executor's: at once (before, during or after the run), from a
 * callback on the worker (async_future_on_done, unref of the reference the
 * callback was given), after a wait on another thread (a reference taken
 * with async_future_ref and handed over), the moment a poll sees it done
 * (the worker's drop is a few instructions behind its finish), and after
 * the caller's own wait.
 * The blocks recycle through the magazines into later submits.  The
 * counting allocator then finds nothing left.  Catches a last unref that
 * drops a reference by a plain store (a lost decrement: a future never
 * freed), one that frees while the other side still holds a reference (ASan:
 * use after free; here: a block reused under a running job, whose result
 * then is wrong), and, under TSan, a last unref whose load is not an
 * acquire (the worker's writes race the next submit's into the block). */
Test(executor_small_jobs, unrefs_racing_the_workers_drop_free_each_future_once, .timeout = 120)
{
    async_executor_t *ex = test_thread_pool(2, 0);
    static handoff_t hand[UNREF_ROUNDS / 4];
    for (int i = 0; i < UNREF_ROUNDS / 4; i++) atomic_store(&hand[i].ready, 0);
    pthread_t waiter;
    cr_assert_eq(pthread_create(&waiter, NULL, wait_and_drop, hand), 0);
    int handed = 0;
    for (int i = 0; i < UNREF_ROUNDS; i++) {
        int64_t v = i;
        /* Every 8th round a job without a delay, dropped after a sleep: the
         * worker has dropped its reference first, and nothing but the
         * unref's load orders its finish before the block's next use. */
        bool quick = (i & 7) == 4;
        async_job_t j = {.fn = quick ? echo_counted : echo_jittered, .in = &v, .in_size = sizeof v,
                         .out_size = sizeof v};
        async_future_t *f;
        cr_assert_eq(async_executor_submit(&f, ex, &j), 0);
        switch (i & 3) {
        case 0: /* at once, or the moment it is done: beside the worker's drop */
            if (quick) {
                usleep(20); /* no synchronisation: the worker is done by now */
            } else if (i & 4) {
                while (!async_future_done(f)) relax();
            } else {
                jitter();
            }
            async_future_unref(f);
            break;
        case 1:
            cr_assert_eq(async_future_on_done(f, unref_in_cb, NULL), 0);
            break;
        case 2:
            async_future_ref(f);
            hand[handed].f = f;
            atomic_store_explicit(&hand[handed++].ready, 1, memory_order_release);
            async_future_unref(f);
            break;
        default: {
            cr_assert_eq(async_future_wait(f), 0);
            const void *d;
            size_t n;
            cr_assert_eq(async_future_result(f, &d, &n), 0);
            int64_t got;
            memcpy(&got, d, sizeof got);
            cr_assert_eq(got, v, "submit %d: the result of another job (%lld)", i, (long long)got);
            async_future_unref(f);
        }
        }
    }
    cr_assert_eq(handed, UNREF_ROUNDS / 4);
    pthread_join(waiter, NULL);
    async_executor_free(ex);
    cr_expect_eq(test_alloc_live(), 0, "%ld allocations left: a reference never dropped",
                 test_alloc_live());
}

/* --- the magazine across pools and threads -------------------------------- */

static int64_t run_small(async_executor_t *ex, int64_t v, async_future_t **keep)
{
    async_job_t j = {.fn = echo_counted, .in = &v, .in_size = sizeof v, .out_size = sizeof v};
    async_future_t *f;
    cr_assert_eq(async_executor_submit(&f, ex, &j), 0);
    if (keep) {
        *keep = f;
        return 0;
    }
    cr_assert_eq(async_future_wait(f), 0);
    const void *d;
    cr_assert_eq(async_future_result(f, &d, NULL), 0);
    int64_t got;
    memcpy(&got, d, sizeof got);
    async_future_unref(f);
    return got;
}

/* One thread submits to two pools in turn, keeping some futures of each and
 * dropping others, so that its magazine switches pools on every submit and
 * blocks of one pool are freed while the magazine holds the other's; both
 * pools are freed while futures of each are still held, one of them on
 * another thread.  Every result is its own; at the end nothing is left.
 * Catches a magazine switch that does not give the old pool's blocks back
 * (the pool and its slabs leak), a block given to the wrong pool, and a
 * straight path that serves one pool's submit from a magazine it did not
 * check. */
static void *free_on_thread(void *arg)
{
    async_executor_free(arg);
    return NULL;
}

Test(executor_small_jobs, a_thread_alternating_two_pools_frees_both, .timeout = 60)
{
    enum { N = 600 };
    async_executor_t *ex[2] = {test_thread_pool(1, 0), test_thread_pool(2, 0)};
    static async_future_t *kept[N];
    for (int i = 0; i < N; i++) {
        int64_t v = 1000 + i;
        if (i % 3 == 0) {
            run_small(ex[i & 1], v, &kept[i]);
        } else {
            kept[i] = NULL;
            cr_assert_eq(run_small(ex[i & 1], v, NULL), v, "submit %d", i);
        }
    }
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, free_on_thread, ex[1]), 0);
    pthread_join(th, NULL);
    /* ex[0] still serves while ex[1]'s futures are dropped here. */
    for (int i = 0; i < N; i += 3) {
        if (!(i & 1)) continue;
        cr_assert_eq(async_future_wait(kept[i]), 0);
        async_future_unref(kept[i]);
        cr_assert_eq(run_small(ex[0], i, NULL), i);
    }
    async_executor_free(ex[0]);
    for (int i = 0; i < N; i += 3) {
        if (i & 1) continue;
        cr_assert_eq(async_future_wait(kept[i]), 0);
        const void *d;
        cr_assert_eq(async_future_result(kept[i], &d, NULL), 0);
        int64_t got;
        memcpy(&got, d, sizeof got);
        cr_expect_eq(got, 1000 + i);
        async_future_unref(kept[i]);
    }
    cr_expect_eq(test_alloc_live(), 0, "%ld allocations left", test_alloc_live());
}

/* The main thread fills its magazine from a pool, then another thread frees
 * the pool's executor while the main thread still holds futures; dropping
 * them here must give every block back at once, so that the pool and its
 * slabs go now, not when this thread exits (for the main thread: never).
 * Catches a free into a magazine whose pool was closed on another thread
 * (future.c's release_memory without its look at `closed`). */
Test(executor_small_jobs, a_pool_freed_on_another_thread_leaves_nothing_in_this_magazine, .timeout = 30)
{
    enum { N = 100 };
    async_executor_t *ex = test_thread_pool(2, 0);
    async_future_t *fs[N];
    for (int i = 0; i < N; i++) run_small(ex, i, &fs[i]);
    /* Every job finished before the free: free cancels what is still
     * queued, and job 99 was, once in 300 runs on a loaded machine (ci17,
     * "cancelled before it ran"), when only the even ones were awaited. */
    for (int i = 0; i < N; i++) {
        int rc = async_future_wait(fs[i]);
        cr_assert_eq(rc, 0, "future %d: %s: %s", i, async_errname(rc), async_future_message(fs[i]));
    }
    for (int i = 0; i < N; i += 2) async_future_unref(fs[i]); /* half back into this thread's magazine first */
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, free_on_thread, ex), 0);
    pthread_join(th, NULL);
    for (int i = 1; i < N; i += 2) async_future_unref(fs[i]);
    cr_expect_eq(test_alloc_live(), 0, "%ld allocations left after the last future went",
                 test_alloc_live());
}

/* --- the executor's small submit block ------------------------------------- */

static int triple(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)ctx;
    cr_assert_eq(in_size, sizeof(long));
    cr_assert_eq(out_size, sizeof(long));
    long v;
    memcpy(&v, in, sizeof v);
    v = v * 3 + 1;
    memcpy(out, &v, sizeof v);
    return 0;
}

#define MIX_JOBS 6000

/* Each round queues MIX_JOBS small jobs on two workers: singles of priority
 * 0 (192-byte blocks, neighbours in the pool), every seventh single with a
 * priority, every fortieth call a batch of five mixing both; every eleventh
 * future is cancelled, and the last rounds shut down with cancel while jobs
 * are queued.  Each future ends once: with its own value, or cancelled. */
static void mixed_round(int round, bool shutdown_early)
{
    async_executor_opts_t o = {.backend = ASYNC_BACKEND_THREADS, .workers = 2};
    async_executor_t *ex;
    cr_assert_eq(async_executor_new(&ex, &o), 0);
    static async_future_t *fs[MIX_JOBS];
    static long in[MIX_JOBS];
    size_t n = 0;
    for (int call = 0; n < MIX_JOBS; call++) {
        if (call % 40 == 39 && n + 5 <= MIX_JOBS) {
            async_job_t jobs[5];
            for (int k = 0; k < 5; k++) {
                in[n + k] = (long)(n + k);
                jobs[k] = (async_job_t){.fn = triple, .in = &in[n + k], .in_size = sizeof(long),
                                        .out_size = sizeof(long), .priority = k == 2 ? 5 : 0};
            }
            cr_assert_eq(async_executor_submit_batch(&fs[n], ex, jobs, 5), 0);
            n += 5;
        } else {
            in[n] = (long)n;
            async_job_t j = {.fn = triple, .in = &in[n], .in_size = sizeof(long),
                             .out_size = sizeof(long), .priority = call % 7 == 6 ? call % 3 + 1 : 0};
            cr_assert_eq(async_executor_submit(&fs[n], ex, &j), 0);
            n++;
        }
        if (n % 11 == 0) (void)async_future_cancel(fs[n - 1]);
        if (shutdown_early && n == MIX_JOBS / 2) {
            /* The rest are refused (ECLOSED) once it is shut down. */
            cr_assert_eq(async_executor_shutdown(ex, false, true), 0);
            break;
        }
    }
    /* Cancelled futures make the wait report an error: each is checked below. */
    (void)async_futures_wait(fs, n, ASYNC_WAIT_ALL, NULL);
    size_t done = 0, cancelled = 0;
    for (size_t i = 0; i < n; i++) {
        cr_assert(async_future_done(fs[i]), "round %d, job %zu not final", round, i);
        int e = async_future_error(fs[i]);
        if (e == 0) {
            const void *data;
            size_t size;
            cr_assert_eq(async_future_result(fs[i], &data, &size), 0);
            cr_assert_eq(size, sizeof(long));
            long v;
            memcpy(&v, data, sizeof v);
            cr_assert_eq(v, (long)i * 3 + 1, "round %d, job %zu: another job's output", round, i);
            done++;
        } else {
            cr_assert_eq(e, ASYNC_ECANCELED, "round %d, job %zu: %s", round, i,
                         async_strerror(e));
            cancelled++;
        }
        async_future_unref(fs[i]);
    }
    cr_assert_eq(done + cancelled, n);
    async_executor_free(ex);
}

Test(executor_small_jobs, small_submits_mixed_with_priorities_batches_cancels_and_shutdown,
     .timeout = 120)
{
    for (int round = 0; round < 6; round++) mixed_round(round, round >= 4);
}

/* Priority buckets linked through qnext alone: a bucket's header lives in
 * the job at its head and moves to the next job when that one is taken (a
 * cancelled head included).  Behind a held worker, jobs of priorities
 * 2, 2, 5, 0, 2, 5, 0 with the first (a bucket's head) and the sixth (the
 * second of priority 5) cancelled run as 5, 2, 2, 0, 0: each priority first
 * in, first out. */
static _Atomic int order_next;
static _Atomic int gate_open;

typedef struct order_rec {
    int tag;
    int ran_at;
} order_rec_t;

static int record(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in, (void)in_size, (void)out, (void)out_size;
    order_rec_t *r = ctx;
    r->ran_at = atomic_fetch_add(&order_next, 1);
    return 0;
}

static int wait_for_gate_open(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in, (void)in_size, (void)out, (void)out_size, (void)ctx;
    while (!atomic_load(&gate_open)) usleep(1000);
    return 0;
}

Test(executor_small_jobs, bucket_headers_move_along_qnext_links_in_priority_order, .timeout = 30)
{
    async_executor_opts_t o = {.backend = ASYNC_BACKEND_THREADS, .workers = 1};
    async_executor_t *ex;
    cr_assert_eq(async_executor_new(&ex, &o), 0);
    atomic_store(&gate_open, 0);
    atomic_store(&order_next, 0);
    async_future_t *gate;
    cr_assert_eq(async_executor_submit(&gate, ex, &(async_job_t){.fn = wait_for_gate_open}), 0);
    /* Wait until the worker holds the gate, so everything below queues. */
    while (async_future_state(gate) != ASYNC_FUTURE_RUNNING) usleep(1000);
    static const int prio[] = {2, 2, 5, 0, 2, 5, 0};
    enum { N = sizeof prio / sizeof prio[0] };
    order_rec_t rec[N];
    async_future_t *fs[N];
    for (int i = 0; i < N; i++) {
        rec[i] = (order_rec_t){i, -1};
        async_job_t j = {.fn = record, .ctx = &rec[i], .priority = prio[i]};
        cr_assert_eq(async_executor_submit(&fs[i], ex, &j), 0);
    }
    cr_assert_eq(async_future_cancel(fs[0]), 0);
    cr_assert_eq(async_future_cancel(fs[5]), 0);
    atomic_store(&gate_open, 1);
    (void)async_futures_wait(fs, N, ASYNC_WAIT_ALL, NULL);
    cr_assert_eq(async_future_wait(gate), 0);
    static const int want[] = {2, 1, 4, 3, 6}; /* tags in the order they must run */
    for (int k = 0; k < 5; k++)
        cr_expect_eq(rec[want[k]].ran_at, k, "job %d (priority %d) ran %d-th, expected %d-th",
                     want[k], prio[want[k]], rec[want[k]].ran_at, k);
    cr_expect_eq(rec[0].ran_at, -1, "a cancelled job ran");
    cr_expect_eq(rec[5].ran_at, -1, "a cancelled job ran");
    cr_expect_eq(async_future_error(fs[0]), ASYNC_ECANCELED);
    cr_expect_eq(async_future_error(fs[5]), ASYNC_ECANCELED);
    for (int i = 0; i < N; i++) async_future_unref(fs[i]);
    async_future_unref(gate);
    async_executor_free(ex);
}

/* More transfers than one shard takes (SHARD_CAP, 256): the second shard's
 * transfers, a few among the first shard's 256 streaming ones whose sockets
 * are ready poll after poll, are driven in the same passes and end with
 * their answers, not at their timeout. */
