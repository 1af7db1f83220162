/* async_to_thread: a function of the caller's on the process's default
 * thread pool, from a plain thread (the call blocks) and from a task (only
 * the task waits, the loop's other tasks run on), many calls at once on
 * every thread of the pool, and giving up: a queued call is cancelled and
 * never runs, a running one is waited for before the call returns.  No
 * counting allocator here: the default pool lives until the process exits,
 * past any one test. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>
#include <async.h>
#include <async/executor.h>

#define MS ASYNC_MSEC(1)

TestSuite(to_thread, .timeout = 30);

static unsigned pool_size(void)
{
    unsigned n = async_cpu_count() + 4;
    return n > 32 ? 32 : n;
}

static void *plus_one(void *arg) { return (char *)arg + 1; }

/* Waits until *arg (an _Atomic int gate) opens; returns the thread's id. */
typedef struct gate {
    _Atomic int running, open, finished;
} gate_t;

static void *wait_gate(void *arg)
{
    gate_t *g = arg;
    atomic_fetch_add(&g->running, 1);
    while (!atomic_load(&g->open)) usleep(200);
    atomic_fetch_add(&g->finished, 1);
    return (void *)(uintptr_t)0x5eed;
}

Test(to_thread, from_a_thread)
{
    char buf[2];
    void *r = NULL;
    cr_expect_eq(async_to_thread(plus_one, buf, &r), 0);
    cr_expect_eq(r, buf + 1);
    cr_expect_eq(async_to_thread(plus_one, buf, NULL), 0, "result may be NULL");
    cr_expect_eq(async_to_thread(NULL, buf, &r), ASYNC_EINVAL);
}

typedef struct {
    gate_t g;
    int rc, seen;
    void *result;
    int ticks;
    async_task_t caller;
    bool cancel;
} scene_t;

static int caller(void *arg, void **res)
{
    (void)res;
    scene_t *s = arg;
    s->rc = async_to_thread(wait_gate, &s->g, &s->result);
    return 0;
}

/* Runs while the caller waits: takes turns on the loop, then opens the gate
 * (after cancelling the caller, when asked). */
static int other(void *arg, void **res)
{
    (void)res;
    scene_t *s = arg;
    while (!atomic_load(&s->g.running)) async_sleep(MS);
    if (s->cancel) async_task_cancel(s->caller);
    for (s->ticks = 0; s->ticks < 5; s->ticks++) async_sleep(MS);
    s->seen = s->rc;
    atomic_store(&s->g.open, 1);
    return 0;
}

static void task_scene(bool cancel, int want)
{
    scene_t s = {.rc = 1, .cancel = cancel};
    async_loop_t *loop;
    cr_assert_eq(async_loop_new(&loop), 0);
    cr_assert_eq(async_task_spawn(&s.caller, loop, caller, &s, NULL), 0);
    async_task_t o;
    cr_assert_eq(async_task_spawn(&o, loop, other, &s, NULL), 0);
    cr_expect_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_expect_eq(s.seen, 1, "the other task ran while the call waited");
    cr_expect_eq(s.rc, want, "got %s", async_strerror(s.rc));
    cr_expect_eq(atomic_load(&s.g.finished), 1, "fn had returned when the call did");
    cr_expect_eq(s.result, (void *)(uintptr_t)0x5eed, "its return value is kept");
    cr_expect_eq(async_loop_destroy(loop), 0);
}

Test(to_thread, from_a_task_only_the_task_waits)
{
    task_scene(false, 0);
}

Test(to_thread, cancelled_task_waits_for_the_running_call)
{
    task_scene(true, ASYNC_ECANCELED);
}

/* Every thread of the pool at once: each call waits at a barrier as wide
 * as the pool, which only opens if that many calls run together. */
static pthread_barrier_t barrier;
static _Atomic int done;
static int rcs[3 * 32];

static void *at_barrier(void *arg)
{
    pthread_barrier_wait(&barrier);
    atomic_fetch_add(&done, 1);
    return arg;
}

static int barrier_task(void *arg, void **res)
{
    (void)res;
    void *r = NULL;
    int rc = async_to_thread(at_barrier, arg, &r);
    rcs[(uintptr_t)arg - 1] = rc ? rc : r == arg ? 0 : ASYNC_EIO;
    return 0;
}

Test(to_thread, many_calls_use_every_thread_of_the_pool)
{
    unsigned p = pool_size(), n = 3 * p;
    pthread_barrier_init(&barrier, NULL, p);
    atomic_store(&done, 0);
    async_loop_t *loop;
    cr_assert_eq(async_loop_new(&loop), 0);
    async_task_t *h = calloc(n, sizeof *h);
    for (unsigned i = 0; i < n; i++) rcs[i] = 1;
    for (unsigned i = 0; i < n; i++)
        cr_assert_eq(async_task_spawn(&h[i], loop, barrier_task, (void *)(uintptr_t)(i + 1), NULL),
                     0);
    cr_expect_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    for (unsigned i = 0; i < n; i++) cr_expect_eq(rcs[i], 0, "call %u: %s", i, async_strerror(rcs[i]));
    cr_expect_eq(atomic_load(&done), (int)n);
    cr_expect_eq(async_loop_destroy(loop), 0);
    free(h);
    pthread_barrier_destroy(&barrier);
}

typedef struct {
    gate_t *g;
    int64_t after;
} opener_t;

static void *open_after(void *arg)
{
    opener_t *o = arg;
    while (async_now() < o->after) usleep(1000);
    atomic_store(&o->g->open, 1);
    return NULL;
}

/* The deadline must pass while fn runs, so fn must have started by then: a
 * call still queued at its deadline is cancelled unrun, correctly, and a
 * loaded machine (a sanitizer build on 2 shared CPUs) has been seen to take
 * more than 30 ms to start one.  Hence 1 s, and the check that fn ran. */
Test(to_thread, deadline_on_a_running_call_waits_for_it)
{
    gate_t g = {0};
    int64_t deadline = async_deadline_after(1000 * MS);
    opener_t o = {&g, deadline + 20 * MS};
    pthread_t th;
    pthread_create(&th, NULL, open_after, &o);
    void *r = NULL;
    cr_expect_eq(async_to_thread_dl(wait_gate, &g, &r, deadline), ASYNC_ETIMEDOUT);
    cr_expect_eq(atomic_load(&g.running), 1, "fn started within 1 s");
    cr_expect_eq(atomic_load(&g.finished), 1, "fn had returned when the call did");
    cr_expect_eq(r, (void *)(uintptr_t)0x5eed);
    pthread_join(th, NULL);
}

static void *hold(void *arg)
{
    void *r;
    cr_assert_eq(async_to_thread(wait_gate, arg, &r), 0);
    return NULL;
}

static _Atomic int counted;
static void *count(void *arg)
{
    atomic_fetch_add(&counted, 1);
    return arg;
}

Test(to_thread, deadline_on_a_queued_call_cancels_it)
{
    unsigned p = pool_size();
    gate_t g = {0};
    pthread_t *th = calloc(p, sizeof *th);
    for (unsigned i = 0; i < p; i++) pthread_create(&th[i], NULL, hold, &g);
    while (atomic_load(&g.running) < (int)p) sched_yield(); /* every thread busy */
    void *r = &g;
    int64_t t0 = async_now();
    cr_expect_eq(async_to_thread_dl(count, NULL, &r, async_deadline_after(30 * MS)), ASYNC_ETIMEDOUT);
    cr_expect_geq(async_now() - t0, 30 * MS);
    cr_expect_eq(r, &g, "result untouched: fn never ran");
    atomic_store(&g.open, 1);
    for (unsigned i = 0; i < p; i++) pthread_join(th[i], NULL);
    cr_expect_eq(async_to_thread(plus_one, NULL, NULL), 0, "the pool serves on");
    cr_expect_eq(atomic_load(&counted), 0, "the cancelled call never ran");
    free(th);
}
