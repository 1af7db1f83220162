/* The HTTP client against tests/support/httpd on loopback: the three calling
 * styles, queries, headers, bodies, JSON, keep-alive, connection limits, the
 * rate limit, many requests from tasks, and no leaks (the counting allocator
 * sees every allocation libasync makes).  Faults are in test-http-faults.c. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <pthread.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <async.h>
#include <async/http.h>
#include "http/http_internal.h"
#include "support/alloc.h"
#include "support/answer.h"
#include "support/http_client.h"
#include "support/httpd.h"

static test_httpd_t *srv;

static void setup(void)
{
    test_alloc_install();
    srv = test_httpd_start();
    cr_assert(srv, "test server did not start");
}

static void teardown(void)
{
    test_httpd_stop(srv);
    test_alloc_uninstall();
}

TestSuite(http, .init = setup, .fini = teardown, .timeout = 20);

/* --- headers as the server sent them ---------------------------------------- */

/* A one-shot server: accepts one connection, reads the request, writes
 * `reply` as it is and closes; then the same with `reply2`, if set. */
typedef struct raw_srv {
    int fd;
    unsigned short port;
    const char *reply, *reply2;
    pthread_t thread;
    char got[2][4096];  /* what each connection sent, up to its blank line */
} raw_srv_t;

static void raw_answer(int fd, const char *reply, char *buf)
{
    int c = accept(fd, NULL, NULL);
    if (c < 0) return;
    size_t got = 0;
    ssize_t n;
    while (got < 4096 - 1 && (n = read(c, buf + got, 4096 - 1 - got)) > 0) {
        got += (size_t)n;
        buf[got] = 0;
        if (strstr(buf, "\r\n\r\n")) break;
    }
    size_t len = strlen(reply), off = 0;
    while (off < len && (n = write(c, reply + off, len - off)) > 0) off += (size_t)n;
    close(c);
}

static void *raw_main(void *arg)
{
    raw_srv_t *s = arg;
    raw_answer(s->fd, s->reply, s->got[0]);
    if (s->reply2) raw_answer(s->fd, s->reply2, s->got[1]);
    return NULL;
}

static void raw_start2(raw_srv_t *s, const char *reply, const char *reply2)
{
    s->reply = reply;
    s->reply2 = reply2;
    s->got[0][0] = s->got[1][0] = 0;
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(s->fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    cr_assert_eq(bind(s->fd, (struct sockaddr *)&sa, sizeof sa), 0);
    cr_assert_eq(listen(s->fd, 4), 0);
    cr_assert_eq(getsockname(s->fd, (struct sockaddr *)&sa, &sl), 0);
    s->port = ntohs(sa.sin_port);
    cr_assert_eq(pthread_create(&s->thread, NULL, raw_main, s), 0);
}

static void raw_start(raw_srv_t *s, const char *reply) { raw_start2(s, reply, NULL); }

static void raw_stop(raw_srv_t *s)
{
    pthread_join(s->thread, NULL);
    close(s->fd);
}

/* One GET by a fresh client of a raw server that answers reply; the call
 * must return want.  Returns the response (the caller frees it). */
static async_http_response_t *raw_get(const char *reply, int want)
{
    raw_srv_t s;
    raw_start(&s, reply);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/", (unsigned)s.port);
    async_http_t *http = test_http_client(NULL, NULL);
    async_http_response_t *r;
    cr_assert_eq(async_http_get(&r, http, url, NULL), want, "%s", r ? r->errmsg : "");
    raw_stop(&s);
    cr_assert_eq(async_http_destroy(http), 0);
    return r;
}

/* --- proxies from the environment ------------------------------------------- */

static const char *const proxy_vars[] = {"http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy",
                                         "ALL_PROXY",  "no_proxy",    "NO_PROXY"};

static void unset_proxy_vars(void)
{
    for (size_t i = 0; i < sizeof proxy_vars / sizeof *proxy_vars; i++) unsetenv(proxy_vars[i]);
}

/* A GET of a closed port on loopback, by client http: through a proxy it
 * is the proxy (a raw server answering "proxied") that answers; without
 * one the connection is refused. */
static async_http_response_t *get_closed_port(async_http_t *http, raw_srv_t *proxy)
{
    async_http_response_t *r = NULL;
    int rc = async_http_get(&r, http, "http://127.0.0.1:9/via", NULL);
    if (proxy) {
        cr_assert_eq(rc, 0, "through the proxy: %s", r ? r->errmsg : "");
        cr_assert_str_eq(r->body, "proxied");
    } else {
        cr_assert_neq(rc, 0, "port 9 answered without a proxy");
    }
    return r;
}

#define PROXY_REPLY "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\nproxied"

/* Starts p as a proxy (a raw server answering PROXY_REPLY once) and names it
 * in http_proxy, for the clients made from now on. */
static void proxy_start(raw_srv_t *p)
{
    raw_start(p, PROXY_REPLY);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%u", (unsigned)p->port);
    setenv("http_proxy", url, 1);
}

/* A proxy variable set when the client is made is honoured for each
 * request, as curl reads it; and no_proxy still exempts a host. */
Test(http, proxy_variable_set_before_the_client_is_honoured)
{
    unset_proxy_vars();
    raw_srv_t p;
    proxy_start(&p);
    async_http_t *http = test_http_client(NULL, NULL);
    async_http_response_free(get_closed_port(http, &p));
    raw_stop(&p);
    /* Exempted by no_proxy, set after the client was made: curl reads it
     * on every request while a proxy variable is set. */
    setenv("no_proxy", "127.0.0.1", 1);
    async_http_response_free(get_closed_port(http, NULL));
    test_http_client_end(NULL, http);
}

/* With no proxy variable when the client is made, its requests go direct:
 * the environment is read once then (docs: async_http_new), not on every
 * request, so a variable set later does not apply to this client, only
 * to one made after it. */
Test(http, proxy_variable_set_after_the_client_is_made_applies_to_the_next_client)
{
    unset_proxy_vars();
    async_http_t *http = test_http_client(NULL, NULL);
    raw_srv_t p;
    proxy_start(&p);
    async_http_response_free(get_closed_port(http, NULL));
    cr_assert_eq(async_http_destroy(http), 0);
    http = test_http_client(NULL, NULL);
    async_http_response_free(get_closed_port(http, &p));
    raw_stop(&p);
    test_http_client_end(NULL, http);
}

/* The User-Agent lines of a request as a raw server got it: how many, and
 * the value of the first in ua (empty when there is none). */
static int ua_lines(const char *got, char *ua, size_t len)
{
    int n = 0;
    ua[0] = 0;
    for (const char *p = strstr(got, "\r\n"); p; p = strstr(p + 2, "\r\n")) {
        if (strncasecmp(p + 2, "User-Agent:", 11) != 0) continue;
        const char *v = p + 13, *e = strstr(v, "\r\n");
        while (*v == ' ') v++;
        if (!n++ && e) snprintf(ua, len, "%.*s", (int)(e - v), v);
    }
    return n;
}

/* One request of req's kind (its URL set here) by a client made with opts,
 * to a raw server; returns the number of User-Agent lines it sent, the
 * first one's value in ua. */
static int sent_ua(const async_http_opts_t *opts, async_http_request_t req, char *ua, size_t len)
{
    raw_srv_t s;
    raw_start(&s, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/ua", (unsigned)s.port);
    req.url = url;
    async_http_t *http = test_http_client(NULL, opts);
    async_http_response_t *r;
    cr_assert_eq(async_http_fetch(&r, http, &req), 0, "%s", r ? r->errmsg : "");
    async_http_response_free(r);
    raw_stop(&s);
    cr_assert_eq(async_http_destroy(http), 0);
    return ua_lines(s.got[0], ua, len);
}

/* The client's User-Agent goes as a header line of the request's own
 * (cheaper in curl than CURLOPT_USERAGENT), exactly once: on a plain GET, a
 * request with headers, one with a body; a request's own User-Agent
 * replaces it, an empty one removes it, and so does an empty user_agent. */
Test(http, the_user_agent_is_sent_once_and_a_requests_own_replaces_it)
{
    unset_proxy_vars();
    async_http_t *http = test_http_client(NULL, NULL);
    cr_assert(http->ua_header, "a client without a proxy sends the User-Agent as a header");
    cr_assert_eq(async_http_destroy(http), 0);
    char ua[128];
    async_http_request_t get = {0};
    cr_assert_eq(sent_ua(NULL, get, ua, sizeof ua), 1);
    cr_assert_str_eq(ua, "libasync/" ASYNC_VERSION);
    const char *hdrs[] = {"X-Test: yes", NULL};
    async_http_request_t with = {.headers = hdrs};
    cr_assert_eq(sent_ua(NULL, with, ua, sizeof ua), 1);
    cr_assert_str_eq(ua, "libasync/" ASYNC_VERSION);
    async_http_request_t post = {.body = "b", .body_len = 1};
    cr_assert_eq(sent_ua(NULL, post, ua, sizeof ua), 1);
    cr_assert_str_eq(ua, "libasync/" ASYNC_VERSION);
    const char *mine[] = {"X-Test: yes", "user-agent: mine/2", NULL};
    async_http_request_t own = {.headers = mine};
    cr_assert_eq(sent_ua(NULL, own, ua, sizeof ua), 1);
    cr_assert_str_eq(ua, "mine/2");
    const char *none[] = {"User-Agent:", NULL};
    async_http_request_t removed = {.headers = none};
    cr_assert_eq(sent_ua(NULL, removed, ua, sizeof ua), 0);
    async_http_opts_t empty = {.user_agent = ""};
    cr_assert_eq(sent_ua(&empty, get, ua, sizeof ua), 0);
    async_http_opts_t named = {.user_agent = "tester/1"};
    cr_assert_eq(sent_ua(&named, post, ua, sizeof ua), 1);
    cr_assert_str_eq(ua, "tester/1");
    cr_assert_eq(test_alloc_live(), 0);
}

/* Through a proxy (a variable set when the client is made) the User-Agent
 * is still sent once, curl's way, which a proxy's CONNECT carries too. */
Test(http, the_user_agent_reaches_a_proxy_once)
{
    unset_proxy_vars();
    raw_srv_t p;
    proxy_start(&p);
    async_http_t *http = test_http_client(NULL, NULL);
    cr_assert_null(http->ua_header, "curl's CURLOPT_USERAGENT reaches a CONNECT too");
    async_http_response_free(get_closed_port(http, &p));
    raw_stop(&p);
    unset_proxy_vars();
    char ua[128];
    cr_assert_eq(ua_lines(p.got[0], ua, sizeof ua), 1, "%s", p.got[0]);
    cr_assert_str_eq(ua, "libasync/" ASYNC_VERSION);
    test_http_client_end(NULL, http);
}

/* Every header line in order, the name as spelled, the value without the
 * blanks around it (inner ones kept), empty values and repeats kept, the last
 * of a repeated name found by name; the status line and the blank line are
 * not headers. */
Test(http, headers_trimmed_in_order)
{
    async_http_response_t *r = raw_get("HTTP/1.1 200 OK\r\n"
                                       "X-Pad: \t  two  words \t \r\n"
                                       "X-Empty:\r\n"
                                       "x-twice: first\r\n"
                                       "X-Twice:second\r\n"
                                       "X-Colon: a: b\r\n"
                                       "Content-Length: 2\r\n"
                                       "Connection: close\r\n"
                                       "\r\n"
                                       "hi", 0);
    static const char *const want[][2] = {{"X-Pad", "two  words"}, {"X-Empty", ""},
                                          {"x-twice", "first"},    {"X-Twice", "second"},
                                          {"X-Colon", "a: b"},     {"Content-Length", "2"},
                                          {"Connection", "close"}};
    cr_assert_eq(r->n_headers, sizeof want / sizeof want[0]);
    for (size_t i = 0; i < r->n_headers; i++) {
        cr_assert_str_eq(r->headers[i].name, want[i][0]);
        cr_assert_str_eq(r->headers[i].value, want[i][1]);
    }
    cr_assert_str_eq(async_http_response_header(r, "x-TWICE"), "second");
    cr_assert_str_eq(async_http_response_header(r, "x-empty"), "");
    cr_assert_str_eq(r->body, "hi");
    async_http_response_free(r);
}

/* A folded continuation line (no colon) is no header of its own, and the
 * lines after it are read as usual.  (A NUL byte in a header line, the other
 * oddity on_header guards against, curl 7.88 refuses itself: "Nul byte in
 * header".) */
Test(http, folded_header_line)
{
    async_http_response_t *r = raw_get("HTTP/1.1 200 OK\r\n"
                                       "X-Folded: one\r\n"
                                       " two\r\n"
                                       "X-After: yes\r\n"
                                       "Content-Length: 2\r\n"
                                       "Connection: close\r\n"
                                       "\r\n"
                                       "hi", 0);
    cr_assert_str_eq(async_http_response_header(r, "X-After"), "yes");
    cr_assert_str_eq(async_http_response_header(r, "Content-Length"), "2");
    const char *folded = async_http_response_header(r, "X-Folded");
    cr_assert(folded && strncmp(folded, "one", 3) == 0, "X-Folded: %s", folded ? folded : "(none)");
    for (size_t i = 0; i < r->n_headers; i++)
        cr_assert(strchr(r->headers[i].name, ' ') == NULL, "header %zu: \"%s\"", i, r->headers[i].name);
    cr_assert_str_eq(r->body, "hi");
    async_http_response_free(r);
}

/* The version and status come from the final status line: an HTTP/1.0
 * answer says so, and its status and reason make the error. */
Test(http, version_and_status_of_the_status_line)
{
    async_http_response_t *r = raw_get("HTTP/1.0 404 Gone Fishing\r\n"
                                       "Content-Length: 2\r\n"
                                       "\r\n"
                                       "no", ASYNC_EHTTP);
    cr_assert_str_eq(r->http_version, "HTTP/1.0");
    cr_assert_eq(r->status, 404);
    cr_assert_str_eq(r->errmsg, "HTTP status 404 Gone Fishing");
    cr_assert_str_eq(r->body, "no");
    async_http_response_free(r);
}

/* The header array of a small response shares the body's buffer; a header
 * block too large for its spare room has an allocation of its own.  Either
 * way every header reads back and freeing the response frees it all. */
/* A retried request whose last answer has no body: the body of the answer
 * before it must not show through (body[body_len] == 0, body "" here). */
Test(http, retry_to_an_empty_answer_gives_an_empty_body)
{
    raw_srv_t s;
    raw_start2(&s,
               "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 12\r\n"
               "Connection: close\r\n\r\nfirst answer",
               "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/", (unsigned)s.port);
    async_http_opts_t o = {.max_retries = 1, .retry_base_ns = ASYNC_MSEC(1)};
    async_http_t *http = test_http_client(NULL, &o);
    async_http_response_t *r;
    cr_assert_eq(async_http_get(&r, http, url, NULL), 0, "%s", r ? r->errmsg : "");
    raw_stop(&s);
    cr_assert_eq(r->status, 204);
    cr_assert_eq(r->attempts, 2);
    cr_assert_eq(r->body_len, 0);
    cr_assert_str_eq(r->body, "");
    async_http_response_free(r);
    cr_assert_eq(async_http_destroy(http), 0);
}

Test(http, headers_inline_or_apart)
{
    static char big[4096];
    size_t at = (size_t)snprintf(big, sizeof big, "HTTP/1.1 200 OK\r\n");
    for (int i = 0; i < 40; i++)
        at += (size_t)snprintf(big + at, sizeof big - at, "X-Field-%02d: value number %02d\r\n", i, i);
    snprintf(big + at, sizeof big - at, "Content-Length: 2\r\nConnection: close\r\n\r\nhi");
    const char *replies[] = {"HTTP/1.1 200 OK\r\nX-One: 1\r\nContent-Length: 2\r\n"
                             "Connection: close\r\n\r\nhi",
                             big};
    for (int k = 0; k < 2; k++) {
        async_http_response_t *r = raw_get(replies[k], 0);
        cr_assert_str_eq(r->body, "hi");
        bool in_body = (const char *)r->headers > r->body && (const char *)r->headers < r->body + 512;
        if (k == 0) {
            cr_assert(in_body, "a small response's headers share its body buffer");
            cr_assert_eq(r->n_headers, 3);
            cr_assert_str_eq(async_http_response_header(r, "x-one"), "1");
        } else {
            cr_assert(!in_body);
            cr_assert_eq(r->n_headers, 42);
            for (int i = 0; i < 40; i++) {
                char name[16], value[32];
                snprintf(name, sizeof name, "X-Field-%02d", i);
                snprintf(value, sizeof value, "value number %02d", i);
                cr_assert_str_eq(r->headers[i].name, name);
                cr_assert_str_eq(r->headers[i].value, value);
            }
        }
        cr_assert_str_eq(async_http_response_header(r, "connection"), "close");
        async_http_response_free(r);
        cr_assert_eq(test_alloc_live(), 0, "leaked %ld allocations", test_alloc_live());
    }
}

/* --- callback style -------------------------------------------------------- */

Test(http, callback_get)
{
    async_loop_t *loop;
    async_http_t *http = test_http_client(&loop, NULL);
    test_answer_t g = {0};
    async_http_request_t req = {.url = test_httpd_url(srv, "/ok")};
    cr_assert_eq(async_http_send(http, &req, test_answer_catch, &g), 0);
    cr_assert_eq(g.calls, 0, "the callback never runs inside send");
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(g.calls, 1);
    async_http_response_t *r = g.resp;
    cr_assert_eq(r->error, 0, "%s", r->errmsg);
    cr_assert_eq(r->status, 200);
    cr_assert_str_eq(r->body, "ok");
    cr_assert_eq(r->body_len, 2);
    cr_assert_str_eq(r->errmsg, "");
    cr_assert_str_eq(r->url, test_httpd_url(srv, "/ok"), "the URL, kept in the response's block");
    cr_assert_str_eq(async_http_response_header(r, "content-type"), "text/plain");
    cr_assert_null(async_http_response_header(r, "x-missing"));
    cr_assert_str_eq(r->http_version, "HTTP/1.1");
    cr_assert_eq(r->attempts, 1);
    cr_assert(r->timings.total > 0 && r->timings.elapsed >= r->timings.total);
    async_http_response_free(r);
    test_http_client_end(loop, http);
}

Test(http, query_headers_post_echo)
{
    async_loop_t *loop;
    async_http_t *http = test_http_client(&loop, NULL);
    const char *query[] = {"by_state", "new york", "q", "a&b=c/é", NULL};
    const char *headers[] = {"X-Test: yes", "Content-Type: text/plain", NULL};
    async_http_request_t req = {.url = test_httpd_url(srv, "/echo"), .query = query,
                                .headers = headers, .body = "hello body", .body_len = 10};
    test_answer_t g = {0};
    cr_assert_eq(async_http_send(http, &req, test_answer_catch, &g), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(g.resp->error, 0, "%s", g.resp->errmsg);
    cr_assert(strstr(g.resp->url, "?by_state=new%20york&q=a%26b%3Dc%2F%C3%A9"), "%s", g.resp->url);
    json_t *j;
    cr_assert_eq(async_http_response_json(&j, g.resp), 0);
    cr_assert_str_eq(json_string_value(json_object_get(j, "method")), "POST");
    cr_assert_str_eq(json_string_value(json_object_get(j, "body")), "hello body");
    json_t *q = json_object_get(j, "query");
    cr_assert_str_eq(json_string_value(json_object_get(q, "by_state")), "new york");
    cr_assert_str_eq(json_string_value(json_object_get(q, "q")), "a&b=c/é");
    json_t *h = json_object_get(j, "headers");
    cr_assert_str_eq(json_string_value(json_object_get(h, "X-Test")), "yes");
    cr_assert_str_eq(json_string_value(json_object_get(h, "User-Agent")), "libasync/" ASYNC_VERSION,
                     "the default User-Agent names this version");
    cr_assert_null(json_object_get(h, "Accept-Encoding"), "no Accept-Encoding unless asked");
    json_decref(j);
    async_http_response_free(g.resp);

    /* Any method with a body; PUT is sent as PUT. */
    req.method = "put";
    req.query = NULL;
    g = (test_answer_t){0};
    cr_assert_eq(async_http_send(http, &req, test_answer_catch, &g), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(async_http_response_json(&j, g.resp), 0);
    cr_assert_str_eq(json_string_value(json_object_get(j, "method")), "PUT");
    json_decref(j);
    async_http_response_free(g.resp);

    test_http_client_end(loop, http);
}

/* --- the easy handle pool -------------------------------------------------- */

typedef struct burst {
    int done, failed;
} burst_t;

static void on_burst_done(async_http_response_t *resp, void *arg)
{
    burst_t *b = arg;
    b->done++;
    if (resp->error) b->failed++;
    async_http_response_free(resp);
}

static void on_wait(struct ev_loop *ev, ev_timer *w, int revents)
{
    ASYNC_UNUSED(ev);
    ASYNC_UNUSED(w);
    ASYNC_UNUSED(revents);
}

/* A burst wider than the pool's floor of 64 leaves every handle it made in
 * the pool, for the next burst; the pool's timer does not keep the loop
 * running, and once the loop has run two idle periods the pool is back at
 * its floor. */
Test(http, pool_grows_for_a_burst_and_shrinks_when_idle)
{
    enum { BURST = 150 };
    async_loop_t *loop;
    async_http_t *http = test_http_client(&loop, NULL);
    /* Stalled, so that every request of the burst runs at once. */
    async_http_request_t req = {.url = test_httpd_url(srv, "/stall?ms=100")};
    burst_t b = {0};
    for (int i = 0; i < BURST; i++) cr_assert_eq(async_http_send(http, &req, on_burst_done, &b), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(b.done, BURST);
    cr_assert_eq(b.failed, 0);
    /* Every request of the burst started at once (the pump starts up to
     * 256 a loop iteration), each on a handle of its own. */
    async_http_stats_t st;
    async_http_stats(http, &st);
    cr_assert_eq(st.easy_pooled, BURST, "one idle handle for each request that ran at once");

    /* Two idle periods (1 s each) and a margin. */
    ev_timer wait;
    ev_timer_init(&wait, on_wait, 3.5, 0.);
    ev_timer_start(async_loop_ev(loop), &wait);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    async_http_stats(http, &st);
    cr_assert_eq(st.easy_pooled, 64, "the pool shrank to its floor");

    /* The pool still serves: a request after the shrink. */
    b = (burst_t){0};
    req.url = test_httpd_url(srv, "/ok");
    cr_assert_eq(async_http_send(http, &req, on_burst_done, &b), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(b.done, 1);
    cr_assert_eq(b.failed, 0);
    test_http_client_end(loop, http);
}

/* Sends req on http's loop and returns its response (the caller frees it). */
static async_http_response_t *send_one(async_loop_t *loop, async_http_t *http,
                                       const async_http_request_t *req)
{
    test_answer_t g = {0};
    cr_assert_eq(async_http_send(http, req, test_answer_catch, &g), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(g.calls, 1);
    return g.resp;
}

/* A keep-alive socket keeps its watcher between requests; a socket the
 * server closed must not pass its watcher on to the next socket, which the
 * kernel gives the same descriptor number.  Each round: two requests, the
 * second on a kept-alive connection, then one the server drops, closing the
 * connection it came on. */
Test(http, socket_context_survives_reuse_not_close)
{
    async_loop_t *loop;
    async_http_t *http = test_http_client(&loop, NULL);
    char ok_url[256], drop_url[256]; /* test_httpd_url's buffer is reused */
    snprintf(ok_url, sizeof ok_url, "%s", test_httpd_url(srv, "/ok"));
    snprintf(drop_url, sizeof drop_url, "%s", test_httpd_url(srv, "/drop"));
    async_http_request_t ok = {.url = ok_url, .timeout_ns = ASYNC_SEC(5)};
    async_http_request_t drop = {.url = drop_url, .max_retries = -1, .timeout_ns = ASYNC_SEC(5)};
    for (int round = 0; round < 10; round++) {
        for (int i = 0; i < 2; i++) {
            async_http_response_t *r = send_one(loop, http, &ok);
            cr_assert_eq(r->error, 0, "round %d: %s", round, r->errmsg);
            cr_assert_str_eq(r->body, "ok");
            async_http_response_free(r);
        }
        async_http_response_t *r = send_one(loop, http, &drop);
        cr_assert_neq(r->error, 0);
        cr_assert_neq(r->error, ASYNC_ETIMEDOUT, "round %d: %s", round, r->errmsg);
        async_http_response_free(r);
    }
    cr_assert_geq(test_httpd_connections(srv), 10); /* each drop closed one */
    test_http_client_end(loop, http);
}

/* One pooled easy handle carries every request below in turn, and sets only
 * the options that differ from the previous request's: each request must
 * still go out as asked, nothing of the one before it left behind. */
Test(http, pooled_handle_forgets_previous_request)
{
    async_loop_t *loop;
    async_http_t *http = test_http_client(&loop, NULL);
    const char *headers[] = {"X-Test: yes", NULL};
    async_http_request_t post = {.url = test_httpd_url(srv, "/echo"), .headers = headers,
                                 .body = "hello", .body_len = 5};
    async_http_response_t *r = send_one(loop, http, &post);
    json_t *j;
    cr_assert_eq(async_http_response_json(&j, r), 0, "%s", r->errmsg);
    cr_assert_str_eq(json_string_value(json_object_get(j, "method")), "POST");
    json_decref(j);
    async_http_response_free(r);

    /* A plain GET after it: no body, no method, no header of the POST. */
    async_http_request_t get = {.url = test_httpd_url(srv, "/echo")};
    r = send_one(loop, http, &get);
    cr_assert_eq(async_http_response_json(&j, r), 0, "%s", r->errmsg);
    cr_assert_str_eq(json_string_value(json_object_get(j, "method")), "GET");
    cr_assert_str_eq(json_string_value(json_object_get(j, "body")), "");
    cr_assert_null(json_object_get(json_object_get(j, "headers"), "X-Test"));
    json_decref(j);
    async_http_response_free(r);

    /* HEAD, then GET again: the body is back. */
    async_http_request_t head = {.url = test_httpd_url(srv, "/ok"), .method = "HEAD"};
    r = send_one(loop, http, &head);
    cr_assert_eq(r->error, 0, "%s", r->errmsg);
    cr_assert_eq(r->body_len, 0);
    async_http_response_free(r);
    async_http_request_t ok = {.url = test_httpd_url(srv, "/ok")};
    r = send_one(loop, http, &ok);
    cr_assert_str_eq(r->body, "ok");
    async_http_response_free(r);

    /* A short timeout of its own, then the client's default again. */
    async_http_request_t stall = {.url = test_httpd_url(srv, "/stall?ms=400"),
                                  .timeout_ns = ASYNC_MSEC(100), .max_retries = -1};
    r = send_one(loop, http, &stall);
    cr_assert_eq(r->error, ASYNC_ETIMEDOUT, "%s", r->errmsg);
    async_http_response_free(r);
    stall.timeout_ns = 0;
    r = send_one(loop, http, &stall);
    cr_assert_eq(r->error, 0, "%s", r->errmsg);
    cr_assert_str_eq(r->body, "stalled");
    async_http_response_free(r);

    /* One request at a time: every one ran on the same pooled handle. */
    async_http_stats_t st;
    async_http_stats(http, &st);
    cr_assert_eq(st.easy_pooled, 1);
    test_http_client_end(loop, http);
}

Test(http, accept_encoding_option)
{
    async_http_opts_t o = {.accept_encoding = "gzip", .user_agent = "tester/1"};
    async_loop_t *loop;
    async_http_t *http = test_http_client(&loop, &o);
    test_answer_t g = {0};
    async_http_request_t req = {.url = test_httpd_url(srv, "/echo")};
    cr_assert_eq(async_http_send(http, &req, test_answer_catch, &g), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    json_t *j;
    cr_assert_eq(async_http_response_json(&j, g.resp), 0);
    json_t *h = json_object_get(j, "headers");
    cr_assert_str_eq(json_string_value(json_object_get(h, "Accept-Encoding")), "gzip");
    cr_assert_str_eq(json_string_value(json_object_get(h, "User-Agent")), "tester/1");
    cr_assert_str_eq(json_string_value(json_object_get(j, "method")), "GET");
    json_decref(j);
    async_http_response_free(g.resp);
    test_http_client_end(loop, http);
}

Test(http, redirect_and_slow_body)
{
    async_loop_t *loop;
    async_http_t *http = test_http_client(&loop, NULL);
    test_answer_t a = {0}, b = {0};
    async_http_request_t r1 = {.url = test_httpd_url(srv, "/redirect")};
    cr_assert_eq(async_http_send(http, &r1, test_answer_catch, &a), 0);
    async_http_request_t r2 = {.url = test_httpd_url(srv, "/slow?chunks=5&ms=20")};
    cr_assert_eq(async_http_send(http, &r2, test_answer_catch, &b), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(a.resp->status, 200);
    cr_assert_str_eq(a.resp->body, "ok");
    cr_assert_eq(b.resp->error, 0, "%s", b.resp->errmsg);
    cr_assert_eq(b.resp->body_len, 30);
    cr_assert(b.resp->timings.total >= 0.08);
    async_http_response_free(a.resp);
    async_http_response_free(b.resp);
    test_http_client_end(loop, http);
}

/* A pooled handle does not set the URL again when the next request's is the
 * same: curl must start each transfer from the URL set, not from where a
 * redirect of the previous one led.  One request at a time on a blocking
 * client, so all run on one handle. */
Test(http, same_url_again_after_redirect)
{
    async_http_t *http = test_http_client(NULL, NULL);
    char redirect[128], echo[128];
    snprintf(redirect, sizeof redirect, "%s", test_httpd_url(srv, "/redirect"));
    snprintf(echo, sizeof echo, "%s", test_httpd_url(srv, "/echo"));
    const char *urls[] = {redirect, redirect, echo, echo, redirect};
    for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++) {
        long before = test_httpd_requests(srv);
        async_http_response_t *r;
        cr_assert_eq(async_http_get(&r, http, urls[i], NULL), 0, "%zu: %s", i, r ? r->errmsg : "");
        cr_assert_str_eq(r->url, urls[i]);
        if (urls[i] == redirect) {
            /* The 302 and then /ok: a transfer started from /ok makes one. */
            cr_assert_eq(test_httpd_requests(srv) - before, 2, "%zu", i);
            cr_assert_str_eq(r->body, "ok", "%zu", i);
        } else {
            cr_assert_eq(test_httpd_requests(srv) - before, 1, "%zu", i);
            cr_assert(strstr(r->body, "\"path\":\"/echo\""), "%zu: %s", i, r->body);
        }
        async_http_response_free(r);
    }
    async_http_stats_t st;
    async_http_stats(http, &st);
    cr_assert_eq(st.easy_pooled, 1);
    test_http_client_end(NULL, http);
}

/* The one idle handle of a blocking client, between its requests. */
static http_easy_t *idle_handle(async_http_t *http)
{
    cr_assert_eq(http->n_pool, 1);
    return http->pool[0];
}

/* A GET on a blocking client that must succeed and reach /echo of the test
 * server with the query parameter q=`q` (/echo answers with the query it
 * saw). */
static void get_echo(async_http_t *http, const char *url, const char *q)
{
    async_http_response_t *r;
    cr_assert_eq(async_http_get(&r, http, url, NULL), 0, "%s: %s", url, r ? r->errmsg : "");
    cr_assert(strstr(r->body, "\"path\":\"/echo\""), "%s: %s", url, r->body);
    json_t *j = json_loads(r->body, 0, NULL);
    cr_assert(j, "%s", r->body);
    const char *got = json_string_value(json_object_get(json_object_get(j, "query"), "q"));
    cr_assert_str_eq(got ? got : "(none)", q, "%s", url);
    json_decref(j);
    async_http_response_free(r);
}

/* A URL the handle remembers is handed to curl parsed (CURLOPT_CURLU), once
 * for all the requests to it, so that curl does not parse it again for each
 * transfer; a URL too long to remember goes as a string, and the next short
 * one is parsed again.  Each request reaches its own URL. */
Test(http, a_remembered_url_is_parsed_once_for_its_handle)
{
    async_http_t *http = test_http_client(NULL, NULL);
    char echo[128], other[128], lng[HTTP_URL_KEEP + 64];
    snprintf(echo, sizeof echo, "%s", test_httpd_url(srv, "/echo?q=one"));
    snprintf(other, sizeof other, "%s", test_httpd_url(srv, "/echo?q=two"));
    int n = snprintf(lng, sizeof lng, "%s", test_httpd_url(srv, "/echo?q="));
    memset(lng + n, 'a', sizeof lng - 1 - (size_t)n);
    lng[sizeof lng - 1] = 0;

    get_echo(http, echo, "one");
    CURLU *uh = idle_handle(http)->uh;
    cr_assert(uh, "a short URL is handed over parsed");
    get_echo(http, echo, "one");
    cr_assert_eq(idle_handle(http)->uh, uh, "the same URL is not parsed again");
    get_echo(http, other, "two");
    cr_assert(idle_handle(http)->uh, "another URL is parsed in its turn");
    get_echo(http, lng, lng + n);
    cr_assert_null(idle_handle(http)->uh, "a URL too long to remember goes as a string");
    get_echo(http, echo, "one");
    cr_assert(idle_handle(http)->uh);
    test_http_client_end(NULL, http);
}

/* A URL without a scheme is curl's guess (http) on a handle that carried a
 * full URL before: it is parsed on its own, never resolved against the
 * handle's previous URL as a relative reference. */
Test(http, a_url_without_a_scheme_after_another_on_one_handle)
{
    async_http_t *http = test_http_client(NULL, NULL);
    char full[128], bare[128];
    snprintf(full, sizeof full, "%s", test_httpd_url(srv, "/echo?q=one"));
    snprintf(bare, sizeof bare, "%s", test_httpd_url(srv, "/echo?q=two") + strlen("http://"));
    get_echo(http, full, "one");
    get_echo(http, bare, "two");
    get_echo(http, full, "one");
    test_http_client_end(NULL, http);
}

/* A URL curl cannot parse fails its request with curl's own error, and the
 * handle goes on to the next URL. */
Test(http, a_malformed_url_fails_with_curls_error)
{
    async_http_t *http = test_http_client(NULL, NULL);
    char echo[128];
    snprintf(echo, sizeof echo, "%s", test_httpd_url(srv, "/echo?q=one"));
    get_echo(http, echo, "one");
    async_http_response_t *r;
    cr_assert_eq(async_http_get(&r, http, "http://[::1/echo", NULL), ASYNC_ECURL);
    cr_assert(strstr(r->errmsg, "(curl error 3)"), "%s", r->errmsg);
    async_http_response_free(r);
    get_echo(http, echo, "one");
    test_http_client_end(NULL, http);
}

/* --- await from a task ----------------------------------------------------- */

typedef struct ctx {
    async_http_t *http;
    const char *url;
    int rc;
    long n;
} ctx_t;

static int fetch_json_task(void *arg, void **result)
{
    (void)result;
    ctx_t *c = arg;
    async_http_response_t *r;
    c->rc = async_http_get(&r, c->http, c->url, NULL);
    if (c->rc) {
        async_http_response_free(r);
        return c->rc;
    }
    json_t *j;
    c->rc = async_http_response_json(&j, r);
    if (!c->rc) {
        c->n = (long)json_integer_value(json_object_get(j, "n"));
        json_decref(j);
    }
    async_http_response_free(r);
    return c->rc;
}

Test(http, await_from_task)
{
    async_loop_t *loop;
    async_http_t *http = test_http_client(&loop, NULL);
    ctx_t c = {.http = http, .url = test_httpd_url(srv, "/json")};
    cr_assert_eq(async_task_spawn(NULL, loop, fetch_json_task, &c, NULL), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(c.rc, 0);
    cr_assert_eq(c.n, 42);
    test_http_client_end(loop, http);
}

Test(http, fetch_outside_task_on_bound_client)
{
    async_loop_t *loop;
    async_http_t *http = test_http_client(&loop, NULL);
    async_http_response_t *r = (void *)1;
    cr_assert_eq(async_http_get(&r, http, test_httpd_url(srv, "/ok"), NULL), ASYNC_ENOTASK);
    cr_assert_null(r);
    test_http_client_end(loop, http);
}

/* Many tasks, each making a few requests on one client. */
typedef struct many {
    async_http_t *http;
    char url[128];
    int ok;
} many_t;

static int many_task(void *arg, void **result)
{
    (void)result;
    many_t *m = arg;
    for (int i = 0; i < 3; i++) {
        async_http_response_t *r;
        int rc = async_http_get(&r, m->http, m->url, NULL);
        if (rc == 0 && strcmp(r->body, "stalled") == 0) m->ok++;
        async_http_response_free(r);
    }
    return 0;
}

Test(http, many_tasks_concurrently)
{
    enum { N = 100 };
    async_loop_t *loop;
    async_http_t *http = test_http_client(&loop, NULL);
    static many_t m[N];
    for (int i = 0; i < N; i++) {
        m[i].http = http;
        snprintf(m[i].url, sizeof m[i].url, "%s", test_httpd_url(srv, "/stall?ms=50"));
        cr_assert_eq(async_task_spawn(NULL, loop, many_task, &m[i], NULL), 0);
    }
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    for (int i = 0; i < N; i++) cr_assert_eq(m[i].ok, 3, "task %d", i);
    /* They overlapped: more than a handful were in the server at once. */
    cr_assert_gt(test_httpd_max_busy(srv), 2);
    /* And later rounds reused the first round's connections. */
    cr_assert_leq(test_httpd_connections(srv), N + N / 2);
    async_http_stats_t st;
    async_http_stats(http, &st);
    cr_assert_eq(st.requests, 3 * N);
    cr_assert_eq(st.failed, 0);
    cr_assert_eq(st.in_flight, 0);
    cr_assert_gt(st.easy_pooled, 0);
    test_http_client_end(loop, http);
}

/* More requests at once than one curl multi handle takes (the client spreads
 * bursts over several): all complete, and in_flight counts them meanwhile.
 * Only the first batch starts before the loop runs; the others start in the
 * loop's next iterations, after it has polled the first batch's sockets. */
Test(http, burst_over_shards)
{
    enum { N = 700 };
    async_loop_t *loop;
    async_http_t *http = test_http_client(&loop, NULL);
    static test_answer_t g[N];
    async_http_request_t req = {.url = test_httpd_url(srv, "/stall?ms=200")};
    for (int i = 0; i < N; i++) cr_assert_eq(async_http_send(http, &req, test_answer_catch, &g[i]), 0);
    async_http_stats_t st;
    async_http_stats(http, &st);
    cr_assert_eq(st.in_flight, N);
    cr_assert_gt(st.attempts, 0);
    cr_assert_lt(st.attempts, N);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(g[i].calls, 1);
        cr_assert_eq(g[i].resp->error, 0, "%d: %s", i, g[i].resp->errmsg);
        async_http_response_free(g[i].resp);
    }
    /* All 700 were in curl at once (the first batches' stall for 200 ms),
     * so three multi handles took them (256 each at most); how many
     * overlapped in the server depends on its threads' speed, so only
     * overlap itself is checked. */
    cr_assert_gt(test_httpd_max_busy(srv), 1);
    async_http_stats(http, &st);
    cr_assert_eq(st.attempts, N);
    cr_assert_eq(st.in_flight, 0);
    cr_assert_eq(st.failed, 0);
    test_http_client_end(loop, http);
}

/* A server that holds every answer until all N requests are in, and then
 * writes them all while the client's loop is held (together_hold), so that
 * the client's next poll finds all N sockets ready at once. */
enum { TOGETHER_N = 32 };

typedef struct together_srv {
    int fd;
    unsigned short port;
    pthread_t thread;
    int received;          /* requests read, under mu */
    bool written;          /* every answer written, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
} together_srv_t;

static void *together_main(void *arg)
{
    together_srv_t *s = arg;
    int c[TOGETHER_N];
    char path[TOGETHER_N][16];
    for (int i = 0; i < TOGETHER_N; i++) {
        c[i] = accept(s->fd, NULL, NULL);
        char buf[2048];
        size_t got = 0;
        ssize_t n;
        while (c[i] >= 0 && got < sizeof buf - 1 &&
               (n = read(c[i], buf + got, sizeof buf - 1 - got)) > 0) {
            got += (size_t)n;
            buf[got] = 0;
            if (strstr(buf, "\r\n\r\n")) break;
        }
        buf[got] = 0;
        /* "GET /rK HTTP/1.1": answer with the path, so that a mix-up shows. */
        if (sscanf(buf, "GET /%15s", path[i]) != 1) snprintf(path[i], sizeof path[i], "?");
        pthread_mutex_lock(&s->mu);
        s->received++;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
    }
    for (int i = 0; i < TOGETHER_N; i++) {
        char reply[128];
        int len = snprintf(reply, sizeof reply,
                           "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n%s",
                           strlen(path[i]), path[i]);
        /* A short write shows as a failed or short answer in the test. */
        if (c[i] >= 0 && write(c[i], reply, (size_t)len) != len) continue;
    }
    pthread_mutex_lock(&s->mu);
    s->written = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    /* Closed only after the client read them: it runs with the answers in
     * its sockets' buffers, the connections still open. */
    for (int i = 0; i < TOGETHER_N; i++) {
        char b[64];
        if (c[i] >= 0) {
            while (read(c[i], b, sizeof b) > 0) {}
            close(c[i]);
        }
    }
    return NULL;
}

/* On the client's loop: waits (polling the loop) until the server has every
 * request, then blocks the loop's thread until the server has written every
 * answer. */
static int together_hold(void *arg, void **result)
{
    together_srv_t *s = arg;
    *result = NULL;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        bool all_in = s->received == TOGETHER_N;
        pthread_mutex_unlock(&s->mu);
        if (all_in) break;
        int rc = async_sleep(1000000);
        if (rc != 0) return rc;
    }
    pthread_mutex_lock(&s->mu);
    while (!s->written) pthread_cond_wait(&s->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

/* Answers that one poll finds ready together are driven with one call for
 * them all (curl_multi_socket_all), and each still reaches its own request;
 * a lone answer among them is driven on its own (no socket_all). */
Test(http, answers_arriving_together_are_driven_at_once)
{
    async_loop_t *loop;
    async_http_t *http = test_http_client(&loop, NULL);

    async_http_request_t req1 = {.url = test_httpd_url(srv, "/ok")};
    async_http_response_t *one = send_one(loop, http, &req1);
    cr_assert_eq(one->error, 0, "%s", one->errmsg);
    async_http_response_free(one);
    cr_assert_eq(http->multi.n_drive_all, 0, "one ready socket is driven on its own");

    static together_srv_t s;
    memset(&s, 0, sizeof s);
    pthread_mutex_init(&s.mu, NULL);
    pthread_cond_init(&s.cv, NULL);
    s.fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(s.fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    cr_assert_eq(bind(s.fd, (struct sockaddr *)&sa, sizeof sa), 0);
    cr_assert_eq(listen(s.fd, TOGETHER_N), 0);
    cr_assert_eq(getsockname(s.fd, (struct sockaddr *)&sa, &sl), 0);
    s.port = ntohs(sa.sin_port);
    cr_assert_eq(pthread_create(&s.thread, NULL, together_main, &s), 0);

    static test_answer_t g[TOGETHER_N];
    static char url[TOGETHER_N][64];
    for (int i = 0; i < TOGETHER_N; i++) {
        snprintf(url[i], sizeof url[i], "http://127.0.0.1:%u/r%d", (unsigned)s.port, i);
        async_http_request_t req = {.url = url[i]};
        cr_assert_eq(async_http_send(http, &req, test_answer_catch, &g[i]), 0);
    }
    cr_assert_eq(async_task_spawn(NULL, loop, together_hold, &s, NULL), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    for (int i = 0; i < TOGETHER_N; i++) {
        char want[16];
        snprintf(want, sizeof want, "r%d", i);
        cr_assert_eq(g[i].calls, 1, "%d", i);
        cr_assert_eq(g[i].resp->error, 0, "%d: %s", i, g[i].resp->errmsg);
        cr_assert_eq(g[i].resp->status, 200);
        cr_assert_str_eq(g[i].resp->body, want);
        async_http_response_free(g[i].resp);
    }
    cr_assert_gt(http->multi.n_drive_all, 0, "the answers were driven together");
    test_http_client_end(loop, http);
    pthread_join(s.thread, NULL);
    close(s.fd);
    pthread_mutex_destroy(&s.mu);
    pthread_cond_destroy(&s.cv);
}

/* --- blocking calls -------------------------------------------------------- */

Test(http, blocking_private_loop)
{
    async_http_t *http = test_http_client(NULL, NULL);
    cr_assert_not_null(async_http_loop(http));
    for (int i = 0; i < 10; i++) {
        async_http_response_t *r;
        cr_assert_eq(async_http_get(&r, http, test_httpd_url(srv, "/ok"), NULL), 0);
        cr_assert_str_eq(r->body, "ok");
        async_http_response_free(r);
    }
    /* Ten requests in a row share one kept-alive connection. */
    cr_assert_eq(test_httpd_connections(srv), 1);
    test_http_client_end(NULL, http);
}

static void *thread_main(void *arg)
{
    const char *url = arg;
    async_http_t *http;
    if (async_http_new(&http, NULL, NULL)) return (void *)1;
    intptr_t bad = 0;
    for (int i = 0; i < 5; i++) {
        async_http_response_t *r;
        if (async_http_get(&r, http, url, NULL) || strcmp(r->body, "ok")) bad++;
        async_http_response_free(r);
    }
    async_http_destroy(http);
    return (void *)bad;
}

Test(http, blocking_from_threads)
{
    char url[128];
    snprintf(url, sizeof url, "%s", test_httpd_url(srv, "/ok"));
    pthread_t t[4];
    for (int i = 0; i < 4; i++) cr_assert_eq(pthread_create(&t[i], NULL, thread_main, url), 0);
    for (int i = 0; i < 4; i++) {
        void *bad;
        pthread_join(t[i], &bad);
        cr_assert_null(bad);
    }
    cr_assert_eq(test_httpd_requests(srv), 20);
    cr_assert_eq(test_alloc_live(), 0);
}

Test(http, blocking_deadline)
{
    async_http_t *http = test_http_client(NULL, NULL);
    async_http_request_t req = {.url = test_httpd_url(srv, "/stall?ms=3000")};
    async_http_response_t *r = (void *)1;
    int64_t t0 = async_now();
    cr_assert_eq(async_http_fetch_dl(&r, http, &req, async_deadline_after(ASYNC_MSEC(100))),
                 ASYNC_ETIMEDOUT);
    cr_assert_null(r);
    cr_assert_geq(async_now() - t0, ASYNC_MSEC(95));
    cr_assert_lt(async_now() - t0, ASYNC_SEC(2));
    test_http_client_end(NULL, http);
}

Test(http, get_dl_deadline)
{
    async_http_t *http = test_http_client(NULL, NULL);
    async_http_response_t *r = (void *)1;
    int64_t t0 = async_now();
    cr_assert_eq(async_http_get_dl(&r, http, test_httpd_url(srv, "/stall?ms=3000"), NULL,
                                   async_deadline_after(ASYNC_MSEC(100))),
                 ASYNC_ETIMEDOUT);
    cr_assert_null(r);
    cr_assert_geq(async_now() - t0, ASYNC_MSEC(95));
    cr_assert_lt(async_now() - t0, ASYNC_SEC(2));
    /* A deadline in the future that is met gives the response. */
    cr_assert_eq(async_http_get_dl(&r, http, test_httpd_url(srv, "/ok"), NULL,
                                   async_deadline_after(ASYNC_SEC(10))),
                 0);
    cr_assert_str_eq(r->body, "ok");
    async_http_response_free(r);
    test_http_client_end(NULL, http);
}

/* A deadline that has passed when the call is made (0 included) is
 * ETIMEDOUT before any request starts; a bad request is still EINVAL. */
Test(http, passed_deadline_starts_nothing)
{
    async_http_t *http = test_http_client(NULL, NULL);
    async_http_response_t *r = (void *)1;
    cr_assert_eq(async_http_get_dl(&r, http, test_httpd_url(srv, "/ok"), NULL, 0),
                 ASYNC_ETIMEDOUT);
    cr_assert_null(r);
    async_http_request_t req = {.url = test_httpd_url(srv, "/ok")};
    cr_assert_eq(async_http_fetch_dl(&r, http, &req, async_now() - 1), ASYNC_ETIMEDOUT);
    async_http_request_t bad = {0};
    cr_assert_eq(async_http_fetch_dl(&r, http, &bad, 0), ASYNC_EINVAL);
    async_http_stats_t st;
    async_http_stats(http, &st);
    cr_assert_eq(st.requests, 0);
    cr_assert_eq(st.attempts, 0);
    test_http_client_end(NULL, http);
    cr_assert_eq(test_httpd_requests(srv), 0);
}

/* --- limits ---------------------------------------------------------------- */

Test(http, host_connection_limit)
{
    async_http_opts_t o = {.max_host_connections = 3};
    async_loop_t *loop;
    async_http_t *http = test_http_client(&loop, &o);
    test_answer_t g[12] = {0};
    async_http_request_t req = {.url = test_httpd_url(srv, "/stall?ms=30")};
    for (int i = 0; i < 12; i++) cr_assert_eq(async_http_send(http, &req, test_answer_catch, &g[i]), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    for (int i = 0; i < 12; i++) {
        cr_assert_eq(g[i].resp->error, 0, "%s", g[i].resp->errmsg);
        async_http_response_free(g[i].resp);
    }
    cr_assert_leq(test_httpd_max_open(srv), 3);
    cr_assert_leq(test_httpd_connections(srv), 3);
    test_http_client_end(loop, http);
}

Test(http, rate_limit_spacing)
{
    enum { N = 6 };
    async_http_opts_t o = {.rate_limit = 20}; /* one start every 50 ms */
    async_loop_t *loop;
    async_http_t *http = test_http_client(&loop, &o);
    test_answer_t g[N] = {0};
    async_http_request_t req = {.url = test_httpd_url(srv, "/ok")};
    int64_t t0 = async_now();
    /* When each send was entered and left: a request's queued time counts
     * from inside its send, and a slow build (ThreadSanitizer) spends
     * milliseconds there. */
    int64_t in[N], out[N];
    for (int i = 0; i < N; i++) {
        in[i] = async_now();
        cr_assert_eq(async_http_send(http, &req, test_answer_catch, &g[i]), 0);
        out[i] = async_now();
    }
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    int64_t took = async_now() - t0;
    /* Lower bound only: (N - 1) gaps of 50 ms, less a little for clocks. */
    cr_assert_geq(took, ASYNC_MSEC(50) * (N - 1) - ASYNC_MSEC(5), "took %lld ns", (long long)took);
    double last = 0;
    for (int i = 0; i < N; i++) {
        cr_assert_eq(g[i].resp->error, 0);
        /* Starts 50 ms apart (5 ms for clocks): request i started its
         * queued time after a moment inside its send, at most
         * out[i] - in[i - 1] after the one before's. */
        double calls = (double)(out[i] - (i ? in[i - 1] : in[0])) / 1e9;
        if (i) cr_assert_geq(g[i].resp->timings.queued, last + 0.045 - calls,
                             "request %d started at most %.3f s after the one before", i,
                             g[i].resp->timings.queued - last + calls);
        last = g[i].resp->timings.queued;
        async_http_response_free(g[i].resp);
    }
    test_http_client_end(loop, http);
}

/* --- freeing with requests in flight --------------------------------------- */

Test(http, free_closes_in_flight)
{
    async_http_opts_t o = {.rate_limit = 1};
    async_loop_t *loop;
    async_http_t *http = test_http_client(&loop, &o);
    test_answer_t a = {0}, b = {0};
    async_http_request_t req = {.url = test_httpd_url(srv, "/stall?ms=2000")};
    cr_assert_eq(async_http_send(http, &req, test_answer_catch, &a), 0); /* running */
    cr_assert_eq(async_http_send(http, &req, test_answer_catch, &b), 0); /* held by the rate limit */
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_NOWAIT), 1);
    cr_assert_eq(async_http_destroy(http), 0);
    cr_assert_eq(a.calls, 1);
    cr_assert_eq(b.calls, 1);
    cr_assert_eq(a.resp->error, ASYNC_ECLOSED);
    cr_assert_eq(b.resp->error, ASYNC_ECLOSED);
    cr_assert(strstr(a.resp->errmsg, "freed"));
    async_http_response_free(a.resp);
    async_http_response_free(b.resp);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(async_loop_destroy(loop), 0);
    cr_assert_eq(test_alloc_live(), 0);
}

typedef struct freer {
    async_http_t *http;
    int rc;
} freer_t;

static void free_in_callback(async_http_response_t *resp, void *arg)
{
    freer_t *f = arg;
    f->rc = async_http_destroy(f->http);
    async_http_response_free(resp);
}

Test(http, free_inside_callback_is_deadlk)
{
    async_loop_t *loop;
    async_http_t *http = test_http_client(&loop, NULL);
    freer_t f = {http, 0};
    async_http_request_t req = {.url = test_httpd_url(srv, "/ok")};
    cr_assert_eq(async_http_send(http, &req, free_in_callback, &f), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(f.rc, ASYNC_EDEADLK);
    test_http_client_end(loop, http);
}

/* A task awaiting a response when another task frees the client resumes
 * with ECLOSED and the response that says so. */
typedef struct closer {
    async_http_t *http;
    const char *url;
    int rc, fetch_rc;
    bool closed_resp;
} closer_t;

static int fetch_until_closed_task(void *arg, void **result)
{
    (void)result;
    closer_t *c = arg;
    async_http_response_t *r = NULL;
    c->fetch_rc = async_http_get(&r, c->http, c->url, NULL);
    c->closed_resp = r && r->error == ASYNC_ECLOSED && strstr(r->errmsg, "freed");
    async_http_response_free(r);
    return 0;
}

static int free_later_task(void *arg, void **result)
{
    (void)result;
    closer_t *c = arg;
    /* Spawned second, so it runs once the fetching task has suspended with
     * its request in the client. */
    c->rc = async_http_destroy(c->http);
    return 0;
}

Test(http, free_wakes_awaiting_task_with_closed)
{
    async_loop_t *loop;
    async_http_t *http = test_http_client(&loop, NULL);
    closer_t k = {.http = http, .url = test_httpd_url(srv, "/stall?ms=3000"), .rc = 1};
    cr_assert_eq(async_task_spawn(NULL, loop, fetch_until_closed_task, &k, NULL), 0);
    cr_assert_eq(async_task_spawn(NULL, loop, free_later_task, &k, NULL), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(k.rc, 0);
    cr_assert_eq(k.fetch_rc, ASYNC_ECLOSED);
    cr_assert(k.closed_resp, "the task got the response that says why");
    cr_assert_eq(async_loop_destroy(loop), 0);
    cr_assert_eq(test_alloc_live(), 0);
}

/* Inside the private loop's own run a blocking fetch would wait for
 * itself; so would freeing the client. */
typedef struct nested {
    async_http_t *http;
    const char *url;
    int fetch_rc, free_rc, calls;
    async_http_response_t *inner;
} nested_t;

static void nested_cb(async_http_response_t *resp, void *arg)
{
    nested_t *n = arg;
    n->calls++;
    n->inner = (void *)1;
    async_http_request_t req = {.url = n->url};
    n->fetch_rc = async_http_fetch(&n->inner, n->http, &req);
    n->free_rc = async_http_destroy(n->http);
    async_http_response_free(resp);
}

Test(http, blocking_fetch_inside_own_loop_is_deadlk)
{
    async_http_t *http = test_http_client(NULL, NULL);
    nested_t n = {.http = http, .url = test_httpd_url(srv, "/ok")};
    async_http_request_t req = {.url = n.url};
    cr_assert_eq(async_http_send(http, &req, nested_cb, &n), 0);
    /* The callback runs inside this blocking fetch's run of the loop, or,
     * if the fetch's own request ended first, in the run below: both are
     * runs of the private loop. */
    async_http_response_t *r;
    cr_assert_eq(async_http_fetch(&r, http, &req), 0);
    async_http_response_free(r);
    if (!n.calls) cr_assert_eq(async_loop_run(async_http_loop(http), ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(n.calls, 1);
    cr_assert_eq(n.fetch_rc, ASYNC_EDEADLK);
    cr_assert_null(n.inner);
    cr_assert_eq(n.free_rc, ASYNC_EDEADLK);
    /* Run by hand: the callback runs inside async_loop_run, not a fetch. */
    n.calls = 0;
    cr_assert_eq(async_http_send(http, &req, nested_cb, &n), 0);
    cr_assert_eq(async_loop_run(async_http_loop(http), ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(n.calls, 1);
    cr_assert_eq(n.fetch_rc, ASYNC_EDEADLK);
    cr_assert_null(n.inner);
    cr_assert_eq(n.free_rc, ASYNC_EDEADLK);
    test_http_client_end(NULL, http);
}

/* A blocking fetch while another loop runs on this thread would stall it. */
static void other_loop_cb(async_http_response_t *resp, void *arg)
{
    nested_t *n = arg;
    n->calls++;
    n->inner = (void *)1;
    async_http_request_t req = {.url = n->url};
    n->fetch_rc = async_http_fetch(&n->inner, n->http, &req);
    async_http_response_free(resp);
}

Test(http, blocking_fetch_under_another_loop_is_wrongloop)
{
    async_loop_t *loop;
    async_http_t *bound = test_http_client(&loop, NULL);
    async_http_t *priv = test_http_client(NULL, NULL);
    nested_t n = {.http = priv, .url = test_httpd_url(srv, "/ok")};
    async_http_request_t req = {.url = n.url};
    cr_assert_eq(async_http_send(bound, &req, other_loop_cb, &n), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(n.calls, 1);
    cr_assert_eq(n.fetch_rc, ASYNC_EWRONGLOOP);
    cr_assert_null(n.inner);
    async_http_stats_t st;
    async_http_stats(priv, &st);
    cr_assert_eq(st.requests, 0);
    cr_assert_eq(async_http_destroy(priv), 0);
    test_http_client_end(loop, bound);
}

/* A client bound to a loop is that loop's thread's. */
typedef struct offthread {
    async_http_t *http;
    const char *url;
    int send_rc, fetch_rc, get_rc, free_rc;
    async_http_response_t *r;
} offthread_t;

static void never_cb(async_http_response_t *resp, void *arg)
{
    (void)arg;
    async_http_response_free(resp);
    cr_assert_fail("a call refused off-thread ran its callback");
}

static void *offthread_main(void *arg)
{
    offthread_t *o = arg;
    async_http_request_t req = {.url = o->url};
    o->send_rc = async_http_send(o->http, &req, never_cb, NULL);
    o->r = (void *)1;
    o->fetch_rc = async_http_fetch(&o->r, o->http, &req);
    o->get_rc = async_http_get(&o->r, o->http, o->url, NULL);
    o->free_rc = async_http_destroy(o->http);
    return NULL;
}

Test(http, bound_client_from_another_thread_is_wrongloop)
{
    async_loop_t *loop;
    async_http_t *http = test_http_client(&loop, NULL);
    offthread_t o = {.http = http, .url = test_httpd_url(srv, "/ok")};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, offthread_main, &o), 0);
    pthread_join(t, NULL);
    cr_assert_eq(o.send_rc, ASYNC_EWRONGLOOP);
    cr_assert_eq(o.fetch_rc, ASYNC_EWRONGLOOP);
    cr_assert_eq(o.get_rc, ASYNC_EWRONGLOOP);
    cr_assert_null(o.r);
    cr_assert_eq(o.free_rc, ASYNC_EWRONGLOOP);
    async_http_stats_t st;
    async_http_stats(http, &st);
    cr_assert_eq(st.requests, 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    test_http_client_end(loop, http);
}

/* --- the curl-on-libev adapter (lib/http/multi.c) on its own --------------- */

typedef struct raw {
    int calls;
    CURLcode rc;
    bool detached;
} raw_t;

static void raw_done(http_transfer_t *t, CURLcode rc, void *ud)
{
    raw_t *r = ud;
    r->calls++;
    r->rc = rc;
    r->detached = t->shard == NULL;
}

static size_t raw_sink(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n;
}

/* multi.c knows nothing of requests: it runs a bare easy handle and reports
 * the end to the completion function it was given. */
Test(http, multi_adapter_reports_through_its_callback)
{
    async_loop_t *loop;
    cr_assert_eq(async_loop_new(&loop), 0);
    http_multi_t m;
    cr_assert_eq(async__http_multi_init(&m, async_loop_ev(loop), &(async_http_opts_t){0}), 0);
    raw_t got[2] = {{0}};
    http_transfer_t t[2];
    for (int i = 0; i < 2; i++) {
        t[i] = (http_transfer_t){.easy = curl_easy_init(), .done = raw_done, .ud = &got[i]};
        curl_easy_setopt(t[i].easy, CURLOPT_URL, test_httpd_url(srv, i ? "/stall?ms=5000" : "/ok"));
        curl_easy_setopt(t[i].easy, CURLOPT_WRITEFUNCTION, raw_sink);
        http_shard_t *sh = async__http_shard_pick(&m, false);
        cr_assert_not_null(sh);
        cr_assert_eq(async__http_multi_add(sh, &t[i]), CURLM_OK);
        cr_assert_eq(t[i].shard, sh);
    }
    /* Run until the first ends; the second is taken back out unreported. */
    while (!got[0].calls) cr_assert_geq(async_loop_run(loop, ASYNC_RUN_ONCE), 0);
    cr_assert_eq(got[0].calls, 1);
    cr_assert_eq(got[0].rc, CURLE_OK);
    cr_assert(got[0].detached, "the handle left the multi handle before the report");
    long status = 0;
    curl_easy_getinfo(t[0].easy, CURLINFO_RESPONSE_CODE, &status);
    cr_assert_eq(status, 200);
    async__http_multi_remove(&t[1]);
    cr_assert_null(t[1].shard);
    cr_assert_eq(got[1].calls, 0);
    for (int i = 0; i < 2; i++) curl_easy_cleanup(t[i].easy);
    async__http_multi_cleanup(&m);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0, "no watcher is left behind");
    cr_assert_eq(async_loop_destroy(loop), 0);
    cr_assert_eq(test_alloc_live(), 0);
}

/* --- SIGPIPE ---------------------------------------------------------------- */

/* Each test runs in a process of its own, so "the first async_http_new" is
 * the first of the test. */
static void (*pipe_disposition(void))(int)
{
    struct sigaction sa;
    cr_assert_eq(sigaction(SIGPIPE, NULL, &sa), 0);
    return sa.sa_handler;
}

Test(http, first_client_ignores_sigpipe)
{
    signal(SIGPIPE, SIG_DFL);
    async_http_t *http = test_http_client(NULL, NULL);
    cr_assert_eq(pipe_disposition(), SIG_IGN);
    test_http_client_end(NULL, http);
}

Test(http, keep_sigpipe_leaves_it_alone)
{
    signal(SIGPIPE, SIG_DFL);
    async_http_t *http = test_http_client(NULL, &(async_http_opts_t){.keep_sigpipe = true});
    cr_assert_eq(pipe_disposition(), SIG_DFL);
    /* Requests, plain http, with SIGPIPE fatal. */
    async_http_response_t *r;
    cr_assert_eq(async_http_get(&r, http, test_httpd_url(srv, "/ok"), NULL), 0);
    async_http_response_free(r);
    cr_assert_eq(pipe_disposition(), SIG_DFL);
    /* A later client without the flag still ignores it. */
    async_http_t *other = test_http_client(NULL, NULL);
    cr_assert_eq(pipe_disposition(), SIG_IGN);
    cr_assert_eq(async_http_destroy(other), 0);
    test_http_client_end(NULL, http);
}

static void pipe_handler(int sig) { (void)sig; }

Test(http, program_sigpipe_handler_is_kept)
{
    signal(SIGPIPE, pipe_handler);
    async_http_t *http = test_http_client(NULL, NULL);
    cr_assert_eq(pipe_disposition(), pipe_handler);
    test_http_client_end(NULL, http);
}

/* --- versioned option structs ---------------------------------------------- */

Test(http, opts_size)
{
    async_loop_t *loop;
    async_http_t *http;
    cr_assert_eq(async_loop_new(&loop), 0);
    /* 0: a designated initialiser reads the 0.2 layout. */
    cr_assert_eq(async_http_new(&http, loop, &(async_http_opts_t){.max_retries = 1}), 0);
    cr_assert_eq(async_http_destroy(http), 0);
    async_http_opts_t o;
    async_http_opts_init(&o);
    cr_assert_eq(o.size, sizeof o);
    cr_assert_eq(o.max_connections, 0);
    cr_assert_null(o.user_agent);
    o.max_host_connections = 2;
    cr_assert_eq(async_http_new(&http, loop, &o), 0);
    cr_assert_eq(async_http_destroy(http), 0);
    /* Larger than ours: a program built against a later version. */
    o.size = sizeof o + 8;
    cr_assert_eq(async_http_new(&http, loop, &o), 0);
    cr_assert_eq(async_http_destroy(http), 0);
    o.size = 1;
    http = (void *)1;
    cr_assert_eq(async_http_new(&http, loop, &o), ASYNC_EINVAL);
    cr_assert_null(http);
    o.size = sizeof o - 1;
    cr_assert_eq(async_http_new(&http, loop, &o), ASYNC_EINVAL);
    cr_assert_eq(async_loop_destroy(loop), 0);
    cr_assert_eq(test_alloc_live(), 0);
}

Test(http, request_size)
{
    async_loop_t *loop;
    async_http_t *http = test_http_client(&loop, NULL);
    async_http_request_t req;
    async_http_request_init(&req);
    cr_assert_eq(req.size, sizeof req);
    cr_assert_null(req.url);
    cr_assert_null(req.method);
    req.url = test_httpd_url(srv, "/ok");
    test_answer_t a = {0}, b = {0}, c = {0};
    cr_assert_eq(async_http_send(http, &req, test_answer_catch, &a), 0);
    async_http_request_t zero = {.url = req.url}; /* size 0 */
    cr_assert_eq(async_http_send(http, &zero, test_answer_catch, &b), 0);
    req.size = 1;
    cr_assert_eq(async_http_send(http, &req, test_answer_catch, &c), ASYNC_EINVAL);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(a.calls, 1);
    cr_assert_eq(a.resp->error, 0, "%s", a.resp->errmsg);
    cr_assert_eq(b.calls, 1);
    cr_assert_eq(b.resp->error, 0, "%s", b.resp->errmsg);
    cr_assert_eq(c.calls, 0);
    async_http_response_free(a.resp);
    async_http_response_free(b.resp);
    cr_assert_eq(async_http_destroy(http), 0);
    /* The blocking form checks it the same way. */
    http = test_http_client(NULL, NULL);
    async_http_response_t *r = (void *)1;
    cr_assert_eq(async_http_fetch(&r, http, &req), ASYNC_EINVAL);
    cr_assert_null(r);
    req.size = sizeof req;
    cr_assert_eq(async_http_fetch(&r, http, &req), 0);
    cr_assert_str_eq(r->body, "ok");
    async_http_response_free(r);
    test_http_client_end(loop, http);
}

Test(http, bad_arguments)
{
    async_loop_t *loop;
    async_http_t *http;
    cr_assert_eq(async_loop_new(&loop), 0);
    async_http_opts_t bad = {.rate_limit = -1};
    http = (void *)1;
    cr_assert_eq(async_http_new(&http, loop, &bad), ASYNC_EINVAL);
    cr_assert_null(http);
    cr_assert_eq(async_http_new(&http, loop, NULL), 0);
    test_answer_t g = {0};
    async_http_request_t none = {0};
    cr_assert_eq(async_http_send(http, &none, test_answer_catch, &g), ASYNC_EINVAL);
    cr_assert_eq(async_http_send(http, NULL, test_answer_catch, &g), ASYNC_EINVAL);
    async_http_request_t m = {.url = test_httpd_url(srv, "/ok"), .method = "GE T"};
    cr_assert_eq(async_http_send(http, &m, test_answer_catch, &g), ASYNC_EINVAL);
    const char *odd[] = {"key", NULL};
    async_http_request_t q = {.url = test_httpd_url(srv, "/ok"), .query = odd};
    cr_assert_eq(async_http_send(http, &q, test_answer_catch, &g), ASYNC_EINVAL);
    const char *hdr[] = {"no colon", NULL};
    async_http_request_t h = {.url = test_httpd_url(srv, "/ok"), .headers = hdr};
    cr_assert_eq(async_http_send(http, &h, test_answer_catch, &g), ASYNC_EINVAL);
    async_http_request_t ok = {.url = test_httpd_url(srv, "/ok")};
    cr_assert_eq(async_http_send(http, &ok, NULL, &g), ASYNC_EINVAL);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(g.calls, 0, "a call that fails never runs its callback");
    json_t *j;
    cr_assert_eq(async_http_response_json(&j, NULL), ASYNC_EINVAL);
    test_http_client_end(loop, http);
}

Test(http, out_of_memory_fails_cleanly)
{
    async_loop_t *loop;
    cr_assert_eq(async_loop_new(&loop), 0);
    /* Fail each allocation in turn while making a client and a request;
     * every failure must be ENOMEM and leave nothing behind. */
    for (long n = 0; n < 40; n++) {
        long before = test_alloc_live();
        test_alloc_fail_after(n);
        async_http_t *http = NULL;
        int rc = async_http_new(&http, loop, NULL);
        if (rc == 0) {
            test_answer_t g = {0};
            async_http_request_t req = {.url = test_httpd_url(srv, "/ok")};
            rc = async_http_send(http, &req, test_answer_catch, &g);
            test_alloc_fail_after(-1);
            if (rc == 0) {
                async_loop_run(loop, ASYNC_RUN_DEFAULT);
                cr_assert_eq(g.calls, 1);
                async_http_response_free(g.resp);
            } else {
                cr_assert_eq(rc, ASYNC_ENOMEM);
            }
            async_http_destroy(http);
        } else {
            cr_assert_eq(rc, ASYNC_ENOMEM);
        }
        test_alloc_fail_after(-1);
        cr_assert_eq(test_alloc_live(), before, "leak after failing allocation %ld", n);
    }
    async_loop_destroy(loop);
    cr_assert_eq(test_alloc_live(), 0);
}

Test(http, out_of_memory_during_transfer)
{
    async_loop_t *loop;
    cr_assert_eq(async_loop_new(&loop), 0);
    /* Requests already accepted meet failing allocations on the way (socket
     * contexts, buffers, the response): each still ends exactly once, with
     * a response, and nothing leaks. */
    for (long n = 0; n < 30; n++) {
        long before = test_alloc_live();
        async_http_t *http;
        cr_assert_eq(async_http_new(&http, loop, NULL), 0);
        test_answer_t g = {0};
        async_http_request_t req = {.url = test_httpd_url(srv, "/json")};
        cr_assert_eq(async_http_send(http, &req, test_answer_catch, &g), 0);
        test_alloc_fail_after(n);
        async_loop_run(loop, ASYNC_RUN_DEFAULT);
        test_alloc_fail_after(-1);
        cr_assert_eq(g.calls, 1, "allocation %ld", n);
        cr_assert_not_null(g.resp);
        if (g.resp->error == 0) cr_assert_str_eq(g.resp->body, "{\"ok\": true, \"n\": 42}");
        else cr_assert(g.resp->errmsg[0], "allocation %ld: a failure says why", n);
        /* By the last round every allocation point was passed. */
        if (n == 29) cr_assert_eq(g.resp->error, 0, "%s", g.resp->errmsg);
        async_http_response_free(g.resp);
        cr_assert_eq(async_http_destroy(http), 0);
        cr_assert_eq(test_alloc_live(), before, "leak after failing allocation %ld", n);
    }
    async_loop_destroy(loop);
    cr_assert_eq(test_alloc_live(), 0);
}

/* One GET of /ok on a blocking client made now, without retries; returns
 * the response's error, its message in msg. */
static int get_ok_now(char *msg, size_t len)
{
    async_http_t *http = test_http_client(NULL, NULL);
    async_http_request_t req = {.url = test_httpd_url(srv, "/ok"), .max_retries = -1};
    async_http_response_t *r;
    int rc = async_http_fetch(&r, http, &req);
    cr_assert_not_null(r);
    snprintf(msg, len, "%s", r->errmsg);
    cr_assert_eq(rc, r->error);
    async_http_response_free(r);
    cr_assert_eq(async_http_destroy(http), 0);
    return rc;
}

Test(http, proxy_variables_set_when_the_client_is_made_are_honoured)
{
    /* Without a proxy variable the client tells curl "no proxy" once
     * (response.c); with one, curl reads the environment as ever. */
    unset_proxy_vars();
    char msg[256];
    cr_assert_eq(get_ok_now(msg, sizeof msg), 0, "%s", msg);
    /* A proxy where nothing listens: the request goes to it and fails. */
    setenv("http_proxy", "http://127.0.0.1:1", 1);
    cr_assert_eq(get_ok_now(msg, sizeof msg), ASYNC_ECURL);
    cr_assert(strstr(msg, "curl error 7"), "%s", msg);
    unsetenv("http_proxy");
    setenv("all_proxy", "http://127.0.0.1:1", 1);
    cr_assert_eq(get_ok_now(msg, sizeof msg), ASYNC_ECURL);
    cr_assert(strstr(msg, "curl error 7"), "%s", msg);
    /* no_proxy keeps the test server's address from the proxy. */
    setenv("no_proxy", "127.0.0.1", 1);
    cr_assert_eq(get_ok_now(msg, sizeof msg), 0, "%s", msg);
    unsetenv("all_proxy");
    unsetenv("no_proxy");
    cr_assert_eq(test_alloc_live(), 0);
}

Test(http, steady_plain_load_runs_in_small_shards_and_reuses_their_connections)
{
    /* 64 at once: four shards of PLAIN_SHARD_CAP (short reuse walks in
     * curl); a second wave of 64 finds each shard's idle connections. */
    enum { N = PLAIN_SHARDS * PLAIN_SHARD_CAP };
    async_loop_t *loop;
    async_http_t *http = test_http_client(&loop, NULL);
    static test_answer_t g[N];
    async_http_request_t req = {.url = test_httpd_url(srv, "/stall?ms=100")};
    for (int wave = 0; wave < 2; wave++) {
        memset(g, 0, sizeof g);
        for (int i = 0; i < N; i++) cr_assert_eq(async_http_send(http, &req, test_answer_catch, &g[i]), 0);
        cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
        cr_assert_eq(http->multi.n_shards, PLAIN_SHARDS);
        for (size_t s = 0; s < http->multi.n_shards; s++)
            cr_assert_eq(http->multi.shards[s]->n_sockets, PLAIN_SHARD_CAP);
        for (int i = 0; i < N; i++) {
            cr_assert_eq(g[i].calls, 1);
            cr_assert_eq(g[i].resp->error, 0, "%d: %s", i, g[i].resp->errmsg);
            async_http_response_free(g[i].resp);
        }
    }
    cr_assert_eq(test_httpd_connections(srv), N, "the second wave reused the first's connections");
    test_http_client_end(loop, http);
}
