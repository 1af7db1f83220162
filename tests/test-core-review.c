/* Review of the core scheduler: the interleavings that are easy to get wrong.
 * A task woken and cancelled in the same iteration, a waker used twice, a
 * waiter whose deadline passes after it was handed an element, a permit or a
 * lock, the group's shielded wait, and what async_loop_free does with posts
 * that post or spawn.  Each test pins one rule the headers promise. */
#include <criterion/criterion.h>
#include "support/run.h"
#include "support/alloc.h"
#include <pthread.h>
#include <string.h>

/* Spins (without yielding) until the deadline has passed, so that a timer
 * due at it would fire on the loop's next poll. */
static void spin_past(int64_t deadline)
{
    while (async_now() <= deadline) { /* spin */ }
}

/* --- wake, then deadline or cancel in the same iteration ------------------ */

typedef struct {
    async_chan_t *chan;
    int64_t deadline;
    int rc, value;
} recv_job_t;

static int receiver_dl(void *arg, void **res)
{
    (void)res;
    recv_job_t *j = arg;
    j->value = -1;
    j->rc = async_chan_recv_dl(j->chan, &j->value, j->deadline);
    return 0;
}

/* The receiver is handed an element, then its deadline passes (and it is
 * cancelled) before it runs: the hand-over stands and the element is not lost. */
static int t_chan_handoff_then_deadline(void *arg, void **res)
{
    (void)arg, (void)res;
    recv_job_t j = {.deadline = async_deadline_after(ASYNC_MSEC(20))};
    cr_assert_eq(async_chan_new(&j.chan, sizeof(int), 0), 0);
    async_task_t r;
    cr_assert_eq(async_task_spawn(NULL, receiver_dl, &j, NULL, &r), 0);
    cr_assert_eq(async_yield(), 0); /* the receiver waits */
    int v = 42;
    cr_assert_eq(async_chan_trysend(j.chan, &v), 0, "a waiting receiver takes it at once");
    cr_assert_eq(async_task_cancel(r), 0);
    spin_past(j.deadline);
    cr_assert_eq(async_task_await(r, NULL), 0);
    cr_assert_eq(j.rc, 0, "handed over before the deadline and the cancel: %s", async_errname(j.rc));
    cr_assert_eq(j.value, 42);
    cr_assert_eq(async_chan_len(j.chan), 0);
    cr_assert_eq(async_chan_free(j.chan), 0);
    return 0;
}
Test(review, chan_handoff_survives_deadline_and_cancel, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_chan_handoff_then_deadline, NULL, NULL), 0);
}

/* The receiver's deadline fires first: a later send finds no receiver and
 * buffers the element instead of writing into the departed task's memory. */
static int t_chan_deadline_then_send(void *arg, void **res)
{
    (void)arg, (void)res;
    recv_job_t j = {.deadline = async_deadline_after(ASYNC_MSEC(5))};
    cr_assert_eq(async_chan_new(&j.chan, sizeof(int), 1), 0);
    async_task_t r;
    cr_assert_eq(async_task_spawn(NULL, receiver_dl, &j, NULL, &r), 0);
    cr_assert_eq(async_task_await(r, NULL), 0);
    cr_assert_eq(j.rc, ASYNC_ETIMEDOUT);
    cr_assert_eq(j.value, -1, "nothing written into a receiver that left");
    int v = 7, out = 0;
    cr_assert_eq(async_chan_trysend(j.chan, &v), 0);
    cr_assert_eq(async_chan_len(j.chan), 1, "buffered, not handed to the departed");
    cr_assert_eq(async_chan_tryrecv(j.chan, &out), 0);
    cr_assert_eq(out, 7);
    cr_assert_eq(async_chan_free(j.chan), 0);
    return 0;
}
Test(review, chan_deadline_then_send_buffers, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_chan_deadline_then_send, NULL, NULL), 0);
}

typedef struct {
    async_mutex_t *mutex;
    async_sem_t *sem;
    int64_t deadline;
    int rc, unlock_rc;
} lock_job_t;

static int mutex_waiter(void *arg, void **res)
{
    (void)res;
    lock_job_t *j = arg;
    j->rc = async_mutex_lock_dl(j->mutex, j->deadline);
    if (j->rc == 0) j->unlock_rc = async_mutex_unlock(j->mutex);
    return 0;
}

/* A mutex handed to a waiter stays handed even if the waiter is cancelled and
 * its deadline passes before it resumes: it unlocks what it holds. */
static int t_mutex_handoff_then_cancel(void *arg, void **res)
{
    (void)arg, (void)res;
    lock_job_t j = {.deadline = async_deadline_after(ASYNC_MSEC(20)), .unlock_rc = 1};
    cr_assert_eq(async_mutex_new(&j.mutex), 0);
    cr_assert_eq(async_mutex_lock(j.mutex), 0);
    async_task_t w;
    cr_assert_eq(async_task_spawn(NULL, mutex_waiter, &j, NULL, &w), 0);
    cr_assert_eq(async_yield(), 0); /* the waiter queues */
    cr_assert_eq(async_mutex_unlock(j.mutex), 0);
    cr_assert_eq(async_mutex_trylock(j.mutex), ASYNC_EAGAIN, "already the waiter's");
    cr_assert_eq(async_task_cancel(w), 0);
    spin_past(j.deadline);
    cr_assert_eq(async_task_await(w, NULL), 0);
    cr_assert_eq(j.rc, 0, "%s", async_errname(j.rc));
    cr_assert_eq(j.unlock_rc, 0);
    cr_assert_eq(async_mutex_trylock(j.mutex), 0, "released by the waiter");
    cr_assert_eq(async_mutex_unlock(j.mutex), 0);
    cr_assert_eq(async_mutex_free(j.mutex), 0);
    return 0;
}
Test(review, mutex_handoff_survives_cancel, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_mutex_handoff_then_cancel, NULL, NULL), 0);
}

/* A mutex waiter cancelled before the unlock leaves the queue: the unlock
 * frees the mutex instead of handing it to a task that is gone. */
static int t_mutex_cancel_then_unlock(void *arg, void **res)
{
    (void)arg, (void)res;
    lock_job_t j = {.deadline = ASYNC_FOREVER, .unlock_rc = 1};
    cr_assert_eq(async_mutex_new(&j.mutex), 0);
    cr_assert_eq(async_mutex_lock(j.mutex), 0);
    async_task_t w;
    cr_assert_eq(async_task_spawn(NULL, mutex_waiter, &j, NULL, &w), 0);
    cr_assert_eq(async_yield(), 0);
    cr_assert_eq(async_task_cancel(w), 0);
    cr_assert_eq(async_mutex_unlock(j.mutex), 0);
    cr_assert_eq(async_task_await(w, NULL), 0);
    cr_assert_eq(j.rc, ASYNC_ECANCELED);
    cr_assert_eq(j.unlock_rc, 1, "never held it");
    cr_assert_eq(async_mutex_trylock(j.mutex), 0, "free, not owned by the departed waiter");
    cr_assert_eq(async_mutex_unlock(j.mutex), 0);
    cr_assert_eq(async_mutex_free(j.mutex), 0);
    return 0;
}
Test(review, cancelled_mutex_waiter_is_skipped, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_mutex_cancel_then_unlock, NULL, NULL), 0);
}

static int sem_waiter(void *arg, void **res)
{
    (void)res;
    lock_job_t *j = arg;
    j->rc = async_sem_acquire_dl(j->sem, j->deadline);
    return 0;
}

/* Permits are never lost: one handed to a waiter whose deadline then passes
 * stays with it; one released after a waiter timed out goes back to the count. */
static int t_sem_handoff(void *arg, void **res)
{
    (void)arg, (void)res;
    lock_job_t a = {.deadline = async_deadline_after(ASYNC_MSEC(20))};
    cr_assert_eq(async_sem_new(&a.sem, 0), 0);
    async_task_t w;
    cr_assert_eq(async_task_spawn(NULL, sem_waiter, &a, NULL, &w), 0);
    cr_assert_eq(async_yield(), 0);
    async_sem_release(a.sem);
    spin_past(a.deadline);
    cr_assert_eq(async_task_await(w, NULL), 0);
    cr_assert_eq(a.rc, 0, "%s", async_errname(a.rc));
    cr_assert_eq(async_sem_value(a.sem), 0, "the permit went to the waiter");

    lock_job_t b = {.sem = a.sem, .deadline = async_deadline_after(ASYNC_MSEC(5))};
    cr_assert_eq(async_task_spawn(NULL, sem_waiter, &b, NULL, &w), 0);
    cr_assert_eq(async_task_await(w, NULL), 0);
    cr_assert_eq(b.rc, ASYNC_ETIMEDOUT);
    async_sem_release(a.sem);
    cr_assert_eq(async_sem_value(a.sem), 1, "the departed waiter took nothing");
    cr_assert_eq(async_sem_free(a.sem), 0);
    return 0;
}
Test(review, sem_permits_are_never_lost, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_sem_handoff, NULL, NULL), 0);
}

/* --- wakers --------------------------------------------------------------- */

typedef struct {
    async_waker_t waker;
    int rc, second;
} susp_job_t;

static int suspender(void *arg, void **res)
{
    (void)res;
    susp_job_t *j = arg;
    j->waker = async_task_waker();
    j->rc = async_task_suspend_dl(ASYNC_FOREVER);
    /* A later blocking call sees a cancellation that came after the wake. */
    j->second = async_sleep(0);
    return 0;
}

/* Woken twice: the first code wins, the second wake is stale.  Woken then
 * cancelled in the same iteration: the suspension returns the wake's code,
 * and the next blocking call the cancellation. */
static int t_wake_twice_then_cancel(void *arg, void **res)
{
    (void)arg, (void)res;
    susp_job_t j = {0};
    async_task_t t;
    cr_assert_eq(async_task_spawn(NULL, suspender, &j, NULL, &t), 0);
    cr_assert_eq(async_yield(), 0);
    cr_assert_eq(async_waker_wake(j.waker, 5), 0);
    cr_assert_eq(async_waker_wake(j.waker, 6), ASYNC_ESRCH, "one wake a suspension");
    cr_assert_eq(async_task_cancel(t), 0);
    cr_assert_eq(async_task_await(t, NULL), 0);
    cr_assert_eq(j.rc, 5);
    cr_assert_eq(j.second, ASYNC_ECANCELED);
    return 0;
}
Test(review, waker_twice_then_cancel, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_wake_twice_then_cancel, NULL, NULL), 0);
}

/* Cancelled first: the suspension ended, so a wake in the same iteration is
 * stale and says so (a completion can then keep what it would have handed). */
static int t_cancel_then_wake(void *arg, void **res)
{
    (void)arg, (void)res;
    susp_job_t j = {0};
    async_task_t t;
    cr_assert_eq(async_task_spawn(NULL, suspender, &j, NULL, &t), 0);
    cr_assert_eq(async_yield(), 0);
    cr_assert_eq(async_task_cancel(t), 0);
    cr_assert_eq(async_waker_wake(j.waker, 5), ASYNC_ESRCH);
    cr_assert_eq(async_task_await(t, NULL), 0);
    cr_assert_eq(j.rc, ASYNC_ECANCELED);
    return 0;
}
Test(review, cancel_then_wake_is_stale, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_cancel_then_wake, NULL, NULL), 0);
}

typedef struct {
    async_mutex_t *mutex;
    async_waker_t waker;
    int lock_rc, unlock_rc;
} stray_job_t;

/* Takes a waker, hands it out, but never suspends on it (it found its event
 * already done, say), then waits for a mutex. */
static int stray_locker(void *arg, void **res)
{
    (void)res;
    stray_job_t *j = arg;
    j->waker = async_task_waker();
    j->lock_rc = async_mutex_lock(j->mutex);
    if (j->lock_rc == 0) j->unlock_rc = async_mutex_unlock(j->mutex);
    return 0;
}

/* A waker whose suspension never came must not complete a library wait: a
 * mutex waiter woken by it would return 0 without holding the lock.  Waking
 * the task while it waits on the mutex is stale. */
static int t_stray_waker_vs_mutex(void *arg, void **res)
{
    (void)arg, (void)res;
    stray_job_t j = {.unlock_rc = 1};
    cr_assert_eq(async_mutex_new(&j.mutex), 0);
    cr_assert_eq(async_mutex_lock(j.mutex), 0);
    async_task_t t;
    cr_assert_eq(async_task_spawn(NULL, stray_locker, &j, NULL, &t), 0);
    cr_assert_eq(async_yield(), 0); /* it waits on the mutex */
    cr_assert_eq(async_waker_wake(j.waker, 0), ASYNC_ESRCH, "not its suspension");
    cr_assert_eq(async_mutex_unlock(j.mutex), 0);
    cr_assert_eq(async_task_await(t, NULL), 0);
    cr_assert_eq(j.lock_rc, 0);
    cr_assert_eq(j.unlock_rc, 0, "it held the lock it was told it held");
    cr_assert_eq(async_mutex_free(j.mutex), 0);
    return 0;
}
Test(review, stray_waker_cannot_complete_a_mutex_wait, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_stray_waker_vs_mutex, NULL, NULL), 0);
}

typedef struct {
    async_chan_t *chan;
    async_waker_t waker;
    int woken_rc, recv_rc, value;
} pending_job_t;

/* Takes a waker, is woken while still running (a pending wake), and then,
 * instead of suspending on it, receives from a channel. */
static int pending_receiver(void *arg, void **res)
{
    (void)res;
    pending_job_t *j = arg;
    j->waker = async_task_waker();
    j->woken_rc = async_waker_wake(j->waker, 0);
    j->value = -1;
    j->recv_rc = async_chan_recv(j->chan, &j->value);
    return 0;
}

/* A pending wake meant for a waker suspension must not make a channel receive
 * return 0 with no element. */
static int t_pending_wake_vs_chan(void *arg, void **res)
{
    (void)arg, (void)res;
    pending_job_t j = {0};
    cr_assert_eq(async_chan_new(&j.chan, sizeof(int), 1), 0);
    async_task_t t;
    cr_assert_eq(async_task_spawn(NULL, pending_receiver, &j, NULL, &t), 0);
    cr_assert_eq(async_yield(), 0);
    cr_assert_eq(j.woken_rc, 0, "a wake before the suspension is kept");
    int v = 11;
    cr_assert_eq(async_chan_send(j.chan, &v), 0);
    cr_assert_eq(async_task_await(t, NULL), 0);
    cr_assert_eq(j.recv_rc, 0);
    cr_assert_eq(j.value, 11, "received a real element");
    cr_assert_eq(async_chan_free(j.chan), 0);
    return 0;
}
Test(review, pending_wake_cannot_complete_a_chan_receive, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_pending_wake_vs_chan, NULL, NULL), 0);
}

/* --- groups --------------------------------------------------------------- */

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
    cr_assert_eq(async_group_new(NULL, &g), 0);
    for (int i = 0; i < 3; i++) cr_assert_eq(async_group_spawn(g, group_sleeper, &j->ended, NULL), 0);
    j->free_rc = async_group_free(g);
    j->after_rc = async_sleep(0);
    return 0;
}

static int t_group_owner_cancelled(void *arg, void **res)
{
    (void)arg, (void)res;
    owner_job_t j = {0};
    async_task_t o;
    cr_assert_eq(async_task_spawn(NULL, group_owner, &j, NULL, &o), 0);
    cr_assert_eq(async_yield(), 0); /* the owner is in async_group_free */
    cr_assert_eq(async_task_cancel(o), 0);
    cr_assert_eq(async_task_await(o, NULL), 0);
    cr_assert_eq(j.free_rc, 0);
    cr_assert_eq(j.ended, 3, "every group task ended before the free returned");
    cr_assert_eq(j.after_rc, ASYNC_ECANCELED, "the cancellation is kept for later");
    return 0;
}
Test(review, cancelled_group_owner_waits_then_stays_cancelled, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_group_owner_cancelled, NULL, NULL), 0);
}

/* --- async_loop_free ------------------------------------------------------ */

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
 * or in async_loop_free" - including one posted by a post that free runs. */
Test(review, free_runs_posts_made_by_posts, .timeout = 10)
{
    test_alloc_install();
    post_job_t j = {0};
    cr_assert_eq(async_loop_new(&j.loop), 0);
    cr_assert_eq(async_loop_post(j.loop, first_post, &j), 0);
    cr_assert_eq(async_loop_free(j.loop), 0);
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
    j->spawn_rc = async_task_spawn(j->loop, trivial, &j->ran, &o, NULL);
}

/* A post that async_loop_free runs may spawn a task: free then refuses with
 * ASYNC_EBUSY (tasks are alive) rather than free the task under it; running
 * the loop finishes the task and a second free succeeds, leaking nothing. */
Test(review, free_refuses_when_a_post_spawns, .timeout = 10)
{
    test_alloc_install();
    spawn_job_t j = {0};
    cr_assert_eq(async_loop_new(&j.loop), 0);
    cr_assert_eq(async_loop_post(j.loop, spawning_post, &j), 0);
    cr_assert_eq(async_loop_free(j.loop), ASYNC_EBUSY);
    cr_assert_eq(j.spawn_rc, 0);
    cr_assert_eq(async_loop_run(j.loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(j.ran, 1, "the spawned task ran");
    cr_assert_eq(async_loop_free(j.loop), 0);
    cr_assert_eq(test_alloc_live(), 0);
    test_alloc_uninstall();
}

/* --- a group freed by one of two waiters ---------------------------------- */

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
    if (j->free_it) cr_assert_eq(async_group_free(j->group), 0);
    return 0;
}

/* Two tasks wait for a group; the first to resume frees it.  The second's
 * wait has already ended (the group was done when both were woken), so it
 * must return without touching the freed group (ASan sees the read). */
static int t_group_freed_by_first_waiter(void *arg, void **res)
{
    (void)arg, (void)res;
    async_group_t *g;
    cr_assert_eq(async_group_new(NULL, &g), 0);
    cr_assert_eq(async_group_spawn(g, group_child, NULL, NULL), 0);
    gwait_job_t a = {.group = g, .free_it = true, .rc = 1}, b = {.group = g, .rc = 1};
    async_task_t ta, tb;
    cr_assert_eq(async_task_spawn(NULL, group_waiter, &a, NULL, &ta), 0);
    cr_assert_eq(async_task_spawn(NULL, group_waiter, &b, NULL, &tb), 0);
    cr_assert_eq(async_task_await(ta, NULL), 0);
    cr_assert_eq(async_task_await(tb, NULL), 0);
    cr_assert_eq(a.rc, 0);
    cr_assert_eq(b.rc, 0);
    return 0;
}
Test(review, group_freed_by_the_first_of_two_waiters, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_group_freed_by_first_waiter, NULL, NULL), 0);
}

/* --- commands: a capture error is reported, not lost ---------------------- */

/* The first buffer for a command's output cannot be allocated while the
 * command still runs: its result must say ASYNC_ENOMEM (its output is lost),
 * not report a clean run with empty output. */
Test(review, command_capture_failure_is_reported, .timeout = 10)
{
    test_alloc_install();
    const char *const argv[] = {"sh", "-c", "echo hi; sleep 0.3", NULL};
    async_command_t cmd = {argv, NULL};
    async_command_result_t r;
    test_alloc_fail_after(2); /* the run's two arrays, then the first buffer */
    int rc = async_process_run_commands_dl(&cmd, 1, 1, &r, ASYNC_FOREVER);
    cr_assert_eq(r.error, ASYNC_ENOMEM, "got %s", async_errname(r.error));
    cr_assert_eq(rc, ASYNC_ECHILD);
    cr_assert_eq(r.exit_code, 0, "it still ran to its end");
    async_command_result_clear(&r);
    cr_assert_eq(test_alloc_live(), 0);
    test_alloc_uninstall();
}

/* --- the IPC demos refuse bad option values -------------------------------- */

#define DEMO(name) ASYNC_OUT_DIR "/demos/ipc/" name

/* A value that is not a number in range is a clear error (exit 2 and a line
 * naming the option), not silently replaced by 0, 1 or a default. */
Test(review, ipc_demos_refuse_bad_values, .timeout = 30)
{
    const char *const *argvs[] = {
        (const char *const[]){DEMO("pipes"), "--count", "-1", NULL},
        (const char *const[]){DEMO("pipes"), "--count", "12abc", NULL},
        (const char *const[]){DEMO("producer-consumer"), "--count", "x", NULL},
        (const char *const[]){DEMO("producer-consumer"), "--capacity", "0", NULL},
        (const char *const[]){DEMO("wordcount"), "--words", "0", NULL},
        (const char *const[]){DEMO("wordcount"), "--workers", "99", NULL},
        (const char *const[]){DEMO("run-parallel"), "-j", "0", "true", NULL},
        (const char *const[]){DEMO("run-parallel"), "--timeout", "soon", "true", NULL},
        (const char *const[]){DEMO("run-parallel"), "--timeout", "1e300", "true", NULL},
    };
    enum { N = sizeof argvs / sizeof argvs[0] };
    async_command_t cmds[N];
    async_command_result_t r[N];
    for (int i = 0; i < N; i++) cmds[i] = (async_command_t){argvs[i], NULL};
    cr_assert_eq(async_process_run_commands_dl(cmds, N, 2, r, async_deadline_after(ASYNC_SEC(20))),
                 ASYNC_ECHILD);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(r[i].error, 0, "%s %s", argvs[i][1], argvs[i][2]);
        cr_assert_eq(r[i].exit_code, 2, "%s %s %s: exit %d", argvs[i][0], argvs[i][1], argvs[i][2],
                     r[i].exit_code);
        cr_assert(strstr(r[i].err, "invalid value for"), "%s", r[i].err);
        cr_assert(strstr(r[i].err, argvs[i][1]), "names the option: %s", r[i].err);
        cr_assert_eq(r[i].out_len, 0, "did not start running: %s", r[i].out);
        async_command_result_clear(&r[i]);
    }
}

/* --- loops on several threads at once -------------------------------------- */

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
Test(review, loops_on_two_threads_start_at_once, .timeout = 10)
{
    int ran[2] = {0, 0};
    pthread_t th[2];
    for (int i = 0; i < 2; i++) cr_assert_eq(pthread_create(&th[i], NULL, loop_thread, &ran[i]), 0);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    cr_assert_eq(ran[0], 4);
    cr_assert_eq(ran[1], 4);
}
