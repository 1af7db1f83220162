/* The expectation the hostile HTTP tests make most (test-http-broken-servers.c,
 * test-http-tls-peers.c): a request measured by support/http_fixture.h's
 * run_one failed with a given code and said why. */
#ifndef TEST_SUPPORT_HTTP_EXPECT_H
#define TEST_SUPPORT_HTTP_EXPECT_H
#include <criterion/criterion.h>
#include <string.h>
#include "http_fixture.h"

/* Expects the request that w (a waited_t) waited for to have failed with
 * code, its message holding text (NULL: any message); what (a string, ""
 * for none) names the case in the failure messages.  A macro, so that a
 * failure names the test's line. */
#define EXPECT_FAILED(w, code, text, what)                                                  \
    do {                                                                                   \
        const waited_t *w_ = &(w);                                                         \
        const char *what_ = (what), *text_ = (text);                                       \
        cr_expect_eq(w_->resp->error, (code), "%s%s%s", what_, *what_ ? ": " : "",           \
                     w_->resp->errmsg);                                                    \
        if (text_)                                                                         \
            cr_expect(strstr(w_->resp->errmsg, text_), "%s%s%s (wanted \"%s\")", what_,    \
                      *what_ ? ": " : "", w_->resp->errmsg, text_);                        \
    } while (0)
#endif
