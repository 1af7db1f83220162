/* How executor calls wait and give up: the _dl forms (run, map, submit_batch,
 * imap_next's top-up), what each cancels and what it waits for before it
 * returns, run's message capacity, and waits from a task going through the
 * loop (a map abandoned by a cancelled task, a submit that waits for queue
 * room) while the loop's other tasks run on.  The pools here hold their one
 * worker on a gate that the test opens, so nothing depends on timing but
 * the deadlines themselves.  The counting allocator checks for leaks after
 * every test. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <async.h>
#include <async/executor.h>
#include "support/alloc.h"
#include "support/teardown.h"

#define MS ASYNC_MSEC(1)

static void setup(void) { test_alloc_install(); }
static void teardown(void)
{
    TEARDOWN_CHECK_NO_LEAK();
    test_alloc_uninstall();
}
TestSuite(exec_wait, .init = setup, .fini = teardown, .timeout = 30);

/* A gate: `running` says a job waits at it, `open` lets it through; opened_by
 * records who opened it (the job gives up by itself after 10 s so that a
 * broken build fails its checks instead of hanging). */
typedef struct gate {
    _Atomic int running, open, opened_by;
    _Atomic int passed_by; /* opened_by as the job saw it when it passed */
} gate_t;

static int gate_fn(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in, (void)in_size;
    gate_t *g = ctx;
    atomic_store(&g->running, 1);
    for (int i = 0; i < 20000 && !atomic_load(&g->open); i++) usleep(500);
    int by = atomic_load(&g->opened_by);
    atomic_store(&g->passed_by, by);
    if (out_size >= sizeof by) memcpy(out, &by, sizeof by);
    return 0;
}

static void gate_open(gate_t *g, int by)
{
    atomic_store(&g->opened_by, by);
    atomic_store(&g->open, 1);
}

static void gate_wait_running(gate_t *g)
{
    while (!atomic_load(&g->running)) sched_yield();
}

static _Atomic int runs;

/* Item i (an int) gives i * 10; the first item of a map waits at the gate
 * in ctx when there is one. */
static int tenfold(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out_size;
    int v;
    memcpy(&v, in, sizeof v);
    atomic_fetch_add(&runs, 1);
    if (v == 0 && ctx) gate_fn(NULL, 0, NULL, 0, ctx);
    v *= 10;
    memcpy(out, &v, sizeof v);
    return 0;
}

static int long_failure(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in, (void)in_size, (void)out, (void)out_size, (void)ctx;
    return async_work_fail(ASYNC_EINVAL, "a message much longer than eight bytes");
}

static async_executor_t *pool(unsigned workers, size_t max_queued)
{
    async_executor_t *ex = NULL;
    int r = async_executor_new(&ex, &(async_executor_opts_t){.workers = workers, .max_queued = max_queued});
    cr_assert_eq(r, 0, "executor_new: %s", async_strerror(r));
    return ex;
}

/* A pool of one worker held at g. */
static async_executor_t *held_pool(gate_t *g, size_t max_queued, async_future_t **held)
{
    async_executor_t *ex = pool(1, max_queued);
    cr_assert_eq(async_executor_submit(held, ex, &(async_job_t){.fn = gate_fn, .ctx = g,
                                       .out_size = sizeof(int)}),
                 0);
    gate_wait_running(g);
    return ex;
}

/* --- run ---------------------------------------------------------------------- */

Test(exec_wait, run_writes_at_most_msg_cap_bytes)
{
    async_executor_t *ex = pool(1, 0);
    char msg[16];
    memset(msg, '#', sizeof msg);
    cr_expect_eq(async_executor_run(ex, &(async_job_t){.fn = long_failure}, NULL, NULL, msg, 8), ASYNC_EINVAL);
    cr_expect_str_eq(msg, "a messa", "cut to 7 bytes and the NUL");
    cr_expect_eq(msg[8], '#', "nothing past msg_cap");
    msg[0] = '#';
    cr_expect_eq(async_executor_run(ex, &(async_job_t){.fn = long_failure}, NULL, NULL, msg, 0), ASYNC_EINVAL);
    cr_expect_eq(msg[0], '#', "msg_cap 0 writes nothing");
    int in = 4, out = 0;
    cr_expect_eq(async_executor_run(ex, &(async_job_t){.fn = tenfold, .in = &in, .in_size = sizeof in, .out_size = sizeof out},
                                    &out, NULL, msg, sizeof msg),
                 0);
    cr_expect_eq(out, 40);
    cr_expect_str_eq(msg, "", "success leaves an empty message");
    async_executor_free(ex);
}

Test(exec_wait, run_dl_gives_up_at_its_deadline_and_cancels_the_queued_job)
{
    gate_t g = {0};
    async_future_t *held;
    async_executor_t *ex = held_pool(&g, 0, &held);
    atomic_store(&runs, 0);
    int in = 1, out = -1;
    char msg[ASYNC_FUTURE_MSG_MAX];
    int64_t t0 = async_now();
    int r = async_executor_run_dl(ex, &(async_job_t){.fn = tenfold, .in = &in, .in_size = sizeof in, .out_size = sizeof out},
                                  &out, NULL, msg, sizeof msg, async_deadline_after(50 * MS));
    cr_expect_eq(r, ASYNC_ETIMEDOUT, "got %s", async_strerror(r));
    cr_expect_geq(async_now() - t0, 50 * MS);
    cr_expect(strstr(msg, "deadline"), "%s", msg);
    gate_open(&g, 1);
    cr_expect_eq(async_future_wait(held), 0);
    async_future_unref(held);
    async_executor_shutdown(ex, true, false);
    cr_expect_eq(atomic_load(&runs), 0, "the job was cancelled, not run later");
    cr_expect_eq(out, -1);
    async_executor_free(ex);
}

/* --- map ---------------------------------------------------------------------- */

typedef struct {
    gate_t *g;
    int64_t after;
} opener_t;

/* Opens the gate once the map's deadline has passed. */
static void *open_after(void *arg)
{
    opener_t *o = arg;
    while (async_now() < o->after) usleep(1000);
    gate_open(o->g, 2);
    return NULL;
}

Test(exec_wait, map_dl_cancels_queued_chunks_and_waits_for_running_ones)
{
    async_executor_t *ex = pool(1, 0);
    gate_t g = {0};
    atomic_store(&runs, 0);
    enum { N = 6 };
    int in[N], out[N];
    for (int i = 0; i < N; i++) in[i] = i, out[i] = -1;
    int64_t deadline = async_deadline_after(50 * MS);
    opener_t o = {&g, deadline + 20 * MS};
    pthread_t th;
    pthread_create(&th, NULL, open_after, &o);
    async_map_error_t err;
    int r = async_executor_map_dl(ex, &(async_map_t){.fn = tenfold, .ctx = &g, .in = in, .in_size = sizeof(int),
                                                     .out = out, .out_size = sizeof(int), .n = N, .chunksize = 1},
                                  &err, deadline);
    int ran = atomic_load(&runs);
    cr_expect_eq(r, ASYNC_ETIMEDOUT, "got %s", async_strerror(r));
    cr_expect_eq(err.code, ASYNC_ETIMEDOUT);
    cr_expect(strstr(err.message, "deadline"), "%s", err.message);
    cr_expect_eq(out[0], 0, "the running chunk had finished when the call returned");
    cr_expect_eq(atomic_load(&g.open), 1, "it returned after the gate opened, past the deadline");
    cr_expect_lt(err.index, (size_t)N, "some item did not run");
    pthread_join(th, NULL);
    async_executor_shutdown(ex, true, false);
    cr_expect_eq(atomic_load(&runs), ran, "no chunk ran after the call returned");
    for (int i = ran; i < N; i++) cr_expect_eq(out[i], -1, "item %d untouched", i);
    async_executor_free(ex);
}

Test(exec_wait, submit_batch_dl_gives_up_waiting_for_room)
{
    gate_t g = {0};
    async_future_t *held, *filler, *fs[2];
    async_executor_t *ex = held_pool(&g, 1, &held);
    int in = 1;
    async_job_t jobs[2] = {{.fn = tenfold, .in = &in, .in_size = sizeof in, .out_size = sizeof(int)},
                           {.fn = tenfold, .in = &in, .in_size = sizeof in, .out_size = sizeof(int)}};
    cr_assert_eq(async_executor_submit(&filler, ex, &jobs[0]), 0);
    cr_expect_eq(async_executor_submit_batch_dl(fs, ex, jobs, 2, async_deadline_after(30 * MS)),
                 ASYNC_ETIMEDOUT);
    gate_open(&g, 1);
    cr_expect_eq(async_executor_submit_batch_dl(fs, ex, jobs, 2,
                                                async_deadline_after(ASYNC_SEC(20))), 0);
    for (int i = 0; i < 2; i++) {
        cr_expect_eq(async_future_wait(fs[i]), 0);
        async_future_unref(fs[i]);
    }
    async_future_wait(filler);
    async_future_unref(filler);
    async_future_wait(held);
    async_future_unref(held);
    async_executor_free(ex);
}

/* --- imap ----------------------------------------------------------------------- */

Test(exec_wait, imap_next_dl_bounds_its_top_up_and_loses_no_item)
{
    gate_t g1 = {0}, g2 = {0};
    async_future_t *held, *held2, *filler;
    async_executor_t *ex = held_pool(&g1, 1, &held);
    enum { N = 4 };
    int in[N] = {0, 1, 2, 3};
    async_imap_iter_t *it;
    /* A window of one item: the first is queued now, the next only once
     * the first has been handed out. */
    cr_assert_eq(async_executor_imap(&it, ex,
                                     &(async_imap_t){.fn = tenfold, .in = in, .n = N, .in_size = sizeof(int),
                                                         .out_size = sizeof(int), .window = 1}),
                 0);
    gate_open(&g1, 1);
    int v = -1;
    size_t idx;
    cr_assert_eq(async_imap_next(it, &v, &idx), 0);
    cr_expect_eq(v, 0);
    /* Hold the worker again and fill the queue: the next top-up has no room. */
    cr_assert_eq(async_executor_submit(&held2, ex, &(async_job_t){.fn = gate_fn, .ctx = &g2,
                                       .out_size = sizeof(int)}),
                 0);
    gate_wait_running(&g2);
    cr_assert_eq(async_executor_submit(&filler, ex,
                                       &(async_job_t){.fn = tenfold, .in = &in[1], .in_size = sizeof(int),
                                                          .out_size = sizeof(int)}),
                 0);
    int64_t t0 = async_now();
    cr_expect_eq(async_imap_next_dl(it, &v, &idx, async_deadline_after(30 * MS)), ASYNC_ETIMEDOUT);
    cr_expect_lt(async_now() - t0, ASYNC_SEC(5), "the top-up gave up at the deadline");
    gate_open(&g2, 1);
    for (int i = 1; i < N; i++) {
        cr_expect_eq(async_imap_next(it, &v, &idx), 0);
        cr_expect_eq(idx, (size_t)i);
        cr_expect_eq(v, 10 * i);
    }
    cr_expect_eq(async_imap_next(it, &v, &idx), ASYNC_EEOF);
    async_imap_free(it);
    async_future_t *fs[3] = {held, held2, filler};
    for (int i = 0; i < 3; i++) {
        async_future_wait(fs[i]);
        async_future_unref(fs[i]);
    }
    async_executor_free(ex);
}

/* --- from a task: waits go through the loop ---------------------------------------- */

typedef struct {
    async_executor_t *ex;
    gate_t *g;
    int *in, *out;
    int n;
    int result;
    _Atomic int waiting; /* the waiter has started its call */
    async_task_t waiter;
    int ticks;            /* the other task's turns while the waiter waits */
    int seen;             /* the waiter's result when those turns were over */
    async_job_t job;
    int64_t deadline;
} scene_t;

static int map_waiter(void *arg, void **res)
{
    (void)res;
    scene_t *s = arg;
    atomic_store(&s->waiting, 1);
    s->result = async_executor_map(s->ex, &(async_map_t){.fn = tenfold, .ctx = s->g, .in = s->in, .in_size = sizeof(int),
                                                         .out = s->out, .out_size = sizeof(int), .n = (size_t)s->n,
                                                         .chunksize = 1},
                                   NULL);
    return 0;
}

/* Cancels the waiter once its first chunk runs, then takes turns on the loop
 * before it opens the gate: it could not if the waiter held the loop's
 * thread. */
static int canceller(void *arg, void **res)
{
    (void)res;
    scene_t *s = arg;
    while (!atomic_load(&s->g->running)) async_sleep(MS);
    async_task_cancel(s->waiter);
    for (s->ticks = 0; s->ticks < 5; s->ticks++) async_sleep(MS);
    gate_open(s->g, 3);
    return 0;
}

Test(exec_wait, cancelled_map_in_a_task_waits_through_the_loop)
{
    async_executor_t *ex = pool(1, 0);
    gate_t g = {0};
    atomic_store(&runs, 0);
    enum { N = 4 };
    int in[N] = {0, 1, 2, 3}, out[N] = {-1, -1, -1, -1};
    scene_t s = {.ex = ex, .g = &g, .in = in, .out = out, .n = N, .result = 1};
    async_loop_t *loop;
    cr_assert_eq(async_loop_new(&loop), 0);
    cr_assert_eq(async_task_spawn(&s.waiter, loop, map_waiter, &s, NULL), 0);
    async_task_t other;
    cr_assert_eq(async_task_spawn(&other, loop, canceller, &s, NULL), 0);
    cr_expect_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_expect_eq(s.result, ASYNC_ECANCELED, "got %s", async_strerror(s.result));
    cr_expect_eq(atomic_load(&g.passed_by), 3, "the other task opened the gate while the map waited");
    cr_expect_eq(out[0], 0, "the running chunk had ended when the map returned");
    int ran = atomic_load(&runs);
    async_executor_shutdown(ex, true, false);
    cr_expect_eq(atomic_load(&runs), ran, "queued chunks were cancelled");
    cr_expect_eq(async_loop_destroy(loop), 0);
    async_executor_free(ex);
}

static int submit_waiter(void *arg, void **res)
{
    (void)res;
    scene_t *s = arg;
    atomic_store(&s->waiting, 1);
    async_future_t *f = NULL;
    s->result = async_executor_submit_dl(&f, s->ex, &s->job, s->deadline);
    if (f) {
        async_future_await(f);
        async_future_unref(f);
    }
    return 0;
}

/* Takes turns while the waiter waits for room, then opens the gate. */
static int ticker(void *arg, void **res)
{
    (void)res;
    scene_t *s = arg;
    while (!atomic_load(&s->waiting)) async_yield();
    for (s->ticks = 0; s->ticks < 5; s->ticks++) async_sleep(MS);
    s->seen = s->result;
    if (s->g) gate_open(s->g, 3);
    return 0;
}

static void room_scene(int64_t deadline, bool cancel, bool open, int want)
{
    gate_t g = {0};
    async_future_t *held, *filler;
    async_executor_t *ex = held_pool(&g, 1, &held);
    int in = 2;
    async_job_t job = {.fn = tenfold, .in = &in, .in_size = sizeof in, .out_size = sizeof(int)};
    cr_assert_eq(async_executor_submit(&filler, ex, &job), 0);
    scene_t s = {.ex = ex, .g = open ? &g : NULL, .job = job, .deadline = deadline, .result = 1};
    async_loop_t *loop;
    cr_assert_eq(async_loop_new(&loop), 0);
    cr_assert_eq(async_task_spawn(&s.waiter, loop, submit_waiter, &s, NULL), 0);
    async_task_t other;
    cr_assert_eq(async_task_spawn(&other, loop, ticker, &s, NULL), 0);
    if (cancel) {
        /* The waiter is cancelled by the loop's first turn after it ran. */
        cr_assert_eq(async_loop_run(loop, ASYNC_RUN_ONCE), 1);
        cr_assert_eq(atomic_load(&s.waiting), 1);
        async_task_cancel(s.waiter);
    }
    cr_expect_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_expect_eq(s.result, want, "got %s", async_strerror(s.result));
    cr_expect_eq(s.ticks, 5);
    if (!cancel) cr_expect_eq(s.seen, 1, "the other task ran on while the submit waited");
    if (open) cr_expect_eq(atomic_load(&g.opened_by), 3);
    gate_open(&g, 1);
    async_future_wait(held);
    async_future_unref(held);
    async_future_wait(filler);
    async_future_unref(filler);
    cr_expect_eq(async_loop_destroy(loop), 0);
    async_executor_free(ex);
}

Test(exec_wait, submit_from_a_task_waits_for_room_through_the_loop)
{
    room_scene(ASYNC_FOREVER, false, true, 0);
}

Test(exec_wait, submit_dl_from_a_task_times_out_through_the_loop)
{
    room_scene(async_deadline_after(500 * MS), false, false, ASYNC_ETIMEDOUT);
}

Test(exec_wait, submit_from_a_cancelled_task_stops_waiting_for_room)
{
    room_scene(ASYNC_FOREVER, true, false, ASYNC_ECANCELED);
}

/* --- map_async_dl, imap_dl: the wait for queue room ------------------------------ */

static _Atomic int callbacks;

static void count_cb(async_future_t *f, void *arg)
{
    (void)f, (void)arg;
    atomic_fetch_add(&callbacks, 1);
}

Test(exec_wait, map_async_dl_gives_up_waiting_for_room_with_nothing_queued)
{
    gate_t g = {0};
    async_future_t *held, *filler;
    async_executor_t *ex = held_pool(&g, 1, &held);
    int in[3] = {1, 2, 3}, out[3] = {-1, -1, -1};
    cr_assert_eq(async_executor_submit(&filler, ex, &(async_job_t){.fn = tenfold, .in = in,
                                       .in_size = sizeof(int), .out_size = sizeof(int)}),
                 0);
    atomic_store(&runs, 0);
    atomic_store(&callbacks, 0);
    async_map_t m = {.fn = tenfold, .in = in, .in_size = sizeof(int), .out = out,
                     .out_size = sizeof(int), .n = 3, .chunksize = 1};
    async_future_t *f = (async_future_t *)&g; /* must stay untouched */
    cr_expect_eq(async_executor_map_async_dl(&f, ex, &m, count_cb, count_cb, NULL,
                                             async_deadline_after(30 * MS)),
                 ASYNC_ETIMEDOUT);
    cr_expect_eq(f, (async_future_t *)&g, "*out untouched");
    cr_expect_eq(async_executor_queued(ex), 1, "nothing of the map was queued");
    gate_open(&g, 1);
    cr_expect_eq(async_executor_map_async_dl(&f, ex, &m, count_cb, count_cb, NULL,
                                             async_deadline_after(ASYNC_SEC(20))),
                 0);
    cr_expect_eq(async_future_wait(f), 0);
    cr_expect_eq(atomic_load(&callbacks), 1, "only the map that was queued called back");
    for (int i = 0; i < 3; i++) cr_expect_eq(out[i], 10 * in[i]);
    async_future_unref(f);
    async_future_wait(filler);
    async_future_unref(filler);
    async_future_wait(held);
    async_future_unref(held);
    async_executor_shutdown(ex, true, false);
    cr_expect_eq(atomic_load(&runs), 4, "the filler and the second map's 3 items ran, no more");
    async_executor_free(ex);
}

/* A source of ints 0, 1, ... n-1 that counts its pulls. */
typedef struct {
    int next, n;
} counter_src_t;

static int counter_source(void *arg, void *item)
{
    counter_src_t *c = arg;
    if (c->next >= c->n) return ASYNC_EEOF;
    memcpy(item, &c->next, sizeof(int));
    c->next++;
    return 0;
}

Test(exec_wait, imap_dl_gives_up_waiting_for_room_before_taking_input)
{
    gate_t g = {0};
    async_future_t *held, *filler;
    async_executor_t *ex = held_pool(&g, 1, &held);
    int one = 1;
    cr_assert_eq(async_executor_submit(&filler, ex, &(async_job_t){.fn = tenfold, .in = &one,
                                       .in_size = sizeof(int), .out_size = sizeof(int)}),
                 0);
    enum { N = 5 };
    counter_src_t src = {0, N};
    async_imap_t m = {.fn = tenfold, .source = counter_source, .source_arg = &src,
                      .in_size = sizeof(int), .out_size = sizeof(int), .window = 2};
    async_imap_iter_t *it = (async_imap_iter_t *)&g; /* must stay untouched */
    cr_expect_eq(async_executor_imap_dl(&it, ex, &m, async_deadline_after(30 * MS)), ASYNC_ETIMEDOUT);
    cr_expect_eq(it, (async_imap_iter_t *)&g, "*out untouched");
    cr_expect_eq(src.next, 0, "no item was pulled from the source");
    cr_expect_eq(async_executor_queued(ex), 1, "nothing of the map was queued");
    gate_open(&g, 1);
    cr_assert_eq(async_executor_imap_dl(&it, ex, &m, async_deadline_after(ASYNC_SEC(20))), 0);
    int v;
    size_t idx;
    for (int i = 0; i < N; i++) {
        cr_expect_eq(async_imap_next(it, &v, &idx), 0);
        cr_expect_eq(idx, (size_t)i);
        cr_expect_eq(v, 10 * i);
    }
    cr_expect_eq(async_imap_next(it, &v, &idx), ASYNC_EEOF);
    async_imap_free(it);
    async_future_wait(filler);
    async_future_unref(filler);
    async_future_wait(held);
    async_future_unref(held);
    async_executor_free(ex);
}

/* --- imap from a task: next and free wait through the loop ------------------------- */

typedef struct {
    async_executor_t *ex;
    gate_t *g;
    async_imap_iter_t *it;
    async_task_t waiter;
    _Atomic int waiting;
    int result, v;
    int ticks, seen;
    bool free_it;        /* the waiter frees the iterator instead of reading it */
    bool cancel;         /* the other task cancels the waiter first */
    int open_at_return;  /* g->open when the waiter's call returned */
} imap_scene_t;

static int imap_waiter(void *arg, void **res)
{
    (void)res;
    imap_scene_t *s = arg;
    atomic_store(&s->waiting, 1);
    if (s->free_it) {
        /* The first chunk runs at the gate: free must wait for it. */
        async_imap_free(s->it);
        s->it = NULL;
        s->result = 0;
    } else {
        size_t idx;
        s->result = async_imap_next_dl(s->it, &s->v, &idx, async_deadline_after(ASYNC_SEC(20)));
    }
    s->open_at_return = atomic_load(&s->g->open);
    return 0;
}

/* Takes turns on the loop while the waiter waits, then opens the gate: it
 * could not if the waiter held the loop's thread (the gate's job would then
 * give up by itself after 10 s, and passed_by would say 0). */
static int imap_opener(void *arg, void **res)
{
    (void)res;
    imap_scene_t *s = arg;
    while (!atomic_load(&s->waiting)) async_yield();
    if (s->cancel) async_task_cancel(s->waiter);
    for (s->ticks = 0; s->ticks < 5; s->ticks++) async_sleep(MS);
    s->seen = s->result;
    gate_open(s->g, 3);
    return 0;
}

static void imap_scene(bool free_it, bool cancel)
{
    async_executor_t *ex = pool(1, 0);
    gate_t g = {0};
    enum { N = 3 };
    int in[N] = {0, 1, 2};
    imap_scene_t s = {.ex = ex, .g = &g, .result = 1, .v = -1, .free_it = free_it, .cancel = cancel};
    cr_assert_eq(async_executor_imap(&s.it, ex, &(async_imap_t){.fn = tenfold, .ctx = &g, .in = in, .n = N,
                                                                 .in_size = sizeof(int),
                                                                 .out_size = sizeof(int), .window = 1}),
                 0);
    gate_wait_running(&g);
    async_loop_t *loop;
    cr_assert_eq(async_loop_new(&loop), 0);
    cr_assert_eq(async_task_spawn(&s.waiter, loop, imap_waiter, &s, NULL), 0);
    cr_assert_eq(async_task_spawn(NULL, loop, imap_opener, &s, NULL), 0);
    cr_expect_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_expect_eq(s.ticks, 5);
    if (cancel && !free_it) {
        cr_expect_eq(s.seen, ASYNC_ECANCELED, "the cancelled waiter returned before the gate opened");
        cr_expect_eq(s.open_at_return, 0);
    } else {
        cr_expect_eq(s.seen, 1, "the other task ran on while the waiter waited");
    }
    async_imap_free(s.it); /* NULL when the waiter freed it; waits for the chunk */
    cr_expect_eq(atomic_load(&g.passed_by), 3, "the other task opened the gate");
    if (free_it) {
        cr_expect_eq(s.open_at_return, 1, "free returned only after the running chunk ended");
    } else if (cancel) {
        cr_expect_eq(s.result, ASYNC_ECANCELED, "got %s", async_errname(s.result));
    } else {
        cr_expect_eq(s.result, 0, "got %s", async_errname(s.result));
        cr_expect_eq(s.v, 0);
    }
    cr_expect_eq(async_loop_destroy(loop), 0);
    async_executor_free(ex);
}

Test(exec_wait, imap_next_in_a_task_waits_through_the_loop) { imap_scene(false, false); }

Test(exec_wait, imap_next_in_a_cancelled_task_stops_waiting) { imap_scene(false, true); }

Test(exec_wait, imap_free_in_a_task_waits_through_the_loop) { imap_scene(true, false); }

Test(exec_wait, imap_free_in_a_cancelled_task_still_waits_for_running_chunks)
{
    imap_scene(true, true);
}
