/* The HTTP client (lib/http) against broken servers.  A scripted server
 * speaks broken HTTP on loopback: it trickles, never answers, sends headers
 * without end, bad chunked encoding, a Content-Length that lies either way,
 * a redirect loop, a reset in the middle of a body, a status line where a
 * header belongs.  Each request must end once, with a precise error, within
 * its timeout, without a leak and without the loop spinning while it waits.
 * (The resolver's are in test-net-dns-hostile.c.) */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ev.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <async.h>
#include <async/http.h>
#include "support/http_fixture.h"
#include "support/http_expect.h"
#include "support/answer.h"

/* Every test asks the scripted server, which answers as raw_answer says for
 * each path; it starts before the test and stops after it. */
static raw_srv_t bad;
static async_http_response_t *last; /* the latest answer of ask */

static void setup(void)
{
    http_fixture_setup();
    raw_start(&bad, raw_answer);
}

static void teardown(void)
{
    async_http_response_free(last);
    /* A pid of 0 or below (the server never started) would make raw_stop's
     * kill(-pid) signal this process's group, or every process. */
    if (bad.pid > 0) raw_stop(&bad);
    http_fixture_teardown();
}

TestSuite(http_broken_servers, .init = setup, .fini = teardown, .timeout = 60);

/* One request for path on the broken server (req gives the rest), by a new
 * client with options o (NULL: the defaults), measured by run_one.  The
 * response stays the file's: the next ask, or the teardown, frees it. */
static waited_t ask(const async_http_opts_t *o, const char *path, async_http_request_t req)
{
    async_http_response_free(last);
    last = NULL;
    req.url = raw_url(&bad, path);
    waited_t w = run_one(o, &req);
    last = w.resp;
    return w;
}

/* --- broken servers ---------------------------------------------------------- */

Test(http_broken_servers, a_trickled_header_times_out_on_time_without_spinning)
{
    waited_t w = ask(NULL, "/trickle", (async_http_request_t){.timeout_ns = ASYNC_MSEC(1500)});
    EXPECT_FAILED(w.resp, ASYNC_ETIMEDOUT, "timed out", "");
    cr_expect_geq(w.wall, 1.45);
    cr_expect_lt(w.wall, 10.0, "a 1.5 s timeout ended after %.1f s", w.wall);
    expect_no_spin(&w, 10);
}

Test(http_broken_servers, a_server_that_never_answers_times_out_without_spinning)
{
    waited_t w = ask(NULL, "/silent", (async_http_request_t){.timeout_ns = ASYNC_MSEC(1200)});
    EXPECT_FAILED(w.resp, ASYNC_ETIMEDOUT, "0 bytes received", "");
    cr_expect_eq(w.resp->status, 0);
    cr_expect_geq(w.wall, 1.15);
    expect_no_spin(&w, 0);
}

/* The other way round: a server that takes the request's head and never
 * reads its 8 MiB body.  The upload stalls once the socket buffers are
 * full; the timeout ends it, and the wait for room to write blocks. */
Test(http_broken_servers, a_server_that_never_reads_the_body_times_out_without_spinning)
{
    size_t n = (size_t)8 << 20;
    char *body = malloc(n);
    cr_assert_not_null(body);
    memset(body, 'b', n);
    waited_t w = ask(NULL, "/silent", (async_http_request_t){.method = "PUT", .body = body,
                                                             .body_len = n,
                                                             .timeout_ns = ASYNC_MSEC(1200)});
    free(body);
    EXPECT_FAILED(w.resp, ASYNC_ETIMEDOUT, NULL, "");
    cr_expect_geq(w.wall, 1.15);
    cr_expect_lt(w.wall, 10.0);
    /* Filling the socket buffers takes a few dozen turns (48 here); a
     * spin would take tens of thousands. */
    expect_no_spin(&w, 20);
}

Test(http_broken_servers, endless_headers_end_with_an_error_not_endless_memory)
{
    waited_t w = ask(NULL, "/headers-forever", (async_http_request_t){.timeout_ns = ASYNC_SEC(20)});
    EXPECT_FAILED(w.resp, ASYNC_ECURL, "Too large response headers", "");
    cr_expect_lt(w.wall, 15.0, "endless headers were read for %.1f s", w.wall);
}

Test(http_broken_servers, endless_interim_responses_time_out)
{
    waited_t w = ask(NULL, "/continue-forever",
                     (async_http_request_t){.timeout_ns = ASYNC_MSEC(1200)});
    EXPECT_FAILED(w.resp, ASYNC_ETIMEDOUT, NULL, "");
    cr_expect_lt(w.wall, 10.0);
}

Test(http_broken_servers, bad_chunked_encoding_is_a_curl_error)
{
    waited_t w = ask(NULL, "/bad-chunked", (async_http_request_t){0});
    EXPECT_FAILED(w.resp, ASYNC_ECURL, "chunk", "");
    cr_expect(strstr(w.resp->errmsg, "curl error 56"), "%s", w.resp->errmsg);
}

Test(http_broken_servers, an_endless_chunked_body_stops_at_max_body)
{
    async_http_opts_t o = {.max_body = 100000};
    waited_t w = ask(&o, "/chunked-forever", (async_http_request_t){0});
    EXPECT_FAILED(w.resp, ASYNC_ECURL, NULL, "");
    cr_expect_str_eq(w.resp->errmsg, "response body larger than 100000 bytes");
    cr_expect_leq(w.resp->body_len, 100000);
}

Test(http_broken_servers, a_content_length_that_lies_short_fails_or_times_out)
{
    waited_t w = ask(NULL, "/short-close", (async_http_request_t){0});
    EXPECT_FAILED(w.resp, ASYNC_ECURL, "curl error 18", "");
    w = ask(NULL, "/short-open", (async_http_request_t){.timeout_ns = ASYNC_MSEC(800)});
    EXPECT_FAILED(w.resp, ASYNC_ETIMEDOUT, NULL, "");
    expect_no_spin(&w, 0);
}

Test(http_broken_servers, bytes_past_the_content_length_are_not_the_next_answer)
{
    async_http_t *http;
    cr_assert_eq(async_http_new(&http, loop, NULL), 0);
    for (int i = 0; i < 3; i++) {
        test_answer_t g = {0};
        async_http_request_t req = {.url = raw_url(&bad, "/long")};
        cr_assert_eq(async_http_send(http, &req, test_answer_catch, &g), 0);
        cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
        cr_assert_eq(g.calls, 1);
        cr_expect_eq(g.resp->error, 0, "request %d: %s", i, g.resp->errmsg);
        cr_expect_str_eq(g.resp->body, "ok", "request %d read the server's excess", i);
        async_http_response_free(g.resp);
    }
    cr_assert_eq(async_http_destroy(http), 0);
}

Test(http_broken_servers, a_redirect_loop_stops_after_ten)
{
    async_http_opts_t o = {.max_retries = 3, .retry_base_ns = ASYNC_MSEC(1)};
    waited_t w = ask(&o, "/loop", (async_http_request_t){0});
    EXPECT_FAILED(w.resp, ASYNC_ECURL, "curl error 47", "");
    cr_expect_eq(w.resp->attempts, 1, "a redirect loop is not transient");
    cr_expect_eq(atomic_load(&bad.st->requests), 11, "the first request and ten redirects");
}

Test(http_broken_servers, a_reset_mid_body_is_a_curl_error_and_retried)
{
    async_http_opts_t o = {.max_retries = 2, .retry_base_ns = ASYNC_MSEC(1)};
    waited_t w = ask(&o, "/reset", (async_http_request_t){0});
    EXPECT_FAILED(w.resp, ASYNC_ECURL, "curl error 56", "");
    cr_expect(strstr(w.resp->errmsg, "reset"), "%s", w.resp->errmsg);
    cr_expect_eq(w.resp->attempts, 3);
    /* The last attempt's bytes only (a reset may discard some the kernel
     * had not handed over yet), never the three attempts' together. */
    cr_expect_leq(w.resp->body_len, 1000, "%zu bytes: not the last attempt's alone",
                  w.resp->body_len);
}

/* curl takes a response's status from its first line only; a later line
 * that looks like a status line is one more header line to it.  The client
 * reads the code and version from the status line it kept: that must be
 * the first line, or a server could turn a 200 into a retried 503 and a 500
 * into a success, and drop the headers before the look-alike. */
Test(http_broken_servers, a_status_line_among_the_headers_is_not_the_status)
{
    async_http_opts_t o = {.max_retries = 2, .retry_base_ns = ASYNC_MSEC(1)};
    waited_t w = ask(&o, "/status-in-headers", (async_http_request_t){0});
    cr_expect_eq(w.resp->error, 0, "%s", w.resp->errmsg);
    cr_expect_eq(w.resp->status, 200);
    cr_expect_eq(w.resp->attempts, 1);
    cr_expect_str_eq(w.resp->body, "ok");
    cr_expect_str_eq(w.resp->http_version, "HTTP/1.1");
    cr_expect_str_eq(async_http_response_header(w.resp, "X-Before") ?: "(none)", "1");
    cr_expect_str_eq(async_http_response_header(w.resp, "X-After") ?: "(none)", "2");

    w = ask(&o, "/success-in-headers", (async_http_request_t){0});
    EXPECT_FAILED(w.resp, ASYNC_EHTTP, NULL, "");
    cr_expect_eq(w.resp->status, 500);
    cr_expect_str_eq(w.resp->errmsg, "HTTP status 500 Internal Server Error");
    cr_expect_str_eq(w.resp->http_version, "HTTP/1.1");
}

/* A NUL byte in a header line (tests/fuzz/crashes/http-response/crash-cf5f7f33...:
 * "piCongth:\r\0..."): the value read as a C string was "\r", a blank the
 * trim had not seen.  The response is refused, once, as curl 8 refuses it. */
Test(http_broken_servers, a_nul_byte_in_a_header_is_a_malformed_response)
{
    async_http_opts_t o = {.max_retries = 2, .retry_base_ns = ASYNC_MSEC(1)};
    waited_t w = ask(&o, "/nul-in-header", (async_http_request_t){0});
    EXPECT_FAILED(w.resp, ASYNC_ECURL, "a header line holds a NUL byte", "");
    cr_expect_eq(w.resp->attempts, 1);
    cr_expect_eq(async_http_response_header(w.resp, "\rX-Nul"), NULL);
}
