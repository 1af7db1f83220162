/* The IPC demos' option parsing (demos/ipc/common/args.h): a value that is
 * not a number in range is refused with exit 2 and a line naming the option. */
#include <criterion/criterion.h>
#include <string.h>
#include <async.h>

#define DEMO(name) ASYNC_OUT_DIR "/demos/ipc/" name

/* A value that is not a number in range is a clear error (exit 2 and a line
 * naming the option), not silently replaced by 0, 1 or a default. */
Test(ipc_demos, ipc_demos_refuse_bad_values, .timeout = 30)
{
    const char *const *argvs[] = {
        (const char *const[]){DEMO("pipes"), "--count", "-1", NULL},
        (const char *const[]){DEMO("pipes"), "--count", "12abc", NULL},
        (const char *const[]){DEMO("producer-consumer"), "--count", "x", NULL},
        (const char *const[]){DEMO("producer-consumer"), "--capacity", "0", NULL},
        (const char *const[]){DEMO("wordcount"), "--words", "0", NULL},
        (const char *const[]){DEMO("wordcount"), "--workers", "99", NULL},
        (const char *const[]){DEMO("run-parallel"), "-j", "0", "true", NULL},
        (const char *const[]){DEMO("run-parallel"), "--timeout", "soon", "true", NULL},
        (const char *const[]){DEMO("run-parallel"), "--timeout", "1e300", "true", NULL},
        /* strtod's extras, which a plain decimal is not (demos18's note). */
        (const char *const[]){DEMO("run-parallel"), "--timeout", "0x10", "true", NULL},
        (const char *const[]){DEMO("run-parallel"), "--timeout", " 5", "true", NULL},
        (const char *const[]){DEMO("run-parallel"), "--timeout", "+1", "true", NULL},
        (const char *const[]){DEMO("run-parallel"), "--timeout", "inf", "true", NULL},
        (const char *const[]){DEMO("run-parallel"), "--timeout", "nan", "true", NULL},
        (const char *const[]){DEMO("run-parallel"), "--timeout", "1e", "true", NULL},
        (const char *const[]){DEMO("run-parallel"), "--timeout", ".", "true", NULL},
    };
    enum { N = sizeof argvs / sizeof argvs[0] };
    async_command_t cmds[N];
    async_command_result_t r[N];
    for (int i = 0; i < N; i++) cmds[i] = (async_command_t){argvs[i], NULL};
    cr_assert_eq(async_process_run_commands_dl(cmds, N, 2, r, async_deadline_after(ASYNC_SEC(20))),
                 ASYNC_ECHILD);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(r[i].error, 0, "%s %s", argvs[i][1], argvs[i][2]);
        cr_assert_eq(r[i].exit_code, 2, "%s %s %s: exit %d", argvs[i][0], argvs[i][1], argvs[i][2],
                     r[i].exit_code);
        cr_assert(strstr(r[i].err, "invalid value for"), "%s", r[i].err);
        cr_assert(strstr(r[i].err, argvs[i][1]), "names the option: %s", r[i].err);
        cr_assert_eq(r[i].out_len, 0, "did not start running: %s", r[i].out);
        async_command_result_clear(&r[i]);
    }
}

/* A plain decimal number of seconds, with a fraction or an exponent, is
 * taken: the commands run and the demo exits 0. */
Test(ipc_demos, run_parallel_takes_plain_decimal_seconds, .timeout = 30)
{
    static const char *const values[] = {"5", "0.5", ".5", "5.", "1e1", "2.5E-1", "0"};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        const char *argv[] = {DEMO("run-parallel"), "--timeout", values[i], "true", NULL};
        async_command_t cmd = {argv, NULL};
        async_command_result_t r;
        int rc = async_process_run_commands_dl(&cmd, 1, 1, &r, async_deadline_after(ASYNC_SEC(20)));
        if (strcmp(values[i], "0") == 0) {
            /* No time at all: the command is stopped at once, or finished. */
            cr_assert(r.exit_code != 2, "--timeout 0: exit 2: %s", r.err);
        } else {
            cr_assert_eq(rc, 0, "--timeout %s: %s", values[i], r.err);
            cr_assert_eq(r.exit_code, 0, "--timeout %s: exit %d: %s", values[i], r.exit_code, r.err);
        }
        async_command_result_clear(&r);
    }
}
