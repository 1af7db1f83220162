/* Signals awaited from tasks through a signalfd, on the default loop and on a
 * loop of another thread; deadline, cancel, bad input, and the mask put back. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <unistd.h>
#include <signal.h>
#include "support/run.h"

static bool blocked(int sig)
{
    sigset_t cur;
    pthread_sigmask(SIG_BLOCK, NULL, &cur);
    return sigismember(&cur, sig);
}

static int raise_later(void *arg, void **res)
{
    (void)res;
    async_sleep(ASYNC_MSEC(30));
    raise((int)(intptr_t)arg); /* this thread: the one that blocked it */
    return 0;
}

static int t_wait(void *arg, void **res)
{
    (void)arg, (void)res;
    int sigs[] = {SIGUSR1, SIGUSR2};
    async_signal_t *s;
    cr_assert_eq(async_signal_new(&s, sigs, 2), 0);
    cr_assert(blocked(SIGUSR1) && blocked(SIGUSR2));
    async_task_t t;
    cr_assert_eq(async_task_spawn(&t, NULL, raise_later, (void *)(intptr_t)SIGUSR2, NULL), 0);
    int signo = 0;
    cr_assert_eq(async_signal_wait_dl(s, &signo, async_deadline_after(ASYNC_SEC(5))), 0);
    cr_assert_eq(signo, SIGUSR2);
    cr_assert_eq(async_task_await(t, NULL), 0);
    /* A signal raised before the wait is not lost. */
    raise(SIGUSR1);
    cr_assert_eq(async_signal_wait_dl(s, &signo, async_deadline_after(ASYNC_SEC(5))), 0);
    cr_assert_eq(signo, SIGUSR1);
    int64_t t0 = async_now();
    cr_assert_eq(async_signal_wait_dl(s, &signo, async_deadline_after(ASYNC_MSEC(50))), ASYNC_ETIMEDOUT);
    cr_assert_geq(async_now() - t0, ASYNC_MSEC(50));
    cr_assert_eq(async_signal_destroy(s), 0);
    cr_assert(!blocked(SIGUSR1) && !blocked(SIGUSR2), "free unblocks what new blocked");
    return 0;
}
Test(signal, wait_from_a_task_then_deadline_and_mask_restored, .timeout = 20)
{
    cr_assert_eq(test_run_task(t_wait, NULL, NULL), 0);
}

static int waiter(void *arg, void **res)
{
    (void)res;
    int signo;
    return async_signal_wait(arg, &signo);
}

static int t_cancel(void *arg, void **res)
{
    (void)arg, (void)res;
    int sigs[] = {SIGUSR1};
    async_signal_t *s;
    cr_assert_eq(async_signal_new(&s, sigs, 1), 0);
    async_task_t t;
    cr_assert_eq(async_task_spawn(&t, NULL, waiter, s, NULL), 0);
    async_sleep(ASYNC_MSEC(20));
    int signo;
    cr_assert_eq(async_signal_wait(s, &signo), ASYNC_EBUSY, "one waiter per set");
    cr_assert_eq(async_signal_destroy(s), ASYNC_EBUSY);
    cr_assert_eq(async_task_cancel(t), 0);
    cr_assert_eq(async_task_await(t, NULL), ASYNC_ECANCELED);
    cr_assert_eq(async_signal_destroy(s), 0);
    return 0;
}
Test(signal, cancel_ends_the_wait_and_busy_set_is_ebusy, .timeout = 20)
{
    cr_assert_eq(test_run_task(t_cancel, NULL, NULL), 0);
}

/* A cancelled task still takes a signal that is already pending; with none
 * pending the wait would have to wait, and returns ASYNC_ECANCELED. */
static int t_cancelled_pending(void *arg, void **res)
{
    (void)arg, (void)res;
    int sigs[] = {SIGUSR1};
    async_signal_t *s;
    cr_assert_eq(async_signal_new(&s, sigs, 1), 0);
    raise(SIGUSR1);
    cr_assert_eq(async_task_cancel(async_task_self()), 0);
    int signo = 0;
    cr_assert_eq(async_signal_wait(s, &signo), 0);
    cr_assert_eq(signo, SIGUSR1);
    cr_assert_eq(async_signal_wait(s, &signo), ASYNC_ECANCELED);
    cr_assert_eq(async_signal_destroy(s), 0);
    return 0;
}
Test(signal, cancelled_task_takes_a_pending_signal, .timeout = 20)
{
    cr_assert_eq(test_run_task(t_cancelled_pending, NULL, NULL), 0);
}

Test(signal, bad_input_is_einval, .timeout = 10)
{
    async_signal_t *s;
    int kill9[] = {SIGKILL}, stop[] = {SIGSTOP}, bad[] = {12345};
    cr_assert_eq(async_signal_new(&s, kill9, 1), ASYNC_EINVAL);
    cr_assert_eq(async_signal_new(&s, stop, 1), ASYNC_EINVAL);
    cr_assert_eq(async_signal_new(&s, bad, 1), ASYNC_EINVAL);
    cr_assert_eq(async_signal_new(&s, kill9, 0), ASYNC_EINVAL);
    int ok[] = {SIGUSR1};
    cr_assert_eq(async_signal_new(&s, ok, 1), 0);
    int signo;
    cr_assert_eq(async_signal_wait(s, &signo), ASYNC_ENOTASK);
    cr_assert_eq(async_signal_destroy(s), 0);
}

/* A loop of another thread, not libev's default one. */
struct other {
    pthread_t th;
    int got, rc;
    volatile bool ready;
};

static int other_task(void *arg, void **res)
{
    (void)res;
    struct other *o = arg;
    int sigs[] = {SIGUSR1};
    async_signal_t *s;
    if ((o->rc = async_signal_new(&s, sigs, 1))) return o->rc;
    __atomic_store_n(&o->ready, true, __ATOMIC_RELEASE);
    o->rc = async_signal_wait_dl(s, &o->got, async_deadline_after(ASYNC_SEC(10)));
    async_signal_destroy(s);
    return o->rc;
}

static void *other_main(void *arg)
{
    async_loop_t *loop;
    if (async_loop_new(&loop)) return NULL;
    async_task_spawn(NULL, loop, other_task, arg, NULL);
    async_loop_run(loop, ASYNC_RUN_DEFAULT);
    async_loop_destroy(loop);
    return NULL;
}

Test(signal, wait_on_a_loop_of_another_thread, .timeout = 20)
{
    struct other o = {.rc = 1};
    cr_assert_eq(pthread_create(&o.th, NULL, other_main, &o), 0);
    while (!__atomic_load_n(&o.ready, __ATOMIC_ACQUIRE)) usleep(1000);
    cr_assert_eq(pthread_kill(o.th, SIGUSR1), 0);
    pthread_join(o.th, NULL);
    cr_assert_eq(o.rc, 0);
    cr_assert_eq(o.got, SIGUSR1);
}

/* The set belongs to the thread that made it: free elsewhere would restore
 * the wrong thread's mask, and a wait on a thread that does not block the
 * signals could see one delivered with its default action instead. */
struct foreign {
    async_signal_t *s;
    int free_rc, unblocked_rc, blocked_rc;
};

static int foreign_task(void *arg, void **res)
{
    (void)res;
    struct foreign *f = arg;
    f->free_rc = async_signal_destroy(f->s);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR2);
    int signo;
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    f->unblocked_rc = async_signal_wait_dl(f->s, &signo, async_deadline_after(ASYNC_MSEC(10)));
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    f->blocked_rc = async_signal_wait_dl(f->s, &signo, async_deadline_after(ASYNC_MSEC(10)));
    return 0;
}

static void *foreign_main(void *arg)
{
    async_loop_t *loop;
    if (async_loop_new(&loop)) return NULL;
    async_task_spawn(NULL, loop, foreign_task, arg, NULL);
    async_loop_run(loop, ASYNC_RUN_DEFAULT);
    async_loop_destroy(loop);
    return NULL;
}

Test(signal, another_thread_may_not_free_and_waits_only_with_the_signals_blocked, .timeout = 20)
{
    int sigs[] = {SIGUSR2};
    struct foreign f = {.free_rc = 1, .unblocked_rc = 1, .blocked_rc = 1};
    cr_assert_eq(async_signal_new(&f.s, sigs, 1), 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, foreign_main, &f), 0);
    pthread_join(th, NULL);
    cr_assert_eq(f.free_rc, ASYNC_EWRONGLOOP);
    cr_assert_eq(f.unblocked_rc, ASYNC_EWRONGLOOP);
    cr_assert_eq(f.blocked_rc, ASYNC_ETIMEDOUT, "a thread that blocks the signals may wait");
    cr_assert(blocked(SIGUSR2));
    cr_assert_eq(async_signal_destroy(f.s), 0);
    cr_assert(!blocked(SIGUSR2));
}
