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
#include "support/alloc.h"

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
        int rc = async_task_spawn(NULL, loop, nap, &done, &(async_task_opts_t){.detached = true});
        cr_assert_eq(rc, 0, "spawn %d: %s", i, async_strerror(rc));
    }
    cr_assert_eq(async_loop_live_tasks(loop), MANY);
    cr_assert_lt(test_count_maps(NULL), 65530, "under the default vm.max_map_count");
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(done, MANY);
    cr_assert_eq(async_loop_destroy(loop), 0);
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
    cr_assert_eq(async_task_spawn(&t, NULL, noop, NULL, NULL), 0);
    cr_assert_eq(async_task_await(t, NULL), 0);
    int before = test_count_maps(NULL);
    for (int i = 0; i < 1000; i++) {
        cr_assert_eq(async_task_spawn(&t, NULL, noop, NULL, NULL), 0);
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
        async_task_spawn(&t[0], loop, noop, NULL, NULL); /* a neighbour stack below */
        async_task_spawn(&t[1], loop, fn, NULL, NULL);
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
    for (int i = 0; i < 4; i++) async_task_spawn(NULL, loop, trivial, ran,
                                                 &(async_task_opts_t){.detached = true});
    async_loop_run(loop, ASYNC_RUN_DEFAULT);
    async_loop_destroy(loop);
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

/* A negative ASYNC_STACK_GUARDS means no guarded stacks, like 0: the
 * overflow is caught by the slab stack's canary, not by a guard page. */
Test(stack, negative_guard_budget_means_none, .timeout = 30)
{
    int status = run_child(overflow_then_yield, "-3");
    cr_assert(!(WIFEXITED(status) && WEXITSTATUS(status) == 0), "the overflow went unnoticed");
#ifndef SANITIZED /* a sanitizer reports the crash and exits instead */
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "status %#x", status);
#endif
}

/* Fails each allocation of a spawn in turn (the task, its guarded stack or
 * a slab of stacks): the spawn returns ASYNC_ENOMEM, the loop stays usable,
 * and nothing leaks. */
static void spawn_under_failures(void)
{
    test_alloc_install();
    int failures = 0, ok_in_a_row = 0;
    for (long n = 0; ok_in_a_row < 3 && n < 200; n++) {
        async_loop_t *loop;
        cr_assert_eq(async_loop_new(&loop), 0);
        int ran = 0;
        test_alloc_fail_after(n);
        int rc = async_task_spawn(NULL, loop, trivial, &ran,
                                  &(async_task_opts_t){.detached = true});
        test_alloc_fail_after(-1);
        if (rc == 0) {
            ok_in_a_row++;
        } else {
            cr_assert_eq(rc, ASYNC_ENOMEM, "allocation %ld: %s", n, async_errname(rc));
            ok_in_a_row = 0;
            failures++;
        }
        cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
        cr_assert_eq(ran, rc == 0, "the task ran if and only if its spawn succeeded");
        cr_assert_eq(async_loop_destroy(loop), 0);
    }
    cr_assert_geq(failures, 2, "the task and its stack both met a failed allocation");
    cr_assert_eq(test_alloc_live(), 0, "%ld leaked", test_alloc_live());
    test_alloc_uninstall();
}

Test(stack, guarded_stack_allocation_failures, .timeout = 30) { spawn_under_failures(); }

Test(stack, slab_allocation_failures, .timeout = 30)
{
    setenv("ASYNC_STACK_GUARDS", "0", 1); /* read once, at this process's first stack */
    spawn_under_failures();
}

/* The pool keeps 1024 freed default stacks; guarded ones freed beyond that
 * are unmapped (two mappings each: the guard splits it), not kept. */
#define KEEP 1024
#define EXTRA 300
Test(stack, guarded_stacks_beyond_the_pool_are_unmapped, .timeout = 60)
{
    async_loop_t *loop;
    cr_assert_eq(async_loop_new(&loop), 0);
    int done = 0;
    for (int i = 0; i < KEEP + EXTRA; i++)
        cr_assert_eq(async_task_spawn(NULL, loop, nap, &done,
                                      &(async_task_opts_t){.detached = true}), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_NOWAIT), 1, "every task sleeps, work is left");
    int during = test_count_maps(NULL);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(done, KEEP + EXTRA);
    int after = test_count_maps(NULL);
#ifndef SANITIZED /* sanitizers map shadow memory of their own as they go */
    cr_assert_geq(during - after, EXTRA, "%d mappings while running, %d after", during, after);
#else
    (void)during, (void)after;
#endif
    cr_assert_eq(async_loop_destroy(loop), 0);
}

static int deep_task(void *arg, void **res)
{
    (void)res;
    *(int *)arg = deep(1000); /* 500 KiB of frames, more under ASan */
    return 0;
}

static int shallow_task(void *arg, void **res)
{
    (void)res;
    *(int *)arg = deep(10);
    return 0;
}

/* Tasks run one after another reuse one pooled stack.  Each ended by
 * switching away for good, so its outer frames' redzones stay poisoned in
 * ASan's shadow; the next task's frames must not be reported as overflows
 * of them.  (Without ASan there is nothing to see and the test passes.) */
Test(stack, reused_stack_carries_no_stale_poison, .timeout = 30)
{
    async_loop_t *loop;
    cr_assert_eq(async_loop_new(&loop), 0);
    for (int i = 0; i < 3; i++) {
        int r = -1;
        cr_assert_eq(async_task_spawn(NULL, loop, shallow_task, &r,
                                      &(async_task_opts_t){.detached = true}), 0);
        cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
        cr_assert_neq(r, -1, "task %d ran to its end", i);
    }
    cr_assert_eq(async_loop_destroy(loop), 0);
}

/* A task asked for a larger stack gets all of it (500 KiB of frames would
 * overflow the default 256 KiB; 4 MiB leaves room for ASan's redzones), its
 * own guarded mapping, released when it ends rather than pooled with the
 * default-size ones. */
Test(stack, larger_stack_size_is_usable, .timeout = 30)
{
    async_loop_t *loop;
    cr_assert_eq(async_loop_new(&loop), 0);
    /* Three in turn: each new stack is likely mapped where the last one was
     * (under ASan that used to trip over the old task's stale shadow).  The
     * mappings are counted after the first, which also sets up what any
     * first spawn does once (libev's memory reserve). */
    int before = 0;
    for (int i = 0; i < 3; i++) {
        if (i == 1) before = test_count_maps(NULL);
        int r = -1;
        async_task_opts_t o = {.detached = true, .stack_size = 4 << 20};
        cr_assert_eq(async_task_spawn(NULL, loop, deep_task, &r, &o), 0);
        cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
        cr_assert_neq(r, -1, "the task ran to its end");
    }
#ifndef SANITIZED /* sanitizers map shadow memory of their own as they go */
    cr_assert_leq(test_count_maps(NULL), before, "non-default stacks are unmapped, not pooled");
#else
    (void)before;
#endif
    cr_assert_eq(async_loop_destroy(loop), 0);
}
