/* See client-plot.h.  gnuplot runs in DIR with file names relative to it, so
 * no path the user chose ever has to be quoted inside a gnuplot script.
 * State names are printed with the noenhanced terminal option, as gnuplot
 * would otherwise read the '_' of new_york as a subscript. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "client-plot.h"

static bool on_path(const char *prog)
{
    const char *path = getenv("PATH");
    if (!path) return false;
    char file[PATH_MAX];
    while (*path) {
        size_t n = strcspn(path, ":");
        snprintf(file, sizeof file, "%.*s/%s", (int)n, path, prog);
        if (n && access(file, X_OK) == 0) return true;
        path += n + (path[n] == ':');
    }
    return false;
}

int client_plot_check(const char *dir)
{
    /* gnuplot first, so that a refusal leaves no empty DIR behind. */
    if (!on_path("gnuplot")) {
        fprintf(stderr, "brewery: --plot needs gnuplot, which is not on PATH "
                        "(on Debian: apt-get install gnuplot-nox)\n");
        return -1;
    }
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "brewery: --plot %s: cannot create the directory: %s\n", dir,
                strerror(errno));
        return -1;
    }
    /* access(W_OK) says yes to root on a read-only mount: try for real. */
    char probe[PATH_MAX];
    snprintf(probe, sizeof probe, "%s/.brewery-plot-XXXXXX", dir);
    int fd = mkstemp(probe);
    if (fd < 0) {
        fprintf(stderr, "brewery: --plot %s: cannot write there: %s\n", dir, strerror(errno));
        return -1;
    }
    close(fd);
    unlink(probe);
    return 0;
}

static int write_file(const char *dir, const char *name, const char *text)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "brewery: --plot: cannot create %s: %s\n", path, strerror(errno));
        return -1;
    }
    fputs(text, f);
    if (fclose(f) != 0) {
        fprintf(stderr, "brewery: --plot: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* A growing string for the data and the script. */
typedef struct buf {
    char *p;
    size_t len, cap;
    bool oom;
} buf_t;

static void put(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(buf_t *b, const char *fmt, ...)
{
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if (b->p && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = (b->cap ? b->cap : 4096) * 2 + (size_t)n;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

/* A name inside a gnuplot single-quoted string, where '' is one quote. */
static void put_quoted(buf_t *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\'') put(b, "''");
        else if ((unsigned char)*s >= 0x20) put(b, "%c", *s);
    }
}

static int run_gnuplot(const char *dir, const char *script)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "brewery: --plot: fork: %s\n", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        int null = open("/dev/null", O_RDONLY);
        if (null >= 0) dup2(null, STDIN_FILENO);
        if (chdir(dir) != 0) _exit(126);
        execlp("gnuplot", "gnuplot", script, (char *)NULL);
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0) {
        if (errno != EINTR) {
            fprintf(stderr, "brewery: --plot: waitpid: %s\n", strerror(errno));
            return -1;
        }
    }
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) return 0;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 127)
        fprintf(stderr, "brewery: --plot: cannot run gnuplot\n");
    else if (WIFEXITED(st))
        fprintf(stderr, "brewery: --plot: gnuplot failed on %s/%s (exit %d)\n", dir, script,
                WEXITSTATUS(st));
    else
        fprintf(stderr, "brewery: --plot: gnuplot died of %s on %s/%s\n",
                strsignal(WTERMSIG(st)), dir, script);
    return -1;
}

int client_plot_timeline(const char *dir, const char *mode, const char *const *states,
                         size_t n, const client_count_t *counts, int64_t t0, double seconds)
{
    buf_t dat = {0}, gp = {0};
    long requests = 0, nbars = 0;
    size_t failed = 0;
    double last = 0;
    put(&dat, "# row start_s end_s failed state: one request, from its start to its answer\n");
    for (size_t i = 0; i < n; i++) {
        const client_count_t *c = &counts[i];
        requests += c->requests;
        failed += c->error != 0;
        for (int k = 0; k < c->nspans; k++, nbars++) {
            double s = (double)(c->spans[k].start - t0) / 1e9;
            double e = (double)(c->spans[k].end - t0) / 1e9;
            if (e > last) last = e;
            put(&dat, "%zu %.6f %.6f %d %s\n", i, s, e, c->error != 0, states[i]);
        }
    }
    double xmax = (seconds > last ? seconds : last) * 1.02;
    if (xmax <= 0) xmax = 1e-3;
    unsigned height = (unsigned)(n * 22 + 110);
    if (height < 260) height = 260;
    put(&gp, "# the brewery demo's request timeline, mode %s (brewery --plot)\n", mode);
    put(&gp, "set terminal pngcairo size 1000,%u font 'sans,10' noenhanced\n", height);
    put(&gp, "set output 'timeline-%s.png'\n", mode);
    put(&gp, "set title '%s: %ld request%s for %zu state%s in %.3f s%s'\n", mode, requests,
        requests == 1 ? "" : "s", n, n == 1 ? "" : "s", seconds,
        failed ? "; red: a failed state" : "");
    put(&gp, "set xlabel 'seconds since the mode started (one bar per request, start to answer)'\n");
    put(&gp, "set xrange [0:%.6f]\nset yrange [%zu.5:-0.5]\n", xmax, n - 1);
    put(&gp, "set ytics (");
    for (size_t i = 0; i < n; i++) {
        put(&gp, "%s'", i ? ", " : "");
        put_quoted(&gp, states[i]);
        put(&gp, "%s' %zu", counts[i].error ? " (failed)" : "", i);
    }
    put(&gp, ")\nset ytics nomirror scale 0\nset grid xtics lc rgb '#d0d0d0'\nset key off\n");
    put(&gp, "set style fill solid 0.9 border lc rgb '#203040'\n");
    /* The colour comes from the failed column: blue, or red for a state
     * that failed (all its requests, as the failure is the state's). */
    if (nbars) {
        put(&gp, "plot 'timeline-%s.dat' using 2:1:2:3:($1-0.32):($1+0.32):"
                 "($4 > 0 ? 0xd9534f : 0x4a90d9) with boxxyerror lc rgb variable\n",
            mode);
    } else {
        /* No request at all (every state unknown): an empty frame says so. */
        put(&gp, "set label 'no requests' at graph 0.5, graph 0.5 center\n");
        put(&gp, "plot NaN notitle\n");
    }
    int rc = -1;
    char name[128], script[128];
    if (dat.oom || gp.oom) {
        fprintf(stderr, "brewery: --plot: out of memory\n");
        goto out;
    }
    snprintf(name, sizeof name, "timeline-%s.dat", mode);
    snprintf(script, sizeof script, "timeline-%s.gp", mode);
    if (write_file(dir, name, dat.p) || write_file(dir, script, gp.p)) goto out;
    rc = run_gnuplot(dir, script);
    if (rc) {
        /* No half-drawn chart left behind to be mistaken for this run's. */
        char png[PATH_MAX];
        snprintf(png, sizeof png, "%s/timeline-%s.png", dir, mode);
        unlink(png);
    }
out:
    free(dat.p);
    free(gp.p);
    return rc;
}
