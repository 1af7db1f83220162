#include <async.h>
#include <stdio.h>

/* A task: sleeps, then hands its argument back doubled. */
static int worker(void *arg, void **result)
{
    intptr_t n = (intptr_t)arg;
    int rc = async_sleep(ASYNC_MSEC(100 * n)); /* other tasks run meanwhile */
    *result = (void *)(n * 2);
    return rc;
}

static int main_task(void *arg, void **result)
{
    (void)arg, (void)result;
    async_task_t tasks[3];
    for (intptr_t i = 0; i < 3; i++) {
        int rc = async_task_spawn(&tasks[i], NULL, worker, (void *)(i + 1), NULL);
        if (rc) return rc;
    }
    void *results[3];
    int rc = async_gather(tasks, 3, results, NULL); /* ~0.3 s, not 0.6 s */
    for (int i = 0; i < 3; i++) printf("task %d -> %ld\n", i, (long)(intptr_t)results[i]);

    /* A bounded channel between a producer task and this one. */
    async_chan_t *chan;
    if (rc || (rc = async_chan_new(&chan, sizeof(int), 4))) return rc;
    for (int i = 0; i < 4; i++) async_chan_send(chan, &i);
    async_chan_close(chan);
    for (int v; async_chan_recv(chan, &v) == 0;) printf("received %d\n", v);
    return async_chan_destroy(chan);
}

int main(void)
{
    async_loop_t *loop = NULL;
    int rc = async_loop_new(&loop);
    if (rc == 0) rc = async_task_spawn(NULL, loop, main_task, NULL, NULL);
    if (rc == 0) async_loop_run(loop, ASYNC_RUN_DEFAULT); /* until no task is left */
    if (rc) fprintf(stderr, "tour: %s\n", async_strerror(rc));
    async_loop_destroy(loop);
    return rc ? 1 : 0;
}
