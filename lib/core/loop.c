/* The loop: a libev loop plus the task scheduler's watchers, and the one
 * thread-safe entry point, async_loop_post.
 *
 * Scheduling: ready tasks are run from an ev_prepare watcher, that is once per
 * loop iteration just before libev polls.  While tasks are ready an ev_idle
 * watcher is active so that the poll does not block.  Each live task holds
 * one libev reference (ev_ref), so ev_run keeps going while tasks exist even
 * when they wait on things libev cannot see (futures completed by threads).
 * The loop owns the order: one FIFO ready queue, and a budget of BUDGET
 * switches per run after which control returns to libev, so that a set of
 * tasks waking each other cannot starve I/O and timers.  task.c does the
 * switches and asks async__loop_next whom to switch to.
 *
 * Posts: producers push nodes on a lock-free stack (compare-and-swap) and
 * signal one ev_async; the loop takes the whole stack with one exchange and
 * reverses it, so functions posted by one thread run in order, each exactly
 * once.  The ev_async watcher is unreferenced: pending posts alone do not keep
 * the loop running.
 *
 * Running out of descriptors: libev makes its wakeup descriptor (an eventfd,
 * or a pipe) when the first async or signal watcher starts, and if both fail
 * it calls its syserr callback in a loop around pipe(); the default callback
 * aborts.  So a loop is built while this thread holds a reserve of two
 * descriptors (a pipe of our own).  Our syserr callback, when that reserve is
 * held, closes it and returns: libev's retry of pipe() then succeeds in the
 * two freed slots, construction completes, and loop_init tears the loop down
 * again and returns ASYNC_EMFILE or ASYNC_ENFILE.  Loops are built one at a
 * time (build_mu), so two threads building loops never take each other's
 * freed slots; the reserve holds two pipes, so a thread that opens
 * descriptors in that instant (a curl socket) must take four before libev
 * is short, and then the callback waits a little for descriptors to free
 * before it gives up.  A syserr outside construction (a raw libev watcher of
 * the program's, an ev_loop_fork) still ends the process as libev's own
 * callback would.  The
 * backend is asked for as epoll alone where libev has it, so that running out
 * of descriptors fails the loop instead of quietly falling back to poll. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "core_internal.h"

/* Task switches in a row before libev polls again. */
#define BUDGET 1024

static _Thread_local async_loop_t *current_loop;
static async_loop_t *default_loop;
static pthread_mutex_t default_lock = PTHREAD_MUTEX_INITIALIZER;

static void run_posts(async_loop_t *loop)
{
    async__post_t *list = atomic_exchange_explicit(&loop->posts, NULL, memory_order_acquire);
    async__post_t *fifo = NULL;
    while (list) { /* reverse: the stack is newest first */
        async__post_t *next = list->next;
        list->next = fifo;
        fifo = list;
        list = next;
    }
    while (fifo) {
        async__post_t *next = fifo->next;
        void (*fn)(void *) = fifo->fn;
        void *arg = fifo->arg;
        if (fifo->owned) async__free(fifo);
        fn(arg); /* may free a caller-owned node: read it first */
        fifo = next;
    }
}

/* --- libev's process-wide hooks ------------------------------------------ */

static pthread_once_t hooks_once = PTHREAD_ONCE_INIT;
#define RESERVE_PIPES 2
#define RESERVE_WAITS 200 /* x 5 ms: how long a build waits for others' descriptors */
static pthread_mutex_t build_mu = PTHREAD_MUTEX_INITIALIZER;
static _Thread_local struct {
    int fds[RESERVE_PIPES][2];
    int held;     /* pipes of fds still open */
    bool building; /* inside loop_init, between reserve_take and reserve_give */
    int waits;
    int hit; /* the negated errno libev ran into, or 0 */
} reserve;

static void on_syserr(const char *msg)
{
    int err = errno;
    if (reserve.building && (err == EMFILE || err == ENFILE)) {
        reserve.hit = -err;
        if (reserve.held > 0) {
            reserve.held--;
            close(reserve.fds[reserve.held][0]);
            close(reserve.fds[reserve.held][1]);
            return; /* libev retries pipe() in the two slots just freed */
        }
        if (reserve.waits++ < RESERVE_WAITS) {
            /* Another thread took the freed slots: its descriptors come and
             * go (sockets), so wait for two to free rather than abort. */
            usleep(5000);
            return;
        }
    }
    /* What libev's own callback does: nothing can be returned to anyone. */
    char line[256];
    int n = snprintf(line, sizeof line, "%s: %s\n", msg ? msg : "(libev) system error",
                     strerror(err));
    if (n > 0 && write(2, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1) < 0) {
        /* nothing more to do */
    }
    abort();
}

static void install_hooks(void)
{
    ev_set_syserr_cb(on_syserr);
    ev_set_allocator(async__ev_realloc);
}

/* Takes build_mu and the reserve; fails (holding neither) with the
 * descriptor error if the reserve's descriptors are not free. */
static int reserve_take(void)
{
    pthread_mutex_lock(&build_mu);
    reserve.hit = 0;
    reserve.waits = 0;
    reserve.held = 0;
    for (; reserve.held < RESERVE_PIPES; reserve.held++) {
        if (pipe2(reserve.fds[reserve.held], O_CLOEXEC) != 0) {
            int err = errno == EMFILE || errno == ENFILE ? -errno : ASYNC_EIO;
            while (reserve.held > 0) {
                reserve.held--;
                close(reserve.fds[reserve.held][0]);
                close(reserve.fds[reserve.held][1]);
            }
            pthread_mutex_unlock(&build_mu);
            return err;
        }
    }
    reserve.building = true;
    return 0;
}

/* Gives the reserve and build_mu back; returns the error libev hit
 * meanwhile, or 0. */
static int reserve_give(void)
{
    while (reserve.held > 0) {
        reserve.held--;
        close(reserve.fds[reserve.held][0]);
        close(reserve.fds[reserve.held][1]);
    }
    reserve.building = false;
    pthread_mutex_unlock(&build_mu);
    return reserve.hit;
}

static unsigned backend_flags(void)
{
    return ev_supported_backends() & EVBACKEND_EPOLL ? EVBACKEND_EPOLL : EVFLAG_AUTO;
}

/* --- scheduling order ---------------------------------------------------- */

void async__task_ready(async_task_impl_t *t)
{
    async_loop_t *loop = t->loop;
    t->state = TASK_READY;
    t->next_ready = NULL;
    if (loop->ready_tail) loop->ready_tail->next_ready = t;
    else loop->ready_head = t;
    loop->ready_tail = t;
    /* Outside the scheduler (a libev callback, a post), make sure the next
     * poll does not block before the prepare watcher runs the task. */
    if (!loop->current && !ev_is_active(&loop->idle)) ev_idle_start(loop->ev, &loop->idle);
}

static async_task_impl_t *pop_ready(async_loop_t *loop)
{
    async_task_impl_t *t = loop->ready_head;
    if (t) {
        loop->ready_head = t->next_ready;
        if (!loop->ready_head) loop->ready_tail = NULL;
    }
    return t;
}

async_task_impl_t *async__loop_next(async_loop_t *loop)
{
    if (loop->budget == 0) return NULL;
    loop->budget--;
    return pop_ready(loop);
}

/* Runs ready tasks from the thread's stack: the first one, which hands
 * control on (async__loop_next) until the queue or the budget runs out. */
static void run_ready(async_loop_t *loop)
{
    if (loop->current) return;
    loop->budget = BUDGET;
    async_task_impl_t *next = pop_ready(loop);
    if (next) async__task_run_from_main(loop, next);
    if (loop->ready_head) {
        if (!ev_is_active(&loop->idle)) ev_idle_start(loop->ev, &loop->idle);
    } else if (ev_is_active(&loop->idle)) {
        ev_idle_stop(loop->ev, &loop->idle);
    }
}

/* --- the loop ------------------------------------------------------------- */

static void on_wakeup(struct ev_loop *ev, ev_async *w, int revents)
{
    (void)ev, (void)revents;
    run_posts(container_of(w, async_loop_t, wakeup));
}

static void on_prepare(struct ev_loop *ev, ev_prepare *w, int revents)
{
    (void)ev, (void)revents;
    run_ready(container_of(w, async_loop_t, prepare));
}

static void on_idle(struct ev_loop *ev, ev_idle *w, int revents)
{
    (void)ev, (void)revents;
    run_ready(container_of(w, async_loop_t, idle));
}

static int loop_init(async_loop_t **out, bool is_default)
{
    pthread_once(&hooks_once, install_hooks);
    int err = ASYNC_ENOMEM;
    async_loop_t *loop = async__calloc(1, sizeof *loop);
    if (!loop) return ASYNC_ENOMEM;
    loop->stacks = async__stack_pool_new();
    if (!loop->stacks) goto fail_stacks;
    async__coro_init_main(&loop->main);
#ifdef ASYNC_CORO_UCONTEXT
    if (!loop->main.uc) goto fail_ev;
#endif
    err = reserve_take();
    if (err) goto fail_ev;
    /* The default loop starts its SIGCHLD watcher, and so its wakeup
     * descriptor, inside ev_default_loop: it too runs under the reserve. */
    struct ev_loop *ev = is_default ? ev_default_loop(backend_flags()) : ev_loop_new(backend_flags());
    if (!ev) {
        err = errno == EMFILE || errno == ENFILE ? -errno : ASYNC_EIO;
        reserve_give();
        goto fail_ev;
    }
    loop->ev = ev;
    loop->is_default = is_default;
    loop->thread = pthread_self();
    async__list_init(&loop->tasks);
    async__list_init(&loop->free_tasks);
    async__list_init(&loop->bound);
    atomic_init(&loop->posts, NULL);
    ev_prepare_init(&loop->prepare, on_prepare);
    ev_prepare_start(ev, &loop->prepare);
    ev_unref(ev);
    ev_idle_init(&loop->idle, on_idle);
    ev_async_init(&loop->wakeup, on_wakeup);
    ev_async_start(ev, &loop->wakeup);
    ev_unref(ev);
    err = reserve_give();
    if (err) goto fail_watchers;
    *out = loop;
    return 0;

fail_watchers:
    /* Built in the reserve's slots: undo it all, so nothing stays open. */
    ev_ref(ev);
    ev_prepare_stop(ev, &loop->prepare);
    ev_ref(ev);
    ev_async_stop(ev, &loop->wakeup);
    ev_loop_destroy(ev);
fail_ev:
    async__coro_destroy(&loop->main);
    async__stack_pool_free(loop->stacks);
fail_stacks:
    async__free(loop);
    return err;
}

int async_loop_new(async_loop_t **out)
{
    return loop_init(out, false);
}

int async_loop_default(async_loop_t **out)
{
    pthread_mutex_lock(&default_lock);
    int rc = 0;
    if (!default_loop) rc = loop_init(&default_loop, true);
    if (rc == 0) *out = default_loop;
    pthread_mutex_unlock(&default_lock);
    return rc;
}

int async_loop_destroy(async_loop_t *loop)
{
    if (!loop) return 0;
    /* destroying: a post run below that frees the loop again would free it
     * under this call, which goes on reading it. */
    if (loop->running || loop->live || loop->destroying) return ASYNC_EBUSY;
    /* Posts may post again: run until none is left, so that every post runs
     * exactly once and no node is leaked. */
    loop->destroying = true;
    while (atomic_load_explicit(&loop->posts, memory_order_acquire)) run_posts(loop);
    loop->destroying = false;
    /* A post may also have spawned a task; freeing it here would leak its
     * stack and lose its work, so the loop stays for another run. */
    if (loop->live) return ASYNC_EBUSY;
    async__task_free_all(loop);
    /* Objects that outlive the loop forget it (none has a waiter: no task
     * is alive). */
    async__list_t *n;
    while ((n = async__list_pop(&loop->bound)))
        __atomic_store_n(&container_of(n, async__bound_t, link)->loop, NULL, __ATOMIC_RELEASE);
    ev_ref(loop->ev);
    ev_prepare_stop(loop->ev, &loop->prepare);
    ev_ref(loop->ev);
    ev_async_stop(loop->ev, &loop->wakeup);
    ev_idle_stop(loop->ev, &loop->idle);
    if (loop->is_default) {
        pthread_mutex_lock(&default_lock);
        default_loop = NULL;
        pthread_mutex_unlock(&default_lock);
    } else {
        ev_loop_destroy(loop->ev);
    }
    async__stack_pool_free(loop->stacks);
    async__coro_destroy(&loop->main);
    async__free(loop);
    return 0;
}

struct ev_loop *async_loop_ev(async_loop_t *loop) { return loop->ev; }
async_loop_t *async_loop_current(void) { return current_loop; }
size_t async_loop_live_tasks(async_loop_t *loop) { return loop->live; }

bool async__on_loop_thread(const async_loop_t *loop)
{
    return current_loop == loop || (!loop->running && pthread_equal(loop->thread, pthread_self()));
}

int async_loop_run(async_loop_t *loop, async_run_mode_t mode)
{
    if (loop->running) return ASYNC_EBUSY;
    if (current_loop) return ASYNC_EWRONGLOOP; /* a loop already runs on this thread */
    static const int flags[] = {0, EVRUN_ONCE, EVRUN_NOWAIT};
    if ((unsigned)mode > ASYNC_RUN_NOWAIT) return ASYNC_EINVAL;
    async__stack_guard_report();
    loop->running = true;
    loop->thread = pthread_self();
    current_loop = loop;
    if (loop->ready_head) ev_idle_start(loop->ev, &loop->idle);
    int more = ev_run(loop->ev, flags[mode]);
    current_loop = NULL;
    loop->running = false;
    return more || loop->live ? 1 : 0;
}

int async_loop_stop(async_loop_t *loop)
{
    /* ev_break writes the loop's state unlocked: only its thread may. */
    if (!async__on_loop_thread(loop)) return ASYNC_EWRONGLOOP;
    ev_break(loop->ev, EVBREAK_ALL);
    return 0;
}

void async__loop_post_node(async_loop_t *loop, async__post_t *node)
{
    async__post_t *head = atomic_load_explicit(&loop->posts, memory_order_relaxed);
    do {
        node->next = head;
    } while (!atomic_compare_exchange_weak_explicit(&loop->posts, &head, node,
                                                    memory_order_release, memory_order_relaxed));
    /* Only the post that found the stack empty needs to wake the loop: any
     * later one is taken by the same exchange. */
    if (!head) ev_async_send(loop->ev, &loop->wakeup);
}

int async_loop_post(async_loop_t *loop, void (*fn)(void *arg), void *arg)
{
    async__post_t *node = async__malloc(sizeof *node);
    if (!node) return ASYNC_ENOMEM;
    node->fn = fn;
    node->arg = arg;
    node->owned = true;
    async__loop_post_node(loop, node);
    return 0;
}

static void stop_cb(void *arg) { (void)async_loop_stop(arg); }

int async_loop_stop_post(async_loop_t *loop)
{
    return async_loop_post(loop, stop_cb, loop);
}
