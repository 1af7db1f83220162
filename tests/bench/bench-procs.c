/* Benchmarks of the process pool (the executor's process backend), each
 * printed beside its baseline measured in the same run: serial C, a pipe
 * ping-pong between two processes, and the labs' Python multiprocessing code
 * (tests/bench/peer-procs.py, run once a round after ours, never at the same
 * time).  Each figure prints as median (min-max) over the rounds.
 *
 *   bench-procs [--scale S] [--no-python] [--round-trip]
 *
 * --scale shrinks the busy-work figure ([1, 2, 4, 6] s times S; default 1);
 * --round-trip measures only the one-job-at-a-time round trips (ours, the
 * pipe, the engine alone), without Python.  Ours is async_executor_run, which
 * on an idle pool takes the direct hand-over; "through the queue" is the
 * same run with a call deadline, which keeps it on the submit, feeder and
 * future path. */
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <async.h>
#include <async/executor.h>
#include <async/future.h>
#include "exec/procpool/procpool_internal.h"
#include "rounds.h"


static double now_s(void) { return (double)async_now() / 1e9; }

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
        if (async_executor_submit(&fs[i], ex, &job)) exit(1);
    }
    for (int i = 0; i < n; i++) {
        async_future_wait(fs[i]);
        async_future_unref(fs[i]);
    }
    double dt = now_s() - t0;
    free(fs);
    return dt / n * 1e6;
}

/* One job at a time through the engine alone (no executor, no feeder
 * thread, no future): the caller submits and sleeps on a futex that the
 * done callback, on the supervisor thread, sets.  The gap between this and
 * the executor's round trip is the executor's share. */
static _Atomic uint32_t rt_word;
static void rt_done(void *u, void *a, int e, const char *m, const void *o, size_t l)
{
    (void)u, (void)a, (void)e, (void)m, (void)o, (void)l;
    atomic_store(&rt_word, 1);
    syscall(SYS_futex, &rt_word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static int eng_square(void *ctx, const void *in, size_t n, async__procout_t *out);
static void eng_cb(void *u, void *a, int e, const char *m, const void *o, size_t l);

static void engine_round_trip(async__procpool_t *p)
{
    int64_t v = 3;
    async__procjob_t j = {.fn = (async__anyfn_t)eng_square, .in = &v, .in_len = sizeof v,
                          .out_cap = 8, .deadline = ASYNC_FOREVER, .done = rt_done};
    atomic_store(&rt_word, 0);
    if (async__procpool_submit(p, &j, NULL)) exit(1);
    while (!atomic_load(&rt_word)) syscall(SYS_futex, &rt_word, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
}

/* The same through async__procpool_call: the worker wakes the caller
 * directly, the supervisor thread takes no part. */
static void engine_call(async__procpool_t *p)
{
    int64_t v = 3;
    async__procjob_t j = {.fn = (async__anyfn_t)eng_square, .in = &v, .in_len = sizeof v,
                          .out_cap = 8, .deadline = ASYNC_FOREVER, .done = eng_cb};
    if (async__procpool_call(p, &j)) exit(1);
}

/* CPU time used so far by this process (all its threads) and every process
 * descended from it (the pools' fork servers and workers, the pipe's echo
 * process), in ns, from the scheduler's own accounting (/proc/.../schedstat,
 * nanoseconds, not ticks).  Spinning shows here, where wall time hides it. */
static int64_t schedstat_ns(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (!d) return 0;
    int64_t sum = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        char f[320];
        snprintf(f, sizeof f, "/proc/%d/task/%s/schedstat", (int)pid, e->d_name);
        FILE *fp = fopen(f, "r");
        long long ns;
        if (fp && fscanf(fp, "%lld", &ns) == 1) sum += ns;
        if (fp) fclose(fp);
    }
    closedir(d);
    return sum;
}

static pid_t parent_of(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *fp = fopen(path, "r");
    if (!fp) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    const char *rp = strrchr(buf, ')'); /* the name may hold spaces */
    int ppid = 0;
    if (!rp || sscanf(rp + 1, " %*c %d", &ppid) != 1) return 0;
    return ppid;
}

/* This process and its descendants, listed once (a walk of /proc) so that
 * each reading opens only their files. */
static pid_t tree[64];
static int ntree;

static void list_tree(void)
{
    pid_t self = getpid();
    ntree = 0;
    tree[ntree++] = self;
    DIR *d = opendir("/proc");
    if (!d) return;
    for (struct dirent *e; (e = readdir(d)) && ntree < 64;) {
        pid_t pid = (pid_t)atoi(e->d_name);
        if (pid <= 0 || pid == self) continue;
        for (pid_t a = parent_of(pid), hops = 0; a > 1 && hops < 8; a = parent_of(a), hops++) {
            if (a == self) {
                tree[ntree++] = pid;
                break;
            }
        }
    }
    closedir(d);
}

static int64_t tree_cpu_ns(void)
{
    int64_t sum = 0;
    for (int i = 0; i < ntree; i++) sum += schedstat_ns(tree[i]);
    return sum;
}

/* One task at a time (submit, wait) beside a pipe ping-pong between two
 * processes and the engine's own round trip, alternating in blocks of
 * BLOCK within the round so that all three see the same machine (it is
 * shared: only figures of one run compare). */
static void run_queued(async_executor_t *ex, const async_job_t *job, int64_t *out)
{
    /* A call deadline earlier than the job's end could be: not direct. */
    async_executor_run_dl(ex, job, out, NULL, NULL, 0, async_deadline_after(ASYNC_SEC(600)));
}

static void round_trips(async_executor_t *ex, double *ours_us, double *pipe_us, double *eng_us,
                        double *call_us, double *queued_us, double *call_blocking_us,
                        double *ours_cpu_us, double *pipe_cpu_us)
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
    async__procpool_opts_t po = {.workers = 2, .idle_spin_ns = -1};
    async__procpool_t *p, *blocking;
    if (async__procpool_new(&po, &p) || async__procpool_wait_ready(p, ASYNC_FOREVER)) exit(1);
    /* The direct call as it was before the spins: both sides always sleep. */
    po.call_spin_ns = -1;
    if (async__procpool_new(&po, &blocking) || async__procpool_wait_ready(blocking, ASYNC_FOREVER))
        exit(1);
    int64_t v = 3, out;
    async_job_t job = {.fn = square, .in = &v, .in_size = sizeof v, .out_size = sizeof v};
    char c = 'x';
    for (int i = 0; i < 200; i++) {
        async_executor_run(ex, &job, &out, NULL, NULL, 0);
        run_queued(ex, &job, &out);
        engine_round_trip(p);
        engine_call(p);
        engine_call(blocking);
        if (write(a[1], &c, 1) != 1 || read(b[0], &c, 1) != 1) exit(1);
    }
    list_tree();
    enum { BLOCKS = 10, BLOCK = 200 };
    double ours = 0, piped = 0, eng = 0, call = 0, queued = 0, call_blocking = 0;
    int64_t ours_cpu = 0, pipe_cpu = 0;
    for (int k = 0; k < BLOCKS; k++) {
        int64_t c0 = tree_cpu_ns();
        double t0 = now_s();
        for (int i = 0; i < BLOCK; i++) async_executor_run(ex, &job, &out, NULL, NULL, 0);
        double t1 = now_s();
        int64_t c1 = tree_cpu_ns();
        for (int i = 0; i < BLOCK; i++) {
            if (write(a[1], &c, 1) != 1 || read(b[0], &c, 1) != 1) exit(1);
        }
        double t2 = now_s();
        int64_t c2 = tree_cpu_ns();
        /* A reading's own cost (a few small files) falls in the CPU sums
         * of both, once per block. */
        ours_cpu += c1 - c0;
        pipe_cpu += c2 - c1;
        for (int i = 0; i < BLOCK; i++) engine_round_trip(p);
        double t3 = now_s();
        for (int i = 0; i < BLOCK; i++) engine_call(p);
        double t4 = now_s();
        for (int i = 0; i < BLOCK; i++) run_queued(ex, &job, &out);
        double t5 = now_s();
        for (int i = 0; i < BLOCK; i++) engine_call(blocking);
        double t6 = now_s();
        queued += t5 - t4;
        call_blocking += t6 - t5;
        ours += t1 - t0;
        piped += t2 - t1;
        eng += t3 - t2;
        call += t4 - t3;
    }
    if (out != 9) exit(2);
    *ours_us = ours / (BLOCKS * BLOCK) * 1e6;
    *pipe_us = piped / (BLOCKS * BLOCK) * 1e6;
    *eng_us = eng / (BLOCKS * BLOCK) * 1e6;
    *call_us = call / (BLOCKS * BLOCK) * 1e6;
    *queued_us = queued / (BLOCKS * BLOCK) * 1e6;
    *call_blocking_us = call_blocking / (BLOCKS * BLOCK) * 1e6;
    *ours_cpu_us = ours_cpu / 1e3 / (BLOCKS * BLOCK);
    *pipe_cpu_us = pipe_cpu / 1e3 / (BLOCKS * BLOCK);
    async__procpool_free(p);
    async__procpool_free(blocking);
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
    async__procpool_opts_t o = {.workers = workers, .idle_spin_ns = -1};
    async__procpool_t *p;
    double t0 = now_s();
    if (async__procpool_new(&o, &p)) return -1;
    async__procpool_wait_ready(p, ASYNC_FOREVER);
    double dt = now_s() - t0;
    async__procpool_free(p);
    return dt * 1e3;
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

static void chunk_sweep(void)
{
    enum { N = 100000 };
    int64_t *in = malloc(N * sizeof *in), *out = malloc(N * sizeof *out);
    for (int i = 0; i < N; i++) in[i] = i;
    double t0 = now_s();
    for (int i = 0; i < N; i++) square(&in[i], 8, &out[i], 8, NULL);
    __asm__ __volatile__("" ::: "memory");
    bench_add("x*x over 100,000 items, serial C", "ms", (now_s() - t0) * 1e3);
    async_executor_t *ex = procs(0);
    static const size_t chunks[] = {1, 10, 100, 1000, 10000};
    for (int k = 0; k < 5; k++) {
        async_map_t m = {.fn = square, .in = in, .in_size = 8, .out = out, .out_size = 8,
                         .n = N, .chunksize = chunks[k]};
        t0 = now_s();
        if (async_executor_map(ex, &m, NULL)) exit(1);
        double dt = now_s() - t0;
        for (int i = 0; i < N; i++)
            if (out[i] != (int64_t)i * i) exit(2);
        char name[96];
        snprintf(name, sizeof name, "x*x over 100,000 items, processes, chunk size %zu", chunks[k]);
        bench_add(name, "ms", dt * 1e3);
    }
    async_executor_free(ex);
    free(in);
    free(out);
}

static void howmany_shared(void)
{
    enum { ROWS = 1000000 };
    async_executor_t *ex = procs(2);
    int *rows, *counts, *serial = malloc(ROWS * sizeof *serial);
    if (async_executor_shm_alloc((void **)&rows, ex, (size_t)ROWS * 5 * sizeof(int)) ||
        async_executor_shm_alloc((void **)&counts, ex, (size_t)ROWS * sizeof(int)))
        exit(1);
    srand(1);
    for (long i = 0; i < (long)ROWS * 5; i++) rows[i] = rand() % 10;
    /* Serial and map alternate within the round, three times each: these are
     * a few ms long, so one descheduling would otherwise decide the round. */
    double best_serial = 1e9, best_map = 1e9;
    for (int r = 0; r < 3; r++) {
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
    bench_add("howmany_within_range, 1,000,000 rows, serial C (best of 3 in the round)", "ms", best_serial * 1e3);
    bench_add("howmany_within_range, 1,000,000 rows in shared memory, 2 processes (best of 3 in the round)",
              "ms", best_map * 1e3);
    async_executor_shm_free(ex, rows);
    async_executor_shm_free(ex, counts);
    async_executor_free(ex);
    free(serial);
}

static void busy_work(double scale)
{
    async_executor_t *ex = procs(4);
    double secs[4] = {1 * scale, 2 * scale, 4 * scale, 6 * scale};
    async_map_t m = {.fn = busy, .in = secs, .in_size = sizeof(double), .n = 4, .chunksize = 1};
    double t0 = now_s();
    if (async_executor_map(ex, &m, NULL)) exit(1);
    double dt = now_s() - t0;
    char name[96];
    snprintf(name, sizeof name, "busy work [1, 2, 4, 6] s x %.2f, pool of 4, wall (ideal %.3f s)", scale, secs[3]);
    bench_add(name, "s", dt);
    async_executor_free(ex);
}

static void round_trip_round(async_executor_t *ex)
{
    double rt, pp, eng, call, queued, blocking, rt_cpu, pp_cpu;
    round_trips(ex, &rt, &pp, &eng, &call, &queued, &blocking, &rt_cpu, &pp_cpu);
    bench_add("round trip of one task at a time (async_executor_run)", "us", rt);
    bench_add("round trip, C pipe ping-pong between two processes (baseline)", "us", pp);
    bench_add("round trip, CPU per trip, async_executor_run (all threads and processes)", "us",
              rt_cpu);
    bench_add("round trip, CPU per trip, C pipe ping-pong (both processes)", "us", pp_cpu);
    bench_add("round trip, the engine alone (submit, done callback wakes the caller)", "us", eng);
    bench_add("round trip, the engine's direct call (async__procpool_call: the worker wakes the caller)",
              "us", call);
    bench_add("round trip, async_executor_run through the queue (a call deadline: submit, feeder, future)",
              "us", queued);
    bench_add("round trip, the engine's direct call, never spinning (call_spin_ns -1)", "us", blocking);
}

static void ours_round(double scale)
{
    async_executor_t *ex = procs(2);
    bench_add("per-task overhead, 50,000 trivial tasks, 2 processes, submit then wait all", "us",
              per_task_us(ex, 50000));
    bench_add("per-task overhead, same through the engine without futures", "us", engine_per_task_us(50000));
    round_trip_round(ex);
    async_executor_free(ex);

    chunk_sweep();
    howmany_shared();
    busy_work(scale);

    bench_add("pool start, 2 workers (all ready)", "ms", pool_start_ms(2));
    bench_add("pool start, 16 workers (all ready)", "ms", pool_start_ms(16));
    double detect = 0;
    double rep = replace_ms(&detect);
    bench_add("killed worker: job failed after", "ms", detect);
    bench_add("killed worker: replacement ready after", "ms", rep);
}

/* The killed-worker run waits 10 s when Python's Pool hangs, so it runs in
 * the first round only. */
static void python_round(double scale, bool first)
{
    static char py[8192];
    char cmd[128];
    snprintf(cmd, sizeof cmd, BENCH_PYTHON " tests/bench/peer-procs.py%s%s 2>/dev/null", scale == 1 ? "" : " --no-busy",
             first ? " --killed" : "");
    bench_peer_run(cmd, py, sizeof py);
    bench_add("per-task overhead, Python Pool.apply_async, 20,000 tasks, 2 processes", "us",
              bench_peer_value(py, "apply_async_us"));
    bench_add("round trip, Python multiprocessing.Pipe ping-pong", "us", bench_peer_value(py, "mp_pipe_us"));
    bench_add("round trip, Python Pool.apply_async().get()", "us", bench_peer_value(py, "apply_get_us"));
    static const int chunks[] = {1, 10, 100, 1000, 10000};
    for (int k = 0; k < 5; k++) {
        char key[32], name[96];
        snprintf(key, sizeof key, "chunk_%d_s", chunks[k]);
        snprintf(name, sizeof name, "x*x over 100,000 items, Python Pool.map, chunk size %d", chunks[k]);
        double v = bench_peer_value(py, key);
        bench_add(name, "ms", v < 0 ? v : v * 1e3);
    }
    double v = bench_peer_value(py, "howmany_serial_s");
    bench_add("howmany_within_range, Python serial", "ms", v < 0 ? v : v * 1e3);
    v = bench_peer_value(py, "howmany_pool_s");
    bench_add("howmany_within_range, Python Pool.map", "ms", v < 0 ? v : v * 1e3);
    if (scale == 1) bench_add("busy work, Python Pool(4).map, wall", "s", bench_peer_value(py, "busy_s"));
    v = bench_peer_value(py, "pool_start_2_s");
    bench_add("pool start, Python Pool(2) + first map", "ms", v < 0 ? v : v * 1e3);
    v = bench_peer_value(py, "pool_start_16_s");
    bench_add("pool start, Python Pool(16) + first map", "ms", v < 0 ? v : v * 1e3);
    v = bench_peer_value(py, "pool_killed_map_s");
    bench_add("killed worker, Python Pool(2).map: seconds until map returned (10 = still hung at 10 s)", "s", v);
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    double scale = 1;
    bool python = true, only_rt = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--scale") && i + 1 < argc) scale = atof(argv[++i]);
        else if (!strcmp(argv[i], "--no-python")) python = false;
        else if (!strcmp(argv[i], "--round-trip")) only_rt = true;
        else {
            fprintf(stderr, "usage: bench-procs [--scale S] [--no-python] [--round-trip]\n");
            return 2;
        }
    }
    bench_start("bench-procs");
    for (int r = 0; r < bench_rounds(); r++) {
        if (only_rt) {
            async_executor_t *ex = procs(2);
            round_trip_round(ex);
            async_executor_free(ex);
            continue;
        }
        ours_round(scale);
        if (python) python_round(scale, r == 0);
    }
    bench_ratio("round trip, ours over the pipe ping-pong (lower is better)",
                "round trip of one task at a time (async_executor_run)",
                "round trip, C pipe ping-pong between two processes (baseline)");
    bench_ratio("round trip, CPU per trip, ours over the pipe ping-pong",
                "round trip, CPU per trip, async_executor_run (all threads and processes)",
                "round trip, CPU per trip, C pipe ping-pong (both processes)");
    bench_ratio("round trip, the engine's direct call, spinning over never spinning",
                "round trip, the engine's direct call (async__procpool_call: the worker wakes the caller)",
                "round trip, the engine's direct call, never spinning (call_spin_ns -1)");
    bench_ratio("round trip, through the queue over the pipe ping-pong",
                "round trip, async_executor_run through the queue (a call deadline: submit, feeder, future)",
                "round trip, C pipe ping-pong between two processes (baseline)");
    bench_ratio("round trip, the engine alone over the pipe ping-pong",
                "round trip, the engine alone (submit, done callback wakes the caller)",
                "round trip, C pipe ping-pong between two processes (baseline)");
    bench_ratio("round trip, the engine's direct call over the pipe ping-pong",
                "round trip, the engine's direct call (async__procpool_call: the worker wakes the caller)",
                "round trip, C pipe ping-pong between two processes (baseline)");
    if (!only_rt)
        bench_ratio("howmany_within_range, speedup over serial C",
                "howmany_within_range, 1,000,000 rows, serial C (best of 3 in the round)",
                "howmany_within_range, 1,000,000 rows in shared memory, 2 processes (best of 3 in the round)");
    bench_print();
    /* The ratio's spread is mostly the machine's: each round's own pair says more. */
    printf("round trip, ours over the pipe ping-pong, each round:");
    for (int r = 0; r < bench_rounds(); r++)
        printf(" %.3g", bench_value("round trip, ours over the pipe ping-pong (lower is better)", r));
    printf("\n");
    return 0;
}
