/* producer-consumer: one producer of random numbers, N workers checking
 * primality, one aggregator summarising, joined by two bounded process-shared
 * queues so that memory stays flat however many numbers flow through (the
 * labs' question 5.1).  Prints totals, throughput, the serial baseline on the
 * same numbers and the peak memory of any process.
 *
 *   producer-consumer [--count N] [--workers W] [--capacity C] */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include "async.h"
#include "async/ipc.h"
#include "async/process.h"

typedef struct result {
    uint64_t n;
    uint8_t prime;
} result_t;

typedef struct summary {
    uint64_t checked, primes, largest_prime;
} summary_t;

typedef struct ctx {
    uint64_t count, seed;
    async_ipc_queue_t *numbers, *results;
    async_shared_value_t *summary;
} ctx_t;

static uint64_t xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Trial division, as in the labs: slow enough per number (up to 50,000
 * divisions for a prime near 10^10) that the work, not the queues, dominates. */
static bool is_prime(uint64_t n)
{
    if (n < 2) return false;
    if (n % 2 == 0) return n == 2;
    for (uint64_t d = 3; d * d <= n; d += 2)
        if (n % d == 0) return false;
    return true;
}

static uint64_t number(uint64_t *s) { return xorshift(s) % 10000000000ull; } /* < 10^10 */

static int producer(void *arg)
{
    ctx_t *c = arg;
    uint64_t s = c->seed;
    for (uint64_t i = 0; i < c->count; i++) {
        uint64_t n = number(&s);
        if (async_ipc_queue_put(c->numbers, &n, sizeof n)) return 1;
    }
    async_ipc_queue_close(c->numbers); /* workers drain, then see the end */
    return 0;
}

static int worker(void *arg)
{
    ctx_t *c = arg;
    uint64_t n;
    size_t len;
    int err;
    while ((err = async_ipc_queue_get(c->numbers, &n, sizeof n, &len)) == 0) {
        result_t r = {n, is_prime(n)};
        if (async_ipc_queue_put(c->results, &r, sizeof r)) return 1;
    }
    return err == ASYNC_EEOF ? 0 : 1;
}

static int aggregator(void *arg)
{
    ctx_t *c = arg;
    summary_t s = {0};
    result_t r;
    size_t len;
    int err;
    while ((err = async_ipc_queue_get(c->results, &r, sizeof r, &len)) == 0) {
        s.checked++;
        if (r.prime) {
            s.primes++;
            if (r.n > s.largest_prime) s.largest_prime = r.n;
        }
    }
    async_shared_value_set(c->summary, &s);
    return err == ASYNC_EEOF ? 0 : 1;
}

static void check(int err, const char *what)
{
    if (err) {
        fprintf(stderr, "producer-consumer: %s: %s\n", what, async_strerror(err));
        exit(1);
    }
}

int main(int argc, char **argv)
{
    ctx_t c = {.count = 100000, .seed = 88172645463325252ull};
    unsigned workers = 4;
    size_t capacity = 256;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--count") && i + 1 < argc) c.count = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--workers") && i + 1 < argc) workers = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--capacity") && i + 1 < argc) capacity = strtoul(argv[++i], NULL, 10);
        else {
            fprintf(stderr, "usage: %s [--count N] [--workers W] [--capacity C]\n", argv[0]);
            return 2;
        }
    }
    if (workers < 1 || workers > 64 || capacity < 1) {
        fprintf(stderr, "producer-consumer: workers must be 1..64, capacity >= 1\n");
        return 2;
    }
    check(async_ipc_queue_new(&c.numbers, capacity, sizeof(uint64_t), 0), "queue");
    check(async_ipc_queue_new(&c.results, capacity, sizeof(result_t), 0), "queue");
    check(async_shared_value_new(&c.summary, sizeof(summary_t), true), "value");
    fflush(stdout);

    int64_t t0 = async_now();
    async_process_t *prod, *agg, *w[64];
    check(async_process_spawn(&agg, aggregator, &c), "spawn aggregator");
    for (unsigned i = 0; i < workers; i++) check(async_process_spawn(&w[i], worker, &c), "spawn worker");
    check(async_process_spawn(&prod, producer, &c), "spawn producer");
    int failed = 0, code;
    async_process_join(prod);
    async_process_status(prod, &code, NULL);
    failed |= code;
    for (unsigned i = 0; i < workers; i++) {
        async_process_join(w[i]);
        async_process_status(w[i], &code, NULL);
        failed |= code;
        async_process_free(w[i]);
    }
    async_ipc_queue_close(c.results); /* every worker is done: the aggregator may finish */
    async_process_join(agg);
    async_process_status(agg, &code, NULL);
    failed |= code;
    double secs = (double)(async_now() - t0) / 1e9;
    async_process_free(prod);
    async_process_free(agg);
    if (failed) {
        fprintf(stderr, "producer-consumer: a process failed\n");
        return 1;
    }
    summary_t s;
    async_shared_value_get(c.summary, &s);

    /* The same numbers, checked in this one process. */
    int64_t t1 = async_now();
    uint64_t seed = c.seed, serial_primes = 0;
    for (uint64_t i = 0; i < c.count; i++) serial_primes += is_prime(number(&seed));
    double serial = (double)(async_now() - t1) / 1e9;

    struct rusage ru;
    getrusage(RUSAGE_CHILDREN, &ru);
    printf("numbers checked:   %" PRIu64 " (serial check: %s)\n", s.checked,
           s.checked == c.count && s.primes == serial_primes ? "same totals" : "MISMATCH");
    printf("primes found:      %" PRIu64 " (%.2f%%), largest %" PRIu64 "\n", s.primes,
           100.0 * (double)s.primes / (double)(s.checked ? s.checked : 1), s.largest_prime);
    printf("pipeline:          1 producer -> %u workers -> 1 aggregator, queues of %zu, %ld cores\n",
           workers, capacity, sysconf(_SC_NPROCESSORS_ONLN));
    printf("pipeline time:     %.3f s, %.0f numbers/s\n", secs, (double)c.count / secs);
    printf("serial time:       %.3f s, %.0f numbers/s (speed-up %.2fx)\n", serial,
           (double)c.count / serial, serial / secs);
    printf("peak RSS of any child: %ld KiB (bounded queues: flat whatever --count)\n", ru.ru_maxrss);
    async_shared_value_free(c.summary);
    async_ipc_queue_free(c.numbers);
    async_ipc_queue_free(c.results);
    return s.checked == c.count && s.primes == serial_primes ? 0 : 1;
}
