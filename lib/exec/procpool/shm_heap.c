/* The process pool's shared heap, in the region after the workers' areas:
 * the parent alone allocates and frees in it (under pool->mu), for job
 * inputs and outputs too big for a slot and for async_executor_shm_alloc.
 *
 * Power-of-two blocks with a 16-byte header {magic|class, next-free}.  Big
 * freed blocks (16 MiB and more) give their pages back to the kernel.
 *
 * The headers sit in the region, where a work function can overwrite them
 * (one that writes past its output rows in shared memory does).  Every
 * header the parent reads is therefore checked against what it knows
 * privately (heap_top, the block alignment) before it is believed: a block
 * whose header is garbage is leaked, never freed into a list, and a free
 * list whose link is garbage is dropped from there on.  A forged header
 * that passes (a plausible block) can at worst hand out a block twice:
 * both live in the region, so the parent still writes nowhere else. */
#include <string.h>
#include <sys/mman.h>
#include "parent_internal.h"

#define HDR_MAGIC 0x68656170u /* "heap" */

/* The size class of a block for n usable bytes, 0 if there is none. */
unsigned async__pp_heap_class(size_t n)
{
    size_t need = n + 16;
    if (need < n) return 0;
    unsigned k = 5;
    while (((size_t)1 << k) < need) {
        if (++k >= 63) return 0;
    }
    return k;
}

/* Whether a block of class k at off (its header) lies inside what the heap
 * has handed out.  Blocks are sums of powers of two of 32 bytes or more
 * from heap_off, so they are 32-aligned. */
static bool heap_block_ok(const async__procpool_t *p, uint64_t off, unsigned k)
{
    return k >= 5 && k < 63 && off >= p->v.heap_off && off % 32 == 0 && off < p->heap_top &&
           p->heap_top - off >= ((uint64_t)1 << k);
}

uint64_t async__pp_heap_alloc(async__procpool_t *p, size_t n, bool zero)
{
    unsigned k = async__pp_heap_class(n);
    if (!k) return 0;
    char *base = (char *)p->h;
    uint64_t off = p->free_list[k];
    bool fresh = false;
    if (off) {
        uint64_t next = ((volatile uint64_t *)(base + off))[1];
        if (next && (!heap_block_ok(p, next, k) ||
                     ((volatile uint64_t *)(base + next))[0] != (((uint64_t)HDR_MAGIC << 32) | k)))
            next = 0; /* overwritten: the rest of this list is lost, not followed */
        p->free_list[k] = next;
    } else {
        if (p->heap_top + ((uint64_t)1 << k) > p->v.size) return 0;
        off = p->heap_top;
        p->heap_top += (uint64_t)1 << k;
        fresh = true;
    }
    uint64_t *hdr = (uint64_t *)(base + off);
    hdr[0] = ((uint64_t)HDR_MAGIC << 32) | k;
    hdr[1] = 0;
    if (zero && !fresh) memset(hdr + 2, 0, n);
    return off + 16;
}

void async__pp_heap_free_class(async__procpool_t *p, uint64_t uoff, unsigned k)
{
    if (!uoff) return;
    char *base = (char *)p->h;
    uint64_t off = uoff - 16;
    if (uoff < 16) return;
    if (!k) {
        if (!heap_block_ok(p, off, 5)) return;
        uint64_t h0 = *(volatile uint64_t *)(base + off);
        if (h0 >> 32 != HDR_MAGIC) return;
        k = (unsigned)(h0 & 0xff);
    }
    if (!heap_block_ok(p, off, k)) return;
    uint64_t *hdr = (uint64_t *)(base + off);
    hdr[0] = ((uint64_t)HDR_MAGIC << 32) | k; /* as the list's checks expect */
    if (k >= 24) { /* 16 MiB and up; smaller blocks keep their pages for reuse */
        size_t pg = async__page_size();
        /* Whole pages inside the block only: madvise rounds the length up,
         * and the next block's header may share the last page. */
        uintptr_t from = pp_round_up((uintptr_t)(hdr + 2), pg);
        uintptr_t to = ((uintptr_t)hdr + ((size_t)1 << k)) / pg * pg;
        if (to > from) madvise((void *)from, to - from, MADV_REMOVE);
    }
    hdr[1] = p->free_list[k];
    p->free_list[k] = off;
}

void async__pp_heap_free(async__procpool_t *p, uint64_t uoff)
{
    async__pp_heap_free_class(p, uoff, 0);
}

int async__procpool_shm_alloc(async__procpool_t *p, size_t size, void **out)
{
    if (!p || !out || size == 0) return ASYNC_EINVAL;
    pthread_mutex_lock(&p->mu);
    uint64_t off = async__pp_heap_alloc(p, size, true);
    pthread_mutex_unlock(&p->mu);
    if (!off) return ASYNC_ENOMEM;
    *out = (char *)p->h + off;
    return 0;
}

void async__procpool_shm_free(async__procpool_t *p, void *ptr)
{
    /* A pointer the heap did not hand out is the caller's bug, not a reason
     * to abort the caller's program: it is ignored (async_executor_shm_free's
     * contract). */
    if (!p || !ptr || !async__procpool_owns(p, ptr)) return;
    pthread_mutex_lock(&p->mu);
    async__pp_heap_free(p, (uint64_t)((char *)ptr - (char *)p->h));
    pthread_mutex_unlock(&p->mu);
}

bool async__procpool_owns(const async__procpool_t *p, const void *ptr)
{
    const char *c = ptr, *base = (const char *)p->h;
    return c >= base + p->v.heap_off && c < base + p->v.size;
}
