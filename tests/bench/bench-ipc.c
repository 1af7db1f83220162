/* IPC benchmarks, each beside its baseline measured in the same run:
 *   - queue throughput between two processes for 64-byte messages, against a
 *     plain pipe (write/read of 64-byte records, and batched as a real
 *     program would: 64 records a 4 KiB write, reads of up to 64 KiB) and
 *     against Python's multiprocessing.Queue (tests/bench/peer-ipc.py);
 *   - lock cost uncontended and contended by two processes, against a plain
 *     process-private pthread mutex and Python's multiprocessing.Lock (the
 *     contended figure is wall time over every lock+unlock of both processes,
 *     so it can be below the uncontended one when both cores work);
 *   - message pipe round trip, against a raw socketpair and Python's
 *     multiprocessing.Pipe.
 * Every figure is measured once a round, ours and the baselines alternating,
 * and prints as `name: median (min-max) unit`.  Run from the source root. */
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
#include "rounds.h"

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
    snprintf(cmd, sizeof cmd, BENCH_PYTHON " tests/bench/peer-ipc.py %s %ld", mode, n);
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

/* The strongest fair pipe: the producer packs 64 records into each 4 KiB
 * write (atomic for a pipe) and the consumer reads whatever is there, as a
 * program that batches would. */
#define BATCH 64
static double pipe_batched_rate(void)
{
    int fds[2];
    if (pipe(fds) < 0) die("pipe", -errno);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[1]);
        static char buf[1 << 16];
        long want = PIPE_N * MSG, got = 0;
        while (got < want) {
            ssize_t n = read(fds[0], buf, sizeof buf);
            if (n <= 0) _exit(1);
            got += n;
        }
        _exit(0);
    }
    close(fds[0]);
    static char msg[MSG * BATCH];
    memset(msg, 'x', sizeof msg);
    int64_t t0 = async_now();
    for (long i = 0; i < PIPE_N; i += BATCH)
        if (write(fds[1], msg, sizeof msg) != (ssize_t)sizeof msg) die("write", -errno);
    close(fds[1]);
    int status;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status)) die("batched pipe reader", ASYNC_EIO);
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
    bench_start("bench-ipc");
    for (int r = 0; r < bench_rounds(); r++) {
        bench_add("process queue, 64-byte messages, 2 processes", "M msg/s", queue_rate() / 1e6);
        bench_add("raw pipe, one 64-byte write a message (baseline)", "M msg/s", pipe_rate() / 1e6);
        bench_add("raw pipe, 64 messages a 4 KiB write (baseline)", "M msg/s", pipe_batched_rate() / 1e6);
        double py = python("queue", PY_QUEUE_N);
        bench_add("Python multiprocessing.Queue, 64-byte messages", "M msg/s", py < 0 ? py : py / 1e6);

        bench_add("process lock, uncontended lock+unlock", "ns", lock_ns());
        bench_add("pthread mutex, process-private, uncontended (baseline)", "ns", mutex_ns());
        bench_add("Python multiprocessing.Lock, uncontended", "ns", python("lock", PY_LOCK_N));
        bench_add("process lock, contended by 2 processes, wall per lock+unlock", "ns", contended_ns());

        bench_add("message pipe round trip, 64 bytes", "us", pipe_rtt_us());
        bench_add("raw socketpair round trip, 64 bytes (baseline)", "us", socketpair_rtt_us());
        bench_add("Python multiprocessing.Pipe round trip", "us", python("pipe", PY_RTT_N));
    }
    bench_ratio("process queue over the batched raw pipe", "process queue, 64-byte messages, 2 processes",
                "raw pipe, 64 messages a 4 KiB write (baseline)");
    bench_ratio("process queue over Python's Queue", "process queue, 64-byte messages, 2 processes",
                "Python multiprocessing.Queue, 64-byte messages");
    bench_print();
    return 0;
}
