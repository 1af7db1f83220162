/* chunks: x*x over 100,000 items with chunk sizes 1 to 10,000, on threads
 * and processes, beside a serial loop.  Each chunk is one hand-out to a
 * worker, so chunk size 1 measures the per-task overhead and large chunks
 * approach the serial time; the chart shows both backends against it. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "lab.h"

typedef struct sq {
    const int64_t *x;
    int64_t *y;
} sq_t;

static void sq_range(void *ctx, size_t lo, size_t hi)
{
    sq_t *s = ctx;
    for (size_t i = lo; i < hi; i++) s->y[i] = s->x[i] * s->x[i];
}

/* Over MPI: no input (x[i] = i on every rank); a rank's own x and y. */
static void *sq_attach(const void *in, size_t n, void **results)
{
    (void)in;
    sq_t *s = malloc(sizeof *s);
    int64_t *x = malloc(n * sizeof *x), *y = calloc(n, sizeof *y);
    if (!s || !x || !y) {
        free(s), free(x), free(y);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) x[i] = (int64_t)i;
    *s = (sq_t){.x = x, .y = y};
    *results = y;
    return s;
}

static void sq_detach(void *ctx)
{
    sq_t *s = ctx;
    free((void *)s->x), free(s->y), free(s);
}

const lab_mpi_kind_t lab_mpi_chunks = {"chunks", sq_range, sq_attach, sq_detach, NULL};

int lab_chunks(void)
{
    static const size_t chunks[] = {1, 10, 100, 1000, 10000};
    enum { NCH = sizeof chunks / sizeof chunks[0] };
    size_t n = lab_scaled(100000, 1000);
    sq_t *s = lab_shared_alloc(sizeof *s);
    int64_t *x = lab_shared_alloc(n * sizeof *x), *y = lab_shared_alloc(n * sizeof *y);
    for (size_t i = 0; i < n; i++) x[i] = (int64_t)i;
    s->x = x;
    s->y = y;
    lab_header("chunks", "x*x over %zu items, chunk sizes 1 to 10,000, %u workers", n, lab_opt.workers);
    double serial = 0;
    uint64_t want = 0;
    lab_result_t best = {0};
    if (lab_want(LAB_SERIAL)) {
        memset(y, 0, n * sizeof *y);
        serial = lab_run(LAB_SERIAL, 1, sq_range, s, n, n, "chunks", NULL);
        want = lab_fnv(y, n * sizeof *y, 0);
        best.secs[LAB_SERIAL] = serial;
        best.sum[LAB_SERIAL] = want;
        best.ran[LAB_SERIAL] = true;
        printf("  serial loop: %.6f s\n", serial);
    }
    bool mpi = lab_want(LAB_MPI);
    printf("  %-10s %12s %12s%s %14s %14s%s\n", "chunksize", "threads s", "processes s", mpi ? "        mpi s" : "",
           "threads/serial", "procs/serial", mpi ? "     mpi/serial" : "");
    json_t *rows = json_array();
    char data[2048];
    size_t dl = 0;
    dl += (size_t)snprintf(data + dl, sizeof data - dl, "# chunksize threads processes serial\n");
    for (int c = 0; c < NCH; c++) {
        double t[LAB_NMODES] = {0};
        json_t *row = json_object();
        json_object_set_new(row, "chunksize", json_integer((json_int_t)chunks[c]));
        printf("  %-10zu", chunks[c]);
        for (lab_mode_t m = LAB_THREADS; m < LAB_NMODES; m++) {
            if (!lab_want(m)) {
                if (m != LAB_MPI) printf(" %12s", "-");
                continue;
            }
            memset(y, 0, n * sizeof *y);
            /* map, no bar */
            t[m] = m == LAB_MPI ? lab_mpi_run(&lab_mpi_chunks, NULL, 0, n, chunks[c], y, n * sizeof *y, NULL)
                                : lab_run(m, lab_opt.workers, sq_range, s, n, chunks[c], NULL, NULL);
            uint64_t h = lab_fnv(y, n * sizeof *y, 0);
            if (want && h != want)
                lab_die("chunks: %s at chunk size %zu differs from %s", lab_mode_name[m], chunks[c],
                        serial > 0 ? "serial" : "the first run");
            want = h;
            if (!best.ran[m] || t[m] < best.secs[m]) best.secs[m] = t[m], best.sum[m] = h;
            best.ran[m] = true;
            printf(" %12.6f", t[m]);
            json_object_set_new(row, lab_mode_name[m], json_real(t[m]));
        }
        for (lab_mode_t m = LAB_THREADS; m < LAB_NMODES; m++) {
            if (m == LAB_MPI && !mpi) continue;
            if (t[m] > 0 && serial > 0) printf(" %13.2fx", t[m] / serial);
            else printf(" %14s", "-");
        }
        printf("\n");
        json_array_append_new(rows, row);
        dl += (size_t)snprintf(data + dl, sizeof data - dl, "%zu %.9f %.9f %.9f\n", chunks[c],
                               t[LAB_THREADS] > 0 ? t[LAB_THREADS] : NAN,
                               t[LAB_PROCESSES] > 0 ? t[LAB_PROCESSES] : NAN, serial > 0 ? serial : NAN);
    }
    printf("  each mode's best chunk size against serial:\n");
    json_t *fig = lab_report("chunks", &best, LAB_BOUND_OVERHEAD, 0, NULL);
    json_object_set_new(fig, "sweep", rows);
    json_object_set_new(fig, "serial", json_real(serial));
    lab_plot("chunks", data,
             "set title 'x*x over 100,000 items: time against chunk size'\n"
             "set logscale xy\nset format y '%g'\nset xlabel 'chunk size (items per task)'\nset ylabel 'seconds'\n"
             "set grid\nset key top right\nset xrange [0.7:15000]\n"
             "plot dat using 1:2 with linespoints lw 2 pt 7 title 'threads', "
             "dat using 1:3 with linespoints lw 2 pt 5 title 'processes', "
             "dat using 1:4 with lines lw 2 dt 2 title 'serial loop'\n");
    lab_shared_free(x, n * sizeof *x);
    lab_shared_free(y, n * sizeof *y);
    lab_shared_free(s, sizeof *s);
    return 0;
}
