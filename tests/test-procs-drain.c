/* A map that takes the process backend's direct path (process_backend.c,
 * map_direct) racing a shutdown that drains: once the map has claimed its
 * chunks it is accepted, and a shutdown without cancel_pending runs every
 * job it accepted.  The map must either lose the race (ASYNC_ECLOSED,
 * nothing ran) or run whole; it must never come back ASYNC_ECANCELED with
 * "the process pool was terminated", which no terminate caused.
 *
 * The race is made to land: a signal stops the mapping thread at a point
 * that sweeps across the map call, and the shutdown runs while it sleeps
 * in the handler. */
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
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <async.h>
#include <async/executor.h>
#include "support/alloc.h"
#include "support/teardown.h"

static void setup(void) { test_alloc_install(); }
static void teardown(void)
{
    TEARDOWN_CHECK_NO_LEAK();
    test_alloc_uninstall();
}
TestSuite(procs_drain, .init = setup, .fini = teardown);

static int twice(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out_size, (void)ctx;
    int v;
    memcpy(&v, in, sizeof v);
    v *= 2;
    memcpy(out, &v, sizeof v);
    return 0;
}

enum { ROWS = 256 };

typedef struct race {
    async_executor_t *ex;
    int *in, *out;
    _Atomic int started, finished;
    int rc;
    async_map_error_t err;
} race_t;

static _Atomic int in_handler;

static void stall(int sig)
{
    (void)sig;
    atomic_store(&in_handler, 1);
    struct timespec ts = {0, 30 * 1000 * 1000};
    while (nanosleep(&ts, &ts) != 0) {}
}

static void *mapper(void *arg)
{
    race_t *r = arg;
    async_map_t m;
    async_map_init(&m);
    m.fn = twice;
    m.in = r->in;
    m.in_size = sizeof(int);
    m.out = r->out;
    m.out_size = sizeof(int);
    m.n = ROWS;
    m.chunksize = 1;
    atomic_store(&r->started, 1);
    r->rc = async_executor_map(r->ex, &m, &r->err);
    atomic_store(&r->finished, 1);
    return NULL;
}

static void spin_ns(int64_t ns)
{
    int64_t until = async_now() + ns;
    while (async_now() < until) {}
}

Test(procs_drain, direct_map_racing_a_draining_shutdown_runs_or_is_refused, .timeout = 300)
{
    struct sigaction sa = {.sa_handler = stall};
    sigemptyset(&sa.sa_mask);
    cr_assert_eq(sigaction(SIGUSR1, &sa, NULL), 0);
    int lost = 0, ran = 0, refused = 0, missed = 0;
    int64_t span = 0; /* how long a map call takes here: the sweep's range */
    for (int iter = 0; iter < 400 && !lost; iter++) {
        race_t r = {0};
        async_executor_opts_t o;
        async_executor_opts_init(&o);
        o.backend = ASYNC_BACKEND_PROCESSES;
        o.workers = 2;
        cr_assert_eq(async_executor_new(&r.ex, &o), 0);
        cr_assert_eq(async_executor_shm_alloc((void **)&r.in, r.ex, ROWS * sizeof(int)), 0);
        cr_assert_eq(async_executor_shm_alloc((void **)&r.out, r.ex, ROWS * sizeof(int)), 0);
        for (int i = 0; i < ROWS; i++) r.in[i] = i;
        /* Maps first, so that the workers are up and the race is with a
         * map's placing, not with the pool's start; they time a call. */
        for (int k = 0; k < 3; k++) {
            int64_t t0 = async_now();
            mapper(&r);
            cr_assert_eq(r.rc, 0);
            int64_t took = async_now() - t0;
            if (!span || took < span) span = took;
        }
        atomic_store(&r.started, 0);
        atomic_store(&r.finished, 0);
        atomic_store(&in_handler, 0);
        pthread_t t;
        cr_assert_eq(pthread_create(&t, NULL, mapper, &r), 0);
        while (!atomic_load(&r.started)) {}
        spin_ns(span * (iter % 40) / 40);
        pthread_kill(t, SIGUSR1);
        /* A map that ended first may end its thread before the signal is
         * handled: that iteration races nothing. */
        int64_t give_up = async_now() + ASYNC_MSEC(200);
        while (!atomic_load(&in_handler) && !(atomic_load(&r.finished) && async_now() > give_up)) {}
        if (!atomic_load(&in_handler)) missed++;
        /* The mapping thread sleeps in the handler now, wherever it was. */
        cr_assert_eq(async_executor_shutdown(r.ex, true, false), 0);
        pthread_join(t, NULL);
        if (r.rc == 0) {
            ran++;
            for (int i = 0; i < ROWS; i++)
                cr_assert_eq(r.out[i], 2 * i, "iteration %d, item %d", iter, i);
        } else if (r.rc == ASYNC_ECLOSED) {
            refused++;
        } else {
            lost++;
            cr_log_error("iteration %d: the map returned %s (%s)", iter, async_errname(r.rc),
                         r.err.message);
        }
        async_executor_shm_free(r.ex, r.in);
        async_executor_shm_free(r.ex, r.out);
        async_executor_free(r.ex);
    }
    cr_log_info("ran %d, refused %d, lost %d, not stopped %d (a map call: %lld ns)", ran, refused,
                lost, missed, (long long)span);
    cr_assert_eq(lost, 0, "%d of the maps failed though the shutdown drains", lost);
}
#endif
