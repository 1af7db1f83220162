/* The loop's wake-ups and deadlines (lib/core/loop.c, task.c): a task is
 * woken exactly once per suspension (a descriptor and its deadline firing
 * together, a waker fired while the task is ready), deadline waits never end
 * early and end within seconds of their deadline, yielding tasks let libev
 * poll, objects made outside any loop, a wait for writable that ignores
 * readable, a running loop that refuses destroy and a nested run, the run
 * modes, and the error strings and allocator seam.  Each test names the
 * mutant of lib/core it kills (scripts/mutate).  Deadlines here catch hangs
 * (seconds); the one upper bound on lateness is generous and widened by
 * ASYNC_TEST_SLACK. */
#include <criterion/criterion.h>
#include <ev.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <async.h>
#include <async/select.h>
#include "support/alloc.h"
#include "support/run.h"

/* Busy-waits (no switch, so libev's clock goes stale meanwhile). */
static void spin(int64_t ns)
{
    int64_t end = async_now() + ns;
    while (async_now() < end) { /* spin */ }
}

/* --- wake-ups: exactly once per suspension -------------------------------- */

struct fd_race {
    int wfd;
    int64_t deadline;
};

/* Makes the pipe readable, then holds the loop past the waiter's deadline,
 * so that libev sees the descriptor and the timer in the same iteration. */
static int write_and_hold(void *arg, void **res)
{
    (void)res;
    struct fd_race *r = arg;
    cr_assert_eq(write(r->wfd, "x", 1), 1);
    spin(r->deadline - async_now() + ASYNC_MSEC(5));
    return 0;
}

static int t_fd_and_timer_together(void *arg, void **res)
{
    (void)arg, (void)res;
    for (int round = 0; round < 3; round++) {
        int fds[2];
        cr_assert_eq(pipe(fds), 0);
        struct fd_race r = {fds[1], async_now() + ASYNC_MSEC(20)};
        async_task_t w;
        cr_assert_eq(async_task_spawn(&w, NULL, write_and_hold, &r, NULL), 0);
        int rc = async_wait_fd_dl(fds[0], ASYNC_READABLE, r.deadline);
        cr_assert(rc == 0 || rc == ASYNC_ETIMEDOUT, "wait_fd_dl: %s", async_errname(rc));
        /* Woken once: the next waits are the task's own. */
        cr_assert_eq(async_sleep(ASYNC_MSEC(2)), 0);
        cr_assert_eq(async_task_await(w, NULL), 0);
        cr_assert_eq(async_yield(), 0);
        close(fds[0]);
        close(fds[1]);
    }
    return 0;
}
/* Kills task.c's async__task_unpark without its ev_io_stop: a descriptor
 * wait that ends by its deadline while the descriptor is also ready was
 * woken twice (queued twice on the ready queue). */
Test(core_wakeups, fd_wait_woken_once_when_timer_and_fd_fire_together, .timeout = 20)
{
    cr_assert_eq(test_run_task(t_fd_and_timer_together, NULL, NULL), 0);
}

struct ready_wake {
    async_waker_t w;
    int rc;
};

static int wake_it(void *arg, void **res)
{
    (void)res;
    struct ready_wake *r = arg;
    r->rc = async_waker_wake(r->w, 55);
    return 0;
}

static int t_wake_while_ready(void *arg, void **res)
{
    (void)arg, (void)res;
    struct ready_wake r = {.rc = -1};
    async_task_t t;
    cr_assert_eq(async_task_spawn(&t, NULL, wake_it, &r, NULL), 0);
    r.w = async_task_waker();
    /* The yield leaves this task ready (queued, not running) while the
     * waker runs. */
    cr_assert_eq(async_yield(), 0);
    cr_assert_eq(async_task_await(t, NULL), 0);
    cr_assert_eq(r.rc, 0, "a wake of a ready task before it suspends: %s", async_errname(r.rc));
    cr_assert_eq(async_task_suspend_dl(async_deadline_after(ASYNC_SEC(5))), 55);
    return 0;
}
/* Kills task.c:214 without `|| t->state == TASK_READY`: a waker fired while
 * its task was queued to run must be kept for the suspension. */
Test(core_wakeups, waker_fired_while_task_is_ready_is_kept, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_wake_while_ready, NULL, NULL), 0);
}

/* --- deadlines: never early, and not far late ----------------------------- */

static int t_never_early(void *arg, void **res)
{
    (void)arg, (void)res;
    async_sem_t *s;
    cr_assert_eq(async_sem_new(&s, 0), 0);
    /* Spinning before each wait leaves libev's clock behind by the spin, so
     * its timer would fire that much before the deadline; the core must
     * notice and wait on.  Small spins land within libev's millisecond
     * rounding, large ones beyond it. */
    for (int i = 0; i < 40; i++) {
        int64_t stale = i < 30 ? ASYNC_USEC(100) * (i % 10 + 1) : ASYNC_MSEC(2) * (i - 29);
        spin(stale);
        int64_t dl = async_now() + ASYNC_MSEC(5) + stale;
        cr_assert_eq(async_sem_acquire_dl(s, dl), ASYNC_ETIMEDOUT);
        int64_t now = async_now();
        cr_assert_geq(now, dl, "round %d: woke %lld ns before the deadline", i, (long long)(dl - now));
    }
    cr_assert_eq(async_sem_destroy(s), 0);
    return 0;
}
/* Kills task.c's park without `self->deadline = deadline` and on_timer's
 * `left > 0` widened to a millisecond: both return ETIMEDOUT before the
 * deadline when libev's clock is stale. */
Test(core_wakeups, deadline_waits_never_end_early, .timeout = 30)
{
    cr_assert_eq(test_run_task(t_never_early, NULL, NULL), 0);
}

static int t_not_far_late(void *arg, void **res)
{
    (void)arg, (void)res;
    async_sem_t *s;
    cr_assert_eq(async_sem_new(&s, 0), 0);
    int64_t dl = async_deadline_after(ASYNC_MSEC(400));
    cr_assert_eq(async_sem_acquire_dl(s, dl), ASYNC_ETIMEDOUT);
    double late = (double)(async_now() - dl) / 1e9;
    cr_assert_lt(late, 2.5 * test_slack(), "a 400 ms wait ended %.2f s late", late);
    cr_assert_eq(async_sem_destroy(s), 0);
    return 0;
}
/* Kills task.c:166's timer armed for ten times the wait (1e9 -> 1e8): a
 * hang detector, generous by seconds (ASYNC_TEST_SLACK widens it). */
Test(core_wakeups, deadline_wait_ends_within_seconds_of_its_deadline, .timeout = 30)
{
    cr_assert_eq(test_run_task(t_not_far_late, NULL, NULL), 0);
}

/* --- the loop --------------------------------------------------------------- */

static int nap_ms(void *arg, void **res)
{
    (void)res;
    return async_sleep(ASYNC_MSEC((intptr_t)arg));
}

static int yield_many(void *arg, void **res)
{
    (void)res;
    for (int i = 0; i < (int)(intptr_t)arg; i++)
        if (async_yield()) return 1;
    return 0;
}

static int t_budget(void *arg, void **res)
{
    (void)arg, (void)res;
    struct ev_loop *ev = async_loop_ev(async_loop_current());
    async_task_t other;
    cr_assert_eq(async_task_spawn(&other, NULL, yield_many, (void *)20000, NULL), 0);
    unsigned before = ev_iteration(ev);
    /* Two tasks that only yield: 40,000 switches and never a wait. */
    cr_assert_eq(yield_many((void *)20000, NULL), 0);
    unsigned polls = ev_iteration(ev) - before;
    cr_assert_eq(async_task_await(other, NULL), 0);
    /* loop.c cuts a run of switches after 1024: libev must have polled
     * (timers, descriptors, posts) dozens of times meanwhile. */
    cr_assert_geq(polls, 20, "libev polled %u times during 40,000 task switches", polls);
    return 0;
}
/* Kills loop.c's BUDGET raised from 1024 to a million: tasks that keep each
 * other busy starved libev. */
Test(core_wakeups, yielding_tasks_let_libev_poll, .timeout = 20)
{
    cr_assert_eq(test_run_task(t_budget, NULL, NULL), 0);
}

/* --- objects made outside any loop, descriptors ---------------------------- */

/* Kills sync.c:59 without `!b->loop ||`: an object made outside any loop
 * and used outside any loop asked a loop that does not exist. */
Test(core_wakeups, unbound_objects_work_outside_any_loop, .timeout = 10)
{
    async_sem_t *s;
    async_chan_t *c;
    async_event_t *e;
    cr_assert_eq(async_sem_new(&s, 0), 0);
    cr_assert_eq(async_sem_release(s), 0);
    cr_assert_eq(async_sem_tryacquire(s), 0);
    cr_assert_eq(async_sem_destroy(s), 0);
    cr_assert_eq(async_chan_new(&c, sizeof(int), 2), 0);
    int v = 4;
    cr_assert_eq(async_chan_trysend(c, &v), 0);
    cr_assert_eq(async_chan_tryrecv(c, &v), 0);
    cr_assert_eq(async_chan_destroy(c), 0);
    cr_assert_eq(async_event_new(&e), 0);
    cr_assert_eq(async_event_set(e), 0);
    cr_assert_eq(async_event_trywait(e), 0);
    cr_assert_eq(async_event_destroy(e), 0);
}

static int t_wait_writable_only(void *arg, void **res)
{
    (void)arg, (void)res;
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    /* sv[0]: its send buffer full, and data waiting to be read. */
    char buf[4096];
    memset(buf, 'x', sizeof buf);
    while (write(sv[0], buf, sizeof buf) > 0) { /* fill */ }
    cr_assert_eq(write(sv[1], "y", 1), 1);
    cr_assert_eq(async_wait_fd_dl(sv[0], ASYNC_READABLE, async_deadline_after(ASYNC_SEC(2))), 0);
    cr_assert_eq(async_wait_fd_dl(sv[0], ASYNC_WRITABLE, async_deadline_after(ASYNC_MSEC(30))),
                 ASYNC_ETIMEDOUT, "a wait for writable-only ended on readable");
    close(sv[0]);
    close(sv[1]);
    return 0;
}
/* Kills task.c:485 always asking libev for EV_READ. */
Test(core_wakeups, wait_for_writable_ignores_readable, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_wait_writable_only, NULL, NULL), 0);
}

struct destroy_in_post {
    async_loop_t *loop;
    int rc;
};

static void destroy_from_post(void *arg)
{
    struct destroy_in_post *d = arg;
    d->rc = async_loop_destroy(d->loop);
}

/* Kills loop.c:305 without `loop->running ||`: a post (no task live)
 * destroyed the loop that was running it. */
Test(core_wakeups, running_loop_refuses_destroy_from_its_post, .timeout = 10)
{
    struct destroy_in_post d = {NULL, 1};
    cr_assert_eq(async_loop_new(&d.loop), 0);
    cr_assert_eq(async_loop_post(d.loop, destroy_from_post, &d), 0);
    (void)async_loop_run(d.loop, ASYNC_RUN_ONCE); /* runs the post */
    cr_assert_eq(d.rc, ASYNC_EBUSY, "destroy inside the loop's own run: %s", async_errname(d.rc));
    cr_assert_eq(async_loop_destroy(d.loop), 0);
}

static int t_nested_run(void *arg, void **res)
{
    (void)arg, (void)res;
    async_loop_t *other;
    cr_assert_eq(async_loop_new(&other), 0);
    cr_assert_eq(async_loop_run(other, ASYNC_RUN_NOWAIT), ASYNC_EWRONGLOOP,
                 "a loop run from inside another loop's task");
    cr_assert_eq(async_loop_destroy(other), 0);
    return 0;
}
/* Kills loop.c:350 without its check for a loop already running here. */
Test(core_wakeups, loop_run_inside_another_loop_is_ewrongloop, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_nested_run, NULL, NULL), 0);
}

/* Kills loop.c:352's mode check widened by one (an out-of-range mode read
 * past the flag table) and :345's ONCE and NOWAIT swapped (NOWAIT then
 * blocked until the sleeper's timer, 10 s out; 5 s is the hang bound). */
Test(core_wakeups, loop_run_modes, .timeout = 30)
{
    async_loop_t *loop;
    cr_assert_eq(async_loop_new(&loop), 0);
    cr_assert_eq(async_loop_run(loop, (async_run_mode_t)3), ASYNC_EINVAL);
    cr_assert_eq(async_loop_run(loop, (async_run_mode_t)-1), ASYNC_EINVAL);
    async_task_t t;
    cr_assert_eq(async_task_spawn(&t, loop, nap_ms, (void *)10000, NULL), 0);
    int64_t t0 = async_now();
    /* NOWAIT: the task starts and sleeps; the call does not wait for it. */
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_NOWAIT), 1);
    cr_assert_lt(async_now() - t0, ASYNC_SEC(5), "NOWAIT waited for the sleeping task's timer");
    cr_assert_eq(async_loop_live_tasks(loop), 1);
    cr_assert_eq(async_task_cancel(t), 0); /* from its thread, outside the run */
    cr_assert_eq(async_task_detach(t), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(async_loop_live_tasks(loop), 0);
    cr_assert_eq(async_loop_destroy(loop), 0);
}

/* --- error strings and the allocator seam ---------------------------------- */

/* Kills common.c:58's table search starting one entry late or stopping one
 * entry early (ASYNC_OK, ASYNC_EDNS unknown). */
Test(core_wakeups, every_error_code_has_a_name_and_a_text, .timeout = 10)
{
    static const int codes[] = {
        ASYNC_OK, ASYNC_EPERM, ASYNC_ESRCH, ASYNC_EIO, ASYNC_EAGAIN, ASYNC_ENOMEM, ASYNC_EBUSY,
        ASYNC_EDEADLK, ASYNC_EINVAL, ASYNC_EPIPE, ASYNC_ENOTSUP, ASYNC_EALREADY, ASYNC_ETIMEDOUT,
        ASYNC_ECANCELED, ASYNC_EOWNERDEAD, ASYNC_EMFILE, ASYNC_ENFILE, ASYNC_ENOENT,
        ASYNC_ECONNRESET, ASYNC_ECONNREFUSED, ASYNC_EADDRINUSE, ASYNC_ECLOSED, ASYNC_ENOTASK,
        ASYNC_ENOLOOP, ASYNC_EWRONGLOOP, ASYNC_EDONE, ASYNC_EEOF, ASYNC_EFULL, ASYNC_EWORKERDIED,
        ASYNC_EINIT, ASYNC_EHTTP, ASYNC_ECURL, ASYNC_EJSON, ASYNC_EWORK, ASYNC_ECHILD,
        ASYNC_ENOTFOUND, ASYNC_EDNS,
    };
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        cr_assert_str_neq(async_strerror(codes[i]), "unknown error", "code %d", codes[i]);
        cr_assert_str_neq(async_errname(codes[i]), "ASYNC_E?", "code %d", codes[i]);
    }
    cr_assert_str_eq(async_errname(ASYNC_EDNS), "ASYNC_EDNS");
    cr_assert_str_eq(async_errname(ASYNC_OK), "ASYNC_OK");
    cr_assert_str_eq(async_strerror(-99999), "unknown error");
}

/* Kills common.c:132 ignoring async_set_allocator(NULL): the library kept
 * calling the program's allocator after being told to go back to libc's. */
Test(core_wakeups, set_allocator_null_restores_libc, .timeout = 10)
{
    test_alloc_install();
    async_sem_t *s;
    long before = test_alloc_total();
    cr_assert_eq(async_sem_new(&s, 1), 0);
    cr_assert_gt(test_alloc_total(), before, "the counting allocator is in use");
    cr_assert_eq(async_sem_destroy(s), 0);
    async_set_allocator(NULL);
    before = test_alloc_total();
    cr_assert_eq(async_sem_new(&s, 1), 0);
    cr_assert_eq(async_sem_destroy(s), 0);
    cr_assert_eq(test_alloc_total(), before, "allocations went to the old allocator");
}
