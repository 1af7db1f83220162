/* Round 13's review of lib/ipc: the two defects round 12 left (the
 * dictionary's repair after a dead writer read the whole table; a barrier
 * reset killed between its stores made the next generation trip early),
 * each shown by killing a process at a chosen point (the test hooks of
 * lib/ipc/ipc_internal.h), and the attacks that followed: a barrier waiter
 * carried into the next generation, a pipe end's descriptor that hid unread
 * messages.  Each test says what it showed on main.  tests/test-ipc-kills.c
 * checks the dictionary and the queue against models under kills anywhere. */
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "async.h"
#include "async/ipc.h"
#include "async/process.h"

/* ThreadSanitizer models one process: it cannot follow a futex or a mutex
 * another process changed. */
#if defined(__SANITIZE_THREAD__)
#define SKIP_UNDER_TSAN() cr_skip_test("process-shared futexes are outside ThreadSanitizer's model")
#else
#define SKIP_UNDER_TSAN() ((void)0)
#endif

/* Generous bounds: they only turn a wedge into a failure instead of a hang. */
#define WEDGE_NS ASYNC_SEC(20)

/* lib/ipc/ipc_internal.h */
extern void (*async__ipc_dict_hook)(int where);
extern void (*async__ipc_barrier_hook)(int where);

static int die_where;

static void die_here(int where)
{
    if (where == die_where) raise(SIGKILL);
}

/* Joins p and frees it; its exit code, or 128 + the signal that ended it. */
static int finish(async_process_t *p)
{
    cr_assert_eq(async_process_join_dl(p, async_now() + WEDGE_NS), 0, "a child wedged");
    int code = -1, sig = 0;
    cr_assert_eq(async_process_status(p, &code, &sig), 0);
    async_process_free(p);
    return sig ? 128 + sig : code;
}

/* --- the dictionary's repair after a dead writer ----------------------------- */

/* Shared memory this process has touched, in kB. */
static long shmem_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    cr_assert_not_null(f);
    char line[256];
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "RssShmem:", 9) == 0) sscanf(line + 9, "%ld", &kb);
    fclose(f);
    cr_assert_geq(kb, 0, "no RssShmem in /proc/self/status");
    return kb;
}

static int killed_update(void *arg)
{
    async_shared_dict_t *d = arg;
    die_where = 2;
    async__ipc_dict_hook = die_here;
    int64_t v = 42;
    async_shared_dict_item_t it[] = {{"three", &v, 8}, {"fresh", &v, 8}, {"x", &v, 8}};
    async_shared_dict_update(d, it, 3);
    return 1; /* not reached: the hook kills it after the second item */
}

/* A writer killed inside an update, after two items: the next caller
 * repairs the table.  On main that repair read every version of the table,
 * which brought all of it into the caller's memory (about 36 MB here, under
 * the lock; 1.1 GB at capacity 2^18); it now visits the two slots the dead
 * writer had logged. */
Test(round13_ipc, the_repair_after_a_dead_writer_touches_only_what_it_wrote, .timeout = 60)
{
    async_shared_dict_t *d;
    cr_assert_eq(async_shared_dict_new(&d, 1 << 13, 40, 1024), 0);
    cr_assert_eq(async_shared_dict_set(d, "three", "abc", 3), 0);
    cr_assert_eq(async_shared_dict_set(d, "one", "a", 1), 0);
    async_process_t *p;
    cr_assert_eq(async_process_spawn(&p, killed_update, d), 0);
    cr_assert_eq(finish(p), 128 + SIGKILL, "the writer did not die at its hook");
    long before = shmem_kb();
    char buf[1024];
    size_t len = 0;
    /* The first call after the death takes the lock with EOWNERDEAD and
     * repairs. */
    cr_assert_eq(async_shared_dict_get(d, "three", buf, sizeof buf, &len), 0);
    long grown = shmem_kb() - before;
    cr_log_info("the repair brought %ld kB of the table into memory", grown);
    /* A few slots land in a few pages; the table is over 30 MB. */
    cr_assert_lt(grown, 1024, "the repair brought %ld kB of the table into memory", grown);
    cr_assert(len == 3 && memcmp(buf, "abc", 3) == 0, "the dead update showed through");
    cr_assert_eq(async_shared_dict_get(d, "fresh", buf, sizeof buf, &len), ASYNC_ENOENT);
    cr_assert_eq(async_shared_dict_len(d), 2);
    /* And the slots it wrote serve the next change. */
    int64_t v = 7;
    async_shared_dict_item_t it[] = {{"three", &v, 8}, {"fresh", &v, 8}, {"x", &v, 8}};
    cr_assert_eq(async_shared_dict_update(d, it, 3), 0);
    cr_assert_eq(async_shared_dict_len(d), 4);
    int64_t out = 0;
    cr_assert_eq(async_shared_dict_increment(d, "fresh", 1, &out), 0);
    cr_assert_eq(out, 8);
    async_shared_dict_free(d);
}

/* --- the barrier, killed at each of its steps ---------------------------------- */

/* The state letter of a child in /proc/PID/stat ('S' asleep, 'Z' ended and
 * not yet joined, 'R' running, ...). */
static char proc_state(async_process_t *p)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", async_process_pid(p));
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *close_paren = strrchr(buf, ')');
    cr_assert(close_paren && close_paren[1] == ' ', "unreadable %s", path);
    return close_paren[2];
}

/* Waits until the child sleeps in the kernel; false if it ended instead. */
static bool asleep(async_process_t *p)
{
    for (int i = 0; i < 4000; i++) {
        char st = proc_state(p);
        if (st == 'S') return true;
        if (st == 'Z' || st == 'X') return false;
        usleep(5000);
    }
    cr_assert_fail("the child neither slept nor ended");
    return false;
}

/* A party: waits with a generous deadline and exits 0 (released), 2
 * (ASYNC_ECLOSED), 3 (timed out, or released only at its deadline) or 4. */
static int party(void *arg)
{
    int64_t dl = async_now() + ASYNC_SEC(15);
    int err = async_ipc_barrier_wait_dl(arg, NULL, dl);
    if (err == 0 && async_now() >= dl) return 3;
    return err == 0 ? 0 : err == ASYNC_ETIMEDOUT ? 3 : err == ASYNC_ECLOSED ? 2 : 4;
}

typedef struct killer {
    async_ipc_barrier_t *b;
    int where; /* the barrier hook's step: lib/ipc/ipc_internal.h */
} killer_t;

/* Arrives (steps 1, 2, 7), resets (3, 4) or aborts (5, 6), and dies at its
 * step. */
static int killed_party(void *arg)
{
    killer_t *k = arg;
    die_where = k->where;
    async__ipc_barrier_hook = die_here;
    if (k->where == 3 || k->where == 4) async_ipc_barrier_reset(k->b);
    else if (k->where == 5 || k->where == 6) async_ipc_barrier_abort(k->b);
    else async_ipc_barrier_wait_dl(k->b, NULL, async_now() + ASYNC_SEC(15));
    return 1; /* not reached: the hook kills it */
}

static async_process_t *spawn_party(async_ipc_barrier_t *b)
{
    async_process_t *p;
    cr_assert_eq(async_process_spawn(&p, party, b), 0);
    return p;
}

/* The next generation of a barrier of three trips at its third live
 * arrival, not before. */
static void next_generation_trips_at_three(async_ipc_barrier_t *b, const char *after)
{
    async_process_t *x = spawn_party(b);
    cr_assert(asleep(x), "%s: the next generation tripped at its first arrival (exit %d)", after,
              finish(x));
    async_process_t *y = spawn_party(b);
    cr_assert(asleep(y), "%s: the next generation tripped at its second arrival (exit %d)", after,
              finish(y));
    cr_assert(asleep(x), "%s: the first arrival left at the second (exit %d)", after, finish(x));
    async_process_t *z = spawn_party(b);
    int cz = finish(z), cx = finish(x), cy = finish(y);
    cr_assert(cx == 0 && cy == 0 && cz == 0, "%s: the next generation ended %d, %d and %d",
              after, cx, cy, cz);
}

/* Two parties wait (or one, for step 7), and a third process dies at step
 * `where`. */
static void kill_at(async_ipc_barrier_t *b, int where, async_process_t *waiters[2])
{
    for (int i = 0; i < (where == 7 ? 1 : 2); i++) {
        waiters[i] = spawn_party(b);
        cr_assert(asleep(waiters[i]), "step %d: waiter %d did not wait", where, i);
    }
    killer_t k = {b, where};
    async_process_t *p;
    cr_assert_eq(async_process_spawn(&p, killed_party, &k), 0);
    cr_assert_eq(finish(p), 128 + SIGKILL, "step %d: the party did not die at its hook", where);
}

/* The step was not done: both waiters wait on, and the third arrival
 * trips their generation normally. */
static void not_done(async_ipc_barrier_t *b, int where, async_process_t *w[2])
{
    for (int i = 0; i < 2; i++)
        cr_assert(asleep(w[i]), "step %d: waiter %d left (exit %d)", where, i, finish(w[i]));
    async_process_t *z = spawn_party(b);
    int cz = finish(z), c0 = finish(w[0]), c1 = finish(w[1]);
    cr_assert(c0 == 0 && c1 == 0 && cz == 0,
              "step %d: the generation's trip ended %d, %d and %d (2: ASYNC_ECLOSED)", where, c0,
              c1, cz);
}

/* What a death at each step leaves, on a barrier of three: the step is
 * done whole, or not at all, and the next generation trips at its third
 * arrival.  On main a reset killed after bumping the generation left the
 * two arrivals it cut short counted in the next generation, which tripped
 * at its first arrival; one killed after recording the generation it cut
 * short failed that generation's later, normal trip with ASYNC_ECLOSED. */
Test(round13_ipc, a_party_killed_at_each_step_leaves_the_barrier_whole, .timeout = 240)
{
    SKIP_UNDER_TSAN();
    async_ipc_barrier_t *b;
    cr_assert_eq(async_ipc_barrier_new(&b, 3), 0);
    async_process_t *w[2];

    /* 1: a trip stored, its party killed before the wake-up call: the
     * waiters are released (a re-check later at most). */
    kill_at(b, 1, w);
    cr_assert_eq(finish(w[0]), 0, "step 1");
    cr_assert_eq(finish(w[1]), 0, "step 1");
    next_generation_trips_at_three(b, "step 1");

    /* 2, 3, 5: killed between the two stores of a trip, a reset, an abort:
     * none of them happened. */
    kill_at(b, 2, w);
    not_done(b, 2, w);
    next_generation_trips_at_three(b, "step 2");
    kill_at(b, 3, w);
    not_done(b, 3, w);
    next_generation_trips_at_three(b, "step 3");
    kill_at(b, 5, w);
    cr_assert_not(async_ipc_barrier_broken(b), "step 5: an abort that never happened broke it");
    not_done(b, 5, w);
    next_generation_trips_at_three(b, "step 5");

    /* 4: a reset stored, killed before its wake-up call: the waiters it cut
     * short fail, and the next generation counts from zero. */
    kill_at(b, 4, w);
    cr_assert_eq(finish(w[0]), 2, "step 4: a waiter of the reset generation");
    cr_assert_eq(finish(w[1]), 2, "step 4: a waiter of the reset generation");
    cr_assert_not(async_ipc_barrier_broken(b));
    next_generation_trips_at_three(b, "step 4");

    /* 6: an abort stored: broken until a reset. */
    kill_at(b, 6, w);
    cr_assert_eq(finish(w[0]), 2, "step 6");
    cr_assert_eq(finish(w[1]), 2, "step 6");
    cr_assert(async_ipc_barrier_broken(b));
    cr_assert_eq(async_ipc_barrier_wait_dl(b, NULL, 0), ASYNC_ECLOSED);
    async_ipc_barrier_reset(b);
    cr_assert_not(async_ipc_barrier_broken(b));
    next_generation_trips_at_three(b, "step 6");

    /* 7: an arrival counted, killed before it sleeps: it counts, so one
     * more live arrival trips its generation. */
    kill_at(b, 7, w);
    cr_assert(asleep(w[0]), "step 7: the dead arrival released the waiter");
    async_process_t *z = spawn_party(b);
    cr_assert_eq(finish(z), 0, "step 7");
    cr_assert_eq(finish(w[0]), 0, "step 7");
    next_generation_trips_at_three(b, "step 7");

    cr_assert_not(async_ipc_barrier_broken(b));
    async_ipc_barrier_free(b);
}

/* A waiter asleep when the barrier is aborted, that gets the lock back only
 * after a reset (stopped meanwhile, as a loaded machine may leave it): its
 * generation was broken, so it fails.  On main an abort did not end the
 * generation and the reset after it (no arrivals counted) did not either,
 * so the waiter found its generation number current and the barrier
 * mended, and waited on, uncounted, in the next generation: here to its
 * deadline, or released by the next generation's trip as if it had been
 * one of its parties. */
Test(round13_ipc, a_waiter_of_an_aborted_generation_is_not_carried_into_the_next, .timeout = 60)
{
    SKIP_UNDER_TSAN();
    async_ipc_barrier_t *b;
    cr_assert_eq(async_ipc_barrier_new(&b, 3), 0);
    async_process_t *w = spawn_party(b);
    cr_assert(asleep(w));
    cr_assert_eq(kill(async_process_pid(w), SIGSTOP), 0);
    async_ipc_barrier_abort(b);
    async_ipc_barrier_reset(b);
    cr_assert_not(async_ipc_barrier_broken(b));
    cr_assert_eq(kill(async_process_pid(w), SIGCONT), 0);
    int code = finish(w);
    cr_assert_eq(code, 2, "the aborted generation's waiter ended %d (3: it waited on, to its "
                 "deadline)", code);
    next_generation_trips_at_three(b, "after the abort and the reset");
    async_ipc_barrier_free(b);
}

/* --- a pipe end's descriptor in the user's own loop --------------------------- */

/* The loop ipc.h and docs/ipc.md describe: wait for the end's descriptor to
 * be readable, call tryrecv, wait again.  On main the first receive read
 * every message the peer had sent into the end's buffer (up to 64 KiB at a
 * time), so the descriptor never became readable again and the loop slept
 * with the second message in hand: here until its 5 s poll timeout, for
 * ever in a loop without one. */
Test(round13_ipc, a_pipe_end_stays_readable_while_a_message_is_unread, .timeout = 60)
{
    async_ipc_pipe_t *a, *b;
    cr_assert_eq(async_ipc_pipe_new(&a, &b, 0), 0);
    const char *words[] = {"one", "", "three", "four", "five"};
    for (int i = 0; i < 5; i++)
        cr_assert_eq(async_ipc_pipe_send(b, words[i], strlen(words[i])), 0);
    char buf[16];
    size_t len;
    for (int i = 0; i < 5; i++) {
        struct pollfd pfd = {.fd = async_ipc_pipe_fd(a), .events = POLLIN};
        int r = poll(&pfd, 1, 5000);
        cr_assert_eq(r, 1, "message %d: the descriptor is not readable with the message unread",
                     i);
        /* Every other message by the blocking receive, which must not read
         * ahead either. */
        int err = i % 2 ? async_ipc_pipe_recv(a, buf, sizeof buf, &len)
                        : async_ipc_pipe_tryrecv(a, buf, sizeof buf, &len);
        cr_assert_eq(err, 0, "message %d: %s", i, async_errname(err));
        cr_assert(len == strlen(words[i]) && memcmp(buf, words[i], len) == 0, "message %d", i);
    }
    struct pollfd pfd = {.fd = async_ipc_pipe_fd(a), .events = POLLIN};
    cr_assert_eq(poll(&pfd, 1, 0), 0, "readable with nothing left");
    cr_assert_eq(async_ipc_pipe_tryrecv(a, buf, sizeof buf, &len), ASYNC_EAGAIN);
    /* A message that arrives in pieces: readable for each piece, EAGAIN
     * until it is whole. */
    uint32_t n = 6;
    cr_assert_eq(write(async_ipc_pipe_fd(b), &n, sizeof n), sizeof n);
    cr_assert_eq(write(async_ipc_pipe_fd(b), "abc", 3), 3);
    cr_assert_eq(poll(&pfd, 1, 5000), 1);
    cr_assert_eq(async_ipc_pipe_tryrecv(a, buf, sizeof buf, &len), ASYNC_EAGAIN);
    cr_assert_eq(write(async_ipc_pipe_fd(b), "def", 3), 3);
    cr_assert_eq(poll(&pfd, 1, 5000), 1);
    cr_assert_eq(async_ipc_pipe_tryrecv(a, buf, sizeof buf, &len), 0);
    cr_assert(len == 6 && memcmp(buf, "abcdef", 6) == 0);
    async_ipc_pipe_free(a);
    async_ipc_pipe_free(b);
}
