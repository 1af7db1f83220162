/* libasync common definitions: error codes, the monotonic clock, deadlines and
 * the allocator seam.
 *
 * Every call in libasync that can fail returns an int: 0 on success or one of
 * the negative ASYNC_E* codes below.  Codes that have an errno equivalent are
 * that errno negated, so a system call's failure can be passed through as
 * -errno.  Time is an int64_t count of nanoseconds on CLOCK_MONOTONIC; a
 * deadline is an absolute such time, and ASYNC_FOREVER never comes.
 *
 * The conventions every header follows:
 *   - A call that creates or hands back an object (a handle, a future, a
 *     descriptor, an iterator, an allocation, a response) takes its OUT
 *     pointer first: async_loop_new(&loop), async_executor_submit(&f, ex,
 *     &job), async_tcp_listen(&fd, ip, port, backlog).  Results that fill
 *     the caller's buffers (lengths, counts, indexes) follow the inputs, as
 *     in read(2).  An OUT is written only on success.
 *   - Every call that can block has a _dl form whose last parameter is an
 *     absolute deadline; the plain form is the _dl form with ASYNC_FOREVER.
 *     A deadline at or before now has passed (0 included); an operation
 *     that can complete at once still does.  A duration in a struct or an
 *     option is a field named *_ns, relative, 0 meaning its documented
 *     default (async_job_t.timeout_ns: no limit).
 *   - Try forms never wait: ASYNC_EAGAIN when they cannot complete now.
 *   - _free always succeeds and returns void; for reference-counted objects
 *     it is _unref (async_future_unref), for process-shared objects it drops
 *     this process's view.  _destroy may refuse, as pthread_mutex_destroy
 *     does: ASYNC_EBUSY while the object is in use (waiters, live tasks,
 *     lookups), and the object stays valid.
 *   - An option struct passed by pointer starts with `size_t size`: 0 (a
 *     designated initialiser) reads the 0.2 layout; its inline _init
 *     function sets sizeof as the program was compiled.  Later versions add
 *     fields only at the end and read them only when size covers them; a
 *     nonzero size smaller than the 0.2 struct is ASYNC_EINVAL.
 *   - Objects that belong to a loop (sync primitives, resolvers, clients,
 *     tasks) refuse other loops and threads with ASYNC_EWRONGLOOP. */
#ifndef ASYNC_COMMON_H
#define ASYNC_COMMON_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#if defined(ASYNC_BUILDING)
#  define ASYNC_API __attribute__((visibility("default")))
#else
#  define ASYNC_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* The version of these headers (the Makefile and the soname read it here).
 * Before 1.0 every minor version may change the ABI, so the soname carries
 * major.minor: libasync.so.0.2. */
#define ASYNC_VERSION_MAJOR 0
#define ASYNC_VERSION_MINOR 2
#define ASYNC_VERSION_PATCH 0
#define ASYNC_VERSION "0.2.0"

/* Error codes.  Every call that can fail returns 0 or one of these (always
 * negative); the errno-backed ones keep errno's meaning.  One situation has
 * one code, in every module:
 *
 *   situation                                        code
 *   ---------------------------------------------    ---------------------
 *   a try form cannot complete now; a result asked   ASYNC_EAGAIN
 *     for before it exists
 *   a deadline passed (also one already past when    ASYNC_ETIMEDOUT
 *     the call would have to wait)
 *   the calling task was cancelled while it would    ASYNC_ECANCELED
 *     have to wait (a call that can complete at
 *     once completes, even in a cancelled task)
 *   sending/submitting to an object closed or shut   ASYNC_ECLOSED
 *     down (channel, queue, executor, client)
 *   receiving from a stream that ended: closed and   ASYNC_EEOF
 *     drained channel or queue, peer closed a pipe
 *     or socket, an exhausted iterator
 *   writing to a peer that is gone                   ASYNC_EPIPE
 *   locking a lock the caller already holds; closing ASYNC_EALREADY
 *     or cancelling twice
 *   the call would wait for itself (a task awaiting  ASYNC_EDEADLK
 *     itself, a pool shut down from its own worker)
 *   an object still in use (waiters, live tasks) so  ASYNC_EBUSY
 *     it cannot be destroyed, or already running
 *   the object lives on another loop or thread       ASYNC_EWRONGLOOP
 *   the object was not made for this operation (a    ASYNC_ENOTSUP
 *     receive-only pipe end, a non-joinable queue)
 *   a fixed capacity is exhausted (shared dict)      ASYNC_EFULL
 *   a bad argument                                   ASYNC_EINVAL
 *   out of memory / descriptors                      ASYNC_ENOMEM / EMFILE, ENFILE
 *
 * ASYNC_EAGAIN from async_executor_new or async_process_spawn keeps errno's
 * other meaning: the system refused a thread or a process for now. */
enum {
    ASYNC_OK         = 0,
    ASYNC_EPERM      = -EPERM,      /* not permitted */
    ASYNC_ESRCH      = -ESRCH,      /* no such task: a stale or spent handle */
    ASYNC_EIO        = -EIO,        /* input/output error */
    ASYNC_EAGAIN     = -EAGAIN,     /* not now: a try form would have to wait */
    ASYNC_ENOMEM     = -ENOMEM,     /* out of memory */
    ASYNC_EBUSY      = -EBUSY,      /* still in use: waiters or live tasks */
    ASYNC_EDEADLK    = -EDEADLK,    /* the call would wait for itself */
    ASYNC_EINVAL     = -EINVAL,     /* invalid argument */
    ASYNC_EPIPE      = -EPIPE,      /* the other end is gone */
    ASYNC_ENOTSUP    = -ENOTSUP,    /* not supported here */
    ASYNC_EALREADY   = -EALREADY,   /* already so: the caller holds the lock, closed twice */
    ASYNC_ETIMEDOUT  = -ETIMEDOUT,  /* a deadline passed */
    ASYNC_ECANCELED  = -ECANCELED,  /* the caller or its task was cancelled */
    ASYNC_EOWNERDEAD = -EOWNERDEAD, /* got a lock whose holder died */
    ASYNC_EMFILE     = -EMFILE,     /* out of descriptors: the process's RLIMIT_NOFILE */
    ASYNC_ENFILE     = -ENFILE,     /* out of descriptors: the system's file table */
    ASYNC_ENOENT     = -ENOENT,     /* no such entry: a missing key */
    ASYNC_ECONNRESET   = -ECONNRESET,   /* the peer reset the connection */
    ASYNC_ECONNREFUSED = -ECONNREFUSED, /* nobody listens there */
    ASYNC_EADDRINUSE   = -EADDRINUSE,   /* the address is taken */

    /* libasync's own codes, below every errno value. */
    ASYNC_ECLOSED     = -1001, /* the channel, queue or executor is closed */
    ASYNC_ENOTASK     = -1002, /* must be called from inside a task */
    ASYNC_ENOLOOP     = -1003, /* no loop given and none runs on this thread */
    ASYNC_EWRONGLOOP  = -1004, /* the object belongs to another loop or thread */
    ASYNC_EDONE       = -1005, /* the task or future has already finished */
    ASYNC_EEOF        = -1006, /* end of stream: the peer closed */
    ASYNC_EFULL       = -1007, /* a fixed capacity is exhausted */
    ASYNC_EWORKERDIED = -1009, /* the worker running the job died */
    ASYNC_EINIT       = -1010, /* a worker initializer failed */
    ASYNC_EHTTP       = -1011, /* the server answered with an HTTP error status */
    ASYNC_ECURL       = -1012, /* the transfer failed (libcurl's error) */
    ASYNC_EJSON       = -1013, /* malformed JSON */
    ASYNC_EWORK       = -1015, /* a work function failed without a code */
    ASYNC_ECHILD      = -1016, /* a child process failed or could not start */
    ASYNC_ENOTFOUND   = -1101, /* DNS: no such name, or no address of that family */
    ASYNC_EDNS        = -1102, /* DNS: the resolver failed (bad answer, no server) */
};

/* A short English description of an error code; never NULL. */
ASYNC_API const char *async_strerror(int err);

/* The code's symbolic name, such as "ASYNC_ETIMEDOUT"; never NULL. */
ASYNC_API const char *async_errname(int err);

/* Time, in nanoseconds. */
#define ASYNC_FOREVER INT64_MAX
#define ASYNC_NSEC(n) ((int64_t)(n))
#define ASYNC_USEC(n) ((int64_t)(n) * 1000)
#define ASYNC_MSEC(n) ((int64_t)(n) * 1000000)
#define ASYNC_SEC(n)  ((int64_t)(n) * 1000000000)

/* Nanoseconds on CLOCK_MONOTONIC. */
ASYNC_API int64_t async_now(void);

/* The deadline `timeout_ns` from now; a negative timeout or one that would
 * overflow gives ASYNC_FOREVER. */
ASYNC_API int64_t async_deadline_after(int64_t timeout_ns);

/* The allocator seam.  Every allocation libasync makes on the heap goes through
 * these three functions (stacks and shared memory come from mmap instead).
 * Install one before the first other call into libasync and keep it installed
 * until the last; NULL restores malloc, realloc and free.  `realloc` must
 * accept a NULL pointer and `free` a NULL pointer, as libc's do. */
typedef struct async_allocator {
    void *(*malloc)(size_t size, void *ud);
    void *(*realloc)(void *ptr, size_t size, void *ud);
    void (*free)(void *ptr, void *ud);
    void *ud;
} async_allocator_t;

ASYNC_API void async_set_allocator(const async_allocator_t *allocator);

/* Readiness of a descriptor: async_wait_fd_dl (task.h), the IPC queue's
 * descriptors (ipc.h). */
#define ASYNC_READABLE 1
#define ASYNC_WRITABLE 2

/* --- the machine ---------------------------------------------------------- */

/* The number of logical CPUs this process may run on: the size of its
 * affinity mask (narrowed by taskset, cgroup cpusets, container limits), as
 * Python's len(os.sched_getaffinity(0)) or os.process_cpu_count(); the
 * number of online CPUs if the mask cannot be read.  At least 1, never
 * fails, read afresh at each call.  The pools' default sizes use it. */
ASYNC_API unsigned async_cpu_count(void);

/* The number of physical cores among the machine's online CPUs, each core
 * counted once however many hardware threads (hyperthreads) it has, as
 * psutil.cpu_count(logical=False) or the distinct cores of `lscpu -p`; the
 * whole machine, whatever this process's affinity.  Read from
 * /sys/devices/system/cpu/cpuN/topology; when that cannot be read, the
 * number of online logical CPUs.  At least 1, never fails. */
ASYNC_API unsigned async_cpu_cores(void);


#ifdef __cplusplus
}
#endif
#endif
