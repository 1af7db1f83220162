/* A hostile caller of the HTTP client: option values at their limits (a
 * timeout of ASYNC_FOREVER, a rate too small to count), a request whose
 * method and body disagree with curl's defaults, and header lines that
 * would split one request into two.  Each gets the request it asked for or
 * a precise ASYNC_EINVAL, never a different request on the wire. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <ctype.h>
#include <locale.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <async.h>
#include <async/http.h>
#include "support/http_fixture.h"

TestSuite(http_hostile_caller, .init = http_fixture_setup, .fini = http_fixture_teardown,
          .timeout = 30);

static void on_done(async_http_response_t *resp, void *arg)
{
    async_http_response_t **slot = arg;
    cr_assert_null(*slot, "a request ended twice");
    *slot = resp;
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

/* ASYNC_FOREVER is the library's own "no limit" for a time: as a timeout it
 * must mean a very long one, not an arithmetic overflow that curl refuses. */
Test(http_hostile_caller, a_timeout_of_forever_is_no_timeout)
{
    async_http_request_t req = {.url = test_httpd_url(srv, "/ok"),
                                .timeout_ns = ASYNC_FOREVER,
                                .connect_timeout_ns = ASYNC_FOREVER};
    async_http_response_t *r = one(NULL, &req);
    cr_assert_eq(r->error, 0, "%s", r->errmsg);
    cr_assert_str_eq(r->body, "ok");
    async_http_response_free(r);

    /* The same as the client's defaults, and just below the overflow. */
    async_http_opts_t o;
    async_http_opts_init(&o);
    o.timeout_ns = ASYNC_FOREVER;
    o.connect_timeout_ns = ASYNC_FOREVER - 1;
    req = (async_http_request_t){.url = test_httpd_url(srv, "/ok")};
    r = one(&o, &req);
    cr_assert_eq(r->error, 0, "%s", r->errmsg);
    async_http_response_free(r);
}

/* A rate so small that the wait for the next token does not fit in an
 * int64_t of nanoseconds still spaces the starts: the second request waits
 * (here, for ever), rather than starting at once. */
Test(http_hostile_caller, a_rate_too_small_to_count_still_spaces_starts)
{
    async_http_opts_t o;
    async_http_opts_init(&o);
    o.rate_limit = 1e-12; /* one start in 30,000 years */
    async_http_t *http;
    cr_assert_eq(async_http_new(&http, loop, &o), 0);
    async_http_response_t *a = NULL, *b = NULL;
    async_http_request_t req = {.url = test_httpd_url(srv, "/ok")};
    cr_assert_eq(async_http_send(http, &req, on_done, &a), 0);
    cr_assert_eq(async_http_send(http, &req, on_done, &b), 0);
    async_http_stats_t st;
    async_http_stats(http, &st);
    cr_assert_eq(st.attempts, 1, "%llu attempts started under a rate of 1e-12/s",
                 (unsigned long long)st.attempts);
    while (!a) cr_assert_geq(async_loop_run(loop, ASYNC_RUN_ONCE), 0);
    cr_assert_eq(a->error, 0, "%s", a->errmsg);
    cr_assert_null(b, "the second request ended: %s", b ? b->errmsg : "");
    async_http_stats(http, &st);
    cr_assert_eq(st.attempts, 1);
    cr_assert_eq(async_http_destroy(http), 0);
    cr_assert_not_null(b);
    cr_assert_eq(b->error, ASYNC_ECLOSED, "%s", b->errmsg);
    cr_assert_eq(test_httpd_requests(srv), 1);
    async_http_response_free(a);
    async_http_response_free(b);
}

/* A rate that is not a number is no rate: refused as a negative one is. */
Test(http_hostile_caller, a_rate_that_is_not_a_number_is_refused)
{
    async_http_opts_t o;
    async_http_opts_init(&o);
    o.rate_limit = NAN;
    async_http_t *http = (async_http_t *)&o;
    cr_assert_eq(async_http_new(&http, loop, &o), ASYNC_EINVAL);
    cr_assert_null(http);
}

static json_t *echoed(const async_http_request_t *req)
{
    async_http_response_t *r = one(NULL, req);
    cr_assert_eq(r->error, 0, "%s", r->errmsg);
    json_t *j;
    cr_assert_eq(async_http_response_json(&j, r), 0);
    async_http_response_free(r);
    return j;
}

/* The method named is the method sent: a GET that carries a body (as some
 * search APIs take) stays a GET, whatever curl makes of a body by default. */
Test(http_hostile_caller, a_get_with_a_body_is_sent_as_a_get)
{
    async_http_request_t req = {.url = test_httpd_url(srv, "/echo"), .method = "GET",
                                .body = "{\"q\":1}", .body_len = 7};
    json_t *j = echoed(&req);
    cr_assert_str_eq(json_string_value(json_object_get(j, "method")), "GET");
    cr_assert_str_eq(json_string_value(json_object_get(j, "body")), "{\"q\":1}");
    json_decref(j);

    /* In any case, and after it the same handle's plain GET is plain. */
    req.method = "get";
    j = echoed(&req);
    cr_assert_str_eq(json_string_value(json_object_get(j, "method")), "GET");
    cr_assert_str_eq(json_string_value(json_object_get(j, "body")), "{\"q\":1}");
    json_decref(j);

    /* No method and a body is still a POST, as http.h says. */
    req.method = NULL;
    j = echoed(&req);
    cr_assert_str_eq(json_string_value(json_object_get(j, "method")), "POST");
    json_decref(j);
}

/* A header line is one line: a CR or LF in it would end the header early
 * and let the caller's data write more headers, or a second request, onto
 * the connection (request splitting).  It is refused, and nothing is sent. */
Test(http_hostile_caller, a_header_holding_a_line_break_is_refused)
{
    async_http_t *http;
    cr_assert_eq(async_http_new(&http, loop, NULL), 0);
    static const char *const bad[] = {
        "X-A: 1\r\n\r\nGET /ok HTTP/1.1\r\nHost: x",
        "X-A: 1\nX-Injected: 2",
        "X-A: 1\rX-Injected: 2",
        "X-A\r\n: 1",
    };
    async_http_response_t *r = NULL;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *headers[] = {"X-Good: yes", bad[i], NULL};
        async_http_request_t req = {.url = test_httpd_url(srv, "/echo"), .headers = headers};
        cr_assert_eq(async_http_send(http, &req, on_done, &r), ASYNC_EINVAL, "header %zu taken",
                     i);
    }
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_null(r);
    cr_assert_eq(test_httpd_requests(srv), 0, "a refused request reached the server");
    cr_assert_eq(async_http_destroy(http), 0);
}

/* The client's User-Agent and Accept-Encoding go out as header lines of
 * every request: the same rule, checked once, when the client is made. */
Test(http_hostile_caller, a_user_agent_or_encoding_holding_a_line_break_is_refused)
{
    static const char *const bad[] = {"agent\r\nX-Injected: 1", "agent\n", "\ragent"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        async_http_opts_t o;
        async_http_opts_init(&o);
        o.user_agent = bad[i];
        async_http_t *http = (async_http_t *)&o;
        cr_assert_eq(async_http_new(&http, loop, &o), ASYNC_EINVAL, "user agent %zu taken", i);
        cr_assert_null(http);
        async_http_opts_init(&o);
        o.accept_encoding = bad[i];
        http = (async_http_t *)&o;
        cr_assert_eq(async_http_new(&http, loop, &o), ASYNC_EINVAL, "encoding %zu taken", i);
        cr_assert_null(http);
    }
    /* Blanks and tabs are fine in both. */
    async_http_opts_t o;
    async_http_opts_init(&o);
    o.user_agent = "an agent\t(1.0)";
    o.accept_encoding = "gzip, br";
    async_http_request_t req = {.url = test_httpd_url(srv, "/echo")};
    async_http_response_t *r = one(&o, &req);
    cr_assert_eq(r->error, 0, "%s", r->errmsg);
    json_t *j;
    cr_assert_eq(async_http_response_json(&j, r), 0);
    json_t *h = json_object_get(j, "headers");
    cr_assert_str_eq(json_string_value(json_object_get(h, "User-Agent")), "an agent\t(1.0)");
    json_decref(j);
    async_http_response_free(r);
}

/* Only the methods RFC 9110 (9.2.2) calls idempotent are repeated after an
 * answer that may have had an effect (a 500, a connection dropped after
 * the request went out): PATCH is not one, nor is a method the client does
 * not know.  429 and 503, where the server did not act, are retried for
 * every method, POST included. */
Test(http_hostile_caller, only_idempotent_methods_are_repeated_after_a_500)
{
    async_http_opts_t o;
    async_http_opts_init(&o);
    o.max_retries = 3;
    o.retry_base_ns = ASYNC_MSEC(5);
    static const struct {
        const char *method;
        bool repeated;
    } cases[] = {{"PATCH", false}, {"patch", false}, {"LOCK", false},  {"POST", false},
                 {"GET", true},    {"HEAD", true},   {"PUT", true},    {"DELETE", true},
                 {"OPTIONS", true}, {"TRACE", true}, {"put", true}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char path[96];
        snprintf(path, sizeof path, "/flaky?key=m%zu&fail=1&code=500", i);
        async_http_request_t req = {.url = test_httpd_url(srv, path), .method = cases[i].method,
                                    .body = "x", .body_len = 1};
        async_http_response_t *r = one(&o, &req);
        cr_assert_eq(r->attempts, cases[i].repeated ? 2 : 1, "%s: %d attempts, %s",
                     cases[i].method, r->attempts, r->errmsg);
        cr_assert_eq(r->error, cases[i].repeated ? 0 : ASYNC_EHTTP, "%s: %s", cases[i].method,
                     r->errmsg);
        async_http_response_free(r);

        /* A 503 says the server did not act: any method may go again. */
        snprintf(path, sizeof path, "/flaky?key=n%zu&fail=1&code=503", i);
        req.url = test_httpd_url(srv, path);
        r = one(&o, &req);
        cr_assert_eq(r->attempts, 2, "%s after a 503: %d attempts", cases[i].method, r->attempts);
        cr_assert_eq(r->error, 0, "%s: %s", cases[i].method, r->errmsg);
        async_http_response_free(r);
    }
}

/* A string of the given length: the server's URL of path, padded with 'a'. */
static char *padded_url(const char *path, size_t len)
{
    const char *base = test_httpd_url(srv, path);
    size_t bl = strlen(base);
    cr_assert_geq(len, bl);
    char *u = malloc(len + 1);
    cr_assert_not_null(u);
    memcpy(u, base, bl);
    memset(u + bl, 'a', len - bl);
    u[len] = 0;
    return u;
}

/* A request too large for curl to write is a bad request, said as such:
 * libcurl reports a request head past its 1 MiB buffer as out of memory,
 * and a string past 8,000,000 bytes as a bad option. */
Test(http_hostile_caller, a_request_too_large_for_curl_says_so_not_out_of_memory)
{
    static const size_t url_lens[] = {(size_t)1 << 20, (size_t)4 << 20, 8000001};
    for (size_t i = 0; i < sizeof url_lens / sizeof url_lens[0]; i++) {
        char *u = padded_url("/ok?x=", url_lens[i]);
        async_http_request_t req = {.url = u};
        async_http_response_t *r = one(NULL, &req);
        free(u);
        cr_assert_eq(r->error, ASYNC_EINVAL, "a URL of %zu bytes: %d %s", url_lens[i], r->error,
                     r->errmsg);
        cr_assert(strstr(r->errmsg, "request too large for curl") ||
                      strstr(r->errmsg, "curl rejected the URL"),
                  "%s", r->errmsg);
        cr_assert_eq(r->status, 0);
        async_http_response_free(r);
    }
    /* The same for a header line of a megabyte behind a short URL. */
    char *h = malloc(((size_t)1 << 20) + 1);
    cr_assert_not_null(h);
    memcpy(h, "X-Big: ", 7);
    memset(h + 7, 'b', ((size_t)1 << 20) - 7);
    h[(size_t)1 << 20] = 0;
    const char *headers[] = {h, NULL};
    async_http_request_t req = {.url = test_httpd_url(srv, "/ok"), .headers = headers};
    async_http_response_t *r = one(NULL, &req);
    free(h);
    cr_assert_eq(r->error, ASYNC_EINVAL, "%d %s", r->error, r->errmsg);
    cr_assert(strstr(r->errmsg, "request too large for curl"), "%s", r->errmsg);
    async_http_response_free(r);
    cr_assert_eq(test_httpd_requests(srv), 0, "curl sent what it could not write whole");

    /* Just below, curl writes it, and the server may refuse it itself. */
    char *u = padded_url("/ok?x=", (size_t)1 << 19);
    req = (async_http_request_t){.url = u};
    r = one(NULL, &req);
    free(u);
    cr_assert_neq(r->error, ASYNC_EINVAL, "%s", r->errmsg);
    cr_assert_neq(r->error, ASYNC_ENOMEM, "%s", r->errmsg);
    cr_assert_neq(r->status, 0, "%s", r->errmsg);
    async_http_response_free(r);
}

/* The query goes where a server reads it: before a fragment, which is never
 * sent, not into it (a '?' inside the fragment is the fragment's). */
Test(http_hostile_caller, a_query_goes_before_the_fragment)
{
    static const struct {
        const char *path, *want_url_tail;
    } cases[] = {
        {"/echo#top", "/echo?k=v%20w#top"},
        {"/echo?a=1#top", "/echo?a=1&k=v%20w#top"},
        {"/echo#frag?x=1", "/echo?k=v%20w#frag?x=1"},
        {"/echo#", "/echo?k=v%20w#"},
        /* A query already open takes the pair without an empty one first. */
        {"/echo?", "/echo?k=v%20w"},
        {"/echo?a=1&#top", "/echo?a=1&k=v%20w#top"},
    };
    const char *query[] = {"k", "v w", NULL};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        async_http_request_t req = {.url = test_httpd_url(srv, cases[i].path), .query = query};
        async_http_response_t *r = one(NULL, &req);
        cr_assert_eq(r->error, 0, "%s: %s", cases[i].path, r->errmsg);
        size_t ul = strlen(r->url), tl = strlen(cases[i].want_url_tail);
        cr_assert(ul >= tl && strcmp(r->url + ul - tl, cases[i].want_url_tail) == 0,
                  "%s gave %s", cases[i].path, r->url);
        json_t *j;
        cr_assert_eq(async_http_response_json(&j, r), 0);
        json_t *q = json_object_get(j, "query");
        cr_assert_str_eq(json_string_value(json_object_get(q, "k")), "v w", "%s: %s",
                         cases[i].path, r->body);
        if (strstr(cases[i].path, "a=1"))
            cr_assert_str_eq(json_string_value(json_object_get(q, "a")), "1");
        json_decref(j);
        async_http_response_free(r);
    }
}

/* A Content-Length of the caller's own replaces curl's, and curl sends the
 * body whatever it says: one that does not state the body's length frames
 * the request wrongly, and the rest of the body is read as the next
 * request on the connection (request smuggling), whose answer the client's
 * next request would get.  It must match the body, or it is refused. */
Test(http_hostile_caller, a_content_length_that_is_not_the_bodys_is_refused)
{
    async_http_t *http;
    cr_assert_eq(async_http_new(&http, loop, NULL), 0);
    static const char smuggled[] = "GET /ok HTTP/1.1\r\nHost: x\r\n\r\n";
    static const struct {
        const char *header;
        const char *body;
    } bad[] = {
        {"Content-Length: 0", smuggled}, {"content-length: 1", smuggled},
        {"Content-Length:", smuggled},   {"Content-Length : 0", smuggled},
        {"Content-Length: 5", NULL},     {"Content-Length: 29abc", smuggled},
        {"Content-Length: 029x", smuggled}, {"Content-Length: -1", NULL},
    };
    async_http_response_t *r = NULL;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *headers[] = {bad[i].header, NULL};
        async_http_request_t req = {.url = test_httpd_url(srv, "/echo"), .headers = headers,
                                    .body = bad[i].body,
                                    .body_len = bad[i].body ? strlen(bad[i].body) : 0};
        cr_assert_eq(async_http_send(http, &req, on_done, &r), ASYNC_EINVAL, "\"%s\" taken",
                     bad[i].header);
    }
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_null(r);
    cr_assert_eq(test_httpd_requests(srv), 0, "a refused request reached the server");
    cr_assert_eq(async_http_destroy(http), 0);

    /* One that states the body's length, or an empty one without a body
     * (curl's way to send none), is taken. */
    char right[64];
    snprintf(right, sizeof right, "Content-Length: %zu", strlen(smuggled));
    const char *headers[] = {right, NULL};
    async_http_request_t req = {.url = test_httpd_url(srv, "/echo"), .method = "PUT",
                                .headers = headers, .body = smuggled,
                                .body_len = strlen(smuggled)};
    json_t *j = echoed(&req);
    cr_assert_str_eq(json_string_value(json_object_get(j, "body")), smuggled);
    json_decref(j);
    const char *none[] = {"Content-Length:", NULL};
    req = (async_http_request_t){.url = test_httpd_url(srv, "/echo"), .headers = none};
    j = echoed(&req);
    cr_assert_str_eq(json_string_value(json_object_get(j, "method")), "GET");
    json_decref(j);
}

/* The same for a Transfer-Encoding of the caller's: curl chunks a body
 * itself when told "chunked", but sends "chunked" without a body with no
 * last chunk (the server reads the next request as the body), and any
 * other coding beside a Content-Length. */
Test(http_hostile_caller, a_transfer_encoding_that_does_not_frame_the_body_is_refused)
{
    async_http_t *http;
    cr_assert_eq(async_http_new(&http, loop, NULL), 0);
    static const struct {
        const char *header;
        const char *body;
    } bad[] = {
        {"Transfer-Encoding: chunked", NULL}, {"transfer-encoding: gzip", "abc"},
        {"Transfer-Encoding: chunked, gzip", "abc"}, {"Transfer-Encoding : chunked", "abc"},
        {"Transfer-Encoding: xchunked", "abc"}, {"Transfer-Encoding: CHUNKED ", "abc"},
        {"Transfer-Encoding: gzip, chunked", "abc"},
    };
    async_http_response_t *r = NULL;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *headers[] = {bad[i].header, NULL};
        async_http_request_t req = {.url = test_httpd_url(srv, "/echo"), .headers = headers,
                                    .body = bad[i].body,
                                    .body_len = bad[i].body ? strlen(bad[i].body) : 0};
        cr_assert_eq(async_http_send(http, &req, on_done, &r), ASYNC_EINVAL, "\"%s\" taken",
                     bad[i].header);
    }
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_null(r);
    cr_assert_eq(test_httpd_requests(srv), 0, "a refused request reached the server");
    cr_assert_eq(async_http_destroy(http), 0);

    /* Chunked beside a body, or none, is taken, and the body arrives whole. */
    static const char *const good[] = {"Transfer-Encoding: chunked", "Transfer-Encoding:"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        const char *headers[] = {good[i], NULL};
        async_http_request_t req = {.url = test_httpd_url(srv, "/echo"), .method = "PUT",
                                    .headers = headers, .body = "abc", .body_len = 3};
        json_t *j = echoed(&req);
        cr_assert_str_eq(json_string_value(json_object_get(j, "body")), "abc", "%s", good[i]);
        json_decref(j);
    }
}

/* A header's name is a token up to its colon: one that a server could read
 * as another name (a blank or a vertical tab before the colon, a space
 * inside), an empty one, or bytes outside ASCII's token characters are
 * refused. */
Test(http_hostile_caller, a_header_name_that_is_not_a_token_is_refused)
{
    async_http_t *http;
    cr_assert_eq(async_http_new(&http, loop, NULL), 0);
    static const char *const bad[] = {
        ": 1", "X A: 1", "Content-Length\v: 0", "X\x7f: 1", "\xc3\x91: 1",
        "X(1): 1", " X: 1", "X\001: 1", "X-Spaced : 1", "X\t: 1",
    };
    async_http_response_t *r = NULL;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *headers[] = {bad[i], NULL};
        async_http_request_t req = {.url = test_httpd_url(srv, "/echo"), .headers = headers};
        cr_assert_eq(async_http_send(http, &req, on_done, &r), ASYNC_EINVAL, "header %zu taken",
                     i);
    }
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_null(r);
    cr_assert_eq(test_httpd_requests(srv), 0);
    cr_assert_eq(async_http_destroy(http), 0);
    /* Every token character is a name's. */
    const char *headers[] = {"X-Ok_1.~!#$%&'*+^`|: yes", NULL};
    async_http_request_t req = {.url = test_httpd_url(srv, "/echo"), .headers = headers};
    json_t *j = echoed(&req);
    json_t *h = json_object_get(j, "headers");
    cr_assert_str_eq(json_string_value(json_object_get(h, "X-Ok_1.~!#$%&'*+^`|")), "yes");
    json_decref(j);
}

/* A method is a token, hyphens and digits included (WebDAV's
 * VERSION-CONTROL, BASELINE-CONTROL), and nothing else. */
Test(http_hostile_caller, a_method_is_any_token)
{
    static const char *const good[] = {"VERSION-CONTROL", "BASELINE-CONTROL", "X_Y.Z~1"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        async_http_request_t req = {.url = test_httpd_url(srv, "/echo"), .method = good[i]};
        async_http_response_t *r = one(NULL, &req);
        cr_assert_eq(r->error, 0, "%s: %s", good[i], r->errmsg);
        async_http_response_free(r);
    }
    async_http_t *http;
    cr_assert_eq(async_http_new(&http, loop, NULL), 0);
    static const char *const bad[] = {"", "GE T", "GET\r\nX: 1", "G(T)", "BASELINE-CONTROLS",
                                      "G\xc3\x89T", "GET/1"};
    async_http_response_t *r = NULL;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        async_http_request_t req = {.url = test_httpd_url(srv, "/echo"), .method = bad[i]};
        cr_assert_eq(async_http_send(http, &req, on_done, &r), ASYNC_EINVAL, "method %zu taken",
                     i);
    }
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_null(r);
    cr_assert_eq(async_http_destroy(http), 0);
    cr_assert_eq(test_httpd_requests(srv), (long)(sizeof good / sizeof good[0]));
}

/* Percent-encoding of a query does not follow the program's locale: in a
 * Latin-1 one, isalnum() says yes to 0xC3 ('Ã'), and the UTF-8 bytes of
 * "é" went out as a raw 0xC3 and %A9.  The locale is built for the test
 * (localedef, in a directory of its own that LOCPATH names). */
Test(http_hostile_caller, a_query_is_escaped_alike_in_every_locale)
{
    char dir[] = "/tmp/http-hostile-locale-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char cmd[256];
    snprintf(cmd, sizeof cmd,
             "localedef -i fr_FR -f ISO-8859-1 %s/fr_FR.ISO-8859-1 >/dev/null 2>&1", dir);
    int built = system(cmd);
    setenv("LOCPATH", dir, 1);
    const char *l = built == 0 ? setlocale(LC_ALL, "fr_FR.ISO-8859-1") : NULL;
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (!l) {
        if (system(cmd)) {}
        cr_skip_test("no Latin-1 locale could be built (localedef, locales)");
    }
    cr_assert(isalnum(0xc3), "the locale is not Latin-1");
    const char *query[] = {"q", "\xc3\xa9 \xff", NULL};
    async_http_request_t req = {.url = test_httpd_url(srv, "/echo"), .query = query};
    async_http_response_t *r = one(NULL, &req);
    setlocale(LC_ALL, "C");
    if (system(cmd)) {}
    cr_assert_eq(r->error, 0, "%s", r->errmsg);
    const char *q = strchr(r->url, '?');
    cr_assert(q && strcmp(q, "?q=%C3%A9%20%FF") == 0, "%s", r->url);
    async_http_response_free(r);
}
