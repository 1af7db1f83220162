/* Shared memory for the IPC objects: memfd-backed regions users can hand to
 * other processes (async_shm_t), the anonymous shared mappings each IPC
 * object lives in, and the futex calls the lock-free objects sleep on.  A
 * region's memfd is sealed against shrinking, so no holder of its descriptor
 * can pull pages from under the others.  A mapping made here is MAP_SHARED,
 * so children forked after its creation see the same memory at the same
 * address; nothing here touches the heap except the small process-local
 * async_shm_t handle. */
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <fcntl.h>
#include <limits.h>
#include <unistd.h>
#include "ipc_internal.h"

struct async_shm {
    void *base;
    size_t size;
    int fd;
};

int async_shm_new(async_shm_t **out, size_t size)
{
    if (!out || size == 0 || size > (size_t)PTRDIFF_MAX) return ASYNC_EINVAL;
    async_shm_t *shm = async__malloc(sizeof *shm);
    if (!shm) return ASYNC_ENOMEM;
    int err;
    shm->fd = memfd_create("async-shm", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (shm->fd < 0) { err = -errno; goto fail_free; }
    if (ftruncate(shm->fd, (off_t)size) < 0) { err = -errno; goto fail_close; }
    /* Whoever holds the descriptor (every process it is handed to) could
     * otherwise ftruncate it smaller, and every process touching the pages
     * past the new end would die of SIGBUS. */
    if (fcntl(shm->fd, F_ADD_SEALS, F_SEAL_SHRINK) < 0) { err = -errno; goto fail_close; }
    shm->base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, shm->fd, 0);
    if (shm->base == MAP_FAILED) { err = -errno; goto fail_close; }
    shm->size = size;
    *out = shm;
    return 0;
fail_close:
    close(shm->fd);
fail_free:
    async__free(shm);
    return err;
}

int async_shm_attach(async_shm_t **out, int fd)
{
    if (!out) return ASYNC_EINVAL;
    struct stat st;
    if (fstat(fd, &st) < 0) return -errno;
    if (st.st_size <= 0) return ASYNC_EINVAL;
    async_shm_t *shm = async__malloc(sizeof *shm);
    if (!shm) return ASYNC_ENOMEM;
    int err;
    shm->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (shm->fd < 0) { err = -errno; goto fail_free; }
    shm->size = (size_t)st.st_size;
    shm->base = mmap(NULL, shm->size, PROT_READ | PROT_WRITE, MAP_SHARED, shm->fd, 0);
    if (shm->base == MAP_FAILED) { err = -errno; goto fail_close; }
    *out = shm;
    return 0;
fail_close:
    close(shm->fd);
fail_free:
    async__free(shm);
    return err;
}

void *async_shm_ptr(const async_shm_t *shm) { return shm->base; }
size_t async_shm_size(const async_shm_t *shm) { return shm->size; }
int async_shm_fd(const async_shm_t *shm) { return shm->fd; }

void async_shm_free(async_shm_t *shm)
{
    if (!shm) return;
    munmap(shm->base, shm->size);
    close(shm->fd);
    async__free(shm);
}

/* --- object mappings ------------------------------------------------------ */

int async__ipc_map(size_t size, uint32_t kind, void **out)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return errno == ENOMEM ? ASYNC_ENOMEM : -errno;
    async__ipc_hdr_t *h = p;
    h->magic = ASYNC__IPC_MAGIC;
    h->kind = kind;
    h->map_size = size;
    *out = p;
    return 0;
}

void async__ipc_unmap(void *obj)
{
    async__ipc_hdr_t *h = obj;
    munmap(obj, h->map_size);
}

void async__ipc_unmap_fixed(void *obj, size_t size) { munmap(obj, size); }

int async__ipc_seal(void *obj)
{
    if (sysconf(_SC_PAGESIZE) != ASYNC__IPC_PAGE) return 0;
    if (mprotect(obj, ASYNC__IPC_PAGE, PROT_READ) == 0) return 0;
    return errno == ENOMEM ? ASYNC_ENOMEM : -errno;
}

/* --- futexes ---------------------------------------------------------------- */

struct timespec async__ipc_ts(int64_t deadline)
{
    if (deadline < 0) deadline = 0;
    return (struct timespec){.tv_sec = deadline / 1000000000, .tv_nsec = deadline % 1000000000};
}

int async__futex_wait(_Atomic uint32_t *addr, uint32_t val, int64_t deadline)
{
    int64_t now = async_now();
    if (deadline != ASYNC_FOREVER && deadline <= now) return ASYNC_ETIMEDOUT;
    /* Sleep at most one slice: a waker killed between its change and its
     * wake-up call would otherwise leave the sleepers asleep for ever (the
     * change made, nobody told).  Waking up to re-check costs every sleeper
     * a system call per slice; every caller re-checks its condition. */
    int64_t until = async__ipc_slice_end(deadline, now);
    bool slice = until != deadline;
    struct timespec ts = async__ipc_ts(until);
    /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC time. */
    long r = syscall(SYS_futex, addr, FUTEX_WAIT_BITSET, val, &ts, NULL, FUTEX_BITSET_MATCH_ANY);
    if (r < 0 && errno == ETIMEDOUT) return slice ? 0 : ASYNC_ETIMEDOUT;
    return 0;
}

void async__futex_wake(_Atomic uint32_t *addr, int n)
{
    syscall(SYS_futex, addr, FUTEX_WAKE, n, NULL, NULL, 0);
}
