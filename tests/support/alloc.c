/* See alloc.h.  Counters are atomic so that executor tests with threads can
 * use the same allocator. */
#include <stdatomic.h>
#include <stdlib.h>
#include <async.h>
#include "alloc.h"

static atomic_long live, total, fail_countdown = -1;

static void *counting_malloc(size_t size, void *ud)
{
    (void)ud;
    long left = atomic_load(&fail_countdown);
    if (left >= 0 && atomic_fetch_sub(&fail_countdown, 1) == 0) return NULL;
    void *p = malloc(size);
    if (p) { atomic_fetch_add(&live, 1); atomic_fetch_add(&total, 1); }
    return p;
}

static void *counting_realloc(void *ptr, size_t size, void *ud)
{
    if (!ptr) return counting_malloc(size, ud);
    long left = atomic_load(&fail_countdown);
    if (left >= 0 && atomic_fetch_sub(&fail_countdown, 1) == 0) return NULL;
    return realloc(ptr, size);
}

static void counting_free(void *ptr, void *ud)
{
    (void)ud;
    if (!ptr) return;
    atomic_fetch_sub(&live, 1);
    free(ptr);
}

void test_alloc_install(void)
{
    static const async_allocator_t a = {counting_malloc, counting_realloc, counting_free, NULL};
    atomic_store(&live, 0);
    atomic_store(&total, 0);
    atomic_store(&fail_countdown, -1);
    async_set_allocator(&a);
}

void test_alloc_uninstall(void) { async_set_allocator(NULL); }
long test_alloc_live(void) { return atomic_load(&live); }
long test_alloc_total(void) { return atomic_load(&total); }
void test_alloc_fail_after(long n) { atomic_store(&fail_countdown, n); }
