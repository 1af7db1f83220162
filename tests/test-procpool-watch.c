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
 * And what free takes for a spare: one spare asked for is one spare,
 * whatever the socket holds, and only on its own word.
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

/* A child of ours that sleeps until killed; with say >= 0 it first says
 * it is the spare on that socket (its own word, PP_MSG_SELF), and with
 * hang_up it then closes the socket (as a spare that died, whose pid went
 * to this process). */
static pid_t idle_child(int say, bool hang_up)
{
    pid_t c = fork();
    cr_assert_geq(c, 0);
    if (c == 0) {
        if (say >= 0) {
            pp_msg_t me = {PP_MSG_SELF, 0, getpid(), 0};
            if (send(say, &me, sizeof me, MSG_NOSIGNAL) != (ssize_t)sizeof me) _exit(1);
            if (hang_up) close(say);
        }
        for (;;) pause();
    }
    return c;
}

/* A pool whose server is gone, with a spare asked for, as free finds it;
 * sv[0] its socket, spare its spare's (the pool's end, taking the kernel's
 * word of each sender's pid, as async__pp_ask_spare sets it). */
static async__procpool_t *left_pool(int sv0, int spare)
{
    async__procpool_t *p = calloc(1, sizeof *p);
    cr_assert(p);
    p->sock = sv0;
    p->server = p->server_pidfd = -1;
    p->spare_sock = spare;
    p->spare_pidfd = p->spare_mute = -1;
    p->spare_asked = true;
    return p;
}

static void socket_pair(int sv[2], bool passcred)
{
    int on = 1;
    cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    if (passcred) cr_assert_eq(setsockopt(sv[0], SOL_SOCKET, SO_PASSCRED, &on, sizeof on), 0);
}

/* Kills and reaps child c if the pool left it running; returns what
 * waitpid(WNOHANG) said of it first (0: alive, not reaped). */
static int left_running(pid_t c, int *err)
{
    int r = (int)waitpid(c, NULL, WNOHANG);
    *err = errno;
    if (r == 0) {
        eng_signal(c, SIGKILL);
        waitpid(c, NULL, 0);
    }
    return r;
}

/* Caught: free read every SPARED report in the socket and took each as
 * the spare, so a server that reported two children of ours (only one was
 * asked for) left the first one's pidfd open and the first one running,
 * unreaped, and killed the second.  Round 17: free reads no report (the
 * first one here names a bystander), only the spare's own word. */
Test(procpool_watch, free_takes_one_spare_for_the_one_asked_for, .timeout = 30)
{
    int sv[2], spare[2];
    socket_pair(spare, true);
    pid_t a = idle_child(spare[1], false), b = idle_child(-1, false);
    socket_pair(sv, false);
    int before = open_fds();
    async__procpool_t *p = left_pool(sv[0], spare[0]);
    pp_msg_t m[2] = {{PP_MSG_SPARED, 0, (int32_t)b, 0}, {PP_MSG_SPARED, 0, (int32_t)a, 0}};
    for (int i = 0; i < 2; i++) cr_assert_eq(send(sv[1], &m[i], sizeof m[i], 0), (ssize_t)sizeof m[i]);
    async__pp_free_spare(p);
    int after = open_fds() + 1; /* spare[0], closed with the spare */
    int ea, eb, ra = left_running(a, &ea), rb = left_running(b, &eb);
    free(p);
    close(sv[0]);
    close(sv[1]);
    close(spare[1]);
    cr_assert(ra == -1 && ea == ECHILD, "the spare (%d), which said so itself, was not killed and reaped", (int)a);
    cr_assert_eq(rb, 0, "the bystander %d, which a report named, was %s", (int)b, rb > 0 ? "killed" : "reaped");
    cr_assert_eq(after, before, "%d descriptors open before free, %d after", before, after);
    no_child_left();
}

/* Caught (round 17): a spare's word whose sender had closed its socket
 * since (the spare died, and with SIGCHLD ignored the kernel gave its pid
 * to another child of ours: here the sender itself lives on as that child)
 * made that child the spare, and free killed and reaped it.  The spare's
 * end of its socket is looked at after its pidfd is open. */
Test(procpool_watch, a_spare_word_from_a_closed_socket_is_not_taken, .timeout = 30)
{
    int sv[2], spare[2];
    socket_pair(spare, true);
    pid_t c = idle_child(spare[1], true);
    close(spare[1]);
    socket_pair(sv, false);
    /* Its word is in, its end closed. */
    int64_t until = async_now() + ASYNC_SEC(10);
    struct pollfd pfd = {.fd = spare[0], .events = POLLRDHUP};
    while (!(poll(&pfd, 1, 0) == 1 && (pfd.revents & (POLLHUP | POLLRDHUP))) && async_now() < until) usleep(1000);
    async__procpool_t *p = left_pool(sv[0], spare[0]);
    async__pp_free_spare(p);
    int e, r = left_running(c, &e);
    free(p);
    close(sv[0]);
    close(sv[1]);
    cr_assert_eq(r, 0, "the child %d, whose socket had ended, was %s as the spare", (int)c,
                 r > 0 ? "killed" : "reaped");
    no_child_left();
}
/* A spare that said its word and died before free took it: its socket has
 * ended, and it is a zombie of ours, which free reaps (its word is taken:
 * a zombie holds its pid, no other process can have it). */
Test(procpool_watch, a_spare_dead_after_its_word_is_reaped, .timeout = 30)
{
    int sv[2], spare[2];
    socket_pair(spare, true);
    pid_t c = fork();
    cr_assert_geq(c, 0);
    if (c == 0) {
        pp_msg_t me = {PP_MSG_SELF, 0, getpid(), 0};
        _exit(send(spare[1], &me, sizeof me, MSG_NOSIGNAL) == (ssize_t)sizeof me ? 0 : 1);
    }
    close(spare[1]);
    socket_pair(sv, false);
    siginfo_t si = {0};
    cr_assert_eq(waitid(P_PID, (id_t)c, &si, WEXITED | WNOWAIT), 0); /* a zombie now */
    async__procpool_t *p = left_pool(sv[0], spare[0]);
    async__pp_free_spare(p);
    int r = (int)waitpid(c, NULL, WNOHANG), e = errno;
    free(p);
    close(sv[0]);
    close(sv[1]);
    cr_assert(r == -1 && e == ECHILD, "the dead spare %d was not reaped (waitpid: %d)", (int)c, r);
    no_child_left();
}
#endif
