/* The executor's maps against the parameters a careless or hostile caller
 * passes: chunk sizes and item counts whose products wrap, maps of more
 * chunks than memory holds, guided chunks of a huge map.  Each test says in
 * its comment what it caught, or what broken code it would catch. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <async.h>
#include <async/executor.h>
#include <async/future.h>
#include "support/alloc.h"
#include "support/teardown.h"
#include "support/exec_jobs.h"

/* Under the sanitizers, malloc of a size no machine has (2^40 chunks'
 * tickets) aborts by default; make it fail as glibc's does, so the
 * library's own ASYNC_ENOMEM path is what the test sees. */
TEST_ALLOCATOR_MAY_RETURN_NULL();

TestSuite(map_limits, .init = test_exec_setup, .fini = test_exec_teardown);

/* --- hostile sizes ------------------------------------------------------------ */

/* A lazy map whose chunk of chunksize items does not fit a size_t of bytes:
 * (2^61 + 2) items of 8 bytes is 2^64 + 16 bytes, which wraps to 16.  The
 * chunk was allocated with the wrapped size and the source then wrote its
 * items past its end (ASan: heap-buffer-overflow in counted_source, called
 * from imap.c's build_chunk).  Refused now with ASYNC_EINVAL before any
 * item is pulled. */
Test(map_limits, imap_chunk_bytes_that_wrap_are_refused, .timeout = 30)
{
    async_executor_t *ex = threads(2);
    counted_t src = {0, 5};
    int64_t out[5];
    async_imap_t m;
    async_imap_init(&m);
    m.fn = twice, m.in_size = sizeof(int64_t), m.out_size = sizeof(int64_t);
    m.source = counted_source, m.source_arg = &src;
    m.chunksize = ((size_t)1 << 61) + 2;
    async_imap_iter_t *it = (async_imap_iter_t *)0x1;
    cr_expect_eq(async_executor_imap(&it, ex, &m), ASYNC_EINVAL);
    cr_expect_eq(it, (async_imap_iter_t *)0x1, "*out untouched");
    cr_expect_eq(src.next, 0, "no item pulled");
    /* The same over an array: n items fit the input, but not the output. */
    static const int64_t few[1] = {7};
    async_imap_init(&m);
    m.fn = nothing, m.in = few, m.in_size = 0, m.out_size = 16;
    m.n = ((size_t)1 << 60) + 1, m.chunksize = m.n;
    cr_expect_eq(async_executor_imap(&it, ex, &m), ASYNC_EINVAL);
    /* Chunks of SIZE_MAX / 2 items of 8 bytes: 2^64 - 8 bytes after the
     * wrap, which malloc refused (ASYNC_ENOMEM, as if a retry could help). */
    async_imap_init(&m);
    m.fn = twice, m.in_size = sizeof(int64_t), m.out_size = sizeof(int64_t);
    m.source = counted_source, m.source_arg = &src;
    m.chunksize = SIZE_MAX / 2;
    cr_expect_eq(async_executor_imap(&it, ex, &m), ASYNC_EINVAL);
    cr_expect_eq(src.next, 0, "no item pulled");
    /* Sane chunks still work: 5 items in chunks of 2. */
    async_imap_init(&m);
    m.fn = twice, m.in_size = sizeof(int64_t), m.out_size = sizeof(int64_t);
    m.source = counted_source, m.source_arg = &src, m.chunksize = 2;
    cr_assert_eq(async_executor_imap(&it, ex, &m), 0);
    size_t idx, got = 0;
    int r;
    while ((r = async_imap_next(it, &out[got], &idx)) == 0) {
        cr_assert_eq(idx, got);
        cr_assert_eq(out[got], 2 * (int64_t)got);
        got++;
    }
    cr_expect_eq(r, ASYNC_EEOF);
    cr_expect_eq(got, 5);
    async_imap_free(it);
    still_maps(ex);
    async_executor_free(ex);
}

/* A map of SIZE_MAX empty items in chunks of 1 has more chunks than memory
 * can hold: map_plan counted them one by one (2^64 steps, the call never
 * returned) before map_new found the count too large.  Now the count is
 * computed, and the call fails at once with ASYNC_ENOMEM.  The same with
 * 2^40 items: 2^40 steps (minutes) before the allocation failed. */
Test(map_limits, a_map_of_too_many_chunks_fails_at_once, .timeout = 30)
{
    async_executor_t *ex = threads(2);
    async_map_t m;
    async_map_init(&m);
    m.fn = nothing, m.n = SIZE_MAX, m.chunksize = 1;
    async_map_error_t err;
    cr_expect_eq(async_executor_map(ex, &m, &err), ASYNC_ENOMEM);
    m.n = (size_t)1 << 40;
    cr_expect_eq(async_executor_map(ex, &m, &err), ASYNC_ENOMEM);
    async_future_t *f = (async_future_t *)0x1;
    cr_expect_eq(async_executor_map_async(&f, ex, &m, NULL, NULL, NULL), ASYNC_ENOMEM);
    cr_expect_eq(f, (async_future_t *)0x1);
    still_maps(ex);
    async_executor_free(ex);
}

/* Guided chunks (chunksize 0) of SIZE_MAX items: Pool.map's
 * ceil(n / (4 * workers)) was computed as (n + d - 1) / d, which wraps for
 * n near SIZE_MAX to 0 (then 1): chunks of one item, planned one by one,
 * and the call never returned.  With the division that cannot wrap the
 * map has about 36 * workers chunks; a time limit already past fails them
 * all without running, so the call returns at once with ASYNC_ETIMEDOUT,
 * blaming item 0. */
Test(map_limits, guided_chunks_of_a_huge_map_are_planned_without_wrapping, .timeout = 30)
{
    async_executor_t *ex = threads(2);
    async_map_t m;
    async_map_init(&m);
    m.fn = nothing, m.n = SIZE_MAX, m.timeout_ns = -1;
    async_map_error_t err;
    cr_expect_eq(async_executor_map(ex, &m, &err), ASYNC_ETIMEDOUT);
    cr_expect_eq(err.index, 0);
    cr_expect_eq(err.code, ASYNC_ETIMEDOUT);
    still_maps(ex);
    async_executor_free(ex);
}

