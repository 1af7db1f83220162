/* meeting's --scale as a hostile user gives it: a value that is not a
 * positive number of a sane size is refused at once (exit 2).  NaN passed
 * the "scale <= 0" check and the meeting ran with every delay NaN seconds;
 * inf or 1e9 made the delays' nanoseconds overflow int64_t, and 1e9 slept
 * for centuries. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MEETING ASYNC_OUT_DIR "/demos/meeting/meeting"

TestSuite(demos_meeting_args, .timeout = 60);

/* Runs meeting --scale value --quiet for at most 5 s; its wait status, or
 * -1 if it was still running (then killed). */
static int run_scale(const char *value)
{
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stdout) || !freopen("/dev/null", "w", stderr)) _exit(126);
        execl(MEETING, "meeting", "--scale", value, "--quiet", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 500; i++) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) return st;
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
    }
    if (pid > 0) kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

Test(demos_meeting_args, scale_must_be_a_sane_positive_number)
{
    static const char *const bad[] = {"nan", "-nan", "NAN", "inf", "infinity", "1e9", "1e300", "1e-400", "", NULL};
    for (int i = 0; bad[i]; i++) {
        int st = run_scale(bad[i]);
        cr_expect(st != -1, "--scale '%s' ran on for 5 s", bad[i]);
        cr_expect(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 2, "--scale '%s': wait status %#x", bad[i], st);
    }
    /* A tenth of a tenth still runs to its end. */
    int st = run_scale("0.01");
    cr_expect(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "--scale 0.01: wait status %#x", st);
}
