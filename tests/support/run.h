/* Test helpers around the loop: run one task to completion on a fresh loop,
 * and widen timing tolerances on slow machines (ASYNC_TEST_SLACK, default 1). */
#ifndef TEST_SUPPORT_RUN_H
#define TEST_SUPPORT_RUN_H
#include <async.h>

/* Spawns fn(arg) on a new loop, runs the loop until nothing is left, frees
 * it, and returns the task's code (the result goes to *result if non-NULL).
 * Fails the test if the loop cannot be made, run or freed. */
int test_run_task(async_task_fn fn, void *arg, void **result);

/* Multiplier for timing tolerances. */
double test_slack(void);
#endif
