/* A counting, failure-injecting allocator for tests, installed through the
 * allocator seam.  test_alloc_install() counts every allocation libasync
 * makes; test_alloc_fail_after(n) makes the allocation after the next n fail;
 * test_alloc_live() is allocations minus frees. */
#ifndef TEST_SUPPORT_ALLOC_H
#define TEST_SUPPORT_ALLOC_H
#include <stddef.h>
void test_alloc_install(void);
void test_alloc_uninstall(void);
long test_alloc_live(void);
long test_alloc_total(void);
void test_alloc_fail_after(long n); /* -1: never fail */
/* For a test binary whose tests ask for impossible sizes on purpose: the
 * sanitizers' allocators then return NULL, as glibc's does, instead of
 * aborting the test.  Use once, at file scope. */
#if defined(__SANITIZE_ADDRESS__)
#define TEST_ALLOCATOR_MAY_RETURN_NULL()                                                           \
    const char *__asan_default_options(void);                                                      \
    const char *__asan_default_options(void) { return "allocator_may_return_null=1"; }             \
    _Static_assert(1, "")
#elif defined(__SANITIZE_THREAD__)
#define TEST_ALLOCATOR_MAY_RETURN_NULL()                                                           \
    const char *__tsan_default_options(void);                                                      \
    const char *__tsan_default_options(void) { return "allocator_may_return_null=1"; }             \
    _Static_assert(1, "")
#else
#define TEST_ALLOCATOR_MAY_RETURN_NULL() _Static_assert(1, "")
#endif

#endif
