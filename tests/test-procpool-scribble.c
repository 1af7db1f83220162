/* Workers against a work function that scribbles over a queued job's slot
 * (round 14): round 13 had the parent check everything a worker writes,
 * but a worker still ran whatever its slot said.  A wild input offset
 * crashed the worker that took the job, a forged function pointer had it
 * jump into garbage, and a changed inline input made it compute a wrong
 * answer that nobody could tell from a right one.  A worker now checks the
 * slot's bounds and its check word (pp_seal, shm_internal.h) before it runs
 * a job, and fails a changed one with ASYNC_EIO and a message that says so.
 * One worker, so that the scribbling job runs while its victim waits. */
#if defined(__SANITIZE_THREAD__)
#include <criterion/criterion.h>
Test(tsan, procpool_scribble_tests_skipped, .timeout = 5)
{
    cr_skip_test("ThreadSanitizer cannot follow the process pool's cross-process hand-overs: this file runs "
                 "under the other builds");
}
#else
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <async.h>
#include "support/procpool_engine.h"

enum what { FN, IN_OFF, IN_LEN, INLINE_INPUT };

typedef struct scribble {
    async__procpool_t *p; /* the parent's pool, whose private layout the worker inherited */
    int what;
} scribble_t;

/* In the worker: waits until a job is queued behind it, then changes that
 * job's slot. */
static int scribbler(void *ctx, const void *in, size_t n, async__procout_t *out)
{
    (void)ctx, (void)n;
    scribble_t sc;
    memcpy(&sc, in, sizeof sc);
    pp_slot_t *slots = sc.p->v.slots;
    int rc = ASYNC_ENOENT;
    for (int k = 0; k < 20000 && rc; k++) {
        for (uint32_t i = 0; i < sc.p->v.nslots; i++) {
            if (atomic_load(&slots[i].state) != PP_QUEUED) continue;
            pp_slot_t *v = &slots[i];
            switch (sc.what) {
            case FN: v->fn = 0x10; break;
            case IN_OFF: v->in_off = (uint64_t)1 << 50; break;
            case IN_LEN: v->in_len = 4000; break;
            case INLINE_INPUT: v->in_inline[0] ^= 1; break;
            }
            rc = 0;
            break;
        }
        if (rc) usleep(1000);
    }
    long ok = 1234;
    memcpy(async__procout_data(out), &ok, sizeof ok);
    return rc;
}

static int submit(async__procpool_t *p, async__procpool_fn fn, const void *in, size_t n, int i)
{
    async__procjob_t j = {.fn = (async__anyfn_t)fn, .in = in, .in_len = n, .out_cap = 8,
                          .deadline = ASYNC_FOREVER, .done = eng_on_done, .arg = (void *)(intptr_t)i};
    return async__procpool_submit(p, &j, NULL);
}

/* The scribbler is running: the victim will queue behind it. */
static void wait_running(async__procpool_t *p)
{
    int64_t until = async_now() + ASYNC_SEC(20);
    for (;;) {
        for (uint32_t i = 0; i < p->v.nslots; i++)
            if (PP_KIND(atomic_load(&p->v.slots[i].state)) == PP_RUNNING) return;
        cr_assert_lt(async_now(), until, "the scribbler never ran");
        usleep(500);
    }
}

static void still_serves(async__procpool_t *p, int first)
{
    for (int i = 0; i < 10; i++) {
        long x = i;
        cr_assert_eq(submit(p, eng_square, &x, sizeof x, first + i), 0);
    }
    eng_wait_done(first + 10);
    for (int i = 0; i < 10; i++) {
        cr_assert_eq(eng_res[first + i].err, 0, "job %d: %s", first + i, eng_res[first + i].msg);
        cr_assert_eq(eng_res[first + i].val, (long)i * i);
    }
    for (int i = 0; i < first + 10; i++) cr_assert_eq(atomic_load(&eng_calls[i]), 1, "job %d", i);
}

static void victim_of(int what, const char *want)
{
    async__procpool_t *p = eng_pool_new(1);
    pid_t worker = async__procpool_worker_pid(p, 0);
    scribble_t sc = {.p = p, .what = what};
    cr_assert_eq(submit(p, scribbler, &sc, sizeof sc, 0), 0);
    wait_running(p);
    long x = 7;
    cr_assert_eq(submit(p, eng_square, &x, sizeof x, 1), 0);
    eng_wait_done(2);
    cr_assert_eq(eng_res[0].err, 0, "the scribbler found no queued job: %s", eng_res[0].msg);
    cr_assert_eq(eng_res[1].err, ASYNC_EIO, "victim: err %d, value %ld, %s", eng_res[1].err, eng_res[1].val, eng_res[1].msg);
    cr_assert(strstr(eng_res[1].msg, "was overwritten in the pool's shared memory before it ran"), "%s",
              eng_res[1].msg);
    cr_assert(strstr(eng_res[1].msg, want), "%s", eng_res[1].msg);
    cr_assert_eq(async__procpool_worker_pid(p, 0), worker, "the worker that found it died");
    still_serves(p, 2);
    async__procpool_free(p);
}

TestSuite(procpool_scribble, .init = NULL);

/* Caught: the worker called the forged pointer and died of SIGSEGV (the
 * job failed as if it had crashed, and the worker was replaced). */
Test(procpool_scribble, a_forged_function_pointer_is_not_called, .timeout = 60)
{
    victim_of(FN, "check word");
}

/* Caught: the worker read its input 2^50 bytes into the region: SIGSEGV. */
Test(procpool_scribble, a_wild_input_offset_is_not_followed, .timeout = 60)
{
    victim_of(IN_OFF, "its input (8 bytes at offset 1125899906842624) lies outside");
}

/* Caught: an inline length of 4,000 had the work function read past its
 * slot (the function here reads 8 bytes, so the job "worked"). */
Test(procpool_scribble, an_inline_length_beyond_the_slot_is_refused, .timeout = 60)
{
    victim_of(IN_LEN, "its input (4000 bytes at offset 0) lies outside");
}

/* Caught: a changed input byte gave 6 * 6 = 36 for the job that asked for
 * 7 * 7, with no error: a wrong answer nobody could see. */
Test(procpool_scribble, a_changed_inline_input_is_not_run, .timeout = 60)
{
    victim_of(INLINE_INPUT, "check word");
}

static async__procpool_t *call_pool;
static void *call_thread(void *arg)
{
    long x = 9;
    async__procjob_t j = {.fn = (async__anyfn_t)eng_square, .in = &x, .in_len = sizeof x, .out_cap = 8,
                          .deadline = ASYNC_FOREVER, .done = eng_on_done, .arg = arg};
    return (void *)(intptr_t)async__procpool_call(call_pool, &j);
}

/* A direct call (its caller waits for the worker's hand-over) whose slot
 * was changed: its caller is told through the supervisor, not left asleep.
 * Caught: the worker jumped to the forged pointer and died. */
Test(procpool_scribble, a_direct_call_whose_slot_was_overwritten, .timeout = 60)
{
    async__procpool_t *p = call_pool = eng_pool_new(1);
    scribble_t sc = {.p = p, .what = FN};
    cr_assert_eq(submit(p, scribbler, &sc, sizeof sc, 0), 0);
    wait_running(p);
    pthread_t t;
    /* The pool refuses a call while jobs are pending, not while they run. */
    cr_assert_eq(pthread_create(&t, NULL, call_thread, (void *)(intptr_t)1), 0);
    void *rc;
    cr_assert_eq(pthread_join(t, &rc), 0);
    cr_assert_eq((intptr_t)rc, 0);
    eng_wait_done(2);
    cr_assert_eq(eng_res[1].err, ASYNC_EIO, "err %d: %s", eng_res[1].err, eng_res[1].msg);
    cr_assert(strstr(eng_res[1].msg, "check word"), "%s", eng_res[1].msg);
    still_serves(p, 2);
    async__procpool_free(p);
}
#endif
