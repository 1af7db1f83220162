/* Benchmarks of the MPI backend, each beside its baseline measured in the
 * same run: a job's round trip between rank 0 and a serving rank beside the
 * process backend's (one worker), by async_executor_run (the direct path
 * on both) and by a submit and a wait on its future (the queue, a driver
 * slot and the progress thread); the primes below 2e7 by trial division
 * over 2 serving ranks beside serial C and the process backend with 2
 * workers, with rank 0's CPU use while the ranks compute, the MPI side
 * twice (the default two driver slots per rank, and one slot per rank:
 * no job queued at a rank while it runs one), and for each the mean time a
 * worker sat idle between its chunks (stamped by the chunks themselves);
 * the lab's howmany (1,000,000 rows of 5 ints, values in [4, 8])
 * with the rows replicated once by async_mpi_bcast beside shipping them in
 * every chunk.  Every side runs once a round, in alternating rounds
 * (rounds.h: BENCH_ROUNDS, default 5), and each figure prints as
 * `name: median (min-max) unit`; ratios are taken round by round.
 *
 *   bench-mpi [--limit N] [--trips N] [--mpi-workers N]
 *
 * Started without mpirun it runs itself under
 * `mpirun --oversubscribe --bind-to none -np 3` with loopback transports. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <async.h>
#include <async/mpi.h>
#include "rounds.h"
#include "workloads.h"

/* lib/mpi (benchmarks only): driver slots at or above it take no job; 0:
 * all do.  The A/B of prefetch (the default 2 slots per rank) against one
 * slot per rank, in the same run on the same executor. */
extern _Atomic unsigned async__mpi_slot_cap;

static double now_s(void) { return (double)async_now() / 1e9; }

/* This process's CPU time (every thread), in seconds. */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* --- work functions ------------------------------------------------------------- */

static int echo(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)ctx;
    memcpy(out, in, in_size < out_size ? in_size : out_size);
    return 0;
}
ASYNC_MPI_WORK(echo);

/* What a primes chunk reports: its count, and when and where it ran, so
 * that a worker's idle time between its chunks can be summed (one host:
 * CLOCK_MONOTONIC is the same clock in every rank and process). */
typedef struct chunk_out {
    uint64_t count;
    int64_t start, end; /* async_now() */
    int64_t worker;     /* the process that ran it */
} chunk_out_t;

/* Input: a range [lo, hi) of uint32; output: a chunk_out_t. */
static int primes(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out_size, (void)ctx;
    chunk_out_t o = {.start = async_now(), .worker = getpid()};
    uint32_t r[2];
    memcpy(r, in, sizeof r);
    for (uint32_t n = r[0]; n < r[1]; n++) o.count += is_prime(n);
    o.end = async_now();
    memcpy(out, &o, sizeof o);
    return 0;
}
ASYNC_MPI_WORK(primes);

enum { COLS = 5 };

/* howmany over a replicated table: input is a row index, ctx the rows. */
static int howmany_ctx(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out_size;
    uint32_t r;
    memcpy(&r, in, sizeof r);
    const int32_t *row = (const int32_t *)ctx + (size_t)r * COLS;
    uint32_t c = 0;
    for (int i = 0; i < COLS; i++) c += row[i] >= 4 && row[i] <= 8;
    memcpy(out, &c, sizeof c);
    return 0;
}
ASYNC_MPI_WORK(howmany_ctx);

/* howmany over a shipped row. */
static int howmany_row(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out_size, (void)ctx;
    const int32_t *row = in;
    uint32_t c = 0;
    for (int i = 0; i < COLS; i++) c += row[i] >= 4 && row[i] <= 8;
    memcpy(out, &c, sizeof c);
    return 0;
}
ASYNC_MPI_WORK(howmany_row);

/* --- figures ---------------------------------------------------------------------- */

static double round_trip(async_executor_t *ex, int n)
{
    int64_t v = 1, got;
    async_job_t j = {.fn = echo, .in = &v, .in_size = 8, .out_size = 8};
    for (int i = 0; i < 100; i++) async_executor_run(ex, &j, &got, NULL, NULL, 0); /* warm up */
    double t0 = now_s();
    for (int i = 0; i < n; i++) {
        v = i;
        if (async_executor_run(ex, &j, &got, NULL, NULL, 0) || got != i) {
            fprintf(stderr, "round trip %d failed\n", i);
            exit(1);
        }
    }
    return (now_s() - t0) / n * 1e6;
}

/* *secs: the wall time; *cpu (may be NULL): this process's CPU time over
 * it, as a share of one CPU (rank 0's cost while the ranks compute). */
/* The same through the queue: submit, then wait on the future. */
static double round_trip_submit(async_executor_t *ex, int n)
{
    int64_t v = 1, got;
    async_job_t j = {.fn = echo, .in = &v, .in_size = 8, .out_size = 8};
    double t0 = now_s();
    for (int i = 0; i < n; i++) {
        v = i;
        async_future_t *f;
        const void *d;
        size_t sz;
        if (async_executor_submit(&f, ex, &j) || async_future_wait(f) ||
            async_future_result(f, &d, &sz) || sz != 8 || (memcpy(&got, d, 8), got != i)) {
            fprintf(stderr, "submitted round trip %d failed\n", i);
            exit(1);
        }
        async_future_unref(f);
    }
    return (now_s() - t0) / n * 1e6;
}

static int by_worker_then_start(const void *a, const void *b)
{
    const chunk_out_t *x = a, *y = b;
    if (x->worker != y->worker) return x->worker < y->worker ? -1 : 1;
    return (x->start > y->start) - (x->start < y->start);
}

/* The mean time a worker sat between the end of one of its chunks and the
 * start of its next, in us: the hand-out's cost as the workers see it.
 * Sorts out. */
static double idle_between_chunks_us(chunk_out_t *out, size_t n)
{
    qsort(out, n, sizeof *out, by_worker_then_start);
    int64_t idle = 0;
    size_t gaps = 0;
    for (size_t i = 1; i < n; i++)
        if (out[i].worker == out[i - 1].worker) {
            idle += out[i].start - out[i - 1].end;
            gaps++;
        }
    return gaps ? (double)idle / (double)gaps / 1e3 : 0;
}

/* The chunks' run times added up, in s: how long the work took where it
 * ran, which grows when the workers lose their CPUs to other processes. */
static double chunk_time_s(const chunk_out_t *out, size_t n)
{
    int64_t t = 0;
    for (size_t i = 0; i < n; i++) t += out[i].end - out[i].start;
    return (double)t / 1e9;
}

/* *idle_us (may be NULL): idle_between_chunks_us of the map; *run_s (may
 * be NULL): chunk_time_s. */
static uint64_t primes_map(async_executor_t *ex, uint32_t limit, double *secs, double *cpu, double *idle_us,
                           double *run_s)
{
    enum { STEP = 100000 };
    size_t n = (limit + STEP - 1) / STEP;
    uint32_t (*in)[2] = malloc(n * sizeof *in);
    chunk_out_t *out = calloc(n, sizeof *out);
    for (size_t i = 0; i < n; i++) {
        in[i][0] = (uint32_t)(i * STEP);
        in[i][1] = (uint32_t)((i + 1) * STEP < limit ? (i + 1) * STEP : limit);
    }
    double t0 = now_s(), c0 = cpu_s();
    if (ex) {
        async_map_t m = {.fn = primes, .in = in, .in_size = sizeof in[0], .out = out,
                         .out_size = sizeof *out, .n = n, .chunksize = 1};
        if (async_executor_map(ex, &m, NULL)) {
            fprintf(stderr, "primes map failed\n");
            exit(1);
        }
    } else {
        for (size_t i = 0; i < n; i++) primes(in[i], sizeof in[i], &out[i], sizeof *out, NULL);
    }
    *secs = now_s() - t0;
    if (cpu) *cpu = (cpu_s() - c0) / *secs;
    uint64_t c = 0;
    for (size_t i = 0; i < n; i++) c += out[i].count;
    if (run_s) *run_s = chunk_time_s(out, n);
    if (idle_us) *idle_us = idle_between_chunks_us(out, n);
    free(in);
    free(out);
    return c;
}

static async_executor_t *procs(unsigned workers)
{
    async_executor_opts_t o = {.backend = ASYNC_BACKEND_PROCESSES, .workers = workers};
    async_executor_t *ex;
    if (async_executor_new(&ex, &o)) {
        fprintf(stderr, "process executor failed\n");
        exit(1);
    }
    return ex;
}

static int relaunch(char **argv)
{
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    setenv("OMPI_MCA_btl", "self,vader", 0);
    setenv("OMPI_MCA_pml", "ob1", 0);
    setenv("OMPI_MCA_oob_tcp_if_include", "lo", 0);
    int argc = 0;
    while (argv[argc]) argc++;
    char **a = calloc((size_t)argc + 8, sizeof *a);
    int k = 0;
    a[k++] = "mpirun";
    a[k++] = "--oversubscribe";
    a[k++] = "--bind-to";
    a[k++] = "none";
    a[k++] = "-np";
    a[k++] = "3";
    for (int i = 0; i < argc; i++) a[k++] = argv[i];
    execvp("mpirun", a);
    perror("mpirun");
    return 1;
}

int main(int argc, char **argv)
{
    if (!getenv("OMPI_COMM_WORLD_SIZE")) return relaunch(argv);
    uint32_t limit = 20000000;
    int trips = 20000;
    unsigned mpi_workers = 0; /* the backend's default: two slots per serving rank */
    for (int i = 1; i + 1 < argc; i++) {
        if (!strcmp(argv[i], "--limit")) limit = (uint32_t)atol(argv[++i]);
        else if (!strcmp(argv[i], "--trips")) trips = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--mpi-workers")) mpi_workers = (unsigned)atoi(argv[++i]);
    }
    char msg[256];
    int r = async_mpi_init(&argc, &argv, NULL, msg, sizeof msg);
    if (r) {
        fprintf(stderr, "async_mpi_init: %s: %s\n", async_errname(r), msg);
        return 1;
    }
    async_executor_t *mpi;
    async_executor_opts_t o = {.backend = ASYNC_BACKEND_MPI, .workers = mpi_workers};
    if ((r = async_executor_new(&mpi, &o))) {
        fprintf(stderr, "MPI executor: %s\n", async_errname(r));
        return 1;
    }
    unsigned serving = (unsigned)async_mpi_size() - 1;
    bench_start("bench-mpi");
    bench_note("ranks: %d, serving workers: %u", async_mpi_size(), async_executor_workers(mpi));
    async_executor_t *p1 = procs(1), *p2 = procs(2);
    enum { ROWS = 1000000 };
    int32_t *rows = malloc((size_t)ROWS * COLS * sizeof *rows);
    uint32_t *idx = malloc(ROWS * sizeof *idx), *c1 = malloc(ROWS * 4), *c2 = malloc(ROWS * 4);
    srand(42);
    for (size_t i = 0; i < (size_t)ROWS * COLS; i++) rows[i] = rand() % 10;
    for (uint32_t i = 0; i < ROWS; i++) idx[i] = i;
    uint64_t s0 = 0;
    for (uint32_t i = 0; i < ROWS; i++) {
        uint32_t c;
        howmany_row(rows + (size_t)i * COLS, COLS * 4, &c, 4, NULL);
        s0 += c;
    }
    /* The rows go to every rank once, not once a round. */
    double t0 = now_s();
    if (async_mpi_bcast(mpi, rows, (size_t)ROWS * COLS * sizeof *rows)) {
        fprintf(stderr, "bcast failed\n");
        return 1;
    }
    bench_add("howmany bcast of the rows (20 MB, once)", "s", now_s() - t0);
    int rounds = bench_rounds();
    bool ok = true;
    for (int round = 0; round < rounds; round++) {
        bench_add("round trip mpi", "us", round_trip(mpi, trips));
        bench_add("round trip processes (1 worker)", "us", round_trip(p1, trips));
        bench_add("round trip mpi, submit and wait", "us", round_trip_submit(mpi, trips / 10));
        bench_add("round trip processes, submit and wait", "us", round_trip_submit(p1, trips / 10));
        double ts, tp, tm, cpu0, idle_p, idle_m = 0, idle_1 = 0, run_s, run_p, run_m = 0, run_1 = 0;
        uint64_t cs = primes_map(NULL, limit, &ts, NULL, NULL, &run_s);
        uint64_t cp = primes_map(p2, limit, &tp, NULL, &idle_p, &run_p);
        /* Which of the two MPI sides goes first alternates: the one after
         * the process pool's map must not always pay for what that left
         * running. */
        double t1;
        uint64_t cm = 0, c1slot = 0;
        for (int k = 0; k < 2; k++) {
            if ((k + round) % 2 == 0) {
                cm = primes_map(mpi, limit, &tm, &cpu0, &idle_m, &run_m);
            } else {
                atomic_store(&async__mpi_slot_cap, serving);
                c1slot = primes_map(mpi, limit, &t1, NULL, &idle_1, &run_1);
                atomic_store(&async__mpi_slot_cap, 0);
            }
        }
        if (cs != cp || cs != cm || cs != c1slot) {
            bench_note("primes MISMATCH: %llu serial, %llu processes, %llu mpi, %llu mpi 1 slot/rank",
                       (unsigned long long)cs, (unsigned long long)cp, (unsigned long long)cm,
                       (unsigned long long)c1slot);
            ok = false;
        } else if (round == 0) {
            bench_note("primes below %u: %llu on every side", limit, (unsigned long long)cs);
        }
        bench_add("primes serial", "s", ts);
        bench_add("primes processes 2 workers", "s", tp);
        bench_add("primes mpi 2 ranks", "s", tm);
        bench_add("primes mpi 2 ranks, 1 slot per rank (no prefetch)", "s", t1);
        bench_add("primes: the chunks' run times added up, serial", "s", run_s);
        bench_add("primes: the chunks' run times added up, processes", "s", run_p);
        bench_add("primes: the chunks' run times added up, mpi", "s", run_m);
        bench_add("primes: the chunks' run times added up, mpi 1 slot per rank", "s", run_1);
        bench_add("primes: a worker's idle time between its chunks, processes", "us", idle_p);
        bench_add("primes: a worker's idle time between its chunks, mpi", "us", idle_m);
        bench_add("primes: a worker's idle time between its chunks, mpi 1 slot per rank", "us", idle_1);
        bench_add("primes mpi: rank 0 CPU while the ranks compute", "% of a CPU", 100 * cpu0);
        async_map_t m1 = {.fn = howmany_ctx, .ctx = rows, .in = idx, .in_size = 4, .out = c1,
                          .out_size = 4, .n = ROWS};
        t0 = now_s();
        int e1 = async_executor_map(mpi, &m1, NULL);
        bench_add("howmany map over bcast rows", "s", now_s() - t0);
        async_map_t m2 = {.fn = howmany_row, .in = rows, .in_size = COLS * 4, .out = c2,
                          .out_size = 4, .n = ROWS};
        t0 = now_s();
        int e2 = async_executor_map(mpi, &m2, NULL);
        bench_add("howmany map shipping rows", "s", now_s() - t0);
        uint64_t s1 = 0, s2 = 0;
        for (uint32_t i = 0; i < ROWS; i++) s1 += c1[i], s2 += c2[i];
        if (e1 || e2 || s1 != s0 || s2 != s0) {
            bench_note("howmany MISMATCH: %llu serial, %llu bcast, %llu shipped",
                       (unsigned long long)s0, (unsigned long long)s1, (unsigned long long)s2);
            ok = false;
        } else if (round == 0) {
            bench_note("howmany total: %llu on every side", (unsigned long long)s0);
        }
    }
    bench_ratio("round trip: processes' / mpi's", "round trip processes (1 worker)", "round trip mpi");
    bench_ratio("primes mpi speedup vs serial", "primes serial", "primes mpi 2 ranks");
    bench_ratio("primes mpi vs processes", "primes processes 2 workers", "primes mpi 2 ranks");
    bench_ratio("primes mpi: 1 slot per rank / the default slots",
                "primes mpi 2 ranks, 1 slot per rank (no prefetch)", "primes mpi 2 ranks");
    bench_ratio("primes processes speedup vs serial", "primes serial", "primes processes 2 workers");
    bench_print();
    free(rows), free(idx), free(c1), free(c2);
    async_executor_free(p1);
    async_executor_free(p2);
    async_executor_free(mpi);
    async_mpi_finalize();
    return ok ? 0 : 1;
}
