/* Round 13's attack on the MPI backend, run by tests/test-round13-mpi.c
 * under `mpirun -np 3` (2 serving ranks): `round13 CASE` runs one case on
 * rank 0, prints "PASS CASE" and exits 0, or prints what went wrong and
 * exits 1.  Expected answers are computed here, never typed in.
 *
 *   stopped   serving ranks stopped with SIGSTOP: a timed run (its input
 *             above the eager limit) and a timed submit end at their
 *             deadlines, and the pool serves on after SIGCONT;
 *   hostile   job messages that rank 0 never sends (forged here before the
 *             executor exists, when this program may still call MPI), and
 *             replies no rank sends, fed to rank 0's decoder;
 *   huge      a variable result past MPI's 2 GiB message;
 *   params    hostile parameters through the executor API;
 *   rebcast_registered  registered data replicated with new bytes;
 *   killed_idle, killed_mid_map  a serving rank SIGKILLed from outside;
 *   free_pending, exit_alive  the executor freed, or left to the exit
 *             handler, with jobs queued;
 *   oom0      rank 0's allocations failing one at a time. */
#include <async.h>
#include <async/mpi.h>
#include <mpi.h>
#include "mpi/mpi_internal.h"
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
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

int square13(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out_size, (void)ctx;
    int64_t x;
    memcpy(&x, in, sizeof x);
    x = x * x - 3;
    memcpy(out, &x, sizeof x);
    return 0;
}
ASYNC_MPI_WORK(square13);

/* Its rank and pid, and how many input bytes it got. */
int whoami13(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in, (void)out_size, (void)ctx;
    int64_t r[3] = {async_mpi_rank(), getpid(), (int64_t)in_size};
    memcpy(out, r, sizeof r);
    return 0;
}
ASYNC_MPI_WORK(whoami13);

/* Naps 50 ms, then as whoami13: keeps a rank busy long enough that
 * concurrent jobs spread over both ranks. */
int slow_whoami13(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    usleep(50000);
    return whoami13(in, in_size, out, out_size, ctx);
}
ASYNC_MPI_WORK(slow_whoami13);

/* The job's deadline as its function sees it, and the rank's clock. */
int deadline_of13(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in, (void)in_size, (void)out_size, (void)ctx;
    int64_t r[2] = {async_work_deadline(), async_now()};
    memcpy(out, r, sizeof r);
    return 0;
}
ASYNC_MPI_WORK(deadline_of13);

/* A variable result of the size its input names (one byte written). */
int big_out13(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out, (void)out_size, (void)ctx;
    uint64_t n;
    memcpy(&n, in, sizeof n);
    char *o = async_work_output((size_t)n);
    if (!o) return async_work_fail(ASYNC_ENOMEM, "no output of %llu bytes", (unsigned long long)n);
    o[0] = 'q';
    return 0;
}
ASYNC_MPI_WORK(big_out13);

/* Row i of the int64_t table in ctx. */
int at13(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out_size;
    uint32_t i;
    memcpy(&i, in, sizeof i);
    memcpy(out, (const int64_t *)ctx + i, sizeof(int64_t));
    return 0;
}
ASYNC_MPI_WORK(at13);

/* Built alike on every rank before init: registered data. */
static int64_t table13[8] = {3, 1, 4, 1, 5, 9, 2, 6};

static async_executor_t *ex;
extern _Atomic uint64_t async__mpi_direct_runs;
static uint64_t direct_runs(void) { return atomic_load(&async__mpi_direct_runs); }

static double since_s(int64_t t0) { return (double)(async_now() - t0) / 1e9; }

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

static void signal_ranks(int sig)
{
    for (int i = 0; i < 2; i++) kill(pids[i], sig);
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

/* Both serving ranks' pids, from jobs that each report who ran them. */
static bool find_ranks(void)
{
    pids[0] = pids[1] = 0;
    for (int round = 0; round < 50 && !(pids[0] && pids[1]); round++) {
        async_future_t *g[4];
        for (int i = 0; i < 4; i++) {
            async_job_t j = {.fn = slow_whoami13, .out_size = 24};
            if (async_executor_submit(&g[i], ex, &j)) return false;
        }
        for (int i = 0; i < 4; i++) {
            const void *d;
            size_t n;
            if (async_future_wait(g[i]) == 0 && async_future_result(g[i], &d, &n) == 0 && n == 24) {
                int64_t r[3];
                memcpy(r, d, sizeof r);
                if (r[0] == 1 || r[0] == 2) pids[r[0] - 1] = (pid_t)r[1];
            }
            async_future_unref(g[i]);
        }
    }
    return pids[0] && pids[1];
}

/* Stops both serving ranks, runs step, resumes them.  The watchdog
 * resumes them after HANG_S if step is still waiting then. */
static void while_stopped(const char *what, void (*step)(void))
{
    wd_done = false;
    signal_ranks(SIGSTOP);
    int64_t give_up = async_now() + ASYNC_SEC(10);
    while ((proc_state(pids[0]) != 'T' || proc_state(pids[1]) != 'T') && async_now() < give_up) usleep(1000);
    CHECK(proc_state(pids[0]) == 'T' && proc_state(pids[1]) == 'T', "%s: ranks not stopped: %c %c", what,
          proc_state(pids[0]), proc_state(pids[1]));
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
    async_job_t k = {.fn = whoami13, .out_size = sizeof r3, .timeout_ns = ASYNC_MSEC(300)};
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
    async_job_t j = {.fn = whoami13, .in = big, .in_size = BIG, .out_size = sizeof r3, .timeout_ns = ASYNC_MSEC(300)};
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

    /* Resumed: the late replies are dropped, the failed future stays
     * failed, and the pool serves on, both ranks and both paths. */
    enum { N = 200 };
    static int64_t in[N], out[N], want[N];
    for (int i = 0; i < N; i++) {
        in[i] = i * 3 - 77;
        square13(&in[i], 8, &want[i], 8, NULL);
    }
    async_map_t m = {.fn = square13, .in = in, .in_size = 8, .out = out, .out_size = 8, .n = N, .chunksize = 3};
    async_map_error_t err;
    int r = async_executor_map(ex, &m, &err);
    CHECK(r == 0 && !memcmp(out, want, sizeof out), "map after SIGCONT: %s %s", async_errname(r), err.message);
    CHECK(async_future_error(expired) == ASYNC_ETIMEDOUT, "the expired future became %s",
          async_errname(async_future_error(expired)));
    async_future_unref(expired);
    int64_t x = 41, got = 0, w;
    square13(&x, 8, &w, 8, NULL);
    async_job_t q = {.fn = square13, .in = &x, .in_size = 8, .out_size = 8};
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
        async_map_t m = {.fn = slow_whoami13, .in = in, .in_size = 8, .out = out, .out_size = 24, .n = N,
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
        async_job_t j = {.fn = square13, .in = &x, .in_size = 8, .out_size = 8, .timeout_ns = ASYNC_SEC(2)};
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
        async_job_t j = {.fn = slow_whoami13, .in = &in[i], .in_size = 8, .out_size = 24};
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
    square13(&x, 8, &want, 8, NULL);
    async_job_t j = {.fn = square13, .in = &x, .in_size = 8, .out_size = 8};
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
    square13(&x, 8, &want, 8, NULL);
    async_job_t j = {.fn = square13, .in = &x, .in_size = 8, .out_size = 8};
    int r = async_executor_run(ex, &j, &got, NULL, NULL, 0);
    return r ? r : got == want ? 0 : ASYNC_EIO;
}

static int op_map(void)
{
    enum { N = 60 };
    int64_t in[N], out[N], want[N];
    for (int i = 0; i < N; i++) {
        in[i] = i + 1;
        square13(&in[i], 8, &want[i], 8, NULL);
    }
    async_map_t m = {.fn = square13, .in = in, .in_size = 8, .out = out, .out_size = 8, .n = N, .chunksize = 7};
    int r = async_executor_map(ex, &m, NULL);
    return r ? r : memcmp(out, want, sizeof out) ? ASYNC_EIO : 0;
}

static int op_imap(void)
{
    enum { N = 30 };
    int64_t in[N];
    for (int i = 0; i < N; i++) in[i] = i;
    async_imap_t m = {.fn = square13, .in = in, .n = N, .in_size = 8, .out_size = 8, .chunksize = 4};
    async_imap_iter_t *it;
    int r = async_executor_imap(&it, ex, &m);
    if (r) return r;
    int64_t v;
    size_t idx, count = 0;
    while ((r = async_imap_next_dl(it, &v, &idx, async_deadline_after(ASYNC_SEC(30)))) == 0) {
        int64_t w;
        square13(&in[idx], 8, &w, 8, NULL);
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
    async_job_t j = {.fn = at13, .ctx = oom_table, .in = &i9, .in_size = 4, .out_size = 8};
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

/* --- hostile messages ------------------------------------------------------------ */

/* Sends a forged TAG_JOB to rank 1 and receives its reply (tag for the
 * slot), or returns false when rank 1 sent none within 10 s. */
static bool forge(const void *msg, int len, uint32_t slot, res_hdr_t *h, char *data, size_t cap, int *got)
{
    MPI_Send(msg, len, MPI_BYTE, 1, TAG_JOB, MPI_COMM_WORLD);
    int tag = async__mpi_reply_tag(slot), flag = 0;
    MPI_Status st;
    int64_t give_up = async_now() + ASYNC_SEC(10);
    while (!flag && async_now() < give_up) {
        MPI_Iprobe(1, tag, MPI_COMM_WORLD, &flag, &st);
        if (!flag) usleep(1000);
    }
    if (!flag) return false;
    int count = 0;
    MPI_Get_count(&st, MPI_BYTE, &count);
    char *buf = malloc(count ? (size_t)count : 1);
    MPI_Recv(buf, count, MPI_BYTE, 1, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    memset(h, 0, sizeof *h);
    if ((size_t)count >= sizeof *h) memcpy(h, buf, sizeof *h);
    size_t rest = (size_t)count > sizeof *h ? (size_t)count - sizeof *h : 0;
    memcpy(data, buf + ((size_t)count > sizeof *h ? sizeof *h : 0), rest < cap ? rest : cap);
    if (rest < cap) data[rest] = '\0';
    *got = count;
    free(buf);
    return true;
}

static uint32_t fn_index(async_work_fn fn)
{
    uint32_t i = UINT32_MAX;
    async__mpi_fn_index(fn, &i);
    return i;
}

/* Forged jobs and shares to rank 1 before the executor exists: each must
 * get an answer (a result or a precise error), never a crash or an abort
 * of the MPI job; then the rank serves on. */
static void hostile_jobs(void)
{
    res_hdr_t h;
    char data[512];
    int got;
    uint32_t dl_fn = fn_index(deadline_of13);
    CHECK(dl_fn != UINT32_MAX, "deadline_of13 not in the registry");
    /* A deadline centuries away: rank 0 sends such a remaining time for a
     * timeout near INT64_MAX; now + remaining overflowed on the rank. */
    job_hdr_t j = {.slot = 7, .fn = dl_fn, .count = 1, .out_size = 16, .remaining = INT64_MAX - 1};
    if (!forge(&j, sizeof j, j.slot, &h, data, sizeof data, &got)) {
        CHECK(0, "no reply to a job with a deadline centuries away");
        return;
    }
    int64_t seen[2];
    memcpy(seen, data + h.msg_len, sizeof seen);
    printf("hostile: a deadline centuries away: %s, the function saw deadline %lld at %lld\n",
           async_errname(h.err), (long long)seen[0], (long long)seen[1]);
    CHECK(h.err == 0 && h.slot == 7 && h.data_size == 16 && seen[0] > seen[1],
          "a deadline centuries away: %s slot %u, %llu bytes, deadline %lld at %lld", async_errname(h.err),
          h.slot, (unsigned long long)h.data_size, (long long)seen[0], (long long)seen[1]);

    /* A deadline long past (INT64_MIN left): it has passed on the rank. */
    j.remaining = INT64_MIN;
    if (forge(&j, sizeof j, j.slot, &h, data, sizeof data, &got)) {
        memcpy(seen, data + h.msg_len, sizeof seen);
        CHECK(h.err || seen[0] <= seen[1], "a deadline long past: %s, deadline %lld at %lld", async_errname(h.err),
              (long long)seen[0], (long long)seen[1]);
    } else {
        CHECK(0, "no reply to a job with a deadline long past");
    }

    /* Each of these is refused with ASYNC_EINVAL, naming the rank. */
    struct {
        const char *what;
        job_hdr_t h;
        int len; /* of the message sent; 0: the header's */
    } bad[] = {
        {"a truncated header", {.slot = 0}, 3},
        {"rows longer than the input", {.slot = 1, .fn = dl_fn, .count = 2, .in_size = 8, .out_size = 16},
         (int)sizeof(job_hdr_t) + 8},
        {"an unknown function", {.slot = 2, .fn = 0xffff, .count = 1, .out_size = 16}, 0},
        {"an unknown ctx", {.slot = 3, .fn = dl_fn, .ctx = 999, .count = 1, .out_size = 16}, 0},
        {"a work function called as a chunk function", {.slot = 4, .fn = dl_fn, .chunked = 1, .count = 1, .out_size = 16}, 0},
        {"count * in_size wrapping", {.slot = 5, .fn = dl_fn, .count = 1ull << 62, .in_size = 4, .out_size = 16}, 0},
        /* A 2 GiB output: its reply cannot be one MPI message (int count). */
        {"a 2 GiB output", {.slot = 6, .fn = dl_fn, .count = 1, .out_size = 1ull << 31}, 0},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        bad[i].h.remaining = NO_DEADLINE;
        int len = bad[i].len ? bad[i].len : (int)sizeof bad[i].h;
        char buf[sizeof(job_hdr_t) + 8] = {0};
        memcpy(buf, &bad[i].h, sizeof bad[i].h);
        if (!forge(buf, len, bad[i].h.slot, &h, data, sizeof data, &got)) {
            CHECK(0, "%s: no reply", bad[i].what);
            continue;
        }
        printf("hostile: %s: %s '%s'\n", bad[i].what, async_errname(h.err), data);
        /* A header too short to read has no slot to echo, nor a rank. */
        bool whole = bad[i].len != 3;
        CHECK(h.err == ASYNC_EINVAL && (!whole || (h.slot == bad[i].h.slot && strstr(data, "rank 1"))),
              "%s: %s slot %u '%s'", bad[i].what, async_errname(h.err), h.slot, data);
    }

    /* Shares that are not one: a short header, data without a header. */
    char five[5] = {0};
    MPI_Send(five, sizeof five, MPI_BYTE, 1, TAG_SHARE, MPI_COMM_WORLD);
    MPI_Send(five, sizeof five, MPI_BYTE, 1, TAG_SHARE_DATA, MPI_COMM_WORLD);

    /* The rank serves on, and its clock for a job without deadline is none. */
    j = (job_hdr_t){.slot = 9, .fn = dl_fn, .count = 1, .out_size = 16, .remaining = NO_DEADLINE};
    if (forge(&j, sizeof j, j.slot, &h, data, sizeof data, &got)) {
        memcpy(seen, data + h.msg_len, sizeof seen);
        CHECK(h.err == 0 && seen[0] == ASYNC_FOREVER, "after the hostile messages: %s deadline %lld",
              async_errname(h.err), (long long)seen[0]);
    } else {
        CHECK(0, "rank 1 stopped answering after the hostile messages");
    }
}

/* Replies no serving rank sends, fed to rank 0's decoder: each is refused
 * (ASYNC_EIO) or read within its bytes. */
static void hostile_replies(void)
{
    async__outcome_t oc;
    const char *rows;
    size_t n;
    /* msg_len past the end, data_size wrapping the sum back onto len. */
    enum { LEN = sizeof(res_hdr_t) + 16 };
    char *reply = malloc(LEN);
    memset(reply, 'm', LEN);
    res_hdr_t h = {.slot = 0, .var = 1, .msg_len = 1000};
    h.data_size = (uint64_t)LEN - sizeof h - h.msg_len; /* wraps: 2^64 - 984 */
    memcpy(reply, &h, sizeof h);
    async__mpi_reply_outcome(reply, LEN, 1, 8, &oc, &rows, &n);
    CHECK(oc.err == ASYNC_EIO && !oc.var_out && n == 0,
          "a reply whose sizes wrap: %s, var_out %p (%zu bytes), rows %zu", async_errname(oc.err), oc.var_out,
          oc.var_size, n);
    /* The same without var: rows would be read from past the reply. */
    h.var = 0;
    memcpy(reply, &h, sizeof h);
    async__mpi_reply_outcome(reply, LEN, 4, 8, &oc, &rows, &n);
    CHECK(oc.err == ASYNC_EIO && n == 0, "a reply whose sizes wrap (rows): %s, %zu rows bytes", async_errname(oc.err), n);
    /* A failed row outside the job. */
    h = (res_hdr_t){.err = ASYNC_EINVAL, .failed_row = 1000, .msg_len = 16};
    memcpy(reply, &h, sizeof h);
    async__mpi_reply_outcome(reply, LEN, 4, 8, &oc, &rows, &n);
    CHECK(oc.err == ASYNC_EINVAL && oc.failed_row < 4, "failed row %zu of a 4-row job", (size_t)oc.failed_row);
    /* A well-formed one is read. */
    h = (res_hdr_t){.msg_len = 0, .data_size = 16};
    memcpy(reply, &h, sizeof h);
    async__mpi_reply_outcome(reply, LEN, 2, 8, &oc, &rows, &n);
    CHECK(oc.err == 0 && n == 16 && rows == reply + sizeof h, "a good reply: %s %zu", async_errname(oc.err), n);
    free(reply);
}

/* --- a result past MPI's message ------------------------------------------------ */

static void c_huge(void)
{
    uint64_t n = (uint64_t)1 << 31; /* 2 GiB: a reply of more than INT_MAX bytes */
    async_job_t j = {.fn = big_out13, .in = &n, .in_size = 8, .out_size = 8};
    async_future_t *f;
    CHECK(async_executor_submit(&f, ex, &j) == 0, "submit");
    int r = async_future_wait_dl(f, async_deadline_after(ASYNC_SEC(60)));
    printf("huge: submit: %s '%s'\n", async_errname(async_future_error(f)), async_future_message(f));
    CHECK(r == ASYNC_ENOMEM && strstr(async_future_message(f), "no output of"),
          "a 2 GiB result: %s '%s'", async_errname(r), async_future_message(f));
    async_future_unref(f);
    char msg[ASYNC_FUTURE_MSG_MAX];
    uint64_t d0 = direct_runs();
    r = async_executor_run(ex, &j, NULL, NULL, msg, sizeof msg);
    CHECK(direct_runs() - d0 == 1, "the run did not take the direct path");
    CHECK(r == ASYNC_ENOMEM && strstr(msg, "no output of"), "a 2 GiB result (run): %s '%s'", async_errname(r), msg);
    /* A large result still comes whole. */
    n = 3u << 20;
    char head[8] = {0};
    size_t len = 0;
    r = async_executor_run(ex, &j, head, &len, msg, sizeof msg);
    CHECK(r == 0 && len == n && head[0] == 'q', "a 3 MiB result: %s %zu '%s'", async_errname(r), len, msg);
}

/* --- hostile parameters ----------------------------------------------------------- */

static void c_params(void)
{
    int64_t x = 6, got = 0, w, seen[2];
    square13(&x, 8, &w, 8, NULL);
    char msg[ASYNC_FUTURE_MSG_MAX];
    /* Timeouts: negative and INT64_MIN have expired; INT64_MAX is none. */
    int64_t timeouts[] = {-1, INT64_MIN, INT64_MAX};
    for (int i = 0; i < 3; i++) {
        async_job_t j = {.fn = square13, .in = &x, .in_size = 8, .out_size = 8, .timeout_ns = timeouts[i]};
        int r = async_executor_run(ex, &j, &got, NULL, msg, sizeof msg);
        int want = timeouts[i] < 0 ? ASYNC_ETIMEDOUT : 0;
        CHECK(r == want && (r || got == w), "timeout %lld: %s '%s'", (long long)timeouts[i], async_errname(r), msg);
        async_future_t *f;
        CHECK(async_executor_submit(&f, ex, &j) == 0, "submit timeout %lld", (long long)timeouts[i]);
        r = async_future_wait_dl(f, async_deadline_after(ASYNC_SEC(60)));
        CHECK(r == want, "submit timeout %lld: %s '%s'", (long long)timeouts[i], async_errname(r),
              async_future_message(f));
        async_future_unref(f);
    }
    /* A timeout that puts the deadline just short of INT64_MAX: the rank
     * must see a deadline in its future, not a wrapped one. */
    for (int path = 0; path < 2; path++) {
        async_job_t j = {.fn = deadline_of13, .out_size = 16, .timeout_ns = INT64_MAX - async_now() - 20000};
        int r;
        if (path == 0) {
            r = async_executor_run(ex, &j, seen, NULL, msg, sizeof msg);
        } else {
            async_future_t *f;
            CHECK(async_executor_submit(&f, ex, &j) == 0, "submit");
            r = async_future_wait(f);
            const void *d;
            size_t n = 0;
            if (!r && !async_future_result(f, &d, &n) && n == 16) memcpy(seen, d, 16);
            async_future_unref(f);
        }
        CHECK(r == 0 && seen[0] > seen[1], "%s with a deadline near INT64_MAX: %s, deadline %lld at %lld",
              path ? "submit" : "run", async_errname(r), (long long)seen[0], (long long)seen[1]);
    }
    /* NULL function, NULL job, input NULL with a size. */
    async_future_t *f = NULL;
    async_job_t nf = {.fn = NULL, .out_size = 8};
    CHECK(async_executor_submit(&f, ex, &nf) == ASYNC_EINVAL, "NULL fn");
    CHECK(async_executor_submit(&f, ex, NULL) == ASYNC_EINVAL, "NULL job");
    async_job_t ni = {.fn = square13, .in = NULL, .in_size = 8, .out_size = 8};
    CHECK(async_executor_submit(&f, ex, &ni) == ASYNC_EINVAL, "NULL input with a size");
    /* Chunk sizes: 0 (the default), 1, larger than n, SIZE_MAX. */
    enum { N = 300 };
    static int64_t in[N], out[N], want[N];
    for (int i = 0; i < N; i++) {
        in[i] = i - 150;
        square13(&in[i], 8, &want[i], 8, NULL);
    }
    size_t chunks[] = {0, 1, N + 1, SIZE_MAX};
    for (int i = 0; i < 4; i++) {
        memset(out, 0, sizeof out);
        async_map_t m = {.fn = square13, .in = in, .in_size = 8, .out = out, .out_size = 8, .n = N,
                         .chunksize = chunks[i]};
        async_map_error_t err;
        int r = async_executor_map(ex, &m, &err);
        CHECK(r == 0 && !memcmp(out, want, sizeof out), "chunksize %zu: %s %s", chunks[i], async_errname(r),
              err.message);
    }
    async_map_t m0 = {.fn = square13, .in = in, .in_size = 8, .out = out, .out_size = 8, .n = 0};
    CHECK(async_executor_map(ex, &m0, NULL) == 0, "a map of 0 items");
    /* bcast: NULL data, size 0, size over INT_MAX. */
    CHECK(async_mpi_bcast(ex, NULL, 8) == ASYNC_EINVAL, "bcast NULL");
    CHECK(async_mpi_bcast(ex, in, 0) == ASYNC_EINVAL, "bcast 0 bytes");
    CHECK(async_mpi_bcast(ex, in, (size_t)INT32_MAX + 1) == ASYNC_EINVAL, "bcast over INT_MAX");
    CHECK(async_mpi_bcast_dl(ex, in, 8, INT64_MIN) == ASYNC_ETIMEDOUT, "bcast_dl at INT64_MIN");
    /* Registration after init. */
    CHECK(async_mpi_register("late13", square13) == ASYNC_EBUSY, "register after init");
    CHECK(async_mpi_register_data("late13d", in) == ASYNC_EBUSY, "register_data after init");
    char m2[64];
    CHECK(async_mpi_init(NULL, NULL, NULL, m2, sizeof m2) == ASYNC_EALREADY, "init twice");
    CHECK(async_mpi_finalize() == ASYNC_EBUSY, "finalize with the executor alive");
}

/* --- registered data replicated again --------------------------------------------- */

static void c_rebcast_registered(void)
{
    enum { N = 8 };
    uint32_t idx[N];
    int64_t out[N];
    for (int i = 0; i < N; i++) idx[i] = (uint32_t)i;
    for (int round = 0; round < 2; round++) {
        if (round) {
            for (int i = 0; i < N; i++) table13[i] = table13[i] * 10 + 1000;
            CHECK(async_mpi_bcast(ex, table13, sizeof table13) == 0, "bcast of the registered table");
        }
        async_map_t m = {.fn = at13, .ctx = table13, .in = idx, .in_size = 4, .out = out, .out_size = 8, .n = N,
                         .chunksize = 1};
        async_map_error_t err;
        int r = async_executor_map(ex, &m, &err);
        CHECK(r == 0 && !memcmp(out, table13, sizeof out), "round %d: %s %s, out[0] %lld, table13[0] %lld", round,
              async_errname(r), err.message, (long long)out[0], (long long)table13[0]);
        uint32_t i5 = 5;
        int64_t got = 0;
        async_job_t j = {.fn = at13, .ctx = table13, .in = &i5, .in_size = 4, .out_size = 8};
        r = async_executor_run(ex, &j, &got, NULL, NULL, 0);
        CHECK(r == 0 && got == table13[5], "round %d run: %s %lld != %lld", round, async_errname(r), (long long)got,
              (long long)table13[5]);
    }
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *c = argc > 1 ? argv[1] : "";
    /* Registration's own checks, alike on every rank (before init). */
    char long_name[65];
    memset(long_name, 'n', 64);
    long_name[64] = '\0';
    CHECK(async_mpi_register(long_name, square13) == ASYNC_EINVAL, "a 64-byte name");
    long_name[63] = '\0';
    CHECK(async_mpi_register(long_name, square13) == 0, "a 63-byte name");
    CHECK(async_mpi_register("square13", whoami13) == ASYNC_EINVAL, "a name taken by another function");
    CHECK(async_mpi_register("square13", square13) == 0, "the same registration twice");
    CHECK(async_mpi_register("", square13) == ASYNC_EINVAL, "an empty name");
    CHECK(async_mpi_register(NULL, square13) == ASYNC_EINVAL, "a NULL name");
    CHECK(async_mpi_register("nofn13", NULL) == ASYNC_EINVAL, "a NULL function");
    CHECK(async_mpi_register_data("table13", table13) == 0, "register_data");
    CHECK(async_mpi_register_data("table13", &failures) == ASYNC_EINVAL, "data name taken");
    CHECK(async_mpi_rank() == -1 && async_mpi_size() == 0, "rank before init");
    async_executor_t *early;
    CHECK(async_executor_new(&early, &(async_executor_opts_t){.backend = ASYNC_BACKEND_MPI}) == ASYNC_ENOTSUP,
          "an executor before init");
    CHECK(async_mpi_finalize() == 0, "finalize before init");
    char msg[256];
    int r0;
    /* More rank processes than a process pool takes: refused before MPI
     * starts (each rank's pool failed, and its jobs ran unisolated). */
    async_mpi_opts_t many = {.rank_processes = 5000};
    r0 = async_mpi_init(&argc, &argv, &many, msg, sizeof msg);
    CHECK(r0 == ASYNC_EINVAL && strstr(msg, "rank_processes"), "rank_processes 5000: %s '%s'", async_errname(r0),
          msg);
    CHECK(async_mpi_rank() == -1, "init went on with rank_processes 5000 (rank %d)", async_mpi_rank());
    if (!strcmp(c, "oom0")) async_set_allocator(&counting);
    int r = async_mpi_init(&argc, &argv, NULL, msg, sizeof msg);
    if (r) {
        printf("FAIL init: %s: %s\n", async_errname(r), msg);
        return 1;
    }
    if (!strcmp(c, "hostile")) {
        hostile_jobs(); /* before the executor: this program may call MPI */
        hostile_replies();
    }
    if (!strcmp(c, "oom0")) {
        c_oom0(); /* makes the executor itself */
        goto out;
    }
    async_executor_opts_t o = {.backend = ASYNC_BACKEND_MPI};
    CHECK((r = async_executor_new(&ex, &o)) == 0, "executor: %s", async_errname(r));
    if (r) return 1;
    if (!strcmp(c, "exit_alive")) {
        /* Returns from main with the executor alive and jobs queued: the
         * exit handler frees it, the ranks exit, mpirun ends with 0. */
        for (int i = 0; i < 20; i++) {
            async_future_t *f;
            async_job_t j = {.fn = slow_whoami13, .out_size = 24};
            CHECK(async_executor_submit(&f, ex, &j) == 0, "submit");
            async_future_unref(f);
        }
        if (!failures) printf("PASS %s\n", c);
        return failures ? 1 : 0;
    }
    if (!strcmp(c, "stopped")) c_stopped();
    else if (!strcmp(c, "hostile")) {
        int64_t x = 2, got = 0, w; /* the executor after the forged traffic */
        square13(&x, 8, &w, 8, NULL);
        async_job_t j = {.fn = square13, .in = &x, .in_size = 8, .out_size = 8};
        CHECK(async_executor_run(ex, &j, &got, NULL, NULL, 0) == 0 && got == w, "a run after the forgeries");
    } else if (!strcmp(c, "huge")) c_huge();
    else if (!strcmp(c, "killed_idle")) c_killed(false);
    else if (!strcmp(c, "killed_mid_map")) c_killed(true);
    else if (!strcmp(c, "params")) c_params();
    else if (!strcmp(c, "free_pending")) c_free_pending();
    else if (!strcmp(c, "rebcast_registered")) c_rebcast_registered();
    else {
        printf("FAIL unknown case '%s'\n", c);
        failures++;
    }
out:
    if (ex) async_executor_free(ex);
    CHECK(async_mpi_finalize() == 0, "finalize");
    if (!failures) printf("PASS %s\n", c);
    return failures ? 1 : 0;
}
