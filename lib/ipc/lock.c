/* Process-shared locks and condition variables: robust pthread mutexes and
 * futex-word condition variables in shared mappings.  A lock whose holder
 * died is handed to the next locker with ASYNC_EOWNERDEAD after being marked
 * consistent, so one death never wedges the lock for everyone else; a
 * condition's waiter holds nothing while it sleeps, so its death wedges no
 * signal or broadcast (ipc_internal.h says why that rules out
 * pthread_cond_t).  Deadlines use pthread_mutex_clocklock (glibc 2.30+) and
 * FUTEX_WAIT_BITSET on CLOCK_MONOTONIC, the clock of async_now(). */
#include "ipc_internal.h"

int async__ipc_mutex_init(pthread_mutex_t *m, int kind)
{
    pthread_mutexattr_t a;
    int r = pthread_mutexattr_init(&a);
    if (r) return -r;
    if (!(r = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED)) &&
        !(r = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST)) &&
        !(r = pthread_mutexattr_settype(&a, kind)))
        r = pthread_mutex_init(m, &a);
    pthread_mutexattr_destroy(&a);
    return -r;
}

static int map_lock_result(pthread_mutex_t *m, int r)
{
    switch (r) {
    case 0: return 0;
    case EOWNERDEAD:
        /* We hold it now; make it usable again before telling the caller. */
        pthread_mutex_consistent(m);
        return ASYNC_EOWNERDEAD;
    case EBUSY: return ASYNC_EAGAIN;
    case EDEADLK: return ASYNC_EALREADY;
    case ETIMEDOUT: return ASYNC_ETIMEDOUT;
    default: return -r;
    }
}

int async__ipc_mutex_lock(pthread_mutex_t *m, int64_t deadline, bool try_only)
{
    int r;
    if (try_only) {
        r = pthread_mutex_trylock(m);
    } else if (deadline == ASYNC_FOREVER) {
        r = pthread_mutex_lock(m);
    } else {
        struct timespec ts = async__ipc_ts(deadline);
        r = pthread_mutex_clocklock(m, CLOCK_MONOTONIC, &ts);
    }
    return map_lock_result(m, r);
}

void async__ipc_mutex_lock_internal(pthread_mutex_t *m)
{
    int r = async__ipc_mutex_lock(m, ASYNC_FOREVER, false);
    (void)r; /* 0 or a repaired EOWNERDEAD: internal state is never torn */
}

/* The sequence is read under m, before m is released: a wake made after
 * the caller's last look at its predicate (which needs m, or comes later)
 * bumps it, so the futex compare sees the change and the sleep does not
 * start, or the wake finds the sleeper.  The waker bumps seq before it
 * reads waiters, the waiter counts itself before it sleeps, both
 * sequentially consistent: a waker that reads no waiter bumped seq before
 * the waiter's futex compare, which then fails.  No wake-up is lost; some are
 * spurious, as the contract allows. */
int async__ipc_cond_wait(async__ipc_cond_t *c, pthread_mutex_t *m, int64_t deadline)
{
    uint32_t seq = atomic_load(&c->seq);
    atomic_fetch_add(&c->waiters, 1);
    int r = pthread_mutex_unlock(m);
    if (r) {
        atomic_fetch_sub(&c->waiters, 1);
        return -r;
    }
    int err = async__futex_wait(&c->seq, seq, deadline);
    atomic_fetch_sub(&c->waiters, 1);
    int lerr = async__ipc_mutex_lock(m, ASYNC_FOREVER, false);
    return lerr ? lerr : err;
}

void async__ipc_cond_wake(async__ipc_cond_t *c, int n)
{
    atomic_fetch_add(&c->seq, 1);
    if (atomic_load(&c->waiters)) async__futex_wake(&c->seq, n);
}

/* --- lock and rlock ----------------------------------------------------------- */

struct async_ipc_lock {
    async__ipc_hdr_t hdr;
    pthread_mutex_t m;
};

struct async_ipc_rlock {
    async__ipc_hdr_t hdr;
    pthread_mutex_t m;
};

static int lock_new(void **out, uint32_t kind, size_t size, size_t off, int type)
{
    if (!out) return ASYNC_EINVAL;
    void *obj;
    int err = async__ipc_map(size, kind, &obj);
    if (err) return err;
    err = async__ipc_mutex_init((pthread_mutex_t *)((char *)obj + off), type);
    if (err) {
        async__ipc_unmap(obj);
        return err;
    }
    *out = obj;
    return 0;
}

int async_ipc_lock_new(async_ipc_lock_t **out)
{
    return lock_new((void **)out, IPC_KIND_LOCK, sizeof **out, offsetof(async_ipc_lock_t, m),
                    PTHREAD_MUTEX_ERRORCHECK);
}

void async_ipc_lock_free(async_ipc_lock_t *lock)
{
    if (lock) async__ipc_unmap_fixed(lock, sizeof *lock);
}

int async_ipc_lock_lock(async_ipc_lock_t *lock)
{
    return async__ipc_mutex_lock(&lock->m, ASYNC_FOREVER, false);
}

int async_ipc_lock_lock_dl(async_ipc_lock_t *lock, int64_t deadline)
{
    return async__ipc_mutex_lock(&lock->m, deadline, false);
}

int async_ipc_lock_trylock(async_ipc_lock_t *lock)
{
    return async__ipc_mutex_lock(&lock->m, 0, true);
}

int async_ipc_lock_unlock(async_ipc_lock_t *lock)
{
    return -pthread_mutex_unlock(&lock->m);
}

int async_ipc_rlock_new(async_ipc_rlock_t **out)
{
    return lock_new((void **)out, IPC_KIND_RLOCK, sizeof **out, offsetof(async_ipc_rlock_t, m),
                    PTHREAD_MUTEX_RECURSIVE);
}

void async_ipc_rlock_free(async_ipc_rlock_t *lock)
{
    if (lock) async__ipc_unmap_fixed(lock, sizeof *lock);
}

int async_ipc_rlock_lock(async_ipc_rlock_t *lock)
{
    return async__ipc_mutex_lock(&lock->m, ASYNC_FOREVER, false);
}

int async_ipc_rlock_lock_dl(async_ipc_rlock_t *lock, int64_t deadline)
{
    return async__ipc_mutex_lock(&lock->m, deadline, false);
}

int async_ipc_rlock_trylock(async_ipc_rlock_t *lock)
{
    return async__ipc_mutex_lock(&lock->m, 0, true);
}

int async_ipc_rlock_unlock(async_ipc_rlock_t *lock)
{
    return -pthread_mutex_unlock(&lock->m);
}

/* --- condition -------------------------------------------------------------------- */

struct async_ipc_cond {
    async__ipc_hdr_t hdr;
    async__ipc_cond_t c; /* zero-filled by the mapping: ready */
};

int async_ipc_cond_new(async_ipc_cond_t **out)
{
    if (!out) return ASYNC_EINVAL;
    return async__ipc_map(sizeof **out, IPC_KIND_COND, (void **)out);
}

void async_ipc_cond_free(async_ipc_cond_t *cond)
{
    if (cond) async__ipc_unmap_fixed(cond, sizeof *cond);
}

int async_ipc_cond_wait(async_ipc_cond_t *cond, async_ipc_lock_t *lock)
{
    return async__ipc_cond_wait(&cond->c, &lock->m, ASYNC_FOREVER);
}

int async_ipc_cond_wait_dl(async_ipc_cond_t *cond, async_ipc_lock_t *lock, int64_t deadline)
{
    return async__ipc_cond_wait(&cond->c, &lock->m, deadline);
}

void async_ipc_cond_signal(async_ipc_cond_t *cond) { async__ipc_cond_wake(&cond->c, 1); }
void async_ipc_cond_broadcast(async_ipc_cond_t *cond) { async__ipc_cond_wake(&cond->c, INT32_MAX); }
