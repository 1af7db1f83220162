/* The process-shared queue when its users die: a consumer or producer
 * SIGKILLed at a chosen instruction of its get or put (stopped there through
 * the queue's test hook, then killed), a lock holder killed while others wait
 * on it, and kill storms of producers and consumers while messages flow.
 * Afterwards the queue works; every message is got at most once; and every
 * message not in a dead process's hands is got. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "async.h"
#include "async/ipc.h"
#include "async/process.h"
#include "support/proc.h"
#include "support/storm.h"

/* The library's hook inside the queue's critical section (lib/ipc/ipc_internal.h):
 * 1 put before its commit, 2 get before its commit, 3 get after it. */
extern void (*async__ipc_queue_hook)(int where);

/* Generous: these deadlines only turn a wedge into a failure instead of a hang. */
#define WEDGE_NS ASYNC_SEC(10)

static int stop_where;

static void stop_here(int where)
{
    if (where == stop_where) raise(SIGSTOP);
}

typedef struct hooked {
    async_ipc_queue_t *q;
    int where;
} hooked_t;

static int hooked_op(void *arg)
{
    hooked_t *h = arg;
    stop_where = h->where;
    async__ipc_queue_hook = stop_here;
    char buf[16];
    size_t len;
    if (h->where == 1) return async_ipc_queue_put(h->q, "X", 1) ? 1 : 0;
    return async_ipc_queue_get(h->q, buf, sizeof buf, &len) ? 1 : 0;
}

/* Starts a child that stops itself at the hook point `where`, and waits
 * until it has stopped there (holding the queue's lock). */
static async_process_t *stopped_at(async_ipc_queue_t *q, int where)
{
    hooked_t h = {q, where}; /* the child has its own copy from the fork */
    async_process_t *p;
    cr_assert_eq(async_process_spawn(&p, hooked_op, &h), 0);
    siginfo_t si = {0};
    cr_assert_eq(waitid(P_PID, (id_t)async_process_pid(p), &si, WSTOPPED | WNOWAIT), 0);
    cr_assert_eq(si.si_code, CLD_STOPPED, "the child did not stop at the hook");
    return p;
}

/* A child stopped at `where`, killed there. */
static void kill_at(async_ipc_queue_t *q, int where)
{
    test_proc_kill(stopped_at(q, where), WEDGE_NS);
}

/* A new queue of cap slots of 8 bytes, holding one message a character of
 * items ("AB": "A" then "B"). */
static async_ipc_queue_t *queue_holding(size_t cap, unsigned flags, const char *items)
{
    async_ipc_queue_t *q;
    cr_assert_eq(async_ipc_queue_new(&q, cap, 8, flags), 0);
    for (const char *c = items; *c; c++) cr_assert_eq(async_ipc_queue_put(q, c, 1), 0);
    return q;
}

static void expect_get(async_ipc_queue_t *q, const char *want)
{
    char buf[16];
    size_t len = 0;
    int err = async_ipc_queue_get_dl(q, buf, sizeof buf, &len, async_now() + WEDGE_NS);
    cr_assert_eq(err, 0, "get: %s", async_strerror(err));
    cr_assert_eq(len, strlen(want));
    cr_assert_eq(memcmp(buf, want, len), 0);
}

/* The queue fills to capacity and drains, around the ring several times. */
static void expect_usable(async_ipc_queue_t *q)
{
    size_t cap = async_ipc_queue_capacity(q);
    for (int round = 0; round < 5; round++) {
        for (size_t i = 0; i < cap; i++)
            cr_assert_eq(async_ipc_queue_put_dl(q, "r", 1, async_now() + WEDGE_NS), 0);
        cr_assert_eq(async_ipc_queue_tryput(q, "r", 1), ASYNC_EAGAIN);
        cr_assert_eq(async_ipc_queue_len(q), cap);
        for (size_t i = 0; i < cap; i++) expect_get(q, "r");
        char buf[16];
        size_t len;
        cr_assert_eq(async_ipc_queue_tryget(q, buf, sizeof buf, &len), ASYNC_EAGAIN);
    }
}

/* The wedge: a consumer killed after it claimed a slot and before it
 * finished took the message with it and left len 0, tryput EFULL, and every
 * later put and get timing out. */
Test(ipc_queue_faults, consumer_killed_holding_a_claimed_slot_loses_nothing, .timeout = 60)
{
    async_ipc_queue_t *q = queue_holding(4, 0, "AB");
    kill_at(q, 2);
    /* It died before its get took effect: A is still there, first. */
    cr_assert_eq(async_ipc_queue_len(q), 2);
    expect_get(q, "A");
    expect_get(q, "B");
    expect_usable(q);
    async_ipc_queue_free(q);
}

Test(ipc_queue_faults, consumer_killed_after_its_get_loses_only_its_message, .timeout = 60)
{
    async_ipc_queue_t *q = queue_holding(4, 0, "AB");
    kill_at(q, 3);
    cr_assert_eq(async_ipc_queue_len(q), 1);
    expect_get(q, "B");
    expect_usable(q);
    async_ipc_queue_free(q);
}

Test(ipc_queue_faults, producer_killed_mid_put_leaves_no_trace, .timeout = 60)
{
    async_ipc_queue_t *q = queue_holding(2, ASYNC_IPC_QUEUE_JOINABLE, "A");
    kill_at(q, 1);
    cr_assert_eq(async_ipc_queue_len(q), 1);
    expect_get(q, "A");
    char buf[16];
    size_t len;
    cr_assert_eq(async_ipc_queue_tryget(q, buf, sizeof buf, &len), ASYNC_EAGAIN);
    /* The half-done put is not counted as unfinished either. */
    cr_assert_eq(async_ipc_queue_task_done(q), 0);
    cr_assert_eq(async_ipc_queue_join_dl(q, async_now() + WEDGE_NS), 0);
    expect_usable(q);
    async_ipc_queue_free(q);
}

static int get_one(void *arg)
{
    async_ipc_queue_t *q = arg;
    char buf[16];
    size_t len;
    int err = async_ipc_queue_get_dl(q, buf, sizeof buf, &len, async_now() + WEDGE_NS);
    return err ? 1 : (len == 1 && buf[0] == 'A') ? 0 : 2;
}

/* A getter already blocked behind the dying one is handed the lock and the
 * message when the holder dies. */
Test(ipc_queue_faults, waiter_behind_a_killed_holder_goes_on, .timeout = 60)
{
    async_ipc_queue_t *q = queue_holding(4, 0, "A");
    async_process_t *holder = stopped_at(q, 2), *waiter;
    cr_assert_eq(async_process_spawn(&waiter, get_one, q), 0);
    usleep(50 * 1000); /* let it reach the lock; the outcome is checked either way */
    cr_assert_eq(async_process_kill(holder), 0);
    cr_assert_eq(async_process_join_dl(holder, async_now() + WEDGE_NS), 0);
    cr_assert_eq(async_process_join_dl(waiter, async_now() + WEDGE_NS + ASYNC_SEC(5)), 0);
    int code = -1;
    cr_assert_eq(async_process_status(waiter, &code, NULL), 0);
    cr_assert_eq(code, 0, "the waiter failed (%d)", code);
    async_process_free(holder);
    async_process_free(waiter);
    expect_usable(q);
    async_ipc_queue_free(q);
}

/* --- kill storms ------------------------------------------------------------------ */

#define MAX_IDS 64u      /* producers ever started, replacements included */
#define PER_ID 20000u    /* items each producer puts if it lives long enough */
#define NPROD 3u
#define NCONS 3u
#define STORM_NS ASYNC_MSEC(1500)
#define CHILD_NS ASYNC_SEC(40) /* a child's own deadline: a wedge fails, never hangs */

typedef struct item {
    uint32_t id, seq;
} item_t;

typedef struct storm {
    async_ipc_queue_t *q;
    unsigned char *seen;  /* shared: times each (id, seq) was got */
    uint32_t *put_done;   /* shared: puts that returned 0, per producer id */
    uint32_t id;
} storm_t;

static int storm_producer(void *arg)
{
    storm_t *s = arg;
    int64_t dl = async_now() + CHILD_NS;
    for (uint32_t i = 0; i < PER_ID; i++) {
        item_t it = {s->id, i};
        if (async_ipc_queue_put_dl(s->q, &it, sizeof it, dl)) return 1;
        __atomic_store_n(&s->put_done[s->id], i + 1, __ATOMIC_SEQ_CST);
    }
    return 0;
}

static int storm_consumer(void *arg)
{
    storm_t *s = arg;
    int64_t dl = async_now() + CHILD_NS;
    for (;;) {
        item_t it;
        size_t len;
        int err = async_ipc_queue_get_dl(s->q, &it, sizeof it, &len, dl);
        if (err == ASYNC_EEOF) return 0;
        if (err) return 2;
        if (len != sizeof it || it.id >= MAX_IDS || it.seq >= PER_ID) return 3;
        __atomic_fetch_add(&s->seen[it.id * PER_ID + it.seq], 1, __ATOMIC_SEQ_CST);
    }
}

typedef struct member {
    async_process_t *p;
    bool producer;
} member_t;

static void start(member_t *m, storm_t *s, uint32_t *next_id)
{
    if (m->producer) s->id = (*next_id)++;
    cr_assert_eq(async_process_spawn(&m->p, m->producer ? storm_producer : storm_consumer, s), 0);
}

/* Joins a child that was not killed and checks it exited 0. */
static void join_ok(async_process_t *p, const char *what)
{
    int err = async_process_join_dl(p, async_now() + CHILD_NS + ASYNC_SEC(5));
    cr_assert_eq(err, 0, "%s did not end: %s", what, async_strerror(err));
    int code = -1, sig = 0;
    cr_assert_eq(async_process_status(p, &code, &sig), 0);
    cr_assert_eq(code, 0, "%s exited %d (signal %d)", what, code, sig);
}

static void storm(bool kill_producers, bool kill_consumers, unsigned seed0)
{
    unsigned seed = seed0;
    storm_t s = {0};
    async_shared_array_t *seen, *done;
    cr_assert_eq(async_ipc_queue_new(&s.q, 64, sizeof(item_t), 0), 0);
    cr_assert_eq(async_shared_array_new(&seen, 1, MAX_IDS * PER_ID, false), 0);
    cr_assert_eq(async_shared_array_new(&done, sizeof(uint32_t), MAX_IDS, false), 0);
    s.seen = async_shared_array_ptr(seen);
    s.put_done = async_shared_array_ptr(done);
    uint32_t next_id = 0;
    member_t m[NPROD + NCONS];
    for (unsigned i = 0; i < NPROD + NCONS; i++) {
        m[i].producer = i < NPROD;
        start(&m[i], &s, &next_id);
    }
    unsigned killed_prod = 0, killed_cons = 0;
    int64_t end = async_now() + STORM_NS;
    while (async_now() < end) {
        usleep(1000 + (unsigned)rand_r(&seed) % 4000);
        unsigned i = (unsigned)rand_r(&seed) % (NPROD + NCONS);
        if (m[i].producer ? !kill_producers || next_id >= MAX_IDS : !kill_consumers) continue;
        /* A producer that finished its items is replaced too, to keep items flowing. */
        int code = test_proc_end(m[i].p, CHILD_NS);
        if (code == 128 + SIGKILL) {
            if (m[i].producer) killed_prod++;
            else killed_cons++;
        } else {
            cr_assert_eq(code, 0, "a %s exited %d", m[i].producer ? "producer" : "consumer", code);
        }
        start(&m[i], &s, &next_id);
    }
    /* The storm is over: the survivors finish their items through the queue. */
    for (unsigned i = 0; i < NPROD; i++) join_ok(m[i].p, "a producer");
    cr_assert_eq(async_ipc_queue_close(s.q), 0);
    for (unsigned i = NPROD; i < NPROD + NCONS; i++) join_ok(m[i].p, "a consumer");
    for (unsigned i = 0; i < NPROD + NCONS; i++) async_process_free(m[i].p);
    cr_assert_eq(async_ipc_queue_len(s.q), 0);
    item_t it;
    size_t len;
    cr_assert_eq(async_ipc_queue_tryget(s.q, &it, sizeof it, &len), ASYNC_EEOF);

    test_tally_t t = test_storm_tally(s.seen, s.put_done, next_id, PER_ID);
    cr_log_info("storm seed %u: %u producers and %u consumers killed, %llu delivered, "
                "%llu lost with dead consumers, %llu committed by dying producers",
                seed0, killed_prod, killed_cons, (unsigned long long)t.delivered,
                (unsigned long long)t.lost, (unsigned long long)t.in_hand);
    if (kill_producers) cr_assert_gt(killed_prod, 0);
    if (kill_consumers) cr_assert_gt(killed_cons, 0);
    /* A dead consumer can take at most the one message it held. */
    cr_assert_leq(t.lost, killed_cons, "%llu lost, but only %u consumers died",
                  (unsigned long long)t.lost, killed_cons);
    cr_assert_geq(t.delivered, (uint64_t)NPROD * PER_ID / 2);
    async_shared_array_free(seen);
    async_shared_array_free(done);
    async_ipc_queue_free(s.q);
}

Test(ipc_queue_faults, consumer_kill_storm, .timeout = 120) { storm(false, true, 1); }
Test(ipc_queue_faults, producer_kill_storm, .timeout = 120) { storm(true, false, 2); }
Test(ipc_queue_faults, mixed_kill_storm, .timeout = 120) { storm(true, true, (unsigned)time(NULL)); }
