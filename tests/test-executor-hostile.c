/* The thread executor attacked from outside (round 18): each test drives one
 * defect found by review to its symptom, and was seen to fail before its
 * fix.  Jobs are counted: none lost, none run twice, every future final once,
 * nothing leaked (the counting allocator is checked after every test). */
#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <async.h>
#include <async/executor.h>
#include <async/future.h>
#include "support/alloc.h"
#include "support/pool.h"
#include "support/teardown.h"

static void setup(void) { test_alloc_install(); }
static void teardown(void)
{
    TEARDOWN_CHECK_NO_LEAK();
    test_alloc_uninstall();
}
TestSuite(exec_hostile, .init = setup, .fini = teardown);

/* in: an int64 (or none: 7); out: in * 2, if there is room.  Counts its runs
 * in ctx (an atomic_long). */
static int twice(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    int64_t v = 7;
    if (in && in_size >= sizeof v) memcpy(&v, in, sizeof v);
    v *= 2;
    if (out && out_size >= sizeof v) memcpy(out, &v, sizeof v);
    atomic_fetch_add((atomic_long *)ctx, 1);
    return 0;
}

static void expect_twice(async_future_t *f, int64_t in)
{
    cr_assert_eq(async_future_wait(f), 0, "%s", async_future_message(f));
    const void *data;
    size_t size;
    cr_assert_eq(async_future_result(f, &data, &size), 0);
    cr_assert_geq(size, sizeof(int64_t));
    int64_t v;
    memcpy(&v, data, sizeof v);
    cr_expect_eq(v, in * 2);
}

/* --- a magazine left on a freed pool ------------------------------------- */

typedef struct {
    async_executor_t *old, *fresh;
    async_future_t **futures;
    size_t n;
    /* Made on the new pool by the swapping thread, for the submitter to
     * drop: lean jobs' futures, whose blocks then go to its magazine. */
    async_future_t *made[4];
    bool make;
    atomic_long *runs;
} swap_t;

static int mark_started(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in, (void)in_size, (void)out, (void)out_size;
    atomic_store((atomic_int *)ctx, 1);
    return 0;
}

/* Another thread drops the submitter's futures of the old pool (so that
 * they go back to the pool, not to the submitter's magazine), frees the old
 * pool and makes a lean one: its block pool is allocated right after the
 * old one's was freed, and malloc hands the same address back.  With make,
 * it also runs lean jobs there, and waits until its one worker has dropped
 * their executor references (it has taken the job queued after them), so
 * that the submitter's unref of each is the last. */
static void *swap_pools(void *arg)
{
    swap_t *s = arg;
    for (size_t i = 0; i < s->n; i++) async_future_unref(s->futures[i]);
    async_executor_free(s->old);
    s->fresh = test_thread_pool(1, 0);
    if (!s->make) return NULL;
    for (int i = 0; i < 4; i++) {
        int64_t in = 1000 + i;
        async_job_t j = {.fn = twice, .ctx = s->runs, .in = &in, .in_size = sizeof in,
                         .out_size = sizeof in};
        cr_assert_eq(async_executor_submit(&s->made[i], s->fresh, &j), 0);
    }
    atomic_int started = 0;
    async_future_t *last;
    async_job_t j = {.fn = mark_started, .ctx = &started};
    cr_assert_eq(async_executor_submit(&last, s->fresh, &j), 0);
    cr_assert_eq(async_future_wait(last), 0);
    async_future_unref(last);
    for (int i = 0; i < 4; i++) expect_twice(s->made[i], 1000 + i);
    return NULL;
}

/* One round: a bounded pool (no lean jobs: 192-byte blocks) whose first slab
 * this thread's magazine uses up, freed on another thread, which makes a
 * lean pool (128-byte blocks) in its place; then submits here that need a
 * whole 192-byte job between lean ones.  With make, this thread first drops
 * lean futures made there, so that their blocks reach its magazine by the
 * free path instead of a refill.  Returns the jobs it ran. */
static long pool_swap_round(int round, bool make, atomic_long *runs)
{
    async_executor_t *old = test_thread_pool(1, 1000);
    async_future_t *fs[8]; /* SLAB_MIN: the magazine's first slab, used up */
    for (int i = 0; i < 8; i++) {
        int64_t in = i;
        async_job_t j = {.fn = twice, .ctx = runs, .in = &in, .in_size = sizeof in,
                         .out_size = sizeof in};
        cr_assert_eq(async_executor_submit(&fs[i], old, &j), 0);
        expect_twice(fs[i], in);
    }
    swap_t s = {.old = old, .futures = fs, .n = 8, .make = make, .runs = runs};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, swap_pools, &s), 0);
    pthread_join(t, NULL);
    if (make) /* newest first: the magazine's head is the lowest block */
        for (int i = 3; i >= 0; i--) async_future_unref(s.made[i]);

    async_future_t *g[12];
    int64_t ins[12];
    for (int i = 0; i < 12; i++) {
        ins[i] = 100 * round + i;
        async_job_t j = {.fn = twice, .ctx = runs, .in = &ins[i], .in_size = sizeof ins[i],
                         .out_size = sizeof ins[i]};
        if (i % 3 == (make ? 0 : 1)) j.timeout_ns = ASYNC_SEC(30);
        if (i % 3 == 2) {
            /* Borrowed, with an output too big for a lean job. */
            j.borrow_input = true;
            j.out_size = 32;
        }
        cr_assert_eq(async_executor_submit(&g[i], s.fresh, &j), 0);
    }
    for (int i = 0; i < 12; i++) {
        expect_twice(g[i], ins[i]);
        async_future_unref(g[i]);
    }
    async_executor_free(s.fresh);
    return 8 + 12 + (make ? 4 : 0);
}

/* A thread that drained its magazine on a pool of 192-byte blocks (a
 * bounded thread pool's) keeps the magazine's pool pointer and block size
 * when that pool is freed on another thread.  When a lean pool's (128-byte
 * blocks) is then allocated at the same address, the magazine took it for
 * the same pool and refilled from it under the old block size, so a submit
 * whose future and job need 192 bytes (one with a time limit, or an input
 * and output too big for a lean job) was given a 128-byte block and wrote
 * 64 bytes into the next one: the link of the magazine's next free block,
 * so a later submit crashed (or two futures shared memory). */
Test(exec_hostile, a_magazine_outliving_its_pool_takes_a_new_pools_block_size, .timeout = 60)
{
    atomic_long runs = 0;
    long expected = 0;
    for (int round = 0; round < 20; round++) expected += pool_swap_round(round, false, &runs);
    cr_expect_eq(atomic_load(&runs), expected);
}

/* The same stale magazine filled by the free path: the futures of the new
 * pool's lean jobs, dropped last on this thread, went into it under the old
 * block size, and the next submit that needed 192 bytes took one of those
 * 128-byte blocks. */
Test(exec_hostile, blocks_freed_into_a_magazine_outliving_its_pool_keep_their_size, .timeout = 60)
{
    atomic_long runs = 0;
    long expected = 0;
    for (int round = 0; round < 20; round++) expected += pool_swap_round(round, true, &runs);
    cr_expect_eq(atomic_load(&runs), expected);
}

/* --- a callback on the deadline watchdog ---------------------------------- */

/* Sleeps until ctx (an atomic_int) is set, or 2 s. */
static int sleep_until_set(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in, (void)in_size, (void)out, (void)out_size;
    for (int i = 0; i < 2000 && !atomic_load((atomic_int *)ctx); i++) usleep(1000);
    return 0;
}

typedef struct {
    async_executor_t *ex;
    atomic_int release, shutdown_rc, terminate_rc, run_rc, called;
} expiry_t;

static int nothing(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in, (void)in_size, (void)out, (void)out_size, (void)ctx;
    return 0;
}

/* The callback of a future failed at its deadline: the thread backend runs
 * it on its watchdog, which the expired job's worker waits for before it
 * finishes the job. */
static void on_expired(async_future_t *f, void *arg)
{
    expiry_t *e = arg;
    cr_expect_eq(async_future_error(f), ASYNC_ETIMEDOUT);
    async_job_t j = {.fn = nothing};
    atomic_store(&e->run_rc, async_executor_run(e->ex, &j, NULL, NULL, NULL, 0));
    atomic_store(&e->shutdown_rc, async_executor_shutdown(e->ex, true, false));
    atomic_store(&e->terminate_rc, async_executor_terminate(e->ex));
    atomic_store(&e->called, 1);
}

/* The callback of a timed job's future runs on the deadline watchdog when
 * the deadline fails it.  The job's worker waits for that expiry to end
 * before it finishes the job, so a wait for the pool there (run, shutdown
 * with wait, terminate) waited for the worker that waited for it: the test
 * hung (free from there went on to free the watchdog's state under it).
 * The watchdog is one of the pool's own threads: each such call now
 * returns ASYNC_EDEADLK at once, as from a worker. */
Test(exec_hostile, waits_for_the_pool_from_the_deadline_watchdog_are_refused, .timeout = 20)
{
    expiry_t e = {.ex = test_thread_pool(1, 0)};
    async_job_t j = {.fn = sleep_until_set, .ctx = &e.release, .timeout_ns = ASYNC_MSEC(20)};
    async_future_t *f;
    cr_assert_eq(async_executor_submit(&f, e.ex, &j), 0);
    cr_assert_eq(async_future_on_done(f, on_expired, &e), 0);
    cr_assert_eq(async_future_wait(f), ASYNC_ETIMEDOUT);
    while (!atomic_load(&e.called)) usleep(1000);
    cr_expect_eq(atomic_load(&e.run_rc), ASYNC_EDEADLK);
    cr_expect_eq(atomic_load(&e.shutdown_rc), ASYNC_EDEADLK);
    cr_expect_eq(atomic_load(&e.terminate_rc), ASYNC_EDEADLK);
    atomic_store(&e.release, 1);
    async_future_unref(f);
    async_executor_free(e.ex);
}

static void free_on_expiry(async_future_t *f, void *arg)
{
    (void)f;
    async_executor_free(arg);
}

/* free from there is the programming error that free from a worker is
 * (executor.h): reported and stopped at once.  It waited for the worker
 * that waited for it (a hang), and would have gone on to free the
 * watchdog's state under the watchdog. */
Test(exec_hostile, free_from_the_deadline_watchdog_aborts, .timeout = 20, .signal = SIGABRT)
{
    atomic_int release = 0;
    async_executor_t *ex = test_thread_pool(1, 0);
    async_job_t j = {.fn = sleep_until_set, .ctx = &release, .timeout_ns = ASYNC_MSEC(20)};
    async_future_t *f;
    cr_assert_eq(async_executor_submit(&f, ex, &j), 0);
    cr_assert_eq(async_future_on_done(f, free_on_expiry, ex), 0);
    async_future_wait(f);
    sleep(10);
}

/* --- run giving up on a borrowed input --------------------------------- */

typedef struct {
    atomic_int started, open;
    atomic_int seen;
} reader_t;

/* Once the gate opens, reads its one input byte into ctx's `seen`. */
static int read_late(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out, (void)out_size;
    reader_t *r = ctx;
    atomic_store(&r->started, 1);
    while (!atomic_load(&r->open)) usleep(500);
    atomic_store(&r->seen, *(const unsigned char *)in);
    return 0;
}

/* async_executor_run_dl returns at its deadline without waiting for a job
 * that runs on, and says the caller may then release all but ctx.  With
 * borrow_input the running job still read the caller's input after the
 * call returned: here it read the byte the caller wrote there afterwards
 * (released memory, in a real program).  A call that can give up now
 * copies the input, as a job with a time limit always does. */
Test(exec_hostile, a_run_that_gives_up_leaves_no_job_reading_the_borrowed_input, .timeout = 20)
{
    async_executor_t *ex = test_thread_pool(1, 0);
    reader_t rd = {0};
    unsigned char *buf = malloc(16);
    cr_assert_not_null(buf);
    memset(buf, 0x11, 16);
    async_job_t j = {.fn = read_late, .ctx = &rd, .in = buf, .in_size = 16, .borrow_input = true};
    char msg[64];
    int r = async_executor_run_dl(ex, &j, NULL, NULL, msg, sizeof msg,
                                  async_deadline_after(ASYNC_MSEC(100)));
    cr_assert_eq(r, ASYNC_ETIMEDOUT, "%s", async_strerror(r));
    cr_assert(atomic_load(&rd.started), "the job was still queued at the deadline");
    memset(buf, 0x22, 16); /* the caller's memory is its own again */
    atomic_store(&rd.open, 1);
    async_executor_shutdown(ex, true, false);
    cr_expect_eq(atomic_load(&rd.seen), 0x11, "the job read 0x%x", (unsigned)atomic_load(&rd.seen));
    free(buf);
    async_executor_free(ex);
}

/* --- an empty map whose caller helps ------------------------------------ */

/* A map of no items has no chunk and no ticket: its state ends before the
 * first ticket.  With caller_runs the caller's help read that ticket's
 * deadline all the same, past the end of the map's allocation (the
 * AddressSanitizer build reports it); it has nothing to run. */
Test(exec_hostile, an_empty_map_with_caller_runs_reads_no_ticket, .timeout = 20)
{
    async_executor_opts_t o;
    async_executor_opts_init(&o);
    o.workers = 1;
    o.caller_runs = true;
    async_executor_t *ex;
    cr_assert_eq(async_executor_new(&ex, &o), 0);
    atomic_long runs = 0;
    async_map_t m;
    async_map_init(&m);
    m.fn = twice;
    m.ctx = &runs;
    m.timeout_ns = ASYNC_SEC(5);
    async_map_error_t err;
    cr_expect_eq(async_executor_map(ex, &m, &err), 0);
    cr_expect_eq(atomic_load(&runs), 0);
    async_executor_free(ex);
}

/* --- every submit kind racing a shutdown that cancels -------------------- */

#define STORM_SUBMITTERS 2
#define STORM_ROUNDS 600
#define STORM_IDS (STORM_SUBMITTERS * STORM_ROUNDS * 4)

typedef struct storm {
    async_executor_t *ex;
    atomic_int runs[STORM_IDS];
    atomic_int finals[STORM_IDS]; /* per future: its first id's slot */
    atomic_int go, submitted;
} storm_t;

typedef struct {
    storm_t *st;
    int who;
    async_future_t *fs[STORM_ROUNDS * 4];
    int first_id[STORM_ROUNDS * 4], ids[STORM_ROUNDS * 4];
    bool is_map[STORM_ROUNDS * 4];
    int nfs;
    int refused[STORM_ROUNDS * 4], nrefused; /* ids whose submit failed */
    int32_t ins[STORM_ROUNDS * 4]; /* a map's input, read until it is final */
} storm_sub_t;

static int storm_work(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    storm_t *st = ctx;
    int32_t id;
    cr_assert_geq(in_size, sizeof id);
    memcpy(&id, in, sizeof id);
    atomic_fetch_add(&st->runs[id], 1);
    if (out && out_size >= sizeof id) memcpy(out, &id, sizeof id);
    return 0;
}

static void storm_final(async_future_t *f, void *arg)
{
    (void)f;
    atomic_fetch_add((atomic_int *)arg, 1);
}

static void storm_keep(storm_sub_t *s, async_future_t *f, int id, int n, bool map)
{
    s->fs[s->nfs] = f;
    s->first_id[s->nfs] = id;
    s->ids[s->nfs] = n;
    s->is_map[s->nfs] = map;
    s->nfs++;
    cr_assert_eq(async_future_on_done(f, storm_final, &s->st->finals[id]), 0);
}

static void *storm_submitter(void *arg)
{
    storm_sub_t *s = arg;
    storm_t *st = s->st;
    while (!atomic_load(&st->go)) sched_yield();
    int32_t *ins = s->ins;
    for (int i = 0; i < STORM_ROUNDS; i++) {
        int base = (s->who * STORM_ROUNDS + i) * 4;
        for (int k = 0; k < 4; k++) ins[i * 4 + k] = base + k;
        async_job_t j = {.fn = storm_work, .ctx = st, .in = &ins[i * 4], .in_size = sizeof(int32_t),
                         .out_size = sizeof(int32_t)};
        async_future_t *f = NULL;
        int r, n = 1;
        switch (i % 5) {
        case 0: r = async_executor_submit(&f, st->ex, &j); break; /* lean */
        case 1: j.timeout_ns = ASYNC_SEC(20); r = async_executor_submit(&f, st->ex, &j); break;
        case 2: j.priority = 1 + i % 3; r = async_executor_submit(&f, st->ex, &j); break;
        case 3: {
            async_job_t b[3] = {j, j, j};
            for (int k = 0; k < 3; k++) b[k].in = &ins[i * 4 + k];
            b[1].priority = 2;
            b[2].timeout_ns = ASYNC_SEC(20);
            async_future_t *bf[3];
            r = async_executor_submit_batch(bf, st->ex, b, 3);
            atomic_fetch_add(&st->submitted, 1);
            if (!r)
                for (int k = 0; k < 3; k++) storm_keep(s, bf[k], base + k, 1, false);
            else
                for (int k = 0; k < 3; k++) s->refused[s->nrefused++] = base + k;
            continue;
        }
        default: {
            static int32_t sink[STORM_SUBMITTERS][STORM_ROUNDS][4];
            async_map_t m;
            async_map_init(&m);
            m.fn = storm_work;
            m.ctx = st;
            m.in = &ins[i * 4];
            m.in_size = sizeof(int32_t);
            m.out = sink[s->who][i];
            m.out_size = sizeof(int32_t);
            m.n = 4;
            m.chunksize = 1;
            r = async_executor_map_async(&f, st->ex, &m, NULL, NULL, NULL);
            n = 4;
            break;
        }
        }
        atomic_fetch_add(&st->submitted, 1);
        if (!r) {
            storm_keep(s, f, base, n, n > 1);
        } else {
            cr_assert_eq(r, ASYNC_ECLOSED, "%s", async_strerror(r));
            for (int k = 0; k < n; k++) s->refused[s->nrefused++] = base + k;
        }
    }
    return NULL;
}

/* Lean, timed, prioritised, batched and mapped submits from two threads
 * while another shuts the pool down cancelling what is queued: every
 * future an accepted submit returned ends final exactly once (its callback
 * runs once), a DONE one's jobs ran exactly once, a cancelled one's never,
 * a refused submit's never, and no job ran twice. */
Test(exec_hostile, every_submit_kind_racing_a_cancelling_shutdown_is_counted, .timeout = 120)
{
    for (int round = 0; round < 4; round++) {
        storm_t *st = calloc(1, sizeof *st);
        cr_assert_not_null(st);
        st->ex = test_thread_pool(2, 0);
        storm_sub_t *subs = calloc(STORM_SUBMITTERS, sizeof *subs);
        cr_assert_not_null(subs);
        pthread_t t[STORM_SUBMITTERS];
        for (int i = 0; i < STORM_SUBMITTERS; i++) {
            subs[i].st = st;
            subs[i].who = i;
            cr_assert_eq(pthread_create(&t[i], NULL, storm_submitter, &subs[i]), 0);
        }
        atomic_store(&st->go, 1);
        /* The shutdown lands at a different point of the stream each round. */
        while (atomic_load(&st->submitted) < 100 + 250 * round) sched_yield();
        cr_assert_eq(async_executor_shutdown(st->ex, false, true), 0);
        for (int i = 0; i < STORM_SUBMITTERS; i++) pthread_join(t[i], NULL);
        for (int i = 0; i < STORM_SUBMITTERS; i++) {
            storm_sub_t *s = &subs[i];
            for (int k = 0; k < s->nrefused; k++)
                cr_expect_eq(atomic_load(&st->runs[s->refused[k]]), 0, "refused id %d ran",
                             s->refused[k]);
            for (int k = 0; k < s->nfs; k++) {
                async_future_t *f = s->fs[k];
                cr_assert_neq(async_future_wait_dl(f, async_deadline_after(ASYNC_SEC(30))),
                              ASYNC_ETIMEDOUT, "future of id %d never final", s->first_id[k]);
                int e = async_future_error(f);
                for (int id = s->first_id[k]; id < s->first_id[k] + s->ids[k]; id++) {
                    int runs = atomic_load(&st->runs[id]);
                    if (e == 0) cr_expect_eq(runs, 1, "id %d: DONE, ran %d times", id, runs);
                    else if (!s->is_map[k] && e == ASYNC_ECANCELED)
                        cr_expect_eq(runs, 0, "id %d: cancelled, ran %d times", id, runs);
                    else cr_expect_leq(runs, 1, "id %d ran %d times", id, runs);
                }
                cr_expect(e == 0 || e == ASYNC_ECANCELED, "id %d: %s", s->first_id[k],
                          async_strerror(e));
            }
        }
        async_executor_free(st->ex);
        for (int i = 0; i < STORM_SUBMITTERS; i++)
            for (int k = 0; k < subs[i].nfs; k++) {
                cr_expect_eq(atomic_load(&st->finals[subs[i].first_id[k]]), 1,
                             "id %d's callback ran %d times", subs[i].first_id[k],
                             atomic_load(&st->finals[subs[i].first_id[k]]));
                async_future_unref(subs[i].fs[k]);
            }
        free(subs);
        free(st);
    }
}
