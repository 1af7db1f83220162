/* echo-server: a TCP echo server with a task per connection.
 *
 * Prints "listening on 127.0.0.1:PORT" as its first stdout line once it
 * accepts connections (--port 0, the default, picks a free port).  On SIGINT
 * or SIGTERM, awaited from a task through async_signal_wait, it stops
 * accepting, lets open connections finish for up to --drain-ms (then cancels
 * them), prints a summary to stderr and exits 0. */
#include <async.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A day: longer drains are a typo, and past LONG_MAX ns they overflowed. */
#define MAX_DRAIN_MS 86400000L

struct server {
    int lfd;
    async_group_t *conns;
    long accepted, served, failed;
};

struct conn {
    struct server *srv;
    int fd;
};

static int serve_conn(void *arg, void **res)
{
    (void)res;
    struct conn *c = arg;
    char buf[16384];
    size_t n;
    int rc;
    /* A cancelled task's read and write still complete when they need not
     * wait: a client that always sends and always reads would keep the
     * loop going past the drain time without this check. */
    while ((rc = async_sock_read(c->fd, buf, sizeof buf, &n)) == 0) {
        if ((rc = async_sock_write_all(c->fd, buf, n, NULL))) break;
        if (async_task_cancelled()) {
            rc = ASYNC_ECANCELED;
            break;
        }
    }
    if (rc == ASYNC_EEOF) c->srv->served++;
    else c->srv->failed++;
    async_sock_close(c->fd);
    free(c);
    return 0; /* one connection's failure is not the group's */
}

static int accept_loop(void *arg, void **res)
{
    (void)res;
    struct server *s = arg;
    for (;;) {
        int fd;
        int rc = async_sock_accept(&fd, s->lfd);
        if (rc == ASYNC_ECANCELED) return 0;
        if (rc == ASYNC_EMFILE || rc == ASYNC_ENFILE) {
            fprintf(stderr, "echo-server: out of descriptors, dropped a connection\n");
            continue;
        }
        if (rc) {
            fprintf(stderr, "echo-server: accept: %s\n", async_net_strerror(rc));
            return 0;
        }
        struct conn *c = malloc(sizeof *c);
        async_task_opts_t o = {.stack_size = 64 * 1024};
        if (!c || async_group_spawn(s->conns, serve_conn, c, &o)) {
            free(c);
            async_sock_close(fd);
            continue;
        }
        c->srv = s;
        c->fd = fd;
        s->accepted++;
    }
}

struct main_args {
    int port;
    int64_t drain_ns;
    async_signal_t *sig;
    int rc; /* OUT: main_task's result */
};

static int serve(struct main_args *a);

static int main_task(void *arg, void **res)
{
    (void)res;
    struct main_args *a = arg;
    a->rc = serve(a);
    return a->rc;
}

static int serve(struct main_args *a)
{
    struct server s = {0};
    int rc = async_tcp_listen(&s.lfd, "127.0.0.1", a->port, 0);
    if (rc) {
        fprintf(stderr, "echo-server: listen on port %d: %s\n", a->port, async_net_strerror(rc));
        return rc;
    }
    if ((rc = async_group_new(&s.conns, NULL))) return rc;
    async_task_t acc;
    if ((rc = async_task_spawn(&acc, NULL, accept_loop, &s, NULL))) return rc;
    printf("listening on 127.0.0.1:%d\n", async_sock_port(s.lfd));
    fflush(stdout);
    int signo = 0;
    rc = async_signal_wait(a->sig, &signo);
    fprintf(stderr, "echo-server: %s, draining\n", rc ? async_net_strerror(rc) : strsignal(signo));
    async_task_cancel(acc);
    async_task_await(acc, NULL);
    async_sock_close(s.lfd);
    size_t left = async_group_live(s.conns);
    if (async_group_wait_dl(s.conns, async_deadline_after(a->drain_ns)) == ASYNC_ETIMEDOUT) {
        fprintf(stderr, "echo-server: %zu connections still open after the drain time: closing them\n",
                async_group_live(s.conns));
        async_group_cancel(s.conns);
        async_group_wait(s.conns);
    }
    async_group_destroy(s.conns);
    fprintf(stderr, "echo-server: %ld connections accepted, %ld ended cleanly, %ld failed; %zu were open at the signal\n",
            s.accepted, s.served, s.failed, left);
    return 0;
}

int main(int argc, char **argv)
{
    struct main_args a = {.port = 0, .drain_ns = ASYNC_SEC(5), .rc = ASYNC_EIO};
    static const struct option opts[] = {
        {"port", required_argument, NULL, 'p'},
        {"drain-ms", required_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "p:d:h", opts, NULL)) != -1) {
        char *end;
        long v;
        switch (c) {
        case 'p':
        case 'd':
            errno = 0;
            v = strtol(optarg, &end, 10);
            /* Digits only: "" read as port 0 (any port), and a drain past
             * LONG_MAX ms (ERANGE) or a day overflowed its nanoseconds. */
            if (!(*optarg >= '0' && *optarg <= '9') || *end || errno || v > (c == 'p' ? 65535 : MAX_DRAIN_MS)) {
                fprintf(stderr, "echo-server: bad value for --%s: %s\n", c == 'p' ? "port" : "drain-ms", optarg);
                return 2;
            }
            if (c == 'p') a.port = (int)v;
            else a.drain_ns = ASYNC_MSEC(v);
            break;
        case 'h':
            printf("usage: echo-server [--port N (0: any free)] [--drain-ms MS (default 5000)]\n");
            return 0;
        default:
            return 2;
        }
    }
    /* Before any thread exists, so that every thread inherits the mask. */
    int sigs[] = {SIGINT, SIGTERM};
    int rc = async_signal_new(&a.sig, sigs, 2);
    async_loop_t *loop = NULL;
    if (!rc) rc = async_loop_new(&loop);
    if (!rc) rc = async_task_spawn(NULL, loop, main_task, &a, NULL);
    if (!rc) {
        async_loop_run(loop, ASYNC_RUN_DEFAULT);
        rc = a.rc;
    }
    if (rc) fprintf(stderr, "echo-server: %s\n", async_net_strerror(rc));
    if (loop) async_loop_destroy(loop);
    async_signal_destroy(a.sig);
    return rc ? 1 : 0;
}
