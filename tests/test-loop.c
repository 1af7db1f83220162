/* The loop: run modes, stop, raw libev watchers, freeing, and posts from
 * other threads (never lost, never doubled, in order per thread). */
#include <criterion/criterion.h>
#include <ev.h>
#include <pthread.h>
#include <stdatomic.h>
#include "support/run.h"
#include "support/alloc.h"

#define POSTS 100000

struct post_state {
    async_loop_t *loop;
    int last[2];
    atomic_int count;
    bool in_order;
};

struct post_arg {
    struct post_state *st;
    int thread, seq;
};

static void on_post(void *p)
{
    struct post_arg *a = p;
    cr_assert(async_loop_current() == a->st->loop || async_loop_current() == NULL);
    if (a->seq != a->st->last[a->thread] + 1) a->st->in_order = false;
    a->st->last[a->thread] = a->seq;
    atomic_fetch_add(&a->st->count, 1);
}

struct producer {
    struct post_state *st;
    struct post_arg *args;
    int thread;
};

static void *produce(void *p)
{
    struct producer *pr = p;
    for (int i = 0; i < POSTS; i++) {
        pr->args[i] = (struct post_arg){pr->st, pr->thread, i + 1};
        cr_assert_eq(async_loop_post(pr->st->loop, on_post, &pr->args[i]), 0);
    }
    return NULL;
}

static int wait_for_posts(void *arg, void **res)
{
    (void)res;
    struct post_state *st = arg;
    while (atomic_load(&st->count) < 2 * POSTS) cr_assert_eq(async_sleep(ASYNC_MSEC(1)), 0);
    return 0;
}

Test(loop, posts_from_two_threads_run_once_in_order, .timeout = 30)
{
    struct post_state st = {.in_order = true};
    cr_assert_eq(async_loop_new(&st.loop), 0);
    struct producer pr[2];
    pthread_t th[2];
    async_task_t waiter;
    cr_assert_eq(async_task_spawn(&waiter, st.loop, wait_for_posts, &st, NULL), 0);
    for (int t = 0; t < 2; t++) {
        pr[t] = (struct producer){&st, calloc(POSTS, sizeof(struct post_arg)), t};
        cr_assert_eq(pthread_create(&th[t], NULL, produce, &pr[t]), 0);
    }
    cr_assert_eq(async_loop_run(st.loop, ASYNC_RUN_DEFAULT), 0);
    for (int t = 0; t < 2; t++) pthread_join(th[t], NULL);
    cr_assert_eq(async_loop_destroy(st.loop), 0);
    cr_assert_eq(atomic_load(&st.count), 2 * POSTS);
    cr_assert(st.in_order);
    cr_assert_eq(st.last[0], POSTS);
    cr_assert_eq(st.last[1], POSTS);
    for (int t = 0; t < 2; t++) free(pr[t].args);
}

static void count_post(void *p) { (*(int *)p)++; }

Test(loop, free_runs_pending_posts_and_refuses_while_busy, .timeout = 10)
{
    test_alloc_install();
    async_loop_t *loop;
    cr_assert_eq(async_loop_new(&loop), 0);
    int n = 0;
    for (int i = 0; i < 3; i++) cr_assert_eq(async_loop_post(loop, count_post, &n), 0);
    cr_assert_eq(async_loop_destroy(loop), 0);
    cr_assert_eq(n, 3);
    cr_assert_eq(test_alloc_live(), 0);
    test_alloc_uninstall();
}

static int forever(void *arg, void **res)
{
    (void)arg, (void)res;
    return async_sleep(ASYNC_SEC(100));
}

static void stopper(struct ev_loop *ev, ev_timer *w, int revents)
{
    (void)ev, (void)revents;
    async_loop_stop(w->data);
}

Test(loop, stop_and_busy_free, .timeout = 10)
{
    async_loop_t *loop;
    cr_assert_eq(async_loop_new(&loop), 0);
    async_task_t t;
    cr_assert_eq(async_task_spawn(&t, loop, forever, NULL, NULL), 0);
    ev_timer w;
    ev_timer_init(&w, stopper, 0.01, 0.);
    w.data = loop;
    ev_timer_start(async_loop_ev(loop), &w);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 1, "stopped with a task left");
    cr_assert_eq(async_loop_live_tasks(loop), 1);
    cr_assert_eq(async_loop_destroy(loop), ASYNC_EBUSY);
    cr_assert_eq(async_task_cancel(t), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(async_loop_destroy(loop), 0);
}

/* async_loop_stop from a thread other than the loop's is refused (it would
 * write the loop's state unlocked) and stops nothing; from the loop's thread
 * it stops the run. */
static void *stop_from_other_thread(void *arg)
{
    return (void *)(intptr_t)async_loop_stop(arg);
}

static int stop_checker(void *arg, void **res)
{
    (void)arg, (void)res;
    async_loop_t *loop = async_loop_current();
    pthread_t th;
    void *rc;
    cr_assert_eq(pthread_create(&th, NULL, stop_from_other_thread, loop), 0);
    pthread_join(th, &rc);
    cr_assert_eq((int)(intptr_t)rc, ASYNC_EWRONGLOOP);
    cr_assert_eq(async_sleep(ASYNC_MSEC(1)), 0, "the run was not stopped");
    cr_assert_eq(async_loop_stop(loop), 0);
    return async_sleep(ASYNC_SEC(100));
}

Test(loop, stop_from_another_thread_is_ewrongloop, .timeout = 10)
{
    async_loop_t *loop;
    cr_assert_eq(async_loop_new(&loop), 0);
    async_task_t t;
    cr_assert_eq(async_task_spawn(&t, loop, stop_checker, NULL, NULL), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 1, "stopped by the task, with it left");
    cr_assert_eq(async_task_cancel(t), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(async_loop_destroy(loop), 0);
}

static void fired(struct ev_loop *ev, ev_timer *w, int revents)
{
    (void)ev, (void)revents;
    (*(int *)w->data)++;
}

Test(loop, raw_watchers_keep_the_loop_running, .timeout = 10)
{
    async_loop_t *loop;
    cr_assert_eq(async_loop_new(&loop), 0);
    int n = 0;
    ev_timer w;
    ev_timer_init(&w, fired, 0.02, 0.);
    w.data = &n;
    ev_timer_start(async_loop_ev(loop), &w);
    int64_t t0 = async_now();
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(n, 1);
    cr_assert_geq(async_now() - t0, ASYNC_MSEC(19));
    cr_assert_eq(async_loop_destroy(loop), 0);
}

static int counter(void *arg, void **res)
{
    (void)res;
    for (int i = 0; i < 3; i++) {
        (*(int *)arg)++;
        async_sleep(ASYNC_MSEC(5));
    }
    return 0;
}

Test(loop, nowait_and_once_modes, .timeout = 10)
{
    async_loop_t *loop;
    cr_assert_eq(async_loop_new(&loop), 0);
    int n = 0;
    cr_assert_eq(async_task_spawn(NULL, loop, counter, &n, &(async_task_opts_t){.detached = true}),
                 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_NOWAIT), 1);
    cr_assert_eq(n, 1);
    while (async_loop_run(loop, ASYNC_RUN_ONCE) != 0) {}
    cr_assert_eq(n, 3);
    cr_assert_eq(async_loop_run(loop, 7), ASYNC_EINVAL);
    cr_assert_eq(async_loop_destroy(loop), 0);
}

Test(loop, default_loop_is_shared, .timeout = 10)
{
    async_loop_t *a, *b;
    cr_assert_eq(async_loop_default(&a), 0);
    cr_assert_eq(async_loop_default(&b), 0);
    cr_assert_eq(a, b);
    cr_assert_eq(async_loop_ev(a), EV_DEFAULT);
    cr_assert_eq(async_loop_destroy(a), 0);
}

static int poster(void *arg, void **res)
{
    (void)res;
    async_loop_t *loop = async_loop_current();
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), ASYNC_EBUSY);
    cr_assert_eq(async_loop_stop_post(loop), 0);
    *(int *)arg = 1;
    return async_sleep(ASYNC_SEC(100));
}

Test(loop, stop_post_and_reentry, .timeout = 10)
{
    async_loop_t *loop;
    cr_assert_eq(async_loop_new(&loop), 0);
    int ran = 0;
    async_task_t t;
    cr_assert_eq(async_task_spawn(&t, loop, poster, &ran, NULL), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 1);
    cr_assert_eq(ran, 1);
    async_task_cancel(t);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(async_loop_destroy(loop), 0);
}

Test(common, errors_and_time, .timeout = 10)
{
    cr_assert_str_eq(async_errname(ASYNC_ETIMEDOUT), "ASYNC_ETIMEDOUT");
    cr_assert_str_eq(async_strerror(ASYNC_ECLOSED), "closed");
    cr_assert_str_eq(async_strerror(12345), "unknown error");
    cr_assert_eq(async_deadline_after(-1), ASYNC_FOREVER);
    cr_assert_eq(async_deadline_after(ASYNC_FOREVER), ASYNC_FOREVER);
    int64_t a = async_now(), b = async_now();
    cr_assert_geq(b, a);
    cr_assert_geq(async_deadline_after(ASYNC_SEC(1)), b + ASYNC_SEC(1));
}
