/* Sockets from tasks: TCP, Unix and UDP, and the faults a network program
 * meets (reset mid-read and mid-write, half-close, a peer that never reads,
 * a listener that never accepts, cancellation, EMFILE on accept), each with
 * its precise error. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <pthread.h>
#include <poll.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "support/proc.h"
#include "support/run.h"

static int64_t dl_ms(int ms) { return async_deadline_after((int64_t)(ASYNC_MSEC(ms) * test_slack())); }

/* Echoes one connection until EOF, then closes it. */
static int echo_conn(void *arg, void **res)
{
    (void)res;
    int fd = (int)(intptr_t)arg;
    char buf[4096];
    size_t n;
    int rc;
    while ((rc = async_sock_read(fd, buf, sizeof buf, &n)) == 0)
        if ((rc = async_sock_write_all(fd, buf, n, NULL))) break;
    async_sock_close(fd);
    return rc == ASYNC_EEOF ? 0 : rc;
}

/* Accepts one connection and echoes it. */
static int echo_one(void *arg, void **res)
{
    int lfd = (int)(intptr_t)arg, c;
    int rc = async_sock_accept_dl(&c, lfd, dl_ms(5000));
    if (rc) return rc;
    return echo_conn((void *)(intptr_t)c, res);
}

static void check_round_trip(int fd)
{
    const char msg[] = "hello, libasync";
    char back[sizeof msg];
    size_t sent = 0, got = 0;
    cr_assert_eq(async_sock_write_all_dl(fd, msg, sizeof msg, &sent, dl_ms(5000)), 0);
    cr_assert_eq(sent, sizeof msg);
    cr_assert_eq(async_sock_read_full_dl(fd, back, sizeof back, &got, dl_ms(5000)), 0);
    cr_assert_eq(got, sizeof msg);
    cr_assert_str_eq(back, msg);
}

static int t_tcp_echo(void *arg, void **res)
{
    (void)arg, (void)res;
    int lfd, fd;
    cr_assert_eq(async_tcp_listen(&lfd, "127.0.0.1", 0, 0), 0);
    int port = async_sock_port(lfd);
    cr_assert_gt(port, 0, "port 0 binds a real port, readable back");
    cr_assert(fcntl(lfd, F_GETFD) & FD_CLOEXEC);
    cr_assert(fcntl(lfd, F_GETFL) & O_NONBLOCK);
    int on = 0;
    socklen_t ol = sizeof on;
    cr_assert_eq(getsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &on, &ol), 0);
    cr_assert(on);
    async_task_t srv;
    cr_assert_eq(async_task_spawn(&srv, NULL, echo_one, (void *)(intptr_t)lfd, NULL), 0);
    cr_assert_eq(async_tcp_connect_ip_dl(&fd, "127.0.0.1", port, dl_ms(5000)), 0);
    cr_assert(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    cr_assert(fcntl(fd, F_GETFL) & O_NONBLOCK);
    check_round_trip(fd);
    check_round_trip(fd);
    cr_assert_eq(async_sock_close(fd), 0);
    cr_assert_eq(async_task_await(srv, NULL), 0, "the server saw a clean EOF");
    async_sock_close(lfd);
    return 0;
}
Test(net, tcp_listen_port0_accept_connect_echo, .timeout = 20)
{
    cr_assert_eq(test_run_task(t_tcp_echo, NULL, NULL), 0);
}

static int t_unix_echo(void *arg, void **res)
{
    (void)arg, (void)res;
    char path[64];
    snprintf(path, sizeof path, "/tmp/test-net-%d.sock", (int)getpid());
    int lfd, fd;
    cr_assert_eq(async_unix_listen(&lfd, path, 0), 0);
    async_sock_close(lfd);
    /* The stale socket file of a dead server does not stop a new listen. */
    cr_assert_eq(async_unix_listen(&lfd, path, 0), 0);
    /* A live server's socket file is not stale: it stays that server's. */
    int l2, probe;
    cr_assert_eq(async_unix_listen(&l2, path, 0), ASYNC_EADDRINUSE);
    /* The server saw the probe that found it alive: a connection that ends
     * at once. */
    char c1;
    size_t n1;
    cr_assert_eq(async_sock_accept_dl(&probe, lfd, dl_ms(5000)), 0);
    cr_assert_eq(async_sock_read_dl(probe, &c1, 1, &n1, dl_ms(5000)), ASYNC_EEOF);
    async_sock_close(probe);
    async_task_t srv;
    cr_assert_eq(async_task_spawn(&srv, NULL, echo_one, (void *)(intptr_t)lfd, NULL), 0);
    cr_assert_eq(async_unix_connect_dl(&fd, path, dl_ms(5000)), 0);
    check_round_trip(fd);
    async_sock_close(fd);
    cr_assert_eq(async_task_await(srv, NULL), 0);
    async_sock_close(lfd);
    unlink(path);
    cr_assert_eq(async_unix_connect_dl(&fd, path, dl_ms(1000)), ASYNC_ENOENT);
    return 0;
}
Test(net, unix_listen_connect_echo, .timeout = 20)
{
    cr_assert_eq(test_run_task(t_unix_echo, NULL, NULL), 0);
}

static int t_udp(void *arg, void **res)
{
    (void)arg, (void)res;
    int a, b;
    cr_assert_eq(async_udp_bind(&a, "127.0.0.1", 0), 0);
    cr_assert_eq(async_udp_bind(&b, "127.0.0.1", 0), 0);
    struct sockaddr_storage to;
    socklen_t tolen = sizeof to;
    cr_assert_eq(getsockname(b, (struct sockaddr *)&to, &tolen), 0);
    char buf[64];
    size_t n;
    /* Nothing sent yet: the receive waits and ends at its deadline. */
    int64_t t0 = async_now();
    cr_assert_eq(async_udp_recv_dl(b, buf, sizeof buf, &n, NULL, NULL, async_deadline_after(ASYNC_MSEC(50))),
                 ASYNC_ETIMEDOUT);
    cr_assert_geq(async_now() - t0, ASYNC_MSEC(50));
    cr_assert_eq(async_udp_send_dl(a, "ping", 4, (struct sockaddr *)&to, tolen, dl_ms(1000)), 0);
    struct sockaddr_storage from;
    socklen_t fromlen = sizeof from;
    cr_assert_eq(async_udp_recv_dl(b, buf, sizeof buf, &n, (struct sockaddr *)&from, &fromlen, dl_ms(1000)), 0);
    cr_assert_eq(n, 4);
    cr_assert_eq(memcmp(buf, "ping", 4), 0);
    cr_assert_eq(((struct sockaddr_in *)&from)->sin_port, htons((uint16_t)async_sock_port(a)));
    async_sock_close(a);
    async_sock_close(b);
    return 0;
}
Test(net, udp_send_recv_and_recv_deadline, .timeout = 20)
{
    cr_assert_eq(test_run_task(t_udp, NULL, NULL), 0);
}

/* A connected pair over loopback TCP: *c the client side, *s the server's. */
static void tcp_pair(int *c, int *s)
{
    int lfd;
    cr_assert_eq(async_tcp_listen(&lfd, "127.0.0.1", 0, 0), 0);
    cr_assert_eq(async_tcp_connect_ip_dl(c, "127.0.0.1", async_sock_port(lfd), dl_ms(5000)), 0);
    cr_assert_eq(async_sock_accept_dl(s, lfd, dl_ms(5000)), 0);
    async_sock_close(lfd);
}

static void reset_close(int fd)
{
    struct linger lg = {1, 0}; /* close sends RST instead of FIN */
    cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    close(fd);
}

static int reset_later(void *arg, void **res)
{
    (void)res;
    async_sleep(ASYNC_MSEC(30));
    reset_close((int)(intptr_t)arg);
    return 0;
}

static int t_reset_read(void *arg, void **res)
{
    (void)arg, (void)res;
    int c, s;
    tcp_pair(&c, &s);
    async_task_t t;
    cr_assert_eq(async_task_spawn(&t, NULL, reset_later, (void *)(intptr_t)s, NULL), 0);
    char buf[16];
    size_t n;
    /* The reader is blocked when the reset arrives. */
    cr_assert_eq(async_sock_read_dl(c, buf, sizeof buf, &n, dl_ms(5000)), ASYNC_ECONNRESET);
    cr_assert_eq(async_task_await(t, NULL), 0);
    async_sock_close(c);
    return 0;
}
Test(net, peer_reset_mid_read_is_econnreset, .timeout = 20)
{
    cr_assert_eq(test_run_task(t_reset_read, NULL, NULL), 0);
}

/* Reads a little, then resets: the writer is blocked on a full buffer. */
static int read_then_reset(void *arg, void **res)
{
    (void)res;
    int fd = (int)(intptr_t)arg;
    char buf[4096];
    size_t n;
    cr_assert_eq(async_sock_read(fd, buf, sizeof buf, &n), 0);
    async_sleep(ASYNC_MSEC(30));
    reset_close(fd);
    return 0;
}

static int t_reset_write(void *arg, void **res)
{
    (void)arg, (void)res;
    int c, s;
    tcp_pair(&c, &s);
    async_task_t t;
    cr_assert_eq(async_task_spawn(&t, NULL, read_then_reset, (void *)(intptr_t)s, NULL), 0);
    size_t len = (size_t)64 << 20, sent = 0;
    char *big = calloc(1, len);
    /* The kernel says ECONNRESET while the RST is pending, EPIPE after: a
     * write says EPIPE either way. */
    int rc = async_sock_write_all_dl(c, big, len, &sent, dl_ms(10000));
    cr_assert_eq(rc, ASYNC_EPIPE, "got %s", async_errname(rc));
    cr_assert_gt(sent, 0);
    cr_assert_lt(sent, len);
    /* A later write to the dead connection fails too, and still no SIGPIPE. */
    rc = async_sock_write_all_dl(c, big, 1, &sent, dl_ms(1000));
    cr_assert_eq(rc, ASYNC_EPIPE, "got %s", async_errname(rc));
    free(big);
    cr_assert_eq(async_task_await(t, NULL), 0);
    async_sock_close(c);
    return 0;
}
Test(net, peer_reset_mid_write_is_epipe_never_sigpipe, .timeout = 30)
{
    signal(SIGPIPE, SIG_DFL); /* a SIGPIPE would kill the test */
    cr_assert_eq(test_run_task(t_reset_write, NULL, NULL), 0);
}

/* A peer that closed (FIN) and then reset our first write's data leaves
 * EPIPE on the socket; a peer that reset the connection at once leaves
 * ECONNRESET, then EPIPE.  Every write after either is ASYNC_EPIPE. */
static int t_gone_peer_write(void *arg, void **res)
{
    (void)arg, (void)res;
    for (int reset = 0; reset < 2; reset++) {
        int c, s;
        tcp_pair(&c, &s);
        if (reset) reset_close(s);
        else async_sock_close(s);
        size_t sent;
        int rc = 0, i;
        for (i = 0; i < 100 && !rc; i++) rc = async_sock_write_all_dl(c, "x", 1, &sent, dl_ms(5000));
        cr_assert_eq(rc, ASYNC_EPIPE, "reset %d, write %d got %s", reset, i, async_errname(rc));
        cr_assert_eq(sent, 0);
        rc = async_sock_write_all_dl(c, "x", 1, &sent, dl_ms(5000));
        cr_assert_eq(rc, ASYNC_EPIPE, "reset %d got %s", reset, async_errname(rc));
        async_sock_close(c);
    }
    return 0;
}
Test(net, write_to_closed_or_reset_peer_is_epipe_every_time, .timeout = 20)
{
    signal(SIGPIPE, SIG_DFL);
    cr_assert_eq(test_run_task(t_gone_peer_write, NULL, NULL), 0);
}

/* What the kernel says comes out as one of common.h's codes, never a raw
 * -errno without an ASYNC_ name. */
static int t_kernel_codes(void *arg, void **res)
{
    (void)arg, (void)res;
    char buf[8];
    size_t n;
    int p[2];
    cr_assert_eq(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    /* The wrong end of a pipe (EBADF): the wrong mode. */
    cr_assert_eq(async_sock_read(p[1], buf, sizeof buf, &n), ASYNC_ENOTSUP);
    cr_assert_eq(async_sock_write_all(p[0], "x", 1, NULL), ASYNC_ENOTSUP);
    /* Not a socket (ENOTSOCK), not a listening one (EINVAL). */
    int fd;
    cr_assert_eq(async_sock_accept(&fd, p[0]), ASYNC_EINVAL);
    cr_assert_eq(async_sock_port(p[0]), ASYNC_EINVAL);
    close(p[0]);
    close(p[1]);
    /* A descriptor that is not open (EBADF). */
    cr_assert_eq(async_sock_read(p[0], buf, sizeof buf, &n), ASYNC_EINVAL);
    cr_assert_eq(async_sock_write_all(p[0], "x", 1, NULL), ASYNC_EINVAL);
    /* An unconnected stream socket: ENOTCONN on read and shutdown, EPIPE on
     * a write; a shutdown has no peer to reach, like the write. */
    int u = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    cr_assert_geq(u, 0);
    cr_assert_eq(async_sock_read(u, buf, sizeof buf, &n), ASYNC_EINVAL);
    cr_assert_eq(async_sock_write_all(u, "x", 1, NULL), ASYNC_EPIPE);
    cr_assert_eq(async_sock_shutdown(u, SHUT_WR), ASYNC_EPIPE);
    cr_assert_eq(async_sock_shutdown(u, 42), ASYNC_EINVAL);
    cr_assert_eq(async_sock_accept(&fd, u), ASYNC_EINVAL);
    close(u);
    /* A datagram without an address on an unconnected socket (EDESTADDRREQ),
     * and one too long for UDP (EMSGSIZE). */
    int d;
    cr_assert_eq(async_udp_bind(&d, "127.0.0.1", 0), 0);
    cr_assert_eq(async_udp_send_dl(d, "x", 1, NULL, 0, dl_ms(1000)), ASYNC_EINVAL);
    struct sockaddr_storage to;
    socklen_t tolen = sizeof to;
    cr_assert_eq(getsockname(d, (struct sockaddr *)&to, &tolen), 0);
    size_t big = 70000;
    char *huge = calloc(1, big);
    cr_assert_eq(async_udp_send_dl(d, huge, big, (struct sockaddr *)&to, tolen, dl_ms(1000)), ASYNC_EINVAL);
    free(huge);
    async_sock_close(d);
    /* Binding an address that is not this machine's (EADDRNOTAVAIL). */
    cr_assert_eq(async_tcp_listen(&fd, "192.0.2.1", 0, 0), ASYNC_EINVAL);
    /* A path through a regular file (ENOTDIR): nothing is there. */
    char file[64], path[80];
    snprintf(file, sizeof file, "/tmp/test-net-file-%d", (int)getpid());
    int f = open(file, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    cr_assert_geq(f, 0);
    close(f);
    snprintf(path, sizeof path, "%s/sock", file);
    cr_assert_eq(async_unix_connect_dl(&fd, path, dl_ms(1000)), ASYNC_ENOENT);
    unlink(file);
    /* A datagram socket at the path (EPROTOTYPE): no stream listens there. */
    snprintf(path, sizeof path, "/tmp/test-net-dgram-%d.sock", (int)getpid());
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    strcpy(un.sun_path, path);
    int g = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    cr_assert_eq(bind(g, (struct sockaddr *)&un, sizeof un), 0);
    cr_assert_eq(async_unix_connect_dl(&fd, path, dl_ms(1000)), ASYNC_ECONNREFUSED);
    close(g);
    unlink(path);
    return 0;
}
Test(net, kernel_errors_come_out_as_common_codes, .timeout = 20)
{
    cr_assert_eq(test_run_task(t_kernel_codes, NULL, NULL), 0);
}

static bool sigpipe_blocked(void)
{
    sigset_t cur;
    pthread_sigmask(SIG_BLOCK, NULL, &cur);
    return sigismember(&cur, SIGPIPE);
}

static bool sigpipe_pending(void)
{
    sigset_t p;
    sigpending(&p);
    return sigismember(&p, SIGPIPE);
}

/* A pipe handed to write_all goes through write(2), which has no
 * MSG_NOSIGNAL: with the reader gone it must still be ASYNC_EPIPE, with
 * SIGPIPE's default action (death) in place, no SIGPIPE left pending and
 * the thread's mask as it was.  A SIGPIPE pending before is someone else's
 * and stays. */
static int t_pipe_sigpipe(void *arg, void **res)
{
    (void)arg, (void)res;
    int p[2];
    cr_assert_eq(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    cr_assert_eq(async_sock_write_all(p[1], "ok", 2, NULL), 0, "a pipe with a reader");
    close(p[0]);
    size_t sent = 1;
    cr_assert_eq(async_sock_write_all(p[1], "gone", 4, &sent), ASYNC_EPIPE);
    cr_assert_eq(sent, 0);
    cr_assert(!sigpipe_blocked(), "the mask is restored");
    cr_assert(!sigpipe_pending(), "the write's SIGPIPE was taken");
    /* The caller blocks SIGPIPE and has one pending of its own. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    cr_assert_eq(pthread_sigmask(SIG_BLOCK, &set, NULL), 0);
    raise(SIGPIPE);
    cr_assert(sigpipe_pending());
    cr_assert_eq(async_sock_write_all(p[1], "gone", 4, NULL), ASYNC_EPIPE);
    cr_assert(sigpipe_blocked(), "still blocked, as the caller had it");
    cr_assert(sigpipe_pending(), "the caller's own SIGPIPE is left alone");
    struct timespec zero = {0, 0};
    cr_assert_eq(sigtimedwait(&set, NULL, &zero), SIGPIPE);
    /* Blocked by the caller, none pending: the write's own is taken. */
    cr_assert_eq(async_sock_write_all(p[1], "gone", 4, NULL), ASYNC_EPIPE);
    cr_assert(!sigpipe_pending());
    cr_assert_eq(pthread_sigmask(SIG_UNBLOCK, &set, NULL), 0);
    close(p[1]);
    return 0;
}
Test(net, write_to_pipe_whose_reader_closed_is_epipe_never_sigpipe, .timeout = 20)
{
    signal(SIGPIPE, SIG_DFL); /* a SIGPIPE would kill the test */
    cr_assert_eq(test_run_task(t_pipe_sigpipe, NULL, NULL), 0);
}

static int t_half_close(void *arg, void **res)
{
    (void)arg, (void)res;
    int c, s;
    tcp_pair(&c, &s);
    cr_assert_eq(async_sock_write_all(c, "last", 4, NULL), 0);
    cr_assert_eq(async_sock_shutdown(c, SHUT_WR), 0);
    char buf[16];
    size_t got = 0;
    /* Exactly 8 asked for, 4 came before the FIN: EEOF, and got says 4. */
    cr_assert_eq(async_sock_read_full_dl(s, buf, 8, &got, dl_ms(5000)), ASYNC_EEOF);
    cr_assert_eq(got, 4);
    size_t n;
    cr_assert_eq(async_sock_read_dl(s, buf, sizeof buf, &n, dl_ms(5000)), ASYNC_EEOF);
    /* The other direction still works. */
    cr_assert_eq(async_sock_write_all(s, "reply", 5, NULL), 0);
    cr_assert_eq(async_sock_read_full_dl(c, buf, 5, &got, dl_ms(5000)), 0);
    cr_assert_eq(memcmp(buf, "reply", 5), 0);
    async_sock_close(s);
    cr_assert_eq(async_sock_read_dl(c, buf, sizeof buf, &n, dl_ms(5000)), ASYNC_EEOF);
    async_sock_close(c);
    return 0;
}
Test(net, half_close_reads_eof_and_writes_on, .timeout = 20)
{
    cr_assert_eq(test_run_task(t_half_close, NULL, NULL), 0);
}

static int t_never_reads(void *arg, void **res)
{
    (void)arg, (void)res;
    int c, s;
    tcp_pair(&c, &s);
    size_t len = (size_t)64 << 20, sent = 0;
    char *big = calloc(1, len);
    int64_t t0 = async_now();
    int rc = async_sock_write_all_dl(c, big, len, &sent, async_deadline_after(ASYNC_MSEC(200)));
    cr_assert_eq(rc, ASYNC_ETIMEDOUT, "got %s", async_errname(rc));
    cr_assert_geq(async_now() - t0, ASYNC_MSEC(200));
    cr_assert_gt(sent, 0, "the socket buffers took some before filling");
    cr_assert_lt(sent, len);
    /* What was reported sent is exactly what the peer can read. */
    size_t total = 0, n;
    char *sink = malloc(1 << 16);
    async_sock_close(c);
    while (async_sock_read_dl(s, sink, 1 << 16, &n, dl_ms(5000)) == 0) total += n;
    cr_assert_eq(total, sent);
    free(sink);
    free(big);
    async_sock_close(s);
    return 0;
}
Test(net, write_to_peer_that_never_reads_times_out_with_bytes_sent, .timeout = 30)
{
    cr_assert_eq(test_run_task(t_never_reads, NULL, NULL), 0);
}

static int t_backlog(void *arg, void **res)
{
    (void)arg, (void)res;
    int lfd;
    cr_assert_eq(async_tcp_listen(&lfd, "127.0.0.1", 0, 1), 0);
    int port = async_sock_port(lfd);
    /* Nobody accepts: the backlog fills and a later connect hangs. */
    int fds[16], nfds = 0, rc = 0;
    while (nfds < 16) {
        int64_t t0 = async_now();
        rc = async_tcp_connect_ip_dl(&fds[nfds], "127.0.0.1", port,
                                     async_deadline_after(ASYNC_MSEC(300)));
        if (rc) {
            cr_assert_geq(async_now() - t0, ASYNC_MSEC(300));
            break;
        }
        nfds++;
    }
    cr_assert_eq(rc, ASYNC_ETIMEDOUT, "a full backlog makes connect time out, got %s", async_errname(rc));
    cr_assert_lt(nfds, 16);
    for (int i = 0; i < nfds; i++) async_sock_close(fds[i]);
    async_sock_close(lfd);
    return 0;
}
Test(net, connect_to_listener_that_never_accepts_times_out, .timeout = 30)
{
    cr_assert_eq(test_run_task(t_backlog, NULL, NULL), 0);
}

static int blocked_read(void *arg, void **res)
{
    (void)res;
    char buf[8];
    size_t n;
    return async_sock_read((int)(intptr_t)arg, buf, sizeof buf, &n);
}

static int blocked_write(void *arg, void **res)
{
    size_t len = (size_t)64 << 20;
    char *big = calloc(1, len);
    size_t *sent = malloc(sizeof *sent);
    *sent = 0;
    int rc = async_sock_write_all((int)(intptr_t)arg, big, len, sent);
    free(big);
    *res = sent;
    return rc;
}

static int blocked_accept(void *arg, void **res)
{
    (void)res;
    int fd;
    return async_sock_accept(&fd, (int)(intptr_t)arg);
}

static int t_cancel(void *arg, void **res)
{
    (void)arg, (void)res;
    int c, s, c2, s2;
    tcp_pair(&c, &s);   /* c reads, s never writes */
    tcp_pair(&c2, &s2); /* s2 writes, c2 never reads */
    async_task_t r, w, a;
    cr_assert_eq(async_task_spawn(&r, NULL, blocked_read, (void *)(intptr_t)c, NULL), 0);
    cr_assert_eq(async_task_spawn(&w, NULL, blocked_write, (void *)(intptr_t)s2, NULL), 0);
    cr_assert_eq(async_task_spawn(&a, NULL, blocked_read, (void *)(intptr_t)-1, NULL), 0);
    async_sleep(ASYNC_MSEC(50));
    cr_assert_eq(async_task_done(r), 0);
    cr_assert_eq(async_task_done(w), 0);
    cr_assert_eq(async_task_cancel(r), 0);
    cr_assert_eq(async_task_cancel(w), 0);
    cr_assert_eq(async_task_await(r, NULL), ASYNC_ECANCELED);
    void *sent = NULL;
    cr_assert_eq(async_task_await(w, &sent), ASYNC_ECANCELED);
    cr_assert_gt(*(size_t *)sent, 0, "a cancelled write reports what went out");
    free(sent);
    cr_assert_eq(async_task_await(a, NULL), ASYNC_EINVAL);
    int lfd;
    cr_assert_eq(async_tcp_listen(&lfd, "127.0.0.1", 0, 0), 0);
    cr_assert_eq(async_task_spawn(&a, NULL, blocked_accept, (void *)(intptr_t)lfd, NULL), 0);
    async_sleep(ASYNC_MSEC(20));
    cr_assert_eq(async_task_cancel(a), 0);
    cr_assert_eq(async_task_await(a, NULL), ASYNC_ECANCELED);
    async_sock_close(lfd);
    async_sock_close(c);
    async_sock_close(s);
    async_sock_close(c2);
    async_sock_close(s2);
    return 0;
}
Test(net, cancel_ends_blocked_read_and_write_with_ecanceled, .timeout = 20)
{
    cr_assert_eq(test_run_task(t_cancel, NULL, NULL), 0);
}

/* A cancelled task still completes every call that needs no wait (the
 * table's cancellation rule); only a call that would have to wait returns
 * ASYNC_ECANCELED. */
static int t_cancelled_completes(void *arg, void **res)
{
    (void)arg, (void)res;
    int c, s, lfd, ufd, a, b;
    tcp_pair(&c, &s);
    cr_assert_eq(async_tcp_listen(&lfd, "127.0.0.1", 0, 0), 0);
    cr_assert_eq(async_tcp_connect_ip_dl(&ufd, "127.0.0.1", async_sock_port(lfd), dl_ms(5000)), 0);
    char path[64];
    snprintf(path, sizeof path, "/tmp/test-net-cancel-%d.sock", (int)getpid());
    int ulfd;
    cr_assert_eq(async_unix_listen(&ulfd, path, 0), 0);
    cr_assert_eq(async_udp_bind(&a, "127.0.0.1", 0), 0);
    cr_assert_eq(async_udp_bind(&b, "127.0.0.1", 0), 0);
    struct sockaddr_storage to;
    socklen_t tolen = sizeof to;
    cr_assert_eq(getsockname(b, (struct sockaddr *)&to, &tolen), 0);
    cr_assert_eq(async_sock_write_all(s, "ready", 5, NULL), 0);

    cr_assert_eq(async_task_cancel(async_task_self()), 0);
    cr_assert(async_task_cancelled());
    char buf[16];
    size_t n, sent;
    /* Data already there is read; then there is none and the read would wait. */
    struct pollfd pc = {.fd = c, .events = POLLIN};
    cr_assert_eq(poll(&pc, 1, 5000), 1, "the data is there");
    cr_assert_eq(async_sock_read(c, buf, sizeof buf, &n), 0);
    cr_assert_eq(n, 5);
    cr_assert_eq(async_sock_read(c, buf, sizeof buf, &n), ASYNC_ECANCELED);
    /* Room in the buffer: the write goes out; a write too big to fit writes
     * what fits and stops where it would wait. */
    cr_assert_eq(async_sock_write_all(c, "abc", 3, &sent), 0);
    cr_assert_eq(sent, 3);
    size_t len = (size_t)64 << 20;
    char *big = calloc(1, len);
    cr_assert_eq(async_sock_write_all(c, big, len, &sent), ASYNC_ECANCELED);
    cr_assert_gt(sent, 0);
    cr_assert_lt(sent, len);
    free(big);
    /* A connection is waiting: accepted; none left: the accept would wait. */
    int fd;
    cr_assert_eq(async_sock_accept(&fd, lfd), 0);
    async_sock_close(fd);
    cr_assert_eq(async_sock_accept(&fd, lfd), ASYNC_ECANCELED);
    /* A Unix connect completes at once when the backlog has room. */
    cr_assert_eq(async_unix_connect_dl(&fd, path, ASYNC_FOREVER), 0);
    async_sock_close(fd);
    /* Datagrams: a send goes out, the one that is there is received. */
    cr_assert_eq(async_udp_send_dl(a, "dg", 2, (struct sockaddr *)&to, tolen, ASYNC_FOREVER), 0);
    struct pollfd pf = {.fd = b, .events = POLLIN};
    cr_assert_eq(poll(&pf, 1, 5000), 1, "the datagram is there");
    cr_assert_eq(async_udp_recv_dl(b, buf, sizeof buf, &n, NULL, NULL, ASYNC_FOREVER), 0);
    cr_assert_eq(n, 2);
    cr_assert_eq(async_udp_recv_dl(b, buf, sizeof buf, &n, NULL, NULL, ASYNC_FOREVER), ASYNC_ECANCELED);
    async_sock_close(a);
    async_sock_close(b);
    async_sock_close(ulfd);
    unlink(path);
    async_sock_close(ufd);
    async_sock_close(lfd);
    async_sock_close(c);
    async_sock_close(s);
    return 0;
}
Test(net, cancelled_task_completes_calls_that_need_no_wait, .timeout = 20)
{
    cr_assert_eq(test_run_task(t_cancelled_completes, NULL, NULL), 0);
}

static int t_bad_input(void *arg, void **res)
{
    (void)arg, (void)res;
    int fd;
    char buf[4];
    size_t n;
    cr_assert_eq(async_tcp_listen(&fd, "not-an-ip", 0, 0), ASYNC_EINVAL);
    cr_assert_eq(async_tcp_listen(&fd, "127.0.0.1", 70000, 0), ASYNC_EINVAL);
    cr_assert_eq(async_tcp_listen(NULL, "127.0.0.1", 0, 0), ASYNC_EINVAL);
    cr_assert_eq(async_unix_listen(&fd, NULL, 0), ASYNC_EINVAL);
    char longpath[200];
    memset(longpath, 'a', sizeof longpath - 1);
    longpath[sizeof longpath - 1] = 0;
    cr_assert_eq(async_unix_listen(&fd, longpath, 0), ASYNC_EINVAL);
    cr_assert_eq(async_sock_read(-1, buf, sizeof buf, &n), ASYNC_EINVAL);
    cr_assert_eq(async_sock_read(0, buf, 0, &n), ASYNC_EINVAL);
    cr_assert_eq(async_sock_accept(&fd, -1), ASYNC_EINVAL);
    cr_assert_eq(async_sock_close(-1), ASYNC_EINVAL);
    cr_assert_eq(async_tcp_connect_ip_dl(&fd, NULL, 80, dl_ms(100)), ASYNC_EINVAL);
    /* A port nobody listens on. */
    int lfd;
    cr_assert_eq(async_tcp_listen(&lfd, "127.0.0.1", 0, 0), 0);
    int port = async_sock_port(lfd);
    async_sock_close(lfd);
    cr_assert_eq(async_tcp_connect_ip_dl(&fd, "127.0.0.1", port, dl_ms(5000)), ASYNC_ECONNREFUSED);
    cr_assert_eq(async_tcp_listen(&lfd, "127.0.0.1", 0, 0), 0);
    int l2;
    cr_assert_eq(async_tcp_listen(&l2, "127.0.0.1", async_sock_port(lfd), 0), ASYNC_EADDRINUSE);
    async_sock_close(lfd);
    cr_assert_str_eq(async_net_strerror(ASYNC_ECONNRESET), "connection reset by peer");
    cr_assert_str_eq(async_net_strerror(ASYNC_ETIMEDOUT), async_strerror(ASYNC_ETIMEDOUT));
    return 0;
}
Test(net, bad_input_gives_precise_errors, .timeout = 20)
{
    cr_assert_eq(test_run_task(t_bad_input, NULL, NULL), 0);
}

Test(net, blocking_call_outside_task_is_enotask, .timeout = 10)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    char buf[4];
    size_t n;
    cr_assert_eq(async_sock_read(sv[0], buf, sizeof buf, &n), ASYNC_ENOTASK);
    /* Data already there needs no task. */
    cr_assert_eq(async_sock_write_all(sv[1], "ab", 2, NULL), 0);
    cr_assert_eq(async_sock_read(sv[0], buf, sizeof buf, &n), 0);
    cr_assert_eq(n, 2);
    close(sv[0]);
    close(sv[1]);
}

/* --- EMFILE: a server under a low descriptor limit ------------------------ */

struct emfile_srv {
    int lfd;
    int accepted, emfile, echoed_conns;
    bool stop;
};

struct emfile_conn_arg {
    struct emfile_srv *s;
    int fd;
};

static int emfile_conn(void *arg, void **res)
{
    struct emfile_conn_arg *a = arg;
    struct emfile_srv *s = a->s;
    int fd = a->fd;
    free(a);
    int rc = echo_conn((void *)(intptr_t)fd, res);
    if (!rc) s->echoed_conns++;
    return 0;
}

static int emfile_accept(void *arg, void **res)
{
    (void)res;
    struct emfile_srv *s = arg;
    while (!s->stop) {
        int c;
        int rc = async_sock_accept_dl(&c, s->lfd, async_deadline_after(ASYNC_MSEC(100)));
        if (rc == ASYNC_ETIMEDOUT) continue;
        if (rc == ASYNC_EMFILE) {
            s->emfile++;
            continue;
        }
        if (rc) return rc;
        s->accepted++;
        struct emfile_conn_arg *box = malloc(sizeof *box);
        box->s = s;
        box->fd = c;
        async_task_opts_t o = {.detached = true, .stack_size = 64 * 1024};
        if (async_task_spawn(NULL, NULL, emfile_conn, box, &o)) {
            free(box);
            close(c);
        }
    }
    return 0;
}

/* Child: the server, with few descriptors.  Writes its port to wfd, serves
 * until the parent closes ctl, then writes "accepted emfile cpu_ms". */
static int emfile_child_task(void *arg, void **res)
{
    (void)res;
    int *io = arg; /* io[0] the write end of the report pipe, io[1] ctl read end */
    struct emfile_srv s = {0};
    if (async_tcp_listen(&s.lfd, "127.0.0.1", 0, 128)) return 1;
    int port = async_sock_port(s.lfd);
    if (write(io[0], &port, sizeof port) != sizeof port) return 2;
    async_task_t acc;
    if (async_task_spawn(&acc, NULL, emfile_accept, &s, NULL)) return 3;
    char b;
    size_t n;
    async_sock_read(io[1], &b, 1, &n); /* EOF when the parent is done */
    s.stop = true;
    async_task_await(acc, NULL);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    long cpu_ms = ru.ru_utime.tv_sec * 1000 + ru.ru_utime.tv_usec / 1000 + ru.ru_stime.tv_sec * 1000 +
                  ru.ru_stime.tv_usec / 1000;
    char line[64];
    int len = snprintf(line, sizeof line, "%d %d %ld\n", s.accepted, s.emfile, cpu_ms);
    if (write(io[0], line, (size_t)len) != len) return 4;
    async_sock_close(s.lfd);
    return 0;
}

static int block_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

/* 1 if fd echoes, 0 if the server closed it. */
static int echoes(int fd)
{
    if (send(fd, "x", 1, MSG_NOSIGNAL) != 1) return 0;
    char b;
    return recv(fd, &b, 1, 0) == 1 && b == 'x';
}

Test(net, emfile_on_accept_keeps_serving_recovers_and_never_spins, .timeout = 60)
{
    int rep[2], ctl[2];
    cr_assert_eq(pipe2(rep, O_CLOEXEC), 0);
    cr_assert_eq(pipe2(ctl, O_CLOEXEC | O_NONBLOCK), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        close(rep[0]);
        close(ctl[1]);
        /* Room for the loop's own descriptors, the listener, the reserve
         * and a handful of connections: 12 free numbers below the limit.
         * Counted as free numbers, not as the highest open descriptor plus
         * 12, because the kernel hands out the lowest free number and the
         * holes below the highest open one (many under ThreadSanitizer's
         * runtime) would add to the budget. */
        int limit = 0;
        for (int fd = 0, free_fds = 0; fd < 4096 && free_fds < 12; fd++, limit = fd)
            if (fcntl(fd, F_GETFD) < 0) free_fds++;
        struct rlimit rl = {(rlim_t)limit, (rlim_t)limit};
        if (setrlimit(RLIMIT_NOFILE, &rl)) _exit(10);
        int io[2] = {rep[1], ctl[0]};
        test_child_exit(test_run_task(emfile_child_task, io, NULL) ? 11 : 0);
    }
    close(rep[1]);
    close(ctl[0]);
    int port;
    cr_assert_eq(read(rep[0], &port, sizeof port), (ssize_t)sizeof port);
    int first = block_connect(port);
    cr_assert(echoes(first), "served before the limit");
    /* Far more connections than the child has descriptors. */
    enum { N = 40 };
    int fds[N], served = 0, dropped = 0;
    for (int i = 0; i < N; i++) fds[i] = block_connect(port);
    for (int i = 0; i < N; i++) {
        if (echoes(fds[i])) served++;
        else dropped++;
    }
    cr_assert_gt(served, 0);
    cr_assert_gt(dropped, 0, "some connections must have met EMFILE");
    cr_assert(echoes(first), "the existing connection is still served at the limit");
    /* Sit at the limit for a while: a spinning server would burn CPU here. */
    usleep(500 * 1000);
    /* Free the server's descriptors: new connections are served again. */
    for (int i = 0; i < N; i++) close(fds[i]);
    usleep(200 * 1000);
    int later = block_connect(port);
    cr_assert(echoes(later), "accept recovers once descriptors are free");
    close(later);
    close(first);
    close(ctl[1]);
    char line[64] = {0};
    ssize_t r = read(rep[0], line, sizeof line - 1);
    cr_assert_gt(r, 0);
    int accepted, emfile;
    long cpu_ms;
    cr_assert_eq(sscanf(line, "%d %d %ld", &accepted, &emfile, &cpu_ms), 3);
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
    cr_assert_geq(emfile, dropped, "every dropped connection was one EMFILE report");
    cr_assert_leq(emfile, N, "EMFILE came once per connection it dropped, not in a spin");
    cr_assert_eq(accepted, served + 2);
    cr_assert_lt(cpu_ms, 400 * test_slack(), "the server used %ld ms of CPU: a spin", cpu_ms);
    close(rep[0]);
}
