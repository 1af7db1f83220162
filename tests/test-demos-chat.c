/* chat as a hostile client uses it: lines are relayed byte for byte, and an
 * overlong one is dropped whole.  The reader dropped only the first 511
 * bytes of an overlong line and relayed the rest as a line of its own; a
 * line of 507 to 510 bytes lost its newline to the 512-byte text ("#1: "
 * came first), so the next message ran on in the same line; and a NUL byte
 * cut the line there ("%.*s" stops at it, and the writer sent strlen). */
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
#include <unistd.h>

#define CHAT ASYNC_OUT_DIR "/demos/net/chat"

TestSuite(demos_chat, .timeout = 60);

static pid_t start(int *port)
{
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execl(CHAT, "chat", "--port", "0", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    char line[128];
    size_t n = 0;
    while (n < sizeof line - 1) {
        struct pollfd pf = {fds[0], POLLIN, 0};
        cr_assert_eq(poll(&pf, 1, 10000), 1, "no listening line");
        cr_assert_eq(read(fds[0], line + n, 1), 1, "chat ended before its listening line");
        if (line[n++] == '\n') break;
    }
    line[n] = 0;
    /* fds[0] stays open: chat may print more before it exits. */
    cr_assert_eq(sscanf(line, "listening on 127.0.0.1:%d", port), 1, "first line: %s", line);
    return pid;
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

/* Reads exactly len bytes (the test fails at a timeout or the end). */
static void read_exactly(int fd, char *buf, size_t len)
{
    for (size_t got = 0; got < len;) {
        ssize_t r = recv(fd, buf + got, len - got, 0);
        cr_assert_gt(r, 0, "the stream ended or timed out after %zu of %zu bytes: \"%.*s\"", got, len, (int)got, buf);
        got += (size_t)r;
    }
}

static void expect_text(int fd, const char *want, size_t len)
{
    char *got = malloc(len + 1);
    cr_assert_not_null(got);
    read_exactly(fd, got, len);
    got[len] = '\0';
    cr_expect(memcmp(got, want, len) == 0, "got \"%s\", want \"%s\"", got, want);
    free(got);
}

Test(demos_chat, lines_are_relayed_byte_for_byte_and_overlong_ones_dropped_whole)
{
    int port;
    pid_t pid = start(&port);
    cr_assert_gt(pid, 0);
    int a = dial(port);
    static const char wa[] = "welcome #1\n";
    expect_text(a, wa, sizeof wa - 1);
    int b = dial(port);
    static const char wb[] = "welcome #2\n";
    expect_text(b, wb, sizeof wb - 1);
    static const char joined[] = "* #2 joined\n";
    expect_text(a, joined, sizeof joined - 1);

    /* The longest line kept (510 bytes), a short one, an overlong one
     * (1,500 bytes), a short one, one with a NUL byte. */
    char sent[4096], want[4096];
    size_t ns = 0, nw = 0;
    memset(sent + ns, 'y', 510), ns += 510, sent[ns++] = '\n';
    ns += (size_t)sprintf(sent + ns, "next\n");
    memset(sent + ns, 'z', 1500), ns += 1500, sent[ns++] = '\n';
    ns += (size_t)sprintf(sent + ns, "after\n");
    memcpy(sent + ns, "nul\0byte\n", 9), ns += 9;
    nw += (size_t)sprintf(want + nw, "#1: ");
    memset(want + nw, 'y', 510), nw += 510, want[nw++] = '\n';
    nw += (size_t)sprintf(want + nw, "#1: next\n#1: after\n");
    memcpy(want + nw, "#1: nul\0byte\n", 13), nw += 13;
    cr_assert_eq(send(a, sent, ns, MSG_NOSIGNAL), (ssize_t)ns);
    char *got = malloc(nw);
    cr_assert_not_null(got);
    read_exactly(b, got, nw);
    for (size_t i = 0; i < nw; i++)
        if (got[i] != want[i]) {
            cr_expect_fail("byte %zu differs: got \"%.40s\", want \"%.40s\"", i, got + i, want + i);
            break;
        }
    /* Nothing more: a tail of the overlong line would come after. */
    static const char last[] = "last\n";
    cr_assert_eq(send(a, last, 5, MSG_NOSIGNAL), 5);
    expect_text(b, "#1: last\n", 9);
    free(got);
    close(a);
    close(b);
    kill(pid, SIGTERM);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "wait status %#x", st);
}
