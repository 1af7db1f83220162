/* Races on the thread executor's fast paths: a plain submit (no deadline)
 * that its worker starts and finishes inline, the future taken off the
 * submitting thread's magazine, the last unref that frees inline.  Each test
 * runs many rounds in which the submitter, a waiter, a callback, a cancel or
 * the executor's free reaches the future at a random point of its worker's
 * start and finish (random spins with sched_yield on both sides), and checks
 * what each side saw.  They catch, besides their own assertions, what the
 * sanitizer builds see: a worker that writes into a future (or its slab, or
 * the executor) already freed, a reference dropped twice or never (the
 * counting allocator checks for leaks after every test).  Run them under
 * SANITIZE=thread and SANITIZE=address,undefined too. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <async.h>
#include <async/executor.h>
#include <async/future.h>
#include "support/alloc.h"
#include "support/jitter.h"
#include "support/pool.h"
#include "support/teardown.h"

static void setup(void) { test_alloc_install(); }
static void teardown(void)
{
    TEARDOWN_CHECK_NO_LEAK();
    test_alloc_uninstall();
}
TestSuite(exec_races, .init = setup, .fini = teardown);

/* Sanitizers slow every round by 5-20 times: fewer rounds keep each test
 * well inside its timeout there. */
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define ROUNDS 1500
#else
#define ROUNDS 6000
#endif

/* A random delay of 0 to about a microsecond, sometimes a yield: enough to
 * land on either side of a worker's few-instruction finish. */
static void jitter(void) { test_jitter(8, 200); }

/* in: an int64; out: in * 3 + 1, after a jitter.  Counts its runs in ctx
 * (an atomic_long), if given. */
static int triple(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    if (in_size != sizeof(int64_t) || out_size != sizeof(int64_t)) return ASYNC_EINVAL;
    jitter();
    int64_t v;
    memcpy(&v, in, sizeof v);
    v = v * 3 + 1;
    memcpy(out, &v, sizeof v);
    if (ctx) atomic_fetch_add((atomic_long *)ctx, 1);
    return 0;
}

static int64_t result_of(async_future_t *f)
{
    const void *data;
    size_t size;
    int r = async_future_result(f, &data, &size);
    cr_assert_eq(r, 0, "result: %s", async_strerror(r));
    cr_assert_eq(size, sizeof(int64_t));
    int64_t v;
    memcpy(&v, data, sizeof v);
    return v;
}

static async_future_t *submit_triple(async_executor_t *ex, int64_t *v, void *ctx)
{
    async_job_t job = {.fn = triple, .in = v, .in_size = sizeof *v, .out_size = sizeof *v,
                       .ctx = ctx};
    async_future_t *f;
    int r = async_executor_submit(&f, ex, &job);
    cr_assert_eq(r, 0, "submit: %s", async_strerror(r));
    return f;
}

/* The submitter lets go before, while or after the worker's inline finish:
 * the last reference is dropped on either thread, and the block goes to
 * whichever magazine or pool list fits.  A block freed twice, or written by
 * a worker after the submitter's unref freed it, is what ASan reports; a
 * reference dropped twice makes a block come back twice, and the leak check
 * sees a reference never dropped. */
Test(exec_races, unref_races_the_inline_finish, .timeout = 20)
{
    async_executor_t *ex = test_thread_pool(2, 0);
    atomic_long runs = 0;
    for (int i = 0; i < ROUNDS; i++) {
        int64_t v = i;
        async_future_t *f = submit_triple(ex, &v, &runs);
        switch (test_rnd() % 3) {
        case 0: /* before it runs, most often */
            break;
        case 1: /* while it runs or finishes */
            jitter();
            break;
        case 2: /* after: the result is there until the unref */
            cr_assert_eq(async_future_wait(f), 0);
            cr_assert_eq(result_of(f), v * 3 + 1);
            break;
        }
        async_future_unref(f);
    }
    /* Shutdown without cancelling: every job runs, whoever held its future. */
    cr_assert_eq(async_executor_shutdown(ex, true, false), 0);
    cr_expect_eq(atomic_load(&runs), ROUNDS);
    async_executor_free(ex);
}

/* A callback added at a random point of the finish runs exactly once, sees
 * the result, and owns the submitter's reference: it drops it on whichever
 * thread runs it (the worker, from inside the finish, or the submitter). */
typedef struct {
    atomic_int calls;
    int64_t want;
    atomic_bool right;
} cb_slot_t;

static void on_done_unref(async_future_t *f, void *arg)
{
    cb_slot_t *s = arg;
    atomic_fetch_add(&s->calls, 1);
    const void *data;
    size_t size;
    int64_t v = 0;
    if (async_future_result(f, &data, &size) == 0 && size == sizeof v) memcpy(&v, data, sizeof v);
    atomic_store(&s->right, async_future_state(f) == ASYNC_FUTURE_DONE && v == s->want);
    async_future_unref(f);
}

Test(exec_races, callbacks_added_during_the_inline_finish_run_once, .timeout = 20)
{
    async_executor_t *ex = test_thread_pool(2, 0);
    cb_slot_t *slots = calloc(ROUNDS, sizeof *slots);
    for (int i = 0; i < ROUNDS; i++) {
        int64_t v = i;
        slots[i].want = v * 3 + 1;
        async_future_t *f = submit_triple(ex, &v, NULL);
        if (test_rnd() & 1) jitter();
        cr_assert_eq(async_future_on_done(f, on_done_unref, &slots[i]), 0);
    }
    cr_assert_eq(async_executor_shutdown(ex, true, false), 0);
    for (int i = 0; i < ROUNDS; i++) {
        cr_assert_eq(atomic_load(&slots[i].calls), 1, "round %d: %d calls", i,
                     atomic_load(&slots[i].calls));
        cr_assert(atomic_load(&slots[i].right), "round %d: the callback saw no result", i);
    }
    free(slots);
    async_executor_free(ex);
}

/* Thread waiters that arrive before, during and after the inline finish
 * (spinning, then sleeping on the futex): each is released with the
 * result, none sleeps on (the test's timeout would catch a lost wake-up).
 * The last of the three to let go frees the future. */
typedef struct {
    async_future_t *_Atomic f;
    atomic_int round;
    atomic_int done_round;
    atomic_bool bad;
    int waiter;
} waiters_t;

static void *wait_rounds(void *arg)
{
    waiters_t *w = arg;
    for (int i = 0; i < ROUNDS; i++) {
        while (atomic_load(&w->round) < i) sched_yield();
        async_future_t *f = atomic_load(&w->f);
        jitter();
        if (async_future_wait(f) != 0 || result_of(f) != (int64_t)i * 3 + 1) atomic_store(&w->bad, true);
        async_future_unref(f);
        atomic_fetch_add(&w->done_round, 1);
    }
    return NULL;
}

Test(exec_races, waiters_arriving_during_the_inline_finish_wake, .timeout = 30)
{
    async_executor_t *ex = test_thread_pool(2, 0);
    enum { WAITERS = 2 };
    waiters_t w = {.round = -1};
    pthread_t th[WAITERS];
    for (int k = 0; k < WAITERS; k++) cr_assert_eq(pthread_create(&th[k], NULL, wait_rounds, &w), 0);
    for (int i = 0; i < ROUNDS; i++) {
        int64_t v = i;
        async_future_t *f = submit_triple(ex, &v, NULL);
        for (int k = 0; k < WAITERS; k++) async_future_ref(f);
        atomic_store(&w.f, f);
        atomic_store(&w.round, i);
        jitter();
        cr_assert_eq(async_future_wait(f), 0);
        cr_assert_eq(result_of(f), v * 3 + 1);
        async_future_unref(f);
        while (atomic_load(&w.done_round) < (i + 1) * WAITERS) sched_yield();
    }
    for (int k = 0; k < WAITERS; k++) pthread_join(th[k], NULL);
    cr_expect(!atomic_load(&w.bad), "a waiter saw no result, or the wrong one");
    async_executor_free(ex);
}

/* Tasks on one loop that submit and await, while the loop thread also
 * drops futures it never awaited: the listener a task adds races the
 * worker's inline finish. */
typedef struct {
    async_executor_t *ex;
    int i;
    bool right;
} task_arg_t;

static int submit_and_await(void *arg, void **result)
{
    (void)result;
    task_arg_t *a = arg;
    for (int k = 0; k < 20; k++) {
        int64_t v = a->i * 100 + k;
        async_future_t *f = submit_triple(a->ex, &v, NULL);
        if (test_rnd() & 1) jitter();
        int r = async_future_await(f);
        a->right = r == 0 && result_of(f) == v * 3 + 1;
        async_future_unref(f);
        if (!a->right) break;
    }
    return 0;
}

Test(exec_races, tasks_awaiting_during_the_inline_finish, .timeout = 30)
{
    async_executor_t *ex = test_thread_pool(2, 0);
    async_loop_t *loop;
    cr_assert_eq(async_loop_new(&loop), 0);
    enum { N = ROUNDS / 20 };
    task_arg_t *a = calloc(N, sizeof *a);
    async_task_t *h = calloc(N, sizeof *h);
    for (int i = 0; i < N; i++) {
        a[i] = (task_arg_t){ex, i, false};
        cr_assert_eq(async_task_spawn(&h[i], loop, submit_and_await, &a[i], NULL), 0);
    }
    cr_expect_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    for (int i = 0; i < N; i++) cr_expect(a[i].right, "task %d saw no result, or the wrong one", i);
    cr_expect_eq(async_loop_destroy(loop), 0);
    free(a);
    free(h);
    async_executor_free(ex);
}

/* A cancel at a random point of the worker's start: it wins exactly when
 * the job never runs.  The job's own flag says whether it ran; a start that
 * ran a cancelled job, or a cancel that reported success on a started one,
 * breaks the equivalence. */
static int mark_ran(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out, (void)out_size;
    int i;
    memcpy(&i, in, sizeof i);
    atomic_store(&((atomic_bool *)ctx)[i], true);
    jitter();
    return 0;
}

Test(exec_races, cancel_races_the_inline_start, .timeout = 20)
{
    async_executor_t *ex = test_thread_pool(2, 0);
    atomic_bool *ran = calloc(ROUNDS, sizeof *ran);
    bool *won = calloc(ROUNDS, sizeof *won);
    async_future_t **fs = calloc(ROUNDS, sizeof *fs);
    for (int i = 0; i < ROUNDS; i++) {
        async_job_t job = {.fn = mark_ran, .in = &i, .in_size = sizeof i, .ctx = ran};
        cr_assert_eq(async_executor_submit(&fs[i], ex, &job), 0);
        if (test_rnd() & 1) jitter();
        int r = async_future_cancel(fs[i]);
        cr_assert(r == 0 || r == ASYNC_EBUSY || r == ASYNC_EDONE, "cancel: %s", async_strerror(r));
        won[i] = r == 0;
        if (test_rnd() & 1) { /* sometimes the submitter lets go at once */
            async_future_unref(fs[i]);
            fs[i] = NULL;
        }
    }
    cr_assert_eq(async_executor_shutdown(ex, true, false), 0);
    int cancelled = 0;
    for (int i = 0; i < ROUNDS; i++) {
        cr_assert_eq(atomic_load(&ran[i]), !won[i], "round %d: cancel %s but the job %s", i,
                     won[i] ? "won" : "lost", atomic_load(&ran[i]) ? "ran" : "did not run");
        cancelled += won[i];
        if (!fs[i]) continue;
        cr_assert_eq(async_future_state(fs[i]), won[i] ? ASYNC_FUTURE_CANCELLED : ASYNC_FUTURE_DONE);
        async_future_unref(fs[i]);
    }
    cr_log_info("%d of %d cancels won", cancelled, ROUNDS);
    free(ran);
    free(won);
    free(fs);
    async_executor_free(ex);
}

/* The executor freed while plain submits are queued, running and finishing,
 * some futures already dropped: the free cancels the queued ones and joins
 * the workers, so no worker touches the executor, the future or its slab
 * afterwards; the futures kept outlive the executor with their outcome and
 * are freed last, on another thread, which frees the last slab and the
 * pool. */
typedef struct {
    async_future_t **fs;
    int64_t *want;
    int n;
    int bad;
} outlive_t;

static void *drop_outliving(void *arg)
{
    outlive_t *o = arg;
    for (int i = o->n - 1; i >= 0; i--) { /* another order than the submits' */
        if (!o->fs[i]) continue;
        async_future_state_t s = async_future_state(o->fs[i]);
        if (s == ASYNC_FUTURE_DONE) o->bad += result_of(o->fs[i]) != o->want[i];
        else o->bad += s != ASYNC_FUTURE_CANCELLED;
        async_future_unref(o->fs[i]);
    }
    return NULL;
}

Test(exec_races, free_with_plain_submits_in_flight, .timeout = 30)
{
    enum { BATCH = 64 };
    int rounds = ROUNDS / BATCH * 4;
    async_future_t *fs[BATCH];
    int64_t want[BATCH];
    for (int r = 0; r < rounds; r++) {
        async_executor_t *ex = test_thread_pool(1 + (unsigned)(r & 1), 0);
        for (int i = 0; i < BATCH; i++) {
            int64_t v = r * BATCH + i;
            want[i] = v * 3 + 1;
            fs[i] = submit_triple(ex, &v, NULL);
            if ((test_rnd() & 3) == 0) {
                async_future_unref(fs[i]);
                fs[i] = NULL;
            }
        }
        jitter();
        async_executor_free(ex);
        outlive_t o = {fs, want, BATCH, 0};
        pthread_t th;
        cr_assert_eq(pthread_create(&th, NULL, drop_outliving, &o), 0);
        pthread_join(th, NULL);
        cr_assert_eq(o.bad, 0, "round %d: %d futures neither done right nor cancelled", r, o.bad);
        cr_assert_eq(test_alloc_live(), 0, "round %d: %ld allocations left", r, test_alloc_live());
    }
}

/* Jobs that submit a child to their own executor: the child's future comes
 * off the worker's magazine, and the worker's finish of the child (or the
 * parent's unref) puts it back there.  Half the children are dropped at
 * once, half are handed to the main thread, which waits for them.  The
 * free then finds every block home: the workers' magazines go back to the
 * pool when they exit. */
typedef struct {
    async_executor_t *ex;
    async_future_t **kids;
    atomic_long kid_runs;
} family_t;

static int parent(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out, (void)out_size;
    family_t *fam = ctx;
    int i;
    memcpy(&i, in, sizeof i);
    int64_t v = i;
    async_job_t job = {.fn = triple, .in = &v, .in_size = sizeof v, .out_size = sizeof v,
                       .ctx = &fam->kid_runs};
    async_future_t *kid;
    int r = async_executor_submit(&kid, fam->ex, &job);
    if (r) return r;
    jitter();
    if (i & 1) async_future_unref(kid);
    else fam->kids[i] = kid;
    return 0;
}

Test(exec_races, submits_from_inside_jobs_use_the_workers_magazines, .timeout = 30)
{
    async_executor_t *ex = test_thread_pool(2, 0);
    family_t fam = {ex, calloc(ROUNDS, sizeof(async_future_t *)), 0};
    async_future_t **parents = calloc(ROUNDS, sizeof *parents);
    for (int i = 0; i < ROUNDS; i++) {
        async_job_t job = {.fn = parent, .in = &i, .in_size = sizeof i, .ctx = &fam};
        cr_assert_eq(async_executor_submit(&parents[i], ex, &job), 0);
    }
    cr_assert_eq(async_futures_wait(parents, ROUNDS, ASYNC_WAIT_ALL, NULL), 0);
    for (int i = 0; i < ROUNDS; i++) {
        cr_assert_eq(async_future_error(parents[i]), 0);
        async_future_unref(parents[i]);
        if (i & 1) continue;
        cr_assert_eq(async_future_wait(fam.kids[i]), 0);
        cr_assert_eq(result_of(fam.kids[i]), (int64_t)i * 3 + 1);
        async_future_unref(fam.kids[i]);
    }
    cr_assert_eq(async_executor_shutdown(ex, true, false), 0);
    cr_expect_eq(atomic_load(&fam.kid_runs), ROUNDS);
    async_executor_free(ex);
    free(fam.kids);
    free(parents);
}

/* Plain submits mixed with prioritised ones, with deadlines (the general,
 * contested path) and through a bounded queue, from two threads at once:
 * every job runs once and its future holds its own result. */
typedef struct {
    async_executor_t *ex;
    int base;
    atomic_long *runs;
    int bad;
} mixer_t;

static void *mix(void *arg)
{
    mixer_t *m = arg;
    enum { BATCH = 32 };
    async_future_t *fs[BATCH];
    int64_t in[BATCH];
    for (int r = 0; r < ROUNDS / BATCH; r++) {
        for (int i = 0; i < BATCH; i++) {
            in[i] = m->base + r * BATCH + i;
            uint64_t x = test_rnd();
            async_job_t job = {.fn = triple, .in = &in[i], .in_size = sizeof in[i],
                               .out_size = sizeof in[i], .ctx = m->runs,
                               .priority = (x & 3) == 0 ? (int)(x >> 8) % 5 - 2 : 0,
                               .timeout_ns = (x & 12) == 0 ? ASYNC_SEC(60) : 0};
            if (async_executor_submit(&fs[i], m->ex, &job) != 0) {
                m->bad++;
                fs[i] = NULL;
            }
        }
        for (int i = 0; i < BATCH; i++) {
            if (!fs[i]) continue;
            if (async_future_wait(fs[i]) != 0 || result_of(fs[i]) != in[i] * 3 + 1) m->bad++;
            async_future_unref(fs[i]);
        }
    }
    return NULL;
}

static void mixed(size_t max_queued)
{
    async_executor_t *ex = test_thread_pool(2, max_queued);
    atomic_long runs = 0;
    mixer_t m[2] = {{ex, 0, &runs, 0}, {ex, 1 << 20, &runs, 0}};
    pthread_t th[2];
    for (int k = 0; k < 2; k++) cr_assert_eq(pthread_create(&th[k], NULL, mix, &m[k]), 0);
    for (int k = 0; k < 2; k++) pthread_join(th[k], NULL);
    cr_expect_eq(m[0].bad + m[1].bad, 0, "%d jobs failed or gave the wrong result", m[0].bad + m[1].bad);
    cr_expect_eq(atomic_load(&runs), 2 * (ROUNDS / 32 * 32));
    async_executor_free(ex);
}

Test(exec_races, priorities_and_deadlines_mixed_with_plain_submits, .timeout = 30) { mixed(0); }
Test(exec_races, bounded_queue_mixed_with_plain_submits, .timeout = 30) { mixed(8); }

/* Deadlines that expire around the job's end: the watchdog's expiry, the
 * worker's late finish and the submitter's unref race on the contested
 * (claiming) path, next to plain submits on the inline one.  Each future
 * ends DONE with its result or FAILED with ASYNC_ETIMEDOUT, never both or
 * neither; the leak check sees a reference dropped wrong. */
Test(exec_races, deadlines_expiring_beside_plain_submits, .timeout = 30)
{
    async_executor_t *ex = test_thread_pool(2, 0);
    enum { BATCH = 16 };
    async_future_t *fs[BATCH];
    int64_t in[BATCH];
    int done = 0, expired = 0;
    for (int r = 0; r < ROUNDS / BATCH; r++) {
        for (int i = 0; i < BATCH; i++) {
            in[i] = r * BATCH + i;
            uint64_t x = test_rnd();
            async_job_t job = {.fn = triple, .in = &in[i], .in_size = sizeof in[i],
                               .out_size = sizeof in[i],
                               .timeout_ns = (x & 1) ? (int64_t)(x >> 8) % 20000 + 1 : 0};
            cr_assert_eq(async_executor_submit(&fs[i], ex, &job), 0);
            if ((x & 6) == 0) { /* let go at once: the worker or watchdog frees it */
                async_future_unref(fs[i]);
                fs[i] = NULL;
            }
        }
        for (int i = 0; i < BATCH; i++) {
            if (!fs[i]) continue;
            int e = async_future_wait(fs[i]);
            if (e == 0) {
                cr_assert_eq(result_of(fs[i]), in[i] * 3 + 1);
                done++;
            } else {
                cr_assert_eq(e, ASYNC_ETIMEDOUT, "round %d: %s", r, async_strerror(e));
                cr_assert_eq(async_future_state(fs[i]), ASYNC_FUTURE_FAILED);
                expired++;
            }
            async_future_unref(fs[i]);
        }
    }
    cr_log_info("%d done, %d expired", done, expired);
    async_executor_free(ex);
}

/* Two threads submit single jobs while the main thread shuts the pool down
 * (with and without cancelling what is queued, without waiting) at a random
 * point.  A lone submit to an unbounded pool is queued before it looks at
 * the pool's state, so one that races the stop must still end one of two
 * ways: ASYNC_ECLOSED with *out untouched, or 0 with a future that becomes
 * final (run, or cancelled by the shutdown).  A job stranded in the queue
 * after the workers left would leave its future pending (the wait below
 * times out) and its block unfreed (the leak check). */
typedef struct {
    async_executor_t *ex;
    async_future_t *fs[256];
    int n, closed, other;
} racer_t;

static void *race_submits(void *arg)
{
    racer_t *rc = arg;
    for (int i = 0; i < 256; i++) {
        int64_t v = i;
        async_job_t job = {.fn = triple, .in = &v, .in_size = sizeof v, .out_size = sizeof v};
        async_future_t *f = (async_future_t *)rc;
        int r = async_executor_submit(&f, rc->ex, &job);
        if (r == 0) rc->fs[rc->n++] = f;
        else if (r == ASYNC_ECLOSED && f == (async_future_t *)rc) rc->closed++;
        else rc->other++;
        if ((test_rnd() & 15) == 0) jitter();
    }
    return NULL;
}

Test(exec_races, lone_submits_racing_a_shutdown_end_closed_or_final, .timeout = 60)
{
    int rounds = ROUNDS / 40;
    long closed = 0, cancelled = 0;
    for (int r = 0; r < rounds; r++) {
        async_executor_t *ex = test_thread_pool(1 + (unsigned)(r & 1), 0);
        racer_t rc[2] = {{.ex = ex}, {.ex = ex}};
        pthread_t th[2];
        for (int t = 0; t < 2; t++) cr_assert_eq(pthread_create(&th[t], NULL, race_submits, &rc[t]), 0);
        for (volatile unsigned i = 0, n = (unsigned)(test_rnd() % 20000); i < n; i++) {
        }
        cr_assert_eq(async_executor_shutdown(ex, false, (r & 2) != 0), 0);
        for (int t = 0; t < 2; t++) pthread_join(th[t], NULL);
        for (int t = 0; t < 2; t++) {
            cr_assert_eq(rc[t].other, 0, "round %d: a submit failed otherwise", r);
            closed += rc[t].closed;
            for (int i = 0; i < rc[t].n; i++) {
                async_future_t *f = rc[t].fs[i];
                int w = async_future_wait_dl(f, async_deadline_after(ASYNC_SEC(10)));
                cr_assert(async_future_done(f), "round %d: an accepted submit's future stayed pending", r);
                cr_assert(w == 0 || w == ASYNC_ECANCELED, "round %d: %s", r, async_strerror(w));
                cancelled += w == ASYNC_ECANCELED;
                async_future_unref(f);
            }
        }
        async_executor_free(ex);
        cr_assert_eq(test_alloc_live(), 0, "round %d: %ld allocations left", r, test_alloc_live());
    }
    cr_log_info("%d rounds: %ld submits closed, %ld accepted and cancelled", rounds, closed, cancelled);
}
