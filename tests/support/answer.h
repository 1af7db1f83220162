/* Catching an HTTP client's answers in callback-style tests. */
#ifndef TEST_SUPPORT_ANSWER_H
#define TEST_SUPPORT_ANSWER_H
#include <async/http.h>

/* Where one request's answer lands: the response handed to the callback
 * and how many times the callback ran (a request ends exactly once, so a
 * test asserts calls == 1).  Zero-initialise it before the send. */
typedef struct test_answer {
    async_http_response_t *resp;
    int calls;
} test_answer_t;

/* An async_http_cb for async_http_send with arg = a test_answer_t *.  It
 * counts the call and keeps the latest response, freeing an earlier one, so
 * a second call is caught by the count and not by a leak.  The test frees
 * resp. */
void test_answer_catch(async_http_response_t *resp, void *arg);
#endif
