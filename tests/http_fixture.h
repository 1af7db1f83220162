/* The fixture that the HTTP client's fault tests share (test-http-faults.c,
 * test-round6-attack.c, test-round12-http.c): the counting allocator, the
 * fault-injecting test server (tests/support/httpd.h) and a loop, set up
 * before each test and checked after it.  The teardown fails the test
 * (tests/support/teardown.h) if the loop would not close or anything the
 * library allocated is still live.  Include it once, in a test file: it
 * defines the file's srv and loop, and the suite's .init and .fini. */
#ifndef TESTS_HTTP_FIXTURE_H
#define TESTS_HTTP_FIXTURE_H
#include <criterion/criterion.h>
#include <async.h>
#include "support/alloc.h"
#include "support/httpd.h"
#include "support/teardown.h"

static test_httpd_t *srv;
static async_loop_t *loop;

static inline void http_fixture_setup(void)
{
    test_alloc_install();
    srv = test_httpd_start();
    cr_assert(srv, "test server did not start");
    cr_assert_eq(async_loop_new(&loop), 0);
}

static inline void http_fixture_teardown(void)
{
    TEARDOWN_CHECK(async_loop_destroy(loop) == 0, "the loop would not close");
    test_httpd_stop(srv);
    TEARDOWN_CHECK_NO_LEAK();
    test_alloc_uninstall();
}
#endif
