/* The process-shared queue: many producers and consumers in forked
 * processes, order, backpressure, close, JoinableQueue, argument errors, the
 * eventfd protocol, and tasks awaiting the queue without blocking their loop. */
#include <criterion/criterion.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>
#include "async.h"
#include "async/ipc.h"
#include "async/process.h"
#include "support/ticker.h"

/* 4 producers x 4 consumers moving 1,000,000 items (about a second, also
 * under AddressSanitizer). */
#define TOTAL 1000000u
#define NPROD 4u
#define NCONS 4u
#define PER_PROD (TOTAL / NPROD)

typedef struct item {
    uint32_t producer, seq;
} item_t;

typedef struct mpmc {
    async_ipc_queue_t *q;
    async_shared_array_t *seen;  /* one byte per item: times it was got */
    async_shared_array_t *counts; /* items got per consumer */
    unsigned id;
} mpmc_t;

static int producer(void *arg)
{
    mpmc_t *m = arg;
    for (uint32_t i = 0; i < PER_PROD; i++) {
        item_t it = {m->id, i};
        if (async_ipc_queue_put(m->q, &it, sizeof it)) return 1;
    }
    return 0;
}

static int consumer(void *arg)
{
    mpmc_t *m = arg;
    unsigned char *seen = async_shared_array_ptr(m->seen);
    int64_t last[NPROD];
    for (unsigned i = 0; i < NPROD; i++) last[i] = -1;
    uint64_t got = 0;
    for (;;) {
        item_t it;
        size_t len;
        int err = async_ipc_queue_get(m->q, &it, sizeof it, &len);
        if (err == ASYNC_EEOF) break;
        if (err || len != sizeof it || it.producer >= NPROD || it.seq >= PER_PROD) return 2;
        /* Each producer's items arrive in the order it put them. */
        if ((int64_t)it.seq <= last[it.producer]) return 3;
        last[it.producer] = it.seq;
        __atomic_fetch_add(&seen[it.producer * PER_PROD + it.seq], 1, __ATOMIC_RELAXED);
        got++;
    }
    async_shared_array_set(m->counts, m->id, &got);
    return 0;
}

Test(ipc_queue, mpmc_none_lost_none_duplicated_in_order, .timeout = 60)
{
    mpmc_t m = {0};
    cr_assert_eq(async_ipc_queue_new(&m.q, 256, sizeof(item_t), 0), 0);
    cr_assert_eq(async_shared_array_new(&m.seen, 1, TOTAL, false), 0);
    cr_assert_eq(async_shared_array_new(&m.counts, sizeof(uint64_t), NCONS, false), 0);
    async_process_t *prod[NPROD], *cons[NCONS];
    for (unsigned i = 0; i < NCONS; i++) {
        m.id = i;
        cr_assert_eq(async_process_spawn(&cons[i], consumer, &m), 0);
    }
    for (unsigned i = 0; i < NPROD; i++) {
        m.id = i;
        cr_assert_eq(async_process_spawn(&prod[i], producer, &m), 0);
    }
    int code;
    for (unsigned i = 0; i < NPROD; i++) {
        cr_assert_eq(async_process_join(prod[i]), 0);
        cr_assert_eq(async_process_status(prod[i], &code, NULL), 0);
        cr_assert_eq(code, 0, "producer %u exited %d", i, code);
        async_process_free(prod[i]);
    }
    cr_assert_eq(async_ipc_queue_close(m.q), 0);
    uint64_t total = 0;
    for (unsigned i = 0; i < NCONS; i++) {
        cr_assert_eq(async_process_join(cons[i]), 0);
        cr_assert_eq(async_process_status(cons[i], &code, NULL), 0);
        cr_assert_eq(code, 0, "consumer %u exited %d", i, code);
        async_process_free(cons[i]);
        uint64_t got;
        async_shared_array_get(m.counts, i, &got);
        total += got;
    }
    cr_assert_eq(total, TOTAL);
    unsigned char *seen = async_shared_array_ptr(m.seen);
    for (size_t i = 0; i < TOTAL; i++) cr_assert_eq(seen[i], 1, "item %zu got %d times", i, seen[i]);
    async_shared_array_free(m.seen);
    async_shared_array_free(m.counts);
    async_ipc_queue_free(m.q);
}

Test(ipc_queue, fifo_and_message_sizes, .timeout = 10)
{
    async_ipc_queue_t *q;
    cr_assert_eq(async_ipc_queue_new(&q, 8, 100, 0), 0);
    cr_assert_eq(async_ipc_queue_capacity(q), 8);
    cr_assert_eq(async_ipc_queue_max_msg(q), 100);
    char big[100];
    memset(big, 'x', sizeof big);
    cr_assert_eq(async_ipc_queue_put(q, "", 0), 0);
    cr_assert_eq(async_ipc_queue_put(q, big, 100), 0);
    cr_assert_eq(async_ipc_queue_put(q, "abc", 3), 0);
    cr_assert_eq(async_ipc_queue_len(q), 3);
    char buf[100];
    size_t len = 99;
    cr_assert_eq(async_ipc_queue_get(q, buf, sizeof buf, &len), 0);
    cr_assert_eq(len, 0);
    cr_assert_eq(async_ipc_queue_get(q, buf, sizeof buf, &len), 0);
    cr_assert_eq(len, 100);
    cr_assert_eq(memcmp(buf, big, 100), 0);
    cr_assert_eq(async_ipc_queue_get(q, buf, sizeof buf, &len), 0);
    cr_assert_eq(len, 3);
    cr_assert_eq(memcmp(buf, "abc", 3), 0);
    cr_assert_eq(async_ipc_queue_tryget(q, buf, sizeof buf, &len), ASYNC_EAGAIN);
    /* Wrap around the ring several times. */
    for (int i = 0; i < 100; i++) {
        cr_assert_eq(async_ipc_queue_tryput(q, &i, sizeof i), 0);
        int v;
        cr_assert_eq(async_ipc_queue_tryget(q, &buf, sizeof buf, &len), 0);
        memcpy(&v, buf, sizeof v);
        cr_assert_eq(v, i);
    }
    async_ipc_queue_free(q);
}

Test(ipc_queue, bad_arguments, .timeout = 10)
{
    async_ipc_queue_t *q = NULL;
    cr_assert_eq(async_ipc_queue_new(&q, 0, 8, 0), ASYNC_EINVAL);
    cr_assert_eq(async_ipc_queue_new(&q, 8, 0, 0), ASYNC_EINVAL);
    cr_assert_eq(async_ipc_queue_new(&q, 8, 8, 0x80), ASYNC_EINVAL);
    cr_assert_eq(async_ipc_queue_new(&q, 8, ((size_t)1 << 30) + 1, 0), ASYNC_EINVAL);
    cr_assert_eq(async_ipc_queue_new(&q, SIZE_MAX / 4, 64, 0), ASYNC_EINVAL);
    cr_assert_eq(async_ipc_queue_new(NULL, 8, 8, 0), ASYNC_EINVAL);
    cr_assert_null(q);
    cr_assert_eq(async_ipc_queue_new(&q, 2, 8, 0), 0);
    char buf[16];
    size_t len;
    cr_assert_eq(async_ipc_queue_put(q, buf, 9), ASYNC_EINVAL);
    cr_assert_eq(async_ipc_queue_put(q, NULL, 1), ASYNC_EINVAL);
    cr_assert_eq(async_ipc_queue_put(q, buf, 8), 0);
    cr_assert_eq(async_ipc_queue_get(q, buf, 7, &len), ASYNC_EINVAL);
    cr_assert_eq(async_ipc_queue_len(q), 1, "a refused get consumes nothing");
    cr_assert_eq(async_ipc_queue_fd(q, 0), ASYNC_EINVAL);
    cr_assert_eq(async_ipc_queue_fd(q, ASYNC_READABLE | ASYNC_WRITABLE), ASYNC_EINVAL);
    cr_assert_eq(async_ipc_queue_fd(NULL, ASYNC_READABLE), ASYNC_EINVAL);
    cr_assert_eq(async_ipc_queue_watch(q, 0), ASYNC_EINVAL);
    cr_assert_eq(async_ipc_queue_watch(q, ASYNC_READABLE | ASYNC_WRITABLE), ASYNC_EINVAL);
    cr_assert_eq(async_ipc_queue_watch(NULL, ASYNC_READABLE), ASYNC_EINVAL);
    cr_assert_eq(async_ipc_queue_unwatch(q, 4), ASYNC_EINVAL);
    cr_assert_eq(async_ipc_queue_drain_fd(q, -1), ASYNC_EINVAL);
    cr_assert_eq(async_ipc_queue_drain_fd(NULL, ASYNC_WRITABLE), ASYNC_EINVAL);
    cr_assert_eq(async_ipc_queue_unwatch(q, ASYNC_READABLE), ASYNC_EINVAL, "nobody watches");
    cr_assert_eq(async_ipc_queue_watch(q, ASYNC_READABLE), 0);
    cr_assert_eq(async_ipc_queue_drain_fd(q, ASYNC_READABLE), 0, "nothing to drain is fine");
    cr_assert_eq(async_ipc_queue_unwatch(q, ASYNC_READABLE), 0);
    cr_assert_eq(async_ipc_queue_unwatch(q, ASYNC_READABLE), ASYNC_EINVAL, "once per watch");
    cr_assert_eq(async_ipc_queue_watch(q, ASYNC_WRITABLE), 0);
    cr_assert_eq(async_ipc_queue_unwatch(q, ASYNC_WRITABLE), 0);
    cr_assert_eq(async_ipc_queue_task_done(q), ASYNC_ENOTSUP);
    cr_assert_eq(async_ipc_queue_join(q), ASYNC_ENOTSUP);
    async_ipc_queue_free(q);
    async_ipc_queue_free(NULL);
}

static int take_one_after_100ms(void *arg)
{
    async_ipc_queue_t *q = arg;
    usleep(100000);
    char buf[8];
    size_t len;
    return async_ipc_queue_get(q, buf, sizeof buf, &len) == 0 ? 0 : 1;
}

Test(ipc_queue, backpressure_of_a_full_queue, .timeout = 10)
{
    async_ipc_queue_t *q;
    cr_assert_eq(async_ipc_queue_new(&q, 4, 8, 0), 0);
    for (int i = 0; i < 4; i++) cr_assert_eq(async_ipc_queue_tryput(q, &i, sizeof i), 0);
    int x = 4;
    cr_assert_eq(async_ipc_queue_tryput(q, &x, sizeof x), ASYNC_EAGAIN);
    int64_t t0 = async_now();
    cr_assert_eq(async_ipc_queue_put_dl(q, &x, sizeof x, t0 + ASYNC_MSEC(50)), ASYNC_ETIMEDOUT);
    cr_assert_geq(async_now() - t0, ASYNC_MSEC(50));
    cr_assert_eq(async_ipc_queue_put_dl(q, &x, sizeof x, 0), ASYNC_ETIMEDOUT);
    cr_assert_eq(async_ipc_queue_len(q), 4);
    /* A blocked put proceeds as soon as a consumer in another process makes room. */
    async_process_t *child;
    cr_assert_eq(async_process_spawn(&child, take_one_after_100ms, q), 0);
    t0 = async_now();
    cr_assert_eq(async_ipc_queue_put(q, &x, sizeof x), 0);
    cr_assert_geq(async_now() - t0, ASYNC_MSEC(50));
    cr_assert_eq(async_process_join(child), 0);
    int code;
    async_process_status(child, &code, NULL);
    cr_assert_eq(code, 0);
    async_process_free(child);
    /* Order survives: 1, 2, 3, 4. */
    for (int i = 1; i <= 4; i++) {
        int v;
        size_t len;
        cr_assert_eq(async_ipc_queue_tryget(q, &v, 8, &len), 0);
        cr_assert_eq(v, i);
    }
    async_ipc_queue_free(q);
}

static int blocked_get(void *arg)
{
    async_ipc_queue_t *q = arg;
    char buf[8];
    size_t len;
    int err = async_ipc_queue_get(q, buf, sizeof buf, &len);
    return err == ASYNC_EEOF ? 0 : 1;
}

static int blocked_put(void *arg)
{
    async_ipc_queue_t *q = arg;
    int err = async_ipc_queue_put(q, "x", 1);
    return err == ASYNC_ECLOSED ? 0 : -err % 256;
}

Test(ipc_queue, close_drains_then_end_of_stream, .timeout = 10)
{
    async_ipc_queue_t *q;
    cr_assert_eq(async_ipc_queue_new(&q, 4, 8, 0), 0);
    cr_assert_eq(async_ipc_queue_put(q, "a", 1), 0);
    cr_assert_eq(async_ipc_queue_put(q, "b", 1), 0);
    cr_assert_eq(async_ipc_queue_close(q), 0);
    cr_assert_eq(async_ipc_queue_close(q), ASYNC_EALREADY);
    cr_assert_eq(async_ipc_queue_put(q, "c", 1), ASYNC_ECLOSED);
    cr_assert_eq(async_ipc_queue_tryput(q, "c", 1), ASYNC_ECLOSED);
    char buf[8];
    size_t len;
    cr_assert_eq(async_ipc_queue_get(q, buf, sizeof buf, &len), 0);
    cr_assert_eq(buf[0], 'a');
    cr_assert_eq(async_ipc_queue_get(q, buf, sizeof buf, &len), 0);
    cr_assert_eq(buf[0], 'b');
    cr_assert_eq(async_ipc_queue_get(q, buf, sizeof buf, &len), ASYNC_EEOF);
    cr_assert_eq(async_ipc_queue_tryget(q, buf, sizeof buf, &len), ASYNC_EEOF);
    cr_assert_eq(async_ipc_queue_get_dl(q, buf, sizeof buf, &len, 0), ASYNC_EEOF);
    async_ipc_queue_free(q);
}

/* The try forms answer ASYNC_EAGAIN for "not now" in both directions, and
 * the end codes once closed: a full closed queue refuses a put as closed, not
 * as full, and a drained one answers every get with the end. */
Test(ipc_queue, try_forms_say_eagain_then_the_end_codes, .timeout = 10)
{
    async_ipc_queue_t *q;
    cr_assert_eq(async_ipc_queue_new(&q, 1, 8, 0), 0);
    char buf[8];
    size_t len;
    cr_assert_eq(async_ipc_queue_tryget(q, buf, sizeof buf, &len), ASYNC_EAGAIN, "empty");
    cr_assert_eq(async_ipc_queue_get_dl(q, buf, sizeof buf, &len, 0), ASYNC_ETIMEDOUT);
    cr_assert_eq(async_ipc_queue_tryput(q, "a", 1), 0);
    cr_assert_eq(async_ipc_queue_tryput(q, "b", 1), ASYNC_EAGAIN, "full");
    cr_assert_eq(async_ipc_queue_put_dl(q, "b", 1, 0), ASYNC_ETIMEDOUT);
    cr_assert_eq(async_ipc_queue_close(q), 0);
    cr_assert_eq(async_ipc_queue_tryput(q, "b", 1), ASYNC_ECLOSED, "full and closed");
    cr_assert_eq(async_ipc_queue_put_dl(q, "b", 1, 0), ASYNC_ECLOSED);
    cr_assert_eq(async_ipc_queue_tryget(q, buf, sizeof buf, &len), 0, "closed still drains");
    cr_assert_eq(len, 1);
    cr_assert_eq(async_ipc_queue_tryget(q, buf, sizeof buf, &len), ASYNC_EEOF);
    cr_assert_eq(async_ipc_queue_get_dl(q, buf, sizeof buf, &len, 0), ASYNC_EEOF);
    async_ipc_queue_free(q);
}

Test(ipc_queue, close_wakes_blocked_getters_and_putters, .timeout = 10)
{
    async_ipc_queue_t *empty, *full;
    cr_assert_eq(async_ipc_queue_new(&empty, 2, 8, 0), 0);
    cr_assert_eq(async_ipc_queue_new(&full, 1, 8, 0), 0);
    cr_assert_eq(async_ipc_queue_put(full, "f", 1), 0);
    async_process_t *g[3], *p[3];
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(async_process_spawn(&g[i], blocked_get, empty), 0);
        cr_assert_eq(async_process_spawn(&p[i], blocked_put, full), 0);
    }
    usleep(100000); /* let them block */
    cr_assert_eq(async_ipc_queue_close(empty), 0);
    cr_assert_eq(async_ipc_queue_close(full), 0);
    for (int i = 0; i < 3; i++) {
        int code;
        cr_assert_eq(async_process_join_dl(g[i], async_deadline_after(ASYNC_SEC(5))), 0);
        cr_assert_eq(async_process_join_dl(p[i], async_deadline_after(ASYNC_SEC(5))), 0);
        async_process_status(g[i], &code, NULL);
        cr_assert_eq(code, 0, "getter got EEOF");
        async_process_status(p[i], &code, NULL);
        cr_assert_eq(code, 0, "putter got ECLOSED: %d", code);
        async_process_free(g[i]);
        async_process_free(p[i]);
    }
    /* The item put before the close is still there. */
    char buf[8];
    size_t len;
    cr_assert_eq(async_ipc_queue_get(full, buf, sizeof buf, &len), 0);
    cr_assert_eq(async_ipc_queue_get(full, buf, sizeof buf, &len), ASYNC_EEOF);
    async_ipc_queue_free(empty);
    async_ipc_queue_free(full);
}

Test(ipc_queue, get_deadline, .timeout = 10)
{
    async_ipc_queue_t *q;
    cr_assert_eq(async_ipc_queue_new(&q, 2, 8, 0), 0);
    char buf[8];
    size_t len;
    int64_t t0 = async_now();
    cr_assert_eq(async_ipc_queue_get_dl(q, buf, sizeof buf, &len, t0 + ASYNC_MSEC(30)),
                 ASYNC_ETIMEDOUT);
    cr_assert_geq(async_now() - t0, ASYNC_MSEC(30));
    /* A get that can complete does so even with a past deadline. */
    cr_assert_eq(async_ipc_queue_put(q, "z", 1), 0);
    cr_assert_eq(async_ipc_queue_get_dl(q, buf, sizeof buf, &len, 0), 0);
    async_ipc_queue_free(q);
}

static int work_and_task_done(void *arg)
{
    async_ipc_queue_t *q = arg;
    char buf[8];
    size_t len;
    while (async_ipc_queue_get(q, buf, sizeof buf, &len) == 0) {
        usleep(1000);
        if (async_ipc_queue_task_done(q)) return 1;
    }
    return 0;
}

Test(ipc_queue, joinable_task_done_and_join, .timeout = 10)
{
    async_ipc_queue_t *q;
    cr_assert_eq(async_ipc_queue_new(&q, 16, 8, ASYNC_IPC_QUEUE_JOINABLE), 0);
    cr_assert_eq(async_ipc_queue_join(q), 0, "nothing put: nothing to wait for");
    cr_assert_eq(async_ipc_queue_task_done(q), ASYNC_EINVAL);
    for (int i = 0; i < 10; i++) cr_assert_eq(async_ipc_queue_put(q, &i, sizeof i), 0);
    cr_assert_eq(async_ipc_queue_join_dl(q, async_deadline_after(ASYNC_MSEC(20))), ASYNC_ETIMEDOUT);
    async_process_t *w;
    cr_assert_eq(async_process_spawn(&w, work_and_task_done, q), 0);
    cr_assert_eq(async_ipc_queue_join_dl(q, async_deadline_after(ASYNC_SEC(5))), 0);
    cr_assert_eq(async_ipc_queue_len(q), 0);
    cr_assert_eq(async_ipc_queue_task_done(q), ASYNC_EINVAL);
    async_ipc_queue_close(q);
    cr_assert_eq(async_process_join(w), 0);
    int code;
    async_process_status(w, &code, NULL);
    cr_assert_eq(code, 0);
    async_process_free(w);
    async_ipc_queue_free(q);
}

static int put_after_50ms(void *arg)
{
    usleep(50000);
    return async_ipc_queue_put(arg, "hi", 2) ? 1 : 0;
}

Test(ipc_queue, descriptor_protocol_with_poll, .timeout = 10)
{
    async_ipc_queue_t *q;
    cr_assert_eq(async_ipc_queue_new(&q, 2, 8, 0), 0);
    int fd = async_ipc_queue_fd(q, ASYNC_READABLE);
    cr_assert_geq(fd, 0);
    cr_assert_geq(async_ipc_queue_fd(q, ASYNC_WRITABLE), 0);
    cr_assert_neq(async_ipc_queue_fd(q, ASYNC_WRITABLE), fd);
    async_process_t *child;
    cr_assert_eq(async_process_spawn(&child, put_after_50ms, q), 0);
    cr_assert_eq(async_ipc_queue_watch(q, ASYNC_READABLE), 0);
    char buf[8];
    size_t len;
    int err, polls = 0;
    while ((err = async_ipc_queue_tryget(q, buf, sizeof buf, &len)) == ASYNC_EAGAIN) {
        struct pollfd pfd = {fd, POLLIN, 0};
        cr_assert_eq(poll(&pfd, 1, 5000), 1, "the descriptor became readable");
        cr_assert_eq(async_ipc_queue_drain_fd(q, ASYNC_READABLE), 0);
        polls++;
    }
    cr_assert_eq(async_ipc_queue_unwatch(q, ASYNC_READABLE), 0);
    cr_assert_eq(err, 0);
    cr_assert_eq(len, 2);
    cr_assert_geq(polls, 1);
    async_process_join(child);
    async_process_free(child);
    async_ipc_queue_free(q);
}

/* --- tasks ------------------------------------------------------------------ */

typedef struct task_ctx {
    async_ipc_queue_t *q;
    int get_err;
    char got[8];
    int64_t got_at;
    int ticks_at_get;
    test_ticker_t ticker;
} task_ctx_t;

static int getter_task(void *arg, void **result)
{
    (void)result;
    task_ctx_t *c = arg;
    size_t len;
    c->get_err = async_ipc_queue_get_dl(c->q, c->got, sizeof c->got, &len,
                                        async_deadline_after(ASYNC_SEC(5)));
    c->ticks_at_get = test_ticker_stop(&c->ticker);
    return 0;
}

Test(ipc_queue, task_awaits_queue_while_others_run, .timeout = 10)
{
    task_ctx_t c = {0};
    cr_assert_eq(async_ipc_queue_new(&c.q, 2, 8, 0), 0);
    async_loop_t *loop;
    cr_assert_eq(async_loop_new(&loop), 0);
    cr_assert_eq(async_task_spawn(NULL, loop, getter_task, &c, NULL), 0);
    cr_assert_eq(async_task_spawn(NULL, loop, test_ticker_task, &c.ticker, NULL), 0);
    async_process_t *child;
    cr_assert_eq(async_process_spawn(&child, put_after_50ms, c.q), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(c.get_err, 0);
    cr_assert_eq(memcmp(c.got, "hi", 2), 0);
    /* The ticker kept running while the getter waited ~50 ms. */
    cr_assert_geq(c.ticks_at_get, 5, "ticks %d", c.ticks_at_get);
    cr_assert_eq(async_loop_destroy(loop), 0);
    async_process_join(child);
    async_process_free(child);
    async_ipc_queue_free(c.q);
}

static int cancelled_getter(void *arg, void **result)
{
    (void)result;
    task_ctx_t *c = arg;
    size_t len;
    c->get_err = async_ipc_queue_get(c->q, c->got, sizeof c->got, &len);
    return 0;
}

static int canceller(void *arg, void **result)
{
    (void)result;
    async_task_t *victim = arg;
    async_sleep(ASYNC_MSEC(20));
    return async_task_cancel(*victim);
}

Test(ipc_queue, task_waiting_on_queue_can_be_cancelled_or_time_out, .timeout = 10)
{
    task_ctx_t c = {0};
    cr_assert_eq(async_ipc_queue_new(&c.q, 1, 8, 0), 0);
    async_loop_t *loop;
    cr_assert_eq(async_loop_new(&loop), 0);
    async_task_t victim;
    cr_assert_eq(async_task_spawn(&victim, loop, cancelled_getter, &c, NULL), 0);
    cr_assert_eq(async_task_spawn(NULL, loop, canceller, &victim, NULL), 0);
    async_loop_run(loop, ASYNC_RUN_DEFAULT);
    cr_assert_eq(c.get_err, ASYNC_ECANCELED);
    cr_assert_eq(async_loop_destroy(loop), 0);
    async_ipc_queue_free(c.q);
}

typedef struct put_ctx {
    async_ipc_queue_t *q;
    int err;
} put_ctx_t;

static int putter_task(void *arg, void **result)
{
    (void)result;
    put_ctx_t *c = arg;
    int64_t dl = async_deadline_after(ASYNC_MSEC(30));
    c->err = async_ipc_queue_put_dl(c->q, "y", 1, dl);
    return 0;
}

Test(ipc_queue, task_put_on_full_queue_times_out, .timeout = 10)
{
    put_ctx_t c = {0};
    cr_assert_eq(async_ipc_queue_new(&c.q, 1, 8, 0), 0);
    cr_assert_eq(async_ipc_queue_put(c.q, "x", 1), 0);
    async_loop_t *loop;
    cr_assert_eq(async_loop_new(&loop), 0);
    cr_assert_eq(async_task_spawn(NULL, loop, putter_task, &c, NULL), 0);
    int64_t t0 = async_now();
    async_loop_run(loop, ASYNC_RUN_DEFAULT);
    cr_assert_eq(c.err, ASYNC_ETIMEDOUT, "%s", async_errname(c.err));
    cr_assert_geq(async_now() - t0, ASYNC_MSEC(30));
    cr_assert_eq(async_loop_destroy(loop), 0);
    async_ipc_queue_free(c.q);
}

typedef struct multi {
    async_ipc_queue_t *q;
    int got[3], errs[3];
    int next;
} multi_t;

static int multi_getter(void *arg, void **result)
{
    (void)result;
    multi_t *m = arg;
    int me = m->next++;
    size_t len;
    m->errs[me] = async_ipc_queue_get_dl(m->q, &m->got[me], sizeof(int), &len,
                                         async_deadline_after(ASYNC_SEC(5)));
    return 0;
}

static int put_three_spaced(void *arg)
{
    for (int i = 1; i <= 3; i++) {
        usleep(20000);
        if (async_ipc_queue_put(arg, &i, sizeof i)) return 1;
    }
    return 0;
}

static int put_three_at_once(void *arg)
{
    usleep(20000);
    for (int i = 1; i <= 3; i++)
        if (async_ipc_queue_put(arg, &i, sizeof i)) return 1;
    return 0;
}

/* Several tasks wait on one queue's descriptor: each item wakes one of them,
 * also when items arrive together and one task drains the signal. */
static void several_tasks(int (*producer)(void *))
{
    multi_t m = {0};
    cr_assert_eq(async_ipc_queue_new(&m.q, 4, sizeof(int), 0), 0);
    async_loop_t *loop;
    cr_assert_eq(async_loop_new(&loop), 0);
    for (int i = 0; i < 3; i++) cr_assert_eq(async_task_spawn(NULL, loop, multi_getter, &m, NULL),
                                             0);
    async_process_t *child;
    cr_assert_eq(async_process_spawn(&child, producer, m.q), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    int sum = 0;
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(m.errs[i], 0, "task %d: %s", i, async_errname(m.errs[i]));
        sum += m.got[i];
    }
    cr_assert_eq(sum, 6, "each item got once");
    cr_assert_eq(async_loop_destroy(loop), 0);
    async_process_join(child);
    async_process_free(child);
    async_ipc_queue_free(m.q);
}

Test(ipc_queue, several_tasks_await_one_queue_spaced, .timeout = 10) { several_tasks(put_three_spaced); }
Test(ipc_queue, several_tasks_await_one_queue_burst, .timeout = 10) { several_tasks(put_three_at_once); }

static int drain_after_30ms(void *arg)
{
    usleep(30000);
    char buf[8];
    size_t len;
    for (int i = 0; i < 3; i++)
        if (async_ipc_queue_get(arg, buf, sizeof buf, &len)) return 1;
    return 0;
}

static int putter_forever(void *arg, void **result)
{
    (void)result;
    put_ctx_t *c = arg;
    for (int i = 0; i < 3 && !c->err; i++) c->err = async_ipc_queue_put(c->q, "p", 1);
    return 0;
}

Test(ipc_queue, task_put_woken_by_consumer_in_another_process, .timeout = 10)
{
    put_ctx_t c = {0};
    cr_assert_eq(async_ipc_queue_new(&c.q, 1, 8, 0), 0);
    cr_assert_eq(async_ipc_queue_put(c.q, "x", 1), 0);
    async_loop_t *loop;
    cr_assert_eq(async_loop_new(&loop), 0);
    cr_assert_eq(async_task_spawn(NULL, loop, putter_forever, &c, NULL), 0);
    async_process_t *child;
    cr_assert_eq(async_process_spawn(&child, drain_after_30ms, c.q), 0);
    async_loop_run(loop, ASYNC_RUN_DEFAULT);
    cr_assert_eq(c.err, 0);
    cr_assert_eq(async_process_join(child), 0);
    int code;
    async_process_status(child, &code, NULL);
    cr_assert_eq(code, 0);
    async_process_free(child);
    cr_assert_eq(async_loop_destroy(loop), 0);
    async_ipc_queue_free(c.q);
}
