/* The IPC module's error paths that the other suites do not reach: parallel
 * commands with 0 to a dozen descriptors free (each command runs or fails
 * alone with ASYNC_EMFILE, the process's descriptors as they were and no
 * child left unreaped), in and out of a task; parallel commands and the
 * message pipe at every failed allocation (ASYNC_ENOMEM, nothing consumed
 * or leaked, the next call works); and a pipe whose peer went away with
 * bytes unread (what it sent is still received, then ASYNC_EEOF). */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <async.h>
#include "support/alloc.h"
#include "support/proc.h"
#include "support/run.h"

static int count_fds(void)
{
    int n = 0;
    for (int fd = 0; fd < 1024; fd++) n += fcntl(fd, F_GETFD) >= 0;
    return n;
}

/* --- parallel commands with few descriptors ------------------------------- */

enum { NCMD = 3 };

/* Runs NCMD commands that print "hi" with free descriptors free; returns the
 * number of wrong outcomes, each described on stderr. */
static int run_with_free(int free_fds, bool in_task)
{
    int filler[1024], nf = 0, bad = 0;
    while (nf < 1024 && (filler[nf] = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0) nf++;
    if (errno != EMFILE || nf < free_fds) return 1;
    for (int i = 0; i < free_fds; i++) close(filler[--nf]);
    int before = count_fds();
    static const char *const argv[] = {"sh", "-c", "echo hi", NULL};
    async_command_t cmds[NCMD];
    async_command_result_t res[NCMD];
    for (int i = 0; i < NCMD; i++) cmds[i] = (async_command_t){argv, NULL};
    int rc = async_process_run_commands_dl(cmds, NCMD, 2, res,
                                           async_deadline_after(ASYNC_SEC(20)));
    int after = count_fds();
    while (nf) close(filler[--nf]);
    if (after != before) {
        fprintf(stderr, "%d free: %d descriptors before, %d after\n", free_fds, before, after);
        bad++;
    }
    /* In a task, no descriptor for the epoll set: nothing ran. */
    if (rc == ASYNC_EMFILE && in_task) return bad;
    if (rc != 0 && rc != ASYNC_ECHILD) {
        fprintf(stderr, "%d free: returned %s\n", free_fds, async_errname(rc));
        return bad + 1;
    }
    int failed = 0;
    for (int i = 0; i < NCMD; i++) {
        const async_command_result_t *r = &res[i];
        bool ran = r->error == 0 && r->exit_code == 0 && r->out_len == 3 && !strcmp(r->out, "hi\n");
        bool refused = r->error == ASYNC_EMFILE && r->exit_code == -1;
        if (!ran && !refused) {
            fprintf(stderr, "%d free: command %d: error %s, start_errno %d, exit %d, out %zu bytes\n",
                    free_fds, i, async_errname(r->error), r->start_errno, r->exit_code, r->out_len);
            bad++;
        }
        failed += !ran;
        async_command_result_clear(&res[i]);
    }
    if ((rc == 0) != (failed == 0)) {
        fprintf(stderr, "%d free: returned %s with %d failed\n", free_fds, async_errname(rc), failed);
        bad++;
    }
    /* Every child was reaped. */
    if (waitpid(-1, NULL, WNOHANG) != -1 || errno != ECHILD) {
        fprintf(stderr, "%d free: a child is left unreaped\n", free_fds);
        bad++;
    }
    return bad;
}

/* Every number of free descriptors from 0 to 12, in a forked child (the
 * limit and the fillers stay there).  Returns the wrong outcomes. */
static int sweep_free(bool in_task)
{
    int bad = 0;
    for (int k = 0; k <= 12; k++) bad += run_with_free(k, in_task);
    /* Descriptors back: all run. */
    bad += run_with_free(64, in_task);
    return bad;
}

static int sweep_task(void *arg, void **res)
{
    (void)res;
    *(int *)arg = sweep_free(true);
    return 0;
}

static void in_child(bool in_task)
{
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        alarm(100);
        struct rlimit rl = {256, 256};
        if (setrlimit(RLIMIT_NOFILE, &rl)) test_child_exit(100);
        int bad = -1;
        if (!in_task) {
            bad = sweep_free(false);
        } else {
            async_loop_t *loop;
            if (async_loop_new(&loop)) test_child_exit(101);
            if (async_task_spawn(NULL, loop, sweep_task, &bad, NULL)) test_child_exit(102);
            async_loop_run(loop, ASYNC_RUN_DEFAULT);
            if (async_loop_destroy(loop)) test_child_exit(103);
        }
        test_child_exit(bad > 99 ? 99 : bad);
    }
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status), "the child died of signal %d", WTERMSIG(status));
    cr_assert_eq(WEXITSTATUS(status), 0, "%d wrong outcomes (its stderr says which)",
                 WEXITSTATUS(status));
}

Test(ipc_faults, commands_with_few_descriptors_fail_alone_with_emfile, .timeout = 120)
{
    in_child(false);
}

Test(ipc_faults, commands_in_a_task_with_few_descriptors_fail_alone_with_emfile, .timeout = 120)
{
    in_child(true);
}

/* --- allocations failing one after another ------------------------------- */

static int commands_once(long fail_at, int *enomem)
{
    static const char *const argv[] = {"sh", "-c", "echo out; echo err >&2", NULL};
    async_command_t cmds[2] = {{argv, NULL}, {argv, NULL}};
    async_command_result_t res[2];
    test_alloc_fail_after(fail_at);
    int rc = async_process_run_commands_dl(cmds, 2, 2, res, async_deadline_after(ASYNC_SEC(20)));
    test_alloc_fail_after(-1);
    if (rc == ASYNC_ENOMEM) { /* nothing ran */
        *enomem = 1;
        return 0;
    }
    int bad = 0;
    for (int i = 0; i < 2; i++) {
        const async_command_result_t *r = &res[i];
        cr_assert_eq(r->exit_code, 0, "allocation %ld failing: command %d exit %d", fail_at, i,
                     r->exit_code);
        if (r->error == ASYNC_ENOMEM) *enomem = 1;
        else if (r->error || strcmp(r->out, "out\n") || strcmp(r->err, "err\n")) bad++;
        async_command_result_clear(&res[i]);
    }
    cr_assert(rc == (bad || *enomem ? ASYNC_ECHILD : 0), "allocation %ld failing: %s", fail_at,
              async_errname(rc));
    return bad;
}

static int commands_task(void *arg, void **res)
{
    (void)arg, (void)res;
    long t0 = test_alloc_total();
    int enomem = 0;
    cr_assert_eq(commands_once(-1, &enomem), 0);
    cr_assert_eq(enomem, 0);
    long total = test_alloc_total() - t0;
    for (long i = 0; i < total; i++) {
        long live = test_alloc_live();
        enomem = 0;
        cr_assert_eq(commands_once(i, &enomem), 0, "allocation %ld failing: a wrong result", i);
        cr_assert_eq(enomem, 1, "allocation %ld failed unreported", i);
        cr_assert_eq(test_alloc_live(), live, "allocation %ld failing: %ld blocks leaked", i,
                     test_alloc_live() - live);
    }
    return 0;
}

Test(ipc_faults, commands_at_every_failed_allocation, .timeout = 120)
{
    test_alloc_install();
    long t0 = test_alloc_total();
    int enomem = 0;
    cr_assert_eq(commands_once(-1, &enomem), 0);
    long total = test_alloc_total() - t0;
    cr_assert_gt(total, 0);
    for (long i = 0; i < total; i++) {
        enomem = 0;
        cr_assert_eq(commands_once(i, &enomem), 0, "allocation %ld failing: a wrong result", i);
        cr_assert_eq(enomem, 1, "allocation %ld failed unreported", i);
        cr_assert_eq(test_alloc_live(), 0, "allocation %ld failing: %ld blocks leaked", i,
                     test_alloc_live());
    }
    /* And from a task, whose loop allocates too. */
    cr_assert_eq(test_run_task(commands_task, NULL, NULL), 0);
    cr_assert_eq(test_alloc_live(), 0);
    test_alloc_uninstall();
}

/* A receive whose buffer cannot be allocated consumes nothing: the message
 * is received whole by the next call, by recv and by recv_alloc. */
Test(ipc_faults, pipe_receive_out_of_memory_consumes_nothing, .timeout = 30)
{
    test_alloc_install();
    async_ipc_pipe_t *a = NULL, *b = NULL;
    cr_assert_eq(async_ipc_pipe_new(&a, &b, 0), 0);
    static char big[200000];
    for (size_t i = 0; i < sizeof big; i++) big[i] = (char)(i * 7);
    for (long i = 0; i < 4; i++) {
        cr_assert_eq(async_ipc_pipe_send(b, big, sizeof big), 0);
        cr_assert_eq(async_ipc_pipe_send(b, "small", 5), 0);
        static char got[sizeof big];
        size_t len = 0;
        void *m = NULL;
        test_alloc_fail_after(0);
        int rc = i % 2 ? async_ipc_pipe_recv_alloc_dl(&m, &len, a, ASYNC_FOREVER)
                       : async_ipc_pipe_recv(a, got, sizeof got, &len);
        test_alloc_fail_after(-1);
        /* The first receives need the pipe's buffer; once it has grown,
         * only recv_alloc's message can fail. */
        if (rc == 0) {
            cr_assert(i > 0, "the first receive allocates");
        } else {
            cr_assert_eq(rc, ASYNC_ENOMEM, "receive %ld: %s", i, async_errname(rc));
        }
        if (rc == 0) {
            if (m) async_ipc_msg_free(m);
            m = NULL;
        } else {
            cr_assert_eq(async_ipc_pipe_recv(a, got, sizeof got, &len), 0);
        }
        cr_assert_eq(len, sizeof big);
        cr_assert_eq(memcmp(got, big, sizeof big), 0, "receive %ld: the message is whole", i);
        cr_assert_eq(async_ipc_pipe_recv_alloc_dl(&m, &len, a, ASYNC_FOREVER), 0);
        cr_assert(len == 5 && !memcmp(m, "small", 5), "the next message follows");
        async_ipc_msg_free(m);
    }
    async_ipc_pipe_free(a);
    async_ipc_pipe_free(b);
    cr_assert_eq(test_alloc_live(), 0, "%ld blocks leaked", test_alloc_live());
    test_alloc_uninstall();
}

/* The peer freed its end with bytes of ours unread (Linux then resets the
 * stream): what it sent before is still received, then ASYNC_EEOF, and a
 * send is ASYNC_EPIPE. */
Test(ipc_faults, peer_gone_with_bytes_unread_still_delivers_then_eof, .timeout = 30)
{
    async_ipc_pipe_t *a, *b;
    cr_assert_eq(async_ipc_pipe_new(&a, &b, 0), 0);
    cr_assert_eq(async_ipc_pipe_send(b, "last words", 10), 0);
    cr_assert_eq(async_ipc_pipe_send(a, "never read", 10), 0);
    async_ipc_pipe_free(b);
    char buf[32];
    size_t len;
    int rc = async_ipc_pipe_recv(a, buf, sizeof buf, &len);
    cr_assert_eq(rc, 0, "the message sent before the close: %s", async_errname(rc));
    cr_assert(len == 10 && !memcmp(buf, "last words", 10));
    rc = async_ipc_pipe_recv(a, buf, sizeof buf, &len);
    cr_assert_eq(rc, ASYNC_EEOF, "then end of stream, not %s", async_errname(rc));
    cr_assert_eq(async_ipc_pipe_recv(a, buf, sizeof buf, &len), ASYNC_EEOF, "and again");
    rc = async_ipc_pipe_send(a, "x", 1);
    cr_assert_eq(rc, ASYNC_EPIPE, "a send: %s", async_errname(rc));
    async_ipc_pipe_free(a);
}
