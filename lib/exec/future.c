/* Futures: one result produced by some thread and consumed by threads or
 * tasks.  The guarantees are those of include/async/future.h; the state
 * machine and its memory ordering are described in future_internal.h.
 *
 * Waiting (blocking, many futures, as_completed, awaiting from tasks) lives
 * in future_wait.c. */
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "future_internal.h"

static const char cancelled_msg[] = "cancelled before it ran";


static void init(async_future_t *f, async__fpool_t *pool)
{
    atomic_init(&f->state, FS_PENDING);
    atomic_init(&f->refs, 1);
    f->err = 0;
    atomic_init(&f->lock, 0);
    f->exec_owned = false;
    f->contested = false;
    f->data_owned = f->msg_owned = f->has_index = f->early_cb = 0;
    f->data = NULL;
    f->size = 0;
    f->pool = pool;
    f->msg = NULL;
    async__list_init(&f->nodes);
}

/* The one spin lock of this file, for a future's list and for a pool of
 * blocks: every critical section it guards is a few stores long, so a
 * waiter yields rather than sleeps. */
static void spin_lock(_Atomic unsigned char *l)
{
    while (atomic_exchange_explicit(l, 1, memory_order_acquire))
        while (atomic_load_explicit(l, memory_order_relaxed)) sched_yield();
}

static void spin_unlock(_Atomic unsigned char *l) { atomic_store_explicit(l, 0, memory_order_release); }

static void lock(async_future_t *f) { spin_lock(&f->lock); }
static void unlock(async_future_t *f) { spin_unlock(&f->lock); }

async_future_t *async__future_alloc(size_t extra)
{
    async_future_t *f = async__malloc(sizeof *f + extra);
    if (f) init(f, NULL);
    return f;
}

/* --- the allocation cache ------------------------------------------------ */

/* A pool of equal blocks for one executor's futures.  Each thread keeps a
 * magazine of blocks for the pool it used last, taken from the pool and given
 * back whole (constant time both ways, under the pool's lock), so a thread
 * that submits and frees in a stream touches no lock and no atomic for its
 * blocks.  `outstanding` counts the blocks outside the pool's list (in use
 * or in magazines); a closed pool is freed when that count drops to 0.  A
 * magazine goes back when its thread switches pools, exits (a key
 * destructor) or closes the pool, or when it grows past MAG_MAX. */
struct async__fpool {
    _Atomic unsigned char busy; /* spin_lock's word: every critical section is short */
    _Atomic bool closed; /* the owner is gone: the last block frees the pool */
    size_t outstanding;
    size_t block, cap, count;
    void *blocks, *last; /* free blocks, linked through their first word */
};

#define MAG_MAX 4096

typedef struct magazine {
    async__fpool_t *pool;
    void *head, *tail;
    size_t n;
} magazine_t;

static _Thread_local magazine_t mag ASYNC_TLS;
static pthread_key_t mag_key;
static pthread_once_t mag_once = PTHREAD_ONCE_INIT;

/* Pool blocks start on a cache line (the hot header is exactly one line);
 * the pointer to free sits just before the block. */
static void *block_alloc(size_t size)
{
    char *raw = async__malloc(size + 64 + sizeof(void *));
    if (!raw) return NULL;
    char *blk = (char *)(((uintptr_t)raw + sizeof(void *) + 63) & ~(uintptr_t)63);
    ((void **)blk)[-1] = raw;
    return blk;
}

static void block_free(void *blk) { async__free(((void **)blk)[-1]); }

static void free_list(void *list)
{
    while (list) {
        void *next = *(void **)list;
        block_free(list);
        list = next;
    }
}

static void fpool_lock(async__fpool_t *p) { spin_lock(&p->busy); }
static void fpool_unlock(async__fpool_t *p) { spin_unlock(&p->busy); }

/* Gives back a chain of n blocks (head..tail): spliced into the pool while
 * it is open and under its cap, freed otherwise; frees the pool after its
 * last block. */
static void give_back(async__fpool_t *p, void *head, void *tail, size_t n)
{
    void *spill = NULL;
    fpool_lock(p);
    if (!atomic_load_explicit(&p->closed, memory_order_relaxed) && p->count + n <= p->cap) {
        *(void **)tail = p->blocks;
        if (!p->blocks) p->last = tail;
        p->blocks = head;
        p->count += n;
    } else {
        spill = head;
    }
    p->outstanding -= n;
    bool last = atomic_load_explicit(&p->closed, memory_order_relaxed) && p->outstanding == 0;
    fpool_unlock(p);
    free_list(spill);
    if (last) async__free(p);
}

static void mag_flush(magazine_t *m)
{
    if (m->pool && m->n) give_back(m->pool, m->head, m->tail, m->n);
    *m = (magazine_t){NULL, NULL, NULL, 0};
}

static void mag_exit(void *arg) { mag_flush(arg); }
static void mag_key_init(void) { pthread_key_create(&mag_key, mag_exit); }

async__fpool_t *async__fpool_new(size_t block, size_t cap)
{
    async__fpool_t *p = async__malloc(sizeof *p);
    if (!p) return NULL;
    atomic_init(&p->busy, false);
    atomic_init(&p->closed, false);
    p->outstanding = 0;
    p->block = block;
    p->cap = cap;
    p->count = 0;
    p->blocks = p->last = NULL;
    return p;
}

void async__fpool_close(async__fpool_t *p)
{
    if (!p) return;
    if (mag.pool == p) mag_flush(&mag);
    fpool_lock(p);
    atomic_store_explicit(&p->closed, true, memory_order_relaxed);
    void *list = p->blocks;
    p->blocks = p->last = NULL;
    p->count = 0;
    bool last = p->outstanding == 0;
    fpool_unlock(p);
    free_list(list);
    if (last) async__free(p);
}

/* Asks for the next block's first four lines (the ones a submit writes)
 * ahead of its use: a stream of submits cycles through more blocks than a
 * core's cache holds, and the workers wrote into them last, so each line is a
 * miss that would otherwise stall the submit's first atomic instruction.  A
 * prefetch never faults, so a smaller block's neighbour may be asked for too;
 * four fixed prefetches cost less than a loop bounded by the block size. */
static void prefetch_block(const void *blk)
{
    const char *b = blk;
    __builtin_prefetch(b, 1, 3);
    __builtin_prefetch(b + 64, 1, 3);
    __builtin_prefetch(b + 128, 1, 3);
    __builtin_prefetch(b + 192, 1, 3);
}

async_future_t *async__future_alloc_pooled(async__fpool_t *p, size_t extra)
{
    if (!p || sizeof(async_future_t) + extra > p->block) return async__future_alloc(extra);
    if (mag.pool != p) {
        mag_flush(&mag);
        pthread_once(&mag_once, mag_key_init);
        pthread_setspecific(mag_key, &mag);
        mag.pool = p;
    }
    if (!mag.n) { /* take the pool's whole list, or make one new block */
        fpool_lock(p);
        mag.head = p->blocks;
        mag.tail = p->last;
        mag.n = p->count;
        p->blocks = p->last = NULL;
        p->count = 0;
        p->outstanding += mag.n ? mag.n : 1;
        fpool_unlock(p);
        if (!mag.n) {
            void *blk = block_alloc(p->block);
            if (!blk) {
                fpool_lock(p);
                p->outstanding--; /* open: its owner is allocating */
                fpool_unlock(p);
                return NULL;
            }
            init(blk, p);
            return blk;
        }
    }
    void *blk = mag.head;
    if (!(mag.head = *(void **)blk)) mag.tail = NULL;
    else prefetch_block(mag.head);
    mag.n--;
    init(blk, p);
    return blk;
}

static void release_memory(async_future_t *f)
{
    async__fpool_t *p = f->pool;
    if (!p) {
        async__free(f);
        return;
    }
    if (mag.pool != p || atomic_load_explicit(&p->closed, memory_order_relaxed)) {
        *(void **)f = NULL;
        give_back(p, f, f, 1);
        return;
    }
    *(void **)f = mag.head;
    if (!mag.head) mag.tail = f;
    mag.head = f;
    if (++mag.n > MAG_MAX) { /* do not hoard: give all back, keep the pool */
        give_back(p, mag.head, mag.tail, mag.n);
        mag.head = mag.tail = NULL;
        mag.n = 0;
    }
}

int async_future_new(async_future_t **out)
{
    if (!out) return ASYNC_EINVAL;
    async_future_t *f = async__future_alloc(0);
    if (!f) return ASYNC_ENOMEM;
    *out = f;
    return 0;
}

void async_future_ref(async_future_t *f)
{
    atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed);
}

void async_future_unref(async_future_t *f)
{
    if (!f) return;
    if (atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) != 1) return;
    /* Last reference: no waiter is listening (waiters hold references), but
     * callbacks of a future that never finished (a submit that failed after
     * they were added) are still listed: they will never run. */
    while (!async__list_empty(&f->nodes)) {
        async__listener_t *l = container_of(async__list_pop(&f->nodes), async__listener_t, link);
        if (!l->notify) async__free(container_of(l, async__cb_node_t, l));
    }
    if (f->data_owned) async__free(f->data);
    if (f->msg_owned) async__free((void *)f->msg);
    release_memory(f);
}

/* Claims the result fields: moves a non-final state to COMPLETING, keeping the
 * flags.  Fails with the state found when it is final or being finished. */
static int claim(async_future_t *f, bool pending_only)
{
    unsigned s = atomic_load_explicit(&f->state, memory_order_relaxed);
    for (;;) {
        unsigned st = s & FS_MASK;
        if (st == FS_CANCELLED) return ASYNC_EALREADY;
        if (st != FS_PENDING && st != FS_RUNNING) return st == FS_COMPLETING ? ASYNC_EBUSY : ASYNC_EDONE;
        if (pending_only && st != FS_PENDING) return ASYNC_EBUSY;
        if (atomic_compare_exchange_weak_explicit(&f->state, &s, (s & ~FS_MASK) | FS_COMPLETING,
                                                  memory_order_acquire, memory_order_relaxed))
            return 0;
    }
}

/* With early_cb: publishes the outcome held (FS_HOLD), so that the first
 * callback sees it through the inspectors while every waiter still waits,
 * then runs that callback.  Python's AsyncResult runs its callback before
 * get() returns; map_async promises the same.  Waiters and callbacks that
 * arrive meanwhile are listed as usual (a held future is not final to
 * them) and are served by the release that follows. */
static void run_early(async_future_t *f, unsigned final)
{
    unsigned s = atomic_load_explicit(&f->state, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&f->state, &s, (s & ~FS_MASK) | final | FS_HOLD,
                                                  memory_order_release, memory_order_relaxed)) {
    }
    async__cb_node_t *first = NULL;
    lock(f);
    for (async__list_t *it = f->nodes.next; it != &f->nodes; it = it->next) {
        async__listener_t *l = container_of(it, async__listener_t, link);
        if (!l->notify) {
            async__list_remove(it);
            first = container_of(l, async__cb_node_t, l);
            break;
        }
    }
    unlock(f);
    if (first) {
        first->cb(f, first->arg);
        async__free(first);
    }
}

/* Publishes the final state, then wakes sleepers, notifies listeners and runs
 * the callbacks, in the order they were added, on this thread.  The caller
 * holds a reference, so callbacks may free theirs. */
static void publish(async_future_t *f, unsigned final)
{
    if (f->early_cb) run_early(f, final);
    unsigned s = atomic_load_explicit(&f->state, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&f->state, &s, final, memory_order_release,
                                                  memory_order_relaxed)) {
    }
    if (s & FS_SLEEPERS) async__futex_wake(&f->state, INT_MAX);
    if (!(s & FS_LISTENERS)) return;

    lock(f);
    async__cb_node_t *cbs = NULL, **tail = &cbs;
    while (!async__list_empty(&f->nodes)) {
        async__listener_t *l = container_of(async__list_pop(&f->nodes), async__listener_t, link);
        if (l->notify) {
            l->notify(l, f);
        } else {
            async__cb_node_t *c = container_of(l, async__cb_node_t, l);
            c->next = NULL;
            *tail = c;
            tail = &c->next;
        }
    }
    unlock(f);

    while (cbs) {
        async__cb_node_t *next = cbs->next;
        async_future_cb cb = cbs->cb;
        void *arg = cbs->arg;
        async__free(cbs);
        cb(f, arg);
        cbs = next;
    }
}

static void set_msg(async_future_t *f, const char *msg)
{
    f->msg = NULL;
    f->msg_owned = false;
    if (!msg || !*msg) return;
    size_t n = strnlen(msg, ASYNC_FUTURE_MSG_MAX - 1);
    char *copy = async__malloc(n + 1);
    if (!copy) return; /* the code still says what failed */
    memcpy(copy, msg, n);
    copy[n] = '\0';
    f->msg = copy;
    f->msg_owned = true;
}

static int norm_code(int code) { return code >= 0 ? ASYNC_EWORK : code; }

int async__future_finish(async_future_t *f, unsigned state, int err, const char *msg, void *data,
                         size_t size, bool owned)
{
    bool sole = f->exec_owned && !f->contested &&
                (atomic_load_explicit(&f->state, memory_order_relaxed) & FS_MASK) == FS_RUNNING;
    int r = sole ? 0 : claim(f, false);
    if (r) {
        if (owned) async__free(data);
        return r == ASYNC_EALREADY || r == ASYNC_EBUSY ? ASYNC_EDONE : r;
    }
    if (state == FS_DONE) {
        f->err = 0;
        f->data = data;
        f->size = size;
        f->data_owned = owned;
    } else {
        if (owned) async__free(data);
        f->err = norm_code(err);
        set_msg(f, msg);
    }
    publish(f, state);
    return 0;
}

int async__future_fail_at(async_future_t *f, int err, const char *msg, size_t index)
{
    bool sole = f->exec_owned && !f->contested &&
                (atomic_load_explicit(&f->state, memory_order_relaxed) & FS_MASK) == FS_RUNNING;
    int r = sole ? 0 : claim(f, false);
    if (r) return ASYNC_EDONE;
    f->err = norm_code(err);
    f->size = index;
    f->has_index = true;
    set_msg(f, msg);
    publish(f, FS_FAILED);
    return 0;
}

int async_future_set_running(async_future_t *f)
{
    if (f->exec_owned) return ASYNC_EPERM;
    return async__future_start(f);
}

int async__future_start(async_future_t *f)
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

int async_future_set_result(async_future_t *f, const void *data, size_t size)
{
    if (f->exec_owned) return ASYNC_EPERM;
    void *copy = NULL;
    if (size) {
        copy = async__malloc(size);
        if (!copy) {
            int r = async__future_finish(f, FS_FAILED, ASYNC_ENOMEM, "no memory for the result",
                                         NULL, 0, false);
            return r ? r : ASYNC_ENOMEM;
        }
        memcpy(copy, data, size);
    }
    return async__future_finish(f, FS_DONE, 0, NULL, copy, size, copy != NULL);
}

int async_future_set_error(async_future_t *f, int code, const char *msg)
{
    if (f->exec_owned) return ASYNC_EPERM;
    return async__future_finish(f, FS_FAILED, code, msg, NULL, 0, false);
}

async_future_state_t async_future_state(const async_future_t *f)
{
    unsigned s = atomic_load_explicit(&((async_future_t *)f)->state, memory_order_acquire) & FS_MASK;
    return s == FS_COMPLETING ? ASYNC_FUTURE_RUNNING : (async_future_state_t)s;
}

bool async_future_done(const async_future_t *f)
{
    return async__fs_final(atomic_load_explicit(&((async_future_t *)f)->state, memory_order_acquire));
}

static int outcome(const async_future_t *f, unsigned s)
{
    switch (s & FS_MASK) {
    case FS_DONE: return 0;
    case FS_FAILED: return f->err;
    case FS_CANCELLED: return ASYNC_ECANCELED;
    default: return ASYNC_EAGAIN;
    }
}

int async_future_error(const async_future_t *f)
{
    return outcome(f, atomic_load_explicit(&((async_future_t *)f)->state, memory_order_acquire));
}

const char *async_future_message(const async_future_t *f)
{
    if (!async__fs_decided(atomic_load_explicit(&((async_future_t *)f)->state, memory_order_acquire)))
        return "";
    return f->msg ? f->msg : "";
}

int async_future_error_index(const async_future_t *f, size_t *index)
{
    if (async_future_state(f) != ASYNC_FUTURE_FAILED || !f->has_index) return ASYNC_EINVAL;
    if (index) *index = f->size;
    return 0;
}

int async_future_result(const async_future_t *f, const void **data, size_t *size)
{
    int r = async_future_error(f);
    if (data) *data = r ? NULL : f->data;
    if (size) *size = r ? 0 : f->size;
    return r;
}

int async_future_cancel(async_future_t *f)
{
    int r = claim(f, true);
    if (r) return r;
    f->err = ASYNC_ECANCELED;
    f->msg = cancelled_msg;
    f->msg_owned = false;
    publish(f, FS_CANCELLED);
    return 0;
}

/* --- listeners and callbacks ------------------------------------------------ */

/* Sets LISTENERS unless final; the caller holds the lock. */
static bool mark_listening(async_future_t *f)
{
    unsigned s = atomic_load_explicit(&f->state, memory_order_acquire);
    for (;;) {
        if (async__fs_final(s)) return false;
        if (atomic_compare_exchange_weak_explicit(&f->state, &s, s | FS_LISTENERS,
                                                  memory_order_acq_rel, memory_order_acquire))
            return true;
    }
}

bool async__future_listen(async_future_t *f, async__listener_t *l)
{
    lock(f);
    bool ok = mark_listening(f);
    if (ok) async__list_push(&f->nodes, &l->link);
    unlock(f);
    return ok;
}

void async__future_unlisten(async_future_t *f, async__listener_t *l)
{
    lock(f);
    /* A notified node was popped, which leaves it linked to itself. */
    if (l->link.next != &l->link) async__list_remove(&l->link);
    unlock(f);
}

int async_future_on_done(async_future_t *f, async_future_cb cb, void *arg)
{
    if (!f || !cb) return ASYNC_EINVAL;
    if (!async_future_done(f)) {
        async__cb_node_t *node = async__malloc(sizeof *node);
        if (!node) return ASYNC_ENOMEM;
        node->l.notify = NULL;
        node->cb = cb;
        node->arg = arg;
        lock(f);
        if (mark_listening(f)) {
            async__list_push(&f->nodes, &node->l.link);
            unlock(f);
            return 0;
        }
        unlock(f);
        async__free(node); /* finished meanwhile */
    }
    cb(f, arg); /* final: run at once, here */
    return 0;
}

