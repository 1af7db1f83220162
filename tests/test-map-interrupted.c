/* Lazy maps (imap) and submits with callbacks whose pool goes away under
 * them: worker processes SIGKILLed from outside at random instants, a pool
 * shut down or terminated while an imap is being read.  No item may be
 * lost or delivered twice.  Each test says in its comment what it caught,
 * or what broken code it would catch. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <async.h>
#include <async/executor.h>
#include <async/future.h>
#include "support/alloc.h"
#include "support/teardown.h"
#include "support/exec_jobs.h"

/* Under the sanitizers, malloc of a size no machine has (2^40 chunks'
 * tickets) aborts by default; make it fail as glibc's does, so the
 * library's own ASYNC_ENOMEM path is what the test sees. */
TEST_ALLOCATOR_MAY_RETURN_NULL();

TestSuite(map_interrupted, .init = test_exec_setup, .fini = test_exec_teardown);

/* --- workers SIGKILLed from outside at random instants ------------------------ */

#if !defined(__SANITIZE_THREAD__)
enum { STORM_WORKERS = 2, STORM_ROUNDS = 25, STORM_ITEMS = 120, STORM_JOBS = 40 };

/* Shared with the workers (async_executor_shm_alloc): the pid of the worker
 * running each index, for the killer. */
typedef struct storm_shm {
    _Atomic int pid[STORM_WORKERS];
} storm_shm_t;

static int storm_twice(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out_size;
    storm_shm_t *sh = ctx;
    int w = async_work_worker();
    if (w >= 0 && w < STORM_WORKERS) atomic_store(&sh->pid[w], (int)getpid());
    usleep(200);
    *(int64_t *)out = 2 * *(const int64_t *)in;
    return 0;
}

typedef struct killer {
    storm_shm_t *sh;
    atomic_bool stop;
    int kills;
    unsigned seed;
} killer_t;

static void *killer_main(void *arg)
{
    killer_t *k = arg;
    while (!atomic_load(&k->stop)) {
        usleep(2000 + rand_r(&k->seed) % 6000);
        int w = (int)(rand_r(&k->seed) % STORM_WORKERS);
        int pid = atomic_exchange(&k->sh->pid[w], 0);
        if (pid > 0 && kill(pid, SIGKILL) == 0) k->kills++;
    }
    return NULL;
}

static int count_fds(void)
{
    int n = 0;
    char path[64];
    for (int fd = 0; fd < 1024; fd++) {
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        n += access(path, F_OK) == 0;
    }
    return n;
}

static atomic_int storm_cb_runs[STORM_ROUNDS * STORM_JOBS];
static void storm_on_done(async_future_t *f, void *arg)
{
    (void)f;
    atomic_fetch_add(&storm_cb_runs[(intptr_t)arg], 1);
}

/* A died worker fails what it held with ASYNC_EWORKERDIED; the rest of its
 * chunk did not run (ASYNC_ECANCELED); anything else is a result. */
static void expect_value_or_died(int r, int64_t got, int64_t want, const char *what, const char *msg)
{
    if (r == 0) cr_assert_eq(got, want, "%s: %lld, not %lld", what, (long long)got, (long long)want);
    else cr_assert(r == ASYNC_EWORKERDIED || r == ASYNC_ECANCELED, "%s: %s (%s)", what,
                   async_strerror(r), msg);
}

/* Lazy maps (ordered over an array, unordered from a source), submits with
 * callbacks, map_async and run, while a thread SIGKILLs a worker every 2 to
 * 8 ms: each item is yielded once with its result or its worker's death,
 * each future is final, each callback ran once, the pool is not broken and
 * serves afterwards, and its free leaves no descriptor open. */
Test(map_interrupted, kill_storm_over_lazy_maps_and_callbacks, .timeout = 240)
{
    int fds_before = count_fds();
    async_executor_t *ex = NULL;
    cr_assert_eq(async_executor_new(&ex, &(async_executor_opts_t){
                     .backend = ASYNC_BACKEND_PROCESSES, .workers = STORM_WORKERS}), 0);
    storm_shm_t *sh;
    cr_assert_eq(async_executor_shm_alloc((void **)&sh, ex, sizeof *sh), 0);
    killer_t k = {.sh = sh, .seed = (unsigned)time(NULL)};
    cr_log_info("kill storm seed %u", k.seed);
    pthread_t kt;
    cr_assert_eq(pthread_create(&kt, NULL, killer_main, &k), 0);
    static int64_t in[STORM_ITEMS], out[STORM_ITEMS];
    for (int i = 0; i < STORM_ITEMS; i++) in[i] = i;
    int died = 0, ok = 0;
    for (int round = 0; round < STORM_ROUNDS; round++) {
        /* imap, ordered over the array, then unordered from a source */
        for (int unordered = 0; unordered < 2; unordered++) {
            counted_t src = {0, STORM_ITEMS};
            async_imap_t im;
            async_imap_init(&im);
            im.fn = storm_twice, im.ctx = sh, im.in_size = im.out_size = sizeof(int64_t);
            im.chunksize = 3, im.unordered = unordered;
            if (unordered) im.source = counted_source, im.source_arg = &src;
            else im.in = in, im.n = STORM_ITEMS;
            async_imap_iter_t *it;
            cr_assert_eq(async_executor_imap(&it, ex, &im), 0);
            static bool seen[STORM_ITEMS];
            memset(seen, 0, sizeof seen);
            int r, got = 0;
            int64_t o;
            size_t idx;
            while ((r = async_imap_next(it, &o, &idx)) != ASYNC_EEOF) {
                cr_assert_lt(idx, STORM_ITEMS);
                cr_assert(!seen[idx], "item %zu twice", idx);
                seen[idx] = true;
                if (!unordered) cr_assert_eq(idx, (size_t)got, "ordered imap out of order");
                expect_value_or_died(r, o, 2 * (int64_t)idx, "imap item", async_imap_message(it));
                r ? died++ : ok++;
                got++;
            }
            cr_assert_eq(got, STORM_ITEMS, "%d of %d items yielded", got, STORM_ITEMS);
            async_imap_free(it);
        }
        /* submits with callbacks */
        async_future_t *fs[STORM_JOBS];
        for (int j = 0; j < STORM_JOBS; j++) {
            cr_assert_eq(async_executor_submit(&fs[j], ex, &(async_job_t){
                             .fn = storm_twice, .ctx = sh, .in = &in[j], .in_size = sizeof in[j],
                             .out_size = sizeof in[j]}), 0);
            intptr_t slot = round * STORM_JOBS + j;
            cr_assert_eq(async_future_on_done(fs[j], storm_on_done, (void *)slot), 0);
        }
        /* map_async beside them */
        async_map_t m;
        async_map_init(&m);
        m.fn = storm_twice, m.ctx = sh, m.in = in, m.in_size = sizeof in[0], m.out = out;
        m.out_size = sizeof out[0], m.n = STORM_ITEMS, m.chunksize = 4;
        async_future_t *mf;
        memset(out, 0xff, sizeof out);
        cr_assert_eq(async_executor_map_async(&mf, ex, &m, NULL, NULL, NULL), 0);
        /* and run */
        for (int j = 0; j < 5; j++) {
            int64_t v = j, w = -1;
            char msg[ASYNC_FUTURE_MSG_MAX];
            int r = async_executor_run(ex, &(async_job_t){.fn = storm_twice, .ctx = sh, .in = &v,
                                                          .in_size = sizeof v, .out_size = sizeof w},
                                       &w, NULL, msg, sizeof msg);
            expect_value_or_died(r, w, 2 * v, "run", msg);
        }
        for (int j = 0; j < STORM_JOBS; j++) {
            int e = async_future_wait(fs[j]);
            const void *data = NULL;
            size_t size = 0;
            if (!e) cr_assert_eq(async_future_result(fs[j], &data, &size), 0);
            expect_value_or_died(e, e ? 0 : *(const int64_t *)data, 2 * in[j], "submit",
                                 async_future_message(fs[j]));
            async_future_unref(fs[j]);
        }
        int e = async_future_wait(mf);
        if (e) {
            cr_assert_eq(e, ASYNC_EWORKERDIED, "map_async: %s", async_future_message(mf));
        } else {
            for (int i = 0; i < STORM_ITEMS; i++) cr_assert_eq(out[i], 2 * in[i]);
        }
        async_future_unref(mf);
    }
    atomic_store(&k.stop, true);
    pthread_join(kt, NULL);
    cr_log_info("%d kills: %d imap items failed with their worker, %d done", k.kills, died, ok);
    cr_expect_gt(k.kills, 0);
    char why[ASYNC_FUTURE_MSG_MAX];
    cr_assert_eq(async_executor_error(ex, why, sizeof why), 0, "the storm broke the pool: %s", why);
    still_maps(ex);
    async_executor_shm_free(ex, sh);
    async_executor_free(ex);
    for (int i = 0; i < STORM_ROUNDS * STORM_JOBS; i++)
        cr_assert_eq(atomic_load(&storm_cb_runs[i]), 1, "callback %d ran %d times", i,
                     atomic_load(&storm_cb_runs[i]));
    cr_expect_eq(count_fds(), fds_before, "descriptors left open by the pool");
}
#endif
/* --- a lazy map over a pool that stops ------------------------------------------ */

static int slow_twice(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    usleep(300);
    return twice(in, in_size, out, out_size, ctx);
}

/* A lazy map from a source, its pool shut down (queued work cancelled)
 * after 10 results, or terminated.  Each later async_imap_next pulled
 * another chunk of items from the source, dropped them and returned
 * ASYNC_ECLOSED, for ever: the input was eaten, the chunks already queued
 * never yielded their outcomes, and the end never came.  Now nothing is
 * pulled once the pool is stopped: every item pulled is yielded once (its
 * result or ASYNC_ECANCELED), then ASYNC_ECLOSED once with a message saying
 * where the input was cut, then ASYNC_EEOF. */
static void imap_over_a_stopping_pool(async_backend_t backend, bool terminate, bool unordered)
{
    async_executor_t *ex = NULL;
    cr_assert_eq(async_executor_new(&ex, &(async_executor_opts_t){.backend = backend, .workers = 2}), 0);
    counted_t src = {0, 100000};
    async_imap_t im;
    async_imap_init(&im);
    im.fn = slow_twice, im.in_size = im.out_size = sizeof(int64_t);
    im.source = counted_source, im.source_arg = &src, im.chunksize = 3, im.unordered = unordered;
    async_imap_iter_t *it;
    cr_assert_eq(async_executor_imap(&it, ex, &im), 0);
    static bool seen[100000];
    memset(seen, 0, sizeof seen);
    int yielded = 0, closed = 0, r;
    for (int calls = 0;; calls++) {
        cr_assert_lt(calls, 2000, "async_imap_next never reached the end (%d ECLOSED, %lld pulled)",
                     closed, (long long)src.next);
        if (calls == 10) {
            if (terminate) cr_assert_eq(async_executor_terminate(ex), 0);
            else cr_assert_eq(async_executor_shutdown(ex, false, true), 0);
        }
        int64_t o = -1;
        size_t idx = SIZE_MAX;
        r = async_imap_next(it, &o, &idx);
        if (r == ASYNC_EEOF) break;
        if (r == ASYNC_ECLOSED) {
            cr_assert_eq(closed++, 0, "ASYNC_ECLOSED twice");
            cr_assert(strstr(async_imap_message(it), "stopped taking work"), "%s",
                      async_imap_message(it));
            continue;
        }
        cr_assert_eq(closed, 0, "an item after the pool's code");
        cr_assert_lt(idx, (size_t)src.next);
        cr_assert(!seen[idx], "item %zu twice", idx);
        seen[idx] = true;
        yielded++;
        if (r == 0) cr_assert_eq(o, 2 * (int64_t)idx);
        else cr_assert_eq(r, ASYNC_ECANCELED, "item %zu: %s (%s)", idx, async_strerror(r),
                          async_imap_message(it));
    }
    cr_expect_eq(closed, 1);
    cr_expect_eq(yielded, src.next, "%d items yielded of %lld pulled", yielded, (long long)src.next);
    cr_expect_eq(async_imap_next(it, NULL, NULL), ASYNC_EEOF, "the end stays the end");
    async_imap_free(it);
    async_executor_free(ex);
}

Test(map_interrupted, imap_over_a_pool_shut_down_loses_no_item, .timeout = 60)
{
    imap_over_a_stopping_pool(ASYNC_BACKEND_THREADS, false, false);
    imap_over_a_stopping_pool(ASYNC_BACKEND_THREADS, false, true);
    imap_over_a_stopping_pool(ASYNC_BACKEND_THREADS, true, false);
}

#if !defined(__SANITIZE_THREAD__)
Test(map_interrupted, imap_over_a_process_pool_terminated_loses_no_item, .timeout = 60)
{
    imap_over_a_stopping_pool(ASYNC_BACKEND_PROCESSES, true, false);
    imap_over_a_stopping_pool(ASYNC_BACKEND_PROCESSES, true, true);
    imap_over_a_stopping_pool(ASYNC_BACKEND_PROCESSES, false, false);
}
#endif
