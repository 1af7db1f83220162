/* The MPI backend's test program, run by tests/test-mpi.c under
 * `mpirun -np 3` (2 serving ranks): `mpi-suite CASE` runs one case on rank
 * 0, prints "PASS CASE" and exits 0, or prints what went wrong and exits 1.
 * Expected answers are computed here on rank 0 by calling the same work
 * functions directly, never typed in. */
#include <async.h>
#include <dlfcn.h>
#include <async/mpi.h>
#include <mpi.h>
#include "mpi/mpi_internal.h"
#include "work.h"
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>

static int failures;
#define CHECK(cond, ...)                                                                  \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                        \
            printf(__VA_ARGS__);                                                          \
            printf("\n");                                                                 \
            fflush(stdout);                                                               \
            failures++;                                                                   \
        }                                                                                 \
    } while (0)

/* --- work functions (registered on every rank) ------------------------------- */

int square(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out_size, (void)ctx;
    int64_t x;
    memcpy(&x, in, sizeof x);
    x = x * x + 1;
    memcpy(out, &x, sizeof x);
    return 0;
}
ASYNC_MPI_WORK(square);

typedef struct pair { int64_t a, b; } pair_t;

int add(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out_size, (void)ctx;
    const pair_t *p = in;
    int64_t s = p->a * 3 + p->b;
    memcpy(out, &s, sizeof s);
    return 0;
}
ASYNC_MPI_WORK(add);

/* Fails items whose value is a multiple of 7 (not 0). */
int picky(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out_size, (void)ctx;
    int64_t x;
    memcpy(&x, in, sizeof x);
    if (x && x % 7 == 0) return async_work_fail(ASYNC_EINVAL, "value %lld is a multiple of 7", (long long)x);
    memcpy(out, &x, sizeof x);
    return 0;
}
ASYNC_MPI_WORK(picky);

/* Results that answer no job of ours, sent to rank 0 by a serving rank
 * before its real reply: empty, too short to name a slot, and naming slots
 * that do not exist.  Rank 0 must drop each, not hand it to a slot. */
enum { FORGED_PER_CALL = 4 };

int forger(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)ctx;
    int64_t x;
    memcpy(&x, in, sizeof x);
    if (x < 3) {
        res_hdr_t h = {.slot = 1000};
        char three[3] = {0};
        MPI_Send(NULL, 0, MPI_BYTE, 0, TAG_RESULT, MPI_COMM_WORLD);
        MPI_Send(three, sizeof three, MPI_BYTE, 0, TAG_RESULT, MPI_COMM_WORLD);
        MPI_Send(&h, sizeof h, MPI_BYTE, 0, TAG_RESULT, MPI_COMM_WORLD);
        h.slot = DIRECT_SLOT - 1;
        MPI_Send(&h, sizeof h, MPI_BYTE, 0, TAG_RESULT, MPI_COMM_WORLD);
    }
    return square(in, in_size, out, out_size, NULL);
}
ASYNC_MPI_WORK(forger);

/* Crashes on 3, else returns x (and which rank ran it). */
int crashy(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out_size, (void)ctx;
    int64_t x;
    memcpy(&x, in, sizeof x);
    if (x == 3) raise(SIGSEGV);
    int64_t r[2] = {x, async_mpi_rank()};
    memcpy(out, r, sizeof r);
    return 0;
}
ASYNC_MPI_WORK(crashy);

/* Kills the whole rank (no process pool). */
int die(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in, (void)in_size, (void)out, (void)out_size, (void)ctx;
    raise(SIGKILL);
    return 0;
}
ASYNC_MPI_WORK(die);

/* A result of in bytes' value in length: 'a' + rank repeated. */
int grow(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out, (void)out_size, (void)ctx;
    uint32_t n;
    memcpy(&n, in, sizeof n);
    char *o = async_work_output(n);
    if (!o) return async_work_fail(ASYNC_ENOMEM, "no output of %u bytes", n);
    for (uint32_t i = 0; i < n; i++) o[i] = (char)('a' + i % 26);
    return 0;
}
ASYNC_MPI_WORK(grow);

/* Looks up row i of the replicated table in ctx. */
int lookup(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out_size;
    uint32_t i;
    memcpy(&i, in, sizeof i);
    if (!ctx) return async_work_fail(ASYNC_EINVAL, "no ctx");
    double v = ((const double *)ctx)[i] * 2.0;
    memcpy(out, &v, sizeof v);
    return 0;
}
ASYNC_MPI_WORK(lookup);

/* This rank's CPU time so far, and its rank. */
int cpu_ns(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in, (void)in_size, (void)out_size, (void)ctx;
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    int64_t r[2] = {(int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec, async_mpi_rank()};
    memcpy(out, r, sizeof r);
    return 0;
}
ASYNC_MPI_WORK(cpu_ns);

/* A static table that every rank builds alike: registered data. */
static int64_t offsets[4] = {10, 20, 30, 40};

int offset(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out_size;
    int64_t x;
    memcpy(&x, in, sizeof x);
    x += ((const int64_t *)ctx)[x % 4];
    memcpy(out, &x, sizeof x);
    return 0;
}
ASYNC_MPI_WORK(offset);

/* Sleeps in[0] milliseconds, then fills its output with 'z'. */
int nap_fill(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)ctx;
    int64_t ms;
    memcpy(&ms, in, sizeof ms);
    if (ms) usleep((useconds_t)(ms * 1000));
    memset(out, 'z', out_size);
    return 0;
}
ASYNC_MPI_WORK(nap_fill);

/* Not registered anywhere. */
int unregistered_fn(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    return square(in, in_size, out, out_size, ctx);
}

/* square over a run of items; an input of 1000001 fails its item. */
static int square_run(const void *in, size_t in_size, void *out, size_t out_size, size_t count,
                      size_t *failed, void *ctx)
{
    for (size_t k = 0; k < count; k++) {
        int64_t v;
        memcpy(&v, (const char *)in + k * in_size, sizeof v);
        if (v == 1000001) {
            *failed = k;
            return async_work_fail(ASYNC_EINVAL, "item %lld refused", (long long)v);
        }
        square((const char *)in + k * in_size, in_size, (char *)out + k * out_size, out_size, ctx);
    }
    return 0;
}
ASYNC_MPI_CHUNK(square_run);

/* Not registered anywhere (global, so that dladdr can name it). */
int square_run_unregistered(const void *in, size_t in_size, void *out, size_t out_size, size_t count,
                            size_t *failed, void *ctx);
int square_run_unregistered(const void *in, size_t in_size, void *out, size_t out_size, size_t count,
                            size_t *failed, void *ctx)
{
    return square_run(in, in_size, out, out_size, count, failed, ctx);
}

/* --- cases -------------------------------------------------------------------- */

static async_executor_t *ex;

static void c_map(void)
{
    enum { N = 1000 };
    static int64_t in[N], out[N], want[N];
    /* The default: two driver slots per serving rank (one job queued at
     * each rank while it runs one). */
    CHECK(async_executor_workers(ex) == 2u * (unsigned)(async_mpi_size() - 1), "default slots: %u",
          async_executor_workers(ex));
    for (int i = 0; i < N; i++) {
        in[i] = i - 300;
        square(&in[i], 8, &want[i], 8, NULL);
    }
    async_map_t m = {.fn = square, .in = in, .in_size = 8, .out = out, .out_size = 8, .n = N};
    async_map_error_t err;
    int r = async_executor_map(ex, &m, &err);
    CHECK(r == 0, "map: %s %s", async_errname(r), err.message);
    CHECK(!memcmp(out, want, sizeof out), "map results differ");
    /* map_async, awaited by a plain wait; chunks of 7. */
    memset(out, 0, sizeof out);
    m.chunksize = 7;
    async_future_t *f;
    CHECK(async_executor_map_async(&f, ex, &m, NULL, NULL, NULL) == 0, "map_async");
    CHECK(async_future_wait_dl(f, async_deadline_after(ASYNC_SEC(60))) == 0, "map_async wait");
    async_future_unref(f);
    CHECK(!memcmp(out, want, sizeof out), "map_async results differ");
    /* A chunk function, registered on every rank: one call a chunk. */
    memset(out, 0, sizeof out);
    async_map_t mc;
    async_map_init(&mc);
    mc.chunk_fn = square_run;
    mc.in = in;
    mc.in_size = 8;
    mc.out = out;
    mc.out_size = 8;
    mc.n = N;
    r = async_executor_map(ex, &mc, &err);
    CHECK(r == 0, "chunk_fn map: %s %s", async_errname(r), err.message);
    CHECK(!memcmp(out, want, sizeof out), "chunk_fn map results differ");
    /* A chunk function that fails names its item; one not registered is
     * refused with a message naming it. */
    in[700] = 1000001;
    r = async_executor_map(ex, &mc, &err);
    CHECK(r == ASYNC_EINVAL && err.index == 700, "failing chunk: %s at %zu (%s)", async_errname(r),
          err.index, err.message);
    in[700] = 700 - 300;
    mc.chunk_fn = square_run_unregistered;
    r = async_executor_map(ex, &mc, &err);
    CHECK(r == ASYNC_EINVAL && strstr(err.message, "square_run_unregistered") &&
              strstr(err.message, "ASYNC_MPI_CHUNK"),
          "unregistered chunk_fn: %s (%s)", async_errname(r), err.message);
}

static void c_stray(void)
{
    enum { N = 64 };
    static int64_t in[N], out[N], want[N];
    for (int i = 0; i < N; i++) {
        in[i] = i;
        square(&in[i], 8, &want[i], 8, NULL);
    }
    async_map_t m = {.fn = forger, .in = in, .in_size = 8, .out = out, .out_size = 8, .n = N, .chunksize = 1};
    async_map_error_t err;
    int r = async_executor_map(ex, &m, &err);
    CHECK(r == 0, "map: %s %s", async_errname(r), err.message);
    CHECK(!memcmp(out, want, sizeof out), "map results differ");
    /* Every forged result was seen and dropped: the serving ranks sent them
     * before their real replies, which have all come. */
    uint64_t stray = atomic_load(&async__mpi_stray_replies);
    CHECK(stray == 3 * FORGED_PER_CALL, "stray replies dropped: %llu", (unsigned long long)stray);
    /* The slots are not left holding a forged reply for a later job. */
    memset(out, 0, sizeof out);
    m.fn = square;
    CHECK((r = async_executor_map(ex, &m, &err)) == 0, "second map: %s %s", async_errname(r), err.message);
    CHECK(!memcmp(out, want, sizeof out), "second map results differ");
}

static void c_starmap(void)
{
    enum { N = 500 };
    static pair_t in[N];
    static int64_t out[N], want[N];
    for (int i = 0; i < N; i++) {
        in[i] = (pair_t){i, 1000 - i};
        add(&in[i], sizeof in[i], &want[i], 8, NULL);
    }
    async_map_t m = {.fn = add, .in = in, .in_size = sizeof in[0], .out = out, .out_size = 8, .n = N};
    int r = async_executor_map(ex, &m, NULL);
    CHECK(r == 0, "starmap: %s", async_errname(r));
    CHECK(!memcmp(out, want, sizeof out), "starmap results differ");
}

static void c_imap(void)
{
    enum { N = 300 };
    static int64_t in[N];
    for (int i = 0; i < N; i++) in[i] = i;
    for (int unordered = 0; unordered < 2; unordered++) {
        async_imap_t m = {.fn = square, .in = in, .n = N, .in_size = 8, .out_size = 8,
                          .chunksize = 4, .unordered = unordered};
        async_imap_iter_t *it;
        CHECK(async_executor_imap(&it, ex, &m) == 0, "imap");
        static bool seen[N];
        memset(seen, 0, sizeof seen);
        int64_t v;
        size_t idx, count = 0, last = 0;
        int r;
        bool ordered = true;
        while ((r = async_imap_next_dl(it, &v, &idx, async_deadline_after(ASYNC_SEC(60)))) == 0) {
            int64_t want;
            square(&in[idx], 8, &want, 8, NULL);
            CHECK(v == want, "imap item %zu: %lld != %lld", idx, (long long)v, (long long)want);
            if (count && idx != last + 1) ordered = false;
            CHECK(!seen[idx], "item %zu twice", idx);
            seen[idx] = true;
            last = idx;
            count++;
        }
        CHECK(r == ASYNC_EEOF, "imap end: %s", async_errname(r));
        CHECK(count == N, "imap gave %zu items", count);
        if (!unordered) CHECK(ordered, "imap out of order");
        async_imap_free(it);
    }
}

static void c_submit(void)
{
    enum { N = 64 };
    async_future_t *fs[N];
    int64_t in[N];
    for (int i = 0; i < N; i++) {
        in[i] = i * 11;
        async_job_t j = {.fn = square, .in = &in[i], .in_size = 8, .out_size = 8};
        CHECK(async_executor_submit(&fs[i], ex, &j) == 0, "submit %d", i);
    }
    for (int i = 0; i < N; i++) {
        CHECK(async_future_wait_dl(fs[i], async_deadline_after(ASYNC_SEC(60))) == 0, "wait %d", i);
        const void *d;
        size_t sz;
        CHECK(async_future_result(fs[i], &d, &sz) == 0 && sz == 8, "result %d", i);
        int64_t want, got;
        square(&in[i], 8, &want, 8, NULL);
        memcpy(&got, d, 8);
        CHECK(got == want, "submit %d: %lld != %lld", i, (long long)got, (long long)want);
        async_future_unref(fs[i]);
    }
    /* A variable-size result, larger than out_size. */
    uint32_t n = 100000;
    async_job_t j = {.fn = grow, .in = &n, .in_size = sizeof n, .out_size = 4};
    async_future_t *f;
    CHECK(async_executor_submit(&f, ex, &j) == 0, "submit grow");
    CHECK(async_future_wait(f) == 0, "grow: %s", async_future_message(f));
    const void *d;
    size_t sz = 0;
    async_future_result(f, &d, &sz);
    CHECK(sz == n, "grow size %zu", sz);
    bool same = sz == n;
    for (uint32_t i = 0; same && i < n; i++) same = ((const char *)d)[i] == (char)('a' + i % 26);
    CHECK(same, "grow bytes differ");
    async_future_unref(f);
    /* Both serving ranks take work: each runs cpu_ns at least once. */
    bool ranks[8] = {0};
    for (int round = 0; round < 50 && !(ranks[1] && ranks[2]); round++) {
        async_future_t *g[4];
        for (int i = 0; i < 4; i++) {
            async_job_t c = {.fn = cpu_ns, .out_size = 16};
            async_executor_submit(&g[i], ex, &c);
        }
        for (int i = 0; i < 4; i++) {
            async_future_wait(g[i]);
            const void *dd;
            size_t s2;
            if (!async_future_result(g[i], &dd, &s2) && s2 == 16) {
                int64_t r[2];
                memcpy(r, dd, 16);
                if (r[1] > 0 && r[1] < 8) ranks[r[1]] = true;
            }
            async_future_unref(g[i]);
        }
    }
    CHECK(ranks[1] && ranks[2], "ranks used: 1=%d 2=%d", ranks[1], ranks[2]);
}

static int await_task(void *arg, void **result)
{
    (void)result;
    int64_t x = 12, got = 0;
    async_job_t j = {.fn = square, .in = &x, .in_size = 8, .out_size = 8};
    int r = async_executor_run(ex, &j, &got, NULL, NULL, 0);
    *(int64_t *)arg = r ? -1 : got;
    return 0;
}

static void c_await(void)
{
    async_loop_t *loop;
    int64_t got = 0, want;
    int64_t x = 12;
    square(&x, 8, &want, 8, NULL);
    CHECK(async_loop_new(&loop) == 0, "loop");
    CHECK(async_task_spawn(NULL, loop, await_task, &got,
                           &(async_task_opts_t){.detached = true}) == 0,
          "spawn");
    CHECK(async_loop_run(loop, ASYNC_RUN_DEFAULT) == 0, "run");
    async_loop_destroy(loop);
    CHECK(got == want, "awaited %lld, want %lld", (long long)got, (long long)want);
}

static void c_errors(void)
{
    enum { N = 100 };
    static int64_t in[N], out[N];
    for (int i = 0; i < N; i++) in[i] = i;
    async_map_t m = {.fn = picky, .in = in, .in_size = 8, .out = out, .out_size = 8, .n = N,
                     .chunksize = 5};
    async_map_error_t err;
    int r = async_executor_map(ex, &m, &err);
    CHECK(r == ASYNC_EINVAL, "map error %s", async_errname(r));
    CHECK(err.index == 7, "lowest failing item %zu", err.index);
    CHECK(strstr(err.message, "value 7 is a multiple of 7") != NULL, "message '%s'", err.message);
    /* a failed submit carries code and message; the pool serves on */
    int64_t x = 14;
    async_job_t j = {.fn = picky, .in = &x, .in_size = 8, .out_size = 8};
    char msg[ASYNC_FUTURE_MSG_MAX];
    r = async_executor_run(ex, &j, NULL, NULL, msg, sizeof msg);
    CHECK(r == ASYNC_EINVAL && strstr(msg, "value 14"), "run: %s '%s'", async_errname(r), msg);
    /* an unregistered ctx */
    int64_t y = 2, got = 0;
    async_job_t k = {.fn = square, .in = &y, .in_size = 8, .out_size = 8, .ctx = &y};
    r = async_executor_run(ex, &k, &got, NULL, msg, sizeof msg);
    CHECK(r == ASYNC_EINVAL && strstr(msg, "ctx"), "ctx: %s '%s'", async_errname(r), msg);
    /* registered data as ctx */
    async_job_t o = {.fn = offset, .in = &y, .in_size = 8, .out_size = 8, .ctx = offsets};
    int64_t want;
    offset(&y, 8, &want, 8, offsets);
    r = async_executor_run(ex, &o, &got, NULL, msg, sizeof msg);
    CHECK(r == 0 && got == want, "registered data: %s %lld", async_errname(r), (long long)got);
    r = async_executor_run(ex, &j, NULL, NULL, msg, sizeof msg);
    CHECK(r == ASYNC_EINVAL, "still serving after errors: %s", async_errname(r));
    m.fn = square;
    CHECK(async_executor_map(ex, &m, NULL) == 0, "map after errors");
}

static void c_unregistered(void)
{
    int64_t x = 3;
    async_job_t j = {.fn = unregistered_fn, .in = &x, .in_size = 8, .out_size = 8};
    char msg[ASYNC_FUTURE_MSG_MAX];
    int r = async_executor_run(ex, &j, NULL, NULL, msg, sizeof msg);
    CHECK(r == ASYNC_EINVAL, "unregistered: %s", async_errname(r));
    CHECK(strstr(msg, "unregistered_fn") && strstr(msg, "not registered"), "message '%s'", msg);
    static int64_t in[10], out[10];
    async_map_t m = {.fn = unregistered_fn, .in = in, .in_size = 8, .out = out, .out_size = 8, .n = 10};
    async_map_error_t err;
    r = async_executor_map(ex, &m, &err);
    CHECK(r == ASYNC_EINVAL && strstr(err.message, "unregistered_fn"), "map: %s '%s'",
          async_errname(r), err.message);
    printf("message: %s\n", msg);
}

/* --- the direct path of async_executor_run ----------------------------------- */

/* Runs completed by the direct path (lib/mpi/backend.c). */
extern _Atomic uint64_t async__mpi_direct_runs;
static uint64_t direct_runs(void) { return atomic_load(&async__mpi_direct_runs); }

/* Runs square on n values from base through async_executor_run; returns
 * how many answers were wrong. */
static int run_squares(int64_t base, int n)
{
    int wrong = 0;
    for (int i = 0; i < n; i++) {
        int64_t x = base + i, got = -1, want;
        size_t len = 0;
        square(&x, 8, &want, 8, NULL);
        async_job_t j = {.fn = square, .in = &x, .in_size = 8, .out_size = 8};
        if (async_executor_run(ex, &j, &got, &len, NULL, 0) || got != want || len != 8) wrong++;
    }
    return wrong;
}

static void *squares_thread(void *arg)
{
    return (void *)(intptr_t)run_squares((int64_t)(intptr_t)arg, 300);
}

static int direct_task(void *arg, void **result)
{
    (void)result;
    *(int *)arg = run_squares(1000, 20);
    return 0;
}

static void c_direct(void)
{
    /* A plain thread on an idle pool: every run takes the direct path. */
    uint64_t d0 = direct_runs();
    CHECK(run_squares(-50, 200) == 0, "plain thread runs");
    CHECK(direct_runs() - d0 == 200, "%llu of 200 runs took the direct path",
          (unsigned long long)(direct_runs() - d0));

    /* A failing function: its code and message, the output left alone. */
    int64_t x = 14, got = -1;
    size_t len = 99;
    char msg[ASYNC_FUTURE_MSG_MAX];
    d0 = direct_runs();
    async_job_t j = {.fn = picky, .in = &x, .in_size = 8, .out_size = 8};
    int r = async_executor_run(ex, &j, &got, &len, msg, sizeof msg);
    CHECK(r == ASYNC_EINVAL && strstr(msg, "value 14 is a multiple of 7"), "failing: %s '%s'",
          async_errname(r), msg);
    CHECK(got == -1 && len == 0, "failing run wrote %lld, len %zu", (long long)got, len);

    /* An unregistered function: EINVAL naming it, as the ordinary path. */
    j = (async_job_t){.fn = unregistered_fn, .in = &x, .in_size = 8, .out_size = 8};
    r = async_executor_run(ex, &j, &got, NULL, msg, sizeof msg);
    CHECK(r == ASYNC_EINVAL && strstr(msg, "unregistered_fn") && strstr(msg, "not registered"),
          "unregistered: %s '%s'", async_errname(r), msg);

    /* A variable result past out_size: its first out_size bytes, whole size. */
    uint32_t n = 100;
    char head[8] = {0};
    j = (async_job_t){.fn = grow, .in = &n, .in_size = sizeof n, .out_size = sizeof head};
    r = async_executor_run(ex, &j, head, &len, msg, sizeof msg);
    CHECK(r == 0 && len == 100 && !memcmp(head, "abcdefgh", 8), "grow: %s len %zu '%.8s' '%s'",
          async_errname(r), len, head, msg);
    CHECK(direct_runs() - d0 == 3, "%llu of 3 runs took the direct path",
          (unsigned long long)(direct_runs() - d0));

    /* From a task: the ordinary path (the task awaits its future). */
    d0 = direct_runs();
    async_loop_t *loop;
    int wrong = -1;
    CHECK(async_loop_new(&loop) == 0, "loop");
    CHECK(async_task_spawn(NULL, loop, direct_task, &wrong, &(async_task_opts_t){.detached = true}) == 0,
          "spawn");
    CHECK(async_loop_run(loop, ASYNC_RUN_DEFAULT) == 0, "run");
    async_loop_destroy(loop);
    CHECK(wrong == 0, "task runs: %d wrong", wrong);
    CHECK(direct_runs() == d0, "a task's run took the direct path");

    /* Both ranks busy with submitted jobs and the queue empty: the run
     * must not wait behind them on the direct path, it takes the queue. */
    int64_t ms = 400;
    async_future_t *busy[2];
    async_job_t nap = {.fn = nap_ms, .in = &ms, .in_size = 8};
    for (int i = 0; i < 2; i++) CHECK(async_executor_submit(&busy[i], ex, &nap) == 0, "submit nap");
    usleep(100000); /* the slots have sent them */
    d0 = direct_runs();
    CHECK(run_squares(7, 1) == 0, "run while the ranks are busy");
    CHECK(direct_runs() == d0, "a run took the direct path to a busy rank");
    for (int i = 0; i < 2; i++) {
        CHECK(async_future_wait(busy[i]) == 0, "nap job");
        async_future_unref(busy[i]);
    }

    /* A map in flight while two threads run: every answer right. */
    static int64_t mi[40], mo[40], want[40];
    for (int i = 0; i < 40; i++) {
        mi[i] = i;
        square(&mi[i], 8, &want[i], 8, NULL);
    }
    async_map_t m = {.fn = square, .in = mi, .in_size = 8, .out = mo, .out_size = 8, .n = 40,
                     .chunksize = 1};
    async_future_t *mf;
    CHECK(async_executor_map_async(&mf, ex, &m, NULL, NULL, NULL) == 0, "map_async");
    pthread_t t[2];
    for (intptr_t i = 0; i < 2; i++) pthread_create(&t[i], NULL, squares_thread, (void *)(i * 1000));
    for (int i = 0; i < 2; i++) {
        void *bad;
        pthread_join(t[i], &bad);
        CHECK(bad == NULL, "thread %d: %d wrong answers", i, (int)(intptr_t)bad);
    }
    CHECK(async_future_wait(mf) == 0, "map: %s", async_future_message(mf));
    async_future_unref(mf);
    CHECK(!memcmp(mo, want, sizeof mo), "the map beside the runs differs");

    /* A timed run: the direct path too.  Without a pool on the ranks the
     * job cannot be stopped, so the run gives up at its deadline, the job
     * runs on and its reply is dropped; the rank serves on after it. */
    d0 = direct_runs();
    x = 9;
    int64_t w;
    square(&x, 8, &w, 8, NULL);
    j = (async_job_t){.fn = square, .in = &x, .in_size = 8, .out_size = 8, .timeout_ns = ASYNC_SEC(30)};
    CHECK(async_executor_run(ex, &j, &got, NULL, NULL, 0) == 0 && got == w, "timed run");
    ms = 4000;
    j = (async_job_t){.fn = nap_ms, .in = &ms, .in_size = 8, .timeout_ns = ASYNC_MSEC(200)};
    int64_t t0 = async_now();
    r = async_executor_run(ex, &j, NULL, NULL, msg, sizeof msg);
    double waited = (double)(async_now() - t0) / 1e9;
    CHECK(r == ASYNC_ETIMEDOUT && strstr(msg, "at its deadline"), "late run: %s '%s'", async_errname(r), msg);
    /* It gave up at its deadline, not when the 4 s job ended. */
    CHECK(waited < 3.0, "the late run waited %.2f s for a 0.2 s deadline", waited);
    CHECK(direct_runs() - d0 == 2, "%llu of 2 timed runs took the direct path",
          (unsigned long long)(direct_runs() - d0));
    /* Beside the late job, direct runs go to the other rank (crashy says
     * which rank ran it); once its reply has come and been dropped, the
     * late job's rank takes them again (the lowest idle rank is taken). */
    int late_rank = 0;
    for (int i = 0; i < 20; i++) {
        int64_t v = 100 + i, rr[2] = {0, 0};
        j = (async_job_t){.fn = crashy, .in = &v, .in_size = 8, .out_size = 16};
        d0 = direct_runs();
        CHECK(async_executor_run(ex, &j, rr, NULL, NULL, 0) == 0 && rr[0] == v, "a run beside the late job");
        CHECK(direct_runs() - d0 == 1, "a run beside the late job was not direct");
        CHECK(!late_rank || rr[1] == late_rank, "runs beside the late job went to ranks %d and %lld",
              late_rank, (long long)rr[1]);
        late_rank = (int)rr[1];
    }
    late_rank = 3 - late_rank; /* the late job's rank, of ranks 1 and 2 */
    int64_t give_up = async_now() + ASYNC_SEC(60), rr[2] = {0, 0};
    while (rr[1] != late_rank && async_now() < give_up) {
        int64_t v = 7;
        j = (async_job_t){.fn = crashy, .in = &v, .in_size = 8, .out_size = 16};
        CHECK(async_executor_run(ex, &j, rr, NULL, NULL, 0) == 0, "a run while the late job ends");
        if (rr[1] != late_rank) usleep(20000);
    }
    CHECK(rr[1] == late_rank, "rank %d took no direct run after its late job ended", late_rank);
    printf("direct runs: %llu\n", (unsigned long long)direct_runs());
}

/* --- out of memory for a message of unknown size ------------------------------
 *
 * The allocator seam, installed on every rank before init, fails every
 * allocation of a size in an armed window, and counts them: on rank 0,
 * while oom_armed, (WIDE, WIDE + 128), where only the reply to a job of
 * WIDE output bytes falls (its 48-byte header, no message, the rows; a
 * future with its result inline is WIDE and 256 bytes); on a serving rank,
 * always, (HEAVY, HEAVY + 1024), where only the message of a job of HEAVY
 * input bytes falls.  Rank 0 never allocates that message in the window it does
 * not arm, nor a serving rank a reply. */
enum { WIDE = 77777, HEAVY = 55555 };
static _Atomic bool oom_armed;
static _Atomic long oom_hits;

static bool oom_fails(size_t n)
{
    bool fail = async_mpi_rank() > 0 ? n > HEAVY && n < HEAVY + 1024
                                     : atomic_load(&oom_armed) && n > WIDE && n < WIDE + 128;
    if (fail) atomic_fetch_add(&oom_hits, 1);
    return fail;
}

static void *oom_malloc(size_t n, void *ud)
{
    (void)ud;
    return oom_fails(n) ? NULL : malloc(n);
}

static void *oom_realloc(void *p, size_t n, void *ud)
{
    (void)ud;
    return oom_fails(n) ? NULL : realloc(p, n);
}

static void oom_free(void *p, void *ud)
{
    (void)ud;
    free(p);
}

static const async_allocator_t oom_allocator = {oom_malloc, oom_realloc, oom_free, NULL};

static bool all_z(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != 'z') return false;
    return true;
}

/* Every way rank 0 or a serving rank receives a message it probed: without
 * memory for it, the message is received and dropped (the next one from
 * that rank is found), and the job it belongs to fails with ASYNC_ENOMEM
 * rather than wait for memory for ever.  The replies are past Open MPI's
 * eager limit (4 KiB over vader, 64 KiB over tcp), where draining them by
 * truncation would write past the buffer. */
static void c_oom(void)
{
    static char out[WIDE];
    char msg[ASYNC_FUTURE_MSG_MAX];
    int64_t ms = 0;
    async_job_t wide = {.fn = nap_fill, .in = &ms, .in_size = 8, .out_size = WIDE};

    /* The direct path: the calling thread receives the reply itself. */
    atomic_store(&oom_armed, true);
    long h0 = atomic_load(&oom_hits);
    uint64_t d0 = direct_runs();
    size_t len = 99;
    int r = async_executor_run(ex, &wide, out, &len, msg, sizeof msg);
    CHECK(r == ASYNC_ENOMEM && strstr(msg, "no memory for a job's reply") && len == 0,
          "direct run without memory: %s '%s', len %zu", async_errname(r), msg, len);
    CHECK(direct_runs() - d0 == 1, "the run did not take the direct path");
    CHECK(atomic_load(&oom_hits) > h0, "no allocation failed");
    atomic_store(&oom_armed, false);
    memset(out, 0, sizeof out);
    r = async_executor_run(ex, &wide, out, &len, msg, sizeof msg);
    CHECK(r == 0 && len == WIDE && all_z(out, WIDE), "the next direct run: %s '%s', len %zu", async_errname(r),
          msg, len);

    /* A driver slot's job: the progress thread receives its reply. */
    atomic_store(&oom_armed, true);
    h0 = atomic_load(&oom_hits);
    async_future_t *f;
    CHECK(async_executor_submit(&f, ex, &wide) == 0, "submit");
    r = async_future_wait(f);
    CHECK(r == ASYNC_ENOMEM && strstr(async_future_message(f), "no memory for a job's reply"),
          "submitted job without memory: %s '%s'", async_errname(r), async_future_message(f));
    CHECK(atomic_load(&oom_hits) > h0, "no allocation failed");
    async_future_unref(f);
    atomic_store(&oom_armed, false);
    CHECK(async_executor_submit(&f, ex, &wide) == 0, "submit");
    const void *data;
    size_t size = 0;
    r = async_future_wait(f);
    CHECK(r == 0 && async_future_result(f, &data, &size) == 0 && size == WIDE && all_z(data, WIDE),
          "the next submitted job: %s '%s', %zu bytes", async_errname(r), async_future_message(f), size);
    async_future_unref(f);

    /* A direct run's reply after its deadline: the progress thread drops
     * it, and only then does its rank take direct runs again (crashy says
     * which rank ran it; the lowest idle rank is taken), memory or not. */
    ms = 1500;
    async_job_t late = {.fn = nap_fill, .in = &ms, .in_size = 8, .out_size = WIDE, .timeout_ns = ASYNC_MSEC(200)};
    d0 = direct_runs();
    r = async_executor_run(ex, &late, out, NULL, msg, sizeof msg);
    CHECK(r == ASYNC_ETIMEDOUT && direct_runs() - d0 == 1, "late direct run: %s '%s'", async_errname(r), msg);
    atomic_store(&oom_armed, true);
    h0 = atomic_load(&oom_hits);
    int64_t v = 5, rr[2] = {0, 0};
    async_job_t which = {.fn = crashy, .in = &v, .in_size = 8, .out_size = 16};
    CHECK(async_executor_run(ex, &which, rr, NULL, NULL, 0) == 0, "a run beside the late job");
    int late_rank = 3 - (int)rr[1];
    int64_t give_up = async_now() + ASYNC_SEC(30);
    while (rr[1] != late_rank && async_now() < give_up) {
        CHECK(async_executor_run(ex, &which, rr, NULL, NULL, 0) == 0, "a run while the late job ends");
        if (rr[1] != late_rank) usleep(20000);
    }
    CHECK(rr[1] == late_rank, "rank %d took no direct run after its late reply came without memory", late_rank);
    CHECK(atomic_load(&oom_hits) > h0, "no allocation failed for the late reply");
    atomic_store(&oom_armed, false);

    /* A serving rank without memory for a job's message: the job fails,
     * the rank serves on. */
    static char heavy_in[HEAVY];
    int64_t sq = 6, want, got = 0;
    square(&sq, 8, &want, 8, NULL);
    memcpy(heavy_in, &sq, sizeof sq);
    async_job_t heavy = {.fn = square, .in = heavy_in, .in_size = HEAVY, .out_size = 8};
    CHECK(async_executor_submit(&f, ex, &heavy) == 0, "submit heavy");
    r = async_future_wait(f);
    CHECK(r == ASYNC_ENOMEM && strstr(async_future_message(f), "no memory for the job's message"),
          "heavy job: %s '%s'", async_errname(r), async_future_message(f));
    async_future_unref(f);
    r = async_executor_run(ex, &heavy, &got, NULL, msg, sizeof msg);
    CHECK(r == ASYNC_ENOMEM && strstr(msg, "no memory for the job's message"), "heavy run: %s '%s'",
          async_errname(r), msg);
    async_job_t light = {.fn = square, .in = &sq, .in_size = 8, .out_size = 8};
    CHECK(async_executor_run(ex, &light, &got, NULL, NULL, 0) == 0 && got == want, "a run after them");
    printf("allocations failed: %ld\n", atomic_load(&oom_hits));
}

static void c_crash(void)
{
    /* Run with rank_processes: the crash fails only its future. */
    enum { N = 8 };
    /* rank_processes 2: the pool's two at once plus one queued, per rank. */
    CHECK(async_executor_workers(ex) == 3u * (unsigned)(async_mpi_size() - 1), "default slots: %u",
          async_executor_workers(ex));
    async_future_t *fs[N];
    int64_t in[N];
    for (int i = 0; i < N; i++) {
        in[i] = i;
        async_job_t j = {.fn = crashy, .in = &in[i], .in_size = 8, .out_size = 16};
        CHECK(async_executor_submit(&fs[i], ex, &j) == 0, "submit");
    }
    for (int i = 0; i < N; i++) {
        async_future_wait_dl(fs[i], async_deadline_after(ASYNC_SEC(60)));
        int e = async_future_error(fs[i]);
        if (i == 3) {
            CHECK(e == ASYNC_EWORKERDIED, "crashing job: %s", async_errname(e));
            CHECK(strstr(async_future_message(fs[i]), "rank "), "message '%s'",
                  async_future_message(fs[i]));
            printf("message: %s\n", async_future_message(fs[i]));
        } else {
            CHECK(e == 0, "job %d: %s %s", i, async_errname(e), async_future_message(fs[i]));
        }
        async_future_unref(fs[i]);
    }
    /* and a map after it runs whole */
    static int64_t mi[200], mo[200], want[200];
    for (int i = 0; i < 200; i++) {
        mi[i] = i;
        square(&mi[i], 8, &want[i], 8, NULL);
    }
    async_map_t m = {.fn = square, .in = mi, .in_size = 8, .out = mo, .out_size = 8, .n = 200};
    CHECK(async_executor_map(ex, &m, NULL) == 0, "map after the crash");
    CHECK(!memcmp(mo, want, sizeof mo), "map after the crash differs");
}

/* With rank_processes: a job running past its deadline is killed on its
 * rank and fails with ASYNC_ETIMEDOUT long before it would have ended. */
static void c_deadline(void)
{
    int64_t ms = 20000;
    async_job_t j = {.fn = nap_ms, .in = &ms, .in_size = 8, .out_size = 0,
                     .timeout_ns = ASYNC_MSEC(300)};
    int64_t t0 = async_now();
    char msg[ASYNC_FUTURE_MSG_MAX];
    uint64_t d0 = direct_runs();
    int r = async_executor_run(ex, &j, NULL, NULL, msg, sizeof msg);
    double s = (double)(async_now() - t0) / 1e9;
    /* With a pool on the ranks a timed run takes the direct path. */
    CHECK(direct_runs() - d0 == 1, "the timed run did not take the direct path");
    printf("deadline: %s after %.2f s: %s\n", async_errname(r), s, msg);
    CHECK(r == ASYNC_ETIMEDOUT, "deadline: %s '%s'", async_errname(r), msg);
    CHECK(s < 10.0, "the job was not stopped at its deadline (%.1f s)", s);
    int64_t x = 5, got = 0, want;
    square(&x, 8, &want, 8, NULL);
    async_job_t k = {.fn = square, .in = &x, .in_size = 8, .out_size = 8};
    CHECK(async_executor_run(ex, &k, &got, NULL, NULL, 0) == 0 && got == want, "after the deadline");
}

static void c_kill(void)
{
    async_job_t j = {.fn = die, .out_size = 8};
    char msg[ASYNC_FUTURE_MSG_MAX];
    printf("submitting the killing job\n");
    fflush(stdout);
    int r = async_executor_run(ex, &j, NULL, NULL, msg, sizeof msg);
    /* Open MPI ends the job before this returns: reaching here is a failure. */
    printf("FAIL: the run went on after a rank was killed (%s %s)\n", async_errname(r), msg);
    failures++;
}

static void c_bcast(void)
{
    enum { N = 200000 };
    double *table = malloc(N * sizeof *table);
    for (int i = 0; i < N; i++) table[i] = i * 0.5 + 1.0 / (i + 1);
    CHECK(async_mpi_bcast(ex, table, N * sizeof *table) == 0, "bcast");
    CHECK(async_mpi_bcast(NULL, table, 8) == ASYNC_EINVAL, "bcast NULL executor");
    static uint32_t idx[5000];
    static double out[5000];
    for (int i = 0; i < 5000; i++) idx[i] = (uint32_t)((i * 7919u) % N);
    async_map_t m = {.fn = lookup, .ctx = table, .in = idx, .in_size = 4, .out = out,
                     .out_size = 8, .n = 5000};
    async_map_error_t err;
    int r = async_executor_map(ex, &m, &err);
    CHECK(r == 0, "map over bcast: %s %s", async_errname(r), err.message);
    bool same = true;
    for (int i = 0; i < 5000; i++) {
        double w;
        lookup(&idx[i], 4, &w, 8, table);
        same = same && w == out[i];
    }
    CHECK(same, "bcast lookups differ");
    free(table);
}

/* The same pointer replicated again with other bytes (memory freed and
 * reused, or rewritten): jobs then read the new bytes, not the first copy. */
static void c_rebcast(void)
{
    enum { N = 1000 };
    double *table = malloc(N * sizeof *table);
    uint32_t idx[N];
    double out[N];
    for (int i = 0; i < N; i++) idx[i] = (uint32_t)i;
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N; i++) table[i] = round * 1000.0 + i;
        CHECK(async_mpi_bcast(ex, table, N * sizeof *table) == 0, "bcast round %d", round);
        async_map_t m = {.fn = lookup, .ctx = table, .in = idx, .in_size = 4, .out = out, .out_size = 8, .n = N};
        async_map_error_t err;
        int r = async_executor_map(ex, &m, &err);
        CHECK(r == 0, "map round %d: %s %s", round, async_errname(r), err.message);
        bool same = true;
        for (int i = 0; i < N; i++) same = same && out[i] == 2 * (round * 1000.0 + i); /* lookup doubles */
        CHECK(same, "round %d: the ranks read older bytes (out[1] = %g)", round, out[1]);
    }
    free(table);
}

/* Holds its rank until rank 0 lets it go: writes a byte into the FIFO
 * "<in>.started", then reads one from "<in>.go" (all ranks run on this
 * host).  No sleeps: rank 0 knows when the rank is busy and chooses when
 * it is free again. */
int hold(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)out, (void)out_size, (void)ctx;
    char path[256], c = 1;
    snprintf(path, sizeof path, "%.*s.started", (int)in_size, (const char *)in);
    int fd = open(path, O_WRONLY);
    if (fd < 0 || write(fd, &c, 1) != 1) return async_work_fail(ASYNC_EIO, "hold: %s", path);
    close(fd);
    snprintf(path, sizeof path, "%.*s.go", (int)in_size, (const char *)in);
    fd = open(path, O_RDONLY);
    if (fd < 0 || read(fd, &c, 1) != 1) return async_work_fail(ASYNC_EIO, "hold: %s", path);
    close(fd);
    return 0;
}
ASYNC_MPI_WORK(hold);

/* async_mpi_bcast_dl: a deadline already past sends nothing; a rank held
 * in a job cannot take the bytes, so the wait ends at the deadline and the
 * replication finishes once the rank is free; a deadline in time is 0. */
static void c_bcast_dl(void)
{
    enum { N = 1 << 17 }; /* 1 MiB: above every transport's eager limit */
    double *table = malloc(N * sizeof *table);
    for (int i = 0; i < N; i++) table[i] = i + 0.25;
    CHECK(async_mpi_bcast_dl(ex, table, N * sizeof *table, 0) == ASYNC_ETIMEDOUT, "a past deadline");
    uint32_t idx = 5;
    double out = 0;
    async_job_t lj = {.fn = lookup, .ctx = table, .in = &idx, .in_size = 4, .out_size = 8};
    char msg[ASYNC_FUTURE_MSG_MAX];
    int r = async_executor_run(ex, &lj, &out, NULL, msg, sizeof msg);
    CHECK(r == ASYNC_EINVAL, "a job naming data never replicated: %s", async_errname(r));

    char base[64];
    snprintf(base, sizeof base, "/tmp/mpi-suite-%d", (int)getpid());
    char started[80], go[80];
    snprintf(started, sizeof started, "%s.started", base);
    snprintf(go, sizeof go, "%s.go", base);
    unlink(started), unlink(go);
    CHECK(mkfifo(started, 0600) == 0 && mkfifo(go, 0600) == 0, "mkfifo");
    async_future_t *f;
    async_job_t hj = {.fn = hold, .in = base, .in_size = strlen(base)};
    CHECK(async_executor_submit(&f, ex, &hj) == 0, "submit hold");
    char c;
    int fd = open(started, O_RDONLY); /* until the rank runs the job */
    CHECK(fd >= 0 && read(fd, &c, 1) == 1, "the held job did not start");
    close(fd);
    int64_t t0 = async_now();
    r = async_mpi_bcast_dl(ex, table, N * sizeof *table, async_deadline_after(50000000));
    double waited = (double)(async_now() - t0) / 1e6;
    CHECK(r == ASYNC_ETIMEDOUT, "bcast_dl past a held rank: %s after %.0f ms", async_errname(r), waited);
    printf("bcast_dl: timed out after %.1f ms (deadline 50 ms)\n", waited);
    fd = open(go, O_WRONLY); /* let the rank go */
    CHECK(fd >= 0 && write(fd, &c, 1) == 1, "release");
    close(fd);
    CHECK(async_future_wait(f) == 0 && async_future_error(f) == 0, "hold: %s", async_future_message(f));
    async_future_unref(f);
    unlink(started), unlink(go);
    /* The timed-out replication completed behind the caller: every rank
     * answers from its copy. */
    enum { M = 64 };
    uint32_t ids[M];
    double outs[M];
    for (int i = 0; i < M; i++) ids[i] = (uint32_t)(i * 2011 % N);
    async_map_t m = {.fn = lookup, .ctx = table, .in = ids, .in_size = 4, .out = outs, .out_size = 8, .n = M};
    async_map_error_t err;
    r = async_executor_map(ex, &m, &err);
    CHECK(r == 0, "map after the timed-out bcast: %s %s", async_errname(r), err.message);
    bool same = true;
    for (int i = 0; i < M; i++) same = same && outs[i] == 2 * table[ids[i]];
    CHECK(same, "the ranks' copies differ");
    /* With time enough, the same call completes. */
    double *small = malloc(1024 * sizeof *small);
    for (int i = 0; i < 1024; i++) small[i] = -i;
    r = async_mpi_bcast_dl(ex, small, 1024 * sizeof *small, async_deadline_after(60000000000LL));
    CHECK(r == 0, "bcast_dl in time: %s", async_errname(r));
    async_executor_free(ex); /* waits for the last send: then table may go */
    ex = NULL;
    free(small);
    free(table);
}

static void c_idle(void)
{
    /* One serving rank (-np 2): its CPU time over 2 s of idleness. */
    int64_t a[2], b[2];
    async_job_t j = {.fn = cpu_ns, .out_size = 16};
    CHECK(async_executor_run(ex, &j, a, NULL, NULL, 0) == 0, "cpu_ns");
    struct timespec c0, c1;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
    int64_t t0 = async_now();
    sleep(2);
    int64_t wall = async_now() - t0;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
    CHECK(async_executor_run(ex, &j, b, NULL, NULL, 0) == 0, "cpu_ns");
    double rank1 = 100.0 * (double)(b[0] - a[0]) / (double)wall;
    double rank0 = 100.0 * (double)((c1.tv_sec - c0.tv_sec) * 1000000000LL + c1.tv_nsec - c0.tv_nsec) / (double)wall;
    printf("idle cpu: rank1 %.2f%% rank0 %.2f%%\n", rank1, rank0);
    /* A rank that spins shows about 100%. */
    CHECK(rank1 < 50.0, "idle rank 1 used %.1f%% of a CPU", rank1);
    CHECK(rank0 < 50.0, "idle rank 0 used %.1f%% of a CPU", rank0);
}

/* Debian's libev.so exports libevent's names; Open MPI's must win, or
 * MPI_Init crashes (the link line puts libevent first). */
static void c_symbols(void)
{
    const char *names[] = {"event_add", "event_base_new", "event_del"};
    for (int i = 0; i < 3; i++) {
        void *p = dlsym(RTLD_DEFAULT, names[i]);
        Dl_info di;
        CHECK(p && dladdr(p, &di) && di.dli_fname && strstr(di.dli_fname, "libevent"),
              "%s resolves to %s", names[i], p && dladdr(p, &di) ? di.dli_fname : "nothing");
        if (p && dladdr(p, &di)) printf("%s: %s\n", names[i], di.dli_fname);
    }
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *c = argc > 1 ? argv[1] : "";
    async_mpi_opts_t mo = {0};
    if (!strcmp(c, "crash") || !strcmp(c, "deadline") || !strcmp(c, "pool_bcast")) mo.rank_processes = 2;
    if (!strcmp(c, "mismatch")) {
        const char *rk = getenv("OMPI_COMM_WORLD_RANK");
        if (rk && !strcmp(rk, "2")) async_mpi_register("only_on_rank_2", square);
    }
    async_mpi_register_data("offsets", offsets);
    if (!strcmp(c, "oom") || !strcmp(c, "oom_tcp")) async_set_allocator(&oom_allocator);
    char msg[256];
    /* A size below the struct's is refused before MPI starts (every rank). */
    CHECK(async_mpi_init(&argc, &argv, &(async_mpi_opts_t){.size = 1}, msg, sizeof msg) == ASYNC_EINVAL,
          "opts size 1");
    async_mpi_opts_t sized;
    async_mpi_opts_init(&sized);
    CHECK(sized.size == sizeof sized, "async_mpi_opts_init");
    mo.size = strcmp(c, "map") ? 0 : sizeof mo; /* both layouts work */
    int r = async_mpi_init(&argc, &argv, &mo, msg, sizeof msg);
    if (!strcmp(c, "single")) {
        printf("init: %s: %s\n", async_errname(r), msg);
        CHECK(r == ASYNC_ENOTSUP && strstr(msg, "single rank"), "single: %s '%s'", async_errname(r), msg);
        goto out;
    }
    if (!strcmp(c, "mismatch")) {
        printf("init: %s: %s\n", async_errname(r), msg);
        CHECK(r == ASYNC_EINVAL && strstr(msg, "rank 2"), "mismatch: %s '%s'", async_errname(r), msg);
        goto out;
    }
    if (r) {
        printf("FAIL init: %s: %s\n", async_errname(r), msg);
        return 1;
    }
    CHECK(async_mpi_rank() == 0, "init returned on rank %d", async_mpi_rank());
    if (!strcmp(c, "noexec")) {
        /* No executor ever: finalize must still release the serving ranks
         * (mpirun would wait for them for ever), and an executor after
         * that has no ranks to serve it. */
        CHECK(async_mpi_finalize() == 0, "finalize");
        async_executor_t *late;
        r = async_executor_new(&late, &(async_executor_opts_t){.backend = ASYNC_BACKEND_MPI});
        CHECK(r == ASYNC_ECLOSED, "an executor after finalize: %s", async_errname(r));
        goto out;
    }
    async_executor_opts_t o = {.backend = ASYNC_BACKEND_MPI};
    CHECK((r = async_executor_new(&ex, &o)) == 0, "executor: %s", async_errname(r));
    if (r) return 1;
    CHECK(async_executor_backend(ex) == ASYNC_BACKEND_MPI, "backend");
    async_executor_t *second;
    CHECK(async_executor_new(&second, &o) == ASYNC_EBUSY, "a second MPI executor");
    if (!strcmp(c, "map")) c_map();
    else if (!strcmp(c, "starmap")) c_starmap();
    else if (!strcmp(c, "imap")) c_imap();
    else if (!strcmp(c, "submit")) c_submit();
    else if (!strcmp(c, "await")) c_await();
    else if (!strcmp(c, "errors")) c_errors();
    else if (!strcmp(c, "unregistered")) c_unregistered();
    else if (!strcmp(c, "crash")) c_crash();
    else if (!strcmp(c, "kill")) c_kill();
    else if (!strcmp(c, "deadline")) c_deadline();
    else if (!strcmp(c, "bcast")) c_bcast();
    else if (!strcmp(c, "pool_bcast")) { /* replicated data in the ranks' process pools */
        c_bcast();
        c_rebcast();
    }
    else if (!strcmp(c, "rebcast")) c_rebcast();
    else if (!strcmp(c, "bcast_dl")) c_bcast_dl();
    else if (!strcmp(c, "idle")) c_idle();
    else if (!strcmp(c, "symbols")) c_symbols();
    else if (!strcmp(c, "direct")) c_direct();
    else if (!strcmp(c, "stray")) c_stray();
    else if (!strcmp(c, "oom") || !strcmp(c, "oom_tcp")) c_oom();
    else if (!strcmp(c, "all")) {
        c_map(), c_starmap(), c_imap(), c_submit(), c_await(), c_errors(), c_unregistered(), c_bcast(), c_rebcast();
        c_direct();
    } else {
        printf("FAIL unknown case '%s'\n", c);
        failures++;
    }
    async_executor_free(ex);
    CHECK(async_mpi_finalize() == 0, "finalize");
out:
    if (!failures) printf("PASS %s\n", c);
    return failures ? 1 : 0;
}
