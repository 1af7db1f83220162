/* Bursts over HTTP/2 against Debian's nginx (TLS, a throwaway certificate,
 * the echo module's sleep as a slow server, nginx's default of 128 streams
 * a connection): a burst well past one connection's streams opens a
 * handful of connections, not one for each request beyond the first
 * connection's (libcurl 7.88, see MUX_SHARD_CAP in lib/http/http_internal.h);
 * HTTP/1.1 bursts still open one connection a request in flight; and a few
 * hundred requests are in flight at once over HTTP/2.  nginx's access log
 * names each request's connection ($connection), which counts them.
 * Skipped when nginx, its echo module or openssl is missing. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <linux/tcp.h> /* tcpi_segs_out, which glibc's tcp_info lacks */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <async.h>
#include <async/http.h>
#include "support/alloc.h"
#include "support/http_client.h"
#include "support/nginx.h"
#include "support/port.h"
#include "support/run.h"

#define ECHO_MODULE "/usr/lib/nginx/modules/ngx_http_echo_module.so"
/* nginx's default http2_max_concurrent_streams, written out. */
#define SERVER_STREAMS 128

static test_nginx_t ngx;
static unsigned port_h2, port_h1;
static char log_path[128];

/* nginx with two servers answering /sleep after the same delay: HTTP/2
 * over TLS on port_h2, cleartext HTTP/1.1 on port_h1. */
static void setup(void)
{
    test_alloc_install();
    if (access(ECHO_MODULE, R_OK) != 0)
        cr_skip_test("missing package libnginx-mod-http-echo: no " ECHO_MODULE);
    test_nginx_prepare(&ngx, "test-http-h2");
    const char *dir = ngx.dir;
    snprintf(log_path, sizeof log_path, "%s/access.log", dir);
    port_h2 = test_free_port();
    port_h1 = test_free_port();
    /* The delay grows with the slack, so that a slow machine still sends
     * every request of a burst before the first answer. */
    double sleep_s = 1.0 * test_slack();
    enum { LONG_SLEEP_S = 5 };
    char conf[2048];
    snprintf(conf, sizeof conf,
             "load_module " ECHO_MODULE ";\n"
             "events { worker_connections 4096; }\n"
             "http { log_format conn '$connection $server_protocol';\n"
             "  access_log %s conn; keepalive_requests 100000;\n"
             "  http2_max_concurrent_streams %d;\n"
             "  client_body_temp_path %s; proxy_temp_path %s; fastcgi_temp_path %s;\n"
             "  uwsgi_temp_path %s; scgi_temp_path %s;\n"
             "  server { listen 127.0.0.1:%u ssl http2;\n"
             "    ssl_certificate %s/cert.pem; ssl_certificate_key %s/key.pem;\n"
             "    location /sleep { echo_sleep %.3f; echo ok; }\n"
             "    location /sleep_long { echo_sleep %.3f; echo ok; } }\n"
             "  server { listen 127.0.0.1:%u;\n"
             "    location /sleep { echo_sleep %.3f; echo ok; } } }\n",
             log_path, SERVER_STREAMS, dir, dir, dir, dir, dir, port_h2, dir, dir, sleep_s,
             LONG_SLEEP_S * test_slack(), port_h1, sleep_s);
    const unsigned ports[] = {port_h2, port_h1};
    test_nginx_start(&ngx, conf, ports, 2);
    /* The probes above are connections too: the counts start after them. */
    for (int i = 0; i < 100; i++) {
        FILE *l = fopen(log_path, "w");
        if (l) {
            fclose(l);
            break;
        }
        usleep(10000);
    }
}

static void teardown(void)
{
    test_nginx_stop(&ngx);
    test_alloc_uninstall();
}

TestSuite(http_h2, .init = setup, .fini = teardown, .timeout = 60);

/* The distinct connections of the n requests that nginx logged with the
 * given protocol ("HTTP/2.0", "HTTP/1.1"); fails unless it logged n. */
static int connections_logged(int n, const char *protocol)
{
    static long seen[4096];
    int lines = 0, distinct = 0;
    /* nginx logs a request once its answer is sent: the last lines may
     * come just after the client read the answers. */
    for (int tries = 0; tries < 200; tries++) {
        FILE *f = fopen(log_path, "r");
        cr_assert_not_null(f);
        char line[128], proto[32];
        long id;
        lines = distinct = 0;
        while (fgets(line, sizeof line, f)) {
            if (sscanf(line, "%ld %31s", &id, proto) != 2) continue;
            cr_assert_str_eq(proto, protocol, "%s", line);
            lines++;
            int i = 0;
            while (i < distinct && seen[i] != id) i++;
            if (i == distinct && distinct < 4096) seen[distinct++] = id;
        }
        fclose(f);
        if (lines >= n) break;
        usleep(10000);
    }
    cr_assert_eq(lines, n, "nginx logged %d requests of %d", lines, n);
    return distinct;
}

typedef struct burst {
    int done, ok, http2;
    double first_answer, last_sent;
    double t0;
    char first_error[320];
} burst_t;

static void on_done(async_http_response_t *r, void *arg)
{
    burst_t *b = arg;
    double t = test_now_s() - b->t0;
    if (!b->done++) b->first_answer = t;
    if (r->error == 0 && r->status == 200 && strcmp(r->body, "ok\n") == 0) b->ok++;
    else if (!b->first_error[0])
        snprintf(b->first_error, sizeof b->first_error, "%d %ld %s", r->error, r->status, r->errmsg);
    if (strcmp(r->http_version, "HTTP/2") == 0) b->http2++;
    /* When this request was written, back from now on curl's times. */
    double sent = t - (r->timings.total - r->timings.pretransfer);
    if (sent > b->last_sent) b->last_sent = sent;
    async_http_response_free(r);
}

/* Sends n GETs of url at once and runs the loop until all are answered. */
static void burst_run(const char *url, int n, bool no_http2, burst_t *b, size_t *open_after)
{
    async_http_opts_t o = {.ca_file = ngx.cert, .no_http2 = no_http2, .timeout_ns = ASYNC_SEC(50)};
    async_loop_t *loop;
    async_http_t *http = test_http_client(&loop, &o);
    async_http_request_t req = {.url = url};
    b->t0 = test_now_s();
    for (int i = 0; i < n; i++) cr_assert_eq(async_http_send(http, &req, on_done, b), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(b->done, n);
    cr_assert_eq(b->ok, n, "%d of %d answered; first error: %s", b->ok, n, b->first_error);
    async_http_stats_t st;
    async_http_stats(http, &st);
    *open_after = st.connections;
    test_http_client_end(loop, http);
}

/* 300 requests at once to a server allowing 128 streams a connection:
 * the client puts at most 100 multiplexing transfers in a multi handle, so
 * three connections; libcurl 7.88 left alone opened one for each request
 * beyond the first connection's 100, about 200. */
Test(http_h2, burst_past_one_connection_opens_a_handful)
{
    enum { N = 300 };
    char url[128];
    snprintf(url, sizeof url, "https://127.0.0.1:%u/sleep", port_h2);
    burst_t b = {0};
    size_t open_after;
    burst_run(url, N, false, &b, &open_after);
    cr_assert_eq(b.http2, N);
    int conns = connections_logged(N, "HTTP/2.0");
    cr_assert_geq(conns, (N + SERVER_STREAMS - 1) / SERVER_STREAMS, "%d connections", conns);
    cr_assert_leq(conns, 5, "%d connections for %d requests over HTTP/2", conns, N);
    cr_assert_leq(open_after, 5, "%zu connections open after the burst", open_after);
}

/* The same burst over HTTP/1.1, cleartext and over TLS with HTTP/2 off:
 * every request in flight has a connection of its own, as before. */
static void http1_burst(const char *scheme, unsigned port, bool no_http2)
{
    enum { N = 300 };
    char url[128];
    snprintf(url, sizeof url, "%s://127.0.0.1:%u/sleep", scheme, port);
    burst_t b = {0};
    size_t open_after;
    burst_run(url, N, no_http2, &b, &open_after);
    cr_assert_eq(b.http2, 0);
    int conns = connections_logged(N, "HTTP/1.1");
    cr_assert_eq(conns, N, "%d connections for %d requests over HTTP/1.1 (%s)", conns, N, scheme);
}

Test(http_h2, http1_bursts_open_a_connection_a_request)
{
    http1_burst("http", port_h1, false);
}

Test(http_h2, tls_http1_burst_opens_a_connection_a_request)
{
    http1_burst("https", port_h2, true);
}

/* 1,000 requests at once over HTTP/2: every one is written before the
 * first answer comes back, LONG_SLEEP_S later, so all were in flight
 * together, over ten connections or so.  The delay is far above the time
 * the writes take (1.25 s seen under ASan on a loaded 2-core VM), so that
 * the test checks that nothing waits for an answer, not a speed. */
Test(http_h2, a_thousand_in_flight)
{
    enum { N = 1000 };
    char url[128];
    snprintf(url, sizeof url, "https://127.0.0.1:%u/sleep_long", port_h2);
    burst_t b = {0};
    size_t open_after;
    burst_run(url, N, false, &b, &open_after);
    cr_assert_eq(b.http2, N);
    cr_assert_lt(b.last_sent, b.first_answer, "the last request went out at %.3f s, "
                 "after the first answer at %.3f s", b.last_sent, b.first_answer);
    int conns = connections_logged(N, "HTTP/2.0");
    cr_assert_leq(conns, 15, "%d connections for %d requests over HTTP/2", conns, N);
}

/* This process's TCP connections to port, found through /proc/self/fd:
 * how many there are, how many are corked (TCP_CORK), and the segments they
 * sent in all (TCP_INFO), each an OUT parameter. */
static int connections_to(unsigned port, int *corked, unsigned long *segs_out)
{
    DIR *d = opendir("/proc/self/fd");
    cr_assert_not_null(d);
    struct dirent *e;
    int n = 0;
    *corked = 0;
    *segs_out = 0;
    while ((e = readdir(d))) {
        int fd = atoi(e->d_name);
        struct stat st;
        struct sockaddr_in peer;
        socklen_t len = sizeof peer;
        if (e->d_name[0] == '.' || fd == dirfd(d) || fstat(fd, &st) || !S_ISSOCK(st.st_mode)) continue;
        if (getpeername(fd, (struct sockaddr *)&peer, &len) || peer.sin_family != AF_INET ||
            ntohs(peer.sin_port) != port)
            continue;
        int cork = 0;
        socklen_t cl = sizeof cork;
        struct tcp_info ti;
        socklen_t tl = sizeof ti;
        cr_assert_eq(getsockopt(fd, IPPROTO_TCP, TCP_CORK, &cork, &cl), 0);
        cr_assert_eq(getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &tl), 0);
        n++;
        *corked += cork != 0;
        *segs_out += ti.tcpi_segs_out;
    }
    closedir(d);
    return n;
}

typedef struct corks {
    int answers, connections, corked;
    unsigned long segs_out;
} corks_t;

static void on_corks(async_http_response_t *r, void *arg)
{
    corks_t *c = arg;
    cr_expect_eq(r->error, 0, "%s", r->errmsg);
    c->answers++;
    /* The loop ran curl and came back to us: no connection may stay corked
     * past that call, or its last writes would wait up to 200 ms. */
    int corked;
    c->connections = connections_to(port_h2, &corked, &c->segs_out);
    c->corked += corked;
    async_http_response_free(r);
}

/* The client corks a multiplexing shard's connections while curl writes a
 * burst of streams to them, so that each request is not one TCP segment of
 * its own, and uncorks them before curl returns: the burst went out in
 * fewer segments than requests, over one connection, and no connection was
 * corked while the client's callbacks ran or after the burst, between two
 * requests on the loop. */
Test(http_h2, a_burst_leaves_in_few_segments_and_nothing_stays_corked)
{
    enum { N = 100 };
    char url[128];
    snprintf(url, sizeof url, "https://127.0.0.1:%u/sleep", port_h2);
    async_http_opts_t o = {.ca_file = ngx.cert, .timeout_ns = ASYNC_SEC(50)};
    async_loop_t *loop;
    async_http_t *http = test_http_client(&loop, &o);
    async_http_request_t req = {.url = url};
    corks_t c = {0};
    for (int i = 0; i < N; i++) cr_assert_eq(async_http_send(http, &req, on_corks, &c), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(c.answers, N);
    cr_assert_eq(c.corked, 0, "a connection was corked in %d answer callbacks", c.corked);
    cr_assert_eq(c.connections, 1);
    cr_assert_lt(c.segs_out, N, "%lu segments for %d requests", c.segs_out, N);
    /* One more request on the idle connection, after the loop polled. */
    cr_assert_eq(async_http_send(http, &req, on_corks, &c), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(c.answers, N + 1);
    cr_assert_eq(c.corked, 0);
    int corked;
    unsigned long segs;
    cr_assert_eq(connections_to(port_h2, &corked, &segs), 1);
    cr_assert_eq(corked, 0);
    test_http_client_end(loop, http);
}
