/* Child processes: exit codes and signals, join with a deadline, terminate,
 * kill, is_alive, no zombies, joining from a task while others run; and
 * commands run N at a time with captured output, a command that cannot start,
 * non-zero exits and the deadline. */
#include <criterion/criterion.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "async.h"
#include "async/process.h"

/* Criterion's runner sometimes leaks 48 bytes of its own under --jobs 2. */
const char *__lsan_default_suppressions(void);
__attribute__((weak)) const char *__lsan_default_suppressions(void)
{
    return "leak:libcriterion.so\n";
}

static int return_arg(void *arg) { return (int)(intptr_t)arg; }

static int sleep_long(void *arg)
{
    (void)arg;
    for (int i = 0; i < 1000; i++) sleep(1);
    return 0;
}

Test(process, exit_code_and_status, .timeout = 10)
{
    async_process_t *p;
    cr_assert_eq(async_process_spawn(NULL, return_arg, NULL), ASYNC_EINVAL);
    cr_assert_eq(async_process_spawn(&p, NULL, NULL), ASYNC_EINVAL);
    cr_assert_eq(async_process_spawn(&p, return_arg, (void *)(intptr_t)42), 0);
    cr_assert_gt(async_process_pid(p), 0);
    int code, sig;
    cr_assert_eq(async_process_status(p, &code, &sig), ASYNC_EBUSY, "not joined yet");
    cr_assert_eq(async_process_join(p), 0);
    cr_assert_eq(async_process_join(p), 0, "joining twice is fine");
    cr_assert_eq(async_process_status(p, &code, &sig), 0);
    cr_assert_eq(code, 42);
    cr_assert_eq(sig, 0);
    cr_assert_not(async_process_is_alive(p));
    cr_assert_eq(async_process_kill(p), ASYNC_EDONE);
    cr_assert_eq(async_process_terminate(p), ASYNC_EDONE);
    async_process_free(p);
    async_process_free(NULL);
}

Test(process, join_deadline_terminate_and_kill, .timeout = 10)
{
    async_process_t *p;
    cr_assert_eq(async_process_spawn(&p, sleep_long, NULL), 0);
    cr_assert(async_process_is_alive(p));
    int64_t t0 = async_now();
    cr_assert_eq(async_process_join_dl(p, t0 + ASYNC_MSEC(30)), ASYNC_ETIMEDOUT);
    cr_assert_geq(async_now() - t0, ASYNC_MSEC(30));
    cr_assert_eq(async_process_join_dl(p, 0), ASYNC_ETIMEDOUT);
    cr_assert_eq(async_process_terminate(p), 0);
    cr_assert_eq(async_process_join_dl(p, async_deadline_after(ASYNC_SEC(5))), 0);
    int code, sig;
    cr_assert_eq(async_process_status(p, &code, &sig), 0);
    cr_assert_eq(code, -1);
    cr_assert_eq(sig, SIGTERM);
    async_process_free(p);

    cr_assert_eq(async_process_spawn(&p, sleep_long, NULL), 0);
    cr_assert_eq(async_process_kill(p), 0);
    cr_assert_eq(async_process_join(p), 0);
    async_process_status(p, NULL, &sig);
    cr_assert_eq(sig, SIGKILL);
    async_process_free(p);
}

Test(process, free_leaves_no_zombie, .timeout = 10)
{
    async_process_t *p[3];
    cr_assert_eq(async_process_spawn(&p[0], sleep_long, NULL), 0);
    cr_assert_eq(async_process_spawn(&p[1], return_arg, NULL), 0);
    cr_assert_eq(async_process_spawn(&p[2], return_arg, NULL), 0);
    cr_assert_eq(async_process_join(p[2]), 0);
    usleep(20000);
    for (int i = 0; i < 3; i++) async_process_free(p[i]);
    /* Every child was reaped: nothing is left to wait for. */
    cr_assert_eq(waitpid(-1, NULL, WNOHANG), -1);
    cr_assert_eq(errno, ECHILD);
}

typedef struct jctx {
    async_process_t *p;
    int err, ticks, ticks_at_join;
    bool done;
} jctx_t;

static int join_task(void *arg, void **result)
{
    (void)result;
    jctx_t *c = arg;
    c->err = async_process_join_dl(c->p, async_deadline_after(ASYNC_SEC(5)));
    c->ticks_at_join = c->ticks;
    c->done = true;
    return 0;
}

static int tick_task(void *arg, void **result)
{
    (void)result;
    jctx_t *c = arg;
    while (!c->done) {
        c->ticks++;
        async_sleep(ASYNC_MSEC(1));
    }
    return 0;
}

static int sleep_50ms(void *arg)
{
    (void)arg;
    usleep(50000);
    return 3;
}

Test(process, task_joins_while_others_run, .timeout = 10)
{
    jctx_t c = {0};
    cr_assert_eq(async_process_spawn(&c.p, sleep_50ms, NULL), 0);
    async_loop_t *loop;
    cr_assert_eq(async_loop_new(&loop), 0);
    cr_assert_eq(async_task_spawn(loop, join_task, &c, NULL, NULL), 0);
    cr_assert_eq(async_task_spawn(loop, tick_task, &c, NULL, NULL), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(c.err, 0);
    cr_assert_geq(c.ticks_at_join, 5, "ticks %d", c.ticks_at_join);
    int code;
    cr_assert_eq(async_process_status(c.p, &code, NULL), 0);
    cr_assert_eq(code, 3);
    cr_assert_eq(async_loop_free(loop), 0);
    async_process_free(c.p);
}

/* --- commands --------------------------------------------------------------- */

#define ARGV(...) ((const char *const[]){__VA_ARGS__, NULL})

Test(process, commands_capture_output_and_status, .timeout = 10)
{
    async_command_t cmds[] = {
        {ARGV("echo", "one"), NULL},
        {ARGV("sh", "-c", "echo out; echo err >&2; exit 3"), NULL},
        {ARGV("sh", "-c", "kill -9 $$"), NULL},
        {ARGV("pwd"), "/tmp"},
        {ARGV("cat"), NULL}, /* stdin is /dev/null: ends at once */
    };
    async_command_result_t r[5];
    cr_assert_eq(async_process_run_commands_dl(cmds, 5, 2, r, ASYNC_FOREVER), ASYNC_ECHILD);
    cr_assert_eq(r[0].error, 0);
    cr_assert_str_eq(r[0].out, "one\n");
    cr_assert_eq(r[0].out_len, 4);
    cr_assert_eq(r[0].exit_code, 0);
    cr_assert_eq(r[1].error, 0);
    cr_assert_str_eq(r[1].out, "out\n");
    cr_assert_str_eq(r[1].err, "err\n");
    cr_assert_eq(r[1].exit_code, 3);
    cr_assert_eq(r[2].exit_code, -1);
    cr_assert_eq(r[2].signal, SIGKILL);
    cr_assert_str_eq(r[3].out, "/tmp\n");
    cr_assert_eq(r[4].exit_code, 0);
    cr_assert_eq(r[4].out_len, 0);
    cr_assert_str_eq(r[4].out, "");
    for (int i = 0; i < 5; i++) async_command_result_clear(&r[i]);
    async_command_result_clear(NULL);
    cr_assert_eq(waitpid(-1, NULL, WNOHANG), -1, "no zombies");
}

Test(process, command_that_cannot_start_fails_alone, .timeout = 10)
{
    async_command_t cmds[] = {
        {ARGV("echo", "before"), NULL},
        {ARGV("/nonexistent/program"), NULL},
        {ARGV("echo", "after"), NULL},
    };
    async_command_result_t r[3];
    cr_assert_eq(async_process_run_commands_dl(cmds, 3, 3, r, ASYNC_FOREVER), ASYNC_ECHILD);
    cr_assert_eq(r[0].error, 0);
    cr_assert_str_eq(r[0].out, "before\n");
    cr_assert_eq(r[1].error, ASYNC_ECHILD);
    cr_assert_eq(r[1].start_errno, ENOENT);
    cr_assert_null(r[1].out);
    cr_assert_eq(r[2].error, 0);
    cr_assert_str_eq(r[2].out, "after\n");
    for (int i = 0; i < 3; i++) async_command_result_clear(&r[i]);
}

Test(process, commands_run_n_at_a_time, .timeout = 10)
{
    const char *const *nap = ARGV("sleep", "0.1");
    async_command_t cmds[4];
    for (int i = 0; i < 4; i++) cmds[i] = (async_command_t){nap, NULL};
    async_command_result_t r[4];
    int64_t t0 = async_now();
    cr_assert_eq(async_process_run_commands_dl(cmds, 4, 2, r, ASYNC_FOREVER), 0);
    int64_t took = async_now() - t0;
    cr_assert_geq(took, ASYNC_MSEC(200), "two waves of two");
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(r[i].error, 0);
        cr_assert_geq(r[i].elapsed_ns, ASYNC_MSEC(100));
        async_command_result_clear(&r[i]);
    }
}

Test(process, commands_deadline_kills_and_skips, .timeout = 10)
{
    async_command_t cmds[] = {
        {ARGV("echo", "quick"), NULL},
        {ARGV("sleep", "5"), NULL},
        {ARGV("sleep", "5"), NULL},
        {ARGV("echo", "never"), NULL},
    };
    async_command_result_t r[4];
    int64_t t0 = async_now();
    cr_assert_eq(async_process_run_commands_dl(cmds, 4, 2, r, t0 + ASYNC_MSEC(200)),
                 ASYNC_ETIMEDOUT);
    cr_assert_lt(async_now() - t0, ASYNC_SEC(4));
    cr_assert_eq(r[0].error, 0);
    cr_assert_eq(r[1].error, ASYNC_ETIMEDOUT);
    cr_assert_eq(r[1].signal, SIGKILL);
    cr_assert_eq(r[2].error, ASYNC_ETIMEDOUT);
    cr_assert_eq(r[3].error, ASYNC_ETIMEDOUT, "never started");
    cr_assert_null(r[3].out);
    for (int i = 0; i < 4; i++) async_command_result_clear(&r[i]);
    cr_assert_eq(waitpid(-1, NULL, WNOHANG), -1, "no zombies");
}

Test(process, commands_bad_arguments, .timeout = 10)
{
    async_command_t cmds[] = {{ARGV("true"), NULL}, {NULL, NULL}};
    async_command_result_t r[2];
    cr_assert_eq(async_process_run_commands_dl(cmds, 2, 1, r, ASYNC_FOREVER), ASYNC_EINVAL);
    cr_assert_eq(async_process_run_commands_dl(cmds, 1, 0, r, ASYNC_FOREVER), ASYNC_EINVAL);
    cr_assert_eq(async_process_run_commands_dl(NULL, 1, 1, r, ASYNC_FOREVER), ASYNC_EINVAL);
    cr_assert_eq(async_process_run_commands_dl(cmds, 0, 1, r, ASYNC_FOREVER), 0, "nothing to do");
}

/* The IPC demos, small, run as commands: each exits 0 and prints its figures. */
Test(process, ipc_demos_run, .timeout = 60)
{
    const char *const *argvs[] = {
        ARGV(ASYNC_OUT_DIR "/demos/ipc/producer-consumer", "--count", "3000"),
        ARGV(ASYNC_OUT_DIR "/demos/ipc/wordcount", "--words", "100000"),
        ARGV(ASYNC_OUT_DIR "/demos/ipc/wordcount", "--input", ASYNC_SRC_DIR "/docs/ipc.md"),
        ARGV(ASYNC_OUT_DIR "/demos/ipc/pipes", "--count", "1000"),
        ARGV(ASYNC_OUT_DIR "/demos/ipc/run-parallel", "-j", "2", "echo one", "echo two"),
    };
    const char *expect[] = {"same totals", "(exact)", "(exact)", "end-of-stream after 1000", "2 commands, 2 at a time"};
    enum { N = sizeof argvs / sizeof argvs[0] };
    async_command_t cmds[N];
    for (int i = 0; i < N; i++) cmds[i] = (async_command_t){argvs[i], NULL};
    async_command_result_t r[N];
    cr_assert_eq(async_process_run_commands_dl(cmds, N, 2, r, async_deadline_after(ASYNC_SEC(50))), 0);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(r[i].exit_code, 0, "%s: %s", argvs[i][0], r[i].err);
        cr_assert_not_null(strstr(r[i].out, expect[i]), "%s printed:\n%s", argvs[i][0], r[i].out);
        async_command_result_clear(&r[i]);
    }
}
