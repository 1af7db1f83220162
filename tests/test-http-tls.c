/* The HTTP client over TLS against Debian's nginx on loopback with a
 * throwaway self-signed certificate: HTTP/2 is negotiated and concurrent
 * requests share one multiplexed connection; HTTP/1.1 when HTTP/2 is turned
 * off; an untrusted certificate is a precise error; a CA bundle is parsed
 * once for all connections, again only when the file changes, and trusts
 * only its own certificates.  Skipped when nginx or
 * openssl is missing. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <async.h>
#include <async/http.h>
#include "http/ca_store.h"
#include "support/alloc.h"
#include "support/answer.h"
#include "support/http_client.h"
#include "support/nginx.h"
#include "support/port.h"

static test_nginx_t ngx;
static char url[128];

static void setup(void)
{
    test_alloc_install();
    test_nginx_prepare(&ngx, "test-http-tls");
    test_nginx_serve_file(&ngx, 256, "small.txt", "hello\n", url, sizeof url);
}

static void teardown(void)
{
    test_nginx_stop(&ngx);
    test_alloc_uninstall();
}

TestSuite(http_tls, .init = setup, .fini = teardown, .timeout = 20);

/* One GET of the server's file by http, on its loop; returns the response
 * (the caller frees it). */
static async_http_response_t *get_one(async_loop_t *loop, async_http_t *http)
{
    test_answer_t g = {0};
    async_http_request_t req = {.url = url};
    cr_assert_eq(async_http_send(http, &req, test_answer_catch, &g), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(g.calls, 1, "the request ended %d times", g.calls);
    cr_assert_not_null(g.resp);
    return g.resp;
}

Test(http_tls, http2_multiplexes_one_connection)
{
    enum { N = 20 };
    async_http_opts_t o = {.ca_file = ngx.cert};
    async_loop_t *loop;
    async_http_t *http = test_http_client(&loop, &o);
    test_answer_t g[N] = {0};
    async_http_request_t req = {.url = url};
    for (int i = 0; i < N; i++) cr_assert_eq(async_http_send(http, &req, test_answer_catch, &g[i]), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    /* The one connection's TLS handshake shows in the timings of the request
     * that made it, after its TCP connect and before its end; the requests
     * multiplexed onto it made no handshake of their own. */
    int handshakes = 0;
    for (int i = 0; i < N; i++) {
        cr_assert_eq(g[i].resp->error, 0, "%s", g[i].resp->errmsg);
        cr_assert_str_eq(g[i].resp->http_version, "HTTP/2");
        cr_assert_str_eq(g[i].resp->body, "hello\n");
        const async_http_timings_t *t = &g[i].resp->timings;
        if (t->appconnect > 0) {
            handshakes++;
            cr_assert_leq(t->connect, t->appconnect);
            cr_assert_leq(t->appconnect, t->total);
        }
        async_http_response_free(g[i].resp);
    }
    cr_assert_eq(handshakes, 1, "%d requests report a TLS handshake on one connection",
                 handshakes);
    async_http_stats_t st;
    async_http_stats(http, &st);
    cr_assert_eq(st.connections, 1, "%zu connections for %d requests", st.connections, N);
    test_http_client_end(loop, http);
}

Test(http_tls, http1_when_http2_is_off)
{
    async_http_opts_t o = {.ca_file = ngx.cert, .no_http2 = true};
    async_loop_t *loop;
    async_http_t *http = test_http_client(&loop, &o);
    async_http_response_t *r = get_one(loop, http);
    cr_assert_eq(r->error, 0, "%s", r->errmsg);
    cr_assert_str_eq(r->http_version, "HTTP/1.1");
    async_http_response_free(r);
    test_http_client_end(loop, http);
}

Test(http_tls, untrusted_certificate)
{
    async_loop_t *loop;
    async_http_t *http = test_http_client(&loop, NULL);
    async_http_response_t *r = get_one(loop, http);
    cr_assert_eq(r->error, ASYNC_ECURL);
    cr_assert(strstr(r->errmsg, "certificate"), "%s", r->errmsg);
    cr_assert(strstr(r->errmsg, "curl error 60"), "%s", r->errmsg);
    async_http_response_free(r);
    test_http_client_end(loop, http);
}

/* Writes path: Debian's CA bundle, and the test's certificate if with_ours. */
static void write_bundle(const char *path, bool with_ours)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "cat /etc/ssl/certs/ca-certificates.crt %s > %s.new && mv %s.new %s",
             with_ours ? ngx.cert : "", path, path, path);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
}

/* n requests at once over HTTP/1.1 (a connection each, mostly) by a new
 * client trusting ca_file; returns how many failed, each with curl_err.
 * Each request must end once, and the client and its loop must free
 * cleanly, leaving no allocation behind. */
static int fetch_all(const char *ca_file, int n, int curl_err, size_t *connections)
{
    async_http_opts_t o = {.ca_file = ca_file, .no_http2 = true};
    async_loop_t *loop;
    async_http_t *http = test_http_client(&loop, &o);
    test_answer_t g[32] = {0};
    cr_assert_leq(n, 32);
    async_http_request_t req = {.url = url};
    for (int i = 0; i < n; i++) cr_assert_eq(async_http_send(http, &req, test_answer_catch, &g[i]), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    int failed = 0;
    char want[32];
    snprintf(want, sizeof want, "curl error %d", curl_err);
    for (int i = 0; i < n; i++) {
        cr_assert_eq(g[i].calls, 1, "request %d ended %d times", i, g[i].calls);
        cr_assert_not_null(g[i].resp);
        if (g[i].resp->error) {
            failed++;
            cr_expect(strstr(g[i].resp->errmsg, want), "%s (wanted %s)", g[i].resp->errmsg, want);
        }
        async_http_response_free(g[i].resp);
    }
    async_http_stats_t st;
    async_http_stats(http, &st);
    if (connections) *connections = st.connections;
    test_http_client_end(loop, http);
    return failed;
}

Test(http_tls, a_ca_bundle_is_parsed_once_and_trusts_only_its_own)
{
    if (access("/etc/ssl/certs/ca-certificates.crt", R_OK))
        cr_skip_test("no /etc/ssl/certs/ca-certificates.crt (package ca-certificates)");
    char bundle[160];
    snprintf(bundle, sizeof bundle, "%s/bundle.pem", ngx.dir);
    write_bundle(bundle, true);
    unsigned long p0 = async__http_ca_parses();
    size_t conns = 0;
    cr_expect_eq(fetch_all(bundle, 24, 0, &conns), 0, "the bundle with our certificate");
    cr_expect_gt(conns, 1, "%zu connections", conns);
    cr_expect_eq(async__http_ca_parses() - p0, 1, "one parse for %zu connections", conns);
    /* Another client, the same file: parsed already. */
    cr_expect_eq(fetch_all(bundle, 4, 0, NULL), 0);
    cr_expect_eq(async__http_ca_parses() - p0, 1);
    /* Debian's bundle alone does not trust the throwaway certificate, though
     * a store that does is cached beside it. */
    cr_expect_eq(fetch_all("/etc/ssl/certs/ca-certificates.crt", 4, 60, NULL), 4);
    cr_expect_eq(async__http_ca_parses() - p0, 2);
    /* The file replaced without our certificate: parsed again, refused. */
    write_bundle(bundle, false);
    cr_expect_eq(fetch_all(bundle, 4, 60, NULL), 4, "the changed bundle is read again");
    cr_expect_eq(async__http_ca_parses() - p0, 3);
    write_bundle(bundle, true);
    cr_expect_eq(fetch_all(bundle, 4, 0, NULL), 0);
    /* A bundle that is not there: curl's own error for a bad CA file. */
    char missing[160];
    snprintf(missing, sizeof missing, "%s/missing.pem", ngx.dir);
    cr_expect_eq(fetch_all(missing, 2, 77, NULL), 2);
    cr_assert_eq(test_alloc_live(), 0);
}

/* One request trusting ca_file; returns the response's error message.  The
 * client and its loop must free cleanly, leaving no allocation behind. */
static void fetch_one(const char *ca_file, char *msg, size_t cap)
{
    async_http_opts_t o = {.ca_file = ca_file, .no_http2 = true};
    async_loop_t *loop;
    async_http_t *http = test_http_client(&loop, &o);
    async_http_response_t *r = get_one(loop, http);
    snprintf(msg, cap, "%s", r->error ? r->errmsg : "");
    async_http_response_free(r);
    test_http_client_end(loop, http);
}

Test(http_tls, a_bad_ca_file_says_which_and_why)
{
    char path[160], msg[256], want[256];
    snprintf(path, sizeof path, "%s/missing.pem", ngx.dir);
    fetch_one(path, msg, sizeof msg);
    snprintf(want, sizeof want, "CA file %s: No such file or directory (curl error 77)", path);
    cr_expect_str_eq(msg, want);
    snprintf(path, sizeof path, "%s/garbage.pem", ngx.dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n", f);
    fclose(f);
    fetch_one(path, msg, sizeof msg);
    snprintf(want, sizeof want, "CA file %s: ", path);
    cr_expect(!strncmp(msg, want, strlen(want)) && strstr(msg, "(curl error 77)"), "%s", msg);
    cr_assert_eq(test_alloc_live(), 0);
}

Test(http_tls, many_bundle_files_keep_sixteen_parsed_stores)
{
    /* Seventeen files of one certificate each, then the first again: the
     * least recently used store went, so it is parsed anew. */
    char path[17][160];
    for (int i = 0; i < 17; i++) {
        snprintf(path[i], sizeof path[i], "%s/b%d.pem", ngx.dir, i);
        char cmd[512];
        snprintf(cmd, sizeof cmd, "cp %.200s %.200s", ngx.cert, path[i]);
        cr_assert_eq(system(cmd), 0);
    }
    unsigned long p0 = async__http_ca_parses();
    char msg[256];
    for (int i = 0; i < 17; i++) {
        fetch_one(path[i], msg, sizeof msg);
        cr_assert_str_eq(msg, "", "bundle %d: %s", i, msg);
    }
    cr_expect_eq(async__http_ca_parses() - p0, 17);
    fetch_one(path[16], msg, sizeof msg);
    cr_expect_eq(async__http_ca_parses() - p0, 17, "the newest is still kept");
    fetch_one(path[0], msg, sizeof msg);
    cr_expect_str_eq(msg, "");
    cr_expect_eq(async__http_ca_parses() - p0, 18, "the oldest was dropped and parsed again");
    cr_assert_eq(test_alloc_live(), 0);
}

Test(http_tls, behind_a_tls_proxy_curl_loads_ca_file_itself)
{
    /* An https:// proxy in the environment (bypassed here for 127.0.0.1):
     * the shared store stays out of it, and ca_file still decides. */
    setenv("https_proxy", "https://127.0.0.1:9", 1);
    setenv("no_proxy", "127.0.0.1", 1);
    unsigned long p0 = async__http_ca_parses();
    char msg[256];
    fetch_one(ngx.cert, msg, sizeof msg);
    cr_expect_str_eq(msg, "");
    fetch_one("/etc/ssl/certs/ca-certificates.crt", msg, sizeof msg);
    cr_expect(strstr(msg, "curl error 60"), "%s", msg);
    cr_expect_eq(async__http_ca_parses(), p0, "no shared store behind a TLS proxy");
    cr_assert_eq(test_alloc_live(), 0);
}
