/* async_to_thread: Python's asyncio.to_thread.  A function of the caller's
 * runs on a default pool of threads that the process shares, created on the
 * first call with Python's default size (min(32, cpus + 4), the thread
 * backend's default) and freed at exit, so that leak checkers see nothing.
 *
 * The function gets a plain pointer, not bytes: this is the thread backend
 * only, and the pointer travels in the job's input.  A caller that gives up
 * (its deadline, its task cancelled) cancels the job if it is still queued
 * and otherwise waits for the function to return, shielded from the cancel:
 * arg usually points into the caller's frame, and a thread cannot be
 * stopped, so returning while the function still reads arg would leave it
 * reading freed memory. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "executor_internal.h"
#include "future_internal.h"

typedef struct call {
    void *(*fn)(void *arg);
    void *arg;
} call_t;

static int call_fn(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out_size, (void)ctx;
    call_t c;
    memcpy(&c, in, sizeof c);
    void *r = c.fn(c.arg);
    memcpy(out, &r, sizeof r);
    return 0;
}

/* The default pool, created under mu; pid is the process that created it:
 * a child of fork() has none of its threads, so it makes its own (the
 * parent's copy is left alone, never joined). */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(async_executor_t *) pool;
static _Atomic pid_t pool_pid;
static bool at_exit_set;

static void free_at_exit(void)
{
    pthread_mutex_lock(&mu);
    async_executor_t *ex = atomic_load(&pool);
    /* exit() from inside a function run here must not join its own thread;
     * a forked child's copy has no threads to join. */
    if (ex && pool_pid == getpid() && !async__exec_on_worker(ex)) {
        atomic_store(&pool, NULL);
        pthread_mutex_unlock(&mu);
        async_executor_free(ex);
        return;
    }
    pthread_mutex_unlock(&mu);
}

static int default_pool(async_executor_t **out)
{
    async_executor_t *ex = atomic_load_explicit(&pool, memory_order_acquire);
    if (ex && pool_pid == getpid()) {
        *out = ex;
        return 0;
    }
    int r = 0;
    pthread_mutex_lock(&mu);
    ex = atomic_load(&pool);
    if (!ex || pool_pid != getpid()) {
        if (!at_exit_set && atexit(free_at_exit) != 0) r = ASYNC_ENOMEM;
        else at_exit_set = true;
        if (!r) r = async_executor_new(&ex, &(async_executor_opts_t){.backend = ASYNC_BACKEND_THREADS});
        if (!r) {
            pool_pid = getpid();
            atomic_store_explicit(&pool, ex, memory_order_release);
        }
    }
    pthread_mutex_unlock(&mu);
    if (!r) *out = ex;
    return r;
}

int async_to_thread_dl(void *(*fn)(void *arg), void *arg, void **result, int64_t deadline)
{
    if (!fn) return ASYNC_EINVAL;
    async_executor_t *ex;
    int r = default_pool(&ex);
    if (r) return r;
    call_t c = {fn, arg};
    async_job_t job = {.fn = call_fn, .in = &c, .in_size = sizeof c, .out_size = sizeof(void *)};
    async_future_t *f;
    /* Unbounded: the submit never waits.  Closed only while exit frees it. */
    if ((r = async_executor_submit(&f, ex,
                                   &job)) != 0) return r == ASYNC_ECLOSED ? ASYNC_ECANCELED : r;
    bool task = async__in_task();
    r = task ? async_future_await_dl(f, deadline) : async__future_wait(f, deadline, true);
    if (!async_future_done(f)) {
        /* Given up (ETIMEDOUT, ECANCELED; or the await ran out of memory):
         * a queued call never runs; a running one is waited for. */
        if (async_future_cancel(f) != 0) {
            if (task) async__future_await_shielded(f);
            else async__future_wait(f, ASYNC_FOREVER, false);
        }
        if (r != ASYNC_ETIMEDOUT && r != ASYNC_ECANCELED) r = 0; /* waited to the end after all */
    } else {
        r = 0;
    }
    const void *data;
    int out = async_future_result(f, &data, NULL);
    if (out == 0 && result) memcpy(result, data, sizeof *result);
    if (!r && out) r = out; /* not run: the pool was shut down at exit */
    async_future_unref(f);
    return r;
}

int async_to_thread(void *(*fn)(void *arg), void *arg, void **result)
{
    return async_to_thread_dl(fn, arg, result, ASYNC_FOREVER);
}
