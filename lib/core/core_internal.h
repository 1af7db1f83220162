/* libasync internals.  PRIVATE: never installed, never included by users.
 * Names here are async__ (internal, shared between files); file-static helpers
 * have short plain names. */
#ifndef ASYNC_INTERNAL_H
#define ASYNC_INTERNAL_H

#include <ev.h>
#include <stdatomic.h>
#include <pthread.h>
#include <unistd.h>
#include "async/common.h"
#include "async/loop.h"
#include "async/task.h"

/* _exit for the processes the library forks (pool workers, children of
 * async_process_spawn): under `make coverage` it first writes the process's
 * gcov counters, which _exit would throw away (gcc's fork wrapper has reset
 * them in the child, so nothing is counted twice). */
#ifdef ASYNC_COVERAGE
void __gcov_dump(void);
static inline _Noreturn void async__child_exit(int code)
{
    __gcov_dump();
    _exit(code);
}
#else
#define async__child_exit(code) _exit(code)
#endif

#if defined(__SANITIZE_ADDRESS__)
#  define ASYNC_ASAN 1
#elif defined(__has_feature)
#  if __has_feature(address_sanitizer)
#    define ASYNC_ASAN 1
#  endif
#endif
#if defined(__SANITIZE_THREAD__)
#  define ASYNC_TSAN 1
#elif defined(__has_feature)
#  if __has_feature(thread_sanitizer)
#    define ASYNC_TSAN 1
#  endif
#endif

#define ASYNC_UNUSED(x) ((void)(x))
#define container_of(p, type, member) ((type *)((char *)(p) - offsetof(type, member)))

/* --- allocation (common.c) ---------------------------------------------- */
void *async__malloc(size_t size);
void *async__calloc(size_t n, size_t size);
void *async__realloc(void *ptr, size_t size);
void async__free(void *ptr);
char *async__strdup(const char *s);

/* libev's allocator (installed by the first loop).  libev aborts when its
 * allocator returns NULL, so this one holds a reserve of address space and
 * spends it when realloc fails; spawn keeps the reserve in step with the
 * live tasks (async__ev_reserve_take) and fails with ASYNC_ENOMEM when it
 * cannot, so memory runs out in a call that can say so. */
void *async__ev_realloc(void *ptr, long size);
/* Counts one more live task and grows the reserve to match: 0 or
 * ASYNC_ENOMEM (then nothing is counted). */
int async__ev_reserve_take(void);
/* Counts one live task fewer. */
void async__ev_reserve_drop(void);

/* --- intrusive doubly linked list ----------------------------------------- */
typedef struct async__list {
    struct async__list *prev, *next;
} async__list_t;

static inline void async__list_init(async__list_t *l) { l->prev = l->next = l; }
static inline bool async__list_empty(const async__list_t *l) { return l->next == l; }
static inline void async__list_push(async__list_t *l, async__list_t *n)
{
    n->prev = l->prev;
    n->next = l;
    l->prev->next = n;
    l->prev = n;
}
static inline void async__list_remove(async__list_t *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
}
static inline async__list_t *async__list_pop(async__list_t *l)
{
    if (async__list_empty(l)) return NULL;
    async__list_t *n = l->next;
    async__list_remove(n);
    return n;
}

/* --- stacks and the context switch (stack.c, coro.c, coro_*.S) ------------ */
typedef struct async__stack {
    void *base;      /* lowest usable address */
    size_t size;     /* usable bytes, from base up */
    void *map;       /* the mapping to munmap, NULL for slab stacks */
    size_t map_size;
    struct async__slab *slab;
    struct async__stack *next_free;
    unsigned valgrind_id;
} async__stack_t;

typedef struct async__stack_pool async__stack_pool_t;
async__stack_pool_t *async__stack_pool_new(void);
void async__stack_pool_free(async__stack_pool_t *pool);
int async__stack_get(async__stack_pool_t *pool, size_t size, async__stack_t **out);
void async__stack_put(async__stack_pool_t *pool, async__stack_t *stack);
bool async__stack_intact(const async__stack_t *stack);
/* Makes an overflow into a guard page on this thread report itself before
 * the process dies (stack.c); called by each loop run.  Does nothing when
 * the program has a SIGSEGV handler or this thread a signal stack. */
void async__stack_guard_report(void);
/* The system's page size (cached; safe from any thread). */
size_t async__page_size(void);

typedef struct async__coro {
#ifdef ASYNC_CORO_UCONTEXT
    void *uc; /* ucontext_t, allocated beside the coroutine */
#else
    void *sp;
#endif
#ifdef ASYNC_ASAN
    void *fake_stack;
#endif
#ifdef ASYNC_TSAN
    void *tsan_fiber;
#endif
    const void *stack_bottom;
    size_t stack_size;
    void (*entry)(void *);
    void *arg;
} async__coro_t;

/* Prepares coro to run entry(arg) on stack when first switched to. */
int async__coro_init(async__coro_t *coro, async__stack_t *stack, void (*entry)(void *), void *arg);
/* The context of the thread's own stack; switched from, never initialised. */
void async__coro_init_main(async__coro_t *coro);
void async__coro_destroy(async__coro_t *coro);
/* Saves the current context in from and resumes to.  `from_exiting` tells the
 * sanitizers that from will never run again.  Without sanitizers or ucontext
 * it is the bare assembly switch, inlined into the scheduler. */
#if defined(ASYNC_ASAN) || defined(ASYNC_TSAN) || defined(ASYNC_CORO_UCONTEXT)
void async__coro_switch(async__coro_t *from, async__coro_t *to, bool from_exiting);
#else
void async__coro_switch_asm(void **save_sp, void *load_sp);
static inline void async__coro_switch(async__coro_t *from, async__coro_t *to, bool from_exiting)
{
    (void)from_exiting;
    async__coro_switch_asm(&from->sp, to->sp);
}
#endif

/* --- tasks and the loop --------------------------------------------------- */
enum task_state { TASK_FREE, TASK_READY, TASK_RUNNING, TASK_SUSPENDED, TASK_DONE };

typedef struct async_task {
    async__coro_t coro;
    struct async_loop *loop;
    struct async_task *next_ready;
    async__list_t wait_link;     /* in a wait queue while suspended on one */
    async__list_t all_link;      /* in loop->tasks or loop->free_tasks */
    async__list_t awaiters;      /* tasks awaiting this one */
    uint64_t gen;
    uint64_t epoch;
    enum task_state state;
    int wake_code;
    bool cancelled, detached, has_pending_wake, shielded;
    bool waker_ok;               /* suspended in async_task_suspend_dl */
    int pending_wake;
    async_task_fn fn;
    void *arg;
    void *result;
    int error;
    async__stack_t *stack;
    ev_timer timer;
    ev_io io;
    int64_t deadline;
    /* Called when the task's function has returned, after its awaiters were
     * woken and before it stops counting as live: how a group learns that
     * one of its tasks ended without task.c knowing groups. */
    void (*on_exit)(struct async_task *t, void *arg);
    void *on_exit_arg;
    async__list_t group_link;    /* in its group's list, for group.c */
    void *wait_data;             /* for the object the task waits on */
} async_task_impl_t;

typedef struct async__post {
    struct async__post *next;
    void (*fn)(void *arg);
    void *arg;
    bool owned; /* allocated by async_loop_post, freed after running */
} async__post_t;

struct async_loop {
    struct ev_loop *ev;
    bool is_default, running;
    bool destroying;                /* inside async_loop_destroy, running its posts */
    pthread_t thread;
    ev_prepare prepare;
    ev_idle idle;
    ev_async wakeup;
    _Atomic(async__post_t *) posts;  /* Treiber stack: producers push, loop takes all */
    async__coro_t main;             /* the thread stack that runs libev */
    async__stack_pool_t *stacks;
    struct async_task *current;
    struct async_task *ready_head, *ready_tail; /* the ready queue (loop.c) */
    struct async_task *zombie;      /* finished; stack freed after switching away */
    async__list_t tasks;            /* every task slot in use */
    async__list_t bound;            /* sync.c's objects bound here (async__bound_t) */
    async__list_t free_tasks;       /* recycled slots (never freed before the loop) */
    size_t live;
    unsigned budget;                /* task switches left before libev polls (loop.c) */
};

/* A sync.c object's binding to the loop it belongs to (NULL: none yet),
 * linked into that loop's `bound` list so that freeing the loop unbinds the
 * objects that outlive it: they never read a freed loop, and are as if made
 * outside any loop again (sync.h).  `loop` is read and written atomically
 * (sync.c's own binds by compare-and-swap; the loop's free clears it); the
 * link is touched only on the loop's thread. */
typedef struct async__bound {
    struct async_loop *loop;
    async__list_t link;
} async__bound_t;

/* Queues a post whose node the caller owns (no allocation, cannot fail). */
void async__loop_post_node(async_loop_t *loop, async__post_t *node);
bool async__on_loop_thread(const async_loop_t *loop);

/* Scheduling order (loop.c): the ready queue is FIFO, and a run of task
 * switches is cut after a budget so that libev polls between them. */
/* Marks the task TASK_READY and queues it at the tail. */
void async__task_ready(async_task_impl_t *task);
/* The task a switching task hands control to next, or NULL for the thread's
 * own stack (nothing is ready, or the budget is spent). */
async_task_impl_t *async__loop_next(async_loop_t *loop);

/* Switching (task.c): from the thread's stack into next, a task taken off
 * the ready queue, until control comes back to the thread's stack. */
void async__task_run_from_main(async_loop_t *loop, async_task_impl_t *next);

/* Task internals shared with sync.c and group.c. */
async_task_impl_t *async__current(void);
int async__task_spawn(async_loop_t *loop, async_task_fn fn, void *arg, const async_task_opts_t *opts,
                      async_task_impl_t **out);
int async__task_cancel(async_task_impl_t *t);
/* Suspends the current task until woken/deadline/cancel; see async_task_suspend_dl. */
int async__task_park(async_task_impl_t *self, int64_t deadline);
/* Wakes a parked task with code; it must be TASK_SUSPENDED. */
void async__task_unpark(async_task_impl_t *task, int code);
void async__task_free_all(async_loop_t *loop);
int async__task_check_blocking(async_task_impl_t **self_out);
/* True when t's blocking calls must return ASYNC_ECANCELED now: its
 * cancellation was requested and no shield (async_task_shield) holds it
 * off.  Every wait of every module checks this, never t->cancelled. */
static inline bool async__task_cancel_pending(const async_task_impl_t *t)
{
    return t->cancelled && !t->shielded;
}

/* True when called from inside a libasync task, whose waits must go through
 * the loop rather than block the thread. */
bool async__in_task(void);

/* --- thread-level helpers (common.c) ------------------------------------------ */

/* Initialises c to time its waits on CLOCK_MONOTONIC, the clock of every
 * deadline; process-shared when pshared.  0 or a negative errno. */
int async__cond_init_monotonic(pthread_cond_t *c, bool pshared);
/* Waits on c (made by async__cond_init_monotonic) until the absolute
 * deadline (ASYNC_FOREVER: none; a past one returns at once); 0 or
 * ETIMEDOUT (positive, as pthread returns it). */
int async__cond_wait_dl(pthread_cond_t *c, pthread_mutex_t *m, int64_t deadline);

/* A spin-wait's pause: tells the CPU we are spinning (x86 pause, ARM yield). */
static inline void async__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}

#endif
