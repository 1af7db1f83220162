/* Networking internals.  PRIVATE: never installed.  Shared between
 * socket.c (sockets), dns.c (c-ares and the happy-eyeballs race) and
 * signal.c. */
#ifndef ASYNC_NET_INTERNAL_H
#define ASYNC_NET_INTERNAL_H

#include "core/core_internal.h"
#include "async/net.h"

/* errno as one of common.h's codes (ENETUNREACH and EHOSTUNREACH pass
 * through as -errno); see socket.c. */
int async__net_errno(int e);

/* Fills *ss and *len from a numeric IPv4/IPv6 address (NULL: INADDR_ANY) and
 * a port.  Errors: ASYNC_EINVAL. */
int async__sockaddr_ip(const char *ip, int port, struct sockaddr_storage *ss, socklen_t *len);

/* Starts a non-blocking connect; *pending (OUT) is true while it is in
 * progress (wait for writability, then async__connect_result).  On error no
 * descriptor is left open. */
int async__connect_start(const struct sockaddr *addr, socklen_t len, int *fd, bool *pending);

/* 0 or the -errno a finished non-blocking connect ended with. */
int async__connect_result(int fd);

#endif
