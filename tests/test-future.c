/* Futures on their own, completed by hand from threads: states, results and
 * errors, cancel rules, callbacks (order and thread), blocking waits with
 * deadlines, the wait modes, as_completed, and awaiting from tasks, including
 * a task that times out or is cancelled while a completion is in flight.
 * Every test checks with the counting allocator that nothing leaks. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>
#include <async.h>
#include <async/future.h>
#include "support/alloc.h"
#include "support/teardown.h"

/* Timing slack for slow CI; only lower bounds are asserted. */
#define MS ASYNC_MSEC(1)

static void setup(void) { test_alloc_install(); }
static void teardown(void)
{
    TEARDOWN_CHECK_NO_LEAK();
    test_alloc_uninstall();
}
TestSuite(future, .init = setup, .fini = teardown, .timeout = 20);

static async_future_t *fresh(void)
{
    async_future_t *f = NULL;
    cr_assert_eq(async_future_new(&f), 0);
    return f;
}

Test(future, result_roundtrip)
{
    async_future_t *f = fresh();
    cr_expect_eq(async_future_state(f), ASYNC_FUTURE_PENDING);
    cr_expect_eq(async_future_error(f), ASYNC_EAGAIN);
    cr_expect_not(async_future_done(f));
    cr_expect_str_eq(async_future_message(f), "");
    cr_expect_eq(async_future_set_running(f), 0);
    cr_expect_eq(async_future_set_running(f), ASYNC_EALREADY);
    cr_expect_eq(async_future_state(f), ASYNC_FUTURE_RUNNING);
    cr_expect_eq(async_future_set_result(f, "hello", 6), 0);
    cr_expect_eq(async_future_set_result(f, "x", 2), ASYNC_EDONE);
    cr_expect_eq(async_future_set_error(f, ASYNC_EIO, "no"), ASYNC_EDONE);
    cr_expect_eq(async_future_set_running(f), ASYNC_EDONE);
    const void *data;
    size_t size;
    cr_expect_eq(async_future_result(f, &data, &size), 0);
    cr_expect_eq(size, 6);
    cr_expect_str_eq(data, "hello");
    cr_expect_eq(async_future_wait(f), 0);
    size_t idx;
    cr_expect_eq(async_future_error_index(f, &idx), ASYNC_EINVAL);
    async_future_unref(f);
    async_future_unref(NULL);
}

Test(future, refs_keep_it_alive)
{
    async_future_t *f = fresh();
    async_future_ref(f);
    async_future_unref(f);
    cr_expect_eq(async_future_set_result(f, NULL, 0), 0);
    cr_expect_eq(async_future_result(f, NULL, NULL), 0);
    async_future_unref(f);
}

Test(future, errors_and_messages)
{
    async_future_t *f = fresh();
    cr_expect_eq(async_future_set_error(f, ASYNC_EIO, "disk on fire"), 0);
    cr_expect_eq(async_future_state(f), ASYNC_FUTURE_FAILED);
    cr_expect_eq(async_future_error(f), ASYNC_EIO);
    cr_expect_str_eq(async_future_message(f), "disk on fire");
    const void *data = (void *)1;
    size_t size = 9;
    cr_expect_eq(async_future_result(f, &data, &size), ASYNC_EIO);
    cr_expect_null(data);
    cr_expect_eq(size, 0);
    async_future_unref(f);

    /* Codes >= 0 become ASYNC_EWORK; long messages are cut. */
    f = fresh();
    char longmsg[1000];
    memset(longmsg, 'a', sizeof longmsg - 1);
    longmsg[sizeof longmsg - 1] = '\0';
    cr_expect_eq(async_future_set_error(f, 7, longmsg), 0);
    cr_expect_eq(async_future_error(f), ASYNC_EWORK);
    cr_expect_eq(strlen(async_future_message(f)), ASYNC_FUTURE_MSG_MAX - 1);
    async_future_unref(f);

    f = fresh();
    cr_expect_eq(async_future_set_error(f, ASYNC_EIO, NULL), 0);
    cr_expect_str_eq(async_future_message(f), "");
    async_future_unref(f);
}

Test(future, cancel_rules)
{
    async_future_t *f = fresh();
    cr_expect_eq(async_future_cancel(f), 0);
    cr_expect_eq(async_future_state(f), ASYNC_FUTURE_CANCELLED);
    cr_expect_eq(async_future_error(f), ASYNC_ECANCELED);
    cr_expect(strlen(async_future_message(f)) > 0);
    cr_expect_eq(async_future_cancel(f), ASYNC_EALREADY);
    cr_expect_eq(async_future_set_running(f), ASYNC_ECANCELED);
    cr_expect_eq(async_future_set_result(f, "x", 1), ASYNC_EDONE);
    cr_expect_eq(async_future_wait(f), ASYNC_ECANCELED);
    async_future_unref(f);

    f = fresh();
    async_future_set_running(f);
    cr_expect_eq(async_future_cancel(f), ASYNC_EBUSY);
    async_future_set_result(f, NULL, 0);
    cr_expect_eq(async_future_cancel(f), ASYNC_EDONE);
    async_future_unref(f);
}

/* --- callbacks ---------------------------------------------------------- */

typedef struct {
    int order[8];
    int n;
    pthread_t thread[8];
} cb_log_t;

static cb_log_t cblog;

static void log_cb(async_future_t *f, void *arg)
{
    (void)f;
    cblog.thread[cblog.n] = pthread_self();
    cblog.order[cblog.n++] = (int)(intptr_t)arg;
}

static void *finish_later(void *arg)
{
    usleep(20000);
    async_future_set_result(arg, "ok", 3);
    return NULL;
}

Test(future, callbacks_order_and_thread)
{
    memset(&cblog, 0, sizeof cblog);
    async_future_t *f = fresh();
    for (int i = 1; i <= 4; i++) cr_assert_eq(async_future_on_done(f, log_cb, (void *)(intptr_t)i), 0);
    cr_expect_eq(cblog.n, 0);
    pthread_t t;
    pthread_create(&t, NULL, finish_later, f);
    pthread_join(t, NULL);
    cr_assert_eq(cblog.n, 4);
    for (int i = 0; i < 4; i++) {
        cr_expect_eq(cblog.order[i], i + 1);
        cr_expect(pthread_equal(cblog.thread[i], t), "callback %d ran on the finishing thread", i);
    }
    /* Added to a finished future: runs at once, on this thread. */
    cr_expect_eq(async_future_on_done(f, log_cb, (void *)5), 0);
    cr_expect_eq(cblog.n, 5);
    cr_expect(pthread_equal(cblog.thread[4], pthread_self()));
    cr_expect_eq(async_future_on_done(f, NULL, NULL), ASYNC_EINVAL);
    async_future_unref(f);
}

static void cb_frees(async_future_t *f, void *arg)
{
    (void)arg;
    async_future_unref(f); /* drops a reference the callback owns */
}

Test(future, callback_may_free_its_reference)
{
    async_future_t *f = fresh();
    async_future_ref(f);
    async_future_on_done(f, cb_frees, NULL);
    async_future_cancel(f);
    cr_expect_eq(async_future_state(f), ASYNC_FUTURE_CANCELLED);
    async_future_unref(f);
}

Test(future, callback_allocation_failure)
{
    async_future_t *f = fresh();
    cr_assert_eq(async_future_on_done(f, log_cb, NULL), 0); /* inline slot */
    test_alloc_fail_after(0);
    cr_expect_eq(async_future_on_done(f, log_cb, NULL), ASYNC_ENOMEM);
    test_alloc_fail_after(-1);
    memset(&cblog, 0, sizeof cblog);
    async_future_set_result(f, NULL, 0);
    cr_expect_eq(cblog.n, 1, "only the callback that was added ran");
    async_future_unref(f);
}

/* --- blocking waits ---------------------------------------------------------- */

Test(future, wait_deadline_leaves_it_pending)
{
    async_future_t *f = fresh();
    int64_t t0 = async_now();
    cr_expect_eq(async_future_wait_dl(f, async_deadline_after(30 * MS)), ASYNC_ETIMEDOUT);
    cr_expect_geq(async_now() - t0, 30 * MS);
    cr_expect_eq(async_future_state(f), ASYNC_FUTURE_PENDING);
    cr_expect_eq(async_future_wait_dl(f, 0), ASYNC_ETIMEDOUT);
    async_future_set_result(f, NULL, 0);
    cr_expect_eq(async_future_wait_dl(f, 0), 0);
    async_future_unref(f);
}

Test(future, wait_wakes_when_finished_elsewhere)
{
    async_future_t *f = fresh();
    pthread_t t;
    int64_t t0 = async_now();
    pthread_create(&t, NULL, finish_later, f);
    cr_expect_eq(async_future_wait_dl(f, async_deadline_after(ASYNC_SEC(10))), 0);
    cr_expect_geq(async_now() - t0, 15 * MS);
    pthread_join(t, NULL);
    async_future_unref(f);
}

/* Finishes f after delay and, when gate is set, once *gate is nonzero: the
 * order of the finishes is then the test's, not the scheduler's, which on a
 * loaded machine can run a thread tens of ms late. */
typedef struct {
    async_future_t *f;
    int64_t delay;
    int code;
    _Atomic int *gate;
} finisher_t;

static void *finish_with(void *arg)
{
    finisher_t *x = arg;
    usleep((useconds_t)(x->delay / 1000));
    while (x->gate && !atomic_load(x->gate)) usleep(200);
    if (x->code) async_future_set_error(x->f, x->code, "failed");
    else async_future_set_result(x->f, NULL, 0);
    return NULL;
}

Test(future, wait_modes)
{
    async_future_t *fs[3] = {fresh(), fresh(), fresh()};
    size_t idx = 99;
    cr_expect_eq(async_futures_wait_dl(fs, 3, ASYNC_WAIT_FIRST_COMPLETED, &idx,
                                       async_deadline_after(10 * MS)), ASYNC_ETIMEDOUT);
    _Atomic int fail_now = 0, last_now = 0;
    finisher_t a = {fs[2], 20 * MS, 0, NULL}, b = {fs[1], 0, ASYNC_EIO, &fail_now},
               c = {fs[0], 0, 0, &last_now};
    pthread_t ta, tb, tc;
    pthread_create(&ta, NULL, finish_with, &a);
    pthread_create(&tb, NULL, finish_with, &b);
    pthread_create(&tc, NULL, finish_with, &c);
    cr_expect_eq(async_futures_wait(fs, 3, ASYNC_WAIT_FIRST_COMPLETED, &idx), 0);
    cr_expect_eq(idx, 2);
    atomic_store(&fail_now, 1);
    cr_expect_eq(async_futures_wait(fs, 3, ASYNC_WAIT_FIRST_FAILURE, &idx), 0);
    cr_expect_eq(idx, 1);
    cr_expect_eq(async_future_error(fs[1]), ASYNC_EIO);
    cr_expect_not(async_future_done(fs[0]));
    atomic_store(&last_now, 1);
    cr_expect_eq(async_futures_wait(fs, 3, ASYNC_WAIT_ALL, &idx), 0);
    cr_expect_eq(idx, 3);
    cr_expect(async_future_done(fs[0]));
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    pthread_join(tc, NULL);
    /* FIRST_FAILURE without failures waits for all and reports n. */
    async_future_t *ok[2] = {fresh(), fresh()};
    async_future_set_result(ok[0], NULL, 0);
    async_future_set_result(ok[1], NULL, 0);
    cr_expect_eq(async_futures_wait(ok, 2, ASYNC_WAIT_FIRST_FAILURE, &idx), 0);
    cr_expect_eq(idx, 2);
    cr_expect_eq(async_futures_wait(ok, 0, ASYNC_WAIT_ALL, NULL), 0);
    cr_expect_eq(async_futures_wait(NULL, 2, ASYNC_WAIT_ALL, NULL), ASYNC_EINVAL);
    cr_expect_eq(async_futures_wait(ok, 2, (async_wait_mode_t)42, NULL), ASYNC_EINVAL);
    async_future_t *holes[2] = {ok[0], NULL};
    cr_expect_eq(async_futures_wait(holes, 2, ASYNC_WAIT_ALL, NULL), ASYNC_EINVAL);
    for (int i = 0; i < 3; i++) async_future_unref(fs[i]);
    async_future_unref(ok[0]);
    async_future_unref(ok[1]);
}

Test(future, wait_all_timeout_lower_bound)
{
    async_future_t *fs[2] = {fresh(), fresh()};
    async_future_set_result(fs[0], NULL, 0);
    int64_t t0 = async_now();
    cr_expect_eq(async_futures_wait_dl(fs, 2, ASYNC_WAIT_ALL, NULL, async_deadline_after(25 * MS)),
                 ASYNC_ETIMEDOUT);
    cr_expect_geq(async_now() - t0, 25 * MS);
    cr_expect_eq(async_futures_wait_dl(fs, 2, ASYNC_WAIT_FIRST_FAILURE, NULL,
                                       async_deadline_after(5 * MS)), ASYNC_ETIMEDOUT);
    async_future_unref(fs[0]);
    async_future_unref(fs[1]);
}

Test(future, as_completed_order_and_timeout)
{
    async_future_t *fs[3] = {fresh(), fresh(), fresh()};
    async_future_set_result(fs[1], NULL, 0);
    async_as_completed_t *it;
    cr_assert_eq(async_as_completed_new(&it, fs, 3), 0);
    size_t idx;
    cr_expect_eq(async_as_completed_next_dl(it, &idx, ASYNC_FOREVER), 0);
    cr_expect_eq(idx, 1);
    int64_t t0 = async_now();
    cr_expect_eq(async_as_completed_next_dl(it, &idx, async_deadline_after(20 * MS)), ASYNC_ETIMEDOUT);
    cr_expect_geq(async_now() - t0, 20 * MS);
    cr_expect_eq(async_as_completed_unfinished(it), 2);
    cr_expect_str_eq(async_as_completed_message(it), "2 of 3 futures unfinished");
    finisher_t a = {fs[2], 10 * MS, ASYNC_EIO, NULL};
    pthread_t t;
    pthread_create(&t, NULL, finish_with, &a);
    cr_expect_eq(async_as_completed_next_dl(it, &idx, ASYNC_FOREVER), 0);
    cr_expect_eq(idx, 2);
    cr_expect_str_eq(async_as_completed_message(it), "");
    pthread_join(t, NULL);
    async_future_cancel(fs[0]);
    cr_expect_eq(async_as_completed_next_dl(it, &idx, ASYNC_FOREVER), 0);
    cr_expect_eq(idx, 0);
    cr_expect_eq(async_as_completed_next_dl(it, &idx, ASYNC_FOREVER), ASYNC_EEOF);
    cr_expect_eq(async_as_completed_unfinished(it), 0);
    for (int i = 0; i < 3; i++) async_future_unref(fs[i]);
    async_as_completed_free(it); /* holds its own references */
}

Test(future, as_completed_free_early_and_bad_input)
{
    async_future_t *fs[2] = {fresh(), fresh()};
    async_as_completed_t *it;
    cr_assert_eq(async_as_completed_new(&it, fs, 2), 0);
    async_as_completed_free(it);
    async_future_set_result(fs[0], NULL, 0); /* no listener left to touch */
    cr_expect_eq(async_as_completed_new(&it, NULL, 2), ASYNC_EINVAL);
    test_alloc_fail_after(1);
    cr_expect_eq(async_as_completed_new(&it, fs, 2), ASYNC_ENOMEM);
    test_alloc_fail_after(-1);
    cr_assert_eq(async_as_completed_new(&it, fs, 0), 0);
    size_t idx;
    cr_expect_eq(async_as_completed_next_dl(it, &idx, ASYNC_FOREVER), ASYNC_EEOF);
    async_as_completed_free(it);
    async_future_unref(fs[0]);
    async_future_unref(fs[1]);
}

/* --- awaiting from tasks ------------------------------------------------------ */

typedef struct {
    async_future_t *f;
    int64_t deadline;
    int rc;
    bool done;
} awaiter_t;

static int await_task(void *arg, void **result)
{
    (void)result;
    awaiter_t *a = arg;
    a->rc = async_future_await_dl(a->f, a->deadline);
    a->done = true;
    return 0;
}

static int ticks;
static int ticker(void *arg, void **result)
{
    (void)result;
    awaiter_t *a = arg;
    while (!a->done) {
        ticks++;
        async_sleep(ASYNC_MSEC(1));
    }
    return 0;
}

Test(future, await_lets_the_loop_run)
{
    async_loop_t *loop;
    cr_assert_eq(async_loop_new(&loop), 0);
    awaiter_t a = {fresh(), ASYNC_FOREVER, 1, false};
    ticks = 0;
    cr_assert_eq(async_task_spawn(NULL, loop, await_task, &a, NULL), 0);
    cr_assert_eq(async_task_spawn(NULL, loop, ticker, &a, NULL), 0);
    finisher_t x = {a.f, 50 * MS, ASYNC_EIO, NULL};
    pthread_t t;
    pthread_create(&t, NULL, finish_with, &x);
    cr_expect_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    pthread_join(t, NULL);
    cr_expect_eq(a.rc, ASYNC_EIO);
    cr_expect_gt(ticks, 5, "the loop ran other tasks while one awaited (%d ticks)", ticks);
    cr_expect_eq(async_loop_destroy(loop), 0);
    async_future_unref(a.f);
}

Test(future, await_outside_task_and_finished)
{
    async_future_t *f = fresh();
    cr_expect_eq(async_future_await(f), ASYNC_ENOTASK);
    async_future_set_result(f, NULL, 0);
    cr_expect_eq(async_future_await(f), 0, "a finished future needs no task");
    async_future_unref(f);
}

Test(future, await_timeout_then_late_completion)
{
    async_loop_t *loop;
    cr_assert_eq(async_loop_new(&loop), 0);
    int64_t t0 = async_now();
    awaiter_t a = {fresh(), t0 + 20 * MS, 1, false};
    cr_assert_eq(async_task_spawn(NULL, loop, await_task, &a, NULL), 0);
    cr_expect_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_expect_eq(a.rc, ASYNC_ETIMEDOUT);
    cr_expect_geq(async_now() - t0, 20 * MS);
    async_future_set_result(a.f, NULL, 0); /* nobody listens any more */
    cr_expect_eq(async_loop_destroy(loop), 0);
    async_future_unref(a.f);
}

static int cancel_then_finish(void *arg, void **result)
{
    (void)result;
    async_task_t *victim = arg;
    async_yield();
    /* Finish the future from a thread while the awaiter is being cancelled:
     * the post may arrive after the awaiter left. */
    async_task_cancel(*victim);
    return 0;
}

static void *finish_now(void *arg)
{
    async_future_set_result(arg, NULL, 0);
    return NULL;
}

Test(future, await_cancelled_while_post_in_flight)
{
    for (int round = 0; round < 50; round++) {
        async_loop_t *loop;
        cr_assert_eq(async_loop_new(&loop), 0);
        awaiter_t a = {fresh(), ASYNC_FOREVER, 1, false};
        async_task_t h;
        cr_assert_eq(async_task_spawn(&h, loop, await_task, &a, NULL), 0);
        cr_assert_eq(async_task_spawn(NULL, loop, cancel_then_finish, &h, NULL), 0);
        pthread_t t;
        pthread_create(&t, NULL, finish_now, a.f);
        cr_expect_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
        pthread_join(t, NULL);
        cr_expect(a.rc == ASYNC_ECANCELED || a.rc == 0, "rc %d", a.rc);
        cr_expect_eq(async_loop_destroy(loop), 0);
        async_future_unref(a.f);
    }
}

static _Atomic int await_many_timed_out;

static int await_many_task(void *arg, void **result)
{
    (void)result;
    async_future_t **fs = arg;
    size_t idx = 99;
    int r = async_futures_await_dl(fs, 3, ASYNC_WAIT_FIRST_COMPLETED, &idx, ASYNC_FOREVER);
    cr_expect_eq(r, 0);
    cr_expect_eq(idx, 1);
    r = async_futures_await_dl(fs, 3, ASYNC_WAIT_FIRST_FAILURE, &idx, async_deadline_after(10 * MS));
    cr_expect_eq(r, ASYNC_ETIMEDOUT);
    atomic_store(&await_many_timed_out, 1); /* only now do fs[0] and fs[2] finish */
    r = async_futures_await_dl(fs, 3, ASYNC_WAIT_ALL, &idx, ASYNC_FOREVER);
    cr_expect_eq(r, 0);
    cr_expect_eq(idx, 3);
    return 0;
}

Test(future, await_many_modes)
{
    async_loop_t *loop;
    cr_assert_eq(async_loop_new(&loop), 0);
    async_future_t *fs[3] = {fresh(), fresh(), fresh()};
    cr_assert_eq(async_task_spawn(NULL, loop, await_many_task, fs, NULL), 0);
    atomic_store(&await_many_timed_out, 0);
    finisher_t a = {fs[1], 10 * MS, 0, NULL}, b = {fs[0], 0, 0, &await_many_timed_out},
               c = {fs[2], 0, 0, &await_many_timed_out};
    pthread_t ta, tb, tc;
    pthread_create(&ta, NULL, finish_with, &a);
    pthread_create(&tb, NULL, finish_with, &b);
    pthread_create(&tc, NULL, finish_with, &c);
    cr_expect_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    pthread_join(tc, NULL);
    cr_expect_eq(async_loop_destroy(loop), 0);
    for (int i = 0; i < 3; i++) async_future_unref(fs[i]);
}

Test(future, unfinished_future_with_callbacks_frees_them)
{
    async_future_t *f = fresh();
    cr_assert_eq(async_future_on_done(f, log_cb, NULL), 0);
    cr_assert_eq(async_future_on_done(f, log_cb, NULL), 0);
    async_future_unref(f); /* never finished: the callbacks never run, nothing leaks */
}

/* The wait modes that listen on every future allocate, and say so when the
 * allocation fails; WAIT_ALL never allocates. */
Test(future, futures_wait_reports_enomem)
{
    async_future_t *fs[2];
    cr_assert_eq(async_future_new(&fs[0]), 0);
    cr_assert_eq(async_future_new(&fs[1]), 0);
    size_t index = 7;
    test_alloc_fail_after(0);
    int r = async_futures_wait_dl(fs, 2, ASYNC_WAIT_FIRST_COMPLETED, &index, async_deadline_after(ASYNC_MSEC(1)));
    int all = async_futures_wait_dl(fs, 2, ASYNC_WAIT_ALL, &index, async_deadline_after(ASYNC_MSEC(1)));
    test_alloc_fail_after(-1);
    cr_expect_eq(r, ASYNC_ENOMEM, "got %s", async_strerror(r));
    cr_expect_eq(all, ASYNC_ETIMEDOUT, "got %s", async_strerror(all));
    cr_expect_eq(index, 7, "untouched");
    async_future_unref(fs[0]);
    async_future_unref(fs[1]);
}

/* --- as_completed from a task: only the task sleeps --------------------------- */

typedef struct {
    async_as_completed_t *it;
    async_future_t *f;
    async_task_t waiter;
    _Atomic int waiting;
    int result;
    size_t index;
    int ticks;      /* the other task's turns while the waiter waited */
    int seen;       /* the waiter's result once those turns were over */
    bool cancel;    /* the other task cancels the waiter instead of finishing f */
} ac_scene_t;

static int ac_waiter(void *arg, void **res)
{
    (void)res;
    ac_scene_t *s = arg;
    atomic_store(&s->waiting, 1);
    /* If the call blocked the loop's thread, the other task could not run
     * and finish f: the call would time out instead. */
    s->result = async_as_completed_next_dl(s->it, &s->index, async_deadline_after(ASYNC_SEC(10)));
    return 0;
}

static int ac_finisher(void *arg, void **res)
{
    (void)res;
    ac_scene_t *s = arg;
    while (!atomic_load(&s->waiting)) async_yield();
    for (s->ticks = 0; s->ticks < 5; s->ticks++) async_sleep(MS);
    s->seen = s->result;
    if (s->cancel) async_task_cancel(s->waiter);
    else cr_expect_eq(async_future_set_result(s->f, "x", 1), 0);
    return 0;
}

static void ac_scene(bool cancel)
{
    async_future_t *fs[2] = {fresh(), fresh()};
    ac_scene_t s = {.f = fs[1], .result = 1, .index = 99, .cancel = cancel};
    cr_assert_eq(async_as_completed_new(&s.it, fs, 2), 0);
    async_loop_t *loop;
    cr_assert_eq(async_loop_new(&loop), 0);
    cr_assert_eq(async_task_spawn(&s.waiter, loop, ac_waiter, &s, NULL), 0);
    cr_assert_eq(async_task_spawn(NULL, loop, ac_finisher, &s, NULL), 0);
    cr_expect_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_expect_eq(s.ticks, 5);
    cr_expect_eq(s.seen, 1, "the other task ran on while the waiter waited");
    if (cancel) {
        cr_expect_eq(s.result, ASYNC_ECANCELED, "got %s", async_errname(s.result));
        cr_expect_eq(s.index, 99, "nothing yielded");
        cr_expect_eq(async_as_completed_unfinished(s.it), 2);
    } else {
        cr_expect_eq(s.result, 0, "got %s", async_errname(s.result));
        cr_expect_eq(s.index, 1);
    }
    cr_expect_eq(async_loop_destroy(loop), 0);
    async_as_completed_free(s.it);
    async_future_unref(fs[0]);
    async_future_unref(fs[1]);
}

Test(future, as_completed_in_a_task_waits_through_the_loop) { ac_scene(false); }

Test(future, as_completed_in_a_cancelled_task_stops_waiting) { ac_scene(true); }

/* A task that times out leaves nothing listed: a completion afterwards
 * touches nothing of it, and a final future is yielded even to a task past
 * its deadline. */
static int ac_timeout_task(void *arg, void **res)
{
    (void)res;
    ac_scene_t *s = arg;
    size_t i;
    s->result = async_as_completed_next_dl(s->it, &i, async_deadline_after(5 * MS));
    cr_expect_str_eq(async_as_completed_message(s->it), "1 of 1 futures unfinished");
    cr_expect_eq(async_future_set_result(s->f, NULL, 0), 0);
    s->seen = async_as_completed_next_dl(s->it, &i, 0);
    return 0;
}

Test(future, as_completed_in_a_task_times_out_then_yields)
{
    async_future_t *f = fresh();
    ac_scene_t s = {.f = f, .result = 1, .seen = 1};
    cr_assert_eq(async_as_completed_new(&s.it, &f, 1), 0);
    async_loop_t *loop;
    cr_assert_eq(async_loop_new(&loop), 0);
    cr_assert_eq(async_task_spawn(NULL, loop, ac_timeout_task, &s, NULL), 0);
    cr_expect_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_expect_eq(s.result, ASYNC_ETIMEDOUT);
    cr_expect_eq(s.seen, 0, "a final future is yielded at once, deadline passed or not");
    cr_expect_eq(async_loop_destroy(loop), 0);
    async_as_completed_free(s.it);
    async_future_unref(f);
}
