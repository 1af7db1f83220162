/* accept's descriptor errors, told apart (lib/net/socket.c): the process's
 * limit (EMFILE) and the system's file table (ENFILE), which a program
 * answers differently (raise its own limit, or wait for others), and the
 * same answer from a plain thread as from a task.  The system's table
 * cannot be filled from a test, so accept4 is interposed here: the test
 * binary's definition is the one the library calls, and it fails the call
 * it is told to, once, then hands on to the C library's. */
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <async.h>
#include <async/net.h>
#include "support/run.h"

static int fail_with; /* the errno the next accept4 fails with (0: none) */
static bool no_dev_null; /* the next open of /dev/null fails (EMFILE) */

int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    static int (*real)(int, struct sockaddr *, socklen_t *, int);
    if (!real) real = (int (*)(int, struct sockaddr *, socklen_t *, int))dlsym(RTLD_NEXT, "accept4");
    if (fail_with) {
        errno = fail_with;
        fail_with = 0;
        return -1;
    }
    return real(fd, addr, len, flags);
}

/* The library's reserve descriptor is /dev/null, opened again after each
 * use: failing that open leaves the process without a reserve. */
int open(const char *path, int flags, ...)
{
    static int (*real)(const char *, int, ...);
    if (!real) real = (int (*)(const char *, int, ...))dlsym(RTLD_NEXT, "open");
    mode_t mode = 0;
    if (flags & O_CREAT) {
        va_list ap;
        va_start(ap, flags);
        mode = va_arg(ap, mode_t);
        va_end(ap);
    }
    if (no_dev_null && !strcmp(path, "/dev/null")) {
        no_dev_null = false;
        errno = EMFILE;
        return -1;
    }
    return real(path, flags, mode);
}

/* A client connected the plain way, from a thread that is not a task. */
static int blocking_client(int port)
{
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(c, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(connect(c, (struct sockaddr *)&a, sizeof a), 0, "connect: %s", strerror(errno));
    return c;
}

/* A listener with one client waiting in its backlog. */
static void listener_with_a_client(int *lfd, int *client)
{
    cr_assert_eq(async_tcp_listen(lfd, "127.0.0.1", 0, 8), 0);
    cr_assert_eq(async_tcp_connect_ip_dl(client, "127.0.0.1", async_sock_port(*lfd),
                                         async_deadline_after(ASYNC_SEC(5))),
                 0);
}

static int t_accept_fails_with(void *arg, void **res)
{
    (void)res;
    int lfd, client, fd = -1;
    listener_with_a_client(&lfd, &client);
    fail_with = *(int *)arg;
    int rc = async_sock_accept_dl(&fd, lfd, async_deadline_after(ASYNC_SEC(5)));
    close(client);
    close(lfd);
    if (fd >= 0) close(fd);
    return rc;
}

Test(net_accept_errors, a_full_system_file_table_is_enfile_not_emfile, .timeout = 20)
{
    int e = ENFILE;
    int rc = test_run_task(t_accept_fails_with, &e, NULL);
    cr_expect_eq(rc, ASYNC_ENFILE, "%s, want ASYNC_ENFILE", async_errname(rc));
    e = EMFILE;
    rc = test_run_task(t_accept_fails_with, &e, NULL);
    cr_expect_eq(rc, ASYNC_EMFILE, "%s, want ASYNC_EMFILE", async_errname(rc));
}

/* From a plain thread, with no reserve left to spend: the wait a task makes
 * before that answer (so that a loop around accept does not spin) cannot be
 * made, and the answer is the descriptor error, not ASYNC_ENOTASK. */
Test(net_accept_errors, out_of_descriptors_with_no_reserve_in_a_plain_thread_is_the_descriptor_error, .timeout = 20)
{
    int lfd, fd = -1;
    cr_assert_eq(async_tcp_listen(&lfd, "127.0.0.1", 0, 8), 0);
    int client = blocking_client(async_sock_port(lfd));
    /* The first EMFILE spends the reserve on the waiting client, whose
     * connection is closed, and the reserve is not opened again. */
    fail_with = EMFILE;
    no_dev_null = true;
    int rc = async_sock_accept_dl(&fd, lfd, async_deadline_after(ASYNC_SEC(5)));
    cr_expect_eq(rc, ASYNC_EMFILE, "%s, want ASYNC_EMFILE (the reserve spent)", async_errname(rc));
    cr_expect_not(no_dev_null, "the reserve was not opened again");
    int c2 = blocking_client(async_sock_port(lfd));
    fail_with = ENFILE;
    rc = async_sock_accept_dl(&fd, lfd, async_deadline_after(ASYNC_SEC(5)));
    cr_expect_eq(rc, ASYNC_ENFILE, "%s, want ASYNC_ENFILE (no reserve, no task)", async_errname(rc));
    close(c2);
    close(client);
    close(lfd);
}
