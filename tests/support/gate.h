/* A gate for executor tests: a job (hold) that keeps its worker until the
 * gate opens, so that the jobs submitted meanwhile stay queued behind it;
 * and an order probe (record_order, order_of) that tells in which order the
 * queued jobs then ran. */
#ifndef TEST_SUPPORT_GATE_H
#define TEST_SUPPORT_GATE_H
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>
#include <async/executor.h>
#include <async/future.h>
#include <criterion/criterion.h>

/* `started` says the hold job has been taken. */
typedef struct {
    atomic_int open, started;
} gate_t;

static inline int hold(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in, (void)in_size, (void)out, (void)out_size;
    gate_t *g = ctx;
    atomic_store(&g->started, 1);
    while (!atomic_load(&g->open)) usleep(100);
    return 0;
}

/* Holds one of ex's workers (its only one, for a pool of one) until
 * open_gate; returns the hold job's future once the job runs. */
static inline async_future_t *block_worker(async_executor_t *ex, gate_t *g)
{
    atomic_store(&g->open, 0);
    atomic_store(&g->started, 0);
    async_job_t j = {.fn = hold, .ctx = g};
    async_future_t *f;
    cr_assert_eq(async_executor_submit(&f, ex, &j), 0);
    while (!atomic_load(&g->started)) usleep(100);
    return f;
}

/* Opens the gate, waits for the hold job and lets go of its future. */
static inline void open_gate(gate_t *g, async_future_t *f)
{
    atomic_store(&g->open, 1);
    cr_assert_eq(async_future_wait(f), 0);
    async_future_unref(f);
}

/* The next number record_order hands out; a test stores 0 before its jobs. */
static atomic_int order_next;

/* A job that writes, as its output, how many record_order jobs ran before it. */
static inline int record_order(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in, (void)in_size, (void)ctx;
    int at = atomic_fetch_add(&order_next, 1);
    if (out_size >= sizeof at) memcpy(out, &at, sizeof at);
    return 0;
}

/* Waits for a record_order job's future (which must end DONE) and returns
 * its number. */
static inline int order_of(async_future_t *f)
{
    cr_assert_eq(async_future_wait(f), 0);
    const void *d;
    size_t n;
    cr_assert_eq(async_future_result(f, &d, &n), 0);
    cr_assert_eq(n, sizeof(int));
    int at;
    memcpy(&at, d, sizeof at);
    return at;
}
#endif
