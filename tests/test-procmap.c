/* The process backend's direct map path (process_backend.c, map_direct):
 * a map from a plain thread over rows in the executor's shared memory, on
 * an idle pool, hands its chunks straight to the workers.  It must answer
 * exactly as the queued path does: the same results, the lowest failing
 * item with its code and message, ASYNC_EWORKERDIED when a worker dies
 * mid-chunk (and the pool replaces it), ASYNC_ETIMEDOUT past the map's
 * timeout, terminate failing it with ASYNC_ECANCELED, shutdown waiting for
 * it, a storm of worker deaths losing no map; and rows in the parent's own
 * memory still take the queued path.  Rows in fresh shared memory, which
 * each worker populates on first touch (worker.c), map right, also after
 * their pages went back to the kernel, and under workers killed from
 * outside at any moment. */
#if defined(__SANITIZE_THREAD__)
/* As test-procs.c: ThreadSanitizer cannot follow the process pool's
 * cross-process hand-overs. */
#include <criterion/criterion.h>
Test(tsan, process_pool_tests_skipped, .timeout = 5)
{
    cr_skip_test("ThreadSanitizer cannot follow the process pool's cross-process hand-overs: this file runs "
                 "under the other builds");
}
#else
#include <criterion/criterion.h>
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <async.h>
#include <async/executor.h>
#include "support/alloc.h"
#include "support/teardown.h"

extern _Atomic uint64_t async__procs_direct_maps;
static uint64_t direct_maps(void) { return atomic_load(&async__procs_direct_maps); }

static void setup(void) { test_alloc_install(); }
static void teardown(void)
{
    TEARDOWN_CHECK_NO_LEAK();
    test_alloc_uninstall();
}
TestSuite(procmap, .init = setup, .fini = teardown);

enum { N = 4000 };

/* What an item does, by its input: {what, arg}. */
enum { TWICE, FAIL, KILL_ONCE, SLEEP_MS, KILL_SOMETIMES };

static int item(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out_size;
    _Atomic int *killed_once = ctx; /* in shared memory, or NULL */
    int v[2];
    memcpy(v, in, sizeof v);
    switch (v[0]) {
    case FAIL: return v[1];
    case KILL_ONCE:
        if (killed_once && atomic_exchange(killed_once, 1) == 0) raise(SIGKILL);
        break;
    case SLEEP_MS: usleep((useconds_t)v[1] * 1000); break;
    case KILL_SOMETIMES: /* every 61st time, whichever worker runs it */
        if (killed_once && atomic_fetch_add(killed_once, 1) % 61 == 60) raise(SIGKILL);
        break;
    }
    *(int *)out = 2 * v[1];
    return 0;
}

typedef struct rows {
    async_executor_t *ex;
    int (*in)[2];
    int *out;
} rows_t;

/* A pool of 2 workers and N rows {TWICE, i} in its shared memory. */
static rows_t make_rows(void)
{
    rows_t r;
    async_executor_opts_t o = {.backend = ASYNC_BACKEND_PROCESSES, .workers = 2};
    cr_assert_eq(async_executor_new(&r.ex, &o), 0);
    cr_assert_eq(async_executor_shm_alloc((void **)&r.in, r.ex, N * sizeof *r.in), 0);
    cr_assert_eq(async_executor_shm_alloc((void **)&r.out, r.ex, N * sizeof *r.out), 0);
    for (int i = 0; i < N; i++) r.in[i][0] = TWICE, r.in[i][1] = i;
    return r;
}

static void free_rows(rows_t *r)
{
    async_executor_shm_free(r->ex, r->in);
    async_executor_shm_free(r->ex, r->out);
    async_executor_free(r->ex);
}

static async_map_t map_of(const rows_t *r)
{
    return (async_map_t){.fn = item, .in = r->in, .in_size = sizeof r->in[0], .out = r->out,
                         .out_size = sizeof r->out[0], .n = N};
}

static void expect_doubled(const int *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (out[i] != 2 * (int)i) cr_assert_fail("item %zu: %d, not %d", i, out[i], 2 * (int)i);
}

Test(procmap, shared_rows_take_the_direct_path, .timeout = 30)
{
    rows_t r = make_rows();
    async_map_t m = map_of(&r);
    async_map_error_t err;
    uint64_t before = direct_maps();
    for (int k = 0; k < 20; k++) {
        memset(r.out, 0xff, N * sizeof *r.out);
        cr_assert_eq(async_executor_map(r.ex, &m, &err), 0, "%s", err.message);
        expect_doubled(r.out, N);
    }
    /* The pool may still be finishing its start, or a worker be busy,
     * for the first ones; later maps find it idle. */
    cr_expect_gt(direct_maps() - before, 0, "no map took the direct path");
    free_rows(&r);
}

Test(procmap, parent_rows_take_the_queued_path, .timeout = 30)
{
    rows_t r = make_rows();
    int (*in)[2] = malloc(N * sizeof *in);
    int *out = malloc(N * sizeof *out);
    cr_assert(in && out);
    memcpy(in, r.in, N * sizeof *in);
    async_map_t m = {.fn = item, .in = in, .in_size = sizeof in[0], .out = out,
                     .out_size = sizeof out[0], .n = N};
    uint64_t before = direct_maps();
    cr_assert_eq(async_executor_map(r.ex, &m, NULL), 0);
    expect_doubled(out, N);
    cr_expect_eq(direct_maps(), before);
    free(in);
    free(out);
    free_rows(&r);
}

/* Both paths name the lowest failing item, its code and its message. */
Test(procmap, failure_reports_the_lowest_item_as_the_queued_path, .timeout = 30)
{
    rows_t r = make_rows();
    r.in[3100][0] = FAIL, r.in[3100][1] = ASYNC_EIO;
    r.in[1234][0] = FAIL, r.in[1234][1] = ASYNC_EPIPE;
    async_map_t m = map_of(&r);
    async_map_error_t direct, queued;
    for (int k = 0; k < 5; k++) /* past the pool's start: idle from here */
        cr_assert_eq(async_executor_map(r.ex, &m, &direct), ASYNC_EPIPE);
    uint64_t before = direct_maps();
    cr_assert_eq(async_executor_map(r.ex, &m, &direct), ASYNC_EPIPE);
    cr_expect_eq(direct_maps(), before + 1);
    cr_expect_eq(direct.index, 1234);
    expect_doubled(r.out, 1234); /* the items before it ran */
    /* A call deadline keeps the map on the queued path. */
    m.timeout_ns = 0;
    cr_assert_eq(async_executor_map_dl(r.ex, &m, &queued, async_now() + 20 * (int64_t)1000000000),
                 ASYNC_EPIPE);
    cr_expect_eq(direct_maps(), before + 1);
    cr_expect_eq(queued.index, direct.index);
    cr_expect_str_eq(queued.message, direct.message);
    free_rows(&r);
}

Test(procmap, worker_killed_mid_chunk_fails_the_map_and_is_replaced, .timeout = 30)
{
    rows_t r = make_rows();
    async_map_t m = map_of(&r);
    for (int k = 0; k < 5; k++) cr_assert_eq(async_executor_map(r.ex, &m, NULL), 0);
    _Atomic int *killed_once;
    cr_assert_eq(async_executor_shm_alloc((void **)&killed_once, r.ex, sizeof *killed_once), 0);
    m.ctx = (void *)killed_once;
    r.in[2500][0] = KILL_ONCE;
    uint64_t before = direct_maps();
    async_map_error_t err;
    cr_assert_eq(async_executor_map(r.ex, &m, &err), ASYNC_EWORKERDIED, "%s", err.message);
    cr_expect_eq(direct_maps(), before + 1);
    cr_expect(strstr(err.message, "signal 9") || strstr(err.message, "killed"), "%s", err.message);
    /* The replacement serves the next maps; the item no longer kills. */
    memset(r.out, 0xff, N * sizeof *r.out);
    r.in[2500][0] = TWICE;
    cr_assert_eq(async_executor_map(r.ex, &m, &err), 0, "%s", err.message);
    expect_doubled(r.out, N);
    async_executor_shm_free(r.ex, (void *)killed_once);
    free_rows(&r);
}

/* Workers die in many maps, in any chunk: each map fails with
 * ASYNC_EWORKERDIED or succeeds whole, and the pool keeps serving. */
Test(procmap, kill_storm, .timeout = 120)
{
    rows_t r = make_rows();
    async_map_t m = map_of(&r);
    for (int k = 0; k < 5; k++) cr_assert_eq(async_executor_map(r.ex, &m, NULL), 0);
    _Atomic int *runs;
    cr_assert_eq(async_executor_shm_alloc((void **)&runs, r.ex, sizeof *runs), 0);
    m.ctx = (void *)runs;
    for (int i = 7; i < N; i += 131) r.in[i][0] = KILL_SOMETIMES, r.in[i][1] = i;
    int died = 0, done = 0;
    uint64_t before = direct_maps();
    for (int k = 0; k < 60; k++) {
        memset(r.out, 0xff, N * sizeof *r.out);
        async_map_error_t err;
        int rc = async_executor_map(r.ex, &m, &err);
        if (rc == 0) {
            expect_doubled(r.out, N);
            done++;
        } else {
            cr_assert_eq(rc, ASYNC_EWORKERDIED, "map %d: %s", k, err.message);
            died++;
        }
    }
    cr_log_info("kill storm: %d maps failed with their worker, %d done, %d direct", died, done,
                (int)(direct_maps() - before));
    cr_expect_gt(died, 0);
    cr_expect_gt(done, 0);
    cr_expect_gt(direct_maps() - before, 0);
    for (int i = 7; i < N; i += 131) r.in[i][0] = TWICE;
    cr_assert_eq(async_executor_map(r.ex, &m, NULL), 0);
    expect_doubled(r.out, N);
    async_executor_shm_free(r.ex, (void *)runs);
    free_rows(&r);
}

/* BIG rows of {TWICE, i + base} in a fresh block of shared memory of
 * 16 MiB or more: one that async_executor_shm_free gives back to the
 * kernel, so that workers that populated its pages (the first touch in
 * worker.c) find them gone after a free and a new allocation. */
enum { BIG = 1100000 };

static void big_rows(async_executor_t *ex, int (**in)[2], int **out, int base)
{
    cr_assert_eq(async_executor_shm_alloc((void **)in, ex, BIG * sizeof **in), 0);
    cr_assert_eq(async_executor_shm_alloc((void **)out, ex, BIG * sizeof **out), 0);
    for (int i = 0; i < BIG; i++) (*in)[i][0] = TWICE, (*in)[i][1] = i + base;
    memset(*out, 0xff, BIG * sizeof **out);
}

static void expect_big(const int *out, int base)
{
    for (int i = 0; i < BIG; i++)
        if (out[i] != 2 * (i + base)) cr_assert_fail("item %d: %d, not %d", i, out[i], 2 * (i + base));
}

static int map_big(async_executor_t *ex, int (*in)[2], int *out, async_map_error_t *err)
{
    async_map_t m = {.fn = item, .in = in, .in_size = sizeof in[0], .out = out,
                     .out_size = sizeof out[0], .n = BIG};
    return async_executor_map(ex, &m, err);
}

Test(procmap, fresh_and_returned_shared_memory, .timeout = 60)
{
    async_executor_t *ex;
    async_executor_opts_t o = {.backend = ASYNC_BACKEND_PROCESSES, .workers = 2};
    cr_assert_eq(async_executor_new(&ex, &o), 0);
    uint64_t before = direct_maps();
    for (int k = 0; k < 4; k++) {
        int (*in)[2], *out;
        big_rows(ex, &in, &out, 1000 * k);
        async_map_error_t err;
        cr_assert_eq(map_big(ex, in, out, &err), 0, "%s", err.message);
        expect_big(out, 1000 * k);
        /* The same rows again: every page is populated in both workers. */
        memset(out, 0xff, BIG * sizeof *out);
        cr_assert_eq(map_big(ex, in, out, &err), 0, "%s", err.message);
        expect_big(out, 1000 * k);
        async_executor_shm_free(ex, in);
        async_executor_shm_free(ex, out);
    }
    cr_expect_gt(direct_maps() - before, 0, "no map took the direct path");
    async_executor_free(ex);
}

/* The pids of the pool's workers: the children of this process's child,
 * the fork server, that are named async-worker. */
static int worker_pids(pid_t *pids, int cap)
{
    int n = 0;
    DIR *d = opendir("/proc");
    if (!d) return 0;
    struct dirent *e;
    while (n < cap && (e = readdir(d))) {
        char path[300], buf[512];
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        bool ok = fgets(buf, sizeof buf, f) != NULL;
        fclose(f);
        char *close_paren = ok ? strrchr(buf, ')') : NULL;
        if (!close_paren || !strstr(buf, "(async-worker)")) continue;
        char state;
        int ppid, grand = 0;
        if (sscanf(close_paren + 2, "%c %d", &state, &ppid) != 2) continue;
        snprintf(path, sizeof path, "/proc/%d/stat", ppid);
        if (!(f = fopen(path, "r"))) continue;
        ok = fgets(buf, sizeof buf, f) != NULL;
        fclose(f);
        close_paren = ok ? strrchr(buf, ')') : NULL;
        if (close_paren && sscanf(close_paren + 2, "%c %d", &state, &grand) == 2 && grand == getpid())
            pids[n++] = atoi(e->d_name);
    }
    closedir(d);
    return n;
}

typedef struct killer {
    _Atomic bool stop;
    _Atomic int kills;
} killer_t;

/* SIGKILLs a worker every 0.5 to 4 ms: in its first touch of new rows, in
 * its rows, or idle; but only a worker seen alive 20 ms before, so that
 * none dies before it is ready, which the pool counts towards giving up
 * on the worker. */
static void *kill_workers(void *arg)
{
    killer_t *k = arg;
    unsigned seed = 12345;
    pid_t seen[64];
    int64_t since[64];
    int nseen = 0;
    while (!atomic_load(&k->stop)) {
        struct timespec ts = {0, 500000 + (long)(rand_r(&seed) % 3500000)};
        nanosleep(&ts, NULL);
        pid_t pids[8];
        int n = worker_pids(pids, 8);
        if (!n) continue;
        pid_t pid = pids[rand_r(&seed) % (unsigned)n];
        int j = 0;
        while (j < nseen && seen[j] != pid) j++;
        if (j == nseen) {
            if (nseen == 64) nseen = 0; /* old pids are dead: forget them */
            seen[nseen] = pid;
            since[nseen++] = async_now();
            continue;
        }
        if (async_now() - since[j] >= ASYNC_MSEC(20) && kill(pid, SIGKILL) == 0)
            atomic_fetch_add(&k->kills, 1);
    }
    return NULL;
}

/* Workers killed from outside while maps run over fresh memory, which each
 * worker populates before its rows: every map succeeds whole or fails with
 * ASYNC_EWORKERDIED, and the pool serves a map once the killing stops. */
Test(procmap, kill_storm_over_fresh_memory, .timeout = 120)
{
    async_executor_t *ex;
    async_executor_opts_t o = {.backend = ASYNC_BACKEND_PROCESSES, .workers = 2};
    cr_assert_eq(async_executor_new(&ex, &o), 0);
    killer_t k = {0};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, kill_workers, &k), 0);
    int died = 0, done = 0;
    /* Until kills have landed in maps and maps have succeeded between them
     * (a kill lands in a map by chance, more often on a slow machine). */
    for (int i = 0; i < 1000 && (died < 3 || done < 3); i++) {
        int (*in)[2], *out;
        big_rows(ex, &in, &out, i);
        async_map_error_t err;
        int rc = map_big(ex, in, out, &err);
        if (rc == 0) {
            expect_big(out, i);
            done++;
        } else {
            cr_assert_eq(rc, ASYNC_EWORKERDIED, "map %d: %s", i, err.message);
            died++;
        }
        async_executor_shm_free(ex, in);
        async_executor_shm_free(ex, out);
    }
    atomic_store(&k.stop, true);
    pthread_join(t, NULL);
    cr_log_info("kill storm over fresh memory: %d kills, %d maps failed with their worker, %d done",
                atomic_load(&k.kills), died, done);
    cr_expect_gt(died, 0, "no kill landed in a map");
    cr_expect_gt(done, 0, "no map succeeded between the kills");
    int (*in)[2], *out;
    big_rows(ex, &in, &out, 7);
    async_map_error_t err;
    cr_assert_eq(map_big(ex, in, out, &err), 0, "%s", err.message);
    expect_big(out, 7);
    async_executor_shm_free(ex, in);
    async_executor_shm_free(ex, out);
    async_executor_free(ex);
}

Test(procmap, timeout_fails_the_map, .timeout = 30)
{
    rows_t r = make_rows();
    async_map_t m = map_of(&r);
    for (int k = 0; k < 5; k++) cr_assert_eq(async_executor_map(r.ex, &m, NULL), 0);
    for (int i = 0; i < N; i += 100) r.in[i][0] = SLEEP_MS, r.in[i][1] = 50;
    m.timeout_ns = 100 * (int64_t)1000000;
    async_map_error_t err;
    cr_assert_eq(async_executor_map(r.ex, &m, &err), ASYNC_ETIMEDOUT, "%s", err.message);
    free_rows(&r);
}

typedef struct bg {
    rows_t *r;
    async_map_t m;
    int code;
} bg_t;

static void *run_map(void *arg)
{
    bg_t *b = arg;
    b->code = async_executor_map(b->r->ex, &b->m, NULL);
    return NULL;
}

/* Starts a map of slow items on another thread and returns once it runs. */
static void start_slow_map(pthread_t *t, bg_t *b, rows_t *r)
{
    async_map_t warm = map_of(r);
    for (int k = 0; k < 5; k++) cr_assert_eq(async_executor_map(r->ex, &warm, NULL), 0);
    for (int i = 0; i < N; i += 50) r->in[i][0] = SLEEP_MS, r->in[i][1] = 5;
    memset(r->out, 0xff, N * sizeof *r->out);
    *b = (bg_t){.r = r, .m = map_of(r), .code = 1};
    cr_assert_eq(pthread_create(t, NULL, run_map, b), 0);
    while (r->out[1] == -1) usleep(1000); /* its first chunk runs */
}

Test(procmap, shutdown_waits_for_a_running_map, .timeout = 30)
{
    rows_t r = make_rows();
    pthread_t t;
    bg_t b;
    start_slow_map(&t, &b, &r);
    cr_assert_eq(async_executor_shutdown(r.ex, true, false), 0);
    pthread_join(t, NULL);
    cr_expect_eq(b.code, 0);
    for (int i = 0; i < N; i++)
        if (r.out[i] != 2 * (r.in[i][0] == SLEEP_MS ? 5 : i)) cr_assert_fail("item %d: %d", i, r.out[i]);
    free_rows(&r);
}

Test(procmap, terminate_fails_a_running_map, .timeout = 30)
{
    rows_t r = make_rows();
    pthread_t t;
    bg_t b;
    start_slow_map(&t, &b, &r);
    cr_assert_eq(async_executor_terminate(r.ex), 0);
    pthread_join(t, NULL);
    cr_expect_eq(b.code, ASYNC_ECANCELED, "%s", async_strerror(b.code));
    free_rows(&r);
}
#endif
