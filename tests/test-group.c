/* Task groups: the group ends when its tasks end, the first failure cancels
 * the rest, and nothing outlives the group. */
#include <criterion/criterion.h>
#include "support/run.h"

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
    cr_assert_eq(async_group_new(NULL, &g), 0);
    for (int i = 0; i < 10; i++) cr_assert_eq(async_group_spawn(g, quick, &p, NULL), 0);
    cr_assert_eq(async_group_live(g), 10);
    cr_assert_eq(async_group_wait(g), 0);
    cr_assert_eq(p.finished, 10);
    cr_assert_eq(async_group_free(g), 0);
    return 0;
}
Test(group, waits_for_all, .timeout = 10) { cr_assert_eq(test_run_task(t_ok, NULL, NULL), 0); }

static int t_fail(void *arg, void **res)
{
    (void)arg, (void)res;
    struct probe p = {0};
    async_group_t *g;
    cr_assert_eq(async_group_new(NULL, &g), 0);
    for (int i = 0; i < 5; i++) cr_assert_eq(async_group_spawn(g, sleeper, &p, NULL), 0);
    cr_assert_eq(async_group_spawn(g, failing, NULL, NULL), 0);
    int64_t t0 = async_now();
    cr_assert_eq(async_group_wait(g), ASYNC_EIO, "the first failure is the group's error");
    cr_assert_lt(async_now() - t0, ASYNC_SEC(5), "the sleepers were cancelled, not waited out");
    cr_assert_eq(p.cancelled, 5);
    cr_assert_eq(async_group_spawn(g, quick, &p, NULL), ASYNC_ECANCELED, "a failed group takes no more");
    cr_assert_eq(async_group_free(g), 0);
    return 0;
}
Test(group, failure_cancels_the_rest, .timeout = 10) { cr_assert_eq(test_run_task(t_fail, NULL, NULL), 0); }

static int t_free_live(void *arg, void **res)
{
    (void)arg, (void)res;
    struct probe p = {0};
    async_group_t *g;
    cr_assert_eq(async_group_new(NULL, &g), 0);
    for (int i = 0; i < 3; i++) cr_assert_eq(async_group_spawn(g, sleeper, &p, NULL), 0);
    cr_assert_eq(async_group_wait_dl(g, async_deadline_after(ASYNC_MSEC(5))), ASYNC_ETIMEDOUT);
    cr_assert_eq(async_group_live(g), 3);
    cr_assert_eq(async_group_free(g), 0, "from a task: cancels, waits, frees");
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
    cr_assert_eq(async_group_new(NULL, &g), 0);
    for (int i = 0; i < 3; i++) cr_assert_eq(async_group_spawn(g, sleeper, p, NULL), 0);
    cr_assert_eq(async_sleep(ASYNC_SEC(10)), ASYNC_ECANCELED);
    cr_assert_eq(async_group_free(g), 0, "a cancelled owner still waits for its group");
    cr_assert_eq(p->finished, 3);
    return ASYNC_ECANCELED;
}

static int t_owner_cancelled(void *arg, void **res)
{
    (void)arg, (void)res;
    struct probe p = {0};
    async_task_t owner;
    cr_assert_eq(async_task_spawn(NULL, t_cancelled_freer, &p, NULL, &owner), 0);
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
    cr_assert_eq(async_group_new(loop, &g), 0);
    struct probe p = {0};
    cr_assert_eq(async_group_spawn(g, quick, &p, NULL), 0);
    cr_assert_eq(async_group_free(g), ASYNC_EBUSY);
    cr_assert_eq(async_group_wait(g), ASYNC_ENOTASK);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(async_group_free(g), 0);
    cr_assert_eq(async_loop_free(loop), 0);
    cr_assert_eq(async_group_new(NULL, &g), ASYNC_ENOLOOP);
}

static int t_user_cancel(void *arg, void **res)
{
    (void)arg, (void)res;
    struct probe p = {0};
    async_group_t *g;
    cr_assert_eq(async_group_new(NULL, &g), 0);
    for (int i = 0; i < 4; i++) cr_assert_eq(async_group_spawn(g, sleeper, &p, NULL), 0);
    cr_assert_eq(async_yield(), 0);
    async_group_cancel(g);
    cr_assert_eq(async_group_wait(g), ASYNC_ECANCELED);
    cr_assert_eq(p.cancelled, 4);
    cr_assert_eq(async_group_free(g), 0);
    return 0;
}
Test(group, cancel, .timeout = 10) { cr_assert_eq(test_run_task(t_user_cancel, NULL, NULL), 0); }
