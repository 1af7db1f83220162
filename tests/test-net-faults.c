/* The net module's error paths that the other suites do not reach: every
 * allocation of the resolver, its lookups, the connect race and the signal
 * set failing in turn (ASYNC_ENOMEM, nothing leaked, the next call works);
 * every constructor and connect under exhausted descriptors (ASYNC_EMFILE
 * and the process's descriptors as they were, the signal mask too); and the
 * smaller ones: an address family the kernel lacks in a race, a short
 * stream at read_full, a listen path whose directory is missing, a port in
 * use, the port of a socket that has none. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <async.h>
#include "support/alloc.h"
#include "support/proc.h"
#include "support/run.h"

/* A UDP socket on loopback that never answers: a DNS server that is gone. */
static int silent_server(int *port)
{
    int fd;
    cr_assert_eq(async_udp_bind(&fd, "127.0.0.1", 0), 0);
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

/* --- allocations failing one after another ------------------------------- */

typedef struct op {
    const char *name;
    int (*fn)(struct op *); /* 0 or ASYNC_ENOMEM; anything else is wrong */
    int port;               /* the silent server's */
    int lfd;                /* a listener on loopback */
} op_t;

static int dns_lookups(op_t *o)
{
    char servers[64];
    snprintf(servers, sizeof servers, "127.0.0.1:%d", o->port);
    async_dns_opts_t opts;
    async_dns_opts_init(&opts);
    opts.servers = servers;
    opts.timeout_ns = ASYNC_MSEC(50);
    opts.tries = 1;
    async_dns_t *d;
    int rc = async_dns_new(&d, NULL, &opts);
    if (rc) return rc;
    static const char *const names[] = {"127.0.0.1", "::1", "localhost"};
    for (size_t i = 0; i < 3 && !rc; i++) {
        async_addr_t *a;
        size_t n;
        rc = async_dns_resolve_dl(&a, &n, d, names[i], 80, AF_UNSPEC, ASYNC_FOREVER);
        if (!rc) async_dns_addrs_free(a);
    }
    /* A lookup the silent server never answers: c-ares' socket is watched
     * (or, when that watch cannot be allocated, the timeout ends it). */
    if (!rc) {
        async_addr_t *a;
        size_t n;
        int r = async_dns_resolve_dl(&a, &n, d, "nothing.invalid", 80, AF_INET,
                                     async_deadline_after(ASYNC_SEC(5)));
        if (r != ASYNC_ETIMEDOUT && r != ASYNC_ENOMEM) rc = r ? r : ASYNC_EIO;
        else rc = r == ASYNC_ENOMEM ? r : 0;
    }
    int drc = async_dns_destroy(d);
    return rc ? rc : drc;
}

static int race(op_t *o)
{
    async_addr_t a[2];
    memset(a, 0, sizeof a);
    struct sockaddr_in *in = (struct sockaddr_in *)&a[1].addr;
    in->sin_family = AF_INET;
    in->sin_port = htons((uint16_t)async_sock_port(o->lfd));
    in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a[1].len = sizeof *in;
    a[0] = a[1];
    int fd, rc = async_connect_race_dl(&fd, a, 2, 0, async_deadline_after(ASYNC_SEC(10)));
    if (!rc) close(fd);
    /* Through a resolver, by name. */
    if (!rc) {
        async_dns_t *d;
        if ((rc = async_dns_new(&d, NULL, NULL))) return rc;
        rc = async_tcp_connect_dl(&fd, d, "127.0.0.1", async_sock_port(o->lfd),
                                  async_deadline_after(ASYNC_SEC(10)));
        if (!rc) close(fd);
        int drc = async_dns_destroy(d);
        if (!rc) rc = drc;
    }
    return rc;
}

static int signal_set(op_t *o)
{
    (void)o;
    int sigs[] = {SIGUSR1, SIGUSR2};
    async_signal_t *s;
    int rc = async_signal_new(&s, sigs, 2);
    if (rc) return rc;
    return async_signal_destroy(s);
}

static int sweep_task(void *arg, void **res)
{
    (void)res;
    op_t *o = arg;
    /* How many allocations the operation makes when none fails. */
    long before = test_alloc_total();
    int rc = o->fn(o);
    cr_assert_eq(rc, 0, "%s without failures: %s", o->name, async_errname(rc));
    long total = test_alloc_total() - before, failed = 0;
    cr_assert_gt(total, 0, "%s allocates", o->name);
    for (long i = 0; i < total; i++) {
        long live = test_alloc_live();
        test_alloc_fail_after(i);
        rc = o->fn(o);
        test_alloc_fail_after(-1);
        cr_assert(rc == 0 || rc == ASYNC_ENOMEM, "%s, allocation %ld failing: %s (%s)", o->name,
                  i, async_errname(rc), async_strerror(rc));
        failed += rc == ASYNC_ENOMEM;
        cr_assert_eq(test_alloc_live(), live, "%s, allocation %ld failing: %ld blocks leaked",
                     o->name, i, test_alloc_live() - live);
        rc = o->fn(o);
        cr_assert_eq(rc, 0, "%s after allocation %ld failed: %s", o->name, i, async_errname(rc));
    }
    cr_assert_gt(failed, 0, "%s reported no failure", o->name);
    cr_log_info("%s: %ld allocations, %ld failures reported as ASYNC_ENOMEM", o->name, total,
                failed);
    return 0;
}

static void sweep(const char *name, int (*fn)(op_t *))
{
    test_alloc_install();
    int sfd, lfd;
    op_t o = {name, fn, 0, -1};
    sfd = silent_server(&o.port);
    cr_assert_eq(async_tcp_listen(&lfd, "127.0.0.1", 0, 512), 0);
    o.lfd = lfd;
    cr_assert_eq(test_run_task(sweep_task, &o, NULL), 0);
    close(lfd);
    close(sfd);
    cr_assert_eq(test_alloc_live(), 0, "%ld blocks left after the loop", test_alloc_live());
    test_alloc_uninstall();
}

Test(net_faults, resolver_and_lookups_at_every_failed_allocation, .timeout = 60)
{
    sweep("async_dns_new and lookups", dns_lookups);
}

Test(net_faults, connect_race_at_every_failed_allocation, .timeout = 60)
{
    sweep("async_connect_race_dl and async_tcp_connect_dl", race);
}

Test(net_faults, signal_set_at_every_failed_allocation, .timeout = 30)
{
    sweep("async_signal_new", signal_set);
}

/* --- descriptors exhausted ------------------------------------------------ */

static int count_fds(void)
{
    int n = 0;
    for (int fd = 0; fd < 1024; fd++) n += fcntl(fd, F_GETFD) >= 0;
    return n;
}

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            bad++;                                                                                 \
        }                                                                                          \
    } while (0)

/* Expects ASYNC_EMFILE from a call made with no descriptor free, and the
 * process's descriptors as they were. */
#define EXPECT_EMFILE(call)                                                                        \
    do {                                                                                           \
        int fds_ = count_fds(), rc_ = (call);                                                      \
        CHECK(rc_ == ASYNC_EMFILE, "%s: %s (%s), want ASYNC_EMFILE", #call, async_errname(rc_),    \
              async_strerror(rc_));                                                                \
        CHECK(count_fds() == fds_, "%s: %d descriptors before, %d after", #call, fds_,             \
              count_fds());                                                                        \
    } while (0)

typedef struct exhaust {
    int lport, sport, bad;
    char path[108];
} exhaust_t;

static int exhausted_task(void *arg, void **res)
{
    (void)res;
    exhaust_t *e = arg;
    int bad = 0, fd = -1;
    async_dns_t *d = NULL;
    char servers[64];
    snprintf(servers, sizeof servers, "127.0.0.1:%d", e->sport);
    async_dns_opts_t opts;
    async_dns_opts_init(&opts);
    opts.servers = servers;
    opts.timeout_ns = ASYNC_MSEC(100);
    opts.tries = 1;
    /* A resolver made while descriptors were free, to look up with none. */
    CHECK(async_dns_new(&d, NULL, &opts) == 0, "async_dns_new with descriptors");
    /* Fill every free descriptor. */
    int filler[1024], nf = 0;
    while (nf < 1024 && (filler[nf] = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0) nf++;
    CHECK(errno == EMFILE, "filling: %s", strerror(errno));
    sigset_t mask0, mask1;
    pthread_sigmask(SIG_BLOCK, NULL, &mask0);
    async_signal_t *s = NULL;
    int sigs[] = {SIGUSR1};
    EXPECT_EMFILE(async_signal_new(&s, sigs, 1));
    pthread_sigmask(SIG_BLOCK, NULL, &mask1);
    CHECK(sigismember(&mask1, SIGUSR1) == sigismember(&mask0, SIGUSR1),
          "a failed async_signal_new left SIGUSR1 blocked");
    EXPECT_EMFILE(async_tcp_listen(&fd, "127.0.0.1", 0, 8));
    EXPECT_EMFILE(async_unix_listen(&fd, e->path, 8));
    EXPECT_EMFILE(async_udp_bind(&fd, "127.0.0.1", 0));
    int64_t dl = async_deadline_after(ASYNC_SEC(10));
    EXPECT_EMFILE(async_tcp_connect_ip_dl(&fd, "127.0.0.1", e->lport, dl));
    EXPECT_EMFILE(async_unix_connect_dl(&fd, e->path, dl));
    EXPECT_EMFILE(async_tcp_connect_dl(&fd, NULL, "127.0.0.1", e->lport, dl));
    async_addr_t *a = NULL;
    size_t n;
    /* A name only a server can answer: c-ares cannot open its socket. */
    EXPECT_EMFILE(async_dns_resolve_dl(&a, &n, d, "nothing.invalid", 80, AF_INET, dl));
    /* A resolver made with none free. */
    async_dns_t *d2 = NULL;
    int rc = async_dns_new(&d2, NULL, &opts);
    CHECK(rc == 0 || rc == ASYNC_EMFILE, "async_dns_new with no descriptor: %s",
          async_errname(rc));
    if (!rc) async_dns_destroy(d2);
    /* Descriptors back: every call works again. */
    while (nf) close(filler[--nf]);
    rc = async_signal_new(&s, sigs, 1);
    CHECK(rc == 0, "async_signal_new afterwards: %s", async_errname(rc));
    if (!rc) async_signal_destroy(s);
    rc = async_tcp_connect_ip_dl(&fd, "127.0.0.1", e->lport, dl);
    CHECK(rc == 0, "connect afterwards: %s", async_errname(rc));
    if (!rc) close(fd);
    rc = async_dns_resolve_dl(&a, &n, d, "localhost", 80, AF_UNSPEC, dl);
    CHECK(rc == 0, "a lookup afterwards: %s", async_errname(rc));
    if (!rc) async_dns_addrs_free(a);
    CHECK(async_dns_destroy(d) == 0, "async_dns_destroy");
    e->bad = bad;
    return 0;
}

Test(net_faults, exhausted_descriptors_give_emfile_and_keep_nothing, .timeout = 60)
{
    int lfd, ufd, sfd;
    exhaust_t e;
    cr_assert_eq(async_tcp_listen(&lfd, "127.0.0.1", 0, 8), 0);
    e.lport = async_sock_port(lfd);
    snprintf(e.path, sizeof e.path, "/tmp/test-net-faults-%d.sock", (int)getpid());
    cr_assert_eq(async_unix_listen(&ufd, e.path, 8), 0);
    sfd = silent_server(&e.sport);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        alarm(50);
        struct rlimit rl = {256, 256};
        if (setrlimit(RLIMIT_NOFILE, &rl)) test_child_exit(100);
        async_loop_t *loop;
        if (async_loop_new(&loop)) test_child_exit(101);
        e.bad = -1;
        if (async_task_spawn(NULL, loop, exhausted_task, &e, NULL)) test_child_exit(102);
        async_loop_run(loop, ASYNC_RUN_DEFAULT);
        if (async_loop_destroy(loop)) test_child_exit(103);
        test_child_exit(e.bad & 0xff);
    }
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    close(lfd);
    close(ufd);
    close(sfd);
    unlink(e.path);
    cr_assert(WIFEXITED(status), "the child died of signal %d", WTERMSIG(status));
    cr_assert_eq(WEXITSTATUS(status), 0, "%d checks failed (its stderr says which)",
                 WEXITSTATUS(status));
}

/* --- smaller error paths --------------------------------------------------- */

static int small_errors_task(void *arg, void **res)
{
    (void)res;
    int lfd = *(int *)arg, fd = -1, before = count_fds();
    int64_t dl = async_deadline_after(ASYNC_SEC(10));
    /* A family the kernel has no sockets for, first in a race: the next
     * address still wins; alone, the race says ASYNC_ENOTSUP. */
    async_addr_t a[2];
    memset(a, 0, sizeof a);
    a[0].addr.ss_family = AF_MAX + 1;
    a[0].len = sizeof(struct sockaddr_in);
    struct sockaddr_in *in = (struct sockaddr_in *)&a[1].addr;
    in->sin_family = AF_INET;
    in->sin_port = htons((uint16_t)async_sock_port(lfd));
    in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a[1].len = sizeof *in;
    int rc = async_connect_race_dl(&fd, a, 2, ASYNC_SEC(5), dl);
    cr_assert_eq(rc, 0, "the second address: %s", async_errname(rc));
    close(fd);
    rc = async_connect_race_dl(&fd, a, 1, 0, dl);
    cr_assert_eq(rc, ASYNC_ENOTSUP, "an unknown family alone: %s", async_errname(rc));
    /* read_full on a stream that ends early: ASYNC_EEOF with what came. */
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    cr_assert_eq(write(sv[1], "12345", 5), 5);
    close(sv[1]);
    char buf[16];
    size_t got = 99;
    rc = async_sock_read_full(sv[0], buf, sizeof buf, &got);
    cr_assert_eq(rc, ASYNC_EEOF, "read_full: %s", async_errname(rc));
    cr_assert(got == 5 && !memcmp(buf, "12345", 5), "read_full kept %zu bytes", got);
    close(sv[0]);
    /* A name longer than DNS allows. */
    async_dns_t *d;
    cr_assert_eq(async_dns_new(&d, NULL, NULL), 0);
    char name[300];
    memset(name, 'a', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    async_addr_t *out;
    size_t n;
    rc = async_dns_resolve_dl(&out, &n, d, name, 80, AF_INET, dl);
    cr_assert_eq(rc, ASYNC_EINVAL, "a 299-byte name: %s", async_errname(rc));
    cr_assert_eq(async_dns_destroy(d), 0);
    cr_assert_eq(count_fds(), before, "descriptors left behind");
    return 0;
}

Test(net_faults, small_error_paths_give_precise_errors, .timeout = 30)
{
    int lfd, ufd, fd = -1;
    cr_assert_eq(async_tcp_listen(&lfd, "127.0.0.1", 0, 8), 0);
    /* Counted after the first listen: it keeps the process's reserve
     * descriptor for EMFILE on accept. */
    int before = count_fds();
    cr_assert_eq(test_run_task(small_errors_task, &lfd, NULL), 0);
    /* A Unix socket path whose directory is missing, or is a file. */
    int rc = async_unix_listen(&fd, "/nonexistent-test-net-faults/sock", 8);
    cr_assert_eq(rc, ASYNC_ENOENT, "missing directory: %s", async_errname(rc));
    rc = async_unix_listen(&fd, "/dev/null/sock", 8);
    cr_assert_eq(rc, ASYNC_ENOENT, "a file as directory: %s", async_errname(rc));
    /* A datagram port in use. */
    int u1, u2;
    cr_assert_eq(async_udp_bind(&u1, "127.0.0.1", 0), 0);
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    cr_assert_eq(getsockname(u1, (struct sockaddr *)&sa, &len), 0);
    rc = async_udp_bind(&u2, "127.0.0.1", ntohs(sa.sin_port));
    cr_assert_eq(rc, ASYNC_EADDRINUSE, "a UDP port in use: %s", async_errname(rc));
    close(u1);
    /* The port of a socket that has none, and of one on IPv6. */
    char path[108];
    snprintf(path, sizeof path, "/tmp/test-net-faults-p%d.sock", (int)getpid());
    cr_assert_eq(async_unix_listen(&ufd, path, 8), 0);
    cr_assert_eq(async_sock_port(ufd), ASYNC_EINVAL);
    close(ufd);
    unlink(path);
    cr_assert_eq(async_sock_port(-1), ASYNC_EINVAL);
    int v6;
    rc = async_tcp_listen(&v6, "::1", 0, 8);
    if (rc == 0) {
        cr_assert_gt(async_sock_port(v6), 0, "an IPv6 listener has a port");
        close(v6);
    } else {
        /* A kernel or container without IPv6 loopback. */
        cr_assert(rc == ASYNC_ENOTSUP || rc == ASYNC_EINVAL, "::1: %s", async_errname(rc));
        cr_log_info("no IPv6 loopback here (%s): its port is not checked", async_errname(rc));
    }
    cr_assert_eq(count_fds(), before, "descriptors left behind");
    close(lfd);
}
