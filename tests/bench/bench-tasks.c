/* Scheduler benchmarks: the context switch (ours and glibc's swapcontext),
 * spawn plus completion, yield and channel round trips, 100,000 sleeping
 * tasks, and cross-thread posts (against a mutex-and-pipe queue).  asyncio's
 * figures for the same jobs come from peer-tasks.py, run once a round between
 * our rounds.  Each figure prints as median (min-max) over the rounds. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <ucontext.h>
#include <unistd.h>
#include "async.h"
#include "core/core_internal.h"
#include "rounds.h"

static double secs(int64_t ns) { return (double)ns / 1e9; }

/* --- raw context switch ---------------------------------------------------- */

#define SWITCHES 10000000
static async__coro_t main_coro, other_coro;

/* Both sides run this loop, so every switch is made from the same call site
 * and returns where the return-stack predictor expects, as when tasks switch
 * from the scheduler's one switch_out. */
static __attribute__((noinline)) void pingpong(async__coro_t *self, async__coro_t *peer, long n)
{
    for (long i = 0; i < n; i++) async__coro_switch(self, peer, false);
}

/* Here the two sides switch from different functions: each return lands
 * somewhere the predictor did not expect. */
static __attribute__((noinline)) void pingpong_other_site(async__coro_t *self, async__coro_t *peer, long n)
{
    for (long i = 0; i < n; i++) async__coro_switch(self, peer, false);
    __asm__ volatile("" ::: "memory");
}

static bool mismatched;

static __attribute__((unused)) void bouncer(void *arg)
{
    (void)arg;
    for (;;) {
        if (mismatched) pingpong_other_site(&other_coro, &main_coro, 1L << 62);
        else pingpong(&other_coro, &main_coro, 1L << 62);
    }
}

static double bench_switch_asm(bool other_site)
{
#ifdef ASYNC_CORO_UCONTEXT
    (void)other_site;
    return 0;
#else
    async__stack_pool_t *pool = async__stack_pool_new();
    async__stack_t *stack;
    async__stack_get(pool, ASYNC_STACK_DEFAULT, &stack);
    async__coro_init_main(&main_coro);
    async__coro_init(&other_coro, stack, bouncer, NULL);
    mismatched = other_site;
    int64_t t0 = async_now();
    pingpong(&main_coro, &other_coro, SWITCHES);
    int64_t dt = async_now() - t0;
    async__stack_put(pool, stack);
    async__stack_pool_free(pool);
    return (double)dt / (2.0 * SWITCHES); /* two switches a round */
#endif
}

static ucontext_t uc_main, uc_other;

static __attribute__((noinline)) void uc_hop(ucontext_t *from, ucontext_t *to)
{
    swapcontext(from, to);
}

static void uc_bouncer(void)
{
    for (;;) uc_hop(&uc_other, &uc_main);
}

static double bench_swapcontext(void)
{
    enum { N = 1000000 };
    static char stack[64 * 1024];
    getcontext(&uc_other);
    uc_other.uc_stack.ss_sp = stack;
    uc_other.uc_stack.ss_size = sizeof stack;
    makecontext(&uc_other, uc_bouncer, 0);
    int64_t t0 = async_now();
    for (int i = 0; i < N; i++) uc_hop(&uc_main, &uc_other);
    return (double)(async_now() - t0) / (2.0 * N);
}

/* --- tasks ------------------------------------------------------------------ */

static int trivial(void *arg, void **res)
{
    (void)arg, (void)res;
    return 0;
}

#define SPAWNS 2000000
struct spawn_bench {
    int batch;
    double ns;
};

/* Spawns `batch` tasks, yields (they all run to completion), repeats. */
static int spawner(void *arg, void **res)
{
    (void)res;
    struct spawn_bench *b = arg;
    const async_task_opts_t detached = {.detached = true};
    int rounds = SPAWNS / b->batch;
    int64_t t0 = async_now();
    for (int i = 0; i < rounds; i++) {
        for (int j = 0; j < b->batch; j++) async_task_spawn(NULL, NULL, trivial, NULL, &detached);
        async_yield();
    }
    b->ns = (double)(async_now() - t0) / ((double)rounds * b->batch);
    return 0;
}

#define YIELDS 5000000
static int yielder(void *arg, void **res)
{
    (void)arg, (void)res;
    for (int i = 0; i < YIELDS; i++) async_yield();
    return 0;
}

struct pingpong {
    async_chan_t *ping, *pong;
    int n;
};

static int echo(void *arg, void **res)
{
    (void)res;
    struct pingpong *p = arg;
    int v;
    for (int i = 0; i < p->n; i++) {
        async_chan_recv(p->ping, &v);
        async_chan_send(p->pong, &v);
    }
    return 0;
}

static int pinger(void *arg, void **res)
{
    (void)res;
    struct pingpong *p = arg;
    for (int i = 0, v; i < p->n; i++) {
        async_chan_send(p->ping, &i);
        async_chan_recv(p->pong, &v);
    }
    return 0;
}

static int64_t run_tasks(async_task_fn a, void *aa, async_task_fn b, void *ba)
{
    async_loop_t *loop;
    async_loop_new(&loop);
    int64_t t0 = async_now();
    async_task_spawn(NULL, loop, a, aa, &(async_task_opts_t){.detached = true});
    if (b) async_task_spawn(NULL, loop, b, ba, &(async_task_opts_t){.detached = true});
    async_loop_run(loop, ASYNC_RUN_DEFAULT);
    int64_t dt = async_now() - t0;
    async_loop_destroy(loop);
    return dt;
}

static int napper(void *arg, void **res)
{
    (void)arg, (void)res;
    return async_sleep(ASYNC_MSEC(10));
}

static double bench_sleepers(int n, long *rss_kib)
{
    async_loop_t *loop;
    async_loop_new(&loop);
    int64_t t0 = async_now();
    const async_task_opts_t detached = {.detached = true};
    for (int i = 0; i < n; i++) async_task_spawn(NULL, loop, napper, NULL, &detached);
    async_loop_run(loop, ASYNC_RUN_DEFAULT);
    int64_t dt = async_now() - t0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    *rss_kib = ru.ru_maxrss;
    async_loop_destroy(loop);
    return secs(dt);
}

/* --- cross-thread posts ------------------------------------------------------ */

#define POSTS 2000000
static long received; /* only the loop's thread touches it */
static void on_post(void *arg) { (void)arg; received++; }

static void *post_many(void *arg)
{
    async_loop_t *loop = arg;
    for (int i = 0; i < POSTS; i++)
        while (async_loop_post(loop, on_post, NULL) != 0) {}
    return NULL;
}

static int post_waiter(void *arg, void **res)
{
    (void)arg, (void)res;
    while (received < 2L * POSTS) async_sleep(ASYNC_USEC(200));
    return 0;
}

static double bench_posts(void)
{
    async_loop_t *loop;
    async_loop_new(&loop);
    received = 0;
    async_task_spawn(NULL, loop, post_waiter, NULL, &(async_task_opts_t){.detached = true});
    pthread_t th[2];
    int64_t t0 = async_now();
    for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, post_many, loop);
    async_loop_run(loop, ASYNC_RUN_DEFAULT);
    int64_t dt = async_now() - t0;
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    async_loop_destroy(loop);
    return 2.0 * POSTS / secs(dt);
}

/* Baseline: the usual hand-rolled queue, a mutex-protected list plus a pipe
 * write to wake the consumer. */
struct node { struct node *next; };
static struct {
    pthread_mutex_t lock;
    struct node *head;
    int pipe[2];
    long got;
} mq = {PTHREAD_MUTEX_INITIALIZER, NULL, {-1, -1}, 0};

static void *mq_post_many(void *arg)
{
    (void)arg;
    for (int i = 0; i < POSTS; i++) {
        struct node *n = malloc(sizeof *n);
        pthread_mutex_lock(&mq.lock);
        bool was_empty = !mq.head;
        n->next = mq.head;
        mq.head = n;
        pthread_mutex_unlock(&mq.lock);
        if (was_empty && write(mq.pipe[1], "x", 1) < 0) abort();
    }
    return NULL;
}

static double bench_mutex_queue(void)
{
    if (pipe(mq.pipe) != 0) return -1;
    mq.head = NULL;
    mq.got = 0;
    pthread_t th[2];
    int64_t t0 = async_now();
    for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, mq_post_many, NULL);
    char buf[256];
    while (mq.got < 2L * POSTS) {
        if (read(mq.pipe[0], buf, sizeof buf) <= 0) break;
        pthread_mutex_lock(&mq.lock);
        struct node *n = mq.head;
        mq.head = NULL;
        pthread_mutex_unlock(&mq.lock);
        while (n) {
            struct node *next = n->next;
            free(n);
            mq.got++;
            n = next;
        }
    }
    int64_t dt = async_now() - t0;
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    close(mq.pipe[0]);
    close(mq.pipe[1]);
    return 2.0 * POSTS / secs(dt);
}

/* --- the rounds ----------------------------------------------------------- */

/* One round of our figures; the peer's follow in the same round. */
static void ours_round(void)
{
    bench_add("context switch, hand-written asm", "ns", bench_switch_asm(false));
    bench_add("context switch, hand-written asm, mismatched call sites", "ns", bench_switch_asm(true));
    bench_add("context switch, glibc swapcontext (baseline)", "ns", bench_swapcontext());

    static const int batches[] = {1, 100, 1000};
    for (int i = 0; i < 3; i++) {
        struct spawn_bench b = {batches[i], 0};
        run_tasks(spawner, &b, NULL, NULL);
        char name[96];
        snprintf(name, sizeof name, "spawn + completion of a trivial task, %d at a time", b.batch);
        bench_add(name, "ns", b.ns);
    }

    int64_t dt = run_tasks(yielder, NULL, yielder, NULL);
    bench_add("yield round trip between two tasks", "ns", (double)dt / YIELDS);

    struct pingpong pp = {.n = 2000000};
    async_chan_new(&pp.ping, sizeof(int), 1);
    async_chan_new(&pp.pong, sizeof(int), 1);
    dt = run_tasks(echo, &pp, pinger, &pp);
    async_chan_destroy(pp.ping);
    async_chan_destroy(pp.pong);
    bench_add("channel ping-pong per message round trip", "ns", (double)dt / pp.n);

    long rss;
    bench_add("100,000 tasks sleeping 10 ms at once, wall", "s", bench_sleepers(100000, &rss));
    bench_add("100,000 tasks sleeping, peak RSS", "MiB", rss / 1024.0);

    bench_add("async_loop_post from 2 threads", "M posts/s", bench_posts() / 1e6);
    bench_add("mutex + pipe queue from 2 threads (baseline)", "M posts/s", bench_mutex_queue() / 1e6);
}

static void asyncio_round(void)
{
    static char py[4096];
    bench_peer_run(BENCH_PYTHON " tests/bench/peer-tasks.py 2>/dev/null", py, sizeof py);
    bench_add("spawn + completion, asyncio create_task", "ns", bench_peer_value(py, "spawn_complete_ns"));
    bench_add("yield round trip, asyncio sleep(0)", "ns", bench_peer_value(py, "yield_round_trip_ns"));
    bench_add("channel ping-pong, asyncio Queue", "ns", bench_peer_value(py, "chan_ping_pong_ns"));
    bench_add("100,000 asyncio sleepers, wall", "s", bench_peer_value(py, "sleepers_100k_s"));
    bench_add("100,000 asyncio sleepers, peak RSS", "MiB", bench_peer_value(py, "sleepers_100k_rss_mib"));
}

int main(void)
{
    bench_start("bench-tasks");
    for (int r = 0; r < bench_rounds(); r++) {
        ours_round();
        asyncio_round();
    }
    bench_ratio("context switch speedup over swapcontext", "context switch, glibc swapcontext (baseline)",
                "context switch, hand-written asm");
    bench_ratio("async_loop_post over the mutex + pipe queue", "async_loop_post from 2 threads",
                "mutex + pipe queue from 2 threads (baseline)");
    bench_print();
    return 0;
}
