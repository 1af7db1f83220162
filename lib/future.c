/* Futures: one result produced by some thread and consumed by threads or
 * tasks.  The guarantees are those of include/async/future.h; the state
 * machine and its memory ordering are described in future_internal.h.
 *
 * Blocking waits sleep on a futex: a single future's waiters on its state
 * word, a multi-future wait or an as-completed iterator on a word or a
 * condition variable of its own that listeners bump.  A task never blocks its
 * thread: it registers a listener that posts to its loop (with a post node
 * embedded in a heap record, so that a task that timed out or was cancelled
 * meanwhile leaves nothing behind that a late completion could touch). */
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "future_internal.h"

static const char cancelled_msg[] = "cancelled before it ran";

/* Pauses a waiter spins through before it sleeps (a few microseconds). */
#define SPIN_LOOPS 200

static void init(async_future_t *f, async__fpool_t *pool)
{
    atomic_init(&f->state, FS_PENDING);
    atomic_init(&f->refs, 1);
    f->err = 0;
    atomic_init(&f->lock, 0);
    f->data_owned = f->msg_owned = f->exec_owned = f->has_index = 0;
    f->data = NULL;
    f->size = 0;
    f->pool = pool;
    f->msg = NULL;
    async__list_init(&f->nodes);
}

static void lock(async_future_t *f)
{
    while (atomic_exchange_explicit(&f->lock, 1, memory_order_acquire))
        while (atomic_load_explicit(&f->lock, memory_order_relaxed)) sched_yield();
}

static void unlock(async_future_t *f) { atomic_store_explicit(&f->lock, 0, memory_order_release); }

async_future_t *async__future_alloc(size_t extra)
{
    async_future_t *f = async__malloc(sizeof *f + extra);
    if (f) init(f, NULL);
    return f;
}

/* --- the allocation cache ------------------------------------------------ */

struct async__fpool {
    _Atomic bool busy;   /* a spin lock: every critical section is a few loads and stores */
    size_t outstanding;  /* futures taken and not freed */
    size_t block, cap, count;
    void *blocks;        /* free blocks, linked through their first word */
    bool closed;         /* the owner is gone: the last future frees the pool */
};

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

static void fpool_lock(async__fpool_t *p)
{
    while (atomic_exchange_explicit(&p->busy, true, memory_order_acquire))
        while (atomic_load_explicit(&p->busy, memory_order_relaxed)) sched_yield();
}

static void fpool_unlock(async__fpool_t *p)
{
    atomic_store_explicit(&p->busy, false, memory_order_release);
}

async__fpool_t *async__fpool_new(size_t block, size_t cap)
{
    async__fpool_t *p = async__malloc(sizeof *p);
    if (!p) return NULL;
    atomic_init(&p->busy, false);
    p->outstanding = 0;
    p->block = block;
    p->cap = cap;
    p->count = 0;
    p->blocks = NULL;
    p->closed = false;
    return p;
}

void async__fpool_close(async__fpool_t *p)
{
    if (!p) return;
    fpool_lock(p);
    p->closed = true;
    void *list = p->blocks;
    p->blocks = NULL;
    p->count = 0;
    bool last = p->outstanding == 0;
    fpool_unlock(p);
    while (list) {
        void *next = *(void **)list;
        block_free(list);
        list = next;
    }
    if (last) async__free(p);
}

async_future_t *async__future_alloc_pooled(async__fpool_t *p, size_t extra)
{
    if (!p || sizeof(async_future_t) + extra > p->block) return async__future_alloc(extra);
    fpool_lock(p);
    void *blk = p->blocks;
    if (blk) {
        p->blocks = *(void **)blk;
        p->count--;
    }
    p->outstanding++;
    fpool_unlock(p);
    if (!blk && !(blk = block_alloc(p->block))) {
        fpool_lock(p);
        p->outstanding--; /* not closed: its owner is allocating */
        fpool_unlock(p);
        return NULL;
    }
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
    fpool_lock(p);
    bool keep = !p->closed && p->count < p->cap;
    if (keep) {
        *(void **)f = p->blocks;
        p->blocks = f;
        p->count++;
    }
    bool last = --p->outstanding == 0 && p->closed;
    fpool_unlock(p);
    if (!keep) block_free(f);
    if (last) async__free(p);
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

void async_future_free(async_future_t *f)
{
    if (!f) return;
    if (atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) != 1) return;
    /* Last reference: nobody can be listening (listeners hold references). */
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

/* Publishes the final state, then wakes sleepers, notifies listeners and runs
 * the callbacks, in the order they were added, on this thread.  The caller
 * holds a reference, so callbacks may free theirs. */
static void publish(async_future_t *f, unsigned final)
{
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
    bool sole = f->exec_owned &&
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
    bool sole = f->exec_owned &&
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
    if (!async_future_done(f)) return "";
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

/* --- blocking waits ---------------------------------------------------------- */

int async_future_wait_dl(async_future_t *f, int64_t deadline)
{
    unsigned s = atomic_load_explicit(&f->state, memory_order_acquire);
    /* Spin a little first: when futures finish in a stream (a waiter walking
     * a batch), the next one is often a moment away, and sleeping would cost
     * a system call on both sides. */
    for (unsigned i = 0; i < SPIN_LOOPS && !async__fs_final(s); i++) {
        async__cpu_relax();
        s = atomic_load_explicit(&f->state, memory_order_acquire);
    }
    for (;;) {
        if (async__fs_final(s)) return outcome(f, s);
        if (deadline != ASYNC_FOREVER && async_now() >= deadline) return ASYNC_ETIMEDOUT;
        if (!(s & FS_SLEEPERS)) {
            if (!atomic_compare_exchange_weak_explicit(&f->state, &s, s | FS_SLEEPERS,
                                                       memory_order_acquire, memory_order_acquire))
                continue;
            s |= FS_SLEEPERS;
        }
        async__futex_wait(&f->state, s, deadline);
        s = atomic_load_explicit(&f->state, memory_order_acquire);
    }
}

int async_future_wait(async_future_t *f) { return async_future_wait_dl(f, ASYNC_FOREVER); }

/* Checks mode over fs; true when satisfied, with *index set.  *from is the
 * first index not known final (finals never change). */
static bool satisfied(async_future_t *const *fs, size_t n, async_wait_mode_t mode, size_t *from,
                      size_t *index)
{
    if (mode != ASYNC_WAIT_ALL) {
        for (size_t i = 0; i < n; i++) {
            unsigned st = atomic_load_explicit(&fs[i]->state, memory_order_acquire) & FS_MASK;
            if (mode == ASYNC_WAIT_FIRST_COMPLETED ? async__fs_final(st)
                                                   : st == FS_FAILED || st == FS_CANCELLED) {
                *index = i;
                return true;
            }
        }
        if (mode == ASYNC_WAIT_FIRST_COMPLETED) return n == 0 && (*index = 0, true);
    }
    while (*from < n && async_future_done(fs[*from])) (*from)++;
    *index = n;
    return *from == n;
}

static int check_many(async_future_t *const *fs, size_t n, async_wait_mode_t mode)
{
    if (mode != ASYNC_WAIT_ALL && mode != ASYNC_WAIT_FIRST_COMPLETED && mode != ASYNC_WAIT_FIRST_FAILURE)
        return ASYNC_EINVAL;
    if (n && !fs) return ASYNC_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!fs[i]) return ASYNC_EINVAL;
    return 0;
}

typedef struct wait_node {
    async__listener_t l;
    _Atomic unsigned *seq;
} wait_node_t;

static void wait_notify(async__listener_t *l, async_future_t *f)
{
    (void)f;
    wait_node_t *w = container_of(l, wait_node_t, l);
    atomic_fetch_add_explicit(w->seq, 1, memory_order_release);
    async__futex_wake(w->seq, 1);
}

int async_futures_wait_dl(async_future_t *const *fs, size_t n, async_wait_mode_t mode, size_t *index,
                          int64_t deadline)
{
    int r = check_many(fs, n, mode);
    if (r) return r;
    size_t from = 0, idx = 0;
    if (mode == ASYNC_WAIT_ALL) {
        /* One at a time: no allocation, each wait ends when that one is final. */
        for (size_t i = 0; i < n; i++) {
            r = async_future_wait_dl(fs[i], deadline);
            if (r == ASYNC_ETIMEDOUT && !async_future_done(fs[i])) return r;
        }
        if (index) *index = n;
        return 0;
    }
    if (satisfied(fs, n, mode, &from, &idx)) goto out;

    wait_node_t *nodes = async__calloc(n, sizeof *nodes);
    if (!nodes) return ASYNC_ENOMEM;
    _Atomic unsigned seq = 0;
    for (size_t i = 0; i < n; i++) {
        nodes[i].l.notify = wait_notify;
        nodes[i].seq = &seq;
        async__list_init(&nodes[i].l.link);
        async__future_listen(fs[i], &nodes[i].l);
    }
    r = 0;
    for (;;) {
        unsigned seen = atomic_load_explicit(&seq, memory_order_acquire);
        if (satisfied(fs, n, mode, &from, &idx)) break;
        if (async__futex_wait(&seq, seen, deadline) == ETIMEDOUT &&
            !satisfied(fs, n, mode, &from, &idx)) {
            r = ASYNC_ETIMEDOUT;
            break;
        }
    }
    /* Taking each lock also waits out a notify still running on a node. */
    for (size_t i = 0; i < n; i++) async__future_unlisten(fs[i], &nodes[i].l);
    async__free(nodes);
    if (r) return r;
out:
    if (index) *index = idx;
    return 0;
}

int async_futures_wait(async_future_t *const *fs, size_t n, async_wait_mode_t mode, size_t *index)
{
    return async_futures_wait_dl(fs, n, mode, index, ASYNC_FOREVER);
}

/* --- awaiting from a task -------------------------------------------------- */

/* One suspension's worth of listening.  The record is shared by the task and
 * by at most one post in flight; whoever drops the last reference frees it.
 * Once the task has unlistened every node (taking each future's lock), no
 * notify can start, so `refs` only counts the task and that post. */
typedef struct await_rec {
    async__post_t post;
    async_waker_t waker;
    async_loop_t *loop;
    _Atomic unsigned posted;
    _Atomic unsigned refs;
    struct await_node {
        async__listener_t l;
        struct await_rec *rec;
    } nodes[];
} await_rec_t;

static void await_drop(await_rec_t *rec)
{
    if (atomic_fetch_sub_explicit(&rec->refs, 1, memory_order_acq_rel) == 1) async__free(rec);
}

/* On the loop's thread: wakes the task if it is still in that suspension. */
static void await_posted(void *arg)
{
    await_rec_t *rec = arg;
    async_waker_wake(rec->waker, 0); /* ASYNC_ESRCH for a stale waker: fine */
    await_drop(rec);
}

static void await_notify(async__listener_t *l, async_future_t *f)
{
    (void)f;
    await_rec_t *rec = container_of(l, struct await_node, l)->rec;
    if (atomic_exchange_explicit(&rec->posted, 1, memory_order_acq_rel)) return;
    atomic_fetch_add_explicit(&rec->refs, 1, memory_order_relaxed);
    async__loop_post_node(rec->loop, &rec->post);
}

int async_futures_await_dl(async_future_t *const *fs, size_t n, async_wait_mode_t mode, size_t *index,
                           int64_t deadline)
{
    int r = check_many(fs, n, mode);
    if (r) return r;
    size_t from = 0, idx = 0;
    for (;;) {
        if (satisfied(fs, n, mode, &from, &idx)) break;
        async_waker_t waker = async_task_waker();
        if (!waker.ptr_) return ASYNC_ENOTASK;
        if (async_task_cancelled()) return ASYNC_ECANCELED;
        if (deadline != ASYNC_FOREVER && async_now() >= deadline) return ASYNC_ETIMEDOUT;
        /* ALL listens on the first unfinished one only; the others on all. */
        size_t lo = mode == ASYNC_WAIT_ALL ? from : 0;
        size_t hi = mode == ASYNC_WAIT_ALL ? from + 1 : n;
        await_rec_t *rec = async__malloc(sizeof *rec + (hi - lo) * sizeof rec->nodes[0]);
        if (!rec) return ASYNC_ENOMEM;
        rec->post.fn = await_posted;
        rec->post.arg = rec;
        rec->post.owned = false;
        rec->waker = waker;
        rec->loop = async_waker_loop(waker);
        atomic_init(&rec->posted, 0);
        atomic_init(&rec->refs, 1);
        bool missed = false;
        size_t listened = 0;
        for (size_t i = lo; i < hi; i++, listened++) {
            struct await_node *nd = &rec->nodes[i - lo];
            nd->rec = rec;
            nd->l.notify = await_notify;
            async__list_init(&nd->l.link);
            if (!async__future_listen(fs[i], &nd->l)) {
                missed = true; /* finished meanwhile: recheck without sleeping */
                listened++;
                break;
            }
        }
        r = missed ? 0 : async_task_suspend_dl(deadline);
        for (size_t i = 0; i < listened; i++) async__future_unlisten(fs[lo + i], &rec->nodes[i].l);
        await_drop(rec);
        if (r == ASYNC_ETIMEDOUT || r == ASYNC_ECANCELED) {
            if (r == ASYNC_ETIMEDOUT && satisfied(fs, n, mode, &from, &idx)) break;
            return r;
        }
        if (r && r != ASYNC_ESRCH) return r;
    }
    if (index) *index = idx;
    return 0;
}

int async_future_await_dl(async_future_t *f, int64_t deadline)
{
    if (!f) return ASYNC_EINVAL;
    int r = async_futures_await_dl(&f, 1, ASYNC_WAIT_ALL, NULL, deadline);
    return r ? r : async_future_error(f);
}

int async_future_await(async_future_t *f) { return async_future_await_dl(f, ASYNC_FOREVER); }

/* --- as_completed ------------------------------------------------------------ */

struct async_as_completed {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    size_t n, head, tail; /* order[head..tail) finished, not yet yielded */
    size_t *order;
    async_future_t **fs;
    struct ac_node {
        async__listener_t l;
        struct async_as_completed *it;
        size_t index;
    } *nodes;
    char msg[96];
};

static void ac_notify(async__listener_t *l, async_future_t *f)
{
    (void)f;
    struct ac_node *nd = container_of(l, struct ac_node, l);
    async_as_completed_t *it = nd->it;
    pthread_mutex_lock(&it->mu);
    it->order[it->tail++] = nd->index;
    pthread_cond_signal(&it->cond);
    pthread_mutex_unlock(&it->mu);
}

int async_as_completed_new(async_future_t *const *fs, size_t n, async_as_completed_t **out)
{
    int r = check_many(fs, n, ASYNC_WAIT_ALL);
    if (r) return r;
    if (!out) return ASYNC_EINVAL;
    async_as_completed_t *it = async__calloc(1, sizeof *it);
    if (!it) return ASYNC_ENOMEM;
    it->n = n;
    it->order = async__malloc((n ? n : 1) * sizeof *it->order);
    it->fs = async__malloc((n ? n : 1) * sizeof *it->fs);
    it->nodes = async__malloc((n ? n : 1) * sizeof *it->nodes);
    if (!it->order || !it->fs || !it->nodes) {
        async__free(it->order);
        async__free(it->fs);
        async__free(it->nodes);
        async__free(it);
        return ASYNC_ENOMEM;
    }
    pthread_mutex_init(&it->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&it->cond, &ca);
    pthread_condattr_destroy(&ca);
    for (size_t i = 0; i < n; i++) {
        it->fs[i] = fs[i];
        async_future_ref(fs[i]);
        it->nodes[i].it = it;
        it->nodes[i].index = i;
        it->nodes[i].l.notify = ac_notify;
        async__list_init(&it->nodes[i].l.link);
        if (!async__future_listen(fs[i], &it->nodes[i].l)) {
            pthread_mutex_lock(&it->mu);
            it->order[it->tail++] = i;
            pthread_mutex_unlock(&it->mu);
        }
    }
    *out = it;
    return 0;
}

int async_as_completed_next_dl(async_as_completed_t *it, size_t *index, int64_t deadline)
{
    int r = 0;
    pthread_mutex_lock(&it->mu);
    it->msg[0] = '\0';
    while (it->head == it->tail) {
        if (it->head == it->n) {
            r = ASYNC_EEOF;
            break;
        }
        if (deadline == ASYNC_FOREVER) {
            pthread_cond_wait(&it->cond, &it->mu);
            continue;
        }
        struct timespec ts = {(time_t)(deadline / 1000000000), (long)(deadline % 1000000000)};
        if (deadline < 0) ts.tv_sec = ts.tv_nsec = 0;
        if (pthread_cond_timedwait(&it->cond, &it->mu, &ts) == ETIMEDOUT && it->head == it->tail) {
            snprintf(it->msg, sizeof it->msg, "%zu of %zu futures unfinished", it->n - it->tail, it->n);
            r = ASYNC_ETIMEDOUT;
            break;
        }
    }
    if (!r) {
        size_t i = it->order[it->head++];
        if (index) *index = i;
    }
    pthread_mutex_unlock(&it->mu);
    return r;
}

size_t async_as_completed_unfinished(async_as_completed_t *it)
{
    pthread_mutex_lock(&it->mu);
    size_t u = it->n - it->tail;
    pthread_mutex_unlock(&it->mu);
    return u;
}

const char *async_as_completed_message(const async_as_completed_t *it) { return it->msg; }

void async_as_completed_free(async_as_completed_t *it)
{
    if (!it) return;
    for (size_t i = 0; i < it->n; i++) {
        async__future_unlisten(it->fs[i], &it->nodes[i].l);
        async_future_free(it->fs[i]);
    }
    pthread_cond_destroy(&it->cond);
    pthread_mutex_destroy(&it->mu);
    async__free(it->order);
    async__free(it->fs);
    async__free(it->nodes);
    async__free(it);
}
