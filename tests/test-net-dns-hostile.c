/* Round 12's hostile review of the resolver (lib/net/dns.c): a DNS server on
 * loopback that answers garbage, a name compressed into itself, replies too
 * short for a header or with another query's id, and a truncated reply that
 * sends c-ares to a TCP port that never answers.  Each lookup must end with
 * its own error or c-ares' timeout, well before the task's deadline, in a
 * handful of loop turns, and nothing may leak. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <async.h>
#include <async/net.h>
#include "support/alloc.h"
#include "support/teardown.h"
#include "support/dns_wire.h"

static async_loop_t *loop;

static void setup(void)
{
    test_alloc_install();
    cr_assert_eq(async_loop_new(&loop), 0);
}

static void teardown(void)
{
    TEARDOWN_CHECK(async_loop_destroy(loop) == 0, "the loop would not close");
    TEARDOWN_CHECK_NO_LEAK();
    test_alloc_uninstall();
}

TestSuite(dns_hostile, .init = setup, .fini = teardown, .timeout = 60);

static double thread_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_THREAD, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* --- the server -------------------------------------------------------------------
 *
 * A thread answering on a loopback UDP port by the name asked: garbage after
 * a valid header, a reply too short for a header, a truncated reply (TC) that
 * sends c-ares to TCP, where a listener accepts and never answers, an answer
 * whose name points at itself, a reply with the wrong query id.  c-ares must
 * turn each into a precise error or a timeout within the deadline, and the
 * resolver's watchers must not spin meanwhile. */

typedef struct fake_dns {
    int udp, tcp, held[16];
    int n_held;
    pthread_t th;
    atomic_int stop, queries, tcp_conns;
    char servers[64];
} fake_dns_t;

static size_t dns_reply(const unsigned char *q, size_t n, unsigned char *r, size_t cap)
{
    char name[256];
    unsigned qtype;
    size_t qend = test_dns_question(q, n, name, sizeof name, &qtype);
    if (!qend || qend + 64 > cap) return 0;
    test_dns_reply_head(q, qend, r);
    size_t m = qend;
    if (!strcmp(name, "garbage.test")) {
        r[7] = 1; /* one answer, then bytes that are none */
        memset(r + m, 0xff, 11);
        m += 11;
    } else if (!strcmp(name, "short.test")) {
        m = 5;
    } else if (!strcmp(name, "trunc.test")) {
        r[2] |= 0x02; /* TC: ask again over TCP */
    } else if (!strcmp(name, "ptrloop.test")) {
        r[7] = 1;
        /* The answer's name is a pointer to itself. */
        r[m] = (unsigned char)(0xc0 | (m >> 8));
        r[m + 1] = (unsigned char)(m & 0xff);
        unsigned char rest[] = {0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1};
        memcpy(r + m + 2, rest, sizeof rest);
        m += 2 + sizeof rest;
    } else if (!strcmp(name, "wrongid.test")) {
        r[0] ^= 0xff;
        r[1] ^= 0xff;
        r[7] = 1;
        unsigned char rr[] = {0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1};
        memcpy(r + m, rr, sizeof rr);
        m += sizeof rr;
    } else {
        r[3] = 0x83; /* NXDOMAIN */
    }
    return m;
}

static void *fake_dns_main(void *arg)
{
    fake_dns_t *f = arg;
    while (!atomic_load(&f->stop)) {
        struct pollfd p[2] = {{f->udp, POLLIN, 0}, {f->tcp, POLLIN, 0}};
        if (poll(p, 2, 50) <= 0) continue;
        if (p[1].revents & POLLIN) {
            int c = accept(f->tcp, NULL, NULL);
            if (c >= 0) {
                atomic_fetch_add(&f->tcp_conns, 1);
                if (f->n_held < 16) f->held[f->n_held++] = c; /* held open, never answered */
                else close(c);
            }
        }
        if (!(p[0].revents & POLLIN)) continue;
        unsigned char q[512], r[600];
        struct sockaddr_storage from;
        socklen_t fl = sizeof from;
        ssize_t n = recvfrom(f->udp, q, sizeof q, 0, (struct sockaddr *)&from, &fl);
        if (n < 17) continue;
        atomic_fetch_add(&f->queries, 1);
        size_t m = dns_reply(q, (size_t)n, r, sizeof r);
        if (m) sendto(f->udp, r, m, 0, (struct sockaddr *)&from, fl);
    }
    return NULL;
}

static void fake_dns_start(fake_dns_t *f)
{
    memset(f, 0, sizeof *f);
    struct sockaddr_in a;
    for (int tries = 0;; tries++) {
        f->udp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        f->tcp = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        cr_assert(f->udp >= 0 && f->tcp >= 0);
        a = (struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t al = sizeof a;
        cr_assert_eq(bind(f->udp, (struct sockaddr *)&a, sizeof a), 0);
        cr_assert_eq(getsockname(f->udp, (struct sockaddr *)&a, &al), 0);
        /* The same port over TCP, for the truncated reply's retry; the
         * kernel's free UDP port may be a busy TCP one: then another. */
        int one = 1;
        setsockopt(f->tcp, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(f->tcp, (struct sockaddr *)&a, sizeof a) == 0) break;
        cr_assert_lt(tries, 50, "no port free for both UDP and TCP: %s", strerror(errno));
        close(f->udp);
        close(f->tcp);
    }
    cr_assert_eq(listen(f->tcp, 16), 0);
    snprintf(f->servers, sizeof f->servers, "127.0.0.1:%u", ntohs(a.sin_port));
    cr_assert_eq(pthread_create(&f->th, NULL, fake_dns_main, f), 0);
}

static void fake_dns_stop(fake_dns_t *f)
{
    atomic_store(&f->stop, 1);
    pthread_join(f->th, NULL);
    for (int i = 0; i < f->n_held; i++) close(f->held[i]);
    close(f->udp);
    close(f->tcp);
}

typedef struct lookup {
    fake_dns_t *f;
    const char *name;
    int rc;
    size_t n;
    double wall, cpu;
    unsigned iters;
} lookup_t;

static int lookup_task(void *arg, void **result)
{
    (void)result;
    lookup_t *l = arg;
    async_dns_opts_t o = {.servers = l->f->servers, .timeout_ns = ASYNC_MSEC(300), .tries = 2};
    async_dns_t *d;
    l->rc = async_dns_new(&d, NULL, &o);
    if (l->rc) return 0;
    async_addr_t *a = NULL;
    struct ev_loop *ev = async_loop_ev(loop);
    unsigned it0 = ev_iteration(ev);
    double cpu0 = thread_cpu();
    int64_t t0 = async_now();
    l->rc = async_dns_resolve_dl(&a, &l->n, d, l->name, 80, AF_INET,
                                 async_deadline_after(ASYNC_SEC(5)));
    l->wall = (double)(async_now() - t0) / 1e9;
    l->cpu = thread_cpu() - cpu0;
    l->iters = ev_iteration(ev) - it0;
    if (!l->rc) async_dns_addrs_free(a);
    int rc = async_dns_destroy(d);
    if (rc) l->rc = rc;
    return 0;
}

static lookup_t resolve(fake_dns_t *f, const char *name)
{
    lookup_t l = {.f = f, .name = name};
    cr_assert_eq(async_task_spawn(NULL, loop, lookup_task, &l, NULL), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_log_info("%s: %s after %.3f s, %.3f s CPU, %u loop turns", name, async_errname(l.rc),
                l.wall, l.cpu, l.iters);
    return l;
}

/* Each hostile answer ends the lookup with its own error, or with c-ares'
 * own timeout (300 ms a try, two tries) well before the task's 5 s
 * deadline, in a handful of loop turns.  Before round 12 every c-ares
 * timeout spun the loop for up to a millisecond (c-ares says 0 ms with
 * less than one left, then does not expire the query yet): 489 to 1,287
 * turns for a lookup that timed out. */
Test(dns_hostile, answers_are_precise_errors_or_timeouts_without_spinning)
{
    fake_dns_t f;
    fake_dns_start(&f);
    static const struct {
        const char *name;
        int want;
    } cases[] = {
        {"garbage.test", ASYNC_EDNS},      /* an answer that is not one: c-ares' EBADRESP */
        {"ptrloop.test", ASYNC_EDNS},      /* a name compressed into itself */
        {"nothing.test", ASYNC_ENOTFOUND}, /* NXDOMAIN */
        {"short.test", ASYNC_ETIMEDOUT},   /* too short for a header: ignored */
        {"wrongid.test", ASYNC_ETIMEDOUT}, /* another query's id: ignored */
        {"trunc.test", ASYNC_ETIMEDOUT},   /* TC: asked again over TCP, never answered */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        lookup_t l = resolve(&f, cases[i].name);
        cr_expect_eq(l.rc, cases[i].want, "%s: %s, want %s", cases[i].name, async_errname(l.rc),
                     async_errname(cases[i].want));
        cr_expect_lt(l.wall, 4.5, "%s: %.2f s, past c-ares' own tries", cases[i].name, l.wall);
        if (cases[i].want == ASYNC_ETIMEDOUT)
            cr_expect_geq(l.wall, 0.29, "%s: timed out after %.3f s", cases[i].name, l.wall);
        cr_expect_lt(l.iters, 40u, "%s: %u loop turns for one lookup: the wait spun",
                     cases[i].name, l.iters);
    }
    cr_expect_geq(atomic_load(&f.tcp_conns), 1, "the truncated answer was not asked again over TCP");
    fake_dns_stop(&f);
}

