/* Process-shared synchronisation: lock (robust after a SIGKILLed holder),
 * recursive lock, semaphore and bounded semaphore, event, condition, barrier
 * with a deadline, and shared values and arrays with and without their lock. */
#include <criterion/criterion.h>
#include <signal.h>
#include <unistd.h>
#include "async.h"
#include "async/ipc.h"
#include "async/process.h"
#include "support/proc.h"

/* ThreadSanitizer models a single process: it cannot follow a mutex that
 * another process locked, and it reports deliberate misuse (unlocking a lock
 * not held) instead of letting the call return its error.  Those tests are
 * skipped under it (CI runs them plain and under ASan/UBSan). */
#if defined(__SANITIZE_THREAD__)
#define SKIP_UNDER_TSAN() cr_skip_test("process-shared mutexes are outside ThreadSanitizer's model")
#else
#define SKIP_UNDER_TSAN() ((void)0)
#endif

/* Generous: it only turns a child that never ends into a failure. */
#define CHILD_NS ASYNC_SEC(10)

/* --- lock ------------------------------------------------------------------- */

static int trylock_in_child(void *arg)
{
    return async_ipc_lock_trylock(arg) == ASYNC_EAGAIN ? 0 : 1;
}

Test(ipc_sync, lock_basics_and_errors, .timeout = 10)
{
    SKIP_UNDER_TSAN();
    async_ipc_lock_t *l;
    cr_assert_eq(async_ipc_lock_new(&l), 0);
    cr_assert_eq(async_ipc_lock_new(NULL), ASYNC_EINVAL);
    cr_assert_eq(async_ipc_lock_unlock(l), ASYNC_EPERM, "not held");
    cr_assert_eq(async_ipc_lock_lock(l), 0);
    cr_assert_eq(async_ipc_lock_lock(l), ASYNC_EALREADY);
    cr_assert_eq(async_ipc_lock_trylock(l), ASYNC_EALREADY);
    async_process_t *p;
    cr_assert_eq(async_process_spawn(&p, trylock_in_child, l), 0);
    cr_assert_eq(test_proc_code(p, CHILD_NS), 0, "another process finds it held");
    cr_assert_eq(async_ipc_lock_unlock(l), 0);
    cr_assert_eq(async_ipc_lock_trylock(l), 0);
    cr_assert_eq(async_ipc_lock_unlock(l), 0);
    async_ipc_lock_free(l);
    async_ipc_lock_free(NULL);
}

typedef struct held {
    async_ipc_lock_t *lock;
    async_ipc_event_t *locked;
} held_t;

static int lock_and_hang(void *arg)
{
    held_t *h = arg;
    if (async_ipc_lock_lock(h->lock)) return 1;
    async_ipc_event_set(h->locked);
    for (;;) pause();
}

Test(ipc_sync, lock_deadline_and_robust_after_sigkill, .timeout = 10)
{
    SKIP_UNDER_TSAN();
    held_t h;
    cr_assert_eq(async_ipc_lock_new(&h.lock), 0);
    cr_assert_eq(async_ipc_event_new(&h.locked), 0);
    async_process_t *p;
    cr_assert_eq(async_process_spawn(&p, lock_and_hang, &h), 0);
    cr_assert_eq(async_ipc_event_wait_dl(h.locked, async_deadline_after(ASYNC_SEC(5))), 0);
    int64_t t0 = async_now();
    cr_assert_eq(async_ipc_lock_lock_dl(h.lock, t0 + ASYNC_MSEC(30)), ASYNC_ETIMEDOUT);
    cr_assert_geq(async_now() - t0, ASYNC_MSEC(30));
    test_proc_kill(p, CHILD_NS);
    /* The holder died: we get the lock, told so, instead of hanging. */
    cr_assert_eq(async_ipc_lock_lock_dl(h.lock, async_deadline_after(ASYNC_SEC(5))),
                 ASYNC_EOWNERDEAD);
    cr_assert_eq(async_ipc_lock_unlock(h.lock), 0);
    cr_assert_eq(async_ipc_lock_lock(h.lock), 0, "consistent again");
    cr_assert_eq(async_ipc_lock_unlock(h.lock), 0);
    async_ipc_event_free(h.locked);
    async_ipc_lock_free(h.lock);
}

Test(ipc_sync, rlock_recursion, .timeout = 10)
{
    SKIP_UNDER_TSAN();
    async_ipc_rlock_t *r;
    cr_assert_eq(async_ipc_rlock_new(&r), 0);
    cr_assert_eq(async_ipc_rlock_unlock(r), ASYNC_EPERM);
    cr_assert_eq(async_ipc_rlock_lock(r), 0);
    cr_assert_eq(async_ipc_rlock_lock(r), 0);
    cr_assert_eq(async_ipc_rlock_trylock(r), 0);
    cr_assert_eq(async_ipc_rlock_lock_dl(r, 0), 0);
    for (int i = 0; i < 4; i++) cr_assert_eq(async_ipc_rlock_unlock(r), 0);
    cr_assert_eq(async_ipc_rlock_unlock(r), ASYNC_EPERM);
    async_ipc_rlock_free(r);
}

/* --- semaphore ---------------------------------------------------------------- */

static int release_after_30ms(void *arg)
{
    usleep(30000);
    return async_ipc_sem_release(arg) ? 1 : 0;
}

Test(ipc_sync, semaphore, .timeout = 10)
{
    async_ipc_sem_t *s;
    cr_assert_eq(async_ipc_sem_new(&s, 3, 2), ASYNC_EINVAL);
    cr_assert_eq(async_ipc_sem_new(&s, 2, 0), 0);
    cr_assert_eq(async_ipc_sem_value(s), 2);
    cr_assert_eq(async_ipc_sem_acquire(s), 0);
    cr_assert_eq(async_ipc_sem_tryacquire(s), 0);
    cr_assert_eq(async_ipc_sem_tryacquire(s), ASYNC_EAGAIN);
    int64_t t0 = async_now();
    cr_assert_eq(async_ipc_sem_acquire_dl(s, t0 + ASYNC_MSEC(20)), ASYNC_ETIMEDOUT);
    cr_assert_geq(async_now() - t0, ASYNC_MSEC(20));
    async_process_t *p;
    cr_assert_eq(async_process_spawn(&p, release_after_30ms, s), 0);
    cr_assert_eq(async_ipc_sem_acquire_dl(s, async_deadline_after(ASYNC_SEC(5))), 0,
                 "woken by another process's release");
    cr_assert_eq(test_proc_code(p, CHILD_NS), 0);
    for (int i = 0; i < 5; i++) cr_assert_eq(async_ipc_sem_release(s), 0, "unbounded");
    cr_assert_eq(async_ipc_sem_value(s), 5);
    async_ipc_sem_free(s);

    cr_assert_eq(async_ipc_sem_new(&s, 1, 1), 0);
    cr_assert_eq(async_ipc_sem_release(s), ASYNC_EINVAL, "bounded");
    cr_assert_eq(async_ipc_sem_acquire(s), 0);
    cr_assert_eq(async_ipc_sem_release(s), 0);
    async_ipc_sem_free(s);
}

/* --- event -------------------------------------------------------------------- */

static int set_after_30ms(void *arg)
{
    usleep(30000);
    async_ipc_event_set(arg);
    return 0;
}

Test(ipc_sync, event, .timeout = 10)
{
    async_ipc_event_t *e;
    cr_assert_eq(async_ipc_event_new(&e), 0);
    cr_assert_not(async_ipc_event_is_set(e));
    int64_t t0 = async_now();
    cr_assert_eq(async_ipc_event_wait_dl(e, t0 + ASYNC_MSEC(20)), ASYNC_ETIMEDOUT);
    cr_assert_geq(async_now() - t0, ASYNC_MSEC(20));
    async_process_t *p;
    cr_assert_eq(async_process_spawn(&p, set_after_30ms, e), 0);
    cr_assert_eq(async_ipc_event_wait(e), 0);
    cr_assert(async_ipc_event_is_set(e));
    cr_assert_eq(async_ipc_event_wait_dl(e, 0), 0, "set: returns at once");
    async_ipc_event_clear(e);
    cr_assert_not(async_ipc_event_is_set(e));
    cr_assert_eq(test_proc_code(p, CHILD_NS), 0);
    async_ipc_event_free(e);
}

/* --- condition ---------------------------------------------------------------- */

typedef struct cv {
    async_ipc_lock_t *lock;
    async_ipc_cond_t *cond;
    async_shared_value_t *ready;
} cv_t;

static int signal_ready(void *arg)
{
    cv_t *c = arg;
    usleep(30000);
    async_ipc_lock_lock(c->lock);
    *(int *)async_shared_value_ptr(c->ready) = 1;
    async_ipc_cond_broadcast(c->cond);
    async_ipc_lock_unlock(c->lock);
    return 0;
}

Test(ipc_sync, condition_across_processes, .timeout = 10)
{
    SKIP_UNDER_TSAN();
    cv_t c;
    cr_assert_eq(async_ipc_lock_new(&c.lock), 0);
    cr_assert_eq(async_ipc_cond_new(&c.cond), 0);
    cr_assert_eq(async_shared_value_new(&c.ready, sizeof(int), false), 0);
    cr_assert_eq(async_ipc_cond_wait_dl(c.cond, c.lock, async_deadline_after(ASYNC_MSEC(10))),
                 ASYNC_EPERM, "the lock must be held");
    cr_assert_eq(async_ipc_lock_lock(c.lock), 0);
    int64_t t0 = async_now();
    cr_assert_eq(async_ipc_cond_wait_dl(c.cond, c.lock, t0 + ASYNC_MSEC(20)), ASYNC_ETIMEDOUT);
    cr_assert_geq(async_now() - t0, ASYNC_MSEC(20));
    cr_assert_eq(async_ipc_lock_lock(c.lock), ASYNC_EALREADY, "held again after the timeout");
    async_process_t *p;
    cr_assert_eq(async_process_spawn(&p, signal_ready, &c), 0);
    while (!*(int *)async_shared_value_ptr(c.ready))
        cr_assert_eq(async_ipc_cond_wait_dl(c.cond, c.lock, async_deadline_after(ASYNC_SEC(5))), 0);
    cr_assert_eq(async_ipc_lock_unlock(c.lock), 0);
    cr_assert_eq(test_proc_code(p, CHILD_NS), 0);
    async_ipc_cond_signal(c.cond); /* no waiter: harmless */
    async_shared_value_free(c.ready);
    async_ipc_cond_free(c.cond);
    async_ipc_lock_free(c.lock);
}

/* --- barrier ------------------------------------------------------------------ */

typedef struct bar {
    async_ipc_barrier_t *b;
    async_shared_array_t *idx;
    unsigned id;
} bar_t;

static int barrier_party(void *arg)
{
    bar_t *b = arg;
    unsigned index;
    int err = async_ipc_barrier_wait_dl(b->b, &index, async_deadline_after(ASYNC_SEC(5)));
    if (err) return 1;
    async_shared_array_set(b->idx, b->id, &index);
    return 0;
}

Test(ipc_sync, barrier_releases_all_parties, .timeout = 10)
{
    bar_t b = {0};
    cr_assert_eq(async_ipc_barrier_new(&b.b, 0), ASYNC_EINVAL);
    cr_assert_eq(async_ipc_barrier_new(&b.b, 4), 0);
    cr_assert_eq(async_shared_array_new(&b.idx, sizeof(unsigned), 4, false), 0);
    async_process_t *p[3];
    for (unsigned i = 0; i < 3; i++) {
        b.id = i;
        cr_assert_eq(async_process_spawn(&p[i], barrier_party, &b), 0);
    }
    unsigned index;
    cr_assert_eq(async_ipc_barrier_wait(b.b, &index), 0);
    async_shared_array_set(b.idx, 3, &index);
    for (unsigned i = 0; i < 3; i++) cr_assert_eq(test_proc_code(p[i], CHILD_NS), 0);
    unsigned seen = 0;
    for (unsigned i = 0; i < 4; i++) {
        unsigned v;
        async_shared_array_get(b.idx, i, &v);
        cr_assert_lt(v, 4);
        seen |= 1u << v;
    }
    cr_assert_eq(seen, 0xf, "each arrival index once");
    /* The barrier is reusable. */
    for (unsigned i = 0; i < 3; i++) cr_assert_eq(async_process_spawn(&p[i], barrier_party, &b), 0);
    cr_assert_eq(async_ipc_barrier_wait(b.b, NULL), 0);
    for (unsigned i = 0; i < 3; i++) cr_assert_eq(test_proc_code(p[i], CHILD_NS), 0);
    async_shared_array_free(b.idx);
    async_ipc_barrier_free(b.b);
}

static int barrier_expect_broken(void *arg)
{
    bar_t *b = arg;
    int err = async_ipc_barrier_wait_dl(b->b, NULL, async_deadline_after(ASYNC_SEC(5)));
    return err == ASYNC_ECLOSED ? 0 : 1;
}

Test(ipc_sync, barrier_deadline_breaks_it, .timeout = 10)
{
    bar_t b = {0};
    cr_assert_eq(async_ipc_barrier_new(&b.b, 3), 0);
    async_process_t *p;
    cr_assert_eq(async_process_spawn(&p, barrier_expect_broken, &b), 0);
    usleep(20000);
    /* Only two of three arrive: the deadline passes and breaks the barrier. */
    int64_t t0 = async_now();
    cr_assert_eq(async_ipc_barrier_wait_dl(b.b, NULL, t0 + ASYNC_MSEC(50)), ASYNC_ETIMEDOUT);
    cr_assert_geq(async_now() - t0, ASYNC_MSEC(50));
    cr_assert_eq(test_proc_code(p, CHILD_NS), 0, "the other waiter saw the barrier broken");
    cr_assert(async_ipc_barrier_broken(b.b));
    cr_assert_eq(async_ipc_barrier_wait_dl(b.b, NULL, 0), ASYNC_ECLOSED);
    async_ipc_barrier_reset(b.b);
    cr_assert_not(async_ipc_barrier_broken(b.b));
    cr_assert_eq(async_ipc_barrier_wait_dl(b.b, NULL, async_deadline_after(ASYNC_MSEC(10))),
                 ASYNC_ETIMEDOUT);
    async_ipc_barrier_reset(b.b);
    async_ipc_barrier_abort(b.b);
    cr_assert_eq(async_ipc_barrier_wait(b.b, NULL), ASYNC_ECLOSED);
    async_ipc_barrier_free(b.b);
}

/* --- shared values and arrays ------------------------------------------------- */

#define INCS 20000

static int add_locked(void *arg)
{
    async_shared_value_t *v = arg;
    for (int i = 0; i < INCS; i++) {
        if (async_shared_value_lock(v)) return 1;
        (*(long *)async_shared_value_ptr(v))++;
        async_shared_value_unlock(v);
    }
    return 0;
}

Test(ipc_sync, shared_value_locked_increments_are_exact, .timeout = 20)
{
    async_shared_value_t *v;
    cr_assert_eq(async_shared_value_new(&v, 0, true), ASYNC_EINVAL);
    cr_assert_eq(async_shared_value_new(&v, sizeof(long), true), 0);
    cr_assert_eq(async_shared_value_size(v), sizeof(long));
    async_process_t *p[4];
    for (int i = 0; i < 4; i++) cr_assert_eq(async_process_spawn(&p[i], add_locked, v), 0);
    for (int i = 0; i < 4; i++) cr_assert_eq(test_proc_code(p[i], CHILD_NS), 0);
    long total;
    cr_assert_eq(async_shared_value_get(v, &total), 0);
    cr_assert_eq(total, 4L * INCS);
    long zero = 0;
    cr_assert_eq(async_shared_value_set(v, &zero), 0);
    cr_assert_eq(*(long *)async_shared_value_ptr(v), 0);
    async_shared_value_free(v);
}

Test(ipc_sync, shared_array_and_unlocked_value, .timeout = 10)
{
    SKIP_UNDER_TSAN();
    async_shared_value_t *v;
    cr_assert_eq(async_shared_value_new(&v, 16, false), 0);
    cr_assert_eq(async_shared_value_lock(v), ASYNC_ENOTSUP);
    cr_assert_eq(async_shared_value_unlock(v), ASYNC_ENOTSUP);
    char in[16] = "0123456789abcde", out[16];
    cr_assert_eq(async_shared_value_set(v, in), 0);
    cr_assert_eq(async_shared_value_get(v, out), 0);
    cr_assert_eq(memcmp(in, out, 16), 0);
    async_shared_value_free(v);

    async_shared_array_t *a;
    cr_assert_eq(async_shared_array_new(&a, 8, SIZE_MAX / 4, true), ASYNC_EINVAL);
    cr_assert_eq(async_shared_array_new(&a, 0, 4, true), ASYNC_EINVAL);
    cr_assert_eq(async_shared_array_new(&a, sizeof(double), 10, true), 0);
    cr_assert_eq(async_shared_array_len(a), 10);
    cr_assert_eq((uintptr_t)async_shared_array_ptr(a) % 64, 0, "aligned");
    double d = 2.5, e;
    cr_assert_eq(async_shared_array_set(a, 9, &d), 0);
    cr_assert_eq(async_shared_array_get(a, 9, &e), 0);
    cr_assert_eq(e, 2.5);
    cr_assert_eq(async_shared_array_set(a, 10, &d), ASYNC_EINVAL);
    cr_assert_eq(async_shared_array_get(a, 10, &e), ASYNC_EINVAL);
    cr_assert_eq(async_shared_array_lock(a), 0);
    cr_assert_eq(async_shared_array_unlock(a), 0);
    cr_assert_eq(async_shared_array_unlock(a), ASYNC_EPERM);
    async_shared_array_free(a);
}

typedef struct held_value {
    async_shared_value_t *value;
    async_shared_array_t *array;
    async_ipc_event_t *locked, *release;
} held_value_t;

/* Holds both locks, as a user making a compound update would, until told. */
static int hold_value_locks(void *arg)
{
    held_value_t *h = arg;
    if (async_shared_value_lock(h->value) || async_shared_array_lock(h->array)) return 1;
    async_ipc_event_set(h->locked);
    if (async_ipc_event_wait_dl(h->release, async_deadline_after(ASYNC_SEC(10)))) return 2;
    if (async_shared_array_unlock(h->array) || async_shared_value_unlock(h->value)) return 3;
    return 0;
}

/* A value's or array's lock held by another process: the _dl forms give up
 * at their deadline with nothing copied; once it is free, even a deadline
 * that has passed takes it.  The plain forms would wait for ever. */
Test(ipc_sync, shared_value_and_array_deadlines, .timeout = 20)
{
    SKIP_UNDER_TSAN();
    held_value_t h;
    cr_assert_eq(async_shared_value_new(&h.value, sizeof(int), true), 0);
    cr_assert_eq(async_shared_array_new(&h.array, sizeof(int), 4, true), 0);
    cr_assert_eq(async_ipc_event_new(&h.locked), 0);
    cr_assert_eq(async_ipc_event_new(&h.release), 0);
    int one = 1, got = -1;
    cr_assert_eq(async_shared_value_set(h.value, &one), 0);
    cr_assert_eq(async_shared_array_set(h.array, 3, &one), 0);
    async_process_t *p;
    cr_assert_eq(async_process_spawn(&p, hold_value_locks, &h), 0);
    cr_assert_eq(async_ipc_event_wait_dl(h.locked, async_deadline_after(ASYNC_SEC(5))), 0);

    int64_t t0 = async_now();
    cr_assert_eq(async_shared_value_lock_dl(h.value, t0 + ASYNC_MSEC(20)), ASYNC_ETIMEDOUT);
    cr_assert_geq(async_now() - t0, ASYNC_MSEC(20));
    int two = 2;
    cr_assert_eq(async_shared_value_get_dl(h.value, &got, 0), ASYNC_ETIMEDOUT);
    cr_assert_eq(got, -1, "nothing copied");
    cr_assert_eq(async_shared_value_set_dl(h.value, &two, async_now()), ASYNC_ETIMEDOUT);
    cr_assert_eq(async_shared_array_lock_dl(h.array, INT64_MIN), ASYNC_ETIMEDOUT);
    cr_assert_eq(async_shared_array_get_dl(h.array, 3, &got, async_deadline_after(ASYNC_MSEC(5))),
                 ASYNC_ETIMEDOUT);
    cr_assert_eq(got, -1, "nothing copied");
    cr_assert_eq(async_shared_array_set_dl(h.array, 3, &two, 0), ASYNC_ETIMEDOUT);
    cr_assert_eq(async_shared_array_get_dl(h.array, 4, &got, 0), ASYNC_EINVAL, "index first");

    async_ipc_event_set(h.release);
    cr_assert_eq(test_proc_code(p, CHILD_NS), 0);
    cr_assert_eq(*(int *)async_shared_value_ptr(h.value), 1, "no timed-out set wrote");
    cr_assert_eq(((int *)async_shared_array_ptr(h.array))[0], 0);
    cr_assert_eq(((int *)async_shared_array_ptr(h.array))[3], 1);
    cr_assert_eq(async_shared_value_set_dl(h.value, &two, 0), 0, "free: a past deadline takes it");
    cr_assert_eq(async_shared_value_get_dl(h.value, &got, INT64_MIN), 0);
    cr_assert_eq(got, 2);
    cr_assert_eq(async_shared_array_set_dl(h.array, 3, &two, 0), 0);
    cr_assert_eq(async_shared_array_get_dl(h.array, 3, &got, 0), 0);
    cr_assert_eq(got, 2);
    cr_assert_eq(async_shared_value_lock_dl(h.value, 0), 0);
    cr_assert_eq(async_shared_value_lock_dl(h.value, 0), ASYNC_EALREADY);
    cr_assert_eq(async_shared_value_get_dl(h.value, &got, 0), ASYNC_EALREADY, "not recursive");
    cr_assert_eq(async_shared_value_unlock(h.value), 0);
    cr_assert_eq(async_shared_array_lock_dl(h.array, async_deadline_after(ASYNC_SEC(1))), 0);
    cr_assert_eq(async_shared_array_set_dl(h.array, 0, &two, ASYNC_FOREVER), ASYNC_EALREADY);
    cr_assert_eq(async_shared_array_unlock(h.array), 0);
    cr_assert_eq(async_shared_value_get(h.value, NULL), ASYNC_EINVAL);
    cr_assert_eq(async_shared_array_set(h.array, 0, NULL), ASYNC_EINVAL);
    async_ipc_event_free(h.release);
    async_ipc_event_free(h.locked);
    async_shared_array_free(h.array);
    async_shared_value_free(h.value);

    async_shared_value_t *bare;
    cr_assert_eq(async_shared_value_new(&bare, sizeof(int), false), 0);
    cr_assert_eq(async_shared_value_lock_dl(bare, 0), ASYNC_ENOTSUP);
    cr_assert_eq(async_shared_value_set_dl(bare, &two, 0), 0, "no lock: nothing to wait for");
    cr_assert_eq(async_shared_value_get_dl(bare, &got, 0), 0);
    cr_assert_eq(got, 2);
    async_shared_value_free(bare);
}

typedef struct held2 {
    async_ipc_rlock_t *rlock;
    async_shared_value_t *value;
    async_ipc_event_t *locked;
} held2_t;

static int take_both_and_die(void *arg)
{
    held2_t *h = arg;
    if (async_ipc_rlock_lock(h->rlock) || async_ipc_rlock_lock(h->rlock)) return 1;
    if (async_shared_value_lock(h->value)) return 1;
    *(int *)async_shared_value_ptr(h->value) = 99; /* a half-done update */
    async_ipc_event_set(h->locked);
    for (int i = 0; i < 1000; i++) sleep(1);
    return 0;
}

Test(ipc_sync, rlock_and_value_lock_are_robust_too, .timeout = 10)
{
    SKIP_UNDER_TSAN();
    held2_t h;
    cr_assert_eq(async_ipc_rlock_new(&h.rlock), 0);
    cr_assert_eq(async_shared_value_new(&h.value, sizeof(int), true), 0);
    cr_assert_eq(async_ipc_event_new(&h.locked), 0);
    async_process_t *p;
    cr_assert_eq(async_process_spawn(&p, take_both_and_die, &h), 0);
    cr_assert_eq(async_ipc_event_wait_dl(h.locked, async_deadline_after(ASYNC_SEC(5))), 0);
    cr_assert_eq(async_ipc_rlock_trylock(h.rlock), ASYNC_EAGAIN);
    test_proc_kill(p, CHILD_NS);
    cr_assert_eq(async_ipc_rlock_lock_dl(h.rlock, async_deadline_after(ASYNC_SEC(5))), ASYNC_EOWNERDEAD);
    cr_assert_eq(async_ipc_rlock_unlock(h.rlock), 0);
    int v;
    cr_assert_eq(async_shared_value_get(h.value, &v), ASYNC_EOWNERDEAD, "the copy happens, and we are told");
    cr_assert_eq(v, 99);
    cr_assert_eq(async_shared_value_get(h.value, &v), 0, "consistent again");
    async_ipc_event_free(h.locked);
    async_shared_value_free(h.value);
    async_ipc_rlock_free(h.rlock);
}
