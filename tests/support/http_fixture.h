/* The fixture that the HTTP client's fault tests share (test-http-faults.c,
 * -multi.c, -broken-servers.c, -start-failures.c, -decoding.c, -tls-peers.c): the
 * counting allocator, the fault-injecting test server (tests/support/httpd.h)
 * and a loop, set up before each test and checked after it.  The teardown
 * fails the test (tests/support/teardown.h) if the loop would not close or
 * anything the library allocated is still live.  Include it once, in a test
 * file: it defines the file's srv and loop, and the suite's .init and .fini.
 *
 * Beside it, the pieces the hostile reviews share: a scripted server (a
 * forked process group on a loopback port that plays a broken peer, raw_*),
 * and the measure of a wait (run_one, expect_no_spin): how long it took,
 * how much CPU the loop's thread spent and how many turns the loop made. */
#ifndef TEST_SUPPORT_HTTP_FIXTURE_H
#define TEST_SUPPORT_HTTP_FIXTURE_H
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <async.h>
#include <async/http.h>
#include "alloc.h"
#include "httpd.h"
#include "teardown.h"

static test_httpd_t *srv;
static async_loop_t *loop;

static inline void http_fixture_setup(void)
{
    test_alloc_install();
    srv = test_httpd_start();
    cr_assert(srv, "test server did not start");
    cr_assert_eq(async_loop_new(&loop), 0);
}

static inline void http_fixture_teardown(void)
{
    TEARDOWN_CHECK(async_loop_destroy(loop) == 0, "the loop would not close");
    test_httpd_stop(srv);
    TEARDOWN_CHECK_NO_LEAK();
    test_alloc_uninstall();
}

/* --- a scripted server ------------------------------------------------------
 *
 * A process group forked for the test: its first process accepts, and each
 * connection gets a process of its own.  With raw_start, that process reads
 * requests and answers each as its path says (the test's answer function);
 * with raw_start_conn, it hands the connection to the test's function whole
 * (a TLS peer that misbehaves, say).  Counters live in shared memory; the
 * test's data set up before the start is the children's too (fork).  Each
 * of its processes dies with the one that forked it (PR_SET_PDEATHSIG), the
 * first with the thread that called raw_start: call it from the test's own
 * thread, and stop the server in the suite's .fini (raw_stop), so that a
 * failed check leaves nothing running. */

typedef struct raw_stats {
    atomic_long connections, requests;
} raw_stats_t;

typedef struct raw_srv raw_srv_t;
/* Answers one request for path on fd; returns false to end the connection. */
typedef bool (*raw_answer_fn)(int fd, const char *path);
/* Serves connection fd, in a process of its own, until it is done. */
typedef void (*raw_conn_fn)(raw_srv_t *s, int fd);

struct raw_srv {
    pid_t pid;
    unsigned port;
    raw_stats_t *st;
    raw_answer_fn answer;
    char url[160];
};

/* Writes all of s; the end of this connection's process if the client went. */
static inline void raw_put(int fd, const void *s, size_t n)
{
    const char *p = s;
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) _exit(0);
        p += w;
        n -= (size_t)w;
    }
}

static inline void raw_puts(int fd, const char *s) { raw_put(fd, s, strlen(s)); }

static inline void nap_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) && errno == EINTR) {}
}

/* Reads one request's head (to the blank line) into buf; false at the end
 * of the connection. */
static inline bool raw_read_head(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    while (n + 1 < cap) {
        ssize_t r = recv(fd, buf + n, cap - 1 - n, 0);
        if (r <= 0) return false;
        n += (size_t)r;
        buf[n] = 0;
        if (strstr(buf, "\r\n\r\n")) return true;
    }
    return false;
}

/* The connection of raw_start: requests answered by path, in turn. */
static inline void raw_http_conn(raw_srv_t *s, int fd)
{
    char head[8192];
    while (raw_read_head(fd, head, sizeof head)) {
        atomic_fetch_add(&s->st->requests, 1);
        char path[256] = "";
        sscanf(head, "%*s %255s", path);
        if (!s->answer(fd, path)) break;
    }
}

/* In a child just forked by parent: asks for SIGKILL when parent ends, and
 * ends at once if parent has already gone (it died between the fork and
 * the prctl, and the signal would never come).  A scripted server's
 * processes so die with the test's, even where no teardown runs: the test
 * timed out, crashed, or failed under a runner that skips its .fini. */
static inline void raw_die_with(pid_t parent)
{
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(1);
}

static inline void raw_start_conn(raw_srv_t *s, raw_conn_fn conn)
{
    raw_answer_fn answer = s->answer;
    memset(s, 0, sizeof *s);
    s->answer = answer;
    s->st = mmap(NULL, sizeof *s->st, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(s->st, MAP_FAILED);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(lfd, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    cr_assert_eq(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(lfd, 64), 0);
    cr_assert_eq(getsockname(lfd, (struct sockaddr *)&a, &al), 0);
    s->port = ntohs(a.sin_port);
    fflush(NULL);
    pid_t test = getpid();
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        raw_die_with(test);
        setpgid(0, 0);
        signal(SIGCHLD, SIG_IGN); /* connection processes reap themselves */
        pid_t acceptor = getpid();
        for (;;) {
            int fd = accept(lfd, NULL, NULL);
            if (fd < 0) continue;
            atomic_fetch_add(&s->st->connections, 1);
            if (fork() == 0) {
                raw_die_with(acceptor);
                close(lfd);
                conn(s, fd);
                close(fd);
                _exit(0);
            }
            close(fd);
        }
    }
    setpgid(pid, pid);
    s->pid = pid;
    close(lfd);
}

static inline void raw_start(raw_srv_t *s, raw_answer_fn answer)
{
    s->answer = answer;
    raw_start_conn(s, raw_http_conn);
}

/* Never signals a pid <= 0: kill(-0) is the caller's own process group. */
static inline void raw_stop(raw_srv_t *s)
{
    if (s->pid > 0) {
        kill(-s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
        s->pid = 0;
    }
    if (s->st) munmap(s->st, sizeof *s->st);
    s->st = NULL;
}

/* "http://127.0.0.1:PORT" + path, in s's buffer (the next call overwrites it). */
static inline const char *raw_url(raw_srv_t *s, const char *path)
{
    snprintf(s->url, sizeof s->url, "http://127.0.0.1:%u%s", s->port, path);
    return s->url;
}

/* --- measuring a wait ------------------------------------------------------- */

/* This thread's CPU time, user and system, in seconds. */
static inline double thread_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_THREAD, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

typedef struct waited {
    async_http_response_t *resp;
    int calls;
    double wall, cpu;  /* seconds */
    unsigned iters;    /* loop iterations */
} waited_t;

static inline void on_waited(async_http_response_t *resp, void *arg)
{
    waited_t *w = arg;
    w->calls++;
    async_http_response_free(w->resp);
    w->resp = resp;
}

/* One request on a new client on the fixture's loop, run to its end while
 * the wall time, this thread's CPU time and the loop's turns are counted. */
static inline waited_t run_one(const async_http_opts_t *o, const async_http_request_t *req)
{
    async_http_t *http;
    cr_assert_eq(async_http_new(&http, loop, o), 0);
    waited_t w = {0};
    struct ev_loop *ev = async_loop_ev(loop);
    unsigned it0 = ev_iteration(ev);
    double cpu0 = thread_cpu();
    int64_t t0 = async_now();
    cr_assert_eq(async_http_send(http, req, on_waited, &w), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    w.wall = (double)(async_now() - t0) / 1e9;
    w.cpu = thread_cpu() - cpu0;
    w.iters = ev_iteration(ev) - it0;
    cr_assert_eq(w.calls, 1, "the request ended %d times", w.calls);
    cr_assert_not_null(w.resp);
    cr_assert_eq(async_http_destroy(http), 0);
    cr_log_info("%s: %s after %.3f s, %.3f s CPU, %u loop turns", req->url,
                w.resp->error ? w.resp->errmsg : "ok", w.wall, w.cpu, w.iters);
    return w;
}

/* A wait that blocked in the poll: a few turns for each of the server's
 * writes (writes_per_s of them a second), and a small share of the wall
 * time on the CPU.  A spinning loop turns tens of thousands of times a
 * second and is on the CPU whenever it can be. */
static inline void expect_no_spin(const waited_t *w, double writes_per_s)
{
    double turns = 4 * (writes_per_s + 2) * (w->wall + 1);
    cr_expect_lt(w->iters, turns, "%u loop turns in %.2f s: the wait spun", w->iters, w->wall);
    cr_expect_lt(w->cpu, 0.25 * w->wall + 0.05, "%.3f s CPU in %.3f s: the wait spun", w->cpu,
                 w->wall);
}
/* --- the scripted server's stock answers (test-http-broken-servers.c, ---
 * test-http-start-failures.c): a path names how the server misbehaves. */

/* Answers one request for path; returns false to end the connection. */
static inline bool raw_answer(int fd, const char *path)
{
    char line[256];
    if (!strcmp(path, "/ok")) {
        raw_puts(fd, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        return true;
    }
    if (!strncmp(path, "/trickle", 8)) {
        /* A status line, then a header one byte at a time, for ever. */
        raw_puts(fd, "HTTP/1.1 200 OK\r\nX-Slow: ");
        for (;;) {
            nap_ms(100);
            raw_puts(fd, "a");
        }
    }
    if (!strcmp(path, "/slow-ok")) {
        nap_ms(300);
        raw_puts(fd, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        return true;
    }
    if (!strcmp(path, "/silent")) {
        for (;;) nap_ms(1000);
    }
    if (!strcmp(path, "/headers-forever")) {
        /* Header lines as fast as the client takes them. */
        raw_puts(fd, "HTTP/1.1 200 OK\r\n");
        char h[160];
        memset(h, 'h', sizeof h);
        for (unsigned long i = 0;; i++) {
            int n = snprintf(line, sizeof line, "X-Junk-%lu: ", i);
            raw_put(fd, line, (size_t)n);
            raw_put(fd, h, sizeof h);
            raw_put(fd, "\r\n", 2);
        }
    }
    if (!strcmp(path, "/continue-forever")) {
        for (;;) {
            raw_puts(fd, "HTTP/1.1 100 Continue\r\n\r\n");
            nap_ms(5);
        }
    }
    if (!strcmp(path, "/bad-chunked")) {
        raw_puts(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n");
        nap_ms(200);
        return false;
    }
    if (!strcmp(path, "/chunked-forever")) {
        raw_puts(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        char c[4096 + 16];
        int n = snprintf(c, sizeof c, "1000\r\n");
        memset(c + n, 'c', 4096);
        memcpy(c + n + 4096, "\r\n", 2);
        for (;;) raw_put(fd, c, (size_t)n + 4096 + 2);
    }
    if (!strcmp(path, "/short-close")) {
        raw_puts(fd, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
        return false;
    }
    if (!strcmp(path, "/short-open")) {
        raw_puts(fd, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
        for (;;) nap_ms(1000);
    }
    if (!strcmp(path, "/long")) {
        /* Says 2 bytes, sends more on a connection it keeps open: the rest
         * must not be read as the next answer. */
        raw_puts(fd, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n"
                  "Content-Length: 6\r\n\r\nforged");
        return true;
    }
    if (!strcmp(path, "/loop")) {
        raw_puts(fd, "HTTP/1.1 302 Found\r\nLocation: /loop\r\nContent-Length: 0\r\n\r\n");
        return true;
    }
    if (!strcmp(path, "/reset")) {
        raw_puts(fd, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n");
        char b[1000];
        memset(b, 'r', sizeof b);
        raw_put(fd, b, sizeof b);
        nap_ms(100);
        struct linger lg = {1, 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(fd);
        _exit(0);
    }
    if (!strcmp(path, "/status-in-headers")) {
        /* A line shaped like a status line where a header belongs: curl
         * reads the first line's status, and so must the client. */
        raw_puts(fd, "HTTP/1.1 200 OK\r\nX-Before: 1\r\nHTTP/1.1 503 Service Unavailable: x\r\n"
                  "X-After: 2\r\nContent-Length: 2\r\n\r\nok");
        return true;
    }
    if (!strcmp(path, "/nul-in-header")) {
        /* A NUL byte inside a header's value, after a blank, on a line that
         * begins with a CR (the fuzzer's find): curl 7.88 looks for NUL
         * bytes in a header line, but not in one that begins so.  As a C
         * string the value would be the blank alone. */
        static const char r[] = "HTTP/1.1 200 OK\r\nX-Before: 1\n\rX-Nul:\r\0tail\n"
                                "Content-Length: 2\r\n\r\nok";
        raw_put(fd, r, sizeof r - 1);
        return true;
    }
    if (!strcmp(path, "/success-in-headers")) {
        raw_puts(fd, "HTTP/1.1 500 Internal Server Error\r\nHTTP/2 200 OK: x\r\nContent-Length: 4\r\n"
                  "\r\nfail");
        return true;
    }
    snprintf(line, sizeof line, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    raw_puts(fd, line);
    return true;
}

#endif
