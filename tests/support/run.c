/* See run.h. */
#include <stdlib.h>
#include <criterion/criterion.h>
#include "run.h"

struct outcome {
    async_task_fn fn;
    void *arg, *result;
    int rc;
    bool ran;
};

static int wrapper(void *arg, void **result)
{
    struct outcome *o = arg;
    o->rc = o->fn(o->arg, &o->result);
    o->ran = true;
    (void)result;
    return 0;
}

int test_run_task(async_task_fn fn, void *arg, void **result)
{
    async_loop_t *loop;
    struct outcome o = {fn, arg, NULL, 0, false};
    cr_assert_eq(async_loop_new(&loop), 0);
    cr_assert_eq(async_task_spawn(NULL, loop, wrapper, &o, &(async_task_opts_t){.detached = true}),
                 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert(o.ran, "the task never finished");
    cr_assert_eq(async_loop_destroy(loop), 0);
    if (result) *result = o.result;
    return o.rc;
}

double test_slack(void)
{
    const char *s = getenv("ASYNC_TEST_SLACK");
    double v = s ? atof(s) : 1.0;
    return v > 0 ? v : 1.0;
}
