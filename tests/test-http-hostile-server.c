/* A hostile HTTP/1 server against the client, beyond the stock faults of
 * test-http-broken-servers.c: a Content-Length too large for any body,
 * which libcurl reads as "until the connection closes", so that a body cut
 * short would pass for a whole one. */
#include <criterion/criterion.h>
#include <async.h>
#include <async/http.h>
#include "support/http_fixture.h"

static raw_srv_t raw;

static void fini(void)
{
    raw_stop(&raw);
    http_fixture_teardown();
}

TestSuite(http_hostile_server, .init = http_fixture_setup, .fini = fini, .timeout = 30);

/* /cl?N: "Content-Length: N", the body "ok", and the connection closed;
 * /cl-chunked?N: the same length beside a chunked body, which overrides it. */
static bool answer(int fd, const char *path)
{
    char head[512];
    const char *q = strchr(path, '?');
    const char *n = q ? q + 1 : "2";
    if (!strncmp(path, "/cl-chunked?", 12)) {
        snprintf(head, sizeof head,
                 "HTTP/1.1 200 OK\r\nContent-Length: %s\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "2\r\nok\r\n0\r\n\r\n",
                 n);
        raw_puts(fd, head);
        return true;
    }
    snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Length: %s\r\n\r\nok", n);
    raw_puts(fd, head);
    return false;
}

static async_http_response_t *one(const char *method, const char *path, int retries)
{
    async_http_t *http;
    cr_assert_eq(async_http_new(&http, loop, NULL), 0);
    async_http_request_t req = {.url = raw_url(&raw, path), .method = method,
                                .max_retries = retries, .timeout_ns = ASYNC_SEC(10)};
    waited_t w = {0};
    cr_assert_eq(async_http_send(http, &req, on_waited, &w), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(w.calls, 1, "the request ended %d times", w.calls);
    cr_assert_eq(async_http_destroy(http), 0);
    return w.resp;
}

Test(http_hostile_server, a_content_length_beyond_any_body_is_a_body_cut_short)
{
    raw_start(&raw, answer);
    /* INT64_MAX + 1, a length in the zettabytes, one past the 32 digits
     * of any buffer. */
    static const char *const lengths[] = {"9223372036854775808", "99999999999999999999999",
                                          "123456789012345678901234567890123456789012345"};
    for (size_t i = 0; i < sizeof lengths / sizeof lengths[0]; i++) {
        char path[128];
        snprintf(path, sizeof path, "/cl?%s", lengths[i]);
        async_http_response_t *r = one(NULL, path, 0);
        cr_assert_eq(r->error, ASYNC_ECURL, "Content-Length %s: %d %s", lengths[i], r->error,
                     r->errmsg);
        cr_assert_eq(r->status, 200);
        cr_assert(strstr(r->errmsg, "Content-Length announced") &&
                      strstr(r->errmsg, "(curl error 18)"),
                  "%s", r->errmsg);
        cr_assert_eq(r->attempts, 1);
        async_http_response_free(r);
    }
    /* A body cut short is a transient failure of a GET, as any other. */
    async_http_response_t *r = one(NULL, "/cl?99999999999999999999999", 1);
    cr_assert_eq(r->error, ASYNC_ECURL, "%s", r->errmsg);
    cr_assert_eq(r->attempts, 2);
    async_http_response_free(r);
    cr_assert_eq(atomic_load(&raw.st->requests), 3 + 2);
}

Test(http_hostile_server, a_long_content_length_that_is_not_a_lie_is_taken)
{
    raw_start(&raw, answer);
    /* Curl's own: INT64_MAX bytes announced and two sent is its error 18. */
    async_http_response_t *r = one(NULL, "/cl?9223372036854775807", 0);
    cr_assert_eq(r->error, ASYNC_ECURL, "%s", r->errmsg);
    cr_assert(strstr(r->errmsg, "(curl error 18)"), "%s", r->errmsg);
    async_http_response_free(r);
    /* Leading zeros do not make a number large. */
    r = one(NULL, "/cl?0000000000000000000000000000002", 0);
    cr_assert_eq(r->error, 0, "%s", r->errmsg);
    cr_assert_str_eq(r->body, "ok");
    async_http_response_free(r);
    /* Chunked framing overrides the length (RFC 9112 6.3). */
    r = one(NULL, "/cl-chunked?99999999999999999999999", 0);
    cr_assert_eq(r->error, 0, "%s", r->errmsg);
    cr_assert_str_eq(r->body, "ok");
    async_http_response_free(r);
    /* HEAD carries no body, whatever length it names. */
    r = one("HEAD", "/cl?99999999999999999999999", 0);
    cr_assert_eq(r->error, 0, "%s", r->errmsg);
    cr_assert_eq(r->body_len, 0);
    async_http_response_free(r);
}
