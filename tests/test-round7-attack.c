/* Round 7's attack on the process-shared IPC objects (lib/ipc) as a hostile
 * user would make it: processes SIGKILLed while they wait, sizes at and past
 * the limits, descriptors and address space exhausted in a forked child.
 * Each test names the finding of the round's review notes it checks
 * (/work/changelog/review-notes.md, R3 onwards). */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include "async.h"
#include "async/ipc.h"
#include "async/process.h"

/* Criterion's runner sometimes leaks 48 bytes of its own under --jobs 2. */
const char *__lsan_default_suppressions(void);
__attribute__((weak)) const char *__lsan_default_suppressions(void)
{
    return "leak:libcriterion.so\n";
}

/* ThreadSanitizer models one process: it cannot follow a futex or mutex that
 * another process changed. */
#if defined(__SANITIZE_THREAD__)
#define SKIP_UNDER_TSAN() cr_skip_test("process-shared futexes are outside ThreadSanitizer's model")
#else
#define SKIP_UNDER_TSAN() ((void)0)
#endif

/* Generous bounds: they only turn a wedge into a failure instead of a hang. */
#define WEDGE_NS ASYNC_SEC(10)

/* A child that the kernel kills when this test's process ends, so that a
 * failed assertion leaves no wedged child behind. */
static async_process_t *spawn(async_process_fn fn, void *arg)
{
    async_process_opts_t o;
    async_process_opts_init(&o);
    o.daemon = true;
    async_process_t *p;
    int err = async_process_spawn_opts(&p, fn, arg, &o);
    cr_assert_eq(err, 0, "spawn: %s", async_strerror(err));
    return p;
}

/* The exit code of a child that must end by itself within WEDGE_NS; -1 (the
 * child is killed then) when it did not. */
static int finish(async_process_t *p)
{
    int err = async_process_join_dl(p, async_now() + WEDGE_NS);
    if (err == ASYNC_ETIMEDOUT) {
        async_process_kill(p);
        async_process_join(p);
        async_process_free(p);
        return -1;
    }
    cr_assert_eq(err, 0, "join: %s", async_strerror(err));
    int code = -1, sig = 0;
    cr_assert_eq(async_process_status(p, &code, &sig), 0);
    async_process_free(p);
    return sig ? 128 + sig : code;
}

/* Waits until the process sleeps in the kernel (state S in /proc/PID/stat),
 * which for the waiters below means inside their futex wait. */
static void wait_asleep(async_process_t *p)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", async_process_pid(p));
    for (int i = 0; i < 2000; i++) {
        FILE *f = fopen(path, "r");
        cr_assert_not_null(f);
        char buf[512];
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        const char *rp = strrchr(buf, ')');
        if (rp && rp[1] == ' ' && rp[2] == 'S') {
            usleep(20 * 1000); /* past any spin before the sleep */
            return;
        }
        usleep(5 * 1000);
    }
    cr_assert_fail("process %d never went to sleep", async_process_pid(p));
}

static void kill_and_reap(async_process_t *p)
{
    cr_assert_eq(async_process_kill(p), 0);
    cr_assert_eq(async_process_join_dl(p, async_now() + WEDGE_NS), 0);
    int sig = 0;
    cr_assert_eq(async_process_status(p, NULL, &sig), 0);
    cr_assert_eq(sig, SIGKILL);
    async_process_free(p);
}

/* --- R3: a waiter killed inside a condition's wait --------------------------- */

typedef struct condpair {
    async_ipc_lock_t *lock;
    async_ipc_cond_t *cond;
    async_ipc_event_t *go; /* the predicate: set by the signaller */
} condpair_t;

static int cond_waiter(void *arg)
{
    condpair_t *c = arg;
    int64_t dl = async_now() + WEDGE_NS;
    int err = async_ipc_lock_lock(c->lock);
    if (err && err != ASYNC_EOWNERDEAD) return 2;
    while (!async_ipc_event_is_set(c->go)) {
        err = async_ipc_cond_wait_dl(c->cond, c->lock, dl);
        if (err && err != ASYNC_EOWNERDEAD) return err == ASYNC_ETIMEDOUT ? 3 : 4;
    }
    async_ipc_lock_unlock(c->lock);
    return 0;
}

static int cond_broadcaster(void *arg)
{
    condpair_t *c = arg;
    int err = async_ipc_lock_lock(c->lock);
    if (err && err != ASYNC_EOWNERDEAD) return 2;
    async_ipc_event_set(c->go);
    async_ipc_cond_broadcast(c->cond);
    async_ipc_lock_unlock(c->lock);
    return 0;
}

static int cond_signaller(void *arg)
{
    condpair_t *c = arg;
    int err = async_ipc_lock_lock(c->lock);
    if (err && err != ASYNC_EOWNERDEAD) return 2;
    async_ipc_event_set(c->go);
    async_ipc_cond_signal(c->cond);
    async_ipc_lock_unlock(c->lock);
    return 0;
}

/* R3 on main (glibc 2.36's pthread_cond_t): the broadcast of the second
 * round never returns (it waits for the dead waiter's group reference), and
 * the signal of the second round goes to the dead waiter's group, so the
 * live waiter sleeps to its deadline.  Rounds of: a waiter killed asleep in the wait, then a live waiter woken
 * by a broadcast (or signal) from another process. */
static void cond_after_dead_waiters(int (*wake)(void *), int rounds)
{
    condpair_t c;
    cr_assert_eq(async_ipc_lock_new(&c.lock), 0);
    cr_assert_eq(async_ipc_cond_new(&c.cond), 0);
    cr_assert_eq(async_ipc_event_new(&c.go), 0);
    for (int r = 0; r < rounds; r++) {
        async_ipc_event_clear(c.go);
        async_process_t *dead = spawn(cond_waiter, &c);
        wait_asleep(dead);
        kill_and_reap(dead);
        async_process_t *live = spawn(cond_waiter, &c);
        wait_asleep(live);
        async_process_t *waker = spawn(wake, &c);
        int code = finish(waker);
        cr_assert_eq(code, 0, "round %d: the %s did not return (%d): wedged behind a dead waiter",
                     r, wake == cond_broadcaster ? "broadcast" : "signal", code);
        code = finish(live);
        cr_assert_eq(code, 0, "round %d: the live waiter ended %d", r, code);
    }
    async_ipc_event_free(c.go);
    async_ipc_cond_free(c.cond);
    async_ipc_lock_free(c.lock);
}

Test(round7_attack, broadcast_after_a_waiter_died_in_the_wait, .timeout = 120)
{
    SKIP_UNDER_TSAN();
    cond_after_dead_waiters(cond_broadcaster, 4);
}

Test(round7_attack, signal_after_a_waiter_died_in_the_wait, .timeout = 120)
{
    SKIP_UNDER_TSAN();
    cond_after_dead_waiters(cond_signaller, 4);
}

/* The barrier waits on the same condition: a party killed asleep in it (its
 * arrival counted: the barrier still trips without it) used to wedge the
 * next generation's release, which broadcasts with the barrier's lock held,
 * so every later party blocked too. */
static int barrier_party(void *arg)
{
    int err = async_ipc_barrier_wait_dl(arg, NULL, async_now() + WEDGE_NS);
    return err == 0 ? 0 : err == ASYNC_ETIMEDOUT ? 3 : 4;
}

Test(round7_attack, barrier_after_a_party_died_in_the_wait, .timeout = 120)
{
    SKIP_UNDER_TSAN();
    async_ipc_barrier_t *b;
    cr_assert_eq(async_ipc_barrier_new(&b, 2), 0);
    for (int r = 0; r < 4; r++) {
        async_process_t *dead = spawn(barrier_party, b);
        wait_asleep(dead);
        kill_and_reap(dead);
        /* The dead party arrived: one more trips this generation. */
        async_process_t *last = spawn(barrier_party, b);
        cr_assert_eq(finish(last), 0, "round %d: the generation with a dead party did not trip", r);
        /* The next generation, two live parties. */
        async_process_t *a = spawn(barrier_party, b);
        wait_asleep(a);
        async_process_t *c = spawn(barrier_party, b);
        int ca = finish(c), cb = finish(a);
        cr_assert(ca == 0 && cb == 0, "round %d: the next generation ended %d and %d: wedged", r,
                  ca, cb);
    }
    cr_assert(!async_ipc_barrier_broken(b));
    async_ipc_barrier_free(b);
}

/* --- R4: a holder of a region's descriptor shrinks it under the others ------ */

static async_shm_t *region;

static int shrink_region(void *arg)
{
    (void)arg;
    /* What a hostile or buggy holder of the descriptor can do. */
    return ftruncate(async_shm_fd(region), 0) == 0 ? 1 : errno == EPERM ? 0 : 2;
}

static int read_region(void *arg)
{
    (void)arg;
    volatile unsigned char *p = async_shm_ptr(region);
    unsigned sum = 0;
    for (size_t i = 0; i < async_shm_size(region); i += 4096) sum += p[i];
    return sum == (unsigned)(async_shm_size(region) / 4096) * 7u ? 0 : 3;
}

/* On main the shrink succeeds and every process that then touches the
 * region dies of SIGBUS: a region is now sealed against shrinking. */
Test(round7_attack, a_region_cannot_be_shrunk_under_its_users, .timeout = 30)
{
    size_t size = (size_t)1 << 20;
    cr_assert_eq(async_shm_new(&region, size), 0);
    memset(async_shm_ptr(region), 7, size);
    int code = finish(spawn(shrink_region, NULL));
    cr_expect_eq(code, 0, "ftruncate of a region's descriptor: %s",
                 code == 1 ? "it shrank" : "failed other than EPERM");
    code = finish(spawn(read_region, NULL));
    cr_assert_eq(code, 0, "a reader of the region ended %d%s", code,
                 code == 128 + SIGBUS ? " (SIGBUS: the region shrank under it)" : "");
    /* Another process that attaches by descriptor still maps all of it. */
    async_shm_t *other;
    cr_assert_eq(async_shm_attach(&other, async_shm_fd(region)), 0);
    cr_assert_eq(async_shm_size(other), size);
    cr_assert_eq(((unsigned char *)async_shm_ptr(other))[size - 1], 7);
    async_shm_free(other);
    async_shm_free(region);
}
