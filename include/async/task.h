/* Tasks: stackful coroutines scheduled by a loop.
 *
 * A task runs a function on its own stack until it blocks (sleep, await, wait
 * for a descriptor, a channel, ...) and then lets other tasks of its loop run.
 * Tasks of one loop never run at the same time, so they share memory without
 * locks.  A task is named by a handle, async_task_t, a small value that stays
 * safe to pass after the task has gone: calls on a spent handle fail with
 * ASYNC_ESRCH instead of touching freed memory.
 *
 * Lifetime: a task's result is kept until it is awaited (async_task_await,
 * async_gather) or the handle is given up (async_task_detach); after that the
 * handle is spent.  Finished tasks that were never awaited are reclaimed by
 * async_loop_destroy.
 *
 * Cancellation: async_task_cancel makes the task's current blocking call and
 * every later one that would have to wait return ASYNC_ECANCELED, so the task
 * can clean up and end (a call that can complete at once still completes).
 * A task cancelled before it first ran still runs, so that it can free what
 * its argument owns; async_task_cancelled tells it.  Cleanup that must itself
 * wait (flush, say goodbye, wait for a helper) runs under async_task_shield,
 * which holds the cancellation off until the shield is lifted. */
#ifndef ASYNC_TASK_H
#define ASYNC_TASK_H

#include <string.h>
#include "common.h"
#include "loop.h"

#ifdef __cplusplus
extern "C" {
#endif

struct async_task;
typedef struct async_task_handle {
    struct async_task *ptr_; /* private */
    uint64_t gen_;           /* private */
} async_task_t;

/* A task's body.  Returns 0 or a negative error; *result (initially NULL) is
 * what async_task_await hands the awaiter. */
typedef int (*async_task_fn)(void *arg, void **result);

/* Options of a spawn.  size: 0 or sizeof(async_task_opts_t) as the program
 * was compiled; 0 reads the 0.2 layout.  Later versions add fields only at
 * the end and read them only when size covers them.  Fill it with
 * async_task_opts_init, or with a designated initialiser
 * (&(async_task_opts_t){.detached = true}: size 0). */
typedef struct async_task_opts {
    size_t size;       /* 0, or sizeof(async_task_opts_t) */
    size_t stack_size; /* bytes; 0 for the default (256 KiB), rounded up to pages */
    bool detached;     /* no handle: reclaimed as soon as it ends */
} async_task_opts_t;

/* Zeroes *o (every option its default) and sets its size. */
static inline void async_task_opts_init(async_task_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->size = sizeof *o;
}

#define ASYNC_STACK_DEFAULT ((size_t)256 * 1024)
#define ASYNC_STACK_MIN ((size_t)16 * 1024)

/* Spawns fn(arg) as a task on loop (NULL: the loop running on this thread).
 * The task starts on a later turn of the loop, not inside this call.  *out
 * (may be NULL) receives the handle on success.  opts may be NULL.
 * Errors: ASYNC_ENOLOOP (loop NULL and no loop runs here), ASYNC_EWRONGLOOP
 * (the loop is running on another thread: post instead), ASYNC_EINVAL
 * (fn NULL, stack_size too large, or opts->size nonzero but smaller than
 * the 0.2 layout), ASYNC_ENOMEM (no memory for the task,
 * its stack, or libev's share of it).
 *
 * Memory: libev aborts the process when it cannot allocate, so spawn secures
 * libev's share up front: the library keeps a reserve of untouched address
 * space (256 KiB plus 128 bytes per live task in the process) that libev's
 * allocator spends when malloc fails, and spawn fails with ASYNC_ENOMEM when
 * the reserve cannot grow to match.  The tasks already spawned then run to
 * their end; what to do next is the program's choice. */
ASYNC_API int async_task_spawn(async_task_t *out, async_loop_t *loop, async_task_fn fn,
                               void *arg, const async_task_opts_t *opts);

/* Waits for the task to end and returns its result code; *result (may be NULL)
 * receives its result.  The handle is spent once this returns the task's own
 * code.  The _dl form gives up at the deadline with ASYNC_ETIMEDOUT and leaves
 * the task running and the handle valid.  Errors besides the task's own code:
 * ASYNC_ESRCH (spent or invalid handle), ASYNC_ENOTASK (not called from a
 * task), ASYNC_EDEADLK (a task awaiting itself), ASYNC_EWRONGLOOP (the task
 * belongs to another loop), and from the
 * waiting itself ASYNC_ETIMEDOUT and ASYNC_ECANCELED (the awaiter was
 * cancelled; the awaited task runs on).  To tell a task's own ETIMEDOUT from
 * the deadline's, check async_task_done(). */
ASYNC_API int async_task_await(async_task_t task, void **result);
ASYNC_API int async_task_await_dl(async_task_t task, void **result, int64_t deadline);

/* Gives up the handle: the task runs on and is reclaimed when it ends.
 * Callable from the task's loop's thread, as async_task_cancel.  Errors:
 * ASYNC_ESRCH, ASYNC_EWRONGLOOP (another thread: nothing is done). */
ASYNC_API int async_task_detach(async_task_t task);

/* Requests cancellation (see the top of this file).  Callable from the
 * task's loop's thread: from its tasks and callbacks, or outside any task
 * while the loop does not run.  Errors: ASYNC_ESRCH, ASYNC_EALREADY (already
 * cancelled), ASYNC_EDONE (already finished), ASYNC_EWRONGLOOP (another
 * thread: nothing is done; post a function that cancels to the loop). */
ASYNC_API int async_task_cancel(async_task_t task);

/* 1 if the task has finished, 0 if not, ASYNC_ESRCH for a spent handle. */
ASYNC_API int async_task_done(async_task_t task);

/* The calling task's handle; ptr_ is NULL outside tasks. */
ASYNC_API async_task_t async_task_self(void);

/* True inside a task whose cancellation was requested and is not held off
 * by a shield: exactly when its blocking calls that would wait return
 * ASYNC_ECANCELED.  False outside tasks. */
ASYNC_API bool async_task_cancelled(void);

/* Shields the calling task from cancellation (shielded true) or lifts the
 * shield (false).  While shielded, the task's blocking calls are not
 * interrupted by cancellation and run to their end (an element, a deadline,
 * a wake-up); a cancellation requested meanwhile, or before, is remembered
 * and delivered by the first blocking call after the shield is lifted.  A
 * shielded wait with no deadline ends only by its event, so give cleanup a
 * deadline.  Returns the previous state, 1 (shielded) or 0, so that nested
 * shields restore it: `int was = async_task_shield(true); ...;
 * async_task_shield(was);`.  Errors: ASYNC_ENOTASK (outside a task). */
ASYNC_API int async_task_shield(bool shielded);

/* Lets every other ready task of the loop run once, then returns.
 * Errors: ASYNC_ENOTASK, ASYNC_ECANCELED. */
ASYNC_API int async_yield(void);

/* Sleeps for ns nanoseconds, or until the deadline; a deadline in the past
 * returns 0 at once.  Errors: ASYNC_ENOTASK, ASYNC_ECANCELED. */
ASYNC_API int async_sleep(int64_t ns);
ASYNC_API int async_sleep_dl(int64_t deadline);

/* ASYNC_READABLE and ASYNC_WRITABLE are in common.h. */
/* Waits until fd is readable and/or writable (events is a mask of the two).
 * Errors: ASYNC_ETIMEDOUT, ASYNC_ECANCELED, ASYNC_ENOTASK, ASYNC_EINVAL (fd
 * is not an open descriptor, or events is 0 or has other bits). */
ASYNC_API int async_wait_fd(int fd, int events);
ASYNC_API int async_wait_fd_dl(int fd, int events, int64_t deadline);

/* Gather: awaits n tasks.  results[i] and errors[i] (either array may be
 * NULL) receive each task's result and code, in the order given.  Returns 0
 * when every task succeeded, otherwise the code of the first failed task in
 * that order; all handles are spent.  The _dl form returns ASYNC_ETIMEDOUT
 * at the deadline: tasks that finished are reaped and reported, the others
 * keep running, keep their handles valid, and report ASYNC_ETIMEDOUT in
 * errors[i].  Errors: as async_task_await. */
ASYNC_API int async_gather(async_task_t *tasks, size_t n, void **results, int *errors);
ASYNC_API int async_gather_dl(async_task_t *tasks, size_t n, void **results, int *errors,
                              int64_t deadline);

/* Task groups (structured concurrency).  A group owns the tasks spawned into
 * it: the first task to fail cancels the others; async_group_wait returns
 * when all have ended, with that first error (0 if none); nothing spawned in
 * a group outlives async_group_destroy. */
typedef struct async_group async_group_t;

/* Errors: ASYNC_ENOLOOP, ASYNC_ENOMEM. */
ASYNC_API int async_group_new(async_group_t **out, async_loop_t *loop);

/* Spawns into the group.  Errors: as async_task_spawn, and ASYNC_ECLOSED
 * once the group has failed or been cancelled (fn will not run). */
ASYNC_API int async_group_spawn(async_group_t *group, async_task_fn fn, void *arg,
                                const async_task_opts_t *opts);

/* Waits for every task in the group; returns the group's first error or 0.
 * The _dl form returns ASYNC_ETIMEDOUT at the deadline and leaves the tasks
 * running.  Errors: ASYNC_ENOTASK, ASYNC_EDEADLK (called from one of the
 * group's own tasks: it would wait for itself), ASYNC_ECANCELED (the
 * waiter's own), ASYNC_ETIMEDOUT (_dl), ASYNC_EWRONGLOOP (a task of
 * another loop). */
ASYNC_API int async_group_wait(async_group_t *group);
ASYNC_API int async_group_wait_dl(async_group_t *group, int64_t deadline);

/* Cancels every task in the group and rejects further spawns.  Returns 0, or
 * ASYNC_EALREADY when the group was already cancelled or has failed (its
 * first failure cancels it), or ASYNC_EWRONGLOOP (nothing done) when called
 * from a thread other than the group's loop's, as async_task_cancel. */
ASYNC_API int async_group_cancel(async_group_t *group);

/* Number of the group's tasks that have not ended. */
ASYNC_API size_t async_group_live(async_group_t *group);

/* Frees the group.  With tasks still alive: from a task, cancels them, waits
 * for them (even when the calling task is cancelled), then frees.  Errors,
 * freeing nothing (the tasks keep running): ASYNC_EBUSY (called outside a
 * task), ASYNC_EDEADLK (called from one of the group's own tasks: it would
 * wait for itself), ASYNC_EWRONGLOOP (called from a task of another loop). */
ASYNC_API int async_group_destroy(async_group_t *group);

/* Suspend and wake: the building block for awaitables outside libasync (the
 * executor's futures and the HTTP client use it too).
 *
 * A task takes a waker for its next suspension, hands it to whoever will
 * complete the event, and suspends.  async_waker_wake resumes it with a code
 * that async_task_suspend_dl returns, but only if the task is still in that
 * same suspension: a waker whose suspension already ended (by a deadline,
 * cancellation or an earlier wake) is stale and waking it does nothing and
 * returns ASYNC_ESRCH, so late completions are always safe.  A waker serves
 * only a suspension in async_task_suspend_dl: if the task's next suspension
 * is some other blocking call (a sleep, a channel, a mutex, an await...),
 * the waker cannot end it and is stale from then on.  Wakers are plain
 * values: copy them freely.  async_waker_wake runs on the loop's thread only;
 * from another thread, async_loop_post a function that calls it. */
typedef struct async_waker {
    struct async_task *ptr_; /* private */
    uint64_t gen_;           /* private */
    uint64_t epoch_;         /* private */
} async_waker_t;

/* The waker for the calling task's next suspension; ptr_ is NULL outside a
 * task. */
ASYNC_API async_waker_t async_task_waker(void);

/* The loop a waker's task belongs to (NULL for an empty waker). */
ASYNC_API async_loop_t *async_waker_loop(async_waker_t waker);

/* Suspends the calling task until woken, the deadline, or cancellation.
 * Returns the code given to async_waker_wake, ASYNC_ETIMEDOUT or
 * ASYNC_ECANCELED; ASYNC_ENOTASK outside a task. */
ASYNC_API int async_task_suspend_dl(int64_t deadline);

/* Resumes the suspended task with code.  Errors: ASYNC_ESRCH (stale),
 * ASYNC_EWRONGLOOP (called from a thread other than the loop's: nothing is
 * done). */
ASYNC_API int async_waker_wake(async_waker_t waker, int code);

#ifdef __cplusplus
}
#endif
#endif
