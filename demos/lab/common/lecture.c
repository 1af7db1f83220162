/* The lecture's small Pool examples, each through the executor calls that
 * stand for the Pool calls, timed, and checked to compute the same thing.
 *
 * pairs: f(x, y) = (x + y) ** 2 over 1,000,000 pairs (x, y) = (i, i + 1):
 * starmap and starmap_async on each backend, the serial loop of calls, and
 * one vectorised loop over two arrays (numpy's `(x + y) ** 2`).  The point
 * is the per-item overhead: each item is a tiny function call, so handing
 * items to workers costs more than the work, and the vectorised loop wins.
 *
 * files: the lecture's create_and_save_file(i), which writes file_i.txt
 * (200 files of 100 lines),
 * through apply (one blocking call a file), apply_async (submit every file,
 * then wait for all), map, map_async and starmap ((i, lines) tuples).  Each
 * variant writes its files into a fresh folder under $TMPDIR, which the lab
 * checks (count and size) and removes. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "async/executor.h"
#include "lab.h"

/* --- pairs ---------------------------------------------------------------- */

typedef struct pair {
    int64_t x, y;
} pair_t;

__attribute__((noinline)) static int64_t f(int64_t x, int64_t y)
{
    return (x + y) * (x + y);
}

static int pair_fn(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out_size, (void)ctx;
    pair_t p;
    memcpy(&p, in, sizeof p);
    int64_t r = f(p.x, p.y);
    memcpy(out, &r, sizeof r);
    return 0;
}
LAB_MPI_WORK(pair_fn);

/* The mode's executor: a fresh pool, or the run's one MPI executor, which
 * stays up (pool_free leaves it to lab_mpi_end). */
static async_executor_t *pool(lab_mode_t m, double *start)
{
    if (m == LAB_MPI) return lab_mpi_executor(start);
    async_executor_opts_t o = {.backend = m == LAB_THREADS ? ASYNC_BACKEND_THREADS : ASYNC_BACKEND_PROCESSES,
                               .workers = lab_opt.workers};
    async_executor_t *ex;
    double t0 = lab_now();
    int rc = async_executor_new(&ex, &o);
    if (rc != 0) lab_die("cannot start a %s pool: %s", lab_mode_name[m], async_strerror(rc));
    *start = lab_now() - t0;
    return ex;
}

static void pool_free(lab_mode_t m, async_executor_t *ex)
{
    if (m != LAB_MPI) async_executor_free(ex);
}

/* "threads processes[ mpi]": the column heads of the modes' tables. */
static void mode_heads(void)
{
    printf(" %10s %10s", "threads", "processes");
    if (lab_want(LAB_MPI)) printf(" %10s", "mpi");
}

/* One cell per column of mode_heads. */
static void mode_cells(const double *t)
{
    for (lab_mode_t m = LAB_THREADS; m < LAB_NMODES; m++) {
        if (m == LAB_MPI && !lab_want(m)) continue;
        lab_want(m) ? printf(" %10.4f", t[m]) : printf(" %10s", "-");
    }
}

static void wait_ok(async_future_t *f, const char *what)
{
    int rc = async_future_wait(f);
    if (rc != 0) lab_die("%s: %s: %s", what, async_strerror(rc), async_future_message(f));
    async_future_unref(f);
}

int lab_pairs(void)
{
    size_t n = lab_scaled(1000000, 1000);
    pair_t *in = malloc(n * sizeof *in);
    int64_t *xs = malloc(n * sizeof *xs), *ys = malloc(n * sizeof *ys), *want = malloc(n * sizeof *want),
            *out = malloc(n * sizeof *out);
    if (!in || !xs || !ys || !want || !out) lab_die("out of memory");
    for (size_t i = 0; i < n; i++) in[i] = (pair_t){(int64_t)i, (int64_t)i + 1}, xs[i] = (int64_t)i, ys[i] = (int64_t)i + 1;
    lab_header("pairs", "the lecture's f(x, y) = (x + y) ** 2 over %zu pairs (i, i + 1): per-item overhead", n);
    json_t *fig = json_object();
    /* Touch the outputs first, so that no loop below pays the page faults. */
    memset(want, 0, n * sizeof *want);
    memset(out, 0, n * sizeof *out);
    /* Serial: one call per pair, as [f(x, y) for x, y in pairs]. */
    double t0 = lab_now();
    for (size_t i = 0; i < n; i++) want[i] = f(in[i].x, in[i].y);
    double serial = lab_now() - t0;
    /* Vectorised, as numpy's (x + y) ** 2 on two arrays: no call per item. */
    t0 = lab_now();
    for (size_t i = 0; i < n; i++) out[i] = (xs[i] + ys[i]) * (xs[i] + ys[i]);
    double vec = lab_now() - t0;
    if (memcmp(out, want, n * sizeof *out) != 0) lab_die("pairs: the vectorised loop computed something else");
    printf("  %-26s", "variant");
    mode_heads();
    printf("\n");
    double same[LAB_NMODES] = {0};
    for (lab_mode_t m = 0; m < LAB_NMODES; m++) same[m] = serial;
    printf("  %-26s", "serial loop of calls");
    mode_cells(same);
    printf("\n");
    for (lab_mode_t m = 0; m < LAB_NMODES; m++) same[m] = vec;
    printf("  %-26s", "vectorised loop");
    mode_cells(same);
    printf("\n");
    json_object_set_new(fig, "serial", json_real(serial));
    json_object_set_new(fig, "vectorised", json_real(vec));
    double t[3][LAB_NMODES] = {{0}};
    for (lab_mode_t m = LAB_THREADS; m < LAB_NMODES; m++) {
        if (!lab_want(m)) continue;
        async_executor_t *ex = pool(m, &t[0][m]);
        async_map_t mp = {.fn = pair_fn, .in = in, .in_size = sizeof *in, .out = out, .out_size = sizeof *out, .n = n};
        async_map_error_t err;
        memset(out, 0, n * sizeof *out);
        t0 = lab_now();
        int rc = async_executor_map(ex, &mp, &err);
        t[1][m] = lab_now() - t0;
        if (rc != 0) lab_die("pairs starmap: %s: %s", async_strerror(rc), err.message);
        if (memcmp(out, want, n * sizeof *out) != 0) lab_die("pairs: starmap on %s computed something else", lab_mode_name[m]);
        memset(out, 0, n * sizeof *out);
        async_future_t *fu;
        t0 = lab_now();
        if ((rc = async_executor_map_async(&fu, ex, &mp, NULL, NULL, NULL)) != 0)
            lab_die("pairs starmap_async: %s", async_strerror(rc));
        wait_ok(fu, "pairs starmap_async");
        t[2][m] = lab_now() - t0;
        if (memcmp(out, want, n * sizeof *out) != 0)
            lab_die("pairs: starmap_async on %s computed something else", lab_mode_name[m]);
        pool_free(m, ex);
        json_t *o = json_object();
        json_object_set_new(o, "start", json_real(t[0][m]));
        json_object_set_new(o, "starmap", json_real(t[1][m]));
        json_object_set_new(o, "starmap_async", json_real(t[2][m]));
        json_object_set_new(fig, lab_mode_name[m], o);
    }
    static const char *names[3] = {"pool start-up", "starmap", "starmap_async + get"};
    for (int k = 1; k < 3; k++) {
        printf("  %-26s", names[k]);
        mode_cells(t[k]);
        printf("\n");
    }
    printf("  %-26s", names[0]);
    mode_cells(t[0]);
    printf("  (not in the rows above)\n");
    char hex[17];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)lab_fnv(want, n * sizeof *want, 0));
    printf("  results: every variant agrees exactly; f(0, 1) = %lld, f(%zu, %zu) = %lld (hash %s)\n",
           (long long)want[0], n - 1, n, (long long)want[n - 1], hex);
    json_object_set_new(fig, "hash", json_string(hex));
    /* The verdict names the fastest variant from the measurements. */
    const char *best = "the vectorised loop";
    double bt = vec;
    if (serial < bt) best = "the serial loop", bt = serial;
    char what[64];
    for (lab_mode_t m = LAB_THREADS; m < LAB_NMODES; m++)
        for (int k = 1; k < 3; k++)
            if (lab_want(m) && t[k][m] < bt) {
                snprintf(what, sizeof what, "%s on %s", names[k], lab_mode_name[m]);
                best = what, bt = t[k][m];
            }
    printf("  verdict: %s is fastest (%.4f s). Each item is a few nanoseconds of arithmetic: the vectorised loop "
           "runs %.1fx the loop of calls, and a pool pays off only where its hand-over per chunk (%s) costs less "
           "than the chunk's work.\n",
           best, bt, vec > 0 ? serial / vec : 0,
           lab_want(LAB_PROCESSES) || lab_want(LAB_MPI) ? "copying the pairs to the workers and back"
                                                         : "a few microseconds");
    json_object_set_new(fig, "n", json_integer((json_int_t)n));
    json_object_set_new(fig, "last", json_integer(want[n - 1]));
    json_object_set_new(lab_figures, "pairs", fig);
    free(in), free(xs), free(ys), free(want), free(out);
    return 0;
}

/* --- files ---------------------------------------------------------------- */

#define FILE_LINES 100

/* The folder every variant writes into; set before a pool starts, so the
 * worker processes inherit it.  It is also every job's ctx: over MPI it is
 * replicated to the ranks (the path names the same folder on one host; on
 * many hosts it must be on a file system they share). */
static char folder[4096];

typedef struct file_args {
    int64_t i, lines;
} file_args_t;

/* The lecture's create_and_save_file(i): writes file_i.txt and returns the
 * bytes written (as the number of its output); -1 with the reason in why. */
static int create_and_save_file(const char *dir, int64_t i, int64_t lines, uint64_t *bytes, char *why, size_t cap)
{
    char name[4200], text[96];
    snprintf(name, sizeof name, "%s/file_%lld.txt", dir, (long long)i);
    FILE *fp = fopen(name, "w");
    /* Over MPI the rank says who failed: on many hosts a missing folder
     * means one that is not shared. */
    if (!fp) {
        snprintf(why, cap, "%s%s: %s", lab_rank_tag(), name, strerror(errno));
        return -1;
    }
    *bytes = 0;
    for (int64_t k = 0; k < lines; k++) {
        int len = snprintf(text, sizeof text, "This is line %lld of file %lld\n", (long long)k, (long long)i);
        if (fputs(text, fp) < 0) break;
        *bytes += (uint64_t)len;
    }
    /* fputs may have failed already (its error stays on the stream), or
     * only the last flush, in fclose; either way say why (EFBIG past
     * ulimit -f, ENOSPC), as Python's OSError would. */
    int e = ferror(fp) ? (errno ? errno : EIO) : 0;
    if (fclose(fp) != 0 && !e) e = errno ? errno : EIO;
    if (e) {
        snprintf(why, cap, "%s%s: write failed: %s", lab_rank_tag(), name, strerror(e));
        return -1;
    }
    return 0;
}

/* A work function's failure with create_and_save_file's reason. */
static int save_in_job(const char *dir, int64_t i, int64_t lines, uint64_t *bytes)
{
    char why[4400];
    if (create_and_save_file(dir, i, lines, bytes, why, sizeof why) == 0) return 0;
    return async_work_fail(ASYNC_EIO, "%s", why);
}

/* ctx: the folder (NUL-terminated). */
static int file_fn(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out_size;
    int64_t i;
    memcpy(&i, in, sizeof i);
    uint64_t b = 0;
    int rc = save_in_job(ctx, i, FILE_LINES, &b);
    memcpy(out, &b, sizeof b);
    return rc;
}
LAB_MPI_WORK(file_fn);

static int file_star_fn(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out_size;
    file_args_t a;
    memcpy(&a, in, sizeof a);
    uint64_t b = 0;
    int rc = save_in_job(ctx, a.i, a.lines, &b);
    memcpy(out, &b, sizeof b);
    return rc;
}
LAB_MPI_WORK(file_star_fn);

/* The folder's maker: a worker forked from it exits through exit() too. */
static pid_t folder_owner;

/* At exit, quietly: the folder and what the run left in it. */
static void drop_folder(void)
{
    if (!folder[0] || getpid() != folder_owner) return;
    DIR *d = opendir(folder);
    for (struct dirent *e; d && (e = readdir(d));) {
        char name[4400];
        if (e->d_name[0] == '.') continue;
        snprintf(name, sizeof name, "%s/%s", folder, e->d_name);
        unlink(name);
    }
    if (d) closedir(d);
    rmdir(folder);
}

/* Counts the files of the folder and their bytes, then empties it. */
static size_t sweep(uint64_t *bytes)
{
    DIR *d = opendir(folder);
    if (!d) lab_die("%s: %s", folder, strerror(errno));
    size_t n = 0;
    *bytes = 0;
    struct dirent *e;
    char name[4400];
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        snprintf(name, sizeof name, "%s/%s", folder, e->d_name);
        struct stat st;
        if (stat(name, &st) == 0) *bytes += (uint64_t)st.st_size;
        unlink(name);
        n++;
    }
    closedir(d);
    return n;
}

enum { V_APPLY, V_APPLY_ASYNC, V_MAP, V_MAP_ASYNC, V_STARMAP, NVAR };
static const char *const var_name[NVAR] = {"apply", "apply_async", "map", "map_async", "starmap"};

/* One variant on ex; returns its seconds. */
static double files_variant(async_executor_t *ex, int v, size_t n, const int64_t *idx, const file_args_t *args,
                            uint64_t *out)
{
    async_map_error_t err;
    double t0 = lab_now();
    int rc = 0;
    if (v == V_APPLY) {
        for (size_t i = 0; i < n && rc == 0; i++) {
            async_job_t job = {.fn = file_fn, .ctx = folder, .in = &idx[i], .in_size = sizeof idx[i],
                               .out_size = sizeof out[i]};
            char msg[ASYNC_FUTURE_MSG_MAX] = "";
            rc = async_executor_run(ex, &job, &out[i], NULL, msg, sizeof msg);
            if (rc != 0) lab_die("files apply: %s: %s", async_strerror(rc), msg);
        }
    } else if (v == V_APPLY_ASYNC) {
        async_job_t *jobs = malloc(n * sizeof *jobs);
        async_future_t **fs = malloc(n * sizeof *fs);
        if (!jobs || !fs) lab_die("out of memory");
        for (size_t i = 0; i < n; i++) {
            jobs[i] = (async_job_t){.fn = file_fn, .ctx = folder, .in = &idx[i], .in_size = sizeof idx[i],
                                    .out_size = sizeof out[i]};
            if ((rc = async_executor_submit(&fs[i], ex,
                                            &jobs[i])) != 0) lab_die("files apply_async: %s",
                                                                     async_strerror(rc));
        }
        for (size_t i = 0; i < n; i++) {
            const void *data;
            size_t size;
            if ((rc = async_future_wait(fs[i])) != 0 || (rc = async_future_result(fs[i], &data, &size)) != 0)
                lab_die("files apply_async: %s: %s", async_strerror(rc), async_future_message(fs[i]));
            memcpy(&out[i], data, sizeof out[i]);
            async_future_unref(fs[i]);
        }
        free(jobs);
        free(fs);
    } else {
        async_map_t m = {.fn = v == V_STARMAP ? file_star_fn : file_fn, .ctx = folder,
                         .in = v == V_STARMAP ? (const void *)args : (const void *)idx,
                         .in_size = v == V_STARMAP ? sizeof *args : sizeof *idx, .out = out, .out_size = sizeof *out, .n = n};
        if (v == V_MAP_ASYNC) {
            async_future_t *fu;
            if ((rc = async_executor_map_async(&fu, ex, &m, NULL, NULL, NULL)) != 0)
                lab_die("files map_async: %s", async_strerror(rc));
            wait_ok(fu, "files map_async");
        } else if ((rc = async_executor_map(ex, &m, &err)) != 0) {
            lab_die("files %s: %s: %s", var_name[v], async_strerror(rc), err.message);
        }
    }
    return lab_now() - t0;
}

int lab_files(void)
{
    size_t n = lab_scaled(200, 10);
    const char *tmp = getenv("TMPDIR");
    snprintf(folder, sizeof folder, "%s/lab-files-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(folder)) lab_die("%s: cannot create: %s", folder, strerror(errno));
    /* Every lab_die below (a write that failed, a variant that disagreed)
     * exits: the folder goes with the run, not left under $TMPDIR. */
    folder_owner = getpid();
    static bool registered;
    if (!registered) registered = atexit(drop_folder) == 0;
    int64_t *idx = malloc(n * sizeof *idx);
    file_args_t *args = malloc(n * sizeof *args);
    uint64_t *out = malloc(n * sizeof *out);
    if (!idx || !args || !out) lab_die("out of memory");
    for (size_t i = 0; i < n; i++) idx[i] = (int64_t)i, args[i] = (file_args_t){(int64_t)i, FILE_LINES};
    lab_header("files", "the lecture's create_and_save_file(i), %zu files of %d lines, in %s", n, FILE_LINES, folder);
    /* The serial loop, the reference for the bytes every variant writes. */
    uint64_t want = 0, got;
    double t0 = lab_now();
    for (size_t i = 0; i < n; i++) {
        uint64_t b;
        char why[4400];
        if (create_and_save_file(folder, (int64_t)i, FILE_LINES, &b, why, sizeof why) != 0) lab_die("files: %s", why);
        want += b;
    }
    double serial = lab_now() - t0;
    if (sweep(&got) != n || got != want) lab_die("files: the serial loop left the wrong files in %s", folder);
    printf("  %-12s", "call");
    mode_heads();
    printf("   (serial loop %.4f s)\n", serial);
    if (lab_want(LAB_MPI)) lab_mpi_replicate(folder, strlen(folder) + 1, "files");
    json_t *fig = json_object();
    json_object_set_new(fig, "serial", json_real(serial));
    double t[NVAR][LAB_NMODES] = {{0}}, start[LAB_NMODES] = {0};
    for (lab_mode_t m = LAB_THREADS; m < LAB_NMODES; m++) {
        if (!lab_want(m)) continue;
        async_executor_t *ex = pool(m, &start[m]);
        json_t *o = json_object();
        for (int v = 0; v < NVAR; v++) {
            memset(out, 0, n * sizeof *out);
            t[v][m] = files_variant(ex, v, n, idx, args, out);
            uint64_t sum = 0;
            for (size_t i = 0; i < n; i++) sum += out[i];
            size_t count = sweep(&got);
            if (count != n || got != want || sum != want)
                lab_die("files: %s on %s wrote %zu files of %llu bytes, not %zu of %llu", var_name[v],
                        lab_mode_name[m], count, (unsigned long long)got, n, (unsigned long long)want);
            json_object_set_new(o, var_name[v], json_real(t[v][m]));
        }
        json_object_set_new(o, "start", json_real(start[m]));
        json_object_set_new(fig, lab_mode_name[m], o);
        pool_free(m, ex);
    }
    for (int v = 0; v < NVAR; v++) {
        printf("  %-12s", var_name[v]);
        mode_cells(t[v]);
        printf("\n");
    }
    printf("  results: every call wrote the same %zu files, %llu bytes; pool start-up apart: threads %.2f ms, "
           "processes %.2f ms%s\n",
           n, (unsigned long long)want, 1e3 * start[LAB_THREADS], 1e3 * start[LAB_PROCESSES],
           lab_want(LAB_MPI) ? "; mpi: the run's executor, started once" : "");
    int bv = -1;
    lab_mode_t bm = LAB_THREADS;
    for (lab_mode_t m = LAB_THREADS; m < LAB_NMODES; m++)
        for (int v = 0; v < NVAR; v++)
            if (lab_want(m) && (bv < 0 || t[v][m] < t[bv][bm])) bv = v, bm = m;
    if (bv < 0 || t[bv][bm] >= serial)
        printf("  verdict: the serial loop wins (%.4f s): writing a small file is file-system work in the kernel, "
               "which the pool cannot split, so its workers only add the hand-over.\n",
               serial);
    else
        printf("  verdict: %s on %s is fastest (%.4f s, %.2fx the serial loop); apply sends one file at a time "
               "and waits for it, the others keep every worker busy.\n",
               var_name[bv], lab_mode_name[bm], t[bv][bm], serial / t[bv][bm]);
    json_object_set_new(fig, "files", json_integer((json_int_t)n));
    json_object_set_new(fig, "bytes", json_integer((json_int_t)want));
    json_object_set_new(lab_figures, "files", fig);
    if (rmdir(folder) != 0) fprintf(stderr, "lab: %s: cannot remove: %s\n", folder, strerror(errno));
    folder[0] = '\0';
    free(idx), free(args), free(out);
    return 0;
}
