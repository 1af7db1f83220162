/* A task that ticks every millisecond while another task of the loop waits:
 * how a test shows that a task blocked in an await left the loop free
 * (test-ipc-queue.c, test-ipc-pipe.c, test-process.c).  The waiting task calls
 * test_ticker_stop when its await returns; the ticker then ends. */
#ifndef TEST_SUPPORT_TICKER_H
#define TEST_SUPPORT_TICKER_H
#include <stdbool.h>
#include <async/task.h>

typedef struct test_ticker {
    int ticks;
    bool done;
} test_ticker_t;

/* For the waiting task, when its await returns: ends the ticker's loop;
 * the ticks it made meanwhile. */
static inline int test_ticker_stop(test_ticker_t *t)
{
    t->done = true;
    return t->ticks;
}

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
