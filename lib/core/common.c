/* Error strings, the monotonic clock, the allocator seam, and libev's
 * allocator with its memory reserve.  Everything here is safe to call from
 * any thread; the allocator seam is read without a lock because it must be
 * installed before any other call and left alone after. */
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <stdlib.h>
#include <unistd.h>
#include "core_internal.h"

static const struct {
    int code;
    const char *name, *text;
} errors[] = {
    {ASYNC_OK, "ASYNC_OK", "success"},
    {ASYNC_EPERM, "ASYNC_EPERM", "operation not permitted"},
    {ASYNC_ESRCH, "ASYNC_ESRCH", "no such task: the handle is stale or spent"},
    {ASYNC_EIO, "ASYNC_EIO", "input/output error"},
    {ASYNC_EAGAIN, "ASYNC_EAGAIN", "resource temporarily unavailable: the call would block"},
    {ASYNC_ENOMEM, "ASYNC_ENOMEM", "out of memory"},
    {ASYNC_EBUSY, "ASYNC_EBUSY", "resource busy: still in use"},
    {ASYNC_EDEADLK, "ASYNC_EDEADLK", "the call would wait for itself"},
    {ASYNC_EINVAL, "ASYNC_EINVAL", "invalid argument"},
    {ASYNC_EPIPE, "ASYNC_EPIPE", "broken pipe: the other end is gone"},
    {ASYNC_ENOTSUP, "ASYNC_ENOTSUP", "operation not supported"},
    {ASYNC_EALREADY, "ASYNC_EALREADY", "already so: held by the caller, or done before"},
    {ASYNC_ETIMEDOUT, "ASYNC_ETIMEDOUT", "deadline passed"},
    {ASYNC_ECANCELED, "ASYNC_ECANCELED", "operation cancelled"},
    {ASYNC_EMFILE, "ASYNC_EMFILE", "too many open files: the process's descriptor limit (RLIMIT_NOFILE) is reached"},
    {ASYNC_ENFILE, "ASYNC_ENFILE", "too many open files in the system"},
    {ASYNC_ENOENT, "ASYNC_ENOENT", "no such entry"},
    {ASYNC_EOWNERDEAD, "ASYNC_EOWNERDEAD", "lock acquired from a holder that died; repair the protected state"},
    {ASYNC_ECLOSED, "ASYNC_ECLOSED", "closed"},
    {ASYNC_ENOTASK, "ASYNC_ENOTASK", "must be called from inside a task"},
    {ASYNC_ENOLOOP, "ASYNC_ENOLOOP", "no loop given and none runs on this thread"},
    {ASYNC_EWRONGLOOP, "ASYNC_EWRONGLOOP", "object belongs to another loop or thread"},
    {ASYNC_EDONE, "ASYNC_EDONE", "already finished"},
    {ASYNC_EEOF, "ASYNC_EEOF", "end of stream"},
    {ASYNC_EFULL, "ASYNC_EFULL", "capacity exhausted"},
    {ASYNC_EWORKERDIED, "ASYNC_EWORKERDIED", "worker died while running the job"},
    {ASYNC_EINIT, "ASYNC_EINIT", "worker initializer failed"},
    {ASYNC_EHTTP, "ASYNC_EHTTP", "HTTP error status"},
    {ASYNC_ECURL, "ASYNC_ECURL", "transfer failed"},
    {ASYNC_EJSON, "ASYNC_EJSON", "malformed JSON"},
    {ASYNC_EWORK, "ASYNC_EWORK", "work function failed"},
    {ASYNC_ECHILD, "ASYNC_ECHILD", "child process failed"},
    {ASYNC_ECONNRESET, "ASYNC_ECONNRESET", "connection reset by peer"},
    {ASYNC_ECONNREFUSED, "ASYNC_ECONNREFUSED", "connection refused"},
    {ASYNC_EADDRINUSE, "ASYNC_EADDRINUSE", "address already in use"},
    {ASYNC_ENOTFOUND, "ASYNC_ENOTFOUND", "name not found"},
    {ASYNC_EDNS, "ASYNC_EDNS", "DNS resolver failed"},
};

static int find(int code)
{
    for (size_t i = 0; i < sizeof errors / sizeof errors[0]; i++)
        if (errors[i].code == code) return (int)i;
    return -1;
}

const char *async_strerror(int err)
{
    int i = find(err);
    return i < 0 ? "unknown error" : errors[i].text;
}

const char *async_errname(int err)
{
    int i = find(err);
    return i < 0 ? "ASYNC_E?" : errors[i].name;
}

/* The system page size, read once. */
static _Atomic size_t page_bytes;

size_t async__page_size(void)
{
    size_t ps = atomic_load_explicit(&page_bytes, memory_order_relaxed);
    if (!ps) {
        ps = (size_t)sysconf(_SC_PAGESIZE);
        atomic_store_explicit(&page_bytes, ps, memory_order_relaxed);
    }
    return ps;
}

int async__cond_init_monotonic(pthread_cond_t *c, bool pshared)
{
    pthread_condattr_t a;
    int r = pthread_condattr_init(&a);
    if (r) return -r;
    if (!(r = pshared ? pthread_condattr_setpshared(&a, PTHREAD_PROCESS_SHARED) : 0) &&
        !(r = pthread_condattr_setclock(&a, CLOCK_MONOTONIC)))
        r = pthread_cond_init(c, &a);
    pthread_condattr_destroy(&a);
    return -r;
}

int async__cond_wait_dl(pthread_cond_t *c, pthread_mutex_t *m, int64_t deadline)
{
    if (deadline == ASYNC_FOREVER) return pthread_cond_wait(c, m);
    if (deadline < 0) deadline = 0;
    struct timespec ts = {(time_t)(deadline / 1000000000), (long)(deadline % 1000000000)};
    return pthread_cond_timedwait(c, m, &ts);
}

int64_t async_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t async_deadline_after(int64_t timeout_ns)
{
    if (timeout_ns < 0) return ASYNC_FOREVER;
    int64_t now = async_now();
    if (timeout_ns > ASYNC_FOREVER - now) return ASYNC_FOREVER;
    return now + timeout_ns;
}

static void *libc_malloc(size_t size, void *ud) { (void)ud; return malloc(size); }
static void *libc_realloc(void *p, size_t size, void *ud) { (void)ud; return realloc(p, size); }
static void libc_free(void *p, void *ud) { (void)ud; free(p); }

static async_allocator_t allocator = {libc_malloc, libc_realloc, libc_free, NULL};

void async_set_allocator(const async_allocator_t *a)
{
    if (a) allocator = *a;
    else allocator = (async_allocator_t){libc_malloc, libc_realloc, libc_free, NULL};
}

void *async__malloc(size_t size) { return allocator.malloc(size ? size : 1, allocator.ud); }
void *async__realloc(void *p, size_t size) { return allocator.realloc(p, size ? size : 1, allocator.ud); }
void async__free(void *p) { if (p) allocator.free(p, allocator.ud); }

void *async__calloc(size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size) return NULL;
    void *p = async__malloc(n * size);
    if (p) memset(p, 0, n * size);
    return p;
}

char *async__strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = async__malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

/* --- libev's allocator and its reserve ------------------------------------ */

/* What libev may need per live task: a slot in its timer heap and in its
 * pending queue (16 bytes each), with room for realloc's old and new copies
 * while an array doubles, and for the I/O watcher arrays.  The base covers
 * libev's fixed arrays and the loops' own watchers. */
#define RESERVE_BASE ((size_t)256 << 10)
#define RESERVE_PER_TASK ((size_t)128)
#define MAX_CHUNKS 64

/* The reserve is untouched anonymous memory: it costs address space and
 * commit charge, which is what runs out under RLIMIT_AS or strict
 * overcommit, and no resident memory.  It is mapped, not malloc'd, so that
 * giving it back returns the space to the system for libc's realloc. */
static pthread_mutex_t reserve_lock = PTHREAD_MUTEX_INITIALIZER;
static struct { void *p; size_t size; } chunks[MAX_CHUNKS];
static int n_chunks;
static _Atomic size_t reserve_have; /* bytes in chunks */
static _Atomic size_t live_tasks;   /* in every loop of the process */

static bool release_chunk(void)
{
    pthread_mutex_lock(&reserve_lock);
    bool ok = n_chunks > 0;
    if (ok) {
        n_chunks--;
        munmap(chunks[n_chunks].p, chunks[n_chunks].size);
        atomic_fetch_sub_explicit(&reserve_have, chunks[n_chunks].size, memory_order_relaxed);
    }
    pthread_mutex_unlock(&reserve_lock);
    return ok;
}

void *async__ev_realloc(void *ptr, long size)
{
    if (size <= 0) {
        free(ptr);
        return NULL;
    }
    for (;;) {
        void *p = realloc(ptr, (size_t)size); /* ptr stays valid when it fails */
        if (p) return p;
        if (!release_chunk()) break;
    }
    /* libev aborts next; say why first. */
    char msg[160];
    int n = snprintf(msg, sizeof msg,
                     "libasync: libev needs %ld bytes and the memory reserve is spent\n", size);
    if (n > 0 && write(2, msg, (size_t)n) < 0) { /* nothing more to do */ }
    return NULL;
}

static void *map_chunk(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

int async__ev_reserve_take(void)
{
    size_t live = atomic_fetch_add_explicit(&live_tasks, 1, memory_order_relaxed) + 1;
    size_t need = RESERVE_BASE + live * RESERVE_PER_TASK;
    if (atomic_load_explicit(&reserve_have, memory_order_relaxed) >= need) return 0;
    int rc = 0;
    pthread_mutex_lock(&reserve_lock);
    size_t have = atomic_load_explicit(&reserve_have, memory_order_relaxed);
    if (have < need) {
        size_t page = async__page_size();
        /* Doubling keeps the chunks few; under pressure, just what is needed. */
        size_t want = (have > need - have ? have : need - have);
        size_t least = need - have;
        want = (want + page - 1) / page * page;
        least = (least + page - 1) / page * page;
        void *p = NULL;
        if (n_chunks < MAX_CHUNKS) {
            p = map_chunk(want);
            if (!p && least < want) p = map_chunk(want = least);
        }
        if (p) {
            chunks[n_chunks].p = p;
            chunks[n_chunks].size = want;
            n_chunks++;
            atomic_fetch_add_explicit(&reserve_have, want, memory_order_relaxed);
        } else {
            rc = ASYNC_ENOMEM;
        }
    }
    pthread_mutex_unlock(&reserve_lock);
    if (rc) atomic_fetch_sub_explicit(&live_tasks, 1, memory_order_relaxed);
    return rc;
}

void async__ev_reserve_drop(void)
{
    atomic_fetch_sub_explicit(&live_tasks, 1, memory_order_relaxed);
}
