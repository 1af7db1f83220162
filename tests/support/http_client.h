/* The HTTP client of a test, made and freed: a client on a loop of the
 * test's own or a blocking one on its private loop, and at the end both
 * freed and the counting allocator (support/alloc.h) checked, in the test's
 * body, where a failed check fails the test (Criterion 2.4 forgets one in a
 * suite's teardown, support/teardown.h).  The test fails at once if a
 * client or loop cannot be made or freed. */
#ifndef TEST_SUPPORT_HTTP_CLIENT_H
#define TEST_SUPPORT_HTTP_CLIENT_H
#include <async.h>
#include <async/http.h>
#include <criterion/criterion.h>
#include "alloc.h"

/* A client made with opts (NULL: the defaults).  With loop set, on a new
 * loop that *loop receives (OUT); with loop NULL, a blocking client on its
 * private loop. */
static inline async_http_t *test_http_client(async_loop_t **loop, const async_http_opts_t *opts)
{
    async_http_t *http = NULL;
    if (loop) cr_assert_eq(async_loop_new(loop), 0);
    int rc = async_http_new(&http, loop ? *loop : NULL, opts);
    cr_assert_eq(rc, 0, "async_http_new: %s", async_strerror(rc));
    return http;
}

/* Frees http, then loop unless it is NULL, each of which must return 0;
 * then no allocation the test made through libasync may be left. */
static inline void test_http_client_end(async_loop_t *loop, async_http_t *http)
{
    cr_assert_eq(async_http_destroy(http), 0);
    if (loop) cr_assert_eq(async_loop_destroy(loop), 0);
    cr_assert_eq(test_alloc_live(), 0, "leaked %ld allocations", test_alloc_live());
}
#endif
