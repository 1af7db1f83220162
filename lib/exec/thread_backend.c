/* The thread backend: ex->workers threads that take jobs from the executor's
 * queue and run them in this process (backend_internal.h).  Worker threads
 * block every signal, so that signals reach the application's own threads;
 * they exit when the queue closes, or at once when their initializer fails.
 *
 * Deadlines of running jobs: a thread cannot be stopped, but its job's
 * future must not wait for it.  A watchdog thread, started with the first
 * job that has a deadline, sleeps until the earliest deadline among the jobs
 * running and fails that job's future with ASYNC_ETIMEDOUT then
 * (async__exec_expire); the job runs on, and its worker finishes it as usual
 * afterwards, which drops the late result and the executor's reference that
 * kept the job's memory alive.
 *
 * Locking: t->mu guards each worker's `job`, `deadline` and `expiring` and
 * the watchdog's state.  The watchdog never holds it while it expires a job
 * (that runs callbacks); a worker whose job is being expired waits on
 * `expired` before it finishes the job, so the job outlives the expiry. */
#include <signal.h>
#include <time.h>
#include "backend_internal.h"

typedef struct worker {
    async_executor_t *ex;
    unsigned index;
    pthread_t tid;
    struct threads *t;
    /* Under t->mu. */
    async__job_t *job;  /* running, watched for its deadline; NULL: none */
    int64_t deadline;   /* ASYNC_FOREVER once expired */
    bool expiring;      /* the watchdog is failing job's future right now */
} worker_t;

typedef struct threads {
    unsigned started;
    pthread_mutex_t mu;
    pthread_cond_t wake;    /* the watchdog sleeps here (CLOCK_MONOTONIC) */
    pthread_cond_t expired; /* workers wait here for an expiry to end */
    bool watch_started, watch_stop;
    pthread_t watch;
    worker_t w[];
} threads_t;

/* min(32, cpus + 4), as ThreadPoolExecutor. */
static unsigned default_workers(void) { return async__default_workers(async_cpu_count() + 4, 1, 32); }

/* Waits on c until the absolute CLOCK_MONOTONIC deadline (c uses it). */
static void wait_until(pthread_cond_t *c, pthread_mutex_t *m, int64_t deadline)
{
    if (deadline == ASYNC_FOREVER) {
        pthread_cond_wait(c, m);
        return;
    }
    struct timespec ts = {(time_t)(deadline / 1000000000), (long)(deadline % 1000000000)};
    pthread_cond_timedwait(c, m, &ts);
}

/* The pool whose watchdog the calling thread is, if any.  The watchdog runs
 * the callbacks of the futures it fails, and the expired job's worker waits
 * for that expiry to end before it finishes the job: a callback that waits
 * for the pool there (a run, a shutdown with wait, terminate, free) would
 * wait for a worker that waits for it, so the executor refuses those calls
 * from this thread as from a worker (on_own_thread). */
static _Thread_local const threads_t *tls_watchdog_of;

static bool on_own_thread(const async_executor_t *ex)
{
    return ex->backend && tls_watchdog_of == ex->backend;
}

static void *watchdog(void *arg)
{
    threads_t *t = arg;
    tls_watchdog_of = t;
    pthread_mutex_lock(&t->mu);
    while (!t->watch_stop) {
        int64_t now = async_now(), next = ASYNC_FOREVER;
        bool expired_one = false;
        for (unsigned i = 0; i < t->started && !expired_one; i++) {
            worker_t *w = &t->w[i];
            if (!w->job || w->deadline == ASYNC_FOREVER) continue;
            if (w->deadline > now) {
                if (w->deadline < next) next = w->deadline;
                continue;
            }
            w->expiring = true;
            w->deadline = ASYNC_FOREVER;
            async__job_t *job = w->job;
            pthread_mutex_unlock(&t->mu);
            async__exec_expire(w->ex, job);
            pthread_mutex_lock(&t->mu);
            w->expiring = false;
            pthread_cond_broadcast(&t->expired);
            expired_one = true; /* rescan: the lock was dropped */
        }
        if (!expired_one) wait_until(&t->wake, &t->mu, next);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

/* Registers the job w is about to run with the watchdog, starting it the
 * first time.  If the watchdog cannot start, the deadline is still enforced
 * when the job returns (async__exec_finish). */
static void watch(worker_t *w, async__job_t *job)
{
    threads_t *t = w->t;
    pthread_mutex_lock(&t->mu);
    if (!t->watch_started && !t->watch_stop) {
        /* Created from a worker, it inherits the worker's blocked signals. */
        t->watch_started = pthread_create(&t->watch, NULL, watchdog, t) == 0;
    }
    w->job = job;
    w->deadline = job->deadline;
    pthread_cond_signal(&t->wake);
    pthread_mutex_unlock(&t->mu);
}

static void unwatch(worker_t *w)
{
    threads_t *t = w->t;
    pthread_mutex_lock(&t->mu);
    while (w->expiring) pthread_cond_wait(&t->expired, &t->mu);
    w->job = NULL;
    pthread_mutex_unlock(&t->mu);
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    async_executor_t *ex = w->ex;
    char msg[ASYNC_FUTURE_MSG_MAX];
    int r = async__run_init(ex, w->index, msg);
    if (r) {
        async__exec_broken(ex, w->index, r, msg);
        return NULL;
    }
    async__job_t *job;
    async__outcome_t oc;
    while (async__exec_take(ex, w->index, &job) == 0) {
        /* Most jobs have no deadline: spare them the call. */
        bool watched = job->deadline != ASYNC_FOREVER && async__exec_expirable(job);
        if (watched) watch(w, job);
        async__rows_run(&job->rows, w->index, job->deadline, job->var_ok, NULL, NULL, 0, &oc);
        if (watched) unwatch(w);
        async__exec_finish(ex, job, &oc);
    }
    return NULL;
}

static void join(async_executor_t *ex)
{
    threads_t *t = ex->backend;
    for (unsigned i = 0; i < t->started; i++) pthread_join(t->w[i].tid, NULL);
    /* No worker is left to start the watchdog: stop it. */
    pthread_mutex_lock(&t->mu);
    t->watch_stop = true;
    bool started = t->watch_started;
    t->watch_started = false;
    pthread_cond_signal(&t->wake);
    pthread_mutex_unlock(&t->mu);
    if (started) pthread_join(t->watch, NULL);
    t->started = 0;
}

static void destroy(threads_t *t)
{
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->wake);
    pthread_cond_destroy(&t->expired);
    async__free(t);
}

static int start(async_executor_t *ex)
{
    threads_t *t = async__malloc(sizeof *t + ex->workers * sizeof t->w[0]);
    if (!t) return ASYNC_ENOMEM;
    t->started = 0;
    t->watch_started = t->watch_stop = false;
    pthread_mutex_init(&t->mu, NULL);
    async__cond_init_monotonic(&t->wake, false);
    pthread_cond_init(&t->expired, NULL);
    ex->backend = t;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int r = 0;
    for (unsigned i = 0; i < ex->workers; i++) {
        t->w[i] = (worker_t){.ex = ex, .index = i, .t = t};
        /* Published before the thread exists: the watchdog scans w[0..started). */
        pthread_mutex_lock(&t->mu);
        bool ok = pthread_create(&t->w[i].tid, NULL, worker_main, &t->w[i]) == 0;
        if (ok) t->started++;
        pthread_mutex_unlock(&t->mu);
        if (!ok) {
            r = ASYNC_EAGAIN;
            break;
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r) {
        /* Stop the ones that started: close the queue, then join. */
        async_executor_shutdown(ex, false, true);
        join(ex);
        destroy(t);
        ex->backend = NULL;
    }
    return r;
}

static void free_backend(async_executor_t *ex)
{
    if (ex->backend) destroy(ex->backend);
    ex->backend = NULL;
}

const async__backend_ops_t async__threads_backend = {
    .name = "threads",
    .default_workers = default_workers,
    .start = start,
    .join = join,
    .terminate = NULL,
    .free = free_backend,
    .on_own_thread = on_own_thread,
    .cpu_workers = true,
    .lean_jobs = true,
};
