/* Executors: pools of workers that run work functions and hand back futures;
 * one API over two backends, threads (ThreadPoolExecutor, the thread side of
 * multiprocessing.Pool) and processes (ProcessPoolExecutor, Pool), chosen by
 * one option, so a program switches between them without other changes.
 *
 * Work crosses to a worker as bytes.  A work function receives its input as
 * in_size plain bytes and writes its output into out_size bytes; on the
 * process backend both are copies in shared memory, so a work function must
 * never rely on pointers stored inside its input (point into memory from
 * async_executor_shm_alloc instead, or pass offsets).  The ctx pointer is
 * passed through unchanged: on the process backend it points into the
 * worker's copy of the parent's memory as it was when the executor was
 * created, so use it for read-only configuration prepared before
 * async_executor_new.  A work function returns 0 or an error: a negative
 * code, which is the job's as it is (an ASYNC_E* code, or the program's
 * own, which async_errname cannot name), or a
 * positive value, which becomes ASYNC_EWORK; a message is set by returning
 * async_work_fail(code, fmt, ...).
 *
 * Results of variable size: a function may call async_work_output(size) to
 * get a buffer of size bytes for its result instead of the out_size it was
 * given (submit only; map outputs are fixed rows).
 *
 * Guarantees: an error in one task fails only that task's future, never the
 * pool; queued work runs highest priority first, FIFO within a priority;
 * every future an executor returns becomes final, including on shutdown and
 * when the executor is freed with work in flight.  Every function here is
 * thread-safe unless it says otherwise. */
#ifndef ASYNC_EXECUTOR_H
#define ASYNC_EXECUTOR_H

#include <string.h>
#include "common.h"
#include "future.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct async_executor async_executor_t;

/* --- work functions ------------------------------------------------------ */

/* A work function: reads in_size bytes at in, writes up to out_size bytes at
 * out (out is NULL when out_size is 0), and returns 0 or an error code.  ctx
 * is the job's context pointer (see the top of this file).  It runs on a
 * worker thread or in a worker process, so it must be thread-safe with
 * respect to other work running at the same time. */
typedef int (*async_work_fn)(const void *in, size_t in_size, void *out, size_t out_size,
                             void *ctx);

/* A map's work on a run of consecutive items in one call (async_map_t's
 * chunk_fn, in place of fn): item k (0 <= k < count) reads in_size bytes at
 * in + k * in_size and writes out_size bytes at out + k * out_size (in or
 * out is NULL when its size is 0).  One call a chunk spares the call a row
 * and lets the compiler unroll or vectorise the loop over the items.
 * Returns 0 when every item succeeded; else the error of the first item that
 * failed, as a work function's (async_work_fail gives it a message), with
 * *failed set to that item's index within the run (left at 0, the run's
 * first item is blamed); the run's items after it count as not run.
 * async_work_output returns NULL inside it: results go to out. */
typedef int (*async_chunk_fn)(const void *in, size_t in_size, void *out, size_t out_size,
                              size_t count, size_t *failed, void *ctx);

/* A per-worker initializer, run once in each worker before its first work
 * (Python's initializer=).  Returns 0 or an error (async_work_fail gives it a
 * message); a failure breaks the pool: queued and later work fails with
 * ASYNC_EINIT and a message naming the worker and the error.  On the process
 * backend a worker that dies before it is ready (its initializer crashed, or
 * it was killed from outside) reported nothing, so it is replaced; the 10th
 * such death in a row of one worker breaks the pool with ASYNC_EINIT (or,
 * without an initializer, ASYNC_EWORKERDIED) and "... died 10 times in a row
 * before it was ready (last: ...)", restarts being spaced out from 5 ms up to
 * 200 ms in between, so that a crash loop is reported in about a second. */
typedef int (*async_work_init_fn)(void *ctx);

/* Inside a work function or initializer: records a message (printf format)
 * for the running task's failure and returns code, so that
 * `return async_work_fail(ASYNC_EINVAL, "row %zu: %d out of range", i, v);`
 * fails the task with that code and message.  Code 0 or positive gives
 * ASYNC_EWORK.  Outside a work function it only returns the code. */
ASYNC_API int async_work_fail(int code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Inside a work function run by submit: sets the size of the result to size
 * bytes and returns the buffer to write them to: the given out buffer when
 * size <= out_size (its first size bytes are kept), else a new buffer (the
 * old contents are not copied).  Returns NULL when out of memory, when size
 * exceeds the backend's limit, inside a map or imap when size > out_size,
 * and outside a work function. */
ASYNC_API void *async_work_output(size_t size);

/* Inside a work function or initializer: the index of the worker running it
 * (0 .. workers-1, stable for the worker's life), for per-worker state; -1
 * elsewhere, including the caller of a blocking map that runs chunks itself
 * (see async_executor_map). */
ASYNC_API int async_work_worker(void);

/* Inside a work function: the job's deadline (ASYNC_FOREVER if none), so long
 * work can stop early; ASYNC_FOREVER elsewhere. */
ASYNC_API int64_t async_work_deadline(void);

/* --- creating and ending a pool ------------------------------------------ */

typedef enum async_backend {
    ASYNC_BACKEND_THREADS = 0, /* worker threads in this process */
    ASYNC_BACKEND_PROCESSES,   /* forked worker processes */
    ASYNC_BACKEND_MPI,         /* the ranks of an MPI job: async/mpi.h, libasync-mpi */
} async_backend_t;

typedef struct async_executor_opts {
    /* 0 or sizeof(async_executor_opts_t) as the program was compiled; 0 reads the 0.2
     * layout.  Later versions add fields only at the end and read them only
     * when size covers them; a nonzero size below the 0.2 struct's is
     * refused with ASYNC_EINVAL. */
    size_t size;
    async_backend_t backend;
    /* Workers; 0 for the default: min(32, cpus + 4) threads, as
     * ThreadPoolExecutor, or cpus processes, where cpus is
     * async_cpu_count(), as Python 3.13's pools use os.process_cpu_count(). */
    unsigned workers;
    /* Bound on queued (not yet running) jobs; 0 for none.  A map counts its
     * chunks.  When full, submit blocks and trysubmit fails with
     * ASYNC_EAGAIN. */
    size_t max_queued;
    /* Run once in each worker before its first job; NULL for none. */
    async_work_init_fn initializer;
    void *init_ctx;
    /* Process backend: replace a worker after it ran this many jobs (a map
     * chunk is one job); 0 for never.  Ignored by the thread backend. */
    unsigned max_tasks_per_worker;
    /* Process backend: bytes of shared memory for one job's input plus
     * output (0: the backend's default); larger jobs fail with ASYNC_EINVAL.
     * Ignored by the thread backend. */
    size_t max_job_bytes;
    /* Thread backend without an initializer: the caller of a blocking
     * async_executor_map runs chunks too instead of sleeping (the map then
     * uses workers + 1 threads).  Off by default, so that `workers` is the
     * number of threads doing the work, as in Python's pools. */
    bool caller_runs;
} async_executor_opts_t;

/* Zeroes *o and sets its size (see the size field). */
static inline void async_executor_opts_init(async_executor_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->size = sizeof *o;
}

/* Creates and starts a pool (*out, OUT); opts may be NULL (threads, default
 * size).  Errors: ASYNC_EINVAL (out NULL, bad opts->size, unknown backend); ASYNC_ENOTSUP
 * for ASYNC_BACKEND_MPI when the program is linked with libasync rather than
 * libasync-mpi, when async_mpi_init has not returned on this rank (rank 0),
 * or with an initializer (see async/mpi.h); ASYNC_EBUSY (MPI: an MPI
 * executor lives already); ASYNC_ECLOSED (MPI: the run's MPI executor was
 * freed, and the serving ranks exited with it); ASYNC_ENOMEM (also: the
 * process backend's shared memory, whose heap shrinks from 1 GiB to fit
 * RLIMIT_FSIZE and RLIMIT_AS, cannot have 16 MiB of heap under them); ASYNC_EAGAIN
 * (the system refused a thread or process); ASYNC_EMFILE / ASYNC_ENFILE
 * (the process backend found no free descriptor for its shared memory or its
 * fork server's socket).  On error *out is untouched. */
ASYNC_API int async_executor_new(async_executor_t **out, const async_executor_opts_t *opts);

/* The pool's worker count and backend. */
ASYNC_API unsigned async_executor_workers(const async_executor_t *ex);
ASYNC_API async_backend_t async_executor_backend(const async_executor_t *ex);

/* Number of jobs queued and not yet taken by a worker: a snapshot, which
 * walks the queue under its lock (O(queued)), for tests and diagnostics
 * rather than a hot loop. */
ASYNC_API size_t async_executor_queued(async_executor_t *ex);

/* Whether the pool is broken: returns 0 while it serves, else the code every
 * submit now returns (ASYNC_EINIT, ASYNC_EWORKERDIED or ASYNC_ECHILD, see
 * async_executor_submit), and copies the reason to msg (OUT, may be NULL;
 * cap bytes, cut and NUL-terminated; "" while it serves).  A pool that was
 * only shut down is not broken. */
ASYNC_API int async_executor_error(async_executor_t *ex, char *msg, size_t cap);

/* Stops accepting work (later submits fail with ASYNC_ECLOSED).  With
 * cancel_pending, queued jobs are cancelled (their futures CANCELLED, maps
 * FAILED with ASYNC_ECANCELED); without, they still run.  With wait, blocks
 * the calling thread (a task's too: joining threads cannot be awaited)
 * until all work that will run has finished and the workers have exited.
 * It has no _dl form: the workers run their jobs to the end (a thread cannot
 * be stopped), and the pool is only safe to free once they have exited.  To
 * bound the wait, shut down without wait and wait for the futures with
 * async_futures_wait_dl (async_futures_await_dl in a task), or terminate.
 * Without wait it never blocks.  Calling it again is allowed (it can
 * upgrade to cancel or wait).  Errors:
 * ASYNC_EINVAL (ex NULL), ASYNC_EDEADLK (wait asked from one of the pool's
 * own workers, or from a future's callback on the process backend, which
 * runs on the pool's own thread, or from a callback of a future the thread
 * backend failed at its deadline, which runs on its deadline watchdog, which
 * the expired job's worker waits for: it would wait for itself; the shutdown itself still
 * happens, without the wait). */
ASYNC_API int async_executor_shutdown(async_executor_t *ex, bool wait, bool cancel_pending);

/* Stops now: cancels queued jobs, and on the process backend kills the
 * workers, failing the jobs they held with ASYNC_ECANCELED; then blocks the
 * calling thread (a task's too) until the workers have exited.  A thread
 * cannot be killed, so the thread backend waits for running jobs to end;
 * hence no _dl form: the wait is teardown that must outlast running work.  Errors: ASYNC_EINVAL (ex NULL),
 * ASYNC_EDEADLK (called from one of the pool's own workers or, on the process
 * backend, from a future's callback, or from a callback of a future the
 * thread backend failed at its deadline (on its deadline watchdog): the queued jobs
 * are cancelled and the pool shut down, but nothing is killed or waited
 * for). */
ASYNC_API int async_executor_terminate(async_executor_t *ex);

/* Shuts down (cancel_pending, wait) if not done yet and frees the pool.
 * Futures the caller still holds stay valid, and all are final.  It blocks,
 * without a _dl form, for the same reason as async_executor_shutdown with
 * wait: the pool's memory must outlive the jobs still running.  NULL is
 * ignored.  Calling it from one of the pool's own workers (or, on the process
 * backend, from a future's callback, which runs on the pool's thread, or on
 * the thread backend's deadline watchdog) is a programming
 * error, as free() of a bad pointer is: the worker would wait for itself and
 * free the memory it runs on, so the call prints a message naming it to
 * stderr and aborts the process.
 *
 * Memory: the executor reuses the memory of freed futures of small jobs
 * (input plus output up to about 80 bytes) for later submits, keeping up to
 * 250,000 of them (about 100 MB) as long as it lives; all of it is released
 * here, except up to 4,096 blocks that another thread that submitted to this
 * executor keeps cached: those go when that thread exits or submits to
 * another executor. */
ASYNC_API void async_executor_free(async_executor_t *ex);

/* Memory every worker sees at the same address, for large inputs that a map
 * should not copy: ordinary heap memory on the thread backend, a shared
 * mapping on the process backend (map inputs inside it are passed by
 * address, not copied).  Free it with async_executor_shm_free before the
 * executor.  Errors: ASYNC_ENOMEM. */
ASYNC_API int async_executor_shm_alloc(void **out, async_executor_t *ex, size_t size);
/* Frees what async_executor_shm_alloc of the same executor returned; NULL
 * is a no-op.  On the process backend a pointer the pool did not hand out
 * is ignored; on the thread backend it is undefined (it goes to free()). */
ASYNC_API void async_executor_shm_free(async_executor_t *ex, void *ptr);

/* --- single jobs: submit, apply ------------------------------------------ */

typedef struct async_job {
    /* 0 or sizeof(async_job_t) as the program was compiled; 0 reads the 0.2
     * layout.  Later versions add fields only at the end and read them only
     * when size covers them; a nonzero size below the 0.2 struct's is
     * refused with ASYNC_EINVAL. */
    size_t size;
    async_work_fn fn;
    const void *in;  /* in_size bytes, copied by submit unless borrow_input */
    size_t in_size;
    size_t out_size; /* bytes of the output buffer the function gets */
    void *ctx;
    int priority;       /* higher runs first; 0 normally */
    /* Time limit in ns, counted from the submit (which turns it into the
     * job's deadline, async_deadline_after(timeout_ns)); 0 for none; a
     * negative one has already expired: the job fails with ASYNC_ETIMEDOUT
     * without running.  What happens at the deadline: below. */
    int64_t timeout_ns;
    bool borrow_input; /* in stays valid and unchanged until the future is
                          final: not copied (thread backend); ignored, the
                          input copied, when the job has a time limit, and
                          in async_executor_run_dl with a deadline or in a
                          task (the call may return while the job runs) */
} async_job_t;

/* Zeroes *o and sets its size (see the size field). */
static inline void async_job_init(async_job_t *o)
{
    memset(o, 0, sizeof *o);
    o->size = sizeof *o;
}

/* Queues one job and returns its future (*out, OUT, one reference for the
 * caller).  The job's deadline is job->timeout_ns after the submit is
 * called (none when 0).  A job still queued at its deadline fails with ASYNC_ETIMEDOUT
 * without running; on the process backend a job running past its deadline
 * is killed with its worker (ASYNC_ETIMEDOUT; a job for whose deadline the
 * pool finds no memory fails with ASYNC_ENOMEM without running, rather than
 * run unbounded); on the thread backend a
 * thread cannot be stopped: the future fails with ASYNC_ETIMEDOUT at the
 * deadline ("still running at its deadline ..."), callbacks run and waits
 * return then, while the function runs on to its end (it can read
 * async_work_deadline() to stop early).  Until it returns, the executor
 * keeps the job's memory: its copy of the input (a job with a time limit is
 * always copied, whatever borrow_input says), its output buffer and any
 * async_work_output buffer; the late result is then dropped, so nothing the
 * caller frees after the timeout is touched.  What ctx points to must stay
 * valid until the function returns: async_executor_shutdown with wait and
 * async_executor_free wait for it.
 *
 * While the queue is at max_queued, submit waits for room: a thread blocks;
 * a task awaits (only the task sleeps, its loop runs on).  submit_dl gives
 * up waiting at its deadline parameter with ASYNC_ETIMEDOUT (that deadline
 * bounds the wait for room only, not the job: see timeout_ns); a task
 * cancelled while it waits gets ASYNC_ECANCELED; in both cases nothing is
 * queued.  trysubmit never waits: ASYNC_EAGAIN when full.
 * A process-backend future may also fail with ASYNC_EIO: a worker left a
 * result the pool cannot believe (a length or offset outside the job's
 * result, an outcome header that disagrees with it: the pool's shared
 * memory was overwritten by some work function), and the message says what.
 * Errors: ASYNC_EINVAL (job or fn NULL, bad job->size, in NULL
 * with in_size > 0), ASYNC_ECLOSED (shut down, before or while blocked),
 * ASYNC_EINIT (a worker initializer failed: the pool is broken),
 * ASYNC_EWORKERDIED (process backend without an initializer: workers kept
 * dying before they were ready, the pool is broken), ASYNC_ECHILD (process
 * backend: the pool's fork server died, so no worker can start and the pool
 * is broken; jobs queued or running then fail with ASYNC_ECHILD and "the
 * process pool's fork server (pid P) died..."; submit returns it once the
 * pool has noticed, within about 250 ms; the same when the server broke its
 * protocol or closed its socket alive: "... sent a message of 8 bytes ...,
 * and the pool killed it"), ASYNC_ETIMEDOUT (submit_dl),
 * ASYNC_ECANCELED (a cancelled task that had to wait for room),
 * ASYNC_EDEADLK (the queue is full and the caller is a thread the room
 * depends on, so the wait would never end: a future's callback on the
 * process backend, which runs on the pool's own thread, or a worker of the
 * thread backend, in its job or a callback, when every other worker already
 * waits for room; a worker that is not the last still waits), ASYNC_ENOMEM.
 * On error nothing is queued and *out is untouched. */
ASYNC_API int async_executor_submit(async_future_t **out, async_executor_t *ex,
                                    const async_job_t *job);
ASYNC_API int async_executor_submit_dl(async_future_t **out, async_executor_t *ex,
                                       const async_job_t *job, int64_t deadline);
ASYNC_API int async_executor_trysubmit(async_future_t **out, async_executor_t *ex,
                                       const async_job_t *job);

/* Queues n jobs at once and returns their futures in out[0..n) (OUT, one
 * reference each).  Cheaper per job than n submits: the batch is queued with
 * one atomic operation and wakes the workers once.  It waits for room as
 * submit does, for room for one job (a batch may overfill max_queued); the
 * _dl form gives up at the deadline with ASYNC_ETIMEDOUT.  Errors: as
 * submit_dl, and ASYNC_EINVAL if any job is invalid; on error nothing is
 * queued and out holds nothing to free. */
ASYNC_API int async_executor_submit_batch(async_future_t **out, async_executor_t *ex,
                                          const async_job_t *jobs, size_t n);
ASYNC_API int async_executor_submit_batch_dl(async_future_t **out, async_executor_t *ex,
                                             const async_job_t *jobs, size_t n, int64_t deadline);

/* apply / run_in_executor: submits the job and waits for it, in a task by
 * awaiting (only the task sleeps), elsewhere by blocking; copies the result
 * into out (job->out_size bytes; *out_len, OUT, may be NULL, receives the
 * result's size, which may exceed job->out_size for a variable result: then
 * only out_size bytes are copied).  msg (OUT, may be NULL) receives the
 * failure's message ("" on success), cut to msg_cap bytes with its NUL
 * (nothing is written when msg_cap is 0; ASYNC_FUTURE_MSG_MAX holds any).
 * The _dl form's deadline bounds the call's waiting, for queue room and
 * for the result: at the deadline it returns ASYNC_ETIMEDOUT.  When the
 * call gives up (deadline, or the awaiting task cancelled: ASYNC_ECANCELED)
 * a job still queued is cancelled and a running one runs on, its result
 * dropped; out is never written after the call returns (the job writes into
 * the executor's buffer), so nothing is waited for; ctx must stay valid
 * until the function returns, as for submit.  Returns the job's outcome
 * (0, or its code: a job's own time limit gives ASYNC_ETIMEDOUT too), or an
 * error of submit_dl, or ASYNC_ETIMEDOUT / ASYNC_ECANCELED as above, or
 * ASYNC_EDEADLK with a message saying why, at once, when called from a
 * future's callback on the process backend (callbacks run on the pool's own
 * thread, which would have to deliver the result) or from a callback of a
 * future the thread backend failed at its deadline (on its deadline
 * watchdog, which the expired job's worker waits for). */
ASYNC_API int async_executor_run(async_executor_t *ex, const async_job_t *job, void *out,
                                 size_t *out_len, char *msg, size_t msg_cap);
ASYNC_API int async_executor_run_dl(async_executor_t *ex, const async_job_t *job, void *out,
                                    size_t *out_len, char *msg, size_t msg_cap, int64_t deadline);

/* --- to_thread ------------------------------------------------------------- */

/* asyncio.to_thread: runs fn(arg) on a thread of a default pool that the
 * process shares, created on the first call with min(32, async_cpu_count()
 * + 4) threads (as Python's default executor) and freed at exit (exit then
 * waits for functions still running; one that calls exit() itself is not
 * waited for).  From a task the task awaits, so only it sleeps and its loop
 * runs on; from any other thread the call blocks.  fn's return value goes to
 * *result (OUT, may be NULL).
 *
 * Giving up: the _dl form's deadline and the cancellation of the calling
 * task end the wait for fn, but a thread cannot be stopped, and arg usually
 * points at memory the caller is about to release.  So the call never
 * returns while fn runs: a call still queued (every thread busy) is
 * cancelled and fn never runs (*result untouched); a call already running is
 * waited for, shielded from the cancel (in a task only the task waits), and
 * its return value still goes to *result, so that what fn allocated can be
 * freed.  Then it returns ASYNC_ETIMEDOUT or ASYNC_ECANCELED: arg may be
 * released as soon as the call returns, whatever it returns.
 *
 * Returns 0 (fn ran; its return value is in *result).  Errors:
 * ASYNC_EINVAL (fn NULL), ASYNC_ETIMEDOUT (_dl: the deadline passed first),
 * ASYNC_ECANCELED (the calling task was cancelled; or the process is
 * exiting and the call never ran), ASYNC_ENOMEM, ASYNC_EAGAIN (the system
 * refused the pool's threads on the first call; a later call tries again). */
ASYNC_API int async_to_thread(void *(*fn)(void *arg), void *arg, void **result);
ASYNC_API int async_to_thread_dl(void *(*fn)(void *arg), void *arg, void **result,
                                 int64_t deadline);

/* --- maps: map, starmap, map_async --------------------------------------- */

/* A map of fn over n items: item i is in_size bytes at in + i * in_size, its
 * result out_size bytes at out + i * out_size.  starmap is the same call
 * with items that are structs of arguments.  Items are grouped into chunks
 * of chunksize, one job each, run in order (0: guided chunks that shrink
 * towards the end of the map, from Pool.map's ceil(n / (4 * workers)) down
 * to n / (32 * workers), about twice as many as Pool.map's); in
 * and out must stay valid until the map is final and are not copied on the
 * thread backend.  A chunk stops at its first failing item; other chunks run
 * on. */
typedef struct async_map {
    /* 0 or sizeof(async_map_t) as the program was compiled; 0 reads the 0.2
     * layout.  Later versions add fields only at the end and read them only
     * when size covers them; a nonzero size below the 0.2 struct's is
     * refused with ASYNC_EINVAL. */
    size_t size;
    async_work_fn fn;
    void *ctx;
    const void *in;
    size_t in_size;
    void *out;       /* may be NULL when out_size is 0 */
    size_t out_size;
    size_t n;
    size_t chunksize;
    int priority;
    /* Time limit in ns for every chunk, counted from the map's submit (one
     * deadline for all chunks, async_deadline_after(timeout_ns)); 0 for
     * none; negative: already expired, every chunk fails with
     * ASYNC_ETIMEDOUT without running.  At the deadline a chunk still
     * queued fails without running; on the process backend a running one
     * is killed; on the thread backend a running chunk fails only when it
     * returns late, because it writes into the caller's out, which must
     * stay valid until the map is final. */
    int64_t timeout_ns;
    /* Since 0.3, read only when size covers it (async_map_init sets it):
     * the work as one call a chunk, in place of fn, which must then be NULL
     * (exactly one of the two is set).  On the MPI backend it must be
     * registered (async_mpi_register_chunk, ASYNC_MPI_CHUNK), as fn. */
    async_chunk_fn chunk_fn;
} async_map_t;

/* Zeroes *o and sets its size (see the size field). */
static inline void async_map_init(async_map_t *o)
{
    memset(o, 0, sizeof *o);
    o->size = sizeof *o;
}

/* The first failure of a map: the lowest failing item index, its code and
 * message. */
typedef struct async_map_error {
    size_t index;
    int code;
    char message[ASYNC_FUTURE_MSG_MAX];
} async_map_error_t;

/* Runs the map and waits for it (blocking the thread; in a task, awaiting:
 * only the task sleeps).  With opts.caller_runs on the thread backend
 * without an initializer, a blocking caller (not a task) also runs chunks
 * itself while it would otherwise sleep, so the map does not wait for
 * sleeping workers to get a CPU; async_work_worker() is -1 in those calls.
 * Returns 0 when every item succeeded, otherwise the code of the lowest
 * failing item, described in *err (OUT, may be NULL).  n = 0 returns 0.
 *
 * Giving up: the _dl form's deadline bounds the call's waiting (for queue
 * room, then for the map); at the deadline it returns ASYNC_ETIMEDOUT.  A
 * task cancelled while it waits gets ASYNC_ECANCELED.  In both cases the
 * chunks still queued are cancelled (they never run), and, because running
 * chunks write into the caller's out, the call first waits for them to end
 * (in a task through the loop, shielded from the cancel: only the task
 * sleeps), so out is never written after it returns; a chunk that ignores
 * async_work_deadline() can delay the return that long.  *err then has
 * that code, index the lowest item that failed or did not run (n if all ran
 * after all), and a message saying why.
 * Errors also: as submit_dl (nothing ran then), ASYNC_EINVAL (m NULL, bad
 * m->size, neither or both of fn and chunk_fn, in NULL with n and
 * in_size > 0, out NULL with n and out_size > 0),
 * ASYNC_EDEADLK at once from a future's callback on the process backend
 * (it runs on the pool's own thread, which would have to deliver the
 * results; map_async works there), or on the thread backend's deadline
 * watchdog (a callback of a future failed at its deadline). */
ASYNC_API int async_executor_map(async_executor_t *ex, const async_map_t *m,
                                 async_map_error_t *err);
ASYNC_API int async_executor_map_dl(async_executor_t *ex, const async_map_t *m,
                                    async_map_error_t *err, int64_t deadline);

/* map_async: queues the map and returns with a future (*out, OUT) without
 * waiting for the map itself; the future is DONE (no output bytes) when every item succeeded, or FAILED with
 * the lowest failing item's code, "item N: message" and
 * async_future_error_index.  on_success / on_error (either may be NULL)
 * run as that future's first callback, on the thread that finishes the map,
 * and have returned before any wait on the future returns (as Python's
 * AsyncResult runs its callback before get() returns): async_future_wait*,
 * async_futures_wait*, async_future_await*, as_completed, and
 * async_future_done turning true.  Inside the callback the future already
 * reports its outcome (async_future_state, _error, _message, _error_index);
 * the callback must not wait for its own future.  Callbacks added with
 * async_future_on_done run after it.
 *
 * The one wait: while the queue is at max_queued (a map counts its chunks,
 * queued as one batch that may overfill the bound), the call waits for room
 * as submit does: a thread blocks; a task awaits (only the task sleeps).
 * map_async_dl gives up at its deadline with ASYNC_ETIMEDOUT (the deadline
 * bounds that wait only, not the map: see timeout_ns), and a task
 * cancelled while it waits gets ASYNC_ECANCELED; then nothing is queued and
 * no callback runs.  Without max_queued it never waits.
 * Errors: as async_executor_submit_dl, ASYNC_EINVAL as async_executor_map;
 * on error no callback runs and *out is untouched. */
ASYNC_API int async_executor_map_async(async_future_t **out, async_executor_t *ex,
                                       const async_map_t *m, async_future_cb on_success,
                                       async_future_cb on_error, void *cb_arg);
ASYNC_API int async_executor_map_async_dl(async_future_t **out, async_executor_t *ex,
                                          const async_map_t *m, async_future_cb on_success,
                                          async_future_cb on_error, void *cb_arg,
                                          int64_t deadline);

/* --- lazy maps: imap, imap_unordered ------------------------------------- */

/* A source of input items for imap: writes the next item (in_size bytes) to
 * item and returns 0, ASYNC_EEOF at the end, or another error, which ends
 * the input and is reported by async_imap_next after the items before it.
 * Called only on the thread that calls async_imap_next / async_imap_new. */
typedef int (*async_source_fn)(void *arg, void *item);

typedef struct async_imap {
    /* 0 or sizeof(async_imap_t) as the program was compiled; 0 reads the 0.2
     * layout.  Later versions add fields only at the end and read them only
     * when size covers them; a nonzero size below the 0.2 struct's is
     * refused with ASYNC_EINVAL. */
    size_t size;
    async_work_fn fn;
    void *ctx;
    size_t in_size, out_size;
    /* The input: n items at in (an array), or, when source is set, items
     * pulled from source one at a time as the window frees up. */
    const void *in;
    size_t n;
    async_source_fn source;
    void *source_arg;
    size_t chunksize; /* items per job; 0 for 1, as Pool.imap */
    size_t window;    /* most items in flight; 0 for 2 * workers * chunksize */
    bool unordered;   /* yield in completion order (imap_unordered) */
    int priority;
} async_imap_t;

/* Zeroes *o and sets its size (see the size field). */
static inline void async_imap_init(async_imap_t *o)
{
    memset(o, 0, sizeof *o);
    o->size = sizeof *o;
}

typedef struct async_imap_iter async_imap_iter_t;

/* Starts the lazy map (*out, OUT) and fills the first window, queueing its
 * chunks.  While the queue is at max_queued it waits for room as submit
 * does (a thread blocks; a task awaits, only the task sleeps), and pulls an
 * item from the source only once there is room for its chunk.  imap_dl
 * gives up that wait at its deadline: ASYNC_ETIMEDOUT (or ASYNC_ECANCELED
 * for a task cancelled while it waits) when nothing was taken from the
 * input yet, so nothing is queued, no item pulled and *out untouched.  Once
 * some input was taken (a chunk queued, or pulled but beaten to the room by
 * another submit), the map has started: the call returns 0 with the part of
 * the window that fit, and async_imap_next queues the rest, an item already
 * pulled first, so none is lost.  Without max_queued it never waits.
 * Errors: as async_executor_submit_dl, ASYNC_EINVAL (bad m->size, fn NULL,
 * no input, in_size 0 with a source, a chunk whose rows, chunksize of them
 * (at most n over an array) of in_size bytes from a source plus out_size,
 * do not fit a size_t). */
ASYNC_API int async_executor_imap(async_imap_iter_t **out, async_executor_t *ex,
                                  const async_imap_t *m);
ASYNC_API int async_executor_imap_dl(async_imap_iter_t **out, async_executor_t *ex,
                                     const async_imap_t *m, int64_t deadline);

/* Waits for the next result (in input order, or in completion order when
 * unordered), copies it to out (out_size bytes) and sets *index (OUT, may
 * be NULL) to its input position.  A thread blocks; a task awaits through
 * its loop (only the task sleeps, the loop's other tasks run on).  It first
 * tops up the window, waiting for queue room as submit does; the deadline
 * bounds that wait too (an item pulled from the source but not queued by
 * then is kept and queued first by the next call, so nothing is lost), and
 * a result that is ready is still returned.  Returns 0, the item's error
 * (message in async_imap_message; iteration may go on), ASYNC_EEOF after
 * the last item, the source's error, ASYNC_ETIMEDOUT at the deadline,
 * ASYNC_ECANCELED (a task cancelled while it had to wait; in both cases no
 * result is consumed), or an error of submit from the top-up (ENOMEM,
 * EDEADLK).  A pool that stops taking work (shut down: ASYNC_ECLOSED; or
 * broken: its code) ends the input as a source's error does: nothing more
 * is pulled, the chunks already queued are yielded with their outcomes
 * (ASYNC_ECANCELED for those cancelled), then the pool's code once, its
 * message saying from which item on the input was not queued, then
 * ASYNC_EEOF.  Call it from one thread or task at a time (the source is
 * pulled here). */
ASYNC_API int async_imap_next(async_imap_iter_t *it, void *out, size_t *index);
ASYNC_API int async_imap_next_dl(async_imap_iter_t *it, void *out, size_t *index,
                                 int64_t deadline);

/* The message of the last item error ("" if none). */
ASYNC_API const char *async_imap_message(const async_imap_iter_t *it);

/* Stops the map: cancels what is queued, waits for chunks running, frees.
 * NULL is ignored.  It has no _dl form: running chunks write into the
 * iterator's memory, and a thread cannot be stopped, so it must wait for
 * them to end however long they run (a chunk that reads
 * async_work_deadline() can end early).  In a task it waits through the
 * loop, deaf to the task's cancellation (which stays pending for its next
 * wait): only the task sleeps. */
ASYNC_API void async_imap_free(async_imap_iter_t *it);

#ifdef __cplusplus
}
#endif
#endif
