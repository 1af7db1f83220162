/* Round 12's hostile review of lib/ipc: what breaks when someone else waits
 * for our children (libev's default loop reaps every child that exits while
 * it runs; a SIGCHLD set to SIG_IGN reaps them in the kernel), and the
 * other attacks of the round.  Each test failed on main before its fix, as
 * its comment says. */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "async.h"
#include "async/ipc.h"
#include "async/process.h"
#include "support/alloc.h"

/* ThreadSanitizer models one process: it cannot follow a futex another
 * process changed. */
#if defined(__SANITIZE_THREAD__)
#define SKIP_UNDER_TSAN() cr_skip_test("process-shared futexes are outside ThreadSanitizer's model")
#else
#define SKIP_UNDER_TSAN() ((void)0)
#endif

/* Generous bounds: they only turn a wedge into a failure instead of a hang. */
#define WEDGE_NS ASYNC_SEC(20)

#define ARGV(...) ((const char *const[]){__VA_ARGS__, NULL})

/* True once pid is no longer a child this process can wait for: it ended
 * and another waiter reaped it. */
static bool reaped_elsewhere(pid_t pid)
{
    siginfo_t si;
    return waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0 && errno == ECHILD;
}

static int exit_7(void *arg)
{
    (void)arg;
    return 7;
}

/* --- a child reaped by the default loop ------------------------------------- */

typedef struct reaped_ctx {
    async_process_t *p;
    bool elsewhere;
    int join, status, code, sig, kill;
} reaped_ctx_t;

/* Runs on the default loop: lets the loop turn (its SIGCHLD watcher reaps
 * the child), then joins. */
static int join_after_the_loop_reaped(void *arg, void **result)
{
    (void)result;
    reaped_ctx_t *c = arg;
    int64_t until = async_now() + WEDGE_NS;
    while (!(c->elsewhere = reaped_elsewhere(async_process_pid(c->p))) && async_now() < until)
        async_sleep(ASYNC_MSEC(5));
    c->join = async_process_join_dl(c->p, async_now() + WEDGE_NS);
    c->status = async_process_status(c->p, &c->code, &c->sig);
    c->kill = async_process_kill(c->p);
    return 0;
}

/* On main, join returned -ECHILD, status said ASYNC_EAGAIN for good (the
 * exit code was lost), and kill and free signalled a pid that was no longer
 * the child's and may belong to a stranger. */
Test(round12_ipc, a_child_reaped_by_the_default_loop_keeps_its_status, .timeout = 60)
{
    reaped_ctx_t c = {0};
    /* The loop first: its SIGCHLD handler must be there when the child
     * ends, or it never hears of it. */
    async_loop_t *loop;
    cr_assert_eq(async_loop_default(&loop), 0);
    cr_assert_eq(async_process_spawn(&c.p, exit_7, NULL), 0);
    cr_assert_eq(async_task_spawn(NULL, loop, join_after_the_loop_reaped, &c, NULL), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert(c.elsewhere, "the default loop never reaped the child: nothing was tested");
    cr_assert_eq(c.join, 0, "join: %s", async_errname(c.join));
    cr_assert_eq(c.status, 0, "status: %s", async_errname(c.status));
    cr_assert_eq(c.code, 7);
    cr_assert_eq(c.sig, 0);
    cr_assert_eq(c.kill, ASYNC_EDONE, "kill of a reaped child: %s", async_errname(c.kill));
    cr_assert_not(async_process_is_alive(c.p));
    async_process_free(c.p);
    cr_assert_eq(async_loop_destroy(loop), 0);
}

/* With SIGCHLD ignored the kernel reaps every child as it ends.  On main,
 * kill then sent SIGKILL to the dead child's pid (-ESRCH here, a stranger
 * once the pid is reused), and status never became known. */
Test(round12_ipc, a_child_reaped_by_the_kernel_is_not_signalled, .timeout = 60)
{
    struct sigaction ign = {.sa_handler = SIG_IGN}, old;
    cr_assert_eq(sigaction(SIGCHLD, &ign, &old), 0);
    async_process_t *p;
    cr_assert_eq(async_process_spawn(&p, exit_7, NULL), 0);
    int64_t until = async_now() + WEDGE_NS;
    while (!reaped_elsewhere(async_process_pid(p)) && async_now() < until) usleep(1000);
    cr_assert(reaped_elsewhere(async_process_pid(p)), "the child never ended");
    cr_assert_eq(async_process_kill(p), ASYNC_EDONE);
    cr_assert_eq(async_process_terminate(p), ASYNC_EDONE);
    cr_assert_eq(async_process_join_dl(p, async_now() + WEDGE_NS), 0);
    int code = -1, sig = -1;
    int st = async_process_status(p, &code, &sig);
    /* Linux 6.15+ keeps the status in the pidfd; before that it is lost,
     * and status says so instead of claiming an exit code. */
    cr_assert(st == 0 || st == ASYNC_ECHILD, "status: %s", async_errname(st));
    if (st == 0) cr_assert(code == 7 && sig == 0, "code %d signal %d", code, sig);
    async_process_free(p);
    sigaction(SIGCHLD, &old, NULL);
}

/* --- commands reaped by the default loop ------------------------------------ */

typedef struct cmds_ctx {
    int rc;
    bool done;
    async_command_result_t res[5];
} cmds_ctx_t;

/* Keeps the loop turning while the commands run, so that its SIGCHLD
 * watcher gets to reap them. */
static int tick(void *arg, void **result)
{
    (void)result;
    cmds_ctx_t *c = arg;
    while (!c->done) async_sleep(ASYNC_MSEC(1));
    return 0;
}

static int run_cmds(void *arg, void **result)
{
    (void)result;
    cmds_ctx_t *c = arg;
    /* Their output is closed first, so that only their exit is left to see. */
    async_command_t cmds[] = {
        {ARGV("sh", "-c", "exec >&- 2>&-; exit 3"), NULL},
        {ARGV("sh", "-c", "exec >&- 2>&-; sleep 0.1; exit 4"), NULL},
        {ARGV("sh", "-c", "exec >&- 2>&-; exit 0"), NULL},
        {ARGV("sh", "-c", "exec >&- 2>&-; kill -9 $$"), NULL},
        {ARGV("sh", "-c", "echo out; exec >&- 2>&-; sleep 0.3; exit 5"), NULL},
    };
    c->rc = async_process_run_commands_dl(cmds, 5, 5, c->res, async_now() + WEDGE_NS);
    c->done = true;
    return 0;
}

/* On main the run never saw those exits (waitpid said ECHILD for good): it
 * spun on the pidfds, readable for ever, at full CPU until the deadline (for
 * ever without one), then reported every command as timed out with exit
 * code 0. */
Test(round12_ipc, commands_reaped_by_the_default_loop_keep_their_status, .timeout = 90)
{
    cmds_ctx_t c = {0};
    async_loop_t *loop;
    cr_assert_eq(async_loop_default(&loop), 0);
    cr_assert_eq(async_task_spawn(NULL, loop, tick, &c, NULL), 0);
    cr_assert_eq(async_task_spawn(NULL, loop, run_cmds, &c, NULL), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(c.rc, ASYNC_ECHILD, "run: %s (ETIMEDOUT: the exits were never seen)",
                 async_errname(c.rc));
    int codes[] = {3, 4, 0, -1, 5}, sigs[] = {0, 0, 0, SIGKILL, 0};
    for (int i = 0; i < 5; i++) {
        cr_expect_eq(c.res[i].error, 0, "command %d: %s", i, async_errname(c.res[i].error));
        cr_expect_eq(c.res[i].exit_code, codes[i], "command %d: exit %d", i, c.res[i].exit_code);
        cr_expect_eq(c.res[i].signal, sigs[i], "command %d: signal %d", i, c.res[i].signal);
        async_command_result_clear(&c.res[i]);
    }
    cr_assert_eq(async_loop_destroy(loop), 0);
}

/* --- a waker killed between its change and its wake-up call ------------------ */

/* The queue's test hook (lib/ipc/ipc_internal.h): 3 get after its commit,
 * under the lock; 4 put after its commit, before it wakes getters; 5 close
 * after closing, before it wakes anyone. */
extern void (*async__ipc_queue_hook)(int where);

static int die_where;

static void die_here(int where)
{
    if (where == die_where) raise(SIGKILL);
}

typedef struct waker {
    async_ipc_queue_t *q;
    int where; /* 3: get, 4: put, 5: close */
} waker_t;

static int killed_waker(void *arg)
{
    waker_t *w = arg;
    die_where = w->where;
    async__ipc_queue_hook = die_here;
    char buf[8];
    size_t len;
    if (w->where == 3) async_ipc_queue_get(w->q, buf, sizeof buf, &len);
    else if (w->where == 4) async_ipc_queue_put(w->q, "X", 1);
    else async_ipc_queue_close(w->q);
    return 0; /* not reached: the hook kills it */
}

/* A sleeper: a get (or a put, on a full queue) with a generous deadline,
 * from the thread or from a task; it exits with sleeper_code's code. */
typedef struct sleeper {
    async_ipc_queue_t *q;
    bool put, in_task;
    int err;
} sleeper_t;

static int sleeper_code(int err)
{
    switch (err) {
    case 0: return 0;
    case ASYNC_EEOF: return 1;
    case ASYNC_ECLOSED: return 2;
    case ASYNC_ETIMEDOUT: return 3;
    default: return 4;
    }
}

static int sleeper_op(sleeper_t *s)
{
    char buf[8];
    size_t len;
    int64_t dl = async_now() + ASYNC_SEC(15);
    int err = s->put ? async_ipc_queue_put_dl(s->q, "Y", 1, dl)
                     : async_ipc_queue_get_dl(s->q, buf, sizeof buf, &len, dl);
    /* Done, but only at the deadline: it slept through the change and found
     * it in its last look. */
    return err != ASYNC_ETIMEDOUT && async_now() >= dl ? ASYNC_ETIMEDOUT : err;
}

static int sleeper_task(void *arg, void **result)
{
    (void)result;
    sleeper_t *s = arg;
    s->err = sleeper_op(s);
    return 0;
}

static int sleeper(void *arg)
{
    sleeper_t *s = arg;
    if (!s->in_task) return sleeper_code(sleeper_op(s));
    async_loop_t *loop;
    if (async_loop_new(&loop)) return 5;
    if (async_task_spawn(NULL, loop, sleeper_task, s, NULL)) return 5;
    async_loop_run(loop, ASYNC_RUN_DEFAULT);
    async_loop_destroy(loop);
    return sleeper_code(s->err);
}

/* Waits until the process sleeps in the kernel (state S), for the sleepers
 * above: in their futex wait or their loop's epoll. */
static void wait_asleep(async_process_t *p)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", async_process_pid(p));
    for (int i = 0; i < 4000; i++) {
        FILE *f = fopen(path, "r");
        cr_assert_not_null(f);
        char buf[512];
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = '\0';
        const char *close_paren = strrchr(buf, ')');
        if (close_paren && close_paren[1] == ' ' && close_paren[2] == 'S') return;
        usleep(5000);
    }
    cr_assert_fail("the sleeper never went to sleep");
}

static int join_code(async_process_t *p)
{
    cr_assert_eq(async_process_join_dl(p, async_now() + WEDGE_NS), 0, "a child wedged");
    int code = -1, sig = 0;
    cr_assert_eq(async_process_status(p, &code, &sig), 0);
    async_process_free(p);
    return sig ? 128 + sig : code;
}

/* A sleeper waits; a waker dies at `where`, after its change and before its
 * wake-up call; the sleeper must see the change (exit `want`) long before
 * its own 15 s deadline.  On main it slept through to that deadline
 * (exit 3, ASYNC_ETIMEDOUT; for ever without a deadline): nobody was left
 * to wake it. */
static void waker_dies(async_ipc_queue_t *q, bool put, bool in_task, int where, int want)
{
    sleeper_t s = {q, put, in_task, 0};
    async_process_t *sl, *wk;
    cr_assert_eq(async_process_spawn(&sl, sleeper, &s), 0);
    wait_asleep(sl);
    waker_t w = {q, where};
    cr_assert_eq(async_process_spawn(&wk, killed_waker, &w), 0);
    cr_assert_eq(join_code(wk), 128 + SIGKILL, "the waker was not killed at its hook");
    int code = join_code(sl);
    cr_assert_eq(code, want, "%s sleeper (%s) ended %d (3: it slept to its 15 s deadline)",
                 in_task ? "a task" : "a thread", put ? "put" : "get", code);
}

Test(round12_ipc, a_producer_killed_before_its_wake_up_wedges_no_getter, .timeout = 120)
{
    SKIP_UNDER_TSAN();
    for (int in_task = 0; in_task < 2; in_task++) {
        async_ipc_queue_t *q;
        cr_assert_eq(async_ipc_queue_new(&q, 4, 8, 0), 0);
        waker_dies(q, false, in_task, 4, 0);
        cr_assert_eq(async_ipc_queue_len(q), 0, "the getter got the message");
        async_ipc_queue_free(q);
    }
}

Test(round12_ipc, a_consumer_killed_before_its_wake_up_wedges_no_putter, .timeout = 120)
{
    SKIP_UNDER_TSAN();
    for (int in_task = 0; in_task < 2; in_task++) {
        async_ipc_queue_t *q;
        cr_assert_eq(async_ipc_queue_new(&q, 1, 8, 0), 0);
        cr_assert_eq(async_ipc_queue_put(q, "A", 1), 0); /* full */
        waker_dies(q, true, in_task, 3, 0);
        char buf[8];
        size_t len;
        cr_assert_eq(async_ipc_queue_tryget(q, buf, sizeof buf, &len), 0);
        cr_assert(len == 1 && buf[0] == 'Y', "the putter's message is the one left");
        async_ipc_queue_free(q);
    }
}

Test(round12_ipc, a_closer_killed_before_its_wake_up_wedges_nobody, .timeout = 120)
{
    SKIP_UNDER_TSAN();
    for (int in_task = 0; in_task < 2; in_task++) {
        async_ipc_queue_t *q;
        cr_assert_eq(async_ipc_queue_new(&q, 1, 8, 0), 0);
        waker_dies(q, false, in_task, 5, 1); /* empty: the getter sees the end */
        cr_assert_eq(async_ipc_queue_close(q), ASYNC_EALREADY, "the dead closer closed it");
        async_ipc_queue_free(q);
        cr_assert_eq(async_ipc_queue_new(&q, 1, 8, 0), 0);
        cr_assert_eq(async_ipc_queue_put(q, "A", 1), 0); /* full: the putter fails */
        waker_dies(q, true, in_task, 5, 2);
        async_ipc_queue_free(q);
    }
}

/* --- a pipe whose second end cannot be allocated ------------------------------ */

/* On main the failed call left *a pointing at the end it had just freed:
 * a caller that frees both ends after a failure (they started NULL, as
 * after every other failing call) freed it twice. */
Test(round12_ipc, a_failed_pipe_leaves_no_freed_end_behind, .timeout = 10)
{
    test_alloc_install();
    long live = test_alloc_live();
    for (int n = 0; n < 2; n++) {
        async_ipc_pipe_t *a = NULL, *b = NULL;
        test_alloc_fail_after(n);
        cr_assert_eq(async_ipc_pipe_new(&a, &b, 0), ASYNC_ENOMEM, "allocation %d failed", n);
        test_alloc_fail_after(-1);
        cr_assert_null(a, "allocation %d failed: *a was left at freed memory", n);
        cr_assert_null(b);
        async_ipc_pipe_free(a);
        async_ipc_pipe_free(b);
    }
    cr_assert_eq(test_alloc_live(), live);
    test_alloc_uninstall();
}

/* --- a failed dictionary call ------------------------------------------------- */

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

/* The table's pages are touched only as keys land in them (ipc.h).  On
 * main a failed increment or update rolled back by reading every version of
 * the table, which brought all of it into memory: here about 36 MB for one
 * failed call (1.1 GB at capacity 2^18), all under the lock. */
Test(round12_ipc, a_failed_dict_call_touches_no_page_of_the_table, .timeout = 60)
{
    async_shared_dict_t *d;
    cr_assert_eq(async_shared_dict_new(&d, 1 << 13, 40, 1024), 0);
    long before = shmem_kb();
    cr_assert_eq(async_shared_dict_set(d, "three", "abc", 3), 0);
    int64_t big = INT64_MAX;
    cr_assert_eq(async_shared_dict_set(d, "big", &big, sizeof big), 0);
    int64_t out = 0;
    cr_assert_eq(async_shared_dict_increment(d, "three", 1, &out), ASYNC_EINVAL, "not 8 bytes");
    cr_assert_eq(async_shared_dict_increment(d, "big", 1, &out), ASYNC_EINVAL, "overflow");
    long grown = shmem_kb() - before;
    /* Two keys land in two or four pages; the table is over 30 MB. */
    cr_assert_lt(grown, 1024, "failed calls brought %ld kB of the table into memory", grown);
    size_t len = 0;
    cr_assert_eq(async_shared_dict_get(d, "big", &out, sizeof out, &len), 0);
    cr_assert(len == sizeof out && out == INT64_MAX, "the overflowing increment changed it");
    cr_assert_eq(async_shared_dict_len(d), 2);
    async_shared_dict_free(d);
}

static int sum_values(const char *key, const void *value, size_t len, void *arg)
{
    (void)key;
    int64_t v;
    if (len != sizeof v) return 1;
    memcpy(&v, value, sizeof v);
    *(int64_t *)arg += v;
    return 0;
}

/* The rollback that replaced the scrub undoes only the items a failed
 * update wrote: on a crowded table (64 keys' room, 128 slots, so probe
 * chains cross), changes of present keys, a duplicate and new keys up to
 * the one that does not fit all vanish, and everything else stays. */
Test(round12_ipc, a_failed_update_rolls_back_exactly_its_own_items, .timeout = 60)
{
    async_shared_dict_t *d;
    cr_assert_eq(async_shared_dict_new(&d, 64, 16, 8), 0);
    char keys[80][16];
    int64_t vals[80];
    for (int i = 0; i < 80; i++) {
        snprintf(keys[i], sizeof keys[i], "%s%d", i < 60 ? "k" : "n", i);
        vals[i] = i;
    }
    for (int i = 0; i < 60; i++) cr_assert_eq(async_shared_dict_set(d, keys[i], &vals[i], 8), 0);
    int64_t changed = 1000;
    for (int round = 0; round < 200; round++) {
        /* Three present keys changed, one twice, then new keys, the first
         * of them twice (its second write comes after new keys whose probe
         * chains may cross its slot): the fifth new one finds the
         * dictionary full (60 + 4 = 64). */
        async_shared_dict_item_t it[16];
        size_t n = 0;
        for (int k = 0; k < 3; k++) it[n++] = (async_shared_dict_item_t){keys[(round * 7 + k * 13) % 60], &changed, 8};
        it[n++] = it[0];
        for (int k = 0; k < 3; k++) it[n++] = (async_shared_dict_item_t){keys[60 + (round + k) % 20], &changed, 8};
        it[n++] = it[4];
        for (int k = 3; k < 8; k++) it[n++] = (async_shared_dict_item_t){keys[60 + (round + k) % 20], &changed, 8};
        cr_assert_eq(async_shared_dict_update(d, it, n), ASYNC_EFULL, "round %d", round);
        cr_assert_eq(async_shared_dict_len(d), 60, "round %d", round);
        for (int i = 0; i < 80; i++) {
            int64_t v = -1;
            size_t len = 0;
            int err = async_shared_dict_get(d, keys[i], &v, sizeof v, &len);
            if (i < 60) cr_assert(err == 0 && v == i, "round %d: %s is %s, %lld", round, keys[i],
                                  async_errname(err), (long long)v);
            else cr_assert_eq(err, ASYNC_ENOENT, "round %d: %s was left behind", round, keys[i]);
        }
    }
    int64_t sum = 0;
    cr_assert_eq(async_shared_dict_items(d, sum_values, &sum), 0);
    cr_assert_eq(sum, 59 * 60 / 2);
    /* Room made, the same kind of update goes through whole. */
    for (int i = 0; i < 8; i++) cr_assert_eq(async_shared_dict_delete(d, keys[i]), 0);
    async_shared_dict_item_t it[12];
    for (int k = 0; k < 12; k++) it[k] = (async_shared_dict_item_t){keys[60 + k], &vals[60 + k], 8};
    cr_assert_eq(async_shared_dict_update(d, it, 12), 0);
    cr_assert_eq(async_shared_dict_len(d), 64);
    sum = 0;
    cr_assert_eq(async_shared_dict_items(d, sum_values, &sum), 0);
    int64_t want = 0;
    for (int i = 8; i < 72; i++) want += i;
    cr_assert_eq(sum, want);
    async_shared_dict_free(d);
}

/* --- a barrier's tripping party killed as it trips ---------------------------- */

/* The barrier's test hook (lib/ipc/ipc_internal.h): 1 in the party that
 * trips a generation, after its trip is stored, before its wake-up call
 * (round 12's layout stored the generation and then the count, with this
 * hook between them; round 13's makes a trip one store, and
 * round13_ipc::a_party_killed_at_each_step_leaves_the_barrier_whole kills a
 * party at each of its steps). */
extern void (*async__ipc_barrier_hook)(int where);

static void die_tripping(int where)
{
    if (where == 1) raise(SIGKILL);
}

static int barrier_party(void *arg)
{
    int64_t dl = async_now() + ASYNC_SEC(15);
    int err = async_ipc_barrier_wait_dl(arg, NULL, dl);
    if (err == 0 && async_now() >= dl) return 3; /* only at its deadline */
    return err == 0 ? 0 : err == ASYNC_ETIMEDOUT ? 3 : err == ASYNC_ECLOSED ? 2 : 4;
}

static int tripping_party(void *arg)
{
    async__ipc_barrier_hook = die_tripping;
    return barrier_party(arg);
}

/* On main the tripping party zeroed the count before it bumped the
 * generation: killed between the two, it left the generation's waiter
 * asleep with nobody counted, to be released only by two more arrivals; a
 * fixed group never makes them, and the waiter timed out and broke the
 * barrier.  Now the waiter is released and the next generation trips. */
Test(round12_ipc, a_party_killed_as_it_trips_the_barrier_wedges_nobody, .timeout = 120)
{
    SKIP_UNDER_TSAN();
    async_ipc_barrier_t *b;
    cr_assert_eq(async_ipc_barrier_new(&b, 2), 0);
    for (int round = 0; round < 3; round++) {
        async_process_t *waiter, *tripper;
        cr_assert_eq(async_process_spawn(&waiter, barrier_party, b), 0);
        wait_asleep(waiter);
        cr_assert_eq(async_process_spawn(&tripper, tripping_party, b), 0);
        cr_assert_eq(join_code(tripper), 128 + SIGKILL, "the tripper did not die at its hook");
        int code = join_code(waiter);
        cr_assert_eq(code, 0, "round %d: the waiter ended %d (3: it slept to its deadline)",
                     round, code);
        async_process_t *x, *y;
        cr_assert_eq(async_process_spawn(&x, barrier_party, b), 0);
        wait_asleep(x);
        cr_assert_eq(async_process_spawn(&y, barrier_party, b), 0);
        int cx = join_code(x), cy = join_code(y);
        cr_assert(cx == 0 && cy == 0, "round %d: the next generation ended %d and %d", round,
                  cx, cy);
    }
    cr_assert_not(async_ipc_barrier_broken(b));
    async_ipc_barrier_free(b);
}

/* The same rollback against a model: sets, deletes and updates of up to 8
 * random keys (duplicates included) on small dictionaries, made afresh every
 * 40 operations so that their slots are still free (a rollback that frees a
 * slot too early cuts the probe chains behind it, and leaves versions there
 * that the next commit publishes).  A first version of the rollback, which
 * undid items last first by looking each key up, left such versions behind
 * 64 times in this run. */
typedef struct model {
    int64_t val[24];
    bool present[24];
    int seen, bad;
} model_t;

static int check_item(const char *key, const void *value, size_t len, void *arg)
{
    model_t *m = arg;
    int i = atoi(key + 1);
    int64_t v;
    memcpy(&v, value, sizeof v);
    if (len != sizeof v || i < 0 || i >= 24 || !m->present[i] || m->val[i] != v) m->bad++;
    m->seen++;
    return 0;
}

static int model_count(const model_t *m)
{
    int n = 0;
    for (int i = 0; i < 24; i++) n += m->present[i];
    return n;
}

Test(round12_ipc, failed_updates_match_a_model, .timeout = 120)
{
    char keys[24][8];
    for (int i = 0; i < 24; i++) snprintf(keys[i], sizeof keys[i], "k%d", i);
    unsigned seed = 12345;
    model_t m = {0};
    async_shared_dict_t *d = NULL;
    int failed = 0;
    for (int64_t op = 0; op < 100000; op++) {
        if (op % 40 == 0) {
            async_shared_dict_free(d);
            cr_assert_eq(async_shared_dict_new(&d, 8, 8, 8), 0);
            memset(&m, 0, sizeof m);
        }
        int r = rand_r(&seed) % 10;
        if (r < 1) {
            int i = rand_r(&seed) % 24;
            int err = async_shared_dict_set(d, keys[i], &op, sizeof op);
            bool room = m.present[i] || model_count(&m) < 8;
            cr_assert_eq(err, room ? 0 : ASYNC_EFULL, "op %lld: set", (long long)op);
            if (!err) m.present[i] = true, m.val[i] = op;
        } else if (r < 5) {
            int i = rand_r(&seed) % 24;
            int err = async_shared_dict_delete(d, keys[i]);
            cr_assert_eq(err, m.present[i] ? 0 : ASYNC_ENOENT, "op %lld: delete", (long long)op);
            m.present[i] = false;
        } else {
            async_shared_dict_item_t it[8];
            int64_t vals[8];
            model_t after = m;
            bool full = false;
            int n = 1 + rand_r(&seed) % 8;
            for (int k = 0; k < n; k++) {
                int i = rand_r(&seed) % 24;
                vals[k] = op * 10 + k;
                it[k] = (async_shared_dict_item_t){keys[i], &vals[k], sizeof vals[k]};
                if (!after.present[i] && model_count(&after) >= 8) full = true;
                after.present[i] = true;
                after.val[i] = vals[k];
            }
            int err = async_shared_dict_update(d, it, (size_t)n);
            cr_assert_eq(err, full ? ASYNC_EFULL : 0, "op %lld: update", (long long)op);
            if (!err) m = after;
            else failed++;
        }
        m.seen = m.bad = 0;
        cr_assert_eq(async_shared_dict_items(d, check_item, &m), 0);
        cr_assert(m.bad == 0 && m.seen == model_count(&m) &&
                      async_shared_dict_len(d) == (size_t)m.seen,
                  "op %lld: %d keys wrong, %d seen, %d in the model, len %zu", (long long)op,
                  m.bad, m.seen, model_count(&m), async_shared_dict_len(d));
    }
    cr_assert_gt(failed, 1000, "only %d updates failed: the rollback was hardly tried", failed);
    async_shared_dict_free(d);
}
