/* DNS on the loop with c-ares, and the happy-eyeballs connect (RFC 8305).
 *
 * c-ares tells us, through its socket state callback, which of its sockets
 * want reading or writing; each gets an ev_io watcher on the resolver's loop,
 * and one ev_timer follows ares_timeout(), so c-ares runs only from libev
 * callbacks and never blocks the loop.  The resolver's watchers are
 * unreferenced: a waiting task keeps the loop running, an idle resolver does
 * not.  A lookup's state (struct query) outlives the task that started it when
 * the task leaves early (deadline, cancel): c-ares' callback frees it then,
 * at the latest from ares_destroy in async_dns_destroy.
 *
 * The race keeps every attempt's descriptor in an ev_io watcher of its own
 * and suspends the task on a waker, so one task waits on all attempts and on
 * the stagger timer at once. */
#include <ares.h>
#include <arpa/inet.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "net_internal.h"

struct sockw {
    ev_io io;
    struct async_dns *dns;
    struct sockw *next;
};

struct async_dns {
    async_loop_t *loop;
    ares_channel ch;
    ev_timer timer;
    struct sockw *socks;
    size_t waiting; /* tasks inside async_dns_resolve_dl */
    /* The errno of c-ares' last socket() that failed (0 once one opens): a
     * lookup that no server answered because none could be asked reports
     * it (ASYNC_EMFILE), not a resolver failure. */
    int open_err;
    /* A socket's watcher could not be allocated (on_state): rearm fails the
     * lookups in flight with ASYNC_ENOMEM, or they would wait for c-ares'
     * timeouts with their answers unread. */
    bool nomem, cancelling;
};

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;
static int lib_status;
static void lib_init(void) { lib_status = ares_library_init(ARES_LIB_INIT_ALL); }

static void start_unref(struct ev_loop *ev, ev_io *w)
{
    ev_io_start(ev, w);
    ev_unref(ev);
}

static void stop_unref(struct ev_loop *ev, ev_io *w)
{
    if (!ev_is_active(w)) return;
    ev_ref(ev);
    ev_io_stop(ev, w);
}

/* Re-arms the timer for c-ares' next timeout, or stops it when none. */
static void rearm(struct async_dns *d)
{
    struct ev_loop *ev = d->loop->ev;
    if (d->nomem) {
        /* Outside c-ares' own calls: every callers of rearm has returned
         * from c-ares.  Once its queries are gone c-ares closes their
         * sockets, the unwatched one too, so later lookups start afresh. */
        d->nomem = false;
        d->cancelling = true;
        ares_cancel(d->ch);
        d->cancelling = false;
    }
    if (ev_is_active(&d->timer)) {
        ev_ref(ev);
        ev_timer_stop(ev, &d->timer);
    }
    struct timeval tv, *t = ares_timeout(d->ch, NULL, &tv);
    if (!t) return;
    /* c-ares counts whole milliseconds: with less than one left it says 0,
     * but ares_process_fd expires a query only once its time has fully
     * come.  Armed at 0 the timer fired, nothing expired, and it was armed
     * at 0 again: the loop spun for up to a millisecond at every timeout
     * (some 1,300 turns for a lookup that timed out three times, before
     * round 12).  Never less than c-ares' millisecond, then. */
    double after = (double)t->tv_sec + (double)t->tv_usec / 1e6;
    ev_timer_set(&d->timer, after < 1e-3 ? 1e-3 : after, 0.);
    ev_timer_start(ev, &d->timer);
    ev_unref(ev);
}

static void on_sock(struct ev_loop *ev, ev_io *w, int revents)
{
    (void)ev;
    struct sockw *s = container_of(w, struct sockw, io);
    struct async_dns *d = s->dns;
    int fd = w->fd;
    /* ares_process_fd may close the socket and free s through on_state. */
    ares_process_fd(d->ch, revents & EV_READ ? fd : ARES_SOCKET_BAD,
                    revents & EV_WRITE ? fd : ARES_SOCKET_BAD);
    rearm(d);
}

static void on_timer(struct ev_loop *ev, ev_timer *w, int revents)
{
    (void)ev, (void)revents;
    struct async_dns *d = container_of(w, struct async_dns, timer);
    ev_ref(ev); /* it stopped by itself: balance start's unref */
    ares_process_fd(d->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    rearm(d);
}

static void on_state(void *data, ares_socket_t fd, int readable, int writable)
{
    struct async_dns *d = data;
    struct ev_loop *ev = d->loop->ev;
    struct sockw **pp = &d->socks, *s;
    while ((s = *pp) && s->io.fd != fd) pp = &s->next;
    if (!readable && !writable) { /* c-ares is closing it */
        if (s) {
            stop_unref(ev, &s->io);
            *pp = s->next;
            async__free(s);
        }
        return;
    }
    if (!s) {
        /* Out of memory here cannot be reported to c-ares: rearm, which
         * runs once c-ares returns, fails the lookups instead. */
        if (!(s = async__calloc(1, sizeof *s))) {
            d->nomem = true;
            return;
        }
        s->dns = d;
        ev_init(&s->io, on_sock);
        s->next = d->socks;
        d->socks = s;
    }
    stop_unref(ev, &s->io);
    ev_io_set(&s->io, fd, (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0));
    start_unref(ev, &s->io);
}

/* c-ares' sockets, opened and used through these so that a failed socket()
 * is known (open_err) and no send can raise SIGPIPE.  They are made
 * non-blocking and close-on-exec here, at socket(): c-ares may skip its own
 * configuration of sockets that a program's functions open. */
static ares_socket_t dns_socket(int af, int type, int proto, void *ud)
{
    struct async_dns *d = ud;
    int s = socket(af, type | SOCK_NONBLOCK | SOCK_CLOEXEC, proto);
    d->open_err = s < 0 ? errno : 0;
    return s < 0 ? ARES_SOCKET_BAD : s;
}

static int dns_close(ares_socket_t s, void *ud)
{
    (void)ud;
    return close(s);
}

static int dns_connect(ares_socket_t s, const struct sockaddr *sa, ares_socklen_t len, void *ud)
{
    (void)ud;
    return connect(s, sa, len);
}

static ares_ssize_t dns_recvfrom(ares_socket_t s, void *buf, size_t len, int flags,
                                 struct sockaddr *from, ares_socklen_t *fromlen, void *ud)
{
    (void)ud;
    return recvfrom(s, buf, len, flags, from, fromlen);
}

static ares_ssize_t dns_sendv(ares_socket_t s, const struct iovec *iov, int n, void *ud)
{
    (void)ud;
    struct msghdr mh = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)n};
    return sendmsg(s, &mh, MSG_NOSIGNAL);
}

static const struct ares_socket_functions dns_sock_funcs = {dns_socket, dns_close, dns_connect,
                                                            dns_recvfrom, dns_sendv};

int async_dns_new(async_dns_t **out, async_loop_t *loop, const async_dns_opts_t *opts)
{
    if (!out) return ASYNC_EINVAL;
    /* sizeof is 0.2's layout; a later version keeps this bound at 0.2's size
     * and reads its new fields only when opts->size covers them. */
    if (opts && opts->size && opts->size < sizeof(async_dns_opts_t)) return ASYNC_EINVAL;
    if (opts && (opts->timeout_ns < 0 || opts->tries < 0)) return ASYNC_EINVAL;
    if (!loop) loop = async_loop_current();
    if (!loop) return ASYNC_ENOLOOP;
    /* The resolver's watchers live on the loop: only its thread touches them. */
    if (!async__on_loop_thread(loop)) return ASYNC_EWRONGLOOP;
    pthread_once(&lib_once, lib_init);
    if (lib_status != ARES_SUCCESS) return ASYNC_EDNS;
    async_dns_t *d = async__calloc(1, sizeof *d);
    if (!d) return ASYNC_ENOMEM;
    d->loop = loop;
    ev_timer_init(&d->timer, on_timer, 0., 0.);
    struct ares_options o;
    memset(&o, 0, sizeof o);
    int mask = ARES_OPT_SOCK_STATE_CB;
    o.sock_state_cb = on_state;
    o.sock_state_cb_data = d;
    if (opts && opts->timeout_ns > 0) {
        /* c-ares counts whole milliseconds: round up, so that a timeout
         * under one is not read as 0 (c-ares' default).  Divided before
         * rounding: adding first overflowed for ASYNC_FOREVER. */
        int64_t ms = opts->timeout_ns / ASYNC_MSEC(1);
        if (opts->timeout_ns % ASYNC_MSEC(1)) ms++;
        o.timeout = ms > INT_MAX ? INT_MAX : (int)ms;
        mask |= ARES_OPT_TIMEOUTMS;
    }
    if (opts && opts->tries > 0) {
        o.tries = opts->tries;
        mask |= ARES_OPT_TRIES;
    }
    int rc = ares_init_options(&d->ch, &o, mask);
    if (rc != ARES_SUCCESS) {
        async__free(d);
        return rc == ARES_ENOMEM ? ASYNC_ENOMEM : ASYNC_EDNS;
    }
    ares_set_socket_functions(d->ch, &dns_sock_funcs, d);
    if (opts && opts->servers) {
        rc = ares_set_servers_ports_csv(d->ch, opts->servers);
        if (rc != ARES_SUCCESS) {
            ares_destroy(d->ch);
            async__free(d);
            return rc == ARES_ENOMEM ? ASYNC_ENOMEM : ASYNC_EINVAL;
        }
    }
    *out = d;
    return 0;
}

int async_dns_destroy(async_dns_t *d)
{
    if (!d) return 0;
    if (!async__on_loop_thread(d->loop)) return ASYNC_EWRONGLOOP;
    if (d->waiting) return ASYNC_EBUSY;
    /* Runs the callbacks of abandoned lookups (they free their state) and
     * closes c-ares' sockets (on_state frees their watchers). */
    ares_destroy(d->ch);
    struct ev_loop *ev = d->loop->ev;
    while (d->socks) {
        struct sockw *s = d->socks;
        d->socks = s->next;
        stop_unref(ev, &s->io);
        async__free(s);
    }
    if (ev_is_active(&d->timer)) {
        ev_ref(ev);
        ev_timer_stop(ev, &d->timer);
    }
    async__free(d);
    return 0;
}

/* --- lookups -------------------------------------------------------------- */

struct query {
    struct async_dns *dns;
    async_waker_t waker;
    bool done, abandoned;
    int status;
    struct ares_addrinfo *res;
};

static void on_result(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
    (void)timeouts;
    struct query *q = arg;
    if (q->abandoned) {
        ares_freeaddrinfo(res);
        async__free(q);
        return;
    }
    q->done = true;
    /* Cancelled by rearm because a watcher could not be allocated. */
    q->status = status == ARES_ECANCELLED && q->dns->cancelling ? ARES_ENOMEM : status;
    q->res = res;
    async_waker_wake(q->waker, 0);
}

static int map_status(int st)
{
    switch (st) {
    case ARES_SUCCESS: return 0;
    case ARES_ENOTFOUND:
    case ARES_ENODATA:
    case ARES_ENONAME: return ASYNC_ENOTFOUND;
    case ARES_ETIMEOUT: return ASYNC_ETIMEDOUT;
    case ARES_ENOMEM: return ASYNC_ENOMEM;
    case ARES_ECANCELLED:
    case ARES_EDESTRUCTION: return ASYNC_ECANCELED;
    case ARES_EBADNAME:
    case ARES_EBADFAMILY: return ASYNC_EINVAL;
    default: return ASYNC_EDNS;
    }
}

/* RFC 8305 section 4: alternate families, starting with the first answer's. */
static int to_addrs(const struct ares_addrinfo *res, async_addr_t **out, size_t *n)
{
    size_t count = 0;
    for (const struct ares_addrinfo_node *p = res->nodes; p; p = p->ai_next)
        if (p->ai_addrlen <= sizeof(struct sockaddr_storage)) count++;
    if (!count) return ASYNC_ENOTFOUND;
    async_addr_t *a = async__calloc(count, sizeof *a);
    if (!a) return ASYNC_ENOMEM;
    const struct ares_addrinfo_node *nodes[2][64];
    size_t nf[2] = {0, 0}, k = 0;
    int first = res->nodes->ai_family;
    for (const struct ares_addrinfo_node *p = res->nodes; p; p = p->ai_next) {
        if (p->ai_addrlen > sizeof(struct sockaddr_storage)) continue;
        int f = p->ai_family == first ? 0 : 1;
        if (nf[f] < 64) nodes[f][nf[f]++] = p;
    }
    for (size_t i = 0; i < nf[0] || i < nf[1]; i++)
        for (int f = 0; f < 2; f++)
            if (i < nf[f]) {
                memcpy(&a[k].addr, nodes[f][i]->ai_addr, nodes[f][i]->ai_addrlen);
                a[k++].len = nodes[f][i]->ai_addrlen;
            }
    *out = a;
    *n = k;
    return 0;
}

int async_dns_resolve_dl(async_addr_t **addrs, size_t *n, async_dns_t *d, const char *host,
                         int port,
                         int family, int64_t deadline)
{
    if (!d || !host || !*host || !addrs || !n || port < 0 || port > 65535) return ASYNC_EINVAL;
    if (family != AF_UNSPEC && family != AF_INET && family != AF_INET6) return ASYNC_EINVAL;
    async_task_impl_t *self;
    int rc = async__task_check_blocking(&self);
    if (rc) return rc;
    if (self->loop != d->loop) return ASYNC_EWRONGLOOP;
    /* A cancelled task still gets an answer that needs no wait (a numeric
     * name, the hosts file); it stops only where it would suspend. */
    struct query *q = async__calloc(1, sizeof *q);
    if (!q) return ASYNC_ENOMEM;
    q->dns = d;
    char service[8];
    snprintf(service, sizeof service, "%d", port);
    struct ares_addrinfo_hints hints = {.ai_flags = ARES_AI_NUMERICSERV, .ai_family = family,
                                        .ai_socktype = SOCK_STREAM};
    /* c-ares may answer from inside ares_getaddrinfo (numeric names, the
     * hosts file): q->waker is still empty then, so that the wake-up is not
     * left pending on the task for its next, unrelated suspension. */
    d->waiting++;
    ares_getaddrinfo(d->ch, host, service, &hints, on_result, q);
    rearm(d);
    while (!q->done) {
        q->waker = async_task_waker();
        rc = async_task_suspend_dl(deadline);
        if (rc && !q->done) {
            q->abandoned = true; /* on_result frees it */
            d->waiting--;
            return rc;
        }
    }
    d->waiting--;
    /* c-ares says only that no server could be reached; when that is
     * because it could not open a socket, say why (ASYNC_EMFILE...). */
    if (q->status == ARES_ECONNREFUSED && d->open_err) rc = async__net_errno(d->open_err);
    else rc = map_status(q->status);
    if (!rc) rc = q->res ? to_addrs(q->res, addrs, n) : ASYNC_ENOTFOUND;
    ares_freeaddrinfo(q->res);
    async__free(q);
    return rc;
}

void async_dns_addrs_free(async_addr_t *addrs)
{
    async__free(addrs);
}

/* --- happy eyeballs ------------------------------------------------------- */

#define STAGGER ASYNC_MSEC(250)

struct race;
struct attempt {
    ev_io io;
    int fd;
    bool ready;
    struct race *race;
};

struct race {
    async_waker_t waker;
};

static void on_attempt(struct ev_loop *ev, ev_io *w, int revents)
{
    (void)revents;
    struct attempt *a = container_of(w, struct attempt, io);
    ev_io_stop(ev, w);
    a->ready = true;
    async_waker_wake(a->race->waker, 0);
}

int async_connect_race_dl(int *fd, const async_addr_t *addrs, size_t n, int64_t stagger_ns,
                          int64_t deadline)
{
    if (!addrs || !n || !fd || stagger_ns < 0) return ASYNC_EINVAL;
    async_task_impl_t *self;
    int rc = async__task_check_blocking(&self);
    if (rc) return rc;
    /* A cancelled task still wins an attempt that connects at once; it
     * stops where it would suspend. */
    if (!stagger_ns) stagger_ns = STAGGER;
    struct ev_loop *ev = self->loop->ev;
    struct attempt *at = async__calloc(n, sizeof *at);
    if (!at) return ASYNC_ENOMEM;
    struct race race;
    size_t started = 0, live = 0;
    int last_err = ASYNC_ECONNREFUSED, winner = -1;
    int64_t next_start = 0; /* when to start the next attempt */
    for (;;) {
        /* Start attempts while it is time to and addresses are left. */
        while (started < n && winner < 0 && (live == 0 || async_now() >= next_start)) {
            struct attempt *a = &at[started++];
            bool pending;
            a->race = &race;
            a->fd = -1;
            rc = async__connect_start((const struct sockaddr *)&addrs[started - 1].addr,
                                      addrs[started - 1].len, &a->fd, &pending);
            if (rc) {
                last_err = rc;
                continue;
            }
            if (!pending) {
                winner = (int)(started - 1);
                break;
            }
            ev_io_init(&a->io, on_attempt, a->fd, EV_WRITE);
            ev_io_start(ev, &a->io);
            live++;
            /* Saturates: a stagger of ASYNC_FOREVER starts the next
             * attempt only when one fails. */
            next_start = async_deadline_after(stagger_ns);
        }
        if (winner >= 0 || live == 0) break;
        int64_t wake_at = started < n && next_start < deadline ? next_start : deadline;
        race.waker = async_task_waker();
        rc = async_task_suspend_dl(wake_at);
        if (rc == ASYNC_ECANCELED) {
            last_err = rc;
            break;
        }
        if (rc == ASYNC_ETIMEDOUT && async_now() >= deadline) {
            last_err = rc;
            break;
        }
        for (size_t i = 0; i < started && winner < 0; i++) {
            struct attempt *a = &at[i];
            if (!a->ready) continue;
            a->ready = false;
            live--;
            int err = async__connect_result(a->fd);
            if (!err) {
                winner = (int)i;
            } else {
                /* A failure starts the next attempt at once (RFC 8305 5). */
                last_err = err;
                close(a->fd);
                a->fd = -1;
                next_start = 0;
            }
        }
    }
    /* The losers are closed, their watchers stopped. */
    for (size_t i = 0; i < started; i++) {
        if (ev_is_active(&at[i].io)) ev_io_stop(ev, &at[i].io);
        if ((int)i != winner && at[i].fd >= 0) close(at[i].fd);
    }
    if (winner >= 0) *fd = at[winner].fd;
    async__free(at);
    return winner >= 0 ? 0 : last_err;
}

int async_tcp_connect_dl(int *fd, async_dns_t *dns, const char *host, int port, int64_t deadline)
{
    if (!host || !fd) return ASYNC_EINVAL;
    async_addr_t one, *addrs = &one;
    size_t n = 1;
    int rc;
    if (dns) {
        if ((rc = async_dns_resolve_dl(&addrs, &n, dns, host, port, AF_UNSPEC,
                                       deadline))) return rc;
    } else if ((rc = async__sockaddr_ip(host, port, &one.addr, &one.len))) {
        return rc;
    }
    rc = async_connect_race_dl(fd, addrs, n, 0, deadline);
    if (addrs != &one) async_dns_addrs_free(addrs);
    return rc;
}
