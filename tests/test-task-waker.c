/* Task wakers (async_task_waker, async_waker_wake): one wake a suspension,
 * a wake and a cancel in the same iteration, and wakers that must not complete
 * a library wait they were not made for (a mutex lock, a channel receive). */
#include <criterion/criterion.h>
#include "support/run.h"

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
    async_task_t t = test_spawn_started(suspender, &j);
    cr_assert_eq(async_waker_wake(j.waker, 5), 0);
    cr_assert_eq(async_waker_wake(j.waker, 6), ASYNC_ESRCH, "one wake a suspension");
    cr_assert_eq(async_task_cancel(t), 0);
    cr_assert_eq(async_task_await(t, NULL), 0);
    cr_assert_eq(j.rc, 5);
    cr_assert_eq(j.second, ASYNC_ECANCELED);
    return 0;
}
Test(waker, waker_twice_then_cancel, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_wake_twice_then_cancel, NULL, NULL), 0);
}

/* Cancelled first: the suspension ended, so a wake in the same iteration is
 * stale and says so (a completion can then keep what it would have handed). */
static int t_cancel_then_wake(void *arg, void **res)
{
    (void)arg, (void)res;
    susp_job_t j = {0};
    async_task_t t = test_spawn_started(suspender, &j);
    cr_assert_eq(async_task_cancel(t), 0);
    cr_assert_eq(async_waker_wake(j.waker, 5), ASYNC_ESRCH);
    cr_assert_eq(async_task_await(t, NULL), 0);
    cr_assert_eq(j.rc, ASYNC_ECANCELED);
    return 0;
}
Test(waker, cancel_then_wake_is_stale, .timeout = 10)
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
    async_task_t t = test_spawn_started(stray_locker, &j); /* it waits on the mutex */
    cr_assert_eq(async_waker_wake(j.waker, 0), ASYNC_ESRCH, "not its suspension");
    cr_assert_eq(async_mutex_unlock(j.mutex), 0);
    cr_assert_eq(async_task_await(t, NULL), 0);
    cr_assert_eq(j.lock_rc, 0);
    cr_assert_eq(j.unlock_rc, 0, "it held the lock it was told it held");
    cr_assert_eq(async_mutex_destroy(j.mutex), 0);
    return 0;
}
Test(waker, stray_waker_cannot_complete_a_mutex_wait, .timeout = 10)
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
    async_task_t t = test_spawn_started(pending_receiver, &j);
    cr_assert_eq(j.woken_rc, 0, "a wake before the suspension is kept");
    int v = 11;
    cr_assert_eq(async_chan_send(j.chan, &v), 0);
    cr_assert_eq(async_task_await(t, NULL), 0);
    cr_assert_eq(j.recv_rc, 0);
    cr_assert_eq(j.value, 11, "received a real element");
    cr_assert_eq(async_chan_destroy(j.chan), 0);
    return 0;
}
Test(waker, pending_wake_cannot_complete_a_chan_receive, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_pending_wake_vs_chan, NULL, NULL), 0);
}
