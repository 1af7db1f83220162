/* The lab's workloads in C (serial, threads, processes, from demos/lab/lab's
 * lab-report.json) beside the lab's own Python (serial and
 * multiprocessing.Pool, from tests/bench/peer-lab.py), C and Python
 * alternating workload by workload in every round; each figure prints as
 * median (min-max) over the rounds.
 *
 * Sizes are the lab's except where Python would take too long; those rows say
 * their size, and both languages run that same size.  Seconds exclude starting
 * the pool on both sides.  Run from the source root (make bench does). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "rounds.h"

#define LAB ASYNC_OUT_DIR "/demos/lab/lab"

typedef struct row {
    const char *name;     /* the table's label */
    const char *lab_args; /* workload and options for the C lab */
    const char *py_name;  /* peer-lab.py's workload name */
    const char *py_args;  /* extra options for peer-lab.py */
    /* Where the C figures are: the workload's figures, or a row of its sweep. */
    const char *workload;
    int sweep; /* -1: seconds.{serial,threads,processes}; else special */
    double c[3], py[2];
} row_t;

enum { SWEEP_NONE = -1, SWEEP_BUSY = -2, SWEEP_NORM_XL = -3, SWEEP_WORKERS = -4 };

static row_t rows[] = {
    {"howmany 1000000x5", "howmany", "howmany", "", "howmany", SWEEP_NONE, {0}, {0}},
    {"common (4 rows)", "common", "common", "", "common", SWEEP_NONE, {0}, {0}},
    {"busywork x0.5, pool 4", "busywork --scale 0.5", "busywork", "--scale-busy 0.5", "busywork", SWEEP_BUSY, {0}, {0}},
    {"normalize XL 50000x100", "normalize", "normalize", "", "normalize", SWEEP_NORM_XL, {0}, {0}},
    {"primes < 100000", "primes", "primes", "", "primes", SWEEP_NONE, {0}, {0}},
    {"factors (100)", "factors", "factors", "", "factors", SWEEP_NONE, {0}, {0}},
    {"sumsq 8 x 1e6", "sumsq", "sumsq", "", "sumsq", SWEEP_NONE, {0}, {0}},
    {"heavy 10M (of 40M) x3", "heavy --scale 0.25", "heavy", "--heavy-n 10000000", "heavy", SWEEP_NONE, {0}, {0}},
    {"chunks cs=1, 10k items", "chunks --scale 0.1", "chunks=1", "--chunk-n 10000", "chunks", 0, {0}, {0}},
    {"chunks cs=1000, 10k", "chunks --scale 0.1", "chunks=1000", "--chunk-n 10000", "chunks", 3, {0}, {0}},
    {"workers 60 tasks, 2 w.", "workers --scale 0.25", "workers", "--workers-tasks 60", "workers", SWEEP_WORKERS, {0}, {0}},
};
#define NROWS (sizeof rows / sizeof rows[0])

static double num(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : -1;
}

static int run_c(row_t *r, const char *json_path)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s %s --soln /dev/null --report %s > /dev/null", LAB, r->lab_args, json_path);
    if (system(cmd) != 0) {
        fprintf(stderr, "bench-lab: `%s` failed\n", cmd);
        return -1;
    }
    json_error_t e;
    json_t *s = json_load_file(json_path, 0, &e);
    if (!s) {
        fprintf(stderr, "bench-lab: %s: %s\n", json_path, e.text);
        return -1;
    }
    json_t *w = json_object_get(json_object_get(s, "workloads"), r->workload);
    json_t *secs = json_object_get(w, "seconds");
    static const char *modes[3] = {"serial", "threads", "processes"};
    for (int m = 0; m < 3; m++) r->c[m] = num(secs, modes[m]);
    if (r->sweep == SWEEP_BUSY) {
        json_t *parts = json_object_get(s, "busywork");
        r->c[0] = num(json_object_get(parts, "part1"), "serial");
        r->c[1] = num(json_object_get(parts, "part3"), "threads");
        r->c[2] = num(json_object_get(parts, "part3"), "processes");
    } else if (r->sweep == SWEEP_NORM_XL) {
        json_t *xl = json_array_get(json_object_get(w, "sizes"), 3);
        for (int m = 0; m < 3; m++) r->c[m] = num(xl, modes[m]);
    } else if (r->sweep == SWEEP_WORKERS) {
        json_t *sweep = json_object_get(w, "sweep");
        json_int_t cpus = json_integer_value(json_object_get(w, "cpus"));
        r->c[0] = num(json_object_get(json_array_get(sweep, 0), "threads"), "seconds");
        r->c[1] = num(json_object_get(json_array_get(sweep, (size_t)cpus - 1), "threads"), "seconds");
        r->c[2] = num(json_object_get(json_array_get(sweep, (size_t)cpus - 1), "processes"), "seconds");
    } else if (r->sweep >= 0) {
        json_t *at = json_array_get(json_object_get(w, "sweep"), (size_t)r->sweep);
        r->c[0] = num(w, "serial");
        r->c[1] = num(at, "threads");
        r->c[2] = num(at, "processes");
    }
    json_decref(s);
    return 0;
}

/* One peer-lab.py run for the row; it prints one JSON line. */
static int run_py(row_t *r)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, BENCH_PYTHON " tests/bench/peer-lab.py %s %s", r->py_args, r->py_name);
    r->py[0] = r->py[1] = -1;
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    char line[8192];
    while (fgets(line, sizeof line, p)) {
        json_t *j = json_loads(line, 0, NULL);
        if (!j) continue;
        r->py[0] = num(j, "serial");
        r->py[1] = num(j, "pool");
        json_decref(j);
    }
    if (pclose(p) != 0) {
        fprintf(stderr, "bench-lab: `%s` failed\n", cmd);
        r->py[0] = r->py[1] = -1;
        return -1;
    }
    return 0;
}

static void add(const row_t *r, const char *what, const char *unit, double v)
{
    char name[160];
    snprintf(name, sizeof name, "lab %s, %s", r->name, what);
    bench_add(name, unit, v);
}

int main(void)
{
    char json_path[] = "/tmp/bench-lab-XXXXXX";
    int fd = mkstemp(json_path);
    if (fd < 0) return 1;
    close(fd);
    bench_start("bench-lab");
    bench_note("pools of %ld (busywork: 4); start-up excluded; C par = the faster of C threads and C processes "
               "in that round; Python: " BENCH_PYTHON, sysconf(_SC_NPROCESSORS_ONLN));
    for (int round = 0; round < bench_rounds(); round++) {
        for (size_t i = 0; i < NROWS; i++) {
            row_t *r = &rows[i];
            r->c[0] = r->c[1] = r->c[2] = -1;
            if (run_c(r, json_path) != 0) return 1;
            run_py(r);
            double par = r->c[1] > 0 && (r->c[2] <= 0 || r->c[1] < r->c[2]) ? r->c[1] : r->c[2];
            add(r, "C serial", "s", r->c[0]);
            add(r, "C threads", "s", r->c[1]);
            add(r, "C processes", "s", r->c[2]);
            add(r, "Python serial", "s", r->py[0]);
            add(r, "Python pool", "s", r->py[1]);
            add(r, "C parallel speedup over C serial", "x", par > 0 && r->c[0] > 0 ? r->c[0] / par : -1);
            add(r, "Python pool over C parallel (how many times slower)", "x",
                par > 0 && r->py[1] > 0 ? r->py[1] / par : -1);
        }
    }
    unlink(json_path);
    bench_print();
    return 0;
}
