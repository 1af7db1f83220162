/* See run.h. */
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
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

/* Runs o's task on a new loop; 0, or the step that failed (1 new, 2 spawn,
 * 3 run, 4 destroy).  No asserts: it also runs on threads of its own. */
static int run_outcome(struct outcome *o)
{
    async_loop_t *loop;
    if (async_loop_new(&loop)) return 1;
    if (async_task_spawn(NULL, loop, wrapper, o, &(async_task_opts_t){.detached = true})) {
        async_loop_destroy(loop);
        return 2;
    }
    if (async_loop_run(loop, ASYNC_RUN_DEFAULT)) return 3;
    return async_loop_destroy(loop) ? 4 : 0;
}

static const char *const steps[] = {"", "async_loop_new", "async_task_spawn", "async_loop_run",
                                    "async_loop_destroy"};

int test_run_task(async_task_fn fn, void *arg, void **result)
{
    struct outcome o = {fn, arg, NULL, 0, false};
    int step = run_outcome(&o);
    cr_assert_eq(step, 0, "%s failed", steps[step]);
    cr_assert(o.ran, "the task never finished");
    if (result) *result = o.result;
    return o.rc;
}

struct in_thread {
    struct outcome o;
    int step;
};

static void *thread_main(void *arg)
{
    struct in_thread *t = arg;
    t->step = run_outcome(&t->o);
    return NULL;
}

int test_run_task_in_thread(async_task_fn fn, void *arg)
{
    struct in_thread t = {{fn, arg, NULL, 0, false}, 0};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, thread_main, &t), 0);
    cr_assert_eq(pthread_join(th, NULL), 0);
    cr_assert_eq(t.step, 0, "%s failed on the other thread", steps[t.step]);
    cr_assert(t.o.ran, "the task on the other thread never finished");
    return t.o.rc;
}

async_task_t test_spawn_started(async_task_fn fn, void *arg)
{
    async_task_t t;
    cr_assert_eq(async_task_spawn(&t, NULL, fn, arg, NULL), 0);
    cr_assert_eq(async_yield(), 0);
    return t;
}

double test_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double test_slack(void)
{
    const char *s = getenv("ASYNC_TEST_SLACK");
    double v = s ? atof(s) : 1.0;
    return v > 0 ? v : 1.0;
}

void test_collect(test_output_t *r, pid_t pid, int fd, double t0, double timeout)
{
    size_t len = 0;
    double end = t0 + timeout * test_slack();
    for (;;) {
        double left = end - test_now_s();
        if (left <= 0) {
            r->timed_out = true;
            kill(-pid, SIGKILL);
            break;
        }
        struct pollfd pf = {fd, POLLIN, 0};
        if (poll(&pf, 1, (int)(left * 1000) + 1) <= 0) continue;
        ssize_t got = read(fd, r->out + len, sizeof r->out - 1 - len);
        if (got <= 0) break;
        len += (size_t)got;
        if (len == sizeof r->out - 1) len = 0; /* keep the tail of a flood */
    }
    r->out[len] = '\0';
    close(fd);
    /* The pipe closed: the child is ending; reap it, with its deadline too. */
    while (waitpid(pid, &r->status, WNOHANG) == 0) {
        if (test_now_s() > end + 10) {
            r->timed_out = true;
            kill(-pid, SIGKILL);
        }
        usleep(10000);
    }
    kill(-pid, SIGKILL); /* anything left of the group */
    r->seconds = test_now_s() - t0;
}
