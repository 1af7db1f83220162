/* The process-pool engine.  PRIVATE to libasync: the process backend of the
 * executor (exec/process_backend.c) is built on it, users never see it.
 *
 * A pool is a fork server, N worker processes forked by that server, one
 * shared-memory region that all of them map at the same address, and a
 * supervisor thread in the parent.  Jobs cross as bytes through the region:
 * submit copies the input into a slot (inline when small), a worker claims
 * the slot with one compare-and-swap, runs the work function with the input
 * and an output buffer in shared memory, and publishes the slot on its own
 * completion ring; the supervisor delivers each result to the job's `done`
 * callback.  Every claim and every hand-over is a single atomic operation on
 * the slot's state word, so a worker that dies at any instruction leaves a
 * state the supervisor can read: the job it held fails with
 * ASYNC_EWORKERDIED, nothing else is lost, and a replacement is forked.
 *
 * Addresses.  The fork server is forked from the caller of
 * async__procpool_new, and workers from the fork server, so code and data
 * addresses are the parent's as of that moment (ASLR is chosen at exec, not at
 * fork).  Work functions, initializers and the memory their ctx pointers
 * reach must therefore exist before the pool is created; later changes to
 * ordinary memory are not seen by workers.  Memory from
 * async__procpool_shm_alloc is mapped MAP_SHARED before the fork, so it has
 * the same address everywhere and changes are seen both ways. */
#ifndef ASYNC_PROCPOOL_INTERNAL_H
#define ASYNC_PROCPOOL_INTERNAL_H

#include <sys/types.h>
#include "core/core_internal.h"

typedef struct async__procpool async__procpool_t;
typedef struct async__procout async__procout_t;

/* A work function, run in a worker process: reads in_len bytes at in, writes
 * its result to async__procout_data(out) (async__procout_cap bytes, all of
 * which are the result unless async__procout_set_size says otherwise), and
 * returns 0 or a negative code; a message may be set with
 * async__procout_error. */
typedef int (*async__procpool_fn)(void *ctx, const void *in, size_t in_len, async__procout_t *out);

/* An optional trampoline (the executor's adapter): when a pool has one,
 * workers call call(fn, ctx, ...) and fn may have any type. */
typedef void (*async__anyfn_t)(void);
typedef int (*async__procpool_call_fn)(async__anyfn_t fn, void *ctx, const void *in,
                                       size_t in_len, async__procout_t *out);

/* A worker initializer, run once in each new worker before it takes work.
 * Returns 0 or a negative code, writing a message of at most msg_cap bytes
 * to msg if it likes. */
typedef int (*async__procpool_init_fn)(void *arg, char *msg, size_t msg_cap);

/* A job's completion, exactly once for every successful submit, on the
 * supervisor thread (or in async__procpool_cancel's caller): err 0 with the
 * result (out is valid only during the call; msg NULL), or a code and a
 * message (never NULL).  user is the pool's opts.user, arg the job's.  The
 * result lies inside the job's inline bytes, its output block or its
 * worker's result area, never longer than those (the pool checks what the
 * worker wrote: ASYNC_EIO and why otherwise); its bytes are the worker's
 * and may be anything. */
typedef void (*async__procpool_done_fn)(void *user, void *arg, int err, const char *msg,
                                        const void *out, size_t out_len);

typedef struct async__procpool_opts {
    unsigned workers;              /* 0: the number of CPUs */
    unsigned slots;                /* jobs in shared memory at once; 0: 4096 */
    size_t heap_size;              /* shared heap (virtual, sparse); 0: 1 GiB */
    size_t result_area;            /* per-worker area for grown results; 0: 1 MiB */
    unsigned max_tasks_per_worker; /* recycle a worker after this many; 0: never */
    async__procpool_init_fn init;
    void *init_arg;
    async__procpool_call_fn call;
    /* Called once, on the supervisor thread, when the pool breaks, with the
     * code later submits return and the message (async__procpool_error):
     * ASYNC_EINIT (an initializer reported failure, or workers with an
     * initializer kept dying before ready), ASYNC_EWORKERDIED (workers
     * without one kept dying before ready, or none could be forked),
     * ASYNC_ECHILD (the fork server died, broke its protocol, closed its
     * socket alive, or was silent for 5 s while shutdown or terminate waited
     * for its reports, or did not answer for 3 s while the pool ran and no
     * spare server was ready to take over: it is killed then).  A server
     * that does not answer while a spare is ready is replaced by it instead:
     * the pool stays whole, and only the jobs its workers ran fail
     * (ASYNC_ECHILD, "... did not answer for 3 s ...; its spare (pid N)
     * took over"). */
    void (*on_broken)(void *arg, int code, const char *msg);
    void *broken_arg;
    void *user;                    /* first argument of every done callback */
    int64_t idle_spin_ns;          /* one idle worker spins this long before it
                                    * sleeps; <=0: none (the default) */
    /* async__procpool_call: its caller spins this long for the hand-over
     * before it sleeps, and the worker that handed a job over spins as long
     * for the next one; 0: PP_CALL_SPIN_NS, <0: neither spins. */
    int64_t call_spin_ns;
    bool inherit_fds;              /* keep the parent's descriptors open in workers */
} async__procpool_opts_t;

#define PP_CALL_SPIN_NS 20000

typedef struct async__procjob {
    async__anyfn_t fn;
    void *ctx;
    const void *in;
    size_t in_len;
    const void *in2;               /* more input, appended to in (may be NULL) */
    size_t in2_len;
    size_t out_cap;                /* bytes of result space before the job runs */
    int64_t deadline;              /* absolute; ASYNC_FOREVER for none */
    async__procpool_done_fn done;
    void *arg;
} async__procjob_t;

/* Starts the fork server, the supervisor and the workers (asynchronously:
 * jobs queue until workers are ready).  opts may be NULL.  Errors:
 * ASYNC_EINVAL, ASYNC_ENOMEM, or a system call's -errno. */
int async__procpool_new(const async__procpool_opts_t *opts, async__procpool_t **out);

/* Waits until every worker has run its initializer.  Errors: ASYNC_ETIMEDOUT,
 * ASYNC_ECLOSED, or the code that broke the pool (see on_broken and
 * async__procpool_error). */
int async__procpool_wait_ready(async__procpool_t *pool, int64_t deadline);

/* Queues a job; its done callback runs exactly once, later, on the
 * supervisor thread.  *id (may be NULL) names it for async__procpool_cancel.
 * Errors (done never runs): ASYNC_ECLOSED after shutdown or terminate, the
 * code that broke the pool (see on_broken), ASYNC_ENOMEM, ASYNC_EINVAL. */
int async__procpool_submit(async__procpool_t *pool, const async__procjob_t *job, uint64_t *id);

/* Runs a job and waits for it in the calling thread, which the worker wakes
 * directly (no hop through the supervisor thread: two hand-overs per job,
 * as a pipe ping-pong).  The job's done runs exactly once before this
 * returns 0: here on success, on the supervisor thread when the job fails
 * there (its worker died, its deadline passed, terminate).  There is no id:
 * the job cannot be cancelled, and the wait ends only with the job (its
 * deadline bounds it).  Errors (done never runs): ASYNC_EAGAIN (no slot is
 * free at once, or jobs are pending: submit it instead), ASYNC_ECLOSED after
 * shutdown or terminate, the code that broke the pool, ASYNC_ENOMEM,
 * ASYNC_EINVAL, ASYNC_EDEADLK (called on the supervisor thread, from a done
 * callback: a worker's death or the deadline would never be handled). */
int async__procpool_call(async__procpool_t *pool, const async__procjob_t *job);

/* The most jobs one async__procpool_call_n takes. */
#define PP_CALL_MAX 256

/* async__procpool_call for n jobs at once (a map's chunks): places all of
 * them or none, wakes up to one worker a job, and returns once every job's
 * done has run (here for those handed over, on the supervisor thread for
 * those that failed there), in any order.  Workers claim them in the order
 * given.  The calling thread sleeps at once and is woken once, by the
 * worker that hands over the last job (after a failure in the batch, by
 * every hand-over), not once a job.  Each job's input must fit a slot's
 * inline bytes (96) and its out_cap the inline result (64), so that placing
 * cannot fail half-way.  Errors (no done ever runs): those of
 * async__procpool_call, ASYNC_EAGAIN also when fewer than n slots are free
 * or another thread's call_n is under way (one batch at a time),
 * ASYNC_EINVAL for n 0 or above PP_CALL_MAX or a job too large to sit
 * inline. */
int async__procpool_call_n(async__procpool_t *pool, const async__procjob_t *jobs, size_t n);

/* Whether the calling thread is the pool's supervisor (done callbacks run
 * there): it must not wait for a job, which only it could fail. */
bool async__procpool_on_supervisor(const async__procpool_t *pool);

/* Withdraws a job no worker has started: its done runs with ASYNC_ECANCELED.
 * Errors: ASYNC_EBUSY (running), ASYNC_ESRCH (finished or unknown). */
int async__procpool_cancel(async__procpool_t *pool, uint64_t id);

/* Stops accepting jobs.  With wait, returns once every accepted job has
 * completed and every worker has exited; without, the pool drains in the
 * background.  Idempotent. */
void async__procpool_shutdown(async__procpool_t *pool, bool wait);

/* Kills every worker now; every unfinished job completes with
 * ASYNC_ECANCELED.  Returns once all workers are reaped. */
void async__procpool_terminate(async__procpool_t *pool);

/* Terminates if needed, reaps the fork server, unmaps the region.  NULL is
 * accepted. */
void async__procpool_free(async__procpool_t *pool);

/* Shared memory at the same address in the parent and every worker,
 * zeroed.  Errors: ASYNC_ENOMEM (the heap is full), ASYNC_EINVAL (size 0). */
int async__procpool_shm_alloc(async__procpool_t *pool, size_t size, void **out);
void async__procpool_shm_free(async__procpool_t *pool, void *ptr);
bool async__procpool_owns(const async__procpool_t *pool, const void *ptr);

unsigned async__procpool_workers(const async__procpool_t *pool);
/* The error that broke the pool (0 if none) and its message. */
int async__procpool_error(async__procpool_t *pool, char *msg, size_t msg_cap);
/* Process ids, for tests and tools: the fork server, and worker i (0 while
 * it is being replaced). */
pid_t async__procpool_server_pid(const async__procpool_t *pool);
pid_t async__procpool_worker_pid(const async__procpool_t *pool, unsigned i);
/* Workers forked so far, replacements included. */
uint64_t async__procpool_spawned(const async__procpool_t *pool);

/* Tests only: when positive, a new worker sleeps this long after its
 * initializer and before it reports ready, so that a test can kill it in
 * that window.  Read when the pool is created (the fork server copies it). */
extern int64_t async__pp_test_hold_ready_ns;

/* --- inside a work function -------------------------------------------- */
/* In a worker process: its index, 0 .. workers-1; -1 elsewhere. */
int async__procpool_self(void);
void *async__procout_data(async__procout_t *out);
size_t async__procout_cap(const async__procout_t *out);
/* Sets the result's size.  Up to the capacity the data stays in place;
 * beyond it the result moves to the worker's result area (the first cap
 * bytes are copied) and async__procout_data returns the new place.
 * Errors: ASYNC_ENOMEM (larger than the result area). */
int async__procout_set_size(async__procout_t *out, size_t size);
/* Maps the pages of [ptr, ptr + len) into this worker now, if the range is
 * in the pool's shared heap and this worker has not populated them before:
 * one system call instead of a page fault per page on first touch (ptr is
 * read, and written too with write).  Does nothing outside a worker, and
 * cannot fail: pages it leaves out fault in as usual. */
void async__procpool_prefault(const void *ptr, size_t len, bool write);
/* Sets the failure message reported with a non-zero return. */
void async__procout_error(async__procout_t *out, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
