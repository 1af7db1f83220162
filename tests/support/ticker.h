/* A task that ticks every millisecond while another task of the loop waits:
 * how a test shows that a task blocked in an await left the loop free
 * (test-ipc-queue.c, test-ipc-pipe.c).  The waiting task reads ticks when
 * its await returns and sets done; the ticker then ends. */
#ifndef TEST_SUPPORT_TICKER_H
#define TEST_SUPPORT_TICKER_H
#include <stdbool.h>
#include <async/task.h>

typedef struct test_ticker {
    int ticks;
    bool done;
} test_ticker_t;

/* A task body (async_task_spawn) for a test_ticker_t *arg. */
static inline int test_ticker_task(void *arg, void **result)
{
    (void)result;
    test_ticker_t *t = arg;
    while (!t->done) {
        t->ticks++;
        async_sleep(ASYNC_MSEC(1));
    }
    return 0;
}
#endif
