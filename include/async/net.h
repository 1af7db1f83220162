/* Networking awaited from tasks: TCP, Unix-domain and UDP sockets, DNS on the
 * loop (c-ares), a happy-eyeballs connect, and signals.
 *
 * Sockets are plain descriptors, created non-blocking and close-on-exec, so
 * they cost nothing beyond the kernel's socket and mix with any other code.
 * Every call that can block has a _dl form taking an absolute async_now()
 * deadline; the plain form waits forever.  A socket call first tries its
 * system call, so one that can complete at once does, also in a cancelled
 * task, past its deadline or outside a task; only when it would have to
 * wait does it return ASYNC_ECANCELED (its task was cancelled),
 * ASYNC_ETIMEDOUT (the deadline passed) or ASYNC_ENOTASK (outside a task).
 * (DNS and the connect race always need a task.)  A loop that may never
 * wait, on a peer that always has data, checks async_task_cancelled().
 *
 * No call ever raises SIGPIPE: a write to a socket uses MSG_NOSIGNAL, and
 * one to a pipe runs with SIGPIPE blocked on the calling thread and takes
 * the SIGPIPE it raised before restoring the mask.  A write to a peer that
 * is gone (closed or reset) returns ASYNC_EPIPE; a read returns ASYNC_EEOF
 * after the peer's orderly close and ASYNC_ECONNRESET after a reset.  The
 * kernel's errors come out as common.h's codes, the ones each call meets
 * listed with it; an errno that has no closer code is ASYNC_EIO.  Only two
 * pass through as -errno without an ASYNC_ name: -ENETUNREACH and
 * -EHOSTUNREACH, from a connect or a datagram send that no route carries
 * (async_net_strerror names them). */
#ifndef ASYNC_NET_H
#define ASYNC_NET_H

#include <string.h>
#include <sys/socket.h>
#include "common.h"
#include "loop.h"

#ifdef __cplusplus
extern "C" {
#endif

/* This module's errors (ASYNC_ECONNRESET, ASYNC_ECONNREFUSED,
 * ASYNC_EADDRINUSE, ASYNC_ENOTFOUND, ASYNC_EDNS) are in common.h's table
 * with the others.  async_net_strerror is async_strerror that also names
 * -ENETUNREACH and -EHOSTUNREACH; never NULL. */
ASYNC_API const char *async_net_strerror(int err);

/* --- streams: TCP and Unix ------------------------------------------------- */

/* Listens on a numeric address ("127.0.0.1", "::1"; NULL for every IPv4
 * interface) and port (0: the kernel picks one; read it with async_sock_port).
 * The socket has SO_REUSEADDR, O_NONBLOCK and FD_CLOEXEC; backlog <= 0 means
 * SOMAXCONN.  *fd (OUT) is set only on success.  Errors: ASYNC_EINVAL (not a
 * numeric address, port outside 0..65535, fd NULL, an address that is not
 * this machine's), ASYNC_EADDRINUSE, ASYNC_EPERM (a privileged port),
 * ASYNC_ENOTSUP (IPv6 on a kernel without it), ASYNC_EMFILE, ASYNC_ENFILE,
 * ASYNC_ENOMEM. */
ASYNC_API int async_tcp_listen(int *fd, const char *ip, int port, int backlog);

/* Listens on a Unix-domain stream socket at path, removing a stale socket
 * file there first: one that refuses a connect (a live server's socket file
 * is left alone; it sees the probe as a connection that ends at once), and
 * never any other kind of file.  Errors: ASYNC_EINVAL (path NULL, empty or
 * too long, fd NULL), ASYNC_EADDRINUSE (a live server or another kind of
 * file is at path), ASYNC_ENOENT (a directory of the path is missing), ASYNC_EPERM (no
 * permission to create it there), ASYNC_EMFILE, ASYNC_ENFILE, ASYNC_ENOMEM. */
ASYNC_API int async_unix_listen(int *fd, const char *path, int backlog);

/* The local port a TCP or UDP socket is bound to (> 0; 0 before a bind).
 * Errors: ASYNC_EINVAL (not an IPv4 or IPv6 socket). */
ASYNC_API int async_sock_port(int fd);

/* Accepts one connection; *fd (OUT) is non-blocking and close-on-exec.
 * Out of descriptors, it keeps the server alive the way libuv and nginx do:
 * a descriptor reserved at the first listen is freed, the waiting connection
 * is accepted and closed at once (the client sees its connection closed),
 * the reserve is taken back, and ASYNC_EMFILE (the process's limit) or
 * ASYNC_ENFILE (the system's file table) returns, so a loop around accept
 * neither spins on a connection it cannot take nor stops other tasks from
 * serving theirs; once descriptors are free, accept succeeds again.
 * Errors: ASYNC_EMFILE, ASYNC_ENFILE, ASYNC_ETIMEDOUT,
 * ASYNC_ECANCELED, ASYNC_ENOTASK, ASYNC_EINVAL (lfd not a listening socket,
 * fd NULL), ASYNC_EPERM (a firewall rule refused the connection),
 * ASYNC_ENOMEM. */
ASYNC_API int async_sock_accept(int *fd, int lfd);
ASYNC_API int async_sock_accept_dl(int *fd, int lfd, int64_t deadline);

/* Connects a new non-blocking, close-on-exec stream socket to addr; *fd (OUT)
 * is set only on success (on failure the socket is closed).  Errors:
 * ASYNC_ECONNREFUSED (nobody listens there), ASYNC_ETIMEDOUT (the deadline
 * passed: for example a listener whose backlog is full and that never
 * accepts; or the kernel gave up first), ASYNC_ECANCELED, ASYNC_ENOTASK,
 * ASYNC_EINVAL (addr or fd NULL, a bad address), ASYNC_EADDRINUSE (no local
 * port is free), ASYNC_EPERM, ASYNC_ENOTSUP (a family the kernel lacks),
 * ASYNC_EMFILE, ASYNC_ENFILE, ASYNC_ENOMEM, -ENETUNREACH, -EHOSTUNREACH. */
ASYNC_API int async_sock_connect_dl(int *fd, const struct sockaddr *addr, socklen_t len,
                                    int64_t deadline);

/* Connects to a numeric address and port.  Errors: as async_sock_connect_dl. */
ASYNC_API int async_tcp_connect_ip_dl(int *fd, const char *ip, int port, int64_t deadline);

/* Connects to the Unix-domain socket at path.  Errors: as async_sock_connect_dl,
 * ASYNC_ENOENT when nothing is at path, ASYNC_ECONNREFUSED when no stream
 * socket listens there. */
ASYNC_API int async_unix_connect_dl(int *fd, const char *path, int64_t deadline);

/* Reads what is there, at most len bytes, waiting until something is; *n
 * (OUT) is how many (> 0 on success).  A pipe or a tty works too (read(2));
 * make it O_NONBLOCK, or a read with nothing there blocks the thread.
 * Errors: ASYNC_EEOF (the peer closed its side: a half-closed or closed
 * connection), ASYNC_ECONNRESET (the peer reset the connection, or the
 * kernel gave up on it), ASYNC_ETIMEDOUT, ASYNC_ECANCELED, ASYNC_ENOTASK,
 * ASYNC_EINVAL (len 0, buf or n NULL, fd not open or not connected),
 * ASYNC_ENOTSUP (fd is open for writing only), ASYNC_EIO. */
ASYNC_API int async_sock_read(int fd, void *buf, size_t len, size_t *n);
ASYNC_API int async_sock_read_dl(int fd, void *buf, size_t len, size_t *n, int64_t deadline);

/* Reads exactly len bytes.  *got (OUT, may be NULL) is how many arrived, also
 * on failure, so a caller can tell a clean end between messages (got 0) from
 * one inside a message.  Errors: as async_sock_read_dl (ASYNC_EEOF if the
 * stream ends first); len 0 returns 0 at once. */
ASYNC_API int async_sock_read_full(int fd, void *buf, size_t len, size_t *got);
ASYNC_API int async_sock_read_full_dl(int fd, void *buf, size_t len, size_t *got,
                                      int64_t deadline);

/* Writes all len bytes, waiting while the socket's buffer is full; a pipe
 * works too (write(2); make it O_NONBLOCK, or a full pipe blocks the
 * thread).  *sent (OUT, may be NULL) is how many went out, also
 * on failure: on a deadline (a peer that never reads), a cancel or a reset,
 * the caller learns how far it got.  Errors: ASYNC_EPIPE (the peer is gone:
 * it closed or reset the connection, or the kernel gave up on it; also a
 * socket that never connected or was shut down for writing; never SIGPIPE),
 * ASYNC_ETIMEDOUT, ASYNC_ECANCELED, ASYNC_ENOTASK, ASYNC_EINVAL (fd not
 * open, buf NULL with len > 0), ASYNC_ENOTSUP (fd is open for reading only),
 * ASYNC_ENOMEM, ASYNC_EIO. */
ASYNC_API int async_sock_write_all(int fd, const void *buf, size_t len, size_t *sent);
ASYNC_API int async_sock_write_all_dl(int fd, const void *buf, size_t len, size_t *sent,
                                      int64_t deadline);

/* shutdown(2): how is SHUT_RD, SHUT_WR or SHUT_RDWR.  Errors: ASYNC_EPIPE
 * (not connected: never, or no more after a reset), ASYNC_EINVAL (not a
 * socket, a bad how). */
ASYNC_API int async_sock_shutdown(int fd, int how);

/* Closes the socket.  A task of the same loop blocked on it must not be left
 * waiting: cancel it first.  Errors: ASYNC_EINVAL (fd < 0 or not open),
 * ASYNC_EIO; a close that fails with EINTR still released the descriptor and
 * returns 0. */
ASYNC_API int async_sock_close(int fd);

/* --- UDP -------------------------------------------------------------------- */

/* A non-blocking, close-on-exec UDP socket bound to ip (NULL: every IPv4
 * interface) and port (0: any).  Errors: as async_tcp_listen. */
ASYNC_API int async_udp_bind(int *fd, const char *ip, int port);

/* Sends one datagram to addr (NULL: the connected peer).  Errors:
 * ASYNC_ETIMEDOUT, ASYNC_ECANCELED, ASYNC_ENOTASK, ASYNC_EINVAL (too long for
 * one datagram, addr NULL on an unconnected socket, a bad address),
 * ASYNC_ECONNREFUSED (a connected socket whose peer's port was unreachable),
 * ASYNC_EPERM (a broadcast address, a firewall rule), ASYNC_ENOMEM,
 * -ENETUNREACH, -EHOSTUNREACH. */
ASYNC_API int async_udp_send_dl(int fd, const void *buf, size_t len, const struct sockaddr *addr,
                                socklen_t addrlen, int64_t deadline);

/* Receives one datagram: *n (OUT) its length (truncated to len); from and
 * *fromlen (OUT, both may be NULL) the sender.  Errors: ASYNC_ETIMEDOUT,
 * ASYNC_ECANCELED, ASYNC_ENOTASK, ASYNC_EINVAL (fd not a socket, buf or n
 * NULL, from without fromlen), ASYNC_ECONNREFUSED (after an ICMP error on a
 * connected socket), ASYNC_ENOMEM. */
ASYNC_API int async_udp_recv_dl(int fd, void *buf, size_t len, size_t *n, struct sockaddr *from,
                                socklen_t *fromlen, int64_t deadline);

/* --- DNS (c-ares on the loop) ----------------------------------------------- */

/* A resolver of one loop: c-ares, whose sockets and timeouts are watched by
 * that loop's libev watchers, so lookups never block the loop and no thread
 * is used.  It belongs to that loop: create, use and free it on the loop's
 * thread (ASYNC_EWRONGLOOP elsewhere), and free it before the loop. */
typedef struct async_dns async_dns_t;

/* The resolver's options.  size: 0 or sizeof(async_dns_opts_t) as the
 * program was compiled; 0 reads the 0.2 layout.  Later versions add fields
 * only at the end and read them only when size covers them.  Fill it with
 * async_dns_opts_init, or with a designated initialiser (size 0). */
typedef struct async_dns_opts {
    size_t size;
    /* "ip[:port],..." to ask instead of /etc/resolv.conf's servers (NULL: the
     * system's); tests point it at a local socket. */
    const char *servers;
    /* The first try's timeout per server, in ns (c-ares counts whole
     * milliseconds: a part of one rounds up, and more than INT_MAX of them,
     * ASYNC_FOREVER say, count as INT_MAX); 0: c-ares' default (2 s). */
    int64_t timeout_ns;
    int tries; /* tries per server; 0: c-ares' default (3) */
} async_dns_opts_t;

static inline void async_dns_opts_init(async_dns_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->size = sizeof *o;
}

/* Creates a resolver on loop (NULL: the loop running on this thread); opts may
 * be NULL.  Errors: ASYNC_ENOLOOP, ASYNC_EWRONGLOOP (loop belongs to another
 * thread), ASYNC_ENOMEM, ASYNC_EINVAL (out NULL, a bad servers string, a
 * nonzero size smaller than the 0.2 struct, a negative timeout_ns or tries),
 * ASYNC_EDNS (c-ares could not start). */
ASYNC_API int async_dns_new(async_dns_t **out, async_loop_t *loop, const async_dns_opts_t *opts);

/* Frees the resolver (NULL: nothing to do); lookups abandoned by a deadline
 * or a cancel are finished here.  Errors: ASYNC_EBUSY while a task waits in
 * a lookup, ASYNC_EWRONGLOOP (not on the resolver's loop thread). */
ASYNC_API int async_dns_destroy(async_dns_t *dns);

/* One resolved address. */
typedef struct async_addr {
    struct sockaddr_storage addr;
    socklen_t len;
} async_addr_t;

/* Resolves host (a name, a numeric address, or "localhost" from /etc/hosts)
 * for port; family is AF_UNSPEC, AF_INET or AF_INET6.  On success *addrs (OUT)
 * is an array of *n (OUT, >= 1) addresses ordered as RFC 8305 wants them
 * (families interleaved, the resolver's preferred one first); free it with
 * async_dns_addrs_free.  Runs in a task of dns's loop; an answer that needs
 * no server (a numeric address, the hosts file) comes at once, also in a
 * cancelled task.  Errors: ASYNC_ENOTFOUND, ASYNC_EDNS, ASYNC_ETIMEDOUT (the
 * deadline passed first: a resolver that never answers), ASYNC_ECANCELED (it
 * would have to wait), ASYNC_ENOTASK (outside a task, even for a numeric
 * address), ASYNC_EINVAL (dns, host, addrs or n NULL, host empty or not a
 * valid name, port outside 0..65535, another family), ASYNC_EWRONGLOOP (a
 * task of another loop), ASYNC_ENOMEM (also when a watcher for one of
 * c-ares' sockets cannot be allocated: every lookup then in flight on dns
 * ends with it at once), ASYNC_EMFILE or ASYNC_ENFILE (no server could be
 * asked: c-ares could not open a socket).  Without a deadline, a server that
 * never answers ends as ASYNC_ETIMEDOUT after c-ares' own timeouts and
 * tries. */
ASYNC_API int async_dns_resolve_dl(async_addr_t **addrs, size_t *n, async_dns_t *dns,
                                   const char *host,
                                   int port, int family, int64_t deadline);
ASYNC_API void async_dns_addrs_free(async_addr_t *addrs);

/* Connects to host:port with happy eyeballs (RFC 8305): resolves with dns
 * (NULL: host must be numeric), then starts a connect to the first address,
 * another every 250 ms (or as soon as one fails) while none has connected;
 * the first to connect wins and the others are closed.  *fd (OUT) is set only
 * on success.  Runs in a task (ASYNC_ENOTASK outside one, even for a numeric
 * host).  Errors: ASYNC_EINVAL (host or fd NULL, dns NULL and host not
 * numeric), those of async_dns_resolve_dl, then those of
 * async_connect_race_dl. */
ASYNC_API int async_tcp_connect_dl(int *fd, async_dns_t *dns, const char *host, int port,
                                   int64_t deadline);

/* The happy-eyeballs race over given addresses; stagger_ns is the delay
 * between attempts (0: RFC 8305's 250 ms; ASYNC_FOREVER: the next attempt
 * starts only when one fails).  An attempt that connects at once
 * wins at once, also in a cancelled task.  Errors: ASYNC_EINVAL (addrs or fd
 * NULL, n 0, stagger_ns negative), ASYNC_ENOTASK, ASYNC_ENOMEM,
 * ASYNC_ETIMEDOUT, ASYNC_ECANCELED (its attempts are closed), and when every
 * attempt fails the last one's error, one of async_sock_connect_dl's
 * (ASYNC_ECONNREFUSED...). */
ASYNC_API int async_connect_race_dl(int *fd, const async_addr_t *addrs, size_t n,
                                    int64_t stagger_ns,
                                    int64_t deadline);

/* --- signals ---------------------------------------------------------------- */

/* A set of signals a task can wait for, on any loop, through a signalfd.
 * async_signal_new blocks the signals in the calling thread (the signalfd
 * only sees signals that are blocked): call it before starting other threads
 * so that they inherit the mask, or block the signals in them too, or the
 * kernel may deliver a signal to a thread that has its default action.  The
 * set belongs to the thread that made it, whose mask it changed: free it
 * there.  A task on another thread may wait on it if that thread blocks
 * every signal of the set (only process-directed signals reach it then). */
typedef struct async_signal async_signal_t;

/* Makes the set of signals[0..n-1]; *out (OUT) is set only on success.
 * Errors: ASYNC_EINVAL (signals or out NULL, n 0, a number that is no
 * signal, or a signal that cannot be caught: SIGKILL, SIGSTOP),
 * ASYNC_ENOMEM, ASYNC_EMFILE, ASYNC_ENFILE, ASYNC_ENOTSUP (the kernel could
 * not make a signalfd). */
ASYNC_API int async_signal_new(async_signal_t **out, const int *signals, size_t n);

/* Closes the signalfd and unblocks the signals that async_signal_new blocked
 * (those the thread did not block already); signals still pending then are
 * delivered.  NULL: nothing to do.  Errors: ASYNC_EBUSY while a task waits
 * on it, ASYNC_EWRONGLOOP (not the thread that made the set). */
ASYNC_API int async_signal_destroy(async_signal_t *sig);

/* Waits for one of the set's signals; *signo (OUT) is which.  A signal
 * already pending is taken at once, also in a cancelled task or outside a
 * task.  Errors: ASYNC_ETIMEDOUT, ASYNC_ECANCELED, ASYNC_ENOTASK,
 * ASYNC_EINVAL (sig or signo NULL), ASYNC_EBUSY (another task already waits
 * on this set), ASYNC_EWRONGLOOP (a thread other than the set's that does
 * not block all its signals). */
ASYNC_API int async_signal_wait(async_signal_t *sig, int *signo);
ASYNC_API int async_signal_wait_dl(async_signal_t *sig, int *signo, int64_t deadline);

#ifdef __cplusplus
}
#endif
#endif
