/* A thread executor for executor tests: `workers` workers (0: the default)
 * and at most `max_queued` jobs waiting (0: unbounded); the test fails if it
 * cannot be made. */
#ifndef TEST_SUPPORT_POOL_H
#define TEST_SUPPORT_POOL_H
#include <async/executor.h>
#include <criterion/criterion.h>

static inline async_executor_t *test_thread_pool(unsigned workers, size_t max_queued)
{
    async_executor_opts_t o = {.backend = ASYNC_BACKEND_THREADS, .workers = workers,
                               .max_queued = max_queued};
    async_executor_t *ex = NULL;
    int r = async_executor_new(&ex, &o);
    cr_assert_eq(r, 0, "executor_new: %s", async_strerror(r));
    return ex;
}
#endif
