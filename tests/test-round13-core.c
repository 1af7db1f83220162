/* Round 13: tests that the mutation sweep of lib/core (scripts/mutate) found
 * missing.  Each test names the mutant it kills: a change to the core that
 * every earlier suite let through.  Deadlines here catch hangs (seconds);
 * the one upper bound on lateness is generous and widened by
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

static int ret_arg(void *arg, void **res)
{
    *res = arg;
    return 0;
}

static int sleeper(void *arg, void **res)
{
    (void)arg, (void)res;
    return async_sleep(ASYNC_SEC(30));
}

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
Test(round13, fd_wait_woken_once_when_timer_and_fd_fire_together, .timeout = 20)
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
Test(round13, waker_fired_while_task_is_ready_is_kept, .timeout = 10)
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
Test(round13, deadline_waits_never_end_early, .timeout = 30)
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
Test(round13, deadline_wait_ends_within_seconds_of_its_deadline, .timeout = 30)
{
    cr_assert_eq(test_run_task(t_not_far_late, NULL, NULL), 0);
}

/* --- spawn's stack sizes -------------------------------------------------- */

static int t_huge_stack(void *arg, void **res)
{
    (void)arg, (void)res;
    async_task_t t;
    /* task.c caps stacks at 1 GiB (MAX_STACK); twice that is too large. */
    async_task_opts_t o = {.stack_size = (size_t)2 << 30};
    cr_assert_eq(async_task_spawn(&t, NULL, ret_arg, NULL, &o), ASYNC_EINVAL);
    o.stack_size = SIZE_MAX;
    cr_assert_eq(async_task_spawn(&t, NULL, ret_arg, NULL, &o), ASYNC_EINVAL);
    return 0;
}
/* Kills task.c:259's cap raised fourfold. */
Test(round13, stack_size_past_the_cap_is_einval, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_huge_stack, NULL, NULL), 0);
}

/* Uses 6 KiB of stack: more than a page, well under ASYNC_STACK_MIN. */
static int deep(void *arg, void **res)
{
    (void)arg;
    volatile char buf[6 * 1024];
    for (size_t i = 0; i < sizeof buf; i += 64) buf[i] = (char)i;
    *res = (void *)(intptr_t)buf[64];
    return 0;
}

static int t_tiny_stack(void *arg, void **res)
{
    (void)arg, (void)res;
    for (size_t size = 1; size <= 4096; size *= 64) {
        async_task_t t;
        async_task_opts_t o = {.stack_size = size};
        cr_assert_eq(async_task_spawn(&t, NULL, deep, NULL, &o), 0);
        void *r = NULL;
        cr_assert_eq(async_task_await(t, &r), 0);
        cr_assert_eq((intptr_t)r, 64);
    }
    return 0;
}
/* Kills task.c:260's floor lowered to 1 byte: a stack_size below
 * ASYNC_STACK_MIN must still give ASYNC_STACK_MIN (a one-page stack
 * overflows into its guard page). */
Test(round13, small_stack_size_is_raised_to_the_minimum, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_tiny_stack, NULL, NULL), 0);
}

/* --- libev's memory reserve follows the live tasks ------------------------ */

/* The process's address space in bytes (/proc/self/statm's first field). */
static size_t vm_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    cr_assert_not_null(f);
    unsigned long pages = 0;
    cr_assert_eq(fscanf(f, "%lu", &pages), 1);
    fclose(f);
    return pages * (size_t)sysconf(_SC_PAGESIZE);
}

/* ThreadSanitizer's fiber calls make each spawn slow: fewer there. */
#if defined(__SANITIZE_THREAD__)
#define CHURN 10000
#else
#define CHURN 40000
#endif
/* 128 bytes of reserve a task (common.c), so a count that leaked once a
 * spawn would map CHURN * 128 bytes more (5 MB, or 1.3 MB); the bound is
 * half that. */
#define CHURN_BOUND ((size_t)CHURN * 64)

static int t_reserve_churn(void *arg, void **res)
{
    (void)arg, (void)res;
    async_task_t t;
    cr_assert_eq(async_task_spawn(&t, NULL, ret_arg, NULL, NULL), 0);
    cr_assert_eq(async_task_await(t, NULL), 0);
    size_t before = vm_bytes();
    for (int i = 0; i < CHURN; i++) {
        cr_assert_eq(async_task_spawn(&t, NULL, ret_arg, NULL, NULL), 0);
        cr_assert_eq(async_task_await(t, NULL), 0);
    }
    size_t grew = vm_bytes() - before;
    cr_assert_lt(grew, CHURN_BOUND, "%d spawns one at a time grew the address space by %zu bytes",
                 CHURN, grew);
    return 0;
}
/* Kills task.c's finish without async__ev_reserve_drop: the reserve must
 * track live tasks, not every task ever spawned. */
Test(round13, reserve_does_not_grow_with_finished_tasks, .timeout = 120)
{
    cr_assert_eq(test_run_task(t_reserve_churn, NULL, NULL), 0);
}

static int t_reserve_failed_spawns(void *arg, void **res)
{
    (void)arg, (void)res;
    async_task_t t;
    /* No free slot yet (only this task's): the slot's malloc fails. */
    size_t before = vm_bytes();
    for (int i = 0; i < CHURN; i++) {
        test_alloc_fail_after(0);
        cr_assert_eq(async_task_spawn(&t, NULL, ret_arg, NULL, NULL), ASYNC_ENOMEM);
    }
    test_alloc_fail_after(-1);
    size_t grew = vm_bytes() - before;
    cr_assert_lt(grew, CHURN_BOUND, "failed slot allocations grew the address space by %zu", grew);
    /* A free slot now, and a stack size never pooled: the stack's
     * bookkeeping allocation fails. */
    cr_assert_eq(async_task_spawn(&t, NULL, ret_arg, NULL, NULL), 0);
    cr_assert_eq(async_task_await(t, NULL), 0);
    async_task_opts_t o = {.stack_size = 64 * 1024};
    before = vm_bytes();
    for (int i = 0; i < CHURN; i++) {
        test_alloc_fail_after(0);
        cr_assert_eq(async_task_spawn(&t, NULL, ret_arg, NULL, &o), ASYNC_ENOMEM);
    }
    test_alloc_fail_after(-1);
    grew = vm_bytes() - before;
    cr_assert_lt(grew, CHURN_BOUND, "failed stack allocations grew the address space by %zu", grew);
    cr_assert_eq(async_task_spawn(&t, NULL, ret_arg, NULL, &o), 0);
    cr_assert_eq(async_task_await(t, NULL), 0);
    return 0;
}
/* Kills task.c's spawn without async__ev_reserve_drop on either failure
 * path (no slot, no stack). */
Test(round13, reserve_does_not_grow_with_failed_spawns, .timeout = 120)
{
    test_alloc_install();
    cr_assert_eq(test_run_task(t_reserve_failed_spawns, NULL, NULL), 0);
    test_alloc_uninstall();
}

/* --- a recycled task slot starts clean ----------------------------------- */

static int shield_and_end(void *arg, void **res)
{
    (void)arg, (void)res;
    async_task_shield(true);
    return 0;
}

static int wake_self_and_end(void *arg, void **res)
{
    (void)arg, (void)res;
    /* A wake before any suspension is kept for one, which never comes. */
    cr_assert_eq(async_waker_wake(async_task_waker(), 77), 0);
    return 0;
}

static int own_waker_only(void *arg, void **res)
{
    (void)arg, (void)res;
    (void)async_task_waker();
    return async_task_suspend_dl(async_deadline_after(ASYNC_MSEC(50)));
}

static int t_recycled_slot(void *arg, void **res)
{
    (void)arg, (void)res;
    async_task_t a, b;
    cr_assert_eq(async_task_spawn(&a, NULL, shield_and_end, NULL, NULL), 0);
    cr_assert_eq(async_task_await(a, NULL), 0);
    cr_assert_eq(async_task_spawn(&b, NULL, sleeper, NULL, NULL), 0);
    cr_assert_eq(b.ptr_, a.ptr_, "the test needs the slot reused");
    cr_assert_eq(async_yield(), 0); /* b sleeps */
    cr_assert_eq(async_task_cancel(b), 0);
    cr_assert_eq(async_task_await_dl(b, NULL, async_deadline_after(ASYNC_SEC(3))), ASYNC_ECANCELED,
                 "a task in a slot whose last task ended shielded started shielded");

    cr_assert_eq(async_task_spawn(&a, NULL, wake_self_and_end, NULL, NULL), 0);
    cr_assert_eq(async_task_await(a, NULL), 0);
    cr_assert_eq(async_task_spawn(&b, NULL, own_waker_only, NULL, NULL), 0);
    cr_assert_eq(b.ptr_, a.ptr_, "the test needs the slot reused");
    cr_assert_eq(async_task_await(b, NULL), ASYNC_ETIMEDOUT,
                 "a task inherited the wake its slot's last task never took");
    return 0;
}
/* Kills task.c:286 without `t->shielded = false` or without
 * `t->has_pending_wake = false`. */
Test(round13, recycled_slot_drops_shield_and_pending_wake, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_recycled_slot, NULL, NULL), 0);
}

/* --- await and detach ----------------------------------------------------- */

struct other_loop {
    async_loop_t *loop;
    async_task_t task;
};

static int t_await_other_loop(void *arg, void **res)
{
    (void)res;
    struct other_loop *o = arg;
    /* Not running, so a task may be spawned on it from here. */
    cr_assert_eq(async_task_spawn(&o->task, o->loop, ret_arg, (void *)9, NULL), 0);
    cr_assert_eq(async_task_await_dl(o->task, NULL, async_deadline_after(ASYNC_SEC(2))),
                 ASYNC_EWRONGLOOP);
    return 0;
}
/* Kills task.c:355 without the loop check: the awaiter queued on another
 * loop's task and waited out its deadline. */
Test(round13, await_of_another_loops_task_is_ewrongloop, .timeout = 10)
{
    struct other_loop o;
    cr_assert_eq(async_loop_new(&o.loop), 0);
    cr_assert_eq(test_run_task(t_await_other_loop, &o, NULL), 0);
    cr_assert_eq(async_loop_run(o.loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(async_loop_destroy(o.loop), 0);
}

struct two_awaiters {
    async_task_t target;
    int rc;
    void *result;
};

static int await_target(void *arg, void **res)
{
    (void)res;
    struct two_awaiters *a = arg;
    a->rc = async_task_await_dl(a->target, &a->result, async_deadline_after(ASYNC_SEC(3)));
    return 0;
}

static int short_nap(void *arg, void **res)
{
    *res = arg;
    return async_sleep(ASYNC_MSEC(10)) ? 1 : 3;
}

static int t_two_awaiters(void *arg, void **res)
{
    (void)arg, (void)res;
    async_task_t target, w1, w2;
    cr_assert_eq(async_task_spawn(&target, NULL, short_nap, (void *)21, NULL), 0);
    struct two_awaiters a1 = {target, -1, NULL}, a2 = {target, -1, NULL};
    cr_assert_eq(async_task_spawn(&w1, NULL, await_target, &a1, NULL), 0);
    cr_assert_eq(async_task_spawn(&w2, NULL, await_target, &a2, NULL), 0);
    cr_assert_eq(async_task_await(w1, NULL), 0);
    cr_assert_eq(async_task_await(w2, NULL), 0);
    /* Exactly one reaps the task (its code 3, its result); the other finds
     * the handle spent. */
    bool first = a1.rc == 3;
    struct two_awaiters *won = first ? &a1 : &a2, *lost = first ? &a2 : &a1;
    cr_assert_eq(won->rc, 3, "rcs %s and %s", async_errname(a1.rc), async_errname(a2.rc));
    cr_assert_eq((intptr_t)won->result, 21);
    cr_assert_eq(lost->rc, ASYNC_ESRCH, "the second awaiter: %s", async_errname(lost->rc));
    return 0;
}
/* Kills task.c:361 without the re-validation after the wake: the second
 * awaiter of one task waited on a reaped slot until its deadline. */
Test(round13, second_awaiter_of_one_task_gets_esrch, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_two_awaiters, NULL, NULL), 0);
}

static int t_detach_finished(void *arg, void **res)
{
    (void)arg, (void)res;
    async_task_t t;
    cr_assert_eq(async_task_spawn(&t, NULL, ret_arg, NULL, NULL), 0);
    cr_assert_eq(async_yield(), 0);
    cr_assert_eq(async_task_done(t), 1);
    cr_assert_eq(async_task_detach(t), 0);
    cr_assert_eq(async_task_done(t), ASYNC_ESRCH, "detaching a finished task releases it at once");
    cr_assert_eq(async_task_await(t, NULL), ASYNC_ESRCH);
    cr_assert_eq(async_task_detach(t), ASYNC_ESRCH);
    return 0;
}
/* Kills task.c:377 never releasing a finished task on detach. */
Test(round13, detach_of_a_finished_task_spends_the_handle, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_detach_finished, NULL, NULL), 0);
}

/* --- gather past its deadline or a cancellation --------------------------- */

static int fail_eio(void *arg, void **res)
{
    (void)arg, (void)res;
    return ASYNC_EIO;
}

static int t_gather_deadline(void *arg, void **res)
{
    (void)arg, (void)res;
    async_task_t tasks[3], spent;
    cr_assert_eq(async_task_spawn(&tasks[0], NULL, fail_eio, NULL, NULL), 0);
    cr_assert_eq(async_task_spawn(&tasks[1], NULL, sleeper, NULL, NULL), 0);
    cr_assert_eq(async_task_spawn(&spent, NULL, ret_arg, NULL, NULL), 0);
    cr_assert_eq(async_task_await(spent, NULL), 0);
    tasks[2] = spent;
    int errors[3] = {1, 1, 1};
    int rc = async_gather_dl(tasks, 3, NULL, errors, async_deadline_after(ASYNC_MSEC(20)));
    /* The deadline is what ended the call, whatever failed before it. */
    cr_assert_eq(rc, ASYNC_ETIMEDOUT, "gather_dl: %s", async_errname(rc));
    cr_assert_eq(errors[0], ASYNC_EIO);
    cr_assert_eq(errors[1], ASYNC_ETIMEDOUT);
    cr_assert_eq(errors[2], ASYNC_ESRCH, "a spent handle past the deadline: %s", async_errname(errors[2]));
    cr_assert_eq(async_task_done(tasks[1]), 0, "the unfinished task keeps its handle");
    cr_assert_eq(async_task_cancel(tasks[1]), 0);
    cr_assert_eq(async_task_await(tasks[1], NULL), ASYNC_ECANCELED);
    return 0;
}
/* Kills task.c:517 returning the first task's error over the deadline, and
 * :505 reporting a spent handle as 0 once the deadline has passed. */
Test(round13, gather_dl_past_its_deadline_says_so, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_gather_deadline, NULL, NULL), 0);
}

struct gather_cancel {
    async_task_t tasks[2];
    int errors[2];
    int rc;
};

static int gatherer(void *arg, void **res)
{
    (void)res;
    struct gather_cancel *g = arg;
    g->rc = async_gather(g->tasks, 2, NULL, g->errors);
    return 0;
}

static int t_gather_cancel(void *arg, void **res)
{
    (void)arg, (void)res;
    struct gather_cancel g = {.errors = {1, 1}, .rc = 1};
    cr_assert_eq(async_task_spawn(&g.tasks[0], NULL, fail_eio, NULL, NULL), 0);
    cr_assert_eq(async_task_spawn(&g.tasks[1], NULL, sleeper, NULL, NULL), 0);
    async_task_t t = test_spawn_started(gatherer, &g);
    cr_assert_eq(async_sleep(ASYNC_MSEC(5)), 0); /* the gatherer waits on the sleeper */
    cr_assert_eq(async_task_cancel(t), 0);
    cr_assert_eq(async_task_await(t, NULL), 0);
    cr_assert_eq(g.rc, ASYNC_ECANCELED, "a cancelled gather: %s", async_errname(g.rc));
    cr_assert_eq(g.errors[0], ASYNC_EIO);
    cr_assert_eq(g.errors[1], ASYNC_ECANCELED);
    cr_assert_eq(async_task_done(g.tasks[1]), 0, "the unfinished task keeps its handle");
    cr_assert_eq(async_task_cancel(g.tasks[1]), 0);
    cr_assert_eq(async_task_await(g.tasks[1], NULL), ASYNC_ECANCELED);
    return 0;
}
/* Kills task.c:508 without the ECANCELED case: a cancelled gather returned
 * an earlier task's error instead. */
Test(round13, cancelled_gather_says_so, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_gather_cancel, NULL, NULL), 0);
}

/* --- channels: binding and select's wake-ups ------------------------------ */

struct foreign {
    async_chan_t *chan;
    int rc;
};

static int use_foreign_chan(void *arg, void **res)
{
    (void)res;
    struct foreign *f = arg;
    int v = 1;
    f->rc = async_chan_trysend(f->chan, &v);
    return 0;
}

static int t_chan_bound_at_creation(void *arg, void **res)
{
    (void)arg, (void)res;
    struct foreign f = {NULL, 1};
    cr_assert_eq(async_chan_new(&f.chan, sizeof(int), 4), 0);
    /* Its first use is on another thread's loop: it belongs to this one. */
    cr_assert_eq(test_run_task_in_thread(use_foreign_chan, &f), 0);
    cr_assert_eq(f.rc, ASYNC_EWRONGLOOP, "a channel made in a task, used first elsewhere: %s",
                 async_errname(f.rc));
    int v = 2;
    cr_assert_eq(async_chan_trysend(f.chan, &v), 0);
    cr_assert_eq(async_chan_destroy(f.chan), 0);
    return 0;
}
/* Kills sync.c:75 without `c->loop = async_loop_current()`: a channel made
 * in a task was bound to whichever loop used it first. */
Test(round13, channel_belongs_to_the_loop_that_made_it, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_chan_bound_at_creation, NULL, NULL), 0);
}

struct sel {
    async_chan_t *chan;
    int op;
    int value;
    int rc;
};

static int select_one(void *arg, void **res)
{
    (void)res;
    struct sel *s = arg;
    async_select_case_t c = {.chan = s->chan, .op = s->op, .elem = &s->value};
    size_t fired = 9;
    s->rc = async_select_dl(&c, 1, &fired, async_deadline_after(ASYNC_SEC(3)));
    if (s->rc == 0) cr_assert_eq(fired, 0);
    return 0;
}

static int t_select_meets_blocking_peer(void *arg, void **res)
{
    (void)arg, (void)res;
    async_chan_t *c;
    cr_assert_eq(async_chan_new(&c, sizeof(int), 0), 0);
    /* A select waits to receive; a sender then blocks on the channel. */
    struct sel r = {c, ASYNC_SELECT_RECV, 0, 1};
    async_task_t t = test_spawn_started(select_one, &r);
    int v = 41;
    cr_assert_eq(async_chan_send_dl(c, &v, async_deadline_after(ASYNC_SEC(3))), 0);
    cr_assert_eq(async_task_await(t, NULL), 0);
    cr_assert_eq(r.rc, 0, "select recv: %s", async_errname(r.rc));
    cr_assert_eq(r.value, 41);
    /* A select waits to send; a receiver then blocks on the channel. */
    struct sel s = {c, ASYNC_SELECT_SEND, 42, 1};
    t = test_spawn_started(select_one, &s);
    v = 0;
    cr_assert_eq(async_chan_recv_dl(c, &v, async_deadline_after(ASYNC_SEC(3))), 0);
    cr_assert_eq(async_task_await(t, NULL), 0);
    cr_assert_eq(s.rc, 0, "select send: %s", async_errname(s.rc));
    cr_assert_eq(v, 42);
    cr_assert_eq(async_chan_destroy(c), 0);

    /* A select waits to send on a full buffer; a receive then frees a slot. */
    cr_assert_eq(async_chan_new(&c, sizeof(int), 1), 0);
    v = 1;
    cr_assert_eq(async_chan_trysend(c, &v), 0);
    struct sel f = {c, ASYNC_SELECT_SEND, 2, 1};
    t = test_spawn_started(select_one, &f);
    cr_assert_eq(async_chan_recv(c, &v), 0);
    cr_assert_eq(v, 1);
    cr_assert_eq(async_yield(), 0); /* the woken select runs (its deadline is seconds off) */
    cr_assert_eq(async_task_done(t), 1, "a select to send was not woken by the freed slot");
    cr_assert_eq(async_task_await(t, NULL), 0);
    cr_assert_eq(f.rc, 0, "select send on a freed slot: %s", async_errname(f.rc));
    cr_assert_eq(async_chan_tryrecv(c, &v), 0);
    cr_assert_eq(v, 2);
    cr_assert_eq(async_chan_destroy(c), 0);
    return 0;
}
/* Kills sync.c:117 and :147 without async__chan_changed before a blocking
 * send or receive parks, and :133 without it after a receive frees a slot:
 * a select on the other side never heard of it and waited out its
 * deadline. */
Test(round13, select_meets_a_peer_that_blocks_after_it, .timeout = 20)
{
    cr_assert_eq(test_run_task(t_select_meets_blocking_peer, NULL, NULL), 0);
}

static int t_select_sees_close(void *arg, void **res)
{
    (void)arg, (void)res;
    async_chan_t *c;
    cr_assert_eq(async_chan_new(&c, sizeof(int), 0), 0);
    struct sel r = {c, ASYNC_SELECT_RECV, 0, 1};
    async_task_t t = test_spawn_started(select_one, &r);
    cr_assert_eq(async_chan_close(c), 0);
    cr_assert_eq(async_yield(), 0); /* the woken select runs (its deadline is seconds off) */
    cr_assert_eq(async_task_done(t), 1, "a select was not woken by its channel's close");
    cr_assert_eq(async_task_await(t, NULL), 0);
    cr_assert_eq(r.rc, ASYNC_EEOF, "select recv on a closed channel: %s", async_errname(r.rc));
    cr_assert_eq(async_chan_destroy(c), 0);
    return 0;
}
/* Kills sync.c:164 without async__chan_changed on close: a select waiting
 * on the channel slept through it. */
Test(round13, select_wakes_when_its_channel_closes, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_select_sees_close, NULL, NULL), 0);
}

/* --- condition variable: a wait that cannot begin -------------------------- */

struct locker {
    async_mutex_t *m;
    bool held;
};

static int lock_once(void *arg, void **res)
{
    (void)res;
    struct locker *l = arg;
    int rc = async_mutex_lock_dl(l->m, async_deadline_after(ASYNC_SEC(3)));
    if (rc) return rc;
    l->held = true;
    return async_mutex_unlock(l->m);
}

static int t_cond_wait_refused(void *arg, void **res)
{
    (void)arg, (void)res;
    async_mutex_t *m;
    async_cond_t *c;
    cr_assert_eq(async_mutex_new(&m), 0);
    cr_assert_eq(async_cond_new(&c), 0);
    for (int round = 0; round < 2; round++) {
        struct locker l = {m, false};
        cr_assert_eq(async_mutex_lock(m), 0);
        async_task_t t = test_spawn_started(lock_once, &l); /* queued for m */
        int rc;
        if (round == 0) {
            rc = async_cond_wait_dl(c, m, async_now() - 1);
            cr_assert_eq(rc, ASYNC_ETIMEDOUT);
        } else {
            cr_assert_eq(async_task_cancel(async_task_self()), 0);
            rc = async_cond_wait(c, m);
            cr_assert_eq(rc, ASYNC_ECANCELED);
        }
        /* Refused before it began: the mutex was never let go, so the
         * task queued for it has not had it. */
        cr_assert_not(l.held, "round %d: the mutex went to another task during a refused wait", round);
        bool was = async_task_shield(true);
        cr_assert_eq(async_mutex_unlock(m), 0);
        cr_assert_eq(async_task_await(t, NULL), 0);
        async_task_shield(was);
        cr_assert(l.held);
    }
    cr_assert_eq(async_cond_destroy(c), 0);
    cr_assert_eq(async_mutex_destroy(m), 0);
    return 0;
}
/* Kills sync.c:347 and :348 without their early returns: cond_wait in a
 * cancelled task, or past its deadline, let the mutex go to a waiting task
 * and took it back. */
Test(round13, cond_wait_that_cannot_begin_keeps_the_mutex, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_cond_wait_refused, NULL, NULL), 0);
}

struct foreign_mutex {
    async_mutex_t *m;
    int rc;
};

static int bind_mutex(void *arg, void **res)
{
    (void)res;
    struct foreign_mutex *f = arg;
    f->rc = async_mutex_trylock(f->m); /* binds it to this task's loop */
    if (f->rc == 0) f->rc = async_mutex_unlock(f->m);
    return 0;
}

static int t_cond_foreign_mutex(void *arg, void **res)
{
    (void)res;
    struct foreign_mutex *f = arg;
    async_cond_t *c;
    cr_assert_eq(async_cond_new(&c), 0);
    cr_assert_eq(async_cond_wait_dl(c, f->m, async_deadline_after(ASYNC_MSEC(10))), ASYNC_EWRONGLOOP);
    cr_assert_eq(async_cond_destroy(c), 0);
    return 0;
}
/* Kills sync.c:344 without `|| own(&m->loop)`: a mutex of another loop gave
 * EPERM (not held) instead of EWRONGLOOP. */
Test(round13, cond_wait_with_another_loops_mutex_is_ewrongloop, .timeout = 10)
{
    struct foreign_mutex f = {NULL, 1};
    async_loop_t *other;
    cr_assert_eq(async_loop_new(&other), 0);
    cr_assert_eq(async_mutex_new(&f.m), 0);
    cr_assert_eq(async_task_spawn(NULL, other, bind_mutex, &f, NULL), 0);
    cr_assert_eq(async_loop_run(other, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(f.rc, 0);
    cr_assert_eq(test_run_task(t_cond_foreign_mutex, &f, NULL), 0);
    cr_assert_eq(async_mutex_destroy(f.m), 0); /* from its loop's thread, outside it */
    cr_assert_eq(async_loop_destroy(other), 0);
}

static int t_select_element_stolen(void *arg, void **res)
{
    (void)arg, (void)res;
    async_chan_t *c;
    cr_assert_eq(async_chan_new(&c, sizeof(int), 1), 0);
    struct sel r = {c, ASYNC_SELECT_RECV, 0, 1};
    async_task_t t = test_spawn_started(select_one, &r);
    /* Buffered, which wakes the select, and taken back before it runs. */
    int v = 5;
    cr_assert_eq(async_chan_trysend(c, &v), 0);
    cr_assert_eq(async_chan_tryrecv(c, &v), 0);
    cr_assert_eq(async_yield(), 0);
    cr_assert_eq(async_task_done(t), 0, "a select woken for nothing returned (%s)", async_errname(r.rc));
    v = 6;
    cr_assert_eq(async_chan_send(c, &v), 0);
    cr_assert_eq(async_task_await(t, NULL), 0);
    cr_assert_eq(r.rc, 0, "select: %s", async_errname(r.rc));
    cr_assert_eq(r.value, 6);
    cr_assert_eq(async_chan_destroy(c), 0);
    return 0;
}
/* Kills select.c:30 waking the select with a nonzero code: a select whose
 * element another task took first went back to waiting. */
Test(round13, select_woken_for_a_stolen_element_waits_on, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_select_element_stolen, NULL, NULL), 0);
}

struct two_selects {
    async_chan_t *chan;
    int got[2];
    int rc[2];
};

/* Selects on its channel twice from the same frame: the second select's
 * watcher lies where the first one's was. */
static int select_twice(void *arg, void **res)
{
    (void)res;
    struct two_selects *s = arg;
    for (int i = 0; i < 2; i++) {
        async_select_case_t c = {.chan = s->chan, .op = ASYNC_SELECT_RECV, .elem = &s->got[i]};
        size_t fired;
        s->rc[i] = async_select_dl(&c, 1, &fired, async_deadline_after(ASYNC_SEC(3)));
    }
    return 0;
}

static int t_watchers_unlinked_out_of_order(void *arg, void **res)
{
    (void)arg, (void)res;
    async_chan_t *c1, *c2;
    cr_assert_eq(async_chan_new(&c1, sizeof(int), 1), 0);
    cr_assert_eq(async_chan_new(&c2, sizeof(int), 1), 0);
    struct two_selects a = {c1, {0, 0}, {1, 1}};
    struct sel b = {c2, ASYNC_SELECT_RECV, 0, 1};
    async_task_t ta = test_spawn_started(select_twice, &a);
    async_task_t tb = test_spawn_started(select_one, &b); /* its watcher is linked last */
    int v = 20;
    cr_assert_eq(async_chan_trysend(c2, &v), 0); /* the later select ends first */
    cr_assert_eq(async_task_await(tb, NULL), 0);
    cr_assert_eq(b.rc, 0);
    v = 10;
    cr_assert_eq(async_chan_trysend(c1, &v), 0);
    cr_assert_eq(async_yield(), 0); /* a's first select ends, its second waits */
    v = 11;
    cr_assert_eq(async_chan_trysend(c1, &v), 0);
    cr_assert_eq(async_task_await(ta, NULL), 0);
    cr_assert_eq(a.rc[0], 0);
    cr_assert_eq(a.rc[1], 0, "second select: %s", async_errname(a.rc[1]));
    cr_assert_eq(a.got[0], 10);
    cr_assert_eq(a.got[1], 11);
    cr_assert_eq(async_chan_destroy(c1), 0);
    cr_assert_eq(async_chan_destroy(c2), 0);
    return 0;
}
/* Kills select.c:45 without `w->next->prev = w->prev`: unlinking a later
 * select's watcher first left the earlier one's pointing at it, and the
 * watch list then looped on itself. */
Test(round13, select_watchers_unlinked_out_of_order, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_watchers_unlinked_out_of_order, NULL, NULL), 0);
}

static int bind_chan(void *arg, void **res)
{
    (void)res;
    int v;
    return async_chan_tryrecv(arg, &v) == ASYNC_EAGAIN ? 0 : 1; /* binds it here */
}

static int t_select_foreign_case(void *arg, void **res)
{
    (void)res;
    async_chan_t *foreign = arg, *mine;
    cr_assert_eq(async_chan_new(&mine, sizeof(int), 1), 0);
    int v = 3, got = 0;
    cr_assert_eq(async_chan_trysend(mine, &v), 0);
    async_select_case_t cases[2] = {{.chan = mine, .op = ASYNC_SELECT_RECV, .elem = &got},
                                    {.chan = foreign, .op = ASYNC_SELECT_RECV, .elem = &got}};
    size_t fired = 9;
    cr_assert_eq(async_select(cases, 2, &fired), ASYNC_EWRONGLOOP);
    cr_assert_eq(async_chan_len(mine), 1, "a select that failed took an element");
    cr_assert_eq(async_chan_destroy(mine), 0);
    return 0;
}
/* Kills select.c:78 without the up-front ownership check: the case on the
 * select's own channel completed before the foreign one failed. */
Test(round13, select_with_a_foreign_channel_completes_nothing, .timeout = 10)
{
    async_loop_t *other;
    async_chan_t *foreign;
    cr_assert_eq(async_loop_new(&other), 0);
    cr_assert_eq(async_chan_new(&foreign, sizeof(int), 1), 0);
    async_task_t t;
    cr_assert_eq(async_task_spawn(&t, other, bind_chan, foreign, NULL), 0);
    cr_assert_eq(async_loop_run(other, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(test_run_task(t_select_foreign_case, foreign, NULL), 0);
    cr_assert_eq(async_chan_destroy(foreign), 0);
    cr_assert_eq(async_loop_destroy(other), 0);
}

#define MANY 11

struct many {
    size_t n;
    async_chan_t *chans[MANY];
    int got[MANY];
    size_t fired;
    int rc;
};

static int select_many(void *arg, void **res)
{
    (void)res;
    struct many *m = arg;
    async_select_case_t cases[MANY];
    for (size_t i = 0; i < m->n; i++)
        cases[i] = (async_select_case_t){.chan = m->chans[i], .op = ASYNC_SELECT_RECV, .elem = &m->got[i]};
    m->rc = async_select_dl(cases, m->n, &m->fired, async_deadline_after(ASYNC_SEC(3)));
    return 0;
}

static int t_select_many(void *arg, void **res)
{
    (void)arg, (void)res;
    /* Around select.c's ON_STACK (8) watchers kept on the stack. */
    for (size_t n = 7; n <= MANY; n++) {
        struct many m = {.n = n, .fired = 99, .rc = 1};
        for (size_t i = 0; i < n; i++) cr_assert_eq(async_chan_new(&m.chans[i], sizeof(int), 1), 0);
        async_task_t t = test_spawn_started(select_many, &m); /* parked, a watcher a case */
        int v = (int)n;
        cr_assert_eq(async_chan_trysend(m.chans[n - 1], &v), 0);
        cr_assert_eq(async_task_await(t, NULL), 0);
        cr_assert_eq(m.rc, 0, "%zu cases: %s", n, async_errname(m.rc));
        cr_assert_eq(m.fired, n - 1);
        cr_assert_eq(m.got[n - 1], (int)n);
        for (size_t i = 0; i < n; i++) cr_assert_eq(async_chan_destroy(m.chans[i]), 0);
    }
    return 0;
}
/* Kills select.c:87 keeping nine watchers in the stack array of eight (the
 * sanitizer builds see the overflow; the plain build, its damage). */
Test(round13, select_with_more_cases_than_the_stack_array, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_select_many, NULL, NULL), 0);
}

/* --- groups ---------------------------------------------------------------- */

static int nap_ms(void *arg, void **res)
{
    (void)res;
    return async_sleep(ASYNC_MSEC((intptr_t)arg));
}

static int t_group_wait_for_all(void *arg, void **res)
{
    (void)arg, (void)res;
    async_group_t *g;
    cr_assert_eq(async_group_new(&g, NULL), 0);
    cr_assert_eq(async_group_spawn(g, nap_ms, (void *)5, NULL), 0);
    cr_assert_eq(async_group_spawn(g, nap_ms, (void *)60, NULL), 0);
    cr_assert_eq(async_group_spawn(g, nap_ms, (void *)30, NULL), 0);
    cr_assert_eq(async_group_wait_dl(g, async_deadline_after(ASYNC_SEC(5))), 0);
    cr_assert_eq(async_group_live(g), 0, "group_wait returned with tasks still running");
    cr_assert_eq(async_group_destroy(g), 0);
    return 0;
}
/* Kills group.c:79 waking the waiters with one task still live. */
Test(round13, group_wait_returns_when_every_task_ended, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_group_wait_for_all, NULL, NULL), 0);
}

static int t_group_wait_after_the_end(void *arg, void **res)
{
    (void)arg, (void)res;
    async_group_t *g;
    cr_assert_eq(async_group_new(&g, NULL), 0);
    cr_assert_eq(async_group_spawn(g, fail_eio, NULL, NULL), 0);
    while (async_group_live(g) > 0) cr_assert_eq(async_yield(), 0);
    cr_assert_eq(async_group_wait(g), ASYNC_EIO, "a wait after the group ended lost its error");
    cr_assert_eq(async_group_destroy(g), 0);
    return 0;
}
/* Kills group.c:97 returning 0 from a wait on a group already ended. */
Test(round13, group_wait_after_the_end_returns_the_first_error, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_group_wait_after_the_end, NULL, NULL), 0);
}

static int t_group_slots_reclaimed(void *arg, void **res)
{
    (void)arg, (void)res;
    long after_first = 0;
    for (int round = 0; round < 50; round++) {
        async_group_t *g;
        cr_assert_eq(async_group_new(&g, NULL), 0);
        cr_assert_eq(async_group_spawn(g, ret_arg, NULL, NULL), 0);
        cr_assert_eq(async_group_wait(g), 0);
        cr_assert_eq(async_group_destroy(g), 0);
        if (round == 0) after_first = test_alloc_live();
    }
    cr_assert_leq(test_alloc_live(), after_first,
                  "50 rounds of a one-task group hold %ld allocations more than one round",
                  test_alloc_live() - after_first);
    return 0;
}
/* Kills group.c:44 spawning group tasks undetached: their slots were never
 * reclaimed, one more for every task the group ever ran. */
Test(round13, group_task_slots_are_reclaimed_as_they_end, .timeout = 10)
{
    test_alloc_install();
    cr_assert_eq(test_run_task(t_group_slots_reclaimed, NULL, NULL), 0);
    test_alloc_uninstall();
}

/* --- the loop --------------------------------------------------------------- */

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
Test(round13, yielding_tasks_let_libev_poll, .timeout = 20)
{
    cr_assert_eq(test_run_task(t_budget, NULL, NULL), 0);
}

/* --- objects made outside any loop, descriptors ---------------------------- */

/* Kills sync.c:42 without `!*owner ||`: an object made outside any loop
 * and used outside any loop asked a loop that does not exist. */
Test(round13, unbound_objects_work_outside_any_loop, .timeout = 10)
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
/* Kills task.c:478 always asking libev for EV_READ. */
Test(round13, wait_for_writable_ignores_readable, .timeout = 10)
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

/* Kills loop.c:304 without `loop->running ||`: a post (no task live)
 * destroyed the loop that was running it. */
Test(round13, running_loop_refuses_destroy_from_its_post, .timeout = 10)
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
/* Kills loop.c:344 without its check for a loop already running here. */
Test(round13, loop_run_inside_another_loop_is_ewrongloop, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_nested_run, NULL, NULL), 0);
}

/* Kills loop.c:346's mode check widened by one (an out-of-range mode read
 * past the flag table) and :345's ONCE and NOWAIT swapped (NOWAIT then
 * blocked until the sleeper's timer, 10 s out; 5 s is the hang bound). */
Test(round13, loop_run_modes, .timeout = 30)
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
Test(round13, every_error_code_has_a_name_and_a_text, .timeout = 10)
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
Test(round13, set_allocator_null_restores_libc, .timeout = 10)
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
