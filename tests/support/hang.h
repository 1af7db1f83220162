/* Loopback addresses and a listener a connect hangs on, for the net tests
 * (happy eyeballs, stagger, deadlines). */
#ifndef TEST_SUPPORT_HANG_H
#define TEST_SUPPORT_HANG_H
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <unistd.h>
#include <async.h>
#include <async/net.h>

/* 127.0.0.1:port as an async_addr_t. */
static inline async_addr_t loopback(int port)
{
    async_addr_t a;
    memset(&a, 0, sizeof a);
    struct sockaddr_in *in = (struct sockaddr_in *)&a.addr;
    in->sin_family = AF_INET;
    in->sin_port = htons((uint16_t)port);
    in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.len = sizeof *in;
    return a;
}

/* A listener whose backlog is full and never accepts: a connect to it hangs. */
struct hang {
    int lfd, fds[32], n;
    async_addr_t addr;
};

static inline void hang_open(struct hang *h)
{
    cr_assert_eq(async_tcp_listen(&h->lfd, "127.0.0.1", 0, 1), 0);
    int port = async_sock_port(h->lfd);
    h->n = 0;
    while (h->n < 32 &&
           async_tcp_connect_ip_dl(&h->fds[h->n], "127.0.0.1", port,
                                   async_deadline_after(ASYNC_MSEC(200))) == 0)
        h->n++;
    cr_assert_lt(h->n, 32, "the backlog never filled");
    h->addr = loopback(port);
}

static inline void hang_close(struct hang *h)
{
    for (int i = 0; i < h->n; i++) close(h->fds[i]);
    close(h->lfd);
}
#endif
