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
    const size_t *out_off;        /* room for each pair's answer: its a row's length */
    double *out;
    uint32_t *nout;
} items_t;

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
        double *o = it->out + it->out_off[p];
        uint32_t n = 0;
        for (size_t i = it->aoff[p]; i < it->aoff[p + 1]; i++) {
            bool in_b = false, seen = false;
            for (size_t j = it->boff[p]; j < it->boff[p + 1] && !in_b; j++) in_b = it->a[i] == it->b[j];
            for (uint32_t k = 0; k < n && !seen; k++) seen = o[k] == it->a[i];
            if (in_b && !seen) o[n++] = it->a[i];
        }
        qsort(o, n, sizeof *o, cmp);
        it->nout[p] = n;
    }
}

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
    size_t out_size = na * sizeof(double) + npairs * sizeof(uint32_t);
    char *out = lab_shared_alloc(out_size);
    *it = (items_t){.npairs = npairs, .a = a, .b = b, .aoff = aoff, .boff = boff, .out_off = aoff,
                    .out = (double *)out, .nout = (uint32_t *)(out + na * sizeof(double))};
    lab_result_t r = {0};
    lab_modes(&r, items_range, it, npairs, 1, "common", out, out_size);

    json_t *answer = json_array();
    printf("  answer: [");
    for (size_t p = 0; p < npairs; p++) {
        json_t *row = json_array();
        printf("%s[", p ? ", " : "");
        for (uint32_t k = 0; k < it->nout[p]; k++) {
            double x = it->out[aoff[p] + k];
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
            for (uint32_t k = 0; k < it->nout[p]; k++) vals[total++] = it->out[aoff[p] + k];
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
        FILE *f = lab_csv_create(lab_opt.output);
        for (size_t p = 0; p < npairs; p++) {
            for (uint32_t k = 0; k < it->nout[p]; k++) {
                char b[40];
                number(it->out[aoff[p] + k], b, sizeof b);
                fprintf(f, "%s%s", k ? "," : "", b);
            }
            fprintf(f, "\n");
        }
        if (fclose(f) != 0) lab_die("%s: write failed", lab_opt.output);
        printf("  wrote %zu rows to %s\n", npairs, lab_opt.output);
    }
    json_decref(answer);
    lab_shared_free(out, out_size);
    lab_shared_free(it, sizeof *it);
    lab_shared_free(a, na * sizeof *a);
    lab_shared_free(b, nb * sizeof *b);
    lab_shared_free(aoff, (npairs + 1) * sizeof *aoff);
    lab_shared_free(boff, (npairs + 1) * sizeof *boff);
    return 0;
}
