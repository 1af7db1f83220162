/* primes and factors, two CPU-bound jobs by trial division.
 * primes: the primes below 100,000 (9,592 of them), by ranges of numbers;
 * each number's verdict is kept so the modes can be compared byte for byte.
 * factors: the prime factors of 100 numbers drawn in [1e10, 1e12] from the
 * seed, one number a task; a prime near 1e12 takes 500,000 divisions, so the
 * tasks are uneven and the pool's dynamic hand-out matters. */
#include <stdlib.h>
#include <string.h>
#include "lab.h"

#define PRIME_LIMIT 100000

typedef struct primes {
    uint8_t is_prime[PRIME_LIMIT];
} primes_t;

static bool is_prime(uint64_t n)
{
    if (n < 2) return false;
    if (n % 2 == 0) return n == 2;
    for (uint64_t d = 3; d * d <= n; d += 2)
        if (n % d == 0) return false;
    return true;
}

static void primes_range(void *ctx, size_t lo, size_t hi)
{
    primes_t *p = ctx;
    for (size_t n = lo; n < hi; n++) p->is_prime[n] = is_prime(n);
}

/* Over MPI: no input; a rank's own table of verdicts. */
static void *primes_attach(const void *in, size_t n, void **results)
{
    (void)in;
    primes_t *p = n == PRIME_LIMIT ? calloc(1, sizeof *p) : NULL;
    if (p) *results = p->is_prime;
    return p;
}

const lab_mpi_kind_t lab_mpi_primes = {"primes", primes_range, primes_attach, free, NULL};

int lab_primes(void)
{
    primes_t *p = lab_shared_alloc(sizeof *p);
    lab_header("primes", "count the primes below %d by trial division, in ranges of 1,000", PRIME_LIMIT);
    lab_result_t r = {0};
    lab_modes_mpi(&r, primes_range, p, PRIME_LIMIT, 1000, "primes", p->is_prime, sizeof p->is_prime, &lab_mpi_primes,
                  NULL, 0);
    unsigned count = 0;
    for (size_t n = 0; n < PRIME_LIMIT; n++) count += p->is_prime[n];
    printf("  primes below %d: %u (expected 9592)\n", PRIME_LIMIT, count);
    json_t *fig = lab_report("primes", &r, LAB_BOUND_CPU, PRIME_LIMIT, "numbers/s");
    json_object_set_new(fig, "count", json_integer(count));
    json_object_set_new(fig, "below", json_integer(PRIME_LIMIT));
    lab_shared_free(p, sizeof *p);
    return 0;
}

#define MAX_FACTORS 48

typedef struct factors {
    size_t n;
    uint64_t *num;
    uint64_t (*f)[MAX_FACTORS]; /* 0-terminated */
} factors_t;

static void factorize(uint64_t n, uint64_t *out)
{
    int k = 0;
    while (n % 2 == 0) out[k++] = 2, n /= 2;
    for (uint64_t d = 3; d * d <= n; d += 2)
        while (n % d == 0) out[k++] = d, n /= d;
    if (n > 1) out[k++] = n;
}

static void factors_range(void *ctx, size_t lo, size_t hi)
{
    factors_t *f = ctx;
    for (size_t i = lo; i < hi; i++) factorize(f->num[i], f->f[i]);
}

/* Over MPI: the input is the numbers; a rank's own factor table. */
static void *factors_attach(const void *in, size_t n, void **results)
{
    factors_t *f = malloc(sizeof *f);
    if (f) *f = (factors_t){.n = n, .num = (uint64_t *)in, .f = calloc(n, sizeof *f->f)};
    if (f && !f->f) {
        free(f);
        return NULL;
    }
    if (f) *results = f->f;
    return f;
}

static void factors_detach(void *ctx)
{
    factors_t *f = ctx;
    free(f->f);
    free(f);
}

const lab_mpi_kind_t lab_mpi_factors = {"factors", factors_range, factors_attach, factors_detach, NULL};

int lab_factors(void)
{
    size_t n = lab_scaled(100, 4);
    factors_t *f = lab_shared_alloc(sizeof *f);
    f->n = n;
    f->num = lab_shared_alloc(n * sizeof *f->num);
    size_t out_size = n * sizeof *f->f;
    f->f = lab_shared_alloc(out_size);
    uint64_t s = lab_opt.seed;
    for (size_t i = 0; i < n; i++) f->num[i] = 10000000000ULL + lab_rand(&s) % 990000000001ULL;
    /* A few primes near the top make the longest tasks, as in the lab. */
    f->num[0] = 999999999989ULL;
    if (n > 1) f->num[n / 2] = 999999999959ULL;
    lab_header("factors", "prime factors of %zu numbers in [1e10, 1e12] from seed %llu, one number a task", n,
               (unsigned long long)lab_opt.seed);
    lab_result_t r = {0};
    lab_modes_mpi(&r, factors_range, f, n, 1, "factors", f->f, out_size, &lab_mpi_factors, f->num,
                  n * sizeof *f->num);
    json_t *ex = json_array();
    size_t checked = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t prod = 1;
        for (int k = 0; k < MAX_FACTORS && f->f[i][k]; k++) prod *= f->f[i][k];
        if (prod != f->num[i]) lab_die("factors: the factors of %llu multiply to %llu", (unsigned long long)f->num[i],
                                       (unsigned long long)prod);
        checked++;
        if (i < 3) {
            printf("  %llu =", (unsigned long long)f->num[i]);
            json_t *fs = json_array();
            for (int k = 0; k < MAX_FACTORS && f->f[i][k]; k++) {
                printf("%s %llu", k ? " x" : "", (unsigned long long)f->f[i][k]);
                json_array_append_new(fs, json_integer((json_int_t)f->f[i][k]));
            }
            printf("\n");
            json_t *e = json_object();
            json_object_set_new(e, "n", json_integer((json_int_t)f->num[i]));
            json_object_set_new(e, "factors", fs);
            json_array_append_new(ex, e);
        }
    }
    printf("  all %zu factorisations multiply back to their numbers\n", checked);
    json_t *fig = lab_report("factors", &r, LAB_BOUND_CPU, (double)n, "numbers/s");
    json_object_set_new(fig, "numbers", json_integer((json_int_t)n));
    json_object_set_new(fig, "examples", ex);
    lab_shared_free(f->f, out_size);
    lab_shared_free(f->num, n * sizeof *f->num);
    lab_shared_free(f, sizeof *f);
    return 0;
}
