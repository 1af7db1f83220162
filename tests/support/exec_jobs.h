/* What the executor's hostile tests share (test-map-limits.c,
 * test-map-interrupted.c, test-executor-oom.c, test-executor-full-queue.c):
 * the counting allocator as a suite's set-up and leak check, two work
 * functions, a thread pool, the check that a pool still maps after a hostile
 * call, and a lazy map's source of counted items. */
#ifndef TEST_SUPPORT_EXEC_JOBS_H
#define TEST_SUPPORT_EXEC_JOBS_H
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>
#include <async.h>
#include <async/executor.h>
#include "alloc.h"
#include "teardown.h"

static inline void test_exec_setup(void) { test_alloc_install(); }
static inline void test_exec_teardown(void)
{
    TEARDOWN_CHECK_NO_LEAK();
    test_alloc_uninstall();
}

static inline int twice(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out_size, (void)ctx;
    *(int64_t *)out = 2 * *(const int64_t *)in;
    return 0;
}

static inline int nothing(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in, (void)in_size, (void)out, (void)out_size, (void)ctx;
    return 0;
}

static inline async_executor_t *threads(unsigned workers)
{
    async_executor_t *ex = NULL;
    int r = async_executor_new(&ex, &(async_executor_opts_t){.backend = ASYNC_BACKEND_THREADS,
                                                             .workers = workers});
    cr_assert_eq(r, 0, "executor_new: %s", async_strerror(r));
    return ex;
}

/* The pool still maps after the hostile call. */
static inline void still_maps(async_executor_t *ex)
{
    int64_t in[5] = {1, 2, 3, 4, 5}, out[5] = {0};
    async_map_t m;
    async_map_init(&m);
    m.fn = twice, m.in = in, m.in_size = sizeof in[0], m.out = out, m.out_size = sizeof out[0];
    m.n = 5;
    cr_assert_eq(async_executor_map(ex, &m, NULL), 0);
    for (int i = 0; i < 5; i++) cr_assert_eq(out[i], 2 * in[i]);
}


/* A source that yields count items of 8 bytes, then ASYNC_EEOF. */
typedef struct counted {
    int64_t next, count;
} counted_t;

static inline int counted_source(void *arg, void *item)
{
    counted_t *c = arg;
    if (c->next >= c->count) return ASYNC_EEOF;
    memcpy(item, &c->next, sizeof c->next);
    c->next++;
    return 0;
}

#endif
