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
