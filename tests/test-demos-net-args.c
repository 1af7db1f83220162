/* echo-server's and chat's numbers as a hostile user gives them: plain
 * digits in range or exit 2 at once.  An empty --port read as 0 and the
 * server listened on a free port of its choosing; a --drain-ms past
 * LONG_MAX (strtol's ERANGE, unchecked) or past a day overflowed its
 * nanoseconds, and the server started. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

TestSuite(demos_net_args, .timeout = 60);

/* Runs demos/net/prog opt value for at most 3 s; its wait status, or -1
 * if it was still running (then killed). */
static int run(const char *prog, const char *opt, const char *value)
{
    char path[512];
    snprintf(path, sizeof path, "%s/demos/net/%s", ASYNC_OUT_DIR, prog);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stdout) || !freopen("/dev/null", "w", stderr)) _exit(126);
        execl(path, prog, opt, value, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 300; i++) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) return st;
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
    }
    if (pid > 0) kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

Test(demos_net_args, numbers_are_plain_digits_in_range)
{
    static const struct {
        const char *prog, *opt, *value;
    } bad[] = {
        {"echo-server", "--port", ""},
        {"echo-server", "--port", " 5"},
        {"echo-server", "--drain-ms", ""},
        {"echo-server", "--drain-ms", "99999999999999999999"},
        {"echo-server", "--drain-ms", "9223372036854775807"},
        {"echo-server", "--drain-ms", "86400001"},
        {"chat", "--port", ""},
        {"chat", "--port", "+80"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int st = run(bad[i].prog, bad[i].opt, bad[i].value);
        cr_expect(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 2, "%s %s '%s': %s (wait status %#x)", bad[i].prog,
                  bad[i].opt, bad[i].value, st == -1 ? "it started" : "not a usage error", st);
    }
}
