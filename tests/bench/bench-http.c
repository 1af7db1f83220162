/* Benchmarks of the HTTP client, one figure per line, each beside its
 * baseline measured in the same run:
 *
 *  1. the brewery count, lab's four states, local brewery-server at 100 ms
 *     latency: every mode of the demo (serial, threads, processes, async,
 *     meta), the critical path (the longest chain of sequential pages times
 *     the latency), and the lab's Python approach (tests/bench/peer-brewery.py);
 *  2. the same for every state (--states all);
 *  3. throughput: 20,000 GETs of a small body at zero latency, 64 at a time,
 *     from brewery-server and from Debian's nginx on loopback: libasync's
 *     client, `curl --parallel --parallel-max 64` over the same URLs, and a
 *     bare libcurl multi loop (curl_multi_poll, reused easy handles, no event
 *     loop, the client's request options: bare_options) as the limit for any
 *     client on libcurl, and the same over curl's socket interface
 *     (curl_multi_socket_action over epoll, as the client drives curl);
 *  4. 10,000 requests in flight at once against 1 s of latency: wall time,
 *     when the requests went out, CPU and peak RSS (each client in a child
 *     process, so the figures are its own), for libasync and two bare
 *     libcurl loops with the same request options: curl_multi_poll over one
 *     multi handle, and curl_multi_socket_action over epoll with the burst
 *     spread over multi handles of 256 as the client spreads it (libcurl
 *     7.88's walks over every connection make one multi handle grow faster
 *     than linearly), the baseline for the client's own cost;
 *  5. the same 10,000 against Debian's nginx with the echo module's 1 s
 *     sleep: over HTTP/2 (TLS, nginx's default 128 streams a connection),
 *     libasync and the bare socket loop with the client's HTTP/2 options
 *     (CURLOPT_PIPEWAIT, multi handles of 100 multiplexing transfers, as
 *     the client: MUX_SHARD_CAP; their connections corked while curl runs,
 *     as the client's), and libasync over HTTP/1.1 to the same
 *     nginx, which tells the server's cost from the protocol's;
 *  6. the bursts of 4 and 5 split over two threads (BENCH_HTTP_FL_THREADS),
 *     each with its own loop and client, half the burst each, started
 *     together, wall to the last answer of both: libasync, and the sharded
 *     bare socket loop run the same way (a thread its own epoll set and
 *     multi handles) as the fair baseline.  BENCH_HTTP_FL=h1,h2-threads,...
 *     picks the clients of 4-6 by their tags (fl_clients; default all).
 *
 * Each figure is measured once a round, the clients alternating within the
 * round, and prints as median (min-max) over the rounds.  Run from the
 * source root (make bench does). */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <async.h>
#include <async/http.h>
#include "rounds.h"
#include "../support/port.h"

#define SERVER ASYNC_OUT_DIR "/demos/brewery/brewery-server"
#define DEMO ASYNC_OUT_DIR "/demos/brewery/brewery"
#define PEER ASYNC_SRC_DIR "/tests/bench/peer-brewery.py"

static double now_s(void) { return (double)async_now() / 1e9; }

/* --- child processes ----------------------------------------------------- */

typedef struct child {
    pid_t pid;
    unsigned port;
} child_t;

/* Starts brewery-server with the given latency; reads its port. */
static int server_start(child_t *c, const char *latency)
{
    int p[2];
    if (pipe(p)) return -1;
    fflush(NULL);
    c->pid = fork();
    if (c->pid == 0) {
        dup2(p[1], 1);
        close(p[0]);
        close(p[1]);
        /* BENCH_BREWERY_SERVER overrides the path, to measure another build. */
        const char *srv = getenv("BENCH_BREWERY_SERVER");
        if (!srv) srv = SERVER;
        execl(srv, srv, "--port", "0", "--quiet", "--latency", latency, (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    FILE *f = fdopen(p[0], "r");
    char line[256];
    c->port = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "listening on http://127.0.0.1:%u", &c->port) == 1) break;
    if (f) fclose(f);
    return c->port ? 0 : -1;
}

static void child_stop(child_t *c)
{
    if (c->pid <= 0) return;
    kill(c->pid, SIGTERM);
    waitpid(c->pid, NULL, 0);
    c->pid = -1;
}

/* Starts Debian's nginx on the prefix dir with dir/nginx.conf and waits
 * until each of the n ports accepts connections.  0, or -1 (c->pid -1) when
 * nginx did not start. */
static int nginx_run(child_t *c, const char *dir, const unsigned *ports, size_t n)
{
    char path[600], elog[600];
    snprintf(path, sizeof path, "%s/nginx.conf", dir);
    snprintf(elog, sizeof elog, "%s/error.log", dir);
    fflush(NULL);
    c->pid = fork();
    if (c->pid == 0) {
        int null = open("/dev/null", 1);
        dup2(null, 1);
        dup2(null, 2);
        execlp("nginx", "nginx", "-p", dir, "-c", path, "-e", elog, (char *)NULL);
        execl("/usr/sbin/nginx", "nginx", "-p", dir, "-c", path, "-e", elog, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 200; i++) {
        size_t open_ports = 0;
        while (open_ports < n && test_port_open(ports[open_ports])) open_ports++;
        if (open_ports == n) return 0;
        if (waitpid(c->pid, NULL, WNOHANG) == c->pid) break;
        usleep(10000);
    }
    c->pid = -1;
    return -1;
}

/* Debian's nginx serving one small static file from a temporary prefix. */
static int nginx_start(child_t *c, char *dir, size_t dirlen)
{
    snprintf(dir, dirlen, "/tmp/bench-http-nginx-XXXXXX");
    if (!mkdtemp(dir)) return -1;
    chmod(dir, 0755);
    char path[512];
    snprintf(path, sizeof path, "%s/www", dir);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/www/small.txt", dir);
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fputs("hello, brewery\n", f);
    fclose(f);
    c->port = test_free_port();
    snprintf(path, sizeof path, "%s/nginx.conf", dir);
    f = fopen(path, "w");
    if (!f) return -1;
    fprintf(f,
            "daemon off; master_process off; worker_processes 1;\n"
            "pid %s/nginx.pid; error_log %s/error.log;\n"
            "events { worker_connections 4096; }\n"
            "http { access_log off; keepalive_requests 1000000;\n"
            "  server { listen 127.0.0.1:%u; root %s/www; location / { } } }\n",
            dir, dir, c->port, dir);
    fclose(f);
    return nginx_run(c, dir, &c->port, 1);
}

/* Section 5's server: Debian's nginx with the echo module answering /sleep
 * after 1 s, over HTTP/2 and TLS (a throwaway certificate, ngx_cert) on
 * echo.port and over cleartext HTTP/1.1 on echo_h1_port, with nginx's
 * default of 128 streams a connection written out. */
static child_t echo;
static unsigned echo_h1_port;
static char ngx_cert[128];

static int nginx_echo_start(char *dir, size_t dirlen)
{
    const char *module = "/usr/lib/nginx/modules/ngx_http_echo_module.so";
    if (access(module, R_OK) != 0) return -1;
    snprintf(dir, dirlen, "/tmp/bench-http-echo-XXXXXX");
    if (!mkdtemp(dir)) return -1;
    chmod(dir, 0755);
    char cmd[1024], path[512];
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 "
             "-addext subjectAltName=IP:127.0.0.1 -keyout %s/key.pem -out %s/cert.pem "
             ">/dev/null 2>&1",
             dir, dir);
    if (system(cmd) != 0) return -1;
    snprintf(ngx_cert, sizeof ngx_cert, "%s/cert.pem", dir);
    /* BENCH_HTTP_CA_BUNDLE=1: the HTTP/2 clients trust Debian's CA bundle
     * with the throwaway certificate appended, as a client of public
     * servers does (curl's default CAINFO), to show what libcurl 7.88's
     * loading of the CA file for each multi handle's connections costs. */
    const char *system_cas = "/etc/ssl/certs/ca-certificates.crt";
    if (getenv("BENCH_HTTP_CA_BUNDLE") && access(system_cas, R_OK) == 0) {
        snprintf(cmd, sizeof cmd, "cat %s %s/cert.pem > %s/bundle.pem", system_cas, dir, dir);
        if (system(cmd) != 0) return -1;
        snprintf(ngx_cert, sizeof ngx_cert, "%s/bundle.pem", dir);
        bench_note("inflight over HTTP/2: the clients trust %s and nginx's certificate", system_cas);
    }
    echo.port = test_free_port();
    echo_h1_port = test_free_port();
    snprintf(path, sizeof path, "%s/nginx.conf", dir);
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fprintf(f,
            "load_module %s;\n"
            "daemon off; master_process off; worker_processes 1; worker_rlimit_nofile 20000;\n"
            "pid %s/nginx.pid; error_log %s/error.log;\n"
            "events { worker_connections 16000; }\n"
            "http { access_log off; keepalive_requests 1000000; http2_max_concurrent_streams 128;\n"
            "  client_body_temp_path %s; proxy_temp_path %s; fastcgi_temp_path %s;\n"
            "  uwsgi_temp_path %s; scgi_temp_path %s;\n"
            "  server { listen 127.0.0.1:%u ssl http2; ssl_certificate %s/cert.pem;\n"
            "    ssl_certificate_key %s/key.pem; location / { echo_sleep 1; echo ok; } }\n"
            "  server { listen 127.0.0.1:%u backlog=16384; location / { echo_sleep 1; echo ok; } } }\n",
            module, dir, dir, dir, dir, dir, dir, dir, echo.port, dir, dir, echo_h1_port);
    fclose(f);
    const unsigned ports[] = {echo.port, echo_h1_port};
    return nginx_run(&echo, dir, ports, 2);
}

/* Runs a shell command; its stdout goes into out (NUL-terminated). */
static int run_capture(const char *cmd, char *out, size_t len)
{
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t n = fread(out, 1, len - 1, p);
    out[n] = 0;
    return pclose(p);
}

/* --- 1 and 2: the brewery count ------------------------------------------ */

static void brewery(const char *label, const char *states, unsigned port)
{
    char cmd[1024], out[8192], json_path[] = "/tmp/bench-http-XXXXXX", name[160];
    int fd = mkstemp(json_path);
    if (fd >= 0) close(fd);
    snprintf(cmd, sizeof cmd,
             "%s --mode all --states %s --base-url http://127.0.0.1:%u/v1 --json %s "
             "--retries 0 2>/dev/null",
             DEMO, states, port, json_path);
    if (run_capture(cmd, out, sizeof out) != 0) {
        bench_note("%s: the demo failed this round", label);
        unlink(json_path);
        return;
    }
    json_error_t e;
    json_t *j = json_load_file(json_path, 0, &e);
    unlink(json_path);
    json_t *modes = json_object_get(j, "modes");
    const char *mode;
    json_t *m;
    long max_pages = 0;
    json_object_foreach(modes, mode, m) {
        snprintf(name, sizeof name, "%s, %s", label, mode);
        bench_add(name, "s", json_real_value(json_object_get(m, "seconds")));
        const char *st;
        json_t *cnt;
        json_object_foreach(json_object_get(m, "counts"), st, cnt) {
            long pages = (long)json_integer_value(cnt) / 200 + 1;
            if (pages > max_pages) max_pages = pages;
        }
    }
    json_decref(j);
    /* The floor: the longest chain of pages one state needs, one latency
     * each, plus 10 ms of slack. */
    snprintf(name, sizeof name, "%s, goal: critical path (%ld pages x 100 ms) + 10 ms", label, max_pages);
    bench_add(name, "s", (double)max_pages * 0.100 + 0.010);
    snprintf(cmd, sizeof cmd, BENCH_PYTHON " %s --base-url http://127.0.0.1:%u/v1 --states %s", PEER, port,
             states);
    int rc = run_capture(cmd, out, sizeof out);
    static const char *const peers[] = {"python-serial:", "python-async:"};
    for (int i = 0; i < 2; i++) {
        const char *p = rc == 0 ? strstr(out, peers[i]) : NULL;
        snprintf(name, sizeof name, "%s, Python %s", label, i ? "asyncio + threads" : "serial requests");
        bench_add(name, "s", p ? atof(p + strlen(peers[i])) : -1);
    }
}

/* --- 3: throughput ------------------------------------------------------- */

enum { THROUGHPUT_N = 20000, PARALLEL = 64 };

typedef struct tp {
    async_http_t *http;
    async_http_request_t req;
    int sent, done, failed;
} tp_t;

static void tp_done(async_http_response_t *r, void *arg)
{
    tp_t *t = arg;
    t->done++;
    if (r->error) t->failed++;
    async_http_response_free(r);
    if (t->sent < THROUGHPUT_N) {
        t->sent++;
        if (async_http_send(t->http, &t->req, tp_done, t)) t->failed++, t->done++;
    }
}

static double tp_libasync(const char *url, int *failed)
{
    async_loop_t *loop;
    tp_t t = {.req = {.url = url}};
    if (async_loop_new(&loop) || async_http_new(&t.http, loop, NULL)) return 0;
    double t0 = now_s();
    for (; t.sent < PARALLEL; t.sent++) async_http_send(t.http, &t.req, tp_done, &t);
    async_loop_run(loop, ASYNC_RUN_DEFAULT);
    double dt = now_s() - t0;
    async_http_destroy(t.http);
    async_loop_destroy(loop);
    *failed = t.failed;
    return THROUGHPUT_N / dt;
}

static size_t discard(char *p, size_t s, size_t n, void *ud)
{
    (void)p, (void)ud;
    return s * n;
}

/* The options libasync's client sets on every request that shape what goes
 * on the wire or what curl tracks, with its defaults (async_http_new:
 * 30 s and 10 s timeouts, its User-Agent, redirects followed on http and
 * https): the bare loop sets them too, so that the two send the same
 * request and curl does the same work for it.  What the client adds on top
 * (keeping the headers and body, timings, retries) stays its own cost. */
static void bare_options(CURL *e, const char *url, bool as_client)
{
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    if (!as_client) return; /* curl's defaults: the figure of 0.2 and before */
    curl_easy_setopt(e, CURLOPT_USERAGENT, "libasync/" ASYNC_VERSION);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 30000L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(e, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
}

static double tp_bare(const char *url, bool as_client, int *failed)
{
    CURLM *m = curl_multi_init();
    CURL *e[PARALLEL];
    int started = 0, done = 0, running = 0;
    *failed = 0;
    double t0 = now_s();
    for (int i = 0; i < PARALLEL; i++) {
        e[i] = curl_easy_init();
        bare_options(e[i], url, as_client);
        curl_multi_add_handle(m, e[i]);
        started++;
    }
    while (done < THROUGHPUT_N) {
        curl_multi_perform(m, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left))) {
            if (msg->msg != CURLMSG_DONE) continue;
            CURL *h = msg->easy_handle;
            if (msg->data.result != CURLE_OK) (*failed)++;
            done++;
            curl_multi_remove_handle(m, h);
            if (started < THROUGHPUT_N) {
                curl_multi_add_handle(m, h);
                started++;
            }
        }
        if (done < THROUGHPUT_N) curl_multi_poll(m, NULL, 0, 1000, NULL);
    }
    double dt = now_s() - t0;
    for (int i = 0; i < PARALLEL; i++) {
        curl_multi_remove_handle(m, e[i]);
        curl_easy_cleanup(e[i]);
    }
    curl_multi_cleanup(m);
    return THROUGHPUT_N / dt;
}

/* The same over curl's socket interface, as the client drives curl: one
 * multi handle, its sockets in one epoll set (curl's socket callback), its
 * timer as a deadline (the timer callback), curl_multi_socket_action for
 * each ready socket and for the timer.  Beside tp_bare it tells what the
 * socket interface itself costs from what the client adds to it. */
typedef struct tp_sock {
    int ep;
    double deadline; /* of curl's timer, < 0 for none */
} tp_sock_t;

/* What a bare socket loop does in curl's socket callback: epoll follows
 * what curl wants of s (ev carries the loop's own data). */
static void epoll_follow(int ep, curl_socket_t s, int what, struct epoll_event ev)
{
    if (what == CURL_POLL_REMOVE) {
        epoll_ctl(ep, EPOLL_CTL_DEL, s, &ev);
        return;
    }
    ev.events = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
    if (epoll_ctl(ep, EPOLL_CTL_MOD, s, &ev) && errno == ENOENT) epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
}

/* curl's timer callback's timeout as an absolute deadline, < 0 for none. */
static double timer_deadline(long timeout_ms)
{
    return timeout_ms < 0 ? -1 : now_s() + (double)timeout_ms / 1e3;
}

static int tp_on_socket(CURL *e, curl_socket_t s, int what, void *ud, void *sockp)
{
    (void)e, (void)sockp;
    tp_sock_t *ts = ud;
    epoll_follow(ts->ep, s, what, (struct epoll_event){.data.fd = s});
    return 0;
}

static int tp_on_timer(CURLM *m, long timeout_ms, void *ud)
{
    (void)m;
    ((tp_sock_t *)ud)->deadline = timer_deadline(timeout_ms);
    return 0;
}

/* Re-adds every finished handle while requests are left; returns how many finished. */
static int tp_sock_drain(CURLM *m, int *started, int *failed)
{
    int done = 0, left;
    CURLMsg *msg;
    while ((msg = curl_multi_info_read(m, &left))) {
        if (msg->msg != CURLMSG_DONE) continue;
        CURL *h = msg->easy_handle;
        if (msg->data.result != CURLE_OK) (*failed)++;
        done++;
        curl_multi_remove_handle(m, h);
        if (*started < THROUGHPUT_N) {
            curl_multi_add_handle(m, h);
            (*started)++;
        }
    }
    return done;
}

static double tp_bare_socket(const char *url, int *failed)
{
    tp_sock_t ts = {.ep = epoll_create1(EPOLL_CLOEXEC), .deadline = -1};
    CURLM *m = curl_multi_init();
    curl_multi_setopt(m, CURLMOPT_SOCKETFUNCTION, tp_on_socket);
    curl_multi_setopt(m, CURLMOPT_SOCKETDATA, &ts);
    curl_multi_setopt(m, CURLMOPT_TIMERFUNCTION, tp_on_timer);
    curl_multi_setopt(m, CURLMOPT_TIMERDATA, &ts);
    CURL *e[PARALLEL];
    int started = 0, done = 0, running = 0;
    *failed = 0;
    double t0 = now_s();
    for (int i = 0; i < PARALLEL; i++) {
        e[i] = curl_easy_init();
        bare_options(e[i], url, true);
        curl_multi_add_handle(m, e[i]);
        started++;
    }
    struct epoll_event evs[PARALLEL];
    while (done < THROUGHPUT_N) {
        double t = now_s();
        int ms = ts.deadline < 0 ? 1000 : ts.deadline <= t ? 0 : (int)((ts.deadline - t) * 1e3) + 1;
        int n = epoll_wait(ts.ep, evs, PARALLEL, ms);
        for (int i = 0; i < n; i++) {
            int flags = (evs[i].events & EPOLLIN ? CURL_CSELECT_IN : 0) |
                        (evs[i].events & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
                        (evs[i].events & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);
            curl_multi_socket_action(m, evs[i].data.fd, flags, &running);
            done += tp_sock_drain(m, &started, failed);
        }
        if (ts.deadline >= 0 && ts.deadline <= now_s()) {
            ts.deadline = -1;
            curl_multi_socket_action(m, CURL_SOCKET_TIMEOUT, 0, &running);
            done += tp_sock_drain(m, &started, failed);
        }
    }
    double dt = now_s() - t0;
    for (int i = 0; i < PARALLEL; i++) {
        curl_multi_remove_handle(m, e[i]);
        curl_easy_cleanup(e[i]);
    }
    curl_multi_cleanup(m);
    close(ts.ep);
    return THROUGHPUT_N / dt;
}

/* `curl --parallel` over n URLs: seconds for the whole command. */
static double curl_tool_s(const char *url, int n)
{
    char cfg[] = "/tmp/bench-http-curl-XXXXXX";
    int fd = mkstemp(cfg);
    if (fd < 0) return -1;
    FILE *f = fdopen(fd, "w");
    for (int i = 0; i < n; i++) fprintf(f, "url = \"%s\"\noutput = \"/dev/null\"\n", url);
    fclose(f);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "curl -s --no-progress-meter -Z --parallel-max %d -K %s 2>/dev/null", PARALLEL, cfg);
    double t0 = now_s();
    int rc = system(cmd);
    double dt = now_s() - t0;
    unlink(cfg);
    return rc == 0 ? dt : -1;
}

/* The curl tool's transfer rate without its process start: the same
 * command over one URL costs the start (exec, config, one request), and
 * the rest is the transfer of the other n - 1. */
static double tp_curl_tool(const char *url, double *start_s)
{
    double one = curl_tool_s(url, 1), all = curl_tool_s(url, THROUGHPUT_N);
    *start_s = one;
    if (one < 0 || all <= one) return -1;
    return (THROUGHPUT_N - 1) / (all - one);
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* BENCH_HTTP_TP=bare,default,socket,libasync,tool picks the throughput section's
 * clients (default all), so that a profiler sees one client alone. */
static bool tp_want(const char *client)
{
    const char *s = getenv("BENCH_HTTP_TP");
    return !s || strstr(s, client);
}

/* A client's two figures: "throughput, LABEL, WHO<tag>" in req/s (-1 when
 * f requests failed) and "throughput, LABEL, WHO, CPU per request" from the
 * process CPU time c0 .. c1 its run took. */
static void tp_figures(const char *label, const char *who, const char *tag, double rate, int f,
                       double c0, double c1)
{
    char name[160];
    snprintf(name, sizeof name, "throughput, %s, %s%s", label, who, tag);
    bench_add(name, "req/s", f ? -1 : rate);
    snprintf(name, sizeof name, "throughput, %s, %s, CPU per request", label, who);
    bench_add(name, "us", (c1 - c0) / THROUGHPUT_N * 1e6);
}

/* One round: the bare loop (curl's defaults, then the client's options),
 * ours and the curl tool, one after the other. */
static void throughput(const char *label, const char *url)
{
    char name[160];
    int f = 0;
    if (tp_want("default")) {
        double bare_default = tp_bare(url, false, &f);
        snprintf(name, sizeof name, "throughput, %s, bare libcurl multi loop, curl's default options", label);
        bench_add(name, "req/s", f ? -1 : bare_default);
    }
    if (tp_want("bare")) {
        double c0 = cpu_s();
        double bare = tp_bare(url, true, &f);
        tp_figures(label, "bare libcurl multi loop", " (baseline)", bare, f, c0, cpu_s());
    }
    if (tp_want("socket")) {
        double c0 = cpu_s();
        double sock = tp_bare_socket(url, &f);
        tp_figures(label, "bare libcurl socket loop", "", sock, f, c0, cpu_s());
    }
    if (tp_want("libasync")) {
        double c0 = cpu_s();
        double lib = tp_libasync(url, &f);
        tp_figures(label, "libasync", "", lib, f, c0, cpu_s());
        if (f) bench_note("throughput, %s, libasync: %d failed requests this round", label, f);
    }
    if (tp_want("tool")) {
        double start;
        double tool = tp_curl_tool(url, &start);
        snprintf(name, sizeof name, "throughput, %s, curl --parallel, transfer only", label);
        bench_add(name, "req/s", tool);
        snprintf(name, sizeof name, "throughput, %s, curl --parallel, process start + 1 request", label);
        bench_add(name, "ms", start < 0 ? start : start * 1e3);
    }
}

static void throughput_ratio(const char *label)
{
    char name[160], a[160], b[160];
    snprintf(name, sizeof name, "throughput, %s, libasync over the bare loop", label);
    snprintf(a, sizeof a, "throughput, %s, libasync", label);
    snprintf(b, sizeof b, "throughput, %s, bare libcurl multi loop (baseline)", label);
    bench_ratio(name, a, b);
    snprintf(name, sizeof name, "throughput, %s, libasync over the bare socket loop", label);
    snprintf(b, sizeof b, "throughput, %s, bare libcurl socket loop", label);
    bench_ratio(name, a, b);
    snprintf(name, sizeof name, "throughput, %s, libasync over the bare loop with curl's defaults", label);
    snprintf(b, sizeof b, "throughput, %s, bare libcurl multi loop, curl's default options", label);
    bench_ratio(name, a, b);
}

/* --- 4: 10,000 in flight ------------------------------------------------- */

enum { INFLIGHT_N_DEFAULT = 10000 };
static int INFLIGHT_N = INFLIGHT_N_DEFAULT;

typedef struct fl {
    int done, failed;
    double t0, first, last;
    double first_sent, last_sent, max_wait; /* request written; first byte after that */
    double wall, cpu; /* taken when the last answer is in, before cleanup */
    long minflt;      /* the process's minor page faults then */
    char first_error[256];
} fl_t;

static const struct { const char *key, *name, *unit; } fl_figs[] = {
    {"wall", "wall", "s"},
    {"first", "first answer", "s"},
    {"last", "last answer", "s"},
    {"sent1", "first request sent", "s"},
    {"sent", "last request sent", "s"},
    {"wait", "longest server wait", "s"},
    {"cpu", "client CPU", "s"},
    {"rss", "client peak RSS", "MiB"},
    /* First touches of the client's memory, nearly all of its heap
     * growing: the largest part of its kernel time over HTTP/2 (docs/http.md). */
    {"minflt", "client page faults", "faults"},
};

/* One answer, on the run's clock; total, pretransfer and starttransfer are
 * curl's times of the transfer in seconds. */
static void fl_record(fl_t *f, double total, double pretransfer, double starttransfer, const char *error)
{
    f->done++;
    double t = now_s() - f->t0;
    if (f->done == 1) f->first = t;
    f->last = t;
    /* When the request was written, on the run's clock: curl's times count
     * from when curl took the transfer up, which is not when it was added
     * (queued ends there), so only their differences are used, back from
     * now. */
    double sent = t - (total - pretransfer);
    if (sent > f->last_sent) f->last_sent = sent;
    if (f->done == 1 || sent < f->first_sent) f->first_sent = sent;
    double wait = starttransfer - pretransfer;
    if (wait > f->max_wait) f->max_wait = wait;
    if (error && !f->failed++) snprintf(f->first_error, sizeof f->first_error, "%s", error);
}

/* The run is over: its wall and CPU time, before the client's cleanup (which
 * closes 10,000 sockets) so that they are the burst's alone. */
static void fl_finish(fl_t *f)
{
    f->wall = now_s() - f->t0;
    f->cpu = cpu_s();
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    f->minflt = ru.ru_minflt;
}

static void fl_done(async_http_response_t *r, void *arg)
{
    fl_record(arg, r->timings.total, r->timings.pretransfer, r->timings.starttransfer,
              r->error ? r->errmsg : NULL);
    async_http_response_free(r);
}

/* A run's start and end when it is one of several threads' (fl_threads):
 * every thread waits at go once set up, so that the bursts start together,
 * and at end once its last answer is in, so that no thread's cleanup
 * (closing its sockets) runs inside another's burst or its CPU figure.
 * NULL for a run alone. */
typedef struct fl_sync {
    pthread_barrier_t go, end;
} fl_sync_t;

static void fl_start(fl_t *f, fl_sync_t *sync)
{
    if (sync) pthread_barrier_wait(&sync->go);
    f->t0 = now_s();
}

static void fl_end(fl_t *f, fl_sync_t *sync)
{
    fl_finish(f);
    if (sync) pthread_barrier_wait(&sync->end);
}

/* n requests from one client on its own loop, on the calling thread. */
static void fl_libasync(const char *url, fl_t *f, int n, fl_sync_t *sync)
{
    async_loop_t *loop;
    async_http_t *http;
    async_http_opts_t o = {.timeout_ns = ASYNC_SEC(20), .ca_file = ngx_cert[0] ? ngx_cert : NULL};
    async_loop_new(&loop);
    async_http_new(&http, loop, &o);
    async_http_request_t req = {.url = url};
    fl_start(f, sync);
    for (int i = 0; i < n; i++) async_http_send(http, &req, fl_done, f);
    async_loop_run(loop, ASYNC_RUN_DEFAULT);
    fl_end(f, sync);
    async_http_destroy(http);
    async_loop_destroy(loop);
}

/* Levers tried on the bare loops only (docs/http.md, 10,000 in flight):
 * BENCH_HTTP_FL_BUFSIZE=n sets CURLOPT_BUFFERSIZE on each handle, and
 * BENCH_HTTP_FL_SSL_SHARE=1 shares TLS sessions across the burst through
 * one CURLSH, so that one full handshake serves every connection.  Both are
 * off by default; the figures' names do not change with them. */
static long fl_bufsize;
static CURLSH *fl_ssl_share;

/* The bare loops' easy handle: the throughput section's options with the
 * client's 20 s timeout of this section, and CURLOPT_FRESH_CONNECT, which
 * the client sets on every transfer of a burst (no open socket is idle)
 * to skip libcurl 7.88's walk over every connection for one to reuse. */
static CURL *fl_easy(const char *url)
{
    CURL *e = curl_easy_init();
    bare_options(e, url, true);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 20000L);
    if (fl_bufsize > 0) curl_easy_setopt(e, CURLOPT_BUFFERSIZE, fl_bufsize);
    if (strncmp(url, "https:", 6) == 0) {
        /* The client's HTTP/2 options: wait for a connection that may
         * multiplex rather than open one more (response.c). */
        curl_easy_setopt(e, CURLOPT_CAINFO, ngx_cert);
        curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
        if (fl_ssl_share) curl_easy_setopt(e, CURLOPT_SHARE, fl_ssl_share);
    } else {
        curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
    }
    return e;
}

/* Reads the finished transfers of one multi handle; returns how many. */
static int fl_bare_drain(CURLM *m, fl_t *f)
{
    CURLMsg *msg;
    int left, n = 0;
    while ((msg = curl_multi_info_read(m, &left))) {
        if (msg->msg != CURLMSG_DONE) continue;
        CURL *h = msg->easy_handle;
        curl_off_t total = 0, pre = 0, start = 0;
        curl_easy_getinfo(h, CURLINFO_TOTAL_TIME_T, &total);
        curl_easy_getinfo(h, CURLINFO_PRETRANSFER_TIME_T, &pre);
        curl_easy_getinfo(h, CURLINFO_STARTTRANSFER_TIME_T, &start);
        CURLcode rc = msg->data.result;
        /* Removing the handle invalidates msg. */
        curl_multi_remove_handle(m, h);
        fl_record(f, (double)total / 1e6, (double)pre / 1e6, (double)start / 1e6,
                  rc == CURLE_OK ? NULL : curl_easy_strerror(rc));
        n++;
    }
    return n;
}

/* Every request in one multi handle, driven by curl_multi_perform and
 * curl_multi_poll, as the throughput section's bare loop. */
static void fl_bare_poll(const char *url, fl_t *f)
{
    CURLM *m = curl_multi_init();
    CURL **e = calloc((size_t)INFLIGHT_N, sizeof *e);
    int done = 0, running = 0;
    f->t0 = now_s();
    for (int i = 0; i < INFLIGHT_N; i++) {
        e[i] = fl_easy(url);
        curl_multi_add_handle(m, e[i]);
    }
    while (done < INFLIGHT_N) {
        curl_multi_perform(m, &running);
        done += fl_bare_drain(m, f);
        if (done < INFLIGHT_N) curl_multi_poll(m, NULL, 0, 1000, NULL);
    }
    fl_finish(f);
    for (int i = 0; i < INFLIGHT_N; i++) curl_easy_cleanup(e[i]);
    free(e);
    curl_multi_cleanup(m);
}

/* The same requests spread over multi handles of at most SHARD transfers,
 * as the client spreads a burst (docs/http.md, "How it is built"), driven by
 * curl_multi_socket_action from one epoll set and each handle's timer:
 * libasync's design without libev and without the client. */
enum { SHARD_DEFAULT = 256, MUX_SHARD = 100, MAX_SHARDS = 128 };
static int SHARD = SHARD_DEFAULT;

enum { BARE_CORK_MAX = 4 };

typedef struct bare_shard {
    CURLM *m;
    int ep, index;
    double deadline; /* of curl's timer on the run's clock, < 0 for none */
    bool mux;        /* HTTP/2: its connections are corked as the client's */
    curl_socket_t cork[BARE_CORK_MAX]; /* sockets curl watches for it */
    int n_cork;
} bare_shard_t;

/* The client corks a multiplexing shard's connections while curl runs
 * (lib/http/multi.c, drive): so does the bare loop, so that the two write
 * the same segments. */
static void bare_cork_track(bare_shard_t *sh, curl_socket_t s, bool watched)
{
    int i = 0;
    while (i < sh->n_cork && sh->cork[i] != s) i++;
    if (watched && i == sh->n_cork && sh->n_cork < BARE_CORK_MAX) sh->cork[sh->n_cork++] = s;
    else if (!watched && i < sh->n_cork) sh->cork[i] = sh->cork[--sh->n_cork];
}

/* curl_multi_socket_action with the shard's sockets corked for the call: the
 * sockets as they were before it, so that one curl stops watching during
 * the call is uncorked too. */
static void bare_action(bare_shard_t *sh, curl_socket_t fd, int flags, int *running)
{
    curl_socket_t corked[BARE_CORK_MAX];
    int n = sh->n_cork, on = 1, off = 0;
    memcpy(corked, sh->cork, sizeof corked);
    for (int i = 0; i < n; i++) setsockopt(corked[i], IPPROTO_TCP, TCP_CORK, &on, sizeof on);
    curl_multi_socket_action(sh->m, fd, flags, running);
    for (int i = 0; i < n; i++) setsockopt(corked[i], IPPROTO_TCP, TCP_CORK, &off, sizeof off);
}

static int bare_on_socket(CURL *e, curl_socket_t s, int what, void *ud, void *sockp)
{
    (void)e, (void)sockp;
    bare_shard_t *sh = ud;
    if (sh->mux) bare_cork_track(sh, s, what != CURL_POLL_REMOVE);
    epoll_follow(sh->ep, s, what,
                 (struct epoll_event){.data.u64 = (uint64_t)sh->index << 32 | (uint32_t)s});
    return 0;
}

static int bare_on_timer(CURLM *m, long timeout_ms, void *ud)
{
    (void)m;
    ((bare_shard_t *)ud)->deadline = timer_deadline(timeout_ms);
    return 0;
}

/* n requests over the calling thread's own epoll set and multi handles. */
static void fl_bare_socket(const char *url, fl_t *f, int n_req, fl_sync_t *sync)
{
    /* Multiplexing transfers go 100 a multi handle, as the client puts
     * them (MUX_SHARD_CAP in lib/http/http_internal.h): more, and libcurl
     * 7.88 opens a connection for each beyond the first connection's. */
    bool mux = strncmp(url, "https:", 6) == 0;
    int shard = mux && SHARD > MUX_SHARD ? MUX_SHARD : SHARD;
    int n_shards = (n_req + shard - 1) / shard;
    if (n_shards > MAX_SHARDS) n_shards = MAX_SHARDS;
    bare_shard_t sh[MAX_SHARDS];
    int ep = epoll_create1(EPOLL_CLOEXEC);
    for (int i = 0; i < n_shards; i++) {
        sh[i] = (bare_shard_t){.m = curl_multi_init(), .ep = ep, .index = i, .deadline = -1, .mux = mux};
        curl_multi_setopt(sh[i].m, CURLMOPT_SOCKETFUNCTION, bare_on_socket);
        curl_multi_setopt(sh[i].m, CURLMOPT_SOCKETDATA, &sh[i]);
        curl_multi_setopt(sh[i].m, CURLMOPT_TIMERFUNCTION, bare_on_timer);
        curl_multi_setopt(sh[i].m, CURLMOPT_TIMERDATA, &sh[i]);
        curl_multi_setopt(sh[i].m, CURLMOPT_MAX_CONCURRENT_STREAMS, (long)MUX_SHARD);
    }
    CURL **e = calloc((size_t)n_req, sizeof *e);
    int done = 0, running = 0;
    fl_start(f, sync);
    /* Shard by shard, as the client fills the first shard with room. */
    for (int i = 0; i < n_req; i++) {
        e[i] = fl_easy(url);
        int k = i / shard < n_shards ? i / shard : i % n_shards;
        curl_multi_add_handle(sh[k].m, e[i]);
    }
    struct epoll_event evs[256];
    int turn = 0;
    while (done < n_req) {
        double t = now_s(), next = -1;
        for (int i = 0; i < n_shards; i++)
            if (sh[i].deadline >= 0 && (next < 0 || sh[i].deadline < next)) next = sh[i].deadline;
        int ms = next < 0 ? 1000 : next <= t ? 0 : (int)((next - t) * 1e3) + 1;
        int n = epoll_wait(ep, evs, 256, ms);
        for (int i = 0; i < n; i++) {
            bare_shard_t *s = &sh[evs[i].data.u64 >> 32];
            int fd = (int)(uint32_t)evs[i].data.u64;
            int flags = (evs[i].events & EPOLLIN ? CURL_CSELECT_IN : 0) |
                        (evs[i].events & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
                        (evs[i].events & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);
            bare_action(s, fd, flags, &running);
            done += fl_bare_drain(s->m, f);
        }
        /* One expired timer a pass, the shards in turn: the first timer
         * starts a whole shard's connections, and answering those that are
         * ready before starting the next shard sends the first requests
         * sooner (starting all 10,000 first delays them by the whole
         * burst).  A timer left expired makes the next wait 0. */
        t = now_s();
        for (int j = 0; j < n_shards; j++) {
            bare_shard_t *s = &sh[(turn + j) % n_shards];
            if (s->deadline < 0 || s->deadline > t) continue;
            s->deadline = -1;
            bare_action(s, CURL_SOCKET_TIMEOUT, 0, &running);
            done += fl_bare_drain(s->m, f);
            turn = (turn + j + 1) % n_shards;
            break;
        }
    }
    fl_end(f, sync);
    for (int i = 0; i < n_req; i++) curl_easy_cleanup(e[i]);
    free(e);
    for (int i = 0; i < n_shards; i++) curl_multi_cleanup(sh[i].m);
    close(ep);
}

/* The clients of sections 4 and 5.  Those marked threads split the burst
 * over FL_THREADS threads (BENCH_HTTP_FL_THREADS, default 2), each with its
 * own loop and client (or its own bare loop: epoll set and multi handles,
 * sharded as the client shards), an equal share of the burst each, started
 * together: a client belongs to one loop and one thread, so this is how a
 * program spreads a burst's connects over more than one core. */
enum {
    FL_LIBASYNC, FL_BARE_POLL, FL_BARE_SOCKET, FL_H2_LIBASYNC, FL_H2_BARE_SOCKET, FL_NGX_H1_LIBASYNC,
    FL_LIBASYNC_MT, FL_BARE_SOCKET_MT, FL_H2_LIBASYNC_MT, FL_H2_BARE_SOCKET_MT, FL_CLIENTS
};
enum { FL_SRV_BREWERY, FL_SRV_H2, FL_SRV_NGX_H1 };
enum { FL_KIND_LIBASYNC, FL_KIND_BARE_POLL, FL_KIND_BARE_SOCKET };
enum { FL_THREADS_MAX = 16 };
static int FL_THREADS = 2;

static const struct {
    const char *tag; /* its name in BENCH_HTTP_FL */
    int server, kind;
    bool threads; /* FL_THREADS threads, else the calling one */
} fl_clients[FL_CLIENTS] = {
    [FL_LIBASYNC] = {"h1", FL_SRV_BREWERY, FL_KIND_LIBASYNC, false},
    [FL_BARE_POLL] = {"h1-bare-poll", FL_SRV_BREWERY, FL_KIND_BARE_POLL, false},
    [FL_BARE_SOCKET] = {"h1-bare", FL_SRV_BREWERY, FL_KIND_BARE_SOCKET, false},
    [FL_H2_LIBASYNC] = {"h2", FL_SRV_H2, FL_KIND_LIBASYNC, false},
    [FL_H2_BARE_SOCKET] = {"h2-bare", FL_SRV_H2, FL_KIND_BARE_SOCKET, false},
    [FL_NGX_H1_LIBASYNC] = {"ngx-h1", FL_SRV_NGX_H1, FL_KIND_LIBASYNC, false},
    [FL_LIBASYNC_MT] = {"h1-threads", FL_SRV_BREWERY, FL_KIND_LIBASYNC, true},
    [FL_BARE_SOCKET_MT] = {"h1-bare-threads", FL_SRV_BREWERY, FL_KIND_BARE_SOCKET, true},
    [FL_H2_LIBASYNC_MT] = {"h2-threads", FL_SRV_H2, FL_KIND_LIBASYNC, true},
    [FL_H2_BARE_SOCKET_MT] = {"h2-bare-threads", FL_SRV_H2, FL_KIND_BARE_SOCKET, true},
};

/* The name of one client's figure. */
static void fl_name(char *buf, size_t size, int client, const char *fig)
{
    const char *pre = "requests in flight at 1 s latency";
    int t = FL_THREADS;
    if (client == FL_LIBASYNC)
        snprintf(buf, size, "%d %s, %s", INFLIGHT_N, pre, fig);
    else if (client == FL_BARE_POLL)
        snprintf(buf, size, "%d %s, bare curl_multi_poll loop, one multi handle, %s", INFLIGHT_N, pre, fig);
    else if (client == FL_BARE_SOCKET)
        snprintf(buf, size, "%d %s, bare multi_socket loop, %d a multi handle, %s", INFLIGHT_N, pre, SHARD, fig);
    else if (client == FL_H2_LIBASYNC)
        snprintf(buf, size, "%d %s, nginx, HTTP/2 over TLS, %s", INFLIGHT_N, pre, fig);
    else if (client == FL_H2_BARE_SOCKET)
        snprintf(buf, size, "%d %s, nginx, HTTP/2 over TLS, bare multi_socket loop, %d a multi handle, %s",
                 INFLIGHT_N, pre, MUX_SHARD, fig);
    else if (client == FL_NGX_H1_LIBASYNC)
        snprintf(buf, size, "%d %s, nginx, HTTP/1.1, %s", INFLIGHT_N, pre, fig);
    else if (client == FL_LIBASYNC_MT)
        snprintf(buf, size, "%d %s, libasync, %d loops on %d threads, %s", INFLIGHT_N, pre, t, t, fig);
    else if (client == FL_BARE_SOCKET_MT)
        snprintf(buf, size, "%d %s, bare multi_socket loop on %d threads, %d a multi handle, %s", INFLIGHT_N,
                 pre, t, SHARD, fig);
    else if (client == FL_H2_LIBASYNC_MT)
        snprintf(buf, size, "%d %s, nginx, HTTP/2 over TLS, libasync, %d loops on %d threads, %s", INFLIGHT_N,
                 pre, t, t, fig);
    else
        snprintf(buf, size,
                 "%d %s, nginx, HTTP/2 over TLS, bare multi_socket loop on %d threads, %d a multi handle, %s",
                 INFLIGHT_N, pre, t, MUX_SHARD, fig);
}

/* One thread's share of a burst split over threads. */
typedef struct fl_thread {
    pthread_t id;
    const char *url;
    int kind, n;
    fl_sync_t *sync;
    fl_t f;
} fl_thread_t;

static void *fl_thread_main(void *arg)
{
    fl_thread_t *t = arg;
    if (t->kind == FL_KIND_LIBASYNC) fl_libasync(t->url, &t->f, t->n, t->sync);
    else fl_bare_socket(t->url, &t->f, t->n, t->sync);
    return NULL;
}

/* The burst over FL_THREADS threads, each its share on its own loop, and
 * their figures as one run's: on the clock of the thread that started
 * first, the first of the first answers and sends, the last of the last
 * ones, the wall to the last answer of all, and the process's CPU when
 * the last thread had its last answer (the threads that finished earlier
 * wait idle for it before they clean up). */
static void fl_threads(const char *url, int kind, fl_t *f)
{
    int n = FL_THREADS;
    fl_thread_t t[FL_THREADS_MAX];
    fl_sync_t sync;
    /* A CURLSH without lock callbacks belongs to one thread (this is the
     * run's child process: the parent keeps it). */
    fl_ssl_share = NULL;
    pthread_barrier_init(&sync.go, NULL, (unsigned)n);
    pthread_barrier_init(&sync.end, NULL, (unsigned)n);
    for (int i = 0; i < n; i++) {
        t[i] = (fl_thread_t){.url = url, .kind = kind, .n = INFLIGHT_N / n + (i < INFLIGHT_N % n), .sync = &sync};
        if (pthread_create(&t[i].id, NULL, fl_thread_main, &t[i])) {
            /* The others would wait at the barrier for ever. */
            fprintf(stderr, "bench-http: pthread_create failed\n");
            _exit(1);
        }
    }
    for (int i = 0; i < n; i++) pthread_join(t[i].id, NULL);
    pthread_barrier_destroy(&sync.go);
    pthread_barrier_destroy(&sync.end);
    double t0 = t[0].f.t0;
    for (int i = 1; i < n; i++)
        if (t[i].f.t0 < t0) t0 = t[i].f.t0;
    *f = (fl_t){.t0 = t0};
    for (int i = 0; i < n; i++) {
        const fl_t *g = &t[i].f;
        double d = g->t0 - t0; /* this thread's clock on the run's */
        if (g->failed && !f->failed) snprintf(f->first_error, sizeof f->first_error, "%s", g->first_error);
        f->failed += g->failed;
        if (g->done && (!f->done || g->first + d < f->first)) f->first = g->first + d;
        if (g->done && (!f->done || g->first_sent + d < f->first_sent)) f->first_sent = g->first_sent + d;
        f->done += g->done;
        if (g->last + d > f->last) f->last = g->last + d;
        if (g->last_sent + d > f->last_sent) f->last_sent = g->last_sent + d;
        if (g->max_wait > f->max_wait) f->max_wait = g->max_wait;
        if (g->wall + d > f->wall) f->wall = g->wall + d;
        if (g->cpu > f->cpu) f->cpu = g->cpu;
        if (g->minflt > f->minflt) f->minflt = g->minflt;
    }
}

/* One client's run in a child process, so that the CPU and peak RSS are
 * that client's alone. */
static void inflight(unsigned port, int client)
{
    int p[2];
    if (pipe(p)) return;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        struct rlimit rl;
        getrlimit(RLIMIT_NOFILE, &rl);
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        /* BENCH_HTTP_FL_ARENAS=n caps glibc's malloc arenas (M_ARENA_MAX):
         * 1 keeps the threaded clients on the main arena, which grows with
         * brk and M_TOP_PAD's slack instead of one mprotect a page or so
         * (docs/http.md, scaling a client over cores).  Off by default. */
        if (getenv("BENCH_HTTP_FL_ARENAS")) mallopt(M_ARENA_MAX, atoi(getenv("BENCH_HTTP_FL_ARENAS")));
        int server = fl_clients[client].server, kind = fl_clients[client].kind;
        /* One brewery by id: the cheapest route, so the figure is the
         * client's and the connections', not the server's queries. */
        char url[256], first[128];
        snprintf(first, sizeof first, "http://127.0.0.1:%u/v1/breweries?per_page=1", port);
        snprintf(url, sizeof url, "http://127.0.0.1:%u/v1/breweries/meta?by_state=ohio", port);
        async_http_t *blocking;
        if (server == FL_SRV_BREWERY && async_http_new(&blocking, NULL, NULL) == 0) {
            async_http_response_t *r;
            json_t *j;
            if (async_http_get(&r, blocking, first, NULL) == 0 &&
                async_http_response_json(&j, r) == 0) {
                const char *id = json_string_value(json_object_get(json_array_get(j, 0), "id"));
                if (id) snprintf(url, sizeof url, "http://127.0.0.1:%u/v1/breweries/%s", port, id);
                json_decref(j);
            }
            async_http_response_free(r);
            async_http_destroy(blocking);
        }
        if (server == FL_SRV_H2)
            snprintf(url, sizeof url, "https://127.0.0.1:%u/sleep", echo.port);
        else if (server == FL_SRV_NGX_H1)
            snprintf(url, sizeof url, "http://127.0.0.1:%u/sleep", echo_h1_port);
        fl_t f = {0};
        if (fl_clients[client].threads) fl_threads(url, kind, &f);
        else if (kind == FL_KIND_LIBASYNC) fl_libasync(url, &f, INFLIGHT_N, NULL);
        else if (kind == FL_KIND_BARE_POLL) fl_bare_poll(url, &f);
        else fl_bare_socket(url, &f, INFLIGHT_N, NULL);
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        char buf[1024];
        int n = snprintf(buf, sizeof buf,
                         "wall %.6f\nfirst %.6f\nlast %.6f\nsent1 %.6f\nsent %.6f\nwait %.6f\ncpu %.6f\n"
                         "rss %.3f\nminflt %ld\nfailed %d\nerror %s\n",
                         f.wall, f.first, f.last, f.first_sent, f.last_sent, f.max_wait, f.cpu,
                         ru.ru_maxrss / 1024.0, f.minflt, f.failed, f.first_error);
        ssize_t w = write(p[1], buf, (size_t)n);
        (void)w;
        _exit(0);
    }
    close(p[1]);
    char buf[1024];
    ssize_t n, got = 0;
    while ((n = read(p[0], buf + got, sizeof buf - 1 - (size_t)got)) > 0) got += n;
    buf[got] = 0;
    close(p[0]);
    waitpid(pid, NULL, 0);
    double failed = bench_peer_value(buf, "failed");
    for (size_t i = 0; i < sizeof fl_figs / sizeof fl_figs[0]; i++) {
        char name[200];
        fl_name(name, sizeof name, client, fl_figs[i].name);
        bench_add(name, fl_figs[i].unit, failed == 0 ? bench_peer_value(buf, fl_figs[i].key) : -1);
    }
    if (failed != 0) {
        const char *e = strstr(buf, "error ");
        char name[200];
        fl_name(name, sizeof name, client, "failed");
        bench_note("%s: %.0f this round (%s)", name, failed, e ? e + 6 : "no answer");
    }
}

/* Whether tag is one of the comma-separated names in list. */
static bool tag_in(const char *list, const char *tag)
{
    size_t k = strlen(tag);
    for (const char *p = list; p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
        if (!strncmp(p, tag, k) && (p[k] == ',' || p[k] == 0)) return true;
    return false;
}

/* Whether client c runs: BENCH_HTTP_FL=h1,h2-threads,... names the clients
 * (fl_clients' tags; default all), BENCH_HTTP_BARE the brewery-server bare
 * loops, and nginx's clients need nginx with the echo module. */
static bool fl_runs(int c, int bare, bool h2)
{
    const char *only = getenv("BENCH_HTTP_FL");
    if (only && !tag_in(only, fl_clients[c].tag)) return false;
    if (fl_clients[c].server != FL_SRV_BREWERY) return h2;
    int kind = fl_clients[c].kind;
    return kind == FL_KIND_LIBASYNC || (bare & (kind == FL_KIND_BARE_POLL ? 1 : 2));
}

/* Whether figure name has a value in some round. */
static bool fig_measured(const char *name)
{
    for (int i = 0; i < bench_nfigs; i++)
        if (!strcmp(bench_figs[i].name, name)) return bench_figs[i].n > 0;
    return false;
}

/* "<num's name>, <what>, <fig>" for each figure both num and den measured:
 * num over den, round by round. */
static void fl_ratios(int num, int den, int named, const char *what)
{
    static const char *const figs[] = {"wall", "last request sent", "client CPU", "client peak RSS"};
    for (size_t i = 0; i < sizeof figs / sizeof figs[0]; i++) {
        char name[240], a[200], b[200], over[96];
        fl_name(a, sizeof a, num, figs[i]);
        fl_name(b, sizeof b, den, figs[i]);
        if (!fig_measured(a) || !fig_measured(b)) continue;
        snprintf(over, sizeof over, "%s, %s", what, figs[i]);
        fl_name(name, sizeof name, named, over);
        bench_ratio(name, a, b);
    }
}

/* libasync over each bare loop that ran, round by round, for the figures
 * the client's own work moves; and the threaded runs over the one-thread
 * ones. */
static void inflight_ratio(int bare)
{
    if (bare & 1)
        bench_note("%d in flight: the one-multi-handle poll loop walks every transfer in each "
                   "curl_multi_perform and every socket in each curl_multi_poll, and libcurl 7.88 every "
                   "connection on each remove: it grows faster than linearly, so the sharded socket loop "
                   "is the fair baseline (BENCH_HTTP_INFLIGHT=n, BENCH_HTTP_BARE_SHARD=n to check)",
                   INFLIGHT_N);
    fl_ratios(FL_LIBASYNC, FL_BARE_POLL, FL_BARE_POLL, "libasync over it");
    fl_ratios(FL_LIBASYNC, FL_BARE_SOCKET, FL_BARE_SOCKET, "libasync over it");
    fl_ratios(FL_LIBASYNC_MT, FL_BARE_SOCKET_MT, FL_BARE_SOCKET_MT, "libasync over it");
    fl_ratios(FL_LIBASYNC_MT, FL_LIBASYNC, FL_LIBASYNC_MT, "over one loop");
    fl_ratios(FL_BARE_SOCKET_MT, FL_BARE_SOCKET, FL_BARE_SOCKET_MT, "over one thread");
}

/* Section 5's ratios: libasync over the bare loop with the same HTTP/2
 * options, HTTP/2 over HTTP/1.1 against the same nginx, and the threaded
 * runs. */
static void inflight_h2_ratio(void)
{
    fl_ratios(FL_H2_LIBASYNC, FL_H2_BARE_SOCKET, FL_H2_BARE_SOCKET, "libasync over it");
    fl_ratios(FL_H2_LIBASYNC, FL_NGX_H1_LIBASYNC, FL_NGX_H1_LIBASYNC, "HTTP/2 over HTTP/1.1");
    fl_ratios(FL_H2_LIBASYNC_MT, FL_H2_BARE_SOCKET_MT, FL_H2_BARE_SOCKET_MT, "libasync over it");
    fl_ratios(FL_H2_LIBASYNC_MT, FL_H2_LIBASYNC, FL_H2_LIBASYNC_MT, "over one loop");
    fl_ratios(FL_H2_BARE_SOCKET_MT, FL_H2_BARE_SOCKET, FL_H2_BARE_SOCKET_MT, "over one thread");
}

/* BENCH_HTTP_SECTIONS=brewery,throughput,inflight picks sections (default all). */
static bool want(const char *section)
{
    const char *s = getenv("BENCH_HTTP_SECTIONS");
    return !s || strstr(s, section);
}

int main(int argc, char **argv)
{
    (void)argc, (void)argv;
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (getenv("BENCH_HTTP_INFLIGHT")) INFLIGHT_N = atoi(getenv("BENCH_HTTP_INFLIGHT"));
    /* BENCH_HTTP_BARE: 1 the poll loop only, 2 the socket loop only, 3 both (default). */
    int fl_bare = getenv("BENCH_HTTP_BARE") ? atoi(getenv("BENCH_HTTP_BARE")) : 3;
    /* BENCH_HTTP_BARE_SHARD: transfers a multi handle in the socket loop. */
    if (getenv("BENCH_HTTP_BARE_SHARD")) SHARD = atoi(getenv("BENCH_HTTP_BARE_SHARD"));
    if (SHARD < 1) SHARD = SHARD_DEFAULT;
    /* BENCH_HTTP_FL_THREADS: threads (each its own loop) of the threaded clients. */
    if (getenv("BENCH_HTTP_FL_THREADS")) FL_THREADS = atoi(getenv("BENCH_HTTP_FL_THREADS"));
    if (FL_THREADS < 1 || FL_THREADS > FL_THREADS_MAX) FL_THREADS = 2;
    if (getenv("BENCH_HTTP_FL_BUFSIZE")) fl_bufsize = atol(getenv("BENCH_HTTP_FL_BUFSIZE"));
    if (getenv("BENCH_HTTP_FL_SSL_SHARE") && atoi(getenv("BENCH_HTTP_FL_SSL_SHARE")) &&
        (fl_ssl_share = curl_share_init()))
        curl_share_setopt(fl_ssl_share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    bench_start("bench-http");
    child_t slow = {0}, fast = {0}, far = {0}, ngx = {0};
    char dir[64] = "";
    bool brew = want("brewery") && server_start(&slow, "100") == 0;
    /* BENCH_HTTP_TP_SERVERS=brewery,nginx picks the throughput servers (default both). */
    const char *tps = getenv("BENCH_HTTP_TP_SERVERS");
    bool tp = want("throughput") && (!tps || strstr(tps, "brewery")) && server_start(&fast, "0") == 0;
    bool ng = want("throughput") && (!tps || strstr(tps, "nginx")) &&
              nginx_start(&ngx, dir, sizeof dir) == 0;
    bool fl = want("inflight") && server_start(&far, "1000") == 0;
    char echo_dir[64] = "";
    bool fl_h2 = fl && nginx_echo_start(echo_dir, sizeof echo_dir) == 0;
    if (fl && !fl_h2)
        bench_note("inflight over HTTP/2: nginx with the echo module (libnginx-mod-http-echo) did not start");
    if (want("throughput") && !ng) bench_note("throughput, nginx: nginx did not start");
    char url[160], ngx_url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/v1/breweries?by_state=district_of_columbia&per_page=1",
             fast.port);
    snprintf(ngx_url, sizeof ngx_url, "http://127.0.0.1:%u/small.txt", ngx.port);
    for (int r = 0; r < bench_rounds(); r++) {
        if (brew) {
            brewery("brewery, 4 states at 100 ms", "district_of_columbia,maryland,new_york,virginia", slow.port);
            brewery("brewery, all states at 100 ms", "all", slow.port);
        }
        if (tp) throughput("brewery-server", url);
        if (ng) throughput("nginx", ngx_url);
        /* The clients take turns at going first, so that none always
         * finds the server fresh or just after another client's burst. */
        for (int k = 0; fl && k < FL_CLIENTS; k++) {
            int c = (r + k) % FL_CLIENTS;
            if (fl_runs(c, fl_bare, fl_h2)) inflight(far.port, c);
        }
    }
    if (tp) throughput_ratio("brewery-server");
    if (ng) throughput_ratio("nginx");
    if (fl) inflight_ratio(fl_bare);
    if (fl_h2) inflight_h2_ratio();
    bench_print();
    if (brew) child_stop(&slow);
    if (tp) child_stop(&fast);
    if (ng) child_stop(&ngx);
    if (fl) child_stop(&far);
    if (fl_h2) child_stop(&echo);
    for (int i = 0; i < 2; i++) {
        const char *d = i ? echo_dir : dir;
        if (!d[0]) continue;
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf %s", d);
        if (system(cmd)) {}
    }
    if (fl_ssl_share) curl_share_cleanup(fl_ssl_share);
    curl_global_cleanup();
    return 0;
}
