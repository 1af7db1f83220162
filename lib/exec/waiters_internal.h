/* Tasks that wait beside threads on a condition guarded by a pthread mutex.
 * PRIVATE: never installed.
 *
 * A thread waits on a condition variable under the mutex; a task must not
 * (it would block its loop's thread), so it lists itself here under the same
 * mutex and suspends, and whoever changes the condition wakes the list under
 * the mutex as it signals the condition variable.  The wake reaches the task
 * through a post to its loop, in a heap record shared by the task and at most
 * one post in flight: the last of the two frees it, so a task whose wait
 * ended meanwhile (deadline, cancellation) leaves nothing a late post could
 * touch. */
#ifndef ASYNC_EXEC_WAITERS_INTERNAL_H
#define ASYNC_EXEC_WAITERS_INTERNAL_H

#include <pthread.h>
#include "core/core_internal.h"

typedef struct async__twaiters {
    async__list_t list; /* listed records, under the guarding mutex */
} async__twaiters_t;

void async__twaiters_init(async__twaiters_t *w);

/* In a task, with mu held: lists the task on w, drops mu, suspends until a
 * wake, the deadline or the task's cancellation (unless shielded), then
 * takes mu again.  Returns 0 (woken: look at the condition again),
 * ASYNC_ETIMEDOUT, ASYNC_ECANCELED, or ASYNC_ENOMEM (nothing waited). */
int async__twait_locked(async__twaiters_t *w, pthread_mutex_t *mu, int64_t deadline);

/* As async__twait_locked without a deadline, deaf to the task's
 * cancellation (it stays pending for the task's next wait), and pausing 1 ms
 * instead of failing when out of memory: for a caller that must not return
 * before the condition holds because work still writes its memory.  Returns
 * with mu held; the caller looks at the condition again. */
void async__twait_shielded_locked(async__twaiters_t *w, pthread_mutex_t *mu);

/* With the guarding mutex held: wakes every task listed on w (each looks at
 * the condition again).  Callable from any thread; never blocks. */
void async__twaiters_wake_locked(async__twaiters_t *w);

#endif
