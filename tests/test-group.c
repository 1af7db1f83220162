/* Task groups: the group ends when its tasks end, the first failure cancels
 * the rest, and nothing outlives the group. */
#include <criterion/criterion.h>
#include "support/run.h"
#include "support/alloc.h"

struct probe {
    int finished, cancelled;
};

static int sleeper(void *arg, void **res)
{
    (void)res;
    struct probe *p = arg;
    int rc = async_sleep(ASYNC_SEC(10));
    if (rc == ASYNC_ECANCELED) p->cancelled++;
    p->finished++;
    return rc;
}

static int quick(void *arg, void **res)
{
    (void)res;
    ((struct probe *)arg)->finished++;
    return async_sleep(ASYNC_MSEC(5));
}

static int failing(void *arg, void **res)
{
    (void)arg, (void)res;
    async_sleep(ASYNC_MSEC(5));
    return ASYNC_EIO;
}

static int t_ok(void *arg, void **res)
{
    (void)arg, (void)res;
    struct probe p = {0};
    async_group_t *g;
    cr_assert_eq(async_group_new(&g, NULL), 0);
    for (int i = 0; i < 10; i++) cr_assert_eq(async_group_spawn(g, quick, &p, NULL), 0);
    cr_assert_eq(async_group_live(g), 10);
    cr_assert_eq(async_group_wait(g), 0);
    cr_assert_eq(p.finished, 10);
    cr_assert_eq(async_group_destroy(g), 0);
    return 0;
}
Test(group, waits_for_all, .timeout = 10) { cr_assert_eq(test_run_task(t_ok, NULL, NULL), 0); }

static int t_fail(void *arg, void **res)
{
    (void)arg, (void)res;
    struct probe p = {0};
    async_group_t *g;
    cr_assert_eq(async_group_new(&g, NULL), 0);
    for (int i = 0; i < 5; i++) cr_assert_eq(async_group_spawn(g, sleeper, &p, NULL), 0);
    cr_assert_eq(async_group_spawn(g, failing, NULL, NULL), 0);
    int64_t t0 = async_now();
    cr_assert_eq(async_group_wait(g), ASYNC_EIO, "the first failure is the group's error");
    cr_assert_lt(async_now() - t0, ASYNC_SEC(5), "the sleepers were cancelled, not waited out");
    cr_assert_eq(p.cancelled, 5);
    cr_assert_eq(async_group_spawn(g, quick, &p, NULL), ASYNC_ECLOSED, "a failed group takes no more");
    cr_assert_eq(async_group_cancel(g), ASYNC_EALREADY, "its failure cancelled it");
    cr_assert_eq(async_group_destroy(g), 0);
    return 0;
}
Test(group, failure_cancels_the_rest, .timeout = 10) { cr_assert_eq(test_run_task(t_fail, NULL, NULL), 0); }

static int t_free_live(void *arg, void **res)
{
    (void)arg, (void)res;
    struct probe p = {0};
    async_group_t *g;
    cr_assert_eq(async_group_new(&g, NULL), 0);
    for (int i = 0; i < 3; i++) cr_assert_eq(async_group_spawn(g, sleeper, &p, NULL), 0);
    cr_assert_eq(async_group_wait_dl(g, async_deadline_after(ASYNC_MSEC(5))), ASYNC_ETIMEDOUT);
    cr_assert_eq(async_group_live(g), 3);
    cr_assert_eq(async_group_destroy(g), 0, "from a task: cancels, waits, frees");
    cr_assert_eq(p.finished, 3, "nothing outlived the group");
    cr_assert_eq(p.cancelled, 3);
    return 0;
}
Test(group, free_cancels_and_waits, .timeout = 10) { cr_assert_eq(test_run_task(t_free_live, NULL, NULL), 0); }

static int t_cancelled_freer(void *arg, void **res)
{
    (void)res;
    struct probe *p = arg;
    async_group_t *g;
    cr_assert_eq(async_group_new(&g, NULL), 0);
    for (int i = 0; i < 3; i++) cr_assert_eq(async_group_spawn(g, sleeper, p, NULL), 0);
    cr_assert_eq(async_sleep(ASYNC_SEC(10)), ASYNC_ECANCELED);
    cr_assert_eq(async_group_destroy(g), 0, "a cancelled owner still waits for its group");
    cr_assert_eq(p->finished, 3);
    return ASYNC_ECANCELED;
}

static int t_owner_cancelled(void *arg, void **res)
{
    (void)arg, (void)res;
    struct probe p = {0};
    async_task_t owner;
    cr_assert_eq(async_task_spawn(&owner, NULL, t_cancelled_freer, &p, NULL), 0);
    cr_assert_eq(async_sleep(ASYNC_MSEC(5)), 0);
    cr_assert_eq(async_task_cancel(owner), 0);
    cr_assert_eq(async_task_await(owner, NULL), ASYNC_ECANCELED);
    cr_assert_eq(p.finished, 3);
    return 0;
}
Test(group, cancelled_owner_still_waits, .timeout = 10) { cr_assert_eq(test_run_task(t_owner_cancelled, NULL, NULL), 0); }

Test(group, free_outside_a_task_with_live_tasks_is_busy, .timeout = 10)
{
    async_loop_t *loop;
    cr_assert_eq(async_loop_new(&loop), 0);
    async_group_t *g;
    cr_assert_eq(async_group_new(&g, loop), 0);
    struct probe p = {0};
    cr_assert_eq(async_group_spawn(g, quick, &p, NULL), 0);
    cr_assert_eq(async_group_destroy(g), ASYNC_EBUSY);
    cr_assert_eq(async_group_wait(g), ASYNC_ENOTASK);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(async_group_destroy(g), 0);
    cr_assert_eq(async_loop_destroy(loop), 0);
    cr_assert_eq(async_group_new(&g, NULL), ASYNC_ENOLOOP);
}

static int t_user_cancel(void *arg, void **res)
{
    (void)arg, (void)res;
    struct probe p = {0};
    async_group_t *g;
    cr_assert_eq(async_group_new(&g, NULL), 0);
    for (int i = 0; i < 4; i++) cr_assert_eq(async_group_spawn(g, sleeper, &p, NULL), 0);
    cr_assert_eq(async_yield(), 0);
    cr_assert_eq(async_group_cancel(g), 0);
    cr_assert_eq(async_group_cancel(g), ASYNC_EALREADY, "cancelling twice");
    cr_assert_eq(async_group_wait(g), ASYNC_ECANCELED);
    cr_assert_eq(p.cancelled, 4);
    cr_assert_eq(async_group_destroy(g), 0);
    return 0;
}
Test(group, cancel, .timeout = 10) { cr_assert_eq(test_run_task(t_user_cancel, NULL, NULL), 0); }

/* --- an owner cancelled inside async_group_destroy; two waiters ------------- */

static int group_sleeper(void *arg, void **res)
{
    (void)res;
    int *ended = arg;
    int rc = async_sleep(ASYNC_SEC(30));
    (*ended)++;
    return rc;
}

typedef struct {
    int ended, free_rc, after_rc;
} owner_job_t;

/* An owner cancelled while freeing its group still waits for every group task
 * (they must not outlive the group), and afterwards is still cancelled. */
static int group_owner(void *arg, void **res)
{
    (void)res;
    owner_job_t *j = arg;
    async_group_t *g;
    cr_assert_eq(async_group_new(&g, NULL), 0);
    for (int i = 0; i < 3; i++) cr_assert_eq(async_group_spawn(g, group_sleeper, &j->ended, NULL), 0);
    j->free_rc = async_group_destroy(g);
    j->after_rc = async_sleep(0);
    return 0;
}

static int t_group_owner_cancelled(void *arg, void **res)
{
    (void)arg, (void)res;
    owner_job_t j = {0};
    async_task_t o;
    cr_assert_eq(async_task_spawn(&o, NULL, group_owner, &j, NULL), 0);
    cr_assert_eq(async_yield(), 0); /* the owner is in async_group_destroy */
    cr_assert_eq(async_task_cancel(o), 0);
    cr_assert_eq(async_task_await(o, NULL), 0);
    cr_assert_eq(j.free_rc, 0);
    cr_assert_eq(j.ended, 3, "every group task ended before the free returned");
    cr_assert_eq(j.after_rc, ASYNC_ECANCELED, "the cancellation is kept for later");
    return 0;
}
Test(group, cancelled_group_owner_waits_then_stays_cancelled, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_group_owner_cancelled, NULL, NULL), 0);
}

typedef struct {
    async_group_t *group;
    bool free_it;
    int rc;
} gwait_job_t;

static int group_child(void *arg, void **res)
{
    (void)arg, (void)res;
    return async_sleep(ASYNC_MSEC(5));
}

static int group_waiter(void *arg, void **res)
{
    (void)res;
    gwait_job_t *j = arg;
    j->rc = async_group_wait(j->group);
    if (j->free_it) cr_assert_eq(async_group_destroy(j->group), 0);
    return 0;
}

/* Two tasks wait for a group; the first to resume frees it.  The second's
 * wait has already ended (the group was done when both were woken), so it
 * must return without touching the freed group (ASan sees the read). */
static int t_group_freed_by_first_waiter(void *arg, void **res)
{
    (void)arg, (void)res;
    async_group_t *g;
    cr_assert_eq(async_group_new(&g, NULL), 0);
    cr_assert_eq(async_group_spawn(g, group_child, NULL, NULL), 0);
    gwait_job_t a = {.group = g, .free_it = true, .rc = 1}, b = {.group = g, .rc = 1};
    async_task_t ta, tb;
    cr_assert_eq(async_task_spawn(&ta, NULL, group_waiter, &a, NULL), 0);
    cr_assert_eq(async_task_spawn(&tb, NULL, group_waiter, &b, NULL), 0);
    cr_assert_eq(async_task_await(ta, NULL), 0);
    cr_assert_eq(async_task_await(tb, NULL), 0);
    cr_assert_eq(a.rc, 0);
    cr_assert_eq(b.rc, 0);
    return 0;
}
Test(group, group_freed_by_the_first_of_two_waiters, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_group_freed_by_first_waiter, NULL, NULL), 0);
}

/* --- misuse and failures --------------------------------------------------- */

typedef struct {
    async_group_t *group;
    int wait_rc, free_rc;
} inner_job_t;

static int inner(void *arg, void **res)
{
    (void)res;
    inner_job_t *j = arg;
    j->wait_rc = async_group_wait(j->group);
    j->free_rc = async_group_destroy(j->group);
    return 0;
}

static int spawns_nothing(void *arg, void **res)
{
    (void)arg, (void)res;
    return 0;
}

/* A group's own task cannot wait for or free its group (it would wait for
 * itself); a cancelled group refuses spawns without running fn; a finished
 * group's wait returns its first error again; freeing NULL is a no-op. */
static int t_misuse(void *arg, void **res)
{
    (void)arg, (void)res;
    inner_job_t j = {.wait_rc = 1, .free_rc = 1};
    cr_assert_eq(async_group_new(&j.group, NULL), 0);
    cr_assert_eq(async_group_spawn(j.group, inner, &j, NULL), 0);
    cr_assert_eq(async_group_wait(j.group), 0);
    cr_assert_eq(j.wait_rc, ASYNC_EDEADLK, "a group task waiting for its group");
    cr_assert_eq(j.free_rc, ASYNC_EDEADLK, "a group task freeing its group");
    cr_assert_eq(async_group_live(j.group), 0);
    cr_assert_eq(async_group_cancel(j.group), 0);
    struct probe p = {0};
    cr_assert_eq(async_group_spawn(j.group, quick, &p, NULL), ASYNC_ECLOSED);
    cr_assert_eq(async_group_wait(j.group), 0, "nothing failed before the cancel");
    cr_assert_eq(async_group_destroy(j.group), 0);
    cr_assert_eq(p.finished, 0, "a refused spawn never runs");
    cr_assert_eq(async_group_destroy(NULL), 0);
    return 0;
}
Test(group, misuse_is_refused, .timeout = 10) { cr_assert_eq(test_run_task(t_misuse, NULL, NULL), 0); }

/* An allocation failure in async_group_new or in a spawn is ASYNC_ENOMEM;
 * the group stays usable and nothing leaks. */
static int t_oom(void *arg, void **res)
{
    (void)arg, (void)res;
    int failures = 0;
    for (long n = 0; n < 8; n++) {
        async_group_t *g;
        test_alloc_fail_after(n);
        int rc = async_group_new(&g, NULL);
        if (rc) {
            test_alloc_fail_after(-1);
            cr_assert_eq(rc, ASYNC_ENOMEM);
            failures++;
            continue;
        }
        rc = async_group_spawn(g, spawns_nothing, NULL, NULL);
        test_alloc_fail_after(-1);
        if (rc) {
            cr_assert_eq(rc, ASYNC_ENOMEM, "%s", async_errname(rc));
            cr_assert_eq(async_group_live(g), 0, "a failed spawn adds no task");
            failures++;
        }
        cr_assert_eq(async_group_wait(g), 0);
        cr_assert_eq(async_group_destroy(g), 0);
    }
    cr_assert_geq(failures, 2, "both the group and a spawn met a failed allocation");
    return 0;
}
Test(group, allocation_failures, .timeout = 10)
{
    test_alloc_install();
    cr_assert_eq(test_run_task(t_oom, NULL, NULL), 0);
    cr_assert_eq(test_alloc_live(), 0, "%ld leaked", test_alloc_live());
    test_alloc_uninstall();
}
