/* The executor's backend interface.  PRIVATE: never installed.
 *
 * The executor front owns everything that does not depend on how work runs:
 * options, submit, shutdown and the broken-pool state (executor.c), the
 * priority queue of jobs with its bound (job_queue.c), map chunking
 * (map.c), imap windows (imap.c), futures, cancellation and per-job
 * deadlines while queued.  A backend (thread_backend.c, process_backend.c) only runs jobs:
 *
 *   1. start() creates ex->workers workers.  Each worker (a thread, or a
 *      parent-side thread that drives one worker process) loops:
 *
 *          async__job_t *job;
 *          while (async__exec_take(ex, w, &job) == 0) {
 *              async__outcome_t oc;
 *              ... run job->rows (in this thread: async__rows_run;
 *                  in a process: copy job->rows.in to shared memory, let the
 *                  process call async__rows_run on its copy, copy the output
 *                  rows or the variable result back) ...
 *              async__exec_finish(ex, job, &oc);
 *          }
 *
 *      A process backend fills every field of oc from what its worker
 *      reported (err, failed_row, msg, result_size, and var_out/var_size for
 *      a variable result, which finish copies unless var_owned) and copies
 *      the output rows (result_size bytes for a submit) into job->rows.out
 *      before calling finish.  A worker first runs the initializer with
 *      async__run_init; on failure it calls async__exec_broken and exits
 *      (or stays and takes nothing).  If start() fails it must leave nothing
 *      running (thread_backend.c shows how: async_executor_shutdown, then join).
 *   2. async__exec_take blocks until a job is ready and hands it over already
 *      marked running (its future can no longer be cancelled), or returns
 *      ASYNC_ECLOSED when the pool is shut down and the worker must exit.
 *      Cancelled jobs and jobs whose deadline passed in the queue never reach
 *      a backend.
 *   3. async__exec_finish completes the job exactly once: the future becomes
 *      DONE or FAILED (or a map's chunk is counted), callbacks run on the
 *      calling thread, the job's memory may be freed: do not touch job after.
 *      A backend that loses a job (its process died) finishes it with
 *      ASYNC_EWORKERDIED and a message saying the signal or exit status; a
 *      job killed past its deadline with ASYNC_ETIMEDOUT.
 *   4. join() is called once after the queue has closed (every take returns
 *      ASYNC_ECLOSED from then on, after the jobs that still run are taken):
 *      it returns when every worker has exited and released its resources.
 *      terminate() (may be NULL) stops running work at once, finishing the
 *      jobs held with ASYNC_ECANCELED; it is followed by join().  free()
 *      releases ex->backend after join.
 *
 * Locking: executor.c never calls into a backend while holding its queue
 * lock, and a backend must not hold its own locks while calling
 * async__exec_take or async__exec_finish (finish runs user callbacks). */
#ifndef ASYNC_EXECUTOR_INTERNAL_H
#define ASYNC_EXECUTOR_INTERNAL_H

#include <limits.h>
#include <stddef.h>
#include "core/core_internal.h"
#include "async/future.h"
#include "async/executor.h"

/* An option struct's size field (rule of executor.h): 0 reads the 0.2
 * layout, a nonzero size below this library's struct is refused.  Later
 * versions read a field added at the end only when size covers it. */
#define async__size_bad(p) ((p)->size != 0 && (p)->size < sizeof *(p))

/* The one shape of every backend's default_workers: per workers for each of
 * units (CPUs, serving ranks), at most cap (0: no cap), at least 1. */
static inline unsigned async__default_workers(unsigned units, unsigned per, unsigned cap)
{
    unsigned long long n = (unsigned long long)units * per;
    if (cap && n > cap) n = cap;
    if (n > UINT_MAX) n = UINT_MAX;
    return n ? (unsigned)n : 1;
}

/* A map's chunk function and its ctx, which a job's rows point to (as
 * their ctx, with fn NULL) when one call runs them all. */
typedef struct async__chunk_call {
    async_chunk_fn fn;
    void *ctx;
} async__chunk_call_t;

/* What one job runs: count items of fn.  Item i reads in_size bytes at
 * in + i * in_size and writes out_size bytes at out + i * out_size.  fn NULL:
 * one call of a chunk function runs them all, and ctx points to its
 * async__chunk_call_t (so rows stay 56 bytes, and a job's queue fields and
 * its rows fill its first 72).  For a process backend these
 * pointers are the parent's; the worker gets a copy with its own
 * shared-memory pointers. */
typedef struct async__rows {
    async_work_fn fn;
    void *ctx;
    const char *in;
    size_t in_size;
    char *out;
    size_t out_size;
    size_t count;
} async__rows_t;

/* What running a job produced. */
typedef struct async__outcome {
    int err;              /* 0, or the first failing row's code */
    size_t failed_row;    /* that row, counted within the job */
    size_t result_size;   /* single jobs: bytes of rows.out that are the result
                             (out_size, or less after async_work_output) */
    char msg[ASYNC_FUTURE_MSG_MAX];
    /* A variable-size result (async_work_output beyond out_size), else NULL.
     * var_owned: var_out came from async__malloc and passes to the future;
     * otherwise async__exec_finish copies var_size bytes from it. */
    void *var_out;
    size_t var_size;
    bool var_owned;
} async__outcome_t;

/* A unit of queued work: one submit, or one chunk of a map or imap.  Backends
 * read rows, deadline, first, priority and var_ok, and write nothing.  A
 * backend with lean_jobs is handed a small submit's job in its worker's
 * slot (executor_internal.h), which is valid until async__exec_finish as
 * any job is. */
/* A priority's FIFO of queued jobs (executor.c's queue).  Its header lives in
 * the job at its head, so queueing never allocates. */
typedef struct async__bucket {
    int prio;
    struct async__job *head, *tail;
    struct async__bucket *next;
} async__bucket_t;

typedef struct async__job {
    /* private to executor.c and job_queue.c: the queue reads these three
     * fields of every job it holds, the lean one too (executor_internal.h),
     * which shares them at the same offsets */
    _Atomic(struct async__job *) qnext; /* the submit queue's link */
    /* for backends to read */
    int priority;
    /* private to executor.c */
    unsigned char kind;
    /* for backends to read; never write them */
    bool var_ok;       /* async_work_output may grow past rows.out_size */
    async__rows_t rows;
    int64_t deadline;  /* ASYNC_FOREVER when none */
    size_t first;      /* index of row 0 in its map (0 for a submit) */
    /* private to executor.c */
    void *owner;
    /* A small submit's input and output live here, on the job's second
     * cache line. */
    _Alignas(16) unsigned char small[32];
    struct async__job *next;
    async__bucket_t bucket; /* only when it heads a priority's bucket */
} async__job_t;
/* The layout a small submit's cost rests on (its job starts a cache line). */
_Static_assert(offsetof(async__job_t, kind) < 16 && offsetof(async__job_t, rows) == 16,
               "a job's queue fields left its first 16 bytes");
_Static_assert(offsetof(async__job_t, small) + sizeof ((async__job_t *)0)->small <= 128,
               "a small submit's job spans more than two cache lines");

typedef struct async__backend_ops {
    const char *name;
    unsigned (*default_workers)(void);
    int (*start)(async_executor_t *ex);
    void (*join)(async_executor_t *ex);
    void (*terminate)(async_executor_t *ex); /* NULL: cannot stop running work */
    void (*free)(async_executor_t *ex);
    /* Memory every worker sees at the same address; NULL: async__malloc. */
    int (*shm_alloc)(async_executor_t *ex, size_t size, void **out);
    void (*shm_free)(async_executor_t *ex, void *ptr);
    /* Largest variable result a worker may produce (0: no limit). */
    size_t max_result;
    /* Whether each worker is a thread that runs its jobs on this host's
     * CPUs (the thread backend).  Only then does the queue cap the workers
     * that consume a stream of single jobs at the CPUs left to the
     * submitter (job_queue.c): a process backend's one feeder or an MPI
     * backend's driver slots wait on work that runs elsewhere, and a cap
     * on them would funnel every job through one slot. */
    bool cpu_workers;
    /* Whether each worker index holds at most one job from async__exec_take
     * to async__exec_finish (the thread backend).  Only then may a small
     * submit queue a lean job, which take hands over as a full job in that
     * worker's own slot (executor_internal.h). */
    bool lean_jobs;
    /* The direct path of async_executor_run_dl (NULL: the backend has none,
     * every run is a submit and a wait on its future).  executor.c calls it
     * from a plain thread (not a task) only while the pool is open and not
     * broken and its queue holds no job of any priority, with the job's
     * absolute deadline (ASYNC_FOREVER or in the future) and only when the
     * call's own deadline cannot end the wait first.  Returns false when
     * it did not run the job (no worker free, the pool closing or busy:
     * the caller takes the ordinary path; nothing was written); true when
     * it ran it, with the job's code in *code and out, out_len, msg filled
     * exactly as async_executor_run documents (a copy of at most out_size
     * bytes of the result, its whole size in out_len, the message in
     * msg_cap bytes).  The run counts as in flight (prefetch, shutdown's
     * wait) until it returns. */
    bool (*run)(async_executor_t *ex, const async_job_t *job, int64_t deadline, void *out,
                size_t *out_len, char *msg, size_t msg_cap, int *code);
    /* Whether the calling thread is one of the backend's own threads that
     * run future callbacks (the process backend's supervisor and feeder,
     * the thread backend's deadline watchdog; NULL: it has none).  Such a thread must not wait for the pool: only
     * it could deliver what it waits for.  executor.c refuses a run, a
     * shutdown with wait, terminate and free from it as from a worker. */
    bool (*on_own_thread)(const async_executor_t *ex);
    /* The direct path of async_executor_map_dl (NULL: none, every map
     * queues its chunks).  map.c calls it from a plain thread (not a task)
     * only while the pool is open and not broken, its queue holds no job,
     * and the call has no deadline of its own, with the map's n tickets
     * (JOB_MAP jobs, never queued) and its whole rows.  Returns false when
     * it did nothing (a worker busy, the pool closing, rows outside the
     * executor's shared memory, too many chunks): the caller then queues
     * the tickets.  Otherwise calls take on every ticket, in order (take
     * claims the next chunk and says whether it may run; a chunk that may
     * not was finished by take), runs those that may on the workers and
     * finishes each with async__exec_finish, and returns true once every
     * one has been finished, or has been handed to the backend's ordinary
     * path (which finishes it later) when the workers could not take them
     * all at once after all.  The map counts as in flight until then. */
    bool (*map)(async_executor_t *ex, async__job_t *tickets, size_t n, const async__rows_t *all,
                bool (*take)(async__job_t *ticket));
} async__backend_ops_t;

/* Tests only: runs and maps the process backend's direct paths completed. */
extern _Atomic uint64_t async__procs_direct_runs;
extern _Atomic uint64_t async__procs_direct_maps;

extern const async__backend_ops_t async__threads_backend;
/* Defined by process_backend.c when the process backend is built in. */
extern const async__backend_ops_t async__procs_backend;
/* Defined by lib/mpi/ only in libasync-mpi: a weak reference, so that
 * libasync alone links without MPI and refuses the backend. */
extern const async__backend_ops_t async__mpi_backend __attribute__((weak));

/* The fields a backend may use.  executor.c keeps the rest behind `priv`. */
struct async_executor {
    const async__backend_ops_t *ops;
    void *backend;               /* the backend's state, set by start() */
    unsigned workers;
    async_executor_opts_t opts;  /* defaults filled in */
    struct async__exec_priv *priv;
};

/* See the top of this file.  worker is the worker's index, 0 .. workers-1. */
int async__exec_take(async_executor_t *ex, unsigned worker, async__job_t **job);
void async__exec_finish(async_executor_t *ex, async__job_t *job, async__outcome_t *oc);

/* A thread backend's deadline watchdog: whether a running job's future may
 * fail at its deadline while the job still runs (a submit with a deadline;
 * not a map chunk, whose rows the caller's memory holds until the map is
 * final), and failing it so with ASYNC_ETIMEDOUT.  The backend calls
 * async__exec_expire at most once per job, between taking it and calling
 * async__exec_finish (which still follows: the job stays valid until then),
 * without holding its own locks (callbacks run). */
bool async__exec_expirable(const async__job_t *job);
void async__exec_expire(async_executor_t *ex, async__job_t *job);

/* Marks the pool broken: every queued job fails with code and msg, and every
 * later submit returns code.  code is ASYNC_EINIT (an initializer failed),
 * or, on the process backend, ASYNC_EWORKERDIED or ASYNC_ECHILD (see
 * executor.h).  Idempotent; the first report wins. */
void async__exec_break(async_executor_t *ex, int code, const char *msg);
/* async__exec_break for worker's failed initializer, which returned code with
 * msg: ASYNC_EINIT and "worker W initializer failed: ...". */
void async__exec_broken(async_executor_t *ex, unsigned worker, int code, const char *msg);

/* Runs rows on the calling thread (thread worker or worker process):
 * calls fn for each row in order, stopping at the first failure, and fills
 * *oc.  worker and deadline are what async_work_worker/async_work_deadline
 * report.  var_ok allows async_work_output past out_size, when it calls
 * grow(grow_arg, size) for the buffer (NULL grow: async__malloc, and the
 * outcome says var_owned).  max_result caps a variable result (0: none). */
void async__rows_run(const async__rows_t *rows, unsigned worker, int64_t deadline, bool var_ok,
                     void *(*grow)(void *grow_arg, size_t size), void *grow_arg,
                     size_t max_result, async__outcome_t *oc);

/* Runs the executor's initializer (if any) for worker on the calling thread;
 * returns its code (0 when there is none) and its message in msg. */
int async__run_init(async_executor_t *ex, unsigned worker, char msg[ASYNC_FUTURE_MSG_MAX]);


#endif
