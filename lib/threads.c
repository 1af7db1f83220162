/* The thread backend: ex->workers threads that take jobs from the executor's
 * queue and run them in this process (executor_internal.h).  Worker threads
 * block every signal, so that signals reach the application's own threads;
 * they exit when the queue closes, or at once when their initializer fails. */
#include <signal.h>
#include "executor_internal.h"

typedef struct worker {
    async_executor_t *ex;
    unsigned index;
    pthread_t tid;
} worker_t;

typedef struct threads {
    unsigned started;
    worker_t w[];
} threads_t;

static unsigned default_workers(void)
{
    unsigned n = async__cpu_count() + 4;
    return n > 32 ? 32 : n;
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
        async__rows_run(&job->rows, w->index, job->deadline, job->var_ok, NULL, NULL, 0, &oc);
        async__exec_finish(ex, job, &oc);
    }
    return NULL;
}

static void join(async_executor_t *ex)
{
    threads_t *t = ex->backend;
    for (unsigned i = 0; i < t->started; i++) pthread_join(t->w[i].tid, NULL);
    t->started = 0;
}

static int start(async_executor_t *ex)
{
    threads_t *t = async__malloc(sizeof *t + ex->workers * sizeof t->w[0]);
    if (!t) return ASYNC_ENOMEM;
    t->started = 0;
    ex->backend = t;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int r = 0;
    for (unsigned i = 0; i < ex->workers; i++) {
        t->w[i] = (worker_t){ex, i, 0};
        if (pthread_create(&t->w[i].tid, NULL, worker_main, &t->w[i]) != 0) {
            r = ASYNC_EAGAIN;
            break;
        }
        t->started++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r) {
        /* Stop the ones that started: close the queue, then join. */
        async_executor_shutdown(ex, false, true);
        join(ex);
        async__free(t);
        ex->backend = NULL;
    }
    return r;
}

static void free_backend(async_executor_t *ex)
{
    async__free(ex->backend);
    ex->backend = NULL;
}

const async__backend_ops_t async__threads_backend = {
    .name = "threads",
    .default_workers = default_workers,
    .start = start,
    .join = join,
    .terminate = NULL,
    .free = free_backend,
};
