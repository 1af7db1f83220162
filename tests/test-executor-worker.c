/* A thread worker's edges, for any path that runs jobs: what one job leaves
 * in the work frame and the outcome for the next, a cancel racing the pop
 * and the start, a waiter or a callback arriving while the finish runs, the
 * work function's services, a job queued behind a long one while another
 * worker is free, and FIFO order across single submits, batches and timed
 * jobs.
 *
 * They were written against round 11's straight worker path (one frame for
 * a run of single submits, the outcome written only as far as the function
 * changes it, a quiet poll of the queue's end), which cut the workers'
 * instructions a task from 272 to 152 but drained a backlog slower and was
 * not kept (docs/executor.md, "The worker's path").  Each test's comment
 * names the breakage of such a path that it catches; here they hold the
 * general path (async__exec_take, async__rows_run, async__exec_finish) to
 * the same properties. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
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
TestSuite(executor_worker, .init = setup, .fini = teardown);

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
enum { ROUNDS = 3000 };
#else
enum { ROUNDS = 20000 };
#endif

/* --- what one job leaves for the next ------------------------------------ */

/* The job's mode, its input: what it does with the services. */
enum { PLAIN, FAIL_WITH_MSG, FAIL_SILENT, SHRINK, GROW, FAIL_AFTER_GROW, SERVICES };

static int modal(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)ctx;
    int mode;
    memcpy(&mode, in, sizeof mode);
    memset(out, 0x5a, out_size);
    switch (mode) {
    case FAIL_WITH_MSG:
        return async_work_fail(-7, "mode %d failed", mode);
    case FAIL_SILENT:
        return 9; /* a positive code: ASYNC_EWORK */
    case SHRINK: {
        char *o = async_work_output(3);
        if (!o) return -1;
        memcpy(o, "abc", 3);
        return 0;
    }
    case GROW:
    case FAIL_AFTER_GROW: {
        char *o = async_work_output(100);
        if (!o) return -1;
        memset(o, 'g', 100);
        return mode == GROW ? 0 : async_work_fail(-3, "grew then failed");
    }
    case SERVICES: {
        /* One worker: index 0, and no deadline. */
        int ok = async_work_worker() == 0 && async_work_deadline() == ASYNC_FOREVER;
        return ok ? 0 : async_work_fail(-5, "worker %d deadline %lld", async_work_worker(),
                                        (long long)async_work_deadline());
    }
    }
    return 0;
}

static void check_outcome(async_future_t *f, int mode, int i)
{
    const void *data = NULL;
    size_t size = 0;
    int r = async_future_result(f, &data, &size);
    switch (mode) {
    case PLAIN:
    case SERVICES:
        cr_assert_eq(r, 0, "job %d (mode %d): %s %s", i, mode, async_strerror(r), async_future_message(f));
        cr_assert_eq(size, 8, "job %d (mode %d): %zu bytes, want the whole output", i, mode, size);
        cr_assert_eq(((const unsigned char *)data)[7], 0x5a);
        cr_assert_str_eq(async_future_message(f), "", "job %d: a message left by an earlier job: %s", i,
                            async_future_message(f));
        break;
    case FAIL_WITH_MSG:
        cr_assert_eq(r, -7, "job %d: %s", i, async_strerror(r));
        cr_assert_str_eq(async_future_message(f), "mode 1 failed");
        break;
    case FAIL_SILENT:
        cr_assert_eq(r, ASYNC_EWORK, "job %d: %s", i, async_strerror(r));
        cr_assert_str_eq(async_future_message(f), "", "job %d: a message left by an earlier job: %s", i,
                            async_future_message(f));
        break;
    case SHRINK:
        cr_assert_eq(r, 0);
        cr_assert_eq(size, 3);
        cr_assert_eq(memcmp(data, "abc", 3), 0);
        break;
    case GROW:
        cr_assert_eq(r, 0);
        cr_assert_eq(size, 100, "job %d: %zu bytes", i, size);
        cr_assert_eq(((const char *)data)[99], 'g');
        break;
    case FAIL_AFTER_GROW:
        cr_assert_eq(r, -3);
        cr_assert_str_eq(async_future_message(f), "grew then failed");
        break;
    }
}

/* Jobs of every mode, in an order that puts each after each, queued behind
 * a held worker so that one call of the straight path runs them all with
 * one frame and one outcome.  Catches a frame or outcome field that the
 * path does not reset per job: a message of a failed job's async_work_fail
 * showing on a later silent failure (msg_row), a shrunk result size or a
 * variable result carried into the next job (result_size, var_out), a
 * failing job keeping its grown buffer (a leak, caught by the teardown),
 * and the services answering for another job. */
Test(executor_worker, each_job_starts_from_a_clean_frame_and_outcome, .timeout = 30)
{
    async_executor_t *ex = test_thread_pool(1, 0);
    enum { MODES = SERVICES + 1, N = MODES * MODES * 2 };
    static int modes[N];
    async_future_t *fs[N];
    gate_t g;
    async_future_t *held = block_worker(ex, &g);
    for (int i = 0; i < N; i++) {
        modes[i] = (i / 2) % MODES; /* pairs of a mode, then each mode after each */
        if (i % 2) modes[i] = (i / 2 / MODES) % MODES;
        async_job_t j = {.fn = modal, .in = &modes[i], .in_size = sizeof modes[i], .out_size = 8};
        cr_assert_eq(async_executor_submit(&fs[i], ex, &j), 0);
    }
    open_gate(&g, held);
    cr_assert_eq(async_futures_wait(fs, N, ASYNC_WAIT_ALL, NULL), 0);
    for (int i = 0; i < N; i++) {
        check_outcome(fs[i], modes[i], i);
        async_future_unref(fs[i]);
    }
    /* The services outside a job: the frame is gone between jobs. */
    cr_assert_eq(async_work_worker(), -1);
    async_executor_free(ex);
}

/* --- callbacks and waiters against the finish ----------------------------- */

static void note_worker(async_future_t *f, void *arg)
{
    (void)f;
    /* A callback runs on the finishing worker, outside any job. */
    atomic_store((atomic_int *)arg, async_work_worker() == -1 ? 1 : 2);
}

/* A callback on a straight job's future runs after the finish, with no
 * job's frame on its thread: async_work_worker() says -1 there.  Catches a
 * straight path that leaves its frame installed while the finish runs the
 * callbacks (the frame would say worker 0, and async_work_output inside a
 * callback would write into a finished job). */
Test(executor_worker, callbacks_see_no_job_frame, .timeout = 30)
{
    async_executor_t *ex = test_thread_pool(1, 0);
    gate_t g;
    async_future_t *held = block_worker(ex, &g);
    atomic_int seen = 0;
    int mode = PLAIN;
    async_job_t j = {.fn = modal, .in = &mode, .in_size = sizeof mode, .out_size = 8};
    async_future_t *f;
    cr_assert_eq(async_executor_submit(&f, ex, &j), 0);
    cr_assert_eq(async_future_on_done(f, note_worker, &seen), 0);
    open_gate(&g, held);
    cr_assert_eq(async_future_wait(f), 0);
    async_executor_shutdown(ex, true, false); /* the callback has returned */
    cr_assert_eq(atomic_load(&seen), 1, "the callback saw a job's frame (%d)", atomic_load(&seen));
    async_future_unref(f);
    async_executor_free(ex);
}

static int short_job(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)ctx, (void)out_size;
    test_jitter(16, 200);
    memcpy(out, in, sizeof(int));
    return 0;
}

static void count_cb(async_future_t *f, void *arg)
{
    (void)f;
    atomic_fetch_add((atomic_int *)arg, 1);
}

typedef struct {
    async_future_t **fs;
    int n;
    atomic_int *calls;
    atomic_int bad;
} racer_t;

/* A second thread that waits on each future, or adds a callback to it, at a
 * random point of its job's run and finish. */
static void *race_finish(void *arg)
{
    racer_t *r = arg;
    for (int i = 0; i < r->n; i++) {
        async_future_t *f = r->fs[i];
        test_jitter(16, 300);
        if (i % 2) {
            if (async_future_on_done(f, count_cb, &r->calls[i])) atomic_fetch_add(&r->bad, 1);
        } else {
            if (async_future_wait(f) != 0) atomic_fetch_add(&r->bad, 1);
        }
    }
    return NULL;
}

/* Straight jobs finished while another thread arrives to wait on them or
 * to add a callback (the two ways onto a future's flags, SLEEPERS and
 * LISTENERS) at random points around the finish's one exchange.  Every
 * wait returns with the result, every callback runs exactly once.
 * Catches a finish that stores the final state without an exchange (a
 * waiter that set SLEEPERS just before it would sleep forever: the
 * timeout), or that skips async__future_released when a flag is set (a
 * callback never runs). */
Test(executor_worker, waiters_and_callbacks_racing_the_finish, .timeout = 60)
{
    async_executor_t *ex = test_thread_pool(2, 0);
    int n = ROUNDS;
    async_future_t **fs = calloc((size_t)n, sizeof *fs);
    atomic_int *calls = calloc((size_t)n, sizeof *calls);
    int *in = calloc((size_t)n, sizeof *in);
    racer_t r = {.fs = fs, .n = n, .calls = calls};
    for (int i = 0; i < n; i++) {
        in[i] = i;
        async_job_t j = {.fn = short_job, .in = &in[i], .in_size = sizeof in[i], .out_size = sizeof(int)};
        cr_assert_eq(async_executor_submit(&fs[i], ex, &j), 0);
    }
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, race_finish, &r), 0);
    cr_assert_eq(async_futures_wait(fs, (size_t)n, ASYNC_WAIT_ALL, NULL), 0);
    pthread_join(t, NULL);
    async_executor_shutdown(ex, true, false); /* every callback has returned */
    cr_assert_eq(atomic_load(&r.bad), 0);
    for (int i = 0; i < n; i++) {
        const void *data;
        size_t size;
        cr_assert_eq(async_future_result(fs[i], &data, &size), 0);
        int got;
        memcpy(&got, data, sizeof got);
        cr_assert_eq(got, i);
        if (i % 2) cr_assert_eq(atomic_load(&calls[i]), 1, "job %d: callback ran %d times", i,
                                atomic_load(&calls[i]));
        async_future_unref(fs[i]);
    }
    free(fs);
    free(calls);
    free(in);
    async_executor_free(ex);
}

/* --- cancels against the pop and the start --------------------------------- */

static int mark_ran(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out, (void)out_size;
    int i;
    memcpy(&i, in, sizeof i);
    atomic_fetch_add(&((atomic_int *)ctx)[i], 1);
    return 0;
}

/* A stream of straight jobs, each cancelled at a random point after its
 * submit, some with a callback already on the future (so the start's one
 * compare-and-swap from a bare PENDING fails and the general start
 * decides): a cancel wins exactly when the job never ran, and no job runs
 * twice; a job not cancelled runs.  Catches a start that runs a
 * cancelled job (a plain store of RUNNING, or a fallback that ignores
 * CANCELLED) and one that drops a job whose callback's flag made the
 * compare-and-swap fail. */
Test(executor_worker, cancel_races_the_pop_and_start, .timeout = 60)
{
    async_executor_t *ex = test_thread_pool(2, 0);
    int n = ROUNDS;
    atomic_int *ran = calloc((size_t)n, sizeof *ran);
    bool *won = calloc((size_t)n, sizeof *won);
    int *in = calloc((size_t)n, sizeof *in);
    async_future_t **fs = calloc((size_t)n, sizeof *fs);
    for (int i = 0; i < n; i++) {
        in[i] = i;
        async_job_t j = {.fn = mark_ran, .in = &in[i], .in_size = sizeof in[i], .ctx = ran};
        cr_assert_eq(async_executor_submit(&fs[i], ex, &j), 0);
        /* A callback marks the future LISTENERS (it also runs on a
         * cancel, so it counts once whatever happens). */
        if (i % 3 == 0) cr_assert_eq(async_future_on_done(fs[i], count_cb, &ran[i]), 0);
        if (i % 4 == 1) continue; /* not cancelled: it must run */
        test_jitter(16, 300);
        int r = async_future_cancel(fs[i]);
        cr_assert(r == 0 || r == ASYNC_EBUSY || r == ASYNC_EDONE, "cancel: %s", async_strerror(r));
        won[i] = r == 0;
    }
    cr_assert_eq(async_executor_shutdown(ex, true, false), 0);
    for (int i = 0; i < n; i++) {
        /* The callback counts once in ran[i] for the jobs that have one. */
        int runs = atomic_load(&ran[i]) - (i % 3 == 0);
        cr_assert_eq(runs, won[i] ? 0 : 1, "job %d: cancel %s, ran %d times", i, won[i] ? "won" : "lost",
                     runs);
        cr_assert_eq(async_future_state(fs[i]), won[i] ? ASYNC_FUTURE_CANCELLED : ASYNC_FUTURE_DONE);
        async_future_unref(fs[i]);
    }
    free(ran);
    free(won);
    free(in);
    free(fs);
    async_executor_free(ex);
}

/* --- no job waits behind a long one --------------------------------------- */

/* A long job, then short ones, on a pool of two workers: the short ones
 * finish while the long one still runs.  Catches a worker that takes more
 * than the job it starts (a batch pop into a private list): the short
 * jobs would wait behind the long one although the other worker is free. */
Test(executor_worker, short_jobs_do_not_wait_behind_a_long_one, .timeout = 30)
{
    async_executor_t *ex = test_thread_pool(2, 0);
    gate_t g = {0};
    async_job_t lj = {.fn = hold, .ctx = &g};
    async_future_t *lf;
    cr_assert_eq(async_executor_submit(&lf, ex, &lj), 0);
    enum { N = 8 };
    async_future_t *fs[N];
    int in[N];
    for (int i = 0; i < N; i++) {
        in[i] = i;
        async_job_t j = {.fn = short_job, .in = &in[i], .in_size = sizeof in[i], .out_size = sizeof(int)};
        cr_assert_eq(async_executor_submit(&fs[i], ex, &j), 0);
    }
    /* The reserve worker joins once the backlog has aged (a nap): well
     * within this deadline. */
    int r = async_futures_wait_dl(fs, N, ASYNC_WAIT_ALL, NULL, async_deadline_after(ASYNC_SEC(10)));
    cr_assert_eq(r, 0, "short jobs still queued behind the long one: %s", async_strerror(r));
    /* Not final: the gate is shut.  Not necessarily RUNNING yet: the worker
     * that popped it may not have started it while the other one ran every
     * short job (seen under TSan on the loaded 2-CPU machine). */
    cr_assert(!async_future_done(lf), "the long job ended with its gate shut");
    atomic_store(&g.open, 1);
    cr_assert_eq(async_future_wait(lf), 0);
    async_future_unref(lf);
    for (int i = 0; i < N; i++) async_future_unref(fs[i]);
    async_executor_free(ex);
}

/* --- order ---------------------------------------------------------------- */

/* Single submits, batches of two and single submits with a time limit,
 * mixed and queued behind a held worker: the one worker runs them in
 * submission order.  Catches a worker path that skips a job it hands to
 * another path, starts one twice, or reorders priority 0 across single,
 * batched and timed jobs. */
Test(executor_worker, single_batched_and_timed_jobs_keep_fifo_order, .timeout = 30)
{
    async_executor_t *ex = test_thread_pool(1, 0);
    gate_t g;
    async_future_t *held = block_worker(ex, &g);
    atomic_store(&order_next, 0);
    enum { N = 40 };
    async_future_t *fs[N];
    for (int i = 0; i < N;) {
        async_job_t j = {.fn = record_order, .out_size = sizeof(int)};
        if (i % 5 == 3) j.timeout_ns = ASYNC_SEC(60); /* a deadline: the general path */
        if (i % 5 == 4 && i + 2 <= N) {
            async_job_t two[2] = {j, j};
            cr_assert_eq(async_executor_submit_batch(&fs[i], ex, two, 2), 0);
            i += 2;
            continue;
        }
        cr_assert_eq(async_executor_submit(&fs[i], ex, &j), 0);
        i++;
    }
    open_gate(&g, held);
    cr_assert_eq(async_futures_wait(fs, N, ASYNC_WAIT_ALL, NULL), 0);
    for (int i = 0; i < N; i++) {
        int at = order_of(fs[i]);
        cr_assert_eq(at, i, "job %d ran as number %d", i, at);
        async_future_unref(fs[i]);
    }
    async_executor_free(ex);
}
