/* Error strings, the monotonic clock and the allocator seam.  Everything here
 * is safe to call from any thread; the allocator is read without a lock
 * because it must be installed before any other call and left alone after. */
#include <string.h>
#include <time.h>
#include <stdlib.h>
#include "internal.h"

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
    {ASYNC_EINVAL, "ASYNC_EINVAL", "invalid argument"},
    {ASYNC_EPIPE, "ASYNC_EPIPE", "broken pipe: the other end is gone"},
    {ASYNC_ENOTSUP, "ASYNC_ENOTSUP", "operation not supported"},
    {ASYNC_EALREADY, "ASYNC_EALREADY", "operation already done"},
    {ASYNC_ETIMEDOUT, "ASYNC_ETIMEDOUT", "deadline passed"},
    {ASYNC_ECANCELED, "ASYNC_ECANCELED", "operation cancelled"},
    {ASYNC_EMFILE, "ASYNC_EMFILE", "too many open files: the process's descriptor limit (RLIMIT_NOFILE) is reached"},
    {ASYNC_ENFILE, "ASYNC_ENFILE", "too many open files in the system"},
    {ASYNC_EOWNERDEAD, "ASYNC_EOWNERDEAD", "lock acquired from a holder that died; repair the protected state"},
    {ASYNC_ECLOSED, "ASYNC_ECLOSED", "closed"},
    {ASYNC_ENOTASK, "ASYNC_ENOTASK", "must be called from inside a task"},
    {ASYNC_ENOLOOP, "ASYNC_ENOLOOP", "no loop given and none runs on this thread"},
    {ASYNC_EWRONGLOOP, "ASYNC_EWRONGLOOP", "object belongs to another loop or thread"},
    {ASYNC_EDONE, "ASYNC_EDONE", "already finished"},
    {ASYNC_EEOF, "ASYNC_EEOF", "end of stream"},
    {ASYNC_EFULL, "ASYNC_EFULL", "queue full"},
    {ASYNC_EEMPTY, "ASYNC_EEMPTY", "queue empty"},
    {ASYNC_EWORKERDIED, "ASYNC_EWORKERDIED", "worker died while running the job"},
    {ASYNC_EINIT, "ASYNC_EINIT", "worker initializer failed"},
    {ASYNC_EHTTP, "ASYNC_EHTTP", "HTTP error status"},
    {ASYNC_ECURL, "ASYNC_ECURL", "transfer failed"},
    {ASYNC_EJSON, "ASYNC_EJSON", "malformed JSON"},
    {ASYNC_ECSV, "ASYNC_ECSV", "malformed CSV"},
    {ASYNC_EWORK, "ASYNC_EWORK", "work function failed"},
    {ASYNC_ECHILD, "ASYNC_ECHILD", "child process failed"},
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

