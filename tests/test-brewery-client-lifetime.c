/* The server child dies with the brewery demo (issue 10, defect 7): killed by
 * SIGTERM, SIGINT or SIGKILL in any mode, the demo leaves no brewery-server
 * (and no worker of its process pool) behind. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support/brewery.h"

TestSuite(brewery_client, .fini = cli_server_stop, .timeout = 30);

/* The pid of the brewery-server that `parent` started, once it has exec'd;
 * -1 if none shows up within the deadline. */
static pid_t server_child_of(pid_t parent, int64_t deadline_ms)
{
    for (int64_t waited = 0; waited < deadline_ms; waited += 20) {
        DIR *d = opendir("/proc");
        cr_assert_not_null(d);
        struct dirent *e;
        pid_t found = -1;
        while (found < 0 && (e = readdir(d))) {
            char path[300], buf[512];
            snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
            FILE *f = fopen(path, "r");
            if (!f) continue;
            size_t len = fread(buf, 1, sizeof buf - 1, f);
            fclose(f);
            buf[len] = 0;
            /* pid (comm) state ppid ...; comm has no ')' here. */
            int pid, ppid;
            char comm[64], state;
            if (sscanf(buf, "%d (%63[^)]) %c %d", &pid, comm, &state, &ppid) == 4 &&
                ppid == parent && strcmp(comm, "brewery-server") == 0)
                found = pid;
        }
        closedir(d);
        if (found > 0) return found;
        usleep(20 * 1000);
    }
    return -1;
}

/* In a forked child before exec: the stop signals back to their default
 * action, and no signal blocked. */
static void child_default_signals(void)
{
    static const int sigs[] = {SIGTERM, SIGINT, SIGHUP};
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    sigemptyset(&dfl.sa_mask);
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) sigaction(sigs[i], &dfl, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

/* Starts the demo (which starts its own server, slow enough that it is
 * mid-run when `sig` arrives), sends it `sig`, and checks that the server
 * is gone within a bound.  This process is a subreaper, so a server the
 * demo left behind becomes our child instead of vanishing into PID 1.
 * `clean`: the demo itself must have stopped and reaped the server before
 * it exited.  `ignored` (0: none): a stop signal the demo's caller ignores,
 * sent first; the demo and its server must both stay up through it. */
static void server_dies_after(int ignored, int sig, bool clean, const char *run_mode)
{
    cr_assert_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    pid_t demo_pid = fork();
    cr_assert_geq(demo_pid, 0);
    if (demo_pid == 0) {
        /* The demo keeps a stop signal its caller ignores (nohup; and a
         * command run with `&` by a shell without job control, as `make
         * test > log &` in a script is, inherits SIGINT ignored), and a
         * blocked one stays pending: each test here is about a caller that
         * neither ignores nor blocks `sig`, so it says so instead of
         * inheriting whatever the runner's shell left. */
        child_default_signals();
        if (ignored) signal(ignored, SIG_IGN);
        /* A failed assertion ends this test at once: the demo goes with it
         * rather than run on for its 5 s answers. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        execl(DEMO, DEMO, "--mode", run_mode, "--latency", "5000", "--json", "/dev/null",
              (char *)NULL);
        _exit(127);
    }
    pid_t srv = server_child_of(demo_pid, 10000);
    cr_assert_gt(srv, 0, "the demo started no brewery-server");
    usleep(300 * 1000); /* the demo now waits on the server's first answer */
    if (ignored) {
        cr_assert_eq(kill(demo_pid, ignored), 0);
        usleep(500 * 1000);
        int st;
        cr_assert_eq(waitpid(demo_pid, &st, WNOHANG), 0,
                     "the demo ended on %s, which its caller ignores (status %#x)",
                     strsignal(ignored), st);
        cr_assert_eq(kill(srv, 0), 0, "brewery-server ended on the demo's ignored %s",
                     strsignal(ignored));
    }
    cr_assert_eq(kill(demo_pid, sig), 0);
    int st = cli_wait_deadline(demo_pid, 10000);
    cr_assert_neq(st, -1, "the demo did not exit after %s", strsignal(sig));
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == sig, "the demo's status %#x", st);
    /* Not our child: the demo reaped it.  Our child: it was orphaned, and
     * must die within the bound. */
    pid_t r = waitpid(srv, &st, WNOHANG);
    if (r < 0) {
        cr_assert_eq(errno, ECHILD);
    } else {
        if (r == 0) st = cli_wait_deadline(srv, 10000);
        if (st == -1) kill(srv, SIGKILL), waitpid(srv, NULL, 0);
        cr_assert_neq(st, -1, "brewery-server %d outlived the demo's %s", (int)srv,
                      strsignal(sig));
        cr_assert(!clean, "the demo exited on %s without reaping brewery-server", strsignal(sig));
    }
    /* Nothing else the demo started (the process pool's workers) survives
     * it either: every orphan handed to us dies within the bound. */
    for (int waited = 0;; waited += 10) {
        pid_t o = waitpid(-1, NULL, WNOHANG);
        if (o < 0 && errno == ECHILD) break;
        cr_assert_lt(waited, 10000, "a process of the demo outlived it");
        if (o == 0) usleep(10 * 1000);
    }
}

static void server_dies_with_client(int sig, bool clean, const char *run_mode)
{
    server_dies_after(0, sig, clean, run_mode);
}

Test(brewery_client, server_dies_on_sigterm) { server_dies_with_client(SIGTERM, true, "serial"); }

Test(brewery_client, server_dies_on_sigint) { server_dies_with_client(SIGINT, true, "serial"); }

/* nohup and `cmd &` without job control: a stop signal the caller ignores
 * neither stops the demo nor its server; SIGTERM still stops both. */
Test(brewery_client, sigint_the_caller_ignores_stays_ignored)
{
    server_dies_after(SIGINT, SIGTERM, true, "serial");
}

Test(brewery_client, sighup_the_caller_ignores_stays_ignored)
{
    server_dies_after(SIGHUP, SIGTERM, true, "serial");
}

Test(brewery_client, server_dies_on_sigkill) { server_dies_with_client(SIGKILL, false, "serial"); }

/* The handler must run whichever thread takes the signal, and with the
 * executor's workers and the loop in place. */
Test(brewery_client, server_dies_on_sigterm_in_threads)
{
    server_dies_with_client(SIGTERM, true, "threads");
}

Test(brewery_client, server_dies_on_sigterm_in_processes)
{
    server_dies_with_client(SIGTERM, true, "processes");
}

Test(brewery_client, server_dies_on_sigterm_in_async)
{
    server_dies_with_client(SIGTERM, true, "async");
}

Test(brewery_client, server_dies_on_sigkill_in_processes)
{
    server_dies_with_client(SIGKILL, false, "processes");
}
