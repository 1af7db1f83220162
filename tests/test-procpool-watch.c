/* How the pool looks at a silent fork server (lib/exec/procpool/
 * server_watch.c, round 15), at the moment its answer is due: the socket
 * is looked at for an answer, and the server's /proc/PID/stat for its
 * state (stopped or asleep: replaced; runnable: waited for).  A server that
 * answers between the two looks is back asleep in its poll when /proc is
 * read, its answer in the socket: it must not be taken for a wedged one.
 *
 * The test makes that moment happen every time: it defines fopen, which
 * the library's /proc reads call (the test program's own definition comes
 * before libc's), and at the pool's first read of the server's stat it
 * continues the SIGSTOPped server and waits until its answer is in the
 * pool's socket and the server asleep again, then lets the read go on.
 * And what free takes of the server's reports of a spare: one spare asked
 * for is one spare, whatever the socket holds.
 * Driven through the engine's private API, as tests/test-procpool-server.c. */
#if defined(__SANITIZE_THREAD__)
#include <criterion/criterion.h>
Test(tsan, procpool_watch_tests_skipped, .timeout = 5)
{
    cr_skip_test("ThreadSanitizer cannot follow the process pool's cross-process hand-overs: this file runs "
                 "under the other builds");
}
#else
#define _GNU_SOURCE 1
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <dirent.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <async.h>
#include "support/procpool_engine.h"

static pid_t parent;          /* the test's process (the server is a fork of it) */
static _Atomic pid_t hook_pid; /* the server whose stat read is held; 0: none */
static atomic_int hook_sock = -1;
static atomic_int hook_fired, hook_answered;
static char hook_state;       /* the server's state when the read went on */

/* The state letter of pid from /proc, read without fopen. */
static char state_of(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = '\0';
    const char *rp = strrchr(buf, ')');
    return rp && rp[1] == ' ' ? rp[2] : 0;
}

/* The server continued, until its answer waits in the pool's socket and it
 * is asleep in its poll again (10 s at most). */
static void let_it_answer(pid_t server)
{
    eng_signal(server, SIGCONT);
    int64_t until = async_now() + ASYNC_SEC(10);
    bool answered = false;
    while (async_now() < until) {
        struct pollfd pfd = {.fd = atomic_load(&hook_sock), .events = POLLIN};
        answered = poll(&pfd, 1, 0) > 0 && (pfd.revents & POLLIN);
        hook_state = state_of(server);
        if (answered && hook_state == 'S') break;
        usleep(1000);
    }
    atomic_store(&hook_answered, answered);
}

FILE *fopen(const char *path, const char *mode)
{
    static FILE *(*real)(const char *, const char *);
    if (!real) *(void **)&real = dlsym(RTLD_NEXT, "fopen");
    pid_t s = atomic_load(&hook_pid);
    if (s > 0 && getpid() == parent) {
        char want[64];
        snprintf(want, sizeof want, "/proc/%d/stat", (int)s);
        if (!strcmp(path, want) && atomic_compare_exchange_strong(&hook_pid, &s, 0)) {
            let_it_answer(s);
            atomic_store(&hook_fired, 1);
        }
    }
    return real(path, mode);
}

static void no_child_left(void)
{
    cr_assert_eq(waitpid(-1, NULL, WNOHANG), -1, "a child of ours is left (a zombie?)");
    cr_assert_eq(errno, ECHILD);
}

TestSuite(procpool_watch);

/* Caught: the socket was looked at before /proc, so a server that
 * answered in between was read asleep ('S'), taken for wedged, killed and
 * replaced by its spare (replaced 1, its answer unread in the socket). */
Test(procpool_watch, a_server_that_answers_as_its_state_is_read_is_kept, .timeout = 90)
{
    parent = getpid();
    async__procpool_t *p = eng_pool_new(1);
    pid_t server = async__procpool_server_pid(p);
    eng_wait_spare(p, server);
    atomic_store(&hook_sock, p->sock); /* the supervisor's end, looked at, never read */
    eng_signal(server, SIGSTOP);
    atomic_store(&hook_pid, server);
    /* The ping comes after a quiet second, its answer is due 3 s later. */
    int64_t until = async_now() + ASYNC_SEC(30);
    while (!atomic_load(&hook_fired) && async_now() < until) usleep(10000);
    atomic_store(&hook_pid, 0);
    if (!atomic_load(&hook_fired)) eng_signal(server, SIGCONT);
    cr_assert(atomic_load(&hook_fired), "the pool never read the silent server's /proc state");
    cr_assert(atomic_load(&hook_answered), "the continued server did not answer within 10 s");
    cr_assert_eq(hook_state, 'S', "the server's state after its answer: %c", hook_state ? hook_state : '?');
    /* Two more turns of pings and answers. */
    usleep(2500 * 1000);
    cr_assert_eq(async__procpool_server_pid(p), server, "the server %d, which had answered, was replaced by %d",
                 (int)server, (int)async__procpool_server_pid(p));
    cr_assert_eq(READ_ONCE(p->replaced), 0u);
    cr_assert_eq(async__procpool_error(p, NULL, 0), 0);
    cr_assert_eq(eng_submit(p, eng_square, 7, 0), 0);
    eng_wait_done(1);
    cr_assert_eq(eng_res[0].err, 0, "%s", eng_res[0].msg);
    cr_assert_eq(eng_res[0].val, 49);
    async__procpool_free(p);
    no_child_left();
}

/* The descriptors open in this process. */
static int open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    cr_assert(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static pid_t idle_child(void)
{
    pid_t c = fork();
    cr_assert_geq(c, 0);
    if (c == 0) {
        for (;;) pause();
    }
    return c;
}

/* Caught: free read every SPARED report in the socket and took each as
 * the spare, so a server that reported two children of ours (only one was
 * asked for) left the first one's pidfd open and the first one running,
 * unreaped, and killed the second. */
Test(procpool_watch, free_takes_one_spare_for_the_one_asked_for, .timeout = 30)
{
    pid_t a = idle_child(), b = idle_child();
    int sv[2], spare[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, spare), 0);
    int before = open_fds();
    /* A pool whose server is gone, with a spare asked for, as free finds it. */
    async__procpool_t *p = calloc(1, sizeof *p);
    cr_assert(p);
    p->sock = sv[0];
    p->server = p->server_pidfd = -1;
    p->spare_sock = spare[0];
    p->spare_pidfd = -1;
    p->spare_asked = true;
    pp_msg_t m[2] = {{PP_MSG_SPARED, 0, (int32_t)a, 0}, {PP_MSG_SPARED, 0, (int32_t)b, 0}};
    for (int i = 0; i < 2; i++) cr_assert_eq(send(sv[1], &m[i], sizeof m[i], 0), (ssize_t)sizeof m[i]);
    async__pp_free_spare(p);
    int after = open_fds() + 1; /* spare[0], closed with the spare */
    int ra = (int)waitpid(a, NULL, WNOHANG), ea = errno;
    int rb = (int)waitpid(b, NULL, WNOHANG);
    if (rb == 0) {
        eng_signal(b, SIGKILL);
        waitpid(b, NULL, 0);
    }
    if (ra == 0) {
        eng_signal(a, SIGKILL);
        waitpid(a, NULL, 0);
    }
    free(p);
    close(sv[0]);
    close(sv[1]);
    close(spare[1]);
    cr_assert(ra == -1 && ea == ECHILD, "the spare reported first (%d) was not killed and reaped", (int)a);
    cr_assert_eq(rb, 0, "the second report's pid (%d), which the pool never asked for, was taken", (int)b);
    cr_assert_eq(after, before, "%d descriptors open before free, %d after", before, after);
    no_child_left();
}
#endif
