/* Processes killed anywhere inside an IPC call, and every state they leave
 * checked against a model: a dictionary writer SIGKILLed at random instants
 * of a stream of calls, and one single-stepped into a call (ptrace) and
 * killed at chosen instructions of it; a queue producer and consumer killed
 * at each instruction of a put and a get.  The repair each death needs is
 * done by the next call (lib/ipc/dict.c, lib/ipc/queue.c say how). */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>
#include "async.h"
#include "async/ipc.h"
#include "async/process.h"

/* ThreadSanitizer models one process: it cannot follow a mutex another
 * process locked or left to the next locker. */
#if defined(__SANITIZE_THREAD__)
#define SKIP_UNDER_TSAN() cr_skip_test("process-shared mutexes are outside ThreadSanitizer's model")
#else
#define SKIP_UNDER_TSAN() ((void)0)
#endif

/* Generous bounds: they only turn a wedge into a failure instead of a hang. */
#define WEDGE_NS ASYNC_SEC(20)

/* Joins p and frees it; its exit code, or 128 + the signal that ended it. */
static int finish(async_process_t *p)
{
    cr_assert_eq(async_process_join_dl(p, async_now() + WEDGE_NS), 0, "a child wedged");
    int code = -1, sig = 0;
    cr_assert_eq(async_process_status(p, &code, &sig), 0);
    async_process_free(p);
    return sig ? 128 + sig : code;
}

/* --- the dictionary ------------------------------------------------------------ */

/* A kill storm at random instants against a model.  Operation i of an
 * endless sequence is a function of i alone: a set, a delete, an update of
 * one to six items (duplicates included) or an increment, on 24 keys of a
 * dictionary of capacity 16, so that updates fail for room, increments fail
 * on values that are not 8 bytes, and probe chains cross over tombstones.
 * A writer runs the sequence from where the dictionary is, checking each
 * return against its own copy of the model (it inherits the parent's), and
 * records the index it starts and the count it finished; the parent kills
 * it at a random instant, then checks the dictionary (that call repairs it)
 * against the model: it must be the state after the operations finished,
 * or, when one had started, after that one too.  The next writer starts
 * from whichever it is. */
#define NKEYS 24
#define DCAP 16
#define DVAL 16

typedef struct dmodel {
    bool present[NKEYS];
    uint8_t len[NKEYS];
    unsigned char val[NKEYS][DVAL];
    int count;
} dmodel_t;

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static void key_name(char out[8], int k) { snprintf(out, 8, "k%d", k); }

typedef struct dop {
    int kind; /* 0 set, 1 delete, 2 update, 3 increment */
    int n;
    int key[6];
    uint8_t len[6];
    unsigned char val[6][DVAL];
    int64_t delta;
} dop_t;

static dop_t op_at(int64_t i)
{
    uint64_t h = mix((uint64_t)i * 7919u + 13);
    dop_t op = {0};
    int r = (int)(h % 10);
    op.kind = r < 3 ? 0 : r < 5 ? 1 : r < 8 ? 2 : 3;
    op.n = op.kind == 2 ? 1 + (int)((h >> 8) % 6) : 1;
    for (int k = 0; k < op.n; k++) {
        uint64_t g = mix(h + (uint64_t)k);
        op.key[k] = (int)(g % NKEYS);
        /* Values of 8 bytes half the time, so increments mostly apply. */
        op.len[k] = (g >> 8) & 1 ? 8 : (uint8_t)((g >> 16) % (DVAL + 1));
        for (int j = 0; j < DVAL; j++) op.val[k][j] = (unsigned char)(mix(g + (uint64_t)j) >> 3);
    }
    op.delta = (int64_t)((h >> 40) % 7) - 3;
    return op;
}

/* Applies op to m the dictionary's way and returns what the call returns. */
static int model_apply(dmodel_t *m, const dop_t *op)
{
    int k = op->key[0];
    switch (op->kind) {
    case 0:
        if (!m->present[k] && m->count >= DCAP) return ASYNC_EFULL;
        if (!m->present[k]) m->count++;
        m->present[k] = true;
        m->len[k] = op->len[0];
        memcpy(m->val[k], op->val[0], DVAL);
        return 0;
    case 1:
        if (!m->present[k]) return ASYNC_ENOENT;
        m->present[k] = false;
        m->count--;
        return 0;
    case 2: {
        dmodel_t after = *m;
        for (int i = 0; i < op->n; i++) {
            int ki = op->key[i];
            if (!after.present[ki] && after.count >= DCAP) return ASYNC_EFULL;
            if (!after.present[ki]) after.count++;
            after.present[ki] = true;
            after.len[ki] = op->len[i];
            memcpy(after.val[ki], op->val[i], DVAL);
        }
        *m = after;
        return 0;
    }
    default: {
        int64_t v = 0;
        if (m->present[k]) {
            if (m->len[k] != 8) return ASYNC_EINVAL;
            memcpy(&v, m->val[k], 8);
        } else if (m->count >= DCAP) {
            return ASYNC_EFULL;
        }
        if (__builtin_add_overflow(v, op->delta, &v)) return ASYNC_EINVAL;
        if (!m->present[k]) m->count++;
        m->present[k] = true;
        m->len[k] = 8;
        memset(m->val[k], 0, DVAL);
        memcpy(m->val[k], &v, 8);
        return 0;
    }
    }
}

/* A call's arguments, made before it (the traced test below steps through
 * the call alone). */
typedef struct dcall {
    char names[6][8];
    async_shared_dict_item_t it[6];
} dcall_t;

static void dict_prepare(dcall_t *c, const dop_t *op)
{
    for (int i = 0; i < op->n; i++) {
        key_name(c->names[i], op->key[i]);
        c->it[i] = (async_shared_dict_item_t){c->names[i], op->val[i], op->len[i]};
    }
}

static int dict_call(async_shared_dict_t *d, const dop_t *op, const dcall_t *c)
{
    switch (op->kind) {
    case 0: return async_shared_dict_set(d, c->names[0], op->val[0], op->len[0]);
    case 1: return async_shared_dict_delete(d, c->names[0]);
    case 2: return async_shared_dict_update(d, c->it, (size_t)op->n);
    default: return async_shared_dict_increment(d, c->names[0], op->delta, NULL);
    }
}

static int dict_apply(async_shared_dict_t *d, const dop_t *op)
{
    dcall_t c;
    dict_prepare(&c, op);
    return dict_call(d, op, &c);
}

typedef struct dstorm {
    async_shared_dict_t *d;
    _Atomic int64_t *progress; /* shared: [0] the index started, [1] the count finished */
    dmodel_t model;            /* the state after progress[1] operations */
} dstorm_t;

static int storm_writer(void *arg)
{
    dstorm_t *s = arg;
    dmodel_t m = s->model;
    int64_t end = async_now() + WEDGE_NS;
    for (int64_t i = atomic_load(&s->progress[1]); async_now() < end; i++) {
        dop_t op = op_at(i);
        atomic_store(&s->progress[0], i);
        int err = dict_apply(s->d, &op);
        if (err != model_apply(&m, &op)) return 10 + op.kind;
        atomic_store(&s->progress[1], i + 1);
    }
    return 0;
}

typedef struct dcheck {
    const dmodel_t *m;
    int seen, bad;
} dcheck_t;

static int check_key(const char *key, const void *value, size_t len, void *arg)
{
    dcheck_t *c = arg;
    int k = key[0] == 'k' ? atoi(key + 1) : -1;
    c->seen++;
    if (k < 0 || k >= NKEYS || !c->m->present[k] || c->m->len[k] != len ||
        memcmp(c->m->val[k], value, len) != 0)
        c->bad++;
    return 0;
}

static bool dict_matches(async_shared_dict_t *d, const dmodel_t *m)
{
    dcheck_t c = {m, 0, 0};
    cr_assert_eq(async_shared_dict_items(d, check_key, &c), 0);
    return c.bad == 0 && c.seen == m->count && async_shared_dict_len(d) == (size_t)m->count;
}

Test(ipc_kills, a_writer_killed_at_random_instants_leaves_a_committed_state, .timeout = 120)
{
    dstorm_t s = {0};
    async_shared_array_t *progress;
    cr_assert_eq(async_shared_dict_new(&s.d, DCAP, 8, DVAL), 0);
    cr_assert_eq(async_shared_array_new(&progress, sizeof(int64_t), 2, false), 0);
    s.progress = async_shared_array_ptr(progress);
    atomic_store(&s.progress[0], -1);
    unsigned seed = 13;
    int kills = 0, inside = 0, took_effect = 0;
    int64_t model_at = 0; /* s.model is the state after this many operations */
    int64_t end = async_now() + ASYNC_SEC(4);
    while (kills < 600 && async_now() < end) {
        async_process_t *w;
        cr_assert_eq(async_process_spawn(&w, storm_writer, &s), 0);
        usleep((unsigned)rand_r(&seed) % 2000);
        cr_assert_eq(async_process_kill(w), 0);
        int code = finish(w);
        cr_assert_eq(code, 128 + SIGKILL, "the writer ended %d (10 + kind: a return off the model)",
                     code);
        kills++;
        int64_t started = atomic_load(&s.progress[0]), done = atomic_load(&s.progress[1]);
        for (; model_at < done; model_at++) {
            dop_t op = op_at(model_at);
            model_apply(&s.model, &op);
        }
        inside += started == done;
        /* This call takes the lock from the dead writer and repairs. */
        if (dict_matches(s.d, &s.model)) continue;
        cr_assert_eq(started, done, "after %lld operations, none in progress: the dictionary is "
                     "not their state", (long long)done);
        dmodel_t m = s.model;
        dop_t op = op_at(done);
        model_apply(&m, &op);
        cr_assert(dict_matches(s.d, &m), "operation %lld (kind %d), killed inside it: the "
                  "dictionary is neither the state before it nor after it", (long long)done,
                  op.kind);
        /* It took effect, and its writer died before recording it. */
        took_effect++;
        s.model = m;
        model_at = done + 1;
        atomic_store(&s.progress[1], done + 1);
    }
    int64_t done = atomic_load(&s.progress[1]);
    cr_log_info("%d writers killed at random instants, %lld operations, %d kills inside one, %d "
                "after one took effect and before it was recorded", kills, (long long)done,
                inside, took_effect);
    cr_assert_gt(kills, 50, "only %d kills: the storm hardly ran", kills);
    cr_assert_gt(done, kills, "the writers hardly ran");
    async_shared_array_free(progress);
    async_shared_dict_free(s.d);
}

/* The same, at chosen instructions: a traced child stopped just before one
 * call is single-stepped n instructions into it and SIGKILLed there, for
 * the n plan_kills picks (every state the mapping passes through),
 * on a fresh dictionary each time, and the state the next call repairs must
 * be the one before the call or the one after it.  The calls: an update
 * that overwrites, inserts two keys and writes one twice; one that fails
 * for room after writing two items (its rollback); a set into a tombstone's
 * slot; a delete; an increment. */
static const int traced_setup[][2] = {
    /* kind, key: sets k0..k13 (8-byte values), then deletes k3 */
    {0, 0}, {0, 1}, {0, 2}, {0, 3}, {0, 4}, {0, 5}, {0, 6}, {0, 7}, {0, 8}, {0, 9}, {0, 10},
    {0, 11}, {0, 12}, {0, 13}, {1, 3},
};

static dop_t traced_op_of(int which)
{
    dop_t op = {0};
    static const int update_keys[] = {1, 20, 21, 20};
    static const int full_keys[] = {2, 16, 17, 18, 19, 22}; /* the 4th new key: no room */
    switch (which) {
    case 0: op.kind = 2; op.n = 4; memcpy(op.key, update_keys, sizeof update_keys); break;
    case 1: op.kind = 2; op.n = 6; memcpy(op.key, full_keys, sizeof full_keys); break;
    case 2: op.kind = 0; op.n = 1; op.key[0] = 3; break;
    case 3: op.kind = 1; op.n = 1; op.key[0] = 5; break;
    default: op.kind = 3; op.n = 1; op.key[0] = 6; op.delta = 5; break;
    }
    for (int k = 0; k < op.n; k++) {
        op.len[k] = 8;
        for (int j = 0; j < DVAL; j++) op.val[k][j] = (unsigned char)(which * 16 + k + j);
    }
    return op;
}

/* A dictionary of capacity 16 set up as traced_setup says (13 keys and a
 * tombstone), and its model. */
static async_shared_dict_t *traced_dict(dmodel_t *m)
{
    async_shared_dict_t *d;
    cr_assert_eq(async_shared_dict_new(&d, DCAP, 8, DVAL), 0);
    memset(m, 0, sizeof *m);
    for (size_t i = 0; i < sizeof traced_setup / sizeof *traced_setup; i++) {
        dop_t op = {.kind = traced_setup[i][0], .n = 1, .key = {traced_setup[i][1]}, .len = {8}};
        memset(op.val[0], (int)i + 1, DVAL);
        cr_assert_eq(dict_apply(d, &op), model_apply(m, &op));
    }
    return d;
}

/* The first bytes of every IPC object's mapping (lib/ipc/ipc_internal.h's
 * async__ipc_hdr_t): how much to watch. */
typedef struct ipc_hdr {
    uint32_t magic, kind;
    size_t map_size;
} ipc_hdr_t;

/* Runs call(arg) in a traced child, stopped before it, for at most `steps`
 * instructions (or to its end, steps < 0), then kills it.  Returns how many
 * instructions it stepped; *whole (OUT) says whether the call had returned.
 * The call's arguments are made before (the child inherits them), so that
 * only the call is stepped through.  With watch (an IPC object), each count
 * of steps after which its mapping differs from before goes into
 * changes[0..*nchanges) (OUT, at most max). */
static long traced_run(void (*call)(void *), void *arg, long steps, bool *whole,
                       const void *watch, long *changes, int *nchanges, int max)
{
    size_t wlen = watch ? ((const ipc_hdr_t *)watch)->map_size : 0;
    unsigned char *seen = wlen ? malloc(wlen) : NULL;
    if (wlen) {
        cr_assert_not_null(seen);
        memcpy(seen, watch, wlen);
        *nchanges = 0;
    }
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        if (ptrace(PTRACE_TRACEME, 0, NULL, NULL) < 0) _exit(2);
        raise(SIGSTOP);
        call(arg);
        raise(SIGSTOP); /* the call returned */
        _exit(0);
    }
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFSTOPPED(st) && WSTOPSIG(st) == SIGSTOP, "the traced child did not stop");
    long n = 0;
    *whole = false;
    while (steps < 0 || n < steps) {
        cr_assert_eq(ptrace(PTRACE_SINGLESTEP, pid, NULL, NULL), 0);
        cr_assert_eq(waitpid(pid, &st, 0), pid);
        cr_assert(WIFSTOPPED(st), "the traced child ended while stepped");
        if (WSTOPSIG(st) == SIGSTOP) {
            *whole = true;
            break;
        }
        n++;
        if (wlen && memcmp(seen, watch, wlen) != 0) {
            memcpy(seen, watch, wlen);
            if (*nchanges < max) changes[(*nchanges)++] = n;
        }
    }
    kill(pid, SIGKILL);
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    free(seen);
    return n;
}

/* Where to kill a call: at[n] for a kill after n of its instructions. */
typedef struct plan {
    long total;
    int changes;
    bool *at;
} plan_t;

/* Runs the call whole under the tracer, watching obj's mapping, and plans
 * the kills: about 64 spread evenly over the call (every instruction of a
 * call of up to 400), and the four instructions up to and including each one
 * that changed the mapping, so that every state the mapping passes through
 * is left by some kill, with what the instructions just before a change
 * leave in the dying process (a robust lock's pending entry) too.  A kill
 * at n costs n steps, so the whole is quadratic in the call's length. */
static plan_t plan_kills(void (*call)(void *), void *arg, const void *obj, const char *what)
{
    enum { MAX_CHANGES = 4096 };
    static long changes[MAX_CHANGES];
    plan_t pl = {0};
    bool whole;
    pl.total = traced_run(call, arg, -1, &whole, obj, changes, &pl.changes, MAX_CHANGES);
    cr_assert(whole && pl.total > 0, "%s did not return under the tracer", what);
    cr_assert_gt(pl.changes, 0, "%s changed nothing", what);
    pl.at = calloc((size_t)pl.total + 1, 1);
    cr_assert_not_null(pl.at);
    long stride = pl.total <= 400 ? 1 : (pl.total + 63) / 64;
    for (long n = 0; n < pl.total; n += stride) pl.at[n] = true;
    for (int i = 0; i < pl.changes; i++)
        for (long n = changes[i] - 3; n <= changes[i]; n++)
            if (n >= 0 && n < pl.total) pl.at[n] = true;
    return pl;
}

static long plan_count(const plan_t *pl)
{
    long k = 0;
    for (long n = 0; n < pl->total; n++) k += pl->at[n];
    return k;
}

typedef struct traced_dict_call {
    async_shared_dict_t *d;
    const dop_t *op;
    dcall_t c;
} traced_dict_call_t;

static void traced_dict_call(void *arg)
{
    traced_dict_call_t *t = arg;
    dict_call(t->d, t->op, &t->c);
}

static void traced_dict_prepare(traced_dict_call_t *t, async_shared_dict_t *d, const dop_t *op)
{
    *t = (traced_dict_call_t){.d = d, .op = op};
    dict_prepare(&t->c, op);
}

Test(ipc_kills, a_writer_killed_at_chosen_instructions_leaves_a_committed_state, .timeout = 240)
{
    SKIP_UNDER_TSAN();
    int kills = 0, after = 0;
    for (int which = 0; which < 5; which++) {
        dop_t op = traced_op_of(which);
        dmodel_t before, m;
        bool whole;
        async_shared_dict_t *d = traced_dict(&before);
        traced_dict_call_t t;
        traced_dict_prepare(&t, d, &op);
        plan_t pl = plan_kills(traced_dict_call, &t, d, "a dictionary call");
        long total = pl.total;
        m = before;
        int want = model_apply(&m, &op);
        cr_assert(dict_matches(d, &m), "call %d, run whole, did not do what the model says (%d)",
                  which, want);
        cr_assert_eq(want, which == 1 ? ASYNC_EFULL : 0, "call %d", which);
        async_shared_dict_free(d);
        for (long n = 0; n < total; n++) {
            if (!pl.at[n]) continue;
            dmodel_t b;
            d = traced_dict(&b);
            traced_dict_prepare(&t, d, &op);
            traced_run(traced_dict_call, &t, n, &whole, NULL, NULL, NULL, 0);
            kills++;
            dmodel_t now = b;
            if (!dict_matches(d, &b)) {
                cr_assert(dict_matches(d, &m), "call %d killed at instruction %ld of %ld: the "
                          "dictionary is neither as before the call nor as after it", which, n,
                          total);
                now = m;
                after++;
            }
            /* The next commit publishes its own versions and no others: a
             * version the repair missed would show now. */
            dop_t next = {.kind = 2, .n = 2, .key = {0, 15}, .len = {8, 3}};
            cr_assert_eq(dict_apply(d, &next), model_apply(&now, &next));
            cr_assert(dict_matches(d, &now), "call %d killed at instruction %ld of %ld: the next "
                      "commit published what the repair left", which, n, total);
            async_shared_dict_free(d);
        }
        cr_log_info("call %d: %ld instructions, %d of them changed the mapping, %ld kills", which,
                    total, pl.changes, plan_count(&pl));
        free(pl.at);
    }
    cr_log_info("%d kills at chosen instructions, %d left the state after the call", kills, after);
    cr_assert_gt(after, 0, "no kill came after a commit: the calls were not stepped through");
}

/* --- the queue, killed at chosen instructions ---------------------------------- */

typedef struct traced_q {
    async_ipc_queue_t *q;
    bool get;
    char msg[48];
} traced_q_t;

static void traced_q_call(void *arg)
{
    traced_q_t *t = arg;
    char buf[48];
    size_t len;
    if (t->get) async_ipc_queue_tryget(t->q, buf, sizeof buf, &len);
    else async_ipc_queue_tryput(t->q, t->msg, sizeof t->msg);
}

/* A joinable queue of 4 holding two messages, A and B (48 bytes each). */
static async_ipc_queue_t *traced_queue(void)
{
    async_ipc_queue_t *q;
    cr_assert_eq(async_ipc_queue_new(&q, 4, 48, ASYNC_IPC_QUEUE_JOINABLE), 0);
    char m[48];
    memset(m, 'A', sizeof m);
    cr_assert_eq(async_ipc_queue_put(q, m, sizeof m), 0);
    memset(m, 'B', sizeof m);
    cr_assert_eq(async_ipc_queue_put(q, m, sizeof m), 0);
    return q;
}

/* Gets everything left and checks it is `want` (letters, in order), each
 * message whole, then marks them done: the join count must come out even. */
static void drain_expect(async_ipc_queue_t *q, const char *want, bool one_taken, const char *what,
                         long n)
{
    char buf[48];
    size_t len;
    for (const char *w = want; *w; w++) {
        cr_assert_eq(async_ipc_queue_tryget(q, buf, sizeof buf, &len), 0, "%s at %ld: %c lost",
                     what, n, *w);
        bool whole = len == sizeof buf;
        for (size_t i = 0; i < len; i++) whole = whole && buf[i] == *w;
        cr_assert(whole, "%s at %ld: message %c torn", what, n, *w);
        cr_assert_eq(async_ipc_queue_task_done(q), 0);
    }
    cr_assert_eq(async_ipc_queue_tryget(q, buf, sizeof buf, &len), ASYNC_EAGAIN,
                 "%s at %ld: a message too many", what, n);
    /* The message the dead consumer took is never marked done (ipc.h). */
    if (one_taken) cr_assert_eq(async_ipc_queue_task_done(q), 0);
    cr_assert_eq(async_ipc_queue_join_dl(q, 0), 0, "%s at %ld: the join count is off", what, n);
    cr_assert_eq(async_ipc_queue_task_done(q), ASYNC_EINVAL, "%s at %ld: the join count is off",
                 what, n);
}

/* A producer or consumer single-stepped into tryput or tryget and SIGKILLed
 * at each of its instructions, or of a long call at those plan_kills picks
 * (queue.c's claim: a put takes effect or leaves
 * no trace, a get leaves the message or takes it whole, never torn, never
 * twice); after each kill the queue is drained and checked, its join count
 * included, and serves again. */
Test(ipc_kills, a_peer_killed_at_chosen_instructions_leaves_the_queue_whole, .timeout = 240)
{
    SKIP_UNDER_TSAN();
    int took[2] = {0, 0}, kills = 0;
    for (int get = 0; get < 2; get++) {
        const char *what = get ? "a get" : "a put";
        traced_q_t t = {.get = get};
        memset(t.msg, 'C', sizeof t.msg);
        bool whole;
        t.q = traced_queue();
        plan_t pl = plan_kills(traced_q_call, &t, t.q, what);
        long total = pl.total;
        cr_assert_eq(async_ipc_queue_len(t.q), get ? 1u : 3u);
        async_ipc_queue_free(t.q);
        for (long n = 0; n < total; n++) {
            if (!pl.at[n]) continue;
            t.q = traced_queue();
            traced_run(traced_q_call, &t, n, &whole, NULL, NULL, NULL, 0);
            kills++;
            size_t len = async_ipc_queue_len(t.q);
            if (get) {
                cr_assert(len == 1 || len == 2, "a get killed at %ld: %zu messages", n, len);
                took[1] += len == 1;
                drain_expect(t.q, len == 1 ? "B" : "AB", len == 1, what, n);
            } else {
                cr_assert(len == 2 || len == 3, "a put killed at %ld: %zu messages", n, len);
                took[0] += len == 3;
                drain_expect(t.q, len == 3 ? "ABC" : "AB", false, what, n);
            }
            char m[48] = "again";
            cr_assert_eq(async_ipc_queue_put(t.q, m, sizeof m), 0);
            cr_assert_eq(async_ipc_queue_tryget(t.q, m, sizeof m, &len), 0);
            async_ipc_queue_free(t.q);
        }
        cr_log_info("%s: %ld instructions, %d of them changed the mapping, %ld kills, %d after it "
                    "took effect", what, total, pl.changes, plan_count(&pl), took[get]);
        free(pl.at);
    }
    cr_assert(took[0] > 0 && took[1] > 0, "no kill came after a commit: nothing was stepped");
    cr_assert_gt(kills, 20);
}

/* --- the barrier, killed at chosen instructions -------------------------------- */

/* lib/ipc/ipc_internal.h */
void async__ipc_barrier_peek(const async_ipc_barrier_t *b, uint32_t *gen, uint32_t *count);

#define BROKEN_COUNT UINT32_MAX

/* A party: exits 0 (released), 2 (ASYNC_ECLOSED) or 3 (its deadline). */
static int barrier_party(void *arg)
{
    int err = async_ipc_barrier_wait_dl(arg, NULL, async_now() + ASYNC_SEC(15));
    return err == 0 ? 0 : err == ASYNC_ECLOSED ? 2 : err == ASYNC_ETIMEDOUT ? 3 : 4;
}

static async_process_t *spawn_barrier_party(async_ipc_barrier_t *b)
{
    async_process_t *p;
    cr_assert_eq(async_process_spawn(&p, barrier_party, b), 0);
    return p;
}

/* Waits until the barrier's state is (gen, count). */
static void wait_state(async_ipc_barrier_t *b, uint32_t gen, uint32_t count, const char *what)
{
    uint32_t g = 0, c = 0;
    for (int64_t until = async_now() + WEDGE_NS; async_now() < until; usleep(500)) {
        async__ipc_barrier_peek(b, &g, &c);
        if (g == gen && c == count) return;
    }
    cr_assert_fail("%s: the barrier stayed at generation %u, count %u (not %u, %u)", what, g, c,
                   gen, count);
}

typedef struct traced_b {
    async_ipc_barrier_t *b;
    int what; /* 0: the arrival that trips, 1: reset, 2: abort */
} traced_b_t;

static void traced_b_call(void *arg)
{
    traced_b_t *t = arg;
    if (t->what == 0) async_ipc_barrier_wait_dl(t->b, NULL, async_now() + ASYNC_SEC(15));
    else if (t->what == 1) async_ipc_barrier_reset(t->b);
    else async_ipc_barrier_abort(t->b);
}

/* A barrier of two with one party waiting; a second process single-stepped
 * into the call that ends the generation (the arrival that trips it, a
 * reset, an abort) and SIGKILLed at the instructions plan_kills picks,
 * inside the robust mutex's lock and unlock included.  Each time the generation has ended
 * whole (the waiter returns 0, or ASYNC_ECLOSED; an abort leaves it broken)
 * or not at all (the waiter still counted, released by the next arrival),
 * and the next generation trips at its second arrival, not before. */
Test(ipc_kills, a_party_killed_at_chosen_instructions_leaves_the_barrier_whole, .timeout = 240)
{
    SKIP_UNDER_TSAN();
    static const char *what[] = {"a trip", "a reset", "an abort"};
    int done[3] = {0, 0, 0}, kills = 0;
    for (int k = 0; k < 3; k++) {
        traced_b_t t = {NULL, k};
        bool whole;
        cr_assert_eq(async_ipc_barrier_new(&t.b, 2), 0);
        async_process_t *w = spawn_barrier_party(t.b);
        wait_state(t.b, 0, 1, what[k]);
        /* The waiter's own re-checks may add changes: more kills, no harm. */
        plan_t pl = plan_kills(traced_b_call, &t, t.b, what[k]);
        long total = pl.total;
        cr_assert_eq(finish(w), k == 0 ? 0 : 2, "%s run whole", what[k]);
        async_ipc_barrier_free(t.b);
        for (long n = 0; n < total; n++) {
            if (!pl.at[n]) continue;
            cr_assert_eq(async_ipc_barrier_new(&t.b, 2), 0);
            w = spawn_barrier_party(t.b);
            wait_state(t.b, 0, 1, what[k]);
            traced_run(traced_b_call, &t, n, &whole, NULL, NULL, NULL, 0);
            kills++;
            uint32_t g, c;
            async__ipc_barrier_peek(t.b, &g, &c);
            if (g == 0) {
                cr_assert_eq(c, 1, "%s killed at %ld: generation 0 with %u arrivals", what[k], n,
                             c);
                async_process_t *x = spawn_barrier_party(t.b);
                int cx = finish(x), cw = finish(w);
                cr_assert(cx == 0 && cw == 0, "%s killed at %ld, not done: the generation's trip "
                          "ended %d and %d", what[k], n, cw, cx);
            } else {
                done[k]++;
                cr_assert(g == 1 && c == (k == 2 ? BROKEN_COUNT : 0), "%s killed at %ld, done: "
                          "generation %u, count %u", what[k], n, g, c);
                cr_assert_eq(finish(w), k == 0 ? 0 : 2, "%s killed at %ld, done", what[k], n);
                cr_assert_eq(async_ipc_barrier_broken(t.b), k == 2);
                if (k == 2) async_ipc_barrier_reset(t.b);
            }
            async__ipc_barrier_peek(t.b, &g, &c);
            cr_assert_eq(c, 0, "%s killed at %ld: the next generation starts at %u", what[k], n,
                         c);
            async_process_t *a = spawn_barrier_party(t.b);
            wait_state(t.b, g, 1, what[k]);
            async_process_t *b2 = spawn_barrier_party(t.b);
            int ca = finish(a), cb = finish(b2);
            cr_assert(ca == 0 && cb == 0, "%s killed at %ld: the next generation ended %d and %d",
                      what[k], n, ca, cb);
            wait_state(t.b, g + 1, 0, what[k]);
            async_ipc_barrier_free(t.b);
        }
        cr_log_info("%s: %ld instructions, %d of them changed the mapping, %ld kills, %d after it "
                    "was done", what[k], total, pl.changes, plan_count(&pl), done[k]);
        free(pl.at);
    }
    cr_assert(done[0] && done[1] && done[2], "a step was never seen done: nothing was stepped");
    cr_assert_gt(kills, 30);
}
