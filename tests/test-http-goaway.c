/* HTTP/2 peers that end connections mid-burst with GOAWAY (nginx's
 * keepalive_requests: after N requests on a connection it sends GOAWAY and
 * closes).  Every request of a burst must end once, and streams the server
 * refused (above GOAWAY's last stream id) are not lost. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <async.h>
#include <async/http.h>
#include "support/alloc.h"
#include "support/http_client.h"
#include "support/nginx.h"
#include "support/port.h"

/* Requests nginx serves on one connection before its GOAWAY. */
#define PER_CONNECTION 7

static test_nginx_t ngx;
static char url[256], post_url[256];
static unsigned port;
static char log_path[160];

/* Distinct connections among the requests nginx logged. */
static int connections_logged(int n)
{
    static long seen[4096];
    int lines = 0, distinct = 0;
    /* nginx logs a request once its answer is sent: the last lines may
     * come just after the client read the answers. */
    for (int tries = 0; tries < 200 && lines < n; tries++) {
        FILE *f = fopen(log_path, "r");
        cr_assert_not_null(f);
        long id;
        lines = distinct = 0;
        while (fscanf(f, "%ld", &id) == 1) {
            lines++;
            int i = 0;
            while (i < distinct && seen[i] != id) i++;
            if (i == distinct && distinct < 4096) seen[distinct++] = id;
        }
        fclose(f);
        if (lines < n) usleep(10000);
    }
    cr_assert_eq(lines, n, "nginx logged %d requests of %d", lines, n);
    return distinct;
}

static void setup(void)
{
    test_alloc_install();
    test_nginx_prepare(&ngx, "test-http-goaway");
    char www[128], path[256];
    snprintf(www, sizeof www, "%s/www", ngx.dir);
    cr_assert_eq(mkdir(www, 0755), 0);
    snprintf(path, sizeof path, "%s/f", www);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("ok\n", f);
    cr_assert_eq(fclose(f), 0);
    port = test_free_port();
    char conf[2048];
    const char *dir = ngx.dir;
    snprintf(log_path, sizeof log_path, "%s/access.log", dir);
    snprintf(conf, sizeof conf,
             "events { worker_connections 4096; }\n"
             "http { log_format conn '$connection'; access_log %s conn;\n"
             "  keepalive_requests %d;\n"
             "  client_body_temp_path %s; proxy_temp_path %s; fastcgi_temp_path %s;\n"
             "  uwsgi_temp_path %s; scgi_temp_path %s;\n"
             "  server { listen 127.0.0.1:%u ssl http2; root %s;\n"
             "    location /p { return 200 \"ok\\n\"; }\n"
             "    ssl_certificate %s/cert.pem; ssl_certificate_key %s/key.pem; } }\n",
             log_path, PER_CONNECTION, dir, dir, dir, dir, dir, port, www, dir, dir);
    test_nginx_start(&ngx, conf, &port, 1);
    snprintf(url, sizeof url, "https://127.0.0.1:%u/f", port);
    snprintf(post_url, sizeof post_url, "https://127.0.0.1:%u/p", port);
}

static void teardown(void)
{
    test_nginx_stop(&ngx);
    test_alloc_uninstall();
}

TestSuite(http_goaway, .init = setup, .fini = teardown, .timeout = 60);

typedef struct tally {
    int done, ok;
    char first_error[320];
} tally_t;

static void on_done(async_http_response_t *r, void *arg)
{
    tally_t *t = arg;
    t->done++;
    if (r->error == 0 && strcmp(r->body, "ok\n") == 0) t->ok++;
    else if (!t->first_error[0])
        snprintf(t->first_error, sizeof t->first_error, "%d %ld %s", r->error, r->status,
                 r->errmsg);
    async_http_response_free(r);
}

static void burst(const char *target, const char *method, const char *body)
{
    async_http_opts_t o;
    async_http_opts_init(&o);
    o.ca_file = ngx.cert;
    async_loop_t *loop;
    async_http_t *http = test_http_client(&loop, &o);
    enum { N = 400 };
    tally_t t = {0};
    async_http_request_t req = {.url = target, .method = method, .body = body,
                                .body_len = body ? strlen(body) : 0};
    for (int i = 0; i < N; i++) cr_assert_eq(async_http_send(http, &req, on_done, &t), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(t.done, N);
    cr_assert_eq(t.ok, N, "%d of %d failed, the first: %s", N - t.ok, N, t.first_error);
    /* Each connection ended with a GOAWAY after its share of requests. */
    int conns = connections_logged(N);
    cr_assert_geq(conns, N / PER_CONNECTION, "%d connections for %d requests", conns, N);
    cr_log_info("%d requests over %d connections", N, conns);
    test_http_client_end(loop, http);
}

Test(http_goaway, a_burst_across_goaways_loses_nothing) { burst(url, NULL, NULL); }

/* Streams above a GOAWAY's last stream id were never processed (RFC 9113
 * 6.8): even a POST, which is never retried on a failure of its own, must
 * not fail for them. */
Test(http_goaway, a_post_burst_across_goaways_loses_nothing) { burst(post_url, "POST", "x=1"); }
