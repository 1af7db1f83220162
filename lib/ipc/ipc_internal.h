/* Private to libasync's IPC files (lib/ipc/): shared mappings,
 * futexes, robust process-shared mutexes and waiting from inside a task.
 * Never installed. */
#ifndef ASYNC_IPC_INTERNAL_H
#define ASYNC_IPC_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include "core/core_internal.h"
#include "async/ipc.h"

/* Every IPC object starts its mapping with this header, so that _free knows
 * how much to unmap. */
typedef struct async__ipc_hdr {
    uint32_t magic;
    uint32_t kind;
    size_t map_size;
} async__ipc_hdr_t;

/* A shared anonymous mapping of at least size bytes, zero-filled, whose
 * header is filled in.  Returns 0 or ASYNC_ENOMEM / -errno. */
int async__ipc_map(size_t size, uint32_t kind, void **out);
/* Unmaps the size the header says: for objects whose header is sealed
 * (below), or not yet handed to anyone. */
void async__ipc_unmap(void *obj);
/* Unmaps an object of a fixed size, whatever its header says (the header
 * is in memory every process can write). */
void async__ipc_unmap_fixed(void *obj, size_t size);

/* Objects whose sizes and counts decide where their calls read and write
 * (the queue, the dictionary, values and arrays) keep them, with the
 * header, in their first page, and make that page read-only once they are
 * set (async__ipc_seal): a stray write from any process to them faults in
 * that process, instead of sending every other one past the mapping.  The
 * fields after the first page start at an _Alignas(ASYNC__IPC_PAGE)
 * member.  On a system whose pages are not 4 KiB the page stays writable
 * (the seal is skipped).  Returns 0 or ASYNC_ENOMEM (the mapping count is
 * at its limit: the split needs one more). */
#define ASYNC__IPC_PAGE 4096
int async__ipc_seal(void *obj);

/* Futex wait while *addr == val, until woken or the absolute monotonic
 * deadline, but never longer than ASYNC__IPC_RECHECK_NS at a time.  Returns
 * 0 (woken, or the value differed, or a signal, or the slice ended: re-check
 * and call again) or ASYNC_ETIMEDOUT (the deadline passed).  The slice is
 * what survives a waker SIGKILLed between its change (a commit, a release,
 * a set) and its wake-up call: its sleepers see the change a slice later at
 * most, instead of never.  The futexes are shared (not FUTEX_PRIVATE). */
#define ASYNC__IPC_RECHECK_NS ASYNC_MSEC(200)
/* The end of the next sleep toward deadline: one slice from now, or the
 * deadline when it comes first.  Compares without subtracting, so a deadline
 * near INT64_MIN cannot overflow into one far in the future. */
static inline int64_t async__ipc_slice_end(int64_t deadline, int64_t now)
{
    int64_t slice_end = now + ASYNC__IPC_RECHECK_NS;
    return deadline == ASYNC_FOREVER || deadline > slice_end ? slice_end : deadline;
}
int async__futex_wait(_Atomic uint32_t *addr, uint32_t val, int64_t deadline);
void async__futex_wake(_Atomic uint32_t *addr, int n);

/* An absolute CLOCK_MONOTONIC timespec for a deadline (not ASYNC_FOREVER). */
struct timespec async__ipc_ts(int64_t deadline);

/* A robust, process-shared mutex (kind PTHREAD_MUTEX_ERRORCHECK or
 * PTHREAD_MUTEX_RECURSIVE).  Returns 0 or -errno. */
int async__ipc_mutex_init(pthread_mutex_t *m, int kind);

/* A process-shared condition variable on a futex word, zero-filled to
 * start (no init).  Not pthread_cond_t: glibc's (2.36) keeps per-group
 * reference counts that a waiter SIGKILLed inside its wait never gives back,
 * and the next signal or broadcast that switches groups then waits for them
 * forever (and a signal can go to the dead waiter's group, lost).  Here a
 * waiter holds nothing while it sleeps: its death leaves at most a count of
 * sleepers one too high, which costs a needless wake-up call. */
typedef struct async__ipc_cond {
    _Atomic uint32_t seq;     /* bumped by every signal and broadcast */
    _Atomic uint32_t waiters; /* sleepers, or about to be */
} async__ipc_cond_t;

/* Locks m until the deadline and maps the outcome: 0, ASYNC_EOWNERDEAD (the
 * mutex was made consistent and is held), ASYNC_ETIMEDOUT, ASYNC_EAGAIN
 * (deadline 0 and busy: the try form), ASYNC_EALREADY (error-checking mutex
 * already held by the caller). */
int async__ipc_mutex_lock(pthread_mutex_t *m, int64_t deadline, bool try_only);
/* As above for internal state whose invariants hold between statements:
 * EOWNERDEAD is repaired and reported as 0. */
void async__ipc_mutex_lock_internal(pthread_mutex_t *m);
/* Releases m (held by the caller), sleeps until woken (or spuriously) or the
 * deadline, and takes m again.  Returns 0, ASYNC_ETIMEDOUT, ASYNC_EOWNERDEAD
 * (m taken from a dead holder and made consistent; it wins over a timeout),
 * or -EPERM with nothing done when the caller does not hold m. */
int async__ipc_cond_wait(async__ipc_cond_t *c, pthread_mutex_t *m, int64_t deadline);
/* Wakes up to n waiters (INT32_MAX: all). */
void async__ipc_cond_wake(async__ipc_cond_t *c, int n);

/* A test hook: when set, the queue calls it inside its critical section
 * with where = 1 (put, before its commit), 2 (get, before its commit) or
 * 3 (get, after its commit), and outside it with 4 (put, after its commit,
 * before it wakes getters) or 5 (close, after closing, before it wakes
 * anyone), so that tests can kill a process there.  Tests link the static
 * library and set it in a child; nothing else does. */
extern void (*async__ipc_queue_hook)(int where);
/* The same for the dictionary: update calls it with where = i after writing
 * its i-th item (1-based), before its commit. */
extern void (*async__ipc_dict_hook)(int where);
/* The same for the barrier, under its mutex (lib/ipc/shared_sync.c): a
 * party that ends a generation makes two stores, its outcome and then the
 * state word; where = 1 after a trip's state store, before its wake-up call,
 * 2 between a trip's two stores, 3 and 4 the same for a reset (between,
 * after), 5 and 6 for a break (a deadline or abort: between, after), and 7
 * after an arrival that does not trip is counted, before it sleeps. */
extern void (*async__ipc_barrier_hook)(int where);
/* For tests: the barrier's generation and arrivals (UINT32_MAX: broken), as
 * its state word holds them now, read without the mutex. */
void async__ipc_barrier_peek(const async_ipc_barrier_t *b, uint32_t *gen, uint32_t *count);


/* For tests (tests/test-ipc-scribble.c): where an object keeps the words a
 * stray write from another process could hit, so that a test can overwrite
 * them as such a write would.  The queue's: its counters, the length of the
 * message at tail, and geometry (capacity, the getters' eventfd); the
 * dictionary's: the current version of key (its lengths, state and key
 * bytes) and its slot count; a value's or array's element count.  Fields
 * an object does not have are NULL. */
typedef struct async__ipc_spots {
    _Atomic uint64_t *head, *tail;
    uint32_t *len_at_tail;
    size_t *capacity;
    int *get_efd;
    uint32_t *klen, *vlen, *state;
    unsigned char *key;
    size_t *nslots;
    size_t *n;
} async__ipc_spots_t;
void async__ipc_queue_spots(async_ipc_queue_t *q, async__ipc_spots_t *out);
/* 0, or ASYNC_ENOENT when key is not there. */
int async__ipc_dict_spots(async_shared_dict_t *d, const char *key, async__ipc_spots_t *out);
void async__ipc_array_spots(async_shared_array_t *a, async__ipc_spots_t *out);


#define ASYNC__IPC_MAGIC 0x41495043u /* "AIPC" */
enum { IPC_KIND_QUEUE = 1, IPC_KIND_LOCK, IPC_KIND_RLOCK, IPC_KIND_SEM, IPC_KIND_EVENT,
       IPC_KIND_COND, IPC_KIND_BARRIER, IPC_KIND_VALUE, IPC_KIND_ARRAY, IPC_KIND_DICT };

#endif
