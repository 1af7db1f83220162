/* Extreme values in the net module's time arithmetic (lib/net/dns.c): a
 * resolver timeout and a happy-eyeballs stagger of ASYNC_FOREVER, the value
 * a program passes for "no limit".  Round 17's outside review found both
 * overflowing int64_t (UndefinedBehaviorSanitizer stops the process there):
 * the resolver's timeout wrapped to a negative one, which c-ares took as
 * none at all, and the race's next start wrapped into the past, so every
 * attempt started at once.  Each test times only lower bounds. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <async.h>
#include <async/net.h>
#include "support/hang.h"
#include "support/run.h"

/* --- the resolver's timeout -------------------------------------------------- */

/* A UDP port on loopback that takes queries and never answers. */
static int silent_server(int *port)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    async_addr_t a = loopback(0);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a.addr, a.len), 0);
    socklen_t len = sizeof a.addr;
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a.addr, &len), 0);
    *port = ntohs(((struct sockaddr_in *)&a.addr)->sin_port);
    return fd;
}

static int t_dns_forever(void *arg, void **res)
{
    (void)arg, (void)res;
    int port, sfd = silent_server(&port);
    char servers[64];
    snprintf(servers, sizeof servers, "127.0.0.1:%d", port);
    async_dns_opts_t o;
    async_dns_opts_init(&o);
    o.servers = servers;
    o.timeout_ns = ASYNC_FOREVER;
    o.tries = 1;
    async_dns_t *d;
    cr_assert_eq(async_dns_new(&d, NULL, &o), 0);
    async_addr_t *addrs;
    size_t n;
    int64_t t0 = async_now();
    int rc = async_dns_resolve_dl(&addrs, &n, d, "silent.test", 80, AF_INET,
                                  async_deadline_after(ASYNC_MSEC(2500)));
    double waited = (double)(async_now() - t0) / 1e9;
    cr_assert_eq(rc, ASYNC_ETIMEDOUT, "%s", async_errname(rc));
    cr_assert_geq(waited, 2.5, "c-ares gave up after %.3f s, before the task's deadline",
                  waited);
    cr_assert_eq(async_dns_destroy(d), 0);
    close(sfd);
    return 0;
}
/* The try's timeout is c-ares' int of milliseconds at most: the lookup
 * waits for the task's deadline, past c-ares' default timeout (2 s), as it
 * would with any long timeout. */
Test(net_extremes, a_resolver_timeout_of_forever_waits_for_the_deadline, .timeout = 20)
{
    cr_assert_eq(test_run_task(t_dns_forever, NULL, NULL), 0);
}

/* --- the race's stagger --------------------------------------------------------- */

/* True when a connection waits in lfd's backlog (taken and closed). */
static bool someone_came(int lfd)
{
    int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (c >= 0) close(c);
    return c >= 0;
}

static int t_stagger_forever(void *arg, void **res)
{
    (void)arg, (void)res;
    struct hang h;
    hang_open(&h);
    int lfd, fd = -1;
    cr_assert_eq(async_tcp_listen(&lfd, "127.0.0.1", 0, 0), 0);
    async_addr_t addrs[2] = {h.addr, loopback(async_sock_port(lfd))};
    /* The first attempt hangs: with no stagger's end, the second never
     * starts, and the deadline ends the race. */
    int64_t t0 = async_now();
    int rc = async_connect_race_dl(&fd, addrs, 2, ASYNC_FOREVER,
                                   async_deadline_after(ASYNC_MSEC(500)));
    double waited = (double)(async_now() - t0) / 1e9;
    cr_assert_eq(rc, ASYNC_ETIMEDOUT, "%s: the second attempt started", async_errname(rc));
    cr_assert_geq(waited, 0.5, "the race ended after %.3f s", waited);
    cr_assert_not(someone_came(lfd), "the second address was tried");
    /* A failure still starts the next attempt at once. */
    int dead;
    cr_assert_eq(async_tcp_listen(&dead, "127.0.0.1", 0, 0), 0);
    addrs[0] = loopback(async_sock_port(dead));
    close(dead); /* nobody listens there now */
    rc = async_connect_race_dl(&fd, addrs, 2, ASYNC_FOREVER, async_deadline_after(ASYNC_SEC(10)));
    cr_assert_eq(rc, 0, "after a refused first address: %s", async_errname(rc));
    close(fd);
    close(lfd);
    hang_close(&h);
    return 0;
}
Test(net_extremes, a_stagger_of_forever_starts_the_next_attempt_only_when_one_fails,
     .timeout = 30)
{
    cr_assert_eq(test_run_task(t_stagger_forever, NULL, NULL), 0);
}
