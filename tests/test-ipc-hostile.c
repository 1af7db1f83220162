/* The process-shared IPC objects (lib/ipc) attacked as a hostile user
 * would: processes SIGKILLed while they wait, sizes at and past
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
#include <time.h>
#include <unistd.h>
#include "async.h"
#include "async/ipc.h"
#include "async/process.h"
#include "support/proc.h"
#include "support/storm.h"

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

/* Sets the predicate under the lock and wakes every waiter (all) or one. */
static int cond_wake(condpair_t *c, bool all)
{
    int err = async_ipc_lock_lock(c->lock);
    if (err && err != ASYNC_EOWNERDEAD) return 2;
    async_ipc_event_set(c->go);
    if (all) async_ipc_cond_broadcast(c->cond);
    else async_ipc_cond_signal(c->cond);
    async_ipc_lock_unlock(c->lock);
    return 0;
}

static int cond_broadcaster(void *arg) { return cond_wake(arg, true); }
static int cond_signaller(void *arg) { return cond_wake(arg, false); }

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
        test_proc_wait_asleep(dead);
        test_proc_kill(dead, WEDGE_NS);
        async_process_t *live = spawn(cond_waiter, &c);
        test_proc_wait_asleep(live);
        async_process_t *waker = spawn(wake, &c);
        int code = test_proc_exit(waker, WEDGE_NS);
        cr_assert_eq(code, 0, "round %d: the %s did not return (%d): wedged behind a dead waiter",
                     r, wake == cond_broadcaster ? "broadcast" : "signal", code);
        code = test_proc_exit(live, WEDGE_NS);
        cr_assert_eq(code, 0, "round %d: the live waiter ended %d", r, code);
    }
    async_ipc_event_free(c.go);
    async_ipc_cond_free(c.cond);
    async_ipc_lock_free(c.lock);
}

Test(ipc_hostile, broadcast_after_a_waiter_died_in_the_wait, .timeout = 120)
{
    SKIP_UNDER_TSAN();
    cond_after_dead_waiters(cond_broadcaster, 4);
}

Test(ipc_hostile, signal_after_a_waiter_died_in_the_wait, .timeout = 120)
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

Test(ipc_hostile, barrier_after_a_party_died_in_the_wait, .timeout = 120)
{
    SKIP_UNDER_TSAN();
    async_ipc_barrier_t *b;
    cr_assert_eq(async_ipc_barrier_new(&b, 2), 0);
    for (int r = 0; r < 4; r++) {
        async_process_t *dead = spawn(barrier_party, b);
        test_proc_wait_asleep(dead);
        test_proc_kill(dead, WEDGE_NS);
        /* The dead party arrived: one more trips this generation. */
        async_process_t *last = spawn(barrier_party, b);
        cr_assert_eq(test_proc_exit(last, WEDGE_NS), 0, "round %d: the generation with a dead party did not trip", r);
        /* The next generation, two live parties. */
        async_process_t *a = spawn(barrier_party, b);
        test_proc_wait_asleep(a);
        async_process_t *c = spawn(barrier_party, b);
        int ca = test_proc_exit(c, WEDGE_NS), cb = test_proc_exit(a, WEDGE_NS);
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
Test(ipc_hostile, a_region_cannot_be_shrunk_under_its_users, .timeout = 30)
{
    size_t size = (size_t)1 << 20;
    cr_assert_eq(async_shm_new(&region, size), 0);
    memset(async_shm_ptr(region), 7, size);
    int code = test_proc_exit(spawn(shrink_region, NULL), WEDGE_NS);
    cr_expect_eq(code, 0, "ftruncate of a region's descriptor: %s",
                 code == 1 ? "it shrank" : "failed other than EPERM");
    code = test_proc_exit(spawn(read_region, NULL), WEDGE_NS);
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

/* --- hostile sizes -------------------------------------------------------- */

/* Every size at and past each limit is refused with ASYNC_EINVAL before
 * anything is mapped, or, when it passes the checks but cannot be mapped,
 * fails with ASYNC_ENOMEM; nothing crashes and *out is never set. */
Test(ipc_hostile, hostile_sizes_are_refused, .timeout = 30)
{
    void *const sentinel = (void *)0x1;
    async_shm_t *shm = sentinel;
    cr_expect_eq(async_shm_new(&shm, 0), ASYNC_EINVAL);
    cr_expect_eq(async_shm_new(&shm, SIZE_MAX), ASYNC_EINVAL);
    cr_expect_eq(async_shm_new(&shm, (size_t)PTRDIFF_MAX + 1), ASYNC_EINVAL);
    int err = async_shm_new(&shm, (size_t)PTRDIFF_MAX); /* passes the check; no such mapping */
    cr_expect(err < 0, "a PTRDIFF_MAX region: %d", err);
    cr_expect_eq(shm, sentinel);

    async_ipc_queue_t *q = sentinel;
    cr_expect_eq(async_ipc_queue_new(&q, 0, 8, 0), ASYNC_EINVAL);
    cr_expect_eq(async_ipc_queue_new(&q, 8, 0, 0), ASYNC_EINVAL);
    cr_expect_eq(async_ipc_queue_new(&q, 8, ((size_t)1 << 30) + 1, 0), ASYNC_EINVAL);
    cr_expect_eq(async_ipc_queue_new(&q, SIZE_MAX, 1, 0), ASYNC_EINVAL);
    cr_expect_eq(async_ipc_queue_new(&q, SIZE_MAX / 16, (size_t)1 << 30, 0), ASYNC_EINVAL);
    err = async_ipc_queue_new(&q, (size_t)1 << 40, 1, 0); /* 16 TiB: checks pass, mmap cannot */
    cr_expect(err == ASYNC_ENOMEM || err == ASYNC_EINVAL, "a 16 TiB queue: %d", err);
    cr_expect_eq(q, sentinel);
    cr_assert_eq(async_ipc_queue_new(&q, 4, 8, 0), 0);
    char buf[16];
    size_t len = 99;
    cr_expect_eq(async_ipc_queue_tryput(q, "123456789", 9), ASYNC_EINVAL);
    cr_expect_eq(async_ipc_queue_put_dl(q, "x", SIZE_MAX, 0), ASYNC_EINVAL);
    cr_expect_eq(async_ipc_queue_tryput(q, NULL, 1), ASYNC_EINVAL);
    cr_expect_eq(async_ipc_queue_tryput(q, NULL, 0), 0); /* an empty message */
    cr_expect_eq(async_ipc_queue_tryget(q, buf, 7, &len), ASYNC_EINVAL);
    cr_expect_eq(async_ipc_queue_tryget(q, NULL, SIZE_MAX, &len), ASYNC_EINVAL);
    cr_expect_eq(async_ipc_queue_tryget(q, buf, SIZE_MAX, &len), 0);
    cr_expect_eq(len, 0);
    cr_expect_eq(async_ipc_queue_len(q), 0);
    async_ipc_queue_free(q);

    async_ipc_pipe_t *a, *b;
    cr_assert_eq(async_ipc_pipe_new(&a, &b, 0), 0);
    cr_expect_eq(async_ipc_pipe_send(b, "x", ASYNC_IPC_PIPE_MAX_MSG + 1), ASYNC_EINVAL);
    cr_expect_eq(async_ipc_pipe_send(b, "x", SIZE_MAX), ASYNC_EINVAL);
    cr_expect_eq(async_ipc_pipe_send(b, NULL, 1), ASYNC_EINVAL);
    cr_expect_eq(async_ipc_pipe_send(b, "hello", 5), 0);
    cr_expect_eq(async_ipc_pipe_recv(a, NULL, 0, &len), ASYNC_EINVAL); /* too long for 0 */
    cr_expect_eq(len, 5);
    cr_expect_eq(async_ipc_pipe_recv(a, buf, sizeof buf, &len), 0, "the message stayed");
    cr_expect_eq(len, 5);
    cr_expect_eq(async_ipc_pipe_send(b, NULL, 0), 0);
    cr_expect_eq(async_ipc_pipe_recv(a, NULL, 0, &len), 0);
    cr_expect_eq(len, 0);
    async_ipc_pipe_free(a);
    async_ipc_pipe_free(b);

    async_shared_dict_t *d = sentinel;
    cr_expect_eq(async_shared_dict_new(&d, 0, 8, 8), ASYNC_EINVAL);
    cr_expect_eq(async_shared_dict_new(&d, ((size_t)1 << 28) + 1, 8, 8), ASYNC_EINVAL);
    cr_expect_eq(async_shared_dict_new(&d, 4, 0, 8), ASYNC_EINVAL);
    cr_expect_eq(async_shared_dict_new(&d, 4, 65536, 8), ASYNC_EINVAL);
    cr_expect_eq(async_shared_dict_new(&d, 4, 8, ((size_t)1 << 30) + 1), ASYNC_EINVAL);
    err = async_shared_dict_new(&d, (size_t)1 << 28, 65535, (size_t)1 << 30); /* 2^60 bytes */
    cr_expect(err == ASYNC_ENOMEM || err == ASYNC_EINVAL, "the biggest dictionary: %d", err);
    cr_expect_eq(d, sentinel);
    cr_assert_eq(async_shared_dict_new(&d, 2, 4, 4), 0);
    cr_expect_eq(async_shared_dict_set(d, "12345", "v", 1), ASYNC_EINVAL, "key past max_key");
    cr_expect_eq(async_shared_dict_set(d, "k", "12345", 5), ASYNC_EINVAL);
    cr_expect_eq(async_shared_dict_set(d, "k", "v", SIZE_MAX), ASYNC_EINVAL);
    cr_expect_eq(async_shared_dict_increment(d, "k", 1, NULL), ASYNC_EINVAL, "max_value 4 < 8");
    cr_expect_eq(async_shared_dict_set(d, "", "", 0), 0, "the empty key and value");
    cr_expect_eq(async_shared_dict_get(d, "", NULL, 0, &len), 0);
    cr_expect_eq(async_shared_dict_set(d, "a", "1", 1), 0);
    cr_expect_eq(async_shared_dict_set(d, "b", "1", 1), ASYNC_EFULL);
    cr_expect_eq(async_shared_dict_len(d), 2);
    async_shared_dict_free(d);

    async_shared_value_t *v = sentinel;
    async_shared_array_t *arr = sentinel;
    cr_expect_eq(async_shared_value_new(&v, 0, true), ASYNC_EINVAL);
    cr_expect_eq(async_shared_value_new(&v, SIZE_MAX, true), ASYNC_EINVAL);
    cr_expect_eq(async_shared_array_new(&arr, SIZE_MAX / 2, 3, false), ASYNC_EINVAL);
    cr_expect_eq(async_shared_array_new(&arr, 3, SIZE_MAX / 2, false), ASYNC_EINVAL);
    cr_expect_eq(async_shared_array_new(&arr, 8, 0, false), ASYNC_EINVAL);
    err = async_shared_array_new(&arr, 1, SIZE_MAX - 4096, false);
    cr_expect(err == ASYNC_ENOMEM || err == ASYNC_EINVAL, "an array of all memory: %d", err);
    cr_expect(v == sentinel && arr == sentinel);
    cr_assert_eq(async_shared_array_new(&arr, 8, 4, true), 0);
    uint64_t x = 5;
    cr_expect_eq(async_shared_array_set(arr, 4, &x), ASYNC_EINVAL);
    cr_expect_eq(async_shared_array_get(arr, SIZE_MAX, &x), ASYNC_EINVAL);
    cr_expect_eq(async_shared_array_set(arr, 3, &x), 0);
    async_shared_array_free(arr);

    async_ipc_sem_t *s = sentinel;
    cr_expect_eq(async_ipc_sem_new(&s, (unsigned)INT32_MAX + 1, 0), ASYNC_EINVAL);
    cr_expect_eq(async_ipc_sem_new(&s, 0, (unsigned)INT32_MAX + 1), ASYNC_EINVAL);
    cr_expect_eq(async_ipc_sem_new(&s, 3, 2), ASYNC_EINVAL);
    cr_expect_eq(s, sentinel);
    cr_assert_eq(async_ipc_sem_new(&s, INT32_MAX, 0), 0);
    cr_expect_eq(async_ipc_sem_release(s), ASYNC_EINVAL);
    cr_expect_eq(async_ipc_sem_value(s), (unsigned)INT32_MAX);
    async_ipc_sem_free(s);
    async_ipc_barrier_t *bar = sentinel;
    cr_expect_eq(async_ipc_barrier_new(&bar, 0), ASYNC_EINVAL);
    cr_expect_eq(bar, sentinel);
}

/* --- descriptors and address space exhausted, in a forked child ----------- */

#define CHILD_CHECK(cond, n)                                                        \
    do {                                                                            \
        if (!(cond)) {                                                              \
            fprintf(stderr, "child check %d failed: %s\n", (n), #cond);             \
            return (n);                                                             \
        }                                                                           \
    } while (0)

/* Fills every free descriptor slot under a limit of 64 but `spare`; returns
 * how many it opened (closed by unfill). */
static int fillers[64], nfillers;

static void fill_fds(int spare)
{
    struct rlimit rl = {64, 64};
    setrlimit(RLIMIT_NOFILE, &rl);
    nfillers = 0;
    int fd;
    while (nfillers < 64 && (fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0)
        fillers[nfillers++] = fd;
    for (int i = 0; i < spare && nfillers > 0; i++) close(fillers[--nfillers]);
}

static void unfill_fds(void)
{
    while (nfillers > 0) close(fillers[--nfillers]);
}

/* Free slots now (each probe is closed again). */
static int free_fds(void)
{
    int fds[64], n = 0;
    while (n < 64 && (fds[n] = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0) n++;
    for (int i = 0; i < n; i++) close(fds[i]);
    return n;
}

static int exhausted_descriptors(void *arg)
{
    (void)arg;
    async_shm_t *keep;
    CHILD_CHECK(async_shm_new(&keep, 4096) == 0, 10);
    for (int spare = 0; spare <= 1; spare++) {
        fill_fds(spare);
        CHILD_CHECK(free_fds() == spare, 11);
        async_ipc_queue_t *q = NULL;
        async_ipc_pipe_t *a = NULL, *b = NULL;
        async_shm_t *shm = NULL, *att = NULL;
        /* The queue needs two eventfds, the pipe two sockets: with one
         * spare, the first is made and must be closed again. */
        CHILD_CHECK(async_ipc_queue_new(&q, 4, 8, 0) == ASYNC_EMFILE && !q, 12);
        CHILD_CHECK(free_fds() == spare, 13);
        CHILD_CHECK(async_ipc_pipe_new(&a, &b, 0) == ASYNC_EMFILE && !a && !b, 14);
        CHILD_CHECK(free_fds() == spare, 15);
        if (spare == 0) {
            CHILD_CHECK(async_shm_new(&shm, 4096) == ASYNC_EMFILE && !shm, 16);
            CHILD_CHECK(async_shm_attach(&att, async_shm_fd(keep)) == ASYNC_EMFILE && !att, 17);
        } else {
            /* One descriptor is all a region takes. */
            CHILD_CHECK(async_shm_new(&shm, 4096) == 0, 18);
            async_shm_free(shm);
        }
        CHILD_CHECK(free_fds() == spare, 19);
        /* The objects without a descriptor do not care. */
        async_ipc_lock_t *l;
        async_shared_dict_t *d;
        CHILD_CHECK(async_ipc_lock_new(&l) == 0, 20);
        CHILD_CHECK(async_shared_dict_new(&d, 4, 8, 8) == 0, 21);
        async_ipc_lock_free(l);
        async_shared_dict_free(d);
        unfill_fds();
    }
    /* With the descriptors back, all of it works. */
    async_ipc_queue_t *q;
    CHILD_CHECK(async_ipc_queue_new(&q, 4, 8, 0) == 0, 30);
    CHILD_CHECK(async_ipc_queue_put(q, "ok", 2) == 0, 31);
    async_ipc_queue_free(q);
    async_shm_free(keep);
    return 0;
}

Test(ipc_hostile, descriptor_exhaustion_fails_cleanly, .timeout = 30)
{
    int code = test_proc_exit(spawn(exhausted_descriptors, NULL), WEDGE_NS);
    cr_assert_eq(code, 0, "the child's check %d failed (its stderr says which)", code);
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SHADOW 1
#else
#define SHADOW 0
#endif

/* This process's address space in use now (VmSize), in bytes. */
static size_t vm_size(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    size_t kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmSize: %zu kB", &kb) == 1) break;
    if (f) fclose(f);
    return kb * 1024;
}

#define BIG_MSG ((size_t)192 << 20)

static async_ipc_pipe_t *big_tx, *big_rx;

static int send_big(void *arg)
{
    (void)arg;
    unsigned char *m = malloc(BIG_MSG);
    if (!m) return 1;
    for (size_t i = 0; i < BIG_MSG; i++) m[i] = (unsigned char)(i * 31 + 7);
    int err = async_ipc_pipe_send_dl(big_tx, m, BIG_MSG, async_now() + ASYNC_SEC(60));
    free(m);
    return err ? 2 : 0;
}

static int exhausted_memory(void *arg)
{
    (void)arg;
    struct rlimit old;
    CHILD_CHECK(getrlimit(RLIMIT_AS, &old) == 0, 40);
    CHILD_CHECK(async_ipc_pipe_new(&big_rx, &big_tx, ASYNC_IPC_PIPE_ONEWAY) == 0, 41);
    async_process_opts_t o;
    async_process_opts_init(&o);
    o.daemon = true;
    async_process_t *sender;
    CHILD_CHECK(async_process_spawn_opts(&sender, send_big, NULL, &o) == 0, 42);
    async_ipc_pipe_free(big_tx);
    /* 64 MiB of room: every object below wants more. */
    struct rlimit small = {vm_size() + ((size_t)64 << 20), old.rlim_max};
    CHILD_CHECK(setrlimit(RLIMIT_AS, &small) == 0, 43);
    async_shm_t *shm = NULL;
    async_ipc_queue_t *q = NULL;
    async_shared_dict_t *d = NULL;
    async_shared_array_t *arr = NULL;
    CHILD_CHECK(async_shm_new(&shm, (size_t)256 << 20) == ASYNC_ENOMEM && !shm, 44);
    CHILD_CHECK(async_ipc_queue_new(&q, 256, (size_t)1 << 20, 0) == ASYNC_ENOMEM && !q, 45);
    CHILD_CHECK(async_shared_dict_new(&d, (size_t)1 << 18, 64, 1024) == ASYNC_ENOMEM && !d, 46);
    CHILD_CHECK(async_shared_array_new(&arr, 1, (size_t)256 << 20, true) == ASYNC_ENOMEM && !arr, 47);
    /* A message bigger than the room: ENOMEM, and what arrived stays. */
    void *msg = NULL;
    size_t len = 0;
    int err = async_ipc_pipe_recv_alloc_dl(&msg, &len, big_rx, async_now() + ASYNC_SEC(60));
    CHILD_CHECK(err == ASYNC_ENOMEM && !msg, 48);
    /* Room again: the same message comes whole. */
    CHILD_CHECK(setrlimit(RLIMIT_AS, &old) == 0, 49);
    err = async_ipc_pipe_recv_alloc_dl(&msg, &len, big_rx, async_now() + ASYNC_SEC(60));
    CHILD_CHECK(err == 0 && len == BIG_MSG, 50);
    const unsigned char *m = msg;
    for (size_t i = 0; i < BIG_MSG; i++) CHILD_CHECK(m[i] == (unsigned char)(i * 31 + 7), 51);
    async_ipc_msg_free(msg);
    CHILD_CHECK(async_ipc_pipe_recv_alloc_dl(&msg, &len, big_rx, async_now() + ASYNC_SEC(60)) ==
                    ASYNC_EEOF, 52);
    CHILD_CHECK(async_process_join_dl(sender, async_now() + ASYNC_SEC(30)) == 0, 53);
    int code = -1;
    async_process_status(sender, &code, NULL);
    CHILD_CHECK(code == 0, 54);
    async_process_free(sender);
    async_ipc_pipe_free(big_rx);
    return 0;
}

Test(ipc_hostile, address_space_exhaustion_fails_cleanly_and_recovers, .timeout = 90)
{
    if (SHADOW) cr_skip_test("a sanitizer's shadow memory cannot live under a small RLIMIT_AS");
    int code = test_proc_exit(spawn(exhausted_memory, NULL), WEDGE_NS);
    cr_assert_eq(code, 0, "the child's check %d failed (its stderr says which)", code);
}

/* --- queue users killed while they wait through a loop ---------------------- */

/* The queue's kill storms (test-ipc-queue-faults.c) kill processes that
 * wait on the futex.  These kill processes whose tasks wait on the queue's
 * eventfds (watchers, armed flags), which a dead watcher leaves raised. */

#define T_IDS 96u
#define T_PER_ID 4000u
#define T_PROD 2u
#define T_CONS 2u
#define T_TASKS 3u /* getter tasks in each consumer process */
#define T_STORM_NS ASYNC_MSEC(1500)
#define T_STORM_MAX_NS ASYNC_SEC(40)
#define T_KILLS 100u
#define T_CHILD_NS ASYNC_SEC(40)

/* Whether a storm that began at start with kills so far goes on: at least
 * T_STORM_NS and until more than T_KILLS kills.  A slow machine (a
 * sanitizer, a loaded CI) spawns slower, so it storms longer, up to
 * T_STORM_MAX_NS, rather than kill less. */
static bool storming(int64_t start, unsigned kills)
{
    int64_t now = async_now();
    return now < start + T_STORM_NS || (kills <= T_KILLS && now < start + T_STORM_MAX_NS);
}

typedef struct tstorm {
    async_ipc_queue_t *q;
    unsigned char *seen;
    uint32_t *put_done;
    uint32_t id;
} tstorm_t;

typedef struct tbody {
    tstorm_t *s;
    int err; /* the first failure in this process */
} tbody_t;

static int put_task(void *arg, void **result)
{
    (void)result;
    tbody_t *b = arg;
    int64_t dl = async_now() + T_CHILD_NS;
    for (uint32_t i = 0; i < T_PER_ID; i++) {
        uint32_t it[2] = {b->s->id, i};
        int err = async_ipc_queue_put_dl(b->s->q, it, sizeof it, dl);
        if (err) {
            b->err = 1;
            return 0;
        }
        __atomic_store_n(&b->s->put_done[b->s->id], i + 1, __ATOMIC_SEQ_CST);
    }
    return 0;
}

static int get_task(void *arg, void **result)
{
    (void)result;
    tbody_t *b = arg;
    int64_t dl = async_now() + T_CHILD_NS;
    for (;;) {
        uint32_t it[2];
        size_t len;
        int err = async_ipc_queue_get_dl(b->s->q, it, sizeof it, &len, dl);
        if (err == ASYNC_EEOF) return 0;
        if (err || len != sizeof it || it[0] >= T_IDS || it[1] >= T_PER_ID) {
            if (!b->err) b->err = err ? 2 : 3;
            return 0;
        }
        __atomic_fetch_add(&b->s->seen[it[0] * T_PER_ID + it[1]], 1, __ATOMIC_SEQ_CST);
    }
}

static int on_loop(tstorm_t *s, async_task_fn fn, unsigned ntasks)
{
    async_loop_t *loop;
    if (async_loop_new(&loop)) return 10;
    tbody_t b = {s, 0};
    for (unsigned i = 0; i < ntasks; i++)
        if (async_task_spawn(NULL, loop, fn, &b, NULL)) return 11;
    if (async_loop_run(loop, ASYNC_RUN_DEFAULT)) return 12;
    async_loop_destroy(loop);
    return b.err;
}

static int task_producer(void *arg) { return on_loop(arg, put_task, 1); }
static int task_consumer(void *arg) { return on_loop(arg, get_task, T_TASKS); }

Test(ipc_hostile, kill_storm_of_producers_and_consumers_waiting_in_tasks, .timeout = 120)
{
    SKIP_UNDER_TSAN();
    unsigned seed0 = (unsigned)time(NULL), seed = seed0;
    tstorm_t s = {0};
    async_shared_array_t *seen, *done;
    /* A small queue, so that both sides wait often: producers for room,
     * consumers for items. */
    cr_assert_eq(async_ipc_queue_new(&s.q, 8, 2 * sizeof(uint32_t), 0), 0);
    cr_assert_eq(async_shared_array_new(&seen, 1, T_IDS * T_PER_ID, false), 0);
    cr_assert_eq(async_shared_array_new(&done, sizeof(uint32_t), T_IDS, false), 0);
    s.seen = async_shared_array_ptr(seen);
    s.put_done = async_shared_array_ptr(done);
    uint32_t next_id = 0;
    async_process_t *m[T_PROD + T_CONS];
    for (unsigned i = 0; i < T_PROD + T_CONS; i++) {
        if (i < T_PROD) s.id = next_id++;
        m[i] = spawn(i < T_PROD ? task_producer : task_consumer, &s);
    }
    unsigned killed[2] = {0, 0};
    int64_t start = async_now();
    while (storming(start, killed[0] + killed[1])) {
        usleep(1000 + (unsigned)rand_r(&seed) % 3000);
        unsigned i = (unsigned)rand_r(&seed) % (T_PROD + T_CONS);
        bool producer = i < T_PROD;
        if (producer && next_id >= T_IDS) continue;
        int code = test_proc_end(m[i], T_CHILD_NS);
        if (code == 128 + SIGKILL) killed[producer]++;
        else cr_assert_eq(code, 0, "a %s exited %d", producer ? "producer" : "consumer", code);
        if (producer) s.id = next_id++;
        m[i] = spawn(producer ? task_producer : task_consumer, &s);
    }
    for (unsigned i = 0; i < T_PROD; i++) {
        int code = test_proc_exit(m[i], WEDGE_NS);
        cr_assert_eq(code, 0, "a surviving producer ended %d", code);
    }
    cr_assert_eq(async_ipc_queue_close(s.q), 0);
    for (unsigned i = T_PROD; i < T_PROD + T_CONS; i++) {
        int code = test_proc_exit(m[i], WEDGE_NS);
        cr_assert_eq(code, 0, "a surviving consumer ended %d", code);
    }
    cr_assert_eq(async_ipc_queue_len(s.q), 0);

    test_tally_t t = test_storm_tally(s.seen, s.put_done, next_id, T_PER_ID);
    cr_log_info("task storm seed %u: %u producers and %u consumers killed, %llu delivered, "
                "%llu lost with dead consumers, %llu committed by dying producers",
                seed0, killed[1], killed[0], (unsigned long long)t.delivered,
                (unsigned long long)t.lost, (unsigned long long)t.in_hand);
    cr_assert_gt(killed[0] + killed[1], T_KILLS, "only %u kills in %.1f s", killed[0] + killed[1],
                 (double)(async_now() - start) / 1e9);
    /* One thread a consumer: a dead one held at most one message. */
    cr_assert_leq(t.lost, killed[0], "%llu lost, but only %u consumers died",
                  (unsigned long long)t.lost, killed[0]);
    cr_assert_gt(t.delivered, 0);
    async_shared_array_free(seen);
    async_shared_array_free(done);
    async_ipc_queue_free(s.q);
}

/* --- a kill storm on a condition and its lock ------------------------------- */

typedef struct cstorm {
    async_ipc_lock_t *lock;
    async_ipc_cond_t *cond;
    uint64_t *ticket; /* shared, under lock: bumped by the signaller */
    uint32_t *stop;   /* shared, under lock */
} cstorm_t;

/* Takes the lock; a dead holder's is fine (the state is one word). */
static int take(cstorm_t *c)
{
    int err = async_ipc_lock_lock_dl(c->lock, async_now() + T_CHILD_NS);
    return err == 0 || err == ASYNC_EOWNERDEAD ? 0 : 1;
}

static int storm_waiter(void *arg)
{
    cstorm_t *c = arg;
    int64_t dl = async_now() + T_CHILD_NS;
    uint64_t seen = 0;
    for (;;) {
        if (take(c)) return 20;
        while (*c->ticket == seen && !*c->stop) {
            int err = async_ipc_cond_wait_dl(c->cond, c->lock, dl);
            if (err && err != ASYNC_EOWNERDEAD) return err == ASYNC_ETIMEDOUT ? 21 : 22;
        }
        seen = *c->ticket;
        bool stop = *c->stop;
        async_ipc_lock_unlock(c->lock);
        if (stop) return 0;
    }
}

static int storm_signaller(void *arg)
{
    cstorm_t *c = arg;
    for (unsigned n = 0;; n++) {
        if (take(c)) return 30;
        (*c->ticket)++;
        bool stop = *c->stop;
        if (n % 3 == 0) async_ipc_cond_broadcast(c->cond);
        else async_ipc_cond_signal(c->cond);
        async_ipc_lock_unlock(c->lock);
        if (stop) return 0;
        usleep(100);
    }
}

#define C_WAITERS 4u

/* Waiters killed asleep in the wait, awake holding the lock, or between;
 * the signaller killed too, sometimes holding the lock.  On main
 * (pthread_cond_t) the first broadcast after a dead sleeper's group switch
 * never returns.  Afterwards every survivor sees the stop within the bound. */
Test(ipc_hostile, kill_storm_on_a_condition_and_its_lock, .timeout = 120)
{
    SKIP_UNDER_TSAN();
    unsigned seed0 = (unsigned)time(NULL), seed = seed0;
    cstorm_t c;
    async_shared_array_t *words;
    cr_assert_eq(async_ipc_lock_new(&c.lock), 0);
    cr_assert_eq(async_ipc_cond_new(&c.cond), 0);
    cr_assert_eq(async_shared_array_new(&words, sizeof(uint64_t), 2, false), 0);
    c.ticket = async_shared_array_ptr(words);
    c.stop = (uint32_t *)(c.ticket + 1);
    async_process_t *m[C_WAITERS + 1];
    for (unsigned i = 0; i <= C_WAITERS; i++)
        m[i] = spawn(i == C_WAITERS ? storm_signaller : storm_waiter, &c);
    unsigned kills = 0;
    int64_t start = async_now();
    while (storming(start, kills)) {
        usleep(1000 + (unsigned)rand_r(&seed) % 3000);
        unsigned i = (unsigned)rand_r(&seed) % (C_WAITERS + 1);
        cr_assert(async_process_is_alive(m[i]), "a storm process ended by itself");
        test_proc_kill(m[i], WEDGE_NS);
        kills++;
        m[i] = spawn(i == C_WAITERS ? storm_signaller : storm_waiter, &c);
    }
    cr_assert_eq(take(&c), 0, "the lock wedged");
    *c.stop = 1;
    async_ipc_cond_broadcast(c.cond);
    cr_assert_eq(async_ipc_lock_unlock(c.lock), 0);
    for (unsigned i = 0; i <= C_WAITERS; i++) {
        int code = test_proc_exit(m[i], WEDGE_NS);
        cr_assert_eq(code, 0, "seed %u: %s %u ended %d after the stop", seed0,
                     i == C_WAITERS ? "the signaller" : "waiter", i, code);
    }
    cr_log_info("condition storm seed %u: %u kills, %llu signals", seed0, kills,
                (unsigned long long)*c.ticket);
    cr_assert_gt(kills, T_KILLS, "only %u kills in %.1f s", kills, (double)(async_now() - start) / 1e9);
    async_shared_array_free(words);
    async_ipc_cond_free(c.cond);
    async_ipc_lock_free(c.lock);
}
