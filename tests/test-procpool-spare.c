/* The process pool's spare fork server attacked (round 14, spare14): the
 * spare is a clone the server makes of itself (clone(CLONE_PARENT), so the
 * pool's own child), and the server reports its pid.  A server killed
 * after the clone and before its report left the spare unknown to the
 * pool: free told it to quit and never reaped it (a zombie for the rest of
 * the program).  The spare now says its own pid first on its own socket.
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
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>
#include <async.h>
#include "exec/procpool/parent_internal.h"

static async__procpool_t *pool_new(unsigned workers)
{
    async__procpool_opts_t o = {.workers = workers, .slots = 16, .idle_spin_ns = -1};
    async__procpool_t *p;
    cr_assert_eq(async__procpool_new(&o, &p), 0);
    cr_assert_eq(async__procpool_wait_ready(p, async_deadline_after(ASYNC_SEC(20))), 0);
    return p;
}

static int ppid_of(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *rp = strrchr(buf, ')');
    char state;
    int ppid;
    if (!rp || sscanf(rp + 1, " %c %d", &state, &ppid) != 2) return -1;
    return ppid;
}

static pid_t wait_spare(async__procpool_t *p, pid_t not)
{
    int64_t until = async_now() + ASYNC_SEC(20);
    pid_t s;
    while (((s = READ_ONCE(p->spare_pid)) <= 0 || s == not) && async_now() < until) usleep(1000);
    cr_assert_gt(s, 0, "no spare fork server");
    cr_assert_eq(ppid_of(s), getpid(), "the spare %d is not our child", (int)s);
    return s;
}

/* kill() for a pool's process: a pid of 0 or below would signal our
 * process group or every process we may signal. */
static void signal_pid(pid_t pid, int sig)
{
    cr_assert_gt(pid, 0, "no such process of the pool");
    cr_assert_eq(kill(pid, sig), 0);
}

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
    async__procpool_t *p = pool_new(1);
    pid_t server = async__procpool_server_pid(p), spare = wait_spare(p, server);
    cr_assert_gt(server, 0);
    if (ptrace(PTRACE_SEIZE, server, 0, PTRACE_O_TRACEFORK | PTRACE_O_TRACECLONE) != 0) {
        int e = errno;
        async__procpool_free(p);
        cr_skip_test("ptrace(PTRACE_SEIZE) of the fork server: %s", strerror(e));
    }
    /* The pool reaps the dead spare and asks for another a second later:
     * the server stops at that clone, its child made, its report not sent. */
    signal_pid(spare, SIGKILL);
    int st = wait_stop(server);
    cr_assert(st >> 8 == (SIGTRAP | (PTRACE_EVENT_FORK << 8)) || st >> 8 == (SIGTRAP | (PTRACE_EVENT_CLONE << 8)),
              "the server stopped with status %#x, not at a fork", st);
    unsigned long msg = 0;
    cr_assert_eq(ptrace(PTRACE_GETEVENTMSG, server, 0, &msg), 0);
    pid_t child = (pid_t)msg;
    cr_assert_gt(child, 0);
    cr_assert_eq(ppid_of(child), getpid(), "the server's new child %d is not the spare (not our child)", (int)child);
    signal_pid(server, SIGKILL);
    wait_stop(child); /* its first stop as a tracee of ours */
    cr_assert_eq(ptrace(PTRACE_DETACH, child, 0, 0), 0);
    cr_assert_eq(READ_ONCE(p->spare_pid), 0, "the pool knew the spare's pid from its server");
    char why[600];
    int64_t until = async_now() + ASYNC_SEC(20);
    while (async__procpool_error(p, why, sizeof why) == 0 && async_now() < until) usleep(1000);
    cr_assert_eq(async__procpool_error(p, why, sizeof why), ASYNC_ECHILD, "%s", why);
    cr_log_info("%s", why);
    async__procpool_free(p);
    cr_assert_eq(kill(child, 0), -1, "the spare %d is left after free (ppid %d)", (int)child, ppid_of(child));
    pid_t r = waitpid(-1, NULL, WNOHANG);
    cr_assert_eq(r, -1, "a child of ours is left after free: %d (the spare was %d)", (int)r, (int)child);
    cr_assert_eq(errno, ECHILD);
}
#endif
