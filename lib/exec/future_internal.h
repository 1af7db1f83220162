/* Futures, the private side.  PRIVATE: never installed.
 *
 * The state word holds the state in its low bits and two flags: SLEEPERS
 * (some thread sleeps on the word with a futex) and LISTENERS (the future's
 * lock guards a non-empty list of listeners or callbacks).  A future that
 * nobody waits on is created, run and finished without taking its lock or
 * making a system call.
 *
 * Finishing goes PENDING/RUNNING -> COMPLETING (the finisher owns the result
 * fields) -> final (published with release order; readers load with acquire
 * order).  Listeners are added under the lock and only while the state is not
 * final, and the finisher takes the lock when it sees LISTENERS, so no
 * listener is ever missed. */
#ifndef ASYNC_FUTURE_INTERNAL_H
#define ASYNC_FUTURE_INTERNAL_H

#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include "core/core_internal.h"
#include "async/future.h"

enum {
    FS_PENDING = ASYNC_FUTURE_PENDING,
    FS_RUNNING = ASYNC_FUTURE_RUNNING,
    FS_DONE = ASYNC_FUTURE_DONE,
    FS_FAILED = ASYNC_FUTURE_FAILED,
    FS_CANCELLED = ASYNC_FUTURE_CANCELLED,
    FS_COMPLETING = 5,
    FS_MASK = 7,
    FS_SLEEPERS = 8,
    FS_LISTENERS = 16,
    /* The outcome is set but the future's first callback still runs (a
     * future with early_cb): inspectors report the outcome, waiters wait. */
    FS_HOLD = 32,
};

/* Final and released: what every wait waits for. */
static inline bool async__fs_final(unsigned s)
{
    if (s & FS_HOLD) return false;
    s &= FS_MASK;
    return s >= FS_DONE && s <= FS_CANCELLED;
}

/* The outcome is decided (final, held or not): what inspectors report. */
static inline bool async__fs_decided(unsigned s)
{
    s &= FS_MASK;
    return s >= FS_DONE && s <= FS_CANCELLED;
}

/* A node in a future's list, in the order added: an internal waiter (notify
 * set) or a user callback (notify NULL).  notify runs on the finishing
 * thread with the future's lock held, so it must be short and must not call
 * into the future; a node removed under the lock (async__future_unlisten) is
 * never notified after.  Callbacks run after the lock is dropped. */
typedef struct async__listener {
    async__list_t link;
    void (*notify)(struct async__listener *l, async_future_t *f);
} async__listener_t;

typedef struct async__cb_node {
    async__listener_t l;
    struct async__cb_node *next; /* the run list, once taken off the future */
    async_future_cb cb;
    void *arg;
} async__cb_node_t;

/* One cache line: a worker finishing a future nobody listens to writes only
 * this line, and a submit initialises only this line and its job. */
struct async_future {
    _Atomic unsigned state;
    _Atomic unsigned refs;
    int err;
    _Atomic unsigned char lock;    /* guards `nodes`; critical sections are short */
    bool exec_owned;               /* an executor finishes it: async_future_set_* refuse;
                                      set before the future is shared, then only read */
    unsigned char data_owned : 1, msg_owned : 1; /* written by the finisher only */
    unsigned char has_index : 1;   /* a failed map: `size` holds the item index */
    unsigned char early_cb : 1;    /* its first callback runs before waiters are
                                      released (map_async); set before sharing */
    bool contested;                /* two threads may race to finish it (a thread
                                      job with a deadline: its worker and the
                                      deadline watchdog), so finishing always
                                      claims; set before sharing, then only read */
    void *data;
    size_t size;
    struct async__slab *slab;      /* the pool slab it was carved from, or NULL
                                      (async__malloc'd); fixed for the memory's life */
    const char *msg;
    async__list_t nodes;           /* waiters and callbacks, under lock */
    max_align_t extra[];           /* async__future_alloc's extra bytes */
};

/* A cache of future allocations of one size, for an executor's submits: a
 * future taken from it goes back to it when freed, so a steady stream of
 * submits reuses warm memory instead of calling malloc and free (and, for
 * bursts, instead of faulting in fresh pages).  Its blocks are carved from
 * slabs, up to `cap` blocks in all (later futures are plain allocations);
 * after async__fpool_close (the owner is gone) a slab is freed as soon as
 * every future carved from it is, and the pool with its last slab. */

/* A future with `extra` bytes after it (at f->extra), for the executor's job
 * and inline buffers.  One reference.  NULL when out of memory. */
async_future_t *async__future_alloc(size_t extra);

/* Resets a future for its next use with `refs` references, exec_owned and
 * contested as given.  f->slab stays: it says where the memory came from
 * for as long as the memory lives. */
static inline void async__future_reset(async_future_t *f, unsigned refs, bool exec_owned,
                                       bool contested)
{
    atomic_init(&f->state, FS_PENDING);
    atomic_init(&f->refs, refs);
    f->err = 0;
    atomic_init(&f->lock, 0);
    f->exec_owned = exec_owned;
    f->contested = contested;
    f->data_owned = f->msg_owned = f->has_index = f->early_cb = 0;
    f->data = NULL;
    f->size = 0;
    f->msg = NULL;
    async__list_init(&f->nodes);
}

/* A future of one reference that anybody may finish. */
static inline void async__future_init(async_future_t *f) { async__future_reset(f, 1, false, false); }

/* An executor's submit, in the same stores: two references (the caller's
 * and the executor's), exec_owned, and contested as given. */
static inline void async__future_init_exec(async_future_t *f, bool contested)
{
    async__future_reset(f, 2, true, contested);
}

/* Thread-locals of the executor's hot paths: the initial-exec model makes
 * each access a single instruction instead of a call to __tls_get_addr, which
 * -fPIC code would otherwise make. */
#define ASYNC_TLS __attribute__((tls_model("initial-exec")))

typedef struct async__fpool async__fpool_t;
async__fpool_t *async__fpool_new(size_t block, size_t cap);
void async__fpool_close(async__fpool_t *p);

/* Each thread's magazine of free blocks for the pool it used last
 * (future.c explains the scheme); `block` is that pool's block size.  Only
 * its own thread touches it. */
typedef struct async__magazine {
    async__fpool_t *pool;
    void *head, *tail;
    size_t n, block;
} async__magazine_t;
extern _Thread_local async__magazine_t async__mag ASYNC_TLS;

/* Asks for the next block's first three lines (the future and the job's
 * fields and small area: all that a small submit writes) ahead of its use:
 * a stream of submits cycles through more blocks than a core's cache holds,
 * and the workers wrote into them last, so each line is a miss that would
 * otherwise stall the submit's first atomic instruction.  A prefetch never
 * faults, so a smaller block's neighbour may be asked for too; fixed
 * prefetches cost less than a loop bounded by the block size. */
static inline void async__prefetch_block(const void *blk)
{
    const char *b = blk;
    __builtin_prefetch(b, 1, 3);
    __builtin_prefetch(b + 64, 1, 3);
    __builtin_prefetch(b + 128, 1, 3);
}

/* Takes the first block off a magazine that has one (m->n > 0), and asks
 * for the next one's lines ahead of its use. */
static inline void *async__mag_pop(async__magazine_t *m)
{
    void *blk = m->head, *next = *(void **)blk;
    m->head = next;
    if (!next) m->tail = NULL;
    else async__prefetch_block(next);
    m->n--;
    return blk;
}

/* async__future_alloc_pooled when the magazine cannot serve: another pool,
 * an empty magazine, or a future too big for the blocks. */
async_future_t *async__future_alloc_refill(async__fpool_t *p, size_t extra);

/* As async__future_alloc, from p when the future fits its blocks.  The
 * usual case, a block off this thread's magazine, is inlined into each
 * submit: it is a handful of loads and stores, and the call cost as much. */
static inline async_future_t *async__future_alloc_pooled(async__fpool_t *p, size_t extra)
{
    async__magazine_t *m = &async__mag;
    if (__builtin_expect(!p || m->pool != p || !m->n || sizeof(async_future_t) + extra > m->block, 0))
        return async__future_alloc_refill(p, extra);
    async_future_t *f = async__mag_pop(m);
    async__future_init(f);
    return f;
}

/* What async_future_unref does with the last reference: frees the future's
 * results, callbacks never run, and its memory. */
void async__future_free(async_future_t *f);

/* async_future_unref of a future known not to be NULL, inlined where a
 * worker drops the executor's reference: that is almost never the last. */
static inline void async__future_drop(async_future_t *f)
{
    if (atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) == 1) async__future_free(f);
}

/* Wakes the sleepers and serves the listeners that the flags of s, the
 * state a finish replaced, name. */
void async__future_released(async_future_t *f, unsigned s);

/* Finishes DONE with data/size (memory that lives as long as the future) an
 * executor's RUNNING future whose worker is its one finisher (exec_owned,
 * not contested, no early callback); false, with nothing done, for any
 * other future, which takes async__future_finish.  Inlined into a worker's
 * finish: a future nobody waits on costs four stores and one exchange. */
static inline bool async__future_done_sole(async_future_t *f, void *data, size_t size)
{
    if (!f->exec_owned || f->contested || f->early_cb ||
        (atomic_load_explicit(&f->state, memory_order_relaxed) & FS_MASK) != FS_RUNNING)
        return false;
    f->err = 0;
    f->data = data;
    f->size = size;
    f->data_owned = 0;
    unsigned s = atomic_exchange_explicit(&f->state, FS_DONE, memory_order_release);
    if (__builtin_expect(s & (FS_SLEEPERS | FS_LISTENERS), 0)) async__future_released(f, s);
    return true;
}

/* Finishes a RUNNING (or PENDING) future that the caller owns: state is
 * FS_DONE or FS_FAILED.  An executor's RUNNING future has one finisher, its
 * worker, so that case skips the claim step.  Otherwise: state is
 * FS_DONE or FS_FAILED.  For DONE, data/size become the output: owned says
 * data came from async__malloc and passes to the future; otherwise data
 * must live as long as the future (its extra bytes).  msg is copied.
 * Returns ASYNC_EDONE if the future was already final. */
int async__future_finish(async_future_t *f, unsigned state, int err, const char *msg,
                         void *data, size_t size, bool owned);

/* async_future_wait_dl, with or without its short spin before sleeping. */
int async__future_wait(async_future_t *f, int64_t deadline, bool spin);

/* Awaits f from a task until it is final, whatever cancellation of the task
 * (which stays pending for the task's next wait): for a caller whose memory
 * the work still writes.  Only the task sleeps.  Returns f's outcome, or
 * ASYNC_ENOTASK outside a task. */
int async__future_await_shielded(async_future_t *f);

/* PENDING -> RUNNING, as async_future_set_running without its check: 0,
 * ASYNC_ECANCELED, ASYNC_EALREADY (running) or ASYNC_EDONE.  Inline: every
 * job a worker takes passes here. */
static inline int async__future_start(async_future_t *f)
{
    unsigned s = atomic_load_explicit(&f->state, memory_order_relaxed);
    for (;;) {
        unsigned st = s & FS_MASK;
        if (st == FS_CANCELLED) return ASYNC_ECANCELED;
        if (st == FS_RUNNING) return ASYNC_EALREADY;
        if (st != FS_PENDING) return ASYNC_EDONE;
        if (atomic_compare_exchange_weak_explicit(&f->state, &s, (s & ~FS_MASK) | FS_RUNNING,
                                                  memory_order_acquire, memory_order_relaxed))
            return 0;
    }
}


/* Finishes f as FAILED with the item index that async_future_error_index
 * reports (a map's first failure). */
int async__future_fail_at(async_future_t *f, int err, const char *msg, size_t index);

/* Adds l unless the future is final; returns false (l not added) then. */
bool async__future_listen(async_future_t *f, async__listener_t *l);
/* Removes l if it is still listed; afterwards l is never notified. */
void async__future_unlisten(async_future_t *f, async__listener_t *l);

/* Futex on a 32-bit word, process-private.  Waits while *addr == val, until
 * woken or the absolute CLOCK_MONOTONIC deadline; returns 0, or ETIMEDOUT. */
static inline int async__futex_wait(_Atomic unsigned *addr, unsigned val, int64_t deadline)
{
    struct timespec ts, *tp = NULL;
    if (deadline != ASYNC_FOREVER) {
        if (deadline < 0) deadline = 0;
        ts.tv_sec = (time_t)(deadline / 1000000000);
        ts.tv_nsec = (long)(deadline % 1000000000);
        tp = &ts;
    }
    long r = syscall(SYS_futex, (unsigned *)addr, FUTEX_WAIT_BITSET_PRIVATE, val, tp, NULL,
                     FUTEX_BITSET_MATCH_ANY);
    return r == -1 && errno == ETIMEDOUT ? ETIMEDOUT : 0;
}

static inline void async__futex_wake(_Atomic unsigned *addr, int n)
{
    syscall(SYS_futex, (unsigned *)addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

#endif
