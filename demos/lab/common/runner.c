/* The lab's runner: one range function over [0, n) in chunks, serially, on a
 * pool of threads or on a pool of processes.
 *
 * Chunks go to workers in order from one atomic counter, so a worker that
 * finishes early takes the next chunk (dynamic scheduling, as Pool.imap
 * does).  Results are written by the range function into shared memory, so
 * the parent reads every mode's results the same way.  The process mode forks
 * its workers for the run (they inherit the data mapped before the fork) and
 * waits on a pipe that reaches end-of-file when the last worker exits, with a
 * timeout to redraw the progress bar from a shared counter. */
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "lab.h"

const char *const lab_mode_name[LAB_NMODES] = {"serial", "threads", "processes"};

const char *lab_backend(lab_mode_t mode)
{
    switch (mode) {
    case LAB_SERIAL: return "a plain loop";
    case LAB_THREADS: return "a pool of pthreads";
    default: return "fork() workers on MAP_SHARED memory";
    }
}

/* Shared between the parent and every worker, in shared memory. */
typedef struct job {
    _Atomic size_t next;    /* next chunk to hand out */
    _Atomic uint64_t done;  /* items finished, for the progress bar */
    lab_range_fn fn;
    void *ctx;
    size_t n, chunk, nchunks;
    async_progress_t *bar;  /* threads only: workers add to it directly */
} job_t;

static void work(job_t *j)
{
    for (;;) {
        size_t c = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
        if (c >= j->nchunks) return;
        size_t lo = c * j->chunk, hi = lo + j->chunk < j->n ? lo + j->chunk : j->n;
        j->fn(j->ctx, lo, hi);
        if (j->bar) async_progress_add(j->bar, hi - lo);
        else atomic_fetch_add_explicit(&j->done, hi - lo, memory_order_relaxed);
    }
}

static void *thread_main(void *arg)
{
    work(arg);
    return NULL;
}

static void run_threads(job_t *j, unsigned workers)
{
    pthread_t *t = calloc(workers, sizeof *t);
    if (!t) lab_die("out of memory");
    for (unsigned i = 0; i < workers; i++)
        if (pthread_create(&t[i], NULL, thread_main, j) != 0) lab_die("cannot start a thread");
    for (unsigned i = 0; i < workers; i++) pthread_join(t[i], NULL);
    free(t);
}

static void run_processes(job_t *j, unsigned workers, async_progress_t *bar)
{
    int fds[2];
    if (pipe(fds) != 0) lab_die("pipe: %m");
    pid_t *pid = calloc(workers, sizeof *pid);
    if (!pid) lab_die("out of memory");
    fflush(NULL);
    for (unsigned i = 0; i < workers; i++) {
        pid[i] = fork();
        if (pid[i] < 0) lab_die("fork: %m");
        if (pid[i] == 0) {
            close(fds[0]);
            work(j);
            _exit(0); /* no atexit handlers, no stdio flush of the parent's buffers */
        }
    }
    close(fds[1]);
    /* The read end reaches EOF when every worker has exited. */
    uint64_t shown = 0;
    for (;;) {
        struct pollfd p = {.fd = fds[0], .events = POLLIN};
        int r = poll(&p, 1, 100);
        uint64_t d = atomic_load_explicit(&j->done, memory_order_relaxed);
        async_progress_add(bar, d - shown);
        shown = d;
        if (r > 0) {
            char c;
            if (read(fds[0], &c, 1) <= 0) break;
        }
    }
    close(fds[0]);
    for (unsigned i = 0; i < workers; i++) {
        int st;
        while (waitpid(pid[i], &st, 0) < 0) {}
        if (WIFSIGNALED(st)) lab_die("worker %d died of signal %d", (int)pid[i], WTERMSIG(st));
        if (WEXITSTATUS(st)) lab_die("worker %d exited with status %d", (int)pid[i], WEXITSTATUS(st));
    }
    free(pid);
}

double lab_run(lab_mode_t mode, unsigned workers, lab_range_fn fn, void *ctx, size_t n, size_t chunk,
               const char *label, double *start_s)
{
    if (chunk == 0) chunk = 1;
    if (workers == 0) workers = 1;
    job_t *j = lab_shared_alloc(sizeof *j);
    j->fn = fn;
    j->ctx = ctx;
    j->n = n;
    j->chunk = chunk;
    j->nchunks = (n + chunk - 1) / chunk;
    char text[64];
    snprintf(text, sizeof text, "%s %s", label, lab_mode_name[mode]);
    async_progress_t *bar = NULL;
    if (async_progress_new(text, n, &bar) != 0) bar = NULL;
    if (start_s) *start_s = 0;
    double t0 = lab_now();
    switch (mode) {
    case LAB_SERIAL:
        j->bar = bar;
        work(j);
        break;
    case LAB_THREADS:
        j->bar = bar;
        run_threads(j, workers);
        break;
    default:
        run_processes(j, workers, bar);
        break;
    }
    double t = lab_now() - t0;
    async_progress_free(bar);
    lab_shared_free(j, sizeof *j);
    return t;
}

void lab_modes(lab_result_t *r, lab_range_fn fn, void *ctx, size_t n, size_t chunk, const char *label,
               void *out, size_t out_size)
{
    for (lab_mode_t m = 0; m < LAB_NMODES; m++) {
        if (!lab_want(m)) continue;
        memset(out, 0, out_size);
        r->secs[m] = lab_run(m, m == LAB_SERIAL ? 1 : lab_opt.workers, fn, ctx, n, chunk, label, NULL);
        r->sum[m] = lab_fnv(out, out_size, 0);
        r->ran[m] = true;
    }
}
