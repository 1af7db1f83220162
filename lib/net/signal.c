/* Signals awaited from a task on any loop, through a signalfd.
 *
 * libev can watch signals only on its default loop; a signalfd is a plain
 * descriptor, so any loop's task waits on it with async_wait_fd_dl.  The
 * signals must be blocked for the signalfd to see them: async_signal_new
 * blocks them in the calling thread and async_signal_free unblocks exactly
 * those it blocked. */
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>
#include "net_internal.h"

struct async_signal {
    int fd;
    sigset_t added; /* the signals this set blocked, to unblock at free */
    bool waiting;
};

int async_signal_new(const int *signals, size_t n, async_signal_t **out)
{
    if (!signals || !n || !out) return ASYNC_EINVAL;
    sigset_t set, old;
    sigemptyset(&set);
    for (size_t i = 0; i < n; i++) {
        if (signals[i] == SIGKILL || signals[i] == SIGSTOP) return ASYNC_EINVAL;
        if (sigaddset(&set, signals[i]) < 0) return ASYNC_EINVAL;
    }
    async_signal_t *s = async__calloc(1, sizeof *s);
    if (!s) return ASYNC_ENOMEM;
    int rc = -pthread_sigmask(SIG_BLOCK, &set, &old);
    if (rc) goto fail;
    sigemptyset(&s->added);
    for (size_t i = 0; i < n; i++)
        if (!sigismember(&old, signals[i])) sigaddset(&s->added, signals[i]);
    s->fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (s->fd < 0) {
        /* ENODEV: the kernel could not give the anonymous inode signalfd
         * needs. */
        rc = errno == ENODEV ? ASYNC_ENOTSUP : async__net_errno(errno);
        pthread_sigmask(SIG_UNBLOCK, &s->added, NULL);
        goto fail;
    }
    *out = s;
    return 0;
fail:
    async__free(s);
    return rc;
}

int async_signal_free(async_signal_t *s)
{
    if (!s) return 0;
    if (s->waiting) return ASYNC_EBUSY;
    close(s->fd);
    pthread_sigmask(SIG_UNBLOCK, &s->added, NULL);
    async__free(s);
    return 0;
}

int async_signal_wait_dl(async_signal_t *s, int *signo, int64_t deadline)
{
    if (!s || !signo) return ASYNC_EINVAL;
    if (s->waiting) return ASYNC_EBUSY;
    int rc;
    for (;;) {
        struct signalfd_siginfo si;
        ssize_t r = read(s->fd, &si, sizeof si);
        if (r == (ssize_t)sizeof si) {
            *signo = (int)si.ssi_signo;
            return 0;
        }
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && errno != EAGAIN) return async__net_errno(errno);
        s->waiting = true;
        rc = async_wait_fd_dl(s->fd, ASYNC_READABLE, deadline);
        s->waiting = false;
        if (rc) return rc;
    }
}

int async_signal_wait(async_signal_t *s, int *signo)
{
    return async_signal_wait_dl(s, signo, ASYNC_FOREVER);
}
