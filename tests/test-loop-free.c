/* async_loop_destroy and the posts it runs: a post made by a post still runs
 * exactly once, and a post that spawns a task makes the free refuse with
 * ASYNC_EBUSY instead of freeing the task under it; nothing leaks. */
#include <criterion/criterion.h>
#include "support/alloc.h"
#include <async.h>

typedef struct {
    async_loop_t *loop;
    int first, second;
} post_job_t;

static void second_post(void *arg)
{
    ((post_job_t *)arg)->second++;
}

static void first_post(void *arg)
{
    post_job_t *j = arg;
    j->first++;
    cr_assert_eq(async_loop_post(j->loop, second_post, j), 0);
}

/* "Every successful post runs exactly once: in an iteration of async_loop_run,
 * or in async_loop_destroy" - including one posted by a post that free runs. */
Test(loop_free, free_runs_posts_made_by_posts, .timeout = 10)
{
    test_alloc_install();
    post_job_t j = {0};
    cr_assert_eq(async_loop_new(&j.loop), 0);
    cr_assert_eq(async_loop_post(j.loop, first_post, &j), 0);
    cr_assert_eq(async_loop_destroy(j.loop), 0);
    cr_assert_eq(j.first, 1);
    cr_assert_eq(j.second, 1, "the post made by a post ran too");
    cr_assert_eq(test_alloc_live(), 0, "no post node left behind");
    test_alloc_uninstall();
}

static int trivial(void *arg, void **res)
{
    (void)res;
    (*(int *)arg)++;
    return 0;
}

typedef struct {
    async_loop_t *loop;
    int ran, spawn_rc;
} spawn_job_t;

static void spawning_post(void *arg)
{
    spawn_job_t *j = arg;
    async_task_opts_t o = {.detached = true};
    j->spawn_rc = async_task_spawn(NULL, j->loop, trivial, &j->ran, &o);
}

/* A post that async_loop_destroy runs may spawn a task: free then refuses with
 * ASYNC_EBUSY (tasks are alive) rather than free the task under it; running
 * the loop finishes the task and a second free succeeds, leaking nothing. */
Test(loop_free, free_refuses_when_a_post_spawns, .timeout = 10)
{
    test_alloc_install();
    spawn_job_t j = {0};
    cr_assert_eq(async_loop_new(&j.loop), 0);
    cr_assert_eq(async_loop_post(j.loop, spawning_post, &j), 0);
    cr_assert_eq(async_loop_destroy(j.loop), ASYNC_EBUSY);
    cr_assert_eq(j.spawn_rc, 0);
    cr_assert_eq(async_loop_run(j.loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(j.ran, 1, "the spawned task ran");
    cr_assert_eq(async_loop_destroy(j.loop), 0);
    cr_assert_eq(test_alloc_live(), 0);
    test_alloc_uninstall();
}
