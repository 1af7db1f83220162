/* Futures: the result of work that finishes later, shared by the executors
 * (thread and process backends), by plain threads and by tasks.
 *
 * A future moves from PENDING (queued) to RUNNING (a worker took it) to one of
 * three final states: DONE (it holds the work's output bytes), FAILED (it
 * holds an error code and a message) or CANCELLED (cancelled while pending;
 * the work never ran).  A final state never changes again.
 *
 * Any thread may block on a future with a deadline; a task awaits it instead,
 * so that only the task sleeps and its loop keeps running other tasks (the
 * completing thread reaches the loop through async_loop_post).  A deadline
 * that passes only ends the wait: the work runs on.
 *
 * Lifetime: futures are reference counted.  The creator (async_future_new or
 * an executor's submit) gets one reference and gives it up with
 * async_future_unref; the executor keeps its own reference until the work has
 * finished, so freeing a future whose work is still queued or running is
 * allowed: the work runs (or is cancelled with the pool) and its result is
 * dropped.  async_future_ref takes one more reference, to hand a future to
 * another thread.  Every call below is thread-safe.
 *
 * Callbacks (async_future_on_done) run exactly once each, in the order they
 * were added, on the thread that finishes the future: a worker thread for
 * executor work (a parent-side dispatcher thread for the process backend),
 * the thread calling async_future_cancel or async_future_set_*, or, for a
 * callback added to an already finished future, at once on the adding
 * thread.  A callback must not block for long (it holds up a worker); it may
 * call any function here, including async_future_unref of a reference it
 * owns.  Waiters are normally woken before the callbacks run; the future of
 * async_executor_map_async is the exception: its first callback returns
 * before any wait does (see executor.h). */
#ifndef ASYNC_FUTURE_H
#define ASYNC_FUTURE_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct async_future async_future_t;

typedef enum async_future_state {
    ASYNC_FUTURE_PENDING = 0,
    ASYNC_FUTURE_RUNNING,
    ASYNC_FUTURE_DONE,
    ASYNC_FUTURE_FAILED,
    ASYNC_FUTURE_CANCELLED,
} async_future_state_t;

/* Longest message a future keeps, terminating NUL included; longer messages
 * are cut. */
#define ASYNC_FUTURE_MSG_MAX 256

/* --- creating and completing (producers) -------------------------------- */

/* Creates a PENDING future with one reference for the caller; for producers
 * outside the executors (a library that completes futures from its own
 * thread) and for tests.  Errors: ASYNC_ENOMEM. */
ASYNC_API int async_future_new(async_future_t **out);

/* Takes one more reference; pair it with async_future_unref. */
ASYNC_API void async_future_ref(async_future_t *f);

/* Gives up one reference; the last one frees the future and its output.
 * NULL is ignored.  Never blocks and never cancels the work. */
ASYNC_API void async_future_unref(async_future_t *f);

/* The three calls below are for futures made by async_future_new; on a
 * future an executor returned they fail with ASYNC_EPERM (its worker alone
 * finishes it).
 *
 * PENDING -> RUNNING: from then on async_future_cancel fails.
 * Errors: ASYNC_ECANCELED (it was cancelled: do not run the work),
 * ASYNC_EALREADY (already running), ASYNC_EDONE (already final). */
ASYNC_API int async_future_set_running(async_future_t *f);

/* Finishes the future as DONE with a copy of size bytes at data (data may be
 * NULL when size is 0), then runs the callbacks and wakes every waiter.
 * Errors: ASYNC_EDONE (already final; nothing changes), ASYNC_ENOMEM (the
 * copy failed; the future is then FAILED with ASYNC_ENOMEM, still final). */
ASYNC_API int async_future_set_result(async_future_t *f, const void *data, size_t size);

/* Finishes the future as FAILED with code (a negative ASYNC_E* code; 0 or a
 * positive value becomes ASYNC_EWORK) and a copy of msg (NULL: none; cut at
 * ASYNC_FUTURE_MSG_MAX - 1 bytes).  Errors: ASYNC_EDONE (already final). */
ASYNC_API int async_future_set_error(async_future_t *f, int code, const char *msg);

/* --- inspecting ---------------------------------------------------------- */

/* The state now, read without a lock and never blocking: PENDING until a
 * worker starts the job, RUNNING while it runs, then one of the three final
 * states, which never changes again.  Another thread may move a PENDING or
 * RUNNING future on as soon as this returns. */
ASYNC_API async_future_state_t async_future_state(const async_future_t *f);

/* True in DONE, FAILED or CANCELLED. */
ASYNC_API bool async_future_done(const async_future_t *f);

/* The outcome: 0 if DONE, the error code if FAILED, ASYNC_ECANCELED if
 * CANCELLED, ASYNC_EAGAIN while PENDING or RUNNING.  Never blocks. */
ASYNC_API int async_future_error(const async_future_t *f);

/* The failure's message ("" when it has none, and before it failed); valid
 * as long as the caller holds its reference.  A cancelled future's message
 * says so. */
ASYNC_API const char *async_future_message(const async_future_t *f);

/* For a map's future (async_executor_map_async): *index (OUT) receives the
 * index of the first failed item.  Errors: ASYNC_EINVAL (the future carries
 * no item index: not a failed map). */
ASYNC_API int async_future_error_index(const async_future_t *f, size_t *index);

/* The output of a DONE future: *data and *size (OUT, either may be NULL)
 * receive the bytes the future owns, valid until the caller's reference is
 * freed; do not free them.  Returns async_future_error(f): on anything but
 * 0, *data is NULL and *size 0. */
ASYNC_API int async_future_result(const async_future_t *f, const void **data, size_t *size);

/* --- cancelling ---------------------------------------------------------- */

/* Cancels a PENDING future: it becomes CANCELLED (ASYNC_ECANCELED, "cancelled
 * before it ran"), its work will never run, callbacks and waiters run.
 * Errors: ASYNC_EBUSY (already RUNNING: it cannot be stopped),
 * ASYNC_EALREADY (already cancelled), ASYNC_EDONE (already DONE or FAILED). */
ASYNC_API int async_future_cancel(async_future_t *f);

/* --- callbacks ----------------------------------------------------------- */

typedef void (*async_future_cb)(async_future_t *f, void *arg);

/* Adds a completion callback; see the top of this file for order and thread.
 * A callback added to a final future runs at once on the calling thread,
 * before this returns.  Errors: ASYNC_ENOMEM (cb will never run). */
ASYNC_API int async_future_on_done(async_future_t *f, async_future_cb cb, void *arg);

/* --- blocking from a thread ---------------------------------------------- */

/* Blocks the calling thread until the future is final, and returns its
 * outcome (as async_future_error).  The _dl form gives up at the deadline
 * with ASYNC_ETIMEDOUT and leaves the work running; to tell that from the
 * work's own ASYNC_ETIMEDOUT, check async_future_done.  Do not call this from
 * a task (it would block the whole loop): use async_future_await. */
ASYNC_API int async_future_wait(async_future_t *f);
ASYNC_API int async_future_wait_dl(async_future_t *f, int64_t deadline);

/* --- awaiting from a task ------------------------------------------------ */

/* Suspends the calling task (only the task: its loop runs on) until the
 * future is final, and returns its outcome as async_future_error.  The _dl
 * form returns ASYNC_ETIMEDOUT at the deadline.  Errors besides the
 * outcome: ASYNC_ENOTASK (not in a task), ASYNC_ECANCELED (the task was
 * cancelled while waiting; the work runs on), ASYNC_ETIMEDOUT, ASYNC_ENOMEM.
 * Timing out or being cancelled is always safe: a completion that arrives
 * later touches nothing of the task. */
ASYNC_API int async_future_await(async_future_t *f);
ASYNC_API int async_future_await_dl(async_future_t *f, int64_t deadline);

/* --- many futures -------------------------------------------------------- */

/* concurrent.futures.wait's return_when. */
typedef enum async_wait_mode {
    ASYNC_WAIT_ALL = 0,         /* every future is final */
    ASYNC_WAIT_FIRST_COMPLETED, /* at least one is final */
    ASYNC_WAIT_FIRST_FAILURE,   /* one is FAILED or CANCELLED, or all are final */
} async_wait_mode_t;

/* Blocks the calling thread (from a task use async_futures_await_dl, which
 * sleeps only the task) until the condition of mode holds over fs[0..n),
 * and returns 0; *index (OUT, may be NULL) receives the index of a final
 * future (FIRST_COMPLETED: the lowest final one; FIRST_FAILURE: the lowest
 * failed or cancelled one, or n when none failed; ALL: n).  The futures
 * that are final then are async_future_done's; the others run on.  n = 0
 * returns 0 at once.  Errors: ASYNC_ETIMEDOUT at the deadline (_dl only),
 * ASYNC_EINVAL (fs NULL with n > 0, a NULL entry, a bad mode),
 * ASYNC_ENOMEM (FIRST_COMPLETED and FIRST_FAILURE listen on every future
 * through an allocation; ALL never allocates). */
ASYNC_API int async_futures_wait(async_future_t *const *fs, size_t n, async_wait_mode_t mode,
                                 size_t *index);
ASYNC_API int async_futures_wait_dl(async_future_t *const *fs, size_t n, async_wait_mode_t mode,
                                    size_t *index, int64_t deadline);

/* The same from a task (only the task sleeps).  Errors: as above, plus
 * ASYNC_ENOTASK, ASYNC_ECANCELED, ASYNC_ENOMEM. */
ASYNC_API int async_futures_await_dl(async_future_t *const *fs, size_t n, async_wait_mode_t mode,
                                     size_t *index, int64_t deadline);

/* as_completed: yields futures in the order they finish, as the iterator
 * sees it: futures already final when it is made come first, in array order
 * (interleaved only with any that finish while async_as_completed_new runs),
 * then the rest as they finish.  The iterator takes its own reference on
 * each future (the caller may free its own). */
typedef struct async_as_completed async_as_completed_t;

/* Errors: ASYNC_EINVAL (fs NULL with n > 0, a NULL entry), ASYNC_ENOMEM. */
ASYNC_API int async_as_completed_new(async_as_completed_t **out, async_future_t *const *fs,
                                     size_t n);

/* Waits until one more future is final; *index (OUT) receives its position
 * in fs.  A thread blocks; a task awaits through its loop (only the task
 * sleeps, the loop's other tasks run on).  Returns 0, ASYNC_EEOF when all n
 * have been yielded, ASYNC_ETIMEDOUT at the deadline (pass the same
 * absolute deadline to every call for Python's as_completed(timeout)),
 * ASYNC_ECANCELED (a task cancelled while it had to wait; a future already
 * final is still yielded), or ASYNC_ENOMEM (a task's wait record); after a
 * timeout async_as_completed_message says "N of M futures unfinished" and
 * async_as_completed_unfinished gives N.  Call it from one thread or task
 * at a time. */
ASYNC_API int async_as_completed_next_dl(async_as_completed_t *it, size_t *index,
                                         int64_t deadline);

/* Number of futures not yet final, and the message of the last timeout ("" if
 * none); the message stays valid until the next call on it. */
ASYNC_API size_t async_as_completed_unfinished(async_as_completed_t *it);
ASYNC_API const char *async_as_completed_message(const async_as_completed_t *it);

/* Frees the iterator and its references; never waits for the futures. */
ASYNC_API void async_as_completed_free(async_as_completed_t *it);

#ifdef __cplusplus
}
#endif
#endif
