/* The process-shared queue: a bounded multi-producer multi-consumer ring of
 * byte messages in one shared mapping, which survives the death of any
 * producer or consumer at any instruction.
 *
 * Design.  A two-lock ring (Michael and Scott's two-lock queue, on an
 * array): head counts puts committed, tail gets committed, both from 0;
 * producers serialise on one robust process-shared mutex, consumers on
 * another, so a producer and a consumer never wait for each other.  Every
 * put and get changes the ring's state with a single store made while
 * holding its side's mutex, its commit: a put copies the message into the
 * free slot at head (free because head - tail < capacity, and tail only
 * grows) and then advances head; a get copies the message at tail (full
 * because tail < head) out and then advances tail.  Everything written
 * before the commit is invisible to others (it lies outside [tail, head)),
 * so a process killed anywhere in the critical section leaves the ring as it
 * was before its operation (or after it, once the commit is stored): never
 * torn.  The kernel's robust-futex list hands the mutex of a dead holder to
 * the next locker with EOWNERDEAD; the ring needs no repair, so the lock is
 * just marked consistent.  What a death
 * can lose is only the message in the dead process's hands: a producer's
 * message not yet committed, or a consumer's message committed as got but
 * not yet used.  (The previous design, Vyukov's lock-free ring, claimed a
 * slot with one atomic and released it with another, and a process killed
 * between the two wedged every later put and get at that slot forever.)
 *
 * Checks without the lock.  head, tail and the closed flag are atomics
 * stored under a mutex and read without it (each side reads the other's
 * counter that way even under its own lock), so a get on an empty queue, or
 * a put on a full one, answers without touching the mutex: waiting sides
 * that poll do not contend with the side making progress.
 *
 * Sleeping.  A side that finds the ring full (or empty) spins briefly, then
 * raises its side's need_wake flag and sleeps on a futex event counter.  The
 * other side commits and, only if the flag is up, takes it down (atomic
 * exchange), bumps the counter and wakes every sleeper: so when both sides are
 * busy no system call is made at all.  The sleeper raises the flag before its
 * last look at head and tail, and the waker commits before reading the flag,
 * all four accesses sequentially consistent, so at least one of them sees the
 * other (Dekker; no separate fence, which ThreadSanitizer cannot model).  The
 * futex compare of the counter value read before that last look catches a
 * wake-up that comes before the sleep.  Tasks and user event loops wait on an
 * eventfd instead, armed the same way (`armed`, while the `watchers` count is
 * non-zero).  A process killed while sleeping or watching leaves at worst a
 * flag or count that causes one spurious wake-up later.  A process killed
 * between its commit and its wake-up call leaves the sleepers to find the
 * change themselves: every sleep, on the futex or on the eventfd, lasts at
 * most ASYNC__IPC_RECHECK_NS before the sleeper looks again. */
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include "ipc_internal.h"

#define SPINS 100

void (*async__ipc_queue_hook)(int where);

typedef struct slot {
    uint32_t len;
    uint32_t pad_;
    unsigned char data[];
} slot_t;

/* One direction of waiting: getters wait for items, putters for room. */
typedef struct side {
    _Alignas(64) _Atomic uint32_t ev;  /* futex word, bumped to wake sleepers */
    _Atomic uint32_t need_wake;        /* a sleeper is in futex_wait or about to be */
    _Atomic uint32_t watchers;         /* waiting on the eventfd */
    _Atomic uint32_t armed;            /* a watcher wants the eventfd signalled */
} side_t;

struct async_ipc_queue {
    /* The first page: set at creation, then read-only (see the top). */
    async__ipc_hdr_t hdr;
    size_t capacity, max_msg, stride;
    unsigned flags;
    int get_efd, put_efd; /* the sides' eventfds */
    /* The rest: written by every process. */
    _Alignas(ASYNC__IPC_PAGE) pthread_mutex_t put_mu;
    _Atomic uint64_t head;     /* puts committed; written only under put_mu */
    _Atomic uint32_t closed;   /* written only under put_mu, so puts and close are ordered */
    _Alignas(64) pthread_mutex_t get_mu;
    _Atomic uint64_t tail;     /* gets committed; written only under get_mu */
    side_t get, put;
    _Alignas(64) _Atomic uint64_t done; /* task_done calls; unfinished = head - done */
    _Atomic uint32_t join_ev;
    _Atomic uint32_t join_sleepers;
    _Alignas(64) unsigned char slots[];
};

static inline slot_t *slot_at(async_ipc_queue_t *q, uint64_t pos)
{
    return (slot_t *)(q->slots + (size_t)(pos % q->capacity) * q->stride);
}

static inline void hook(int where)
{
    void (*h)(int) = async__ipc_queue_hook;
    if (h) h(where);
}

int async_ipc_queue_new(async_ipc_queue_t **out, size_t capacity, size_t max_msg, unsigned flags)
{
    if (!out || capacity == 0 || max_msg == 0 || max_msg > ((size_t)1 << 30) ||
        (flags & ~ASYNC_IPC_QUEUE_JOINABLE))
        return ASYNC_EINVAL;
    size_t stride = (sizeof(slot_t) + max_msg + 7) & ~(size_t)7;
    if (capacity > (SIZE_MAX / 2 - sizeof(async_ipc_queue_t)) / stride) return ASYNC_EINVAL;
    async_ipc_queue_t *q;
    int err = async__ipc_map(sizeof *q + capacity * stride, IPC_KIND_QUEUE, (void **)&q);
    if (err) return err;
    q->capacity = capacity;
    q->max_msg = max_msg;
    q->stride = stride;
    q->flags = flags;
    if ((err = async__ipc_mutex_init(&q->put_mu, PTHREAD_MUTEX_ERRORCHECK))) goto fail_map;
    if ((err = async__ipc_mutex_init(&q->get_mu, PTHREAD_MUTEX_ERRORCHECK))) goto fail_put_mu;
    q->get_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (q->get_efd < 0) { err = -errno; goto fail_get_mu; }
    q->put_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (q->put_efd < 0) { err = -errno; goto fail_get; }
    if ((err = async__ipc_seal(q))) goto fail_put;
    *out = q;
    return 0;
fail_put:
    close(q->put_efd);
fail_get:
    close(q->get_efd);
fail_get_mu:
    pthread_mutex_destroy(&q->get_mu);
fail_put_mu:
    pthread_mutex_destroy(&q->put_mu);
fail_map:
    async__ipc_unmap(q);
    return err;
}

void async_ipc_queue_free(async_ipc_queue_t *q)
{
    if (!q) return;
    close(q->get_efd);
    close(q->put_efd);
    async__ipc_unmap(q);
}

static int efd_of(const async_ipc_queue_t *q, const side_t *s)
{
    return s == &q->get ? q->get_efd : q->put_efd;
}

static void signal_fd(async_ipc_queue_t *q, side_t *s)
{
    uint64_t one = 1;
    ssize_t r = write(efd_of(q, s), &one, sizeof one);
    (void)r; /* only fails when the counter is saturated: still readable */
}

/* Wakes the side's sleepers and watchers, if any.  The caller has just
 * committed a change they wait for. */
static void wake(async_ipc_queue_t *q, side_t *s)
{
    if (atomic_load(&s->need_wake) &&
        atomic_exchange(&s->need_wake, 0)) {
        atomic_fetch_add(&s->ev, 1);
        async__futex_wake(&s->ev, INT32_MAX);
    }
    if (atomic_load(&s->watchers) && atomic_load(&s->armed) && atomic_exchange(&s->armed, 0))
        signal_fd(q, s);
}

/* The ring is never torn (see the top), so a dead holder's EOWNERDEAD needs
 * no repair beyond the consistency mark the lock helper makes. */
static void lock(pthread_mutex_t *m) { async__ipc_mutex_lock_internal(m); }
static void unlock(pthread_mutex_t *m) { pthread_mutex_unlock(m); }

int async_ipc_queue_tryput(async_ipc_queue_t *q, const void *msg, size_t len)
{
    if (len > q->max_msg || (len && !msg)) return ASYNC_EINVAL;
    if (atomic_load(&q->closed)) return ASYNC_ECLOSED;
    /* Full at the moment head was read, if tail did not move around it
     * (past full, the counters were overwritten: the lock's path says so). */
    uint64_t t1 = atomic_load(&q->tail), h1 = atomic_load(&q->head);
    if (h1 - t1 == q->capacity && atomic_load(&q->tail) == t1) return ASYNC_EAGAIN;
    lock(&q->put_mu);
    int err = 0;
    uint64_t h = atomic_load_explicit(&q->head, memory_order_relaxed);
    /* Under put_mu head stays h, and tail, read after it, is at most h: a
     * distance past the capacity (or a tail past head, which wraps) is a
     * stray write to the counters, which no repair can undo. */
    uint64_t used = h - atomic_load(&q->tail);
    if (atomic_load_explicit(&q->closed, memory_order_relaxed)) {
        err = ASYNC_ECLOSED;
    } else if (used > q->capacity) {
        err = ASYNC_EIO;
    } else if (used == q->capacity) {
        err = ASYNC_EAGAIN;
    } else {
        slot_t *s = slot_at(q, h);
        if (len) memcpy(s->data, msg, len);
        s->len = (uint32_t)len;
        hook(1);
        atomic_store(&q->head, h + 1); /* the commit; seq_cst: see the top */
    }
    unlock(&q->put_mu);
    if (!err) {
        hook(4);
        wake(q, &q->get);
    }
    return err;
}

int async_ipc_queue_tryget(async_ipc_queue_t *q, void *buf, size_t cap, size_t *len)
{
    if (cap < q->max_msg || !buf) return ASYNC_EINVAL;
    /* Empty at the moment tail was read, if head did not move around it.
     * closed is read first: a put committed before the close is then seen. */
    uint32_t closed = atomic_load(&q->closed);
    uint64_t h1 = atomic_load(&q->head), t1 = atomic_load(&q->tail);
    if (h1 == t1 && atomic_load(&q->head) == h1) return closed ? ASYNC_EEOF : ASYNC_EAGAIN;
    lock(&q->get_mu);
    int err = 0;
    uint64_t t = atomic_load_explicit(&q->tail, memory_order_relaxed);
    closed = atomic_load(&q->closed); /* before head, as above */
    /* Under get_mu tail stays t, and head, read after it, at most t +
     * capacity: past that (or below t, which wraps), as in tryput. */
    uint64_t used = atomic_load(&q->head) - t;
    if (used == 0) {
        err = closed ? ASYNC_EEOF : ASYNC_EAGAIN;
    } else if (used > q->capacity) {
        err = ASYNC_EIO;
    } else {
        slot_t *s = slot_at(q, t);
        size_t n = s->len;
        /* A length no put writes: the message was overwritten.  It is
         * dropped (got, as a message is, for the join count), so that the
         * next get goes on with the next message. */
        if (n > q->max_msg) err = ASYNC_EIO;
        else if (n) memcpy(buf, s->data, n);
        if (len && !err) *len = n;
        hook(2);
        atomic_store(&q->tail, t + 1); /* the commit; seq_cst: see the top */
        hook(3);
    }
    unlock(&q->get_mu);
    if (!err || err == ASYNC_EIO) wake(q, &q->put);
    return err;
}

/* --- waiting ------------------------------------------------------------------------ */

typedef struct op {
    const void *msg;
    void *buf;
    size_t len, cap;
    size_t *out_len;
} op_t;

static int attempt(async_ipc_queue_t *q, bool is_get, op_t *op)
{
    return is_get ? async_ipc_queue_tryget(q, op->buf, op->cap, op->out_len)
                  : async_ipc_queue_tryput(q, op->msg, op->len);
}

static side_t *side_of(async_ipc_queue_t *q, int events)
{
    if (!q) return NULL;
    if (events == ASYNC_READABLE) return &q->get;
    if (events == ASYNC_WRITABLE) return &q->put;
    return NULL;
}

/* Waits in a task through the loop, on the side's eventfd. */
static int wait_task(async_ipc_queue_t *q, bool is_get, op_t *op, int64_t deadline)
{
    side_t *s = is_get ? &q->get : &q->put;
    atomic_fetch_add(&s->watchers, 1);
    int err;
    for (;;) {
        atomic_store(&s->armed, 1);
        if ((err = attempt(q, is_get, op)) != ASYNC_EAGAIN) break;
        /* In slices, as the futex waits (ipc_internal.h): a waker killed
         * between its commit and its signal must not leave us asleep. */
        int64_t until = async__ipc_slice_end(deadline, async_now());
        if ((err = async_wait_fd_dl(efd_of(q, s), ASYNC_READABLE, until))) {
            if (err == ASYNC_ETIMEDOUT && until != deadline) continue;
            break;
        }
        async_ipc_queue_drain_fd(q, is_get ? ASYNC_READABLE : ASYNC_WRITABLE);
    }
    uint32_t others = atomic_fetch_sub(&s->watchers, 1) - 1;
    /* We may have drained a signal meant for several watchers: re-arm for
     * them, and pass the signal on while there is something for them (or
     * the end to see). */
    if (others) {
        atomic_store(&s->armed, 1);
        bool more = is_get ? (err == ASYNC_EEOF || async_ipc_queue_len(q) > 0)
                           : (err == ASYNC_ECLOSED || async_ipc_queue_len(q) < q->capacity);
        if (more) signal_fd(q, s);
    }
    return err;
}

/* Waits on the futex: spin a little (the other side is often just about to
 * make progress), then sleep. */
static int wait_futex(async_ipc_queue_t *q, bool is_get, op_t *op, int64_t deadline)
{
    side_t *s = is_get ? &q->get : &q->put;
    int err;
    for (;;) {
        for (int i = 0; i < SPINS; i++) {
            if ((err = attempt(q, is_get, op)) != ASYNC_EAGAIN) return err;
            async__cpu_relax();
        }
        if (deadline != ASYNC_FOREVER && async_now() >= deadline) return ASYNC_ETIMEDOUT;
        uint32_t ev = atomic_load(&s->ev);
        atomic_store(&s->need_wake, 1);
        if ((err = attempt(q, is_get, op)) != ASYNC_EAGAIN) return err;
        if (async__futex_wait(&s->ev, ev, deadline) == ASYNC_ETIMEDOUT) {
            err = attempt(q, is_get, op);
            return err == ASYNC_EAGAIN ? ASYNC_ETIMEDOUT : err;
        }
    }
}

static int op_dl(async_ipc_queue_t *q, bool is_get, op_t *op, int64_t deadline)
{
    int err = attempt(q, is_get, op);
    if (err != ASYNC_EAGAIN) return err; /* done, or failed for good */
    if (async__in_task()) return wait_task(q, is_get, op, deadline);
    return wait_futex(q, is_get, op, deadline);
}

int async_ipc_queue_put_dl(async_ipc_queue_t *q, const void *msg, size_t len, int64_t deadline)
{
    op_t op = {.msg = msg, .len = len};
    return op_dl(q, false, &op, deadline);
}

int async_ipc_queue_put(async_ipc_queue_t *q, const void *msg, size_t len)
{
    return async_ipc_queue_put_dl(q, msg, len, ASYNC_FOREVER);
}

int async_ipc_queue_get_dl(async_ipc_queue_t *q, void *buf, size_t cap, size_t *len,
                           int64_t deadline)
{
    op_t op = {.buf = buf, .cap = cap, .out_len = len};
    return op_dl(q, true, &op, deadline);
}

int async_ipc_queue_get(async_ipc_queue_t *q, void *buf, size_t cap, size_t *len)
{
    return async_ipc_queue_get_dl(q, buf, cap, len, ASYNC_FOREVER);
}

int async_ipc_queue_close(async_ipc_queue_t *q)
{
    lock(&q->put_mu);
    uint32_t was = atomic_exchange(&q->closed, 1);
    unlock(&q->put_mu);
    if (was) return ASYNC_EALREADY;
    hook(5);
    wake(q, &q->get);
    wake(q, &q->put);
    return 0;
}

size_t async_ipc_queue_len(const async_ipc_queue_t *cq)
{
    async_ipc_queue_t *q = (async_ipc_queue_t *)cq;
    uint64_t t = atomic_load(&q->tail);
    uint64_t h = atomic_load(&q->head);
    if (h <= t) return 0;
    return h - t > q->capacity ? q->capacity : (size_t)(h - t);
}

size_t async_ipc_queue_capacity(const async_ipc_queue_t *q) { return q->capacity; }
size_t async_ipc_queue_max_msg(const async_ipc_queue_t *q) { return q->max_msg; }

/* --- JoinableQueue ------------------------------------------------------------------ */

/* The unfinished count is head - done, not a counter of its own, so that a
 * put's commit (one store) also counts it: a producer killed in the middle of
 * a put can never leave the count off by one. */
int async_ipc_queue_task_done(async_ipc_queue_t *q)
{
    if (!(q->flags & ASYNC_IPC_QUEUE_JOINABLE)) return ASYNC_ENOTSUP;
    uint64_t d = atomic_load(&q->done);
    do {
        if (d >= atomic_load(&q->head)) return ASYNC_EINVAL;
    } while (!atomic_compare_exchange_weak(&q->done, &d, d + 1));
    if (d + 1 == atomic_load(&q->head) && atomic_load(&q->join_sleepers)) {
        atomic_fetch_add(&q->join_ev, 1);
        async__futex_wake(&q->join_ev, INT32_MAX);
    }
    return 0;
}

static bool finished(async_ipc_queue_t *q) { return atomic_load(&q->done) == atomic_load(&q->head); }

int async_ipc_queue_join_dl(async_ipc_queue_t *q, int64_t deadline)
{
    if (!(q->flags & ASYNC_IPC_QUEUE_JOINABLE)) return ASYNC_ENOTSUP;
    while (!finished(q)) {
        uint32_t ev = atomic_load(&q->join_ev);
        atomic_fetch_add(&q->join_sleepers, 1);
        int err = 0;
        if (!finished(q)) err = async__futex_wait(&q->join_ev, ev, deadline);
        atomic_fetch_sub(&q->join_sleepers, 1);
        if (err == ASYNC_ETIMEDOUT) return finished(q) ? 0 : ASYNC_ETIMEDOUT;
    }
    return 0;
}

int async_ipc_queue_join(async_ipc_queue_t *q) { return async_ipc_queue_join_dl(q, ASYNC_FOREVER); }

/* --- descriptors -------------------------------------------------------------------- */

int async_ipc_queue_fd(const async_ipc_queue_t *q, int events)
{
    side_t *s = side_of((async_ipc_queue_t *)q, events);
    return s ? efd_of(q, s) : ASYNC_EINVAL;
}

int async_ipc_queue_watch(async_ipc_queue_t *q, int events)
{
    side_t *s = side_of(q, events);
    if (!s) return ASYNC_EINVAL;
    atomic_fetch_add(&s->watchers, 1);
    atomic_store(&s->armed, 1);
    return 0;
}

int async_ipc_queue_unwatch(async_ipc_queue_t *q, int events)
{
    side_t *s = side_of(q, events);
    if (!s) return ASYNC_EINVAL;
    /* Never below zero: an unmatched unwatch would wrap the shared count and
     * make every later commit signal the descriptor for nobody. */
    uint32_t n = atomic_load(&s->watchers);
    do {
        if (n == 0) return ASYNC_EINVAL;
    } while (!atomic_compare_exchange_weak(&s->watchers, &n, n - 1));
    /* This watcher may have drained a signal others needed: re-arm and give
     * them a (possibly spurious) wake-up. */
    if (n > 1) {
        atomic_store(&s->armed, 1);
        signal_fd(q, s);
    }
    return 0;
}

int async_ipc_queue_drain_fd(async_ipc_queue_t *q, int events)
{
    side_t *s = side_of(q, events);
    uint64_t v;
    if (!s) return ASYNC_EINVAL;
    /* Re-arm before the caller's next try, so that a change after that try
     * signals the descriptor again. */
    atomic_store(&s->armed, 1);
    ssize_t r = read(efd_of(q, s), &v, sizeof v);
    (void)r; /* EAGAIN: nothing to drain */
    return 0;
}

void async__ipc_queue_spots(async_ipc_queue_t *q, async__ipc_spots_t *out)
{
    *out = (async__ipc_spots_t){.head = &q->head, .tail = &q->tail,
                                .len_at_tail = &slot_at(q, atomic_load(&q->tail))->len,
                                .capacity = &q->capacity, .get_efd = &q->get_efd};
}
