/* The MPI backend's failures, the processes' side (written for the first
 * review of lib/mpi): `failures CASE` under `mpirun -np 3`
 * (tests/mpi/cases.h has the frame).
 *
 *   stopped   serving ranks stopped with SIGSTOP: a timed submit and a
 *             timed run (its input above the eager limit) end at their
 *             deadlines, and the pool serves on after SIGCONT;
 *   stopped_pool  the same with rank_processes, whose late answer wins;
 *   killed_idle, killed_mid_map  a serving rank SIGKILLed from outside;
 *   free_pending, exit_alive  the executor freed, or left to the exit
 *             handler, with jobs queued;
 *   oom0      rank 0's allocations failing one at a time. */
#include "cases.h"
#include "mpi/rank0.h"

/* --- stopped ranks -------------------------------------------------------------- */

/* After HANG_S the watchdog resumes the stopped ranks, so that a wait that
 * ignores its deadline ends (and fails its check) instead of hanging the
 * run.  A bound for hang detection only: the deadlines are 300 ms. */
#define HANG_S 12
#define BOUND_S 10.0

static pid_t pids[2];
static pthread_mutex_t wd_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wd_cv = PTHREAD_COND_INITIALIZER;
static bool wd_done;

/* How many serving ranks while_stopped stops: both, or the first only. */
static int nstop = 2;

static void signal_ranks(int sig)
{
    for (int i = 0; i < nstop; i++) kill(pids[i], sig);
}

static void *watchdog(void *arg)
{
    (void)arg;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += HANG_S;
    pthread_mutex_lock(&wd_mu);
    while (!wd_done)
        if (pthread_cond_timedwait(&wd_cv, &wd_mu, &ts) == ETIMEDOUT) break;
    bool late = !wd_done;
    pthread_mutex_unlock(&wd_mu);
    if (late) {
        printf("watchdog: resuming the ranks after %d s\n", HANG_S);
        signal_ranks(SIGCONT);
    }
    return NULL;
}

/* The process state letter of pid ('T' once stopped). */
static char proc_state(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return '?';
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    return p && p[1] == ' ' ? p[2] : '?';
}

/* The parent of pid, from /proc (0 when unknown). */
static pid_t parent_of(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    int ppid = 0;
    if (!p || sscanf(p + 2, "%*c %d", &ppid) != 1) return 0;
    return (pid_t)ppid;
}

/* The serving rank that pid runs under: pid itself, or with rank_processes
 * the ancestor of its pool worker whose parent is mpirun (rank 0's parent). */
static pid_t rank_of(pid_t pid)
{
    for (int up = 0; pid > 1 && up < 8; up++) {
        pid_t pp = parent_of(pid);
        if (pp == getppid()) return pid;
        pid = pp;
    }
    return 0;
}

/* Both serving ranks' pids, from jobs that each report who ran them. */
static bool find_ranks(void)
{
    pids[0] = pids[1] = 0;
    for (int round = 0; round < 50 && !(pids[0] && pids[1]); round++) {
        async_future_t *g[4];
        for (int i = 0; i < 4; i++) {
            async_job_t j = {.fn = slow_whoami, .out_size = 24};
            if (async_executor_submit(&g[i], ex, &j)) return false;
        }
        for (int i = 0; i < 4; i++) {
            const void *d;
            size_t n;
            if (async_future_wait(g[i]) == 0 && async_future_result(g[i], &d, &n) == 0 && n == 24) {
                int64_t r[3];
                memcpy(r, d, sizeof r);
                if (r[0] == 1 || r[0] == 2) pids[r[0] - 1] = rank_of((pid_t)r[1]);
            }
            async_future_unref(g[i]);
        }
    }
    return pids[0] && pids[1];
}

/* Stops both serving ranks, runs step, resumes them.  The watchdog
 * resumes them after HANG_S if step is still waiting then. */
/* Waits until no job of ours is on a rank (rank 0's per-rank counts, and
 * no direct run's reply to drop): the late replies of the previous step
 * have come, so every driver slot is free for the next one. */
static void settle(const char *what)
{
    mpib_t *b = ex->backend;
    int64_t give_up = async_now() + ASYNC_SEC(10);
    bool idle = false;
    while (!idle && async_now() < give_up) {
        pthread_mutex_lock(&b->mu);
        idle = !b->orphans;
        for (int r = 1; idle && r < async_mpi_size(); r++) idle = !b->busy[r];
        pthread_mutex_unlock(&b->mu);
        if (!idle) usleep(1000);
    }
    CHECK(idle, "%s: the late replies of the step before did not come within 10 s", what);
}

static void while_stopped(const char *what, void (*step)(void))
{
    settle(what);
    wd_done = false;
    signal_ranks(SIGSTOP);
    int64_t give_up = async_now() + ASYNC_SEC(10);
    while ((proc_state(pids[0]) != 'T' || (nstop == 2 && proc_state(pids[1]) != 'T')) && async_now() < give_up)
        usleep(1000);
    CHECK(proc_state(pids[0]) == 'T' && (nstop == 1 || proc_state(pids[1]) == 'T'), "%s: ranks not stopped: %c %c",
          what, proc_state(pids[0]), proc_state(pids[1]));
    pthread_t wd;
    bool armed = pthread_create(&wd, NULL, watchdog, NULL) == 0;
    CHECK(armed, "watchdog");
    step();
    pthread_mutex_lock(&wd_mu);
    wd_done = true;
    pthread_cond_signal(&wd_cv);
    pthread_mutex_unlock(&wd_mu);
    if (armed) pthread_join(wd, NULL);
    signal_ranks(SIGCONT);
}

static async_future_t *expired;

/* A timed submit: its future fails at the deadline. */
static void stopped_submit(void)
{
    int64_t r3[3];
    async_job_t k = {.fn = whoami, .out_size = sizeof r3, .timeout_ns = ASYNC_MSEC(300)};
    int64_t t0 = async_now();
    CHECK(async_executor_submit(&expired, ex, &k) == 0, "submit");
    int r = async_future_wait_dl(expired, async_deadline_after(ASYNC_SEC(HANG_S + 5)));
    double s = since_s(t0);
    printf("stopped: the timed submit: %s after %.2f s: %s\n", async_errname(async_future_error(expired)), s,
           async_future_message(expired));
    CHECK(r == ASYNC_ETIMEDOUT && async_future_error(expired) == ASYNC_ETIMEDOUT &&
              strstr(async_future_message(expired), "at its deadline"),
          "timed submit on a stopped rank: wait %s, future %s '%s'", async_errname(r),
          async_errname(async_future_error(expired)), async_future_message(expired));
    CHECK(s < BOUND_S, "the timed submit ignored its 0.3 s deadline: %.1f s", s);
}

/* A direct run whose input (1 MiB) is above every transport's eager limit:
 * its send completes only when the rank takes the message. */
static void timed_run(bool direct)
{
    enum { BIG = 1 << 20 };
    char *big = calloc(1, BIG);
    char msg[ASYNC_FUTURE_MSG_MAX];
    int64_t r3[3];
    async_job_t j = {.fn = whoami, .in = big, .in_size = BIG, .out_size = sizeof r3, .timeout_ns = ASYNC_MSEC(300)};
    uint64_t d0 = direct_runs();
    int64_t t0 = async_now();
    int r = async_executor_run(ex, &j, r3, NULL, msg, sizeof msg);
    double s = since_s(t0);
    printf("stopped: the timed run: %s after %.2f s: %s\n", async_errname(r), s, msg);
    CHECK(!direct || direct_runs() - d0 == 1, "the timed run did not take the direct path");
    CHECK(r == ASYNC_ETIMEDOUT && strstr(msg, "at its deadline"), "timed run on a stopped rank: %s '%s'",
          async_errname(r), msg);
    CHECK(s < BOUND_S, "the timed run ignored its 0.3 s deadline: %.1f s", s);
    free(big);
}

/* The run takes the direct path: rank 2 had no job yet (rank 1 may still
 * hold the submit's, whose reply can be still to come). */
static void stopped_run(void) { timed_run(true); }

/* Then both at once: whether a rank is idle for the run to take the direct
 * path depends on whether the earlier replies came while the ranks ran;
 * either path must end at the deadline. */
static void stopped_both(void)
{
    async_future_unref(expired);
    stopped_submit();
    timed_run(false);
}

/* A map with a time limit whose chunks all sit on the stopped ranks (one
 * chunk per driver slot, 2 slots per rank): it fails at its deadline (it
 * waited until the ranks resumed: its chunks ended only with their
 * replies), and the late replies are dropped, never written into out. */
enum { MAP_N = 4 };
#define UNTOUCHED INT64_C(0x5a5a5a5a5a5a5a5a)
static int64_t map_in[MAP_N], map_out[MAP_N];

static void stopped_map(void)
{
    for (int i = 0; i < MAP_N; i++) {
        map_in[i] = 1000 + i;
        map_out[i] = UNTOUCHED;
    }
    async_map_t m = {.fn = square_i64, .in = map_in, .in_size = 8, .out = map_out, .out_size = 8, .n = MAP_N,
                     .chunksize = 1, .timeout_ns = ASYNC_MSEC(300)};
    async_map_error_t err = {0};
    int64_t t0 = async_now();
    int r = async_executor_map(ex, &m, &err);
    double s = since_s(t0);
    printf("stopped: the timed map: %s after %.2f s: %s\n", async_errname(r), s, err.message);
    CHECK(r == ASYNC_ETIMEDOUT && err.code == ASYNC_ETIMEDOUT && strstr(err.message, "at its deadline"),
          "timed map on stopped ranks: %s '%s'", async_errname(r), err.message);
    CHECK(s < BOUND_S, "the timed map ignored its 0.3 s deadline: %.1f s", s);
}

/* One rank stopped, the other serving: a timed map of many chunks runs
 * its chunks on the live rank and fails at its deadline for those on the
 * stopped one (it waited until that rank resumed). */
enum { MAP1_N = 40 };
static int64_t map1_in[MAP1_N], map1_out[MAP1_N];

static void stopped_one_map(void)
{
    for (int i = 0; i < MAP1_N; i++) map1_in[i] = i;
    async_map_t m = {.fn = square_i64, .in = map1_in, .in_size = 8, .out = map1_out, .out_size = 8, .n = MAP1_N,
                     .chunksize = 1, .timeout_ns = ASYNC_MSEC(300)};
    async_map_error_t err = {0};
    int64_t t0 = async_now();
    int r = async_executor_map(ex, &m, &err);
    double s = since_s(t0);
    printf("stopped: the timed map, one rank stopped: %s after %.2f s: item %zu: %s\n", async_errname(r), s,
           err.index, err.message);
    CHECK(r == ASYNC_ETIMEDOUT, "timed map with one rank stopped: %s '%s'", async_errname(r), err.message);
    CHECK(s < BOUND_S, "the timed map ignored its 0.3 s deadline: %.1f s", s);
}

/* An imap has no time limit of its own (its chunks wait as Pool.imap's
 * do), but async_imap_next_dl's deadline bounds the wait for a result. */
static async_imap_iter_t *stopped_it;
static int64_t imap_in[MAP_N];

static void stopped_imap(void)
{
    for (int i = 0; i < MAP_N; i++) imap_in[i] = 7 * i - 5;
    async_imap_t m = {.fn = square_i64, .in = imap_in, .n = MAP_N, .in_size = 8, .out_size = 8};
    CHECK(async_executor_imap(&stopped_it, ex, &m) == 0, "imap");
    int64_t v, t0 = async_now();
    int r = async_imap_next_dl(stopped_it, &v, NULL, async_deadline_after(ASYNC_MSEC(300)));
    double s = since_s(t0);
    printf("stopped: imap_next_dl: %s after %.2f s\n", async_errname(r), s);
    CHECK(r == ASYNC_ETIMEDOUT, "imap_next_dl on stopped ranks: %s", async_errname(r));
    CHECK(s < BOUND_S, "imap_next_dl ignored its 0.3 s deadline: %.1f s", s);
}

/* With rank_processes: a rank's pool kills a job at its deadline and says
 * so, and rank 0 waits a grace second for that answer; a stopped rank
 * gives none, and the future fails once the grace is over. */
static void stopped_pool_submit(void)
{
    async_job_t k = {.fn = whoami, .out_size = 24, .timeout_ns = ASYNC_MSEC(300)};
    int64_t t0 = async_now();
    async_future_t *f;
    CHECK(async_executor_submit(&f, ex, &k) == 0, "submit");
    int r = async_future_wait_dl(f, async_deadline_after(ASYNC_SEC(HANG_S + 5)));
    double s = since_s(t0);
    printf("stopped_pool: the timed submit: %s after %.2f s: %s\n", async_errname(async_future_error(f)), s,
           async_future_message(f));
    CHECK(r == ASYNC_ETIMEDOUT && strstr(async_future_message(f), "did not answer"),
          "timed submit on a stopped rank with a pool: wait %s, future %s '%s'", async_errname(r),
          async_errname(async_future_error(f)), async_future_message(f));
    CHECK(s < BOUND_S, "the timed submit ignored its deadline: %.1f s", s);
    async_future_unref(f);
}

static void c_stopped_pool(void)
{
    if (!find_ranks()) {
        CHECK(0, "the serving ranks' pids: %d %d", (int)pids[0], (int)pids[1]);
        return;
    }
    while_stopped("submit", stopped_pool_submit);
    /* A running rank's pool kills the late job and its answer, which names
     * the kill, comes within the grace. */
    int64_t ms = 3000;
    async_job_t j = {.fn = nap_ms, .in = &ms, .in_size = 8, .timeout_ns = ASYNC_MSEC(200)};
    async_future_t *f;
    CHECK(async_executor_submit(&f, ex, &j) == 0, "submit");
    int r = async_future_wait_dl(f, async_deadline_after(ASYNC_SEC(30)));
    printf("stopped_pool: a late job on a running rank: %s '%s'\n", async_errname(r), async_future_message(f));
    CHECK(r == ASYNC_ETIMEDOUT && strstr(async_future_message(f), "killed"), "late job: %s '%s'",
          async_errname(r), async_future_message(f));
    async_future_unref(f);
    int64_t x = 4, got = 0, w;
    square_i64(&x, 8, &w, 8, NULL);
    async_job_t q = {.fn = square_i64, .in = &x, .in_size = 8, .out_size = 8};
    CHECK(async_executor_run(ex, &q, &got, NULL, NULL, 0) == 0 && got == w, "a run after SIGCONT");
}

static void c_stopped(void)
{
    CHECK(async_mpi_size() == 3, "run with -np 3 (%d ranks)", async_mpi_size());
    if (!find_ranks()) {
        CHECK(0, "the serving ranks' pids: %d %d", (int)pids[0], (int)pids[1]);
        return;
    }
    while_stopped("submit", stopped_submit);
    while_stopped("run", stopped_run);
    while_stopped("both", stopped_both);
    while_stopped("map", stopped_map);
    while_stopped("imap", stopped_imap);
    nstop = 1;
    while_stopped("one rank, map", stopped_one_map);
    nstop = 2;

    /* Resumed: the late replies are dropped, the failed future stays
     * failed, and the pool serves on, both ranks and both paths. */
    enum { N = 200 };
    static int64_t in[N], out[N], want[N];
    for (int i = 0; i < N; i++) {
        in[i] = i * 3 - 77;
        square_i64(&in[i], 8, &want[i], 8, NULL);
    }
    async_map_t m = {.fn = square_i64, .in = in, .in_size = 8, .out = out, .out_size = 8, .n = N, .chunksize = 3};
    async_map_error_t err;
    int r = async_executor_map(ex, &m, &err);
    CHECK(r == 0 && !memcmp(out, want, sizeof out), "map after SIGCONT: %s %s", async_errname(r), err.message);
    /* The imap's results come once the ranks resume, all of them. */
    int64_t v, w0;
    size_t idx, got_n = 0;
    while ((r = async_imap_next_dl(stopped_it, &v, &idx, async_deadline_after(ASYNC_SEC(60)))) == 0) {
        square_i64(&imap_in[idx], 8, &w0, 8, NULL);
        CHECK(v == w0, "imap item %zu after SIGCONT: %lld != %lld", idx, (long long)v, (long long)w0);
        got_n++;
    }
    CHECK(r == ASYNC_EEOF && got_n == MAP_N, "imap after SIGCONT: %s after %zu items", async_errname(r), got_n);
    async_imap_free(stopped_it);
    /* Every driver slot has had the reply of the timed map's chunk by now
     * (the map and imap above went through all of them): none was written
     * into the map's out after the map had failed. */
    for (int i = 0; i < MAP_N; i++)
        CHECK(map_out[i] == UNTOUCHED, "the timed map's row %d was written by a late reply: %lld", i,
              (long long)map_out[i]);
    CHECK(async_future_error(expired) == ASYNC_ETIMEDOUT, "the expired future became %s",
          async_errname(async_future_error(expired)));
    async_future_unref(expired);
    int64_t x = 41, got = 0, w;
    square_i64(&x, 8, &w, 8, NULL);
    async_job_t q = {.fn = square_i64, .in = &x, .in_size = 8, .out_size = 8};
    CHECK(async_executor_run(ex, &q, &got, NULL, NULL, 0) == 0 && got == w, "a run after SIGCONT");
}

/* A serving rank killed from outside, between jobs or during a map: Open
 * MPI ends the job (mpirun names the rank and the signal); this program
 * must never go on past it, nor hang. */
static void c_killed(bool mid_map)
{
    if (!find_ranks()) {
        CHECK(0, "the serving ranks' pids: %d %d", (int)pids[0], (int)pids[1]);
        return;
    }
    enum { N = 400 };
    static int64_t in[N], out[3 * N];
    for (int i = 0; i < N; i++) in[i] = 5;
    async_future_t *mf = NULL;
    if (mid_map) {
        async_map_t m = {.fn = slow_whoami, .in = in, .in_size = 8, .out = out, .out_size = 24, .n = N,
                         .chunksize = 1};
        CHECK(async_executor_map_async(&mf, ex, &m, NULL, NULL, NULL) == 0, "map_async");
        usleep(200000);
    }
    printf("killing rank 1 (pid %d) %s\n", (int)pids[0], mid_map ? "during a map" : "between jobs");
    fflush(stdout);
    kill(pids[0], SIGKILL);
    int64_t give_up = async_now() + ASYNC_SEC(30);
    while (async_now() < give_up) {
        int64_t x = 3, got;
        async_job_t j = {.fn = square_i64, .in = &x, .in_size = 8, .out_size = 8, .timeout_ns = ASYNC_SEC(2)};
        async_executor_run(ex, &j, &got, NULL, NULL, 0);
        usleep(10000);
    }
    printf("FAIL: the run went on 30 s after a rank was killed\n");
    failures++;
    if (mf) async_future_unref(mf);
}

/* --- lifecycle ---------------------------------------------------------------------- */

/* The executor freed with jobs queued and running: each future ends (its
 * result, or ASYNC_ECLOSED/ECANCELED for a job that never ran), free
 * returns, and the serving ranks exit. */
static void c_free_pending(void)
{
    enum { N = 40 };
    async_future_t *fs[N];
    int64_t in[N];
    for (int i = 0; i < N; i++) {
        in[i] = i;
        async_job_t j = {.fn = slow_whoami, .in = &in[i], .in_size = 8, .out_size = 24};
        CHECK(async_executor_submit(&fs[i], ex, &j) == 0, "submit %d", i);
    }
    usleep(60000);
    async_executor_free(ex);
    ex = NULL;
    int ran = 0, dropped = 0;
    for (int i = 0; i < N; i++) {
        CHECK(async_future_done(fs[i]), "future %d not final after free", i);
        int e = async_future_error(fs[i]);
        if (!e) ran++;
        else if (e == ASYNC_ECLOSED || e == ASYNC_ECANCELED) dropped++;
        else CHECK(0, "future %d: %s '%s'", i, async_errname(e), async_future_message(fs[i]));
        async_future_unref(fs[i]);
    }
    printf("free_pending: %d ran, %d dropped\n", ran, dropped);
    CHECK(ran + dropped == N, "%d + %d of %d futures", ran, dropped, N);
}

/* --- failing allocations on rank 0 ------------------------------------------------- */

/* Fails the armed-th allocation on rank 0 from arm() on (every thread
 * counts), and counts the failures. */
static _Atomic long countdown = -1;
static _Atomic long oom_failed;

static bool fail_now(void)
{
    if (async_mpi_rank() != 0) return false;
    long c = atomic_load(&countdown);
    while (c > 0 && !atomic_compare_exchange_weak(&countdown, &c, c - 1)) {
    }
    if (c == 1) {
        atomic_fetch_add(&oom_failed, 1);
        return true;
    }
    return false;
}

static void *o_malloc(size_t n, void *ud)
{
    (void)ud;
    return fail_now() ? NULL : malloc(n);
}

static void *o_realloc(void *p, size_t n, void *ud)
{
    (void)ud;
    return fail_now() ? NULL : realloc(p, n);
}

static void o_free(void *p, void *ud)
{
    (void)ud;
    free(p);
}

static const async_allocator_t counting = {o_malloc, o_realloc, o_free, NULL};

static void arm(long n) { atomic_store(&countdown, n); }
/* Disarms; true if the armed allocation was reached (and failed). */
static bool disarm(long f0) { atomic_store(&countdown, -1); return atomic_load(&oom_failed) > f0; }

enum { OOM_MAX = 400 };

/* One operation with its n-th allocation failing: 0 when it succeeded,
 * else its error, which must be ASYNC_ENOMEM. */
typedef int (*oom_op)(void);

static int op_submit(void)
{
    int64_t x = 12, want, got;
    square_i64(&x, 8, &want, 8, NULL);
    async_job_t j = {.fn = square_i64, .in = &x, .in_size = 8, .out_size = 8};
    async_future_t *f;
    int r = async_executor_submit(&f, ex, &j);
    if (r) return r;
    r = async_future_wait_dl(f, async_deadline_after(ASYNC_SEC(30)));
    const void *d;
    size_t n = 0;
    if (!r && (async_future_result(f, &d, &n) || n != 8 || (memcpy(&got, d, 8), got != want))) r = ASYNC_EIO;
    async_future_unref(f);
    return r;
}

static int op_run(void)
{
    int64_t x = 13, want, got = 0;
    square_i64(&x, 8, &want, 8, NULL);
    async_job_t j = {.fn = square_i64, .in = &x, .in_size = 8, .out_size = 8};
    int r = async_executor_run(ex, &j, &got, NULL, NULL, 0);
    return r ? r : got == want ? 0 : ASYNC_EIO;
}

static int op_map(void)
{
    enum { N = 60 };
    int64_t in[N], out[N], want[N];
    for (int i = 0; i < N; i++) {
        in[i] = i + 1;
        square_i64(&in[i], 8, &want[i], 8, NULL);
    }
    async_map_t m = {.fn = square_i64, .in = in, .in_size = 8, .out = out, .out_size = 8, .n = N, .chunksize = 7};
    int r = async_executor_map(ex, &m, NULL);
    return r ? r : memcmp(out, want, sizeof out) ? ASYNC_EIO : 0;
}

static int op_imap(void)
{
    enum { N = 30 };
    int64_t in[N];
    for (int i = 0; i < N; i++) in[i] = i;
    async_imap_t m = {.fn = square_i64, .in = in, .n = N, .in_size = 8, .out_size = 8, .chunksize = 4};
    async_imap_iter_t *it;
    int r = async_executor_imap(&it, ex, &m);
    if (r) return r;
    int64_t v;
    size_t idx, count = 0;
    while ((r = async_imap_next_dl(it, &v, &idx, async_deadline_after(ASYNC_SEC(30)))) == 0) {
        int64_t w;
        square_i64(&in[idx], 8, &w, 8, NULL);
        if (v != w) r = ASYNC_EIO;
        count++;
    }
    async_imap_free(it);
    if (r == ASYNC_EEOF) r = count == N ? 0 : ASYNC_EIO;
    return r;
}

static int64_t oom_table[64];

static int op_bcast(void)
{
    for (int i = 0; i < 64; i++) oom_table[i] = i * 7 + 1;
    int r = async_mpi_bcast(ex, oom_table, sizeof oom_table);
    if (r) return r;
    uint32_t i9 = 9;
    int64_t got = 0;
    async_job_t j = {.fn = stamp_at, .ctx = oom_table, .in = &i9, .in_size = 4, .out_size = 8};
    r = async_executor_run(ex, &j, &got, NULL, NULL, 0);
    return r ? r : got == oom_table[9] ? 0 : ASYNC_EIO;
}

/* Fails the 1st, 2nd, ... allocation of op until it makes none that the
 * countdown reaches; each failure must be a clean ASYNC_ENOMEM (or an
 * op that succeeds anyway), and the op must work again right after. */
static void oom_each(const char *name, oom_op op)
{
    long n;
    int enomem = 0, survived = 0;
    for (n = 1; n <= OOM_MAX; n++) {
        long f0 = atomic_load(&oom_failed);
        arm(n);
        int r = op();
        bool hit = disarm(f0);
        if (!hit) {
            CHECK(r == 0, "%s with no allocation failing: %s", name, async_errname(r));
            break;
        }
        if (r == ASYNC_ENOMEM) enomem++;
        else if (r == 0) survived++;
        else CHECK(0, "%s, allocation %ld failing: %s (not ASYNC_ENOMEM)", name, n, async_errname(r));
        int again = op();
        CHECK(again == 0, "%s after allocation %ld failed: %s", name, n, async_errname(again));
    }
    CHECK(n <= OOM_MAX, "%s made more than %d allocations", name, OOM_MAX);
    printf("oom: %s: %ld allocations failed one at a time: %d ASYNC_ENOMEM, %d succeeded anyway\n", name, n - 1,
           enomem, survived);
}

static void c_oom0(void)
{
    /* The executor itself, made with one allocation failing: a failed
     * start must leave the backend usable (the ranks still serving). */
    long n;
    int r = ASYNC_ENOMEM;
    for (n = 1; n <= OOM_MAX && r; n++) {
        long f0 = atomic_load(&oom_failed);
        arm(n);
        r = async_executor_new(&ex, &(async_executor_opts_t){.backend = ASYNC_BACKEND_MPI});
        bool hit = disarm(f0);
        CHECK(r == 0 || (r == ASYNC_ENOMEM && hit), "executor with allocation %ld failing: %s", n, async_errname(r));
        if (r && r != ASYNC_ENOMEM) return;
    }
    printf("oom: executor: made after %ld failing allocations\n", n - 2);
    if (r) return;
    oom_each("submit", op_submit);
    oom_each("run", op_run);
    oom_each("map", op_map);
    oom_each("imap", op_imap);
    oom_each("bcast", op_bcast);
}


static void c_exit_alive(void)
{
    /* Exits with the executor alive and jobs queued (exit() runs the
     * handlers that returning from main runs): the exit handler frees it,
     * the ranks exit, mpirun ends with 0. */
    for (int i = 0; i < 20; i++) {
        async_future_t *f;
        async_job_t j = {.fn = slow_whoami, .out_size = 24};
        CHECK(async_executor_submit(&f, ex, &j) == 0, "submit");
        async_future_unref(f);
    }
    if (!failures) printf("PASS exit_alive\n");
    exit(failures ? 1 : 0);
}

static void before_init(const char *c)
{
    if (!strcmp(c, "oom0")) async_set_allocator(&counting);
    if (!strcmp(c, "stopped_pool")) case_opts.rank_processes = 1;
}

static bool before_executor(const char *c)
{
    if (strcmp(c, "oom0")) return false;
    c_oom0(); /* makes the executor itself */
    return true;
}

static bool run_case(const char *c)
{
    if (!strcmp(c, "stopped")) c_stopped();
    else if (!strcmp(c, "stopped_pool")) c_stopped_pool();
    else if (!strcmp(c, "killed_idle")) c_killed(false);
    else if (!strcmp(c, "killed_mid_map")) c_killed(true);
    else if (!strcmp(c, "free_pending")) c_free_pending();
    else if (!strcmp(c, "exit_alive")) c_exit_alive();
    else return false;
    return true;
}

int main(int argc, char **argv)
{
    return cases_main(argc, argv, &(cases_hooks_t){before_init, before_executor, run_case});
}
