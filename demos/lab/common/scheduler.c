/* scheduler: the practical's priority task scheduler (Q6.1) on the
 * executor.  Named tasks with a priority, a duration, an outcome (some fail)
 * and a per-task timeout go to one pool as a single batch, so the pool's
 * queue hands them out highest priority first; a progress bar advances as
 * they finish (in completion order, async_as_completed), and a summary says
 * what ran, what timed out and what failed, in the order they started.
 *
 * A task's timeout is its job's deadline, counted from the submission as
 * AsyncResult.get(timeout) counts from the call: a task still queued at its
 * deadline never runs, and on the process backend a task running past it is
 * killed with its worker (which the pool replaces), so one runaway task
 * costs its own timeout and no more.  The tasks meant to time out sleep ten
 * times their timeout and the others have 30 s whatever --scale says, so
 * the outcomes do not depend on how loaded the machine is. */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "async/executor.h"
#include "lab.h"

typedef struct task {
    const char *name;
    int priority;
    double secs;    /* how long it works (x scale) */
    double timeout; /* seconds from submission (x scale); 0: OK_TIMEOUT */
    bool fails;
} task_t;

/* The timeout of the tasks meant to finish: 30 s whatever the scale, so
 * that a loaded machine does not turn them into timeouts. */
#define OK_TIMEOUT 30.0

static const task_t tasks[] = {
    {"backup", 1, 0.30, 0, false}, {"report", 5, 0.20, 0, false}, {"email", 9, 0.10, 0, false},
    {"index", 3, 5.00, 0.5, false}, {"resize", 7, 0.10, 0, true},  {"cleanup", 2, 0.10, 0, false},
    {"train", 4, 10.0, 1.0, false}, {"compress", 6, 0.20, 0, false},
};

static double timeout_of(size_t i)
{
    return tasks[i].timeout > 0 ? tasks[i].timeout * lab_opt.scale : OK_TIMEOUT;
}
#define NTASKS (sizeof tasks / sizeof tasks[0])

/* Shared with the workers: the order in which tasks started.  Atomic:
 * a task whose future timed out may still be running, or start late, while
 * the summary reads the board (no future orders the two). */
typedef struct board {
    _Atomic int next;
    _Atomic int started[NTASKS]; /* start rank, 1-based; 0: never started */
} board_t;

static board_t *board;
static double scale;

static int task_fn(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out, (void)out_size, (void)ctx;
    size_t i;
    memcpy(&i, in, sizeof i);
    atomic_store_explicit(&board->started[i], atomic_fetch_add(&board->next, 1) + 1, memory_order_relaxed);
    double s = tasks[i].secs * scale;
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0) {}
    if (tasks[i].fails) return async_work_fail(ASYNC_EWORK, "%s: the input image is corrupt", tasks[i].name);
    return 0;
}

int lab_scheduler(void)
{
    scale = lab_opt.scale;
    board = lab_shared_alloc(sizeof *board);
    lab_mode_t mode = lab_want(LAB_PROCESSES) ? LAB_PROCESSES : LAB_THREADS;
    lab_header("scheduler", "%zu prioritised tasks with timeouts on a pool of %u %s (durations x %.3g)", NTASKS,
               lab_opt.workers, lab_mode_name[mode], scale);
    /* Why not over MPI: the start order is a board in shared memory, and a
     * task past its timeout must be killed with its worker, which an MPI
     * rank serving on its own thread (the lab starts no rank pools) cannot
     * do: the rank would sleep on for ten times the timeout. */
    if (lab_want(LAB_MPI))
        printf("  (mpi: this workload does not run over MPI: its timeouts kill running tasks, which a serving rank "
               "without a process pool cannot; docs/lab.md)\n");
    async_executor_opts_t o = {.backend = mode == LAB_THREADS ? ASYNC_BACKEND_THREADS : ASYNC_BACKEND_PROCESSES,
                               .workers = lab_opt.workers};
    async_executor_t *ex;
    int rc = async_executor_new(&ex, &o);
    if (rc != 0) lab_die("cannot start a %s pool: %s", lab_mode_name[mode], async_strerror(rc));
    size_t idx[NTASKS];
    async_job_t jobs[NTASKS];
    async_future_t *fs[NTASKS];
    for (size_t i = 0; i < NTASKS; i++) {
        idx[i] = i;
        jobs[i] = (async_job_t){.fn = task_fn, .in = &idx[i], .in_size = sizeof idx[i], .priority = tasks[i].priority,
                                .timeout_ns = (int64_t)(timeout_of(i) * 1e9)};
    }
    double t0 = lab_now();
    /* One batch: every task is queued before a worker takes one, so the
     * queue's priority order is the start order. */
    if ((rc = async_executor_submit_batch(fs, ex, jobs, NTASKS)) != 0) lab_die("scheduler: %s",
                                                                               async_strerror(rc));
    async_progress_t *bar = NULL;
    if (async_progress_new(&bar, "scheduler", NTASKS) != 0) bar = NULL;
    async_as_completed_t *it;
    if ((rc = async_as_completed_new(&it, fs, NTASKS)) != 0) lab_die("scheduler: %s",
                                                                     async_strerror(rc));
    double done_at[NTASKS] = {0};
    size_t k;
    /* Every task has finished or timed out well within this. */
    int64_t give_up = async_now() + (int64_t)((OK_TIMEOUT + 30) * 1e9);
    for (size_t n = 0; n < NTASKS; n++) {
        rc = async_as_completed_next_dl(it, &k, give_up);
        if (rc == ASYNC_EEOF) break;
        if (rc != 0) lab_die("scheduler: waiting for the tasks: %s", async_strerror(rc));
        done_at[k] = lab_now() - t0;
        async_progress_add(bar, 1);
    }
    async_as_completed_free(it);
    async_progress_free(bar);
    double total = lab_now() - t0;

    /* The summary, in start order (never-started tasks last), from one
     * snapshot of the board. */
    int started[NTASKS];
    for (size_t i = 0; i < NTASKS; i++) started[i] = atomic_load_explicit(&board->started[i], memory_order_relaxed);
    size_t order[NTASKS];
    for (size_t i = 0; i < NTASKS; i++) order[i] = i;
    for (size_t a = 1; a < NTASKS; a++)
        for (size_t b = a; b > 0; b--) {
            int ra = started[order[b - 1]], rb = started[order[b]];
            if ((ra == 0 ? 1 << 30 : ra) > (rb == 0 ? 1 << 30 : rb)) {
                size_t x = order[b];
                order[b] = order[b - 1];
                order[b - 1] = x;
            } else break;
        }
    printf("  %-9s %8s %8s %8s %6s  %-10s %s\n", "task", "priority", "works s", "timeout", "start", "outcome",
           "finished at s");
    json_t *list = json_array();
    size_t ok = 0, timed_out = 0, failed = 0;
    for (size_t n = 0; n < NTASKS; n++) {
        size_t i = order[n];
        int err = async_future_error(fs[i]);
        const char *outcome = err == 0 ? "done" : err == ASYNC_ETIMEDOUT ? "timed out" : "failed";
        if (err == 0) ok++;
        else if (err == ASYNC_ETIMEDOUT) timed_out++;
        else failed++;
        char start[16];
        snprintf(start, sizeof start, started[i] ? "%d" : "-", started[i]);
        printf("  %-9s %8d %8.2f %8.2f %6s  %-10s %.3f%s%s\n", tasks[i].name, tasks[i].priority, tasks[i].secs * scale,
               timeout_of(i), start, outcome, done_at[i], err && err != ASYNC_ETIMEDOUT ? ": " : "",
               err && err != ASYNC_ETIMEDOUT ? async_future_message(fs[i]) : "");
        json_t *t = json_object();
        json_object_set_new(t, "name", json_string(tasks[i].name));
        json_object_set_new(t, "priority", json_integer(tasks[i].priority));
        json_object_set_new(t, "started", json_integer(started[i]));
        json_object_set_new(t, "outcome", json_string(outcome));
        json_object_set_new(t, "message", json_string(err ? async_future_message(fs[i]) : ""));
        json_object_set_new(t, "finished", json_real(done_at[i]));
        json_array_append_new(list, t);
        async_future_unref(fs[i]);
    }
    async_executor_free(ex);
    printf("  summary: %zu done, %zu timed out, %zu failed, in %.3f s on %u workers\n", ok, timed_out, failed, total,
           lab_opt.workers);
    json_t *fig = json_object();
    json_object_set_new(fig, "tasks", list);
    json_object_set_new(fig, "done", json_integer((json_int_t)ok));
    json_object_set_new(fig, "timed_out", json_integer((json_int_t)timed_out));
    json_object_set_new(fig, "failed", json_integer((json_int_t)failed));
    json_object_set_new(fig, "seconds", json_real(total));
    json_object_set_new(fig, "backend", json_string(lab_mode_name[mode]));
    json_object_set_new(lab_figures, "scheduler", fig);
    lab_shared_free(board, sizeof *board);
    return 0;
}
