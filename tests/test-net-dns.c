/* DNS on the loop (c-ares) and the happy-eyeballs connect.  Never touches the
 * real network: names go to a tiny DNS responder on a local UDP socket (a
 * task of the same loop), which answers, says NXDOMAIN, or swallows queries;
 * "localhost" comes from /etc/hosts and is checked against getaddrinfo. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>
#include "support/hang.h"
#include "support/run.h"
#include "support/proc.h"
#include "support/dns_wire.h"

static int64_t dl_ms(int ms) { return async_deadline_after((int64_t)(ASYNC_MSEC(ms) * test_slack())); }

/* --- the fake DNS server -------------------------------------------------- */

struct fake_dns {
    int fd, queries;
    char servers[64]; /* "127.0.0.1:PORT", for async_dns_opts_t.servers */
    async_task_t task;
};

/* Answers A and AAAA for "two.test" (127.0.0.1, ::1), drops every query for
 * a name starting "silent", says NXDOMAIN to the rest. */
static int fake_dns_serve(void *arg, void **res)
{
    (void)res;
    struct fake_dns *f = arg;
    unsigned char q[512], r[600];
    for (;;) {
        struct sockaddr_storage from;
        socklen_t fl = sizeof from;
        size_t n;
        int rc = async_udp_recv_dl(f->fd, q, sizeof q, &n, (struct sockaddr *)&from, &fl, ASYNC_FOREVER);
        if (rc) return rc == ASYNC_ECANCELED ? 0 : rc;
        if (n < 17) continue;
        f->queries++;
        char name[256];
        unsigned qtype;
        size_t qend = test_dns_question(q, n, name, sizeof name, &qtype);
        if (!qend) continue;
        if (!strncmp(name, "silent", 6)) continue;
        test_dns_reply_head(q, qend, r);
        size_t m = qend;
        if (!strcmp(name, "two.test") && (qtype == 1 || qtype == 28)) {
            r[7] = 1; /* one answer */
            unsigned char rr[] = {0xc0, 0x0c, 0, (unsigned char)qtype, 0, 1, 0, 0, 0, 60, 0,
                                  qtype == 1 ? 4 : 16};
            memcpy(r + m, rr, sizeof rr);
            m += sizeof rr;
            if (qtype == 1) {
                unsigned char a[4] = {127, 0, 0, 1};
                memcpy(r + m, a, 4);
                m += 4;
            } else {
                unsigned char a[16] = {0};
                a[15] = 1;
                memcpy(r + m, a, 16);
                m += 16;
            }
        } else if (strcmp(name, "two.test")) {
            r[3] = 0x83; /* NXDOMAIN */
        }
        async_udp_send_dl(f->fd, r, m, (struct sockaddr *)&from, fl, dl_ms(1000));
    }
}

/* Starts the server as a task of the current loop. */
static void fake_dns_start(struct fake_dns *f)
{
    memset(f, 0, sizeof *f);
    cr_assert_eq(async_udp_bind(&f->fd, "127.0.0.1", 0), 0);
    snprintf(f->servers, sizeof f->servers, "127.0.0.1:%d", async_sock_port(f->fd));
    cr_assert_eq(async_task_spawn(&f->task, NULL, fake_dns_serve, f, NULL), 0);
}

static void fake_dns_stop(struct fake_dns *f)
{
    async_task_cancel(f->task);
    cr_assert_eq(async_task_await(f->task, NULL), 0);
    async_sock_close(f->fd);
}

static async_dns_t *dns_on(struct fake_dns *f, int64_t timeout_ns, int tries)
{
    async_dns_opts_t o = {.servers = f->servers, .timeout_ns = timeout_ns, .tries = tries};
    async_dns_t *d;
    cr_assert_eq(async_dns_new(&d, NULL, &o), 0);
    return d;
}

/* The usual start of a test: the fake server, and a resolver of the loop's
 * that asks only it, with c-ares' default timeout and tries. */
static async_dns_t *fake_dns_and_resolver(struct fake_dns *f)
{
    fake_dns_start(f);
    return dns_on(f, 0, 0);
}

/* --- lookups -------------------------------------------------------------- */

static int t_localhost(void *arg, void **res)
{
    (void)arg, (void)res;
    async_dns_t *d;
    cr_assert_eq(async_dns_new(&d, NULL, NULL), 0);
    async_addr_t *a;
    size_t n;
    cr_assert_eq(async_dns_resolve_dl(&a, &n, d, "localhost", 80, AF_UNSPEC, dl_ms(5000)), 0);
    cr_assert_geq(n, 1);
    /* Every address c-ares gives is one the system's resolver gives too. */
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *gai;
    cr_assert_eq(getaddrinfo("localhost", "80", &hints, &gai), 0);
    for (size_t i = 0; i < n; i++) {
        bool found = false;
        for (struct addrinfo *p = gai; p; p = p->ai_next)
            found |= p->ai_addrlen == a[i].len && !memcmp(p->ai_addr, &a[i].addr, a[i].len);
        cr_assert(found, "address %zu of localhost is not getaddrinfo's", i);
    }
    freeaddrinfo(gai);
    async_dns_addrs_free(a);
    /* A numeric address needs no server. */
    cr_assert_eq(async_dns_resolve_dl(&a, &n, d, "127.0.0.1", 8080, AF_INET, dl_ms(5000)), 0);
    cr_assert_eq(n, 1);
    struct sockaddr_in *in = (struct sockaddr_in *)&a[0].addr;
    cr_assert_eq(in->sin_addr.s_addr, htonl(INADDR_LOOPBACK));
    cr_assert_eq(ntohs(in->sin_port), 8080);
    async_dns_addrs_free(a);
    /* c-ares answered that from inside the call: no wake-up may be left
     * pending for the task's next, unrelated suspension. */
    cr_assert_eq(async_task_suspend_dl(async_deadline_after(ASYNC_MSEC(20))), ASYNC_ETIMEDOUT);
    cr_assert_eq(async_dns_destroy(d), 0);
    return 0;
}
Test(dns, localhost_matches_getaddrinfo_and_numeric_needs_no_server, .timeout = 20)
{
    cr_assert_eq(test_run_task(t_localhost, NULL, NULL), 0);
}

static int t_answers(void *arg, void **res)
{
    (void)arg, (void)res;
    struct fake_dns f;
    async_dns_t *d = fake_dns_and_resolver(&f);
    async_addr_t *a;
    size_t n;
    cr_assert_eq(async_dns_resolve_dl(&a, &n, d, "two.test", 443, AF_UNSPEC, dl_ms(5000)), 0);
    cr_assert_eq(n, 2, "one A and one AAAA");
    cr_assert_neq(a[0].addr.ss_family, a[1].addr.ss_family, "families interleaved");
    async_dns_addrs_free(a);
    cr_assert_eq(async_dns_resolve_dl(&a, &n, d, "two.test", 443, AF_INET6, dl_ms(5000)), 0);
    cr_assert_eq(n, 1);
    cr_assert_eq(a[0].addr.ss_family, AF_INET6);
    async_dns_addrs_free(a);
    cr_assert_eq(async_dns_resolve_dl(&a, &n, d, "nx.test", 443, AF_UNSPEC, dl_ms(5000)),
                 ASYNC_ENOTFOUND);
    cr_assert_gt(f.queries, 0, "the answers came from the fake server");
    cr_assert_eq(async_dns_resolve_dl(&a, &n, d, "", 443, AF_UNSPEC, dl_ms(5000)), ASYNC_EINVAL);
    cr_assert_eq(async_dns_resolve_dl(&a, &n, d, "two.test", 443, 12345, dl_ms(5000)),
                 ASYNC_EINVAL);
    cr_assert_eq(async_dns_destroy(d), 0);
    fake_dns_stop(&f);
    return 0;
}
Test(dns, answers_interleave_families_and_nxdomain_is_enotfound, .timeout = 20)
{
    cr_assert_eq(test_run_task(t_answers, NULL, NULL), 0);
}

static int t_never_answers(void *arg, void **res)
{
    (void)arg, (void)res;
    struct fake_dns f;
    async_dns_t *d = fake_dns_and_resolver(&f);
    async_addr_t *a;
    size_t n;
    int64_t t0 = async_now();
    cr_assert_eq(async_dns_resolve_dl(&a, &n, d, "silent.test", 80, AF_UNSPEC,
                                      async_deadline_after(ASYNC_MSEC(300))),
                 ASYNC_ETIMEDOUT);
    cr_assert_geq(async_now() - t0, ASYNC_MSEC(300));
    /* The abandoned lookup is finished (and freed) by async_dns_destroy. */
    cr_assert_eq(async_dns_destroy(d), 0);
    /* Without a deadline, c-ares' own timeout ends it, as ETIMEDOUT too. */
    d = dns_on(&f, ASYNC_MSEC(100), 1);
    t0 = async_now();
    cr_assert_eq(async_dns_resolve_dl(&a, &n, d, "silent.test", 80, AF_INET, ASYNC_FOREVER),
                 ASYNC_ETIMEDOUT);
    cr_assert_geq(async_now() - t0, ASYNC_MSEC(100));
    cr_assert_eq(async_dns_destroy(d), 0);
    fake_dns_stop(&f);
    return 0;
}
Test(dns, resolver_that_never_answers_times_out, .timeout = 30)
{
    cr_assert_eq(test_run_task(t_never_answers, NULL, NULL), 0);
}

static int lookup_silent(void *arg, void **res)
{
    (void)res;
    async_addr_t *a;
    size_t n;
    return async_dns_resolve_dl(&a, &n, arg, "silent.test", 80, AF_UNSPEC, ASYNC_FOREVER);
}

static int t_cancel(void *arg, void **res)
{
    (void)arg, (void)res;
    struct fake_dns f;
    async_dns_t *d = fake_dns_and_resolver(&f);
    async_task_t t = test_spawn_started(lookup_silent, d);
    cr_assert_eq(async_dns_destroy(d), ASYNC_EBUSY, "a task waits in a lookup");
    cr_assert_eq(async_task_cancel(t), 0);
    cr_assert_eq(async_task_await(t, NULL), ASYNC_ECANCELED);
    cr_assert_eq(async_dns_destroy(d), 0);
    fake_dns_stop(&f);
    return 0;
}
Test(dns, cancel_ends_a_lookup_with_ecanceled, .timeout = 20)
{
    cr_assert_eq(test_run_task(t_cancel, NULL, NULL), 0);
}

/* A cancelled task still resolves what needs no wait (a numeric address,
 * answered inside the call), and a race whose address connects at once (a
 * Unix socket) still wins; a lookup that must ask the server stops with
 * ASYNC_ECANCELED. */
struct cancelled_arg {
    async_dns_t *dns;
    async_addr_t unix_addr;
};

static int cancelled_checks(void *arg, void **res)
{
    (void)res;
    struct cancelled_arg *ca = arg;
    cr_assert_eq(async_task_cancel(async_task_self()), 0);
    async_addr_t *a;
    size_t n;
    cr_assert_eq(async_dns_resolve_dl(&a, &n, ca->dns, "127.0.0.1", 80, AF_INET, ASYNC_FOREVER), 0);
    cr_assert_eq(n, 1);
    async_dns_addrs_free(a);
    cr_assert_eq(async_dns_resolve_dl(&a, &n, ca->dns, "silent.test", 80, AF_INET, ASYNC_FOREVER),
                 ASYNC_ECANCELED);
    int fd;
    cr_assert_eq(async_connect_race_dl(&fd, &ca->unix_addr, 1, 0, ASYNC_FOREVER), 0);
    async_sock_close(fd);
    return 0;
}

static int t_cancelled_completes(void *arg, void **res)
{
    (void)arg, (void)res;
    struct fake_dns f;
    struct cancelled_arg ca = {.dns = fake_dns_and_resolver(&f)};
    char path[64];
    snprintf(path, sizeof path, "/tmp/test-net-dns-%d.sock", (int)getpid());
    int lfd;
    cr_assert_eq(async_unix_listen(&lfd, path, 0), 0);
    struct sockaddr_un *un = (struct sockaddr_un *)&ca.unix_addr.addr;
    un->sun_family = AF_UNIX;
    strcpy(un->sun_path, path);
    ca.unix_addr.len = sizeof *un;
    async_task_t t;
    cr_assert_eq(async_task_spawn(&t, NULL, cancelled_checks, &ca, NULL), 0);
    cr_assert_eq(async_task_await(t, NULL), 0);
    async_sock_close(lfd);
    unlink(path);
    cr_assert_eq(async_dns_destroy(ca.dns), 0);
    fake_dns_stop(&f);
    return 0;
}
Test(dns, cancelled_task_completes_what_needs_no_wait, .timeout = 20)
{
    cr_assert_eq(test_run_task(t_cancelled_completes, NULL, NULL), 0);
}

Test(dns, resolve_outside_a_task_is_enotask, .timeout = 10)
{
    async_loop_t *loop;
    cr_assert_eq(async_loop_new(&loop), 0);
    async_dns_t *d;
    cr_assert_eq(async_dns_new(&d, loop, NULL), 0);
    async_addr_t *a;
    size_t n;
    cr_assert_eq(async_dns_resolve_dl(&a, &n, d, "localhost", 80, AF_UNSPEC, ASYNC_FOREVER),
                 ASYNC_ENOTASK);
    async_dns_opts_t bad = {.servers = "not a server list"};
    async_dns_t *d2;
    cr_assert_eq(async_dns_new(&d2, loop, &bad), ASYNC_EINVAL);
    cr_assert_eq(async_dns_new(&d2, NULL, NULL), ASYNC_ENOLOOP);
    cr_assert_eq(async_dns_destroy(d), 0);
    cr_assert_eq(async_loop_destroy(loop), 0);
}

Test(dns, opts_size_zero_or_sizeof_work_and_a_short_size_is_einval, .timeout = 10)
{
    async_loop_t *loop;
    cr_assert_eq(async_loop_new(&loop), 0);
    async_dns_t *d;
    async_dns_opts_t o;
    async_dns_opts_init(&o);
    cr_assert_eq(o.size, sizeof o);
    cr_assert_eq(o.servers, NULL);
    cr_assert_eq(o.timeout_ns, 0);
    cr_assert_eq(o.tries, 0);
    o.timeout_ns = ASYNC_MSEC(1500);
    cr_assert_eq(async_dns_new(&d, loop, &o), 0, "size == sizeof");
    cr_assert_eq(async_dns_destroy(d), 0);
    cr_assert_eq(async_dns_new(&d, loop, &(async_dns_opts_t){.tries = 2}), 0,
                 "size 0: the 0.2 layout");
    cr_assert_eq(async_dns_destroy(d), 0);
    o.size = 1;
    cr_assert_eq(async_dns_new(&d, loop, &o), ASYNC_EINVAL);
    async_dns_opts_init(&o);
    o.timeout_ns = -1;
    cr_assert_eq(async_dns_new(&d, loop, &o), ASYNC_EINVAL);
    async_dns_opts_init(&o);
    o.tries = -1;
    cr_assert_eq(async_dns_new(&d, loop, &o), ASYNC_EINVAL);
    cr_assert_eq(async_loop_destroy(loop), 0);
}

/* A resolver belongs to its loop: made, used and freed from that loop's
 * thread only. */
struct foreign {
    async_loop_t *loop; /* the test thread's */
    async_dns_t *dns;
    int new_rc, free_rc, resolve_rc;
};

static int foreign_task(void *arg, void **res)
{
    (void)res;
    struct foreign *f = arg;
    async_addr_t *a;
    size_t n;
    f->resolve_rc = async_dns_resolve_dl(&a, &n, f->dns, "127.0.0.1", 80, AF_INET, ASYNC_FOREVER);
    async_dns_t *d = NULL;
    f->new_rc = async_dns_new(&d, f->loop, NULL);
    f->free_rc = async_dns_destroy(f->dns);
    return 0;
}

Test(dns, another_loop_or_thread_is_ewrongloop, .timeout = 10)
{
    struct foreign f = {.new_rc = 1, .free_rc = 1, .resolve_rc = 1};
    cr_assert_eq(async_loop_new(&f.loop), 0);
    cr_assert_eq(async_dns_new(&f.dns, f.loop, NULL), 0);
    cr_assert_eq(test_run_task_in_thread(foreign_task, &f), 0);
    cr_assert_eq(f.resolve_rc, ASYNC_EWRONGLOOP);
    cr_assert_eq(f.new_rc, ASYNC_EWRONGLOOP);
    cr_assert_eq(f.free_rc, ASYNC_EWRONGLOOP);
    cr_assert_eq(async_dns_destroy(f.dns), 0);
    cr_assert_eq(async_loop_destroy(f.loop), 0);
}

/* --- happy eyeballs -------------------------------------------------------- */

static async_addr_t listen_addr(int *lfd)
{
    cr_assert_eq(async_tcp_listen(lfd, "127.0.0.1", 0, 0), 0);
    return loopback(async_sock_port(*lfd));
}

static int peer_port(int fd)
{
    struct sockaddr_in p;
    socklen_t l = sizeof p;
    cr_assert_eq(getpeername(fd, (struct sockaddr *)&p, &l), 0);
    return ntohs(p.sin_port);
}

static int t_race_stagger(void *arg, void **res)
{
    (void)arg, (void)res;
    struct hang h;
    hang_open(&h);
    int lfd, fd;
    async_addr_t addrs[2] = {h.addr, listen_addr(&lfd)};
    int fds_before = test_count_fds();
    int64_t t0 = async_now();
    cr_assert_eq(async_connect_race_dl(&fd, addrs, 2, 0, dl_ms(5000)), 0);
    cr_assert_geq(async_now() - t0, ASYNC_MSEC(250), "the second attempt waits out the 250 ms stagger");
    cr_assert_eq(peer_port(fd), async_sock_port(lfd), "the address that answered won");
    cr_assert_eq(test_count_fds(), fds_before + 1, "the losing attempt was closed");
    close(fd);
    /* Only the hanging address: the deadline ends the race. */
    t0 = async_now();
    cr_assert_eq(async_connect_race_dl(&fd, addrs, 1, 0, async_deadline_after(ASYNC_MSEC(200))),
                 ASYNC_ETIMEDOUT);
    cr_assert_geq(async_now() - t0, ASYNC_MSEC(200));
    cr_assert_eq(test_count_fds(), fds_before);
    close(lfd);
    hang_close(&h);
    return 0;
}
Test(happy_eyeballs, stalled_first_address_loses_to_second_after_stagger, .timeout = 30)
{
    cr_assert_eq(test_run_task(t_race_stagger, NULL, NULL), 0);
}

static int race_hang(void *arg, void **res)
{
    (void)res;
    int fd;
    return async_connect_race_dl(&fd, arg, 1, 0, ASYNC_FOREVER);
}

static int t_race_cancel(void *arg, void **res)
{
    (void)arg, (void)res;
    struct hang h;
    hang_open(&h);
    int fds_before = test_count_fds();
    async_task_t t = test_spawn_started(race_hang, &h.addr);
    cr_assert_eq(async_task_cancel(t), 0);
    cr_assert_eq(async_task_await(t, NULL), ASYNC_ECANCELED);
    cr_assert_eq(test_count_fds(), fds_before, "the cancelled attempt was closed");
    hang_close(&h);
    return 0;
}
Test(happy_eyeballs, cancel_ends_the_race_and_closes_attempts, .timeout = 30)
{
    cr_assert_eq(test_run_task(t_race_cancel, NULL, NULL), 0);
}

static int t_race_refused(void *arg, void **res)
{
    (void)arg, (void)res;
    int dead, lfd, fd;
    async_addr_t refused = listen_addr(&dead);
    close(dead); /* nobody listens there now */
    async_addr_t addrs[2] = {refused, listen_addr(&lfd)};
    /* A stagger far longer than the test: only "a failure starts the next
     * attempt at once" can make it connect in time. */
    int64_t t0 = async_now();
    cr_assert_eq(async_connect_race_dl(&fd, addrs, 2, ASYNC_SEC(20), dl_ms(15000)), 0);
    cr_assert_lt(async_now() - t0, ASYNC_SEC(10));
    cr_assert_eq(peer_port(fd), async_sock_port(lfd));
    close(fd);
    cr_assert_eq(async_connect_race_dl(&fd, addrs, 1, 0, dl_ms(5000)), ASYNC_ECONNREFUSED);
    close(lfd);
    return 0;
}
Test(happy_eyeballs, refused_address_starts_next_attempt_at_once, .timeout = 40)
{
    cr_assert_eq(test_run_task(t_race_refused, NULL, NULL), 0);
}

static int t_connect_name(void *arg, void **res)
{
    (void)arg, (void)res;
    struct fake_dns f;
    async_dns_t *d = fake_dns_and_resolver(&f);
    int lfd, fd;
    cr_assert_eq(async_tcp_listen(&lfd, "127.0.0.1", 0, 0), 0);
    /* two.test is 127.0.0.1 and ::1; only the IPv4 one listens on the port. */
    cr_assert_eq(async_tcp_connect_dl(&fd, d, "two.test", async_sock_port(lfd), dl_ms(5000)), 0);
    cr_assert_eq(peer_port(fd), async_sock_port(lfd));
    close(fd);
    cr_assert_eq(async_tcp_connect_dl(&fd, d, "nx.test", 80, dl_ms(5000)), ASYNC_ENOTFOUND);
    cr_assert_eq(async_tcp_connect_dl(&fd, NULL, "127.0.0.1", async_sock_port(lfd), dl_ms(5000)),
                 0);
    close(fd);
    cr_assert_eq(async_tcp_connect_dl(&fd, NULL, "two.test", 80, dl_ms(5000)), ASYNC_EINVAL,
                 "a name needs a resolver");
    close(lfd);
    cr_assert_eq(async_dns_destroy(d), 0);
    fake_dns_stop(&f);
    return 0;
}
Test(happy_eyeballs, connect_by_name_through_the_resolver, .timeout = 30)
{
    cr_assert_eq(test_run_task(t_connect_name, NULL, NULL), 0);
}
