/* run-parallel: runs the commands given on its command line at most N at a
 * time, capturing each one's stdout, stderr and exit status (the labs'
 * "run three scripts in parallel").  Each argument is one shell command (run
 * with sh -c).  Without commands it runs a demonstration set: three scripts,
 * one that fails, and one program that does not exist, which fails alone.
 *
 *   run-parallel [-j N] [--timeout SECONDS] ['command' ...] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "async.h"
#include "async/process.h"

static const char *const script_a[] = {"sh", "-c", "for i in 1 2 3; do echo \"script A step $i\"; sleep 0.3; done", NULL};
static const char *const script_b[] = {"sh", "-c", "for i in 1 2; do echo \"script B step $i\"; sleep 0.4; done", NULL};
static const char *const script_c[] = {"sh", "-c", "echo 'script C computes'; seq 1 100000 | tail -n 1", NULL};
static const char *const failing[] = {"sh", "-c", "echo 'about to fail' >&2; sleep 0.2; exit 3", NULL};
static const char *const missing[] = {"no-such-program-here", "--help", NULL};

static void print_lines(const char *prefix, const char *text)
{
    while (text && *text) {
        const char *nl = strchr(text, '\n');
        int n = nl ? (int)(nl - text) : (int)strlen(text);
        printf("    %s| %.*s\n", prefix, n, text);
        text += n + (nl ? 1 : 0);
    }
}

static void describe(const async_command_t *cmd, char *buf, size_t size)
{
    const char *const *argv = cmd->argv;
    if (!strcmp(argv[0], "sh") && argv[1] && !strcmp(argv[1], "-c")) {
        snprintf(buf, size, "%s", argv[2]);
        return;
    }
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; argv[i] && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%s", i ? " " : "", argv[i]);
}

int main(int argc, char **argv)
{
    size_t jobs = 3;
    double timeout = -1;
    int first = 1;
    for (; first < argc && argv[first][0] == '-'; first++) {
        if (!strcmp(argv[first], "-j") && first + 1 < argc) jobs = strtoul(argv[++first], NULL, 10);
        else if (!strcmp(argv[first], "--timeout") && first + 1 < argc) timeout = atof(argv[++first]);
        else if (!strcmp(argv[first], "--")) { first++; break; }
        else {
            fprintf(stderr, "usage: %s [-j N] [--timeout SECONDS] ['command' ...]\n", argv[0]);
            return 2;
        }
    }
    if (jobs < 1) jobs = 1;
    size_t n = (size_t)(argc - first);
    async_command_t *cmds;
    const char *(*shell)[4] = NULL;
    if (n == 0) {
        static async_command_t demo[] = {{script_a, NULL}, {script_b, NULL}, {script_c, NULL},
                                         {failing, NULL}, {missing, NULL}};
        cmds = demo;
        n = sizeof demo / sizeof demo[0];
    } else {
        cmds = calloc(n, sizeof *cmds);
        shell = calloc(n, sizeof *shell);
        if (!cmds || !shell) return 1;
        for (size_t i = 0; i < n; i++) {
            shell[i][0] = "sh";
            shell[i][1] = "-c";
            shell[i][2] = argv[first + (int)i];
            shell[i][3] = NULL;
            cmds[i].argv = shell[i];
        }
    }
    async_command_result_t *res = calloc(n, sizeof *res);
    if (!res) return 1;
    int64_t deadline = timeout < 0 ? ASYNC_FOREVER : async_deadline_after((int64_t)(timeout * 1e9));
    printf("running %zu commands, %zu at a time\n", n, jobs);
    fflush(stdout);
    int64_t t0 = async_now();
    int err = async_process_run_commands_dl(cmds, n, jobs, res, deadline);
    double wall = (double)(async_now() - t0) / 1e9, busy = 0;
    if (err == ASYNC_EINVAL) {
        fprintf(stderr, "run-parallel: %s\n", async_strerror(err));
        return 2;
    }
    int failures = 0;
    for (size_t i = 0; i < n; i++) {
        char what[200];
        describe(&cmds[i], what, sizeof what);
        async_command_result_t *r = &res[i];
        busy += (double)r->elapsed_ns / 1e9;
        if (r->error == ASYNC_ECHILD)
            printf("[%zu] %s: could not start: %s\n", i + 1, what, strerror(r->start_errno));
        else if (r->error == ASYNC_ETIMEDOUT)
            printf("[%zu] %s: %s at the deadline\n", i + 1, what, r->out ? "killed" : "not started");
        else if (r->error)
            printf("[%zu] %s: %s\n", i + 1, what, async_strerror(r->error));
        else if (r->signal)
            printf("[%zu] %s: killed by signal %d after %.2f s\n", i + 1, what, r->signal, (double)r->elapsed_ns / 1e9);
        else
            printf("[%zu] %s: exit %d after %.2f s\n", i + 1, what, r->exit_code, (double)r->elapsed_ns / 1e9);
        failures += r->error || r->exit_code != 0;
        print_lines("out", r->out);
        print_lines("err", r->err);
        async_command_result_clear(r);
    }
    printf("%zu commands, %zu at a time: %.2f s wall for %.2f s of commands, %d failed\n", n, jobs,
           wall, busy, failures);
    free(res);
    if (shell) {
        free(shell);
        free(cmds);
    }
    return failures ? 1 : 0;
}
