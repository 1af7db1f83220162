/* howmany: the lab's howmany_within_range over rows of ints, counting per row
 * the values in [4, 8].  Default data, the notebook's:
 * np.random.RandomState(100).randint(0, 10, size=[1000000, 5]) (--seed
 * replaces 100; --scale, the row count); --input reads the rows from CSV (integers, every row
 * as long as the first) and --output writes one count per line. */
#include <stdlib.h>
#include <string.h>
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
    lab_modes(&r, hm_range, h, nrows, chunk, "howmany", h->count, out_size);

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
    if (lab_opt.output) {
        FILE *f = lab_csv_create(lab_opt.output);
        for (size_t i = 0; i < nrows; i++) fprintf(f, "%u\n", h->count[i]);
        if (fclose(f) != 0) lab_die("%s: write failed", lab_opt.output);
        printf("  wrote %zu counts to %s\n", nrows, lab_opt.output);
    }
    lab_shared_free(h->count, out_size);
    lab_shared_free(h, sizeof *h);
    lab_shared_free(v, nrows * ncols * sizeof *v);
    return 0;
}
