/* Test helpers around the loop: run one task to completion on a fresh loop
 * (on this thread or another), start a task up to its first suspension, and
 * widen timing tolerances on slow machines (ASYNC_TEST_SLACK, default 1). */
#ifndef TEST_SUPPORT_RUN_H
#define TEST_SUPPORT_RUN_H
#include <async.h>

/* Spawns fn(arg) on a new loop, runs the loop until nothing is left, frees
 * it, and returns the task's code (the result goes to *result if non-NULL).
 * Fails the test if the loop cannot be made, run or freed. */
int test_run_task(async_task_fn fn, void *arg, void **result);

/* The same on a thread of its own, with a loop of its own (made, run and
 * freed there): for checks that an object belongs to another loop or
 * thread.  fn must not use cr_assert (Criterion's asserts belong to the
 * test's thread): it records what it saw in arg.  Fails the test if the
 * thread or its loop cannot be made or the task does not finish. */
int test_run_task_in_thread(async_task_fn fn, void *arg);

/* From a task: spawns fn(arg) on the current loop and yields once, so that
 * it has run up to its first suspension (a wait, a lock, a receive) when
 * this returns.  Fails the test if the spawn or the yield fails. */
async_task_t test_spawn_started(async_task_fn fn, void *arg);

/* CLOCK_MONOTONIC in seconds. */
double test_now_s(void);

/* Multiplier for timing tolerances. */
double test_slack(void);

/* What a child's process group printed, and how it ended. */
typedef struct test_output {
    int status;     /* waitpid status */
    bool timed_out; /* the deadline passed: the group was killed */
    double seconds; /* from t0 to the reap */
    char out[65536];
} test_output_t;

/* Reads what child pid (the leader of its own process group) writes to fd,
 * the read end of the pipe its stdout and stderr go to, until the pipe
 * closes or t0 + timeout * test_slack() passes; then reaps it (10 s more
 * at most) and kills what is left of the group.  At the deadline the group
 * is killed and r->timed_out set.  Keeps the tail of a flood; closes fd. */
void test_collect(test_output_t *r, pid_t pid, int fd, double t0, double timeout);
#endif
