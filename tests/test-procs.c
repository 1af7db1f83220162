/* The executor's process backend, through the public API: what only a
 * process pool does.  A task that kills, segfaults or exits its worker fails
 * alone with ASYNC_EWORKERDIED; a task past its deadline is killed; workers
 * recycle after max_tasks_per_worker; an initializer that keeps crashing
 * breaks the pool with ASYNC_EINIT after a bounded number of restarts, while
 * a worker killed in its initializer is simply replaced; a killed fork
 * server breaks the pool with ASYNC_ECHILD; a kill storm on workers and fresh
 * replacements loses and repeats no job; terminate kills work in flight; a
 * parent running threads keeps replacing workers; maps over shared memory
 * copy nothing; and nothing leaks (allocations, descriptors, shared
 * mappings, child processes).
 * The backend-independent cases run in test-executor-lib/exec/process_backend.c. */
#if defined(__SANITIZE_THREAD__)
/* ThreadSanitizer cannot follow synchronisation that goes through memory
 * another process writes, and forking the fork server from a threaded
 * process is outside what it supports: these tests run under the other
 * sanitizers only. */
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
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <async.h>
#include <async/executor.h>
#include <async/future.h>
#include "support/alloc.h"
#include "support/teardown.h"
#include "support/proc.h"


static void setup(void) { test_alloc_install(); }
static void teardown(void)
{
    TEARDOWN_CHECK_NO_LEAK();
    test_alloc_uninstall();
}
TestSuite(procs, .init = setup, .fini = teardown);

static async_executor_t *pool_opts(unsigned workers, unsigned max_tasks, async_work_init_fn init)
{
    async_executor_opts_t o = {.backend = ASYNC_BACKEND_PROCESSES, .workers = workers,
                               .max_tasks_per_worker = max_tasks, .initializer = init};
    async_executor_t *ex = NULL;
    int r = async_executor_new(&ex, &o);
    cr_assert_eq(r, 0, "executor_new: %s", async_strerror(r));
    return ex;
}

static async_executor_t *pool(unsigned workers) { return pool_opts(workers, 0, NULL); }

/* in: {how, ms}.  how 0: sleep ms and return the pid; 1: SIGKILL itself;
 * 2: segfault; 3: _exit(3). */
static int act(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out_size, (void)ctx;
    int v[2];
    memcpy(v, in, sizeof v);
    switch (v[0]) {
    case 1: raise(SIGKILL); break;
    case 2: raise(SIGSEGV); break;
    case 3: _exit(3);
    }
    usleep((useconds_t)v[1] * 1000);
    int pid = getpid();
    memcpy(out, &pid, sizeof pid);
    return 0;
}

static async_future_t *submit_act(async_executor_t *ex, int how, int ms, int64_t timeout_ns)
{
    int v[2] = {how, ms};
    async_job_t job = {.fn = act, .in = v, .in_size = sizeof v, .out_size = sizeof(int),
                       .timeout_ns = timeout_ns};
    async_future_t *f = NULL;
    int r = async_executor_submit(&f, ex, &job);
    cr_assert_eq(r, 0, "submit: %s", async_strerror(r));
    return f;
}

static int result_int(async_future_t *f)
{
    const void *data;
    size_t size;
    cr_assert_eq(async_future_result(f, &data, &size), 0, "%s", async_future_message(f));
    int v;
    memcpy(&v, data, sizeof v);
    return v;
}

static void death(int how, const char *want)
{
    async_executor_t *ex = pool(2);
    async_future_t *ok1 = submit_act(ex, 0, 50, 0);
    async_future_t *bad = submit_act(ex, how, 0, 0);
    cr_expect_eq(async_future_wait(bad), ASYNC_EWORKERDIED);
    cr_expect(strstr(async_future_message(bad), want), "'%s' lacks '%s'",
              async_future_message(bad), want);
    cr_expect_eq(async_future_wait(ok1), 0, "the other worker's job is unharmed");
    async_future_t *after[10];
    for (int i = 0; i < 10; i++) after[i] = submit_act(ex, 0, 0, 0);
    for (int i = 0; i < 10; i++) {
        cr_expect_eq(async_future_wait(after[i]), 0, "the pool serves on");
        async_future_unref(after[i]);
    }
    async_future_unref(ok1);
    async_future_unref(bad);
    async_executor_free(ex);
}

Test(procs, sigkilled_task, .timeout = 20) { death(1, "killed by signal 9"); }
Test(procs, exiting_task, .timeout = 20) { death(3, "exited with status 3"); }
Test(procs, segfaulting_task, .timeout = 20)
{
#if defined(__SANITIZE_ADDRESS__)
    death(2, "worker process"); /* ASan reports the SEGV and exits */
#else
    death(2, "killed by signal 11");
#endif
}

/* Sets *in.flag (shared memory: a pointer inside an input is fine there),
 * then sleeps in.ms. */
typedef struct marked {
    volatile int *flag;
    int ms;
} marked_t;

static int mark_and_sleep(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out, (void)out_size, (void)ctx;
    marked_t m;
    memcpy(&m, in, sizeof m);
    *m.flag = 1;
    usleep((useconds_t)m.ms * 1000);
    return 0;
}

Test(procs, deadline_kills_the_worker, .timeout = 20)
{
    async_executor_t *ex = pool(1);
    volatile int *flag;
    cr_assert_eq(async_executor_shm_alloc((void **)&flag, ex, sizeof *flag), 0);
    marked_t in = {flag, 20000};
    int64_t t0 = async_now(), deadline = async_deadline_after(ASYNC_MSEC(150));
    async_job_t job = {.fn = mark_and_sleep, .in = &in, .in_size = sizeof in,
                       .timeout_ns = ASYNC_MSEC(150)};
    async_future_t *f;
    cr_assert_eq(async_executor_submit(&f, ex, &job), 0);
    while (!*flag && async_now() < deadline) usleep(1000);
    bool ran = *flag; /* a starved machine may not start it in time */
    cr_expect_eq(async_future_wait(f), ASYNC_ETIMEDOUT);
    cr_expect_geq(async_now() - t0, ASYNC_MSEC(150));
    cr_expect_lt(async_now() - t0, ASYNC_SEC(10));
    if (ran) cr_expect(strstr(async_future_message(f), "killed"), "%s", async_future_message(f));
    async_future_t *g = submit_act(ex, 0, 0, 0);
    cr_expect_eq(async_future_wait(g), 0);
    async_future_unref(f);
    async_future_unref(g);
    async_executor_shm_free(ex, (void *)flag);
    async_executor_free(ex);
}

Test(procs, max_tasks_per_worker_recycles, .timeout = 20)
{
    async_executor_t *ex = pool_opts(2, 3, NULL);
    enum { N = 30 };
    async_future_t *fs[N];
    int pids[N], distinct = 0;
    for (int i = 0; i < N; i++) fs[i] = submit_act(ex, 0, 1, 0);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(async_future_wait(fs[i]), 0);
        pids[i] = result_int(fs[i]);
        int seen = 0;
        for (int k = 0; k < i; k++) seen |= pids[k] == pids[i];
        distinct += !seen;
        async_future_unref(fs[i]);
    }
    cr_expect_geq(distinct, N / 3, "%d workers for %d tasks", distinct, N);
    async_executor_free(ex);
}

static int crash_init(void *ctx)
{
    (void)ctx;
    raise(SIGKILL);
    return 0;
}

Test(procs, crashing_initializer_breaks_the_pool, .timeout = 20)
{
    async_executor_t *ex = pool_opts(2, 0, crash_init);
    int v[2] = {0, 0};
    async_job_t job = {.fn = act, .in = v, .in_size = sizeof v, .out_size = sizeof(int)};
    async_future_t *f = NULL;
    int r = async_executor_submit(&f, ex, &job);
    if (r == 0) {
        cr_expect_eq(async_future_wait(f), ASYNC_EINIT);
        cr_expect(strstr(async_future_message(f), "signal 9"), "%s", async_future_message(f));
        async_future_unref(f);
    } else {
        cr_expect_eq(r, ASYNC_EINIT);
    }
    int64_t until = async_now() + ASYNC_SEC(5);
    while ((r = async_executor_submit(&f, ex, &job)) == 0 && async_now() < until) {
        async_future_wait(f);
        async_future_unref(f);
        usleep(10000);
    }
    cr_expect_eq(r, ASYNC_EINIT);
    char why[300];
    cr_expect_eq(async_executor_error(ex, why, sizeof why), ASYNC_EINIT);
    cr_expect(strstr(why, "10 times in a row") && strstr(why, "signal 9"), "%s", why);
    async_executor_free(ex);
}

/* Our child processes named comm (the fork server is "async-forksrv"),
 * or the children of parent when it is not 0; up to max, returns how many. */
static int children_named(pid_t parent, const char *comm, pid_t *out, int max)
{
    DIR *d = opendir("/proc");
    cr_assert(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < max) {
        int pid = atoi(e->d_name);
        if (pid <= 0) continue;
        char path[64], buf[512];
        snprintf(path, sizeof path, "/proc/%d/stat", pid);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t len = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[len] = '\0';
        char *open = strchr(buf, '('), *close = strrchr(buf, ')');
        if (!open || !close) continue;
        *close = '\0';
        char state;
        int ppid;
        if (sscanf(close + 2, "%c %d", &state, &ppid) != 2 || state == 'Z') continue;
        if (ppid == (parent ? parent : getpid()) && strcmp(open + 1, comm) == 0) out[n++] = pid;
    }
    closedir(d);
    return n;
}

/* The pool's fork server: it names itself right after its fork, so under
 * load it can still carry our name for a moment after the pool is made. */
static pid_t fork_server(void)
{
    pid_t server = 0;
    int64_t until = async_now() + ASYNC_SEC(10);
    while (children_named(0, "async-forksrv", &server, 1) != 1 && async_now() < until)
        usleep(1000);
    cr_assert_neq(server, 0, "no fork server among our children after 10 s");
    return server;
}

Test(procs, fork_server_killed_is_reported, .timeout = 30)
{
    async_executor_t *ex = pool(2);
    async_future_t *running = submit_act(ex, 0, 20000, 0);
    async_future_t *warm = submit_act(ex, 0, 0, 0);
    cr_assert_eq(async_future_wait(warm), 0);
    async_future_unref(warm);
    pid_t server = fork_server();
    cr_assert_eq(kill(server, SIGKILL), 0);
    /* The job the dead server's worker held fails with the real cause. */
    cr_expect_eq(async_future_wait(running), ASYNC_ECHILD, "%s", async_future_message(running));
    const char *m = async_future_message(running);
    cr_expect(strstr(m, "fork server") && strstr(m, "died"), "%s", m);
    cr_expect_not(strstr(m, "while running"), "%s", m);
    async_future_unref(running);
    /* Submits accepted before the pool had noticed fail the same way; once
     * it has (at most a few hundred ms), submit itself returns the code. */
    int64_t until = async_now() + ASYNC_SEC(10);
    int r;
    async_job_t job = {.fn = act, .in = (int[2]){0, 0}, .in_size = 2 * sizeof(int),
                       .out_size = sizeof(int)};
    async_future_t *f;
    while ((r = async_executor_submit(&f, ex, &job)) == 0 && async_now() < until) {
        cr_expect_eq(async_future_wait(f), ASYNC_ECHILD, "%s", async_future_message(f));
        async_future_unref(f);
        usleep(5000);
    }
    cr_expect_eq(r, ASYNC_ECHILD, "%s", async_strerror(r));
    char why[300];
    cr_expect_eq(async_executor_error(ex, why, sizeof why), ASYNC_ECHILD);
    cr_expect(strstr(why, "fork server") && strstr(why, "signal 9"), "%s", why);
    cr_expect_eq(async_executor_trysubmit(&f, ex, &job), ASYNC_ECHILD);
    async_map_t map = {.fn = act, .in = (int[4]){0, 0, 0, 0}, .in_size = 2 * sizeof(int), .n = 2};
    cr_expect_eq(async_executor_map(ex, &map, NULL), ASYNC_ECHILD);
    async_executor_free(ex);
}

static int slow_ok_init(void *ctx)
{
    (void)ctx;
    usleep(1000000);
    return 0;
}

Test(procs, worker_killed_in_its_initializer_is_replaced, .timeout = 40)
{
    async_executor_t *ex = pool_opts(1, 0, slow_ok_init);
    async_future_t *f = submit_act(ex, 0, 0, 0);
    pid_t server = fork_server(), worker, last = 0;
    for (int kills = 0; kills < 2;) {
        int64_t until = async_now() + ASYNC_SEC(10);
        while ((children_named(server, "async-worker", &worker, 1) != 1 || worker == last) &&
               async_now() < until)
            usleep(1000);
        cr_assert_neq(worker, last, "a new worker is forked");
        /* It sleeps a second in its initializer: it is not ready yet. */
        cr_assert_eq(kill(worker, SIGKILL), 0);
        last = worker;
        kills++;
    }
    cr_expect_eq(async_future_wait(f), 0, "%s", async_future_message(f));
    cr_expect_eq(async_executor_error(ex, NULL, 0), 0, "not broken");
    async_future_unref(f);
    async_executor_free(ex);
}

/* --- the kill storm (issue 10, fault suite) ----------------------------------- */

/* Tests only (lib/exec/procpool/procpool_internal.h): new workers wait this long before
 * they report ready, which widens the window in which the storm catches a
 * fresh replacement before it is ready. */
extern int64_t async__pp_test_hold_ready_ns;

enum { STORM_JOBS = 10000 };

typedef struct storm {
    _Atomic int *runs; /* shared memory: executions of each job */
    pid_t server;
    atomic_bool stop;
    unsigned seed;
    int kills, fresh_kills;
} storm_t;

/* A job's input: its index and the shared counters (allocated after the
 * pool was forked, so they cannot come through ctx). */
typedef struct storm_in {
    int i;
    _Atomic int *runs;
} storm_in_t;

static int counted(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out_size, (void)ctx;
    storm_in_t a;
    memcpy(&a, in, sizeof a);
    int i = a.i;
    atomic_fetch_add(&a.runs[i], 1);
    usleep(300); /* long enough for the storm to hit jobs in flight */
    int v = 2 * i;
    memcpy(out, &v, sizeof v);
    return 0;
}

/* The storm's random kills spare a worker it first saw less than this long
 * ago.  The pool breaks by design when one worker dies ten times in a row
 * before it is ready (a crash loop), and on a loaded machine a replacement
 * can take tens of milliseconds to get ready: random kills of fresh
 * workers would then be a crash loop of the storm's making.  Fresh
 * replacements are still killed, on purpose, once after each random kill. */
#define STORM_MIN_AGE_NS ASYNC_MSEC(100)

/* Of the n workers in pids, those first seen at least STORM_MIN_AGE_NS ago,
 * moved to the front; returns how many.  seen/seen_at remember first sights. */
static int storm_old_workers(pid_t *pids, int n, pid_t *seen, int64_t *seen_at, int *nseen)
{
    int64_t now = async_now();
    int old = 0;
    for (int a = 0; a < n; a++) {
        int k = 0;
        while (k < *nseen && seen[k] != pids[a]) k++;
        if (k == *nseen) {
            if (*nseen == 64) *nseen = k = 0; /* forget: pids are reused rarely */
            seen[k] = pids[a], seen_at[k] = now, (*nseen)++;
        }
        if (now - seen_at[k] >= STORM_MIN_AGE_NS) {
            pid_t t = pids[old];
            pids[old++] = pids[a], pids[a] = t;
        }
    }
    return old;
}

static void *storm_main(void *arg)
{
    storm_t *st = arg;
    pid_t pids[16], seen[64];
    int64_t seen_at[64];
    int nseen = 0;
    while (!atomic_load(&st->stop)) {
        usleep(1000 + rand_r(&st->seed) % 3000);
        int n = children_named(st->server, "async-worker", pids, 16);
        int old = storm_old_workers(pids, n, seen, seen_at, &nseen);
        if (old == 0) continue;
        kill(pids[rand_r(&st->seed) % old], SIGKILL);
        st->kills++;
        if (rand_r(&st->seed) % 3) continue;
        /* And now and then the replacement, as soon as it is forked. */
        int64_t until = async_now() + ASYNC_MSEC(50);
        while (async_now() < until && !atomic_load(&st->stop)) {
            pid_t now[16];
            int m = children_named(st->server, "async-worker", now, 16), fresh = -1;
            for (int a = 0; a < m && fresh < 0; a++) {
                bool old = false;
                for (int b = 0; b < n; b++) old |= now[a] == pids[b];
                if (!old) fresh = a;
            }
            if (fresh >= 0) {
                kill(now[fresh], SIGKILL);
                st->fresh_kills++;
                break;
            }
            usleep(200);
        }
    }
    return NULL;
}

Test(procs, kill_storm, .timeout = 120)
{
    async__pp_test_hold_ready_ns = ASYNC_MSEC(2);
    async_executor_t *ex = pool(4);
    async__pp_test_hold_ready_ns = 0;
    static storm_t st;
    st.seed = (unsigned)time(NULL);
    cr_log_info("kill storm seed %u", st.seed);
    cr_assert_eq(async_executor_shm_alloc((void **)&st.runs, ex, STORM_JOBS * sizeof *st.runs), 0);
    st.server = fork_server();
    static async_future_t *fs[STORM_JOBS];
    pthread_t killer;
    cr_assert_eq(pthread_create(&killer, NULL, storm_main, &st), 0);
    int64_t t0 = async_now();
    for (int i = 0; i < STORM_JOBS; i++) {
        storm_in_t a = {i, st.runs};
        async_job_t job = {.fn = counted, .in = &a, .in_size = sizeof a, .out_size = sizeof(int)};
        int r = async_executor_submit(&fs[i], ex, &job);
        cr_assert_eq(r, 0, "submit %d: %s", i, async_strerror(r));
    }
    int64_t deadline = async_now() + ASYNC_SEC(90);
    int done = 0, died = 0;
    for (int i = 0; i < STORM_JOBS; i++) {
        int r = async_future_wait_dl(fs[i], deadline);
        cr_assert(async_future_done(fs[i]), "job %d never became final", i);
        int runs = atomic_load(&st.runs[i]);
        cr_assert_leq(runs, 1, "job %d ran %d times", i, runs);
        if (r == 0) {
            cr_assert_eq(result_int(fs[i]), 2 * i);
            cr_assert_eq(runs, 1, "job %d is done but did not run", i);
            done++;
        } else {
            /* Only the job a killed worker held fails, and it says so. */
            cr_assert_eq(r, ASYNC_EWORKERDIED, "job %d: %s", i, async_future_message(fs[i]));
            cr_assert(strstr(async_future_message(fs[i]), "signal 9"), "%s",
                      async_future_message(fs[i]));
            died++;
        }
        async_future_unref(fs[i]);
    }
    atomic_store(&st.stop, true);
    pthread_join(killer, NULL);
    int64_t took = async_now() - t0;
    cr_log_info("kill storm: %d kills (%d of fresh replacements), %d jobs done, %d failed, %.2f s",
                st.kills, st.fresh_kills, done, died, took / 1e9);
    cr_expect_geq(st.kills, 1, "the storm killed nothing");
    cr_expect_leq(died, st.kills + st.fresh_kills, "more jobs failed than workers died");
    char why[300];
    cr_expect_eq(async_executor_error(ex, why, sizeof why), 0, "broken: %s", why);
    /* The pool serves afterwards, with every worker back. */
    for (int i = 0; i < 100; i++) {
        int v[2] = {0, 0};
        async_job_t job = {.fn = act, .in = v, .in_size = sizeof v, .out_size = sizeof(int)};
        async_future_t *f;
        cr_assert_eq(async_executor_submit(&f, ex, &job), 0);
        cr_assert_eq(async_future_wait_dl(f, async_deadline_after(ASYNC_SEC(20))), 0, "%s",
                     async_future_message(f));
        async_future_unref(f);
    }
    async_executor_shm_free(ex, (void *)st.runs);
    async_executor_free(ex);
}

Test(procs, terminate_kills_work_in_flight, .timeout = 20)
{
    async_executor_t *ex = pool(2);
    enum { N = 12 };
    async_future_t *fs[N];
    for (int i = 0; i < N; i++) fs[i] = submit_act(ex, 0, 10000, 0);
    usleep(100000);
    int64_t t0 = async_now();
    cr_expect_eq(async_executor_terminate(ex), 0);
    cr_expect_lt(async_now() - t0, ASYNC_SEC(5), "terminate does not wait for the work");
    for (int i = 0; i < N; i++) {
        cr_expect(async_future_done(fs[i]));
        cr_expect_neq(async_future_state(fs[i]), ASYNC_FUTURE_DONE);
        async_future_unref(fs[i]);
    }
    async_executor_free(ex);
}

/* --- a parent that already runs threads -------------------------------------------------- */

static int spin_ms(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out, (void)out_size, (void)ctx;
    int ms;
    memcpy(&ms, in, sizeof ms);
    usleep((useconds_t)ms * 1000);
    return 0;
}

Test(procs, parent_running_threads, .timeout = 30)
{
    /* A thread pool busy with work (holding the allocator's and its own
     * locks at random moments) while the process pool starts, recycles its
     * workers every 2 tasks and replaces a killed one. */
    async_executor_opts_t to = {.backend = ASYNC_BACKEND_THREADS, .workers = 3};
    async_executor_t *threads;
    cr_assert_eq(async_executor_new(&threads, &to), 0);
    enum { T = 300 };
    async_future_t *tf[T];
    for (int i = 0; i < T; i++) {
        int ms = 1;
        async_job_t job = {.fn = spin_ms, .in = &ms, .in_size = sizeof ms};
        cr_assert_eq(async_executor_submit(&tf[i], threads, &job), 0);
    }
    async_executor_t *ex = pool_opts(2, 2, NULL);
    enum { N = 40 };
    async_future_t *fs[N];
    for (int i = 0; i < N; i++) fs[i] = submit_act(ex, i == 20 ? 1 : 0, 2, 0);
    for (int i = 0; i < N; i++) {
        cr_expect_eq(async_future_wait(fs[i]), i == 20 ? ASYNC_EWORKERDIED : 0, "task %d", i);
        async_future_unref(fs[i]);
    }
    for (int i = 0; i < T; i++) {
        cr_expect_eq(async_future_wait(tf[i]), 0);
        async_future_unref(tf[i]);
    }
    async_executor_free(ex);
    async_executor_free(threads);
}

/* --- shared memory ------------------------------------------------------------------------ */

typedef struct span {
    const int *rows;
    long from, to;
} span_t;

/* Counts the values of rows [from, to) in [4, 8]: the lab's howmany_within_range. */
static int howmany(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out_size, (void)ctx;
    const int *row = in;
    int c = 0;
    for (int j = 0; j < 5; j++) c += row[j] >= 4 && row[j] <= 8;
    memcpy(out, &c, sizeof c);
    return 0;
}

Test(procs, map_over_shared_rows, .timeout = 30)
{
    async_executor_t *ex = pool(2);
    enum { ROWS = 200000 };
    int *rows, *counts;
    cr_assert_eq(async_executor_shm_alloc((void **)&rows, ex, ROWS * 5 * sizeof(int)), 0);
    cr_assert_eq(async_executor_shm_alloc((void **)&counts, ex, ROWS * sizeof(int)), 0);
    long want = 0;
    for (long i = 0; i < ROWS * 5; i++) {
        rows[i] = (int)((i * 2654435761u) >> 7) % 10;
        want += rows[i] >= 4 && rows[i] <= 8;
    }
    async_map_t m = {.fn = howmany, .in = rows, .in_size = 5 * sizeof(int), .out = counts,
                     .out_size = sizeof(int), .n = ROWS};
    async_map_error_t err;
    cr_assert_eq(async_executor_map(ex, &m, &err), 0, "%s", err.message);
    long got = 0;
    for (long i = 0; i < ROWS; i++) got += counts[i];
    cr_expect_eq(got, want);
    /* The same map with parent memory, copied through the pool. */
    int *prow = malloc(1000 * 5 * sizeof(int)), pout[1000];
    memcpy(prow, rows, 1000 * 5 * sizeof(int));
    m = (async_map_t){.fn = howmany, .in = prow, .in_size = 5 * sizeof(int), .out = pout,
                      .out_size = sizeof(int), .n = 1000, .chunksize = 7};
    cr_assert_eq(async_executor_map(ex, &m, &err), 0);
    for (int i = 0; i < 1000; i++) cr_expect_eq(pout[i], counts[i]);
    free(prow);
    async_executor_shm_free(ex, rows);
    async_executor_shm_free(ex, counts);
    async_executor_free(ex);
}

static int big_result(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out, (void)out_size, (void)ctx;
    size_t n;
    memcpy(&n, in, sizeof n);
    unsigned char *b = async_work_output(n);
    if (!b) return async_work_fail(ASYNC_ENOMEM, "no room for %zu bytes", n);
    for (size_t i = 0; i < n; i++) b[i] = (unsigned char)(i % 251);
    return 0;
}

Test(procs, large_variable_results, .timeout = 20)
{
    async_executor_t *ex = pool(2);
    size_t sizes[] = {1, 100, 5000, 1 << 20, 3 << 20, 64 << 20};
    for (int k = 0; k < 6; k++) {
        async_job_t job = {.fn = big_result, .in = &sizes[k], .in_size = sizeof sizes[k],
                           .out_size = 8};
        async_future_t *f;
        cr_assert_eq(async_executor_submit(&f, ex, &job), 0);
        int r = async_future_wait(f);
        if (sizes[k] > (8u << 20)) {
            cr_expect_eq(r, ASYNC_ENOMEM, "beyond the result limit");
        } else {
            const unsigned char *d;
            size_t n;
            cr_assert_eq(r, 0, "%zu: %s", sizes[k], async_future_message(f));
            cr_assert_eq(async_future_result(f, (const void **)&d, &n), 0);
            cr_expect_eq(n, sizes[k]);
            for (size_t i = 0; i < n; i += 997) cr_expect_eq(d[i], (unsigned char)(i % 251));
        }
        async_future_unref(f);
    }
    async_executor_free(ex);
}

/* --- leaks ---------------------------------------------------------------------------------- */

static int count_threads(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/task");
    for (struct dirent *e; (e = readdir(d));) n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

Test(procs, nothing_leaks, .timeout = 30)
{
    int fds = test_count_fds(), maps = test_count_maps("async-procpool"), threads = count_threads();
    for (int round = 0; round < 3; round++) {
        async_executor_t *ex = pool_opts(2, 3, NULL);
        cr_expect_eq(test_count_maps("async-procpool"), maps + 1);
        enum { N = 20 };
        async_future_t *fs[N];
        for (int i = 0; i < N; i++) fs[i] = submit_act(ex, i == 5 ? 1 : 0, 5, 0);
        if (round == 0) async_executor_shutdown(ex, true, false);
        if (round == 1) async_executor_terminate(ex);
        async_executor_free(ex); /* round 2: with work in flight */
        for (int i = 0; i < N; i++) {
            cr_expect(async_future_done(fs[i]));
            async_future_unref(fs[i]);
        }
    }
    cr_expect_eq(test_count_fds(), fds);
    cr_expect_eq(test_count_maps("async-procpool"), maps);
    cr_expect_eq(count_threads(), threads);
    cr_expect_eq(waitpid(-1, NULL, WNOHANG), -1, "no child, not even a zombie");
    cr_expect_eq(errno, ECHILD);
}

/* --- awaited from tasks ------------------------------------------------------------------- */

static int task_rc = -1;

static int await_kill(void *arg, void **result)
{
    (void)result;
    async_executor_t *ex = arg;
    int v[2] = {1, 0};
    async_job_t job = {.fn = act, .in = v, .in_size = sizeof v, .out_size = sizeof(int)};
    int out;
    char msg[ASYNC_FUTURE_MSG_MAX];
    int r = async_executor_run(ex, &job, &out, NULL, msg, sizeof msg);
    task_rc = r == ASYNC_EWORKERDIED && strstr(msg, "signal 9") ? 0 : ASYNC_EIO;
    return 0;
}

Test(procs, dead_worker_seen_from_a_task, .timeout = 20)
{
    async_executor_t *ex = pool(2);
    async_loop_t *loop;
    cr_assert_eq(async_loop_new(&loop), 0);
    cr_assert_eq(async_task_spawn(NULL, loop, await_kill, ex, NULL), 0);
    cr_expect_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_expect_eq(task_rc, 0);
    cr_expect_eq(async_loop_destroy(loop), 0);
    async_executor_free(ex);
}
static int echo_len(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in, (void)out_size, (void)ctx;
    memcpy(out, &in_size, sizeof in_size);
    return 0;
}

Test(procs, max_job_bytes, .timeout = 20)
{
    async_executor_opts_t o = {.backend = ASYNC_BACKEND_PROCESSES, .workers = 1,
                               .max_job_bytes = 4096};
    async_executor_t *ex;
    cr_assert_eq(async_executor_new(&ex, &o), 0);
    static char big[8192];
    size_t sizes[] = {100, 8192};
    for (int k = 0; k < 2; k++) {
        async_job_t job = {.fn = echo_len, .in = big, .in_size = sizes[k],
                           .out_size = sizeof(size_t)};
        async_future_t *f;
        cr_assert_eq(async_executor_submit(&f, ex, &job), 0);
        if (k == 0) {
            cr_expect_eq(async_future_wait(f), 0);
        } else {
            cr_expect_eq(async_future_wait(f), ASYNC_EINVAL);
            cr_expect(strstr(async_future_message(f), "max_job_bytes"), "%s",
                      async_future_message(f));
        }
        async_future_unref(f);
    }
    async_executor_free(ex);
}

/* --- the direct path of async_executor_run ---------------------------------------------- */

/* Counted by the process backend each time a run took the direct path
 * (async__procpool_call: no feeder, no supervisor, no future). */
extern _Atomic uint64_t async__procs_direct_runs;
static uint64_t direct_runs(void) { return atomic_load(&async__procs_direct_runs); }

static int fail_row(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in, (void)in_size, (void)out, (void)out_size, (void)ctx;
    return async_work_fail(ASYNC_EINVAL, "bad row %d", 7);
}

static int run_act(async_executor_t *ex, int how, int ms, int64_t timeout_ns, int *out,
                   size_t *out_len, char *msg, size_t msg_cap)
{
    int v[2] = {how, ms};
    async_job_t job = {.fn = act, .in = v, .in_size = sizeof v, .out_size = sizeof(int),
                       .timeout_ns = timeout_ns};
    return async_executor_run(ex, &job, out, out_len, msg, msg_cap);
}

static void direct_results(unsigned workers)
{
    async_executor_t *ex = pool(workers);
    uint64_t before = direct_runs();
    int pid = 0;
    size_t len = 99;
    char msg[ASYNC_FUTURE_MSG_MAX] = "x";
    cr_expect_eq(run_act(ex, 0, 0, 0, &pid, &len, msg, sizeof msg), 0);
    cr_expect_gt(pid, 0);
    cr_expect_neq(pid, getpid(), "it ran in a worker process");
    cr_expect_eq(len, sizeof(int));
    cr_expect_str_eq(msg, "");

    /* A variable result: out_size bytes copied, its whole size in out_len. */
    size_t n = 5000;
    unsigned char head[8] = {0};
    async_job_t big = {.fn = big_result, .in = &n, .in_size = sizeof n, .out_size = sizeof head};
    cr_expect_eq(async_executor_run(ex, &big, head, &len, msg, sizeof msg), 0, "%s", msg);
    cr_expect_eq(len, n);
    for (size_t i = 0; i < sizeof head; i++) cr_expect_eq(head[i], (unsigned char)(i % 251));

    /* A failure: its code, its message cut to msg_cap, out untouched, out_len 0. */
    int sentinel = 0x5a5a5a5a;
    async_job_t bad = {.fn = fail_row, .out_size = sizeof(int)};
    char small[5];
    cr_expect_eq(async_executor_run(ex, &bad, &sentinel, &len, small, sizeof small), ASYNC_EINVAL);
    cr_expect_str_eq(small, "bad ");
    cr_expect_eq(len, 0);
    cr_expect_eq(sentinel, 0x5a5a5a5a);
    cr_expect_eq(async_executor_run(ex, &bad, NULL, NULL, msg, sizeof msg), ASYNC_EINVAL);
    cr_expect_str_eq(msg, "bad row 7");
    cr_expect_eq(direct_runs() - before, 4, "every run on the idle pool took the direct path");
    async_executor_free(ex);
}

Test(procs, direct_run_results, .timeout = 20) { direct_results(2); }
Test(procs, direct_run_results_one_worker, .timeout = 20) { direct_results(1); }

Test(procs, direct_run_killed_worker, .timeout = 20)
{
    async_executor_t *ex = pool(2);
    uint64_t before = direct_runs();
    char msg[ASYNC_FUTURE_MSG_MAX];
    int out = -1;
    size_t len = 99;
    cr_expect_eq(run_act(ex, 1, 0, 0, &out, &len, msg, sizeof msg), ASYNC_EWORKERDIED);
    cr_expect(strstr(msg, "signal 9"), "'%s'", msg);
    cr_expect_eq(len, 0);
    cr_expect_eq(out, -1);
    cr_expect_eq(async_executor_error(ex, NULL, 0), 0, "one death does not break the pool");
    for (int i = 0; i < 5; i++)
        cr_expect_eq(run_act(ex, 0, 0, 0, &out, NULL, msg, sizeof msg), 0, "%s", msg);
    cr_expect_eq(direct_runs() - before, 6);
    async_executor_free(ex);
}

Test(procs, direct_run_deadline, .timeout = 30)
{
    async_executor_t *ex = pool(2);
    uint64_t before = direct_runs();
    char msg[ASYNC_FUTURE_MSG_MAX];
    int out;
    /* The job's own limit: its worker is killed at the deadline. */
    cr_expect_eq(run_act(ex, 0, 20000, ASYNC_MSEC(100), &out, NULL, msg, sizeof msg),
                 ASYNC_ETIMEDOUT, "%s", msg);
    cr_expect_eq(direct_runs() - before, 1);
    cr_expect_eq(run_act(ex, 0, 0, ASYNC_SEC(60), &out, NULL, msg, sizeof msg), 0, "%s", msg);
    cr_expect_eq(direct_runs() - before, 2);
    /* A limit already past: fails without running, as a submit does. */
    cr_expect_eq(run_act(ex, 0, 0, -1, &out, NULL, msg, sizeof msg), ASYNC_ETIMEDOUT);
    cr_expect_eq(direct_runs() - before, 2);
    /* The call's deadline before the job's end: the ordinary path, which
     * stops waiting at the call's deadline (and the job runs on). */
    int v[2] = {0, 300};
    async_job_t job = {.fn = act, .in = v, .in_size = sizeof v, .out_size = sizeof(int)};
    cr_expect_eq(async_executor_run_dl(ex, &job, &out, NULL, msg, sizeof msg,
                                       async_deadline_after(ASYNC_MSEC(50))),
                 ASYNC_ETIMEDOUT);
    cr_expect_str_eq(msg, "the call's deadline passed");
    cr_expect_eq(direct_runs() - before, 2);
    async_executor_free(ex);
}

/* A job that says it started, then waits for its release (all in shared
 * memory), says it finished, and returns its ticket. */
typedef struct gate {
    _Atomic int started, release, finished, tickets;
} gate_t;

static int gated(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out_size, (void)ctx;
    gate_t *g;
    memcpy(&g, in, sizeof g);
    atomic_store(&g->started, 1);
    while (!atomic_load(&g->release)) usleep(500);
    atomic_store(&g->finished, 1);
    int t = atomic_fetch_add(&g->tickets, 1);
    memcpy(out, &t, sizeof t);
    return 0;
}

typedef struct runner {
    async_executor_t *ex;
    gate_t *g;
    int rc, out;
    char msg[ASYNC_FUTURE_MSG_MAX];
} runner_t;

static void *run_gated(void *arg)
{
    runner_t *r = arg;
    async_job_t job = {.fn = gated, .in = &r->g, .in_size = sizeof r->g, .out_size = sizeof(int)};
    r->rc = async_executor_run(r->ex, &job, &r->out, NULL, r->msg, sizeof r->msg);
    return NULL;
}

typedef struct shutter {
    async_executor_t *ex;
    gate_t *g;
    int finished_at_return;
} shutter_t;

static void *shut_wait(void *arg)
{
    shutter_t *sh = arg;
    async_executor_shutdown(sh->ex, true, false);
    sh->finished_at_return = atomic_load(&sh->g->finished);
    return NULL;
}

static void wait_started(gate_t *g)
{
    while (!atomic_load(&g->started)) usleep(200);
}

Test(procs, direct_run_shutdown_waits_for_it, .timeout = 30)
{
    async_executor_t *ex = pool(2);
    uint64_t before = direct_runs();
    gate_t *g;
    cr_assert_eq(async_executor_shm_alloc((void **)&g, ex, sizeof *g), 0);
    runner_t r = {.ex = ex, .g = g, .rc = 1};
    pthread_t t, u;
    cr_assert_eq(pthread_create(&t, NULL, run_gated, &r), 0);
    wait_started(g);
    /* Closed: a new run fails with ASYNC_ECLOSED, the one in flight runs on. */
    cr_expect_eq(async_executor_shutdown(ex, false, false), 0);
    int out;
    cr_expect_eq(run_act(ex, 0, 0, 0, &out, NULL, NULL, 0), ASYNC_ECLOSED);
    shutter_t sh = {.ex = ex, .g = g, .finished_at_return = -1};
    cr_assert_eq(pthread_create(&u, NULL, shut_wait, &sh), 0);
    atomic_store(&g->release, 1);
    pthread_join(u, NULL);
    cr_expect_eq(sh.finished_at_return, 1, "shutdown(wait) returned before the direct run ended");
    pthread_join(t, NULL);
    cr_expect_eq(r.rc, 0, "%s", r.msg);
    cr_expect_eq(r.out, 0);
    cr_expect_eq(direct_runs() - before, 1);
    async_executor_shm_free(ex, g);
    async_executor_free(ex);
}

Test(procs, direct_run_terminated, .timeout = 30)
{
    async_executor_t *ex = pool(2);
    uint64_t before = direct_runs();
    gate_t *g;
    cr_assert_eq(async_executor_shm_alloc((void **)&g, ex, sizeof *g), 0);
    runner_t r = {.ex = ex, .g = g, .rc = 1, .out = -1};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, run_gated, &r), 0);
    wait_started(g);
    cr_expect_eq(async_executor_terminate(ex), 0);
    pthread_join(t, NULL);
    cr_expect_eq(r.rc, ASYNC_ECANCELED, "%s", async_strerror(r.rc));
    cr_expect_eq(r.out, -1, "a failed run writes no result");
    cr_expect_eq(direct_runs() - before, 1);
    async_executor_shm_free(ex, g);
    async_executor_free(ex);
}

Test(procs, direct_run_never_overtakes_queued_jobs, .timeout = 30)
{
    async_executor_t *ex = pool(1);
    gate_t *g;
    cr_assert_eq(async_executor_shm_alloc((void **)&g, ex, sizeof *g), 0);
    /* A holds the only worker; B waits in the queue. */
    async_job_t job = {.fn = gated, .in = &g, .in_size = sizeof g, .out_size = sizeof(int)};
    async_future_t *a, *b;
    cr_assert_eq(async_executor_submit(&a, ex, &job), 0);
    wait_started(g);
    cr_assert_eq(async_executor_submit(&b, ex, &job), 0);
    uint64_t before = direct_runs();
    runner_t r = {.ex = ex, .g = g, .rc = 1};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, run_gated, &r), 0);
    /* The run queues behind B. */
    while (async_executor_queued(ex) < 2) usleep(200);
    atomic_store(&g->release, 1);
    pthread_join(t, NULL);
    cr_expect_eq(r.rc, 0, "%s", r.msg);
    cr_expect_eq(async_future_wait(a), 0);
    cr_expect_eq(async_future_wait(b), 0);
    cr_expect_eq(result_int(a), 0);
    cr_expect_eq(result_int(b), 1);
    cr_expect_eq(r.out, 2, "the run ran after the job queued before it");
    cr_expect_eq(direct_runs() - before, 0);
    async_future_unref(a);
    async_future_unref(b);
    async_executor_shm_free(ex, g);
    async_executor_free(ex);
}

/* async_executor_run from a future's callback.  On this backend callbacks
 * run on the pool's supervisor thread, which alone delivers results and
 * fails jobs whose worker dies: a run there waited for itself (for ever on
 * a busy pool, or when the worker died).  It now fails at once with
 * ASYNC_EDEADLK and says why; the same run from a plain thread, and from a
 * callback added to a future already final (it runs on the adding thread),
 * works. */
typedef struct cb_run {
    async_executor_t *ex;
    int how;
    int rc, out;
    char msg[ASYNC_FUTURE_MSG_MAX];
    _Atomic int ran;
} cb_run_t;

static void run_from_callback(async_future_t *f, void *arg)
{
    (void)f;
    cb_run_t *c = arg;
    c->rc = run_act(c->ex, c->how, 0, 0, &c->out, NULL, c->msg, sizeof c->msg);
    atomic_store(&c->ran, 1);
}

static void callback_run(async_executor_t *ex, int how)
{
    cb_run_t c = {.ex = ex, .how = how, .rc = 1};
    /* Long enough that the callback is added before the job ends. */
    async_future_t *f = submit_act(ex, 0, 50, 0);
    cr_assert_eq(async_future_on_done(f, run_from_callback, &c), 0);
    cr_expect_eq(async_future_wait(f), 0);
    int64_t until = async_now() + ASYNC_SEC(10);
    while (!atomic_load(&c.ran) && async_now() < until) usleep(1000);
    cr_assert(atomic_load(&c.ran), "the run in the callback returned within 10 s");
    cr_expect_eq(c.rc, ASYNC_EDEADLK, "%s", async_strerror(c.rc));
    cr_expect(strstr(c.msg, "callback") != NULL, "the message says why: %s", c.msg);
    async_future_unref(f);
}

Test(procs, run_from_a_callback_is_refused, .timeout = 30)
{
    async_executor_t *ex = pool(2);
    callback_run(ex, 0);
    /* Where the wait would have lasted for ever: the job kills its worker. */
    callback_run(ex, 1);
    /* The pool serves on, and a callback on the caller's own thread may run. */
    int pid = 0;
    cr_expect_eq(run_act(ex, 0, 0, 0, &pid, NULL, NULL, 0), 0);
    cr_expect_gt(pid, 0);
    async_future_t *f = submit_act(ex, 0, 0, 0);
    cr_expect_eq(async_future_wait(f), 0);
    cb_run_t c = {.ex = ex, .rc = 1};
    cr_assert_eq(async_future_on_done(f, run_from_callback, &c), 0);
    cr_expect(atomic_load(&c.ran), "a callback added to a final future runs at once");
    cr_expect_eq(c.rc, 0, "%s", c.msg);
    cr_expect_gt(c.out, 0);
    async_future_unref(f);
    async_executor_free(ex);
}

typedef struct cb_waits {
    async_executor_t *ex;
    int run_rc, map_rc, shutdown_rc;
    char msg[ASYNC_FUTURE_MSG_MAX];
    async_map_error_t map_err;
    _Atomic int ran;
} cb_waits_t;

static void waits_from_callback(async_future_t *f, void *arg)
{
    (void)f;
    cb_waits_t *c = arg;
    c->run_rc = run_act(c->ex, 0, 0, 0, NULL, NULL, c->msg, sizeof c->msg);
    int in[2][2] = {{0, 0}, {0, 0}}, out[2];
    async_map_t m = {.fn = act, .in = in, .in_size = sizeof in[0], .out = out, .out_size = sizeof out[0],
                     .n = 2};
    c->map_rc = async_executor_map(c->ex, &m, &c->map_err);
    c->shutdown_rc = async_executor_shutdown(c->ex, true, false);
    atomic_store(&c->ran, 1);
}

/* With jobs queued, run takes the submit path, not the direct one: it must
 * be refused there too, and so must a shutdown that waits. */
Test(procs, run_map_and_shutdown_from_a_callback_with_jobs_queued_are_refused, .timeout = 30)
{
    async_executor_t *ex = pool(1);
    cb_waits_t c = {.ex = ex, .run_rc = 1, .map_rc = 1, .shutdown_rc = 1};
    async_future_t *first = submit_act(ex, 0, 100, 0);
    async_future_t *queued[3];
    for (int i = 0; i < 3; i++) queued[i] = submit_act(ex, 0, 50, 0);
    cr_assert_eq(async_future_on_done(first, waits_from_callback, &c), 0);
    int64_t until = async_now() + ASYNC_SEC(10);
    while (!atomic_load(&c.ran) && async_now() < until) usleep(1000);
    cr_assert(atomic_load(&c.ran), "the callback's run and shutdown returned within 10 s");
    cr_expect_eq(c.run_rc, ASYNC_EDEADLK, "%s", async_strerror(c.run_rc));
    cr_expect(strstr(c.msg, "callback") != NULL, "the message says why: %s", c.msg);
    cr_expect_eq(c.map_rc, ASYNC_EDEADLK, "%s", async_strerror(c.map_rc));
    cr_expect(strstr(c.map_err.message, "callback") != NULL, "the map says why: %s", c.map_err.message);
    cr_expect_eq(c.shutdown_rc, ASYNC_EDEADLK, "%s", async_strerror(c.shutdown_rc));
    /* The shutdown itself happened: the queued jobs still run (no cancel). */
    for (int i = 0; i < 3; i++) {
        cr_expect_eq(async_future_wait(queued[i]), 0);
        async_future_unref(queued[i]);
    }
    async_future_unref(first);
    async_executor_free(ex);
}

#endif
