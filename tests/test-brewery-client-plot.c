/* The brewery demo's --plot DIR (issue 12): a request timeline per mode drawn
 * with gnuplot, and a missing gnuplot, an unwritable DIR or a failing
 * gnuplot refused or reported. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "support/brewery.h"

TestSuite(brewery_client, .fini = cli_server_stop, .timeout = 30);

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* The PNG's signature and its IHDR width and height. */
static void check_png(const char *path, unsigned want_w, unsigned want_h)
{
    unsigned char h[24];
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s missing", path);
    size_t got = fread(h, 1, sizeof h, f);
    fclose(f);
    cr_assert_eq(got, sizeof h, "%s is too short", path);
    cr_assert(memcmp(h, "\x89PNG\r\n\x1a\n", 8) == 0 && memcmp(h + 12, "IHDR", 4) == 0,
              "%s is not a PNG", path);
    unsigned w = (unsigned)h[16] << 24 | h[17] << 16 | h[18] << 8 | h[19];
    unsigned hh = (unsigned)h[20] << 24 | h[21] << 16 | h[22] << 8 | h[23];
    cr_assert(w == want_w && hh == want_h, "%s is %ux%u", path, w, hh);
    cr_assert_gt(file_size(path), 1000, "%s has %ld bytes", path, file_size(path));
}

/* Bars in a timeline's data file (lines that are not comments or blank). */
static long bars(const char *path)
{
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s missing", path);
    char line[512];
    long n = 0;
    while (fgets(line, sizeof line, f))
        if (line[0] != '#' && line[0] != '\n') n++;
    fclose(f);
    return n;
}

/* Counts a PNG's bar-blue and failure-red pixels, decoding it with the
 * python3 standard library (zlib and the five PNG row filters). */
static const char png_counter[] =
    "import struct, sys, zlib\n"
    "def pixels(path):\n"
    "    data = open(path, 'rb').read()\n"
    "    assert data[:8] == b'\\x89PNG\\r\\n\\x1a\\n'\n"
    "    pos, idat = 8, b''\n"
    "    while pos < len(data):\n"
    "        n, kind = struct.unpack('>I4s', data[pos:pos + 8])\n"
    "        body = data[pos + 8:pos + 8 + n]\n"
    "        if kind == b'IHDR':\n"
    "            w, h, depth, ctype = struct.unpack('>IIBB', body[:10])\n"
    "        elif kind == b'IDAT':\n"
    "            idat += body\n"
    "        pos += 12 + n\n"
    "    assert depth == 8 and ctype in (2, 6), (depth, ctype)\n"
    "    bpp = 3 if ctype == 2 else 4\n"
    "    raw, stride, prev, out = zlib.decompress(idat), w * bpp, bytearray(w * bpp), []\n"
    "    for y in range(h):\n"
    "        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])\n"
    "        for i in range(stride):\n"
    "            a = line[i - bpp] if i >= bpp else 0\n"
    "            b, c = prev[i], prev[i - bpp] if i >= bpp else 0\n"
    "            if f == 1: line[i] = (line[i] + a) & 255\n"
    "            elif f == 2: line[i] = (line[i] + b) & 255\n"
    "            elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255\n"
    "            elif f == 4:\n"
    "                p = a + b - c; pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)\n"
    "                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255\n"
    "        out.append(bytes(line)); prev = line\n"
    "    return out, bpp\n"
    "rows, bpp = pixels(sys.argv[1])\n"
    "blue = red = 0\n"
    "for line in rows:\n"
    "    for i in range(0, len(line), bpp):\n"
    "        r, g, b = line[i], line[i + 1], line[i + 2]\n"
    "        if b > r + 60 and b > 150: blue += 1\n"
    "        elif r > g + 60 and r > b + 60: red += 1\n"
    "print(blue, red)\n"
;

static void png_colors(const char *png, long *blue, long *red)
{
    char py[] = "/tmp/test-brewery-png-XXXXXX";
    int fd = mkstemp(py);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, png_counter, sizeof png_counter - 1), (ssize_t)sizeof png_counter - 1);
    close(fd);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "python3 %s '%s'", py, png);
    FILE *f = popen(cmd, "r");
    cr_assert_not_null(f);
    int got = fscanf(f, "%ld %ld", blue, red);
    int st = pclose(f);
    unlink(py);
    cr_assert(got == 2 && st == 0, "python3 could not read %s", png);
}

static void tmpdir(char *dir)
{
    strcpy(dir, "/tmp/test-brewery-plot-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void rmtree(const char *dir)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

Test(brewery_client, plot_draws_a_timeline_per_mode, .timeout = 120)
{
    /* The first request fails: the chart must show a failed state too. */
    const char *flags[] = {"--latency", "20", "--fail-first", "1", NULL};
    cli_server_start(flags);
    char dir[64], sub[96], args[512];
    tmpdir(dir);
    snprintf(sub, sizeof sub, "%s/charts", dir); /* made by the demo */
    snprintf(args, sizeof args,
             "--mode serial,threads,processes,async,meta --retries 0 --plot %s "
             "--base-url http://127.0.0.1:%u/v1",
             sub, cli_server.port);
    json_t *j;
    cr_assert_eq(cli_demo(args, &j), 1, "one state failed");
    const char *modes[] = {"serial", "threads", "processes", "async", "meta"};
    for (int m = 0; m < 5; m++) {
        char png[160], dat[160];
        snprintf(png, sizeof png, "%s/timeline-%s.png", sub, modes[m]);
        snprintf(dat, sizeof dat, "%s/timeline-%s.dat", sub, modes[m]);
        check_png(png, 1000, 260);
        /* One bar per request the mode made (no retries here). */
        long reqs = (long)json_integer_value(json_object_get(cli_mode(j, modes[m]), "requests"));
        cr_assert_gt(reqs, 0);
        cr_assert_eq(bars(dat), reqs, "%s: %ld bars, %ld requests", modes[m], bars(dat), reqs);
        /* Drawn: a bar of 20 ms or more at this scale covers hundreds of
         * pixels; the serial run's first request failed and is red. */
        long blue, red;
        png_colors(png, &blue, &red);
        bool failed = m == 0;
        cr_assert_geq(blue, 300 * (reqs - failed), "%s: %ld blue pixels", modes[m], blue);
        if (failed) cr_assert_geq(red, 300, "%s: %ld red pixels", modes[m], red);
        else cr_assert_eq(red, 0, "%s: %ld red pixels", modes[m], red);
    }
    json_decref(j);
    rmtree(dir);
}

/* A --plot that cannot work fails before any request, with exit status 2. */
static void plot_refused(const char *plot_dir, const char *want)
{
    cli_fake_t f = {.mode = FAKE_SLOW_LATER, .fast = 1000};
    cli_fake_start(&f);
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%u/v1", f.port);
    const char *args[] = {"--mode", "serial", "--base-url", base, "--json", "/dev/null",
                          "--plot", plot_dir, NULL};
    char err[1024];
    int st = cli_demo_argv(args, err, sizeof err);
    cli_fake_stop(&f);
    cr_assert_eq(st, 2, "--plot %s: exit %d: %s", plot_dir, st, err);
    cr_assert(strstr(err, want), "--plot %s said: %s", plot_dir, err);
    cr_assert_eq(f.requests, 0, "--plot %s: requests were made", plot_dir);
}

Test(brewery_client, plot_without_gnuplot_is_refused)
{
    char dir[64], sub[96];
    tmpdir(dir);
    snprintf(sub, sizeof sub, "%s/charts", dir);
    char *env[] = {"PATH=/nonexistent", NULL};
    cli_demo_env = env;
    plot_refused(sub, "--plot needs gnuplot, which is not on PATH");
    cli_demo_env = NULL;
    cr_assert_neq(access(sub, F_OK), 0, "a refused --plot made its directory");
    rmtree(dir);
}

Test(brewery_client, plot_dir_not_writable_is_refused)
{
    char dir[64], file[96], under[128];
    tmpdir(dir);
    snprintf(file, sizeof file, "%s/a-file", dir);
    FILE *f = fopen(file, "w");
    cr_assert_not_null(f);
    fclose(f);
    plot_refused(file, "cannot write there: Not a directory");
    snprintf(under, sizeof under, "%s/sub", file);
    plot_refused(under, "cannot create the directory: Not a directory");
    if (geteuid() != 0) {
        /* root writes anywhere; everyone else is kept out by the mode. */
        char ro[96];
        snprintf(ro, sizeof ro, "%s/read-only", dir);
        cr_assert_eq(mkdir(ro, 0500), 0);
        plot_refused(ro, "cannot write there: Permission denied");
    }
    rmtree(dir);
}

Test(brewery_client, plot_gnuplot_failure_is_reported)
{
    /* A gnuplot that fails: the counts are still written, the exit status
     * is 1, the message names the script, and no PNG is left behind. */
    char dir[64], bin[96], fake[128], path_env[160], out[96];
    tmpdir(dir);
    snprintf(bin, sizeof bin, "%s/bin", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    cr_assert_eq(mkdir(bin, 0755), 0);
    snprintf(fake, sizeof fake, "%s/gnuplot", bin);
    FILE *f = fopen(fake, "w");
    cr_assert_not_null(f);
    fputs("#!/bin/sh\n: > timeline-serial.png\necho 'gnuplot: broken' >&2\nexit 3\n", f);
    fclose(f);
    cr_assert_eq(chmod(fake, 0755), 0);
    snprintf(path_env, sizeof path_env, "PATH=%s:/usr/bin:/bin", bin);
    char *env[] = {path_env, NULL};
    cli_fake_t fk = {.mode = FAKE_SLOW_LATER, .fast = 1000};
    cli_fake_start(&fk);
    char base[64], json[128];
    snprintf(base, sizeof base, "http://127.0.0.1:%u/v1", fk.port);
    snprintf(json, sizeof json, "%s/async.json", dir);
    const char *args[] = {"--mode", "serial", "--states", "maryland", "--base-url", base,
                          "--json", json, "--plot", out, NULL};
    char err[2048];
    cli_demo_env = env;
    int st = cli_demo_argv(args, err, sizeof err);
    cli_demo_env = NULL;
    cli_fake_stop(&fk);
    cr_assert_eq(st, 1, "exit %d: %s", st, err);
    cr_assert(strstr(err, "brewery: --plot: gnuplot failed on") &&
                  strstr(err, "timeline-serial.gp (exit 3)"),
              "%s", err);
    char png[160];
    snprintf(png, sizeof png, "%s/timeline-serial.png", out);
    cr_assert_neq(access(png, F_OK), 0, "a broken PNG was left behind");
    json_error_t e;
    json_t *j = json_load_file(json, 0, &e);
    cr_assert_not_null(j, "no JSON: %s", e.text);
    cr_assert_eq(cli_count(j, "serial", "maryland"), 0);
    json_decref(j);
    rmtree(dir);
}
