/* The HTTP client over TLS against Debian's nginx on loopback with a
 * throwaway self-signed certificate: HTTP/2 is negotiated and concurrent
 * requests share one multiplexed connection; HTTP/1.1 when HTTP/2 is turned
 * off; an untrusted certificate is a precise error.  Skipped when nginx or
 * openssl is missing. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <async.h>
#include <async/http.h>
#include "support/alloc.h"
#include "support/nginx.h"
#include "support/port.h"

static test_nginx_t ngx;
static char url[128];

static void setup(void)
{
    test_alloc_install();
    test_nginx_prepare(&ngx, "test-http-tls");
    char www[128];
    snprintf(www, sizeof www, "%s/www", ngx.dir);
    cr_assert_eq(mkdir(www, 0755), 0);
    char small[160];
    snprintf(small, sizeof small, "%s/small.txt", www);
    FILE *f = fopen(small, "w");
    cr_assert_not_null(f);
    fputs("hello\n", f);
    fclose(f);
    unsigned port = test_free_port();
    char conf[1024];
    snprintf(conf, sizeof conf,
             "events { worker_connections 256; }\n"
             "http { access_log off;\n"
             "  server { listen 127.0.0.1:%u ssl http2; root %s;\n"
             "    ssl_certificate %s/cert.pem; ssl_certificate_key %s/key.pem; } }\n",
             port, www, ngx.dir, ngx.dir);
    test_nginx_start(&ngx, conf, &port, 1);
    snprintf(url, sizeof url, "https://127.0.0.1:%u/small.txt", port);
}

static void teardown(void)
{
    test_nginx_stop(&ngx);
    test_alloc_uninstall();
}

TestSuite(http_tls, .init = setup, .fini = teardown, .timeout = 20);

typedef struct got {
    async_http_response_t *resp;
} got_t;

static void on_done(async_http_response_t *resp, void *arg)
{
    ((got_t *)arg)->resp = resp;
}

Test(http_tls, http2_multiplexes_one_connection)
{
    enum { N = 20 };
    async_loop_t *loop;
    async_http_t *http;
    cr_assert_eq(async_loop_new(&loop), 0);
    async_http_opts_t o = {.ca_file = ngx.cert};
    cr_assert_eq(async_http_new(&http, loop, &o), 0);
    got_t g[N] = {0};
    async_http_request_t req = {.url = url};
    for (int i = 0; i < N; i++) cr_assert_eq(async_http_send(http, &req, on_done, &g[i]), 0);
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
    async_http_destroy(http);
    async_loop_destroy(loop);
    cr_assert_eq(test_alloc_live(), 0);
}

Test(http_tls, http1_when_http2_is_off)
{
    async_loop_t *loop;
    async_http_t *http;
    cr_assert_eq(async_loop_new(&loop), 0);
    async_http_opts_t o = {.ca_file = ngx.cert, .no_http2 = true};
    cr_assert_eq(async_http_new(&http, loop, &o), 0);
    got_t g = {0};
    async_http_request_t req = {.url = url};
    cr_assert_eq(async_http_send(http, &req, on_done, &g), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(g.resp->error, 0, "%s", g.resp->errmsg);
    cr_assert_str_eq(g.resp->http_version, "HTTP/1.1");
    async_http_response_free(g.resp);
    async_http_destroy(http);
    async_loop_destroy(loop);
    cr_assert_eq(test_alloc_live(), 0);
}

Test(http_tls, untrusted_certificate)
{
    async_loop_t *loop;
    async_http_t *http;
    cr_assert_eq(async_loop_new(&loop), 0);
    cr_assert_eq(async_http_new(&http, loop, NULL), 0);
    got_t g = {0};
    async_http_request_t req = {.url = url};
    cr_assert_eq(async_http_send(http, &req, on_done, &g), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(g.resp->error, ASYNC_ECURL);
    cr_assert(strstr(g.resp->errmsg, "certificate"), "%s", g.resp->errmsg);
    cr_assert(strstr(g.resp->errmsg, "curl error 60"), "%s", g.resp->errmsg);
    async_http_response_free(g.resp);
    async_http_destroy(http);
    async_loop_destroy(loop);
    cr_assert_eq(test_alloc_live(), 0);
}
