/* IPC benchmarks, each beside its baseline measured in the same run:
 *   - queue throughput between two processes for 64-byte messages, against a
 *     plain pipe (write/read of 64-byte records) and against Python's
 *     multiprocessing.Queue (tests/bench/peer-ipc.py);
 *   - lock cost uncontended and contended by two processes, against a plain
 *     process-private pthread mutex and Python's multiprocessing.Lock (the
 *     contended figure is wall time over every lock+unlock of both processes,
 *     so it can be below the uncontended one when both cores work);
 *   - message pipe round trip, against a raw socketpair and Python's
 *     multiprocessing.Pipe.
 * One figure per line: `name: value unit`.  Run from the source root. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <pthread.h>
#include "async.h"
#include "async/ipc.h"
#include "async/process.h"

#define MSG 64
#define QUEUE_N 4000000L
#define PIPE_N 2000000L
#define LOCK_N 10000000L
#define CONTENDED_N 2000000L
#define RTT_N 100000L
#define PY_QUEUE_N 200000L
#define PY_LOCK_N 1000000L
#define PY_RTT_N 20000L

static double secs(int64_t ns) { return (double)ns / 1e9; }

static void die(const char *what, int err)
{
    fprintf(stderr, "bench-ipc: %s: %s\n", what, async_strerror(err));
    exit(1);
}

/* Runs tests/bench/peer-ipc.py MODE N and returns its number, or -1. */
static double python(const char *mode, long n)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "python3 tests/bench/peer-ipc.py %s %ld", mode, n);
    FILE *f = popen(cmd, "r");
    if (!f) return -1;
    double v = -1;
    if (fscanf(f, "%lf", &v) != 1) v = -1;
    pclose(f);
    return v;
}

/* --- queue throughput --------------------------------------------------------- */

static int queue_consumer(void *arg)
{
    async_ipc_queue_t *q = arg;
    char buf[MSG];
    size_t len;
    for (long i = 0; i < QUEUE_N; i++)
        if (async_ipc_queue_get(q, buf, sizeof buf, &len)) return 1;
    return 0;
}

static double queue_rate(void)
{
    async_ipc_queue_t *q;
    int err = async_ipc_queue_new(&q, 1024, MSG, 0);
    if (err) die("queue", err);
    async_process_t *p;
    if ((err = async_process_spawn(&p, queue_consumer, q))) die("spawn", err);
    char msg[MSG];
    memset(msg, 'x', sizeof msg);
    int64_t t0 = async_now();
    for (long i = 0; i < QUEUE_N; i++)
        if ((err = async_ipc_queue_put(q, msg, sizeof msg))) die("put", err);
    async_process_join(p);
    int64_t dt = async_now() - t0;
    async_process_free(p);
    async_ipc_queue_free(q);
    return QUEUE_N / secs(dt);
}

static double pipe_rate(void)
{
    int fds[2];
    if (pipe(fds) < 0) die("pipe", -errno);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[1]);
        char buf[MSG];
        for (long i = 0; i < PIPE_N; i++) {
            size_t got = 0;
            while (got < MSG) {
                ssize_t n = read(fds[0], buf + got, MSG - got);
                if (n <= 0) _exit(1);
                got += (size_t)n;
            }
        }
        _exit(0);
    }
    close(fds[0]);
    char msg[MSG];
    memset(msg, 'x', sizeof msg);
    int64_t t0 = async_now();
    for (long i = 0; i < PIPE_N; i++)
        if (write(fds[1], msg, MSG) != MSG) die("write", -errno);
    close(fds[1]);
    waitpid(pid, NULL, 0);
    return PIPE_N / secs(async_now() - t0);
}

/* --- locks -------------------------------------------------------------------- */

static double lock_ns(void)
{
    async_ipc_lock_t *l;
    int err = async_ipc_lock_new(&l);
    if (err) die("lock", err);
    int64_t t0 = async_now();
    for (long i = 0; i < LOCK_N; i++) {
        async_ipc_lock_lock(l);
        async_ipc_lock_unlock(l);
    }
    int64_t dt = async_now() - t0;
    async_ipc_lock_free(l);
    return (double)dt / LOCK_N;
}

static double mutex_ns(void)
{
    static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    int64_t t0 = async_now();
    for (long i = 0; i < LOCK_N; i++) {
        pthread_mutex_lock(&m);
        pthread_mutex_unlock(&m);
    }
    return (double)(async_now() - t0) / LOCK_N;
}

static int add_many(void *arg)
{
    async_shared_value_t *v = arg;
    for (long i = 0; i < CONTENDED_N; i++) {
        async_shared_value_lock(v);
        (*(long *)async_shared_value_ptr(v))++;
        async_shared_value_unlock(v);
    }
    return 0;
}

/* Two processes incrementing one locked counter: ns per lock+unlock, all
 * processes counted together. */
static double contended_ns(void)
{
    async_shared_value_t *v;
    int err = async_shared_value_new(&v, sizeof(long), true);
    if (err) die("value", err);
    async_process_t *p[2];
    int64_t t0 = async_now();
    for (int i = 0; i < 2; i++)
        if ((err = async_process_spawn(&p[i], add_many, v))) die("spawn", err);
    for (int i = 0; i < 2; i++) {
        async_process_join(p[i]);
        async_process_free(p[i]);
    }
    int64_t dt = async_now() - t0;
    long total = *(long *)async_shared_value_ptr(v);
    async_shared_value_free(v);
    if (total != 2 * CONTENDED_N) die("contended count", ASYNC_EIO);
    return (double)dt / (2 * CONTENDED_N);
}

/* --- round trips ---------------------------------------------------------------- */

typedef struct ends {
    async_ipc_pipe_t *a, *b;
} ends_t;

static int echo(void *arg)
{
    ends_t *e = arg;
    async_ipc_pipe_free(e->a);
    char buf[MSG];
    size_t len;
    while (async_ipc_pipe_recv(e->b, buf, sizeof buf, &len) == 0)
        if (async_ipc_pipe_send(e->b, buf, len)) return 1;
    return 0;
}

static double pipe_rtt_us(void)
{
    ends_t e;
    int err = async_ipc_pipe_new(&e.a, &e.b, 0);
    if (err) die("pipe", err);
    async_process_t *p;
    if ((err = async_process_spawn(&p, echo, &e))) die("spawn", err);
    async_ipc_pipe_free(e.b);
    char msg[MSG], buf[MSG];
    memset(msg, 'x', sizeof msg);
    size_t len;
    int64_t t0 = async_now();
    for (long i = 0; i < RTT_N; i++) {
        if ((err = async_ipc_pipe_send(e.a, msg, sizeof msg))) die("send", err);
        if ((err = async_ipc_pipe_recv(e.a, buf, sizeof buf, &len))) die("recv", err);
    }
    int64_t dt = async_now() - t0;
    async_ipc_pipe_free(e.a);
    async_process_join(p);
    async_process_free(p);
    return (double)dt / RTT_N / 1000;
}

static double socketpair_rtt_us(void)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) die("socketpair", -errno);
    pid_t pid = fork();
    char buf[MSG];
    if (pid == 0) {
        close(sv[0]);
        while (read(sv[1], buf, MSG) == MSG)
            if (write(sv[1], buf, MSG) != MSG) _exit(1);
        _exit(0);
    }
    close(sv[1]);
    memset(buf, 'x', sizeof buf);
    int64_t t0 = async_now();
    for (long i = 0; i < RTT_N; i++) {
        if (write(sv[0], buf, MSG) != MSG || read(sv[0], buf, MSG) != MSG) die("rtt", -errno);
    }
    int64_t dt = async_now() - t0;
    close(sv[0]);
    waitpid(pid, NULL, 0);
    return (double)dt / RTT_N / 1000;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    double q = queue_rate();
    printf("ipc_queue_64B_2proc: %.0f msg/s\n", q);
    double p = pipe_rate();
    printf("raw_pipe_64B_2proc: %.0f msg/s\n", p);
    double py = python("queue", PY_QUEUE_N);
    printf("python_mp_queue_64B_2proc: %.0f msg/s\n", py);
    printf("ipc_queue_vs_raw_pipe: %.2f x\n", q / p);
    if (py > 0) printf("ipc_queue_vs_python_queue: %.1f x\n", q / py);

    printf("ipc_lock_uncontended: %.1f ns/lock+unlock\n", lock_ns());
    printf("pthread_mutex_private_uncontended: %.1f ns/lock+unlock\n", mutex_ns());
    printf("python_mp_lock_uncontended: %.1f ns/lock+unlock\n", python("lock", PY_LOCK_N));
    printf("ipc_lock_contended_2proc: %.1f ns/lock+unlock\n", contended_ns());

    printf("ipc_pipe_rtt_64B: %.2f us\n", pipe_rtt_us());
    printf("raw_socketpair_rtt_64B: %.2f us\n", socketpair_rtt_us());
    printf("python_mp_pipe_rtt_64B: %.2f us\n", python("pipe", PY_RTT_N));
    return 0;
}
