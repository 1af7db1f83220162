/* Waiting for futures: blocking waits from any thread (one future, many
 * futures with the wait modes, as_completed) and awaiting from a task.
 *
 * Blocking waits sleep on a futex: a single future's waiters on its state
 * word, a multi-future wait on a word of its own that listeners bump, an
 * as-completed iterator on a condition variable.  A task never blocks its
 * thread: an as-completed iterator lists it with its task waiters
 * (waiters_internal.h), and an await registers a listener that posts to its loop, with the post node
 * embedded in a heap record shared by the task and the post, so that a task
 * that timed out or was cancelled meanwhile leaves nothing behind that a late
 * completion could touch. */
#include <stdio.h>
#include <string.h>
#include "future_internal.h"
#include "waiters_internal.h"

/* How long a waiter spins before it sleeps, and how many pauses pass
 * between looks at the clock.  The spin must outlast the wake-up of a worker
 * that slept (several microseconds on a VM): with a shorter one, a loop of
 * one job at a time settles into both sides sleeping on every trip, each
 * waiting for the other's wake-up (in alternating runs on the loaded VM,
 * 3 us gave round trips of 2 to 6 us, 10 us mostly 1.4 to 1.9 us).  A count of pauses instead of a time would
 * vary tenfold across CPUs (a pause takes 10 to 140 cycles). */
#define SPIN_NS ASYNC_USEC(10)
#define CLOCK_POLL 16

/* How far ahead a wait for all asks for the futures' lines. */
#define WAIT_AHEAD 8

/* --- blocking waits ---------------------------------------------------------- */

/* Spins up to SPIN_NS for f to become final; returns the state last seen. */
static unsigned spin_until_final(async_future_t *f, unsigned s)
{
    int64_t until = async_now() + SPIN_NS;
    for (unsigned i = 1; !async__fs_final(s); i++) {
        async__cpu_relax();
        s = atomic_load_explicit(&f->state, memory_order_acquire);
        if (i % CLOCK_POLL == 0 && async_now() >= until) break;
    }
    return s;
}

int async__future_wait(async_future_t *f, int64_t deadline, bool spin)
{
    unsigned s = atomic_load_explicit(&f->state, memory_order_acquire);
    /* Spin a little first: when futures finish in a stream (a waiter walking
     * a batch), the next one is often a moment away, and sleeping would cost
     * a system call on both sides.  Not for long work, such as a map: a
     * spinning waiter holds the CPU that a worker it just woke should get. */
    if (spin && !async__fs_final(s)) s = spin_until_final(f, s);
    for (;;) {
        if (async__fs_final(s)) return async_future_error(f);
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

int async_future_wait_dl(async_future_t *f, int64_t deadline)
{
    return async__future_wait(f, deadline, true);
}

int async_future_wait(async_future_t *f) { return async__future_wait(f, ASYNC_FOREVER, true); }

/* Checks mode over fs; true when satisfied, with *index set.  *from is the
 * first index not known final (finals never change). */
static bool satisfied(async_future_t *const *fs, size_t n, async_wait_mode_t mode, size_t *from,
                      size_t *index)
{
    if (mode != ASYNC_WAIT_ALL) {
        for (size_t i = 0; i < n; i++) {
            unsigned raw = atomic_load_explicit(&fs[i]->state, memory_order_acquire);
            unsigned st = raw & FS_MASK;
            if (raw & FS_HOLD) continue; /* its early callback still runs */
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
        /* One at a time: no allocation, each wait ends when that one is final.
         * The states a few places ahead are asked for early: a worker wrote
         * each last, so each look is a transfer from its core, and a batch
         * of finished futures would otherwise cost one stall per future. */
        for (size_t i = 0; i < n; i++) {
            if (i + WAIT_AHEAD < n) __builtin_prefetch(fs[i + WAIT_AHEAD], 1, 3);
            if (async__fs_final(atomic_load_explicit(&fs[i]->state, memory_order_acquire))) continue;
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

/* async_futures_await_dl; shielded, a cancellation of the task neither ends
 * the wait nor prevents it (the caller must wait for memory the work still
 * writes). */
static int await_many(async_future_t *const *fs, size_t n, async_wait_mode_t mode, size_t *index,
                      int64_t deadline, bool shielded)
{
    int r = check_many(fs, n, mode);
    if (r) return r;
    size_t from = 0, idx = 0;
    for (;;) {
        if (satisfied(fs, n, mode, &from, &idx)) break;
        async_waker_t waker = async_task_waker();
        if (!waker.ptr_) return ASYNC_ENOTASK;
        if (!shielded && async_task_cancelled()) return ASYNC_ECANCELED;
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

int async_futures_await_dl(async_future_t *const *fs, size_t n, async_wait_mode_t mode, size_t *index,
                           int64_t deadline)
{
    return await_many(fs, n, mode, index, deadline, false);
}

int async__future_await_shielded(async_future_t *f)
{
    async_task_impl_t *self = async__current();
    if (!self) return ASYNC_ENOTASK;
    /* The task's shield makes its suspensions deaf to a cancel (the core's
     * park and cancel honour it); the cancel stays recorded for the task's
     * next wait.  Retried on ENOMEM: the caller must not return before f is
     * final. */
    bool was = self->shielded;
    self->shielded = true;
    int r;
    while ((r = await_many(&f, 1, ASYNC_WAIT_ALL, NULL, ASYNC_FOREVER, true)) == ASYNC_ENOMEM)
        async__task_park(self, async_deadline_after(ASYNC_MSEC(1))); /* deaf to cancel */
    self->shielded = was;
    return r ? r : async_future_error(f);
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
    pthread_cond_t cond;      /* threads waiting in next */
    async__twaiters_t tasks;  /* tasks waiting in next, under mu */
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
    async__twaiters_wake_locked(&it->tasks); /* a post: short, as a notify must be */
    pthread_mutex_unlock(&it->mu);
}

int async_as_completed_new(async_as_completed_t **out, async_future_t *const *fs, size_t n)
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
    async__cond_init_monotonic(&it->cond, false);
    async__twaiters_init(&it->tasks);
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
    bool task = async__in_task();
    int r = 0;
    pthread_mutex_lock(&it->mu);
    it->msg[0] = '\0';
    while (it->head == it->tail) {
        if (it->head == it->n) {
            r = ASYNC_EEOF;
            break;
        }
        /* A task sleeps through its loop; a thread on the condition. */
        int w = task ? async__twait_locked(&it->tasks, &it->mu, deadline)
                     : async__cond_wait_dl(&it->cond, &it->mu, deadline) == ETIMEDOUT
                           ? ASYNC_ETIMEDOUT
                           : 0;
        if (w && it->head == it->tail) {
            if (w == ASYNC_ETIMEDOUT)
                snprintf(it->msg, sizeof it->msg, "%zu of %zu futures unfinished",
                         it->n - it->tail, it->n);
            r = w;
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
        async_future_unref(it->fs[i]);
    }
    pthread_cond_destroy(&it->cond);
    pthread_mutex_destroy(&it->mu);
    async__free(it->order);
    async__free(it->fs);
    async__free(it->nodes);
    async__free(it);
}
