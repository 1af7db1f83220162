/* howmany: the lab's howmany_within_range over rows of ints, counting per row
 * the values in [4, 8].  Default data, the notebook's:
 * np.random.RandomState(100).randint(0, 10, size=[1000000, 5]) (--seed
 * replaces 100; --scale, the row count); --input reads the rows from CSV (integers, every row
 * as long as the first) and --output writes one count per line. */
#include <stdlib.h>
#include <string.h>
#include "async/executor.h"
#include "lab.h"

typedef struct hm {
    const int32_t *v;
    size_t ncols;
    int32_t lo, hi;
    uint32_t *count;
} hm_t;

/* The lab's function, one row. */
static uint32_t howmany_within_range(const int32_t *row, size_t n, int32_t lo, int32_t hi)
{
    uint32_t c = 0;
    for (size_t i = 0; i < n; i++) c += row[i] >= lo && row[i] <= hi;
    return c;
}

static void hm_range(void *ctx, size_t lo, size_t hi)
{
    hm_t *h = ctx;
    for (size_t r = lo; r < hi; r++) h->count[r] = howmany_within_range(h->v + r * h->ncols, h->ncols, h->lo, h->hi);
}

/* Over MPI: the input is a header and the rows; a rank's own counts. */
typedef struct hm_in {
    uint64_t ncols;
    int32_t lo, hi;
    int32_t v[];
} hm_in_t;

static void *hm_attach(const void *in, size_t n, void **results)
{
    const hm_in_t *a = in;
    hm_t *h = malloc(sizeof *h);
    if (h) *h = (hm_t){.v = a->v, .ncols = a->ncols, .lo = a->lo, .hi = a->hi, .count = calloc(n, sizeof *h->count)};
    if (h && !h->count) {
        free(h);
        return NULL;
    }
    if (h) *results = h->count;
    return h;
}

static void hm_detach(void *ctx)
{
    hm_t *h = ctx;
    free(h->count);
    free(h);
}

const lab_mpi_kind_t lab_mpi_howmany = {"howmany", hm_range, hm_attach, hm_detach, NULL};

/* --- the notebook's three parallel variants, on the executor's own map API:
 * the rows (or argument tuples) are the items, copied to the workers as
 * bytes, as Pool pickles them. */

/* pool.map(howmany_within_range_rowonly, data): a row per item. */
static int hm_map_fn(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)out_size, (void)ctx;
    uint32_t c = howmany_within_range(in, in_size / sizeof(int32_t), 4, 8);
    memcpy(out, &c, sizeof c);
    return 0;
}
LAB_MPI_WORK(hm_map_fn);

/* pool.starmap(howmany_within_range, [(row, 4, 8) for row in data]). */
typedef struct star {
    int32_t lo, hi;
    int32_t row[]; /* the row follows */
} star_t;

static int hm_star_fn(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)out_size, (void)ctx;
    const star_t *a = in;
    uint32_t c = howmany_within_range(a->row, (in_size - sizeof *a) / sizeof(int32_t), a->lo, a->hi);
    memcpy(out, &c, sizeof c);
    return 0;
}
LAB_MPI_WORK(hm_star_fn);

/* pool.starmap_async(howmany_within_range2, [(i, row, 4, 8) ...]): the
 * function hands back (i, count) and the notebook re-sorts by i. */
typedef struct istar {
    uint64_t index;
    int32_t lo, hi;
    int32_t row[];
} istar_t;
typedef struct ires {
    uint64_t index;
    uint32_t count;
} ires_t;

static int hm_istar_fn(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)out_size, (void)ctx, (void)in_size;
    const istar_t *a = in;
    const size_t *ncols = ctx;
    ires_t r = {a->index, howmany_within_range(a->row, *ncols, a->lo, a->hi)};
    memcpy(out, &r, sizeof r);
    return 0;
}
LAB_MPI_WORK(hm_istar_fn);

/* Times the three variants on each parallel backend asked for, checks each
 * against the table's counts, and adds their figures to fig. */
static void variants(const int32_t *v, size_t nrows, size_t ncols, const uint32_t *want, json_t *fig)
{
    static size_t cols;
    cols = ncols; /* read by hm_istar_fn; set before any pool forks */
    size_t row_b = ncols * sizeof(int32_t), star_b = sizeof(star_t) + row_b;
    size_t istar_b = (sizeof(istar_t) + row_b + 7) & ~(size_t)7; /* keeps index aligned */
    char *star = malloc(nrows * star_b), *istar = malloc(nrows * istar_b);
    uint32_t *out = malloc(nrows * sizeof *out);
    ires_t *iout = malloc(nrows * sizeof *iout);
    if (!star || !istar || !out || !iout) lab_die("out of memory");
    for (size_t r = 0; r < nrows; r++) {
        star_t *a = (star_t *)(star + r * star_b);
        a->lo = 4, a->hi = 8;
        memcpy(a->row, v + r * ncols, row_b);
        istar_t *b = (istar_t *)(istar + r * istar_b);
        b->index = r, b->lo = 4, b->hi = 8;
        memcpy(b->row, v + r * ncols, row_b);
    }
    printf("  the notebook's parallel variants (pool of %u; start-up timed apart):\n", lab_opt.workers);
    bool mpi = lab_want(LAB_MPI);
    printf("  %-34s %10s %10s%s\n", "variant", "threads", "processes", mpi ? "        mpi" : "");
    /* Over MPI, hm_istar_fn's ctx is the column count replicated to every rank. */
    if (mpi) lab_mpi_replicate(&cols, sizeof cols, "howmany");
    static const char *names[4] = {"pool start-up", "map(rows)", "starmap((row, 4, 8))",
                                   "starmap_async((i, row, 4, 8)) + sort"};
    double t[4][LAB_NMODES] = {{0}};
    json_t *all = json_object();
    for (lab_mode_t m = LAB_THREADS; m < LAB_NMODES; m++) {
        if (!lab_want(m)) continue;
        async_executor_opts_t o = {.backend = m == LAB_THREADS ? ASYNC_BACKEND_THREADS : ASYNC_BACKEND_PROCESSES,
                                   .workers = lab_opt.workers};
        async_executor_t *ex;
        double t0 = lab_now();
        int rc = 0;
        if (m == LAB_MPI) ex = lab_mpi_executor(NULL); /* the run's one, up since the table above */
        else rc = async_executor_new(&ex, &o);
        if (rc != 0) lab_die("cannot start a %s pool: %s", lab_mode_name[m], async_strerror(rc));
        t[0][m] = lab_now() - t0;
        async_map_error_t err;
        async_map_t mp = {.fn = hm_map_fn, .in = v, .in_size = row_b, .out = out, .out_size = sizeof *out,
                          .n = nrows};
        t0 = lab_now();
        if ((rc = async_executor_map(ex, &mp, &err)) != 0) lab_die("howmany map: %s: %s", async_strerror(rc), err.message);
        t[1][m] = lab_now() - t0;
        if (memcmp(out, want, nrows * sizeof *out) != 0) lab_die("howmany: map on %s counted differently", lab_mode_name[m]);
        memset(out, 0, nrows * sizeof *out);
        async_map_t sm = {.fn = hm_star_fn, .in = star, .in_size = star_b, .out = out, .out_size = sizeof *out,
                          .n = nrows};
        t0 = lab_now();
        if ((rc = async_executor_map(ex, &sm, &err)) != 0)
            lab_die("howmany starmap: %s: %s", async_strerror(rc), err.message);
        t[2][m] = lab_now() - t0;
        if (memcmp(out, want, nrows * sizeof *out) != 0)
            lab_die("howmany: starmap on %s counted differently", lab_mode_name[m]);
        memset(out, 0, nrows * sizeof *out);
        async_map_t am = {.fn = hm_istar_fn, .ctx = &cols, .in = istar, .in_size = istar_b, .out = iout,
                          .out_size = sizeof *iout, .n = nrows};
        async_future_t *f;
        t0 = lab_now();
        if ((rc = async_executor_map_async(&f, ex, &am, NULL, NULL, NULL)) != 0)
            lab_die("howmany starmap_async: %s", async_strerror(rc));
        if ((rc = async_future_wait(f)) != 0)
            lab_die("howmany starmap_async: %s: %s", async_strerror(rc), async_future_message(f));
        /* The notebook's results.sort(key=lambda x: x[0]): the indices are
         * a permutation of 0..n-1, so each result goes to its place, in
         * O(n) as timsort handles input that is already one run. */
        for (size_t r = 0; r < nrows; r++) {
            if (iout[r].index >= nrows) lab_die("howmany: starmap_async returned index %llu", (unsigned long long)iout[r].index);
            out[iout[r].index] = iout[r].count;
        }
        t[3][m] = lab_now() - t0;
        async_future_unref(f);
        if (memcmp(out, want, nrows * sizeof *out) != 0)
            lab_die("howmany: starmap_async on %s counted differently", lab_mode_name[m]);
        if (m != LAB_MPI) async_executor_free(ex);
        json_t *o2 = json_object();
        json_object_set_new(o2, "start", json_real(t[0][m]));
        json_object_set_new(o2, "map", json_real(t[1][m]));
        json_object_set_new(o2, "starmap", json_real(t[2][m]));
        json_object_set_new(o2, "starmap_async", json_real(t[3][m]));
        json_object_set_new(all, lab_mode_name[m], o2);
    }
    for (int k = 0; k < 4; k++) {
        printf("  %-34s", names[k]);
        for (lab_mode_t m = LAB_THREADS; m < LAB_NMODES; m++) {
            if (lab_want(m)) printf(" %10.4f", t[k][m]);
            else if (m != LAB_MPI) printf(" %10s", "-");
        }
        printf("\n");
    }
    printf("  (each variant copies the rows to the workers as Pool does; the table above shares them)\n");
    json_object_set_new(fig, "variants", all);
    free(star);
    free(istar);
    free(out);
    free(iout);
}

int lab_howmany(void)
{
    size_t nrows, ncols = 5;
    int32_t *v;
    if (lab_opt.input) {
        lab_rows_t rows;
        char err[512];
        if (lab_csv_read(lab_opt.input, LAB_CSV_INTS | LAB_CSV_SQUARE, &rows, err, sizeof err) != 0)
            lab_die("%s", err);
        nrows = rows.nrows;
        ncols = rows.off[1];
        v = lab_shared_alloc(nrows * ncols * sizeof *v);
        for (size_t i = 0; i < nrows * ncols; i++) {
            if (rows.v[i] < INT32_MIN || rows.v[i] > INT32_MAX) {
                lab_die("%s: line %zu, column %zu: %.0f does not fit in 32 bits", lab_opt.input,
                        i / ncols + 1, i % ncols + 1, rows.v[i]);
            }
            v[i] = (int32_t)rows.v[i];
        }
        lab_rows_free(&rows);
        lab_header("howmany", "%zu rows x %zu ints from %s, counting values in [4, 8]", nrows, ncols,
                   lab_opt.input);
    } else {
        nrows = lab_scaled(1000000, 10);
        v = lab_shared_alloc(nrows * ncols * sizeof *v);
        uint32_t seed = lab_opt.seed_set ? (uint32_t)lab_opt.seed : LAB_SEED_HOWMANY;
        lab_mt_t mt;
        lab_mt_seed(&mt, seed);
        for (size_t i = 0; i < nrows * ncols; i++) v[i] = (int32_t)lab_mt_randint(&mt, 0, 10);
        lab_header("howmany",
                   "%zu rows x 5 ints, RandomState(%u).randint(0, 10, size=[%zu, 5]), counting values in [4, 8]",
                   nrows, seed, nrows);
    }
    hm_t *h = lab_shared_alloc(sizeof *h);
    *h = (hm_t){.v = v, .ncols = ncols, .lo = 4, .hi = 8};
    size_t out_size = nrows * sizeof *h->count;
    h->count = lab_shared_alloc(out_size);
    /* Pool.map's default chunk size: ceil(n / (4 x workers)). */
    size_t chunk = (nrows + 4 * lab_opt.workers - 1) / (4 * lab_opt.workers);
    lab_result_t r = {0};
    hm_in_t *in = NULL;
    size_t in_size = sizeof *in + nrows * ncols * sizeof *v;
    if (lab_want(LAB_MPI)) {
        if (!(in = malloc(in_size))) lab_die("out of memory");
        *in = (hm_in_t){.ncols = ncols, .lo = h->lo, .hi = h->hi};
        memcpy(in->v, v, nrows * ncols * sizeof *v);
    }
    lab_modes_mpi(&r, hm_range, h, nrows, chunk, "howmany", h->count, out_size, &lab_mpi_howmany, in, in_size);
    free(in);

    uint64_t total = 0;
    for (size_t i = 0; i < nrows; i++) total += h->count[i];
    printf("  first 10 counts: [");
    for (size_t i = 0; i < nrows && i < 10; i++) printf("%s%u", i ? ", " : "", h->count[i]);
    printf("]  total: %llu\n", (unsigned long long)total);
    json_t *fig = lab_report("howmany", &r, LAB_BOUND_MEMORY, (double)nrows, "rows/s");
    json_t *first = json_array();
    for (size_t i = 0; i < nrows && i < 10; i++) json_array_append_new(first, json_integer(h->count[i]));
    json_object_set_new(fig, "first10", first);
    json_object_set_new(fig, "total", json_integer((json_int_t)total));
    json_object_set_new(fig, "rows", json_integer((json_int_t)nrows));
    json_object_set_new(fig, "chunksize", json_integer((json_int_t)chunk));
    variants(v, nrows, ncols, h->count, fig);
    if (lab_opt.output) {
        demo_out_t out;
        FILE *f = lab_csv_create(&out, lab_opt.output);
        for (size_t i = 0; i < nrows; i++) fprintf(f, "%u\n", h->count[i]);
        lab_csv_finish(&out, lab_opt.output);
        printf("  wrote %zu counts to %s\n", nrows, lab_opt.output);
    }
    lab_shared_free(h->count, out_size);
    lab_shared_free(h, sizeof *h);
    lab_shared_free(v, nrows * ncols * sizeof *v);
    return 0;
}
