/* Callbacks and workers that submit into an executor's full queue: the only
 * worker, or the last one able to make room, gets ASYNC_EDEADLK instead of
 * waiting for ever, on both backends.  Each test says in its comment what it
 * caught, or what broken code it would catch. */
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

TestSuite(executor_full_queue, .init = test_exec_setup, .fini = test_exec_teardown);

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
Test(executor_full_queue, the_only_worker_submitting_into_a_full_queue_gets_edeadlk, .timeout = 60)
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
Test(executor_full_queue, the_last_worker_to_wait_for_room_gets_edeadlk, .timeout = 60)
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
Test(executor_full_queue, a_process_pool_callback_submitting_into_a_full_queue_returns, .timeout = 60)
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
