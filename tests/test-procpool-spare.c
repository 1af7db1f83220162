/* The process pool's spare fork server attacked (round 14, spare14): the
 * spare is a clone the server makes of itself (clone(CLONE_PARENT), so the
 * pool's own child), and the server reports its pid.  A server killed
 * after the clone and before its report left the spare unknown to the
 * pool: free told it to quit and never reaped it (a zombie for the rest of
 * the program), and one stopped there was given up on with no spare ready
 * (the pool broke).  The spare now says its own pid first on its own socket.
 * The window is made wide with ptrace: the test traces the server and
 * kills it in its fork-event stop.  Driven through the engine's private
 * API, as tests/test-procpool-server.c. */
#if defined(__SANITIZE_THREAD__)
#include <criterion/criterion.h>
Test(tsan, procpool_spare_tests_skipped, .timeout = 5)
{
    cr_skip_test("ThreadSanitizer cannot follow the process pool's cross-process hand-overs: this file runs "
                 "under the other builds");
}
#else
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>
#include <async.h>
#include "support/procpool_engine.h"

/* The next ptrace stop of pid (a tracee of ours), within 20 s. */
static int wait_stop(pid_t pid)
{
    int64_t until = async_now() + ASYNC_SEC(20);
    int st;
    pid_t r;
    while ((r = waitpid(pid, &st, __WALL | WNOHANG)) == 0 && async_now() < until) usleep(1000);
    cr_assert_eq(r, pid, "no stop of %d: %s", (int)pid, r < 0 ? strerror(errno) : "timed out");
    cr_assert(WIFSTOPPED(st), "%d: status %#x", (int)pid, st);
    return st;
}

TestSuite(procpool_spare);

/* Caught: the spare outlived free as a zombie (waitpid(-1) found it after
 * free: its server had died before reporting it, so the pool never knew
 * its pid). */
Test(procpool_spare, a_server_killed_before_it_reports_its_spare_leaves_no_zombie, .timeout = 60)
{
    async__procpool_t *p = eng_pool_new(1);
    pid_t server = async__procpool_server_pid(p), spare = eng_wait_spare(p, server);
    cr_assert_gt(server, 0);
    if (ptrace(PTRACE_SEIZE, server, 0, PTRACE_O_TRACEFORK | PTRACE_O_TRACECLONE) != 0) {
        int e = errno;
        async__procpool_free(p);
        cr_skip_test("ptrace(PTRACE_SEIZE) of the fork server: %s", strerror(e));
    }
    /* The pool reaps the dead spare and asks for another a second later:
     * the server stops at that clone, its child made, its report not sent. */
    eng_signal(spare, SIGKILL);
    int st = wait_stop(server);
    cr_assert(st >> 8 == (SIGTRAP | (PTRACE_EVENT_FORK << 8)) || st >> 8 == (SIGTRAP | (PTRACE_EVENT_CLONE << 8)),
              "the server stopped with status %#x, not at a fork", st);
    unsigned long msg = 0;
    cr_assert_eq(ptrace(PTRACE_GETEVENTMSG, server, 0, &msg), 0);
    pid_t child = (pid_t)msg;
    cr_assert_gt(child, 0);
    cr_assert_eq(eng_ppid_of(child), getpid(), "the server's new child %d is not the spare (not our child)", (int)child);
    eng_signal(server, SIGKILL);
    wait_stop(child); /* its first stop as a tracee of ours */
    cr_assert_eq(ptrace(PTRACE_DETACH, child, 0, 0), 0);
    cr_assert_eq(READ_ONCE(p->spare_pid), 0, "the pool knew the spare's pid from its server");
    char why[600];
    int64_t until = async_now() + ASYNC_SEC(20);
    while (async__procpool_error(p, why, sizeof why) == 0 && async_now() < until) usleep(1000);
    cr_assert_eq(async__procpool_error(p, why, sizeof why), ASYNC_ECHILD, "%s", why);
    cr_log_info("%s", why);
    async__procpool_free(p);
    cr_assert_eq(kill(child, 0), -1, "the spare %d is left after free (ppid %d)", (int)child, eng_ppid_of(child));
    pid_t r = waitpid(-1, NULL, WNOHANG);
    cr_assert_eq(r, -1, "a child of ours is left after free: %d (the spare was %d)", (int)r, (int)child);
    cr_assert_eq(errno, ECHILD);
}
/* The application reaps children itself, waitpid(-1) in a thread of its
 * own, and so takes the spare the test kills: the pool notices (its
 * waitpid says ECHILD), makes another, and that one replaces a stopped
 * server; after free no child is left. */
static atomic_bool reaping;
static atomic_int reaped_spare;
static pid_t killed_spare;

static void *reaper(void *arg)
{
    (void)arg;
    while (atomic_load(&reaping)) {
        pid_t r = waitpid(-1, NULL, WNOHANG);
        if (r > 0 && r == killed_spare) atomic_store(&reaped_spare, 1);
        usleep(200);
    }
    return NULL;
}

Test(procpool_spare, a_spare_the_application_reaps_is_made_again_and_takes_over, .timeout = 60)
{
    async__procpool_t *p = eng_pool_new(1);
    pid_t server = async__procpool_server_pid(p), spare = eng_wait_spare(p, server);
    killed_spare = spare;
    atomic_store(&reaping, true);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, reaper, NULL), 0);
    eng_signal(spare, SIGKILL);
    int64_t until = async_now() + ASYNC_SEC(20);
    while (!atomic_load(&reaped_spare) && async_now() < until) usleep(1000);
    cr_assert(atomic_load(&reaped_spare), "the application's waitpid(-1) did not take the spare");
    pid_t again = eng_wait_spare(p, spare);
    cr_assert_neq(again, spare);
    eng_signal(server, SIGSTOP);
    while (async__procpool_server_pid(p) == server && async_now() < until) usleep(1000);
    cr_assert_eq(async__procpool_server_pid(p), again, "the stopped server was not replaced by the new spare");
    cr_assert_eq(async__procpool_wait_ready(p, until), 0);
    for (long i = 0; i < 8; i++) {
        async__procjob_t j = {.fn = (async__anyfn_t)eng_square, .in = &i, .in_len = sizeof i, .out_cap = 8,
                              .deadline = ASYNC_FOREVER, .done = eng_on_done, .arg = (void *)(intptr_t)i};
        cr_assert_eq(async__procpool_submit(p, &j, NULL), 0);
    }
    while (atomic_load(&eng_ndone) < 8 && async_now() < until) usleep(1000);
    cr_assert_eq(atomic_load(&eng_ndone), 8);
    for (int i = 0; i < 8; i++) {
        cr_assert_eq(eng_res[i].err, 0, "job %d", i);
        cr_assert_eq(eng_res[i].val, (long)i * i);
    }
    cr_assert_eq(async__procpool_error(p, NULL, 0), 0);
    atomic_store(&reaping, false);
    pthread_join(t, NULL);
    async__procpool_free(p);
    pid_t r = waitpid(-1, NULL, WNOHANG);
    cr_assert_eq(r, -1, "a child of ours is left after free: %d", (int)r);
    cr_assert_eq(errno, ECHILD);
}
/* Caught: a server held stopped (here by ptrace, as a debugger would) after
 * it cloned its spare and before it said so was given up on with "no spare
 * fork server was ready to take over", and the pool broke, though its
 * spare was idle and ready; the spare's own word now lets it take over. */
Test(procpool_spare, a_server_stopped_before_it_reports_its_spare_is_replaced_by_it, .timeout = 60)
{
    async__procpool_t *p = eng_pool_new(1);
    pid_t server = async__procpool_server_pid(p), spare = eng_wait_spare(p, server);
    cr_assert_gt(server, 0);
    if (ptrace(PTRACE_SEIZE, server, 0, PTRACE_O_TRACEFORK | PTRACE_O_TRACECLONE) != 0) {
        int e = errno;
        async__procpool_free(p);
        cr_skip_test("ptrace(PTRACE_SEIZE) of the fork server: %s", strerror(e));
    }
    eng_signal(spare, SIGKILL);
    int st = wait_stop(server);
    cr_assert(st >> 8 == (SIGTRAP | (PTRACE_EVENT_FORK << 8)) || st >> 8 == (SIGTRAP | (PTRACE_EVENT_CLONE << 8)),
              "the server stopped with status %#x, not at a fork", st);
    unsigned long msg = 0;
    cr_assert_eq(ptrace(PTRACE_GETEVENTMSG, server, 0, &msg), 0);
    pid_t child = (pid_t)msg;
    cr_assert_gt(child, 0);
    cr_assert_eq(eng_ppid_of(child), getpid(), "the server's new child %d is not the spare", (int)child);
    wait_stop(child);
    cr_assert_eq(ptrace(PTRACE_DETACH, child, 0, 0), 0);
    /* The server stays in its stop; its worker's death goes unreported. */
    pid_t worker = async__procpool_worker_pid(p, 0);
    eng_signal(worker, SIGKILL);
    int64_t until = async_now() + ASYNC_SEC(30);
    while (async__procpool_server_pid(p) == server && async__procpool_error(p, NULL, 0) == 0 && async_now() < until)
        usleep(1000);
    char why[600] = "";
    cr_assert_eq(async__procpool_error(p, why, sizeof why), 0, "%s", why);
    cr_assert_eq(async__procpool_server_pid(p), child, "the stopped server was not replaced by its spare %d",
                 (int)child);
    cr_assert_eq(async__procpool_wait_ready(p, until), 0);
    for (long i = 0; i < 8; i++) {
        async__procjob_t j = {.fn = (async__anyfn_t)eng_square, .in = &i, .in_len = sizeof i, .out_cap = 8,
                              .deadline = ASYNC_FOREVER, .done = eng_on_done, .arg = (void *)(intptr_t)i};
        cr_assert_eq(async__procpool_submit(p, &j, NULL), 0);
    }
    while (atomic_load(&eng_ndone) < 8 && async_now() < until) usleep(1000);
    cr_assert_eq(atomic_load(&eng_ndone), 8);
    for (int i = 0; i < 8; i++) {
        cr_assert_eq(eng_res[i].err, 0, "job %d", i);
        cr_assert_eq(eng_res[i].val, (long)i * i);
    }
    async__procpool_free(p);
    pid_t r = waitpid(-1, NULL, WNOHANG);
    cr_assert_eq(r, -1, "a child of ours is left after free: %d", (int)r);
    cr_assert_eq(errno, ECHILD);
}
#endif
