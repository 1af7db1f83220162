/* sumsq and heavy, the lab's arithmetic jobs.
 *
 * sumsq: sum of i^2 for i < n, 8 tasks of n = 1,000,000.  gcc -O2 turns such
 * a loop into the closed form n(n-1)(2n-1)/6 (scalar evolution), which would
 * make the timing measure nothing; an empty asm statement that "changes" i
 * each turn hides the induction variable from the optimiser, so the loop
 * really runs n times, and the result is then checked against the closed
 * form.  n is read at run time from the task's context.
 * heavy: the lecture's three rounds of x = (sin x + cos x) ** (x * x), then
 * the sum, over 40,000,000 doubles of random_sample (scaled) in 4 chunks,
 * timed serially, with map and with map_async.  Each chunk's partial sum is
 * kept and the parent adds them in order, so every mode gives the same
 * bits.  On
 * x86-64 with AVX2 the values go four at a time through glibc's vector math
 * library (libmvec, which -lm brings in), as numpy's ufuncs use SIMD math;
 * elsewhere, or with LAB_SCALAR_MATH set, through scalar sin, cos and pow.
 * Every mode of one run takes the same path. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "lab.h"
#if defined(__x86_64__) && defined(__GLIBC__)
#include <immintrin.h>
#define HAVE_MVEC 1
/* glibc's libmvec, AVX2 variants (the vector ABI's names).  Declared for
 * AVX2 as their callers are: clang refuses a 256-bit vector argument to a
 * function compiled without AVX (its ABI would differ). */
#define MVEC_AVX2 __attribute__((target("avx2")))
MVEC_AVX2 __m256d _ZGVdN4v_sin(__m256d x);
MVEC_AVX2 __m256d _ZGVdN4v_cos(__m256d x);
MVEC_AVX2 __m256d _ZGVdN4vv_pow(__m256d x, __m256d y);
#endif

#define NSUMS 8

typedef struct sumsq {
    uint64_t n;
    uint64_t sum[NSUMS];
} sumsq_t;

static uint64_t sum_squares(uint64_t n)
{
    uint64_t s = 0;
    for (uint64_t i = 0; i < n; i++) {
        __asm__ volatile("" : "+r"(i)); /* keep the loop: no closed form */
        s += i * i;
    }
    return s;
}

static void sumsq_range(void *ctx, size_t lo, size_t hi)
{
    sumsq_t *q = ctx;
    for (size_t t = lo; t < hi; t++) q->sum[t] = sum_squares(q->n);
}

/* Over MPI: the input is n; a rank's own sums. */
static void *sumsq_attach(const void *in, size_t n, void **results)
{
    sumsq_t *q = n == NSUMS ? calloc(1, sizeof *q) : NULL;
    if (q) {
        memcpy(&q->n, in, sizeof q->n);
        *results = q->sum;
    }
    return q;
}

const lab_mpi_kind_t lab_mpi_sumsq = {"sumsq", sumsq_range, sumsq_attach, free, NULL};

int lab_sumsq(void)
{
    sumsq_t *q = lab_shared_alloc(sizeof *q);
    q->n = lab_scaled(1000000, 1000);
    lab_header("sumsq", "sum of i^2 for i < %llu, %d tasks (the loop really runs: see sums.c)",
               (unsigned long long)q->n, NSUMS);
    lab_result_t r = {0};
    lab_modes_mpi(&r, sumsq_range, q, NSUMS, 1, "sumsq", q->sum, sizeof q->sum, &lab_mpi_sumsq, &q->n, sizeof q->n);
    uint64_t n = q->n;
    unsigned __int128 closed = (unsigned __int128)n * (n - 1) * (2 * n - 1) / 6;
    for (int t = 0; t < NSUMS; t++)
        if (q->sum[t] != (uint64_t)closed) lab_die("sumsq: task %d gave %llu", t, (unsigned long long)q->sum[t]);
    printf("  each task: %llu (= n(n-1)(2n-1)/6)\n", (unsigned long long)q->sum[0]);
    json_t *fig = lab_report("sumsq", &r, LAB_BOUND_CPU, (double)NSUMS * (double)n, "terms/s");
    json_object_set_new(fig, "n", json_integer((json_int_t)n));
    json_object_set_new(fig, "tasks", json_integer(NSUMS));
    json_object_set_new(fig, "each", json_integer((json_int_t)q->sum[0]));
    lab_shared_free(q, sizeof *q);
    return 0;
}

#define HEAVY_CHUNKS 4
#define HEAVY_ROUNDS 3

typedef struct heavy {
    const double *x;
    size_t n, chunk;
    double partial[HEAVY_CHUNKS];
} heavy_t;

/* The lecture's function on one chunk: three rounds of
 * array = (sin(array) + cos(array)) ** (array * array), then sum(array).
 * Each value goes through its rounds on its own, which is the same
 * arithmetic as the array-at-a-time lecture code without a second array. */
static double heavy_scalar(const double *x, size_t lo, size_t hi)
{
    double s = 0;
    for (size_t i = lo; i < hi; i++) {
        double y = x[i];
        for (int k = 0; k < HEAVY_ROUNDS; k++) y = pow(sin(y) + cos(y), y * y);
        s += y;
    }
    return s;
}

#ifdef HAVE_MVEC
__attribute__((target("avx2"))) static double heavy_avx2(const double *x, size_t lo, size_t hi)
{
    __m256d acc = _mm256_setzero_pd();
    size_t i = lo;
    for (; i + 4 <= hi; i += 4) {
        __m256d v = _mm256_loadu_pd(x + i);
        for (int k = 0; k < HEAVY_ROUNDS; k++)
            v = _ZGVdN4vv_pow(_mm256_add_pd(_ZGVdN4v_sin(v), _ZGVdN4v_cos(v)), _mm256_mul_pd(v, v));
        acc = _mm256_add_pd(acc, v);
    }
    double lane[4];
    _mm256_storeu_pd(lane, acc);
    return (lane[0] + lane[1]) + (lane[2] + lane[3]) + heavy_scalar(x, i, hi);
}
#endif

/* Chosen once in the parent, before any pool starts, so workers inherit it. */
static bool use_avx2;

/* The items are the chunks: chunk c's partial sum is its result, so that
 * every mode (and MPI's chunk messages) carries the same 4 doubles. */
static void heavy_range(void *ctx, size_t lo, size_t hi)
{
    heavy_t *h = ctx;
    for (size_t c = lo; c < hi; c++) {
        size_t from = c * h->chunk, to = from + h->chunk < h->n ? from + h->chunk : h->n;
        double s;
#ifdef HAVE_MVEC
        if (use_avx2) s = heavy_avx2(h->x, from, to);
        else
#endif
            s = heavy_scalar(h->x, from, to);
        h->partial[c] = s;
    }
}

/* Over MPI: the input is the size and the math path; each rank draws the
 * same random_sample stream itself (the seed is an option every rank
 * read), which costs a pass of the generator instead of sending
 * 8 bytes a value to every rank. */
typedef struct heavy_in {
    uint64_t n;
    uint8_t avx2;
} heavy_in_t;

static void *heavy_attach(const void *in, size_t n, void **results)
{
    heavy_in_t a;
    memcpy(&a, in, sizeof a);
    heavy_t *h = n == HEAVY_CHUNKS ? calloc(1, sizeof *h) : NULL;
    double *x = h ? malloc((a.n ? a.n : 1) * sizeof *x) : NULL;
    if (!x) {
        free(h);
        return NULL;
    }
    lab_heavy_data(x, a.n);
    use_avx2 = a.avx2;
    *h = (heavy_t){.x = x, .n = a.n, .chunk = (a.n + HEAVY_CHUNKS - 1) / HEAVY_CHUNKS};
    *results = h->partial;
    return h;
}

static void heavy_detach(void *ctx)
{
    heavy_t *h = ctx;
    free((void *)h->x);
    free(h);
}

const lab_mpi_kind_t lab_mpi_heavy = {"heavy", heavy_range, heavy_attach, heavy_detach, NULL};

int lab_heavy(void)
{
#ifdef HAVE_MVEC
    __builtin_cpu_init();
    use_avx2 = __builtin_cpu_supports("avx2") && !getenv("LAB_SCALAR_MATH");
#endif
    size_t n = lab_heavy_n();
    double *x = lab_shared_alloc(n * sizeof *x);
    lab_heavy_data(x, n);
    heavy_t *h = lab_shared_alloc(sizeof *h);
    h->x = x;
    h->n = n;
    h->chunk = (n + HEAVY_CHUNKS - 1) / HEAVY_CHUNKS;
    lab_header("heavy",
               "%d rounds of x = (sin x + cos x) ** (x * x), then sum, over %zu doubles "
               "(RandomState(%llu).random_sample), %d chunks, %s",
               HEAVY_ROUNDS, n, (unsigned long long)lab_opt.seed, HEAVY_CHUNKS,
               use_avx2 ? "AVX2 vector math (libmvec)" : "scalar math");
    /* serial, and Pool.map on each backend (the table); then map_async. */
    lab_result_t r = {0};
    heavy_in_t in = {.n = n, .avx2 = use_avx2};
    lab_modes_mpi(&r, heavy_range, h, HEAVY_CHUNKS, 1, "heavy", h->partial, sizeof h->partial, &lab_mpi_heavy, &in,
                  sizeof in);
    double total = 0;
    for (int c = 0; c < HEAVY_CHUNKS; c++) total += h->partial[c];
    printf("  sum: %.17g\n", total);
    json_t *fig = lab_report("heavy", &r, LAB_BOUND_CPU, (double)n * HEAVY_ROUNDS, "values/s");
    json_t *async = json_object();
    lab_mode_t first = LAB_SERIAL; /* map_async must give what the table's modes agreed on */
    while (!r.ran[first]) first++;
    for (lab_mode_t m = LAB_THREADS; m < LAB_NMODES; m++) {
        if (!lab_want(m)) continue;
        memset(h->partial, 0, sizeof h->partial);
        double t = m == LAB_MPI ? lab_mpi_call(&(lab_mpi_call_t){.kind = &lab_mpi_heavy, .async = true}, &in, sizeof in,
                                               HEAVY_CHUNKS, 1, h->partial, sizeof h->partial, NULL)
                                : lab_run_async(m, lab_opt.workers, heavy_range, h, HEAVY_CHUNKS, 1);
        uint64_t sum = lab_fnv(h->partial, sizeof h->partial, 0);
        if (sum != r.sum[first]) lab_die("heavy: map_async on %s computed something else than %s", lab_mode_name[m], lab_mode_name[first]);
        printf("  map_async on %-9s %10.4f s", lab_mode_name[m], t);
        if (r.ran[LAB_SERIAL]) printf(" (%.2fx serial)", r.secs[LAB_SERIAL] / t);
        printf("\n");
        json_object_set_new(async, lab_mode_name[m], json_real(t));
    }
    json_object_set_new(fig, "map_async_seconds", async);
    json_object_set_new(fig, "n", json_integer((json_int_t)n));
    json_object_set_new(fig, "chunks", json_integer(HEAVY_CHUNKS));
    json_object_set_new(fig, "sum", json_real(total));
    json_object_set_new(fig, "math", json_string(use_avx2 ? "avx2-libmvec" : "scalar"));
    lab_shared_free(h, sizeof *h);
    lab_shared_free(x, n * sizeof *x);
    return 0;
}
