/* The demos under valgrind's memcheck, with their forked workers and the
 * brewery-server the brewery client starts: no byte definitely or
 * indirectly lost, no invalid read, write, free or jump, in any process.
 * Each run's processes write their own log (--log-file=...%p); the test
 * reads every log, so a leak in a child that exits 0 still fails it.
 *
 * Skipped, by name, under a sanitizer (valgrind cannot run ASan or TSan
 * binaries) and when valgrind is missing (scripts/packages lists it, so CI
 * fails such a skip). */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <async.h>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define UNDER_SANITIZER 1
#else
#define UNDER_SANITIZER 0
#endif

#define DEMO(path) ASYNC_OUT_DIR "/demos/" path

static bool have_valgrind(void)
{
    return system("valgrind --version >/dev/null 2>&1") == 0;
}

/* Valgrind's verdict in one log: NULL when clean, else the offending line. */
static const char *log_fault(const char *text)
{
    static const char *const bad[] = {"definitely lost: ", "indirectly lost: ", "ERROR SUMMARY: "};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        for (const char *p = strstr(text, bad[i]); p; p = strstr(p + 1, bad[i])) {
            const char *n = p + strlen(bad[i]);
            if (*n != '0') return p;
        }
    }
    return NULL;
}

/* Reads every log in dir, fails the test naming the first fault, and
 * returns how many logs it read. */
static int check_logs(const char *dir)
{
    DIR *d = opendir(dir);
    cr_assert(d, "%s", dir);
    int logs = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strstr(e->d_name, ".log")) continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "r");
        cr_assert(f, "%s", path);
        static char text[1 << 20];
        size_t n = fread(text, 1, sizeof text - 1, f);
        text[n] = 0;
        fclose(f);
        const char *fault = log_fault(text);
        cr_assert(!fault, "%s: %.200s\n%.4000s", e->d_name, fault, text);
        logs++;
    }
    closedir(d);
    return logs;
}

typedef struct demo_run {
    const char *name;
    const char *argv[8];
    int exit_code; /* what the demo itself exits with */
} demo_run_t;

Test(demos_valgrind, no_leak_or_invalid_access_in_any_demo_process, .timeout = 600)
{
    if (UNDER_SANITIZER) cr_skip_test("valgrind cannot run a sanitizer's binaries");
    if (!have_valgrind()) cr_skip_test("missing package valgrind: valgrind --version failed");
    char dir[] = "/tmp/test-demos-valgrind-XXXXXX";
    cr_assert(mkdtemp(dir));
    char json[600];
    snprintf(json, sizeof json, "%s/async.json", dir);
    const demo_run_t runs[] = {
        {"tour", {DEMO("tour/tour")}, 0},
        {"meeting", {DEMO("meeting/meeting"), "--scale", "0.1"}, 0},
        {"brewery", {DEMO("brewery/brewery"), "--mode", "serial,async", "--json", json}, 0},
        {"pipes", {DEMO("ipc/pipes")}, 0},
        {"producer-consumer", {DEMO("ipc/producer-consumer")}, 0},
        {"wordcount", {DEMO("ipc/wordcount"), "--words", "20000"}, 0},
        /* Two of its five commands fail on purpose: exit 1. */
        {"run-parallel", {DEMO("ipc/run-parallel")}, 1},
        {"lab-primes", {DEMO("lab/lab"), "primes", "--quick"}, 0},
    };
    enum { N = sizeof runs / sizeof runs[0], ARGS = 12 };
    static char logopt[N][700];
    const char *argvs[N][ARGS + 8];
    async_command_t cmds[N];
    for (int i = 0; i < N; i++) {
        snprintf(logopt[i], sizeof logopt[i], "--log-file=%s/%s.%%p.log", dir, runs[i].name);
        int k = 0;
        argvs[i][k++] = "valgrind";
        argvs[i][k++] = "--leak-check=full";
        argvs[i][k++] = "--errors-for-leak-kinds=definite,indirect";
        /* The brewery client's server is a program of ours too; the shells
         * of run-parallel's commands are not. */
        argvs[i][k++] = "--trace-children=yes";
        argvs[i][k++] = "--trace-children-skip=/bin/*,/usr/bin/*";
        argvs[i][k++] = logopt[i];
        for (int j = 0; runs[i].argv[j]; j++) argvs[i][k++] = runs[i].argv[j];
        argvs[i][k] = NULL;
        cmds[i] = (async_command_t){argvs[i], NULL};
    }
    async_command_result_t r[N];
    int rc = async_process_run_commands_dl(cmds, N, 2, r, async_deadline_after(ASYNC_SEC(540)));
    cr_assert(rc == 0 || rc == ASYNC_ECHILD, "%s", async_strerror(rc));
    for (int i = 0; i < N; i++) {
        cr_assert_eq(r[i].error, 0, "%s: %s", runs[i].name, async_strerror(r[i].error));
        cr_assert_eq(r[i].exit_code, runs[i].exit_code, "%s: exit %d\n%.2000s", runs[i].name,
                     r[i].exit_code, r[i].err);
        async_command_result_clear(&r[i]);
    }
    /* At least one log a demo, more for those that fork or exec. */
    int logs = check_logs(dir);
    cr_assert_geq(logs, N, "%d logs for %d demos", logs, N);
    cr_log_info("valgrind: %d processes of %d demos, no leak or invalid access", logs, N);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

/* The verdict reader itself: a log with a leak or an error is caught. */
Test(demos_valgrind, a_log_with_a_leak_or_an_error_is_a_fault)
{
    cr_assert_null(log_fault("==1== definitely lost: 0 bytes in 0 blocks\n==1== ERROR SUMMARY: 0 errors"));
    cr_assert_not_null(log_fault("==1==    definitely lost: 24 bytes in 1 blocks\n"));
    cr_assert_not_null(log_fault("==1==    indirectly lost: 8 bytes in 1 blocks\n"));
    cr_assert_not_null(log_fault("==1== ERROR SUMMARY: 3 errors from 1 contexts\n"));
}
