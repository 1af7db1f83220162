/* A fork server that stops answering while the pool runs (round 14).  A
 * SIGSTOPped or wedged server reports no worker's death, so until round 14
 * a worker that died then was never replaced (the pool ran one worker short
 * for as long as the server was stopped) and the job it ran never ended.
 * The supervisor now pings a quiet server, and one silent for 3 s after the
 * ping is killed (its workers die with it) and replaced by its spare, a
 * clone of itself made ahead of need (lib/exec/procpool/server_watch.c);
 * with no spare ready the pool breaks with ASYNC_ECHILD and says why.
 * Driven through the engine's private API, as tests/test-procpool.c. */
#if defined(__SANITIZE_THREAD__)
#include <criterion/criterion.h>
Test(tsan, procpool_server_tests_skipped, .timeout = 5)
{
    cr_skip_test("ThreadSanitizer cannot follow the process pool's cross-process hand-overs: this file runs "
                 "under the other builds");
}
#else
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <async.h>
#include "support/procpool_engine.h"

/* The spare, once the server has made it: our child, not the server's.
 * ROUND14_BEFORE builds this file against the code before round 14, which
 * had no spare, to show that each test failed there. */
#ifdef ROUND14_BEFORE
static pid_t wait_spare(async__procpool_t *p, pid_t not)
{
    (void)p, (void)not;
    return -1;
}
#else
static pid_t wait_spare(async__procpool_t *p, pid_t not) { return eng_wait_spare(p, not); }
#endif

static void still_serves(async__procpool_t *p, int first)
{
    for (int i = 0; i < 10; i++) cr_assert_eq(eng_submit(p, eng_square, i, first + i), 0);
    eng_wait_done(first + 10);
    for (int i = 0; i < 10; i++) {
        cr_assert_eq(eng_res[first + i].err, 0, "job %d: %s", first + i, eng_res[first + i].msg);
        cr_assert_eq(eng_res[first + i].val, (long)i * i);
    }
}

static void no_child_left(void)
{
    cr_assert_eq(waitpid(-1, NULL, WNOHANG), -1, "a child of ours is left (a zombie?)");
    cr_assert_eq(errno, ECHILD);
}

TestSuite(procpool_server);

/* Caught: with the server stopped, the killed worker was never replaced
 * (the test waited 20 s for its worker count to come back); twice, so that
 * the spare's own spare is checked too. */
Test(procpool_server, a_stopped_server_is_replaced_and_the_pool_gets_its_workers_back, .timeout = 120)
{
    enum { W = 2 };
    async__procpool_t *p = eng_pool_new(W);
    int next = 0;
    for (int round = 0; round < 2; round++) {
        pid_t server = async__procpool_server_pid(p), spare = wait_spare(p, server), old[W];
        for (unsigned w = 0; w < W; w++) old[w] = async__procpool_worker_pid(p, w);
        eng_signal(server, SIGSTOP);
        eng_signal(old[0], SIGKILL);
        /* Work goes on meanwhile, on the worker that is left. */
        for (int i = 0; i < 10; i++) cr_assert_eq(eng_submit(p, eng_square, i + 1, next + i), 0);
        int64_t t0 = async_now(), until = t0 + ASYNC_SEC(20);
        while (async__procpool_server_pid(p) == server && async_now() < until) usleep(1000);
        cr_assert_eq(async__procpool_server_pid(p), spare, "the stopped server %d was not replaced by its spare",
                     (int)server);
        /* Every worker is new, and the new server's child. */
        for (unsigned w = 0; w < W; w++) {
            pid_t now;
            while (((now = async__procpool_worker_pid(p, w)) == 0 || now == old[w] ||
                    eng_ppid_of(now) != spare) && async_now() < until)
                usleep(1000);
            cr_assert(now != 0 && now != old[w] && eng_ppid_of(now) == spare, "worker %u was not replaced", w);
        }
        cr_assert_eq(async__procpool_wait_ready(p, until), 0);
        cr_log_info("round %d: the stopped server was replaced and its workers started again in %.1f s", round,
                    (double)(async_now() - t0) / 1e9);
        eng_wait_done(next + 10);
        for (int i = 0; i < 10; i++) {
            cr_assert_eq(eng_res[next + i].err, 0, "job %d: %s", next + i, eng_res[next + i].msg);
            cr_assert_eq(eng_res[next + i].val, (long)(i + 1) * (i + 1));
        }
        next += 10;
        /* The old server is reaped, by us: no zombie of it is left. */
        cr_assert_eq(kill(server, 0), -1);
        cr_assert_eq(async__procpool_error(p, NULL, 0), 0);
        still_serves(p, next);
        next += 10;
    }
    for (int i = 0; i < next; i++) cr_assert_eq(atomic_load(&eng_calls[i]), 1, "job %d", i);
    async__procpool_free(p);
    no_child_left();
}

/* Caught: the job of a worker that the stopped server's death took down
 * never ended (no deadline); it fails now with the reason. */
Test(procpool_server, a_job_running_when_its_server_is_replaced_fails_with_the_reason, .timeout = 60)
{
    async__procpool_t *p = eng_pool_new(1);
    pid_t server = async__procpool_server_pid(p), spare = wait_spare(p, server);
    cr_assert_eq(eng_submit(p, eng_sleeper, 30000, 0), 0);
    usleep(100000);
    eng_signal(server, SIGSTOP);
    eng_wait_done(1);
    cr_assert_eq(eng_res[0].err, ASYNC_ECHILD, "%s", eng_res[0].msg);
    cr_assert(strstr(eng_res[0].msg, "did not answer for 3 s (it is stopped or wedged)"), "%s", eng_res[0].msg);
    char want[64];
    snprintf(want, sizeof want, "its spare (pid %d) took over", (int)spare);
    cr_assert(strstr(eng_res[0].msg, want), "%s", eng_res[0].msg);
    cr_assert(strstr(eng_res[0].msg, "died with it"), "%s", eng_res[0].msg);
    still_serves(p, 1);
    async__procpool_free(p);
    no_child_left();
}

/* With the spare stopped too, the pool cannot get a worker again: it is
 * broken with the reason (and free does not wait for either of them). */
Test(procpool_server, a_stopped_server_with_a_stopped_spare_breaks_the_pool, .timeout = 90)
{
    async__procpool_t *p = eng_pool_new(1);
    pid_t server = async__procpool_server_pid(p), spare = wait_spare(p, server);
    pid_t worker = async__procpool_worker_pid(p, 0);
    eng_signal(spare, SIGSTOP);
    eng_signal(server, SIGSTOP);
    eng_signal(worker, SIGKILL);
    cr_assert_eq(eng_submit(p, eng_square, 3, 0), 0);
    char msg[600];
    int64_t until = async_now() + ASYNC_SEC(40);
    while (async__procpool_error(p, msg, sizeof msg) == 0 && async_now() < until) usleep(1000);
    cr_assert_eq(async__procpool_error(p, msg, sizeof msg), ASYNC_ECHILD, "%s", msg);
    cr_assert(strstr(msg, "did not answer the pool for 3 s (it is stopped or wedged), and no spare fork server "
                          "was ready to take over"), "%s", msg);
    eng_wait_done(1);
    cr_assert_eq(eng_res[0].err, ASYNC_ECHILD, "%s", eng_res[0].msg);
    int64_t t0 = async_now();
    async__procpool_free(p);
    cr_assert_lt(async_now() - t0, ASYNC_SEC(15));
    no_child_left();
}

/* A server stopped for a moment and continued is no reason to replace it. */
Test(procpool_server, a_server_stopped_briefly_is_kept, .timeout = 60)
{
    async__procpool_t *p = eng_pool_new(1);
    pid_t server = async__procpool_server_pid(p);
    wait_spare(p, server);
    eng_signal(server, SIGSTOP);
    usleep(1500000);
    eng_signal(server, SIGCONT);
    usleep(6000000);
    cr_assert_eq(async__procpool_server_pid(p), server);
    cr_assert_eq(async__procpool_error(p, NULL, 0), 0);
    still_serves(p, 0);
    async__procpool_free(p);
    no_child_left();
}
#endif
