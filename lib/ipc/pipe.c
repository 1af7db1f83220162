/* Message pipes: a 4-byte length prefix framing messages over a
 * SOCK_STREAM socketpair.  Descriptors stay in blocking mode so that a call
 * without a deadline costs one system call; calls with a deadline, calls
 * from a task and tryrecv use MSG_DONTWAIT and wait with ppoll (or, in a
 * task, with async_wait_fd_dl) until their deadline (tryrecv never waits).
 * Received bytes are buffered in the end until a whole message is there, so a
 * receive that times out consumes nothing and a message longer than the
 * caller's buffer stays in the pipe.  A receive reads from the descriptor
 * only the message it is after (its header, then its body), never past it,
 * so the descriptor is readable whenever a message is still unread there:
 * a header and a body cost a system call each.  Sends use MSG_NOSIGNAL: a closed peer
 * is ASYNC_EPIPE, never SIGPIPE. */
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include "ipc_internal.h"

enum { CAN_SEND = 1, CAN_RECV = 2 };
#define HDR sizeof(uint32_t)

struct async_ipc_pipe {
    int fd;
    unsigned mode;
    bool eof;
    unsigned char *buf;
    size_t cap, start, end; /* buffered bytes are buf[start, end) */
};

static int end_new(async_ipc_pipe_t **out, int fd, unsigned mode)
{
    async_ipc_pipe_t *p = async__calloc(1, sizeof *p);
    if (!p) return ASYNC_ENOMEM;
    p->fd = fd;
    p->mode = mode;
    *out = p;
    return 0;
}

int async_ipc_pipe_new(async_ipc_pipe_t **a, async_ipc_pipe_t **b, unsigned flags)
{
    if (!a || !b || (flags & ~ASYNC_IPC_PIPE_ONEWAY)) return ASYNC_EINVAL;
    int fds[2], err;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0) return -errno;
    bool oneway = flags & ASYNC_IPC_PIPE_ONEWAY;
    if (oneway) {
        shutdown(fds[0], SHUT_WR);
        shutdown(fds[1], SHUT_RD);
    }
    if ((err = end_new(a, fds[0], oneway ? CAN_RECV : CAN_SEND | CAN_RECV))) goto fail;
    if ((err = end_new(b, fds[1], oneway ? CAN_SEND : CAN_SEND | CAN_RECV))) {
        /* Leave no freed pointer behind: a caller that frees both ends on
         * failure, as after any other call, would free it twice. */
        async__free(*a);
        *a = NULL;
        goto fail;
    }
    return 0;
fail:
    close(fds[0]);
    close(fds[1]);
    return err;
}

void async_ipc_pipe_free(async_ipc_pipe_t *p)
{
    if (!p) return;
    close(p->fd);
    async__free(p->buf);
    async__free(p);
}

int async_ipc_pipe_fd(const async_ipc_pipe_t *p) { return p->fd; }

void async_ipc_msg_free(void *msg) { async__free(msg); }

/* Waits for fd to be ready for events until the deadline; any deadline at
 * or before now (0 and negative ones included) has passed. */
static int wait_fd(int fd, int events, int64_t deadline)
{
    if (async__in_task()) return async_wait_fd_dl(fd, events, deadline);
    struct pollfd pfd = {.fd = fd, .events = (events & ASYNC_READABLE ? POLLIN : 0) |
                                             (events & ASYNC_WRITABLE ? POLLOUT : 0)};
    for (;;) {
        struct timespec ts, *tsp = NULL;
        if (deadline != ASYNC_FOREVER) {
            /* Compare before subtracting: deadline - now overflows for a
             * deadline far in the past (INT64_MIN). */
            int64_t now = async_now();
            if (deadline <= now) return ASYNC_ETIMEDOUT;
            int64_t left = deadline - now;
            ts = (struct timespec){.tv_sec = left / 1000000000, .tv_nsec = left % 1000000000};
            tsp = &ts;
        }
        int r = ppoll(&pfd, 1, tsp, NULL);
        if (r > 0) return 0;
        if (r < 0 && errno != EINTR) return -errno;
    }
}

/* --- sending ------------------------------------------------------------------ */

int async_ipc_pipe_send_dl(async_ipc_pipe_t *p, const void *msg, size_t len, int64_t deadline)
{
    if (len > ASYNC_IPC_PIPE_MAX_MSG || (len && !msg)) return ASYNC_EINVAL;
    if (!(p->mode & CAN_SEND)) return ASYNC_ENOTSUP;
    uint32_t hdr = (uint32_t)len;
    struct iovec iov[2] = {{&hdr, HDR}, {(void *)msg, len}};
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2};
    size_t left = HDR + len;
    int flags = MSG_NOSIGNAL;
    if (deadline != ASYNC_FOREVER || async__in_task()) flags |= MSG_DONTWAIT;
    while (left > 0) {
        ssize_t n = sendmsg(p->fd, &mh, flags);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) {
                int err = wait_fd(p->fd, ASYNC_WRITABLE, deadline);
                if (err) return err;
                continue;
            }
            return errno == EPIPE || errno == ECONNRESET ? ASYNC_EPIPE : -errno;
        }
        left -= (size_t)n;
        /* Skip what was written. */
        while (n > 0 && mh.msg_iovlen > 0) {
            size_t k = (size_t)n < mh.msg_iov->iov_len ? (size_t)n : mh.msg_iov->iov_len;
            mh.msg_iov->iov_base = (char *)mh.msg_iov->iov_base + k;
            mh.msg_iov->iov_len -= k;
            n -= (ssize_t)k;
            if (mh.msg_iov->iov_len == 0) {
                mh.msg_iov++;
                mh.msg_iovlen--;
            }
        }
    }
    return 0;
}

int async_ipc_pipe_send(async_ipc_pipe_t *p, const void *msg, size_t len)
{
    return async_ipc_pipe_send_dl(p, msg, len, ASYNC_FOREVER);
}

/* --- receiving ---------------------------------------------------------------- */

/* Makes room for need bytes from start. */
static int reserve(async_ipc_pipe_t *p, size_t need)
{
    if (p->cap - p->start >= need) return 0;
    size_t have = p->end - p->start;
    if (p->cap >= need) {
        memmove(p->buf, p->buf + p->start, have);
    } else {
        size_t cap = p->cap ? p->cap : 4096;
        while (cap < need) cap *= 2;
        unsigned char *nb = async__malloc(cap);
        if (!nb) return ASYNC_ENOMEM;
        if (have) memcpy(nb, p->buf + p->start, have);
        async__free(p->buf);
        p->buf = nb;
        p->cap = cap;
    }
    p->start = 0;
    p->end = have;
    return 0;
}

/* How a receive waits: until the deadline, or not at all (tryrecv). */
typedef struct how {
    int64_t deadline;
    bool try_only;
} how_t;

/* Buffers at least need bytes.  ASYNC_EEOF when the peer closed with nothing
 * buffered, ASYNC_EIO when it closed inside a message, ASYNC_EAGAIN (try
 * only) when the bytes are not there yet. */
static int fill(async_ipc_pipe_t *p, size_t need, how_t how)
{
    int flags = how.try_only || how.deadline != ASYNC_FOREVER || async__in_task() ? MSG_DONTWAIT
                                                                                  : 0;
    while (p->end - p->start < need) {
        if (p->eof) return p->end == p->start ? ASYNC_EEOF : ASYNC_EIO;
        /* Room grows with what arrives (at most 1 MiB past it), not with what
         * the peer announced: a header that claims a gigabyte costs memory
         * only as the gigabyte comes. */
        size_t have = p->end - p->start, want = need;
        if (want - have > ((size_t)1 << 20)) want = have + ((size_t)1 << 20);
        int err = reserve(p, want < 65536 ? 65536 : want);
        if (err) return err;
        /* Never past what was asked for (the header, then the rest of its
         * message): what the peer sent beyond it stays in the descriptor,
         * which therefore stays readable for a loop of the user's own on
         * async_ipc_pipe_fd.  Reading ahead (until round 13, up to the
         * buffer's end) took every queued message out of the descriptor at
         * the first receive, and such a loop slept with them unread. */
        ssize_t n = recv(p->fd, p->buf + p->end, want - have, flags);
        if (n > 0) {
            p->end += (size_t)n;
        } else if (n == 0) {
            p->eof = true;
        } else if (errno == EAGAIN) {
            if (how.try_only) return ASYNC_EAGAIN;
            if ((err = wait_fd(p->fd, ASYNC_READABLE, how.deadline))) return err;
        } else if (errno == ECONNRESET) {
            p->eof = true;
        } else if (errno != EINTR) {
            return -errno;
        }
    }
    return 0;
}

/* Buffers one whole message; *len (OUT) is its length. */
static int fill_msg(async_ipc_pipe_t *p, size_t *len, how_t how)
{
    if (!(p->mode & CAN_RECV)) return ASYNC_ENOTSUP;
    int err = fill(p, HDR, how);
    if (err) return err;
    uint32_t n;
    memcpy(&n, p->buf + p->start, HDR);
    /* No sender of ours writes more; a bigger length is a broken or hostile
     * peer, and the stream's framing is lost. */
    if (n > ASYNC_IPC_PIPE_MAX_MSG) return ASYNC_EIO;
    if ((err = fill(p, HDR + n, how))) return err == ASYNC_EEOF ? ASYNC_EIO : err;
    *len = n;
    return 0;
}

static void consume(async_ipc_pipe_t *p, size_t len)
{
    p->start += HDR + len;
    if (p->start == p->end) p->start = p->end = 0;
}

static int recv_into(async_ipc_pipe_t *p, void *buf, size_t cap, size_t *len, how_t how)
{
    if (!len || (cap && !buf)) return ASYNC_EINVAL;
    size_t n;
    int err = fill_msg(p, &n, how);
    if (err) return err;
    *len = n;
    if (n > cap) return ASYNC_EINVAL;
    if (n) memcpy(buf, p->buf + p->start + HDR, n);
    consume(p, n);
    return 0;
}

int async_ipc_pipe_recv_dl(async_ipc_pipe_t *p, void *buf, size_t cap, size_t *len,
                           int64_t deadline)
{
    return recv_into(p, buf, cap, len, (how_t){.deadline = deadline});
}

int async_ipc_pipe_tryrecv(async_ipc_pipe_t *p, void *buf, size_t cap, size_t *len)
{
    return recv_into(p, buf, cap, len, (how_t){.try_only = true});
}

int async_ipc_pipe_recv(async_ipc_pipe_t *p, void *buf, size_t cap, size_t *len)
{
    return async_ipc_pipe_recv_dl(p, buf, cap, len, ASYNC_FOREVER);
}

int async_ipc_pipe_recv_alloc_dl(void **msg, size_t *len, async_ipc_pipe_t *p, int64_t deadline)
{
    if (!msg || !len) return ASYNC_EINVAL;
    size_t n;
    int err = fill_msg(p, &n, (how_t){.deadline = deadline});
    if (err) return err;
    void *m = async__malloc(n ? n : 1);
    if (!m) return ASYNC_ENOMEM;
    if (n) memcpy(m, p->buf + p->start + HDR, n);
    consume(p, n);
    *msg = m;
    *len = n;
    return 0;
}

int async_ipc_pipe_poll_dl(async_ipc_pipe_t *p, int64_t deadline)
{
    size_t n;
    int err = fill_msg(p, &n, (how_t){.deadline = deadline});
    /* End of stream and a torn message are "ready": recv will report them. */
    if (err == ASYNC_EEOF || err == ASYNC_EIO) return 0;
    return err;
}
