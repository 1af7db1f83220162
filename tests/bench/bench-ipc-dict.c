/* The shared dictionary's benchmarks:
 *   - the repair after a writer killed inside an update (it died holding
 *     the lock; the next call repairs): how long that call takes, and how
 *     much of the table it brings into the repairing process's memory
 *     (RssShmem growth), at capacity 2^13 and 2^18 with 1 KiB values;
 *   - the hot path the repair's intent log sits on: one increment of a key,
 *     and one set of a 64-byte value over 1,000 keys, from one process.
 * Every figure is measured once a round and prints as
 * `name: median (min-max) unit`.  Run from the source root. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "async.h"
#include "async/ipc.h"
#include "async/process.h"
#include "rounds.h"

/* lib/ipc/ipc_internal.h: called by update after its i-th item. */
extern void (*async__ipc_dict_hook)(int where);

#define INC_N 2000000L
#define SET_N 1000000L

static void die(const char *what, int err)
{
    fprintf(stderr, "bench-ipc-dict: %s: %s\n", what, async_strerror(err));
    exit(1);
}

static long shmem_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "RssShmem:", 9) == 0) sscanf(line + 9, "%ld", &kb);
    fclose(f);
    return kb;
}

static void kill_at_first(int where)
{
    if (where == 1) raise(SIGKILL);
}

static int dying_update(void *arg)
{
    async__ipc_dict_hook = kill_at_first;
    int64_t v = 1;
    async_shared_dict_item_t it[] = {{"k1", &v, 8}, {"k2", &v, 8}};
    async_shared_dict_update(arg, it, 2);
    return 1;
}

/* One round at capacity cap: the repairing call's time (ms) and the memory
 * it brought in (kB). */
static void repair_round(size_t cap, double *ms, double *kb)
{
    async_shared_dict_t *d;
    int err = async_shared_dict_new(&d, cap, 40, 1024);
    if (err) die("new", err);
    char key[16];
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof key, "k%d", i);
        if ((err = async_shared_dict_set(d, key, key, strlen(key)))) die("set", err);
    }
    async_process_t *p;
    if ((err = async_process_spawn(&p, dying_update, d))) die("spawn", err);
    async_process_join(p);
    int sig = 0;
    async_process_status(p, NULL, &sig);
    async_process_free(p);
    if (sig != SIGKILL) die("the writer did not die at its hook", ASYNC_EINVAL);
    long before = shmem_kb();
    char buf[1024];
    size_t len;
    int64_t t0 = async_now();
    if ((err = async_shared_dict_get(d, "k3", buf, sizeof buf, &len))) die("get", err);
    *ms = (double)(async_now() - t0) / 1e6;
    *kb = (double)(shmem_kb() - before);
    async_shared_dict_free(d);
}

static double inc_ns(void)
{
    async_shared_dict_t *d;
    int err = async_shared_dict_new(&d, 1 << 13, 40, 64);
    if (err) die("new", err);
    int64_t t0 = async_now();
    for (long i = 0; i < INC_N; i++)
        if ((err = async_shared_dict_increment(d, "counter", 1, NULL))) die("increment", err);
    double ns = (double)(async_now() - t0) / INC_N;
    async_shared_dict_free(d);
    return ns;
}

static double set_ns(void)
{
    async_shared_dict_t *d;
    int err = async_shared_dict_new(&d, 1 << 13, 40, 64);
    if (err) die("new", err);
    char keys[1000][16], val[64];
    for (int i = 0; i < 1000; i++) snprintf(keys[i], sizeof keys[i], "key%d", i);
    memset(val, 'v', sizeof val);
    int64_t t0 = async_now();
    for (long i = 0; i < SET_N; i++)
        if ((err = async_shared_dict_set(d, keys[i % 1000], val, sizeof val))) die("set", err);
    double ns = (double)(async_now() - t0) / SET_N;
    async_shared_dict_free(d);
    return ns;
}

int main(void)
{
    bench_start("bench-ipc-dict");
    for (int r = 0; r < bench_rounds(); r++) {
        double ms, kb;
        repair_round((size_t)1 << 13, &ms, &kb);
        bench_add("dict repair after a dead writer, capacity 2^13 x 1 KiB: time", "ms", ms);
        bench_add("dict repair after a dead writer, capacity 2^13 x 1 KiB: memory brought in", "kB", kb);
        repair_round((size_t)1 << 18, &ms, &kb);
        bench_add("dict repair after a dead writer, capacity 2^18 x 1 KiB: time", "ms", ms);
        bench_add("dict repair after a dead writer, capacity 2^18 x 1 KiB: memory brought in", "kB", kb);
        bench_add("dict increment of one key, one process", "ns", inc_ns());
        bench_add("dict set of a 64-byte value over 1,000 keys, one process", "ns", set_ns());
    }
    bench_print();
    return 0;
}
