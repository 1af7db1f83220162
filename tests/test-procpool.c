/* The process-pool engine (lib/exec/procpool/procpool_internal.h): jobs through shared memory,
 * workers that die (in a job, or before they are ready: replaced, and a crash
 * loop reported), a killed fork server, deadlines, recycling, initializers,
 * shutdown and terminate, and the leak checks (descriptors, zombies, shared
 * mappings, heap allocations). */
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
#include <errno.h>
#include <time.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <async.h>
#include "exec/procpool/procpool_internal.h"
#include "support/alloc.h"
#include "support/proc.h"

#define MAXJ 20000

typedef struct res {
    int err;
    char msg[300];
    long val;
    size_t len;
    unsigned char data[256];
} res_t;

static res_t R[MAXJ];
static atomic_int ndone;

static void on_done(void *user, void *arg, int err, const char *msg, const void *out, size_t len)
{
    (void)user;
    res_t *r = &R[(intptr_t)arg];
    r->err = err;
    if (msg) snprintf(r->msg, sizeof r->msg, "%s", msg);
    r->len = len;
    if (out && len >= sizeof(long)) memcpy(&r->val, out, sizeof(long));
    if (out) memcpy(r->data, out, len < sizeof r->data ? len : sizeof r->data);
    atomic_fetch_add(&ndone, 1);
}

static void wait_done(int n)
{
    int64_t until = async_now() + ASYNC_SEC(20);
    while (atomic_load(&ndone) < n && async_now() < until) usleep(200);
    cr_assert_eq(atomic_load(&ndone), n, "%d of %d jobs done", atomic_load(&ndone), n);
}

static int submit(async__procpool_t *p, async__procpool_fn fn, long in, size_t out_cap, int i,
                  int64_t deadline, uint64_t *id)
{
    async__procjob_t j = {.fn = (async__anyfn_t)fn, .in = &in, .in_len = sizeof in,
                          .out_cap = out_cap, .deadline = deadline, .done = on_done,
                          .arg = (void *)(intptr_t)i};
    return async__procpool_submit(p, &j, id);
}

/* --- work functions ---------------------------------------------------------- */

static int square(void *ctx, const void *in, size_t n, async__procout_t *out)
{
    (void)ctx;
    (void)n;
    long x;
    memcpy(&x, in, sizeof x);
    x *= x;
    memcpy(async__procout_data(out), &x, sizeof x);
    return 0;
}

static int sleeper(void *ctx, const void *in, size_t n, async__procout_t *out)
{
    (void)n;
    long ms;
    memcpy(&ms, in, sizeof ms);
    if (ctx) *(volatile long *)ctx = getpid(); /* ctx is shared memory */
    usleep((useconds_t)ms * 1000);
    long pid = getpid();
    memcpy(async__procout_data(out), &pid, sizeof pid);
    return 0;
}

static int dier(void *ctx, const void *in, size_t n, async__procout_t *out)
{
    (void)ctx;
    (void)n;
    (void)out;
    long how;
    memcpy(&how, in, sizeof how);
    if (how == 0) raise(SIGKILL);
    if (how == 1) raise(SIGSEGV);
    _exit((int)how);
}

static int failer(void *ctx, const void *in, size_t n, async__procout_t *out)
{
    (void)ctx;
    (void)in;
    (void)n;
    async__procout_error(out, "bad item %d", 42);
    return ASYNC_EINVAL;
}

/* Returns `in` bytes of a pattern, growing the result beyond its capacity. */
static int grower(void *ctx, const void *in, size_t n, async__procout_t *out)
{
    (void)ctx;
    (void)n;
    long size;
    memcpy(&size, in, sizeof size);
    int rc = async__procout_set_size(out, (size_t)size);
    if (rc) return rc; /* no cr_assert in a worker: it is not Criterion's process */
    unsigned char *d = async__procout_data(out);
    for (long i = 0; i < size; i++) d[i] = (unsigned char)(i * 7 + 1);
    return 0;
}

static async__procpool_t *pool_new(unsigned workers)
{
    async__procpool_opts_t o = {.workers = workers, .idle_spin_ns = -1};
    async__procpool_t *p;
    cr_assert_eq(async__procpool_new(&o, &p), 0);
    return p;
}

/* --- basics --------------------------------------------------------------------- */

Test(procpool, squares, .timeout = 30)
{
    /* With a spinning idle worker, which the other tests do not have. */
    async__procpool_opts_t o = {.workers = 2, .idle_spin_ns = ASYNC_USEC(20)};
    async__procpool_t *p;
    cr_assert_eq(async__procpool_new(&o, &p), 0);
    for (int i = 0; i < 5000; i++)
        cr_assert_eq(submit(p, square, i, sizeof(long), i, ASYNC_FOREVER, NULL), 0);
    wait_done(5000);
    for (int i = 0; i < 5000; i++) {
        cr_assert_eq(R[i].err, 0);
        cr_assert_eq(R[i].val, (long)i * i);
        cr_assert_eq(R[i].len, sizeof(long));
    }
    async__procpool_free(p);
}

Test(procpool, pending_beyond_slots, .timeout = 30)
{
    async__procpool_opts_t o = {.workers = 2, .slots = 16, .idle_spin_ns = -1};
    async__procpool_t *p;
    cr_assert_eq(async__procpool_new(&o, &p), 0);
    for (int i = 0; i < 3000; i++)
        cr_assert_eq(submit(p, square, i, sizeof(long), i, ASYNC_FOREVER, NULL), 0);
    wait_done(3000);
    for (int i = 0; i < 3000; i++) cr_assert_eq(R[i].val, (long)i * i);
    async__procpool_free(p);
}

static int copy_big(void *ctx, const void *in, size_t n, async__procout_t *out)
{
    (void)ctx;
    if (async__procout_cap(out) != n) return ASYNC_EINVAL;
    const unsigned char *s = in;
    unsigned char *d = async__procout_data(out);
    for (size_t i = 0; i < n; i++) d[i] = (unsigned char)(s[i] + 1);
    return 0;
}

Test(procpool, big_input_and_output, .timeout = 30)
{
    async__procpool_t *p = pool_new(2);
    static unsigned char buf[200];
    for (int i = 0; i < 200; i++) buf[i] = (unsigned char)i;
    for (int i = 0; i < 100; i++) {
        async__procjob_t j = {.fn = (async__anyfn_t)copy_big, .in = buf, .in_len = 200,
                              .out_cap = 200, .deadline = ASYNC_FOREVER, .done = on_done,
                              .arg = (void *)(intptr_t)i};
        cr_assert_eq(async__procpool_submit(p, &j, NULL), 0);
    }
    wait_done(100);
    for (int i = 0; i < 100; i++) {
        cr_assert_eq(R[i].len, 200);
        for (int k = 0; k < 200; k++) cr_assert_eq(R[i].data[k], (unsigned char)(k + 1));
    }
    async__procpool_free(p);
}

Test(procpool, variable_size_results, .timeout = 30)
{
    /* A small result area makes results wrap around and wait for delivery. */
    async__procpool_opts_t o = {.workers = 2, .result_area = 8192, .idle_spin_ns = -1};
    async__procpool_t *p;
    cr_assert_eq(async__procpool_new(&o, &p), 0);
    int n = 400;
    for (int i = 0; i < n; i++)
        cr_assert_eq(submit(p, grower, 1 + (i * 37) % 3000, 8, i, ASYNC_FOREVER, NULL), 0);
    wait_done(n);
    for (int i = 0; i < n; i++) {
        size_t want = (size_t)(1 + (i * 37) % 3000);
        cr_assert_eq(R[i].err, 0, "%d: %s", i, R[i].msg);
        cr_assert_eq(R[i].len, want);
        for (size_t k = 0; k < want && k < sizeof R[i].data; k++)
            cr_assert_eq(R[i].data[k], (unsigned char)(k * 7 + 1));
    }
    /* Larger than the whole area: the work function sees ASYNC_ENOMEM. */
    atomic_store(&ndone, 0);
    cr_assert_eq(submit(p, grower, 100000, 8, 0, ASYNC_FOREVER, NULL), 0);
    wait_done(1);
    cr_assert_neq(R[0].err, 0);
    async__procpool_free(p);
}

Test(procpool, error_with_message, .timeout = 30)
{
    async__procpool_t *p = pool_new(1);
    cr_assert_eq(submit(p, failer, 0, 8, 0, ASYNC_FOREVER, NULL), 0);
    wait_done(1);
    cr_assert_eq(R[0].err, ASYNC_EINVAL);
    cr_assert_str_eq(R[0].msg, "bad item 42");
    async__procpool_free(p);
}

Test(procpool, bad_arguments, .timeout = 10)
{
    async__procpool_t *p = pool_new(1);
    async__procjob_t j = {.fn = NULL, .done = on_done, .deadline = ASYNC_FOREVER};
    cr_assert_eq(async__procpool_submit(p, &j, NULL), ASYNC_EINVAL);
    j.fn = (async__anyfn_t)square;
    j.done = NULL;
    cr_assert_eq(async__procpool_submit(p, &j, NULL), ASYNC_EINVAL);
    cr_assert_eq(async__procpool_cancel(p, 12345), ASYNC_ESRCH);
    void *m;
    cr_assert_eq(async__procpool_shm_alloc(p, 0, &m), ASYNC_EINVAL);
    cr_assert_eq(async__procpool_shm_alloc(p, (size_t)1 << 40, &m), ASYNC_ENOMEM);
    async__procpool_free(p);
    async__procpool_free(NULL);
}

/* --- dying workers ------------------------------------------------------------- */

static void check_death(long how, const char *want)
{
    async__procpool_t *p = pool_new(2);
    cr_assert_eq(async__procpool_wait_ready(p, async_deadline_after(ASYNC_SEC(10))), 0);
    cr_assert_eq(submit(p, dier, how, 8, 0, ASYNC_FOREVER, NULL), 0);
    wait_done(1);
    cr_assert_eq(R[0].err, ASYNC_EWORKERDIED);
    cr_assert(strstr(R[0].msg, "worker process"), "%s", R[0].msg);
    cr_assert(strstr(R[0].msg, want), "'%s' lacks '%s'", R[0].msg, want);
    /* The pool keeps serving, with a replacement. */
    for (int i = 1; i <= 100; i++)
        cr_assert_eq(submit(p, square, i, 8, i, ASYNC_FOREVER, NULL), 0);
    wait_done(101);
    for (int i = 1; i <= 100; i++) cr_assert_eq(R[i].val, (long)i * i);
    cr_assert_eq(async__procpool_wait_ready(p, async_deadline_after(ASYNC_SEC(10))), 0);
    cr_assert_geq(async__procpool_spawned(p), 3);
    async__procpool_free(p);
}

Test(procpool, sigkilled_task, .timeout = 30) { check_death(0, "signal 9"); }
Test(procpool, exit_in_task, .timeout = 30) { check_death(3, "exited with status 3"); }

Test(procpool, segfaulting_task, .timeout = 30)
{
#if defined(__SANITIZE_ADDRESS__)
    check_death(1, "exited with status"); /* ASan reports the SEGV and exits */
#else
    check_death(1, "signal 11");
#endif
}

Test(procpool, killed_from_outside, .timeout = 30)
{
    async__procpool_t *p = pool_new(2);
    volatile long *pid;
    cr_assert_eq(async__procpool_shm_alloc(p, sizeof *pid, (void **)&pid), 0);
    async__procjob_t j = {.fn = (async__anyfn_t)sleeper, .ctx = (void *)pid, .in = &(long){10000},
                          .in_len = sizeof(long), .out_cap = 8, .deadline = ASYNC_FOREVER,
                          .done = on_done, .arg = (void *)0};
    cr_assert_eq(async__procpool_submit(p, &j, NULL), 0);
    int64_t until = async_now() + ASYNC_SEC(10);
    while (!*pid && async_now() < until) usleep(1000);
    cr_assert_gt(*pid, 0);
    cr_assert_eq(kill((pid_t)*pid, SIGKILL), 0);
    wait_done(1);
    cr_assert_eq(R[0].err, ASYNC_EWORKERDIED);
    cr_assert(strstr(R[0].msg, "signal 9"), "%s", R[0].msg);
    cr_assert_eq(submit(p, square, 9, 8, 1, ASYNC_FOREVER, NULL), 0);
    wait_done(2);
    cr_assert_eq(R[1].val, 81);
    async__procpool_free(p);
}

/* --- deadlines ------------------------------------------------------------------ */

Test(procpool, deadline_kills_worker, .timeout = 30)
{
    async__procpool_t *p = pool_new(1);
    cr_assert_eq(async__procpool_wait_ready(p, async_deadline_after(ASYNC_SEC(10))), 0);
    volatile long *started;
    cr_assert_eq(async__procpool_shm_alloc(p, sizeof *started, (void **)&started), 0);
    int64_t t0 = async_now(), deadline = async_deadline_after(ASYNC_MSEC(200));
    async__procjob_t j = {.fn = (async__anyfn_t)sleeper, .ctx = (void *)started,
                          .in = &(long){20000}, .in_len = sizeof(long), .out_cap = 8,
                          .deadline = deadline, .done = on_done, .arg = (void *)0};
    cr_assert_eq(async__procpool_submit(p, &j, NULL), 0);
    while (!*started && async_now() < deadline) usleep(1000);
    bool ran = *started != 0; /* a starved machine may not start it in time */
    wait_done(1);
    int64_t took = async_now() - t0;
    cr_assert_eq(R[0].err, ASYNC_ETIMEDOUT);
    if (ran) cr_assert(strstr(R[0].msg, "killed"), "%s", R[0].msg);
    cr_assert_geq(took, ASYNC_MSEC(200));
    cr_assert_lt(took, ASYNC_SEC(15));
    /* A replacement serves the next job. */
    cr_assert_eq(submit(p, square, 5, 8, 1, ASYNC_FOREVER, NULL), 0);
    wait_done(2);
    cr_assert_eq(R[1].val, 25);
    /* The fork server's report of the replacement reaches the supervisor on
     * its own channel, and the replacement may serve the next job from the
     * shared ring before that report is read: wait for the count, bounded. */
    if (ran) {
        int64_t until = async_deadline_after(ASYNC_SEC(10));
        while (async__procpool_spawned(p) < 2 && async_now() < until) usleep(1000);
        cr_assert_geq(async__procpool_spawned(p), 2);
    }
    async__procpool_free(p);
}

Test(procpool, deadline_while_queued, .timeout = 30)
{
    async__procpool_t *p = pool_new(1);
    cr_assert_eq(async__procpool_wait_ready(p, async_deadline_after(ASYNC_SEC(10))), 0);
    cr_assert_eq(submit(p, sleeper, 600, 8, 0, ASYNC_FOREVER, NULL), 0);
    usleep(50000);
    cr_assert_eq(submit(p, square, 3, 8, 1, async_deadline_after(ASYNC_MSEC(100)), NULL), 0);
    wait_done(1);
    cr_assert_eq(R[1].err, ASYNC_ETIMEDOUT);
    cr_assert(strstr(R[1].msg, "before a worker started"), "%s", R[1].msg);
    wait_done(2);
    cr_assert_eq(R[0].err, 0);
    cr_assert_eq(async__procpool_spawned(p), 1); /* nobody was killed */
    async__procpool_free(p);
}

Test(procpool, cancel, .timeout = 30)
{
    async__procpool_t *p = pool_new(1);
    volatile long *pid;
    cr_assert_eq(async__procpool_shm_alloc(p, sizeof *pid, (void **)&pid), 0);
    uint64_t a, b;
    async__procjob_t j = {.fn = (async__anyfn_t)sleeper, .ctx = (void *)pid, .in = &(long){300},
                          .in_len = sizeof(long), .out_cap = 8, .deadline = ASYNC_FOREVER,
                          .done = on_done, .arg = (void *)0};
    cr_assert_eq(async__procpool_submit(p, &j, &a), 0);
    cr_assert_eq(submit(p, square, 3, 8, 1, ASYNC_FOREVER, &b), 0);
    int64_t until = async_now() + ASYNC_SEC(10);
    while (!*pid && async_now() < until) usleep(1000);
    cr_assert_eq(async__procpool_cancel(p, a), ASYNC_EBUSY);
    cr_assert_eq(async__procpool_cancel(p, b), 0);
    cr_assert_eq(R[1].err, ASYNC_ECANCELED);
    cr_assert_eq(async__procpool_cancel(p, b), ASYNC_ESRCH);
    wait_done(2);
    cr_assert_eq(R[0].err, 0);
    cr_assert_eq(async__procpool_cancel(p, a), ASYNC_ESRCH);
    async__procpool_free(p);
}

/* --- recycling and initializers ------------------------------------------------- */

Test(procpool, max_tasks_per_worker, .timeout = 30)
{
    async__procpool_opts_t o = {.workers = 2, .max_tasks_per_worker = 5, .idle_spin_ns = -1};
    async__procpool_t *p;
    cr_assert_eq(async__procpool_new(&o, &p), 0);
    for (int i = 0; i < 60; i++)
        cr_assert_eq(submit(p, sleeper, 0, 8, i, ASYNC_FOREVER, NULL), 0);
    wait_done(60);
    int distinct = 0;
    for (int i = 0; i < 60; i++) {
        cr_assert_eq(R[i].err, 0);
        int seen = 0;
        for (int k = 0; k < i; k++) seen |= R[k].val == R[i].val;
        distinct += !seen;
    }
    cr_assert_geq(distinct, 12, "%d distinct workers", distinct);
    cr_assert_geq(async__procpool_spawned(p), 12);
    async__procpool_free(p);
}

static long init_value; /* set in each worker by its initializer */

static int good_init(void *arg, char *msg, size_t cap)
{
    (void)msg;
    (void)cap;
    init_value = (long)(intptr_t)arg;
    return 0;
}

static int read_init(void *ctx, const void *in, size_t n, async__procout_t *out)
{
    (void)ctx;
    (void)in;
    (void)n;
    memcpy(async__procout_data(out), &init_value, sizeof init_value);
    return 0;
}

Test(procpool, initializer_runs_in_each_worker, .timeout = 30)
{
    async__procpool_opts_t o = {.workers = 2, .init = good_init, .init_arg = (void *)77,
                                .max_tasks_per_worker = 3, .idle_spin_ns = -1};
    async__procpool_t *p;
    cr_assert_eq(async__procpool_new(&o, &p), 0);
    cr_assert_eq(async__procpool_wait_ready(p, async_deadline_after(ASYNC_SEC(10))), 0);
    for (int i = 0; i < 20; i++)
        cr_assert_eq(submit(p, read_init, 0, 8, i, ASYNC_FOREVER, NULL), 0);
    wait_done(20);
    for (int i = 0; i < 20; i++) cr_assert_eq(R[i].val, 77);
    cr_assert_eq(init_value, 0); /* the parent's copy is untouched */
    async__procpool_free(p);
}

static int bad_init(void *arg, char *msg, size_t cap)
{
    (void)arg;
    snprintf(msg, cap, "no database");
    return ASYNC_EIO;
}

static int crashing_init(void *arg, char *msg, size_t cap)
{
    (void)arg;
    (void)msg;
    (void)cap;
    raise(SIGKILL);
    return 0;
}

static void check_init_failure(async__procpool_init_fn init, const char *want)
{
    async__procpool_opts_t o = {.workers = 2, .init = init, .idle_spin_ns = -1};
    async__procpool_t *p;
    cr_assert_eq(async__procpool_new(&o, &p), 0);
    for (int i = 0; i < 10; i++) {
        int rc = submit(p, square, i, 8, i, ASYNC_FOREVER, NULL);
        if (rc) {
            cr_assert_eq(rc, ASYNC_EINIT);
            R[i].err = rc;
            atomic_fetch_add(&ndone, 1);
        }
    }
    cr_assert_eq(async__procpool_wait_ready(p, async_deadline_after(ASYNC_SEC(10))), ASYNC_EINIT);
    wait_done(10);
    for (int i = 0; i < 10; i++) cr_assert_eq(R[i].err, ASYNC_EINIT);
    char msg[600];
    cr_assert_eq(async__procpool_error(p, msg, sizeof msg), ASYNC_EINIT);
    cr_assert(strstr(msg, want), "'%s' lacks '%s'", msg, want);
    cr_assert_eq(submit(p, square, 1, 8, 0, ASYNC_FOREVER, NULL), ASYNC_EINIT);
    async__procpool_free(p);
}

Test(procpool, initializer_failure, .timeout = 30) { check_init_failure(bad_init, "no database"); }
Test(procpool, initializer_crash, .timeout = 30)
{
    /* Not reported by the initializer: restarted until the crash loop is
     * reported, a bounded number of times. */
    check_init_failure(crashing_init, "in a row before it was ready (last: worker process");
}

/* --- shutdown and terminate ------------------------------------------------------ */

Test(procpool, shutdown_drains, .timeout = 30)
{
    async__procpool_t *p = pool_new(2);
    for (int i = 0; i < 200; i++)
        cr_assert_eq(submit(p, sleeper, i % 10 == 0, 8, i, ASYNC_FOREVER, NULL), 0);
    async__procpool_shutdown(p, true);
    cr_assert_eq(atomic_load(&ndone), 200);
    for (int i = 0; i < 200; i++) cr_assert_eq(R[i].err, 0);
    cr_assert_eq(submit(p, square, 1, 8, 0, ASYNC_FOREVER, NULL), ASYNC_ECLOSED);
    async__procpool_shutdown(p, true);
    async__procpool_free(p);
}

Test(procpool, terminate_with_work_in_flight, .timeout = 30)
{
    async__procpool_t *p = pool_new(2);
    cr_assert_eq(async__procpool_wait_ready(p, async_deadline_after(ASYNC_SEC(10))), 0);
    for (int i = 0; i < 100; i++)
        cr_assert_eq(submit(p, sleeper, 10000, 8, i, ASYNC_FOREVER, NULL), 0);
    usleep(50000);
    int64_t t0 = async_now();
    async__procpool_terminate(p);
    cr_assert_lt(async_now() - t0, ASYNC_SEC(5));
    cr_assert_eq(atomic_load(&ndone), 100);
    for (int i = 0; i < 100; i++) cr_assert_eq(R[i].err, ASYNC_ECANCELED);
    cr_assert_eq(submit(p, square, 1, 8, 0, ASYNC_FOREVER, NULL), ASYNC_ECLOSED);
    async__procpool_free(p);
}

/* --- a parent that runs threads -------------------------------------------------- */

static atomic_bool stop_threads;
static pthread_mutex_t busy_lock = PTHREAD_MUTEX_INITIALIZER;

static void *busy_thread(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop_threads)) {
        pthread_mutex_lock(&busy_lock);
        void *m = malloc(1000);
        free(m);
        pthread_mutex_unlock(&busy_lock);
    }
    return NULL;
}

static int mallocing(void *ctx, const void *in, size_t n, async__procout_t *out)
{
    (void)ctx;
    (void)n;
    char *s = malloc(100);
    snprintf(s, 100, "%ld", *(const long *)in);
    long v = atol(s);
    free(s);
    memcpy(async__procout_data(out), &v, sizeof v);
    return 0;
}

Test(procpool, parent_with_running_threads, .timeout = 30)
{
    /* The pool is created first; the threads then run while workers are
     * recycled and replaced, forked by the clean fork server. */
    async__procpool_opts_t o = {.workers = 2, .max_tasks_per_worker = 4, .idle_spin_ns = -1};
    async__procpool_t *p;
    cr_assert_eq(async__procpool_new(&o, &p), 0);
    pthread_t t[3];
    for (int i = 0; i < 3; i++) cr_assert_eq(pthread_create(&t[i], NULL, busy_thread, NULL), 0);
    for (int i = 0; i < 200; i++)
        cr_assert_eq(submit(p, i == 50 ? dier : mallocing, i == 50 ? 0 : i, 8, i,
                            ASYNC_FOREVER, NULL), 0);
    wait_done(200);
    for (int i = 0; i < 200; i++) {
        if (i == 50) cr_assert_eq(R[i].err, ASYNC_EWORKERDIED);
        else cr_assert_eq(R[i].val, i);
    }
    cr_assert_geq(async__procpool_spawned(p), 50);
    atomic_store(&stop_threads, true);
    for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
    async__procpool_free(p);
}

/* --- shared memory --------------------------------------------------------------- */

typedef struct range {
    const int *rows;
    long from, to;
} range_t;

static int count_rows(void *ctx, const void *in, size_t n, async__procout_t *out)
{
    (void)ctx;
    (void)n;
    range_t r;
    memcpy(&r, in, sizeof r);
    long c = 0;
    for (long i = r.from; i < r.to; i++) {
        const int *row = r.rows + i * 5;
        int k = 0;
        for (int j = 0; j < 5; j++) k += row[j] >= 4 && row[j] <= 8;
        c += k;
    }
    memcpy(async__procout_data(out), &c, sizeof c);
    return 0;
}

Test(procpool, shared_allocation, .timeout = 30)
{
    async__procpool_t *p = pool_new(2);
    long nrows = 1000000;
    int *rows;
    cr_assert_eq(async__procpool_shm_alloc(p, (size_t)nrows * 5 * sizeof(int), (void **)&rows), 0);
    cr_assert(async__procpool_owns(p, rows));
    long want = 0;
    for (long i = 0; i < nrows * 5; i++) {
        rows[i] = (int)((i * 2654435761u) % 10);
        want += rows[i] >= 4 && rows[i] <= 8;
    }
    int chunks = 100;
    for (int c = 0; c < chunks; c++) {
        range_t r = {rows, nrows * c / chunks, nrows * (c + 1) / chunks};
        async__procjob_t j = {.fn = (async__anyfn_t)count_rows, .in = &r, .in_len = sizeof r,
                              .out_cap = 8, .deadline = ASYNC_FOREVER, .done = on_done,
                              .arg = (void *)(intptr_t)c};
        cr_assert_eq(async__procpool_submit(p, &j, NULL), 0);
    }
    wait_done(chunks);
    long got = 0;
    for (int c = 0; c < chunks; c++) got += R[c].val;
    cr_assert_eq(got, want);
    async__procpool_shm_free(p, rows);
    async__procpool_free(p);
}

/* --- leaks ------------------------------------------------------------------------ */

Test(procpool, no_leaks, .timeout = 30)
{
    int fds = test_count_fds(), maps = test_count_maps("async-procpool");
    test_alloc_install();
    pid_t server, worker;
    for (int round = 0; round < 3; round++) {
        atomic_store(&ndone, 0);
        async__procpool_opts_t o = {.workers = 2, .slots = 8, .idle_spin_ns = -1};
        async__procpool_t *p;
        cr_assert_eq(async__procpool_new(&o, &p), 0);
        cr_assert_eq(test_count_maps("async-procpool"), maps + 1);
        cr_assert_eq(async__procpool_wait_ready(p, async_deadline_after(ASYNC_SEC(10))), 0);
        server = async__procpool_server_pid(p);
        worker = async__procpool_worker_pid(p, 0);
        for (int i = 0; i < 50; i++)
            cr_assert_eq(submit(p, i == 7 ? dier : sleeper, i == 7 ? 0 : 5, 8, i,
                                async_deadline_after(ASYNC_SEC(10)), NULL), 0);
        if (round == 0) wait_done(50);
        if (round == 1) async__procpool_shutdown(p, true);
        async__procpool_free(p); /* round 2: terminates with work in flight */
        cr_assert_eq(atomic_load(&ndone), 50);
    }
    cr_assert_eq(test_alloc_live(), 0);
    test_alloc_uninstall();
    cr_assert_eq(test_count_fds(), fds);
    cr_assert_eq(test_count_maps("async-procpool"), maps);
    cr_assert_eq(kill(server, 0), -1);
    cr_assert_eq(kill(worker, 0), -1);
    /* No child of ours is left, not even a zombie. */
    cr_assert_eq(waitpid(-1, NULL, WNOHANG), -1);
    cr_assert_eq(errno, ECHILD);
}

Test(procpool, fork_server_killed, .timeout = 30)
{
    async__procpool_t *p = pool_new(2);
    cr_assert_eq(async__procpool_wait_ready(p, async_deadline_after(ASYNC_SEC(10))), 0);
    cr_assert_eq(submit(p, sleeper, 10000, 8, 0, ASYNC_FOREVER, NULL), 0);
    usleep(50000);
    pid_t server = async__procpool_server_pid(p);
    cr_assert_eq(kill(server, SIGKILL), 0);
    wait_done(1);
    /* The fork server's death, not the worker it took down, is the cause. */
    cr_assert_eq(R[0].err, ASYNC_ECHILD, "%s", R[0].msg);
    cr_assert(strstr(R[0].msg, "fork server"), "%s", R[0].msg);
    cr_assert(strstr(R[0].msg, "signal 9"), "%s", R[0].msg);
    cr_assert_not(strstr(R[0].msg, "while running"), "%s", R[0].msg);
    char msg[600];
    cr_assert_eq(async__procpool_error(p, msg, sizeof msg), ASYNC_ECHILD);
    cr_assert(strstr(msg, "fork server"), "%s", msg);
    cr_assert_eq(submit(p, square, 1, 8, 1, ASYNC_FOREVER, NULL), ASYNC_ECHILD);
    cr_assert_eq(async__procpool_wait_ready(p, async_deadline_after(ASYNC_SEC(1))), ASYNC_ECHILD);
    async__procpool_free(p);
    /* Reaped once, by the pool: nothing of ours is left. */
    cr_assert_eq(waitpid(-1, NULL, WNOHANG), -1);
}

/* --- workers that die before they are ready (issue 10, defect 2) ----------------- */

/* Waits for worker w's pid to be set and differ from `old`; 0 at the
 * deadline or once the pool is broken. */
static pid_t new_worker_pid(async__procpool_t *p, unsigned w, pid_t old, int64_t deadline)
{
    pid_t pid;
    while (((pid = async__procpool_worker_pid(p, w)) == 0 || pid == old) &&
           async_now() < deadline && async__procpool_error(p, NULL, 0) == 0)
        usleep(500);
    return pid == old ? 0 : pid;
}

/* SIGKILLs the next `kills` incarnations of worker 0 while each is held
 * before it reports ready; returns how many it killed. */
static int kill_before_ready(async__procpool_t *p, int kills)
{
    pid_t pid = 0;
    int killed = 0;
    int64_t deadline = async_now() + ASYNC_SEC(20);
    while (killed < kills && async__procpool_error(p, NULL, 0) == 0) {
        if (!(pid = new_worker_pid(p, 0, pid, deadline))) break;
        /* The hook holds it a second before ready: it cannot be ready yet. */
        cr_assert_eq(async__procpool_wait_ready(p, async_now()), ASYNC_ETIMEDOUT);
        cr_assert_eq(kill(pid, SIGKILL), 0);
        killed++;
    }
    return killed;
}

static void check_serves(async__procpool_t *p, int first)
{
    cr_assert_eq(async__procpool_wait_ready(p, async_deadline_after(ASYNC_SEC(20))), 0);
    for (int i = 0; i < 10; i++)
        cr_assert_eq(submit(p, square, i, 8, first + i, ASYNC_FOREVER, NULL), 0);
    wait_done(first + 10);
    for (int i = 0; i < 10; i++) cr_assert_eq(R[first + i].val, (long)i * i, "job %d", i);
    cr_assert_eq(async__procpool_error(p, NULL, 0), 0);
}

Test(procpool, replacement_killed_before_ready_is_replaced, .timeout = 60)
{
    async__pp_test_hold_ready_ns = ASYNC_SEC(1);
    async__procpool_t *p = pool_new(1);
    /* Jobs queued meanwhile wait for a worker that is ready; none is lost. */
    cr_assert_eq(submit(p, square, 7, 8, 0, ASYNC_FOREVER, NULL), 0);
    cr_assert_eq(kill_before_ready(p, 2), 2);
    wait_done(1);
    cr_assert_eq(R[0].err, 0, "%s", R[0].msg);
    cr_assert_eq(R[0].val, 49);
    check_serves(p, 1);
    cr_assert_eq(async__procpool_spawned(p), 3);
    async__procpool_free(p);
}

static int slow_init(void *arg, char *msg, size_t cap)
{
    (void)arg, (void)msg, (void)cap;
    usleep(1000000);
    return 0;
}

Test(procpool, killed_in_a_slow_initializer_is_replaced, .timeout = 60)
{
    async__procpool_opts_t o = {.workers = 1, .init = slow_init, .idle_spin_ns = -1};
    async__procpool_t *p;
    cr_assert_eq(async__procpool_new(&o, &p), 0);
    cr_assert_eq(kill_before_ready(p, 2), 2);
    check_serves(p, 0);
    async__procpool_free(p);
}

Test(procpool, crash_loop_before_ready_is_reported, .timeout = 60)
{
    async__pp_test_hold_ready_ns = ASYNC_SEC(1);
    async__procpool_t *p = pool_new(1);
    cr_assert_eq(submit(p, square, 3, 8, 0, ASYNC_FOREVER, NULL), 0);
    int64_t t0 = async_now();
    int killed = kill_before_ready(p, 1000);
    char msg[600];
    int64_t until = async_now() + ASYNC_SEC(10);
    while (async__procpool_error(p, msg, sizeof msg) == 0 && async_now() < until) usleep(1000);
    cr_assert_eq(async__procpool_error(p, msg, sizeof msg), ASYNC_EWORKERDIED, "%s", msg);
    cr_assert(strstr(msg, "10 times in a row before it was ready"), "%s", msg);
    cr_assert(strstr(msg, "signal 9"), "%s", msg);
    /* Bounded: ten forks, then it stops, rather than restarting forever. */
    cr_assert_eq(killed, 10);
    cr_assert_eq(async__procpool_spawned(p), 10);
    cr_assert_lt(async_now() - t0, ASYNC_SEC(30));
    wait_done(1);
    cr_assert_eq(R[0].err, ASYNC_EWORKERDIED, "the queued job fails with the reason");
    cr_assert(strstr(R[0].msg, "in a row"), "%s", R[0].msg);
    cr_assert_eq(submit(p, square, 1, 8, 1, ASYNC_FOREVER, NULL), ASYNC_EWORKERDIED);
    usleep(300000);
    cr_assert_eq(async__procpool_spawned(p), 10, "no restart after the report");
    async__procpool_free(p);
}

Test(procpool, parent_ignores_sigchld, .timeout = 30)
{
    /* SIG_IGN would let the kernel reap workers unseen; the pool resets it
     * in its fork server. */
    signal(SIGCHLD, SIG_IGN);
    async__procpool_t *p = pool_new(1);
    cr_assert_eq(submit(p, dier, 0, 8, 0, ASYNC_FOREVER, NULL), 0);
    wait_done(1);
    cr_assert_eq(R[0].err, ASYNC_EWORKERDIED);
    cr_assert_eq(submit(p, square, 4, 8, 1, ASYNC_FOREVER, NULL), 0);
    wait_done(2);
    cr_assert_eq(R[1].val, 16);
    async__procpool_free(p);
}

Test(procpool, free_with_a_forked_child_holding_the_socket, .timeout = 30)
{
    async__procpool_t *p = pool_new(1);
    pid_t child = fork();
    if (child == 0) {
        sleep(20);
        _exit(0);
    }
    int64_t t0 = async_now();
    async__procpool_free(p);
    cr_assert_lt(async_now() - t0, ASYNC_SEC(5), "free waited for an unrelated child");
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
}

Test(procpool, deadlines_of_pending_jobs, .timeout = 30)
{
    /* 8 slots: most of these wait in the parent, not in shared memory. */
    async__procpool_opts_t o = {.workers = 1, .slots = 8, .idle_spin_ns = -1};
    async__procpool_t *p;
    cr_assert_eq(async__procpool_new(&o, &p), 0);
    cr_assert_eq(submit(p, sleeper, 500, 8, 0, ASYNC_FOREVER, NULL), 0);
    int64_t dl = async_deadline_after(ASYNC_MSEC(100));
    for (int i = 1; i <= 40; i++) cr_assert_eq(submit(p, square, i, 8, i, dl, NULL), 0);
    wait_done(40);
    for (int i = 1; i <= 40; i++) cr_assert_eq(R[i].err, ASYNC_ETIMEDOUT, "job %d", i);
    wait_done(41);
    cr_assert_eq(R[0].err, 0);
    async__procpool_free(p);
}

Test(procpool, many_deadlines_met, .timeout = 30)
{
    /* Deadlines of jobs that finish in time must not pile up. */
    async__procpool_opts_t o = {.workers = 2, .slots = 16, .idle_spin_ns = -1};
    async__procpool_t *p;
    cr_assert_eq(async__procpool_new(&o, &p), 0);
    int64_t dl = async_deadline_after(ASYNC_SEC(60));
    for (int i = 0; i < 5000; i++) cr_assert_eq(submit(p, square, i, 8, i, dl, NULL), 0);
    wait_done(5000);
    for (int i = 0; i < 5000; i++) cr_assert_eq(R[i].val, (long)i * i);
    async__procpool_free(p);
}
Test(procpool, created_while_threads_malloc, .timeout = 30)
{
    /* The fork server is forked while other threads hold the allocator's
     * locks at random moments; workers forked from it must still allocate. */
    pthread_t t[3];
    for (int i = 0; i < 3; i++) cr_assert_eq(pthread_create(&t[i], NULL, busy_thread, NULL), 0);
    for (int round = 0; round < 5; round++) {
        atomic_store(&ndone, 0);
        async__procpool_opts_t o = {.workers = 2, .max_tasks_per_worker = 3, .idle_spin_ns = -1};
        async__procpool_t *p;
        cr_assert_eq(async__procpool_new(&o, &p), 0);
        for (int i = 0; i < 20; i++)
            cr_assert_eq(submit(p, mallocing, i, 8, i, ASYNC_FOREVER, NULL), 0);
        wait_done(20);
        for (int i = 0; i < 20; i++) cr_assert_eq(R[i].val, i);
        async__procpool_free(p);
    }
    atomic_store(&stop_threads, true);
    for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
}

/* --- async__procpool_call: the worker hands the job straight to the waiter --------- */

/* Counts every done call per job, so that a double or a missing delivery
 * shows. */
static atomic_int call_dones[MAXJ];

static void on_call_done(void *user, void *arg, int err, const char *msg, const void *out,
                         size_t len)
{
    atomic_fetch_add(&call_dones[(intptr_t)arg], 1);
    on_done(user, arg, err, msg, out, len);
}

static int call(async__procpool_t *p, async__procpool_fn fn, void *ctx, long in, size_t out_cap,
                int i, int64_t deadline)
{
    async__procjob_t j = {.fn = (async__anyfn_t)fn, .ctx = ctx, .in = &in, .in_len = sizeof in,
                          .out_cap = out_cap, .deadline = deadline, .done = on_call_done,
                          .arg = (void *)(intptr_t)i};
    return async__procpool_call(p, &j);
}

/* The CPUs the pool's creator could use, which its workers inherit. */
static cpu_set_t inherited;

/* The worker's CPU times 2, plus 1 if it may use exactly the inherited CPUs. */
static int affinity_kept(void *ctx, const void *in, size_t n, async__procout_t *out)
{
    (void)ctx, (void)in, (void)n;
    cpu_set_t now;
    long same = sched_getaffinity(0, sizeof now, &now) == 0 && CPU_EQUAL(&now, &inherited);
    long v = sched_getcpu() * 2L + same;
    memcpy(async__procout_data(out), &v, sizeof v);
    return 0;
}

/* A worker that hands jobs over to a caller on its own CPU steps off that
 * CPU now and then by narrowing its affinity; every job must still find the
 * mask the worker inherited. */
Test(procpool, call_beside_the_caller_keeps_the_workers_affinity, .timeout = 30)
{
    cr_assert_eq(sched_getaffinity(0, sizeof inherited, &inherited), 0);
    if (CPU_COUNT(&inherited) < 2) cr_skip_test("one CPU: a worker has nowhere to step");
    async__procpool_t *p = pool_new(1);
    cr_assert_eq(async__procpool_wait_ready(p, async_deadline_after(ASYNC_SEC(20))), 0);
    /* The caller follows the worker to its CPU, so that the worker is
     * beside it at every hand-over. */
    for (int i = 0; i < 3000; i++) {
        R[0].val = -1;
        cr_assert_eq(call(p, affinity_kept, NULL, 0, 8, 0, ASYNC_FOREVER), 0);
        cr_assert_eq(R[0].err, 0);
        cr_assert(R[0].val >= 0 && (R[0].val & 1), "job %d ran with a narrowed affinity", i);
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET((int)(R[0].val / 2), &one);
        pthread_setaffinity_np(pthread_self(), sizeof one, &one);
    }
    pthread_setaffinity_np(pthread_self(), sizeof inherited, &inherited);
    /* The last hand-over may have begun a step off just now: the worker
     * restores its mask at once, but on a loaded machine "at once" is when
     * it next gets a CPU.  So a narrowed mask fails only if it lasts. */
    for (unsigned w = 0; w < async__procpool_workers(p); w++) {
        cpu_set_t m;
        int64_t until = async_deadline_after(ASYNC_SEC(2));
        for (;;) {
            cr_assert_eq(sched_getaffinity(async__procpool_worker_pid(p, w), sizeof m, &m), 0);
            if (CPU_EQUAL(&m, &inherited) || async_now() >= until) break;
            usleep(1000);
        }
        cr_assert(CPU_EQUAL(&m, &inherited), "worker %u left with a narrowed affinity", w);
    }
    async__procpool_free(p);
}

Test(procpool, call_results_and_errors, .timeout = 30)
{
    async__procpool_t *p = pool_new(2);
    /* Direct hand-overs, and jobs that used the worker's byte ring (a grown
     * result, a message) and so take the supervisor's way, interleaved. */
    for (int i = 0; i < 3000; i++) {
        int k = i % 3;
        int rc = k == 0 ? call(p, square, NULL, i, 8, i, ASYNC_FOREVER)
               : k == 1 ? call(p, grower, NULL, 200, 8, i, ASYNC_FOREVER)
                        : call(p, failer, NULL, 0, 8, i, ASYNC_FOREVER);
        cr_assert_eq(rc, 0, "call %d: %s", i, async_strerror(rc));
        /* done ran before the call returned, exactly once */
        cr_assert_eq(atomic_load(&call_dones[i]), 1, "job %d: %d done calls", i,
                     atomic_load(&call_dones[i]));
        if (k == 0) {
            cr_assert_eq(R[i].err, 0);
            cr_assert_eq(R[i].val, (long)i * i);
        } else if (k == 1) {
            cr_assert_eq(R[i].err, 0);
            cr_assert_eq(R[i].len, 200);
            for (int b = 0; b < 200; b++) cr_assert_eq(R[i].data[b], (unsigned char)(b * 7 + 1));
        } else {
            cr_assert_eq(R[i].err, ASYNC_EINVAL);
            cr_assert_str_eq(R[i].msg, "bad item 42");
        }
    }
    /* Beside ordinary submits. */
    for (int i = 3000; i < 3100; i++) cr_assert_eq(submit(p, square, i, 8, i, ASYNC_FOREVER, NULL), 0);
    cr_assert_eq(call(p, square, NULL, 7, 8, 3100, ASYNC_FOREVER), 0);
    cr_assert_eq(R[3100].val, 49);
    wait_done(3101);
    for (int i = 3000; i < 3100; i++) cr_assert_eq(R[i].val, (long)i * i);
    async__procpool_shutdown(p, true);
    cr_assert_eq(call(p, square, NULL, 1, 8, 0, ASYNC_FOREVER), ASYNC_ECLOSED);
    async__procpool_free(p);
}

Test(procpool, call_without_a_free_slot_says_eagain, .timeout = 30)
{
    async__procpool_opts_t o = {.workers = 1, .slots = 1, .idle_spin_ns = -1};
    async__procpool_t *p;
    cr_assert_eq(async__procpool_new(&o, &p), 0);
    cr_assert_eq(submit(p, sleeper, 300, 8, 0, ASYNC_FOREVER, NULL), 0);
    cr_assert_eq(call(p, square, NULL, 3, 8, 1, ASYNC_FOREVER), ASYNC_EAGAIN);
    cr_assert_eq(atomic_load(&call_dones[1]), 0);
    wait_done(1);
    /* The slot is free again once the job is delivered. */
    int64_t until = async_deadline_after(ASYNC_SEC(10));
    int rc;
    while ((rc = call(p, square, NULL, 3, 8, 1, ASYNC_FOREVER)) == ASYNC_EAGAIN &&
           async_now() < until)
        usleep(1000);
    cr_assert_eq(rc, 0);
    cr_assert_eq(R[1].val, 9);
    async__procpool_free(p);
}

typedef struct killer_arg {
    volatile long *pid;
    atomic_bool stop;
} killer_arg_t;

static void *kill_when_started(void *arg)
{
    killer_arg_t *k = arg;
    int64_t until = async_now() + ASYNC_SEC(10);
    while (!*k->pid && async_now() < until) usleep(1000);
    if (*k->pid) kill((pid_t)*k->pid, SIGKILL);
    return NULL;
}

Test(procpool, call_whose_worker_is_killed, .timeout = 30)
{
    async__procpool_t *p = pool_new(2);
    killer_arg_t k = {0};
    cr_assert_eq(async__procpool_shm_alloc(p, sizeof *k.pid, (void **)&k.pid), 0);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, kill_when_started, &k), 0);
    cr_assert_eq(call(p, sleeper, (void *)k.pid, 10000, 8, 0, ASYNC_FOREVER), 0);
    pthread_join(t, NULL);
    cr_assert_eq(atomic_load(&call_dones[0]), 1);
    cr_assert_eq(R[0].err, ASYNC_EWORKERDIED);
    cr_assert(strstr(R[0].msg, "signal 9"), "%s", R[0].msg);
    /* The pool serves on. */
    cr_assert_eq(call(p, square, NULL, 6, 8, 1, ASYNC_FOREVER), 0);
    cr_assert_eq(R[1].val, 36);
    async__procpool_free(p);
}

Test(procpool, call_past_its_deadline, .timeout = 30)
{
    async__procpool_t *p = pool_new(1);
    cr_assert_eq(call(p, sleeper, NULL, 20000, 8, 0, async_deadline_after(ASYNC_MSEC(100))), 0);
    cr_assert_eq(atomic_load(&call_dones[0]), 1);
    cr_assert_eq(R[0].err, ASYNC_ETIMEDOUT);
    cr_assert_eq(call(p, square, NULL, 4, 8, 1, ASYNC_FOREVER), 0);
    cr_assert_eq(R[1].val, 16);
    async__procpool_free(p);
}

static void *terminate_soon(void *arg)
{
    usleep(100000);
    async__procpool_terminate(arg);
    return NULL;
}

Test(procpool, call_during_terminate, .timeout = 30)
{
    async__procpool_t *p = pool_new(1);
    cr_assert_eq(async__procpool_wait_ready(p, async_deadline_after(ASYNC_SEC(10))), 0);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, terminate_soon, p), 0);
    cr_assert_eq(call(p, sleeper, NULL, 10000, 8, 0, ASYNC_FOREVER), 0);
    pthread_join(t, NULL);
    cr_assert_eq(atomic_load(&call_dones[0]), 1);
    cr_assert_eq(R[0].err, ASYNC_ECANCELED);
    async__procpool_free(p);
}

/* Threads call one job at a time while workers are SIGKILLed at random:
 * every call returns, each job's done ran exactly once, a job succeeded
 * with its own result or failed because its worker died, and it ran at most
 * once (counted in shared memory). */
enum { STORM_CALLERS = 3, STORM_CALLS = 6000 };

typedef struct call_storm {
    async__procpool_t *p;
    _Atomic int *runs;
    int first;
    atomic_int died;
} call_storm_t;

static int counted_square(void *ctx, const void *in, size_t n, async__procout_t *out)
{
    (void)n;
    long x;
    memcpy(&x, in, sizeof x);
    atomic_fetch_add(&((_Atomic int *)ctx)[x], 1);
    /* About 20 us of work, so that kills land in jobs as well as between. */
    int64_t until = async_now() + ASYNC_USEC(20);
    while (async_now() < until) {}
    x *= x;
    memcpy(async__procout_data(out), &x, sizeof x);
    return 0;
}

static void *storm_caller(void *arg)
{
    call_storm_t *c = arg;
    for (int i = c->first; i < c->first + STORM_CALLS; i++) {
        int rc = call(c->p, counted_square, (void *)c->runs, i, 8, i, ASYNC_FOREVER);
        if (rc == ASYNC_EAGAIN) { /* another caller's job is in the only slot */
            i--;
            continue;
        }
        if (rc) return (void *)(intptr_t)rc;
    }
    return NULL;
}

/* The killing side of a storm: now and then SIGKILLs one of the two
 * workers, only one seen for 20 ms (ready, most likely): killing fresh ones
 * again and again would be a crash loop, which breaks the pool by design. */
typedef struct storm_killer {
    unsigned seed;
    int kills;
    pid_t seen[2];
    int64_t seen_at[2];
} storm_killer_t;

static void storm_kill_maybe(async__procpool_t *p, storm_killer_t *k)
{
    usleep(1000 + rand_r(&k->seed) % 3000);
    unsigned wi = rand_r(&k->seed) % 2;
    pid_t w = async__procpool_worker_pid(p, wi);
    if (w != k->seen[wi]) {
        k->seen[wi] = w;
        k->seen_at[wi] = async_now();
    } else if (w > 0 && async_now() - k->seen_at[wi] >= ASYNC_MSEC(20) && kill(w, SIGKILL) == 0) {
        k->kills++;
    }
}

/* After a storm of n counted_square jobs: each job's done ran once, and it
 * succeeded with its result (run once) or failed because its worker died.
 * Returns how many failed. */
static int storm_check(_Atomic int *runs, int n)
{
    int died = 0;
    for (int i = 0; i < n; i++) {
        cr_assert_eq(atomic_load(&call_dones[i]), 1, "job %d: %d done calls", i,
                     atomic_load(&call_dones[i]));
        int r = atomic_load(&runs[i]);
        cr_assert_leq(r, 1, "job %d ran %d times", i, r);
        if (R[i].err == 0) {
            cr_assert_eq(R[i].val, (long)i * i);
            cr_assert_eq(r, 1);
        } else {
            cr_assert_eq(R[i].err, ASYNC_EWORKERDIED, "job %d: %s", i, R[i].msg);
            died++;
        }
    }
    return died;
}

Test(procpool, call_kill_storm, .timeout = 120)
{
    async__procpool_t *p = pool_new(2);
    _Atomic int *runs;
    cr_assert_eq(async__procpool_shm_alloc(p, STORM_CALLERS * STORM_CALLS * sizeof *runs,
                                           (void **)&runs), 0);
    cr_assert_eq(async__procpool_wait_ready(p, async_deadline_after(ASYNC_SEC(10))), 0);
    call_storm_t c[STORM_CALLERS];
    pthread_t t[STORM_CALLERS];
    for (int k = 0; k < STORM_CALLERS; k++) {
        c[k] = (call_storm_t){.p = p, .runs = runs, .first = k * STORM_CALLS};
        cr_assert_eq(pthread_create(&t[k], NULL, storm_caller, &c[k]), 0);
    }
    storm_killer_t k = {.seed = (unsigned)time(NULL)};
    cr_log_info("call kill storm seed %u", k.seed);
    bool joined[STORM_CALLERS] = {0};
    for (int alive = STORM_CALLERS; alive;) {
        storm_kill_maybe(p, &k);
        alive = 0;
        for (int i = 0; i < STORM_CALLERS; i++) {
            void *rc = NULL;
            if (!joined[i] && pthread_tryjoin_np(t[i], &rc) == 0) {
                joined[i] = true;
                cr_assert_null(rc, "caller %d: %s", i, async_strerror((int)(intptr_t)rc));
            }
            alive += !joined[i];
        }
    }
    int kills = k.kills, died = storm_check(runs, STORM_CALLERS * STORM_CALLS);
    cr_log_info("%d kills, %d jobs failed with their worker", kills, died);
    cr_assert_leq(died, kills);
    async__procpool_free(p);
}


/* --- async__procpool_call_n: a batch shares one wake-up ---------------------------- */

/* n jobs of fns[k % nfns] with inputs first .. first + n - 1 (job k is R[first + k]). */
static int call_n(async__procpool_t *p, async__procpool_fn const *fns, int nfns, void *const *ctxs,
                  const long *ins, int first, int n)
{
    async__procjob_t j[PP_CALL_MAX];
    for (int k = 0; k < n; k++)
        j[k] = (async__procjob_t){.fn = (async__anyfn_t)fns[k % nfns],
                                  .ctx = ctxs ? ctxs[k % nfns] : NULL, .in = &ins[k],
                                  .in_len = sizeof ins[k], .out_cap = 8,
                                  .deadline = ASYNC_FOREVER, .done = on_call_done,
                                  .arg = (void *)(intptr_t)(first + k)};
    return async__procpool_call_n(p, j, (size_t)n);
}

Test(procpool, call_n_results_and_errors, .timeout = 30)
{
    async__procpool_t *p = pool_new(2);
    /* Handed-over jobs, and ones that take the supervisor's way (a grown
     * result, a message) and so wake the caller from there, in one batch. */
    async__procpool_fn fns[] = {square, square, grower, square, failer};
    int first = 0;
    for (int b = 0; b < 400; b++) {
        int n = 1 + b % 40;
        long ins[PP_CALL_MAX];
        for (int k = 0; k < n; k++) ins[k] = k % 5 == 2 ? 200 : first + k;
        int rc = call_n(p, fns, 5, NULL, ins, first, n);
        cr_assert_eq(rc, 0, "batch %d: %s", b, async_strerror(rc));
        for (int k = 0; k < n; k++) {
            int i = first + k;
            cr_assert_eq(atomic_load(&call_dones[i]), 1, "job %d: %d done calls", i,
                         atomic_load(&call_dones[i]));
            if (k % 5 == 2) {
                cr_assert_eq(R[i].err, 0);
                cr_assert_eq(R[i].len, 200);
            } else if (k % 5 == 4) {
                cr_assert_eq(R[i].err, ASYNC_EINVAL);
                cr_assert_str_eq(R[i].msg, "bad item 42");
            } else {
                cr_assert_eq(R[i].err, 0);
                cr_assert_eq(R[i].val, (long)i * i);
            }
        }
        first += n;
    }
    async__procpool_shutdown(p, true);
    long in = 1;
    cr_assert_eq(call_n(p, fns, 1, NULL, &in, 0, 1), ASYNC_ECLOSED);
    async__procpool_free(p);
}

/* The worker holding the batch's first chunk is killed while the other
 * worker still runs the second: the chunk fails with ASYNC_EWORKERDIED,
 * and the second's hand-over, which is not the batch's last count (the
 * failed chunk was never counted), must still wake the caller; then the
 * replacement serves the next batch. */
Test(procpool, call_n_worker_killed_holding_a_chunk, .timeout = 30)
{
    async__procpool_t *p = pool_new(2);
    cr_assert_eq(async__procpool_wait_ready(p, async_deadline_after(ASYNC_SEC(10))), 0);
    killer_arg_t k = {0};
    cr_assert_eq(async__procpool_shm_alloc(p, sizeof *k.pid, (void **)&k.pid), 0);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, kill_when_started, &k), 0);
    async__procpool_fn fns[] = {sleeper, sleeper};
    void *ctxs[] = {(void *)k.pid, NULL};
    long ins[] = {10000, 300};
    int64_t t0 = async_now();
    cr_assert_eq(call_n(p, fns, 2, ctxs, ins, 0, 2), 0);
    pthread_join(t, NULL);
    cr_assert_lt(async_now() - t0, ASYNC_SEC(9), "the batch waited for the killed chunk's sleep");
    cr_assert_eq(atomic_load(&call_dones[0]), 1);
    cr_assert_eq(atomic_load(&call_dones[1]), 1);
    cr_assert_eq(R[0].err, ASYNC_EWORKERDIED, "%s", R[0].msg);
    cr_assert(strstr(R[0].msg, "signal 9"), "%s", R[0].msg);
    cr_assert_eq(R[1].err, 0, "%s", R[1].msg);
    async__procpool_fn sq[] = {square};
    long more[8] = {2, 3, 4, 5, 6, 7, 8, 9};
    cr_assert_eq(call_n(p, sq, 1, NULL, more, 2, 8), 0);
    for (int i = 2; i < 10; i++) cr_assert_eq(R[i].val, (long)(i * i), "job %d", i);
    async__procpool_free(p);
}

/* Batches back to back while workers are SIGKILLed at random, at any point
 * of a chunk (claimed, running, handed over, counted): every batch returns,
 * each job's done ran exactly once, and a job succeeded with its result
 * (run once) or failed because its worker died. */
enum { BSTORM_BATCHES = 600, BSTORM_N = 16 };

static void *batch_storm_caller(void *arg)
{
    call_storm_t *c = arg;
    async__procpool_fn fns[] = {counted_square};
    void *ctxs[] = {(void *)c->runs};
    for (int b = 0; b < BSTORM_BATCHES; b++) {
        long ins[BSTORM_N];
        for (int k = 0; k < BSTORM_N; k++) ins[k] = b * BSTORM_N + k;
        int rc = call_n(c->p, fns, 1, ctxs, ins, b * BSTORM_N, BSTORM_N);
        if (rc) return (void *)(intptr_t)rc;
    }
    return NULL;
}

Test(procpool, call_n_kill_storm, .timeout = 120)
{
    async__procpool_t *p = pool_new(2);
    enum { JOBS = BSTORM_BATCHES * BSTORM_N };
    _Atomic int *runs;
    cr_assert_eq(async__procpool_shm_alloc(p, JOBS * sizeof *runs, (void **)&runs), 0);
    cr_assert_eq(async__procpool_wait_ready(p, async_deadline_after(ASYNC_SEC(10))), 0);
    call_storm_t c = {.p = p, .runs = runs};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, batch_storm_caller, &c), 0);
    storm_killer_t k = {.seed = (unsigned)time(NULL)};
    cr_log_info("call_n kill storm seed %u", k.seed);
    void *rc = NULL;
    while (pthread_tryjoin_np(t, &rc) != 0) storm_kill_maybe(p, &k);
    cr_assert_null(rc, "%s", async_strerror((int)(intptr_t)rc));
    int kills = k.kills, died = storm_check(runs, JOBS);
    cr_log_info("%d kills, %d jobs failed with their worker", kills, died);
    cr_assert_gt(kills, 0);
    cr_assert_leq(died, kills);
    async__procpool_free(p);
}

#endif
