/* Task-level synchronisation: channel, semaphore, mutex, condition variable
 * and event.
 *
 * These objects belong to one loop and are used by that loop's tasks; no OS
 * lock is taken, because tasks of a loop never run at the same time.  An
 * object belongs to the loop running on the thread that creates it (from a
 * task or a callback of that loop); one created outside any running loop
 * belongs to the first loop that uses it, and so does one whose loop was
 * freed (objects may outlive their loop).  Its loop's tasks and callbacks
 * may use it, and so may the loop's thread while the loop is not running;
 * every other caller (a task of another loop, another thread) gets
 * ASYNC_EWRONGLOOP from every call that returns an int, which then does
 * nothing.  The reads that return a count or a flag (async_chan_len,
 * async_sem_value, async_event_is_set) are not checked: call them only
 * where the others are allowed.  The check that refuses another thread
 * reads the object's loop, so a loop must not be freed while another thread
 * may still call on its objects: free it once such threads are joined or
 * told to stop (the object is then unbound, and theirs to bind).
 *
 * Waiters are served first come, first served.  Every blocking call has a
 * _dl form (ASYNC_ETIMEDOUT when the deadline passes before it can
 * complete); the channel, semaphore, mutex and event also have a try form
 * (ASYNC_EAGAIN instead of waiting), and the condition wait, which exists to
 * wait, has none.  A call that would have to wait returns ASYNC_ENOTASK
 * outside a task.
 *
 * Cancellation and deadlines: a call that can complete at once completes,
 * even in a cancelled task and even when its deadline has passed; one that
 * would have to wait returns ASYNC_ECANCELED in a cancelled task (unless a
 * shield holds the cancellation off: async_task_shield), and a wait under
 * way ends with ASYNC_ECANCELED when its task is cancelled.  A try form never
 * returns ASYNC_ECANCELED. */
#ifndef ASYNC_SYNC_H
#define ASYNC_SYNC_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Channel: a bounded FIFO of fixed-size elements.  capacity 0 makes a
 * rendezvous channel: send completes when a receiver takes the element. */
typedef struct async_chan async_chan_t;

/* Errors: ASYNC_EINVAL (elem_size 0), ASYNC_ENOMEM. */
ASYNC_API int async_chan_new(async_chan_t **out, size_t elem_size, size_t capacity);

/* Frees the channel.  Errors: ASYNC_EBUSY while tasks wait on it, in a send,
 * a receive or a select (close it first and let them leave: a select woken
 * by the close counts until it has returned), ASYNC_EWRONGLOOP. */
ASYNC_API int async_chan_destroy(async_chan_t *chan);

/* Copies elem in, waiting while the channel is full.
 * Errors: ASYNC_ECLOSED (closed before or while waiting; elem not sent),
 * ASYNC_EWRONGLOOP. */
ASYNC_API int async_chan_send(async_chan_t *chan, const void *elem);
ASYNC_API int async_chan_send_dl(async_chan_t *chan, const void *elem, int64_t deadline);
ASYNC_API int async_chan_trysend(async_chan_t *chan, const void *elem);

/* Copies the oldest element out to *elem (OUT), waiting while empty.
 * Errors: ASYNC_EEOF (closed and drained: the stream ended, also for a
 * receiver waiting when the channel is closed), ASYNC_EWRONGLOOP. */
ASYNC_API int async_chan_recv(async_chan_t *chan, void *elem);
ASYNC_API int async_chan_recv_dl(async_chan_t *chan, void *elem, int64_t deadline);
ASYNC_API int async_chan_tryrecv(async_chan_t *chan, void *elem);

/* Closes the channel: waiting senders and later sends fail with
 * ASYNC_ECLOSED; receivers drain what is buffered, then get ASYNC_EEOF.
 * Errors: ASYNC_EALREADY (already closed), ASYNC_EWRONGLOOP. */
ASYNC_API int async_chan_close(async_chan_t *chan);

/* Number of buffered elements. */
ASYNC_API size_t async_chan_len(const async_chan_t *chan);

/* Semaphore, for example to cap how many tasks do something at once.  Every
 * call below may also return ASYNC_EWRONGLOOP. */
typedef struct async_sem async_sem_t;

/* Errors: ASYNC_ENOMEM. */
ASYNC_API int async_sem_new(async_sem_t **out, unsigned value);

/* Errors: ASYNC_EBUSY while tasks wait on it (nothing is freed). */
ASYNC_API int async_sem_destroy(async_sem_t *sem);

/* Takes a permit, waiting while none is free (or others wait before).
 * try: ASYNC_EAGAIN instead of waiting. */
ASYNC_API int async_sem_acquire(async_sem_t *sem);
ASYNC_API int async_sem_acquire_dl(async_sem_t *sem, int64_t deadline);
ASYNC_API int async_sem_tryacquire(async_sem_t *sem);

/* Gives a permit back: to the longest waiter, or to the count.  Callable
 * outside a task.  Errors: ASYNC_EINVAL (the count would pass UINT_MAX; it
 * is left unchanged). */
ASYNC_API int async_sem_release(async_sem_t *sem);

/* The count of free permits. */
ASYNC_API unsigned async_sem_value(const async_sem_t *sem);

/* Mutex, held by a task.  A task that ends holding it leaves it held for
 * good (as an abandoned pthread mutex): no later task, of its loop or of a
 * loop made after that one was freed, holds it or may unlock it.  Every call
 * below may also return ASYNC_EWRONGLOOP. */
typedef struct async_mutex async_mutex_t;

/* Errors: ASYNC_ENOMEM. */
ASYNC_API int async_mutex_new(async_mutex_t **out);

/* Errors: ASYNC_EBUSY while held or waited for, also by a task in a
 * condition wait on it, which takes it again before it returns (a broadcast
 * does not end that: let the woken tasks return first); nothing is freed. */
ASYNC_API int async_mutex_destroy(async_mutex_t *mutex);

/* Locks, waiting while another task holds it.  Every form must be called
 * from a task, even trylock (the owner is a task).  Errors: ASYNC_ENOTASK,
 * ASYNC_EALREADY (the calling task holds it: it is not recursive); try:
 * ASYNC_EAGAIN instead of waiting. */
ASYNC_API int async_mutex_lock(async_mutex_t *mutex);
ASYNC_API int async_mutex_lock_dl(async_mutex_t *mutex, int64_t deadline);
ASYNC_API int async_mutex_trylock(async_mutex_t *mutex);

/* Unlocks and hands the lock to the longest waiter.  Errors: ASYNC_EPERM
 * (the caller is not the task holding it). */
ASYNC_API int async_mutex_unlock(async_mutex_t *mutex);

/* Condition variable, used with a task mutex as with pthread_cond_t: wait
 * while holding the mutex until another task changes the state it guards
 * and signals.  Wake-ups are never spurious (a woken wait returns 0 only
 * after a signal or broadcast), but another task may run first and change
 * the state again: test the predicate in a loop.  Waiters are woken first
 * come, first served.  Every call below may also return ASYNC_EWRONGLOOP. */
typedef struct async_cond async_cond_t;

/* Errors: ASYNC_ENOMEM. */
ASYNC_API int async_cond_new(async_cond_t **out);

/* Errors: ASYNC_EBUSY while tasks wait on it (nothing is freed). */
ASYNC_API int async_cond_destroy(async_cond_t *cond);

/* Releases mutex, which the calling task must hold, and waits for a signal,
 * as one step: no other task can signal in between.  Before returning it
 * takes the mutex again, whatever ended the wait (a signal, the deadline,
 * cancellation), so the caller always holds the mutex afterwards, and may
 * have to wait for it behind other lockers.  A wait that cannot begin (the
 * task is cancelled, the deadline has passed) returns at once without
 * releasing the mutex.  Errors: ASYNC_ENOTASK, ASYNC_EPERM (the calling task
 * does not hold mutex), ASYNC_ETIMEDOUT (_dl), ASYNC_ECANCELED; a signal
 * that reached the waiter before its deadline or cancellation stands (0). */
ASYNC_API int async_cond_wait(async_cond_t *cond, async_mutex_t *mutex);
ASYNC_API int async_cond_wait_dl(async_cond_t *cond, async_mutex_t *mutex, int64_t deadline);

/* Wakes the longest waiter (signal) or every waiter (broadcast); nothing
 * when none waits (a signal is not remembered).  Callable outside a task,
 * with or without the mutex held. */
ASYNC_API int async_cond_signal(async_cond_t *cond);
ASYNC_API int async_cond_broadcast(async_cond_t *cond);

/* Event: a flag tasks wait for; set wakes every waiter.  Every call below
 * that returns an int may also return ASYNC_EWRONGLOOP. */
typedef struct async_event async_event_t;

/* Errors: ASYNC_ENOMEM. */
ASYNC_API int async_event_new(async_event_t **out);

/* Errors: ASYNC_EBUSY while tasks wait on it (nothing is freed). */
ASYNC_API int async_event_destroy(async_event_t *event);

/* Sets the flag and wakes every waiter; clear resets it.  Both are
 * callable outside a task and return 0 apart from ASYNC_EWRONGLOOP. */
ASYNC_API int async_event_set(async_event_t *event);
ASYNC_API int async_event_clear(async_event_t *event);
ASYNC_API bool async_event_is_set(const async_event_t *event);

/* Waits until the flag is set (returns at once if it is); try: 0 if it is
 * set, ASYNC_EAGAIN if not, callable outside a task. */
ASYNC_API int async_event_wait(async_event_t *event);
ASYNC_API int async_event_wait_dl(async_event_t *event, int64_t deadline);
ASYNC_API int async_event_trywait(async_event_t *event);

#ifdef __cplusplus
}
#endif
#endif
