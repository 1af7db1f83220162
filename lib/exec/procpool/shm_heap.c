/* The process pool's shared heap, in the region after the workers' areas:
 * the parent alone allocates and frees in it (under pool->mu), for job
 * inputs and outputs too big for a slot and for async_executor_shm_alloc.
 *
 * Power-of-two blocks from heap_off, each with a 16-byte header in front of
 * its usable bytes.  Big freed blocks (16 MiB and more) give their pages
 * back to the kernel.
 *
 * What the heap knows lives in the parent's private memory, never in the
 * region, where any work function can write (round 14; until then the free
 * lists were linked through the headers and a block's class was read from
 * its header, so a forged but plausible header had the parent hand a live
 * block out a second time: two jobs then shared memory, a wrong answer).
 * The free lists are private stacks of offsets, and the blocks handed to
 * async__procpool_shm_alloc's callers are in a private table with their
 * class; a job's blocks are in its pp_job_t.  The header holds only a
 * canary, {magic|class, 0}, written when the block is handed out and read
 * only when it is freed, to count the blocks whose canary a work function
 * overwrote (it wrote past its neighbour's end): such a block is reused all
 * the same (round 15; it used to be leaked for good).  Nothing the parent
 * does with a block depends on its header, whose class and place come from
 * the parent's own records, and its header is written again from them when
 * the block is handed out; the bytes of a block are the data a work
 * function may overwrite anyway, in use or not.  So no header can make the
 * parent reuse a block early, hand it out twice, or free more than the
 * block, and an overrun costs no memory. */
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

static uint64_t canary(unsigned k) { return ((uint64_t)HDR_MAGIC << 32) | k; }

/* --- the private free lists ------------------------------------------------ */

static bool stack_push(pp_heap_t *hp, unsigned k, uint64_t off)
{
    pp_free_stack_t *s = &hp->free[k];
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 16;
        uint64_t *a = async__realloc(s->off, cap * sizeof *a);
        if (!a) return false;
        s->off = a;
        s->cap = cap;
    }
    s->off[s->n++] = off;
    return true;
}

/* --- the private table of the callers' blocks --------------------------------
 *
 * Open addressing on the block's usable offset, linear probing, deletion by
 * shifting back, so that a lookup stops at the first empty entry. */

static size_t slot_of(const pp_heap_t *hp, uint64_t uoff)
{
    return (size_t)((uoff >> 4) * 0x9e3779b97f4a7c15ull >> 32) & (hp->tcap - 1);
}

static bool table_grow(pp_heap_t *hp)
{
    size_t cap = hp->tcap ? 2 * hp->tcap : 64;
    pp_heap_entry_t *t = async__calloc(cap, sizeof *t);
    if (!t) return false;
    pp_heap_entry_t *old = hp->table;
    size_t ocap = hp->tcap;
    hp->table = t;
    hp->tcap = cap;
    for (size_t i = 0; i < ocap; i++) {
        if (!old[i].uoff) continue;
        size_t j = slot_of(hp, old[i].uoff);
        while (t[j].uoff) j = (j + 1) & (cap - 1);
        t[j] = old[i];
    }
    async__free(old);
    return true;
}

static bool table_put(pp_heap_t *hp, uint64_t uoff, unsigned k)
{
    if ((hp->tn + 1) * 4 > hp->tcap * 3 && !table_grow(hp)) return false;
    size_t j = slot_of(hp, uoff);
    while (hp->table[j].uoff) j = (j + 1) & (hp->tcap - 1);
    hp->table[j] = (pp_heap_entry_t){uoff, (uint8_t)k};
    hp->tn++;
    return true;
}

/* Removes uoff; returns its class, 0 when the table does not hold it. */
static unsigned table_take(pp_heap_t *hp, uint64_t uoff)
{
    if (!hp->tn) return 0;
    size_t mask = hp->tcap - 1, i = slot_of(hp, uoff);
    while (hp->table[i].uoff != uoff) {
        if (!hp->table[i].uoff) return 0;
        i = (i + 1) & mask;
    }
    unsigned k = hp->table[i].k;
    /* Shift back every later entry of the run that may move into the hole. */
    for (size_t j = (i + 1) & mask; hp->table[j].uoff; j = (j + 1) & mask) {
        size_t home = slot_of(hp, hp->table[j].uoff);
        if (((j - home) & mask) >= ((j - i) & mask)) {
            hp->table[i] = hp->table[j];
            i = j;
        }
    }
    hp->table[i] = (pp_heap_entry_t){0, 0};
    hp->tn--;
    return k;
}

/* --- blocks ------------------------------------------------------------------- */

uint64_t async__pp_heap_alloc(async__procpool_t *p, size_t n, bool zero)
{
    unsigned k = async__pp_heap_class(n);
    if (!k) return 0;
    pp_heap_t *hp = &p->heap;
    char *base = (char *)p->h;
    uint64_t off;
    bool fresh = false;
    if (hp->free[k].n) {
        off = hp->free[k].off[--hp->free[k].n];
    } else {
        if (hp->top + ((uint64_t)1 << k) > p->v.size) return 0;
        off = hp->top;
        hp->top += (uint64_t)1 << k;
        fresh = true;
    }
    uint64_t *hdr = (uint64_t *)(base + off);
    hdr[0] = canary(k);
    hdr[1] = 0;
    if (zero && !fresh) memset(hdr + 2, 0, n);
    return off + 16;
}

void async__pp_heap_free_class(async__procpool_t *p, uint64_t uoff, unsigned k)
{
    if (!uoff) return;
    assert(uoff >= p->v.heap_off + 16 && k >= 5 && k < 63); /* from our own records */
    uint64_t off = uoff - 16;
    volatile uint64_t *hdr = (volatile uint64_t *)((char *)p->h + off);
    if (hdr[0] != canary(k)) p->heap.overwritten++; /* an overrun from below: counted, reused */
    if (k >= 24) { /* 16 MiB and up; smaller blocks keep their pages for reuse */
        size_t pg = async__page_size();
        /* Whole pages inside the block only: madvise rounds the length up,
         * and the next block's header may share the last page. */
        uintptr_t from = pp_round_up((uintptr_t)(hdr + 2), pg);
        uintptr_t to = ((uintptr_t)hdr + ((size_t)1 << k)) / pg * pg;
        if (to > from) madvise((void *)from, to - from, MADV_REMOVE);
    }
    stack_push(&p->heap, k, off); /* no memory for the list: the block is leaked */
}

void async__pp_heap_release(pp_heap_t *hp)
{
    for (unsigned k = 0; k < 64; k++) async__free(hp->free[k].off);
    async__free(hp->table);
    memset(hp, 0, sizeof *hp);
}

int async__procpool_shm_alloc(async__procpool_t *p, size_t size, void **out)
{
    if (!p || !out || size == 0) return ASYNC_EINVAL;
    pthread_mutex_lock(&p->mu);
    uint64_t off = async__pp_heap_alloc(p, size, true);
    if (off && !table_put(&p->heap, off, async__pp_heap_class(size))) {
        async__pp_heap_free_class(p, off, async__pp_heap_class(size));
        off = 0;
    }
    pthread_mutex_unlock(&p->mu);
    if (!off) return ASYNC_ENOMEM;
    *out = (char *)p->h + off;
    return 0;
}

void async__procpool_shm_free(async__procpool_t *p, void *ptr)
{
    /* A pointer the heap did not hand out, or one freed already, is the
     * caller's bug, not a reason to abort the caller's program: it is not in
     * the table, and is ignored (async_executor_shm_free's contract). */
    if (!p || !ptr || !async__procpool_owns(p, ptr)) return;
    uint64_t uoff = (uint64_t)((char *)ptr - (char *)p->h);
    pthread_mutex_lock(&p->mu);
    unsigned k = table_take(&p->heap, uoff);
    if (k) async__pp_heap_free_class(p, uoff, k);
    pthread_mutex_unlock(&p->mu);
}

bool async__procpool_owns(const async__procpool_t *p, const void *ptr)
{
    const char *c = ptr, *base = (const char *)p->h;
    return c >= base + p->v.heap_off && c < base + p->v.size;
}
