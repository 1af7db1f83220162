/* Process-shared IPC: shared memory, a message queue, message pipes, shared
 * values, arrays and a dictionary, and locks, semaphores, events, conditions and barriers
 * that work between processes (Python's multiprocessing toolbox, for C).
 *
 * Sharing model.  Every object below except the pipe lives in its own shared
 * memory mapping (MAP_SHARED), created by one process and inherited by the
 * children it forks afterwards: the handle is a pointer into that mapping and
 * stays valid, unchanged, in every child.  Each process that holds a handle
 * (the creator and every child) calls the object's _free once when done with
 * it, which unmaps its own view (and closes its own descriptors); the object
 * is gone when the last view is.  Do not free an object while another process
 * may still use it through the view being freed.  An async_shm_t region can
 * also be handed to an unrelated process as a descriptor.
 *
 * Waiting.  Every call that can wait without limit has a _dl form taking an
 * absolute deadline on async_now()'s clock (ASYNC_FOREVER: none; any value at
 * or before now, 0 included, has passed) and returning ASYNC_ETIMEDOUT when
 * it passes; an operation that can complete at once does so even when its
 * deadline has passed.  (The shared dictionary waits only for other calls'
 * bounded work and has none; see there.)  Try forms never wait: ASYNC_EAGAIN
 * when they cannot complete now.  Queue puts and gets and pipe operations
 * called from inside a libasync task wait through the loop (async_wait_fd_dl)
 * instead of blocking the thread, so the loop's other tasks keep running;
 * they then also return ASYNC_ECANCELED when the task is cancelled while
 * they would have to wait.  Everything else (locks, semaphores, events,
 * conditions, barriers, shared values, arrays and the dictionary, queue join)
 * blocks the calling thread, even in a task, and is never cancelled.
 *
 * Robustness.  The locks (including the ones inside shared values and arrays)
 * are robust: when a process dies holding one, the next locker gets it with
 * ASYNC_EOWNERDEAD (the lock is then held and usable again; repair the state it
 * protects).  Semaphores, events, conditions and barriers repair their own
 * internal state the same way and never report it.  The queue survives the
 * death of any producer or consumer at any point (see below).  A process
 * killed between a change (a put, get, close, release, set, signal) and its
 * wake-up call leaves the sleepers it should have woken to notice the change
 * themselves: every sleep in this module re-checks at least every 200 ms, so
 * such a death delays them by that much, never for ever (user loops on
 * async_ipc_queue_fd: poll with a timeout of that order too).
 *
 * Stray writes.  Every process maps each object writable, so one process's
 * overrun or wild pointer can land in memory the others trust.  The sizes,
 * counts and descriptors a queue, a dictionary, a value or an array fixes
 * at creation (capacity, sizes, eventfds, the mapping's size) are on a page
 * that is read-only once they are set (on systems with 4 KiB pages): a
 * write there kills the writer with SIGSEGV.  The smaller objects' _free
 * unmaps their fixed size, whatever their header says.  What calls change (a queue's counters and message lengths, a
 * dictionary's key and value lengths) is checked before it is used: a call
 * that meets a value no call writes fails with ASYNC_EIO instead of reading
 * or writing past the object or the caller's buffer, and never waits for a
 * state that cannot come.  The locks and futex words themselves, and the
 * bytes of messages, values and keys, are trusted: a scribbled lock word can
 * hold everyone up, a scribbled message is delivered as it is. */
#ifndef ASYNC_IPC_H
#define ASYNC_IPC_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* --- shared memory regions ------------------------------------------------ */

/* A zero-filled shared memory region backed by a memfd.  The handle is
 * process-local (children inherit a copy through fork); the memory is shared
 * with every process that maps the region. */
typedef struct async_shm async_shm_t;

/* Creates a region of size bytes (rounded up to pages by the kernel).  The
 * memfd is sealed against shrinking (F_SEAL_SHRINK), so no holder of its
 * descriptor can truncate the memory under the other users (they would die
 * of SIGBUS); growing it stays allowed.  A descriptor async_shm_attach maps
 * but this library did not create carries whatever seals its owner set.
 * Errors: ASYNC_EINVAL (out NULL, size 0 or above PTRDIFF_MAX), ASYNC_ENOMEM,
 * or the system's -errno. */
ASYNC_API int async_shm_new(async_shm_t **out, size_t size);

/* Maps a region from a descriptor another process handed over (inherited
 * across exec, or passed with SCM_RIGHTS).  The handle takes its own
 * duplicate of fd; the caller keeps fd.  Errors: ASYNC_EINVAL (out NULL, or
 * not a region: size 0), ASYNC_ENOMEM, or the system's -errno (EBADF, ...). */
ASYNC_API int async_shm_attach(async_shm_t **out, int fd);

/* The mapped memory, its size, and the region's descriptor (owned by the
 * handle, close-on-exec; clear FD_CLOEXEC on a dup to hand it to exec). */
ASYNC_API void *async_shm_ptr(const async_shm_t *shm);
ASYNC_API size_t async_shm_size(const async_shm_t *shm);
ASYNC_API int async_shm_fd(const async_shm_t *shm);

/* Unmaps this process's view and closes its descriptor.  NULL is ignored. */
ASYNC_API void async_shm_free(async_shm_t *shm);

/* --- the queue -------------------------------------------------------------- */

/* A bounded multi-producer multi-consumer FIFO of byte messages between
 * processes.  Each message is 0 to max_msg bytes.  Items put by one producer
 * are got in the order it put them.  Waiting is cheap: a put or get only makes
 * a system call when the other side is asleep waiting for it (or, briefly,
 * when two processes reach the queue's lock at the same moment).
 *
 * Death of a peer.  Any producer or consumer may be killed (even SIGKILL) at
 * any instruction, also while inside put or get: the queue stays usable by
 * everyone else, and at most the one message in the dead process's hands is
 * lost.  A put in progress either took effect or left no trace; a get in
 * progress either left the message in the queue for the next getter or took
 * it (then it is gone with the dead process).  No message is ever got twice.
 * A process stopped (SIGSTOP, a debugger) inside put or get holds up the
 * others until it continues or dies.  On a JOINABLE queue, a message lost
 * with a dead consumer is never marked done: join_dl with a deadline. */
typedef struct async_ipc_queue async_ipc_queue_t;

#define ASYNC_IPC_QUEUE_JOINABLE 1u /* count unfinished items: task_done/join */

/* Creates a queue of capacity messages of at most max_msg bytes each; flags
 * is 0 or ASYNC_IPC_QUEUE_JOINABLE.  Errors: ASYNC_EINVAL (out NULL,
 * capacity 0, max_msg 0 or above 1 GiB, unknown flags, or too big altogether),
 * ASYNC_ENOMEM, or the system's -errno (descriptors exhausted). */
ASYNC_API int async_ipc_queue_new(async_ipc_queue_t **out, size_t capacity, size_t max_msg,
                                  unsigned flags);

/* Unmaps this process's view and closes its descriptors.  NULL is ignored. */
ASYNC_API void async_ipc_queue_free(async_ipc_queue_t *q);

/* Copies len bytes from msg in as one message, waiting while the queue is
 * full; tryput never waits.  Errors: ASYNC_EINVAL (len > max_msg, or msg
 * NULL with len > 0), ASYNC_ECLOSED (closed before or while waiting: not
 * put; also when it is full), ASYNC_EAGAIN (tryput: the queue is full),
 * ASYNC_ETIMEDOUT (_dl: still full at the deadline), ASYNC_ECANCELED (put and
 * put_dl in a task that was cancelled while it would have to wait),
 * ASYNC_EIO (a stray write left the counters with more messages than slots,
 * or more got than put: not put, and every later put and get fails so). */
ASYNC_API int async_ipc_queue_put(async_ipc_queue_t *q, const void *msg, size_t len);
ASYNC_API int async_ipc_queue_put_dl(async_ipc_queue_t *q, const void *msg, size_t len,
                                     int64_t deadline);
ASYNC_API int async_ipc_queue_tryput(async_ipc_queue_t *q, const void *msg, size_t len);

/* Takes the oldest message into buf, which must have room for max_msg bytes
 * (cap >= max_msg), and its length into *len (OUT, may be NULL), waiting
 * while the queue is empty; tryget never waits.  Errors: ASYNC_EINVAL (cap <
 * max_msg, or buf NULL), ASYNC_EEOF (the queue is closed and drained),
 * ASYNC_EAGAIN (tryget: empty, not closed), ASYNC_ETIMEDOUT (_dl: still empty
 * at the deadline), ASYNC_ECANCELED (get and get_dl in a task that was
 * cancelled while it would have to wait), ASYNC_EIO (a stray write: the
 * oldest message's length was past max_msg, and the message is dropped,
 * counted as got (task_done it on a JOINABLE queue), nothing copied, so the
 * next get takes the next one; or the counters are broken, as for put). */
ASYNC_API int async_ipc_queue_get(async_ipc_queue_t *q, void *buf, size_t cap, size_t *len);
ASYNC_API int async_ipc_queue_get_dl(async_ipc_queue_t *q, void *buf, size_t cap, size_t *len,
                                     int64_t deadline);
ASYNC_API int async_ipc_queue_tryget(async_ipc_queue_t *q, void *buf, size_t cap, size_t *len);

/* Closes the queue for every process: puts fail with ASYNC_ECLOSED from now
 * on (and waiting putters wake up to fail); getters drain what was put, then
 * get ASYNC_EEOF.  Errors: ASYNC_EALREADY (already closed). */
ASYNC_API int async_ipc_queue_close(async_ipc_queue_t *q);

/* Messages in the queue now (a snapshot that other processes may change at
 * once), its capacity and its maximum message size. */
ASYNC_API size_t async_ipc_queue_len(const async_ipc_queue_t *q);
ASYNC_API size_t async_ipc_queue_capacity(const async_ipc_queue_t *q);
ASYNC_API size_t async_ipc_queue_max_msg(const async_ipc_queue_t *q);

/* JoinableQueue.  Every put counts one unfinished item; task_done marks one
 * finished; join waits until none is unfinished.  Errors: ASYNC_ENOTSUP (the
 * queue was not made JOINABLE), ASYNC_EINVAL (task_done called more times
 * than items were put), ASYNC_ETIMEDOUT (join_dl).  Unlike put and get, join
 * blocks the calling thread even inside a task (the loop stalls meanwhile):
 * in a task, join only when the consumers are other processes or threads. */
ASYNC_API int async_ipc_queue_task_done(async_ipc_queue_t *q);
ASYNC_API int async_ipc_queue_join(async_ipc_queue_t *q);
ASYNC_API int async_ipc_queue_join_dl(async_ipc_queue_t *q, int64_t deadline);

/* Descriptors for waiting on the queue from your own event loop.
 * async_ipc_queue_fd gives an eventfd that becomes readable when the queue
 * may have changed in the direction asked (the event flags of task.h):
 * ASYNC_READABLE (a get may succeed,
 * or the queue closed) or ASYNC_WRITABLE (a put may succeed, or closed).
 * Producers and consumers only signal it while someone watches, so bracket
 * the wait with watch/unwatch, and drain the descriptor after each wake-up,
 * before trying again:
 *
 *     int fd = async_ipc_queue_fd(q, ASYNC_READABLE);
 *     async_ipc_queue_watch(q, ASYNC_READABLE);
 *     while ((err = async_ipc_queue_tryget(q, buf, cap, &len)) == ASYNC_EAGAIN) {
 *         struct pollfd pfd = {.fd = fd, .events = POLLIN};
 *         poll(&pfd, 1, -1);           (or your loop's wait for fd readable)
 *         async_ipc_queue_drain_fd(q, ASYNC_READABLE);
 *     }
 *     async_ipc_queue_unwatch(q, ASYNC_READABLE);
 *     (err is 0 with a message, ASYNC_EEOF once closed and drained, ...)
 *
 * Readiness may be spurious; always retry the try form.  A peer killed
 * between its commit and its signal never signals: poll with a timeout
 * (get/put in a task re-check every 200 ms) if peers may die.  get/put called in a
 * task do exactly this through async_wait_fd_dl.  Any thread of any process
 * holding the queue may call these; none of them waits.  The count of
 * watchers is shared by every process: each watch is undone by one unwatch.
 * Errors (all four): ASYNC_EINVAL (q NULL, or events not exactly one of
 * ASYNC_READABLE and ASYNC_WRITABLE; unwatch also when nobody watches that
 * direction).  fd returns the descriptor (>= 0), owned by the queue. */
ASYNC_API int async_ipc_queue_fd(const async_ipc_queue_t *q, int events);
ASYNC_API int async_ipc_queue_watch(async_ipc_queue_t *q, int events);
ASYNC_API int async_ipc_queue_unwatch(async_ipc_queue_t *q, int events);
ASYNC_API int async_ipc_queue_drain_fd(async_ipc_queue_t *q, int events);

/* --- pipes ------------------------------------------------------------------ */

/* One end of a message pipe over a socketpair: each send is received whole,
 * as one message, in order.  Ends are process-local handles over a descriptor;
 * after fork, each process frees the end it does not use, so that the other
 * side sees end-of-stream when the user closes.  One sender and one receiver
 * per end at a time (use a lock to share an end between processes). */
typedef struct async_ipc_pipe async_ipc_pipe_t;

#define ASYNC_IPC_PIPE_ONEWAY 1u /* *a only receives, *b only sends */
#define ASYNC_IPC_PIPE_MAX_MSG ((size_t)1 << 30)

/* Creates a connected pair of ends.  Duplex by default: each end sends to and
 * receives from the other.  On failure *a and *b are left as they were, or
 * set to NULL (so freeing both after a failure is safe when they started
 * NULL).  Errors: ASYNC_EINVAL (a or b NULL, unknown flags), ASYNC_ENOMEM, or
 * the system's -errno (descriptors exhausted). */
ASYNC_API int async_ipc_pipe_new(async_ipc_pipe_t **a, async_ipc_pipe_t **b, unsigned flags);

/* Closes this process's end.  Messages already sent stay readable by the peer,
 * which then gets ASYNC_EEOF.  NULL is ignored. */
ASYNC_API void async_ipc_pipe_free(async_ipc_pipe_t *p);

/* Sends len bytes as one message, waiting while the pipe is full (a
 * deadline that has passed, 0 for one, still sends what fits at once).
 * Errors: ASYNC_EINVAL (len > ASYNC_IPC_PIPE_MAX_MSG, or msg NULL with
 * len > 0), ASYNC_ENOTSUP (a receive-only end), ASYNC_EPIPE (the peer
 * closed), ASYNC_ETIMEDOUT (_dl; the message may then be partly sent and the
 * pipe is unusable: free it), ASYNC_ECANCELED (in a task cancelled while it
 * would have to wait, same caveat), or the system's -errno. */
ASYNC_API int async_ipc_pipe_send(async_ipc_pipe_t *p, const void *msg, size_t len);
ASYNC_API int async_ipc_pipe_send_dl(async_ipc_pipe_t *p, const void *msg, size_t len,
                                     int64_t deadline);

/* Receives the next message into buf (cap bytes; buf may be NULL when cap
 * is 0) and its length into *len (OUT), waiting until a whole message is
 * there; tryrecv never waits (a message already there is received even when
 * the deadline has passed).  A message longer than cap is left in the pipe,
 * *len is set to its length and ASYNC_EINVAL returned: call again with a
 * bigger buffer.  Errors: ASYNC_EEOF (the peer closed and every message was
 * read), ASYNC_ENOTSUP (a send-only end), ASYNC_EINVAL (len NULL, buf NULL
 * with cap > 0, or the message is longer than cap), ASYNC_EIO (the peer
 * closed in the middle of a message, or announced one longer than
 * ASYNC_IPC_PIPE_MAX_MSG: the pipe is unusable then, free it), ASYNC_EAGAIN
 * (tryrecv: no whole message yet; nothing consumed), ASYNC_ETIMEDOUT (_dl;
 * nothing consumed), ASYNC_ECANCELED (recv and recv_dl in a task cancelled
 * while they would have to wait), ASYNC_ENOMEM, or the system's -errno.
 * Memory grows with the bytes that arrive, not with the length a peer
 * announces. */
ASYNC_API int async_ipc_pipe_recv(async_ipc_pipe_t *p, void *buf, size_t cap, size_t *len);
ASYNC_API int async_ipc_pipe_recv_dl(async_ipc_pipe_t *p, void *buf, size_t cap, size_t *len,
                                     int64_t deadline);
ASYNC_API int async_ipc_pipe_tryrecv(async_ipc_pipe_t *p, void *buf, size_t cap, size_t *len);

/* As recv_dl, but allocates the message: *msg (OUT) is released with
 * async_ipc_msg_free.  Errors: as recv_dl, except that ASYNC_EINVAL means
 * msg or len NULL. */
ASYNC_API int async_ipc_pipe_recv_alloc_dl(void **msg, size_t *len, async_ipc_pipe_t *p,
                                           int64_t deadline);
ASYNC_API void async_ipc_msg_free(void *msg);

/* Waits until a message (or end-of-stream, or a torn message) is ready to
 * receive: returns 0 then (the next recv reports what is there).  A deadline
 * that has passed (0, for one) just checks.  Errors: ASYNC_ETIMEDOUT (not
 * ready by the deadline), ASYNC_ENOTSUP (a send-only end), ASYNC_ECANCELED (in
 * a task cancelled while it would have to wait), ASYNC_ENOMEM, or the
 * system's -errno. */
ASYNC_API int async_ipc_pipe_poll_dl(async_ipc_pipe_t *p, int64_t deadline);

/* The end's descriptor, for your own event loop (readable: a message may be
 * ready; call tryrecv, which says ASYNC_EAGAIN while none is whole).  A
 * receive takes from the descriptor only the message it returns, never the
 * ones behind it, so after each message the descriptor is readable again
 * while another is there.  Bytes the end has already taken stay buffered in
 * it, where the descriptor no longer shows them: a message poll_dl found
 * ready, one tryrecv left for a bigger buffer, or the start of one that
 * tryrecv found incomplete (the descriptor becomes readable again with the
 * rest).  Receive those before waiting on the descriptor.  The end keeps
 * ownership. */
ASYNC_API int async_ipc_pipe_fd(const async_ipc_pipe_t *p);

/* --- locks ------------------------------------------------------------------ */

/* A process-shared, robust, non-recursive lock (multiprocessing.Lock).
 * lock/lock_dl/trylock return 0 or ASYNC_EOWNERDEAD with the lock held.
 * Errors: ASYNC_ETIMEDOUT (_dl), ASYNC_EAGAIN (trylock: held by another),
 * ASYNC_EALREADY (the caller already holds it), ASYNC_EINVAL (new: out NULL);
 * unlock: ASYNC_EPERM (the caller does not hold it).  Hold it from one thread
 * at a time per process: it is owned by the locking thread.  new: also
 * ASYNC_ENOMEM, or the system's -errno.  They block the calling thread, even
 * in a task. */
typedef struct async_ipc_lock async_ipc_lock_t;
ASYNC_API int async_ipc_lock_new(async_ipc_lock_t **out);
ASYNC_API void async_ipc_lock_free(async_ipc_lock_t *lock);
ASYNC_API int async_ipc_lock_lock(async_ipc_lock_t *lock);
ASYNC_API int async_ipc_lock_lock_dl(async_ipc_lock_t *lock, int64_t deadline);
ASYNC_API int async_ipc_lock_trylock(async_ipc_lock_t *lock);
ASYNC_API int async_ipc_lock_unlock(async_ipc_lock_t *lock);

/* A recursive lock (multiprocessing.RLock): its holder may lock it again and
 * must unlock it as many times.  Same errors as the lock, without
 * ASYNC_EALREADY. */
typedef struct async_ipc_rlock async_ipc_rlock_t;
ASYNC_API int async_ipc_rlock_new(async_ipc_rlock_t **out);
ASYNC_API void async_ipc_rlock_free(async_ipc_rlock_t *lock);
ASYNC_API int async_ipc_rlock_lock(async_ipc_rlock_t *lock);
ASYNC_API int async_ipc_rlock_lock_dl(async_ipc_rlock_t *lock, int64_t deadline);
ASYNC_API int async_ipc_rlock_trylock(async_ipc_rlock_t *lock);
ASYNC_API int async_ipc_rlock_unlock(async_ipc_rlock_t *lock);

/* --- semaphore, event, condition, barrier ----------------------------------- */

/* A counting semaphore; bounded when max > 0 (BoundedSemaphore: releasing past
 * max is ASYNC_EINVAL).  Errors: new: ASYNC_EINVAL (out NULL, value > max > 0,
 * or either above INT32_MAX), ASYNC_ENOMEM; acquire_dl: ASYNC_ETIMEDOUT;
 * tryacquire: ASYNC_EAGAIN (the count is 0); release: ASYNC_EINVAL (at max,
 * or at INT32_MAX when unbounded: the count is unchanged). */
typedef struct async_ipc_sem async_ipc_sem_t;
ASYNC_API int async_ipc_sem_new(async_ipc_sem_t **out, unsigned value, unsigned max);
ASYNC_API void async_ipc_sem_free(async_ipc_sem_t *sem);
ASYNC_API int async_ipc_sem_acquire(async_ipc_sem_t *sem);
ASYNC_API int async_ipc_sem_acquire_dl(async_ipc_sem_t *sem, int64_t deadline);
ASYNC_API int async_ipc_sem_tryacquire(async_ipc_sem_t *sem);
ASYNC_API int async_ipc_sem_release(async_ipc_sem_t *sem);
ASYNC_API unsigned async_ipc_sem_value(const async_ipc_sem_t *sem);

/* An event: a flag processes wait for; set wakes every waiter.
 * Errors: new: ASYNC_EINVAL (out NULL), ASYNC_ENOMEM; wait_dl: ASYNC_ETIMEDOUT. */
typedef struct async_ipc_event async_ipc_event_t;
ASYNC_API int async_ipc_event_new(async_ipc_event_t **out);
ASYNC_API void async_ipc_event_free(async_ipc_event_t *ev);
ASYNC_API void async_ipc_event_set(async_ipc_event_t *ev);
ASYNC_API void async_ipc_event_clear(async_ipc_event_t *ev);
ASYNC_API bool async_ipc_event_is_set(const async_ipc_event_t *ev);
ASYNC_API int async_ipc_event_wait(async_ipc_event_t *ev);
ASYNC_API int async_ipc_event_wait_dl(async_ipc_event_t *ev, int64_t deadline);

/* A condition variable used with an async_ipc_lock_t the caller holds.  wait
 * releases the lock, sleeps until signalled (or a spurious wake-up: re-check
 * your predicate), and takes the lock again before returning, also on
 * ASYNC_ETIMEDOUT.  Returns ASYNC_EOWNERDEAD when the lock's holder died
 * meanwhile (lock held).  Errors: new: ASYNC_EINVAL (out NULL), ASYNC_ENOMEM,
 * or the system's -errno; wait: ASYNC_EPERM (lock not held), ASYNC_ETIMEDOUT
 * (wait_dl). */
typedef struct async_ipc_cond async_ipc_cond_t;
ASYNC_API int async_ipc_cond_new(async_ipc_cond_t **out);
ASYNC_API void async_ipc_cond_free(async_ipc_cond_t *cond);
ASYNC_API int async_ipc_cond_wait(async_ipc_cond_t *cond, async_ipc_lock_t *lock);
ASYNC_API int async_ipc_cond_wait_dl(async_ipc_cond_t *cond, async_ipc_lock_t *lock,
                                     int64_t deadline);
ASYNC_API void async_ipc_cond_signal(async_ipc_cond_t *cond);
ASYNC_API void async_ipc_cond_broadcast(async_ipc_cond_t *cond);

/* A barrier for parties processes (multiprocessing.Barrier).  wait returns
 * when parties callers have arrived, with *index (OUT, may be NULL) set to
 * the arrival order, 0 to parties-1.  A waiter whose deadline passes gets
 * ASYNC_ETIMEDOUT and breaks the barrier: the other waiters, and every later
 * one until reset, get ASYNC_ECLOSED (Python's BrokenBarrierError); abort
 * breaks it on purpose.  reset mends it (waiters at that moment get
 * ASYNC_ECLOSED).  A party killed at any point inside wait, reset or abort
 * leaves the barrier as before its call or as after it: its arrival is
 * counted or not, its generation tripped (or was reset, or broken) or not;
 * its generation's other waiters are released if it was, a re-check later
 * at most.  (A waiter that gets back the lock only after 255 more
 * generations ended, other processes passing the barrier meanwhile, may
 * report the wrong outcome for its own.)  Errors: new: ASYNC_EINVAL (out
 * NULL, parties 0 or above INT32_MAX), ASYNC_ENOMEM, or the system's
 * -errno. */
typedef struct async_ipc_barrier async_ipc_barrier_t;
ASYNC_API int async_ipc_barrier_new(async_ipc_barrier_t **out, unsigned parties);
ASYNC_API void async_ipc_barrier_free(async_ipc_barrier_t *b);
ASYNC_API int async_ipc_barrier_wait(async_ipc_barrier_t *b, unsigned *index);
ASYNC_API int async_ipc_barrier_wait_dl(async_ipc_barrier_t *b, unsigned *index,
                                        int64_t deadline);
ASYNC_API void async_ipc_barrier_abort(async_ipc_barrier_t *b);
ASYNC_API void async_ipc_barrier_reset(async_ipc_barrier_t *b);
ASYNC_API bool async_ipc_barrier_broken(const async_ipc_barrier_t *b);

/* --- shared values and arrays ----------------------------------------------- */

/* A shared value of size bytes (multiprocessing.Value), zero-filled, with an
 * optional robust lock.  ptr gives direct access (synchronise it yourself);
 * get and set copy the whole value, under the lock when it has one.  lock
 * and unlock are that lock's, for compound updates through ptr (unlock as
 * async_ipc_lock_unlock: ASYNC_EPERM when the caller does not hold it).
 * Because a user may hold the lock for as long as they like, lock, get and
 * set wait for it without limit; their _dl forms wait until the deadline (a
 * deadline that has passed still takes a free lock).  They block the calling
 * thread, even in a task.
 * lock/lock_dl return 0 or ASYNC_EOWNERDEAD with the lock held (its last
 * holder died: repair the value).  get/set and their _dl forms return 0, or
 * ASYNC_EOWNERDEAD when they took the lock from a dead holder (the copy
 * still happened).  Errors: new: ASYNC_EINVAL (out NULL, size 0),
 * ASYNC_ENOMEM; lock, unlock (and _dl): ASYNC_ENOTSUP (made without a lock);
 * lock, get, set (and _dl): ASYNC_EALREADY, copying nothing, when the caller
 * already holds the lock (it is not recursive: inside lock/unlock, use ptr),
 * ASYNC_ETIMEDOUT (_dl: still held by another at the deadline, nothing
 * copied); get, set: ASYNC_EINVAL (out or in NULL). */
typedef struct async_shared_value async_shared_value_t;
ASYNC_API int async_shared_value_new(async_shared_value_t **out, size_t size, bool with_lock);
ASYNC_API void async_shared_value_free(async_shared_value_t *v);
ASYNC_API void *async_shared_value_ptr(async_shared_value_t *v);
ASYNC_API size_t async_shared_value_size(const async_shared_value_t *v);
ASYNC_API int async_shared_value_get(async_shared_value_t *v, void *out);
ASYNC_API int async_shared_value_get_dl(async_shared_value_t *v, void *out, int64_t deadline);
ASYNC_API int async_shared_value_set(async_shared_value_t *v, const void *in);
ASYNC_API int async_shared_value_set_dl(async_shared_value_t *v, const void *in, int64_t deadline);
ASYNC_API int async_shared_value_lock(async_shared_value_t *v);
ASYNC_API int async_shared_value_lock_dl(async_shared_value_t *v, int64_t deadline);
ASYNC_API int async_shared_value_unlock(async_shared_value_t *v);

/* A shared array of n elements of elem_size bytes (multiprocessing.Array),
 * zero-filled, with an optional robust lock; as the value (the same codes,
 * the same waiting), plus an index: get/set on index >= n is ASYNC_EINVAL.
 * Errors: new: ASYNC_EINVAL (out NULL, 0 or overflowing sizes),
 * ASYNC_ENOMEM. */
typedef struct async_shared_array async_shared_array_t;
ASYNC_API int async_shared_array_new(async_shared_array_t **out, size_t elem_size, size_t n,
                                     bool with_lock);
ASYNC_API void async_shared_array_free(async_shared_array_t *a);
ASYNC_API void *async_shared_array_ptr(async_shared_array_t *a);
ASYNC_API size_t async_shared_array_len(const async_shared_array_t *a);
ASYNC_API int async_shared_array_get(async_shared_array_t *a, size_t index, void *out);
ASYNC_API int async_shared_array_get_dl(async_shared_array_t *a, size_t index, void *out,
                                        int64_t deadline);
ASYNC_API int async_shared_array_set(async_shared_array_t *a, size_t index, const void *in);
ASYNC_API int async_shared_array_set_dl(async_shared_array_t *a, size_t index, const void *in,
                                        int64_t deadline);
ASYNC_API int async_shared_array_lock(async_shared_array_t *a);
ASYNC_API int async_shared_array_lock_dl(async_shared_array_t *a, int64_t deadline);
ASYNC_API int async_shared_array_unlock(async_shared_array_t *a);

/* --- the shared dictionary ------------------------------------------------- */


/* A dictionary from string keys to byte values in shared memory, for every
 * process that inherits it (Python's Manager().dict(), without the proxy
 * server: each call works on the shared memory directly).  Keys are
 * NUL-terminated strings of at most max_key bytes; values are 0 to max_value
 * bytes; it holds at most capacity keys.  Every call is atomic with respect
 * to the others, from any number of processes and threads: each takes the
 * dictionary's robust lock for its duration.
 *
 * Waiting.  That lock is internal: no call hands it to the user, and each
 * call holds it only for its own lookup and copy (items: for its walk and
 * the callbacks).  A call therefore waits only as long as the calls ahead of
 * it take, a bounded time, so the dictionary has no _dl forms; the one wait a
 * user controls is an items callback, so keep those short.  The calls block
 * the calling thread, even in a task.  A call from inside an items callback
 * of the same dictionary cannot take the lock its walk holds: it returns
 * ASYNC_EALREADY and does nothing (len returns 0).
 *
 * Death of a writer.  A process killed at any point inside set, update,
 * increment or delete leaves the dictionary exactly as before that call or
 * exactly as after it: an update of many keys is all or nothing.  The next
 * caller repairs it, in time proportional to what the dead call wrote (the
 * slots it had written are logged before they are written), and goes on;
 * nobody sees an error for it.  A call that fails (ASYNC_EFULL,
 * ASYNC_EINVAL) undoes only what it wrote, the same way.  A process stopped
 * inside a call holds up the
 * others until it continues or dies.  Deleted keys leave tombstones that
 * lengthen lookups until their slots are reused by new keys. */
typedef struct async_shared_dict async_shared_dict_t;

typedef struct async_shared_dict_item {
    const char *key;
    const void *value;
    size_t len;
} async_shared_dict_item_t;

/* Called by items for each key; a non-zero return stops the walk and is
 * returned by items.  key and value point into the shared table and are
 * valid only during the call. */
typedef int (*async_shared_dict_cb)(const char *key, const void *value, size_t len, void *arg);

/* Creates an empty dictionary (its table takes 4 to 8 times
 * capacity * (max_key + max_value + 32) bytes of shared address space, plus
 * 4 * capacity for its log, the pages touched only as keys land in them).
 * Errors: ASYNC_EINVAL (out NULL, capacity 0 or above 2^28, max_key 0 or
 * above 65535, max_value above 1 GiB), ASYNC_ENOMEM. */
ASYNC_API int async_shared_dict_new(async_shared_dict_t **out, size_t capacity, size_t max_key,
                                    size_t max_value);

/* Unmaps this process's view.  NULL is ignored. */
ASYNC_API void async_shared_dict_free(async_shared_dict_t *d);

/* Sets key to a copy of the len bytes at value (inserting it if new).
 * Errors: ASYNC_EINVAL (d or key NULL, key longer than max_key, len >
 * max_value, value NULL with len > 0), ASYNC_EFULL (a new key, and capacity
 * keys are already there), ASYNC_EALREADY (from an items callback). */
ASYNC_API int async_shared_dict_set(async_shared_dict_t *d, const char *key, const void *value,
                                    size_t len);

/* Sets every item, in order (a later duplicate key wins), as one change: all
 * or nothing.  Errors: as set, for any item (then nothing is changed);
 * ASYNC_EINVAL also for items NULL with n > 0, and for a key that another
 * thread or process lengthened past max_key during the call (each key's
 * length is measured again, bounded, before it is copied). */
ASYNC_API int async_shared_dict_update(async_shared_dict_t *d,
                                       const async_shared_dict_item_t *items, size_t n);

/* Copies key's value into buf (cap bytes; buf may be NULL when cap is 0) and
 * its length into *len (OUT, may be NULL).  Errors: ASYNC_ENOENT (no such
 * key), ASYNC_EINVAL (bad key, buf NULL with cap > 0, or the value is longer
 * than cap: *len is then set and nothing is copied; call again with room),
 * ASYNC_EALREADY (from an items callback), ASYNC_EIO (a stray write left
 * the value's length past max_value: nothing copied, *len unset; a set of
 * the key mends it). */
ASYNC_API int async_shared_dict_get(async_shared_dict_t *d, const char *key, void *buf,
                                    size_t cap, size_t *len);

/* Adds delta to key's value, an int64_t in native byte order, creating it
 * as 0 + delta if absent, and gives the new value in *out (OUT, may be NULL).
 * Errors: ASYNC_EINVAL (bad key, max_value below 8, the value is not 8 bytes,
 * or the sum overflows: the value is then unchanged), ASYNC_EFULL (a new key
 * and no room), ASYNC_EALREADY (from an items callback), ASYNC_EIO (as get:
 * the value's length was overwritten; unchanged). */
ASYNC_API int async_shared_dict_increment(async_shared_dict_t *d, const char *key, int64_t delta,
                                          int64_t *out);

/* Removes key.  Errors: ASYNC_EINVAL (bad key), ASYNC_ENOENT (no such key),
 * ASYNC_EALREADY (from an items callback). */
ASYNC_API int async_shared_dict_delete(async_shared_dict_t *d, const char *key);

/* Calls cb for every key and its value, in no particular order, as one
 * consistent snapshot: the lock is held throughout, so keep cb short and do
 * not call this dictionary from it (such calls fail with ASYNC_EALREADY).
 * Returns 0 after the last key, or cb's first non-zero return.  Errors:
 * ASYNC_EINVAL (cb NULL), ASYNC_EALREADY (called from a cb), ASYNC_EIO
 * (after the walk, which skipped them: entries a stray write left with a
 * length past its limit, a key without its NUL, or a state no call writes;
 * cb never sees one). */
ASYNC_API int async_shared_dict_items(async_shared_dict_t *d, async_shared_dict_cb cb, void *arg);

/* The number of keys now (0 when called from an items callback), and the
 * capacity. */
ASYNC_API size_t async_shared_dict_len(async_shared_dict_t *d);
ASYNC_API size_t async_shared_dict_capacity(const async_shared_dict_t *d);

#ifdef __cplusplus
}
#endif
#endif
