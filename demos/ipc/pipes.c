/* pipes: the labs' sender and receiver over a message pipe, both ways.
 *   one-way: a sender process sends N messages and closes its end; the
 *            receiver reads until end-of-stream;
 *   duplex:  the parent sends "ping i", the child answers "pong i"; prints
 *            the round-trip time.
 *
 *   pipes [--count N] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "async.h"
#include "async/ipc.h"
#include "async/process.h"

typedef struct ends {
    async_ipc_pipe_t *a, *b;
    long count;
} ends_t;

static void check(int err, const char *what)
{
    if (err) {
        fprintf(stderr, "pipes: %s: %s\n", what, async_strerror(err));
        exit(1);
    }
}

static int sender(void *arg)
{
    ends_t *e = arg;
    async_ipc_pipe_free(e->a); /* the receiving end is the parent's */
    char msg[64];
    for (long i = 0; i < e->count; i++) {
        int n = snprintf(msg, sizeof msg, "message %ld", i);
        if (async_ipc_pipe_send(e->b, msg, (size_t)n)) return 1;
    }
    async_ipc_pipe_free(e->b); /* the receiver sees end-of-stream */
    return 0;
}

static int ponger(void *arg)
{
    ends_t *e = arg;
    async_ipc_pipe_free(e->a);
    char buf[64], reply[64];
    size_t len;
    int err;
    while ((err = async_ipc_pipe_recv(e->b, buf, sizeof buf - 1, &len)) == 0) {
        buf[len] = '\0';
        int n = snprintf(reply, sizeof reply, "pong %s", buf + 5);
        if (async_ipc_pipe_send(e->b, reply, (size_t)n)) return 1;
    }
    return err == ASYNC_EEOF ? 0 : 1;
}

static void finish(async_process_t *p, const char *who)
{
    int code;
    async_process_join(p);
    async_process_status(p, &code, NULL);
    async_process_free(p);
    if (code) {
        fprintf(stderr, "pipes: the %s failed\n", who);
        exit(1);
    }
}

int main(int argc, char **argv)
{
    long count = 100000;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--count") && i + 1 < argc) count = atol(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--count N]\n", argv[0]);
            return 2;
        }
    }
    if (count < 1) count = 1;
    fflush(stdout);

    /* One-way. */
    ends_t e = {.count = count};
    check(async_ipc_pipe_new(&e.a, &e.b, ASYNC_IPC_PIPE_ONEWAY), "pipe");
    async_process_t *p;
    int64_t t0 = async_now();
    check(async_process_spawn(&p, sender, &e), "spawn");
    async_ipc_pipe_free(e.b); /* keep only our receiving end, so the end comes */
    char buf[64];
    size_t len;
    long got = 0;
    int err;
    while ((err = async_ipc_pipe_recv(e.a, buf, sizeof buf - 1, &len)) == 0) {
        buf[len] = '\0';
        if (got == 0 || got == count - 1) printf("one-way: received \"%s\"\n", buf);
        got++;
    }
    double secs = (double)(async_now() - t0) / 1e9;
    printf("one-way: %s after %ld messages, %.0f messages/s\n",
           err == ASYNC_EEOF ? "end-of-stream" : async_strerror(err), got, (double)got / secs);
    async_ipc_pipe_free(e.a);
    finish(p, "sender");

    /* Duplex. */
    check(async_ipc_pipe_new(&e.a, &e.b, 0), "pipe");
    check(async_process_spawn(&p, ponger, &e), "spawn");
    async_ipc_pipe_free(e.b);
    long rounds = count / 4 > 0 ? count / 4 : 1;
    t0 = async_now();
    for (long i = 0; i < rounds; i++) {
        int n = snprintf(buf, sizeof buf, "ping %ld", i);
        check(async_ipc_pipe_send(e.a, buf, (size_t)n), "send");
        check(async_ipc_pipe_recv_dl(e.a, buf, sizeof buf - 1, &len, async_deadline_after(ASYNC_SEC(5))), "recv");
        buf[len] = '\0';
        if (i == 0 || i == rounds - 1) printf("duplex: sent \"ping %ld\", got \"%s\"\n", i, buf);
    }
    secs = (double)(async_now() - t0) / 1e9;
    printf("duplex: %ld round trips, %.2f us each\n", rounds, secs * 1e6 / (double)rounds);
    async_ipc_pipe_free(e.a); /* the child sees end-of-stream and exits */
    finish(p, "ponger");
    return 0;
}
