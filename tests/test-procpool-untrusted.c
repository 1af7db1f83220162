/* The process pool (lib/exec/procpool) against peers it must not trust: a
 * work function (it runs in the worker process) that writes over the shared
 * memory it can reach (the region's header, its own slot, a neighbour's
 * slot, the completion rings, the heap's block headers, the state words), and
 * a fork server that sends malformed messages, closes its socket but lives
 * on, is stopped, or is reaped by another waiter (SIGCHLD set to SIG_IGN,
 * libev's default loop) before the pool could ask how it died.
 *
 * The parent must turn each into a precise error for the job concerned (or
 * the pool broken with a precise message), never an out-of-bounds access, a
 * done that runs twice, a hang or a crash.  Each test says what it caught.
 * The engine is driven through its private API, as in test-procpool.c. */
#if defined(__SANITIZE_THREAD__)
#include <criterion/criterion.h>
Test(tsan, procpool_untrusted_tests_skipped, .timeout = 5)
{
    cr_skip_test("ThreadSanitizer cannot follow the process pool's cross-process hand-overs: this file runs "
                 "under the other builds");
}
#else
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <ev.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <async.h>
#include "support/procpool_engine.h"
#include "support/alloc.h"

/* The region's layout, as the parent keeps it.  ROUND13_BEFORE builds this
 * file against the code before round 13 (which read it from the region's
 * header), to show that each test failed there. */
#ifdef ROUND13_BEFORE
#define SLOTS(p) pp_slots((p)->h)
#define NSLOTS(p) ((p)->h->nslots)
#define WORKERS(p) pp_workers((p)->h)
#define DONE_RING(p, w) pp_done_ring((p)->h, w)
#define RES_AREA(p, w) pp_res_area((p)->h, w)
#define RESULT_AREA(p) ((p)->h->result_area)
#define RING(p) pp_ring((p)->h)
#define RING_CAP(p) ((p)->h->ring_cap)
#else
#define RING(p) ((p)->v.ring)
#define RING_CAP(p) ((p)->v.ring_cap)
#define SLOTS(p) ((p)->v.slots)
#define NSLOTS(p) ((p)->v.nslots)
#define WORKERS(p) ((p)->v.workers)
#define DONE_RING(p, w) pp_done_ring(&(p)->v, w)
#define RES_AREA(p, w) pp_res_area(&(p)->v, w)
#define RESULT_AREA(p) ((p)->v.result_area)
#endif

static int submit_in(async__procpool_t *p, async__procpool_fn fn, const void *in, size_t in_len,
                     size_t out_cap, int i, int64_t deadline)
{
    async__procjob_t j = {.fn = (async__anyfn_t)fn, .in = in, .in_len = in_len,
                          .out_cap = out_cap, .deadline = deadline, .done = eng_on_done,
                          .arg = (void *)(intptr_t)i};
    return async__procpool_submit(p, &j, NULL);
}

static int submit(async__procpool_t *p, async__procpool_fn fn, long in, int i, int64_t deadline)
{
    return submit_in(p, fn, &in, sizeof in, 8, i, deadline);
}

/* --- work functions ---------------------------------------------------------- */

/* What a scribbling job does; its input, inline in its slot. */
enum what {
    HEADER,          /* garbage over the whole header page of the region */
    OUT_LEN,         /* victim's out_len far beyond its capacity */
    OUT_OFF,         /* victim's out_off far outside the region */
    OUT_OFF_OTHER,   /* victim's result "moved" into another worker's area */
    ERR_POSITIVE,    /* victim's error code positive */
    MSG_WILD,        /* victim failed, with a message outside any area */
    RING_BEYOND,     /* own done ring: an entry beyond the slots */
    RING_FREE,       /* own done ring: an entry naming a free slot */
    RING_TWICE,      /* own done ring: the victim's entry once more */
    RING_TAIL,       /* own done ring: the tail 2^40 ahead */
    RING_OF,         /* the ring of the worker running the victim: a bogus entry */
    FREE_RUNNING,    /* every free slot's state: RUNNING by this worker, then die */
    NO_SUCH_WORKER,  /* the queued victim's state: RUNNING by worker 5000 */
    HEAP_OVERRUN,    /* write past a shared buffer over the next block's header */
    RING_ENTRY,      /* the queued victim's submit ring entry: our own slot instead */
};

typedef struct scribble {
    async__procpool_t *p; /* the parent's pool: its private copy is the worker's too */
    int what;
    uint32_t victim;      /* a slot index */
    void *buf;            /* HEAP_OVERRUN: the buffer */
    _Atomic int *cell;    /* RING_OF: where the victim wrote its worker's index */
} scribble_t;

static int scribbler(void *ctx, const void *in, size_t n, async__procout_t *out)
{
    (void)ctx, (void)n;
    scribble_t sc;
    memcpy(&sc, in, sizeof sc);
    async__procpool_t *p = sc.p;
    pp_slot_t *v = &SLOTS(p)[sc.victim % NSLOTS(p)];
    unsigned self = (unsigned)async__procpool_self();
    pp_worker_t *me = &WORKERS(p)[self];
    _Atomic uint32_t *ring = DONE_RING(p, self);
    uint64_t t = atomic_load(&me->done_tail);
    switch (sc.what) {
    case HEADER: memset((char *)p->h, 0xa5, 4096); break;
    case OUT_LEN: v->out_len = (uint64_t)1 << 40; break;
    case OUT_OFF: v->out_off = (uint64_t)1 << 50; v->out_len = 8; break;
    case OUT_OFF_OTHER:
        v->out_off = (uint64_t)(RES_AREA(p, self ? 0 : 1) - (char *)p->h) + RESULT_AREA(p) - 4;
        v->out_len = 64;
        break;
    case ERR_POSITIVE: v->err = 5; break;
    case MSG_WILD:
        v->err = ASYNC_EINVAL;
        v->msg_len = 400;
        v->msg_off = (uint64_t)1 << 45;
        break;
    case RING_BEYOND:
        atomic_store(&ring[t & (NSLOTS(p) - 1)], 99999);
        atomic_store(&me->done_tail, t + 1);
        break;
    case RING_FREE:
        for (uint32_t i = 0; i < NSLOTS(p); i++)
            if (atomic_load(&SLOTS(p)[i].state) == PP_FREE) {
                atomic_store(&ring[t & (NSLOTS(p) - 1)], i);
                atomic_store(&me->done_tail, t + 1);
                break;
            }
        break;
    case RING_TWICE: /* the victim, finished by us, goes on the ring a second time */
        atomic_store(&ring[t & (NSLOTS(p) - 1)], sc.victim);
        atomic_store(&me->done_tail, t + 1);
        break;
    case RING_TAIL: atomic_store(&me->done_tail, t + ((uint64_t)1 << 40)); break;
    case RING_OF: {
        unsigned w = (unsigned)atomic_load(sc.cell);
        _Atomic uint32_t *r = DONE_RING(p, w);
        uint64_t tw = atomic_load(&WORKERS(p)[w].done_tail);
        atomic_store(&r[tw & (NSLOTS(p) - 1)], 99999);
        atomic_store(&WORKERS(p)[w].done_tail, tw + 1);
        break;
    }
    case FREE_RUNNING:
        for (uint32_t i = 0; i < NSLOTS(p); i++)
            if (atomic_load(&SLOTS(p)[i].state) == PP_FREE)
                atomic_store(&SLOTS(p)[i].state, PP_ST(PP_RUNNING, self));
        raise(SIGKILL);
        break;
    case NO_SUCH_WORKER: /* waits for the victim to be queued behind us */
        for (int k = 0; k < 1000; k++) {
            bool found = false;
            for (uint32_t i = 0; i < NSLOTS(p); i++)
                if (atomic_load(&SLOTS(p)[i].state) == PP_QUEUED) {
                    atomic_store(&SLOTS(p)[i].state, PP_ST(PP_RUNNING, 5000));
                    found = true;
                }
            if (found) break;
            usleep(1000);
        }
        usleep(1500000);
        break;
    case HEAP_OVERRUN: memset(sc.buf, 0x5a, 200); break;
    case RING_ENTRY: { /* waits for the victim to be queued behind us */
        uint32_t mine = (uint32_t)(((const char *)in - offsetof(pp_slot_t, in_inline) -
                                    (const char *)SLOTS(p)) / sizeof(pp_slot_t));
        for (int k = 0; k < 1000; k++) {
            uint64_t tail = atomic_load(&p->h->q_tail), head = atomic_load(&p->h->q_head);
            if (tail > head) {
                atomic_store(&RING(p)[(tail - 1) & (RING_CAP(p) - 1)], mine);
                break;
            }
            usleep(1000);
        }
        break;
    }
    }
    long ok = 1234;
    memcpy(async__procout_data(out), &ok, sizeof ok);
    return 0;
}

static int submit_scribble(async__procpool_t *p, int what, uint32_t victim, int i)
{
    scribble_t sc = {.p = p, .what = what, .victim = victim};
    return submit_in(p, scribbler, &sc, sizeof sc, 8, i, ASYNC_FOREVER);
}

/* A slot in state kind other than a and b, waited for. */
static uint32_t slot_in(async__procpool_t *p, unsigned kind, uint32_t a, uint32_t b)
{
    int64_t until = async_now() + ASYNC_SEC(20);
    while (async_now() < until) {
        for (uint32_t i = 0; i < NSLOTS(p); i++)
            if (i != a && i != b && PP_KIND(atomic_load(&SLOTS(p)[i].state)) == kind) return i;
        usleep(500);
    }
    cr_assert_fail("no slot reached state %u", kind);
    return 0;
}

static void reset(void)
{
    memset(eng_res, 0, sizeof eng_res);
    atomic_store(&eng_ndone, 0);
    for (int i = 0; i < ENG_MAXJ; i++) atomic_store(&eng_calls[i], 0);
    eng_hold_job = -1;
    atomic_store(&eng_held, 0);
    atomic_store(&eng_release, 0);
}

/* Ten more jobs, each right: the pool serves on after the attack. */
static void still_serves(async__procpool_t *p, int first)
{
    for (int i = 0; i < 10; i++) cr_assert_eq(submit(p, eng_square, i, first + i, ASYNC_FOREVER), 0);
    eng_wait_done(first + 10);
    for (int i = 0; i < 10; i++) {
        cr_assert_eq(eng_res[first + i].err, 0, "job %d: %s", first + i, eng_res[first + i].msg);
        cr_assert_eq(eng_res[first + i].val, (long)i * i);
    }
}

static void each_done_once(int n)
{
    for (int i = 0; i < n; i++) cr_assert_eq(atomic_load(&eng_calls[i]), 1, "job %d: %d dones", i, atomic_load(&eng_calls[i]));
}

TestSuite(procpool_untrusted, .init = reset);

/* --- the region's header -------------------------------------------------------- */

/* Caught: the parent read the layout (slot and ring offsets, the slot count,
 * the region's size) from the region's header on every access, so a work
 * function that wrote over it sent the supervisor to wild addresses: a
 * SIGSEGV of the parent (under ASan, a wild read).  The layout is now each
 * process's private copy, and the header's shared words are checked
 * (the submit ring's indices are put back when out of range). */
Test(procpool_untrusted, a_work_function_that_overwrites_the_regions_header, .timeout = 60)
{
    async__procpool_t *p = eng_pool_new(2);
    cr_assert_eq(submit_scribble(p, HEADER, 0, 0), 0);
    eng_wait_done(1);
    cr_assert_eq(eng_res[0].err, 0, "%s", eng_res[0].msg);
    still_serves(p, 1);
    each_done_once(11);
    async__procpool_free(p);
}

/* --- a victim's result fields ------------------------------------------------------ */

/* Holds the supervisor in job 0's done, finishes job 1 (the victim) behind
 * it, has job 2 scribble over the victim's slot, then lets go. */
static void scribble_victim(int what, int want_err, const char *want)
{
    async__procpool_t *p = eng_pool_new(what == OUT_OFF_OTHER ? 2 : 1);
    eng_hold_job = 0;
    cr_assert_eq(submit(p, eng_square, 3, 0, ASYNC_FOREVER), 0);
    eng_wait_flag(&eng_held);
    uint32_t holder = slot_in(p, PP_DONE, UINT32_MAX, UINT32_MAX);
    cr_assert_eq(submit(p, what == MSG_WILD ? eng_sleeper : eng_square, 5, 1, ASYNC_FOREVER), 0);
    uint32_t victim = slot_in(p, PP_DONE, holder, UINT32_MAX);
    cr_assert_eq(submit_scribble(p, what, victim, 2), 0);
    slot_in(p, PP_DONE, holder, victim);
    atomic_store(&eng_release, 1);
    eng_wait_done(3);
    cr_assert_eq(eng_res[0].err, 0);
    cr_assert_eq(eng_res[0].val, 9);
    cr_assert_eq(eng_res[2].err, 0, "the scribbler itself: %s", eng_res[2].msg);
    cr_assert_eq(eng_res[1].err, want_err, "victim: %d %s", eng_res[1].err, eng_res[1].msg);
    cr_assert(strstr(eng_res[1].msg, want), "victim: %s", eng_res[1].msg);
    cr_assert(strstr(eng_res[1].msg, "overwritten"), "victim: %s", eng_res[1].msg);
    still_serves(p, 3);
    each_done_once(13);
    async__procpool_free(p);
}

/* Caught: a result length beyond the slot was handed to done as is (here
 * 2^40 bytes of a 64-byte inline result). */
Test(procpool_untrusted, a_result_length_beyond_its_capacity_fails_that_job, .timeout = 60)
{
    scribble_victim(OUT_LEN, ASYNC_EIO, "1099511627776 bytes");
}

/* Caught: the result's offset was added to the region's base unchecked: the
 * supervisor read 2^50 bytes past it (SIGSEGV). */
Test(procpool_untrusted, a_result_offset_outside_the_region_fails_that_job, .timeout = 60)
{
    scribble_victim(OUT_OFF, ASYNC_EIO, "invalid");
}

/* Caught: a grown result may only lie in its own worker's area; one that
 * straddled the end of another worker's area was read across it. */
Test(procpool_untrusted, a_result_in_another_workers_area_fails_that_job, .timeout = 60)
{
    scribble_victim(OUT_OFF_OTHER, ASYNC_EIO, "invalid");
}

/* Caught: a positive error code went to done, where every code is negative. */
Test(procpool_untrusted, a_positive_error_code_fails_that_job_with_eio, .timeout = 60)
{
    scribble_victim(ERR_POSITIVE, ASYNC_EIO, "error code (5)");
}

/* Caught: an error message was read from wherever its offset pointed, for
 * as many bytes as its length said (a wild read, SIGSEGV). */
Test(procpool_untrusted, an_error_message_outside_the_result_area_is_not_read, .timeout = 60)
{
    scribble_victim(MSG_WILD, ASYNC_EINVAL, "message for it is invalid");
}

/* --- the completion rings ----------------------------------------------------------- */

/* The scribbler corrupts its own worker's done ring; the pool kills that
 * worker, delivers what it had finished from the slots, and serves on with
 * a replacement. */
static void corrupt_own_ring(int what)
{
    async__procpool_t *p = eng_pool_new(1);
    uint64_t spawned = async__procpool_spawned(p);
    uint32_t victim = 0;
    if (what == RING_TWICE) {
        eng_hold_job = 0;
        cr_assert_eq(submit(p, eng_square, 3, 0, ASYNC_FOREVER), 0);
        eng_wait_flag(&eng_held);
        uint32_t holder = slot_in(p, PP_DONE, UINT32_MAX, UINT32_MAX);
        cr_assert_eq(submit(p, eng_square, 4, 1, ASYNC_FOREVER), 0);
        victim = slot_in(p, PP_DONE, holder, UINT32_MAX);
        cr_assert_eq(submit_scribble(p, what, victim, 2), 0);
        slot_in(p, PP_DONE, holder, victim);
        atomic_store(&eng_release, 1);
        eng_wait_done(3);
        cr_assert_eq(eng_res[1].val, 16);
    } else {
        cr_assert_eq(submit(p, eng_square, 3, 0, ASYNC_FOREVER), 0);
        cr_assert_eq(submit(p, eng_square, 4, 1, ASYNC_FOREVER), 0);
        cr_assert_eq(submit_scribble(p, what, victim, 2), 0);
        eng_wait_done(3);
    }
    for (int i = 0; i < 3; i++) cr_assert_eq(eng_res[i].err, 0, "job %d: %s", i, eng_res[i].msg);
    cr_assert_eq(eng_res[2].val, 1234);
    still_serves(p, 3);
    each_done_once(13);
    /* The worker that held the corrupt ring was replaced. */
    int64_t until = async_now() + ASYNC_SEC(10);
    while (async__procpool_spawned(p) == spawned && async_now() < until) usleep(1000);
    cr_assert_gt(async__procpool_spawned(p), spawned);
    cr_assert_eq(async__procpool_error(p, NULL, 0), 0);
    async__procpool_free(p);
}

/* Caught: an index beyond the slots was used as is (p->jobs[99999]: a heap
 * overflow in the parent, ASan's report). */
Test(procpool_untrusted, a_done_ring_entry_beyond_the_slots, .timeout = 60) { corrupt_own_ring(RING_BEYOND); }

/* Caught: a free slot named on a ring was "delivered": its done pointer was
 * NULL (SIGSEGV), and freeing it again overran the free-slot array. */
Test(procpool_untrusted, a_done_ring_entry_naming_a_free_slot, .timeout = 60) { corrupt_own_ring(RING_FREE); }

/* Caught: a finished slot named twice ran its done twice. */
Test(procpool_untrusted, a_done_ring_entry_named_twice, .timeout = 60) { corrupt_own_ring(RING_TWICE); }

/* Caught: a tail 2^40 entries ahead had the supervisor deliver 2^40
 * entries of garbage (a hang, then the first bad index). */
Test(procpool_untrusted, a_done_ring_tail_far_ahead, .timeout = 60) { corrupt_own_ring(RING_TAIL); }

static int note_worker(void *ctx, const void *in, size_t n, async__procout_t *out)
{
    (void)in, (void)n, (void)out;
    atomic_store((_Atomic int *)ctx, async__procpool_self());
    usleep(20 * 1000 * 1000);
    return 0;
}

/* A neighbour corrupts the ring of the worker running a long job: that job
 * fails with the reason, not only "killed by signal 9". */
Test(procpool_untrusted, a_job_whose_workers_ring_was_corrupted_fails_with_the_reason, .timeout = 60)
{
    async__procpool_t *p = eng_pool_new(2);
    void *m;
    cr_assert_eq(async__procpool_shm_alloc(p, sizeof(_Atomic int), &m), 0);
    _Atomic int *cell = m;
    atomic_store(cell, -1);
    async__procjob_t j = {.fn = (async__anyfn_t)note_worker, .ctx = (void *)cell, .out_cap = 8,
                          .deadline = ASYNC_FOREVER, .done = eng_on_done, .arg = (void *)(intptr_t)0};
    cr_assert_eq(async__procpool_submit(p, &j, NULL), 0);
    int64_t until = async_now() + ASYNC_SEC(20);
    while (atomic_load(cell) < 0 && async_now() < until) usleep(500);
    cr_assert_geq(atomic_load(cell), 0);
    scribble_t sc = {.p = p, .what = RING_OF, .cell = cell};
    cr_assert_eq(submit_in(p, scribbler, &sc, sizeof sc, 8, 1, ASYNC_FOREVER), 0);
    eng_wait_done(2);
    cr_assert_eq(eng_res[1].err, 0, "%s", eng_res[1].msg);
    cr_assert_eq(eng_res[0].err, ASYNC_EWORKERDIED, "%s", eng_res[0].msg);
    cr_assert(strstr(eng_res[0].msg, "slot 99999, beyond the pool's slots"), "%s", eng_res[0].msg);
    still_serves(p, 2);
    each_done_once(12);
    async__procpool_free(p);
}

/* --- state words ----------------------------------------------------------------------- */

/* A job of a one-worker pool scribbles on a state word or the submit ring;
 * then, unless square_in is negative, a square of square_in is submitted
 * pause_us later (deadline_ms after it, or never when 0).  The scribbler
 * (eng_res[0]) and the square (eng_res[1]) end as the case says, and the pool serves
 * on. */
typedef struct scribble_case {
    int what;
    useconds_t pause_us;
    long square_in;      /* < 0: no square */
    int64_t deadline_ms; /* 0: ASYNC_FOREVER */
    int err0, err1;
    long val1;        /* when err1 is 0 */
    const char *msg1; /* in eng_res[1].msg; NULL: not checked */
} scribble_case_t;

static void scribble_then_square(const scribble_case_t *c)
{
    async__procpool_t *p = eng_pool_new(1);
    cr_assert_eq(submit_scribble(p, c->what, 0, 0), 0);
    int n = c->square_in < 0 ? 1 : 2;
    if (n == 2) {
        usleep(c->pause_us); /* the scribbler runs first */
        int64_t dl = c->deadline_ms ? async_deadline_after(ASYNC_MSEC(c->deadline_ms)) : ASYNC_FOREVER;
        cr_assert_eq(submit(p, eng_square, c->square_in, 1, dl), 0);
    }
    eng_wait_done(n);
    cr_assert_eq(eng_res[0].err, c->err0, "%s", eng_res[0].msg);
    if (n == 2) {
        cr_assert_eq(eng_res[1].err, c->err1, "%s", eng_res[1].msg);
        if (!c->err1) cr_assert_eq(eng_res[1].val, c->val1);
        if (c->msg1) cr_assert(strstr(eng_res[1].msg, c->msg1), "%s", eng_res[1].msg);
    }
    still_serves(p, n);
    each_done_once(10 + n);
    async__procpool_free(p);
}

/* Caught: when the scribbler's worker died, every slot whose state word said
 * RUNNING by it was failed, free ones included: a NULL done (SIGSEGV), and
 * slots pushed twice on the free list. */
Test(procpool_untrusted, free_slots_marked_running_by_a_dying_worker, .timeout = 60)
{
    scribble_then_square(&(scribble_case_t){.what = FREE_RUNNING, .square_in = -1, .err0 = ASYNC_EWORKERDIED});
}

/* Caught: a job whose state word named worker 5000 at its deadline had the
 * supervisor index the worker tables with 5000 (a heap overflow of the
 * parent's worker array, ASan's report) and "kill" a garbage pid. */
Test(procpool_untrusted, a_state_word_naming_no_worker_at_the_deadline, .timeout = 60)
{
    scribble_then_square(&(scribble_case_t){.what = NO_SUCH_WORKER, .pause_us = 100000, .square_in = 2,
                                            .deadline_ms = 400, .err1 = ASYNC_ETIMEDOUT,
                                            .msg1 = "state word held 0x138802"});
}

/* Caught: a queued job whose submit ring entry a worker overwrote was never
 * claimed (no deadline: it waited for ever).  The supervisor publishes a
 * queued slot again when the ring has drained without it. */
Test(procpool_untrusted, a_queued_job_whose_ring_entry_was_overwritten_runs, .timeout = 60)
{
    scribble_then_square(&(scribble_case_t){.what = RING_ENTRY, .pause_us = 50000, .square_in = 6, .val1 = 36});
}

static int rewrite_batch(void *ctx, const void *in, size_t n, async__procout_t *out)
{
    (void)ctx, (void)n, (void)out;
    pp_slot_t *s = (pp_slot_t *)((char *)in - offsetof(pp_slot_t, in_inline));
    s->batch = 77;
    usleep(10 * 1000 * 1000);
    return 0;
}

/* Caught: the supervisor read the slot's batch word to choose whom to wake
 * when it failed a direct call at its deadline; the worker had rewritten it,
 * so the batch was woken instead and the calling thread slept for ever. */
Test(procpool_untrusted, a_direct_call_whose_worker_rewrites_its_batch_word_returns, .timeout = 30)
{
    async__procpool_t *p = eng_pool_new(1);
    long in = 0;
    async__procjob_t j = {.fn = (async__anyfn_t)rewrite_batch, .in = &in, .in_len = sizeof in,
                          .out_cap = 8, .deadline = async_deadline_after(ASYNC_MSEC(300)),
                          .done = eng_on_done, .arg = (void *)(intptr_t)0};
    int64_t t0 = async_now();
    cr_assert_eq(async__procpool_call(p, &j), 0);
    cr_assert_lt(async_now() - t0, ASYNC_SEC(8), "the call waited for the job's end");
    cr_assert_eq(eng_res[0].err, ASYNC_ETIMEDOUT, "%s", eng_res[0].msg);
    each_done_once(1);
    async__procpool_free(p);
}

/* --- the heap's block headers ------------------------------------------------------------ */

/* Caught: freeing a shared block trusted its header, which sits in the
 * region: a work function that wrote past the block before it had the
 * parent abort on an assertion (or, without asserts, index its free lists
 * with a garbage class).  Round 15: the overwritten block is reused, its
 * header written again from the parent's records (it was leaked for good,
 * and this test asserted the leak). */
Test(procpool_untrusted, a_work_function_overrunning_a_shared_buffer, .timeout = 60)
{
    async__procpool_t *p = eng_pool_new(1);
    void *a, *b;
    cr_assert_eq(async__procpool_shm_alloc(p, 64, &a), 0);
    cr_assert_eq(async__procpool_shm_alloc(p, 64, &b), 0);
    cr_assert_eq((char *)b - (char *)a, 128, "two blocks of one class, side by side");
    scribble_t sc = {.p = p, .what = HEAP_OVERRUN, .buf = a};
    cr_assert_eq(submit_in(p, scribbler, &sc, sizeof sc, 8, 0, ASYNC_FOREVER), 0);
    eng_wait_done(1);
    async__procpool_shm_free(p, b); /* its header is garbage: freed by our own record */
    async__procpool_shm_free(p, a);
    cr_assert_eq(p->heap.overwritten, 1, "the overwritten canary was not seen");
    void *c, *d;
    cr_assert_eq(async__procpool_shm_alloc(p, 64, &c), 0);
    cr_assert_eq(c, a, "the sound block is reused");
    cr_assert_eq(async__procpool_shm_alloc(p, 64, &d), 0);
    cr_assert_eq(d, b, "the overwritten block is not reused (leaked)");
    uint64_t *hb = (uint64_t *)d - 2, *hc = (uint64_t *)c - 2;
    cr_assert(hb[0] == hc[0] && hb[1] == hc[1], "its header was not written again (%#llx %#llx, a sound one "
              "%#llx %#llx)", (unsigned long long)hb[0], (unsigned long long)hb[1], (unsigned long long)hc[0],
              (unsigned long long)hc[1]);
    for (int i = 0; i < 64; i++) cr_assert_eq(((unsigned char *)d)[i], 0, "byte %d of the reused block", i);
    /* Freed again, sound now, it counts no second overrun. */
    async__procpool_shm_free(p, d);
    cr_assert_eq(p->heap.overwritten, 1);
    cr_assert_eq(async__procpool_shm_alloc(p, 64, &d), 0);
    cr_assert_eq(d, b);
    /* Jobs whose input lives on the heap are freed by our own record. */
    char big[300] = {0};
    big[0] = 7;
    for (int i = 1; i <= 10; i++) cr_assert_eq(submit_in(p, eng_square, big, sizeof big, 8, i, ASYNC_FOREVER), 0);
    eng_wait_done(11);
    for (int i = 1; i <= 10; i++) cr_assert_eq(eng_res[i].val, 49, "job %d: %s", i, eng_res[i].msg);
    each_done_once(11);
    async__procpool_free(p);
}

/* --- the fork server ------------------------------------------------------------------------ */

/* Holds the supervisor (job 0's done), kills the fork server, waits for
 * reap() to say another waiter has reaped it, lets go, and checks that the
 * pool's message still says how the server died. */
static void server_reaped_elsewhere(bool (*reaped)(pid_t))
{
    async__procpool_t *p = eng_pool_new(1);
    eng_hold_job = 0;
    cr_assert_eq(submit(p, eng_square, 3, 0, ASYNC_FOREVER), 0);
    eng_wait_flag(&eng_held);
    pid_t server = async__procpool_server_pid(p);
    cr_assert_eq(kill(server, SIGKILL), 0);
    int64_t until = async_now() + ASYNC_SEC(20);
    while (!reaped(server) && async_now() < until) usleep(1000);
    cr_assert(reaped(server), "the other waiter did not reap it");
    atomic_store(&eng_release, 1);
    char msg[600];
    until = async_now() + ASYNC_SEC(20);
    while (async__procpool_error(p, msg, sizeof msg) == 0 && async_now() < until) usleep(1000);
    cr_assert_eq(async__procpool_error(p, msg, sizeof msg), ASYNC_ECHILD, "%s", msg);
    cr_assert(strstr(msg, "killed by signal 9"), "%s", msg);
    async__procpool_free(p);
}

static bool gone(pid_t pid) { return kill(pid, 0) < 0 && errno == ESRCH; }

/* The leftover of round 12: with SIGCHLD ignored the kernel reaps the
 * server as it dies, waitpid says ECHILD, and the message lost the cause. */
Test(procpool_untrusted, the_fork_servers_exit_cause_survives_sigchld_ignored, .timeout = 60)
{
    signal(SIGCHLD, SIG_IGN);
    server_reaped_elsewhere(gone);
}

static struct ev_loop *evl;
static ev_child evc;
static atomic_int ev_reaped;
static void on_child(struct ev_loop *l, ev_child *w, int revents)
{
    (void)l, (void)revents;
    if (WIFSIGNALED(w->rstatus)) atomic_store(&ev_reaped, w->rpid);
}
static bool ev_took(pid_t pid)
{
    ev_run(evl, EVRUN_NOWAIT);
    return atomic_load(&ev_reaped) == pid;
}

/* Same, with libev's default loop reaping every child as it runs. */
Test(procpool_untrusted, the_fork_servers_exit_cause_survives_libevs_default_loop, .timeout = 60)
{
    evl = ev_default_loop(0);
    ev_child_init(&evc, on_child, 0, 0);
    ev_child_start(evl, &evc);
    server_reaped_elsewhere(ev_took);
    ev_child_stop(evl, &evc);
}

static void malformed(const void *msg, size_t len, const char *want)
{
    async__procpool_t *p = eng_pool_new(2);
    char why[200];
    int fd = eng_server_socket(async__procpool_server_pid(p), false, why, sizeof why);
    if (fd < 0) {
        async__procpool_free(p);
        cr_skip_test("cannot speak as the fork server: %s", why);
    }
    cr_assert_eq(submit(p, eng_sleeper, 3000, 0, ASYNC_FOREVER), 0);
    usleep(100000);
    cr_assert_eq(send(fd, msg, len, MSG_NOSIGNAL), (ssize_t)len);
    close(fd);
    char emsg[600];
    int64_t until = async_now() + ASYNC_SEC(20);
    while (async__procpool_error(p, emsg, sizeof emsg) == 0 && async_now() < until) usleep(1000);
    cr_assert_eq(async__procpool_error(p, emsg, sizeof emsg), ASYNC_ECHILD, "%s", emsg);
    cr_assert(strstr(emsg, want), "%s", emsg);
    cr_assert(strstr(emsg, "the pool killed it"), "%s", emsg);
    eng_wait_done(1);
    cr_assert_eq(eng_res[0].err, ASYNC_ECHILD, "%s", eng_res[0].msg);
    cr_assert_eq(submit(p, eng_square, 1, 1, ASYNC_FOREVER), ASYNC_ECHILD);
    async__procpool_free(p);
    each_done_once(1);
}

/* Caught: a short message ended the read loop but was otherwise ignored. */
Test(procpool_untrusted, a_short_message_from_the_fork_server, .timeout = 60)
{
    uint32_t m[2] = {PP_MSG_EXITED, 0};
    malformed(m, sizeof m, "a message of 8 bytes");
}

/* Caught: recv truncated an oversized message to 16 bytes and believed it
 * (here: worker 0 "exited" while it ran, and a second worker 0 was forked). */
Test(procpool_untrusted, an_oversized_message_from_the_fork_server, .timeout = 60)
{
    pp_msg_t m[2] = {{PP_MSG_EXITED, 0, 0, 9}, {0, 0, 0, 0}};
    malformed(m, sizeof m, "a message of 32 bytes");
}

/* Caught: unknown types were skipped silently. */
Test(procpool_untrusted, an_unknown_message_from_the_fork_server, .timeout = 60)
{
    pp_msg_t m = {99, 0, 0, 0};
    malformed(&m, sizeof m, "unknown type 99");
}

/* Caught: an exit report for a pid that is not the worker's failed the job
 * that worker ran, and started a second worker on its index. */
Test(procpool_untrusted, an_exit_report_for_a_pid_not_the_workers, .timeout = 60)
{
    pp_msg_t m = {PP_MSG_EXITED, 0, 1, 9};
    malformed(&m, sizeof m, "reported worker 0 (pid 1) exited, but that worker has another pid");
}

/* Caught: a start report nobody asked for overwrote a live worker's pid and
 * counted a worker more. */
Test(procpool_untrusted, a_start_report_nobody_asked_for, .timeout = 60)
{
    pp_msg_t m = {PP_MSG_SPAWNED, 1, (int32_t)getpid(), 0};
    malformed(&m, sizeof m, "though none was asked for");
}

/* Caught: a server that shut its socket down but stayed alive (stopped, so
 * that it could not exit) was never killed, and free waited in waitpid for
 * ever. */
/* Caught (ci16, once under ASan): the test below picks the server's socket
 * as its lowest socket descriptor.  The server held it at 10 with 3 to 9
 * free, so a spare's socket arriving in a SPARE landed at 4 until it was
 * moved up: looked at in between, the spare's socket was the one shut
 * down, and the pool saw a stopped server with no spare.  The server now
 * holds its socket at 3, before anything else it opens. */
Test(procpool_untrusted, the_fork_servers_socket_is_its_lowest_descriptor_above_stdio, .timeout = 60)
{
    async__procpool_t *p = eng_pool_new(1);
    pid_t server = async__procpool_server_pid(p);
    char dir[64], path[400], link[64];
    snprintf(dir, sizeof dir, "/proc/%d/fd", (int)server);
    DIR *d = opendir(dir);
    cr_assert(d, "%s: %s", dir, strerror(errno));
    int lowest = -1, sockets = 0;
    for (struct dirent *e; (e = readdir(d));) {
        int fd = atoi(e->d_name);
        if (fd <= 2) continue;
        if (lowest < 0 || fd < lowest) lowest = fd;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        ssize_t n = readlink(path, link, sizeof link - 1);
        if (n > 0 && (link[n] = 0, strncmp(link, "socket:", 7) == 0) && fd == 3) sockets++;
    }
    closedir(d);
    async__procpool_free(p);
    cr_assert_eq(lowest, 3, "the server's lowest descriptor above stdio is %d", lowest);
    cr_assert_eq(sockets, 1, "the server's fd 3 is not a socket");
}

Test(procpool_untrusted, a_fork_server_that_closes_its_socket_but_lives, .timeout = 60)
{
    async__procpool_t *p = eng_pool_new(1);
    pid_t server = async__procpool_server_pid(p);
    char why[200];
    int fd = eng_server_socket(server, false, why, sizeof why);
    if (fd < 0) {
        async__procpool_free(p);
        cr_skip_test("cannot speak as the fork server: %s", why);
    }
    cr_assert_eq(kill(server, SIGSTOP), 0);
    cr_assert_eq(shutdown(fd, SHUT_RDWR), 0);
    close(fd);
    char msg[600];
    int64_t until = async_now() + ASYNC_SEC(20);
    while (async__procpool_error(p, msg, sizeof msg) == 0 && async_now() < until) usleep(1000);
    cr_assert_eq(async__procpool_error(p, msg, sizeof msg), ASYNC_ECHILD, "%s", msg);
    cr_assert(strstr(msg, "closed its socket but did not exit, and the pool killed it"), "%s", msg);
    int64_t t0 = async_now();
    async__procpool_free(p);
    cr_assert_lt(async_now() - t0, ASYNC_SEC(10));
    cr_assert(gone(server) || waitpid(server, NULL, WNOHANG) == -1);
}

/* Caught: with the fork server stopped, the supervisor's sends blocked once
 * its socket held max_dgram_qlen messages (10 here): it stopped in send
 * holding the pool's mutex, so no deadline after that fired, and terminate
 * (which waits for the server's exit reports) never returned. */
Test(procpool_untrusted, a_stopped_fork_server_wedges_neither_deadlines_nor_terminate, .timeout = 90)
{
    enum { N = 16 };
    async__procpool_opts_t o = {.workers = N, .slots = 64, .idle_spin_ns = -1};
    async__procpool_t *p;
    cr_assert_eq(async__procpool_new(&o, &p), 0);
    cr_assert_eq(async__procpool_wait_ready(p, async_deadline_after(ASYNC_SEC(30))), 0);
    pid_t server = async__procpool_server_pid(p);
    cr_assert_eq(kill(server, SIGSTOP), 0);
    int64_t dl = async_deadline_after(ASYNC_MSEC(500));
    for (int i = 0; i < N; i++) cr_assert_eq(submit(p, eng_sleeper, 60000, i, dl), 0);
    eng_wait_done(N);
    for (int i = 0; i < N; i++) cr_assert_eq(eng_res[i].err, ASYNC_ETIMEDOUT, "job %d: %s", i, eng_res[i].msg);
    int64_t t0 = async_now();
    async__procpool_terminate(p);
    cr_assert_lt(async_now() - t0, ASYNC_SEC(30));
    char msg[600];
    cr_assert_eq(async__procpool_error(p, msg, sizeof msg), ASYNC_ECHILD, "%s", msg);
    cr_assert(strstr(msg, "stopped or wedged"), "%s", msg);
    async__procpool_free(p);
    each_done_once(N);
}
/* --- the executor's outcome header ------------------------------------------------------------ */

/* What the process backend puts in front of a job's output rows
 * (lib/exec/process_backend.c's res_t). */
typedef struct outcome {
    int32_t err;
    uint32_t msg_len;
    uint64_t failed_row, result_size, var_size;
    int64_t ns;
} outcome_t;

static atomic_int ex_held, ex_release;

static void hold_cb(async_future_t *f, void *arg)
{
    (void)f, (void)arg;
    atomic_store(&ex_held, 1);
    while (!atomic_load(&ex_release)) usleep(1000);
}

static int slow_ok(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in, (void)in_size, (void)ctx;
    usleep(300000);
    memset(out, 1, out_size);
    return 0;
}

static int fails(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in, (void)in_size, (void)out, (void)out_size, (void)ctx;
    return ASYNC_EINVAL;
}

/* In the worker: rewrites the failed row of the outcome in slot *in. */
static int rewrite_outcome(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out, (void)out_size;
    pp_slot_t *slots = ctx;
    uint32_t victim;
    memcpy(&victim, in, sizeof victim);
    outcome_t o;
    memcpy(&o, slots[victim].out_inline, sizeof o);
    o.failed_row = (uint64_t)1 << 20;
    memcpy(slots[victim].out_inline, &o, sizeof o);
    return 0;
}

/* The pool's region in this process (the memfd's mapping); its slots start
 * at its second page. */
static pp_slot_t *region_slots(void)
{
    FILE *f = fopen("/proc/self/maps", "re");
    char line[512];
    unsigned long lo = 0;
    while (f && fgets(line, sizeof line, f))
        if (strstr(line, "async-procpool") && sscanf(line, "%lx-", &lo) == 1) break;
    if (f) fclose(f);
    cr_assert_neq(lo, 0, "no async-procpool mapping");
    return (pp_slot_t *)(lo + (unsigned long)sysconf(_SC_PAGESIZE));
}

/* Caught: the process backend believed the outcome header in front of a
 * job's rows: a failed row of 2^20 for a one-row job had it copy 2^20 rows
 * of 8 bytes into the job's 8-byte result (a heap overflow in the parent).
 * The header is now checked against the result's length and the job's rows;
 * the job fails with ASYNC_EIO. */
Test(procpool_untrusted, an_outcome_header_naming_a_row_beyond_the_job, .timeout = 60)
{
    async_executor_t *ex;
    /* Three workers: the feeder takes no more jobs than workers while none
     * has finished, and the held one counts until its callbacks return. */
    cr_assert_eq(async_executor_new(&ex, &(async_executor_opts_t){.backend = ASYNC_BACKEND_PROCESSES,
                                                                  .workers = 3}), 0);
    pp_slot_t *slots = region_slots();
    async_future_t *h, *v, *sc;
    async_job_t j = {.fn = slow_ok, .out_size = 8};
    cr_assert_eq(async_executor_submit(&h, ex, &j), 0);
    cr_assert_eq(async_future_on_done(h, hold_cb, NULL), 0);
    eng_wait_flag(&ex_held); /* the pool's supervisor is held in the callback */
    uint32_t holder = UINT32_MAX, victim = UINT32_MAX;
    for (uint32_t i = 0; i < 64; i++)
        if (PP_KIND(atomic_load(&slots[i].state)) == PP_DONE) holder = i;
    cr_assert_neq(holder, UINT32_MAX);
    j = (async_job_t){.fn = fails, .out_size = 8};
    cr_assert_eq(async_executor_submit(&v, ex, &j), 0);
    int64_t until = async_now() + ASYNC_SEC(20);
    while (victim == UINT32_MAX && async_now() < until) {
        for (uint32_t i = 0; i < 64; i++)
            if (i != holder && PP_KIND(atomic_load(&slots[i].state)) == PP_DONE) victim = i;
        usleep(500);
    }
    cr_assert_neq(victim, UINT32_MAX);
    j = (async_job_t){.fn = rewrite_outcome, .in = &victim, .in_size = sizeof victim, .out_size = 8,
                      .ctx = slots};
    cr_assert_eq(async_executor_submit(&sc, ex, &j), 0);
    until = async_now() + ASYNC_SEC(20);
    bool scribbled = false;
    while (!scribbled && async_now() < until) {
        for (uint32_t i = 0; i < 64; i++)
            if (i != holder && i != victim && PP_KIND(atomic_load(&slots[i].state)) == PP_DONE)
                scribbled = true;
        usleep(500);
    }
    cr_assert(scribbled);
    atomic_store(&ex_release, 1);
    cr_assert_eq(async_future_wait(h), 0);
    cr_assert_eq(async_future_wait(sc), 0);
    cr_assert_eq(async_future_wait(v), ASYNC_EIO);
    cr_assert(async_future_message(v) && strstr(async_future_message(v), "names row 1048576 as failed"),
              "%s", async_future_message(v) ? async_future_message(v) : "(none)");
    async_future_unref(h);
    async_future_unref(v);
    async_future_unref(sc);
    async_executor_free(ex);
}
#endif
