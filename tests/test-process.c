/* Child processes: exit codes and signals, join with a deadline, terminate,
 * kill, is_alive, no zombies, joining from a task while others run; and
 * commands run N at a time with captured output, a command that cannot start,
 * non-zero exits and the deadline. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include "async.h"
#include "async/ipc.h"
#include "async/process.h"
#include "support/ticker.h"

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
    cr_assert_eq(async_process_status(p, &code, &sig), ASYNC_EAGAIN, "not joined yet");
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

/* --- daemon children ------------------------------------------------------------ */

static int sleep_20s(void *arg)
{
    (void)arg;
    for (int i = 0; i < 20; i++) sleep(1); /* bounded: an orphan never lingers long */
    return 0;
}

typedef struct family {
    async_shared_value_t *grandchild; /* pid_t */
    async_ipc_event_t *ready, *running;
    bool daemon;
} family_t;

/* The grandchild runs its function only once the daemon option is in force
 * (the death signal is armed before fn runs), so when it says it is
 * running, a kill of its parent must take it down by SIGKILL. */
static int grandchild(void *arg)
{
    family_t *f = arg;
    async_ipc_event_set(f->running);
    return sleep_20s(NULL);
}

/* The middle process: starts the grandchild, waits until it runs, tells its
 * pid, then waits to be killed.  Killing the middle before the grandchild
 * armed its death signal would test the other branch (the grandchild sees
 * its parent gone and exits 127 without running fn), which is not this
 * test's subject. */
static int middle(void *arg)
{
    family_t *f = arg;
    async_process_opts_t o = {.daemon = f->daemon};
    async_process_t *g;
    if (async_process_spawn_opts(&g, grandchild, f, &o)) return 1;
    if (async_ipc_event_wait_dl(f->running, async_deadline_after(ASYNC_SEC(10)))) return 1;
    pid_t pid = async_process_pid(g);
    async_shared_value_set(f->grandchild, &pid);
    async_ipc_event_set(f->ready);
    return sleep_20s(NULL);
}

/* Kills the middle process and returns the grandchild's pid, which (as we
 * are a subreaper) is now our child. */
static pid_t kill_the_parent(bool daemon)
{
    cr_assert_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    family_t f = {.daemon = daemon};
    cr_assert_eq(async_shared_value_new(&f.grandchild, sizeof(pid_t), true), 0);
    cr_assert_eq(async_ipc_event_new(&f.ready), 0);
    cr_assert_eq(async_ipc_event_new(&f.running), 0);
    async_process_t *m;
    cr_assert_eq(async_process_spawn(&m, middle, &f), 0);
    cr_assert_eq(async_ipc_event_wait_dl(f.ready, async_deadline_after(ASYNC_SEC(10))), 0);
    pid_t g = 0;
    cr_assert_eq(async_shared_value_get(f.grandchild, &g), 0);
    cr_assert_gt(g, 0);
    cr_assert_eq(async_process_kill(m), 0);
    cr_assert_eq(async_process_join_dl(m, async_deadline_after(ASYNC_SEC(10))), 0);
    async_process_free(m);
    async_shared_value_free(f.grandchild);
    async_ipc_event_free(f.ready);
    async_ipc_event_free(f.running);
    return g;
}

/* Polls for the grandchild's end until the deadline: 1 and *status, or 0. */
static int reaped_by(pid_t g, int64_t deadline, int *status)
{
    do {
        pid_t r = waitpid(g, status, WNOHANG);
        cr_assert_geq(r, 0);
        if (r == g) return 1;
        usleep(5000);
    } while (async_now() < deadline);
    return 0;
}

Test(process, daemon_child_dies_when_its_parent_is_killed, .timeout = 30)
{
    pid_t g = kill_the_parent(true);
    int status = 0;
    cr_assert_eq(reaped_by(g, async_deadline_after(ASYNC_SEC(10)), &status), 1,
                 "the daemon child outlived its parent");
    cr_assert(WIFSIGNALED(status));
    cr_assert_eq(WTERMSIG(status), SIGKILL);
}

/* The control: without the option the grandchild outlives its parent. */
Test(process, plain_child_outlives_its_killed_parent, .timeout = 30)
{
    pid_t g = kill_the_parent(false);
    int status = 0;
    cr_assert_eq(reaped_by(g, async_deadline_after(ASYNC_MSEC(300)), &status), 0);
    cr_assert_eq(kill(g, SIGKILL), 0);
    cr_assert_eq(reaped_by(g, async_deadline_after(ASYNC_SEC(10)), &status), 1);
}

/* The options' size: 0 (a designated initialiser) and sizeof (the
 * initialiser) both work; a size smaller than the struct is refused before
 * anything is forked. */
Test(process, opts_size_field, .timeout = 10)
{
    async_process_opts_t o;
    async_process_opts_init(&o);
    cr_assert_eq(o.size, sizeof o);
    cr_assert_not(o.daemon, "the defaults");
    o.daemon = true;
    async_process_t *p;
    int code = -1;
    cr_assert_eq(async_process_spawn_opts(&p, return_arg, (void *)(intptr_t)5, &o), 0);
    cr_assert_eq(async_process_join_dl(p, async_deadline_after(ASYNC_SEC(5))), 0);
    cr_assert_eq(async_process_status(p, &code, NULL), 0);
    cr_assert_eq(code, 5);
    async_process_free(p);
    o.size = 0;
    cr_assert_eq(async_process_spawn_opts(&p, return_arg, (void *)(intptr_t)6, &o), 0);
    cr_assert_eq(async_process_join_dl(p, async_deadline_after(ASYNC_SEC(5))), 0);
    cr_assert_eq(async_process_status(p, &code, NULL), 0);
    cr_assert_eq(code, 6);
    async_process_free(p);
    o.size = 1;
    p = NULL;
    cr_assert_eq(async_process_spawn_opts(&p, return_arg, NULL, &o), ASYNC_EINVAL);
    cr_assert_null(p);
    o.size = sizeof o - 1;
    cr_assert_eq(async_process_spawn_opts(&p, return_arg, NULL, &o), ASYNC_EINVAL);
    cr_assert_eq(waitpid(-1, NULL, WNOHANG), -1, "nothing was forked");
}

Test(process, daemon_child_runs_its_function, .timeout = 10)
{
    async_process_opts_t o = {.daemon = true};
    async_process_t *p;
    cr_assert_eq(async_process_spawn_opts(NULL, return_arg, NULL, &o), ASYNC_EINVAL);
    cr_assert_eq(async_process_spawn_opts(&p, return_arg, (void *)(intptr_t)42, &o), 0);
    cr_assert_eq(async_process_join_dl(p, async_deadline_after(ASYNC_SEC(5))), 0);
    int code = -1;
    cr_assert_eq(async_process_status(p, &code, NULL), 0);
    cr_assert_eq(code, 42);
    async_process_free(p);
    cr_assert_eq(async_process_spawn_opts(&p, return_arg, (void *)(intptr_t)7, NULL), 0);
    cr_assert_eq(async_process_join_dl(p, async_deadline_after(ASYNC_SEC(5))), 0);
    cr_assert_eq(async_process_status(p, &code, NULL), 0);
    cr_assert_eq(code, 7);
    async_process_free(p);
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
    cr_assert_eq(async_process_join_dl(p, INT64_MIN), ASYNC_ETIMEDOUT, "long past");
    int early = 7;
    cr_assert_eq(async_process_status(p, &early, NULL), ASYNC_EAGAIN, "still running");
    cr_assert_eq(early, 7, "nothing written before it is known");
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
    int err, ticks_at_join;
    test_ticker_t ticker;
} jctx_t;

static int join_task(void *arg, void **result)
{
    (void)result;
    jctx_t *c = arg;
    c->err = async_process_join_dl(c->p, async_deadline_after(ASYNC_SEC(5)));
    c->ticks_at_join = test_ticker_stop(&c->ticker);
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
    cr_assert_eq(async_task_spawn(NULL, loop, join_task, &c, NULL), 0);
    cr_assert_eq(async_task_spawn(NULL, loop, test_ticker_task, &c.ticker, NULL), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(c.err, 0);
    cr_assert_geq(c.ticks_at_join, 5, "ticks %d", c.ticks_at_join);
    int code;
    cr_assert_eq(async_process_status(c.p, &code, NULL), 0);
    cr_assert_eq(code, 3);
    cr_assert_eq(async_loop_destroy(loop), 0);
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
    /* No commands, no arrays: until round 17 it cleared the NULL results
     * array with memset(NULL, 0, 0), which UBSan stops at. */
    cr_assert_eq(async_process_run_commands_dl(NULL, 0, 1, NULL, ASYNC_FOREVER), 0);
    cr_assert_eq(async_process_run_commands_dl(NULL, 0, 0, NULL, ASYNC_FOREVER), ASYNC_EINVAL);
}

/* --- commands from a task --------------------------------------------------- */

typedef struct cmd_task {
    int feed[2];                  /* the command reads a line from feed[0] */
    int rc;
    async_command_result_t r[3];
    async_task_t runner;
} cmd_task_t;

static int run_reader(void *arg, void **result)
{
    (void)result;
    cmd_task_t *c = arg;
    char script[64];
    snprintf(script, sizeof script, "read line <&%d; echo got $line", c->feed[0]);
    async_command_t cmd = {ARGV("sh", "-c", script), NULL};
    c->rc = async_process_run_commands_dl(&cmd, 1, 1, c->r, async_deadline_after(ASYNC_SEC(5)));
    return 0;
}

static int feed_line(void *arg, void **result)
{
    (void)result;
    cmd_task_t *c = arg;
    return write(c->feed[1], "hello\n", 6) == 6 ? 0 : ASYNC_EIO;
}

/* The command waits for a line that only another task of the loop writes:
 * it ends only if run_commands lets that task run while it waits (blocking
 * the thread in poll, it timed out at its deadline instead). */
Test(process, commands_in_a_task_wait_through_the_loop, .timeout = 20)
{
    cmd_task_t c = {0};
    cr_assert_eq(pipe(c.feed), 0);
    cr_assert_eq(fcntl(c.feed[1], F_SETFD, FD_CLOEXEC), 0, "the command holds no write end");
    async_loop_t *loop;
    cr_assert_eq(async_loop_new(&loop), 0);
    cr_assert_eq(async_task_spawn(NULL, loop, run_reader, &c, NULL), 0);
    cr_assert_eq(async_task_spawn(NULL, loop, feed_line, &c, NULL), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(c.rc, 0, "%s", async_errname(c.rc));
    cr_assert_str_eq(c.r[0].out, "got hello\n");
    cr_assert_eq(c.r[0].exit_code, 0);
    async_command_result_clear(&c.r[0]);
    cr_assert_eq(async_loop_destroy(loop), 0);
    close(c.feed[0]);
    close(c.feed[1]);
    cr_assert_eq(waitpid(-1, NULL, WNOHANG), -1, "no zombies");
}

static int run_sleepers(void *arg, void **result)
{
    (void)result;
    cmd_task_t *c = arg;
    async_command_t cmds[3] = {
        {ARGV("sleep", "30"), NULL}, {ARGV("sleep", "30"), NULL}, {ARGV("echo", "never"), NULL}};
    c->rc = async_process_run_commands_dl(cmds, 3, 2, c->r, ASYNC_FOREVER);
    return 0;
}

static int cancel_runner(void *arg, void **result)
{
    (void)result;
    cmd_task_t *c = arg;
    return async_task_cancel(c->runner);
}

/* Cancelling the task stops the run as a deadline would: the running
 * commands are killed and reaped, the rest never start, ASYNC_ECANCELED. */
Test(process, commands_in_a_cancelled_task_are_killed, .timeout = 20)
{
    cmd_task_t c = {0};
    async_loop_t *loop;
    cr_assert_eq(async_loop_new(&loop), 0);
    cr_assert_eq(async_task_spawn(&c.runner, loop, run_sleepers, &c, NULL), 0);
    cr_assert_eq(async_task_spawn(NULL, loop, cancel_runner, &c, NULL), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(c.rc, ASYNC_ECANCELED, "%s", async_errname(c.rc));
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(c.r[i].error, ASYNC_ECANCELED);
        cr_assert_eq(c.r[i].signal, SIGKILL);
    }
    cr_assert_eq(c.r[2].error, ASYNC_ECANCELED, "never started");
    cr_assert_null(c.r[2].out);
    for (int i = 0; i < 3; i++) async_command_result_clear(&c.r[i]);
    cr_assert_eq(async_loop_destroy(loop), 0);
    cr_assert_eq(waitpid(-1, NULL, WNOHANG), -1, "no zombies");
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
    const char *expect[] = {"same totals", "shared dict, increment each", "merge into dict", "end-of-stream after 1000", "2 commands, 2 at a time"};
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
