/* busywork: the lab's tasks that sleep 1, 2, 4 and 6 s (scaled), run
 * serially, on a pool of CPU-count workers and on a pool of 4.  The tasks
 * wait rather than compute, so a pool as large as the task list finishes in
 * the longest task's time even on 2 cores.  The expected time of each
 * configuration comes from simulating the pool's in-order hand-out, and the
 * lab's prob2 answer records all three parts. */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "lab.h"

json_t *lab_prob2, *lab_prob2_detail;

static const double secs[] = {1, 2, 4, 6};
#define NTASKS 4

/* What a task reports, as the lab's do_busy_work prints it: what it was
 * asked to sleep (the result the modes must agree on), the process that ran
 * it and the time it measured itself. */
typedef struct busy_task {
    double slept, elapsed;
    int64_t pid;
} busy_task_t;

typedef struct busy {
    double scale;
    busy_task_t task[NTASKS];
} busy_t;

static void busy_range(void *ctx, size_t lo, size_t hi)
{
    busy_t *b = ctx;
    for (size_t i = lo; i < hi; i++) {
        double s = secs[i] * b->scale, t0 = lab_now();
        struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
        while (nanosleep(&ts, &ts) != 0) {}
        b->task[i] = (busy_task_t){.slept = secs[i], .elapsed = lab_now() - t0, .pid = getpid()};
    }
}

/* Over MPI: the input is the scale; a rank's own reports. */
static void *busy_attach(const void *in, size_t n, void **results)
{
    busy_t *b = n == NTASKS ? calloc(1, sizeof *b) : NULL;
    if (b) {
        memcpy(&b->scale, in, sizeof b->scale);
        *results = b->task;
    }
    return b;
}

const lab_mpi_kind_t lab_mpi_busywork = {"busywork", busy_range, busy_attach, free, NULL};

/* The answers the modes must agree on: the sleeps the tasks were given. */
static uint64_t slept_hash(const busy_t *b)
{
    double slept[NTASKS];
    for (int i = 0; i < NTASKS; i++) slept[i] = b->task[i].slept;
    return lab_fnv(slept, sizeof slept, 0);
}

/* One configuration of `workers` in mode; returns its seconds. */
static double busy_run(lab_mode_t mode, unsigned workers, busy_t *b)
{
    memset(b->task, 0, sizeof b->task);
    if (mode != LAB_MPI) return lab_run(mode, workers, busy_range, b, NTASKS, 1, "busywork", NULL);
    return lab_mpi_call(&(lab_mpi_call_t){.kind = &lab_mpi_busywork, .workers = workers}, &b->scale, sizeof b->scale,
                        NTASKS, 1, b->task, sizeof b->task, NULL);
}

/* Greedy in-order hand-out to `workers` free workers: the pool's makespan. */
static double expected(unsigned workers, double scale)
{
    double free_at[64] = {0};
    if (workers > 64) workers = 64;
    double end = 0;
    for (int i = 0; i < NTASKS; i++) {
        unsigned w = 0;
        for (unsigned k = 1; k < workers; k++)
            if (free_at[k] < free_at[w]) w = k;
        free_at[w] += secs[i] * scale;
        if (free_at[w] > end) end = free_at[w];
    }
    return end;
}

int lab_busywork(void)
{
    busy_t *b = lab_shared_alloc(sizeof *b);
    b->scale = lab_opt.scale;
    unsigned pools[3] = {1, (unsigned)lab_opt.ncpu, 4};
    const char *part_name[3] = {"serial", "pool of CPU count", "pool of 4"};
    lab_header("busywork", "tasks sleeping 1, 2, 4, 6 s x %.3g: serial, a pool of %d (CPU count), a pool of 4",
               lab_opt.scale, lab_opt.ncpu);
    bool mpi = lab_want(LAB_MPI);
    printf("  %-20s %9s %10s %10s %10s%s\n", "configuration", "expected", "threads", "processes", "serial",
           mpi ? "        mpi" : "");
    json_t *parts = json_object(), *prob2 = json_object(), *reports = json_array();
    lab_result_t sum = {.workers = 4};
    /* prob2's seconds: part1 serial, part2 and part3 the processes pool (the
     * notebook's multiprocessing.Pool), or threads when only they ran. */
    lab_mode_t pool_mode = lab_want(LAB_PROCESSES) ? LAB_PROCESSES : LAB_THREADS;
    lab_mode_t want_mode[3] = {LAB_SERIAL, pool_mode, pool_mode};
    /* The notebook's prob2 always has its three parts: one whose mode did
     * not run is null (as soln.json's other answers are), not missing, so
     * that answers["prob2"]["part2"] is no KeyError after --mode serial.
     * Set first, so that a figure takes its place in the order. */
    json_object_set_new(prob2, "part1", json_null());
    json_object_set_new(prob2, "part2", json_null());
    json_object_set_new(prob2, "part3", json_null());
    for (int p = 0; p < 3; p++) {
        char key[8];
        snprintf(key, sizeof key, "part%d", p + 1);
        json_t *tasks = json_object(); /* per mode: what each task reported */
        printf("  %-20s %9.3f", part_name[p], expected(pools[p], lab_opt.scale));
        json_t *part = json_object();
        json_object_set_new(part, "workers", json_integer(pools[p]));
        json_object_set_new(part, "expected", json_real(expected(pools[p], lab_opt.scale)));
        /* The columns: threads, processes, serial, then mpi when asked for. */
        static const lab_mode_t column[] = {LAB_THREADS, LAB_PROCESSES, LAB_SERIAL, LAB_MPI};
        for (size_t c = 0; c < sizeof column / sizeof column[0]; c++) {
            lab_mode_t mode = column[c];
            if (mode == LAB_MPI && !mpi) continue;
            /* Serial is the first configuration only; over MPI the first is
             * one rank at a time, as serial is one worker. */
            bool run = p == 0 ? (mode == LAB_SERIAL || mode == LAB_MPI) && lab_want(mode)
                              : mode != LAB_SERIAL && lab_want(mode);
            if (!run) {
                printf(" %10s", "-");
                continue;
            }
            double t = busy_run(mode, pools[p], b);
            printf(" %10.3f", t);
            if (mode == LAB_MPI && pools[p] > lab_mpi_workers()) {
                /* A pool larger than the serving ranks runs on all of them. */
                printf(" (%u ranks, expected %.3f)", lab_mpi_workers(), expected(lab_mpi_workers(), lab_opt.scale));
                json_object_set_new(part, "mpi_ranks", json_integer(lab_mpi_workers()));
            }
            json_object_set_new(part, lab_mode_name[mode], json_real(t));
            uint64_t h = slept_hash(b);
            /* The table's modes are compared with the pool of 4, the lab's last part. */
            if (p == 0 || p == 2) {
                sum.secs[mode] = t;
                sum.sum[mode] = h;
                sum.ran[mode] = true;
            }
            json_t *msgs = json_array(), *reported = json_array();
            for (int i = 0; i < NTASKS; i++) {
                char line[96];
                snprintf(line, sizeof line, "task %d done in pid %lld, slept for %g, took %.3f s", i + 1,
                         (long long)b->task[i].pid, b->task[i].slept * lab_opt.scale, b->task[i].elapsed);
                json_array_append_new(msgs, json_string(line));
                json_t *task = json_object();
                json_object_set_new(task, "pid", json_integer((json_int_t)b->task[i].pid));
                json_object_set_new(task, "elapsed", json_real(b->task[i].elapsed));
                json_array_append_new(reported, task);
            }
            json_object_set_new(tasks, lab_mode_name[mode], reported);
            json_object_set_new(part, "results", msgs);
            if (mode == want_mode[p]) {
                json_object_set_new(prob2, key, json_real(t));
                for (int i = 0; i < NTASKS; i++)
                    json_array_append_new(reports, json_sprintf("%s %s", key, json_string_value(json_array_get(msgs, i))));
            }
        }
        printf("\n");
        json_object_set_new(part, "tasks", tasks);
        json_object_set_new(parts, key, part);
    }
    /* Each task's own report, as do_busy_work prints it, for the runs that
     * give prob2 its figures. */
    for (size_t i = 0; i < json_array_size(reports); i++)
        printf("  %s\n", json_string_value(json_array_get(reports, i)));
    json_decref(reports);
    printf("  the pool of 4 against serial:\n");
    printf("  results: every task reports the time it slept; the longest task is %.3g s\n", 6 * lab_opt.scale);
    json_t *f = lab_report("busywork", &sum, LAB_BOUND_LONGEST, 0, NULL);
    json_object_set(f, "parts", parts);
    json_decref(lab_prob2);
    lab_prob2 = prob2;
    json_decref(lab_prob2_detail);
    lab_prob2_detail = parts;
    lab_shared_free(b, sizeof *b);
    return 0;
}
