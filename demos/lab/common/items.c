/* common: the row-wise common items of the lab's list_a and list_b, each
 * row pair one task (the lab uses Pool.apply).  An item is listed once, in
 * ascending order.  --input reads tagged CSV rows ("a,1,2,3" and "b,2,3,4"),
 * pairing the i-th a row with the i-th b row; --output writes one line of
 * common items per pair. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "lab.h"

json_t *lab_prob1;

static const double lab_a[][4] = {{1, 2, 3}, {5, 6, 7, 8}, {10, 11, 12}, {20, 21}};
static const size_t lab_a_len[] = {3, 4, 3, 2};
static const double lab_b[][4] = {{2, 3, 4, 5}, {6, 9, 10}, {11, 12, 13, 14}, {21, 24, 25}};
static const size_t lab_b_len[] = {4, 3, 4, 3};

typedef struct items {
    size_t npairs;
    const double *a, *b;          /* flat rows */
    const size_t *aoff, *boff;    /* npairs + 1 offsets */
    /* Pair p's answer, one slot of 8-byte words from word aoff[p] + p:
     * its count of items (a uint32_t in the first word), then room for its
     * a row's values.  One slot a pair, so a range of pairs' answers is one
     * run of bytes (what an MPI chunk sends back). */
    double *out;
} items_t;

static size_t slot_offset(const void *ctx, size_t p)
{
    const items_t *it = ctx;
    return (it->aoff[p] + p) * sizeof(double);
}

static uint32_t *slot_count(const items_t *it, size_t p)
{
    return (uint32_t *)((char *)it->out + slot_offset(it, p));
}

static double *slot_items(const items_t *it, size_t p)
{
    return (double *)((char *)it->out + slot_offset(it, p)) + 1;
}

static int cmp(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/* One pair: the distinct values of a that b holds, ascending. */
static void items_range(void *ctx, size_t lo, size_t hi)
{
    items_t *it = ctx;
    for (size_t p = lo; p < hi; p++) {
        double *o = slot_items(it, p);
        uint32_t n = 0;
        for (size_t i = it->aoff[p]; i < it->aoff[p + 1]; i++) {
            bool in_b = false, seen = false;
            for (size_t j = it->boff[p]; j < it->boff[p + 1] && !in_b; j++) in_b = it->a[i] == it->b[j];
            for (uint32_t k = 0; k < n && !seen; k++) seen = o[k] == it->a[i];
            if (in_b && !seen) o[n++] = it->a[i];
        }
        qsort(o, n, sizeof *o, cmp);
        *slot_count(it, p) = n;
    }
}

/* Over MPI: the input is the pairs' rows, laid out as below; a rank's own
 * answer slots.  size_t is 64 bits here (the offsets travel as they are). */
_Static_assert(sizeof(size_t) == sizeof(uint64_t), "offsets travel as 64-bit words");
typedef struct items_in {
    uint64_t npairs, na, nb;
    uint64_t words[]; /* aoff[npairs + 1], boff[npairs + 1], a[na], b[nb] (doubles) */
} items_in_t;

static items_in_t *items_pack(const items_t *it, size_t na, size_t nb, size_t *size)
{
    size_t np = it->npairs, off = 2 * (np + 1);
    *size = sizeof(items_in_t) + (off + na + nb) * sizeof(uint64_t);
    items_in_t *in = malloc(*size);
    if (!in) lab_die("out of memory");
    *in = (items_in_t){.npairs = np, .na = na, .nb = nb};
    memcpy(in->words, it->aoff, (np + 1) * sizeof(uint64_t));
    memcpy(in->words + np + 1, it->boff, (np + 1) * sizeof(uint64_t));
    memcpy(in->words + off, it->a, na * sizeof(double));
    memcpy(in->words + off + na, it->b, nb * sizeof(double));
    return in;
}

static void *items_attach(const void *in, size_t n, void **results)
{
    const items_in_t *a = in;
    if (a->npairs != n) return NULL;
    items_t *it = malloc(sizeof *it);
    size_t off = 2 * (n + 1);
    double *out = calloc(a->na + n + 1, sizeof *out);
    if (!it || !out) {
        free(it), free(out);
        return NULL;
    }
    *it = (items_t){.npairs = n, .aoff = (const size_t *)a->words, .boff = (const size_t *)a->words + n + 1,
                    .a = (const double *)(a->words + off), .b = (const double *)(a->words + off + a->na), .out = out};
    *results = out;
    return it;
}

static void items_detach(void *ctx)
{
    items_t *it = ctx;
    free(it->out);
    free(it);
}

const lab_mpi_kind_t lab_mpi_common = {"common", items_range, items_attach, items_detach, slot_offset};

/* An item as Python's str() prints it: an integer up to 2^53 (every
 * integer a double holds exactly) as an int, anything else as repr(float).
 * printf's %.15g once cut 9007199254740992 to 9.00719925474099e+15. */
static void number(double x, char *buf, size_t cap)
{
    if (fabs(x) <= 0x1p53 && x == floor(x)) snprintf(buf, cap, "%.0f", x);
    else lab_py_float(x, buf, cap);
}

int lab_common(void)
{
    size_t npairs = 0, na = 0, nb = 0;
    double *a, *b;
    size_t *aoff, *boff;
    if (lab_opt.input) {
        lab_rows_t rows;
        char err[512];
        if (lab_csv_read(lab_opt.input, LAB_CSV_TAGGED, &rows, err, sizeof err) != 0) lab_die("%s", err);
        size_t ca = 0, cb = 0;
        for (size_t r = 0; r < rows.nrows; r++) {
            size_t len = rows.off[r + 1] - rows.off[r];
            if (rows.tag[r] == 'a') ca++, na += len;
            else cb++, nb += len;
        }
        if (ca != cb) lab_die("%s: %zu rows of list_a but %zu of list_b: every a row needs a b row", lab_opt.input, ca, cb);
        npairs = ca;
        a = lab_shared_alloc(na * sizeof *a);
        b = lab_shared_alloc(nb * sizeof *b);
        aoff = lab_shared_alloc((npairs + 1) * sizeof *aoff);
        boff = lab_shared_alloc((npairs + 1) * sizeof *boff);
        size_t ia = 0, ib = 0;
        for (size_t r = 0; r < rows.nrows; r++) {
            size_t len = rows.off[r + 1] - rows.off[r];
            bool is_a = rows.tag[r] == 'a';
            double *dst = is_a ? a : b;
            size_t *off = is_a ? aoff : boff, *k = is_a ? &ia : &ib;
            memcpy(dst + off[*k], rows.v + rows.off[r], len * sizeof *dst);
            off[*k + 1] = off[*k] + len;
            ++*k;
        }
        lab_rows_free(&rows);
        lab_header("common", "row-wise common items of %zu row pairs from %s", npairs, lab_opt.input);
    } else {
        npairs = 4;
        for (size_t p = 0; p < npairs; p++) na += lab_a_len[p], nb += lab_b_len[p];
        a = lab_shared_alloc(na * sizeof *a);
        b = lab_shared_alloc(nb * sizeof *b);
        aoff = lab_shared_alloc((npairs + 1) * sizeof *aoff);
        boff = lab_shared_alloc((npairs + 1) * sizeof *boff);
        for (size_t p = 0; p < npairs; p++) {
            memcpy(a + aoff[p], lab_a[p], lab_a_len[p] * sizeof *a);
            memcpy(b + boff[p], lab_b[p], lab_b_len[p] * sizeof *b);
            aoff[p + 1] = aoff[p] + lab_a_len[p];
            boff[p + 1] = boff[p] + lab_b_len[p];
        }
        lab_header("common", "row-wise common items of the lab's list_a and list_b");
        printf("  list_a = [[1, 2, 3], [5, 6, 7, 8], [10, 11, 12], [20, 21]]\n");
        printf("  list_b = [[2, 3, 4, 5], [6, 9, 10], [11, 12, 13, 14], [21, 24, 25]]\n");
    }
    items_t *it = lab_shared_alloc(sizeof *it);
    size_t out_size = (na + npairs) * sizeof(double);
    char *out = lab_shared_alloc(out_size ? out_size : 1);
    *it = (items_t){.npairs = npairs, .a = a, .b = b, .aoff = aoff, .boff = boff, .out = (double *)out};
    lab_result_t r = {0};
    size_t in_size = 0;
    items_in_t *in = lab_want(LAB_MPI) ? items_pack(it, na, nb, &in_size) : NULL;
    lab_modes_mpi(&r, items_range, it, npairs, 1, "common", out, out_size, &lab_mpi_common, in, in_size);
    free(in);

    json_t *answer = json_array();
    printf("  answer: [");
    for (size_t p = 0; p < npairs; p++) {
        json_t *row = json_array();
        printf("%s[", p ? ", " : "");
        for (uint32_t k = 0; k < *slot_count(it, p); k++) {
            double x = slot_items(it, p)[k];
            char b[40];
            number(x, b, sizeof b);
            printf("%s%s", k ? ", " : "", b);
            json_array_append_new(row, fabs(x) <= 0x1p53 && x == floor(x) ? json_integer((json_int_t)x) : json_real(x));
        }
        printf("]");
        json_array_append_new(answer, row);
    }
    printf("]\n");
    json_t *fig = lab_report("common", &r, LAB_BOUND_OVERHEAD, 0, NULL);
    json_object_set(fig, "answer", answer);
    if (!lab_opt.input) {
        /* The notebook's answer is Python's str() of its list of lists of
         * ints; the answers are gathered here with their row offsets. */
        size_t total = 0, *off = malloc((npairs + 1) * sizeof *off);
        double *vals = malloc((na ? na : 1) * sizeof *vals);
        if (!off || !vals) lab_die("out of memory");
        off[0] = 0;
        for (size_t p = 0; p < npairs; p++) {
            for (uint32_t k = 0; k < *slot_count(it, p); k++) vals[total++] = slot_items(it, p)[k];
            off[p + 1] = total;
        }
        lab_str_t str = {0};
        lab_py_rows(&str, vals, off, npairs, true);
        json_decref(lab_prob1);
        lab_prob1 = json_string(str.s);
        free(str.s);
        free(vals);
        free(off);
    }
    if (lab_opt.output) {
        demo_out_t out;
        FILE *f = lab_csv_create(&out, lab_opt.output);
        for (size_t p = 0; p < npairs; p++) {
            for (uint32_t k = 0; k < *slot_count(it, p); k++) {
                char b[40];
                number(slot_items(it, p)[k], b, sizeof b);
                fprintf(f, "%s%s", k ? "," : "", b);
            }
            fprintf(f, "\n");
        }
        lab_csv_finish(&out, lab_opt.output);
        printf("  wrote %zu rows to %s\n", npairs, lab_opt.output);
    }
    json_decref(answer);
    lab_shared_free(out, out_size ? out_size : 1);
    lab_shared_free(it, sizeof *it);
    lab_shared_free(a, na * sizeof *a);
    lab_shared_free(b, nb * sizeof *b);
    lab_shared_free(aoff, (npairs + 1) * sizeof *aoff);
    lab_shared_free(boff, (npairs + 1) * sizeof *boff);
    return 0;
}
