/* Sockets awaited from tasks: TCP and Unix-domain streams, UDP datagrams.
 *
 * Every call first tries the system call on the non-blocking descriptor and
 * waits for readiness (async_wait_fd_dl) only when it would block, so data
 * already there costs no switch, and a cancelled task (or a passed deadline)
 * still completes what can complete at once: only the wait returns
 * ASYNC_ECANCELED (or the deadline's code).  Writes go through
 * send(MSG_NOSIGNAL), and a pipe's write(2) runs with SIGPIPE blocked on the
 * thread (write_nosigpipe), so a gone reader gives EPIPE and never SIGPIPE.
 * Accept keeps one reserved descriptor per process for the EMFILE case (see
 * accept_emfile). */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include "net_internal.h"

const char *async_net_strerror(int err)
{
    switch (err) {
    case -ENETUNREACH: return "network unreachable";
    case -EHOSTUNREACH: return "host unreachable";
    default: return async_strerror(err);
    }
}

/* --- the kernel's errors, in common.h's codes ----------------------------- */

/* Every errno a socket call can end with becomes one of common.h's codes, so
 * that a caller meets one code per situation.  The only two that pass
 * through without an ASYNC_ name are ENETUNREACH and EHOSTUNREACH (their
 * -DOWN variants folded in): routing failures that a network program reports
 * as they are, and that async_net_strerror names. */
int async__net_errno(int e)
{
    switch (e) {
    case EIO:
    case EMFILE:
    case ENFILE:
    case ENOENT:
    case EPIPE:
    case ETIMEDOUT:
    case ECONNRESET:
    case ECONNREFUSED:
    case EADDRINUSE:
    case ENETUNREACH:
    case EHOSTUNREACH:
        return -e;
    case ENETDOWN: return -ENETUNREACH;
    case EHOSTDOWN: return -EHOSTUNREACH;
    case EPERM:
    case EACCES:
    case EROFS: return ASYNC_EPERM;
    case ENOMEM:
    case ENOBUFS: return ASYNC_ENOMEM;
    case ENOTDIR: return ASYNC_ENOENT; /* a path component is not a directory */
    case EAFNOSUPPORT:
    case EPROTONOSUPPORT: return ASYNC_ENOTSUP; /* a kernel without IPv6, say */
    case EPROTOTYPE: return ASYNC_ECONNREFUSED; /* a datagram socket at a stream's path */
    case EBADF:
    case ENOTSOCK:
    case EINVAL:
    case EFAULT:
    case EOPNOTSUPP:
    case ENOTCONN:
    case EISCONN:
    case EDESTADDRREQ:
    case EMSGSIZE:
    case EADDRNOTAVAIL:
    case EISDIR:
    case ELOOP:
    case ENAMETOOLONG: return ASYNC_EINVAL;
    default: return ASYNC_EIO;
    }
}

/* A descriptor that is open but not for this direction (the write end of a
 * pipe handed to a read) is the wrong mode, not a bad argument. */
static int wrong_mode(int fd, int e, int forbidden)
{
    if (e != EBADF) return 0;
    int fl = fcntl(fd, F_GETFL);
    return fl >= 0 && (fl & O_ACCMODE) == forbidden;
}

/* A read from a connection that died (reset, or the kernel's own timers gave
 * up on it) is ASYNC_ECONNRESET; the kernel's ETIMEDOUT must not pass for a
 * deadline. */
static int read_errno(int fd, int e)
{
    if (e == ECONNRESET || e == ETIMEDOUT) return ASYNC_ECONNRESET;
    if (wrong_mode(fd, e, O_WRONLY)) return ASYNC_ENOTSUP;
    return async__net_errno(e);
}

/* A write to a peer that is gone is ASYNC_EPIPE, whether the kernel says
 * EPIPE or, when the peer's RST is still pending on the socket, ECONNRESET. */
static int write_errno(int fd, int e)
{
    if (e == EPIPE || e == ECONNRESET || e == ETIMEDOUT || e == ENOTCONN) return ASYNC_EPIPE;
    if (wrong_mode(fd, e, O_RDONLY)) return ASYNC_ENOTSUP;
    return async__net_errno(e);
}

/* A connect that finds no free local port says EADDRNOTAVAIL. */
static int connect_errno(int e)
{
    return e == EADDRNOTAVAIL ? ASYNC_EADDRINUSE : async__net_errno(e);
}

int async__sockaddr_ip(const char *ip, int port, struct sockaddr_storage *ss, socklen_t *len)
{
    if (port < 0 || port > 65535) return ASYNC_EINVAL;
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (!ip) {
        in4->sin_family = AF_INET;
        in4->sin_addr.s_addr = htonl(INADDR_ANY);
        in4->sin_port = htons((uint16_t)port);
        *len = sizeof *in4;
    } else if (inet_pton(AF_INET, ip, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        *len = sizeof *in4;
    } else if (inet_pton(AF_INET6, ip, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        *len = sizeof *in6;
    } else {
        return ASYNC_EINVAL;
    }
    return 0;
}

static int unix_addr(const char *path, struct sockaddr_un *un, socklen_t *len)
{
    if (!path || strlen(path) >= sizeof un->sun_path || !*path) return ASYNC_EINVAL;
    memset(un, 0, sizeof *un);
    un->sun_family = AF_UNIX;
    strcpy(un->sun_path, path);
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1);
    return 0;
}

/* --- the reserved descriptor -------------------------------------------- */

/* One per process, shared by every loop's listeners: it is touched only when
 * accept runs out of descriptors, under this mutex. */
static pthread_mutex_t reserve_lock = PTHREAD_MUTEX_INITIALIZER;
static int reserve_fd = -1;

static void reserve_take(void)
{
    pthread_mutex_lock(&reserve_lock);
    if (reserve_fd < 0) reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    pthread_mutex_unlock(&reserve_lock);
}

/* accept failed with EMFILE or ENFILE, which Linux reports before it looks
 * at the backlog.  A connection waiting there keeps the listener readable,
 * so returning at once would have a server loop spin on it: free the
 * reserve, take the connection and close it (the client sees an orderly
 * close), and take the reserve back.  Returns DROPPED when a connection went
 * that way, EMPTY when none was waiting, NO_RESERVE when there was no reserve
 * to spend. */
enum { DROPPED, EMPTY, NO_RESERVE };

static int accept_emfile(int lfd)
{
    int rc = NO_RESERVE;
    pthread_mutex_lock(&reserve_lock);
    if (reserve_fd >= 0) {
        close(reserve_fd);
        reserve_fd = -1;
        int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (c >= 0) {
            close(c);
            rc = DROPPED;
        } else {
            rc = errno == EAGAIN || errno == EWOULDBLOCK ? EMPTY : DROPPED;
        }
        reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    }
    pthread_mutex_unlock(&reserve_lock);
    return rc;
}

/* --- listen, accept, connect -------------------------------------------- */

static int new_socket(int family, int type, int *fd)
{
    int s = socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s < 0) return async__net_errno(errno);
    *fd = s;
    return 0;
}

static int bind_listen(int s, const struct sockaddr *sa, socklen_t len, int backlog)
{
    if (bind(s, sa, len) < 0) return async__net_errno(errno);
    if (listen(s, backlog <= 0 ? SOMAXCONN : backlog) < 0) return async__net_errno(errno);
    reserve_take();
    return 0;
}

int async_tcp_listen(int *fd, const char *ip, int port, int backlog)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int s = -1, rc = async__sockaddr_ip(ip, port, &ss, &len);
    if (rc) return rc;
    if (!fd) return ASYNC_EINVAL;
    if ((rc = new_socket(ss.ss_family, SOCK_STREAM, &s))) return rc;
    int one = 1;
    if (setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0) {
        rc = async__net_errno(errno);
        goto fail;
    }
    if ((rc = bind_listen(s, (struct sockaddr *)&ss, len, backlog))) goto fail;
    *fd = s;
    return 0;
fail:
    close(s);
    return rc;
}

/* True when a server still listens on the socket file at un: a connect is
 * taken (or finds the backlog full) rather than refused. */
static bool unix_alive(const struct sockaddr_un *un, socklen_t len)
{
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s < 0) return false;
    bool alive = connect(s, (const struct sockaddr *)un, len) == 0 || errno != ECONNREFUSED;
    close(s);
    return alive;
}

int async_unix_listen(int *fd, const char *path, int backlog)
{
    struct sockaddr_un un;
    socklen_t len;
    int s = -1, rc = unix_addr(path, &un, &len);
    if (rc) return rc;
    if (!fd) return ASYNC_EINVAL;
    /* A socket file left by a dead server would make bind fail forever, so
     * it goes; one a live server listens on is that server's (unlinking it
     * would steal its address), and anything else at path is not ours. */
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
        if (unix_alive(&un, len)) return ASYNC_EADDRINUSE;
        unlink(path);
    }
    if ((rc = new_socket(AF_UNIX, SOCK_STREAM, &s))) return rc;
    if ((rc = bind_listen(s, (struct sockaddr *)&un, len, backlog))) {
        close(s);
        return rc;
    }
    *fd = s;
    return 0;
}

int async_sock_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) return async__net_errno(errno);
    if (ss.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6) return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ASYNC_EINVAL;
}

int async_sock_accept_dl(int *fd, int lfd, int64_t deadline)
{
    if (lfd < 0 || !fd) return ASYNC_EINVAL;
    int rc;
    for (;;) {
        int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c >= 0) {
            *fd = c;
            return 0;
        }
        int e = errno;
        switch (e) {
        case EAGAIN:
#if EWOULDBLOCK != EAGAIN
        case EWOULDBLOCK:
#endif
            break;
        case EINTR:
        case ECONNABORTED: /* the client gave up while queued: take the next */
        /* Linux reports a queued connection's pending network error from
         * accept; accept(2) says to treat those like EAGAIN: take the next. */
        case EPROTO:
        case ENOPROTOOPT:
        case ENETDOWN:
        case ENETUNREACH:
        case EHOSTDOWN:
        case EHOSTUNREACH:
        case ENONET:
        case ETIMEDOUT:
        case ECONNRESET:
            continue;
        case EMFILE:
        case ENFILE:
            switch (accept_emfile(lfd)) {
            case EMPTY: /* nobody waits: wait for a client as usual */
                break;
            case NO_RESERVE: {
                /* Wait a little, so that a caller looping on EMFILE does not
                 * spin on the pending connection; a plain thread cannot
                 * sleep here, and gets the descriptor error at once. */
                int64_t pause = async_deadline_after(ASYNC_MSEC(50));
                rc = async_sleep_dl(pause < deadline ? pause : deadline);
                return rc && rc != ASYNC_ENOTASK ? rc : -e;
            }
            default:
                return -e; /* ASYNC_EMFILE or ASYNC_ENFILE, as the kernel said */
            }
            break;
        default:
            return async__net_errno(e);
        }
        if ((rc = async_wait_fd_dl(lfd, ASYNC_READABLE, deadline))) return rc;
    }
}

int async_sock_accept(int *fd, int lfd)
{
    return async_sock_accept_dl(fd, lfd, ASYNC_FOREVER);
}

int async__connect_start(const struct sockaddr *addr, socklen_t len, int *fd, bool *pending)
{
    int s = -1, rc = new_socket(addr->sa_family, SOCK_STREAM, &s);
    if (rc) return rc;
    if (addr->sa_family != AF_UNIX) {
        int one = 1; /* request/response protocols suffer from Nagle */
        setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    *pending = false;
    if (connect(s, addr, len) < 0) {
        if (errno != EINPROGRESS && errno != EAGAIN) {
            rc = connect_errno(errno);
            close(s);
            return rc;
        }
        *pending = true;
    }
    *fd = s;
    return 0;
}

int async__connect_result(int fd)
{
    int err = 0;
    socklen_t l = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0) return async__net_errno(errno);
    return err ? connect_errno(err) : 0;
}

int async_sock_connect_dl(int *fd, const struct sockaddr *addr, socklen_t len, int64_t deadline)
{
    if (!addr || !fd) return ASYNC_EINVAL;
    int s = -1;
    bool pending;
    int rc = async__connect_start(addr, len, &s, &pending);
    if (rc) return rc;
    if (pending) {
        rc = async_wait_fd_dl(s, ASYNC_WRITABLE, deadline);
        if (!rc) rc = async__connect_result(s);
        if (rc) {
            close(s);
            return rc;
        }
    }
    *fd = s;
    return 0;
}

int async_tcp_connect_ip_dl(int *fd, const char *ip, int port, int64_t deadline)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (!ip) return ASYNC_EINVAL;
    int rc = async__sockaddr_ip(ip, port, &ss, &len);
    if (rc) return rc;
    return async_sock_connect_dl(fd, (struct sockaddr *)&ss, len, deadline);
}

int async_unix_connect_dl(int *fd, const char *path, int64_t deadline)
{
    struct sockaddr_un un;
    socklen_t len;
    int rc = unix_addr(path, &un, &len);
    if (rc) return rc;
    return async_sock_connect_dl(fd, (struct sockaddr *)&un, len, deadline);
}

/* --- read and write ----------------------------------------------------- */

int async_sock_read_dl(int fd, void *buf, size_t len, size_t *n, int64_t deadline)
{
    if (fd < 0 || !buf || !len || !n) return ASYNC_EINVAL;
    int rc;
    for (;;) {
        ssize_t r = recv(fd, buf, len, 0);
        if (r < 0 && errno == ENOTSOCK) r = read(fd, buf, len); /* a pipe or tty */
        if (r > 0) {
            *n = (size_t)r;
            return 0;
        }
        if (r == 0) return ASYNC_EEOF;
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) return read_errno(fd, errno);
        if ((rc = async_wait_fd_dl(fd, ASYNC_READABLE, deadline))) return rc;
    }
}

int async_sock_read(int fd, void *buf, size_t len, size_t *n)
{
    return async_sock_read_dl(fd, buf, len, n, ASYNC_FOREVER);
}

int async_sock_read_full_dl(int fd, void *buf, size_t len, size_t *got, int64_t deadline)
{
    size_t done = 0;
    int rc = 0;
    while (done < len) {
        size_t n;
        if ((rc = async_sock_read_dl(fd, (char *)buf + done, len - done, &n, deadline))) break;
        done += n;
    }
    if (got) *got = done;
    return rc;
}

int async_sock_read_full(int fd, void *buf, size_t len, size_t *got)
{
    return async_sock_read_full_dl(fd, buf, len, got, ASYNC_FOREVER);
}

/* write(2) to a pipe whose reader is gone raises SIGPIPE, and write has no
 * MSG_NOSIGNAL.  The signal is directed at the calling thread, so block it
 * on this thread around the write and, if the write made it pending, take
 * it with a zero-timeout sigtimedwait before restoring the mask (the pattern
 * curl and others use; no process-wide handler is touched).  A SIGPIPE that
 * was pending before the write is left pending: the two cannot be told
 * apart, and it is someone else's. */
static ssize_t write_nosigpipe(int fd, const void *buf, size_t len)
{
    sigset_t pipe_set, old, pending;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    sigpending(&pending);
    bool was_pending = sigismember(&pending, SIGPIPE);
    ssize_t w = write(fd, buf, len);
    int e = errno;
    if (w < 0 && e == EPIPE && !was_pending) {
        static const struct timespec zero = {0, 0};
        while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR) {
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    errno = e;
    return w;
}

int async_sock_write_all_dl(int fd, const void *buf, size_t len, size_t *sent, int64_t deadline)
{
    size_t done = 0;
    int rc = fd < 0 || (!buf && len) ? ASYNC_EINVAL : 0;
    while (!rc && done < len) {
        ssize_t w = send(fd, (const char *)buf + done, len - done, MSG_NOSIGNAL);
        if (w < 0 && errno == ENOTSOCK) w = write_nosigpipe(fd, (const char *)buf + done, len - done);
        if (w >= 0) {
            done += (size_t)w;
            continue;
        }
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) rc = write_errno(fd, errno);
        else rc = async_wait_fd_dl(fd, ASYNC_WRITABLE, deadline);
    }
    if (sent) *sent = done;
    return rc;
}

int async_sock_write_all(int fd, const void *buf, size_t len, size_t *sent)
{
    return async_sock_write_all_dl(fd, buf, len, sent, ASYNC_FOREVER);
}

int async_sock_shutdown(int fd, int how)
{
    /* ENOTCONN: the connection is gone (reset) or never was, as for a send. */
    if (shutdown(fd, how) == 0) return 0;
    return errno == ENOTCONN ? ASYNC_EPIPE : async__net_errno(errno);
}

int async_sock_close(int fd)
{
    if (fd < 0) return ASYNC_EINVAL;
    /* Linux releases the descriptor even when close reports EINTR. */
    if (close(fd) < 0 && errno != EINTR) return async__net_errno(errno);
    return 0;
}

/* --- UDP ------------------------------------------------------------------ */

int async_udp_bind(int *fd, const char *ip, int port)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int s = -1, rc = async__sockaddr_ip(ip, port, &ss, &len);
    if (rc) return rc;
    if (!fd) return ASYNC_EINVAL;
    if ((rc = new_socket(ss.ss_family, SOCK_DGRAM, &s))) return rc;
    if (bind(s, (struct sockaddr *)&ss, len) < 0) {
        rc = async__net_errno(errno);
        close(s);
        return rc;
    }
    *fd = s;
    return 0;
}

int async_udp_send_dl(int fd, const void *buf, size_t len, const struct sockaddr *addr,
                      socklen_t addrlen, int64_t deadline)
{
    if (fd < 0 || (!buf && len)) return ASYNC_EINVAL;
    int rc;
    for (;;) {
        ssize_t w = sendto(fd, buf, len, MSG_NOSIGNAL, addr, addr ? addrlen : 0);
        if (w >= 0) return 0;
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) return async__net_errno(errno);
        if ((rc = async_wait_fd_dl(fd, ASYNC_WRITABLE, deadline))) return rc;
    }
}

int async_udp_recv_dl(int fd, void *buf, size_t len, size_t *n, struct sockaddr *from,
                      socklen_t *fromlen, int64_t deadline)
{
    if (fd < 0 || !buf || !n || (from && !fromlen)) return ASYNC_EINVAL;
    int rc;
    for (;;) {
        ssize_t r = recvfrom(fd, buf, len, 0, from, from ? fromlen : NULL);
        if (r >= 0) {
            *n = (size_t)r;
            return 0;
        }
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) return async__net_errno(errno);
        if ((rc = async_wait_fd_dl(fd, ASYNC_READABLE, deadline))) return rc;
    }
}
