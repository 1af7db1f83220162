/* A hostile HTTP/1 server against the client, beyond the stock faults of
 * test-http-broken-servers.c: a Content-Length too large for any body,
 * which libcurl reads as "until the connection closes", so that a body cut
 * short would pass for a whole one; and redirects of a request with a
 * method and a body, which must keep both. */
#include <criterion/criterion.h>
#include <ctype.h>
#include <locale.h>
#include <stdlib.h>
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

/* --- redirects of a request with a method and a body ----------------------- */

static raw_srv_t seen_srv;
/* What the server saw of the request a redirect led to: its request line
 * and the length of its body. */
typedef struct seen {
    char line[128];
    long body;
} seen_t;
static seen_t *seen;

static bool redirect_answer(int fd, const char *path)
{
    char head[256];
    if (!strncmp(path, "/to/", 4)) {
        snprintf(head, sizeof head,
                 "HTTP/1.1 %.3s Moved\r\nLocation: /seen\r\nContent-Length: 0\r\n\r\n", path + 4);
        raw_puts(fd, head);
        return true;
    }
    raw_puts(fd, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    return true;
}

/* Like raw_http_conn, but reads each request's body by its Content-Length
 * and notes the line and body of a request for /seen. */
static void redirect_conn(raw_srv_t *s, int fd)
{
    char head[8192];
    while (raw_read_head(fd, head, sizeof head)) {
        atomic_fetch_add(&s->st->requests, 1);
        char path[256] = "";
        sscanf(head, "%*s %255s", path);
        const char *end = strstr(head, "\r\n\r\n") + 4;
        const char *cl = strcasestr(head, "\r\nContent-Length:");
        long n = cl && cl < end ? atol(cl + 17) : 0, have = (long)strlen(end);
        char b[4096];
        while (have < n) {
            ssize_t r = recv(fd, b, sizeof b, 0);
            if (r <= 0) return;
            have += r;
        }
        if (!strcmp(path, "/seen")) {
            sscanf(head, "%127[^\r]", seen->line);
            seen->body = n;
        }
        if (!redirect_answer(fd, path)) break;
    }
}

static void redirect_setup(void)
{
    http_fixture_setup();
    seen = mmap(NULL, sizeof *seen, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(seen, MAP_FAILED);
    raw_start_conn(&seen_srv, redirect_conn);
}

static void redirect_fini(void)
{
    raw_stop(&seen_srv);
    if (seen && seen != MAP_FAILED) munmap(seen, sizeof *seen);
    http_fixture_teardown();
}

/* The request line and body length the server saw at /seen after a request
 * with method and body (NULL: none) to /to/<code>, made by http (NULL: a
 * client of its own). */
static seen_t follow_on(async_http_t *http, const char *method, const char *code,
                        const char *body)
{
    memset(seen, 0, sizeof *seen);
    seen->body = -1;
    char path[32];
    snprintf(path, sizeof path, "/to/%s", code);
    async_http_t *own = NULL;
    if (!http) cr_assert_eq(async_http_new(&own, loop, NULL), 0);
    async_http_request_t req = {.url = raw_url(&seen_srv, path), .method = method,
                                .body = body, .body_len = body ? strlen(body) : 0,
                                .timeout_ns = ASYNC_SEC(10)};
    waited_t w = {0};
    cr_assert_eq(async_http_send(http ? http : own, &req, on_waited, &w), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(w.resp->error, 0, "%s after %s: %s", method, code, w.resp->errmsg);
    async_http_response_free(w.resp);
    if (own) cr_assert_eq(async_http_destroy(own), 0);
    return *seen;
}

static seen_t follow(const char *method, const char *code)
{
    return follow_on(NULL, method, code, "abc");
}

/* RFC 9110 15.4: a 301, 302, 307 or 308 keeps the method and its body;
 * only a POST may become a GET on a 301 or 302 (curl's way, and
 * browsers').  curl sends a method other than POST with a body as a POST
 * renamed (CURLOPT_CUSTOMREQUEST), and turned that POST into a GET on a
 * 301 or 302 while keeping the name: the server got "PUT /seen" with no
 * body, an empty PUT. */
TestSuite(http_hostile_redirects, .init = redirect_setup, .fini = redirect_fini, .timeout = 30);

Test(http_hostile_redirects, a_redirect_keeps_a_puts_method_and_body)
{
    static const char *const keep[] = {"PUT", "PATCH", "DELETE"};
    static const char *const codes[] = {"301", "302", "307", "308"};
    for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++) {
        for (size_t c = 0; c < sizeof codes / sizeof codes[0]; c++) {
            seen_t s = follow(keep[i], codes[c]);
            char want[64];
            snprintf(want, sizeof want, "%s /seen HTTP/1.1", keep[i]);
            cr_assert_str_eq(s.line, want, "%s after a %s", keep[i], codes[c]);
            cr_assert_eq(s.body, 3, "%s after a %s: a body of %ld bytes", keep[i], codes[c],
                         s.body);
        }
    }
    /* A POST still becomes a GET without its body on a 301 or 302. */
    seen_t s = follow("POST", "302");
    cr_assert_str_eq(s.line, "GET /seen HTTP/1.1");
    cr_assert_eq(s.body, 0);
    s = follow("POST", "307");
    cr_assert_str_eq(s.line, "POST /seen HTTP/1.1");
    cr_assert_eq(s.body, 3);
}

/* A 303 is answered with a GET of the resource it names, whatever the
 * method (RFC 9110 15.4.4): curl kept a method set by name, so a DELETE
 * told "see /seen" deleted /seen, and a PUT put an empty body there. */
Test(http_hostile_redirects, a_303_is_followed_with_a_get_whatever_the_method)
{
    static const char *const methods[] = {"PUT", "PATCH", "DELETE", "POST", "OPTIONS"};
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
        seen_t s = follow(methods[i], "303");
        cr_assert_str_eq(s.line, "GET /seen HTTP/1.1", "%s after a 303", methods[i]);
        cr_assert_eq(s.body, 0, "%s after a 303: a body of %ld bytes", methods[i], s.body);
    }
    /* Without a body too; and the pooled handle's next request names its
     * method again. */
    async_http_t *http;
    cr_assert_eq(async_http_new(&http, loop, NULL), 0);
    seen_t s = follow_on(http, "DELETE", "303", NULL);
    cr_assert_str_eq(s.line, "GET /seen HTTP/1.1");
    s = follow_on(http, "DELETE", "307", NULL);
    cr_assert_str_eq(s.line, "DELETE /seen HTTP/1.1");
    s = follow_on(http, "PUT", "302", "abc");
    cr_assert_str_eq(s.line, "PUT /seen HTTP/1.1");
    cr_assert_eq(s.body, 3);
    s = follow_on(http, "HEAD", "303", NULL);
    cr_assert_str_eq(s.line, "HEAD /seen HTTP/1.1", "a HEAD stays a HEAD");
    cr_assert_eq(async_http_destroy(http), 0);
}

/* "Content-Encoding: IDENTITY" and an "x-trace-id" header, the connection
 * closed after. */
static bool answer_capitals(int fd, const char *path)
{
    (void)path;
    raw_puts(fd, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Encoding: IDENTITY\r\n"
                 "x-trace-id: 7\r\n\r\nok");
    return false;
}

/* HTTP's names compare by ASCII's case, in every locale: strcasecmp
 * follows the program's, and under a Turkish one 'I' lowers to a dotless
 * i, so "IDENTITY" was a coding not known (curl error 61) and a lookup of
 * "X-TRACE-ID" found nothing.  The locale is built for the test (localedef,
 * in a directory of its own that LOCPATH names). */
Test(http_hostile_server, names_compare_alike_in_a_turkish_locale)
{
    char dir[] = "/tmp/http-turkish-locale-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char cmd[256];
    snprintf(cmd, sizeof cmd, "localedef -i tr_TR -f ISO-8859-9 %s/tr_TR.ISO-8859-9 >/dev/null 2>&1",
             dir);
    int built = system(cmd);
    setenv("LOCPATH", dir, 1);
    const char *l = built == 0 ? setlocale(LC_ALL, "tr_TR.ISO-8859-9") : NULL;
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (!l) {
        if (system(cmd)) {}
        cr_skip_test("no Turkish locale could be built (localedef, package locales)");
    }
    /* tolower, not strcasecmp: AddressSanitizer's strcasecmp folds by
     * ASCII whatever the locale (there the old code could not fail). */
    cr_assert_neq(tolower('I'), 'i', "the locale does not fold I as Turkish does");
    raw_start(&raw, answer_capitals);
    /* Every coding accepted, so that the client reads Content-Encoding. */
    async_http_t *http;
    async_http_opts_t o = {.accept_encoding = ""};
    cr_assert_eq(async_http_new(&http, loop, &o), 0);
    async_http_request_t req = {.url = raw_url(&raw, "/capitals"), .max_retries = -1,
                                .timeout_ns = ASYNC_SEC(10)};
    waited_t w = {0};
    cr_assert_eq(async_http_send(http, &req, on_waited, &w), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(async_http_destroy(http), 0);
    async_http_response_t *r = w.resp;
    const char *trace = async_http_response_header(r, "X-TRACE-ID");
    setlocale(LC_ALL, "C");
    if (system(cmd)) {}
    cr_assert_eq(r->error, 0, "%s", r->errmsg);
    cr_assert_eq(r->body_len, 2);
    cr_assert(trace && strcmp(trace, "7") == 0, "X-TRACE-ID: %s", trace ? trace : "(none)");
    async_http_response_free(r);
}
