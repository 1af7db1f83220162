/* Tables and verdicts.  Each workload's table has one line per mode with
 * seconds, speedup over serial and efficiency (speedup per worker), then a
 * one-line verdict that names the winner and the reason: the cores, memory
 * bandwidth, dispatch overhead or the longest task.  The same figures go into
 * lab_figures for the report file (lab-report.json).  The report also checks that every mode produced
 * the same results (their hashes agree) and stops the lab if not. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include "lab.h"

json_t *lab_figures;

/* How busy other programs kept the machine: the CPU time the whole machine
 * spent (from /proc/stat) minus what this process and its workers spent
 * (getrusage), per second of wall time.  On a shared machine this is what
 * explains a parallel run slower than the serial one. */
static lab_load_t window; /* since the workload's header */

static double machine_cpu(void)
{
    unsigned long long v[8] = {0};
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return -1;
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
                   &v[6], &v[7]);
    fclose(f);
    if (n < 4) return -1;
    /* user nice system (idle) (iowait) irq softirq steal */
    unsigned long long busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    return (double)busy / (double)sysconf(_SC_CLK_TCK);
}

static double our_cpu(void)
{
    struct rusage a, b;
    getrusage(RUSAGE_SELF, &a);
    getrusage(RUSAGE_CHILDREN, &b);
    return (double)(a.ru_utime.tv_sec + a.ru_stime.tv_sec + b.ru_utime.tv_sec + b.ru_stime.tv_sec) +
           (double)(a.ru_utime.tv_usec + a.ru_stime.tv_usec + b.ru_utime.tv_usec + b.ru_stime.tv_usec) / 1e6;
}

void lab_load_begin(lab_load_t *l)
{
    l->machine = machine_cpu();
    l->ours = our_cpu();
    l->wall = lab_now();
}

double lab_load_end(const lab_load_t *l)
{
    /* /proc/stat counts in clock ticks (10 ms): too coarse for short runs. */
    double m = machine_cpu(), wall = lab_now() - l->wall;
    if (m < 0 || l->machine < 0 || wall < 0.2) return 0;
    double other = (m - l->machine) - (our_cpu() - l->ours);
    return other > 0 ? other / wall : 0;
}

double lab_others_cpus(void)
{
    return lab_load_end(&window);
}

bool lab_want(lab_mode_t mode)
{
    return lab_opt.modes & (1u << mode);
}

void lab_header(const char *name, const char *fmt, ...)
{
    va_list ap;
    lab_load_begin(&window);
    va_start(ap, fmt);
    printf("\n== %s: ", name);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
}

static unsigned cores(void)
{
    unsigned w = lab_opt.workers, c = (unsigned)lab_opt.ncpu;
    return w < c ? w : c;
}

/* The fastest parallel mode that ran, or LAB_SERIAL if none did. */
static lab_mode_t best(const lab_result_t *r)
{
    lab_mode_t b = LAB_SERIAL;
    for (lab_mode_t m = LAB_THREADS; m < LAB_NMODES; m++)
        if (r->ran[m] && (b == LAB_SERIAL || r->secs[m] < r->secs[b])) b = m;
    return b;
}

void lab_verdict(const lab_result_t *r, lab_bound_t bound)
{
    lab_mode_t b = best(r);
    if (b == LAB_SERIAL || !r->ran[LAB_SERIAL]) {
        printf("  verdict: none: serial and a parallel mode must both run to compare (--mode all).\n");
        return;
    }
    double s = r->secs[LAB_SERIAL] / (r->secs[b] > 0 ? r->secs[b] : 1e-9);
    unsigned c = cores();
    const char *who = lab_mode_name[b];
    /* The busiest other load seen during a parallel run, else the window's. */
    double others = 0;
    for (lab_mode_t m = LAB_THREADS; m < LAB_NMODES; m++)
        if (r->ran[m] && r->others[m] > others) others = r->others[m];
    if (others == 0) others = lab_others_cpus();
    if (others >= 0.5 && s < 0.8 * c && (bound == LAB_BOUND_CPU || bound == LAB_BOUND_MEMORY)) {
        printf("  verdict: %s %.2fx on %u cores, but other programs kept %.1f of the %d CPUs busy during the "
               "run, so the cores were not free; run again on a quiet machine (or with --repeat).\n",
               s > 1.1 ? who : "no mode wins,", s, c, others, lab_opt.ncpu);
        return;
    }
    switch (bound) {
    case LAB_BOUND_CPU:
        if (s >= 0.8 * c)
            printf("  verdict: %s win, %.2fx on %u cores: the work is compute bound and splits evenly, "
                   "so it scales with the cores.\n", who, s, c);
        else if (s > 1.1)
            printf("  verdict: %s win at %.2fx, short of %ux: the chunks are uneven or too few, or the "
                   "run is short enough that starting workers shows.\n", who, s, c);
        else
            printf("  verdict: serial is as fast (best parallel %.2fx): at %.2g s of work the job is too "
                   "small to pay for handing it to other cores.\n", s, r->secs[LAB_SERIAL]);
        break;
    case LAB_BOUND_MEMORY:
        if (s >= 0.8 * c) {
            printf("  verdict: %s win, %.2fx on %u cores: the job streams memory, but at this size the "
                   "memory bandwidth still keeps up with %u cores.\n", who, s, c, c);
            break;
        }
        printf("  verdict: %s %.2fx on %u cores: the job streams memory with little arithmetic per "
               "byte, so memory bandwidth, not the cores, caps the speedup.\n",
               s > 1.1 ? who : "no mode wins,", s, c);
        break;
    case LAB_BOUND_OVERHEAD:
        printf("  verdict: %s: %.2fx; each task does too little work to pay for its dispatch, so "
               "overhead, not the cores, decides.\n", s > 1.1 ? who : "serial wins", s);
        break;
    case LAB_BOUND_LONGEST:
        printf("  verdict: %s win, %.2fx: the tasks wait rather than compute, so the pool's size, not "
               "the cores, bounds the time, down to the longest task.\n", who, s);
        break;
    }
}

json_t *lab_report(const char *name, const lab_result_t *r, lab_bound_t bound, double work_units,
                   const char *unit)
{
    json_t *fig = json_object(), *secs = json_object(), *speed = json_object(), *eff = json_object();
    printf("  %-10s %10s %9s %11s", "mode", "seconds", "speedup", "efficiency");
    if (unit) printf(" %14s", unit);
    printf("\n");
    lab_mode_t first = LAB_NMODES;
    bool agree = true;
    for (lab_mode_t m = 0; m < LAB_NMODES; m++) {
        if (!r->ran[m]) continue;
        if (first == LAB_NMODES) first = m;
        else if (r->sum[m] != r->sum[first]) agree = false;
        double sp = r->ran[LAB_SERIAL] && r->secs[m] > 0 ? r->secs[LAB_SERIAL] / r->secs[m] : 1;
        unsigned w = m == LAB_SERIAL ? 1 : m == LAB_MPI ? lab_mpi_workers() : r->workers ? r->workers : lab_opt.workers;
        printf("  %-10s %10.4f %8.2fx %10.0f%%", lab_mode_name[m], r->secs[m], sp, 100 * sp / w);
        if (unit) printf(" %14.4g", r->secs[m] > 0 ? work_units / r->secs[m] : 0);
        printf("\n");
        json_object_set_new(secs, lab_mode_name[m], json_real(r->secs[m]));
        if (r->ran[LAB_SERIAL]) {
            json_object_set_new(speed, lab_mode_name[m], json_real(sp));
            json_object_set_new(eff, lab_mode_name[m], json_real(sp / w));
        }
    }
    if (first == LAB_NMODES) lab_die("%s: no mode ran", name);
    char hex[17];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)r->sum[first]);
    printf("  results: %s (hash %s)\n", agree ? "every mode agrees exactly" : "MODES DISAGREE", hex);
    if (r->start[LAB_THREADS] > 0 || r->start[LAB_PROCESSES] > 0 || r->start[LAB_MPI] > 0) {
        json_t *st = json_object();
        printf("  pool start-up, not counted above:");
        for (lab_mode_t m = LAB_THREADS; m < LAB_NMODES; m++) {
            if (r->start[m] <= 0) continue;
            printf(" %s %.2f ms", lab_mode_name[m], r->start[m] * 1e3);
            json_object_set_new(st, lab_mode_name[m], json_real(r->start[m]));
        }
        printf("\n");
        json_object_set_new(fig, "pool_start", st);
    }
    lab_verdict(r, bound);
    json_object_set_new(fig, "seconds", secs);
    json_object_set_new(fig, "speedup", speed);
    json_object_set_new(fig, "efficiency", eff);
    json_object_set_new(fig, "workers", json_integer(r->workers ? r->workers : lab_opt.workers));
    json_object_set_new(fig, "hash", json_string(hex));
    json_object_set_new(fig, "agree", json_boolean(agree));
    if (unit) json_object_set_new(fig, "unit", json_string(unit));
    json_object_set_new(lab_figures, name, fig);
    if (!agree) {
        for (lab_mode_t m = 0; m < LAB_NMODES; m++)
            if (r->ran[m]) fprintf(stderr, "lab: %s %s hash %016llx\n", name, lab_mode_name[m],
                                   (unsigned long long)r->sum[m]);
        lab_die("%s: the modes' results differ", name);
    }
    return fig;
}
