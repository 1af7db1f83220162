/* `lab data`: the generated data sets' first values and digests, so that a
 * test (or a doubting user) can check them against numpy's legacy generator
 * with one line of Python each.  It prints, at the sizes the workloads use
 * (--scale scales the rows):
 *   stream NAME: first 1000: v1 v2 ...        (the stream's first values)
 *   data NAME ROWSxCOLS seed S digest D       (one line per data set)
 * where the digest is lab_digest over the values in order (ints as
 * themselves, doubles as their IEEE-754 bits), and the normalize sizes come
 * from one stream, as the notebook draws them.  heavy's input is
 * RandomState(seed).random_sample(n). */
#include <inttypes.h>
#include <string.h>
#include "lab.h"

static const struct {
    const char *name;
    size_t rows, cols;
} norm_sizes[] = {{"Small", 100, 50}, {"Medium", 1000, 50}, {"Large", 10000, 50}, {"XL", 50000, 100}, {"XXL", 100000, 100}};

size_t lab_heavy_n(void)
{
    return lab_scaled(40000000, 4000);
}

void lab_heavy_data(double *x, size_t n)
{
    lab_mt_t mt;
    lab_mt_seed(&mt, (uint32_t)lab_opt.seed);
    for (size_t i = 0; i < n; i++) x[i] = lab_mt_double(&mt);
}

static void first_ints(const char *name, uint32_t seed, int64_t hi)
{
    lab_mt_t mt;
    lab_mt_seed(&mt, seed);
    printf("stream %s: first 1000:", name);
    for (int i = 0; i < 1000; i++) printf(" %" PRId64, lab_mt_randint(&mt, 0, hi));
    printf("\n");
}

int lab_data(void)
{
    uint32_t seed = lab_opt.seed_set ? (uint32_t)lab_opt.seed : LAB_SEED_NORMALIZE;
    lab_mt_t mt;
    first_ints("normalize", seed, 1000);
    lab_mt_seed(&mt, seed);
    for (size_t k = 0; k < sizeof norm_sizes / sizeof norm_sizes[0]; k++) {
        size_t rows = lab_scaled(norm_sizes[k].rows, 2), cols = norm_sizes[k].cols;
        lab_digest_t d = {0};
        for (size_t i = 0; i < rows * cols; i++) lab_digest_add(&d, (uint64_t)lab_mt_randint(&mt, 0, 1000));
        printf("data normalize-%s %zux%zu seed %u digest %" PRIu64 "\n", norm_sizes[k].name, rows, cols, seed, d.sum);
    }

    seed = lab_opt.seed_set ? (uint32_t)lab_opt.seed : LAB_SEED_HOWMANY;
    first_ints("howmany", seed, 10);
    lab_mt_seed(&mt, seed);
    size_t rows = lab_scaled(1000000, 10);
    lab_digest_t d = {0};
    for (size_t i = 0; i < rows * 5; i++) lab_digest_add(&d, (uint64_t)lab_mt_randint(&mt, 0, 10));
    printf("data howmany %zux5 seed %u digest %" PRIu64 "\n", rows, seed, d.sum);

    seed = (uint32_t)lab_opt.seed;
    lab_mt_seed(&mt, seed);
    printf("stream heavy: first 1000:");
    for (int i = 0; i < 1000; i++) {
        char b[40];
        lab_py_float(lab_mt_double(&mt), b, sizeof b);
        printf(" %s", b);
    }
    printf("\n");
    lab_mt_seed(&mt, seed);
    size_t n = lab_heavy_n();
    d = (lab_digest_t){0};
    for (size_t i = 0; i < n; i++) {
        double x = lab_mt_double(&mt);
        uint64_t bits;
        memcpy(&bits, &x, sizeof bits);
        lab_digest_add(&d, bits);
    }
    printf("data heavy %zux1 seed %u digest %" PRIu64 "\n", n, seed, d.sum);
    return 0;
}
