/* Round 12's hostile review of the HTTP client (lib/http).  A scripted server speaks broken HTTP on loopback: it
 * trickles, never answers, sends headers without end, bad chunked encoding,
 * a Content-Length that lies either way, a redirect loop, a reset in the
 * middle of a body, a status line where a header belongs.  Each request must
 * end once, with a precise error, within its timeout, without a leak and
 * without the loop spinning while it waits.  Then failing allocations at
 * every point of a request's start, descriptors running out while requests
 * are in flight, tasks cancelled and clients freed with requests under way.
 * (The resolver's attacks are in test-net-dns-hostile.c.) */
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
#include "http_fixture.h"
#include "support/answer.h"

TestSuite(round12_http, .init = http_fixture_setup, .fini = http_fixture_teardown,
          .timeout = 60);

/* --- the scripted server's answers (http_fixture.h runs them) ------------- */

/* Answers one request for path; returns false to end the connection. */
static bool raw_answer(int fd, const char *path)
{
    char line[256];
    if (!strcmp(path, "/ok")) {
        raw_puts(fd, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        return true;
    }
    if (!strncmp(path, "/trickle", 8)) {
        /* A status line, then a header one byte at a time, for ever. */
        raw_puts(fd, "HTTP/1.1 200 OK\r\nX-Slow: ");
        for (;;) {
            nap_ms(100);
            raw_puts(fd, "a");
        }
    }
    if (!strcmp(path, "/slow-ok")) {
        nap_ms(300);
        raw_puts(fd, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        return true;
    }
    if (!strcmp(path, "/silent")) {
        for (;;) nap_ms(1000);
    }
    if (!strcmp(path, "/headers-forever")) {
        /* Header lines as fast as the client takes them. */
        raw_puts(fd, "HTTP/1.1 200 OK\r\n");
        char h[160];
        memset(h, 'h', sizeof h);
        for (unsigned long i = 0;; i++) {
            int n = snprintf(line, sizeof line, "X-Junk-%lu: ", i);
            raw_put(fd, line, (size_t)n);
            raw_put(fd, h, sizeof h);
            raw_put(fd, "\r\n", 2);
        }
    }
    if (!strcmp(path, "/continue-forever")) {
        for (;;) {
            raw_puts(fd, "HTTP/1.1 100 Continue\r\n\r\n");
            nap_ms(5);
        }
    }
    if (!strcmp(path, "/bad-chunked")) {
        raw_puts(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n");
        nap_ms(200);
        return false;
    }
    if (!strcmp(path, "/chunked-forever")) {
        raw_puts(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        char c[4096 + 16];
        int n = snprintf(c, sizeof c, "1000\r\n");
        memset(c + n, 'c', 4096);
        memcpy(c + n + 4096, "\r\n", 2);
        for (;;) raw_put(fd, c, (size_t)n + 4096 + 2);
    }
    if (!strcmp(path, "/short-close")) {
        raw_puts(fd, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
        return false;
    }
    if (!strcmp(path, "/short-open")) {
        raw_puts(fd, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
        for (;;) nap_ms(1000);
    }
    if (!strcmp(path, "/long")) {
        /* Says 2 bytes, sends more on a connection it keeps open: the rest
         * must not be read as the next answer. */
        raw_puts(fd, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n"
                  "Content-Length: 6\r\n\r\nforged");
        return true;
    }
    if (!strcmp(path, "/loop")) {
        raw_puts(fd, "HTTP/1.1 302 Found\r\nLocation: /loop\r\nContent-Length: 0\r\n\r\n");
        return true;
    }
    if (!strcmp(path, "/reset")) {
        raw_puts(fd, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n");
        char b[1000];
        memset(b, 'r', sizeof b);
        raw_put(fd, b, sizeof b);
        nap_ms(100);
        struct linger lg = {1, 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(fd);
        _exit(0);
    }
    if (!strcmp(path, "/status-in-headers")) {
        /* A line shaped like a status line where a header belongs: curl
         * reads the first line's status, and so must the client. */
        raw_puts(fd, "HTTP/1.1 200 OK\r\nX-Before: 1\r\nHTTP/1.1 503 Service Unavailable: x\r\n"
                  "X-After: 2\r\nContent-Length: 2\r\n\r\nok");
        return true;
    }
    if (!strcmp(path, "/success-in-headers")) {
        raw_puts(fd, "HTTP/1.1 500 Internal Server Error\r\nHTTP/2 200 OK: x\r\nContent-Length: 4\r\n"
                  "\r\nfail");
        return true;
    }
    snprintf(line, sizeof line, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    raw_puts(fd, line);
    return true;
}

/* --- broken servers ---------------------------------------------------------- */

Test(round12_http, a_trickled_header_times_out_on_time_without_spinning)
{
    raw_srv_t s;
    raw_start(&s, raw_answer);
    async_http_request_t req = {.url = raw_url(&s, "/trickle"), .timeout_ns = ASYNC_MSEC(1500)};
    waited_t w = run_one(NULL, &req);
    cr_expect_eq(w.resp->error, ASYNC_ETIMEDOUT, "%s", w.resp->errmsg);
    cr_expect(strstr(w.resp->errmsg, "timed out"), "%s", w.resp->errmsg);
    cr_expect_geq(w.wall, 1.45);
    cr_expect_lt(w.wall, 10.0, "a 1.5 s timeout ended after %.1f s", w.wall);
    expect_no_spin(&w, 10);
    async_http_response_free(w.resp);
    raw_stop(&s);
}

Test(round12_http, a_server_that_never_answers_times_out_without_spinning)
{
    raw_srv_t s;
    raw_start(&s, raw_answer);
    async_http_request_t req = {.url = raw_url(&s, "/silent"), .timeout_ns = ASYNC_MSEC(1200)};
    waited_t w = run_one(NULL, &req);
    cr_expect_eq(w.resp->error, ASYNC_ETIMEDOUT, "%s", w.resp->errmsg);
    cr_expect(strstr(w.resp->errmsg, "0 bytes received"), "%s", w.resp->errmsg);
    cr_expect_eq(w.resp->status, 0);
    cr_expect_geq(w.wall, 1.15);
    expect_no_spin(&w, 0);
    async_http_response_free(w.resp);
    raw_stop(&s);
}

/* The other way round: a server that takes the request's head and never
 * reads its 8 MiB body.  The upload stalls once the socket buffers are
 * full; the timeout ends it, and the wait for room to write blocks. */
Test(round12_http, a_server_that_never_reads_the_body_times_out_without_spinning)
{
    raw_srv_t s;
    raw_start(&s, raw_answer);
    size_t n = (size_t)8 << 20;
    char *body = malloc(n);
    cr_assert_not_null(body);
    memset(body, 'b', n);
    async_http_request_t req = {.url = raw_url(&s, "/silent"), .method = "PUT", .body = body,
                                .body_len = n, .timeout_ns = ASYNC_MSEC(1200)};
    waited_t w = run_one(NULL, &req);
    free(body);
    cr_expect_eq(w.resp->error, ASYNC_ETIMEDOUT, "%s", w.resp->errmsg);
    cr_expect_geq(w.wall, 1.15);
    cr_expect_lt(w.wall, 10.0);
    /* Filling the socket buffers takes a few dozen turns (48 here); a
     * spin would take tens of thousands. */
    expect_no_spin(&w, 20);
    async_http_response_free(w.resp);
    raw_stop(&s);
}

Test(round12_http, endless_headers_end_with_an_error_not_endless_memory)
{
    raw_srv_t s;
    raw_start(&s, raw_answer);
    async_http_request_t req = {.url = raw_url(&s, "/headers-forever"),
                                .timeout_ns = ASYNC_SEC(20)};
    waited_t w = run_one(NULL, &req);
    cr_expect_eq(w.resp->error, ASYNC_ECURL, "%s", w.resp->errmsg);
    cr_expect_lt(w.wall, 15.0, "endless headers were read for %.1f s", w.wall);
    cr_expect(strstr(w.resp->errmsg, "Too large response headers"), "%s", w.resp->errmsg);
    async_http_response_free(w.resp);
    raw_stop(&s);
}

Test(round12_http, endless_interim_responses_time_out)
{
    raw_srv_t s;
    raw_start(&s, raw_answer);
    async_http_request_t req = {.url = raw_url(&s, "/continue-forever"),
                                .timeout_ns = ASYNC_MSEC(1200)};
    waited_t w = run_one(NULL, &req);
    cr_expect_eq(w.resp->error, ASYNC_ETIMEDOUT, "%s", w.resp->errmsg);
    cr_expect_lt(w.wall, 10.0);
    async_http_response_free(w.resp);
    raw_stop(&s);
}

Test(round12_http, bad_chunked_encoding_is_a_curl_error)
{
    raw_srv_t s;
    raw_start(&s, raw_answer);
    async_http_request_t req = {.url = raw_url(&s, "/bad-chunked")};
    waited_t w = run_one(NULL, &req);
    cr_expect_eq(w.resp->error, ASYNC_ECURL, "%s", w.resp->errmsg);
    cr_expect(strstr(w.resp->errmsg, "chunk"), "%s", w.resp->errmsg);
    cr_expect(strstr(w.resp->errmsg, "curl error 56"), "%s", w.resp->errmsg);
    async_http_response_free(w.resp);
    raw_stop(&s);
}

Test(round12_http, an_endless_chunked_body_stops_at_max_body)
{
    raw_srv_t s;
    raw_start(&s, raw_answer);
    async_http_opts_t o = {.max_body = 100000};
    async_http_request_t req = {.url = raw_url(&s, "/chunked-forever")};
    waited_t w = run_one(&o, &req);
    cr_expect_eq(w.resp->error, ASYNC_ECURL, "%s", w.resp->errmsg);
    cr_expect_str_eq(w.resp->errmsg, "response body larger than 100000 bytes");
    cr_expect_leq(w.resp->body_len, 100000);
    async_http_response_free(w.resp);
    raw_stop(&s);
}

Test(round12_http, a_content_length_that_lies_short_fails_or_times_out)
{
    raw_srv_t s;
    raw_start(&s, raw_answer);
    async_http_request_t req = {.url = raw_url(&s, "/short-close")};
    waited_t w = run_one(NULL, &req);
    cr_expect_eq(w.resp->error, ASYNC_ECURL, "%s", w.resp->errmsg);
    cr_expect(strstr(w.resp->errmsg, "curl error 18"), "%s", w.resp->errmsg);
    async_http_response_free(w.resp);
    req = (async_http_request_t){.url = raw_url(&s, "/short-open"),
                                 .timeout_ns = ASYNC_MSEC(800)};
    w = run_one(NULL, &req);
    cr_expect_eq(w.resp->error, ASYNC_ETIMEDOUT, "%s", w.resp->errmsg);
    expect_no_spin(&w, 0);
    async_http_response_free(w.resp);
    raw_stop(&s);
}

Test(round12_http, bytes_past_the_content_length_are_not_the_next_answer)
{
    raw_srv_t s;
    raw_start(&s, raw_answer);
    async_http_t *http;
    cr_assert_eq(async_http_new(&http, loop, NULL), 0);
    for (int i = 0; i < 3; i++) {
        test_answer_t g = {0};
        async_http_request_t req = {.url = raw_url(&s, "/long")};
        cr_assert_eq(async_http_send(http, &req, test_answer_catch, &g), 0);
        cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
        cr_assert_eq(g.calls, 1);
        cr_expect_eq(g.resp->error, 0, "request %d: %s", i, g.resp->errmsg);
        cr_expect_str_eq(g.resp->body, "ok", "request %d read the server's excess", i);
        async_http_response_free(g.resp);
    }
    cr_assert_eq(async_http_destroy(http), 0);
    raw_stop(&s);
}

Test(round12_http, a_redirect_loop_stops_after_ten)
{
    raw_srv_t s;
    raw_start(&s, raw_answer);
    async_http_opts_t o = {.max_retries = 3, .retry_base_ns = ASYNC_MSEC(1)};
    async_http_request_t req = {.url = raw_url(&s, "/loop")};
    waited_t w = run_one(&o, &req);
    cr_expect_eq(w.resp->error, ASYNC_ECURL, "%s", w.resp->errmsg);
    cr_expect(strstr(w.resp->errmsg, "curl error 47"), "%s", w.resp->errmsg);
    cr_expect_eq(w.resp->attempts, 1, "a redirect loop is not transient");
    cr_expect_eq(atomic_load(&s.st->requests), 11, "the first request and ten redirects");
    async_http_response_free(w.resp);
    raw_stop(&s);
}

Test(round12_http, a_reset_mid_body_is_a_curl_error_and_retried)
{
    raw_srv_t s;
    raw_start(&s, raw_answer);
    async_http_opts_t o = {.max_retries = 2, .retry_base_ns = ASYNC_MSEC(1)};
    async_http_request_t req = {.url = raw_url(&s, "/reset")};
    waited_t w = run_one(&o, &req);
    cr_expect_eq(w.resp->error, ASYNC_ECURL, "%s", w.resp->errmsg);
    cr_expect(strstr(w.resp->errmsg, "curl error 56"), "%s", w.resp->errmsg);
    cr_expect(strstr(w.resp->errmsg, "reset"), "%s", w.resp->errmsg);
    cr_expect_eq(w.resp->attempts, 3);
    /* The last attempt's bytes only (a reset may discard some the kernel
     * had not handed over yet), never the three attempts' together. */
    cr_expect_leq(w.resp->body_len, 1000, "%zu bytes: not the last attempt's alone",
                  w.resp->body_len);
    async_http_response_free(w.resp);
    raw_stop(&s);
}

/* curl takes a response's status from its first line only; a later line
 * that looks like a status line is one more header line to it.  The client
 * reads the code and version from the status line it kept: that must be
 * the first line, or a server could turn a 200 into a retried 503 and a 500
 * into a success, and drop the headers before the look-alike. */
Test(round12_http, a_status_line_among_the_headers_is_not_the_status)
{
    raw_srv_t s;
    raw_start(&s, raw_answer);
    async_http_opts_t o = {.max_retries = 2, .retry_base_ns = ASYNC_MSEC(1)};
    async_http_request_t req = {.url = raw_url(&s, "/status-in-headers")};
    waited_t w = run_one(&o, &req);
    cr_expect_eq(w.resp->error, 0, "%s", w.resp->errmsg);
    cr_expect_eq(w.resp->status, 200);
    cr_expect_eq(w.resp->attempts, 1);
    cr_expect_str_eq(w.resp->body, "ok");
    cr_expect_str_eq(w.resp->http_version, "HTTP/1.1");
    cr_expect_str_eq(async_http_response_header(w.resp, "X-Before") ?: "(none)", "1");
    cr_expect_str_eq(async_http_response_header(w.resp, "X-After") ?: "(none)", "2");
    async_http_response_free(w.resp);

    req.url = raw_url(&s, "/success-in-headers");
    w = run_one(&o, &req);
    cr_expect_eq(w.resp->error, ASYNC_EHTTP, "%s", w.resp->errmsg);
    cr_expect_eq(w.resp->status, 500);
    cr_expect_str_eq(w.resp->errmsg, "HTTP status 500 Internal Server Error");
    cr_expect_str_eq(w.resp->http_version, "HTTP/1.1");
    async_http_response_free(w.resp);
    raw_stop(&s);
}

/* --- failing allocations when a request starts -------------------------------- */

typedef struct inside {
    test_answer_t a;
    bool in_send;      /* async_http_send has not returned yet */
    int calls_in_send; /* callbacks that ran inside it */
} inside_t;

static void on_inside(async_http_response_t *resp, void *arg)
{
    inside_t *in = arg;
    if (in->in_send) in->calls_in_send++;
    test_answer_catch(resp, &in->a);
}

/* A request that could not start (no memory for its easy handle, its
 * shard, curl's multi handle entry) fails, but async_http_send accepted it:
 * its callback runs later, on the loop, never inside the send (http.h), and
 * a task's fetch of it suspends and wakes as for any other failure. */
Test(round12_http, a_request_that_cannot_start_never_calls_back_inside_send)
{
    int failed = 0;
    for (long n = 0; n < 30; n++) {
        long before = test_alloc_live();
        async_http_t *http;
        cr_assert_eq(async_http_new(&http, loop, NULL), 0);
        inside_t in = {.in_send = true};
        async_http_request_t req = {.url = test_httpd_url(srv, "/ok")};
        test_alloc_fail_after(n);
        int rc = async_http_send(http, &req, on_inside, &in);
        test_alloc_fail_after(-1);
        in.in_send = false;
        cr_expect_eq(in.calls_in_send, 0, "allocation %ld: the callback ran inside send", n);
        if (rc == 0) {
            cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
            cr_assert_eq(in.a.calls, 1, "allocation %ld", n);
            if (in.a.resp->error) {
                failed++;
                cr_expect_eq(in.a.resp->error, ASYNC_ENOMEM, "%s", in.a.resp->errmsg);
            }
            async_http_response_free(in.a.resp);
        } else {
            cr_expect_eq(rc, ASYNC_ENOMEM);
            cr_expect_eq(in.a.calls, 0);
        }
        async_http_stats_t st;
        async_http_stats(http, &st);
        cr_expect_eq(st.in_flight, 0);
        cr_assert_eq(async_http_destroy(http), 0);
        cr_assert_eq(test_alloc_live(), before, "leak after failing allocation %ld", n);
    }
    cr_expect_gt(failed, 0, "no accepted request failed to start: the test missed its point");
}

/* --- cancelled and freed with requests under way ------------------------------ */

typedef struct fetcher {
    async_http_t *http;
    char url[128];
    int64_t deadline;
    int rc;
    async_http_response_t *resp;
} fetcher_t;

static int fetch_task(void *arg, void **result)
{
    (void)result;
    fetcher_t *f = arg;
    async_http_request_t req = {.url = f->url};
    f->rc = async_http_fetch_dl(&f->resp, f->http, &req, f->deadline);
    return 0;
}

static int cancel_it(void *arg, void **result)
{
    (void)result;
    async_task_cancel(*(async_task_t *)arg);
    return 0;
}

/* Tasks run from the loop's prepare watcher, and a request a task starts
 * arms the client's own prepare watcher, which libev then runs only after
 * the next poll; curl's zero timeout keeps that poll from blocking.  A task
 * cancelled in the same turn gives its transfer up, which stopped curl's
 * timer and left the prepare watcher armed with nothing to do: the poll
 * blocked for libev's longest wait (59.7 s) before the loop could end. */
Test(round12_http, a_fetch_cancelled_in_the_turn_it_started_lets_the_loop_end, .timeout = 120)
{
    async_http_t *http;
    cr_assert_eq(async_http_new(&http, loop, NULL), 0);
    for (int round = 0; round < 3; round++) {
        fetcher_t f = {.http = http, .deadline = ASYNC_FOREVER};
        snprintf(f.url, sizeof f.url, "%s", test_httpd_url(srv, "/stall?ms=20000"));
        async_task_t t;
        cr_assert_eq(async_task_spawn(&t, loop, fetch_task, &f, NULL), 0);
        async_task_opts_t detached = {.size = sizeof detached, .detached = true};
        cr_assert_eq(async_task_spawn(NULL, loop, cancel_it, &t, &detached), 0);
        int64_t t0 = async_now();
        cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
        double took = (double)(async_now() - t0) / 1e9;
        cr_assert_eq(async_task_detach(t), 0);
        cr_expect_eq(f.rc, ASYNC_ECANCELED, "%s", async_errname(f.rc));
        cr_expect_null(f.resp);
        cr_expect_lt(took, 10.0, "round %d: the loop ended %.1f s after the cancel", round, took);
        async_http_stats_t st;
        async_http_stats(http, &st);
        cr_expect_eq(st.in_flight, 0);
    }
    cr_assert_eq(async_http_destroy(http), 0);
}

typedef struct starter {
    fetcher_t f;
    long fail_at;
} starter_t;

static int fetch_failing(void *arg, void **result)
{
    (void)result;
    starter_t *s = arg;
    async_http_request_t req = {.url = s->f.url};
    test_alloc_fail_after(s->fail_at);
    s->f.rc = async_http_fetch_dl(&s->f.resp, s->f.http, &req, s->f.deadline);
    test_alloc_fail_after(-1);
    return 0;
}

/* A request that cannot start, fetched from a task: the task sees its
 * failure (or, cancelled before the loop reports it, gives it up), and a
 * client freed before the loop reported it ends it in the free, with its
 * own error.  Each request ends once; nothing leaks (the canceller is
 * spawned detached: a task spawned without a handle and without
 * opts.detached keeps its slot until the loop is freed, task.h). */
Test(round12_http, a_request_that_cannot_start_ends_once_when_cancelled_or_freed,
     .timeout = 120)
{
    /* The loop keeps finished tasks' stacks for the next ones: two tasks at
     * once first, as in the rounds below, so that the counts compare like
     * with like. */
    static async_task_t nobody; /* a spent handle: the cancel is refused */
    async_task_opts_t detached = {.size = sizeof detached, .detached = true};
    async_task_t warm;
    cr_assert_eq(async_task_spawn(&warm, loop, cancel_it, &nobody, NULL), 0);
    cr_assert_eq(async_task_spawn(NULL, loop, cancel_it, &nobody, &detached), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(async_task_detach(warm), 0);
    int enomem = 0;
    for (long n = 0; n < 30; n++) {
        for (int cancel = 0; cancel < 2; cancel++) {
            long before = test_alloc_live();
            starter_t s = {.f = {.deadline = async_deadline_after(ASYNC_SEC(20))}, .fail_at = n};
            snprintf(s.f.url, sizeof s.f.url, "%s", test_httpd_url(srv, "/ok"));
            cr_assert_eq(async_http_new(&s.f.http, loop, NULL), 0);
            async_task_t t;
            cr_assert_eq(async_task_spawn(&t, loop, fetch_failing, &s, NULL), 0);
            if (cancel) cr_assert_eq(async_task_spawn(NULL, loop, cancel_it, &t, &detached), 0);
            int64_t t0 = async_now();
            cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
            cr_expect_lt(async_now() - t0, ASYNC_SEC(10), "allocation %ld, cancel %d: a stall", n,
                         cancel);
            cr_assert_eq(async_task_detach(t), 0);
            if (s.f.rc == ASYNC_ECANCELED) {
                cr_expect(cancel, "allocation %ld: cancelled without a cancel", n);
                cr_expect_null(s.f.resp);
            } else if (s.f.resp) {
                cr_expect_eq(s.f.rc, s.f.resp->error);
                enomem += s.f.rc == ASYNC_ENOMEM;
                cr_expect(s.f.rc == 0 || s.f.rc == ASYNC_ENOMEM, "allocation %ld: %s", n,
                          s.f.resp->errmsg);
            } else {
                cr_expect_eq(s.f.rc, ASYNC_ENOMEM, "allocation %ld: %s", n, async_errname(s.f.rc));
            }
            async_http_response_free(s.f.resp);
            async_http_stats_t st;
            async_http_stats(s.f.http, &st);
            cr_expect_eq(st.in_flight, 0, "allocation %ld, cancel %d", n, cancel);
            cr_assert_eq(async_http_destroy(s.f.http), 0);
            cr_assert_eq(test_alloc_live(), before, "leak after failing allocation %ld, cancel %d",
                         n, cancel);
        }

        long before = test_alloc_live();
        async_http_t *http;
        cr_assert_eq(async_http_new(&http, loop, NULL), 0);
        test_answer_t a = {0};
        async_http_request_t req = {.url = test_httpd_url(srv, "/ok")};
        test_alloc_fail_after(n);
        int rc = async_http_send(http, &req, test_answer_catch, &a);
        test_alloc_fail_after(-1);
        cr_expect_eq(a.calls, 0);
        cr_assert_eq(async_http_destroy(http), 0);
        if (rc == 0) {
            cr_assert_eq(a.calls, 1, "allocation %ld: the free ended the request %d times", n,
                         a.calls);
            cr_expect(a.resp->error == ASYNC_ECLOSED || a.resp->error == ASYNC_ENOMEM, "%s",
                      a.resp->errmsg);
            async_http_response_free(a.resp);
        }
        cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
        cr_assert_eq(test_alloc_live(), before, "leak after failing allocation %ld", n);
    }
    cr_expect_gt(enomem, 0, "no fetch met a failed start");
}

/* --- descriptors running out mid-run -------------------------------------------- */

static int open_fds(void)
{
    int n = 0;
    for (int fd = 0; fd < 1024; fd++) n += fcntl(fd, F_GETFD) >= 0;
    return n;
}

/* In a child: twelve requests at once to a server that answers after 300
 * ms, with room for only a few sockets.  Those that got one succeed; the
 * rest end at once with ASYNC_EMFILE and say so.  With retries, the later
 * attempts reuse the connections the first ones leave (keep-alive), so all
 * twelve succeed.  Nothing leaks a descriptor.  Returns 0, or 1 after
 * saying what went wrong on stderr. */
#define MID_N 12

static int emfile_child(raw_srv_t *s, int retries)
{
    async_loop_t *l;
    if (async_loop_new(&l)) return 1;
    int fds0 = open_fds();
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    struct rlimit low = rl;
    int highest = 0;
    for (int fd = 0; fd < 1024; fd++)
        if (fcntl(fd, F_GETFD) >= 0) highest = fd;
    low.rlim_cur = (rlim_t)highest + 64;
    if (setrlimit(RLIMIT_NOFILE, &low)) return 1;
    /* Every descriptor taken, holes included. */
    static int fill[4096];
    int n_fill = 0;
    while (n_fill < 4096 && (fill[n_fill] = dup(0)) >= 0) n_fill++;
    if (n_fill == 4096 || errno != EMFILE) {
        fprintf(stderr, "could not take every descriptor: %d taken, %s\n", n_fill, strerror(errno));
        return 1;
    }
    /* None left: a client on a given loop needs none of its own (curl
     * makes its multi handle without the wake-up socket pair it would
     * otherwise keep, two descriptors), so it can still be made. */
    async_http_opts_t o = {.max_retries = retries, .retry_base_ns = ASYNC_MSEC(200)};
    async_http_t *http = NULL;
    int rc = async_http_new(&http, l, &o);
    if (rc) {
        fprintf(stderr, "a client without descriptors: %s\n", async_errname(rc));
        return 1;
    }
    int bad = 0;
    for (int k = 0; k < 4 && n_fill; k++) close(fill[--n_fill]); /* room for four sockets */
    test_answer_t a[MID_N];
    memset(a, 0, sizeof a);
    for (int i = 0; i < MID_N; i++) {
        async_http_request_t req = {.url = raw_url(s, "/slow-ok")};
        if (async_http_send(http, &req, test_answer_catch, &a[i])) return 1;
    }
    if (async_loop_run(l, ASYNC_RUN_DEFAULT)) return 1;
    int ok = 0, emfile = 0;
    for (int i = 0; i < MID_N; i++) {
        if (a[i].calls != 1 || !a[i].resp) {
            fprintf(stderr, "request %d ended %d times\n", i, a[i].calls);
            bad = 1;
            continue;
        }
        if (a[i].resp->error == 0 && !strcmp(a[i].resp->body, "ok")) {
            ok++;
        } else if (a[i].resp->error == ASYNC_EMFILE &&
                   strstr(a[i].resp->errmsg, "out of descriptors")) {
            emfile++;
        } else {
            fprintf(stderr, "request %d: %s: %s\n", i, async_errname(a[i].resp->error),
                    a[i].resp->errmsg);
            bad = 1;
        }
        async_http_response_free(a[i].resp);
    }
    fprintf(stderr, "retries %d: %d ok, %d out of descriptors\n", retries, ok, emfile);
    if (ok == 0) bad = 1;
    if (retries ? ok != MID_N : emfile == 0) {
        fprintf(stderr, "retries %d: %d of %d succeeded\n", retries, ok, MID_N);
        bad = 1;
    }
    while (n_fill) close(fill[--n_fill]);
    setrlimit(RLIMIT_NOFILE, &rl);
    if (async_http_destroy(http)) bad = 1;
    if (open_fds() != fds0) {
        fprintf(stderr, "%d descriptors open before, %d after\n", fds0, open_fds());
        bad = 1;
    }
    if (async_loop_destroy(l)) bad = 1;
    return bad;
}

Test(round12_http, descriptors_running_out_mid_run_fail_those_requests_only)
{
    raw_srv_t s;
    raw_start(&s, raw_answer);
    for (int retries = 0; retries < 2; retries++) {
        fflush(NULL);
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) _exit(emfile_child(&s, retries * 3));
        int st;
        cr_assert_eq(waitpid(pid, &st, 0), pid);
        cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "retries %d: the child failed (status %d)",
                  retries * 3, st);
    }
    raw_stop(&s);
}
