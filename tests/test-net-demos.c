/* The net demos: echo-server (listening line, echo, drain on SIGTERM/SIGINT,
 * exit 0) and chat (pub/sub between clients, exit 0 on SIGINT), run as the
 * built programs and driven over loopback with plain blocking sockets. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "support/run.h"

struct prog {
    pid_t pid;
    int out; /* its stdout */
    int port;
};

static void start(struct prog *p, const char *name, const char *extra)
{
    char path[512];
    snprintf(path, sizeof path, "%s/demos/net/%s", ASYNC_OUT_DIR, name);
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    p->pid = fork();
    cr_assert_geq(p->pid, 0);
    if (p->pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        if (extra) execl(path, name, "--port", "0", extra, (char *)NULL);
        else execl(path, name, "--port", "0", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    p->out = fds[0];
    /* The first stdout line, within 10 s. */
    char line[128];
    size_t n = 0;
    while (n < sizeof line - 1) {
        struct pollfd pf = {p->out, POLLIN, 0};
        cr_assert_eq(poll(&pf, 1, (int)(10000 * test_slack())), 1, "no listening line from %s", name);
        ssize_t r = read(p->out, line + n, 1);
        cr_assert_eq(r, 1, "%s ended before its listening line", name);
        if (line[n++] == '\n') break;
    }
    line[n] = 0;
    cr_assert_eq(sscanf(line, "listening on 127.0.0.1:%d", &p->port), 1, "first line: %s", line);
    cr_assert_gt(p->port, 0);
}

/* Exit status after sig, waiting at most 10 s (then SIGKILL and fail). */
static int stop(struct prog *p, int sig)
{
    if (sig) kill(p->pid, sig);
    for (int i = 0; i < 1000 * test_slack(); i++) {
        int st;
        pid_t r = waitpid(p->pid, &st, WNOHANG);
        if (r == p->pid) {
            close(p->out);
            return st;
        }
        usleep(10000);
    }
    kill(p->pid, SIGKILL);
    waitpid(p->pid, NULL, 0);
    cr_assert_fail("the program did not exit after signal %d", sig);
    return -1;
}

static int dial(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

static void send_str(int fd, const char *s)
{
    cr_assert_eq(send(fd, s, strlen(s), MSG_NOSIGNAL), (ssize_t)strlen(s));
}

/* Reads one line (without the newline) into buf. */
static void read_line(int fd, char *buf, size_t size)
{
    size_t n = 0;
    while (n < size - 1) {
        ssize_t r = recv(fd, buf + n, 1, 0);
        cr_assert_eq(r, 1, "connection ended or timed out after \"%.*s\"", (int)n, buf);
        if (buf[n] == '\n') break;
        n++;
    }
    buf[n] = 0;
}

static void expect_echo(int fd, const char *msg)
{
    send_str(fd, msg);
    char back[256];
    size_t want = strlen(msg), got = 0;
    while (got < want) {
        ssize_t r = recv(fd, back + got, want - got, 0);
        cr_assert_gt(r, 0);
        got += (size_t)r;
    }
    cr_assert_eq(memcmp(back, msg, want), 0);
}

Test(net_demos, echo_server_echoes_and_drains_on_sigterm, .timeout = 60)
{
    struct prog p;
    start(&p, "echo-server", NULL);
    int a = dial(p.port), b = dial(p.port);
    expect_echo(a, "hello");
    expect_echo(b, "world, and more");
    close(b);
    kill(p.pid, SIGTERM);
    usleep(100000);
    /* Draining: the open connection is still served, new ones are not taken. */
    expect_echo(a, "still here");
    int st;
    cr_assert_eq(waitpid(p.pid, &st, WNOHANG), 0, "the server waits for the open connection");
    close(a);
    st = stop(&p, 0);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %d", st);
}

Test(net_demos, echo_server_sigint_with_stuck_client_exits_after_drain_time, .timeout = 60)
{
    struct prog p;
    start(&p, "echo-server", "--drain-ms=200");
    int a = dial(p.port);
    expect_echo(a, "x");
    int st = stop(&p, SIGINT); /* a never closes: the drain time ends it */
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %d", st);
    char b;
    cr_assert_eq(recv(a, &b, 1, 0), 0, "the server closed the stuck connection");
    close(a);
}

Test(net_demos, chat_relays_lines_to_the_other_clients, .timeout = 60)
{
    struct prog p;
    start(&p, "chat", NULL);
    int c[3];
    char line[600], want[64];
    for (int i = 0; i < 3; i++) {
        c[i] = dial(p.port);
        read_line(c[i], line, sizeof line);
        snprintf(want, sizeof want, "welcome #%d", i + 1);
        cr_assert_str_eq(line, want);
        /* The earlier clients hear of the join. */
        for (int j = 0; j < i; j++) {
            read_line(c[j], line, sizeof line);
            snprintf(want, sizeof want, "* #%d joined", i + 1);
            cr_assert_str_eq(line, want);
        }
    }
    send_str(c[0], "hello all\nsecond ");
    send_str(c[0], "line\n");
    for (int j = 1; j < 3; j++) {
        read_line(c[j], line, sizeof line);
        cr_assert_str_eq(line, "#1: hello all");
        read_line(c[j], line, sizeof line);
        cr_assert_str_eq(line, "#1: second line");
    }
    send_str(c[2], "from three\n");
    read_line(c[0], line, sizeof line);
    cr_assert_str_eq(line, "#3: from three", "the sender does not get its own line back");
    read_line(c[1], line, sizeof line);
    cr_assert_str_eq(line, "#3: from three");
    close(c[1]);
    read_line(c[0], line, sizeof line);
    cr_assert_str_eq(line, "* #2 left");
    int st = stop(&p, SIGINT);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %d", st);
    char b;
    cr_assert_eq(recv(c[0], &b, 1, 0), 0, "shutdown closed the clients");
    close(c[0]);
    close(c[2]);
}
