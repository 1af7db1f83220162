/* normalize: min-max normalisation of every row to [0, 1]; a row whose
 * values are all equal becomes zeros (the lab's rule, instead of 0/0).  The
 * lab's sizes run from Small 100x50 to XXL 100,000x100 (rows scaled), and
 * the lab's summary table shows serial, parallel and the speedup per size.
 * --input normalises the user's rows (a rectangular CSV of numbers) and
 * --output writes them back.
 *
 * The data are the notebook's: np.random.seed(42), then
 * randint(0, 1000, size=(rows, cols)) for Small, Medium, Large, XL and XXL
 * in that order from the one stream (--seed replaces 42).  prob3, Python's
 * str() of the first 5 normalised XXL rows, always comes from the full-size
 * stream, so --quick still writes the notebook's answer. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "lab.h"

json_t *lab_prob3;

typedef struct norm {
    const double *v;
    double *out;
    size_t ncols;
} norm_t;

/* The lab's function, one row. */
static void normalize_row(const double *x, double *out, size_t n)
{
    double lo = x[0], hi = x[0];
    for (size_t i = 1; i < n; i++) {
        if (x[i] < lo) lo = x[i];
        if (x[i] > hi) hi = x[i];
    }
    double span = hi - lo;
    for (size_t i = 0; i < n; i++) out[i] = span > 0 ? (x[i] - lo) / span : 0.0;
}

static void norm_range(void *ctx, size_t lo, size_t hi)
{
    norm_t *nm = ctx;
    for (size_t r = lo; r < hi; r++) normalize_row(nm->v + r * nm->ncols, nm->out + r * nm->ncols, nm->ncols);
}

static const struct size {
    const char *name;
    size_t rows, cols;
} sizes[] = {{"Small", 100, 50}, {"Medium", 1000, 50}, {"Large", 10000, 50}, {"XL", 50000, 100}, {"XXL", 100000, 100}};

/* Over MPI: the input is the column count and the rows; a rank's own
 * output rows. */
typedef struct norm_in {
    uint64_t ncols;
    double v[];
} norm_in_t;

static void *norm_attach(const void *in, size_t n, void **results)
{
    const norm_in_t *a = in;
    norm_t *nm = malloc(sizeof *nm);
    if (nm) *nm = (norm_t){.v = a->v, .ncols = a->ncols, .out = calloc(n * a->ncols, sizeof *nm->out)};
    if (nm && !nm->out) {
        free(nm);
        return NULL;
    }
    if (nm) *results = nm->out;
    return nm;
}

static void norm_detach(void *ctx)
{
    norm_t *nm = ctx;
    free(nm->out);
    free(nm);
}

const lab_mpi_kind_t lab_mpi_normalize = {"normalize", norm_range, norm_attach, norm_detach, NULL};

/* Normalises nrows x ncols values (already in v) in every mode; returns the
 * result in r and leaves the last mode's output in nm->out. */
static void run_all(norm_t *nm, size_t nrows, const char *label, lab_result_t *r)
{
    size_t chunk = (nrows + 4 * lab_opt.workers - 1) / (4 * lab_opt.workers);
    size_t values = nrows * nm->ncols, in_size = sizeof(norm_in_t) + values * sizeof(double);
    norm_in_t *in = NULL;
    if (lab_want(LAB_MPI)) {
        if (!(in = malloc(in_size))) lab_die("out of memory");
        in->ncols = nm->ncols;
        memcpy(in->v, nm->v, values * sizeof(double));
    }
    lab_modes_mpi(r, norm_range, nm, nrows, chunk, label, nm->out, values * sizeof *nm->out, &lab_mpi_normalize, in,
                  in_size);
    free(in);
}

#define NSIZES (sizeof sizes / sizeof sizes[0])
#define PROB3_ROWS 5

static uint32_t norm_seed(void)
{
    return lab_opt.seed_set ? (uint32_t)lab_opt.seed : LAB_SEED_NORMALIZE;
}

/* randint(0, 1000, size=n) as doubles. */
static void draw(lab_mt_t *mt, double *v, size_t n)
{
    for (size_t i = 0; i < n; i++) v[i] = (double)lab_mt_randint(mt, 0, 1000);
}

void lab_norm_first_rows(size_t nrows, double *out)
{
    lab_mt_t mt;
    lab_mt_seed(&mt, norm_seed());
    for (size_t k = 0; k + 1 < NSIZES; k++)
        for (size_t i = 0; i < sizes[k].rows * sizes[k].cols; i++) lab_mt_randint(&mt, 0, 1000);
    size_t ncols = sizes[NSIZES - 1].cols;
    double *v = malloc(nrows * ncols * sizeof *v);
    if (!v) lab_die("out of memory");
    draw(&mt, v, nrows * ncols);
    for (size_t r = 0; r < nrows; r++) normalize_row(v + r * ncols, out + r * ncols, ncols);
    free(v);
}

static void prob3(void)
{
    size_t ncols = sizes[NSIZES - 1].cols, off[PROB3_ROWS + 1];
    double out[PROB3_ROWS * 100];
    lab_norm_first_rows(PROB3_ROWS, out);
    for (size_t r = 0; r <= PROB3_ROWS; r++) off[r] = r * ncols;
    lab_str_t s = {0};
    lab_py_rows(&s, out, off, PROB3_ROWS, false);
    json_decref(lab_prob3);
    lab_prob3 = json_string(s.s);
    free(s.s);
}

int lab_normalize(void)
{
    prob3();
    norm_t *nm = lab_shared_alloc(sizeof *nm);
    if (lab_opt.input) {
        lab_rows_t rows;
        char err[512];
        if (lab_csv_read(lab_opt.input, LAB_CSV_SQUARE, &rows, err, sizeof err) != 0) lab_die("%s", err);
        size_t nrows = rows.nrows, ncols = rows.off[1], bytes = nrows * ncols * sizeof(double);
        /* max - min of finite values can still overflow (1e308, -1e308),
         * and the row would come out as NaN: refuse it, naming the row. */
        for (size_t r = 0; r < nrows; r++) {
            const double *x = rows.v + rows.off[r];
            double lo = x[0], hi = x[0];
            for (size_t c = 1; c < ncols; c++) {
                if (x[c] < lo) lo = x[c];
                if (x[c] > hi) hi = x[c];
            }
            if (!isfinite(hi - lo))
                lab_die("%s: line %zu: the row runs from %g to %g, a span too large for a double, so it cannot "
                        "be normalised",
                        lab_opt.input, rows.line[r], lo, hi);
        }
        double *v = lab_shared_alloc(bytes);
        memcpy(v, rows.v, bytes);
        lab_rows_free(&rows);
        *nm = (norm_t){.v = v, .out = lab_shared_alloc(bytes), .ncols = ncols};
        lab_header("normalize", "min-max normalisation of %zu rows x %zu from %s", nrows, ncols, lab_opt.input);
        lab_result_t r = {0};
        run_all(nm, nrows, "normalize", &r);
        for (size_t i = 0; i < nrows && i < 4; i++) {
            printf("  row %zu: [", i + 1);
            for (size_t c = 0; c < ncols && c < 8; c++) printf("%s%.6g", c ? ", " : "", nm->out[i * ncols + c]);
            printf("%s]\n", ncols > 8 ? ", ..." : "");
        }
        json_t *fig = lab_report("normalize", &r, LAB_BOUND_MEMORY, (double)nrows, "rows/s");
        json_object_set_new(fig, "rows", json_integer((json_int_t)nrows));
        if (lab_opt.output) {
            demo_out_t out;
        FILE *f = lab_csv_create(&out, lab_opt.output);
            for (size_t i = 0; i < nrows; i++)
                for (size_t c = 0; c < ncols; c++)
                    fprintf(f, "%.17g%s", nm->out[i * ncols + c], c + 1 < ncols ? "," : "\n");
            lab_csv_finish(&out, lab_opt.output);
            printf("  wrote %zu rows to %s\n", nrows, lab_opt.output);
        }
        lab_shared_free(nm->out, bytes);
        lab_shared_free(v, bytes);
        lab_shared_free(nm, sizeof *nm);
        return 0;
    }
    lab_header("normalize",
               "min-max normalisation per row, the lab's sizes (rows x %.3g), np.random.seed(%u) then "
               "randint(0, 1000) for each size",
               lab_opt.scale, norm_seed());
    printf("  prob3, the first %d normalised XXL rows (full-size data), begins %.60s...\n", PROB3_ROWS,
           json_string_value(lab_prob3));
    printf("  %-8s %14s %10s %10s %10s", "size", "rows x cols", "serial", "threads", "processes");
    if (lab_want(LAB_MPI)) printf(" %10s", "mpi");
    printf(" %9s\n", "speedup");
    json_t *table = json_array();
    lab_result_t last = {0};
    lab_mt_t mt;
    lab_mt_seed(&mt, norm_seed());
    for (size_t k = 0; k < NSIZES; k++) {
        size_t nrows = lab_scaled(sizes[k].rows, 2), ncols = sizes[k].cols, bytes = nrows * ncols * sizeof(double);
        double *v = lab_shared_alloc(bytes);
        draw(&mt, v, nrows * ncols);
        *nm = (norm_t){.v = v, .out = lab_shared_alloc(bytes), .ncols = ncols};
        lab_result_t r = {0};
        char label[32];
        snprintf(label, sizeof label, "normalize %s", sizes[k].name);
        run_all(nm, nrows, label, &r);
        char dims[32];
        snprintf(dims, sizeof dims, "%zux%zu", nrows, ncols);
        printf("  %-8s %14s", sizes[k].name, dims);
        json_t *row = json_object();
        json_object_set_new(row, "size", json_string(sizes[k].name));
        json_object_set_new(row, "rows", json_integer((json_int_t)nrows));
        json_object_set_new(row, "cols", json_integer((json_int_t)ncols));
        double best = 0;
        for (lab_mode_t m = 0; m < LAB_NMODES; m++) {
            if (m == LAB_MPI && !lab_want(m)) continue; /* no column */
            if (!r.ran[m]) {
                printf(" %10s", "-");
                continue;
            }
            printf(" %10.4f", r.secs[m]);
            json_object_set_new(row, lab_mode_name[m], json_real(r.secs[m]));
            if (m != LAB_SERIAL && r.ran[LAB_SERIAL] && r.secs[LAB_SERIAL] / r.secs[m] > best)
                best = r.secs[LAB_SERIAL] / r.secs[m];
            if (r.sum[m] != r.sum[0] && r.ran[0]) lab_die("normalize %s: the modes' results differ", sizes[k].name);
        }
        printf(" %8.2fx\n", best);
        json_object_set_new(row, "speedup", json_real(best));
        json_array_append_new(table, row);
        /* The table's totals: every size's time and a hash over every size. */
        for (lab_mode_t m = 0; m < LAB_NMODES; m++) {
            last.secs[m] += r.secs[m];
            last.ran[m] = r.ran[m];
            last.sum[m] = lab_fnv(&r.sum[m], sizeof r.sum[m], k ? last.sum[m] : 0);
        }
        lab_shared_free(nm->out, bytes);
        lab_shared_free(v, bytes);
    }
    printf("  all sizes together:\n");
    json_t *fig = lab_report("normalize", &last, LAB_BOUND_MEMORY, 0, NULL);
    json_object_set_new(fig, "sizes", table);
    json_object_set_new(fig, "seed", json_integer(norm_seed()));
    lab_shared_free(nm, sizeof *nm);
    return 0;
}
