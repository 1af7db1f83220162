/* Faults reach the caller of the HTTP client as precise per-request errors,
 * transient ones are retried until they recover, and nothing leaks or hangs:
 * 500, 429 with Retry-After, malformed JSON, a stalled response past its
 * timeout, a dropped connection, an unreachable port, an oversized body, a
 * task's deadline and its cancellation. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <async.h>
#include <async/http.h>
#include "support/http_fixture.h"
#include "support/answer.h"
#include "support/port.h"

TestSuite(http_faults, .init = http_fixture_setup, .fini = http_fixture_teardown,
          .timeout = 20);

/* One request through the callback interface; returns its response. */
static void on_done(async_http_response_t *resp, void *arg)
{
    *(async_http_response_t **)arg = resp;
}

static async_http_response_t *one(const async_http_opts_t *o, const async_http_request_t *req)
{
    async_http_t *http;
    cr_assert_eq(async_http_new(&http, loop, o), 0);
    async_http_response_t *r = NULL;
    cr_assert_eq(async_http_send(http, req, on_done, &r), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_not_null(r);
    cr_assert_eq(async_http_destroy(http), 0);
    return r;
}

static async_http_response_t *get(const char *path)
{
    async_http_request_t req = {.url = test_httpd_url(srv, path)};
    return one(NULL, &req);
}

Test(http_faults, status_500)
{
    async_http_response_t *r = get("/status?code=500");
    cr_assert_eq(r->error, ASYNC_EHTTP);
    cr_assert_eq(r->status, 500);
    cr_assert_str_eq(r->errmsg, "HTTP status 500 Internal Server Error");
    cr_assert_str_eq(r->body, "status 500");
    cr_assert_eq(r->attempts, 1, "no retries unless asked for");
    async_http_response_free(r);
}

Test(http_faults, status_404_json_helper_keeps_http_error)
{
    async_http_response_t *r = get("/nowhere");
    cr_assert_eq(r->error, ASYNC_EHTTP);
    cr_assert_eq(r->status, 404);
    json_t *j = (void *)1;
    cr_assert_eq(async_http_response_json(&j, r), ASYNC_EHTTP);
    cr_assert_null(j);
    async_http_response_free(r);
}

Test(http_faults, status_429_with_retry_after)
{
    async_http_response_t *r = get("/retry-after?s=7");
    cr_assert_eq(r->error, ASYNC_EHTTP);
    cr_assert_eq(r->status, 429);
    cr_assert(strstr(r->errmsg, "429"), "%s", r->errmsg);
    cr_assert_str_eq(async_http_response_header(r, "Retry-After"), "7");
    async_http_response_free(r);
}

Test(http_faults, retry_after_longer_than_allowed_is_not_waited)
{
    async_http_opts_t o = {.max_retries = 3, .retry_max_ns = ASYNC_SEC(2)};
    async_http_request_t req = {.url = test_httpd_url(srv, "/retry-after?s=60")};
    int64_t t0 = async_now();
    async_http_response_t *r = one(&o, &req);
    cr_assert_eq(r->error, ASYNC_EHTTP);
    cr_assert_eq(r->status, 429);
    cr_assert_eq(r->attempts, 1);
    cr_assert_lt(async_now() - t0, ASYNC_SEC(2));
    async_http_response_free(r);
}

Test(http_faults, malformed_json)
{
    async_http_response_t *r = get("/badjson");
    cr_assert_eq(r->error, 0);
    json_t *j = (void *)1;
    cr_assert_eq(async_http_response_json(&j, r), ASYNC_EJSON);
    cr_assert_null(j);
    cr_assert_eq(r->error, ASYNC_EJSON);
    cr_assert(strstr(r->errmsg, "JSON error at line 3, column 1"), "%s", r->errmsg);
    async_http_response_free(r);
}

Test(http_faults, stalled_response_times_out)
{
    async_http_request_t req = {.url = test_httpd_url(srv, "/stall?ms=5000"),
                                .timeout_ns = ASYNC_MSEC(200)};
    int64_t t0 = async_now();
    async_http_response_t *r = one(NULL, &req);
    int64_t took = async_now() - t0;
    cr_assert_eq(r->error, ASYNC_ETIMEDOUT);
    cr_assert(strstr(r->errmsg, "timed out"), "%s", r->errmsg);
    cr_assert(strstr(r->errmsg, "Operation timed out after"), "%s", r->errmsg);
    cr_assert_eq(r->status, 0);
    cr_assert_geq(took, ASYNC_MSEC(195));
    cr_assert_lt(took, ASYNC_SEC(3));
    async_http_response_free(r);
}

Test(http_faults, slow_body_times_out_midway)
{
    async_http_request_t req = {.url = test_httpd_url(srv, "/slow?chunks=20&ms=50"),
                                .timeout_ns = ASYNC_MSEC(300)};
    async_http_response_t *r = one(NULL, &req);
    cr_assert_eq(r->error, ASYNC_ETIMEDOUT, "%s", r->errmsg);
    cr_assert_eq(r->status, 200, "the status line had arrived");
    async_http_response_free(r);
}

Test(http_faults, dropped_connection)
{
    async_http_response_t *r = get("/drop");
    cr_assert_eq(r->error, ASYNC_ECURL);
    cr_assert(strstr(r->errmsg, "Empty reply from server"), "%s", r->errmsg);
    cr_assert(strstr(r->errmsg, "curl error 52"), "%s", r->errmsg);
    async_http_response_free(r);
}

Test(http_faults, unreachable_port)
{
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/ok", test_free_port() /* bound, then closed: nothing listens */);
    async_http_request_t req = {.url = url};
    async_http_response_t *r = one(NULL, &req);
    cr_assert_eq(r->error, ASYNC_ECURL);
    cr_assert(strstr(r->errmsg, "Failed to connect to 127.0.0.1 port"), "%s", r->errmsg);
    cr_assert(strstr(r->errmsg, "curl error 7"), "%s", r->errmsg);
    cr_assert_eq(r->status, 0);
    async_http_response_free(r);
}

Test(http_faults, unreachable_port_retried_then_fails)
{
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/ok", test_free_port() /* bound, then closed: nothing listens */);
    async_http_opts_t o = {.max_retries = 2, .retry_base_ns = ASYNC_MSEC(20)};
    async_http_request_t req = {.url = url};
    int64_t t0 = async_now();
    async_http_response_t *r = one(&o, &req);
    cr_assert_eq(r->error, ASYNC_ECURL);
    cr_assert_eq(r->attempts, 3);
    /* Backoffs of at least 10 and 20 ms (equal jitter: half, plus up to half). */
    cr_assert_geq(async_now() - t0, ASYNC_MSEC(30));
    async_http_response_free(r);
}

Test(http_faults, unsupported_scheme)
{
    async_http_request_t req = {.url = "ftp://127.0.0.1/x"};
    async_http_response_t *r = one(NULL, &req);
    cr_assert_eq(r->error, ASYNC_ECURL);
    cr_assert(strstr(r->errmsg, "curl error 1"), "%s", r->errmsg);
    async_http_response_free(r);
}

Test(http_faults, body_over_max)
{
    async_http_opts_t o = {.max_body = 1000};
    async_http_request_t req = {.url = test_httpd_url(srv, "/big?n=5000")};
    async_http_response_t *r = one(&o, &req);
    cr_assert_eq(r->error, ASYNC_ECURL);
    cr_assert_str_eq(r->errmsg, "response body larger than 1000 bytes");
    async_http_response_free(r);
}

/* --- retries recover transient faults ------------------------------------- */

Test(http_faults, retry_5xx_recovers)
{
    async_http_opts_t o = {.max_retries = 3, .retry_base_ns = ASYNC_MSEC(10)};
    async_http_request_t req = {.url = test_httpd_url(srv, "/flaky?key=a&fail=2&code=500")};
    async_http_response_t *r = one(&o, &req);
    cr_assert_eq(r->error, 0, "%s", r->errmsg);
    cr_assert_str_eq(r->body, "recovered");
    cr_assert_eq(r->attempts, 3);
    async_http_response_free(r);
}

Test(http_faults, retry_dropped_connection_recovers)
{
    async_http_opts_t o = {.max_retries = 2, .retry_base_ns = ASYNC_MSEC(10)};
    async_http_request_t req = {.url = test_httpd_url(srv, "/flaky?key=b&fail=1&code=0")};
    async_http_response_t *r = one(&o, &req);
    cr_assert_eq(r->error, 0, "%s", r->errmsg);
    cr_assert_eq(r->attempts, 2);
    async_http_response_free(r);
}

Test(http_faults, retry_429_honours_retry_after)
{
    async_http_opts_t o = {.max_retries = 2, .retry_base_ns = ASYNC_MSEC(1)};
    async_http_request_t req = {.url = test_httpd_url(srv, "/flaky?key=c&fail=1&code=429&after=1")};
    int64_t t0 = async_now();
    async_http_response_t *r = one(&o, &req);
    cr_assert_eq(r->error, 0, "%s", r->errmsg);
    cr_assert_eq(r->attempts, 2);
    cr_assert_geq(async_now() - t0, ASYNC_MSEC(990), "waited the server's second");
    async_http_response_free(r);
}

/* Retry-After from a hostile or broken server: a number whose nanoseconds
 * overflow int64 (signed overflow, and an immediate retry, before), one too
 * long for curl's own parser (which reads it as 0), and a date centuries
 * ahead are never retried sooner than asked: the 429 stands, even when the
 * client would wait as long as it takes. */
static void expect_not_retried(const char *after, int64_t retry_max)
{
    char path[160];
    static int key;
    snprintf(path, sizeof path, "/flaky?key=big%d&fail=1&code=429&after=%s", key++, after);
    async_http_opts_t o = {.max_retries = 3, .retry_base_ns = ASYNC_MSEC(1),
                           .retry_max_ns = retry_max};
    async_http_request_t req = {.url = test_httpd_url(srv, path)};
    async_http_response_t *r = one(&o, &req);
    cr_assert_eq(r->status, 429, "Retry-After: %s: status %ld (%s)", after, r->status, r->errmsg);
    cr_assert_eq(r->error, ASYNC_EHTTP);
    cr_assert_eq(r->attempts, 1, "Retry-After: %s was retried", after);
    async_http_response_free(r);
}

Test(http_faults, retry_after_overflowing_seconds_is_not_retried)
{
    expect_not_retried("9223372037", ASYNC_SEC(2));
    expect_not_retried("9223372037", INT64_MAX);
}

Test(http_faults, retry_after_too_long_for_curl_is_not_retried)
{
    expect_not_retried("123456789012345678901234567890", INT64_MAX);
}

Test(http_faults, retry_after_far_future_date_is_not_retried)
{
    expect_not_retried("Fri,%2031%20Dec%209999%2023%3A59%3A59%20GMT", INT64_MAX);
}

/* The HTTP-date form two seconds ahead: waited for (curl counts whole
 * seconds from its own clock, so at least one), then retried. */
Test(http_faults, retry_after_http_date_is_honoured)
{
    time_t when = time(NULL) + 2;
    struct tm tm;
    gmtime_r(&when, &tm);
    char date[64], path[160];
    strftime(date, sizeof date, "%a,%%20%d%%20%b%%20%Y%%20%H%%3A%M%%3A%S%%20GMT", &tm);
    snprintf(path, sizeof path, "/flaky?key=date&fail=1&code=503&after=%s", date);
    async_http_opts_t o = {.max_retries = 2, .retry_base_ns = ASYNC_MSEC(1),
                           .retry_max_ns = ASYNC_SEC(10)};
    async_http_request_t req = {.url = test_httpd_url(srv, path)};
    int64_t t0 = async_now();
    async_http_response_t *r = one(&o, &req);
    cr_assert_eq(r->error, 0, "%s", r->errmsg);
    cr_assert_eq(r->attempts, 2);
    cr_assert_geq(async_now() - t0, ASYNC_MSEC(900), "retried before the date");
    async_http_response_free(r);
}

Test(http_faults, retries_exhausted_report_last_error)
{
    async_http_opts_t o = {.max_retries = 2, .retry_base_ns = ASYNC_MSEC(5)};
    async_http_request_t req = {.url = test_httpd_url(srv, "/flaky?key=d&fail=10&code=502")};
    async_http_response_t *r = one(&o, &req);
    cr_assert_eq(r->error, ASYNC_EHTTP);
    cr_assert_eq(r->status, 502);
    cr_assert_eq(r->attempts, 3);
    cr_assert_str_eq(r->body, "failure 3 of 10");
    async_http_response_free(r);
}

Test(http_faults, post_not_retried_on_500)
{
    async_http_opts_t o = {.max_retries = 3, .retry_base_ns = ASYNC_MSEC(5)};
    async_http_request_t req = {.url = test_httpd_url(srv, "/flaky?key=e&fail=1&code=500"),
                                .body = "x", .body_len = 1};
    async_http_response_t *r = one(&o, &req);
    cr_assert_eq(r->error, ASYNC_EHTTP, "a POST may have had an effect: not repeated");
    cr_assert_eq(r->attempts, 1);
    async_http_response_free(r);
}

Test(http_faults, per_request_retry_override)
{
    async_http_opts_t o = {.max_retries = 3, .retry_base_ns = ASYNC_MSEC(5)};
    async_http_request_t req = {.url = test_httpd_url(srv, "/flaky?key=f&fail=1&code=503"),
                                .max_retries = -1};
    async_http_response_t *r = one(&o, &req);
    cr_assert_eq(r->error, ASYNC_EHTTP);
    cr_assert_eq(r->attempts, 1);
    async_http_response_free(r);
}

/* --- tasks: deadline and cancellation ------------------------------------- */

typedef struct ctx {
    async_http_t *http;
    char url[128];
    int64_t deadline;
    int rc;
    async_http_response_t *resp;
} ctx_t;

static int fetch_task(void *arg, void **result)
{
    (void)result;
    ctx_t *c = arg;
    async_http_request_t req = {.url = c->url};
    c->rc = async_http_fetch_dl(&c->resp, c->http, &req, c->deadline);
    return 0;
}

Test(http_faults, task_deadline_abandons_transfer)
{
    async_http_t *http;
    cr_assert_eq(async_http_new(&http, loop, NULL), 0);
    ctx_t c = {.http = http, .deadline = async_deadline_after(ASYNC_MSEC(100))};
    snprintf(c.url, sizeof c.url, "%s", test_httpd_url(srv, "/stall?ms=5000"));
    c.resp = (void *)1;
    cr_assert_eq(async_task_spawn(NULL, loop, fetch_task, &c, NULL), 0);
    int64_t t0 = async_now();
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_lt(async_now() - t0, ASYNC_SEC(2), "the abandoned transfer did not hold the loop");
    cr_assert_eq(c.rc, ASYNC_ETIMEDOUT);
    cr_assert_null(c.resp);
    async_http_stats_t st;
    async_http_stats(http, &st);
    cr_assert_eq(st.in_flight, 0);
    cr_assert_eq(async_http_destroy(http), 0);
}

Test(http_faults, task_passed_deadline_starts_nothing)
{
    async_http_t *http;
    cr_assert_eq(async_http_new(&http, loop, NULL), 0);
    ctx_t c = {.http = http, .deadline = 0};
    snprintf(c.url, sizeof c.url, "%s", test_httpd_url(srv, "/ok"));
    c.resp = (void *)1;
    cr_assert_eq(async_task_spawn(NULL, loop, fetch_task, &c, NULL), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(c.rc, ASYNC_ETIMEDOUT);
    cr_assert_null(c.resp);
    async_http_stats_t st;
    async_http_stats(http, &st);
    cr_assert_eq(st.requests, 0);
    cr_assert_eq(st.attempts, 0);
    cr_assert_eq(async_http_destroy(http), 0);
    cr_assert_eq(test_httpd_requests(srv), 0);
}

Test(http_faults, task_deadline_while_rate_limited)
{
    async_http_opts_t o = {.rate_limit = 1};
    async_http_t *http;
    cr_assert_eq(async_http_new(&http, loop, &o), 0);
    ctx_t a = {.http = http, .deadline = ASYNC_FOREVER};
    ctx_t b = {.http = http, .deadline = async_deadline_after(ASYNC_MSEC(100))};
    snprintf(a.url, sizeof a.url, "%s", test_httpd_url(srv, "/ok"));
    snprintf(b.url, sizeof b.url, "%s", test_httpd_url(srv, "/ok"));
    cr_assert_eq(async_task_spawn(NULL, loop, fetch_task, &a, NULL), 0);
    cr_assert_eq(async_task_spawn(NULL, loop, fetch_task, &b, NULL), 0);
    int64_t t0 = async_now();
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_lt(async_now() - t0, ASYNC_MSEC(900), "the queued request left the queue");
    cr_assert_eq(a.rc, 0);
    async_http_response_free(a.resp);
    cr_assert_eq(b.rc, ASYNC_ETIMEDOUT, "still waiting for its turn at the deadline");
    cr_assert_null(b.resp);
    async_http_stats_t st;
    async_http_stats(http, &st);
    cr_assert_eq(st.in_flight, 0);
    cr_assert_eq(st.attempts, 1);
    cr_assert_eq(async_http_destroy(http), 0);
}

static int canceller(void *arg, void **result)
{
    (void)result;
    async_sleep(ASYNC_MSEC(50));
    async_task_cancel(*(async_task_t *)arg);
    return 0;
}

Test(http_faults, task_cancel_during_fetch)
{
    async_http_t *http;
    cr_assert_eq(async_http_new(&http, loop, NULL), 0);
    ctx_t c = {.http = http, .deadline = ASYNC_FOREVER};
    snprintf(c.url, sizeof c.url, "%s", test_httpd_url(srv, "/stall?ms=5000"));
    async_task_t t;
    cr_assert_eq(async_task_spawn(&t, loop, fetch_task, &c, NULL), 0);
    cr_assert_eq(async_task_spawn(NULL, loop, canceller, &t, NULL), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(c.rc, ASYNC_ECANCELED);
    cr_assert_null(c.resp);
    cr_assert_eq(async_http_destroy(http), 0);
}

Test(http_faults, task_fetch_sees_fault_response)
{
    async_http_t *http;
    cr_assert_eq(async_http_new(&http, loop, NULL), 0);
    ctx_t c = {.http = http, .deadline = ASYNC_FOREVER};
    snprintf(c.url, sizeof c.url, "%s", test_httpd_url(srv, "/status?code=503"));
    cr_assert_eq(async_task_spawn(NULL, loop, fetch_task, &c, NULL), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(c.rc, ASYNC_EHTTP);
    cr_assert_not_null(c.resp, "a failed request still hands over its response");
    cr_assert_eq(c.resp->status, 503);
    async_http_response_free(c.resp);
    cr_assert_eq(async_http_destroy(http), 0);
}

/* --- answers driven from the prepare watcher ------------------------------ */

/* A blocking fetch runs the private loop with ASYNC_RUN_ONCE until its
 * request ends.  The answer must end that run: a run that reported it and
 * then polled again would block until the deadline's timer fired, and a
 * met 10 s deadline would cost 10 s. */
Test(http_faults, blocking_fetch_returns_with_its_answer_not_at_its_deadline)
{
    async_http_t *http;
    cr_assert_eq(async_http_new(&http, NULL, NULL), 0);
    for (int i = 0; i < 3; i++) {
        async_http_response_t *r = NULL;
        int64_t t0 = async_now();
        cr_assert_eq(async_http_get_dl(&r, http, test_httpd_url(srv, "/ok"), NULL,
                                       async_deadline_after(ASYNC_SEC(10))),
                     0);
        cr_assert_lt(async_now() - t0, ASYNC_SEC(5), "round %d waited for the deadline", i);
        cr_assert_str_eq(r->body, "ok");
        async_http_response_free(r);
    }
    cr_assert_eq(async_http_destroy(http), 0);
}

/* Many answers arriving close together (driven as a batch, one socket_all
 * or one call a socket) while the Nth allocation fails, for many N: every
 * request still ends exactly once, with a response, and nothing leaks or
 * touches freed memory (the sanitizer build). */
#define STORM_N 24

Test(http_faults, out_of_memory_while_many_answers_arrive_together, .timeout = 60)
{
    for (long n = 0; n < 200; n += (n < 60 ? 1 : 7)) {
        long before = test_alloc_live();
        async_http_t *http;
        cr_assert_eq(async_http_new(&http, loop, NULL), 0);
        test_answer_t s[STORM_N] = {0};
        for (int i = 0; i < STORM_N; i++) {
            async_http_request_t req = {.url = test_httpd_url(srv, "/ok")};
            cr_assert_eq(async_http_send(http, &req, test_answer_catch, &s[i]), 0);
        }
        test_alloc_fail_after(n);
        cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
        test_alloc_fail_after(-1);
        for (int i = 0; i < STORM_N; i++) {
            cr_assert_eq(s[i].calls, 1, "allocation %ld, request %d", n, i);
            cr_assert_not_null(s[i].resp);
            if (s[i].resp->error == 0) cr_assert_str_eq(s[i].resp->body, "ok");
            else cr_assert(s[i].resp->errmsg[0], "allocation %ld: a failure says why", n);
            async_http_response_free(s[i].resp);
        }
        cr_assert_eq(async_http_destroy(http), 0);
        cr_assert_eq(test_alloc_live(), before, "leak after failing allocation %ld", n);
    }
}
