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
 * The barrier needs several fields changed together, so it serialises on a
 * robust mutex and sleeps on the futex condition of lock.c (a waiter killed
 * asleep in it holds nothing).  Its state is one word, the generation and
 * the arrivals counted in it (or BROKEN), so that every step a party takes
 * under the mutex (an arrival, a trip, a reset, a break) is one store of
 * that word, and a party killed at any instruction leaves the barrier as
 * before its step or as after it: there is nothing to repair, and the lock
 * taken from a dead holder is just marked consistent.  A generation ends by
 * a trip (its waiters return 0) or by a reset, a deadline or an abort (they
 * return ASYNC_ECLOSED); the party that ends it records which in a ring of
 * outcomes, one bit a generation, before its store of the word moves the
 * generation on.  Nobody reads a generation's bit before that store, so a
 * party killed between the two leaves a bit for a generation still
 * running, which whoever really ends it writes again.  Until round 13 a trip
 * and a reset each made two or more stores (generation, count, the reset's
 * generation) and a dead holder's successor repaired what it could: a reset
 * killed after bumping the generation left the arrivals it was cutting short
 * counted in the next one, which then tripped that many parties early, and
 * one killed after recording its generation as reset made a later, normal
 * trip of that generation fail its waiters. */
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
    if (sem) async__ipc_unmap_fixed(sem, sizeof *sem);
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
    if (ev) async__ipc_unmap_fixed(ev, sizeof *ev);
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

#define BROKEN UINT32_MAX /* the count of a broken barrier */
#define OUTCOMES 256      /* generations whose outcome a waiter can still read */

struct async_ipc_barrier {
    async__ipc_hdr_t hdr;
    pthread_mutex_t m;
    async__ipc_cond_t c;
    unsigned parties;
    /* generation << 32 | arrivals in it (BROKEN: broken); stored only
     * under m, one store a step (see the top); read without m by broken. */
    _Atomic uint64_t state;
    /* Bit g % OUTCOMES: generation g ended by a reset, a deadline or an
     * abort (not by a trip); written under m. */
    _Atomic uint64_t failed[OUTCOMES / 64];
};

void (*async__ipc_barrier_hook)(int where);

static void barrier_hook(int where)
{
    void (*h)(int) = async__ipc_barrier_hook;
    if (h) h(where);
}

/* The compiler may not move a store across this: a process killed between
 * two stores has made exactly the ones before (the next holder of the mutex
 * gets it through the kernel, a full barrier, and sees them all). */
static inline void step(void) { atomic_signal_fence(memory_order_seq_cst); }

static uint32_t gen_of(uint64_t w) { return (uint32_t)(w >> 32); }
static uint32_t count_of(uint64_t w) { return (uint32_t)w; }
static uint64_t state_word(uint32_t gen, uint32_t count) { return (uint64_t)gen << 32 | count; }

static bool failed_gen(async_ipc_barrier_t *b, uint32_t gen)
{
    uint64_t w = atomic_load_explicit(&b->failed[gen / 64 % (OUTCOMES / 64)], memory_order_relaxed);
    return (w >> (gen % 64)) & 1;
}

/* Ends generation gen, the current one, as failed or tripped, and starts the
 * next one with count arrivals (0, or BROKEN).  Under the mutex.  The test
 * hook sees `between` between the two stores, and `after` after both,
 * before the wake-up call (lib/ipc/ipc_internal.h numbers them). */
static void end_generation(async_ipc_barrier_t *b, uint32_t gen, bool failed, uint32_t count,
                           int between, int after)
{
    _Atomic uint64_t *f = &b->failed[gen / 64 % (OUTCOMES / 64)];
    uint64_t bit = (uint64_t)1 << (gen % 64), w = atomic_load_explicit(f, memory_order_relaxed);
    atomic_store_explicit(f, failed ? w | bit : w & ~bit, memory_order_relaxed);
    step();
    barrier_hook(between);
    atomic_store_explicit(&b->state, state_word(gen + 1, count), memory_order_relaxed);
    step();
    barrier_hook(after);
    async__ipc_cond_wake(&b->c, INT32_MAX);
}

/* Nothing to repair after a dead holder (see the top). */
static void barrier_lock(async_ipc_barrier_t *b) { async__ipc_mutex_lock_internal(&b->m); }

int async_ipc_barrier_new(async_ipc_barrier_t **out, unsigned parties)
{
    if (!out || parties == 0 || parties > INT32_MAX) return ASYNC_EINVAL;
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
    if (b) async__ipc_unmap_fixed(b, sizeof *b);
}

int async_ipc_barrier_wait_dl(async_ipc_barrier_t *b, unsigned *index, int64_t deadline)
{
    barrier_lock(b);
    uint64_t w = atomic_load_explicit(&b->state, memory_order_relaxed);
    uint32_t gen = gen_of(w), idx = count_of(w);
    if (idx == BROKEN) {
        pthread_mutex_unlock(&b->m);
        return ASYNC_ECLOSED;
    }
    int err = 0;
    if (idx + 1 == b->parties) {
        end_generation(b, gen, false, 0, 2, 1);
    } else {
        atomic_store_explicit(&b->state, state_word(gen, idx + 1), memory_order_relaxed);
        step();
        barrier_hook(7);
        while (gen_of(atomic_load_explicit(&b->state, memory_order_relaxed)) == gen) {
            /* 0, ASYNC_ETIMEDOUT or ASYNC_EOWNERDEAD (nothing to repair). */
            int r = async__ipc_cond_wait(&b->c, &b->m, deadline);
            if (r == ASYNC_ETIMEDOUT &&
                gen_of(atomic_load_explicit(&b->state, memory_order_relaxed)) == gen) {
                /* Our deadline breaks the barrier for everyone, as Python's does. */
                end_generation(b, gen, true, BROKEN, 5, 6);
                err = ASYNC_ETIMEDOUT;
                break;
            }
        }
        if (!err && failed_gen(b, gen)) err = ASYNC_ECLOSED;
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
    uint64_t w = atomic_load_explicit(&b->state, memory_order_relaxed);
    if (count_of(w) != BROKEN) end_generation(b, gen_of(w), true, BROKEN, 5, 6);
    pthread_mutex_unlock(&b->m);
}

void async_ipc_barrier_reset(async_ipc_barrier_t *b)
{
    barrier_lock(b);
    uint64_t w = atomic_load_explicit(&b->state, memory_order_relaxed);
    if (count_of(w) == BROKEN) {
        /* The break ended its generation already: mend, one store. */
        atomic_store_explicit(&b->state, state_word(gen_of(w), 0), memory_order_relaxed);
    } else if (count_of(w) > 0) {
        /* Waiters of the generation cut short fail, as in Python. */
        end_generation(b, gen_of(w), true, 0, 3, 4);
    }
    pthread_mutex_unlock(&b->m);
}

void async__ipc_barrier_peek(const async_ipc_barrier_t *b, uint32_t *gen, uint32_t *count)
{
    uint64_t w = atomic_load(&((async_ipc_barrier_t *)b)->state);
    *gen = gen_of(w);
    *count = count_of(w);
}

bool async_ipc_barrier_broken(const async_ipc_barrier_t *b)
{
    return count_of(atomic_load(&((async_ipc_barrier_t *)b)->state)) == BROKEN;
}
