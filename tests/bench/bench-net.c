/* Networking benchmarks: echo round trip on one connection and echo
 * throughput over 100 connections, each for libasync (client and server on
 * tasks) beside libuv (client and server on uv_tcp) built in the same run;
 * 10,000 concurrent connections held by a libasync echo server (memory per
 * connection, accept rate); DNS lookups of localhost per second through
 * c-ares on the loop beside getaddrinfo.  The server always runs in a forked
 * child, the client in this process, over loopback.  One figure per line. */
#include <async.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>
#include "rounds.h"

#define MSG 64
#define ROUND_TRIPS 20000
#define CONNS 100
#define CHUNK 4096
#define THROUGHPUT_NS ASYNC_SEC(2)
#define HELD 10000
#define LOOKUPS 2000

static double secs(int64_t ns) { return (double)ns / 1e9; }

/* --- the libasync echo server -------------------------------------------- */

static int srv_conn(void *arg, void **res)
{
    (void)res;
    int fd = (int)(intptr_t)arg;
    char buf[CHUNK * 4];
    size_t n;
    while (async_sock_read(fd, buf, sizeof buf, &n) == 0)
        if (async_sock_write_all(fd, buf, n, NULL)) break;
    async_sock_close(fd);
    return 0;
}

struct srv {
    int lfd, report; /* report: where to write "first..last accept" timing */
    long accepted, want;
    int64_t first, last;
};

static int srv_accept(void *arg, void **res)
{
    (void)res;
    struct srv *s = arg;
    async_task_opts_t o = {.detached = true, .stack_size = 32 * 1024};
    for (;;) {
        int fd;
        if (async_sock_accept(&fd, s->lfd)) continue;
        int64_t now = async_now();
        if (!s->accepted++) s->first = now;
        s->last = now;
        if (async_task_spawn(NULL, NULL, srv_conn, (void *)(intptr_t)fd, &o)) close(fd);
        if (s->accepted == s->want && s->report >= 0) {
            char line[128];
            int len = snprintf(line, sizeof line, "%lld\n", (long long)(s->last - s->first));
            if (write(s->report, line, (size_t)len) < 0) return 1;
        }
    }
}

static void run_async_server(int lfd, int report, long want)
{
    async_loop_t *loop;
    if (async_loop_new(&loop)) _exit(1);
    struct srv s = {.lfd = lfd, .report = report, .want = want};
    async_task_spawn(NULL, loop, srv_accept, &s, NULL);
    async_loop_run(loop, ASYNC_RUN_DEFAULT);
    _exit(0);
}

/* --- the libuv echo server ------------------------------------------------- */

typedef struct {
    uv_write_t req;
    uv_buf_t buf;
} uv_wr_t;

static void uv_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)h, (void)hint;
    buf->base = malloc(CHUNK * 4);
    buf->len = CHUNK * 4;
}

static void uv_closed(uv_handle_t *h) { free(h); }

static void uv_written(uv_write_t *req, int status)
{
    (void)status;
    uv_wr_t *w = (uv_wr_t *)req;
    free(w->buf.base);
    free(w);
}

static void uv_srv_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    if (n > 0) {
        uv_wr_t *w = malloc(sizeof *w);
        w->buf = uv_buf_init(buf->base, (unsigned)n);
        uv_write(&w->req, s, &w->buf, 1, uv_written);
        return;
    }
    free(buf->base);
    if (n < 0) uv_close((uv_handle_t *)s, uv_closed);
}

static void uv_on_conn(uv_stream_t *server, int status)
{
    if (status < 0) return;
    uv_tcp_t *c = malloc(sizeof *c);
    uv_tcp_init(server->loop, c);
    if (uv_accept(server, (uv_stream_t *)c) == 0) {
        uv_tcp_nodelay(c, 1);
        uv_read_start((uv_stream_t *)c, uv_alloc, uv_srv_read);
    } else {
        uv_close((uv_handle_t *)c, uv_closed);
    }
}

static void run_uv_server(int lfd)
{
    uv_loop_t *loop = uv_default_loop();
    uv_tcp_t server;
    uv_tcp_init(loop, &server);
    if (uv_tcp_open(&server, lfd)) _exit(1);
    if (uv_listen((uv_stream_t *)&server, SOMAXCONN, uv_on_conn)) _exit(1);
    uv_run(loop, UV_RUN_DEFAULT);
    _exit(0);
}

/* Forks a server on a fresh listener; returns its pid, *port its port. */
static pid_t spawn_server(bool uv, int *port, int report, long want)
{
    int lfd;
    if (async_tcp_listen(&lfd, "127.0.0.1", 0, 0)) exit(1);
    *port = async_sock_port(lfd);
    pid_t pid = fork();
    if (pid == 0) {
        if (uv) run_uv_server(lfd);
        else run_async_server(lfd, report, want);
    }
    close(lfd);
    return pid;
}

static void kill_server(pid_t pid)
{
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/* --- libasync clients ------------------------------------------------------- */

struct cli {
    int port;
    int64_t until;
    long rounds;
    long bytes;
};

static int cli_rtt(void *arg, void **res)
{
    (void)res;
    struct cli *c = arg;
    int fd;
    if (async_tcp_connect_ip_dl(&fd, "127.0.0.1", c->port,
                                async_deadline_after(ASYNC_SEC(5)))) return 1;
    char msg[MSG] = {1}, back[MSG];
    for (long i = 0; i < c->rounds; i++)
        if (async_sock_write_all(fd, msg, MSG, NULL) || async_sock_read_full(fd, back, MSG, NULL)) return 1;
    async_sock_close(fd);
    return 0;
}

static int cli_stream(void *arg, void **res)
{
    (void)res;
    struct cli *c = arg;
    int fd;
    if (async_tcp_connect_ip_dl(&fd, "127.0.0.1", c->port,
                                async_deadline_after(ASYNC_SEC(10)))) return 1;
    char buf[CHUNK] = {2};
    while (async_now() < c->until) {
        if (async_sock_write_all(fd, buf, CHUNK, NULL) || async_sock_read_full(fd, buf, CHUNK, NULL)) return 1;
        c->bytes += CHUNK;
    }
    async_sock_close(fd);
    return 0;
}

static double async_rtt_us(int port)
{
    async_loop_t *loop;
    async_loop_new(&loop);
    struct cli c = {.port = port, .rounds = ROUND_TRIPS};
    int64_t t0 = async_now();
    async_task_spawn(NULL, loop, cli_rtt, &c, NULL);
    async_loop_run(loop, ASYNC_RUN_DEFAULT);
    int64_t dt = async_now() - t0;
    async_loop_destroy(loop);
    return secs(dt) * 1e6 / ROUND_TRIPS;
}

static double async_throughput_mb(int port)
{
    async_loop_t *loop;
    async_loop_new(&loop);
    static struct cli c[CONNS];
    int64_t t0 = async_now(), until = t0 + THROUGHPUT_NS;
    for (int i = 0; i < CONNS; i++) {
        c[i] = (struct cli){.port = port, .until = until};
        async_task_spawn(NULL, loop, cli_stream, &c[i], NULL);
    }
    async_loop_run(loop, ASYNC_RUN_DEFAULT);
    int64_t dt = async_now() - t0;
    long total = 0;
    for (int i = 0; i < CONNS; i++) total += c[i].bytes;
    async_loop_destroy(loop);
    return (double)total / 1e6 / secs(dt);
}

/* --- libuv clients ----------------------------------------------------------- */

typedef struct {
    uv_tcp_t tcp;
    uv_connect_t conn;
    char out[CHUNK], in[CHUNK];
    size_t size, got;
    long rounds_left;
    int64_t until;
    long bytes;
} uv_cli_t;

static void uv_cli_send(uv_cli_t *c);

static void uv_cli_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)hint;
    uv_cli_t *c = (uv_cli_t *)h;
    *buf = uv_buf_init(c->in + c->got, (unsigned)(c->size - c->got));
}

static void uv_cli_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    (void)buf;
    uv_cli_t *c = (uv_cli_t *)s;
    if (n < 0) {
        uv_close((uv_handle_t *)s, NULL);
        return;
    }
    c->got += (size_t)n;
    if (c->got < c->size) return;
    c->got = 0;
    c->bytes += (long)c->size;
    bool more = c->until ? async_now() < c->until : --c->rounds_left > 0;
    if (more) {
        uv_cli_send(c);
    } else {
        uv_read_stop(s);
        uv_close((uv_handle_t *)s, NULL);
    }
}

static void uv_cli_wrote(uv_write_t *req, int status)
{
    (void)status;
    free(req);
}

/* A request per write: the echo can arrive before the last write's
 * completion runs, and a uv_write_t must not be reused while in flight. */
static void uv_cli_send(uv_cli_t *c)
{
    uv_buf_t b = uv_buf_init(c->out, (unsigned)c->size);
    uv_write_t *w = malloc(sizeof *w);
    uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, uv_cli_wrote);
}

static void uv_cli_connected(uv_connect_t *req, int status)
{
    uv_cli_t *c = req->data;
    if (status < 0) {
        uv_close((uv_handle_t *)&c->tcp, NULL);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, uv_cli_alloc, uv_cli_read);
    uv_cli_send(c);
}

static int64_t uv_clients(int port, uv_cli_t *cs, int n)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", port, &a);
    int64_t t0 = async_now();
    for (int i = 0; i < n; i++) {
        uv_tcp_init(&loop, &cs[i].tcp);
        cs[i].conn.data = &cs[i];
        uv_tcp_connect(&cs[i].conn, &cs[i].tcp, (struct sockaddr *)&a, uv_cli_connected);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    int64_t dt = async_now() - t0;
    uv_loop_close(&loop);
    return dt;
}

static double uv_rtt_us(int port)
{
    static uv_cli_t c;
    memset(&c, 0, sizeof c);
    c.size = MSG;
    c.rounds_left = ROUND_TRIPS;
    return secs(uv_clients(port, &c, 1)) * 1e6 / ROUND_TRIPS;
}

static double uv_throughput_mb(int port)
{
    static uv_cli_t cs[CONNS];
    memset(cs, 0, sizeof cs);
    int64_t until = async_now() + THROUGHPUT_NS;
    for (int i = 0; i < CONNS; i++) {
        cs[i].size = CHUNK;
        cs[i].until = until;
    }
    int64_t dt = uv_clients(port, cs, CONNS);
    long total = 0;
    for (int i = 0; i < CONNS; i++) total += cs[i].bytes;
    return (double)total / 1e6 / secs(dt);
}

/* --- 10,000 connections held ------------------------------------------------- */

static long rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld", &kib) == 1) break;
    if (f) fclose(f);
    return kib;
}

struct holder {
    int port, fd;
    int ok;
};

static int hold_one(void *arg, void **res)
{
    (void)res;
    struct holder *h = arg;
    if (async_tcp_connect_ip_dl(&h->fd, "127.0.0.1", h->port,
                                async_deadline_after(ASYNC_SEC(30)))) return 1;
    char b = 'x';
    /* One echo proves the server runs a task for this connection. */
    if (async_sock_write_all(h->fd, &b, 1, NULL) || async_sock_read_full(h->fd, &b, 1, NULL)) return 1;
    h->ok = 1;
    return 0;
}

static void bench_held(void)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < HELD + 100) {
        bench_note("connections held: skipped, RLIMIT_NOFILE %llu < %d", (unsigned long long)rl.rlim_cur, HELD + 100);
        return;
    }
    int rep[2];
    if (pipe(rep)) return;
    int port;
    pid_t pid = spawn_server(false, &port, rep[1], HELD);
    close(rep[1]);
    usleep(100000);
    long rss0 = rss_kib(pid);
    async_loop_t *loop;
    async_loop_new(&loop);
    static struct holder h[HELD];
    async_task_opts_t o = {.stack_size = 32 * 1024};
    int64_t t0 = async_now();
    for (int i = 0; i < HELD; i++) {
        h[i] = (struct holder){.port = port, .fd = -1};
        async_task_spawn(NULL, loop, hold_one, &h[i], &o);
    }
    async_loop_run(loop, ASYNC_RUN_DEFAULT);
    int64_t dt = async_now() - t0;
    int ok = 0;
    for (int i = 0; i < HELD; i++) ok += h[i].ok;
    char line[64] = {0};
    ssize_t r = read(rep[0], line, sizeof line - 1);
    long long accept_ns = r > 0 ? atoll(line) : 0;
    usleep(100000);
    long rss1 = rss_kib(pid);
    bench_add("10,000 connections held: how many", "connections", ok);
    bench_add("10,000 connections: connect + first echo (client side)", "connections/s", ok / secs(dt));
    bench_add("10,000 connections: server accept rate", "accepts/s", accept_ns > 0 ? HELD / secs(accept_ns) : -1);
    bench_add("10,000 connections: server memory per held connection (RSS, 32 KiB task stacks)", "KiB",
              (double)(rss1 - rss0) / (ok ? ok : 1));
    for (int i = 0; i < HELD; i++)
        if (h[i].fd >= 0) close(h[i].fd);
    async_loop_destroy(loop);
    close(rep[0]);
    kill_server(pid);
}

/* --- DNS ---------------------------------------------------------------------- */

static int dns_task(void *arg, void **res)
{
    (void)res;
    async_dns_t *d;
    if (async_dns_new(&d, NULL, NULL)) return 1;
    for (int i = 0; i < LOOKUPS; i++) {
        async_addr_t *a;
        size_t n;
        if (async_dns_resolve_dl(&a, &n, d, "localhost", 80, AF_UNSPEC,
                                 async_deadline_after(ASYNC_SEC(5))))
            return 1;
        async_dns_addrs_free(a);
    }
    *(int *)arg = 1;
    async_dns_destroy(d);
    return 0;
}

static void bench_dns(void)
{
    async_loop_t *loop;
    async_loop_new(&loop);
    int ok = 0;
    int64_t t0 = async_now();
    async_task_spawn(NULL, loop, dns_task, &ok, NULL);
    async_loop_run(loop, ASYNC_RUN_DEFAULT);
    int64_t dt = async_now() - t0;
    async_loop_destroy(loop);
    bench_add("DNS lookups of localhost, c-ares on the loop", "lookups/s", ok ? LOOKUPS / secs(dt) : -1);
    t0 = async_now();
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
    for (int i = 0; i < LOOKUPS; i++) {
        struct addrinfo *ai;
        if (getaddrinfo("localhost", "80", &hints, &ai) == 0) freeaddrinfo(ai);
    }
    dt = async_now() - t0;
    bench_add("DNS lookups of localhost, blocking getaddrinfo (baseline)", "lookups/s", LOOKUPS / secs(dt));
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* libuv's writes do not use MSG_NOSIGNAL */
    setvbuf(stdout, NULL, _IOLBF, 0);
    bench_start("bench-net");
    bench_note("echo: %d-byte messages; throughput: %d connections of %d-byte ping-pong", MSG, CONNS, CHUNK);
    for (int r = 0; r < bench_rounds(); r++) {
        int port;
        pid_t pid = spawn_server(false, &port, -1, 0);
        bench_add("echo round trip, one connection, libasync", "us", async_rtt_us(port));
        bench_add("echo throughput, 100 connections, libasync", "MB/s", async_throughput_mb(port));
        kill_server(pid);
        pid = spawn_server(true, &port, -1, 0);
        bench_add("echo round trip, one connection, libuv (baseline)", "us", uv_rtt_us(port));
        bench_add("echo throughput, 100 connections, libuv (baseline)", "MB/s", uv_throughput_mb(port));
        kill_server(pid);
        bench_held();
        bench_dns();
    }
    bench_ratio("echo round trip, libuv over libasync (above 1: ours is faster)",
                "echo round trip, one connection, libuv (baseline)", "echo round trip, one connection, libasync");
    bench_ratio("echo throughput, libasync over libuv", "echo throughput, 100 connections, libasync",
                "echo throughput, 100 connections, libuv (baseline)");
    bench_print();
    return 0;
}
