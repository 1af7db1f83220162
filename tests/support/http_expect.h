/* The expectation the hostile HTTP tests make most (test-http-broken-servers.c,
 * test-http-tls-peers.c): a request failed with a given code and said why. */
#ifndef TEST_SUPPORT_HTTP_EXPECT_H
#define TEST_SUPPORT_HTTP_EXPECT_H
#include <criterion/criterion.h>
#include <string.h>
#include <async/http.h>

/* Expects the request whose response is resp (an async_http_response_t *)
 * to have failed with code, its message holding text (NULL: any message);
 * what (a string, "" for none) names the case in the failure messages.  A
 * macro, so that a failure names the test's line. */
#define EXPECT_FAILED(resp, code, text, what)                                              \
    do {                                                                                   \
        const async_http_response_t *r_ = (resp);                                          \
        const char *what_ = (what), *text_ = (text);                                       \
        cr_expect_eq(r_->error, (code), "%s%s%s", what_, *what_ ? ": " : "",               \
                     r_->errmsg);                                                          \
        if (text_)                                                                         \
            cr_expect(strstr(r_->errmsg, text_), "%s%s%s (wanted \"%s\")", what_,          \
                      *what_ ? ": " : "", r_->errmsg, text_);                              \
    } while (0)
#endif
