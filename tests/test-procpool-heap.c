/* The process pool's shared heap against a work function that writes its
 * block headers (round 14).  The headers sit in the shared region, where
 * any worker can write; the parent used to link its free lists through them
 * and read a block's size class from them, so a forged but plausible header
 * had it hand a live block out a second time: two owners of one block, and
 * one's data silently overwritten by the other's.  The heap's bookkeeping is
 * now private to the parent (lib/exec/procpool/shm_heap.c); each test
 * forges a header from a worker and checks that no block is handed out
 * while another owner holds it.  Driven through the engine's private API,
 * as tests/test-procpool.c. */
#if defined(__SANITIZE_THREAD__)
#include <criterion/criterion.h>
Test(tsan, procpool_heap_tests_skipped, .timeout = 5)
{
    cr_skip_test("ThreadSanitizer cannot follow the process pool's cross-process hand-overs: this file runs "
                 "under the other builds");
}
#else
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <async.h>
#include "support/procpool_engine.h"

#define HDR_MAGIC 0x68656170u /* shm_heap.c's canary */

/* Until every job's slot (and its heap blocks) is back with the parent:
 * a done runs before its slot is freed. */
static void wait_idle(async__procpool_t *p)
{
    int64_t until = async_now() + ASYNC_SEC(20);
    for (;;) {
        pthread_mutex_lock(&p->mu);
        bool idle = p->inflight == 0 && p->nfree == p->v.nslots;
        pthread_mutex_unlock(&p->mu);
        if (idle) return;
        cr_assert_lt(async_now(), until, "the pool did not give its slots back");
        usleep(500);
    }
}

/* In the worker: stores val at the address addr (both in its input). */
typedef struct poke {
    uint64_t *addr;
    uint64_t val;
} poke_t;

static int poker(void *ctx, const void *in, size_t n, async__procout_t *out)
{
    (void)ctx, (void)n;
    poke_t pk;
    memcpy(&pk, in, sizeof pk);
    *(volatile uint64_t *)pk.addr = pk.val;
    long ok = 1;
    memcpy(async__procout_data(out), &ok, sizeof ok);
    return 0;
}

/* A worker writes val at addr, and the parent has freed the job's slot. */
static void worker_writes(async__procpool_t *p, void *addr, uint64_t val)
{
    poke_t pk = {addr, val};
    int first = atomic_load(&eng_ndone);
    async__procjob_t j = {.fn = (async__anyfn_t)poker, .in = &pk, .in_len = sizeof pk, .out_cap = 8,
                          .deadline = ASYNC_FOREVER, .done = eng_on_done, .arg = (void *)(intptr_t)first};
    cr_assert_eq(async__procpool_submit(p, &j, NULL), 0);
    eng_wait_done(first + 1);
    cr_assert_eq(eng_res[first].err, 0);
    wait_idle(p);
}

static uint64_t *header_of(void *block) { return (uint64_t *)block - 2; }

static bool overlap(const void *a, size_t an, const void *b, size_t bn)
{
    const char *x = a, *y = b;
    return x < y + bn && y < x + an;
}

TestSuite(procpool_heap);

/* Caught: a freed block's header held the free list's link; a worker that
 * pointed it at a live block (header intact, so it passed every check) had
 * the next allocation but one return that live block again. */
Test(procpool_heap, a_forged_free_list_link_hands_no_live_block_out, .timeout = 60)
{
    async__procpool_t *p = eng_pool_new(1);
    void *a, *b, *x, *y;
    cr_assert_eq(async__procpool_shm_alloc(p, 64, &a), 0);
    cr_assert_eq(async__procpool_shm_alloc(p, 64, &b), 0);
    memset(b, 0x42, 64);
    async__procpool_shm_free(p, a);
    /* b's header offset, where the parent's link would point to it. */
    worker_writes(p, header_of(a) + 1, (uint64_t)((char *)header_of(b) - (char *)p->h));
    cr_assert_eq(async__procpool_shm_alloc(p, 64, &x), 0);
    cr_assert_eq(async__procpool_shm_alloc(p, 64, &y), 0);
    cr_assert(!overlap(x, 64, b, 64), "the live block b was handed out again (x)");
    cr_assert(!overlap(y, 64, b, 64), "the live block b was handed out again (y)");
    cr_assert(!overlap(x, 64, y, 64), "x and y share memory");
    for (int i = 0; i < 64; i++) cr_assert_eq(((unsigned char *)b)[i], 0x42, "b was zeroed for a new owner");
    async__procpool_free(p);
}

/* Caught: freeing a caller's block read its size class from its header; a
 * worker that raised the class had the parent free a 1 KiB block over the
 * live neighbour, which the next 1,000-byte allocation then returned. */
Test(procpool_heap, a_forged_size_class_frees_no_more_than_the_block, .timeout = 60)
{
    async__procpool_t *p = eng_pool_new(1);
    void *a, *b, *filler, *x;
    cr_assert_eq(async__procpool_shm_alloc(p, 64, &a), 0);
    cr_assert_eq(async__procpool_shm_alloc(p, 64, &b), 0);
    cr_assert_eq(async__procpool_shm_alloc(p, 4096, &filler), 0); /* room above for a "1 KiB block" */
    memset(b, 0x42, 64);
    worker_writes(p, header_of(a), ((uint64_t)HDR_MAGIC << 32) | 10);
    async__procpool_shm_free(p, a);
    cr_assert_eq(async__procpool_shm_alloc(p, 1000, &x), 0);
    cr_assert(!overlap(x, 1000, b, 64), "the live block b lies inside a new 1,000-byte block");
    cr_assert(!overlap(x, 1000, filler, 4096), "the live filler lies inside a new block");
    memset(x, 0, 1000);
    for (int i = 0; i < 64; i++) cr_assert_eq(((unsigned char *)b)[i], 0x42);
    async__procpool_free(p);
}

/* Caught: a second async__procpool_shm_free of one block (the caller's bug,
 * documented as ignored) found its header intact and pushed it on its free
 * list twice: the next two allocations returned the same block. */
Test(procpool_heap, a_block_freed_twice_is_handed_out_once, .timeout = 60)
{
    async__procpool_t *p = eng_pool_new(1);
    void *a, *x, *y;
    cr_assert_eq(async__procpool_shm_alloc(p, 64, &a), 0);
    async__procpool_shm_free(p, a);
    async__procpool_shm_free(p, a);
    cr_assert_eq(async__procpool_shm_alloc(p, 64, &x), 0);
    cr_assert_eq(async__procpool_shm_alloc(p, 64, &y), 0);
    cr_assert_neq(x, y, "one block handed out twice");
    async__procpool_free(p);
}

/* In the worker: the sum of its input bytes, after a pause that keeps the
 * first job's block in use while the second is placed. */
static int sum_bytes(void *ctx, const void *in, size_t n, async__procout_t *out)
{
    (void)ctx;
    usleep(100000);
    long s = 0;
    for (size_t i = 0; i < n; i++) s += ((const unsigned char *)in)[i];
    memcpy(async__procout_data(out), &s, sizeof s);
    return 0;
}

/* In the worker: where its input lies, for the test to aim at. */
static int where(void *ctx, const void *in, size_t n, async__procout_t *out)
{
    (void)ctx, (void)n;
    long at = (long)(intptr_t)in;
    memcpy(async__procout_data(out), &at, sizeof at);
    return 0;
}

static int submit_big(async__procpool_t *p, async__procpool_fn fn, const unsigned char *in,
                      size_t n, int i)
{
    async__procjob_t j = {.fn = (async__anyfn_t)fn, .in = in, .in_len = n, .out_cap = 8,
                          .deadline = ASYNC_FOREVER, .done = eng_on_done, .arg = (void *)(intptr_t)i};
    return async__procpool_submit(p, &j, NULL);
}

/* The same through jobs, the way a wrong answer comes out: a freed input
 * block's link pointed at the caller's live shared array had a later job's
 * input copied over that array (and the job after it share its block). */
Test(procpool_heap, a_forged_link_in_a_jobs_freed_input_block_spares_live_data, .timeout = 60)
{
    async__procpool_t *p = eng_pool_new(1);
    enum { N = 200 };
    unsigned char *rows;
    cr_assert_eq(async__procpool_shm_alloc(p, N, (void **)&rows), 0); /* the class of a 200-byte input */
    for (int i = 0; i < N; i++) rows[i] = (unsigned char)(i * 7 + 1);
    unsigned char in[3][N];
    memset(in, 0, sizeof in);
    cr_assert_eq(submit_big(p, where, in[0], N, 0), 0);
    eng_wait_done(1);
    wait_idle(p); /* its input block is on the free list */
    void *freed = (void *)(intptr_t)eng_res[0].val;
    cr_assert(async__procpool_owns(p, freed));
    worker_writes(p, header_of(freed) + 1, (uint64_t)((char *)header_of(rows) - (char *)p->h));
    long want[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < N; i++) in[k + 1][i] = (unsigned char)(k * 50 + i % 13);
        for (int i = 0; i < N; i++) want[k] += in[k + 1][i];
    }
    /* Two jobs at once: the first takes the freed block, the second the
     * block its forged link names. */
    int first = atomic_load(&eng_ndone);
    async__procjob_t j[2];
    for (int k = 0; k < 2; k++)
        j[k] = (async__procjob_t){.fn = (async__anyfn_t)sum_bytes, .in = in[k + 1], .in_len = N,
                                  .out_cap = 8, .deadline = ASYNC_FOREVER, .done = eng_on_done,
                                  .arg = (void *)(intptr_t)(first + k)};
    for (int k = 0; k < 2; k++) cr_assert_eq(async__procpool_submit(p, &j[k], NULL), 0);
    eng_wait_done(first + 2);
    for (int k = 0; k < 2; k++) {
        cr_assert_eq(eng_res[first + k].err, 0);
        cr_assert_eq(eng_res[first + k].val, want[k], "job %d: sum %ld, want %ld", k, eng_res[first + k].val, want[k]);
    }
    for (int i = 0; i < N; i++)
        cr_assert_eq(rows[i], (unsigned char)(i * 7 + 1), "the caller's live array was overwritten at %d", i);
    async__procpool_free(p);
}
#endif
