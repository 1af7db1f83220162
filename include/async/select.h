/* Select over channels: wait on several sends and receives at once and learn
 * which one fired (Go's select, libdill's choose).
 *
 * A select tries its cases in the order given and completes the first one that
 * can complete, so earlier cases have priority; when none can, the task waits
 * until one can, the deadline passes or the task is cancelled.  Exactly one
 * case completes, or none: a select that returns an error has sent and
 * received nothing.  Like the channel calls it builds on (sync.h), it belongs
 * to one loop's tasks.  Limitation: a send case on a rendezvous channel
 * (capacity 0) completes only with a receiver blocked in async_chan_recv, not
 * with a receiver that is itself waiting in a select (and the other way round);
 * give such channels a capacity of 1 or more. */
#ifndef ASYNC_SELECT_H
#define ASYNC_SELECT_H

#include "common.h"
#include "sync.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum async_select_op {
    ASYNC_SELECT_RECV = 1, /* receive into elem (OUT) */
    ASYNC_SELECT_SEND = 2, /* send a copy of elem */
} async_select_op_t;

typedef struct async_select_case {
    async_chan_t *chan; /* NULL: the case is ignored (Go's nil channel) */
    async_select_op_t op;
    void *elem;         /* the element to send, or where to receive */
} async_select_case_t;

/* Completes one of the n cases; *fired (OUT) is its index.  Returns 0, or
 * with *fired naming a case whose channel is closed: ASYNC_ECLOSED for a
 * send to it, ASYNC_EEOF for a receive from it once drained.  A case that can
 * complete at once completes even in a cancelled task.  Errors:
 * ASYNC_ETIMEDOUT (_dl), ASYNC_ECANCELED (the task is cancelled and no case
 * can complete now), ASYNC_ENOTASK (would wait outside a task), ASYNC_EINVAL
 * (cases NULL, n 0, fired NULL, an unknown op, a case without elem),
 * ASYNC_ENOMEM (a wait over more than 8 cases found no memory for their
 * watchers).  Only a channel's change ends the wait early: a waker the task
 * took for something else (async_task_waker) cannot.  async_tryselect returns ASYNC_EAGAIN instead of waiting, and never
 * ASYNC_ECANCELED or ASYNC_ENOTASK. */
ASYNC_API int async_select(async_select_case_t *cases, size_t n, size_t *fired);
ASYNC_API int async_select_dl(async_select_case_t *cases, size_t n, size_t *fired, int64_t deadline);
ASYNC_API int async_tryselect(async_select_case_t *cases, size_t n, size_t *fired);

#ifdef __cplusplus
}
#endif
#endif
