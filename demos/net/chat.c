/* chat: line-based pub/sub over TCP.  Every line a client sends goes to
 * every other client as "#ID: line"; joins and leaves are announced as
 * "* #ID joined" and "* #ID left".  A new client first gets "welcome #ID".
 *
 * One hub task owns the list of clients and waits, with async_select, on
 * three channels at once: joins, leaves and messages.  Each connection has a
 * reader task (lines to the hub) and a writer task (its outbox to the
 * socket); the hub never blocks on a slow client: when an outbox is full the
 * line is dropped for that client and counted.  A line is relayed byte
 * for byte (NUL bytes too); one longer than LINE_MAX_LEN - 2 bytes is
 * dropped whole.  Prints "listening on
 * 127.0.0.1:PORT" first; SIGINT or SIGTERM (awaited with async_signal_wait)
 * closes everything and exits 0. */
#include <async.h>
#include <async/select.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LINE_MAX_LEN 512
#define OUTBOX 64

/* Shared by the reader (conn_task) and the writer: the last one out frees. */
struct client {
    int fd, id, refs;
    async_chan_t *outbox; /* struct line */
    struct client *next;
};

/* A line as sent: its prefix ("#ID: "), its bytes (NUL bytes included) and
 * its newline, len of them.  Room for the longest line the reader keeps
 * (LINE_MAX_LEN - 2 bytes) behind the longest prefix: a text of
 * LINE_MAX_LEN lost the newline of a line near that length, and the next
 * message ran on in the same line. */
struct line {
    int from;                      /* client id, 0 for the server's own notices */
    size_t len;
    char text[LINE_MAX_LEN + 32];
};

struct hub {
    async_chan_t *joins, *leaves; /* struct client * */
    async_chan_t *msgs;           /* struct line */
    struct client *clients;
    long delivered, dropped;
};

static void broadcast(struct hub *h, const struct line *l)
{
    for (struct client *c = h->clients; c; c = c->next) {
        if (c->id == l->from) continue;
        if (async_chan_trysend(c->outbox, l) == 0) h->delivered++;
        else h->dropped++;
    }
}

static void release(struct client *c)
{
    if (--c->refs) return;
    async_sock_close(c->fd);
    async_chan_destroy(c->outbox);
    free(c);
}

/* At shutdown: closes the hub's channels, so readers that still try to join
 * or leave learn it (ASYNC_ECLOSED), and every outbox the hub knows of,
 * including those of clients whose leave is still queued, so that every
 * writer ends. */
static void hub_close(struct hub *h)
{
    async_chan_close(h->joins);
    async_chan_close(h->leaves);
    async_chan_close(h->msgs);
    struct client *c;
    for (c = h->clients; c; c = c->next) async_chan_close(c->outbox);
    while (async_chan_tryrecv(h->joins, &c) == 0) async_chan_close(c->outbox);
    while (async_chan_tryrecv(h->leaves, &c) == 0) async_chan_close(c->outbox);
    h->clients = NULL;
}

static int hub_task(void *arg, void **res)
{
    (void)res;
    struct hub *h = arg;
    struct client *joined, *left;
    struct line msg;
    async_select_case_t cs[] = {
        {h->joins, ASYNC_SELECT_RECV, &joined},
        {h->leaves, ASYNC_SELECT_RECV, &left},
        {h->msgs, ASYNC_SELECT_RECV, &msg},
    };
    for (;;) {
        size_t fired;
        int rc = async_select(cs, 3, &fired);
        if (rc) { /* cancelled at shutdown */
            hub_close(h);
            return 0;
        }
        struct line note = {0};
        switch (fired) {
        case 0:
            joined->next = h->clients;
            h->clients = joined;
            snprintf(note.text, sizeof note.text, "welcome #%d\n", joined->id);
            note.len = strlen(note.text);
            async_chan_trysend(joined->outbox, &note);
            note.from = joined->id;
            snprintf(note.text, sizeof note.text, "* #%d joined\n", joined->id);
            note.len = strlen(note.text);
            broadcast(h, &note);
            break;
        case 1:
            for (struct client **pp = &h->clients; *pp; pp = &(*pp)->next)
                if (*pp == left) {
                    *pp = left->next;
                    break;
                }
            note.from = left->id;
            async_chan_close(left->outbox); /* its writer drains, ends, and may free it */
            snprintf(note.text, sizeof note.text, "* #%d left\n", left->id);
            note.len = strlen(note.text);
            broadcast(h, &note);
            break;
        default:
            broadcast(h, &msg);
            break;
        }
    }
}

static int writer_task(void *arg, void **res)
{
    (void)res;
    struct client *c = arg;
    struct line l;
    while (async_chan_recv(c->outbox, &l) == 0)
        if (async_sock_write_all(c->fd, l.text, l.len, NULL)) break;
    release(c);
    return 0;
}

struct conn_arg {
    struct hub *hub;
    int fd, id;
};

/* Reads lines and hands them to the hub. */
static int conn_task(void *arg, void **res)
{
    (void)res;
    struct conn_arg a = *(struct conn_arg *)arg;
    free(arg);
    struct client *c = calloc(1, sizeof *c);
    if (!c || async_chan_new(&c->outbox, sizeof(struct line), OUTBOX)) {
        free(c);
        async_sock_close(a.fd);
        return 0;
    }
    c->fd = a.fd;
    c->id = a.id;
    c->refs = 1;
    async_task_opts_t o = {.detached = true};
    if (async_task_spawn(NULL, NULL, writer_task, c, &o) == 0) c->refs++;
    else async_chan_close(c->outbox);
    bool joined = c->refs == 2 && async_chan_send(a.hub->joins, &c) == 0;
    char buf[LINE_MAX_LEN];
    size_t have = 0;
    /* Inside an overlong line, which is dropped whole: only its first
     * LINE_MAX_LEN - 1 bytes were, and the rest went out as a line. */
    bool skipping = false;
    while (joined && !async_task_cancelled()) { /* a read that need not wait completes */
        size_t n;
        if (async_sock_read(c->fd, buf + have, sizeof buf - 1 - have, &n)) break;
        have += n;
        char *start = buf, *nl;
        while ((nl = memchr(start, '\n', have - (size_t)(start - buf)))) {
            size_t len = (size_t)(nl - start);
            if (skipping) {
                skipping = false;
            } else {
                /* memcpy, not "%.*s", which stopped at a NUL byte. */
                struct line l = {.from = c->id};
                int k = snprintf(l.text, sizeof l.text, "#%d: ", c->id);
                memcpy(l.text + k, start, len);
                l.text[k + len] = '\n';
                l.len = (size_t)k + len + 1;
                if (async_chan_send(a.hub->msgs, &l)) goto leave;
            }
            start = nl + 1;
        }
        have -= (size_t)(start - buf);
        memmove(buf, start, have);
        if (have == sizeof buf - 1) have = 0, skipping = true;
    }
leave:
    /* The hub closes the outbox once it has unlinked us (or at shutdown);
     * if the hub cannot be told, nobody else will close it. */
    if (!joined || async_chan_send(a.hub->leaves, &c)) async_chan_close(c->outbox);
    release(c);
    return 0;
}

struct main_args {
    int port, rc;
    async_signal_t *sig;
};

static int accept_task(void *arg, void **res)
{
    (void)res;
    void **pair = arg;
    struct hub *h = pair[0];
    async_group_t *g = pair[1];
    int lfd = *(int *)pair[2], next_id = 1;
    for (;;) {
        int fd;
        int rc = async_sock_accept(&fd, lfd);
        if (rc == ASYNC_ECANCELED) return 0;
        if (rc) continue; /* EMFILE: the connection was dropped */
        struct conn_arg *a = malloc(sizeof *a);
        if (!a) {
            async_sock_close(fd);
            continue;
        }
        *a = (struct conn_arg){h, fd, next_id++};
        if (async_group_spawn(g, conn_task, a, NULL)) {
            free(a);
            async_sock_close(fd);
        }
    }
}

static int run(struct main_args *m)
{
    struct hub h = {0};
    int lfd, rc;
    if ((rc = async_tcp_listen(&lfd, "127.0.0.1", m->port, 0))) return rc;
    async_group_t *g = NULL;
    if ((rc = async_chan_new(&h.joins, sizeof(struct client *), 16)) ||
        (rc = async_chan_new(&h.leaves, sizeof(struct client *), 16)) ||
        (rc = async_chan_new(&h.msgs, sizeof(struct line), 64)) || (rc = async_group_new(&g, NULL)))
        goto out;
    void *pair[3] = {&h, g, &lfd};
    async_task_t hub, acc;
    if ((rc = async_task_spawn(&hub, NULL, hub_task, &h, NULL))) goto out;
    if ((rc = async_task_spawn(&acc, NULL, accept_task, pair, NULL))) {
        async_task_cancel(hub);
        async_task_await(hub, NULL);
        goto out;
    }
    printf("listening on 127.0.0.1:%d\n", async_sock_port(lfd));
    fflush(stdout);
    int signo = 0;
    async_signal_wait(m->sig, &signo);
    async_task_cancel(acc);
    async_task_await(acc, NULL);
    async_task_cancel(hub);
    async_task_await(hub, NULL);
    async_group_cancel(g);
    async_group_wait(g);
    fprintf(stderr, "chat: %s: %ld lines delivered, %ld dropped for slow clients\n",
            signo ? strsignal(signo) : "stopped", h.delivered, h.dropped);
out:
    if (g) async_group_destroy(g);
    async_chan_destroy(h.joins);
    async_chan_destroy(h.leaves);
    async_chan_destroy(h.msgs);
    async_sock_close(lfd);
    return rc;
}

static int main_task(void *arg, void **res)
{
    (void)res;
    struct main_args *m = arg;
    m->rc = run(m);
    return m->rc;
}

int main(int argc, char **argv)
{
    struct main_args m = {.port = 0, .rc = ASYNC_EIO};
    static const struct option opts[] = {
        {"port", required_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "p:h", opts, NULL)) != -1) {
        char *end;
        long v;
        switch (c) {
        case 'p':
            errno = 0;
            v = strtol(optarg, &end, 10);
            /* Digits only: "" read as port 0, any port. */
            if (!(*optarg >= '0' && *optarg <= '9') || *end || errno || v > 65535) {
                fprintf(stderr, "chat: bad --port: %s\n", optarg);
                return 2;
            }
            m.port = (int)v;
            break;
        case 'h':
            printf("usage: chat [--port N (0: any free)]\n");
            return 0;
        default:
            return 2;
        }
    }
    int sigs[] = {SIGINT, SIGTERM};
    int rc = async_signal_new(&m.sig, sigs, 2);
    async_loop_t *loop = NULL;
    if (!rc) rc = async_loop_new(&loop);
    if (!rc) rc = async_task_spawn(NULL, loop, main_task, &m, NULL);
    if (!rc) {
        async_loop_run(loop, ASYNC_RUN_DEFAULT);
        rc = m.rc;
    }
    if (rc) fprintf(stderr, "chat: %s\n", async_net_strerror(rc));
    if (loop) async_loop_destroy(loop);
    async_signal_destroy(m.sig);
    return rc ? 1 : 0;
}
