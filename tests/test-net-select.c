/* Select over channel sends and receives: which case fired, priority, waiting
 * until one can complete, deadline, cancel (nothing sent or received), closed
 * channels and bad input. */
#include <criterion/criterion.h>
#include <async/select.h>
#include "support/run.h"

static async_chan_t *chan(size_t cap)
{
    async_chan_t *c;
    cr_assert_eq(async_chan_new(&c, sizeof(int), cap), 0);
    return c;
}

static int t_ready(void *arg, void **res)
{
    (void)arg, (void)res;
    async_chan_t *a = chan(1), *b = chan(1);
    int in = 0, out = 7;
    size_t fired = 99;
    async_select_case_t cs[] = {
        {a, ASYNC_SELECT_RECV, &in},
        {b, ASYNC_SELECT_SEND, &out},
    };
    /* a is empty, b has room: the send fires. */
    cr_assert_eq(async_select(cs, 2, &fired), 0);
    cr_assert_eq(fired, 1);
    cr_assert_eq(async_chan_len(b), 1);
    /* b full, a empty: nothing can complete. */
    cr_assert_eq(async_tryselect(cs, 2, &fired), ASYNC_EAGAIN);
    int v = 5;
    cr_assert_eq(async_chan_send(a, &v), 0);
    cr_assert_eq(async_select(cs, 2, &fired), 0);
    cr_assert_eq(fired, 0);
    cr_assert_eq(in, 5);
    /* Both ready: the earlier case has priority. */
    cr_assert_eq(async_chan_recv(b, &v), 0);
    cr_assert_eq(async_chan_send(a, &v), 0);
    cr_assert_eq(async_select(cs, 2, &fired), 0);
    cr_assert_eq(fired, 0);
    /* A NULL channel is ignored. */
    async_select_case_t nil[] = {{NULL, ASYNC_SELECT_RECV, &in}, {b, ASYNC_SELECT_SEND, &out}};
    cr_assert_eq(async_select(nil, 2, &fired), 0);
    cr_assert_eq(fired, 1);
    async_chan_destroy(a);
    async_chan_destroy(b);
    return 0;
}
Test(select, fires_the_case_that_can_complete_with_priority_in_order, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_ready, NULL, NULL), 0);
}

struct later {
    async_chan_t *c;
    int v, ms;
    bool recv;
};

static int act_later(void *arg, void **res)
{
    (void)res;
    struct later *l = arg;
    async_sleep(ASYNC_MSEC(l->ms));
    return l->recv ? async_chan_recv(l->c, &l->v) : async_chan_send(l->c, &l->v);
}

static int t_wait(void *arg, void **res)
{
    (void)arg, (void)res;
    async_chan_t *a = chan(1), *b = chan(0), *full = chan(1);
    int x = 1;
    cr_assert_eq(async_chan_send(full, &x), 0);
    int in_a = 0, in_b = 0, out = 9;
    async_select_case_t cs[] = {
        {a, ASYNC_SELECT_RECV, &in_a},
        {b, ASYNC_SELECT_RECV, &in_b},
        {full, ASYNC_SELECT_SEND, &out},
    };
    size_t fired;
    /* A plain send on the rendezvous channel b, 30 ms later. */
    struct later lb = {b, 42, 30, false};
    async_task_t t;
    cr_assert_eq(async_task_spawn(&t, NULL, act_later, &lb, NULL), 0);
    int64_t t0 = async_now();
    cr_assert_eq(async_select_dl(cs, 3, &fired, async_deadline_after(ASYNC_SEC(5))), 0);
    cr_assert_geq(async_now() - t0, ASYNC_MSEC(30));
    cr_assert_eq(fired, 1);
    cr_assert_eq(in_b, 42);
    cr_assert_eq(async_task_await(t, NULL), 0);
    /* A receiver frees room in `full`: the send case fires. */
    struct later lf = {full, 0, 30, true};
    cr_assert_eq(async_task_spawn(&t, NULL, act_later, &lf, NULL), 0);
    cr_assert_eq(async_select_dl(cs, 3, &fired, async_deadline_after(ASYNC_SEC(5))), 0);
    cr_assert_eq(fired, 2);
    cr_assert_eq(async_task_await(t, NULL), 0);
    cr_assert_eq(lf.v, 1);
    int y;
    cr_assert_eq(async_chan_tryrecv(full, &y), 0);
    cr_assert_eq(y, 9, "the select's element went in");
    /* A receiver blocked on a rendezvous channel takes a select's send. */
    struct later lr = {b, 0, 0, true};
    cr_assert_eq(async_task_spawn(&t, NULL, act_later, &lr, NULL), 0);
    async_select_case_t snd[] = {{b, ASYNC_SELECT_SEND, &out}};
    cr_assert_eq(async_select_dl(snd, 1, &fired, async_deadline_after(ASYNC_SEC(5))), 0);
    cr_assert_eq(async_task_await(t, NULL), 0);
    cr_assert_eq(lr.v, 9);
    async_chan_destroy(a);
    async_chan_destroy(b);
    async_chan_destroy(full);
    return 0;
}
Test(select, waits_until_a_case_can_complete, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_wait, NULL, NULL), 0);
}

static int sel_forever(void *arg, void **res)
{
    (void)res;
    async_select_case_t *cs = arg;
    size_t fired;
    return async_select(cs, 2, &fired);
}

static int t_deadline_cancel(void *arg, void **res)
{
    (void)arg, (void)res;
    async_chan_t *a = chan(1), *b = chan(1);
    int in = -1, in2 = -1;
    async_select_case_t cs[] = {{a, ASYNC_SELECT_RECV, &in}, {b, ASYNC_SELECT_RECV, &in2}};
    size_t fired;
    int64_t t0 = async_now();
    cr_assert_eq(async_select_dl(cs, 2, &fired, async_deadline_after(ASYNC_MSEC(50))), ASYNC_ETIMEDOUT);
    cr_assert_geq(async_now() - t0, ASYNC_MSEC(50));
    async_task_t t;
    cr_assert_eq(async_task_spawn(&t, NULL, sel_forever, cs, NULL), 0);
    async_sleep(ASYNC_MSEC(10));
    /* Cancel, then make a case ready before the cancelled task runs: it
     * must still take nothing. */
    cr_assert_eq(async_task_cancel(t), 0);
    int v = 3;
    cr_assert_eq(async_chan_send(a, &v), 0);
    cr_assert_eq(async_task_await(t, NULL), ASYNC_ECANCELED);
    cr_assert_eq(async_chan_len(a), 1, "a cancelled select received nothing");
    cr_assert_eq(in, -1);
    async_chan_destroy(a);
    async_chan_destroy(b);
    return 0;
}
Test(select, deadline_and_cancel_complete_nothing, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_deadline_cancel, NULL, NULL), 0);
}

static int t_closed(void *arg, void **res)
{
    (void)arg, (void)res;
    async_chan_t *a = chan(1), *b = chan(1);
    int in = 0;
    async_select_case_t cs[] = {{a, ASYNC_SELECT_RECV, &in}, {b, ASYNC_SELECT_RECV, &in}};
    async_task_t t;
    cr_assert_eq(async_task_spawn(&t, NULL, sel_forever, cs, NULL), 0);
    async_sleep(ASYNC_MSEC(10));
    cr_assert_eq(async_chan_close(b), 0);
    cr_assert_eq(async_task_await(t, NULL), ASYNC_EEOF, "a close wakes a select receiving from the channel");
    size_t fired;
    int out = 1;
    async_select_case_t snd[] = {{b, ASYNC_SELECT_SEND, &out}};
    cr_assert_eq(async_select(snd, 1, &fired), ASYNC_ECLOSED);
    cr_assert_eq(fired, 0);
    /* Bad input. */
    cr_assert_eq(async_select(NULL, 1, &fired), ASYNC_EINVAL);
    cr_assert_eq(async_select(cs, 0, &fired), ASYNC_EINVAL);
    cr_assert_eq(async_select(cs, 2, NULL), ASYNC_EINVAL);
    async_select_case_t bad[] = {{a, 7, &in}};
    cr_assert_eq(async_select(bad, 1, &fired), ASYNC_EINVAL);
    async_select_case_t noelem[] = {{a, ASYNC_SELECT_RECV, NULL}};
    cr_assert_eq(async_select(noelem, 1, &fired), ASYNC_EINVAL);
    async_chan_destroy(a);
    async_chan_destroy(b);
    return 0;
}
Test(select, closed_channel_fires_with_eof_or_eclosed_and_bad_input_is_einval, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_closed, NULL, NULL), 0);
}

Test(select, waiting_outside_a_task_is_enotask, .timeout = 10)
{
    async_chan_t *a = chan(1);
    int in;
    size_t fired;
    async_select_case_t cs[] = {{a, ASYNC_SELECT_RECV, &in}};
    cr_assert_eq(async_select(cs, 1, &fired), ASYNC_ENOTASK);
    async_chan_destroy(a);
}

/* Many cases (more than the select keeps on its stack). */
static int t_many(void *arg, void **res)
{
    (void)arg, (void)res;
    enum { N = 20 };
    async_chan_t *c[N];
    int in[N];
    async_select_case_t cs[N];
    for (int i = 0; i < N; i++) {
        c[i] = chan(1);
        cs[i] = (async_select_case_t){c[i], ASYNC_SELECT_RECV, &in[i]};
    }
    struct later l = {c[N - 1], 77, 20, false};
    async_task_t t;
    cr_assert_eq(async_task_spawn(&t, NULL, act_later, &l, NULL), 0);
    size_t fired;
    cr_assert_eq(async_select_dl(cs, N, &fired, async_deadline_after(ASYNC_SEC(5))), 0);
    cr_assert_eq(fired, N - 1);
    cr_assert_eq(in[N - 1], 77);
    cr_assert_eq(async_task_await(t, NULL), 0);
    for (int i = 0; i < N; i++) async_chan_destroy(c[i]);
    return 0;
}
Test(select, many_cases, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_many, NULL, NULL), 0);
}

/* In a cancelled task a case that can complete at once still completes (the
 * table's cancellation rule): async_tryselect never says ASYNC_ECANCELED, and
 * async_select refuses only the wait. */
static int cancelled_selector(void *arg, void **res)
{
    (void)res;
    async_chan_t **ab = arg;
    cr_assert_eq(async_sleep(ASYNC_SEC(30)), ASYNC_ECANCELED, "cancelled while asleep");
    int in = -1, out = 5;
    size_t fired = 99;
    async_select_case_t recv[] = {{ab[0], ASYNC_SELECT_RECV, &in}};
    cr_assert_eq(async_tryselect(recv, 1, &fired), 0, "an element is buffered");
    cr_assert_eq(fired, 0);
    cr_assert_eq(in, 4);
    cr_assert_eq(async_tryselect(recv, 1, &fired), ASYNC_EAGAIN, "empty: not ECANCELED");
    async_select_case_t send[] = {{ab[0], ASYNC_SELECT_RECV, &in}, {ab[1], ASYNC_SELECT_SEND, &out}};
    cr_assert_eq(async_select(send, 2, &fired), 0, "the send can complete at once");
    cr_assert_eq(fired, 1);
    cr_assert_eq(async_select(recv, 1, &fired), ASYNC_ECANCELED, "it would have to wait");
    cr_assert_eq(async_chan_close(ab[0]), 0);
    cr_assert_eq(async_tryselect(recv, 1, &fired), ASYNC_EEOF, "a closed, drained channel");
    return 0;
}

static int t_cancelled_completes_at_once(void *arg, void **res)
{
    (void)arg, (void)res;
    async_chan_t *ab[2] = {chan(1), chan(1)};
    int v = 4;
    cr_assert_eq(async_chan_send(ab[0], &v), 0);
    async_task_t t;
    cr_assert_eq(async_task_spawn(&t, NULL, cancelled_selector, ab, NULL), 0);
    cr_assert_eq(async_yield(), 0);
    cr_assert_eq(async_task_cancel(t), 0);
    cr_assert_eq(async_task_await(t, NULL), 0);
    cr_assert_eq(async_chan_len(ab[1]), 1, "the cancelled task's send went through");
    async_chan_destroy(ab[0]);
    async_chan_destroy(ab[1]);
    return 0;
}
Test(select, cancelled_task_completes_what_needs_no_wait, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_cancelled_completes_at_once, NULL, NULL), 0);
}
