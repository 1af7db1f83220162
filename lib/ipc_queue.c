/* The process-shared queue: a bounded multi-producer multi-consumer ring of
 * byte messages in one shared mapping.
 *
 * The ring is Dmitry Vyukov's bounded MPMC queue.  Each slot carries a
 * sequence number: slot i is free for the put at position p when seq == 2p,
 * and full for the get at position p when seq == 2p + 1; a get hands the slot
 * back for position p + capacity.  (Vyukov uses p and p + 1; doubling keeps
 * "full for p" and "free for p + 1" apart when the capacity is 1.)  Producers claim positions by advancing
 * `head` with a compare-and-swap, consumers by advancing `tail`; positions
 * are claimed in order, so one producer's items are got in the order it put
 * them.  The top bit of head is the closed flag: setting it with an atomic OR
 * stops every later claim, so a put either landed before the close (and will
 * be drained) or fails with ASYNC_ECLOSED.
 *
 * Sleeping.  A side that finds the ring full (or empty) spins briefly, then
 * raises its side's need_wake flag and sleeps on a futex event counter.  The
 * other side changes the ring and, only if the flag is up, takes it down
 * (atomic exchange), bumps the counter and wakes every sleeper: so when both
 * sides are busy no system call is made at all, and a burst of puts makes one
 * wake-up call, not one per put while the woken consumer is on its way.  The
 * sleeper raises the flag before its last look at the ring and the waker
 * publishes before reading the flag, all four accesses sequentially
 * consistent, so at least one of them sees the other (Dekker; no separate
 * fence, which ThreadSanitizer cannot model).  The futex compare of the
 * counter value read before that last look catches a wake-up that comes
 * before the sleep.  Tasks and user event loops wait on an eventfd instead,
 * armed the same way (`armed`, while the `watchers` count is non-zero).
 *
 * A producer that dies between claiming a slot and publishing it leaves that
 * slot unpublished, and consumers stall there; that is the price of a queue
 * without a lock in its fast path. */
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include "ipc_internal.h"

#define CLOSED_BIT ((uint64_t)1 << 63)
#define SPINS 200

typedef struct slot {
    _Atomic uint64_t seq;
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
    int efd;
} side_t;

struct async_ipc_queue {
    async__ipc_hdr_t hdr;
    size_t capacity, max_msg, stride;
    unsigned flags;
    _Alignas(64) _Atomic uint64_t head; /* next put position | CLOSED_BIT */
    _Alignas(64) _Atomic uint64_t tail; /* next get position */
    side_t get, put;
    _Alignas(64) _Atomic int64_t unfinished;
    _Atomic uint32_t join_ev;
    _Atomic uint32_t join_sleepers;
    _Alignas(64) unsigned char slots[];
};

static inline slot_t *slot_at(async_ipc_queue_t *q, uint64_t pos)
{
    return (slot_t *)(q->slots + (size_t)(pos % q->capacity) * q->stride);
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
    for (size_t i = 0; i < capacity; i++) atomic_store(&slot_at(q, i)->seq, 2 * (uint64_t)i);
    q->get.efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (q->get.efd < 0) { err = -errno; goto fail_map; }
    q->put.efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (q->put.efd < 0) { err = -errno; goto fail_get; }
    *out = q;
    return 0;
fail_get:
    close(q->get.efd);
fail_map:
    async__ipc_unmap(q);
    return err;
}

void async_ipc_queue_free(async_ipc_queue_t *q)
{
    if (!q) return;
    close(q->get.efd);
    close(q->put.efd);
    async__ipc_unmap(q);
}

static void signal_fd(side_t *s)
{
    uint64_t one = 1;
    ssize_t r = write(s->efd, &one, sizeof one);
    (void)r; /* only fails when the counter is saturated: still readable */
}

/* Wakes the side's sleepers and watchers, if any.  The caller has just
 * published a change they wait for. */
static void wake(side_t *s)
{
    if (atomic_load(&s->need_wake) &&
        atomic_exchange(&s->need_wake, 0)) {
        atomic_fetch_add(&s->ev, 1);
        async__futex_wake(&s->ev, INT32_MAX);
    }
    if (atomic_load(&s->watchers) && atomic_load(&s->armed) && atomic_exchange(&s->armed, 0))
        signal_fd(s);
}

int async_ipc_queue_tryput(async_ipc_queue_t *q, const void *msg, size_t len)
{
    if (len > q->max_msg || (len && !msg)) return ASYNC_EINVAL;
    uint64_t pos = atomic_load_explicit(&q->head, memory_order_relaxed);
    slot_t *s;
    for (;;) {
        if (pos & CLOSED_BIT) return ASYNC_ECLOSED;
        s = slot_at(q, pos);
        uint64_t seq = atomic_load(&s->seq); /* seq_cst: see the top */
        int64_t dif = (int64_t)(seq - 2 * pos);
        if (dif == 0) {
            if (atomic_compare_exchange_weak_explicit(&q->head, &pos, pos + 1,
                                                      memory_order_relaxed, memory_order_relaxed))
                break;
        } else if (dif < 0) {
            uint64_t h = atomic_load_explicit(&q->head, memory_order_relaxed);
            if (h == pos) return ASYNC_EFULL;
            pos = h;
        } else {
            pos = atomic_load_explicit(&q->head, memory_order_relaxed);
        }
    }
    /* Counted before it is visible, so join never sees a false zero. */
    if (q->flags & ASYNC_IPC_QUEUE_JOINABLE) atomic_fetch_add(&q->unfinished, 1);
    if (len) memcpy(s->data, msg, len);
    s->len = (uint32_t)len;
    atomic_store(&s->seq, 2 * pos + 1);
    wake(&q->get);
    return 0;
}

int async_ipc_queue_tryget(async_ipc_queue_t *q, void *buf, size_t cap, size_t *len)
{
    if (cap < q->max_msg || !buf) return ASYNC_EINVAL;
    uint64_t pos = atomic_load_explicit(&q->tail, memory_order_relaxed);
    slot_t *s;
    for (;;) {
        s = slot_at(q, pos);
        uint64_t seq = atomic_load(&s->seq); /* seq_cst: see the top */
        int64_t dif = (int64_t)(seq - (2 * pos + 1));
        if (dif == 0) {
            if (atomic_compare_exchange_weak_explicit(&q->tail, &pos, pos + 1,
                                                      memory_order_relaxed, memory_order_relaxed))
                break;
        } else if (dif < 0) {
            uint64_t t = atomic_load_explicit(&q->tail, memory_order_relaxed);
            if (t != pos) { pos = t; continue; }
            /* Empty, or a producer claimed this slot and has not published it
             * yet; only the former, once closed, is the end. */
            uint64_t h = atomic_load(&q->head);
            if ((h & CLOSED_BIT) && (h & ~CLOSED_BIT) == pos) return ASYNC_EEOF;
            return ASYNC_EEMPTY;
        } else {
            pos = atomic_load_explicit(&q->tail, memory_order_relaxed);
        }
    }
    size_t n = s->len;
    if (n) memcpy(buf, s->data, n);
    if (len) *len = n;
    atomic_store(&s->seq, 2 * (pos + q->capacity));
    wake(&q->put);
    return 0;
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
    if (events == ASYNC_READABLE) return &q->get;
    if (events == ASYNC_WRITABLE) return &q->put;
    return NULL;
}

/* Waits in a task through the loop, on the side's eventfd. */
static int wait_task(async_ipc_queue_t *q, bool is_get, op_t *op, int64_t deadline)
{
    int busy = is_get ? ASYNC_EEMPTY : ASYNC_EFULL;
    side_t *s = is_get ? &q->get : &q->put;
    atomic_fetch_add(&s->watchers, 1);
    int err;
    for (;;) {
        atomic_store(&s->armed, 1);
        if ((err = attempt(q, is_get, op)) != busy) break;
        if ((err = async_wait_fd_dl(s->efd, ASYNC_READABLE, deadline))) break;
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
        if (more) signal_fd(s);
    }
    return err;
}

/* Waits on the futex: spin a little (the other side is often just about to
 * make progress), then sleep. */
static int wait_futex(async_ipc_queue_t *q, bool is_get, op_t *op, int64_t deadline)
{
    int busy = is_get ? ASYNC_EEMPTY : ASYNC_EFULL;
    side_t *s = is_get ? &q->get : &q->put;
    int err;
    for (;;) {
        for (int i = 0; i < SPINS; i++) {
            if ((err = attempt(q, is_get, op)) != busy) return err;
            async__cpu_relax();
        }
        if (deadline != ASYNC_FOREVER && async_now() >= deadline) return ASYNC_ETIMEDOUT;
        uint32_t ev = atomic_load(&s->ev);
        atomic_store(&s->need_wake, 1);
        if ((err = attempt(q, is_get, op)) != busy) return err;
        if (async__futex_wait(&s->ev, ev, deadline) == ASYNC_ETIMEDOUT) {
            err = attempt(q, is_get, op);
            return err == busy ? ASYNC_ETIMEDOUT : err;
        }
    }
}

static int op_dl(async_ipc_queue_t *q, bool is_get, op_t *op, int64_t deadline)
{
    int err = attempt(q, is_get, op);
    if (err != (is_get ? ASYNC_EEMPTY : ASYNC_EFULL)) return err;
    if (async__ipc_in_task()) return wait_task(q, is_get, op, deadline);
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
    uint64_t h = atomic_fetch_or(&q->head, CLOSED_BIT);
    if (h & CLOSED_BIT) return ASYNC_EALREADY;
    wake(&q->get);
    wake(&q->put);
    return 0;
}

size_t async_ipc_queue_len(const async_ipc_queue_t *cq)
{
    async_ipc_queue_t *q = (async_ipc_queue_t *)cq;
    uint64_t t = atomic_load(&q->tail);
    uint64_t h = atomic_load(&q->head) & ~CLOSED_BIT;
    if (h <= t) return 0;
    return h - t > q->capacity ? q->capacity : (size_t)(h - t);
}

size_t async_ipc_queue_capacity(const async_ipc_queue_t *q) { return q->capacity; }
size_t async_ipc_queue_max_msg(const async_ipc_queue_t *q) { return q->max_msg; }

/* --- JoinableQueue ------------------------------------------------------------------ */

int async_ipc_queue_task_done(async_ipc_queue_t *q)
{
    if (!(q->flags & ASYNC_IPC_QUEUE_JOINABLE)) return ASYNC_ENOTSUP;
    int64_t n = atomic_load(&q->unfinished);
    do {
        if (n <= 0) return ASYNC_EINVAL;
    } while (!atomic_compare_exchange_weak(&q->unfinished, &n, n - 1));
    if (n == 1 && atomic_load(&q->join_sleepers)) {
        atomic_fetch_add(&q->join_ev, 1);
        async__futex_wake(&q->join_ev, INT32_MAX);
    }
    return 0;
}

int async_ipc_queue_join_dl(async_ipc_queue_t *q, int64_t deadline)
{
    if (!(q->flags & ASYNC_IPC_QUEUE_JOINABLE)) return ASYNC_ENOTSUP;
    while (atomic_load(&q->unfinished) != 0) {
        uint32_t ev = atomic_load(&q->join_ev);
        atomic_fetch_add(&q->join_sleepers, 1);
        int err = 0;
        if (atomic_load(&q->unfinished) != 0) err = async__futex_wait(&q->join_ev, ev, deadline);
        atomic_fetch_sub(&q->join_sleepers, 1);
        if (err == ASYNC_ETIMEDOUT)
            return atomic_load(&q->unfinished) == 0 ? 0 : ASYNC_ETIMEDOUT;
    }
    return 0;
}

int async_ipc_queue_join(async_ipc_queue_t *q) { return async_ipc_queue_join_dl(q, ASYNC_FOREVER); }

/* --- descriptors -------------------------------------------------------------------- */

int async_ipc_queue_fd(const async_ipc_queue_t *q, int events)
{
    side_t *s = side_of((async_ipc_queue_t *)q, events);
    return s ? s->efd : ASYNC_EINVAL;
}

void async_ipc_queue_watch(async_ipc_queue_t *q, int events)
{
    side_t *s = side_of(q, events);
    if (!s) return;
    atomic_fetch_add(&s->watchers, 1);
    atomic_store(&s->armed, 1);
}

void async_ipc_queue_unwatch(async_ipc_queue_t *q, int events)
{
    side_t *s = side_of(q, events);
    if (!s) return;
    /* This watcher may have drained a signal others needed: re-arm and give
     * them a (possibly spurious) wake-up. */
    if (atomic_fetch_sub(&s->watchers, 1) > 1) {
        atomic_store(&s->armed, 1);
        signal_fd(s);
    }
}

void async_ipc_queue_drain_fd(async_ipc_queue_t *q, int events)
{
    side_t *s = side_of(q, events);
    uint64_t v;
    if (!s) return;
    /* Re-arm before the caller's next try, so that a change after that try
     * signals the descriptor again. */
    atomic_store(&s->armed, 1);
    ssize_t r = read(s->efd, &v, sizeof v);
    (void)r; /* EAGAIN: nothing to drain */
}
