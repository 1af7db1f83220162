/* The core scheduler (lib/core) against hostile input.  Deadlines far in the
 * past (INT64_MIN: the arithmetic `deadline - now` overflows) and far in the
 * future, descriptors that are not open or lie far beyond any table, wakers
 * that are not the select's own, and cancellation landing on a task while it
 * is being handed a lock, an element or a permit. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <async.h>
#include <async/select.h>
#include "support/alloc.h"
#include "support/run.h"

/* --- deadlines far in the past ------------------------------------------- */

static int sleeper(void *arg, void **res)
{
    (void)arg, (void)res;
    return async_sleep(ASYNC_SEC(30));
}

/* Every blocking call of the core given a deadline far in the past must
 * report the deadline at once, not overflow into one far in the future.
 * The test's timeout catches a wait that does not end. */
static int t_past_deadlines(void *arg, void **res)
{
    (void)res;
    int64_t dl = *(int64_t *)arg;
    int64_t t0 = async_now();

    async_sem_t *sem;
    cr_assert_eq(async_sem_new(&sem, 0), 0);
    cr_assert_eq(async_sem_acquire_dl(sem, dl), ASYNC_ETIMEDOUT, "sem");
    cr_assert_eq(async_sem_destroy(sem), 0);

    async_chan_t *chan;
    cr_assert_eq(async_chan_new(&chan, sizeof(int), 0), 0);
    int v = 0;
    cr_assert_eq(async_chan_recv_dl(chan, &v, dl), ASYNC_ETIMEDOUT, "chan recv");
    cr_assert_eq(async_chan_send_dl(chan, &v, dl), ASYNC_ETIMEDOUT, "chan send");
    async_select_case_t c = {.chan = chan, .op = ASYNC_SELECT_RECV, .elem = &v};
    size_t fired;
    cr_assert_eq(async_select_dl(&c, 1, &fired, dl), ASYNC_ETIMEDOUT, "select");
    cr_assert_eq(async_chan_destroy(chan), 0);

    async_event_t *ev;
    cr_assert_eq(async_event_new(&ev), 0);
    cr_assert_eq(async_event_wait_dl(ev, dl), ASYNC_ETIMEDOUT, "event");
    cr_assert_eq(async_event_destroy(ev), 0);

    async_mutex_t *m;
    async_cond_t *cond;
    cr_assert_eq(async_mutex_new(&m), 0);
    cr_assert_eq(async_cond_new(&cond), 0);
    cr_assert_eq(async_mutex_lock(m), 0);
    cr_assert_eq(async_cond_wait_dl(cond, m, dl), ASYNC_ETIMEDOUT, "cond");
    cr_assert_eq(async_mutex_unlock(m), 0);
    cr_assert_eq(async_cond_destroy(cond), 0);

    async_task_t t;
    cr_assert_eq(async_task_spawn(&t, NULL, sleeper, NULL, NULL), 0);
    cr_assert_eq(async_task_await_dl(t, NULL, dl), ASYNC_ETIMEDOUT, "await");
    cr_assert_eq(async_yield(), 0); /* the sleeper takes its mutex wait below */

    /* A mutex held by another task. */
    cr_assert_eq(async_mutex_lock(m), 0);
    cr_assert_eq(async_task_cancel(t), 0);
    cr_assert_eq(async_task_await(t, NULL), ASYNC_ECANCELED);
    cr_assert_eq(async_mutex_unlock(m), 0);
    cr_assert_eq(async_mutex_destroy(m), 0);

    async_group_t *g;
    cr_assert_eq(async_group_new(&g, NULL), 0);
    cr_assert_eq(async_group_spawn(g, sleeper, NULL, NULL), 0);
    cr_assert_eq(async_group_wait_dl(g, dl), ASYNC_ETIMEDOUT, "group");
    cr_assert_eq(async_group_destroy(g), 0);

    cr_assert_eq(async_task_suspend_dl(dl), ASYNC_ETIMEDOUT, "suspend");
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    cr_assert_eq(async_wait_fd_dl(fds[0], ASYNC_READABLE, dl), ASYNC_ETIMEDOUT, "wait_fd");
    close(fds[0]);
    close(fds[1]);
    cr_assert_eq(async_sleep_dl(dl), 0, "sleep");

    /* None of it waited (generous: a loaded machine). */
    cr_assert_lt(async_now() - t0, ASYNC_SEC(5) * test_slack());
    return 0;
}

Test(core_hostile, a_deadline_at_int64_min_has_passed, .timeout = 20)
{
    int64_t dl = INT64_MIN;
    cr_assert_eq(test_run_task(t_past_deadlines, &dl, NULL), 0);
}

Test(core_hostile, a_deadline_just_above_int64_min_has_passed, .timeout = 20)
{
    int64_t dl = INT64_MIN + 1;
    cr_assert_eq(test_run_task(t_past_deadlines, &dl, NULL), 0);
}

Test(core_hostile, a_negative_deadline_has_passed, .timeout = 20)
{
    int64_t dl = -1;
    cr_assert_eq(test_run_task(t_past_deadlines, &dl, NULL), 0);
}

/* --- descriptors ----------------------------------------------------------- */

static int t_wait_fd_huge(void *arg, void **res)
{
    (void)res;
    int fd = (int)(intptr_t)arg;
    int rc = async_wait_fd_dl(fd, ASYNC_READABLE, async_deadline_after(ASYNC_MSEC(50)));
    return rc;
}

/* A descriptor number far beyond any open one: libev sizes its table by the
 * descriptor, so it must be refused before it reaches libev. */
Test(core_hostile, wait_fd_on_a_huge_descriptor_is_refused, .timeout = 30)
{
    int rc = test_run_task(t_wait_fd_huge, (void *)(intptr_t)(INT_MAX - 1), NULL);
    cr_assert_eq(rc, ASYNC_EINVAL, "%s", async_errname(rc));
    rc = test_run_task(t_wait_fd_huge, (void *)(intptr_t)(1 << 28), NULL);
    cr_assert_eq(rc, ASYNC_EINVAL, "%s", async_errname(rc));
}

/* A descriptor that is not open is not ready to read. */
Test(core_hostile, wait_fd_on_a_closed_descriptor_is_refused, .timeout = 30)
{
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    close(fds[0]);
    close(fds[1]);
    int rc = test_run_task(t_wait_fd_huge, (void *)(intptr_t)fds[0], NULL);
    cr_assert_eq(rc, ASYNC_EINVAL, "%s", async_errname(rc));
}

/* --- select and foreign wakers -------------------------------------------- */

typedef struct {
    async_chan_t *chan;
    async_waker_t waker;
    int woken, sel_rc, value;
    size_t fired;
} sel_job_t;

/* Takes a waker it never suspends on, lets it be woken, then selects. */
static int pending_selector(void *arg, void **res)
{
    (void)res;
    sel_job_t *j = arg;
    j->waker = async_task_waker();
    j->woken = async_waker_wake(j->waker, ASYNC_EIO); /* kept as a pending wake */
    async_select_case_t c = {.chan = j->chan, .op = ASYNC_SELECT_RECV, .elem = &j->value};
    j->sel_rc = async_select(&c, 1, &j->fired);
    return 0;
}

/* A wake meant for someone's own suspension must not end a select with its
 * code and nothing received. */
static int t_pending_wake_vs_select(void *arg, void **res)
{
    (void)arg, (void)res;
    sel_job_t j = {0};
    cr_assert_eq(async_chan_new(&j.chan, sizeof(int), 1), 0);
    async_task_t t = test_spawn_started(pending_selector, &j);
    cr_assert_eq(j.woken, 0);
    int v = 17;
    cr_assert_eq(async_chan_send(j.chan, &v), 0);
    cr_assert_eq(async_task_await(t, NULL), 0);
    cr_assert_eq(j.sel_rc, 0, "select returned %s", async_errname(j.sel_rc));
    cr_assert_eq(j.value, 17);
    cr_assert_eq(async_chan_destroy(j.chan), 0);
    return 0;
}
Test(core_hostile, a_pending_wake_cannot_end_a_select, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_pending_wake_vs_select, NULL, NULL), 0);
}

static int suspended_selector(void *arg, void **res)
{
    (void)res;
    sel_job_t *j = arg;
    j->waker = async_task_waker();
    async_select_case_t c = {.chan = j->chan, .op = ASYNC_SELECT_RECV, .elem = &j->value};
    j->sel_rc = async_select(&c, 1, &j->fired);
    return 0;
}

/* The same with the waker woken while the select is suspended on it. */
static int t_stray_wake_vs_select(void *arg, void **res)
{
    (void)arg, (void)res;
    sel_job_t j = {0};
    cr_assert_eq(async_chan_new(&j.chan, sizeof(int), 1), 0);
    async_task_t t = test_spawn_started(suspended_selector, &j);
    int w = async_waker_wake(j.waker, ASYNC_EIO);
    cr_assert_eq(w, ASYNC_ESRCH, "a library wait is not the waker's");
    cr_assert_eq(async_yield(), 0);
    int v = 23;
    cr_assert_eq(async_chan_send(j.chan, &v), 0);
    cr_assert_eq(async_task_await(t, NULL), 0);
    cr_assert_eq(j.sel_rc, 0, "select returned %s", async_errname(j.sel_rc));
    cr_assert_eq(j.value, 23);
    cr_assert_eq(async_chan_destroy(j.chan), 0);
    return 0;
}
Test(core_hostile, a_stray_wake_cannot_end_a_select, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_stray_wake_vs_select, NULL, NULL), 0);
}

/* --- a mutex whose holder ended without unlocking --------------------------- */

static int lock_and_leave(void *arg, void **res)
{
    (void)res;
    return async_mutex_lock(arg); /* and never unlocks */
}

typedef struct {
    async_mutex_t *m;
    int trylock, unlock;
} heir_job_t;

static int heir(void *arg, void **res)
{
    (void)res;
    heir_job_t *j = arg;
    j->trylock = async_mutex_trylock(j->m);
    j->unlock = async_mutex_unlock(j->m);
    return 0;
}

/* A later task that happens to get the dead holder's slot does not hold its
 * lock: it can neither unlock it nor be told it already holds it. */
static int t_dead_holder(void *arg, void **res)
{
    (void)arg, (void)res;
    async_mutex_t *m;
    cr_assert_eq(async_mutex_new(&m), 0);
    async_task_t t;
    cr_assert_eq(async_task_spawn(&t, NULL, lock_and_leave, m, NULL), 0);
    cr_assert_eq(async_task_await(t, NULL), 0); /* its slot is free for the next spawn */
    heir_job_t j = {.m = m};
    cr_assert_eq(async_task_spawn(&t, NULL, heir, &j, NULL), 0);
    cr_assert_eq(async_task_await(t, NULL), 0);
    cr_assert_eq(j.trylock, ASYNC_EAGAIN, "trylock: %s", async_errname(j.trylock));
    cr_assert_eq(j.unlock, ASYNC_EPERM, "unlock: %s", async_errname(j.unlock));
    cr_assert_eq(async_mutex_destroy(m), ASYNC_EBUSY, "still held by the task that ended");
    return 0;
}
Test(core_hostile, a_new_task_in_a_dead_holders_slot_does_not_hold_its_mutex, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_dead_holder, NULL, NULL), 0);
}

/* --- groups, detach and wakers from another thread or loop ---------------- */

typedef struct {
    async_group_t *g;
    async_task_t task;
    async_waker_t waker;
    int cancel, detach, wake, wait, destroy, spawn;
} foreign_job_t;

static void *foreign_thread(void *arg)
{
    foreign_job_t *j = arg;
    j->cancel = async_group_cancel(j->g);
    j->detach = async_task_detach(j->task);
    j->wake = async_waker_wake(j->waker, 9);
    return NULL;
}

static int waker_sleeper(void *arg, void **res)
{
    (void)res;
    foreign_job_t *j = arg;
    j->waker = async_task_waker();
    return async_task_suspend_dl(async_deadline_after(ASYNC_SEC(30)));
}

/* A group, a task handle and a waker belong to their loop: a thread that
 * is not the loop's is refused with ASYNC_EWRONGLOOP, and nothing is done
 * (the loop's thread is blocked in pthread_join meanwhile, so a call that
 * went through would be seen below, not raced). */
static int t_foreign_thread(void *arg, void **res)
{
    (void)arg, (void)res;
    foreign_job_t j = {0};
    cr_assert_eq(async_group_new(&j.g, NULL), 0);
    cr_assert_eq(async_group_spawn(j.g, sleeper, NULL, NULL), 0);
    j.task = test_spawn_started(waker_sleeper, &j);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, foreign_thread, &j), 0);
    cr_assert_eq(pthread_join(th, NULL), 0);
    cr_assert_eq(j.cancel, ASYNC_EWRONGLOOP, "group cancel: %s", async_errname(j.cancel));
    cr_assert_eq(j.detach, ASYNC_EWRONGLOOP, "detach: %s", async_errname(j.detach));
    cr_assert_eq(j.wake, ASYNC_EWRONGLOOP, "wake: %s", async_errname(j.wake));
    cr_assert_eq(async_group_live(j.g), 1);
    cr_assert_eq(async_group_cancel(j.g), 0, "the group was not cancelled before");
    cr_assert_eq(async_group_wait(j.g), ASYNC_ECANCELED);
    cr_assert_eq(async_group_destroy(j.g), 0);
    cr_assert_eq(async_waker_wake(j.waker, 4), 0, "still suspended");
    cr_assert_eq(async_task_await(j.task, NULL), 4, "the handle is still ours");
    return 0;
}
Test(core_hostile, groups_handles_and_wakers_refuse_other_threads, .timeout = 20)
{
    cr_assert_eq(test_run_task(t_foreign_thread, NULL, NULL), 0);
}

/* From a task of another loop, on another thread. */
static int foreign_loop_task(void *arg, void **res)
{
    (void)res;
    foreign_job_t *j = arg;
    j->wait = async_group_wait_dl(j->g, async_deadline_after(ASYNC_MSEC(20)));
    j->spawn = async_group_spawn(j->g, sleeper, NULL, NULL);
    j->destroy = async_group_destroy(j->g);
    return 0;
}

static int t_foreign_loop(void *arg, void **res)
{
    (void)arg, (void)res;
    foreign_job_t j = {0};
    cr_assert_eq(async_group_new(&j.g, NULL), 0);
    cr_assert_eq(async_group_spawn(j.g, sleeper, NULL, NULL), 0);
    cr_assert_eq(async_yield(), 0);
    cr_assert_eq(test_run_task_in_thread(foreign_loop_task, &j), 0);
    cr_assert_eq(j.wait, ASYNC_EWRONGLOOP, "group wait: %s", async_errname(j.wait));
    cr_assert_eq(j.spawn, ASYNC_EWRONGLOOP, "group spawn: %s", async_errname(j.spawn));
    cr_assert_eq(j.destroy, ASYNC_EWRONGLOOP, "group destroy: %s", async_errname(j.destroy));
    cr_assert_eq(async_group_live(j.g), 1);
    cr_assert_eq(async_group_cancel(j.g), 0, "the group was not cancelled before");
    cr_assert_eq(async_group_destroy(j.g), 0);
    return 0;
}
Test(core_hostile, groups_refuse_tasks_of_other_loops, .timeout = 20)
{
    cr_assert_eq(test_run_task(t_foreign_loop, NULL, NULL), 0);
}

/* --- failing allocations in the loop and in a wide select ------------------ */

static int post_ran;
static void count_post(void *arg) { (void)arg; post_ran++; }

/* Every allocation of a loop's construction and of a post fails in turn:
 * each call fails with ASYNC_ENOMEM and leaves nothing behind, or succeeds
 * and works. */
Test(core_hostile, loop_new_and_post_fail_cleanly_at_each_allocation, .timeout = 30)
{
    test_alloc_install();
    int failures = 0, ok_in_a_row = 0;
    for (long n = 0; ok_in_a_row < 3 && n < 100; n++) {
        async_loop_t *loop = NULL;
        test_alloc_fail_after(n);
        int rc = async_loop_new(&loop);
        int prc = rc ? 0 : async_loop_post(loop, count_post, NULL);
        test_alloc_fail_after(-1);
        if (rc) {
            cr_assert_eq(rc, ASYNC_ENOMEM, "allocation %ld: %s", n, async_errname(rc));
            cr_assert_null(loop, "*out is set only on success");
            failures++;
            ok_in_a_row = 0;
            continue;
        }
        post_ran = 0;
        if (prc) {
            cr_assert_eq(prc, ASYNC_ENOMEM, "post at allocation %ld: %s", n, async_errname(prc));
            failures++;
        } else {
            ok_in_a_row++;
        }
        cr_assert_eq(async_loop_destroy(loop), 0);
        cr_assert_eq(post_ran, prc == 0, "the post ran if and only if it was accepted");
    }
    cr_assert_geq(failures, 2, "the loop and the post both met a failed allocation");
    cr_assert_eq(test_alloc_live(), 0, "%ld leaked", test_alloc_live());
    test_alloc_uninstall();
}

#define WIDE 12 /* more cases than the select keeps on its stack */

static int wide_selector(void *arg, void **res)
{
    (void)res;
    async_chan_t **chans = arg;
    async_select_case_t c[WIDE];
    int v[WIDE];
    for (int i = 0; i < WIDE; i++) c[i] = (async_select_case_t){chans[i], ASYNC_SELECT_RECV, &v[i]};
    size_t fired = WIDE;
    int rc = async_select(c, WIDE, &fired);
    if (rc == 0 && (fired != WIDE - 1 || v[WIDE - 1] != 5)) return ASYNC_EIO;
    return rc;
}

/* A select over many cases allocates its watchers; when it cannot, it fails
 * with ASYNC_ENOMEM and completes nothing. */
static int t_wide_select_oom(void *arg, void **res)
{
    (void)arg, (void)res;
    async_chan_t *chans[WIDE];
    for (int i = 0; i < WIDE; i++) cr_assert_eq(async_chan_new(&chans[i], sizeof(int), 1), 0);
    int failures = 0;
    for (long n = 0; n < 8; n++) {
        async_task_t t;
        cr_assert_eq(async_task_spawn(&t, NULL, wide_selector, chans, NULL), 0);
        test_alloc_fail_after(n);
        async_yield(); /* it runs, fails or waits */
        test_alloc_fail_after(-1);
        int v = 5;
        if (async_task_done(t) == 1) {
            cr_assert_eq(async_task_await(t, NULL), ASYNC_ENOMEM);
            failures++;
        } else {
            cr_assert_eq(async_chan_send(chans[WIDE - 1], &v), 0);
            cr_assert_eq(async_task_await(t, NULL), 0);
        }
        for (int i = 0; i < WIDE; i++) cr_assert_eq(async_chan_len(chans[i]), 0, "nothing left behind");
    }
    cr_assert_geq(failures, 1);
    for (int i = 0; i < WIDE; i++) cr_assert_eq(async_chan_destroy(chans[i]), 0);
    return 0;
}
Test(core_hostile, a_wide_select_fails_cleanly_without_memory, .timeout = 10)
{
    test_alloc_install();
    cr_assert_eq(test_run_task(t_wide_select_oom, NULL, NULL), 0);
    cr_assert_eq(test_alloc_live(), 0, "%ld leaked", test_alloc_live());
    test_alloc_uninstall();
}

/* --- a stack overflow into a guard page says so ------------------------------ */

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1 /* a sanitizer has its SIGSEGV handler, and reports instead */
#endif

static int idle_neighbour(void *arg, void **res)
{
    (void)arg, (void)res;
    return async_sleep(ASYNC_MSEC(100));
}

static int deep(int n)
{
    volatile char buf[512];
    for (int i = 0; i < 512; i++) buf[i] = (char)n;
    if (n) buf[1] = (char)deep(n - 1);
    return buf[0] + buf[1];
}

static int overflows(void *arg, void **res)
{
    (void)arg, (void)res;
    return deep(1 << 20) == 42;
}

/* A frame of `depth` bytes whose first write is at its low end. */
static __attribute__((noinline)) int jump(size_t depth)
{
    volatile char big[depth];
    big[0] = 1;
    return big[0] == 42;
}

/* The process's writable mappings, from /proc/self/maps. */
static struct { unsigned long lo, hi; } writable_maps[4096];
static int n_writable;

static void read_maps(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    n_writable = 0;
    if (!f) return;
    unsigned long lo, hi;
    char perms[8], line[512];
    while (n_writable < 4096 && fgets(line, sizeof line, f))
        if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) == 3 && perms[1] == 'w')
            writable_maps[n_writable].lo = lo, writable_maps[n_writable++].hi = hi;
    fclose(f);
}

/* True when the page at addr cannot be written: no mapping holds it, or one
 * without write permission (a guard page) does. */
static bool unwritable(uintptr_t addr)
{
    for (int i = 0; i < n_writable; i++)
        if (addr >= writable_maps[i].lo && addr < writable_maps[i].hi) return false;
    return true;
}

/* A frame far larger than the guard page, deep enough that its first write
 * lands where nothing can be written (else it would overwrite whatever is
 * there unnoticed, which no guard page can prevent): the stack pointer
 * jumps the guard page and the write faults.  A neighbour spawned now maps
 * its stack, and its guard page, below this one's, so such a place is
 * within reach; exits 4 when none is found under 15 MiB. */
static int big_frame(void *arg, void **res)
{
    (void)arg, (void)res;
    async_task_spawn(NULL, NULL, idle_neighbour, NULL,
                     &(async_task_opts_t){.detached = true, .stack_size = (size_t)1 << 20});
    volatile char here = 0;
    uintptr_t sp = (uintptr_t)&here;
    read_maps();
    if (!n_writable) _exit(4);
    for (size_t d = (size_t)256 << 10; d < (size_t)15 << 20; d += 4096)
        if (unwritable(sp - d) && unwritable(sp - d - 4096) && unwritable(sp - d - 8192))
            return jump(d) + here;
    _exit(4);
}

/* Runs fn in a child on a fresh loop, beside idle neighbours, with
 * ASYNC_STACK_GUARDS set to guards (NULL: unset) and the task's stack of
 * stack_size (0: the default); the child's stderr goes to out.  Returns the
 * child's wait status. */
static int overflow_in_child(async_task_fn fn, const char *guards, size_t stack_size, char *out,
                             size_t cap)
{
    int p[2];
    cr_assert_eq(pipe(p), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        alarm(20);
        dup2(p[1], 2);
        close(p[0]);
        if (guards) setenv("ASYNC_STACK_GUARDS", guards, 1);
        async_loop_t *loop;
        if (async_loop_new(&loop)) _exit(3);
        for (int i = 0; i < 3; i++)
            async_task_spawn(NULL, loop, idle_neighbour, NULL, &(async_task_opts_t){.detached = true});
        async_task_spawn(NULL, loop, fn, NULL,
                         &(async_task_opts_t){.detached = true, .stack_size = stack_size});
        async_loop_run(loop, ASYNC_RUN_DEFAULT);
        _exit(0);
    }
    close(p[1]);
    size_t len = 0;
    ssize_t n;
    while (len < cap - 1 && (n = read(p[0], out + len, cap - 1 - len)) > 0) len += (size_t)n;
    out[len] = '\0';
    close(p[0]);
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    return status;
}

/* In a child, with its stderr on a pipe: the overflow of a guarded stack
 * (the default, below the guard budget) ends the child by SIGSEGV, and the
 * child's last words name the overflow and the stack's size. */
Test(core_hostile, an_overflow_into_the_guard_page_is_reported, .timeout = 30)
{
    char out[4096];
    int status = overflow_in_child(overflows, NULL, ASYNC_STACK_MIN * 2, out, sizeof out);
    cr_assert(!(WIFEXITED(status) && WEXITSTATUS(status) == 0), "the overflow went unnoticed");
#ifndef SANITIZED
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV, "status %#x", status);
    char want[128];
    snprintf(want, sizeof want, "task stack overflow (stack of %zu bytes", ASYNC_STACK_MIN * 2);
    cr_assert(strstr(out, want), "stderr: \"%s\"", out);
#endif
}

/* A slab stack (no guard pages left: ASYNC_STACK_GUARDS=0) has only its
 * canary, checked when the task switches out; a runaway recursion never
 * does, runs on through the neighbours' stacks below and faults past the
 * slab.  Its last words must still name the overflow: until round 17 the
 * child died of a bare SIGSEGV, its stderr empty. */
Test(core_hostile, a_runaway_overflow_of_a_slab_stack_is_reported, .timeout = 30)
{
    char out[4096];
    int status = overflow_in_child(overflows, "0", 0, out, sizeof out);
    cr_assert(!(WIFEXITED(status) && WEXITSTATUS(status) == 0), "the overflow went unnoticed");
#ifndef SANITIZED
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV, "status %#x", status);
    char want[160];
    snprintf(want, sizeof want,
             "task stack overflow (stack of %zu bytes, without a guard page", ASYNC_STACK_DEFAULT);
    cr_assert(strstr(out, want), "stderr: \"%s\"", out);
#endif
}

/* A frame of a quarter MiB or more on a guarded stack of 32 KiB moves the
 * stack pointer far past the guard page, and its first write faults there
 * (with -fstack-clash-protection, in the guard page).  Until round 17 only a
 * fault within 64 KiB under the guard page was named: this one died of a
 * bare SIGSEGV. */
Test(core_hostile, a_frame_that_jumps_the_guard_page_is_reported, .timeout = 30)
{
    char out[4096];
    int status = overflow_in_child(big_frame, NULL, ASYNC_STACK_MIN * 2, out, sizeof out);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 4)
        cr_skip_test("no unwritable page within 15 MiB below the task's stack to fault on");
    cr_assert(!(WIFEXITED(status) && WEXITSTATUS(status) == 0), "the overflow went unnoticed");
#ifndef SANITIZED
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV, "status %#x", status);
    char want[128];
    snprintf(want, sizeof want, "task stack overflow (stack of %zu bytes", ASYNC_STACK_MIN * 2);
    cr_assert(strstr(out, want), "stderr: \"%s\"", out);
#endif
}

/* --- a post that frees its loop while the loop is being freed --------------- */

typedef struct {
    async_loop_t *loop;
    int inner;
    bool ran;
} refree_job_t;

static void free_again(void *arg)
{
    refree_job_t *j = arg;
    j->inner = async_loop_destroy(j->loop);
    j->ran = true;
}

/* async_loop_destroy runs the posts still queued; one of them freeing the
 * same loop must be refused (the outer call goes on using the loop). */
Test(core_hostile, a_post_run_by_destroy_cannot_free_the_loop_again, .timeout = 10)
{
    refree_job_t j = {0};
    cr_assert_eq(async_loop_new(&j.loop), 0);
    cr_assert_eq(async_loop_post(j.loop, free_again, &j), 0);
    cr_assert_eq(async_loop_destroy(j.loop), 0);
    cr_assert(j.ran);
    cr_assert_eq(j.inner, ASYNC_EBUSY, "inner destroy: %s", async_errname(j.inner));
}

/* --- deadlines far in the future ------------------------------------------- */

static int far_acquirer(void *arg, void **res)
{
    (void)res;
    return async_sem_acquire_dl(arg, INT64_MAX - 1);
}

/* A finite deadline near INT64_MAX waits like ASYNC_FOREVER: it ends by a
 * permit or a cancellation, not at once. */
static int t_far_deadline(void *arg, void **res)
{
    (void)arg, (void)res;
    async_sem_t *s;
    cr_assert_eq(async_sem_new(&s, 0), 0);
    async_task_t a = test_spawn_started(far_acquirer, s);
    async_task_t b = test_spawn_started(far_acquirer, s);
    cr_assert_eq(async_sleep(ASYNC_MSEC(20)), 0);
    cr_assert_eq(async_task_done(a), 0);
    cr_assert_eq(async_sem_release(s), 0);
    cr_assert_eq(async_task_await(a, NULL), 0);
    cr_assert_eq(async_task_cancel(b), 0);
    cr_assert_eq(async_task_await(b, NULL), ASYNC_ECANCELED);
    cr_assert_eq(async_sem_destroy(s), 0);
    return 0;
}
Test(core_hostile, a_deadline_near_int64_max_waits, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_far_deadline, NULL, NULL), 0);
}
