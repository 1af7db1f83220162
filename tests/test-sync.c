/* Channels, semaphores, mutexes and events between tasks of one loop, and the
 * interleavings that are easy to get wrong: a waiter whose deadline passes
 * (or who is cancelled) after it was handed an element, a permit or a lock. */
#include <criterion/criterion.h>
#include <limits.h>
#include <pthread.h>
#include <async/select.h>
#include "support/run.h"
#include "support/alloc.h"

static int producer(void *arg, void **res)
{
    (void)res;
    async_chan_t *c = arg;
    for (int i = 0; i < 100; i++) cr_assert_eq(async_chan_send(c, &i), 0);
    return async_chan_close(c);
}

static int t_fifo(void *arg, void **res)
{
    (void)res;
    size_t cap = (size_t)(intptr_t)arg;
    async_chan_t *c;
    cr_assert_eq(async_chan_new(&c, sizeof(int), cap), 0);
    async_task_t p;
    cr_assert_eq(async_task_spawn(&p, NULL, producer, c, NULL), 0);
    int v, expect = 0, rc;
    while ((rc = async_chan_recv(c, &v)) == 0) {
        cr_assert_eq(v, expect++);
        cr_assert_leq(async_chan_len(c), cap, "the bound holds");
    }
    cr_assert_eq(rc, ASYNC_EEOF);
    cr_assert_eq(expect, 100, "nothing lost");
    cr_assert_eq(async_task_await(p, NULL), 0);
    cr_assert_eq(async_chan_destroy(c), 0);
    return 0;
}
Test(chan, buffered_fifo_until_closed, .timeout = 10) { cr_assert_eq(test_run_task(t_fifo, (void *)4, NULL), 0); }
Test(chan, rendezvous_fifo_until_closed, .timeout = 10) { cr_assert_eq(test_run_task(t_fifo, (void *)0, NULL), 0); }

static int blocked_sender(void *arg, void **res)
{
    (void)res;
    int v = 9;
    return async_chan_send(arg, &v);
}

static int blocked_receiver(void *arg, void **res)
{
    (void)res;
    int v;
    return async_chan_recv(arg, &v);
}

static int t_close(void *arg, void **res)
{
    (void)arg, (void)res;
    async_chan_t *c;
    cr_assert_eq(async_chan_new(&c, sizeof(int), 1), 0);
    int v = 1;
    cr_assert_eq(async_chan_trysend(c, &v), 0);
    cr_assert_eq(async_chan_trysend(c, &v), ASYNC_EAGAIN, "full");
    async_task_t s;
    cr_assert_eq(async_task_spawn(&s, NULL, blocked_sender, c, NULL), 0);
    cr_assert_eq(async_yield(), 0);
    cr_assert_eq(async_chan_destroy(c), ASYNC_EBUSY, "a task waits on it");
    cr_assert_eq(async_chan_close(c), 0);
    cr_assert_eq(async_chan_close(c), ASYNC_EALREADY);
    cr_assert_eq(async_task_await(s, NULL), ASYNC_ECLOSED, "a waiting sender fails");
    cr_assert_eq(async_chan_send(c, &v), ASYNC_ECLOSED);
    v = 0;
    cr_assert_eq(async_chan_recv(c, &v), 0, "receivers drain what is buffered");
    cr_assert_eq(v, 1);
    cr_assert_eq(async_chan_recv(c, &v), ASYNC_EEOF, "closed and drained");
    cr_assert_eq(async_chan_tryrecv(c, &v), ASYNC_EEOF);
    cr_assert_eq(async_chan_recv_dl(c, &v, async_now() - 1), ASYNC_EEOF);
    cr_assert_eq(async_chan_trysend(c, &v), ASYNC_ECLOSED);
    cr_assert_eq(async_chan_destroy(c), 0);

    /* Receivers waiting on an empty channel are released by close. */
    cr_assert_eq(async_chan_new(&c, sizeof(int), 2), 0);
    async_task_t r[3];
    for (int i = 0; i < 3; i++) cr_assert_eq(async_task_spawn(&r[i], NULL, blocked_receiver, c,
                                                              NULL), 0);
    cr_assert_eq(async_yield(), 0);
    cr_assert_eq(async_chan_tryrecv(c, &v), ASYNC_EAGAIN, "empty");
    cr_assert_eq(async_chan_close(c), 0);
    int e[3];
    cr_assert_eq(async_gather(r, 3, NULL, e), ASYNC_EEOF);
    for (int i = 0; i < 3; i++) cr_assert_eq(e[i], ASYNC_EEOF, "a waiting receiver sees the end");
    cr_assert_eq(async_chan_destroy(c), 0);
    return 0;
}
Test(chan, close_releases_waiters, .timeout = 10) { cr_assert_eq(test_run_task(t_close, NULL, NULL), 0); }

static int t_deadlines(void *arg, void **res)
{
    (void)arg, (void)res;
    async_chan_t *c;
    cr_assert_eq(async_chan_new(&c, sizeof(int), 1), 0);
    int v = 3;
    int64_t t0 = async_now();
    cr_assert_eq(async_chan_recv_dl(c, &v, t0 + ASYNC_MSEC(15)), ASYNC_ETIMEDOUT);
    cr_assert_geq(async_now() - t0, ASYNC_MSEC(15));
    cr_assert_eq(async_chan_send_dl(c, &v, t0 - 1), 0, "possible at once: the past deadline is moot");
    cr_assert_eq(async_chan_send_dl(c, &v, async_now() - 1), ASYNC_ETIMEDOUT, "full and the deadline passed");
    cr_assert_eq(async_chan_len(c), 1);
    cr_assert_eq(async_chan_destroy(c), 0);
    cr_assert_eq(async_chan_new(&c, 0, 1), ASYNC_EINVAL);
    return 0;
}
Test(chan, deadlines, .timeout = 10) { cr_assert_eq(test_run_task(t_deadlines, NULL, NULL), 0); }

static int cancelled_receiver(void *arg, void **res)
{
    (void)res;
    int v;
    int rc = async_chan_recv(arg, &v);
    cr_assert_eq(rc, ASYNC_ECANCELED);
    return rc;
}

static int t_cancel_waiter(void *arg, void **res)
{
    (void)arg, (void)res;
    async_chan_t *c;
    cr_assert_eq(async_chan_new(&c, sizeof(int), 0), 0);
    async_task_t r;
    cr_assert_eq(async_task_spawn(&r, NULL, cancelled_receiver, c, NULL), 0);
    cr_assert_eq(async_yield(), 0);
    cr_assert_eq(async_task_cancel(r), 0);
    cr_assert_eq(async_task_await(r, NULL), ASYNC_ECANCELED);
    int v = 1;
    cr_assert_eq(async_chan_trysend(c, &v), ASYNC_EAGAIN, "the cancelled receiver left the queue");
    cr_assert_eq(async_chan_destroy(c), 0);
    return 0;
}
Test(chan, cancelled_waiter_leaves, .timeout = 10) { cr_assert_eq(test_run_task(t_cancel_waiter, NULL, NULL), 0); }

struct sem_probe {
    async_sem_t *sem;
    int inside, peak;
};

static int capped(void *arg, void **res)
{
    (void)res;
    struct sem_probe *p = arg;
    cr_assert_eq(async_sem_acquire(p->sem), 0);
    if (++p->inside > p->peak) p->peak = p->inside;
    async_sleep(ASYNC_MSEC(2));
    p->inside--;
    async_sem_release(p->sem);
    return 0;
}

static int t_sem(void *arg, void **res)
{
    (void)arg, (void)res;
    struct sem_probe p = {0};
    cr_assert_eq(async_sem_new(&p.sem, 3), 0);
    async_task_t t[20];
    for (int i = 0; i < 20; i++) cr_assert_eq(async_task_spawn(&t[i], NULL, capped, &p, NULL), 0);
    cr_assert_eq(async_gather(t, 20, NULL, NULL), 0);
    cr_assert_eq(p.peak, 3);
    cr_assert_eq(async_sem_value(p.sem), 3);
    cr_assert_eq(async_sem_tryacquire(p.sem), 0);
    cr_assert_eq(async_sem_acquire_dl(p.sem, 0), 0);
    cr_assert_eq(async_sem_acquire(p.sem), 0);
    cr_assert_eq(async_sem_tryacquire(p.sem), ASYNC_EAGAIN);
    cr_assert_eq(async_sem_acquire_dl(p.sem, async_deadline_after(ASYNC_MSEC(5))), ASYNC_ETIMEDOUT);
    cr_assert_eq(async_sem_destroy(p.sem), 0);
    return 0;
}
Test(sem, caps_concurrency, .timeout = 10) { cr_assert_eq(test_run_task(t_sem, NULL, NULL), 0); }

struct mutex_probe {
    async_mutex_t *m;
    int counter;
};

static int locker(void *arg, void **res)
{
    (void)res;
    struct mutex_probe *p = arg;
    for (int i = 0; i < 10; i++) {
        cr_assert_eq(async_mutex_lock(p->m), 0);
        int v = p->counter;
        async_yield(); /* others run here but cannot enter */
        p->counter = v + 1;
        cr_assert_eq(async_mutex_unlock(p->m), 0);
    }
    return 0;
}

static int t_mutex(void *arg, void **res)
{
    (void)arg, (void)res;
    struct mutex_probe p = {0};
    cr_assert_eq(async_mutex_new(&p.m), 0);
    cr_assert_eq(async_mutex_unlock(p.m), ASYNC_EPERM, "not held");
    async_task_t t[5];
    for (int i = 0; i < 5; i++) cr_assert_eq(async_task_spawn(&t[i], NULL, locker, &p, NULL), 0);
    cr_assert_eq(async_gather(t, 5, NULL, NULL), 0);
    cr_assert_eq(p.counter, 50, "no lost update");
    cr_assert_eq(async_mutex_trylock(p.m), 0);
    cr_assert_eq(async_mutex_lock(p.m), ASYNC_EALREADY, "not recursive");
    cr_assert_eq(async_mutex_trylock(p.m), ASYNC_EALREADY, "not recursive, even tried");
    cr_assert_eq(async_mutex_lock_dl(p.m, async_now() - 1), ASYNC_EALREADY);
    cr_assert_eq(async_mutex_destroy(p.m), ASYNC_EBUSY, "held");
    cr_assert_eq(async_mutex_unlock(p.m), 0);
    cr_assert_eq(async_mutex_destroy(p.m), 0);
    return 0;
}
Test(mutex, excludes, .timeout = 10) { cr_assert_eq(test_run_task(t_mutex, NULL, NULL), 0); }

static int event_waiter(void *arg, void **res)
{
    (void)res;
    return async_event_wait(arg);
}

static int t_event(void *arg, void **res)
{
    (void)arg, (void)res;
    async_event_t *e;
    cr_assert_eq(async_event_new(&e), 0);
    async_task_t t[4];
    for (int i = 0; i < 4; i++) cr_assert_eq(async_task_spawn(&t[i], NULL, event_waiter, e, NULL),
                                             0);
    cr_assert_eq(async_yield(), 0);
    cr_assert_eq(async_event_destroy(e), ASYNC_EBUSY);
    cr_assert_eq(async_event_wait_dl(e, async_deadline_after(ASYNC_MSEC(5))), ASYNC_ETIMEDOUT);
    async_event_set(e);
    cr_assert(async_event_is_set(e));
    cr_assert_eq(async_gather(t, 4, NULL, NULL), 0, "set wakes every waiter");
    cr_assert_eq(async_event_wait(e), 0);
    async_event_clear(e);
    cr_assert_not(async_event_is_set(e));
    cr_assert_eq(async_event_destroy(e), 0);
    return 0;
}
Test(event, wakes_all, .timeout = 10) { cr_assert_eq(test_run_task(t_event, NULL, NULL), 0); }

Test(sync, no_leaks_and_allocation_failures, .timeout = 10)
{
    test_alloc_install();
    for (long n = 0; n < 3; n++) {
        async_chan_t *c;
        test_alloc_fail_after(n);
        int rc = async_chan_new(&c, 8, 4);
        test_alloc_fail_after(-1);
        if (rc == 0) async_chan_destroy(c);
        else cr_assert_eq(rc, ASYNC_ENOMEM);
    }
    cr_assert_eq(test_run_task(t_fifo, (void *)4, NULL), 0);
    cr_assert_eq(test_run_task(t_sem, NULL, NULL), 0);
    cr_assert_eq(test_alloc_live(), 0, "%ld leaked", test_alloc_live());
    test_alloc_uninstall();
}

/* --- a hand-over, then a deadline or a cancel in the same iteration ------ */

/* Spins (without yielding) until the deadline has passed, so that a timer
 * due at it would fire on the loop's next poll. */
static void spin_past(int64_t deadline)
{
    while (async_now() <= deadline) { /* spin */ }
}

/* The deadline of a waiter that must still be waiting when it is handed
 * something: far enough that a slow or loaded machine (ThreadSanitizer under
 * a load of 16 missed 20 ms) does not expire it first; ASYNC_TEST_SLACK
 * widens it further. */
static int64_t handoff_deadline(void)
{
    return async_deadline_after((int64_t)(ASYNC_MSEC(200) * test_slack()));
}

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
    recv_job_t j = {.deadline = handoff_deadline()};
    cr_assert_eq(async_chan_new(&j.chan, sizeof(int), 0), 0);
    async_task_t r;
    cr_assert_eq(async_task_spawn(&r, NULL, receiver_dl, &j, NULL), 0);
    cr_assert_eq(async_yield(), 0); /* the receiver waits */
    int v = 42;
    cr_assert_eq(async_chan_trysend(j.chan, &v), 0, "a waiting receiver takes it at once");
    cr_assert_eq(async_task_cancel(r), 0);
    spin_past(j.deadline);
    cr_assert_eq(async_task_await(r, NULL), 0);
    cr_assert_eq(j.rc, 0, "handed over before the deadline and the cancel: %s", async_errname(j.rc));
    cr_assert_eq(j.value, 42);
    cr_assert_eq(async_chan_len(j.chan), 0);
    cr_assert_eq(async_chan_destroy(j.chan), 0);
    return 0;
}
Test(chan, chan_handoff_survives_deadline_and_cancel, .timeout = 10)
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
    cr_assert_eq(async_task_spawn(&r, NULL, receiver_dl, &j, NULL), 0);
    cr_assert_eq(async_task_await(r, NULL), 0);
    cr_assert_eq(j.rc, ASYNC_ETIMEDOUT);
    cr_assert_eq(j.value, -1, "nothing written into a receiver that left");
    int v = 7, out = 0;
    cr_assert_eq(async_chan_trysend(j.chan, &v), 0);
    cr_assert_eq(async_chan_len(j.chan), 1, "buffered, not handed to the departed");
    cr_assert_eq(async_chan_tryrecv(j.chan, &out), 0);
    cr_assert_eq(out, 7);
    cr_assert_eq(async_chan_destroy(j.chan), 0);
    return 0;
}
Test(chan, chan_deadline_then_send_buffers, .timeout = 10)
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
    lock_job_t j = {.deadline = handoff_deadline(), .unlock_rc = 1};
    cr_assert_eq(async_mutex_new(&j.mutex), 0);
    cr_assert_eq(async_mutex_lock(j.mutex), 0);
    async_task_t w;
    cr_assert_eq(async_task_spawn(&w, NULL, mutex_waiter, &j, NULL), 0);
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
    cr_assert_eq(async_mutex_destroy(j.mutex), 0);
    return 0;
}
Test(mutex, mutex_handoff_survives_cancel, .timeout = 10)
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
    cr_assert_eq(async_task_spawn(&w, NULL, mutex_waiter, &j, NULL), 0);
    cr_assert_eq(async_yield(), 0);
    cr_assert_eq(async_task_cancel(w), 0);
    cr_assert_eq(async_mutex_unlock(j.mutex), 0);
    cr_assert_eq(async_task_await(w, NULL), 0);
    cr_assert_eq(j.rc, ASYNC_ECANCELED);
    cr_assert_eq(j.unlock_rc, 1, "never held it");
    cr_assert_eq(async_mutex_trylock(j.mutex), 0, "free, not owned by the departed waiter");
    cr_assert_eq(async_mutex_unlock(j.mutex), 0);
    cr_assert_eq(async_mutex_destroy(j.mutex), 0);
    return 0;
}
Test(mutex, cancelled_mutex_waiter_is_skipped, .timeout = 10)
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
    lock_job_t a = {.deadline = handoff_deadline()};
    cr_assert_eq(async_sem_new(&a.sem, 0), 0);
    async_task_t w;
    cr_assert_eq(async_task_spawn(&w, NULL, sem_waiter, &a, NULL), 0);
    cr_assert_eq(async_yield(), 0);
    async_sem_release(a.sem);
    spin_past(a.deadline);
    cr_assert_eq(async_task_await(w, NULL), 0);
    cr_assert_eq(a.rc, 0, "%s", async_errname(a.rc));
    cr_assert_eq(async_sem_value(a.sem), 0, "the permit went to the waiter");

    lock_job_t b = {.sem = a.sem, .deadline = async_deadline_after(ASYNC_MSEC(5))};
    cr_assert_eq(async_task_spawn(&w, NULL, sem_waiter, &b, NULL), 0);
    cr_assert_eq(async_task_await(w, NULL), 0);
    cr_assert_eq(b.rc, ASYNC_ETIMEDOUT);
    async_sem_release(a.sem);
    cr_assert_eq(async_sem_value(a.sem), 1, "the departed waiter took nothing");
    cr_assert_eq(async_sem_destroy(a.sem), 0);
    return 0;
}

/* A release that would carry the count past UINT_MAX is refused and leaves
 * the count as it was (it used to wrap to 0); with a waiter, the permit goes
 * to the waiter, whatever the count. */
static int t_sem_overflow(void *arg, void **res)
{
    (void)arg, (void)res;
    async_sem_t *s;
    cr_assert_eq(async_sem_new(&s, UINT_MAX - 1), 0);
    cr_assert_eq(async_sem_release(s), 0);
    cr_assert_eq(async_sem_value(s), UINT_MAX);
    cr_assert_eq(async_sem_release(s), ASYNC_EINVAL);
    cr_assert_eq(async_sem_value(s), UINT_MAX, "unchanged");
    cr_assert_eq(async_sem_destroy(s), 0);

    lock_job_t a = {.deadline = ASYNC_FOREVER};
    cr_assert_eq(async_sem_new(&a.sem, 0), 0);
    async_task_t w;
    cr_assert_eq(async_task_spawn(&w, NULL, sem_waiter, &a, NULL), 0);
    cr_assert_eq(async_yield(), 0);
    cr_assert_eq(async_sem_release(a.sem), 0);
    cr_assert_eq(async_task_await(w, NULL), 0);
    cr_assert_eq(a.rc, 0);
    cr_assert_eq(async_sem_value(a.sem), 0, "handed over, not counted");
    cr_assert_eq(async_sem_destroy(a.sem), 0);
    return 0;
}
Test(sem, release_past_uint_max_is_einval, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_sem_overflow, NULL, NULL), 0);
}
Test(sem, sem_permits_are_never_lost, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_sem_handoff, NULL, NULL), 0);
}


/* --- the contracts' error codes -------------------------------------------- */

/* Every blocking call outside a task is ASYNC_ENOTASK (and blocks nothing);
 * bad sizes are ASYNC_EINVAL; freeing NULL is a no-op. */
Test(sync, errors_outside_a_task_and_bad_arguments, .timeout = 10)
{
    async_chan_t *c;
    cr_assert_eq(async_chan_new(&c, 0, 4), ASYNC_EINVAL, "elem_size 0");
    cr_assert_eq(async_chan_new(&c, SIZE_MAX / 2, 4), ASYNC_EINVAL, "capacity * elem_size overflows");
    cr_assert_eq(async_chan_new(&c, sizeof(int), 0), 0);
    int v = 1;
    cr_assert_eq(async_chan_send(c, &v), ASYNC_ENOTASK, "a rendezvous send would block");
    cr_assert_eq(async_chan_recv(c, &v), ASYNC_ENOTASK);
    cr_assert_eq(async_chan_destroy(c), 0);

    async_sem_t *s;
    cr_assert_eq(async_sem_new(&s, 0), 0);
    cr_assert_eq(async_sem_acquire(s), ASYNC_ENOTASK);
    cr_assert_eq(async_sem_tryacquire(s), ASYNC_EAGAIN);
    cr_assert_eq(async_sem_destroy(s), 0);

    async_mutex_t *m;
    cr_assert_eq(async_mutex_new(&m), 0);
    cr_assert_eq(async_mutex_lock(m), ASYNC_ENOTASK);
    cr_assert_eq(async_mutex_trylock(m), ASYNC_ENOTASK, "even trylock needs a task to own it");
    cr_assert_eq(async_mutex_unlock(m), ASYNC_EPERM);
    cr_assert_eq(async_mutex_destroy(m), 0);

    async_event_t *e;
    cr_assert_eq(async_event_new(&e), 0);
    cr_assert_eq(async_event_wait(e), ASYNC_ENOTASK);
    cr_assert_eq(async_event_trywait(e), ASYNC_EAGAIN, "trywait needs no task");
    async_event_set(e);
    cr_assert(async_event_is_set(e));
    cr_assert_eq(async_event_trywait(e), 0);
    cr_assert_eq(async_event_destroy(e), 0);

    cr_assert_eq(async_chan_destroy(NULL), 0);
    cr_assert_eq(async_sem_destroy(NULL), 0);
    cr_assert_eq(async_mutex_destroy(NULL), 0);
    cr_assert_eq(async_event_destroy(NULL), 0);
}

typedef struct {
    async_chan_t *chan;
    async_sem_t *sem;
    async_mutex_t *mutex;
    async_event_t *event;
    int rc;
} busy_job_t;

static int chan_waiter(void *arg, void **res)
{
    (void)res;
    busy_job_t *j = arg;
    int v;
    j->rc = async_chan_recv(j->chan, &v);
    return 0;
}

static int sem_blocker(void *arg, void **res)
{
    (void)res;
    busy_job_t *j = arg;
    j->rc = async_sem_acquire(j->sem);
    return 0;
}

static int event_blocker(void *arg, void **res)
{
    (void)res;
    busy_job_t *j = arg;
    j->rc = async_event_wait(j->event);
    return 0;
}

static int mutex_other(void *arg, void **res)
{
    (void)res;
    busy_job_t *j = arg;
    j->rc = async_mutex_unlock(j->mutex);
    return 0;
}

/* Freeing a primitive a task waits on is ASYNC_EBUSY and changes nothing: the
 * waiter is released normally afterwards.  A mutex held (by anyone) cannot be
 * freed, locking it twice is ASYNC_EALREADY, and only its owner may unlock it. */
static int t_busy(void *arg, void **res)
{
    (void)arg, (void)res;
    busy_job_t j = {.rc = 1};
    async_task_t t;
    cr_assert_eq(async_chan_new(&j.chan, sizeof(int), 0), 0);
    cr_assert_eq(async_task_spawn(&t, NULL, chan_waiter, &j, NULL), 0);
    cr_assert_eq(async_yield(), 0);
    cr_assert_eq(async_chan_destroy(j.chan), ASYNC_EBUSY, "a receiver waits");
    cr_assert_eq(async_chan_close(j.chan), 0);
    cr_assert_eq(async_chan_close(j.chan), ASYNC_EALREADY);
    cr_assert_eq(async_task_await(t, NULL), 0);
    cr_assert_eq(j.rc, ASYNC_EEOF);
    cr_assert_eq(async_chan_destroy(j.chan), 0);

    j.rc = 1;
    cr_assert_eq(async_sem_new(&j.sem, 0), 0);
    cr_assert_eq(async_task_spawn(&t, NULL, sem_blocker, &j, NULL), 0);
    cr_assert_eq(async_yield(), 0);
    cr_assert_eq(async_sem_destroy(j.sem), ASYNC_EBUSY, "a task waits for a permit");
    async_sem_release(j.sem);
    cr_assert_eq(async_task_await(t, NULL), 0);
    cr_assert_eq(j.rc, 0);
    cr_assert_eq(async_sem_destroy(j.sem), 0);

    j.rc = 1;
    cr_assert_eq(async_event_new(&j.event), 0);
    cr_assert_eq(async_task_spawn(&t, NULL, event_blocker, &j, NULL), 0);
    cr_assert_eq(async_yield(), 0);
    cr_assert_eq(async_event_destroy(j.event), ASYNC_EBUSY, "a task waits for the event");
    async_event_set(j.event);
    cr_assert_eq(async_task_await(t, NULL), 0);
    cr_assert_eq(j.rc, 0);
    async_event_clear(j.event);
    cr_assert_not(async_event_is_set(j.event));
    cr_assert_eq(async_event_destroy(j.event), 0);

    j.rc = 1;
    cr_assert_eq(async_mutex_new(&j.mutex), 0);
    cr_assert_eq(async_mutex_lock(j.mutex), 0);
    cr_assert_eq(async_mutex_lock(j.mutex), ASYNC_EALREADY, "not recursive");
    cr_assert_eq(async_mutex_destroy(j.mutex), ASYNC_EBUSY, "held");
    cr_assert_eq(async_task_spawn(&t, NULL, mutex_other, &j, NULL), 0);
    cr_assert_eq(async_task_await(t, NULL), 0);
    cr_assert_eq(j.rc, ASYNC_EPERM, "another task cannot unlock it");
    cr_assert_eq(async_mutex_unlock(j.mutex), 0);
    cr_assert_eq(async_mutex_unlock(j.mutex), ASYNC_EPERM, "no longer held");
    cr_assert_eq(async_mutex_destroy(j.mutex), 0);
    return 0;
}
Test(sync, free_while_busy_and_misuse, .timeout = 10) { cr_assert_eq(test_run_task(t_busy, NULL, NULL), 0); }

/* Every constructor reports an allocation failure as ASYNC_ENOMEM, at each
 * allocation it makes, and leaves nothing allocated. */
Test(sync, constructors_fail_cleanly_at_each_allocation, .timeout = 10)
{
    test_alloc_install();
    int failures = 0;
    for (long n = 0; n < 4; n++) {
        async_sem_t *s;
        async_mutex_t *m;
        async_event_t *e;
        test_alloc_fail_after(n);
        int rc = async_sem_new(&s, 1);
        test_alloc_fail_after(-1);
        if (rc == 0) async_sem_destroy(s);
        else {
            cr_assert_eq(rc, ASYNC_ENOMEM);
            failures++;
        }
        test_alloc_fail_after(n);
        rc = async_mutex_new(&m);
        test_alloc_fail_after(-1);
        if (rc == 0) async_mutex_destroy(m);
        else {
            cr_assert_eq(rc, ASYNC_ENOMEM);
            failures++;
        }
        test_alloc_fail_after(n);
        rc = async_event_new(&e);
        test_alloc_fail_after(-1);
        if (rc == 0) async_event_destroy(e);
        else {
            cr_assert_eq(rc, ASYNC_ENOMEM);
            failures++;
        }
    }
    cr_assert_geq(failures, 3, "each constructor met a failed allocation");
    cr_assert_eq(test_alloc_live(), 0, "%ld leaked", test_alloc_live());
    test_alloc_uninstall();
}

/* --- loop ownership ----------------------------------------------------- */

typedef struct {
    async_chan_t *chan;
    async_sem_t *sem;
    async_mutex_t *mutex;
    async_event_t *event;
    int other_thread[4];
} owned_t;

static int make_owned(void *arg, void **res)
{
    (void)res;
    owned_t *o = arg;
    cr_assert_eq(async_chan_new(&o->chan, sizeof(int), 2), 0);
    cr_assert_eq(async_sem_new(&o->sem, 1), 0);
    cr_assert_eq(async_mutex_new(&o->mutex), 0);
    cr_assert_eq(async_event_new(&o->event), 0);
    int v = 1;
    cr_assert_eq(async_chan_send(o->chan, &v), 0, "its own loop's task may use it");
    return 0;
}

/* Every call from a task of another loop is ASYNC_EWRONGLOOP and changes
 * nothing. */
static int use_from_other_loop(void *arg, void **res)
{
    (void)res;
    owned_t *o = arg;
    int v = 2;
    cr_assert_eq(async_chan_send(o->chan, &v), ASYNC_EWRONGLOOP);
    cr_assert_eq(async_chan_trysend(o->chan, &v), ASYNC_EWRONGLOOP);
    cr_assert_eq(async_chan_send_dl(o->chan, &v, 0), ASYNC_EWRONGLOOP);
    cr_assert_eq(async_chan_recv(o->chan, &v), ASYNC_EWRONGLOOP);
    cr_assert_eq(async_chan_tryrecv(o->chan, &v), ASYNC_EWRONGLOOP);
    cr_assert_eq(async_chan_recv_dl(o->chan, &v, 0), ASYNC_EWRONGLOOP);
    cr_assert_eq(async_chan_close(o->chan), ASYNC_EWRONGLOOP);
    cr_assert_eq(async_chan_destroy(o->chan), ASYNC_EWRONGLOOP);
    size_t fired;
    async_select_case_t cs[] = {{o->chan, ASYNC_SELECT_RECV, &v}};
    cr_assert_eq(async_select(cs, 1, &fired), ASYNC_EWRONGLOOP);
    cr_assert_eq(async_tryselect(cs, 1, &fired), ASYNC_EWRONGLOOP);
    cr_assert_eq(v, 2, "nothing received");
    cr_assert_eq(async_chan_len(o->chan), 1, "nothing sent or taken");

    cr_assert_eq(async_sem_acquire(o->sem), ASYNC_EWRONGLOOP);
    cr_assert_eq(async_sem_acquire_dl(o->sem, 0), ASYNC_EWRONGLOOP);
    cr_assert_eq(async_sem_tryacquire(o->sem), ASYNC_EWRONGLOOP);
    cr_assert_eq(async_sem_release(o->sem), ASYNC_EWRONGLOOP);
    cr_assert_eq(async_sem_destroy(o->sem), ASYNC_EWRONGLOOP);
    cr_assert_eq(async_sem_value(o->sem), 1, "no permit taken or given");

    cr_assert_eq(async_mutex_lock(o->mutex), ASYNC_EWRONGLOOP);
    cr_assert_eq(async_mutex_lock_dl(o->mutex, 0), ASYNC_EWRONGLOOP);
    cr_assert_eq(async_mutex_trylock(o->mutex), ASYNC_EWRONGLOOP);
    cr_assert_eq(async_mutex_unlock(o->mutex), ASYNC_EWRONGLOOP);
    cr_assert_eq(async_mutex_destroy(o->mutex), ASYNC_EWRONGLOOP);

    cr_assert_eq(async_event_set(o->event), ASYNC_EWRONGLOOP);
    cr_assert_eq(async_event_clear(o->event), ASYNC_EWRONGLOOP);
    cr_assert_eq(async_event_wait(o->event), ASYNC_EWRONGLOOP);
    cr_assert_eq(async_event_wait_dl(o->event, 0), ASYNC_EWRONGLOOP);
    cr_assert_eq(async_event_trywait(o->event), ASYNC_EWRONGLOOP);
    cr_assert_eq(async_event_destroy(o->event), ASYNC_EWRONGLOOP);
    cr_assert(!async_event_is_set(o->event), "not set");
    return 0;
}

static void *use_from_other_thread(void *arg)
{
    owned_t *o = arg;
    int v = 3;
    o->other_thread[0] = async_chan_trysend(o->chan, &v);
    o->other_thread[1] = async_sem_release(o->sem);
    o->other_thread[2] = async_event_set(o->event);
    o->other_thread[3] = async_chan_destroy(o->chan);
    return NULL;
}

/* While the owner loop runs, a thread outside any loop is refused too. */
static int use_while_running(void *arg, void **res)
{
    (void)res;
    owned_t *o = arg;
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, use_from_other_thread, o), 0);
    pthread_join(th, NULL);
    for (int i = 0; i < 4; i++) cr_assert_eq(o->other_thread[i], ASYNC_EWRONGLOOP, "call %d", i);
    cr_assert_eq(async_chan_len(o->chan), 1);
    cr_assert_eq(async_sem_value(o->sem), 1);
    cr_assert(!async_event_is_set(o->event));
    return 0;
}

static int free_owned(void *arg, void **res)
{
    (void)res;
    owned_t *o = arg;
    int v;
    cr_assert_eq(async_chan_recv(o->chan, &v), 0);
    cr_assert_eq(v, 1);
    cr_assert_eq(async_mutex_lock(o->mutex), 0);
    cr_assert_eq(async_mutex_unlock(o->mutex), 0);
    cr_assert_eq(async_chan_destroy(o->chan), 0);
    cr_assert_eq(async_sem_destroy(o->sem), 0);
    cr_assert_eq(async_mutex_destroy(o->mutex), 0);
    cr_assert_eq(async_event_destroy(o->event), 0);
    return 0;
}

static void run_on(async_loop_t *loop, async_task_fn fn, void *arg)
{
    async_task_t t;
    cr_assert_eq(async_task_spawn(&t, loop, fn, arg, NULL), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(async_task_done(t), 1);
    cr_assert_eq(async_task_detach(t), 0);
}

Test(owner, objects_refuse_other_loops_and_threads, .timeout = 10)
{
    async_loop_t *a, *b;
    cr_assert_eq(async_loop_new(&a), 0);
    cr_assert_eq(async_loop_new(&b), 0);
    owned_t o = {0};
    run_on(a, make_owned, &o);
    run_on(b, use_from_other_loop, &o);
    run_on(a, use_while_running, &o);
    int v = 0;
    cr_assert_eq(async_chan_tryrecv(o.chan, &v), 0, "the owner's thread, the loop not running");
    cr_assert_eq(v, 1);
    cr_assert_eq(async_chan_trysend(o.chan, &v), 0);
    run_on(a, free_owned, &o);
    cr_assert_eq(async_loop_destroy(b), 0);
    cr_assert_eq(async_loop_destroy(a), 0);
}

static int bind_owned(void *arg, void **res)
{
    (void)res;
    owned_t *o = arg;
    int v = 0;
    cr_assert_eq(async_chan_tryrecv(o->chan, &v), 0);
    cr_assert_eq(v, 1);
    cr_assert_eq(async_chan_trysend(o->chan, &v), 0);
    cr_assert_eq(async_sem_tryacquire(o->sem), 0);
    cr_assert_eq(async_sem_release(o->sem), 0);
    cr_assert_eq(async_mutex_lock(o->mutex), 0);
    cr_assert_eq(async_mutex_unlock(o->mutex), 0);
    cr_assert_eq(async_event_set(o->event), 0);
    cr_assert_eq(async_event_clear(o->event), 0);
    return 0;
}

/* An object made outside any loop is usable there, and belongs to the first
 * loop that uses it. */
Test(owner, made_outside_a_loop_binds_at_first_use, .timeout = 10)
{
    owned_t o = {0};
    cr_assert_eq(async_chan_new(&o.chan, sizeof(int), 2), 0);
    cr_assert_eq(async_sem_new(&o.sem, 1), 0);
    cr_assert_eq(async_mutex_new(&o.mutex), 0);
    cr_assert_eq(async_event_new(&o.event), 0);
    int v = 1;
    cr_assert_eq(async_chan_trysend(o.chan, &v), 0, "unbound: usable outside a loop");
    async_loop_t *a, *b;
    cr_assert_eq(async_loop_new(&a), 0);
    cr_assert_eq(async_loop_new(&b), 0);
    run_on(a, bind_owned, &o);
    run_on(b, use_from_other_loop, &o);
    run_on(a, free_owned, &o);
    cr_assert_eq(async_loop_destroy(b), 0);
    cr_assert_eq(async_loop_destroy(a), 0);
}

/* --- condition variable --------------------------------------------------- */

#define QCAP 4
typedef struct {
    async_mutex_t *m;
    async_cond_t *not_empty, *not_full;
    int buf[QCAP], head, len, consumed, sum, done;
    bool closed;
} cq_t;

static int cq_producer(void *arg, void **res)
{
    (void)res;
    cq_t *q = arg;
    for (int i = 1; i <= 100; i++) {
        cr_assert_eq(async_mutex_lock(q->m), 0);
        while (q->len == QCAP) cr_assert_eq(async_cond_wait(q->not_full, q->m), 0);
        q->buf[(q->head + q->len++) % QCAP] = i;
        cr_assert_eq(async_cond_signal(q->not_empty), 0);
        cr_assert_eq(async_mutex_unlock(q->m), 0);
    }
    cr_assert_eq(async_mutex_lock(q->m), 0);
    q->closed = true;
    cr_assert_eq(async_cond_broadcast(q->not_empty), 0);
    return async_mutex_unlock(q->m);
}

static int cq_consumer(void *arg, void **res)
{
    (void)res;
    cq_t *q = arg;
    for (;;) {
        cr_assert_eq(async_mutex_lock(q->m), 0);
        while (q->len == 0 && !q->closed) cr_assert_eq(async_cond_wait(q->not_empty, q->m), 0);
        if (q->len == 0) {
            q->done++;
            return async_mutex_unlock(q->m);
        }
        q->sum += q->buf[q->head];
        q->head = (q->head + 1) % QCAP;
        q->len--;
        q->consumed++;
        cr_assert_eq(async_cond_signal(q->not_full), 0);
        cr_assert_eq(async_mutex_unlock(q->m), 0);
        if (q->consumed % 7 == 0) cr_assert_eq(async_yield(), 0);
    }
}

/* A bounded queue of a mutex and two conditions: one producer, three
 * consumers, nothing lost, the bound held, every consumer released. */
static int t_cond_queue(void *arg, void **res)
{
    (void)arg, (void)res;
    cq_t q = {0};
    cr_assert_eq(async_mutex_new(&q.m), 0);
    cr_assert_eq(async_cond_new(&q.not_empty), 0);
    cr_assert_eq(async_cond_new(&q.not_full), 0);
    async_task_t t[4];
    for (int i = 0; i < 3; i++) cr_assert_eq(async_task_spawn(&t[i], NULL, cq_consumer, &q, NULL),
                                             0);
    cr_assert_eq(async_task_spawn(&t[3], NULL, cq_producer, &q, NULL), 0);
    cr_assert_eq(async_gather(t, 4, NULL, NULL), 0);
    cr_assert_eq(q.consumed, 100);
    cr_assert_eq(q.sum, 5050, "every element once");
    cr_assert_eq(q.done, 3, "the broadcast released every consumer");
    cr_assert_eq(async_cond_destroy(q.not_empty), 0);
    cr_assert_eq(async_cond_destroy(q.not_full), 0);
    cr_assert_eq(async_mutex_destroy(q.m), 0);
    return 0;
}
Test(cond, producer_consumer, .timeout = 10) { cr_assert_eq(test_run_task(t_cond_queue, NULL, NULL), 0); }

typedef struct {
    async_mutex_t *m;
    async_cond_t *c;
    async_event_t *waiting;
    int64_t deadline;
    bool go, cancel_check;
    int rc, woken, held_after, waiting_count;
} cw_job_t;

static int cond_waiter(void *arg, void **res)
{
    (void)res;
    cw_job_t *j = arg;
    cr_assert_eq(async_mutex_lock(j->m), 0);
    if (++j->waiting_count == 3 && j->waiting) async_event_set(j->waiting);
    int rc = async_cond_wait_dl(j->c, j->m, j->deadline);
    if (j->rc == 1) j->rc = rc;
    if (rc == 0) j->woken++;
    /* Held again, however the wait ended: unlocking succeeds. */
    if (async_mutex_unlock(j->m) == 0) j->held_after++;
    return rc;
}

/* broadcast wakes every waiter, signal one, and each returns holding the
 * mutex; a signal with nobody waiting is not remembered. */
static int t_cond_broadcast(void *arg, void **res)
{
    (void)arg, (void)res;
    cw_job_t j = {.deadline = ASYNC_FOREVER, .rc = 1};
    cr_assert_eq(async_mutex_new(&j.m), 0);
    cr_assert_eq(async_cond_new(&j.c), 0);
    cr_assert_eq(async_event_new(&j.waiting), 0);
    cr_assert_eq(async_cond_signal(j.c), 0, "nobody waits: nothing happens");
    async_task_t t[3];
    for (int i = 0; i < 3; i++) cr_assert_eq(async_task_spawn(&t[i], NULL, cond_waiter, &j, NULL),
                                             0);
    cr_assert_eq(async_event_wait(j.waiting), 0);
    cr_assert_eq(async_mutex_lock(j.m), 0, "every waiter let the mutex go");
    cr_assert_eq(async_cond_destroy(j.c), ASYNC_EBUSY, "tasks wait on it");
    cr_assert_eq(async_cond_signal(j.c), 0);
    cr_assert_eq(async_mutex_unlock(j.m), 0);
    cr_assert_eq(async_task_await(t[0], NULL), 0, "the longest waiter woke first");
    cr_assert_eq(j.woken, 1, "signal woke one");
    cr_assert_eq(async_task_done(t[1]), 0);
    cr_assert_eq(async_task_done(t[2]), 0);
    cr_assert_eq(async_cond_broadcast(j.c), 0);
    cr_assert_eq(async_gather(t + 1, 2, NULL, NULL), 0);
    cr_assert_eq(j.woken, 3, "broadcast woke the rest");
    cr_assert_eq(j.held_after, 3);
    cr_assert_eq(async_cond_destroy(j.c), 0);
    cr_assert_eq(async_event_destroy(j.waiting), 0);
    cr_assert_eq(async_mutex_destroy(j.m), 0);
    return 0;
}
Test(cond, signal_and_broadcast, .timeout = 10) { cr_assert_eq(test_run_task(t_cond_broadcast, NULL, NULL), 0); }

/* The deadline and cancellation end a wait with the mutex held again, even
 * when another task holds it at that moment (the waiter waits for it); a
 * wait that cannot begin keeps the mutex; misuse is refused. */
static int t_cond_deadline_cancel(void *arg, void **res)
{
    (void)arg, (void)res;
    cw_job_t j = {.rc = 1};
    cr_assert_eq(async_mutex_new(&j.m), 0);
    cr_assert_eq(async_cond_new(&j.c), 0);
    j.deadline = async_deadline_after(ASYNC_MSEC(10));
    async_task_t t;
    int64_t t0 = async_now();
    cr_assert_eq(async_task_spawn(&t, NULL, cond_waiter, &j, NULL), 0);
    cr_assert_eq(async_task_await(t, NULL), ASYNC_ETIMEDOUT);
    cr_assert_geq(async_now() - t0, ASYNC_MSEC(10));
    cr_assert_eq(j.held_after, 1, "returned holding the mutex");

    j.rc = 1;
    j.held_after = 0;
    j.deadline = ASYNC_FOREVER;
    cr_assert_eq(async_task_spawn(&t, NULL, cond_waiter, &j, NULL), 0);
    cr_assert_eq(async_yield(), 0); /* t waits on the condition */
    cr_assert_eq(async_mutex_lock(j.m), 0, "t let it go");
    cr_assert_eq(async_task_cancel(t), 0);
    cr_assert_eq(async_yield(), 0);
    cr_assert_eq(async_task_done(t), 0, "cancelled, and waiting for the mutex we hold");
    cr_assert_eq(async_mutex_unlock(j.m), 0);
    cr_assert_eq(async_task_await(t, NULL), ASYNC_ECANCELED);
    cr_assert_eq(j.held_after, 1, "returned holding the mutex");

    cr_assert_eq(async_cond_wait(j.c, j.m), ASYNC_EPERM, "not held");
    cr_assert_eq(async_mutex_lock(j.m), 0);
    cr_assert_eq(async_cond_wait_dl(j.c, j.m, async_now() - 1), ASYNC_ETIMEDOUT);
    cr_assert_eq(async_mutex_trylock(j.m), ASYNC_EALREADY, "still held: it never let go");
    cr_assert_eq(async_mutex_unlock(j.m), 0);
    cr_assert_eq(async_cond_destroy(j.c), 0);
    cr_assert_eq(async_mutex_destroy(j.m), 0);
    cr_assert_eq(async_cond_destroy(NULL), 0);
    return 0;
}
Test(cond, deadline_and_cancel_return_holding_the_mutex, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_cond_deadline_cancel, NULL, NULL), 0);
}

static int cond_signalled_then_cancelled(void *arg, void **res)
{
    (void)arg, (void)res;
    cw_job_t j = {.rc = 1, .deadline = ASYNC_FOREVER};
    cr_assert_eq(async_mutex_new(&j.m), 0);
    cr_assert_eq(async_cond_new(&j.c), 0);
    async_task_t t;
    cr_assert_eq(async_task_spawn(&t, NULL, cond_waiter, &j, NULL), 0);
    cr_assert_eq(async_yield(), 0);
    cr_assert_eq(async_cond_signal(j.c), 0);
    cr_assert_eq(async_task_cancel(t), 0);
    cr_assert_eq(async_task_await(t, NULL), 0, "the signal reached it first and stands");
    cr_assert_eq(async_cond_destroy(j.c), 0);
    cr_assert_eq(async_mutex_destroy(j.m), 0);
    return 0;
}
Test(cond, a_signal_before_the_cancel_stands, .timeout = 10)
{
    cr_assert_eq(test_run_task(cond_signalled_then_cancelled, NULL, NULL), 0);
}

static int cancelled_cond_waiter(void *arg, void **res)
{
    (void)res;
    cw_job_t *j = arg;
    cr_assert_eq(async_sleep(ASYNC_SEC(30)), ASYNC_ECANCELED);
    cr_assert_eq(async_mutex_lock(j->m), 0, "free: completes although cancelled");
    j->rc = async_cond_wait(j->c, j->m);
    cr_assert_eq(async_mutex_trylock(j->m), ASYNC_EALREADY, "the wait never let it go");
    return async_mutex_unlock(j->m);
}

static int cond_wrong_loop(void *arg, void **res)
{
    (void)res;
    cw_job_t *j = arg;
    cr_assert_eq(async_mutex_lock(j->m), ASYNC_EWRONGLOOP);
    cr_assert_eq(async_cond_wait(j->c, j->m), ASYNC_EWRONGLOOP);
    cr_assert_eq(async_cond_wait_dl(j->c, j->m, 0), ASYNC_EWRONGLOOP);
    cr_assert_eq(async_cond_signal(j->c), ASYNC_EWRONGLOOP);
    cr_assert_eq(async_cond_broadcast(j->c), ASYNC_EWRONGLOOP);
    cr_assert_eq(async_cond_destroy(j->c), ASYNC_EWRONGLOOP);
    return 0;
}

Test(cond, cancelled_wait_and_misuse, .timeout = 10)
{
    async_loop_t *a, *b;
    cr_assert_eq(async_loop_new(&a), 0);
    cr_assert_eq(async_loop_new(&b), 0);
    cw_job_t j = {.rc = 1};
    cr_assert_eq(async_mutex_new(&j.m), 0);
    cr_assert_eq(async_cond_new(&j.c), 0);
    cr_assert_eq(async_cond_wait(j.c, j.m), ASYNC_ENOTASK);
    async_task_t t;
    cr_assert_eq(async_task_spawn(&t, a, cancelled_cond_waiter, &j, NULL), 0);
    cr_assert_eq(async_loop_run(a, ASYNC_RUN_NOWAIT), 1);
    cr_assert_eq(async_task_cancel(t), 0);
    cr_assert_eq(async_loop_run(a, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(j.rc, ASYNC_ECANCELED, "a cancelled task cannot begin to wait");
    /* Both are bound to a now; loop b's tasks are refused. */
    run_on(b, cond_wrong_loop, &j);
    cr_assert_eq(async_cond_destroy(j.c), 0);
    cr_assert_eq(async_mutex_destroy(j.m), 0);
    cr_assert_eq(async_loop_destroy(b), 0);
    cr_assert_eq(async_loop_destroy(a), 0);
}

/* --- the cancellation rule ---------------------------------------------------- */

typedef struct {
    async_chan_t *full, *empty;
    async_sem_t *none;
    async_mutex_t *held;
    async_event_t *unset, *set;
} cancel_rule_t;

/* In a cancelled task, what can complete at once completes, a try form says
 * ASYNC_EAGAIN (never ASYNC_ECANCELED), and only a call that would have to
 * wait says ASYNC_ECANCELED. */
static int cancelled_user(void *arg, void **res)
{
    (void)res;
    cancel_rule_t *c = arg;
    cr_assert_eq(async_sleep(ASYNC_SEC(30)), ASYNC_ECANCELED);
    int v = 1;
    cr_assert_eq(async_chan_tryrecv(c->full, &v), 0, "buffered: completes");
    cr_assert_eq(async_chan_send(c->full, &v), 0, "room: completes");
    cr_assert_eq(async_chan_trysend(c->full, &v), ASYNC_EAGAIN);
    cr_assert_eq(async_chan_send(c->full, &v), ASYNC_ECANCELED, "full: would wait");
    cr_assert_eq(async_chan_tryrecv(c->empty, &v), ASYNC_EAGAIN);
    cr_assert_eq(async_chan_recv(c->empty, &v), ASYNC_ECANCELED);
    cr_assert_eq(async_sem_tryacquire(c->none), ASYNC_EAGAIN);
    cr_assert_eq(async_sem_acquire(c->none), ASYNC_ECANCELED);
    cr_assert_eq(async_sem_release(c->none), 0);
    cr_assert_eq(async_sem_acquire(c->none), 0, "a permit: completes");
    cr_assert_eq(async_mutex_trylock(c->held), ASYNC_EAGAIN);
    cr_assert_eq(async_mutex_lock(c->held), ASYNC_ECANCELED);
    cr_assert_eq(async_event_trywait(c->unset), ASYNC_EAGAIN);
    cr_assert_eq(async_event_wait(c->unset), ASYNC_ECANCELED);
    cr_assert_eq(async_event_trywait(c->set), 0);
    cr_assert_eq(async_event_wait(c->set), 0, "set: completes");
    return 0;
}

static int t_cancel_rule(void *arg, void **res)
{
    (void)arg, (void)res;
    cancel_rule_t c;
    cr_assert_eq(async_chan_new(&c.full, sizeof(int), 1), 0);
    cr_assert_eq(async_chan_new(&c.empty, sizeof(int), 1), 0);
    cr_assert_eq(async_sem_new(&c.none, 0), 0);
    cr_assert_eq(async_mutex_new(&c.held), 0);
    cr_assert_eq(async_event_new(&c.unset), 0);
    cr_assert_eq(async_event_new(&c.set), 0);
    int v = 7;
    cr_assert_eq(async_chan_send(c.full, &v), 0);
    cr_assert_eq(async_mutex_lock(c.held), 0);
    cr_assert_eq(async_event_set(c.set), 0);
    async_task_t t;
    cr_assert_eq(async_task_spawn(&t, NULL, cancelled_user, &c, NULL), 0);
    cr_assert_eq(async_yield(), 0);
    cr_assert_eq(async_task_cancel(t), 0);
    cr_assert_eq(async_task_await(t, NULL), 0);
    cr_assert_eq(async_mutex_unlock(c.held), 0);
    cr_assert_eq(async_chan_destroy(c.full), 0);
    cr_assert_eq(async_chan_destroy(c.empty), 0);
    cr_assert_eq(async_sem_destroy(c.none), 0);
    cr_assert_eq(async_mutex_destroy(c.held), 0);
    cr_assert_eq(async_event_destroy(c.unset), 0);
    cr_assert_eq(async_event_destroy(c.set), 0);
    return 0;
}
Test(cancel, what_needs_no_wait_completes_in_a_cancelled_task, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_cancel_rule, NULL, NULL), 0);
}
