/* Process-shared semaphore, event and barrier.
 *
 * The semaphore and the event are a futex word each plus a count of
 * sleepers: the fast paths are one atomic operation, and a wake-up system
 * call is made only when someone sleeps.  The sleeper announces itself
 * (waiters++, sequentially consistent) before it re-reads the word, and the
 * waker changes the word before it reads waiters, so at least one of them
 * sees the other; the kernel's compare in FUTEX_WAIT closes the last gap.
 * Neither holds a lock, so a process dying inside them cannot wedge them.
 *
 * The barrier needs several fields changed together, so it uses a robust
 * mutex and the futex condition of lock.c (a waiter killed asleep in it holds
 * nothing).  Its state is consistent between any two statements but one
 * pair: the party that trips a generation bumps generation, then zeroes
 * count, and one killed between them (or just before, its arrival counted)
 * leaves count at parties.  Whoever takes the mutex from it next sees that
 * and trips the generation again (barrier_lock, repair): a second bump
 * releases nobody wrongly, since nobody can have arrived in between.  (Until
 * round 12 the two stores came the other way round, and a tripper killed
 * between them left its generation's waiters asleep with count 0: they were
 * released only by parties more arrivals, which a fixed group never makes.) */
#include "ipc_internal.h"

/* --- semaphore ------------------------------------------------------------------ */

struct async_ipc_sem {
    async__ipc_hdr_t hdr;
    _Atomic uint32_t count;
    _Atomic uint32_t waiters;
    uint32_t max; /* 0: unbounded */
};

int async_ipc_sem_new(async_ipc_sem_t **out, unsigned value, unsigned max)
{
    if (!out || (max && value > max) || value > INT32_MAX || max > INT32_MAX) return ASYNC_EINVAL;
    async_ipc_sem_t *s;
    int err = async__ipc_map(sizeof *s, IPC_KIND_SEM, (void **)&s);
    if (err) return err;
    atomic_store(&s->count, value);
    s->max = max;
    *out = s;
    return 0;
}

void async_ipc_sem_free(async_ipc_sem_t *sem)
{
    if (sem) async__ipc_unmap(sem);
}

static bool sem_take(async_ipc_sem_t *s)
{
    uint32_t c = atomic_load(&s->count);
    while (c > 0)
        if (atomic_compare_exchange_weak(&s->count, &c, c - 1)) return true;
    return false;
}

int async_ipc_sem_acquire_dl(async_ipc_sem_t *s, int64_t deadline)
{
    for (;;) {
        if (sem_take(s)) return 0;
        atomic_fetch_add(&s->waiters, 1);
        int r = async__futex_wait(&s->count, 0, deadline);
        atomic_fetch_sub(&s->waiters, 1);
        if (r == ASYNC_ETIMEDOUT) return sem_take(s) ? 0 : ASYNC_ETIMEDOUT;
    }
}

int async_ipc_sem_acquire(async_ipc_sem_t *s) { return async_ipc_sem_acquire_dl(s, ASYNC_FOREVER); }
int async_ipc_sem_tryacquire(async_ipc_sem_t *s) { return sem_take(s) ? 0 : ASYNC_EAGAIN; }

int async_ipc_sem_release(async_ipc_sem_t *s)
{
    uint32_t c = atomic_load(&s->count);
    do {
        if ((s->max && c >= s->max) || c >= INT32_MAX) return ASYNC_EINVAL;
    } while (!atomic_compare_exchange_weak(&s->count, &c, c + 1));
    if (atomic_load(&s->waiters)) async__futex_wake(&s->count, 1);
    return 0;
}

unsigned async_ipc_sem_value(const async_ipc_sem_t *s)
{
    return atomic_load(&((async_ipc_sem_t *)s)->count);
}

/* --- event ---------------------------------------------------------------------- */

struct async_ipc_event {
    async__ipc_hdr_t hdr;
    _Atomic uint32_t flag;
    _Atomic uint32_t waiters;
};

int async_ipc_event_new(async_ipc_event_t **out)
{
    if (!out) return ASYNC_EINVAL;
    return async__ipc_map(sizeof **out, IPC_KIND_EVENT, (void **)out);
}

void async_ipc_event_free(async_ipc_event_t *ev)
{
    if (ev) async__ipc_unmap(ev);
}

void async_ipc_event_set(async_ipc_event_t *ev)
{
    atomic_store(&ev->flag, 1);
    if (atomic_load(&ev->waiters)) async__futex_wake(&ev->flag, INT32_MAX);
}

void async_ipc_event_clear(async_ipc_event_t *ev) { atomic_store(&ev->flag, 0); }

bool async_ipc_event_is_set(const async_ipc_event_t *ev)
{
    return atomic_load(&((async_ipc_event_t *)ev)->flag) != 0;
}

int async_ipc_event_wait_dl(async_ipc_event_t *ev, int64_t deadline)
{
    while (!atomic_load(&ev->flag)) {
        atomic_fetch_add(&ev->waiters, 1);
        int r = async__futex_wait(&ev->flag, 0, deadline);
        atomic_fetch_sub(&ev->waiters, 1);
        if (r == ASYNC_ETIMEDOUT) return atomic_load(&ev->flag) ? 0 : ASYNC_ETIMEDOUT;
    }
    return 0;
}

int async_ipc_event_wait(async_ipc_event_t *ev) { return async_ipc_event_wait_dl(ev, ASYNC_FOREVER); }

/* --- barrier -------------------------------------------------------------------- */

struct async_ipc_barrier {
    async__ipc_hdr_t hdr;
    pthread_mutex_t m;
    async__ipc_cond_t c;
    unsigned parties;
    unsigned count;       /* arrived in the current generation */
    uint32_t generation;  /* bumped when a generation is released or reset */
    bool broken;
    bool reset_valid;
    uint32_t reset_gen;   /* the generation the last reset cut short */
};

void (*async__ipc_barrier_hook)(int where);

/* Trips a generation that a dead party left with everyone arrived (see the
 * top).  Called with the mutex held, after taking it from a dead holder. */
static void repair(async_ipc_barrier_t *b)
{
    if (b->count >= b->parties) {
        b->generation++;
        b->count = 0;
        async__ipc_cond_wake(&b->c, INT32_MAX);
    }
}

static void barrier_lock(async_ipc_barrier_t *b)
{
    if (async__ipc_mutex_lock(&b->m, ASYNC_FOREVER, false) == ASYNC_EOWNERDEAD) repair(b);
}

int async_ipc_barrier_new(async_ipc_barrier_t **out, unsigned parties)
{
    if (!out || parties == 0) return ASYNC_EINVAL;
    async_ipc_barrier_t *b;
    int err = async__ipc_map(sizeof *b, IPC_KIND_BARRIER, (void **)&b);
    if (err) return err;
    if ((err = async__ipc_mutex_init(&b->m, PTHREAD_MUTEX_ERRORCHECK))) {
        async__ipc_unmap(b);
        return err;
    }
    b->parties = parties;
    *out = b;
    return 0;
}

void async_ipc_barrier_free(async_ipc_barrier_t *b)
{
    if (b) async__ipc_unmap(b);
}

int async_ipc_barrier_wait_dl(async_ipc_barrier_t *b, unsigned *index, int64_t deadline)
{
    barrier_lock(b);
    if (b->broken) {
        pthread_mutex_unlock(&b->m);
        return ASYNC_ECLOSED;
    }
    unsigned idx = b->count++;
    uint32_t gen = b->generation;
    int err = 0;
    if (b->count == b->parties) {
        /* Generation first: see the top. */
        b->generation++;
        void (*h)(int) = async__ipc_barrier_hook;
        if (h) h(1);
        b->count = 0;
        async__ipc_cond_wake(&b->c, INT32_MAX);
    } else {
        while (gen == b->generation && !b->broken) {
            int r = async__ipc_cond_wait(&b->c, &b->m, deadline);
            if (r == ASYNC_EOWNERDEAD) repair(b);
            if (r == ASYNC_ETIMEDOUT && gen == b->generation && !b->broken) {
                /* Our deadline breaks the barrier for everyone, as Python's does. */
                b->broken = true;
                b->count = 0;
                async__ipc_cond_wake(&b->c, INT32_MAX);
                err = ASYNC_ETIMEDOUT;
                break;
            }
        }
        if (!err && (gen == b->generation || (b->reset_valid && b->reset_gen == gen)))
            err = ASYNC_ECLOSED;
    }
    pthread_mutex_unlock(&b->m);
    if (!err && index) *index = idx;
    return err;
}

int async_ipc_barrier_wait(async_ipc_barrier_t *b, unsigned *index)
{
    return async_ipc_barrier_wait_dl(b, index, ASYNC_FOREVER);
}

void async_ipc_barrier_abort(async_ipc_barrier_t *b)
{
    barrier_lock(b);
    b->broken = true;
    b->count = 0;
    async__ipc_cond_wake(&b->c, INT32_MAX);
    pthread_mutex_unlock(&b->m);
}

void async_ipc_barrier_reset(async_ipc_barrier_t *b)
{
    barrier_lock(b);
    if (b->count > 0) {
        /* Waiters of the generation cut short fail, as in Python. */
        b->reset_valid = true;
        b->reset_gen = b->generation;
        b->generation++;
    }
    b->broken = false;
    b->count = 0;
    async__ipc_cond_wake(&b->c, INT32_MAX);
    pthread_mutex_unlock(&b->m);
}

bool async_ipc_barrier_broken(const async_ipc_barrier_t *b)
{
    async_ipc_barrier_t *mb = (async_ipc_barrier_t *)b;
    barrier_lock(mb);
    bool broken = mb->broken;
    pthread_mutex_unlock(&mb->m);
    return broken;
}
