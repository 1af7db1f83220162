/* scheduler: the practical's priority task scheduler (Q6.1) on the
 * executor.  Named tasks with a priority, a duration, an outcome (some fail)
 * and a per-task timeout go to one pool as a single batch, so the pool's
 * queue hands them out highest priority first; a progress bar advances as
 * they finish (in completion order, async_as_completed), and a summary says
 * what ran, what timed out and what failed, in the order they started.
 *
 * A task's timeout is its job's deadline, counted from the submission as
 * AsyncResult.get(timeout) counts from the call: a task still queued at its
 * deadline never runs, and on the process backend (and over MPI, where the
 * lab then starts a process pool on every serving rank) a task running past
 * it is killed with its worker (which the pool replaces), so one runaway
 * task costs its own timeout and no more.  The tasks meant to time out
 * sleep ten times their timeout and the others have 30 s whatever --scale
 * says, so the outcomes do not depend on how loaded the machine is.
 *
 * When to start: each task takes its start time (CLOCK_REALTIME) and
 * returns it as its output, so a task that ran to its end reports it from
 * any rank; a pool of this process also writes it on a board in shared
 * memory, which keeps the start of the tasks whose future carries no output
 * (failed, timed out).  Over MPI those starts are unknown ("-"). */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
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
#define NTASKS (sizeof tasks / sizeof tasks[0])

static double timeout_of(size_t i)
{
    return tasks[i].timeout > 0 ? tasks[i].timeout * lab_opt.scale : OK_TIMEOUT;
}

/* A task's input: which task, and the run's scale (a serving rank never ran
 * lab_scheduler, so it is sent rather than read from a static). */
typedef struct task_in {
    uint64_t index;
    double scale;
} task_in_t;

/* Shared with a pool's workers: when each task started (CLOCK_REALTIME ns,
 * 0: not started).  Atomic: a task whose future timed out may still be
 * running, or start late, while the summary reads the board (no future
 * orders the two).  NULL on a serving rank. */
typedef struct board {
    _Atomic int64_t start_ns[NTASKS];
} board_t;

static board_t *board;

static int64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int sched_task(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)ctx;
    task_in_t t;
    if (in_size != sizeof t || out_size != sizeof(int64_t))
        return async_work_fail(ASYNC_EINVAL, "scheduler: a task of %zu bytes in, %zu out", in_size, out_size);
    memcpy(&t, in, sizeof t);
    if (t.index >= NTASKS) return async_work_fail(ASYNC_EINVAL, "scheduler: no task %llu", (unsigned long long)t.index);
    int64_t at = wall_ns();
    if (board) atomic_store_explicit(&board->start_ns[t.index], at, memory_order_relaxed);
    memcpy(out, &at, sizeof at);
    double s = tasks[t.index].secs * t.scale;
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0) {}
    if (tasks[t.index].fails) return async_work_fail(ASYNC_EWORK, "%s: the input image is corrupt", tasks[t.index].name);
    return 0;
}
LAB_MPI_WORK(sched_task);

/* One run of the batch on one pool. */
typedef struct sched_run {
    lab_mode_t mode;
    unsigned pool;           /* tasks that can run at once */
    int err[NTASKS];
    char msg[NTASKS][ASYNC_FUTURE_MSG_MAX];
    int64_t start_ns[NTASKS]; /* 0: unknown */
    int started[NTASKS];      /* start order among the known starts, 1-based; 0: unknown */
    double done_at[NTASKS];   /* seconds after the submission */
    double total;
    int64_t submitted_ns;     /* CLOCK_REALTIME at the submission */
    size_t ok, timed_out, failed;
} sched_run_t;

static const char *outcome_of(int err)
{
    return err == 0 ? "done" : err == ASYNC_ETIMEDOUT ? "timed out" : "failed";
}

static async_executor_t *pool_of(lab_mode_t mode)
{
    if (mode == LAB_MPI) return lab_mpi_executor(NULL);
    async_executor_opts_t o = {.backend = mode == LAB_THREADS ? ASYNC_BACKEND_THREADS : ASYNC_BACKEND_PROCESSES,
                               .workers = lab_opt.workers};
    async_executor_t *ex;
    int rc = async_executor_new(&ex, &o);
    if (rc != 0) lab_die("cannot start a %s pool: %s", lab_mode_name[mode], async_strerror(rc));
    return ex;
}

/* The start a finished task returned, or 0. */
static int64_t output_start(const async_future_t *f)
{
    const void *data;
    size_t size;
    int64_t at = 0;
    if (async_future_result(f, &data, &size) == 0 && size == sizeof at) memcpy(&at, data, sizeof at);
    return at;
}

/* Submits the batch, follows it to its end, and fills r's outcomes. */
static void run_batch(sched_run_t *r, async_executor_t *ex)
{
    task_in_t in[NTASKS];
    async_job_t jobs[NTASKS];
    async_future_t *fs[NTASKS];
    for (size_t i = 0; i < NTASKS; i++) {
        in[i] = (task_in_t){.index = i, .scale = lab_opt.scale};
        jobs[i] = (async_job_t){.fn = sched_task, .in = &in[i], .in_size = sizeof in[i],
                                .out_size = sizeof(int64_t), .priority = tasks[i].priority,
                                .timeout_ns = (int64_t)(timeout_of(i) * 1e9)};
    }
    double t0 = lab_now();
    r->submitted_ns = wall_ns();
    /* One batch: every task is queued before a worker takes one, so the
     * queue's priority order is the start order. */
    int rc = async_executor_submit_batch(fs, ex, jobs, NTASKS);
    if (rc != 0) lab_die("scheduler: %s", async_strerror(rc));
    async_progress_t *bar = NULL;
    if (async_progress_new(&bar, "scheduler", NTASKS) != 0) bar = NULL;
    async_as_completed_t *it;
    if ((rc = async_as_completed_new(&it, fs, NTASKS)) != 0) lab_die("scheduler: %s", async_strerror(rc));
    /* Every task has finished or timed out well within this. */
    int64_t give_up = async_now() + (int64_t)((OK_TIMEOUT + 30) * 1e9);
    for (size_t n = 0; n < NTASKS; n++) {
        size_t k;
        rc = async_as_completed_next_dl(it, &k, give_up);
        if (rc == ASYNC_EEOF) break;
        if (rc != 0) lab_die("scheduler: waiting for the tasks: %s", async_strerror(rc));
        r->done_at[k] = lab_now() - t0;
        async_progress_add(bar, 1);
    }
    async_as_completed_free(it);
    async_progress_free(bar);
    r->total = lab_now() - t0;
    for (size_t i = 0; i < NTASKS; i++) {
        r->err[i] = async_future_error(fs[i]);
        snprintf(r->msg[i], sizeof r->msg[i], "%s", r->err[i] ? async_future_message(fs[i]) : "");
        /* The board, from one snapshot, has every start a pool of this
         * process saw; over MPI a task's output is its only report. */
        if (r->mode != LAB_MPI) r->start_ns[i] = atomic_load_explicit(&board->start_ns[i], memory_order_relaxed);
        else r->start_ns[i] = output_start(fs[i]);
        if (r->err[i] == 0) r->ok++;
        else if (r->err[i] == ASYNC_ETIMEDOUT) r->timed_out++;
        else r->failed++;
        async_future_unref(fs[i]);
    }
}

/* The tasks in start order, the unknown starts last (in table order);
 * r->started gets each one's place among the known. */
static void start_order(sched_run_t *r, size_t order[NTASKS])
{
    for (size_t i = 0; i < NTASKS; i++) order[i] = i;
    for (size_t a = 1; a < NTASKS; a++)
        for (size_t b = a; b > 0; b--) {
            int64_t sa = r->start_ns[order[b - 1]], sb = r->start_ns[order[b]];
            if ((sa == 0 ? INT64_MAX : sa) <= (sb == 0 ? INT64_MAX : sb)) break;
            size_t x = order[b];
            order[b] = order[b - 1];
            order[b - 1] = x;
        }
    int place = 0;
    for (size_t n = 0; n < NTASKS; n++) r->started[order[n]] = r->start_ns[order[n]] ? ++place : 0;
}

/* The summary table and the run's figures. */
static json_t *report_run(sched_run_t *r)
{
    size_t order[NTASKS];
    start_order(r, order);
    printf("  on %s, %u at once:\n", lab_mode_name[r->mode], r->pool);
    printf("  %-9s %8s %8s %8s %6s %8s  %-10s %s\n", "task", "priority", "works s", "timeout", "start", "start s",
           "outcome", "finished at s");
    json_t *list = json_array();
    for (size_t n = 0; n < NTASKS; n++) {
        size_t i = order[n];
        int err = r->err[i];
        bool known = r->start_ns[i] != 0;
        double start_s = known ? (double)(r->start_ns[i] - r->submitted_ns) / 1e9 : 0;
        char place[16], at[32];
        snprintf(place, sizeof place, known ? "%d" : "-", r->started[i]);
        snprintf(at, sizeof at, known ? "%.3f" : "-", start_s);
        printf("  %-9s %8d %8.2f %8.2f %6s %8s  %-10s %.3f%s%s\n", tasks[i].name, tasks[i].priority,
               tasks[i].secs * lab_opt.scale, timeout_of(i), place, at, outcome_of(err), r->done_at[i],
               err && err != ASYNC_ETIMEDOUT ? ": " : "", err && err != ASYNC_ETIMEDOUT ? r->msg[i] : "");
        json_t *t = json_object();
        json_object_set_new(t, "name", json_string(tasks[i].name));
        json_object_set_new(t, "priority", json_integer(tasks[i].priority));
        json_object_set_new(t, "started", json_integer(r->started[i]));
        json_object_set_new(t, "start_s", known ? json_real(start_s) : json_null());
        json_object_set_new(t, "outcome", json_string(outcome_of(err)));
        json_object_set_new(t, "message", json_string(r->msg[i]));
        json_object_set_new(t, "finished", json_real(r->done_at[i]));
        json_array_append_new(list, t);
    }
    printf("  summary: %zu done, %zu timed out, %zu failed, in %.3f s on %u %s\n", r->ok, r->timed_out, r->failed,
           r->total, r->pool, r->mode == LAB_MPI ? "MPI slots" : "workers");
    json_t *fig = json_object();
    json_object_set_new(fig, "tasks", list);
    json_object_set_new(fig, "done", json_integer((json_int_t)r->ok));
    json_object_set_new(fig, "timed_out", json_integer((json_int_t)r->timed_out));
    json_object_set_new(fig, "failed", json_integer((json_int_t)r->failed));
    json_object_set_new(fig, "seconds", json_real(r->total));
    json_object_set_new(fig, "workers", json_integer(r->pool));
    json_object_set_new(fig, "backend", json_string(lab_mode_name[r->mode]));
    return fig;
}

/* The same outcome for every task on both pools (the tasks' durations and
 * timeouts make it independent of the load), or the lab exits 1. */
static void check_agree(const sched_run_t *a, const sched_run_t *b)
{
    bool same = true;
    for (size_t i = 0; i < NTASKS; i++)
        if (outcome_of(a->err[i]) != outcome_of(b->err[i])) {
            printf("  %s: %s on %s, %s on %s\n", tasks[i].name, outcome_of(a->err[i]), lab_mode_name[a->mode],
                   outcome_of(b->err[i]), lab_mode_name[b->mode]);
            same = false;
        }
    if (!same) lab_die("scheduler: %s and %s disagree", lab_mode_name[a->mode], lab_mode_name[b->mode]);
    printf("  %s and %s agree: every task has the same outcome\n", lab_mode_name[a->mode], lab_mode_name[b->mode]);
}

int lab_scheduler(void)
{
    /* A pool of this process: processes, which kill a task at its deadline
     * (threads cannot), or threads when only serial or threads was asked;
     * none when only mpi was. */
    bool local = lab_want(LAB_PROCESSES) || lab_want(LAB_THREADS) || lab_want(LAB_SERIAL);
    bool mpi = lab_want(LAB_MPI) && lab_mpi_rank_processes() > 0;
    lab_mode_t modes[2];
    size_t nmodes = 0;
    if (local) modes[nmodes++] = lab_want(LAB_PROCESSES) ? LAB_PROCESSES : LAB_THREADS;
    if (mpi) modes[nmodes++] = LAB_MPI;
    lab_header("scheduler", "%zu prioritised tasks with timeouts on %s (durations x %.3g)", NTASKS,
               nmodes == 2 ? "a local pool and over MPI" : nmodes ? lab_mode_name[modes[0]] : "no pool in this run",
               lab_opt.scale);
    if (lab_want(LAB_MPI) && !mpi)
        printf("  (mpi: not in this run: a task past its timeout is killed only by a serving rank's process pool, "
               "which `lab scheduler --mode mpi` starts; docs/lab.md)\n");
    if (nmodes == 0) return 0;
    board = lab_shared_alloc(sizeof *board);
    sched_run_t *runs = calloc(nmodes, sizeof *runs);
    if (!runs) lab_die("out of memory");
    json_t *fig = NULL;
    for (size_t m = 0; m < nmodes; m++) {
        sched_run_t *r = &runs[m];
        r->mode = modes[m];
        for (size_t i = 0; i < NTASKS; i++) atomic_store(&board->start_ns[i], 0);
        async_executor_t *ex = pool_of(r->mode);
        r->pool = async_executor_workers(ex);
        run_batch(r, ex);
        if (r->mode != LAB_MPI) async_executor_free(ex); /* the MPI executor is the run's: lab_mpi_end frees it */
        json_t *one = report_run(r);
        /* The first run's figures at the top (as before MPI ran it), the
         * MPI run's under "mpi" beside them. */
        if (!fig) fig = one;
        else json_object_set_new(fig, lab_mode_name[r->mode], one);
    }
    if (nmodes == 2) check_agree(&runs[0], &runs[1]);
    json_object_set_new(lab_figures, "scheduler", fig);
    free(runs);
    lab_shared_free(board, sizeof *board);
    board = NULL;
    return 0;
}
