/* workers: one CPU-bound job (240 equal tasks, each factoring the prime
 * 999,999,999,989 by trial division) on 1 to 2 x CPUs workers, with time,
 * speedup and efficiency per count, and the Amdahl parallel fraction fitted
 * to the measurements.
 *
 * The fit: with p workers on c cores only min(p, c) run at once, so Amdahl's
 * law predicts T(p) / T(1) = 1 - f (1 - 1 / min(p, c)).  That is linear in f,
 * and the least-squares f is sum(a (1 - y)) / sum(a^2) with
 * a = 1 - 1 / min(p, c) and y = T(p) / T(1).  The chart draws the measured
 * speedups, the fitted curve and the ideal line. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "lab.h"

typedef struct spin {
    uint64_t prime;
    uint64_t divisions[4096];
} spin_t;

static void spin_range(void *ctx, size_t lo, size_t hi)
{
    spin_t *s = ctx;
    for (size_t t = lo; t < hi; t++) {
        uint64_t n = s->prime, d = 3, k = 0;
        for (; d * d <= n; d += 2, k++)
            if (n % d == 0) break;
        s->divisions[t] = k;
    }
}

#define SPIN_PRIME 999999999989ULL

/* Over MPI: no input; a rank's own table of division counts. */
static void *spin_attach(const void *in, size_t n, void **results)
{
    (void)in;
    spin_t *s = n <= 4096 ? calloc(1, sizeof *s) : NULL;
    if (s) {
        s->prime = SPIN_PRIME;
        *results = s->divisions;
    }
    return s;
}

const lab_mpi_kind_t lab_mpi_workers_spin = {"workers", spin_range, spin_attach, free, NULL};

/* Least-squares Amdahl fraction from times t[1..maxp] (t[0] unused). */
static double amdahl_fit(const double *t, unsigned maxp, unsigned cores)
{
    double num = 0, den = 0;
    for (unsigned p = 2; p <= maxp; p++) {
        if (t[p] <= 0) continue;
        double a = 1 - 1.0 / (p < cores ? p : cores), y = t[p] / t[1];
        num += a * (1 - y);
        den += a * a;
    }
    double f = den > 0 ? num / den : 0;
    return f < 0 ? 0 : f > 1 ? 1 : f;
}

static double amdahl(double f, unsigned p, unsigned cores)
{
    return 1 / ((1 - f) + f / (p < cores ? p : cores));
}

/* The sweep's measurements, shared by the steps below. */
typedef struct sweep {
    unsigned cores, maxp;
    size_t ntasks;
    double t[LAB_NMODES][65]; /* seconds by mode and workers; 0: not run */
    double f[LAB_NMODES];     /* Amdahl fit: the parallel fraction */
    uint64_t want;            /* hash of the division counts every run gave */
    const char *want_from;    /* the first mode that gave it, or NULL */
} sweep_t;

/* Runs the serial reference and every pool from 1 to maxp workers; dies if
 * one computes other division counts than the first. */
static void sweep_measure(sweep_t *sw, spin_t *s)
{
    const unsigned maxp = sw->maxp, cores = sw->cores;
    const size_t ntasks = sw->ntasks;
    double (*t)[65] = sw->t, *f = sw->f;
    uint64_t want = 0;
    const char *want_from = NULL;
    if (lab_want(LAB_SERIAL)) {
        /* The reference the pools' answers are checked against. */
        memset(s->divisions, 0, sizeof s->divisions);
        t[LAB_SERIAL][1] = lab_run(LAB_SERIAL, 1, spin_range, s, ntasks, 1, "workers", NULL);
        want = lab_fnv(s->divisions, sizeof s->divisions, 0);
        want_from = "serial";
        printf("  serial loop: %.4f s\n", t[LAB_SERIAL][1]);
    }
    /* Over MPI the pool is the serving ranks: p workers are p chunks in
     * flight at most (imap's window), up to every serving rank. */
    unsigned top[LAB_NMODES] = {0, maxp, maxp, lab_mpi_workers() < 64 ? lab_mpi_workers() : 64};
    for (lab_mode_t m = LAB_THREADS; m < LAB_NMODES; m++) {
        if (!lab_want(m)) continue;
        for (unsigned p = 1; p <= top[m]; p++) {
            memset(s->divisions, 0, sizeof s->divisions);
            t[m][p] = m == LAB_MPI ? lab_mpi_call(&(lab_mpi_call_t){.kind = &lab_mpi_workers_spin, .workers = p}, NULL, 0,
                                                  ntasks, 1, s->divisions, ntasks * sizeof *s->divisions, NULL)
                                   : lab_run(m, p, spin_range, s, ntasks, 1, "workers", NULL);
            uint64_t h = lab_fnv(s->divisions, sizeof s->divisions, 0);
            if (want_from && h != want)
                lab_die("workers: %s with %u workers computed something else than %s", lab_mode_name[m], p, want_from);
            want = h;
            if (!want_from) want_from = lab_mode_name[m];
        }
        f[m] = amdahl_fit(t[m], top[m], cores);
    }
    sw->want = want;
    sw->want_from = want_from;
}

/* The table, the Amdahl fit and the verdict on stdout, the figures in
 * lab_figures; fills data with the speedup chart's data file. */
static void sweep_report(const sweep_t *sw, char *data, size_t data_size)
{
    const unsigned cores = sw->cores, maxp = sw->maxp;
    const size_t ntasks = sw->ntasks;
    const uint64_t want = sw->want;
    const char *want_from = sw->want_from;
    const double (*t)[65] = sw->t, *f = sw->f;
    bool mpi = lab_want(LAB_MPI);
    printf("  %-8s %11s %8s %6s %11s %8s %6s%s\n", "workers", "threads s", "speedup", "eff", "processes s",
           "speedup", "eff", mpi ? "       mpi s  speedup    eff" : "");
    json_t *rows = json_array();
    size_t dl = (size_t)snprintf(data, data_size, "# workers threads_speedup processes_speedup ideal "
                                                    "amdahl_threads amdahl_processes\n");
    for (unsigned p = 1; p <= maxp; p++) {
        json_t *row = json_object();
        json_object_set_new(row, "workers", json_integer(p));
        printf("  %-8u", p);
        double sp[LAB_NMODES] = {0};
        for (lab_mode_t m = LAB_THREADS; m < LAB_NMODES; m++) {
            if (m == LAB_MPI && !mpi) continue;
            if (t[m][p] <= 0) {
                printf(" %11s %8s %6s", "-", "-", "-");
                continue;
            }
            sp[m] = t[m][1] / t[m][p];
            printf(" %11.4f %7.2fx %5.0f%%", t[m][p], sp[m], 100 * sp[m] / p);
            json_t *o = json_object();
            json_object_set_new(o, "seconds", json_real(t[m][p]));
            json_object_set_new(o, "speedup", json_real(sp[m]));
            json_object_set_new(o, "efficiency", json_real(sp[m] / p));
            json_object_set_new(row, lab_mode_name[m], o);
        }
        printf("\n");
        json_array_append_new(rows, row);
        dl += (size_t)snprintf(data + dl, data_size - dl, "%u %.6f %.6f %u %.6f %.6f\n", p,
                               sp[LAB_THREADS] > 0 ? sp[LAB_THREADS] : NAN,
                               sp[LAB_PROCESSES] > 0 ? sp[LAB_PROCESSES] : NAN, p,
                               amdahl(f[LAB_THREADS], p, cores), amdahl(f[LAB_PROCESSES], p, cores));
    }
    json_t *fig = json_object(), *fit = json_object();
    for (lab_mode_t m = LAB_THREADS; m < LAB_NMODES; m++) {
        if (t[m][1] <= 0) continue;
        printf("  Amdahl fit, %s: parallel fraction %.4f (serial %.2f%%), so at most %.2fx on %u cores\n",
               lab_mode_name[m], f[m], 100 * (1 - f[m]), amdahl(f[m], cores, cores), cores);
        json_object_set_new(fit, lab_mode_name[m], json_real(f[m]));
    }
    lab_mode_t b = t[LAB_PROCESSES][cores] > 0 &&
                           (t[LAB_THREADS][cores] <= 0 || t[LAB_PROCESSES][cores] < t[LAB_THREADS][cores])
                       ? LAB_PROCESSES
                       : LAB_THREADS;
    if (t[b][cores] > 0) {
        double flat = t[b][maxp] / t[b][cores], others = lab_others_cpus();
        const char *past = flat > 1.15   ? "gets slower, because more workers than cores only time-share them"
                           : flat < 0.87 ? "still improves, which says the cores were not all free at fewer workers"
                                         : "stays flat, because there are no more cores to run them";
        printf("  verdict: %s with %u workers, %.2fx: the job is %.1f%% parallel, and past %u workers the time %s.",
               lab_mode_name[b], cores, t[b][1] / t[b][cores], 100 * f[b], cores, past);
        if (others >= 0.5) printf(" Other programs kept %.1f of the %d CPUs busy meanwhile.", others, lab_opt.ncpu);
        printf("\n");
    }
    if (want_from) {
        /* Every count and backend gave these division counts. */
        char hex[17];
        snprintf(hex, sizeof hex, "%016llx", (unsigned long long)want);
        json_object_set_new(fig, "hash", json_string(hex));
        printf("  results: every run counted the same divisions (hash %s)\n", hex);
    }
    json_object_set_new(fig, "sweep", rows);
    json_object_set_new(fig, "amdahl_parallel_fraction", fit);
    json_object_set_new(fig, "tasks", json_integer((json_int_t)ntasks));
    json_object_set_new(fig, "cpus", json_integer(cores));
    json_object_set_new(lab_figures, "workers", fig);
}

/* The speedup chart: measured speedups, the ideal and the Amdahl fits. */
static void plot_speedup(const sweep_t *sw, const char *data)
{
    const unsigned cores = sw->cores, maxp = sw->maxp;
    const size_t ntasks = sw->ntasks;
    const double *f = sw->f;
    char script[2048];
    snprintf(script, sizeof script,
             "set title 'Speedup against workers (%zu equal CPU-bound tasks, %u CPUs)'\n"
             "set xlabel 'workers'\nset ylabel 'speedup over 1 worker'\nset grid\nset key top left\n"
             "set xrange [0.8:%u.2]\nset yrange [0:%u.5]\nset xtics 1\n"
             "plot dat using 1:4 with lines lw 2 dt 2 lc rgb '#888888' title 'ideal (speedup = workers)', "
             "dat using 1:($4 < %u ? $4 : %u) with lines lw 1 dt 3 lc rgb '#444444' title 'ideal on %u CPUs', "
             "dat using 1:5 with lines lw 2 lc rgb '#1f77b4' title sprintf('Amdahl fit, threads: f = %.3f'), "
             "dat using 1:6 with lines lw 2 lc rgb '#d62728' title sprintf('Amdahl fit, processes: f = %.3f'), "
             "dat using 1:2 with points pt 7 ps 1.6 lc rgb '#1f77b4' title 'threads, measured', "
             "dat using 1:3 with points pt 5 ps 1.4 lc rgb '#d62728' title 'processes, measured'\n",
             ntasks, cores, maxp, maxp, cores, cores, cores, f[LAB_THREADS], f[LAB_PROCESSES]);
    lab_plot("workers", data, script);
}

/* Amdahl's law as the lecture draws it, with this machine's speedups. */
static void plot_amdahl(const sweep_t *sw)
{
    const unsigned cores = sw->cores, maxp = sw->maxp;
    const double (*t)[65] = sw->t;
    /* Amdahl's law as the lecture draws it: S(n) = 1 / ((1 - p) + p / n) for
     * p = 0.5 to 0.99 up to 64 CPUs, with this machine's measured speedups
     * on the same axes. */
    static const double fractions[] = {0.5, 0.75, 0.9, 0.95, 0.99};
    char adata[8192];
    size_t al = (size_t)snprintf(adata, sizeof adata, "# cpus S(0.5) S(0.75) S(0.9) S(0.95) S(0.99) threads processes\n");
    for (unsigned n = 1; n <= 64; n++) {
        al += (size_t)snprintf(adata + al, sizeof adata - al, "%u", n);
        for (size_t k = 0; k < 5; k++)
            al += (size_t)snprintf(adata + al, sizeof adata - al, " %.6f", 1 / ((1 - fractions[k]) + fractions[k] / n));
        for (lab_mode_t m = LAB_THREADS; m < LAB_NPOOLS; m++) {
            double sp = n <= maxp && t[m][n] > 0 && t[m][1] > 0 ? t[m][1] / t[m][n] : NAN;
            al += (size_t)snprintf(adata + al, sizeof adata - al, " %.6f", sp);
        }
        al += (size_t)snprintf(adata + al, sizeof adata - al, "\n");
    }
    char ascript[2048];
    snprintf(ascript, sizeof ascript,
             "set title \"Amdahl's law: speedup against CPUs for parallel fractions p, and this machine (%u CPUs)\"\n"
             "set xlabel 'CPUs (workers)'\nset ylabel 'speedup'\nset grid\nset key top left\n"
             "set logscale x 2\nset xrange [1:64]\nset yrange [0:%d]\n"
             "plot dat using 1:6 with lines lw 2 lc rgb '#9467bd' title 'p = 0.99', "
             "dat using 1:5 with lines lw 2 lc rgb '#8c564b' title 'p = 0.95', "
             "dat using 1:4 with lines lw 2 lc rgb '#2ca02c' title 'p = 0.90', "
             "dat using 1:3 with lines lw 2 lc rgb '#ff7f0e' title 'p = 0.75', "
             "dat using 1:2 with lines lw 2 lc rgb '#7f7f7f' title 'p = 0.50', "
             "dat using 1:7 with points pt 7 ps 1.4 lc rgb '#1f77b4' title 'threads, measured', "
             "dat using 1:8 with points pt 5 ps 1.2 lc rgb '#d62728' title 'processes, measured'\n",
             cores, 40);
    lab_plot("amdahl", adata, ascript);
}

int lab_workers(void)
{
    sweep_t sw = {.cores = (unsigned)lab_opt.ncpu};
    sw.maxp = 2 * sw.cores;
    if (sw.maxp > 64) sw.maxp = 64;
    sw.ntasks = lab_scaled(240, 12);
    sw.ntasks -= sw.ntasks % 12; /* divisible by 1, 2, 3, 4 and 6 workers */
    if (sw.ntasks > 4096) sw.ntasks = 4096;
    spin_t *s = lab_shared_alloc(sizeof *s);
    s->prime = SPIN_PRIME;
    lab_header("workers", "%zu equal CPU-bound tasks on 1 to %u workers (%u CPUs)", sw.ntasks, sw.maxp,
               sw.cores);
    sweep_measure(&sw, s);
    char data[4096];
    sweep_report(&sw, data, sizeof data);
    plot_speedup(&sw, data);
    plot_amdahl(&sw);
    lab_shared_free(s, sizeof *s);
    return 0;
}
