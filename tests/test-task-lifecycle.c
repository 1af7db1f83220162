/* A task's life (lib/core/task.c, stack.c, group.c): spawn's stack sizes at
 * and past their limits, libev's memory reserve following the live tasks
 * (not growing with finished tasks or failed spawns), a recycled slot that
 * starts clean, await and detach (another loop's task, a second awaiter, a
 * finished task), gather past its deadline or cancelled, and groups (wait
 * for all, the first error, slots reclaimed as tasks end).  Each test names
 * the mutant of lib/core it kills (scripts/mutate): a change every earlier
 * suite let through. */
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
/* Kills task.c:266's cap raised fourfold. */
Test(task_lifecycle, stack_size_past_the_cap_is_einval, .timeout = 10)
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
/* Kills task.c:267's floor lowered to 1 byte: a stack_size below
 * ASYNC_STACK_MIN must still give ASYNC_STACK_MIN (a one-page stack
 * overflows into its guard page). */
Test(task_lifecycle, small_stack_size_is_raised_to_the_minimum, .timeout = 10)
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
Test(task_lifecycle, reserve_does_not_grow_with_finished_tasks, .timeout = 120)
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
Test(task_lifecycle, reserve_does_not_grow_with_failed_spawns, .timeout = 120)
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
/* Kills task.c:293 without `t->shielded = false` or without
 * `t->has_pending_wake = false`. */
Test(task_lifecycle, recycled_slot_drops_shield_and_pending_wake, .timeout = 10)
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
/* Kills task.c:362 without the loop check: the awaiter queued on another
 * loop's task and waited out its deadline. */
Test(task_lifecycle, await_of_another_loops_task_is_ewrongloop, .timeout = 10)
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
/* Kills task.c:368 without the re-validation after the wake: the second
 * awaiter of one task waited on a reaped slot until its deadline. */
Test(task_lifecycle, second_awaiter_of_one_task_gets_esrch, .timeout = 10)
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
/* Kills task.c:384 never releasing a finished task on detach. */
Test(task_lifecycle, detach_of_a_finished_task_spends_the_handle, .timeout = 10)
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
/* Kills task.c:524 returning the first task's error over the deadline, and
 * :505 reporting a spent handle as 0 once the deadline has passed. */
Test(task_lifecycle, gather_dl_past_its_deadline_says_so, .timeout = 10)
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
/* Kills task.c:515 without the ECANCELED case: a cancelled gather returned
 * an earlier task's error instead. */
Test(task_lifecycle, cancelled_gather_says_so, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_gather_cancel, NULL, NULL), 0);
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
Test(task_lifecycle, group_wait_returns_when_every_task_ended, .timeout = 10)
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
Test(task_lifecycle, group_wait_after_the_end_returns_the_first_error, .timeout = 10)
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
Test(task_lifecycle, group_task_slots_are_reclaimed_as_they_end, .timeout = 10)
{
    test_alloc_install();
    cr_assert_eq(test_run_task(t_group_slots_reclaimed, NULL, NULL), 0);
    test_alloc_uninstall();
}

