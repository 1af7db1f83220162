/* Figures measured in alternating rounds.  A benchmark runs every side of a
 * comparison once a round (ours, baseline, ours, baseline, ...), records each
 * value with bench_add(), and prints every figure at the end as
 * `name: median (min-max) unit`, so one lucky or unlucky round shows as
 * such instead of standing for the whole run.  A ratio is taken round by
 * round from two figures of the same round, never from two medians.
 *
 * BENCH_ROUNDS (default 5, at most 64) sets the number of rounds.  Header
 * only: each bench-*.c is one program. */
#ifndef ASYNC_BENCH_ROUNDS_H
#define ASYNC_BENCH_ROUNDS_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Debian's python3, with the Debian packages the peers import (numpy,
 * requests): a python3 earlier on PATH (pyenv, a venv) may lack them. */
#define BENCH_PYTHON "/usr/bin/python3"

#define BENCH_MAX_FIGS 160
#define BENCH_MAX_ROUNDS 64

typedef struct bench_fig {
    char name[200];
    char unit[24];
    double v[BENCH_MAX_ROUNDS];
    int n;
} bench_fig_t;

static bench_fig_t bench_figs[BENCH_MAX_FIGS];
static int bench_nfigs;

static inline int bench_rounds(void)
{
    const char *s = getenv("BENCH_ROUNDS");
    int n = s ? atoi(s) : 5;
    return n < 1 ? 1 : n > BENCH_MAX_ROUNDS ? BENCH_MAX_ROUNDS : n;
}

/* Prints the load average (the machine is shared: others' jobs skew the
 * parallel figures) and the number of rounds, once at the start. */
static inline void bench_start(const char *what)
{
    double load[1] = {0};
    if (getloadavg(load, 1) != 1) load[0] = -1;
    printf("%s: %d alternating rounds; load average at start %.2f on %ld CPUs\n", what, bench_rounds(),
           load[0], sysconf(_SC_NPROCESSORS_ONLN));
    fflush(stdout);
}

static inline bench_fig_t *bench_fig(const char *name, const char *unit)
{
    for (int i = 0; i < bench_nfigs; i++)
        if (strcmp(bench_figs[i].name, name) == 0) return &bench_figs[i];
    if (bench_nfigs == BENCH_MAX_FIGS) {
        fprintf(stderr, "rounds.h: more than %d figures\n", BENCH_MAX_FIGS);
        exit(1);
    }
    bench_fig_t *f = &bench_figs[bench_nfigs++];
    snprintf(f->name, sizeof f->name, "%s", name);
    snprintf(f->unit, sizeof f->unit, "%s", unit);
    return f;
}

/* Records one round's value.  A negative value means "not measured this
 * round" (a missing peer, a failed run): it is left out, and a figure with
 * no value prints as n/a. */
static inline void bench_add(const char *name, const char *unit, double value)
{
    bench_fig_t *f = bench_fig(name, unit);
    if (value >= 0 && f->n < BENCH_MAX_ROUNDS) f->v[f->n++] = value;
}

static inline double bench_value(const char *name, int round)
{
    for (int i = 0; i < bench_nfigs; i++)
        if (strcmp(bench_figs[i].name, name) == 0) return round < bench_figs[i].n ? bench_figs[i].v[round] : -1;
    return -1;
}

/* A figure from two others, round by round: num/den, in "x" (when both are
 * times, how many times faster den's side was in that round). */
static inline void bench_ratio(const char *name, const char *num, const char *den)
{
    int n = bench_rounds();
    bench_fig(name, "x");
    for (int r = 0; r < n; r++) {
        double a = bench_value(num, r), b = bench_value(den, r);
        if (a >= 0 && b > 0) bench_add(name, "x", a / b);
    }
}

static inline int bench_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Three significant digits, no exponent: 1.62, 192, 0.0351, 55700. */
static inline void bench_fmt(char *buf, size_t size, double x)
{
    if (x >= 1000 || x <= -1000) snprintf(buf, size, "%.0f", x);
    else if (x == 0) snprintf(buf, size, "0");
    else snprintf(buf, size, "%#.3g", x);
    /* %#.3g keeps trailing zeros but may leave a bare "." on 100-999. */
    size_t len = strlen(buf);
    if (len && buf[len - 1] == '.') buf[len - 1] = 0;
}

static inline void bench_print(void)
{
    for (int i = 0; i < bench_nfigs; i++) {
        bench_fig_t *f = &bench_figs[i];
        if (f->n == 0) {
            printf("%s: n/a\n", f->name);
            continue;
        }
        double s[BENCH_MAX_ROUNDS];
        memcpy(s, f->v, sizeof(double) * (size_t)f->n);
        qsort(s, (size_t)f->n, sizeof *s, bench_cmp);
        double med = f->n % 2 ? s[f->n / 2] : (s[f->n / 2 - 1] + s[f->n / 2]) / 2;
        char m[32], lo[32], hi[32];
        bench_fmt(m, sizeof m, med);
        bench_fmt(lo, sizeof lo, s[0]);
        bench_fmt(hi, sizeof hi, s[f->n - 1]);
        printf("%s: %s (%s-%s) %s\n", f->name, m, lo, hi, f->unit);
    }
    fflush(stdout);
}

/* A line that is not a figure (a check, a note): printed at once. */
static inline void bench_note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

/* Runs a peer program (the labs' Python) and keeps its output, `name value`
 * lines, for bench_peer_value().  Returns 0, or -1 if it could not run. */
static inline int bench_peer_run(const char *cmd, char *out, size_t size)
{
    FILE *f = popen(cmd, "r");
    size_t n = f ? fread(out, 1, size - 1, f) : 0;
    int rc = f ? pclose(f) : -1;
    out[n] = 0;
    return rc == 0 ? 0 : -1;
}

static inline double bench_peer_value(const char *text, const char *key)
{
    size_t k = strlen(key);
    for (const char *p = text; (p = strstr(p, key)); p += k)
        if ((p == text || p[-1] == '\n') && p[k] == ' ') return atof(p + k + 1);
    return -1;
}

#endif
