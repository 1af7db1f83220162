/* Benchmarks of the process pool (the executor's process backend), each
 * printed beside its baseline measured in the same run: serial C, a pipe
 * ping-pong between two processes, and the labs' Python multiprocessing code
 * (tests/bench/peer-procs.py, run first so that it does not compete).
 *
 *   bench-procs [--scale S] [--no-python]
 *
 * --scale shrinks the busy-work figure ([1, 2, 4, 6] s times S; default 1). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <async.h>
#include <async/executor.h>
#include <async/future.h>
#include "../../lib/procpool_internal.h"


static double now_s(void) { return (double)async_now() / 1e9; }

static double peer(const char *text, const char *name)
{
    const char *p = text ? strstr(text, name) : NULL;
    return p ? atof(p + strlen(name)) : -1;
}

static void print_peer(const char *label, const char *py, const char *name, double mul,
                       const char *unit)
{
    double v = peer(py, name);
    if (v < 0) printf("%s: n/a\n", label);
    else printf("%s: %.3f %s\n", label, v * mul, unit);
}

static async_executor_t *procs(unsigned workers)
{
    async_executor_opts_t o = {.backend = ASYNC_BACKEND_PROCESSES, .workers = workers};
    async_executor_t *ex;
    int r = async_executor_new(&ex, &o);
    if (r) {
        fprintf(stderr, "executor: %s\n", async_strerror(r));
        exit(1);
    }
    return ex;
}

/* --- work functions ------------------------------------------------------------- */

static int square(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out_size, (void)ctx;
    int64_t v;
    memcpy(&v, in, sizeof v);
    v *= v;
    memcpy(out, &v, sizeof v);
    return 0;
}

static int howmany(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out_size, (void)ctx;
    const int *row = in;
    int c = 0;
    for (int j = 0; j < 5; j++) c += row[j] >= 4 && row[j] <= 8;
    memcpy(out, &c, sizeof c);
    return 0;
}

static int busy(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out, (void)out_size, (void)ctx;
    double s;
    memcpy(&s, in, sizeof s);
    usleep((useconds_t)(s * 1e6));
    return 0;
}

static int suicide(void *ctx, const void *in, size_t n, async__procout_t *out)
{
    (void)ctx, (void)in, (void)n, (void)out;
    raise(SIGKILL);
    return 0;
}

/* --- per-task overhead and round trip ---------------------------------------------- */

static double per_task_us(async_executor_t *ex, int n)
{
    async_future_t **fs = malloc(n * sizeof *fs);
    double t0 = now_s();
    for (int i = 0; i < n; i++) {
        int64_t v = i;
        async_job_t job = {.fn = square, .in = &v, .in_size = sizeof v, .out_size = sizeof v};
        if (async_executor_submit(ex, &job, &fs[i])) exit(1);
    }
    for (int i = 0; i < n; i++) {
        async_future_wait(fs[i]);
        async_future_free(fs[i]);
    }
    double dt = now_s() - t0;
    free(fs);
    return dt / n * 1e6;
}

/* One task at a time (submit, wait) beside a pipe ping-pong between two
 * processes, in alternating rounds so that both see the same machine; the
 * best round of each is reported (the machine is shared and noisy). */
static void round_trips(async_executor_t *ex, double *ours_us, double *pipe_us)
{
    int a[2], b[2];
    if (pipe(a) || pipe(b)) exit(1);
    pid_t pid = fork();
    if (pid == 0) {
        close(a[1]);
        close(b[0]);
        char c;
        while (read(a[0], &c, 1) == 1) {
            if (write(b[1], &c, 1) != 1) break;
        }
        _exit(0);
    }
    close(a[0]);
    close(b[1]);
    int64_t v = 3, out;
    async_job_t job = {.fn = square, .in = &v, .in_size = sizeof v, .out_size = sizeof v};
    for (int i = 0; i < 200; i++) async_executor_run(ex, &job, &out, NULL, NULL);
    *ours_us = *pipe_us = 1e9;
    for (int round = 0; round < 10; round++) {
        enum { N = 500 };
        double t0 = now_s();
        for (int i = 0; i < N; i++) async_executor_run(ex, &job, &out, NULL, NULL);
        double dt = (now_s() - t0) / N * 1e6;
        if (dt < *ours_us) *ours_us = dt;
        char c = 'x';
        t0 = now_s();
        for (int i = 0; i < N; i++) {
            if (write(a[1], &c, 1) != 1 || read(b[0], &c, 1) != 1) exit(1);
        }
        dt = (now_s() - t0) / N * 1e6;
        if (dt < *pipe_us) *pipe_us = dt;
    }
    close(a[1]);
    waitpid(pid, NULL, 0);
    close(b[0]);
}

/* The engine alone, without futures: submit n jobs, wait for all. */
static atomic_int eng_done;
static void eng_cb(void *u, void *a, int e, const char *m, const void *o, size_t l)
{
    (void)u, (void)a, (void)e, (void)m, (void)o, (void)l;
    atomic_fetch_add(&eng_done, 1);
}

static int eng_square(void *ctx, const void *in, size_t n, async__procout_t *out)
{
    (void)ctx, (void)n;
    int64_t v;
    memcpy(&v, in, sizeof v);
    v *= v;
    memcpy(async__procout_data(out), &v, sizeof v);
    return 0;
}

static double engine_per_task_us(int n)
{
    async__procpool_opts_t o = {.workers = 2, .idle_spin_ns = -1};
    async__procpool_t *p;
    if (async__procpool_new(&o, &p)) return -1;
    async__procpool_wait_ready(p, ASYNC_FOREVER);
    atomic_store(&eng_done, 0);
    double t0 = now_s();
    for (int64_t i = 0; i < n; i++) {
        async__procjob_t j = {.fn = (async__anyfn_t)eng_square, .in = &i, .in_len = sizeof i,
                              .out_cap = 8, .deadline = ASYNC_FOREVER, .done = eng_cb};
        async__procpool_submit(p, &j, NULL);
    }
    while (atomic_load(&eng_done) < n) usleep(50);
    double dt = now_s() - t0;
    async__procpool_free(p);
    return dt / n * 1e6;
}

/* --- pool start and worker replacement ------------------------------------------------ */

static double pool_start_ms(unsigned workers)
{
    double best = 1e9;
    for (int r = 0; r < 5; r++) {
        async__procpool_opts_t o = {.workers = workers, .idle_spin_ns = -1};
        async__procpool_t *p;
        double t0 = now_s();
        if (async__procpool_new(&o, &p)) return -1;
        async__procpool_wait_ready(p, ASYNC_FOREVER);
        double dt = now_s() - t0;
        async__procpool_free(p);
        if (dt < best) best = dt;
    }
    return best * 1e3;
}

static double replace_ms(double *detect_ms)
{
    async__procpool_opts_t o = {.workers = 2, .idle_spin_ns = -1};
    async__procpool_t *p;
    if (async__procpool_new(&o, &p)) return -1;
    async__procpool_wait_ready(p, ASYNC_FOREVER);
    enum { R = 20 };
    double total = 0, detect = 0;
    for (int r = 0; r < R; r++) {
        atomic_store(&eng_done, 0);
        double t0 = now_s();
        async__procjob_t j = {.fn = (async__anyfn_t)suicide, .out_cap = 8,
                              .deadline = ASYNC_FOREVER, .done = eng_cb};
        async__procpool_submit(p, &j, NULL);
        while (!atomic_load(&eng_done)) usleep(20);
        double t1 = now_s();
        /* The supervisor forks the replacement when it learns of the death. */
        while (async__procpool_wait_ready(p, async_deadline_after(0)) == ASYNC_ETIMEDOUT ||
               async__procpool_spawned(p) < (uint64_t)(3 + r))
            usleep(20);
        total += now_s() - t0;
        detect += t1 - t0;
    }
    async__procpool_free(p);
    *detect_ms = detect / R * 1e3;
    return total / R * 1e3;
}

/* --- maps ------------------------------------------------------------------------------ */

static void chunk_sweep(const char *py)
{
    enum { N = 100000 };
    int64_t *in = malloc(N * sizeof *in), *out = malloc(N * sizeof *out);
    for (int i = 0; i < N; i++) in[i] = i;
    double best_serial = 1e9;
    for (int r = 0; r < 20; r++) {
        double t0 = now_s();
        for (int i = 0; i < N; i++) square(&in[i], 8, &out[i], 8, NULL);
        __asm__ __volatile__("" ::: "memory");
        double dt = now_s() - t0;
        if (dt < best_serial) best_serial = dt;
    }
    printf("x*x over 100,000 items, serial C: %.3f ms\n", best_serial * 1e3);
    async_executor_t *ex = procs(0);
    size_t chunks[] = {1, 10, 100, 1000, 10000};
    char name[64];
    for (int k = 0; k < 5; k++) {
        double best = 1e9;
        int reps = chunks[k] < 100 ? 1 : 5;
        for (int r = 0; r < reps; r++) {
            async_map_t m = {.fn = square, .in = in, .in_size = 8, .out = out, .out_size = 8,
                             .n = N, .chunksize = chunks[k]};
            double t0 = now_s();
            if (async_executor_map(ex, &m, NULL)) exit(1);
            double dt = now_s() - t0;
            if (dt < best) best = dt;
        }
        for (int i = 0; i < N; i++)
            if (out[i] != (int64_t)i * i) exit(2);
        printf("x*x over 100,000 items, processes, chunk size %zu: %.3f ms\n", chunks[k],
               best * 1e3);
        snprintf(name, sizeof name, "chunk_%zu_s ", chunks[k]);
        char label[96];
        snprintf(label, sizeof label, "x*x over 100,000 items, Python Pool.map, chunk size %zu",
                 chunks[k]);
        print_peer(label, py, name, 1e3, "ms");
    }
    async_executor_free(ex);
    free(in);
    free(out);
}

static void howmany_shared(const char *py)
{
    enum { ROWS = 1000000 };
    async_executor_t *ex = procs(2);
    int *rows, *counts, *serial = malloc(ROWS * sizeof *serial);
    if (async_executor_shm_alloc(ex, (size_t)ROWS * 5 * sizeof(int), (void **)&rows) ||
        async_executor_shm_alloc(ex, (size_t)ROWS * sizeof(int), (void **)&counts))
        exit(1);
    srand(1);
    for (long i = 0; i < (long)ROWS * 5; i++) rows[i] = rand() % 10;
    double best_serial = 1e9, best_map = 1e9;
    for (int r = 0; r < 10; r++) {
        double t0 = now_s();
        for (long i = 0; i < ROWS; i++) howmany(rows + i * 5, 20, &serial[i], 4, NULL);
        __asm__ __volatile__("" ::: "memory");
        double dt = now_s() - t0;
        if (dt < best_serial) best_serial = dt;
        async_map_t m = {.fn = howmany, .in = rows, .in_size = 5 * sizeof(int), .out = counts,
                         .out_size = sizeof(int), .n = ROWS};
        t0 = now_s();
        if (async_executor_map(ex, &m, NULL)) exit(1);
        dt = now_s() - t0;
        if (dt < best_map) best_map = dt;
    }
    if (memcmp(serial, counts, ROWS * sizeof(int))) exit(3);
    printf("howmany_within_range, 1,000,000 rows, serial C: %.3f ms\n", best_serial * 1e3);
    printf("howmany_within_range, 1,000,000 rows in shared memory, 2 processes: %.3f ms\n",
           best_map * 1e3);
    printf("howmany_within_range speedup over serial C: %.2fx\n", best_serial / best_map);
    print_peer("howmany_within_range, Python serial", py, "howmany_serial_s ", 1e3, "ms");
    print_peer("howmany_within_range, Python Pool.map", py, "howmany_pool_s ", 1e3, "ms");
    async_executor_shm_free(ex, rows);
    async_executor_shm_free(ex, counts);
    async_executor_free(ex);
    free(serial);
}

static void busy_work(double scale, const char *py)
{
    async_executor_t *ex = procs(4);
    double secs[4] = {1 * scale, 2 * scale, 4 * scale, 6 * scale};
    async_map_t m = {.fn = busy, .in = secs, .in_size = sizeof(double), .n = 4, .chunksize = 1};
    double t0 = now_s();
    if (async_executor_map(ex, &m, NULL)) exit(1);
    double dt = now_s() - t0;
    printf("busy work [1, 2, 4, 6] s x %.2f, pool of 4, wall: %.3f s (ideal %.3f s, +%.2f%%)\n",
           scale, dt, secs[3], (dt / secs[3] - 1) * 100);
    if (scale == 1) print_peer("busy work, Python Pool(4).map, wall", py, "busy_s ", 1, "s");
    async_executor_free(ex);
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    double scale = 1;
    bool python = true;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--scale") && i + 1 < argc) scale = atof(argv[++i]);
        else if (!strcmp(argv[i], "--no-python")) python = false;
    }
    static char py[8192];
    if (python) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "python3 tests/bench/peer-procs.py%s 2>/dev/null",
                 scale == 1 ? "" : " --no-busy");
        FILE *f = popen(cmd, "r");
        size_t n = f ? fread(py, 1, sizeof py - 1, f) : 0;
        if (f) pclose(f);
        py[n] = 0;
    }

    double load[1] = {-1};
    if (getloadavg(load, 1) == 1) printf("machine load (1-minute average, %ld CPUs): %.2f\n",
                                         sysconf(_SC_NPROCESSORS_ONLN), load[0]);
    async_executor_t *ex = procs(2);
    double ov = per_task_us(ex, 50000);
    printf("per-task overhead, 50,000 trivial tasks, 2 processes, submit then wait all: %.2f us\n",
           ov);
    printf("per-task overhead, same through the engine without futures: %.2f us\n",
           engine_per_task_us(50000));
    print_peer("per-task overhead, Python Pool.apply_async, 20,000 tasks, 2 processes", py,
               "apply_async_us ", 1, "us");
    double rt, pp;
    round_trips(ex, &rt, &pp);
    printf("round trip of one task at a time (submit, wait), best of 10 rounds: %.2f us\n", rt);
    printf("round trip, C pipe ping-pong between two processes, best of 10 rounds: %.2f us\n",
           pp);
    print_peer("round trip, Python multiprocessing.Pipe ping-pong", py, "mp_pipe_us ", 1, "us");
    print_peer("round trip, Python Pool.apply_async().get()", py, "apply_get_us ", 1, "us");
    async_executor_free(ex);

    chunk_sweep(py);
    howmany_shared(py);
    busy_work(scale, py);

    printf("pool start, 2 workers (all ready): %.2f ms\n", pool_start_ms(2));
    printf("pool start, 16 workers (all ready): %.2f ms\n", pool_start_ms(16));
    print_peer("pool start, Python Pool(2) + first map", py, "pool_start_2_s ", 1e3, "ms");
    print_peer("pool start, Python Pool(16) + first map", py, "pool_start_16_s ", 1e3, "ms");
    double detect = 0;
    double rep = replace_ms(&detect);
    printf("killed worker: job failed after: %.2f ms\n", detect);
    printf("killed worker: replacement ready after: %.2f ms\n", rep);
    return 0;
}
