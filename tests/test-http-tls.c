/* The HTTP client over TLS against Debian's nginx on loopback with a
 * throwaway self-signed certificate: HTTP/2 is negotiated and concurrent
 * requests share one multiplexed connection; HTTP/1.1 when HTTP/2 is turned
 * off; an untrusted certificate is a precise error.  Skipped when nginx or
 * openssl is missing. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <async.h>
#include <async/http.h>
#include "support/alloc.h"

static char dir[64];
static pid_t nginx = -1;
static unsigned port;
static char url[128], cert[128];

static unsigned free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) || getsockname(fd, (struct sockaddr *)&sa, &len))
        sa.sin_port = 0;
    close(fd);
    return ntohs(sa.sin_port);
}

static bool port_open(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                             .sin_port = htons((unsigned short)port)};
    bool ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

static void setup(void)
{
    test_alloc_install();
    snprintf(dir, sizeof dir, "/tmp/test-http-tls-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    chmod(dir, 0755);
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 "
             "-addext subjectAltName=IP:127.0.0.1 -keyout %s/key.pem -out %s/cert.pem "
             ">/dev/null 2>&1 && mkdir -p %s/www && echo hello > %s/www/small.txt",
             dir, dir, dir, dir);
    if (system(cmd) != 0) cr_skip_test("missing package openssl: could not make a certificate");
    snprintf(cert, sizeof cert, "%s/cert.pem", dir);
    port = free_port();
    char conf[512];
    snprintf(conf, sizeof conf, "%s/nginx.conf", dir);
    FILE *f = fopen(conf, "w");
    cr_assert_not_null(f);
    fprintf(f,
            "daemon off; master_process off; worker_processes 1;\n"
            "pid %s/nginx.pid; error_log %s/error.log;\n"
            "events { worker_connections 256; }\n"
            "http { access_log off;\n"
            "  server { listen 127.0.0.1:%u ssl http2; root %s/www;\n"
            "    ssl_certificate %s/cert.pem; ssl_certificate_key %s/key.pem; } }\n",
            dir, dir, port, dir, dir, dir);
    fclose(f);
    nginx = fork();
    if (nginx == 0) {
        freopen("/dev/null", "w", stdout);
        freopen("/dev/null", "w", stderr);
        char elog[128];
        snprintf(elog, sizeof elog, "%s/error.log", dir);
        execlp("nginx", "nginx", "-p", dir, "-c", conf, "-e", elog, (char *)NULL);
        execl("/usr/sbin/nginx", "nginx", "-p", dir, "-c", conf, "-e", elog, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 300 && !port_open(); i++) {
        if (waitpid(nginx, NULL, WNOHANG) == nginx) {
            nginx = -1;
            cr_skip_test("missing package nginx-light: nginx did not start");
        }
        usleep(10000);
    }
    snprintf(url, sizeof url, "https://127.0.0.1:%u/small.txt", port);
}

static void teardown(void)
{
    if (nginx > 0) {
        kill(nginx, SIGTERM);
        waitpid(nginx, NULL, 0);
    }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {}
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
    async_http_opts_t o = {.ca_file = cert};
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
    async_http_opts_t o = {.ca_file = cert, .no_http2 = true};
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
