/* The event loop: a libev loop that also schedules libasync's tasks.
 *
 * A loop belongs to one thread at a time: create it, spawn tasks on it and run
 * it from that thread.  The only calls that other threads may make on a loop
 * are async_loop_post() and async_loop_stop_post().  One loop per thread;
 * libev's default loop (async_loop_default) is the only one that can watch
 * signals and child processes. */
#ifndef ASYNC_LOOP_H
#define ASYNC_LOOP_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

struct ev_loop;
typedef struct async_loop async_loop_t;

typedef enum async_run_mode {
    ASYNC_RUN_DEFAULT = 0, /* until no task or active watcher is left, or stop */
    ASYNC_RUN_ONCE,        /* one iteration; block for events if there is nothing ready */
    ASYNC_RUN_NOWAIT,      /* one iteration; never block */
} async_run_mode_t;

/* Creates a loop over a new libev loop (epoll where libev has it).  *out is
 * set only on success.  The loop keeps two descriptors (epoll and libev's
 * eventfd) and needs two more free while it is built.
 * Errors: ASYNC_ENOMEM, ASYNC_EMFILE or ASYNC_ENFILE (descriptors ran out:
 * nothing is left open), ASYNC_EIO (libev could not create its backend).
 * The first loop installs libev's process-wide allocator and syserr callback
 * (ev_set_allocator, ev_set_syserr_cb); a program must not replace them. */
ASYNC_API int async_loop_new(async_loop_t **out);

/* A loop over libev's default loop, created on first use; the same object is
 * returned until it is freed.  libev's default loop, once made, keeps its
 * descriptors for the life of the process.  Errors: as async_loop_new. */
ASYNC_API int async_loop_default(async_loop_t **out);

/* Frees the loop.  Posted functions still queued run first, on this thread
 * (and those they post in turn).  Fails with ASYNC_EBUSY, freeing nothing,
 * while tasks are alive or the loop is running, when a function it ran
 * spawned a task (run the loop again, then free), or when called from one
 * of those functions (the outer call frees the loop); finished tasks nobody
 * awaited are reclaimed. */
ASYNC_API int async_loop_destroy(async_loop_t *loop);

/* The underlying libev loop, for raw watchers.  A started, referenced watcher
 * keeps async_loop_run(ASYNC_RUN_DEFAULT) running like a live task does. */
ASYNC_API struct ev_loop *async_loop_ev(async_loop_t *loop);

/* Runs the loop on the calling thread.  Returns 0 when nothing is left to do
 * (no live task, no active watcher), 1 when stopped or when a ONCE or NOWAIT
 * iteration returned with work left, or ASYNC_EBUSY if the loop is already
 * running (run is not re-entrant), ASYNC_EWRONGLOOP if a loop already runs on
 * this thread (called from a task, say), ASYNC_EINVAL for an unknown mode. */
ASYNC_API int async_loop_run(async_loop_t *loop, async_run_mode_t mode);

/* Makes a running async_loop_run return after the current iteration.
 * Returns 0, or ASYNC_EWRONGLOOP (nothing done) when called from a thread
 * other than the loop's: other threads use async_loop_stop_post. */
ASYNC_API int async_loop_stop(async_loop_t *loop);

/* Runs fn(arg) on the loop's thread, soon, from any thread.  Functions posted
 * from one thread run in the order posted; every successful post runs exactly
 * once: in an iteration of async_loop_run, or in async_loop_destroy.  A pending
 * post does not by itself keep a DEFAULT run going; keep a task or watcher
 * alive for work you are waiting on.  Errors: ASYNC_ENOMEM (fn will not run). */
ASYNC_API int async_loop_post(async_loop_t *loop, void (*fn)(void *arg), void *arg);

/* async_loop_stop from any thread.  Errors: ASYNC_ENOMEM. */
ASYNC_API int async_loop_stop_post(async_loop_t *loop);

/* The loop whose async_loop_run is on this thread's stack, or NULL. */
ASYNC_API async_loop_t *async_loop_current(void);

/* Number of tasks spawned on the loop that have not finished. */
ASYNC_API size_t async_loop_live_tasks(async_loop_t *loop);

#ifdef __cplusplus
}
#endif
#endif
