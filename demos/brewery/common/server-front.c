/* brewery-server's front door.  One thread owns the listening socket and an
 * epoll set of accepted connections that have not yet sent the request line
 * and headers of their first request.  It looks at their bytes with MSG_PEEK, so libmicrohttpd later reads
 * the request from the first byte as if it had accepted the connection
 * itself.  Edge-triggered epoll wakes the thread only when new bytes arrive
 * (a peeked byte stays readable, which level triggering would report
 * forever).  Every waiting connection has the same timeout, so arrival order
 * is deadline order and a FIFO list replaces a heap.  The thread alone
 * touches the list; stop wakes it through an eventfd and joins it. */
#include "server-front.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HEAD_MAX_BYTES 16384   /* as libmicrohttpd's memory limit per connection */

struct pending {
    struct pending *prev, *next;
    int fd;
    int64_t deadline_ns;
    struct sockaddr_in addr;
};

struct bsrv_front {
    int lfd, wake, ep;
    unsigned port;
    struct MHD_Daemon *d;
    int64_t timeout_ns;
    unsigned max_pending, npending;
    struct pending *head, *tail;   /* oldest first */
    pthread_t thread;
    unsigned long long rejected, expired;
};

static const char too_large[] =
    "HTTP/1.1 431 Request Header Fields Too Large\r\n"
    "Connection: close\r\n"
    "Content-Type: application/json; charset=utf-8\r\n"
    "Content-Length: 38\r\n"
    "\r\n"
    "{\"message\":\"Request header too large\"}";

static const char bad_request[] =
    "HTTP/1.1 400 Bad Request\r\n"
    "Connection: close\r\n"
    "Content-Type: application/json; charset=utf-8\r\n"
    "Content-Length: 36\r\n"
    "\r\n"
    "{\"message\":\"Malformed request line\"}";

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void unlink_pending(bsrv_front_t *f, struct pending *p)
{
    if (p->prev)
        p->prev->next = p->next;
    else
        f->head = p->next;
    if (p->next)
        p->next->prev = p->prev;
    else
        f->tail = p->prev;
    f->npending--;
}

static void drop(bsrv_front_t *f, struct pending *p, bool close_fd)
{
    epoll_ctl(f->ep, EPOLL_CTL_DEL, p->fd, NULL);
    unlink_pending(f, p);
    if (close_fd)
        close(p->fd);
    free(p);
}

static bool is_tchar(unsigned char c)
{
    return c > 0x20 && c < 0x7F && !strchr("\"(),/:;<=>?@[\\]{}", c);
}

/* "METHOD SP target SP HTTP/d.d CRLF" (a bare LF is tolerated, as
 * libmicrohttpd does).  `line` ends at its '\n'. */
static bool line_ok(const char *line, size_t len)
{
    size_t i = 0;
    if (len && line[len - 1] == '\n')
        len--;
    if (len && line[len - 1] == '\r')
        len--;
    while (i < len && is_tchar((unsigned char)line[i]))
        i++;
    if (i == 0 || i >= len || line[i] != ' ')
        return false;
    size_t t = ++i;
    while (i < len && line[i] != ' ' && (unsigned char)line[i] > 0x20 && line[i] != 0x7F)
        i++;
    if (i == t || i >= len || line[i] != ' ')
        return false;
    i++;
    return len - i == 8 && memcmp(line + i, "HTTP/", 5) == 0 && line[i + 5] >= '0' &&
           line[i + 5] <= '9' && line[i + 6] == '.' && line[i + 7] >= '0' && line[i + 7] <= '9';
}

/* Looks at what `p` has sent so far and decides. */
static void examine(bsrv_front_t *f, struct pending *p)
{
    static char buf[HEAD_MAX_BYTES];
    ssize_t n = recv(p->fd, buf, sizeof buf, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) {
        drop(f, p, true);   /* closed or failed before a request */
        return;
    }
    /* Leading empty lines before a request line are allowed (RFC 9112 2.2). */
    size_t start = 0;
    while (start < (size_t)n && (buf[start] == '\r' || buf[start] == '\n'))
        start++;
    char *nl = memchr(buf + start, '\n', (size_t)n - start);
    const char *answer = bad_request;
    size_t alen = sizeof bad_request - 1;
    if (nl && line_ok(buf + start, (size_t)(nl - buf) + 1 - start)) {
        /* A good request line: wait for the end of the header block, so that
         * a client trickling its headers is bound by the same deadline. */
        bool end = false;
        for (char *c = nl; !end && c && c + 1 < buf + n; c = memchr(c + 1, '\n', (size_t)(buf + n - c - 1)))
            end = c[1] == '\n' || (c[1] == '\r' && c + 2 < buf + n && c[2] == '\n');
        if (end) {
            int fd = p->fd;
            struct sockaddr_in addr = p->addr;
            drop(f, p, false);
            /* libmicrohttpd owns the socket from here, and closes it on failure. */
            MHD_add_connection(f->d, fd, (struct sockaddr *)&addr, sizeof addr);
            return;
        }
        if ((size_t)n < sizeof buf)
            return;
        answer = too_large;
        alen = sizeof too_large - 1;
    } else if (!nl && (size_t)n < sizeof buf) {
        return;   /* wait for the rest of the line */
    }
    f->rejected++;
    if (send(p->fd, answer, alen, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
        /* The peer is gone or not reading: closing is all that is left. */
    }
    /* Let the 400 leave before the close, rather than a reset losing it. */
    shutdown(p->fd, SHUT_WR);
    drop(f, p, true);
}

static void accept_all(bsrv_front_t *f)
{
    for (;;) {
        struct sockaddr_in addr;
        socklen_t alen = sizeof addr;
        int fd = accept4(f->lfd, (struct sockaddr *)&addr, &alen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            /* Out of descriptors the listening socket stays readable, and
             * epoll would wake this thread at once, forever: pause a little
             * so that connections being served can finish and free some. */
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                nanosleep(&(struct timespec){ 0, 10000000 }, NULL);
            return;
        }
        struct pending *p = f->npending < f->max_pending ? malloc(sizeof *p) : NULL;
        if (!p) {
            close(fd);
            continue;
        }
        *p = (struct pending){ f->tail, NULL, fd, now_ns() + f->timeout_ns, addr };
        struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.ptr = p };
        if (epoll_ctl(f->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
            close(fd);
            free(p);
            continue;
        }
        if (f->tail)
            f->tail->next = p;
        else
            f->head = p;
        f->tail = p;
        f->npending++;
        /* The request line often arrives with the connection. */
        examine(f, p);
    }
}

static void *front_main(void *arg)
{
    bsrv_front_t *f = arg;
    struct epoll_event evs[64];
    for (;;) {
        int64_t now = now_ns();
        while (f->head && f->head->deadline_ns <= now) {
            f->expired++;
            drop(f, f->head, true);
        }
        int ms = -1;
        if (f->head)
            ms = (int)((f->head->deadline_ns - now + 999999) / 1000000);
        int n = epoll_wait(f->ep, evs, 64, ms);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == &f->wake)
                goto out;
            if (evs[i].data.ptr == &f->lfd)
                accept_all(f);
            else
                examine(f, evs[i].data.ptr);
        }
    }
out:
    while (f->head)
        drop(f, f->head, true);
    return NULL;
}

int bsrv_front_start(bsrv_front_t **out, unsigned port, struct MHD_Daemon *d,
                     unsigned header_timeout_ms, unsigned max_pending, char *err, size_t errlen)
{
    bsrv_front_t *f = calloc(1, sizeof *f);
    if (!f) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    f->d = d;
    f->timeout_ns = (int64_t)header_timeout_ms * 1000000;
    f->max_pending = max_pending ? max_pending : 1;
    f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    f->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    f->ep = epoll_create1(EPOLL_CLOEXEC);
    int one = 1;
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t slen = sizeof sin;
    struct epoll_event el = { .events = EPOLLIN, .data.ptr = &f->lfd };
    struct epoll_event ew = { .events = EPOLLIN, .data.ptr = &f->wake };
    if (f->lfd < 0 || f->wake < 0 || f->ep < 0 ||
        setsockopt(f->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(f->lfd, (struct sockaddr *)&sin, sizeof sin) != 0 || listen(f->lfd, 4096) != 0 ||
        getsockname(f->lfd, (struct sockaddr *)&sin, &slen) != 0 ||
        epoll_ctl(f->ep, EPOLL_CTL_ADD, f->lfd, &el) != 0 ||
        epoll_ctl(f->ep, EPOLL_CTL_ADD, f->wake, &ew) != 0) {
        snprintf(err, errlen, "cannot listen on 127.0.0.1:%u: %s", port, strerror(errno));
        goto fail;
    }
    f->port = ntohs(sin.sin_port);
    if (pthread_create(&f->thread, NULL, front_main, f) != 0) {
        snprintf(err, errlen, "cannot start the accept thread");
        goto fail;
    }
    *out = f;
    return 0;
fail:
    if (f->ep >= 0)
        close(f->ep);
    if (f->wake >= 0)
        close(f->wake);
    if (f->lfd >= 0)
        close(f->lfd);
    free(f);
    return -1;
}

unsigned bsrv_front_port(const bsrv_front_t *f)
{
    return f->port;
}

void bsrv_front_stop(bsrv_front_t *f)
{
    uint64_t one = 1;
    if (write(f->wake, &one, sizeof one) < 0) {
        /* An eventfd write fails only when the counter would overflow. */
    }
    pthread_join(f->thread, NULL);
    close(f->ep);
    close(f->wake);
    close(f->lfd);
    free(f);
}

unsigned long long bsrv_front_rejected(const bsrv_front_t *f)
{
    return f->rejected;
}

unsigned long long bsrv_front_expired(const bsrv_front_t *f)
{
    return f->expired;
}
