/* The IPC objects (lib/ipc) when a party dies or a call fails midway, each
 * shown by killing a process at a chosen point (the test hooks of
 * lib/ipc/ipc_internal.h, support/proc.h's test_die_here) or by failing an
 * allocation: a queue's waker killed between its change and its wake-up
 * call, a pipe whose second end cannot be allocated, a failed dictionary
 * call or update (against a model), the dictionary's repair after a dead
 * writer, a barrier's party killed as it trips and at each step of a reset,
 * a barrier waiter carried into the next generation, a pipe end's
 * descriptor that hid unread messages.  Each test says what it showed
 * before its fix.  tests/test-ipc-kills.c checks the dictionary and the
 * queue against models under kills anywhere. */
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
#include "support/alloc.h"
#include "support/proc.h"

/* ThreadSanitizer models one process: it cannot follow a futex or a mutex
 * another process changed. */
#if defined(__SANITIZE_THREAD__)
#define SKIP_UNDER_TSAN() cr_skip_test("process-shared futexes are outside ThreadSanitizer's model")
#else
#define SKIP_UNDER_TSAN() ((void)0)
#endif

/* Generous bounds: they only turn a wedge into a failure instead of a hang. */
#define WEDGE_NS ASYNC_SEC(20)

/* The dictionary's test hook (lib/ipc/ipc_internal.h). */
extern void (*async__ipc_dict_hook)(int where);

/* --- a waker killed between its change and its wake-up call ------------------ */

/* The queue's test hook (lib/ipc/ipc_internal.h): 3 get after its commit,
 * under the lock; 4 put after its commit, before it wakes getters; 5 close
 * after closing, before it wakes anyone. */
extern void (*async__ipc_queue_hook)(int where);

typedef struct waker {
    async_ipc_queue_t *q;
    int where; /* 3: get, 4: put, 5: close */
} waker_t;

static int killed_waker(void *arg)
{
    waker_t *w = arg;
    test_die_where = w->where;
    async__ipc_queue_hook = test_die_here;
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
    test_proc_wait_asleep(sl);
    waker_t w = {q, where};
    cr_assert_eq(async_process_spawn(&wk, killed_waker, &w), 0);
    cr_assert_eq(test_proc_exit(wk, WEDGE_NS), 128 + SIGKILL, "the waker was not killed at its hook");
    int code = test_proc_exit(sl, WEDGE_NS);
    cr_assert_eq(code, want, "%s sleeper (%s) ended %d (3: it slept to its 15 s deadline)",
                 in_task ? "a task" : "a thread", put ? "put" : "get", code);
}

Test(ipc_recovery, a_producer_killed_before_its_wake_up_wedges_no_getter, .timeout = 120)
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

Test(ipc_recovery, a_consumer_killed_before_its_wake_up_wedges_no_putter, .timeout = 120)
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

Test(ipc_recovery, a_closer_killed_before_its_wake_up_wedges_nobody, .timeout = 120)
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
Test(ipc_recovery, a_failed_pipe_leaves_no_freed_end_behind, .timeout = 10)
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

/* The table's pages are touched only as keys land in them (ipc.h).  On
 * main a failed increment or update rolled back by reading every version of
 * the table, which brought all of it into memory: here about 36 MB for one
 * failed call (1.1 GB at capacity 2^18), all under the lock. */
Test(ipc_recovery, a_failed_dict_call_touches_no_page_of_the_table, .timeout = 60)
{
    async_shared_dict_t *d;
    cr_assert_eq(async_shared_dict_new(&d, 1 << 13, 40, 1024), 0);
    long before = test_shmem_kb();
    cr_assert_eq(async_shared_dict_set(d, "three", "abc", 3), 0);
    int64_t big = INT64_MAX;
    cr_assert_eq(async_shared_dict_set(d, "big", &big, sizeof big), 0);
    int64_t out = 0;
    cr_assert_eq(async_shared_dict_increment(d, "three", 1, &out), ASYNC_EINVAL, "not 8 bytes");
    cr_assert_eq(async_shared_dict_increment(d, "big", 1, &out), ASYNC_EINVAL, "overflow");
    long grown = test_shmem_kb() - before;
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
Test(ipc_recovery, a_failed_update_rolls_back_exactly_its_own_items, .timeout = 60)
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
 * ipc_recovery::a_party_killed_at_each_step_leaves_the_barrier_whole kills a
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
Test(ipc_recovery, a_party_killed_as_it_trips_the_barrier_wedges_nobody, .timeout = 120)
{
    SKIP_UNDER_TSAN();
    async_ipc_barrier_t *b;
    cr_assert_eq(async_ipc_barrier_new(&b, 2), 0);
    for (int round = 0; round < 3; round++) {
        async_process_t *waiter, *tripper;
        cr_assert_eq(async_process_spawn(&waiter, barrier_party, b), 0);
        test_proc_wait_asleep(waiter);
        cr_assert_eq(async_process_spawn(&tripper, tripping_party, b), 0);
        cr_assert_eq(test_proc_exit(tripper, WEDGE_NS), 128 + SIGKILL, "the tripper did not die at its hook");
        int code = test_proc_exit(waiter, WEDGE_NS);
        cr_assert_eq(code, 0, "round %d: the waiter ended %d (3: it slept to its deadline)",
                     round, code);
        async_process_t *x, *y;
        cr_assert_eq(async_process_spawn(&x, barrier_party, b), 0);
        test_proc_wait_asleep(x);
        cr_assert_eq(async_process_spawn(&y, barrier_party, b), 0);
        int cx = test_proc_exit(x, WEDGE_NS), cy = test_proc_exit(y, WEDGE_NS);
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

Test(ipc_recovery, failed_updates_match_a_model, .timeout = 120)
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

/* --- the dictionary's repair after a dead writer ----------------------------- */

static int killed_update(void *arg)
{
    async_shared_dict_t *d = arg;
    test_die_where = 2;
    async__ipc_dict_hook = test_die_here;
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
Test(ipc_recovery, the_repair_after_a_dead_writer_touches_only_what_it_wrote, .timeout = 60)
{
    async_shared_dict_t *d;
    cr_assert_eq(async_shared_dict_new(&d, 1 << 13, 40, 1024), 0);
    cr_assert_eq(async_shared_dict_set(d, "three", "abc", 3), 0);
    cr_assert_eq(async_shared_dict_set(d, "one", "a", 1), 0);
    async_process_t *p;
    cr_assert_eq(async_process_spawn(&p, killed_update, d), 0);
    cr_assert_eq(test_proc_exit(p, WEDGE_NS), 128 + SIGKILL, "the writer did not die at its hook");
    long before = test_shmem_kb();
    char buf[1024];
    size_t len = 0;
    /* The first call after the death takes the lock with EOWNERDEAD and
     * repairs. */
    cr_assert_eq(async_shared_dict_get(d, "three", buf, sizeof buf, &len), 0);
    long grown = test_shmem_kb() - before;
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
    test_die_where = k->where;
    async__ipc_barrier_hook = test_die_here;
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
    cr_assert(test_proc_asleep(x), "%s: the next generation tripped at its first arrival (exit %d)", after,
              test_proc_exit(x, WEDGE_NS));
    async_process_t *y = spawn_party(b);
    cr_assert(test_proc_asleep(y), "%s: the next generation tripped at its second arrival (exit %d)", after,
              test_proc_exit(y, WEDGE_NS));
    cr_assert(test_proc_asleep(x), "%s: the first arrival left at the second (exit %d)", after, test_proc_exit(x, WEDGE_NS));
    async_process_t *z = spawn_party(b);
    int cz = test_proc_exit(z, WEDGE_NS), cx = test_proc_exit(x, WEDGE_NS), cy = test_proc_exit(y, WEDGE_NS);
    cr_assert(cx == 0 && cy == 0 && cz == 0, "%s: the next generation ended %d, %d and %d",
              after, cx, cy, cz);
}

/* Two parties wait (or one, for step 7), and a third process dies at step
 * `where`. */
static void kill_at(async_ipc_barrier_t *b, int where, async_process_t *waiters[2])
{
    for (int i = 0; i < (where == 7 ? 1 : 2); i++) {
        waiters[i] = spawn_party(b);
        cr_assert(test_proc_asleep(waiters[i]), "step %d: waiter %d did not wait", where, i);
    }
    killer_t k = {b, where};
    async_process_t *p;
    cr_assert_eq(async_process_spawn(&p, killed_party, &k), 0);
    cr_assert_eq(test_proc_exit(p, WEDGE_NS), 128 + SIGKILL, "step %d: the party did not die at its hook", where);
}

/* The step was not done: both waiters wait on, and the third arrival
 * trips their generation normally. */
static void not_done(async_ipc_barrier_t *b, int where, async_process_t *w[2])
{
    for (int i = 0; i < 2; i++)
        cr_assert(test_proc_asleep(w[i]), "step %d: waiter %d left (exit %d)", where, i, test_proc_exit(w[i], WEDGE_NS));
    async_process_t *z = spawn_party(b);
    int cz = test_proc_exit(z, WEDGE_NS), c0 = test_proc_exit(w[0], WEDGE_NS), c1 = test_proc_exit(w[1], WEDGE_NS);
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
Test(ipc_recovery, a_party_killed_at_each_step_leaves_the_barrier_whole, .timeout = 240)
{
    SKIP_UNDER_TSAN();
    async_ipc_barrier_t *b;
    cr_assert_eq(async_ipc_barrier_new(&b, 3), 0);
    async_process_t *w[2];

    /* 1: a trip stored, its party killed before the wake-up call: the
     * waiters are released (a re-check later at most). */
    kill_at(b, 1, w);
    cr_assert_eq(test_proc_exit(w[0], WEDGE_NS), 0, "step 1");
    cr_assert_eq(test_proc_exit(w[1], WEDGE_NS), 0, "step 1");
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
    cr_assert_eq(test_proc_exit(w[0], WEDGE_NS), 2, "step 4: a waiter of the reset generation");
    cr_assert_eq(test_proc_exit(w[1], WEDGE_NS), 2, "step 4: a waiter of the reset generation");
    cr_assert_not(async_ipc_barrier_broken(b));
    next_generation_trips_at_three(b, "step 4");

    /* 6: an abort stored: broken until a reset. */
    kill_at(b, 6, w);
    cr_assert_eq(test_proc_exit(w[0], WEDGE_NS), 2, "step 6");
    cr_assert_eq(test_proc_exit(w[1], WEDGE_NS), 2, "step 6");
    cr_assert(async_ipc_barrier_broken(b));
    cr_assert_eq(async_ipc_barrier_wait_dl(b, NULL, 0), ASYNC_ECLOSED);
    async_ipc_barrier_reset(b);
    cr_assert_not(async_ipc_barrier_broken(b));
    next_generation_trips_at_three(b, "step 6");

    /* 7: an arrival counted, killed before it sleeps: it counts, so one
     * more live arrival trips its generation. */
    kill_at(b, 7, w);
    cr_assert(test_proc_asleep(w[0]), "step 7: the dead arrival released the waiter");
    async_process_t *z = spawn_party(b);
    cr_assert_eq(test_proc_exit(z, WEDGE_NS), 0, "step 7");
    cr_assert_eq(test_proc_exit(w[0], WEDGE_NS), 0, "step 7");
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
Test(ipc_recovery, a_waiter_of_an_aborted_generation_is_not_carried_into_the_next, .timeout = 60)
{
    SKIP_UNDER_TSAN();
    async_ipc_barrier_t *b;
    cr_assert_eq(async_ipc_barrier_new(&b, 3), 0);
    async_process_t *w = spawn_party(b);
    cr_assert(test_proc_asleep(w));
    pid_t pid = async_process_pid(w);
    cr_assert_gt(pid, 0); /* 0 or below would signal a process group, or every process */
    cr_assert_eq(kill(pid, SIGSTOP), 0);
    async_ipc_barrier_abort(b);
    async_ipc_barrier_reset(b);
    cr_assert_not(async_ipc_barrier_broken(b));
    cr_assert_eq(kill(pid, SIGCONT), 0);
    int code = test_proc_exit(w, WEDGE_NS);
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
Test(ipc_recovery, a_pipe_end_stays_readable_while_a_message_is_unread, .timeout = 60)
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
