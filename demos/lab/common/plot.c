/* Charts with gnuplot.  Each chart is a data file DIR/NAME.dat and a script
 * fed to `gnuplot` on its standard input, writing DIR/NAME.png with the
 * pngcairo terminal.  gnuplot is optional: when it is not on PATH the lab
 * says so once, with the package to install, and carries on without charts. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "lab.h"

static bool on_path(const char *prog)
{
    const char *path = getenv("PATH");
    if (!path) return false;
    char dir[4096];
    while (*path) {
        size_t n = strcspn(path, ":");
        snprintf(dir, sizeof dir, "%.*s/%s", (int)n, path, prog);
        if (n && access(dir, X_OK) == 0) return true;
        path += n + (path[n] == ':');
    }
    return false;
}

/* A gnuplot single-quoted string: a quote in a path ("Bob's charts") is
 * doubled, so the path can neither end the string early nor smuggle a
 * command (system(...)) into the script. */
static void quoted(FILE *g, const char *text)
{
    fputc('\'', g);
    for (; *text; text++) {
        if (*text == '\'') fputc('\'', g);
        fputc(*text, g);
    }
    fputc('\'', g);
}

int lab_plot(const char *name, const char *data, const char *script)
{
    static int have = -1;
    if (!lab_opt.plot_dir) return 0;
    if (have < 0) {
        have = on_path("gnuplot");
        if (!have)
            fprintf(stderr, "lab: gnuplot not found on PATH, so no charts were drawn "
                            "(on Debian: apt-get install gnuplot-nox); the tables above have the figures\n");
    }
    if (!have) return 0;
    if (mkdir(lab_opt.plot_dir, 0777) != 0 && errno != EEXIST)
        lab_die("%s: cannot create: %s", lab_opt.plot_dir, strerror(errno));
    char dat[4096], png[4096];
    snprintf(dat, sizeof dat, "%s/%s.dat", lab_opt.plot_dir, name);
    snprintf(png, sizeof png, "%s/%s.png", lab_opt.plot_dir, name);
    FILE *f = fopen(dat, "w");
    if (!f) lab_die("%s: cannot create: %s", dat, strerror(errno));
    fputs(data, f);
    if (fclose(f) != 0) lab_die("%s: write failed", dat);
    fflush(NULL);
    FILE *g = popen("gnuplot", "w");
    if (!g) {
        fprintf(stderr, "lab: cannot run gnuplot: %s\n", strerror(errno));
        return -1;
    }
    fputs("set terminal pngcairo size 960,600 font 'sans,11'\nset output ", g);
    quoted(g, png);
    fputs("\ndat = ", g);
    quoted(g, dat);
    fputs("\n", g);
    fputs(script, g);
    int st = pclose(g);
    if (st != 0) {
        fprintf(stderr, "lab: gnuplot failed on %s (status %d)\n", name, st);
        return -1;
    }
    printf("  chart: %s\n", png);
    return 0;
}

const char *lab_plot_unwritable(const char *dir)
{
    struct stat st;
    if (!*dir) return "the folder name is empty";
    if (stat(dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) return strerror(ENOTDIR);
        return access(dir, W_OK | X_OK) == 0 ? NULL : strerror(errno);
    }
    if (errno != ENOENT) return strerror(errno);
    /* Made now, as the first chart would make it: only mkdir itself knows
     * (as root, access() says yes to /proc, where mkdir fails). */
    return mkdir(dir, 0777) == 0 ? NULL : strerror(errno);
}
