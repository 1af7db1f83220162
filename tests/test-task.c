/* Tasks: spawn, await, cancel, sleep, yield, descriptors, gather, and the
 * bad-input cases each with its precise error. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <unistd.h>
#include <string.h>
#include "support/run.h"
#include "support/alloc.h"

static int ret_arg(void *arg, void **res)
{
    *res = arg;
    return 0;
}

static int fail_with(void *arg, void **res)
{
    (void)res;
    return (int)(intptr_t)arg;
}

static int sleeper(void *arg, void **res)
{
    (void)res;
    return async_sleep(ASYNC_MSEC((intptr_t)arg));
}

static int t_await(void *arg, void **res)
{
    (void)arg, (void)res;
    async_task_t a, b;
    cr_assert_eq(async_task_spawn(&a, NULL, ret_arg, (void *)42, NULL), 0);
    cr_assert_eq(async_task_spawn(&b, NULL, fail_with, (void *)(intptr_t)ASYNC_EIO, NULL), 0);
    void *r = NULL;
    cr_assert_eq(async_task_await(a, &r), 0);
    cr_assert_eq((intptr_t)r, 42);
    cr_assert_eq(async_task_await(b, NULL), ASYNC_EIO);
    /* Both handles are spent now. */
    cr_assert_eq(async_task_await(a, NULL), ASYNC_ESRCH);
    cr_assert_eq(async_task_cancel(b), ASYNC_ESRCH);
    cr_assert_eq(async_task_done(a), ASYNC_ESRCH);
    return 0;
}
Test(task, await_returns_result_and_code_then_handle_is_spent, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_await, NULL, NULL), 0);
}

static int t_finished(void *arg, void **res)
{
    (void)arg, (void)res;
    async_task_t a;
    cr_assert_eq(async_task_spawn(&a, NULL, ret_arg, (void *)7, NULL), 0);
    cr_assert_eq(async_sleep(ASYNC_MSEC(5)), 0);
    cr_assert_eq(async_task_done(a), 1);
    void *r;
    cr_assert_eq(async_task_await(a, &r), 0, "awaiting a finished task gives its result");
    cr_assert_eq((intptr_t)r, 7);
    return 0;
}
Test(task, await_finished_task, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_finished, NULL, NULL), 0);
}

static int t_self(void *arg, void **res)
{
    (void)arg, (void)res;
    cr_assert_eq(async_task_await(async_task_self(), NULL), ASYNC_EDEADLK);
    cr_assert_eq(async_task_await((async_task_t){0}, NULL), ASYNC_ESRCH);
    return 0;
}
Test(task, await_self_and_null_handle, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_self, NULL, NULL), 0);
}

Test(task, blocking_calls_outside_a_task, .timeout = 10)
{
    cr_assert_eq(async_sleep(1), ASYNC_ENOTASK);
    cr_assert_eq(async_yield(), ASYNC_ENOTASK);
    cr_assert_eq(async_wait_fd(0, ASYNC_READABLE), ASYNC_ENOTASK);
    cr_assert_eq(async_task_await((async_task_t){0}, NULL), ASYNC_ENOTASK);
    cr_assert_eq(async_task_suspend_dl(ASYNC_FOREVER), ASYNC_ENOTASK);
    cr_assert_null(async_task_self().ptr_);
    cr_assert_not(async_task_cancelled());
}

Test(task, spawn_without_a_loop, .timeout = 10)
{
    async_task_t t;
    cr_assert_eq(async_task_spawn(&t, NULL, ret_arg, NULL, NULL), ASYNC_ENOLOOP);
    async_loop_t *loop;
    cr_assert_eq(async_loop_new(&loop), 0);
    cr_assert_eq(async_task_spawn(&t, loop, NULL, NULL, NULL), ASYNC_EINVAL);
    cr_assert_eq(async_task_spawn(&t, loop, ret_arg, NULL,
                                  &(async_task_opts_t){.stack_size = (size_t)1 << 40}),
                 ASYNC_EINVAL);
    cr_assert_eq(async_loop_destroy(loop), 0);
}

static int t_await_dl(void *arg, void **res)
{
    (void)arg, (void)res;
    async_task_t s;
    cr_assert_eq(async_task_spawn(&s, NULL, sleeper, (void *)100, NULL), 0);
    int64_t t0 = async_now();
    cr_assert_eq(async_task_await_dl(s, NULL, t0 + ASYNC_MSEC(20)), ASYNC_ETIMEDOUT);
    cr_assert_geq(async_now() - t0, ASYNC_MSEC(20), "a deadline never fires early");
    cr_assert_eq(async_task_done(s), 0, "the task runs on");
    /* A deadline in the past fails at once without waiting. */
    cr_assert_eq(async_task_await_dl(s, NULL, async_now() - 1), ASYNC_ETIMEDOUT);
    cr_assert_eq(async_task_await(s, NULL), 0, "the handle is still valid");
    return 0;
}
Test(task, await_deadline_leaves_task_running, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_await_dl, NULL, NULL), 0);
}

struct cancel_probe {
    int first, second, third;
    bool saw_flag, cleaned;
};

static int cancellable(void *arg, void **res)
{
    (void)res;
    struct cancel_probe *p = arg;
    p->first = async_sleep(ASYNC_SEC(10));
    p->saw_flag = async_task_cancelled();
    p->second = async_yield();
    p->third = async_sleep(ASYNC_MSEC(1));
    p->cleaned = true;
    return p->first;
}

static int t_cancel(void *arg, void **res)
{
    (void)arg, (void)res;
    struct cancel_probe p = {0};
    async_task_t t;
    cr_assert_eq(async_task_spawn(&t, NULL, cancellable, &p, NULL), 0);
    cr_assert_eq(async_sleep(ASYNC_MSEC(5)), 0);
    int64_t t0 = async_now();
    cr_assert_eq(async_task_cancel(t), 0);
    cr_assert_eq(async_task_cancel(t), ASYNC_EALREADY);
    cr_assert_eq(async_task_await(t, NULL), ASYNC_ECANCELED);
    cr_assert_lt(async_now() - t0, ASYNC_SEC(5), "the cancelled sleep ended early");
    cr_assert_eq(p.first, ASYNC_ECANCELED);
    cr_assert_eq(p.second, ASYNC_ECANCELED);
    cr_assert_eq(p.third, ASYNC_ECANCELED);
    cr_assert(p.saw_flag && p.cleaned);

    async_task_t done;
    cr_assert_eq(async_task_spawn(&done, NULL, ret_arg, NULL, NULL), 0);
    cr_assert_eq(async_yield(), 0);
    cr_assert_eq(async_task_cancel(done), ASYNC_EDONE);
    cr_assert_eq(async_task_await(done, NULL), 0);
    return 0;
}
Test(task, cancel_current_and_later_blocking_calls, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_cancel, NULL, NULL), 0);
}

static int t_cancel_before_start(void *arg, void **res)
{
    (void)arg, (void)res;
    struct cancel_probe p = {0};
    async_task_t t;
    cr_assert_eq(async_task_spawn(&t, NULL, cancellable, &p, NULL), 0);
    cr_assert_eq(async_task_cancel(t), 0);
    cr_assert_eq(async_task_await(t, NULL), ASYNC_ECANCELED);
    cr_assert(p.cleaned, "a task cancelled before it ran still runs, to clean up");
    return 0;
}
Test(task, cancel_before_start_still_runs, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_cancel_before_start, NULL, NULL), 0);
}

static int t_sleep(void *arg, void **res)
{
    (void)arg, (void)res;
    int64_t t0 = async_now();
    cr_assert_eq(async_sleep(ASYNC_MSEC(30)), 0);
    cr_assert_geq(async_now() - t0, ASYNC_MSEC(30));
    t0 = async_now();
    cr_assert_eq(async_sleep_dl(t0 - ASYNC_SEC(1)), 0, "a past deadline returns at once");
    cr_assert_eq(async_sleep(-5), 0);
    cr_assert_lt(async_now() - t0, ASYNC_SEC(1) * test_slack());
    return 0;
}
Test(task, sleep_never_early_and_past_deadline, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_sleep, NULL, NULL), 0);
}

struct trace {
    char log[64];
    int n;
};

static int yielder(void *arg, void **res)
{
    (void)res;
    struct trace *t = *(struct trace **)arg;
    char c = ((char *)arg)[sizeof(void *)];
    for (int i = 0; i < 3; i++) {
        t->log[t->n++] = c;
        cr_assert_eq(async_yield(), 0);
    }
    return 0;
}

static int t_yield(void *arg, void **res)
{
    (void)arg, (void)res;
    struct trace tr = {0};
    struct { struct trace *t; char c; } a = {&tr, 'a'}, b = {&tr, 'b'};
    async_task_t ta, tb;
    cr_assert_eq(async_task_spawn(&ta, NULL, yielder, &a, NULL), 0);
    cr_assert_eq(async_task_spawn(&tb, NULL, yielder, &b, NULL), 0);
    cr_assert_eq(async_task_await(ta, NULL), 0);
    cr_assert_eq(async_task_await(tb, NULL), 0);
    cr_assert_str_eq(tr.log, "ababab");
    return 0;
}
Test(task, yield_interleaves_in_spawn_order, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_yield, NULL, NULL), 0);
}

static int writer(void *arg, void **res)
{
    (void)res;
    cr_assert_eq(async_sleep(ASYNC_MSEC(10)), 0);
    cr_assert_eq(write(*(int *)arg, "x", 1), 1);
    return 0;
}

static int t_fd(void *arg, void **res)
{
    (void)arg, (void)res;
    int p[2];
    cr_assert_eq(pipe(p), 0);
    cr_assert_eq(async_wait_fd_dl(p[0], ASYNC_READABLE, async_deadline_after(ASYNC_MSEC(10))),
                 ASYNC_ETIMEDOUT);
    async_task_t w;
    cr_assert_eq(async_task_spawn(&w, NULL, writer, &p[1], NULL), 0);
    cr_assert_eq(async_wait_fd(p[0], ASYNC_READABLE), 0);
    char c;
    cr_assert_eq(read(p[0], &c, 1), 1);
    cr_assert_eq(async_wait_fd(p[1], ASYNC_WRITABLE), 0);
    cr_assert_eq(async_wait_fd(-1, ASYNC_READABLE), ASYNC_EINVAL);
    cr_assert_eq(async_wait_fd(p[0], 0), ASYNC_EINVAL);
    cr_assert_eq(async_wait_fd(p[0], 8), ASYNC_EINVAL);
    cr_assert_eq(async_task_await(w, NULL), 0);
    close(p[0]);
    close(p[1]);
    return 0;
}
Test(task, wait_fd_readable_writable_timeout, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_fd, NULL, NULL), 0);
}

static int t_gather(void *arg, void **res)
{
    (void)arg, (void)res;
    async_task_t t[4];
    cr_assert_eq(async_task_spawn(&t[0], NULL, sleeper, (void *)20, NULL), 0);
    cr_assert_eq(async_task_spawn(&t[1], NULL, fail_with, (void *)(intptr_t)ASYNC_EPIPE, NULL), 0);
    cr_assert_eq(async_task_spawn(&t[2], NULL, ret_arg, (void *)3, NULL), 0);
    cr_assert_eq(async_task_spawn(&t[3], NULL, fail_with, (void *)(intptr_t)ASYNC_EIO, NULL), 0);
    void *r[4];
    int e[4];
    cr_assert_eq(async_gather(t, 4, r, e), ASYNC_EPIPE, "first error in task order");
    cr_assert_eq(e[0], 0);
    cr_assert_eq(e[1], ASYNC_EPIPE);
    cr_assert_eq(e[2], 0);
    cr_assert_eq((intptr_t)r[2], 3);
    cr_assert_eq(e[3], ASYNC_EIO, "all errors are reported");
    for (int i = 0; i < 4; i++) cr_assert_eq(async_task_done(t[i]), ASYNC_ESRCH);

    /* With a deadline: finished tasks are reaped, the slow one keeps going. */
    cr_assert_eq(async_task_spawn(&t[0], NULL, ret_arg, (void *)1, NULL), 0);
    cr_assert_eq(async_task_spawn(&t[1], NULL, sleeper, (void *)200, NULL), 0);
    cr_assert_eq(async_task_spawn(&t[2], NULL, ret_arg, (void *)2, NULL), 0);
    cr_assert_eq(async_gather_dl(t, 3, r, e, async_deadline_after(ASYNC_MSEC(20))), ASYNC_ETIMEDOUT);
    cr_assert_eq(e[0], 0);
    cr_assert_eq(e[1], ASYNC_ETIMEDOUT);
    cr_assert_eq(e[2], 0);
    cr_assert_eq((intptr_t)r[2], 2);
    cr_assert_eq(async_task_done(t[1]), 0);
    cr_assert_eq(async_task_cancel(t[1]), 0);
    cr_assert_eq(async_task_await(t[1], NULL), ASYNC_ECANCELED);
    cr_assert_eq(async_gather(t, 0, NULL, NULL), 0);
    return 0;
}
Test(task, gather_results_in_order_and_errors, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_gather, NULL, NULL), 0);
}

static int t_detach(void *arg, void **res)
{
    (void)arg, (void)res;
    async_task_t t;
    cr_assert_eq(async_task_spawn(&t, NULL, sleeper, (void *)10, NULL), 0);
    cr_assert_eq(async_task_detach(t), 0);
    cr_assert_eq(async_task_detach(t), 0, "still valid until it ends");
    cr_assert_eq(async_sleep(ASYNC_MSEC(30)), 0);
    cr_assert_eq(async_task_await(t, NULL), ASYNC_ESRCH, "a detached task is reclaimed when it ends");
    return 0;
}
Test(task, detach, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_detach, NULL, NULL), 0);
}

static int deep(int n)
{
    /* The volatile frame is used after the call, so the recursion cannot be
     * turned into a loop: each level really costs 1024 bytes of stack. */
    volatile char buf[1024];
    buf[0] = (char)n;
    if (n) buf[1] = (char)deep(n - 1);
    return buf[0] + buf[1];
}

static int recurse(void *arg, void **res)
{
    (void)res;
    return deep((int)(intptr_t)arg) == INT32_MIN; /* 0: the result is only a sink */
}

static int t_stack_size(void *arg, void **res)
{
    (void)arg, (void)res;
    async_task_t t;
    /* 1 MiB of frames needs more than the default 256 KiB stack. */
    cr_assert_eq(async_task_spawn(&t, NULL, recurse, (void *)1000,
                                  &(async_task_opts_t){.stack_size = 4 << 20}), 0);
    int rc = async_task_await(t, NULL);
    cr_assert_eq(rc, 0, "%s", async_errname(rc));
    return 0;
}
Test(task, larger_stack_on_request, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_stack_size, NULL, NULL), 0);
}

static void *spawn_from_other_thread(void *arg)
{
    async_task_t t;
    return (void *)(intptr_t)async_task_spawn(&t, arg, ret_arg, NULL, NULL);
}

static int t_wrong_thread(void *arg, void **res)
{
    (void)arg, (void)res;
    pthread_t th;
    void *rc;
    cr_assert_eq(pthread_create(&th, NULL, spawn_from_other_thread, async_loop_current()), 0);
    pthread_join(th, &rc);
    cr_assert_eq((intptr_t)rc, ASYNC_EWRONGLOOP);
    cr_assert_eq(async_loop_run(async_loop_current(), ASYNC_RUN_DEFAULT), ASYNC_EBUSY);
    return 0;
}
Test(task, spawn_from_another_thread_is_refused, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_wrong_thread, NULL, NULL), 0);
}

static int t_waker(void *arg, void **res)
{
    (void)arg, (void)res;
    /* A wake before the suspension is kept; a stale waker is refused. */
    async_waker_t w = async_task_waker();
    cr_assert_eq(async_waker_loop(w), async_loop_current());
    cr_assert_eq(async_waker_wake(w, 5), 0);
    cr_assert_eq(async_waker_wake(w, 6), ASYNC_ESRCH);
    cr_assert_eq(async_task_suspend_dl(ASYNC_FOREVER), 5);
    cr_assert_eq(async_waker_wake(w, 7), ASYNC_ESRCH);
    w = async_task_waker();
    cr_assert_eq(async_task_suspend_dl(async_deadline_after(ASYNC_MSEC(5))), ASYNC_ETIMEDOUT);
    cr_assert_eq(async_waker_wake(w, 1), ASYNC_ESRCH, "the deadline ended that suspension");
    cr_assert_eq(async_waker_wake((async_waker_t){0}, 1), ASYNC_ESRCH);
    return 0;
}
Test(task, waker_epochs, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_waker, NULL, NULL), 0);
}

Test(task, allocation_failure_in_spawn_leaks_nothing, .timeout = 10)
{
    test_alloc_install();
    async_loop_t *loop;
    cr_assert_eq(async_loop_new(&loop), 0);
    long base = test_alloc_live();
    int failures = 0;
    for (long n = 0; n < 8; n++) {
        test_alloc_fail_after(n);
        async_task_t t;
        int rc = async_task_spawn(&t, loop, ret_arg, NULL, NULL);
        test_alloc_fail_after(-1);
        if (rc == ASYNC_ENOMEM) failures++;
        else cr_assert_eq(rc, 0);
    }
    cr_assert_gt(failures, 0, "some allocation in spawn was made to fail");
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(async_loop_destroy(loop), 0);
    cr_assert_eq(test_alloc_live(), 0, "%ld allocations leaked", test_alloc_live());
    (void)base;
    test_alloc_uninstall();
}

/* async_task_cancel from a thread other than the task's loop's is
 * ASYNC_EWRONGLOOP and cancels nothing. */
static void *cancel_from_thread(void *arg)
{
    return (void *)(intptr_t)async_task_cancel(*(async_task_t *)arg);
}

static int t_cancel_other_thread(void *arg, void **res)
{
    (void)arg, (void)res;
    async_task_t t;
    cr_assert_eq(async_task_spawn(&t, NULL, sleeper, (void *)(intptr_t)5, NULL), 0);
    pthread_t th;
    void *rc;
    cr_assert_eq(pthread_create(&th, NULL, cancel_from_thread, &t), 0);
    pthread_join(th, &rc);
    cr_assert_eq((int)(intptr_t)rc, ASYNC_EWRONGLOOP);
    cr_assert_eq(async_task_await(t, NULL), 0, "it ran to its end, not cancelled");
    return 0;
}
Test(task, cancel_from_another_thread_is_ewrongloop, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_cancel_other_thread, NULL, NULL), 0);
}

/* --- the shield ------------------------------------------------------------ */

typedef struct {
    async_chan_t *chan;
    async_event_t *receiving;
    int shield0, sleep_rc, cancelled_inside, recv_rc, value, lift, after_rc;
    bool cancelled_after;
    int64_t slept;
} shield_job_t;

/* Cleanup under a shield runs to its end although the task is cancelled
 * meanwhile; the cancel is delivered at the first wait after the lift. */
static int shielded_cleanup(void *arg, void **res)
{
    (void)res;
    shield_job_t *j = arg;
    j->shield0 = async_task_shield(true);
    int64_t t0 = async_now();
    j->sleep_rc = async_sleep(ASYNC_MSEC(20)); /* cancelled during this */
    j->slept = async_now() - t0;
    j->cancelled_inside = async_task_cancelled();
    cr_assert_eq(async_event_set(j->receiving), 0); /* and waits at once */
    j->recv_rc = async_chan_recv(j->chan, &j->value);
    j->lift = async_task_shield(false);
    j->cancelled_after = async_task_cancelled();
    j->after_rc = async_sleep(0);
    return 0;
}

static int t_shield(void *arg, void **res)
{
    (void)arg, (void)res;
    shield_job_t j = {0};
    cr_assert_eq(async_chan_new(&j.chan, sizeof(int), 1), 0);
    cr_assert_eq(async_event_new(&j.receiving), 0);
    async_task_t t;
    cr_assert_eq(async_task_spawn(&t, NULL, shielded_cleanup, &j, NULL), 0);
    cr_assert_eq(async_yield(), 0); /* t sleeps, shielded */
    cr_assert_eq(async_task_cancel(t), 0);
    cr_assert_eq(async_event_wait(j.receiving), 0); /* t now waits on the channel */
    int v = 42;
    cr_assert_eq(async_chan_send(j.chan, &v), 0);
    cr_assert_eq(async_task_await(t, NULL), 0);
    cr_assert_eq(j.shield0, 0, "not shielded before");
    cr_assert_eq(j.sleep_rc, 0, "the shielded sleep ran to its end");
    cr_assert_geq(j.slept, ASYNC_MSEC(20));
    cr_assert_eq(j.cancelled_inside, 0, "held off while shielded");
    cr_assert_eq(j.recv_rc, 0, "a shielded wait that began cancelled still waits");
    cr_assert_eq(j.value, 42);
    cr_assert_eq(j.lift, 1, "it was shielded");
    cr_assert(j.cancelled_after);
    cr_assert_eq(j.after_rc, ASYNC_ECANCELED, "delivered after the lift");
    cr_assert_eq(async_chan_destroy(j.chan), 0);
    cr_assert_eq(async_event_destroy(j.receiving), 0);
    return 0;
}
Test(task, shield_holds_off_cancellation_until_lifted, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_shield, NULL, NULL), 0);
}

typedef struct {
    int outer, inner, restore_inner, inner_sleep, restore_outer, after;
} nest_job_t;

static int nested_shields(void *arg, void **res)
{
    (void)res;
    nest_job_t *j = arg;
    cr_assert_eq(async_sleep(ASYNC_SEC(30)), ASYNC_ECANCELED, "cancelled unshielded");
    j->outer = async_task_shield(true);
    j->inner = async_task_shield(true);
    j->restore_inner = async_task_shield(j->inner);
    j->inner_sleep = async_sleep(ASYNC_MSEC(1)); /* still shielded by the outer */
    j->restore_outer = async_task_shield(j->outer);
    j->after = async_yield();
    return 0;
}

static int t_shield_nesting(void *arg, void **res)
{
    (void)arg, (void)res;
    nest_job_t j = {0};
    async_task_t t;
    cr_assert_eq(async_task_spawn(&t, NULL, nested_shields, &j, NULL), 0);
    cr_assert_eq(async_yield(), 0);
    cr_assert_eq(async_task_cancel(t), 0);
    cr_assert_eq(async_task_await(t, NULL), 0);
    cr_assert_eq(j.outer, 0);
    cr_assert_eq(j.inner, 1, "the inner shield saw the outer");
    cr_assert_eq(j.restore_inner, 1);
    cr_assert_eq(j.inner_sleep, 0, "the inner lift restored the outer shield");
    cr_assert_eq(j.restore_outer, 1);
    cr_assert_eq(j.after, ASYNC_ECANCELED, "the outer lift restored no shield");
    return 0;
}
Test(task, shields_nest, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_shield_nesting, NULL, NULL), 0);
    cr_assert_eq(async_task_shield(true), ASYNC_ENOTASK);
    cr_assert_eq(async_task_shield(false), ASYNC_ENOTASK);
}

/* --- the options' size ------------------------------------------------------ */

/* size 0 (a designated initialiser) reads the 0.2 layout, async_task_opts_init
 * sets sizeof, and a nonzero size below the 0.2 layout is refused. */
static int t_opts_size(void *arg, void **res)
{
    (void)arg, (void)res;
    async_task_t t;
    cr_assert_eq(async_task_spawn(&t, NULL, ret_arg, (void *)1,
                                  &(async_task_opts_t){.stack_size = 64 << 10}), 0);
    cr_assert_eq(async_task_await(t, NULL), 0, "size 0");
    async_task_opts_t o;
    memset(&o, 0xff, sizeof o);
    async_task_opts_init(&o);
    cr_assert_eq(o.size, sizeof o);
    cr_assert_eq(o.stack_size, 0);
    cr_assert(!o.detached);
    cr_assert_eq(async_task_spawn(&t, NULL, ret_arg, (void *)1, &o), 0);
    cr_assert_eq(async_task_await(t, NULL), 0, "size sizeof");
    o.size = 1;
    cr_assert_eq(async_task_spawn(&t, NULL, ret_arg, (void *)1, &o), ASYNC_EINVAL, "size 1");
    async_group_t *g;
    cr_assert_eq(async_group_new(&g, NULL), 0);
    cr_assert_eq(async_group_spawn(g, ret_arg, (void *)1, &o), ASYNC_EINVAL, "size 1, in a group");
    o.size = sizeof o;
    cr_assert_eq(async_group_spawn(g, ret_arg, (void *)1, &o), 0);
    cr_assert_eq(async_group_wait(g), 0);
    cr_assert_eq(async_group_destroy(g), 0);
    return 0;
}
Test(task, opts_size, .timeout = 10) { cr_assert_eq(test_run_task(t_opts_size, NULL, NULL), 0); }
