/* Stacks: 100,000 tasks at once under the default vm.max_map_count, reuse of
 * pooled stacks, detection of overflow with and without guard pages, and
 * loops on two threads setting up the process-wide stack settings at once. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>
#include "support/run.h"
#include "support/proc.h"

static int nap(void *arg, void **res)
{
    (void)res;
    int rc = async_sleep(ASYNC_MSEC(50));
    (*(int *)arg)++;
    return rc;
}

#if defined(__SANITIZE_THREAD__)
#define SANITIZED 1
#define MANY 1000 /* ThreadSanitizer gives each fiber a trace of over 1 MiB */
#elif defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#define MANY 20000 /* ASan's shadow and fake stacks make each task far heavier */
#else
#define MANY 100000
#endif

Test(stack, hundred_thousand_tasks_at_once, .timeout = 60)
{
    async_loop_t *loop;
    cr_assert_eq(async_loop_new(&loop), 0);
    int done = 0;
    for (int i = 0; i < MANY; i++) {
        int rc = async_task_spawn(loop, nap, &done, &(async_task_opts_t){.detached = true}, NULL);
        cr_assert_eq(rc, 0, "spawn %d: %s", i, async_strerror(rc));
    }
    cr_assert_eq(async_loop_live_tasks(loop), MANY);
    cr_assert_lt(test_count_maps(NULL), 65530, "under the default vm.max_map_count");
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(done, MANY);
    cr_assert_eq(async_loop_free(loop), 0);
}

static int noop(void *arg, void **res)
{
    (void)arg, (void)res;
    return 0;
}

static int t_reuse(void *arg, void **res)
{
    (void)arg, (void)res;
    async_task_t t;
    cr_assert_eq(async_task_spawn(NULL, noop, NULL, NULL, &t), 0);
    cr_assert_eq(async_task_await(t, NULL), 0);
    int before = test_count_maps(NULL);
    for (int i = 0; i < 1000; i++) {
        cr_assert_eq(async_task_spawn(NULL, noop, NULL, NULL, &t), 0);
        cr_assert_eq(async_task_await(t, NULL), 0);
    }
#ifndef SANITIZED /* sanitizers map shadow memory of their own as they go */
    cr_assert_leq(test_count_maps(NULL), before + 2, "stacks are pooled, not mapped anew");
#else
    (void)before;
#endif
    return 0;
}
Test(stack, pooled_stacks_are_reused, .timeout = 10) { cr_assert_eq(test_run_task(t_reuse, NULL, NULL), 0); }

static int deep(int n)
{
    /* The volatile frame is used after the call, so the recursion cannot be
     * turned into a loop: each level really costs 512 bytes of stack. */
    volatile char buf[512];
    for (int i = 0; i < 512; i++) buf[i] = (char)n;
    if (n) buf[1] = (char)deep(n - 1);
    return buf[0] + buf[1];
}

static int overflow(void *arg, void **res)
{
    (void)arg, (void)res;
    return deep(1 << 20) == 42;
}

static int overflow_then_yield(void *arg, void **res)
{
    (void)arg, (void)res;
    /* 300 KiB of frames on a 256 KiB slab stack: it writes into the stack
     * below, without touching any guard, and the canary catches it. */
    int r = deep(600);
    async_yield();
    return r == 42;
}

/* Runs fn in a child process on a fresh loop and returns its wait status. */
static int run_child(async_task_fn fn, const char *guards)
{
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        if (guards) setenv("ASYNC_STACK_GUARDS", guards, 1);
        alarm(20);
        int fd = open("/dev/null", 1);
        dup2(fd, 2); /* the expected crash report is noise here */
        async_loop_t *loop;
        async_loop_new(&loop);
        async_task_t t[2];
        async_task_spawn(loop, noop, NULL, NULL, &t[0]); /* a neighbour stack below */
        async_task_spawn(loop, fn, NULL, NULL, &t[1]);
        async_loop_run(loop, ASYNC_RUN_DEFAULT);
        _exit(0);
    }
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    return status;
}

Test(stack, overflow_hits_the_guard_page, .timeout = 30)
{
    int status = run_child(overflow, NULL);
    cr_assert(!(WIFEXITED(status) && WEXITSTATUS(status) == 0), "the overflow went unnoticed");
#ifndef SANITIZED /* a sanitizer reports the crash and exits instead */
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV, "status %#x", status);
#endif
}

Test(stack, overflow_without_guards_is_caught_by_the_canary, .timeout = 30)
{
    int status = run_child(overflow_then_yield, "0");
    cr_assert(!(WIFEXITED(status) && WEXITSTATUS(status) == 0), "the overflow went unnoticed");
#ifndef SANITIZED /* a sanitizer reports the crash and exits instead */
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "status %#x", status);
#endif
}

static int trivial(void *arg, void **res)
{
    (void)res;
    (*(int *)arg)++;
    return 0;
}

static void *loop_thread(void *arg)
{
    int *ran = arg;
    async_loop_t *loop;
    if (async_loop_new(&loop) != 0) return NULL;
    for (int i = 0; i < 4; i++) async_task_spawn(loop, trivial, ran, &(async_task_opts_t){.detached = true}, NULL);
    async_loop_run(loop, ASYNC_RUN_DEFAULT);
    async_loop_free(loop);
    return NULL;
}

/* Loops on different threads share nothing but the process-wide stack
 * settings, which must be safe to read and set up from several threads at
 * once (ThreadSanitizer checks; the counts check everywhere). */
Test(stack, loops_on_two_threads_start_at_once, .timeout = 10)
{
    int ran[2] = {0, 0};
    pthread_t th[2];
    for (int i = 0; i < 2; i++) cr_assert_eq(pthread_create(&th[i], NULL, loop_thread, &ran[i]), 0);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    cr_assert_eq(ran[0], 4);
    cr_assert_eq(ran[1], 4);
}
