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
#endif
