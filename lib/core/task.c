/* Tasks: spawning, the scheduler's switching, suspension and wake-up, await,
 * cancel, sleep, waiting on descriptors, gather.
 *
 * Invariants: every function here runs on the loop's thread.  loop->current is
 * the task whose stack is executing, or NULL on the thread's own stack.  A
 * task in TASK_SUSPENDED is woken exactly once per suspension (its epoch
 * counts suspensions, and wakers name an epoch), by async__task_unpark, which
 * also stops its timer and I/O watcher and unlinks it from any wait queue.
 * When a task switches away it hands control directly to the task the loop
 * names next (async__loop_next: the ready queue's head while the budget
 * lasts), and to the thread's stack otherwise, so a run of wake-ups between
 * tasks costs one switch each and libev still polls between budgets.  What
 * runs in which order is the loop's business (loop.c); this file does the
 * switches.  A finished task cannot free the stack it is
 * running on: it leaves itself in loop->zombie and whoever runs next reaps
 * it. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "core_internal.h"

#define MAX_STACK ((size_t)1 << 30)
/* The end of the last field of 0.2's async_task_opts_t: a nonzero size below
 * it cannot be a real layout.  Stays put as later versions append fields. */
#define OPTS_SIZE_0_2 (offsetof(async_task_opts_t, detached) + sizeof(bool))

static async_task_impl_t *validate(async_task_t h)
{
    async_task_impl_t *t = h.ptr_;
    if (!t || t->gen != h.gen_ || t->state == TASK_FREE) return NULL;
    return t;
}

bool async__in_task(void) { return async__current() != NULL; }

async_task_impl_t *async__current(void)
{
    async_loop_t *loop = async_loop_current();
    return loop ? loop->current : NULL;
}

int async__task_check_blocking(async_task_impl_t **self_out)
{
    async_task_impl_t *self = async__current();
    if (!self) return ASYNC_ENOTASK;
    *self_out = self;
    return 0;
}

/* --- switching ----------------------------------------------------------- */

static void release_slot(async_task_impl_t *t)
{
    async_loop_t *loop = t->loop;
    t->state = TASK_FREE;
    t->gen = 0;
    async__list_remove(&t->all_link);
    async__list_push(&loop->free_tasks, &t->all_link);
}

/* Runs on whichever context gets control after a switch. */
static void reap_zombie(async_loop_t *loop)
{
    async_task_impl_t *z = loop->zombie;
    if (!z) return;
    loop->zombie = NULL;
    async__coro_destroy(&z->coro);
    async__stack_put(loop->stacks, z->stack);
    z->stack = NULL;
    if (z->detached) release_slot(z);
}

static void overflow(async_task_impl_t *t)
{
    char msg[160];
    int n = snprintf(msg, sizeof msg,
                     "libasync: task stack overflow (stack of %zu bytes); "
                     "spawn it with a larger stack_size\n", t->stack->size);
    if (write(2, msg, (size_t)n) < 0) { /* nothing more to do */ }
    abort();
}

static void switch_out(async_task_impl_t *self, bool exiting)
{
    async_loop_t *loop = self->loop;
    if (!async__stack_intact(self->stack)) overflow(self);
    async_task_impl_t *next = async__loop_next(loop);
    if (next == self) { /* a yield with nobody else ready */
        self->state = TASK_RUNNING;
        return;
    }
    if (next) {
        next->state = TASK_RUNNING;
        loop->current = next;
        async__coro_switch(&self->coro, &next->coro, exiting);
    } else {
        loop->current = NULL;
        async__coro_switch(&self->coro, &loop->main, exiting);
    }
    reap_zombie(loop);
}

void async__task_run_from_main(async_loop_t *loop, async_task_impl_t *next)
{
    next->state = TASK_RUNNING;
    loop->current = next;
    async__coro_switch(&loop->main, &next->coro, false);
    reap_zombie(loop);
}

/* --- suspension ----------------------------------------------------------- */

static void on_timer(struct ev_loop *ev, ev_timer *w, int revents)
{
    (void)revents;
    async_task_impl_t *t = container_of(w, async_task_impl_t, timer);
    /* libev measures from the time it last read the clock, which can be a
     * little stale: never wake before the deadline. */
    int64_t left = t->deadline - async_now();
    if (left > 0) {
        ev_timer_set(w, (double)left / 1e9, 0.);
        ev_timer_start(ev, w);
        return;
    }
    async__task_unpark(t, ASYNC_ETIMEDOUT);
}

static void on_io(struct ev_loop *ev, ev_io *w, int revents)
{
    (void)ev, (void)revents;
    async__task_unpark(container_of(w, async_task_impl_t, io), 0);
}

void async__task_unpark(async_task_impl_t *t, int code)
{
    struct ev_loop *ev = t->loop->ev;
    if (ev_is_active(&t->timer)) ev_timer_stop(ev, &t->timer);
    if (ev_is_active(&t->io)) ev_io_stop(ev, &t->io);
    async__list_remove(&t->wait_link);
    t->wake_code = code;
    async__task_ready(t);
}

/* Wakers complete only suspensions made through async_task_suspend_dl
 * (by_waker).  The library's own waits (a channel, a mutex, await, sleep...)
 * are ended only by their objects, which hand over an element, a lock or a
 * permit with the wake-up: a waker the task took but never suspended on must
 * not end such a wait, or the task would go on holding nothing.  A wake that
 * arrived before the suspension is kept for a waker suspension and dropped
 * otherwise (that suspension's epoch is used up, so the waker is stale). */
static int park(async_task_impl_t *self, int64_t deadline, bool by_waker)
{
    self->epoch++;
    bool pending = self->has_pending_wake;
    self->has_pending_wake = false;
    if (async__task_cancel_pending(self)) return ASYNC_ECANCELED;
    if (pending && by_waker) return self->pending_wake;
    if (deadline != ASYNC_FOREVER) {
        /* Compare before subtracting: for a deadline far in the past (near
         * INT64_MIN) deadline - now overflows into one far in the future. */
        int64_t now = async_now();
        if (deadline <= now) return ASYNC_ETIMEDOUT;
        self->deadline = deadline;
        ev_timer_set(&self->timer, (double)(deadline - now) / 1e9, 0.);
        ev_timer_start(self->loop->ev, &self->timer);
    }
    self->waker_ok = by_waker;
    self->state = TASK_SUSPENDED;
    switch_out(self, false);
    return self->wake_code;
}

int async__task_park(async_task_impl_t *self, int64_t deadline)
{
    return park(self, deadline, false);
}

async_waker_t async_task_waker(void)
{
    async_task_impl_t *self = async__current();
    if (!self) return (async_waker_t){NULL, 0, 0};
    return (async_waker_t){self, self->gen, self->epoch + 1};
}

async_loop_t *async_waker_loop(async_waker_t w)
{
    return w.ptr_ ? w.ptr_->loop : NULL;
}

int async_task_suspend_dl(int64_t deadline)
{
    async_task_impl_t *self;
    int rc = async__task_check_blocking(&self);
    if (rc) return rc;
    return park(self, deadline, true);
}

int async_waker_wake(async_waker_t w, int code)
{
    async_task_impl_t *t = w.ptr_;
    if (!t) return ASYNC_ESRCH;
    /* Waking touches the loop's ready queue.  A slot never changes loops,
     * so t->loop may be read before the generation is compared. */
    if (!async__on_loop_thread(t->loop)) return ASYNC_EWRONGLOOP;
    if (t->gen != w.gen_) return ASYNC_ESRCH;
    if (t->state == TASK_SUSPENDED && t->epoch == w.epoch_) {
        if (!t->waker_ok) return ASYNC_ESRCH; /* a library wait, not the waker's */
        async__task_unpark(t, code);
        return 0;
    }
    /* Woken before it suspended: the suspension returns at once. */
    if ((t->state == TASK_RUNNING || t->state == TASK_READY) && t->epoch + 1 == w.epoch_ &&
        !t->has_pending_wake) {
        t->has_pending_wake = true;
        t->pending_wake = code;
        return 0;
    }
    return ASYNC_ESRCH;
}

/* --- spawn and finish ----------------------------------------------------- */

static void finish(async_task_impl_t *t);

static void task_main(void *arg)
{
    async_task_impl_t *t = arg;
    reap_zombie(t->loop);
    void *result = NULL;
    t->error = t->fn(t->arg, &result);
    t->result = result;
    finish(t);
    t->loop->zombie = t;
    switch_out(t, true);
    abort(); /* a finished task is never resumed */
}

/* Generations are drawn process-wide, not per loop: a slot is named by its
 * address and generation (handles, wakers, a mutex's holder), and a freed
 * loop's slot address comes back in the next loop's slots.  With a count per
 * loop the first task of the next loop had the same name as the first of the
 * freed one, and held the mutex that task had left locked.  Never 0. */
static _Atomic uint64_t next_gen;

/* A recycled slot or a new one; spawn sets every field, so no memset. */
static async_task_impl_t *take_slot(async_loop_t *loop)
{
    async__list_t *n = async__list_pop(&loop->free_tasks);
    if (n) return container_of(n, async_task_impl_t, all_link);
    async_task_impl_t *t = async__malloc(sizeof *t);
    if (t) async__list_init(&t->all_link);
    return t;
}

int async__task_spawn(async_loop_t *loop, async_task_fn fn, void *arg, const async_task_opts_t *opts,
                      async_task_impl_t **out)
{
    if (!fn) return ASYNC_EINVAL;
    if (!loop) loop = async_loop_current();
    if (!loop) return ASYNC_ENOLOOP;
    if (loop->running && async_loop_current() != loop) return ASYNC_EWRONGLOOP;
    if (opts && opts->size && opts->size < OPTS_SIZE_0_2) return ASYNC_EINVAL;
    size_t size = opts && opts->stack_size ? opts->stack_size : ASYNC_STACK_DEFAULT;
    if (size > MAX_STACK) return ASYNC_EINVAL;
    if (size < ASYNC_STACK_MIN) size = ASYNC_STACK_MIN;
    size_t ps = async__page_size();
    size = (size + ps - 1) / ps * ps;

    /* Memory for libev's share of this task first: past this point nothing
     * the task does can make libev run out and abort. */
    if (async__ev_reserve_take()) return ASYNC_ENOMEM;
    async_task_impl_t *t = take_slot(loop);
    if (!t) {
        async__ev_reserve_drop();
        return ASYNC_ENOMEM;
    }
    t->stack = NULL;
    int rc = async__stack_get(loop->stacks, size, &t->stack);
    if (rc) goto fail;
    rc = async__coro_init(&t->coro, t->stack, task_main, t);
    if (rc) goto fail;
    t->loop = loop;
    t->fn = fn;
    t->arg = arg;
    t->result = t->wait_data = NULL;
    t->error = t->wake_code = t->pending_wake = 0;
    t->epoch = 0;
    t->deadline = 0;
    t->on_exit = NULL;
    t->on_exit_arg = NULL;
    t->cancelled = t->has_pending_wake = t->shielded = false;
    t->detached = opts && opts->detached;
    t->gen = atomic_fetch_add_explicit(&next_gen, 1, memory_order_relaxed) + 1;
    async__list_init(&t->wait_link);
    async__list_init(&t->awaiters);
    async__list_init(&t->group_link);
    ev_timer_init(&t->timer, on_timer, 0., 0.);
    ev_init(&t->io, on_io);
    async__list_push(&loop->tasks, &t->all_link);
    loop->live++;
    ev_ref(loop->ev);
    async__task_ready(t);
    *out = t;
    return 0;
fail:
    if (t->stack) async__stack_put(loop->stacks, t->stack);
    async__list_push(&loop->free_tasks, &t->all_link);
    async__ev_reserve_drop();
    return rc;
}

int async_task_spawn(async_task_t *out, async_loop_t *loop, async_task_fn fn, void *arg,
                     const async_task_opts_t *opts)
{
    async_task_impl_t *t;
    int rc = async__task_spawn(loop, fn, arg, opts, &t);
    if (rc == 0 && out) *out = (async_task_t){t, t->gen};
    return rc;
}

static void finish(async_task_impl_t *t)
{
    async_loop_t *loop = t->loop;
    t->state = TASK_DONE;
    async__list_t *n;
    while ((n = async__list_pop(&t->awaiters)))
        async__task_unpark(container_of(n, async_task_impl_t, wait_link), 0);
    if (t->on_exit) t->on_exit(t, t->on_exit_arg);
    loop->live--;
    async__ev_reserve_drop();
    ev_unref(loop->ev);
}

void async__task_free_all(async_loop_t *loop)
{
    async__list_t *n;
    while ((n = async__list_pop(&loop->tasks))) async__free(container_of(n, async_task_impl_t, all_link));
    while ((n = async__list_pop(&loop->free_tasks)))
        async__free(container_of(n, async_task_impl_t, all_link));
}

/* --- await, detach, cancel ------------------------------------------------ */

static int reap(async_task_impl_t *t, void **result)
{
    if (result) *result = t->result;
    int err = t->error;
    release_slot(t);
    return err;
}

int async_task_await_dl(async_task_t h, void **result, int64_t deadline)
{
    async_task_impl_t *self;
    int rc = async__task_check_blocking(&self);
    if (rc) return rc;
    async_task_impl_t *t = validate(h);
    if (!t) return ASYNC_ESRCH;
    if (t == self) return ASYNC_EDEADLK;
    if (t->loop != self->loop) return ASYNC_EWRONGLOOP;
    while (t->state != TASK_DONE) {
        async__list_push(&t->awaiters, &self->wait_link);
        rc = async__task_park(self, deadline);
        async__list_remove(&self->wait_link);
        if (rc) return rc;
        if (!validate(h)) return ASYNC_ESRCH; /* another awaiter reaped it */
    }
    return reap(t, result);
}

int async_task_await(async_task_t h, void **result)
{
    return async_task_await_dl(h, result, ASYNC_FOREVER);
}

int async_task_detach(async_task_t h)
{
    async_task_impl_t *t = validate(h);
    if (!t) return ASYNC_ESRCH;
    /* Releasing a finished task's slot edits the loop's lists. */
    if (!async__on_loop_thread(t->loop)) return ASYNC_EWRONGLOOP;
    if (t->state == TASK_DONE) release_slot(t);
    else t->detached = true;
    return 0;
}

int async__task_cancel(async_task_impl_t *t)
{
    if (t->state == TASK_DONE) return ASYNC_EDONE;
    if (t->cancelled) return ASYNC_EALREADY;
    t->cancelled = true;
    if (t->state == TASK_SUSPENDED && !t->shielded) async__task_unpark(t, ASYNC_ECANCELED);
    return 0;
}

int async_task_cancel(async_task_t h)
{
    async_task_impl_t *t = validate(h);
    if (!t) return ASYNC_ESRCH;
    /* Cancelling unparks the task onto its loop's ready queue, which only
     * the loop's thread may touch. */
    if (!async__on_loop_thread(t->loop)) return ASYNC_EWRONGLOOP;
    return async__task_cancel(t);
}

int async_task_done(async_task_t h)
{
    async_task_impl_t *t = validate(h);
    if (!t) return ASYNC_ESRCH;
    return t->state == TASK_DONE;
}

async_task_t async_task_self(void)
{
    async_task_impl_t *self = async__current();
    return (async_task_t){self, self ? self->gen : 0};
}

bool async_task_cancelled(void)
{
    async_task_impl_t *self = async__current();
    return self && async__task_cancel_pending(self);
}

int async_task_shield(bool shielded)
{
    async_task_impl_t *self = async__current();
    if (!self) return ASYNC_ENOTASK;
    int was = self->shielded;
    /* Nothing to deliver on lifting: the request stays in self->cancelled,
     * and the next wait's check (park, or the early checks below) sees it. */
    self->shielded = shielded;
    return was;
}

/* --- yield, sleep, descriptors -------------------------------------------- */

int async_yield(void)
{
    async_task_impl_t *self;
    int rc = async__task_check_blocking(&self);
    if (rc) return rc;
    if (async__task_cancel_pending(self)) return ASYNC_ECANCELED;
    async__task_ready(self);
    switch_out(self, false);
    return 0;
}

int async_sleep_dl(int64_t deadline)
{
    async_task_impl_t *self;
    int rc = async__task_check_blocking(&self);
    if (rc) return rc;
    if (async__task_cancel_pending(self)) return ASYNC_ECANCELED;
    if (deadline == ASYNC_FOREVER) {
        for (;;) /* only cancellation ends this */
            if (async__task_park(self, deadline) == ASYNC_ECANCELED) return ASYNC_ECANCELED;
    }
    /* Stray wake-ups (a stale waker) do not cut a sleep short. */
    while (async_now() < deadline) {
        rc = async__task_park(self, deadline);
        if (rc == ASYNC_ECANCELED) return rc;
    }
    return 0;
}

int async_sleep(int64_t ns)
{
    return async_sleep_dl(async_deadline_after(ns < 0 ? 0 : ns));
}

int async_wait_fd_dl(int fd, int events, int64_t deadline)
{
    async_task_impl_t *self;
    int rc = async__task_check_blocking(&self);
    if (rc) return rc;
    if (fd < 0 || !events || (events & ~(ASYNC_READABLE | ASYNC_WRITABLE))) return ASYNC_EINVAL;
    /* libev must never see a descriptor that is not open: it sizes its
     * table by the descriptor's number (gigabytes, zeroed, for a number far
     * beyond any open one) and asserts when epoll_ctl says EBADF. */
    if (fcntl(fd, F_GETFD) == -1) return ASYNC_EINVAL;
    if (async__task_cancel_pending(self)) return ASYNC_ECANCELED;
    ev_io_set(&self->io, fd, (events & ASYNC_READABLE ? EV_READ : 0) |
                             (events & ASYNC_WRITABLE ? EV_WRITE : 0));
    ev_io_start(self->loop->ev, &self->io);
    rc = async__task_park(self, deadline);
    if (ev_is_active(&self->io)) ev_io_stop(self->loop->ev, &self->io);
    return rc;
}

int async_wait_fd(int fd, int events)
{
    return async_wait_fd_dl(fd, events, ASYNC_FOREVER);
}

/* --- gather --------------------------------------------------------------- */

int async_gather_dl(async_task_t *tasks, size_t n, void **results, int *errors, int64_t deadline)
{
    async_task_impl_t *self;
    int rc = async__task_check_blocking(&self);
    if (rc) return rc;
    int first = 0, stop = 0;
    for (size_t i = 0; i < n; i++) {
        void *res = NULL;
        if (stop) {
            /* Past a deadline or a cancellation: reap what has finished,
             * leave the rest running with valid handles. */
            async_task_impl_t *t = validate(tasks[i]);
            rc = !t ? ASYNC_ESRCH : t->state == TASK_DONE ? reap(t, &res) : stop;
        } else {
            rc = async_task_await_dl(tasks[i], &res, deadline);
            if ((rc == ASYNC_ETIMEDOUT || rc == ASYNC_ECANCELED) && validate(tasks[i]) &&
                !async_task_done(tasks[i]) ) {
                stop = rc; /* the wait itself ended, not the task */
            }
        }
        if (results) results[i] = res;
        if (errors) errors[i] = rc;
        if (rc && !first) first = rc;
    }
    return stop ? stop : first;
}

int async_gather(async_task_t *tasks, size_t n, void **results, int *errors)
{
    return async_gather_dl(tasks, n, results, errors, ASYNC_FOREVER);
}
