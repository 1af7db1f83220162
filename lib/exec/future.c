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
    if (!f) return NULL;
    f->slab = NULL;
    async__future_init(f);
    return f;
}

/* --- the allocation cache ------------------------------------------------ */

/* A pool of equal blocks for one executor's futures, carved from slabs of
 * up to SLAB_MAX blocks: a fresh executor's first burst of submits costs one
 * malloc per slab instead of one per future, and freeing the executor one
 * free per slab (a malloc and a free per block were half of a trivial
 * job's instructions).  At most `cap` blocks are ever carved; past that a
 * submit's future is an ordinary allocation, freed when it is.
 *
 * Each thread keeps a magazine of blocks for the pool it used last, taken
 * from the pool and given back whole (constant time both ways, under the
 * pool's lock), so a thread that submits and frees in a stream touches no
 * lock and no atomic for its blocks.  `outstanding` counts the carved blocks
 * outside the pool's list (in use or in magazines).  While the pool is open
 * no slab is ever freed.  At close, the slabs whose blocks are all back are
 * freed, and each other slab counts its blocks still out (`live`) and is
 * freed by the give_back that brings its last one; the pool itself goes with
 * the last slab.  A magazine goes back when its thread switches pools, exits
 * (a key destructor) or closes the pool, or when it grows past MAG_MAX. */
typedef struct async__slab {
    struct async__slab *prev, *next; /* the pool's slabs, under its lock */
    async__fpool_t *pool;            /* read without the lock: set before any block is used */
    void *raw;                       /* what async__malloc returned */
    size_t n, live;                  /* blocks; live: after close, blocks still out */
} slab_t;

struct async__fpool {
    _Atomic unsigned char busy; /* spin_lock's word: every critical section is short */
    _Atomic bool closed; /* the owner is gone: the last block frees the pool */
    size_t outstanding;
    size_t block, cap, carved, count; /* count: blocks on the list */
    slab_t *slabs;
    void *blocks, *last; /* free blocks, linked through their first word */
};

#define MAG_MAX 4096
#define SLAB_MIN 8
#define SLAB_MAX 128 /* 32 KiB of 256-byte blocks: below malloc's mmap threshold */

_Thread_local async__magazine_t async__mag ASYNC_TLS;
static pthread_key_t mag_key;
static pthread_once_t mag_once = PTHREAD_ONCE_INIT;

static void fpool_lock(async__fpool_t *p) { spin_lock(&p->busy); }
static void fpool_unlock(async__fpool_t *p) { spin_unlock(&p->busy); }

/* Under the lock: unlinks s from p's slabs; the caller frees it. */
static void slab_unlink(async__fpool_t *p, slab_t *s)
{
    if (s->prev) s->prev->next = s->next;
    else p->slabs = s->next;
    if (s->next) s->next->prev = s->prev;
}

static void free_slabs(slab_t *s)
{
    while (s) {
        slab_t *next = s->next;
        async__free(s->raw);
        s = next;
    }
}

/* Gives back a chain of n blocks (head..tail): spliced into the pool while
 * it is open; after close each block is counted off its slab, and a slab
 * whose last block came back is freed, the pool with its last slab. */
static void give_back(async__fpool_t *p, void *head, void *tail, size_t n)
{
    slab_t *dead = NULL;
    fpool_lock(p);
    if (!atomic_load_explicit(&p->closed, memory_order_relaxed)) {
        *(void **)tail = p->blocks;
        if (!p->blocks) p->last = tail;
        p->blocks = head;
        p->count += n;
    } else {
        for (void *b = head, *next; b; b = next) {
            next = b == tail ? NULL : *(void **)b;
            slab_t *s = ((async_future_t *)b)->slab;
            if (--s->live == 0) {
                slab_unlink(p, s);
                s->next = dead;
                dead = s;
            }
        }
    }
    p->outstanding -= n;
    bool last = atomic_load_explicit(&p->closed, memory_order_relaxed) && p->outstanding == 0;
    fpool_unlock(p);
    free_slabs(dead);
    if (last) async__free(p);
}

static void mag_flush(async__magazine_t *m)
{
    if (m->pool && m->n) give_back(m->pool, m->head, m->tail, m->n);
    *m = (async__magazine_t){NULL, NULL, NULL, 0, 0};
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
    p->block = (block + 63) & ~(size_t)63; /* every block starts on a cache line */
    p->cap = cap;
    p->carved = p->count = 0;
    p->slabs = NULL;
    p->blocks = p->last = NULL;
    return p;
}

void async__fpool_close(async__fpool_t *p)
{
    if (!p) return;
    if (async__mag.pool == p) mag_flush(&async__mag);
    fpool_lock(p);
    atomic_store_explicit(&p->closed, true, memory_order_relaxed);
    slab_t *dead = NULL;
    if (p->outstanding == 0) { /* the usual case: every block is back */
        dead = p->slabs;
        p->slabs = NULL;
    } else {
        for (slab_t *s = p->slabs; s; s = s->next) s->live = s->n;
        for (void *b = p->blocks; b; b = *(void **)b) ((async_future_t *)b)->slab->live--;
        for (slab_t *s = p->slabs, *next; s; s = next) {
            next = s->next;
            if (s->live) continue;
            slab_unlink(p, s);
            s->next = dead;
            dead = s;
        }
    }
    p->blocks = p->last = NULL;
    p->count = 0;
    bool last = p->outstanding == 0;
    fpool_unlock(p);
    free_slabs(dead);
    if (last) async__free(p);
}

/* Carves a new slab of n blocks (its header on a line of its own) into the
 * empty magazine; the caller counted them in carved and outstanding.  False
 * when out of memory. */
static bool slab_carve(async__fpool_t *p, size_t n)
{
    char *raw = async__malloc(64 + 64 + n * p->block);
    if (!raw) return false;
    slab_t *s = (slab_t *)(((uintptr_t)raw + 63) & ~(uintptr_t)63);
    char *b = (char *)s + 64;
    *s = (slab_t){.prev = NULL, .pool = p, .raw = raw, .n = n, .live = 0};
    for (size_t i = 0; i < n; i++) {
        async_future_t *f = (async_future_t *)(b + i * p->block);
        f->slab = s;
        *(void **)f = i + 1 < n ? b + (i + 1) * p->block : NULL;
    }
    async__mag.head = b;
    async__mag.tail = b + (n - 1) * p->block;
    async__mag.n = n;
    fpool_lock(p);
    s->next = p->slabs;
    if (p->slabs) p->slabs->prev = s;
    p->slabs = s;
    fpool_unlock(p);
    return true;
}

/* Under ASan each future is its own allocation, so that ASan sees its
 * bounds: a small submit's job ends before async__job_t's next and bucket
 * (executor.c), and a stray access to them would land, inside a slab, in the
 * neighbouring block, which ASan cannot tell from this one.  The pool's slabs
 * stay covered by the plain, TSan and ucontext builds. */
#ifdef ASYNC_ASAN
#  define FUTURE_SLABS 0
#else
#  define FUTURE_SLABS 1
#endif

async_future_t *async__future_alloc_refill(async__fpool_t *p, size_t extra)
{
    if (!FUTURE_SLABS || !p || sizeof(async_future_t) + extra > p->block)
        return async__future_alloc(extra);
    if (async__mag.pool != p) {
        mag_flush(&async__mag);
        pthread_once(&mag_once, mag_key_init);
        pthread_setspecific(mag_key, &async__mag);
        async__mag.pool = p;
        async__mag.block = p->block;
    }
    if (!async__mag.n) { /* take the pool's whole list, or carve a new slab */
        /* An empty magazine keeps no block of its pool, so nothing kept that
         * pool alive: freed on another thread, its memory may be p now, a
         * pool of another block size (a lean pool's 128 bytes after a
         * bounded pool's 192).  The blocks about to come are p's. */
        async__mag.block = p->block;
        fpool_lock(p);
        async__mag.head = p->blocks;
        async__mag.tail = p->last;
        async__mag.n = p->count;
        size_t carve = 0;
        if (!async__mag.n && p->carved < p->cap) {
            /* Slabs grow with the pool, 8 blocks to SLAB_MAX, so that an
             * executor that runs a few jobs keeps a few blocks. */
            carve = p->carved < SLAB_MIN ? SLAB_MIN : p->carved > SLAB_MAX ? SLAB_MAX : p->carved;
            if (carve > p->cap - p->carved) carve = p->cap - p->carved;
            p->carved += carve;
        }
        p->blocks = p->last = NULL;
        p->count = 0;
        p->outstanding += async__mag.n + carve;
        fpool_unlock(p);
        if (!async__mag.n) {
            if (!carve) return async__future_alloc(extra); /* past the cap */
            if (!slab_carve(p, carve)) {
                fpool_lock(p);
                p->carved -= carve;
                p->outstanding -= carve; /* open: its owner is allocating */
                fpool_unlock(p);
                return NULL;
            }
        }
    }
    async_future_t *f = async__mag_pop(&async__mag);
    async__future_init(f);
    return f;
}

static inline __attribute__((always_inline)) void release_memory(async_future_t *f)
{
    slab_t *s = f->slab;
    if (!s) {
        async__free(f);
        return;
    }
    async__fpool_t *p = s->pool;
    if (async__mag.pool != p || atomic_load_explicit(&p->closed, memory_order_relaxed)) {
        /* A pool closed on another thread (its executor freed there) could
         * not reach this thread's magazine: give its blocks back now, or
         * they and their slabs would stay until this thread exits.  First,
         * while f, still out, keeps the pool alive. */
        if (async__mag.pool == p) mag_flush(&async__mag);
        *(void **)f = NULL;
        give_back(p, f, f, 1);
        return;
    }
    /* An empty magazine may name a pool freed on another thread whose
     * memory p now is (see async__future_alloc_refill): its block size is
     * then another pool's, and must be p's before p's blocks go in. */
    if (!async__mag.n) async__mag.block = p->block;
    *(void **)f = async__mag.head;
    if (!async__mag.head) async__mag.tail = f;
    async__mag.head = f;
    if (++async__mag.n > MAG_MAX) { /* do not hoard: give all back, keep the pool */
        give_back(p, async__mag.head, async__mag.tail, async__mag.n);
        async__mag.head = async__mag.tail = NULL;
        async__mag.n = 0;
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

/* Inlined into both async_future_unref and async__future_free, so that the
 * caller's last unref of a future makes one call, not two. */
static inline __attribute__((always_inline)) void free_future(async_future_t *f)
{
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

void async__future_free(async_future_t *f) { free_future(f); }

/* A caller that sees one reference left holds it alone: nobody else can
 * take one (a new reference comes only from a holder), so the last unref
 * frees without its locked read-modify-write, which on a stream of futures
 * (a submit loop's unrefs) cost as much as the rest of the free.  The
 * acquire load synchronizes with the release of every earlier unref (the
 * executor's drop after its finish), as the read-modify-write would. */
void async_future_unref(async_future_t *f)
{
    if (!f) return;
    if (atomic_load_explicit(&f->refs, memory_order_acquire) == 1 ||
        atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) == 1)
        free_future(f);
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

/* Notifies the listeners and runs the callbacks of a future just made
 * final, in the order they were added, on this thread. */
static __attribute__((noinline)) void notify_all(async_future_t *f)
{
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

/* Publishes the final state, then wakes sleepers, notifies listeners and runs
 * the callbacks.  The caller holds a reference, so callbacks may free
 * theirs.  Inlined: a future nobody waits on is finished by one exchange,
 * and a call would cost as much again; listeners are out of line. */
static inline __attribute__((always_inline)) void publish(async_future_t *f, unsigned final)
{
    if (f->early_cb) run_early(f, final);
    unsigned s = atomic_exchange_explicit(&f->state, final, memory_order_release);
    if (s & (FS_SLEEPERS | FS_LISTENERS)) async__future_released(f, s);
}

void async__future_released(async_future_t *f, unsigned s)
{
    if (s & FS_SLEEPERS) async__futex_wake(&f->state, INT_MAX);
    if (s & FS_LISTENERS) notify_all(f);
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

