/* Signals awaited from a task on any loop, through a signalfd.
 *
 * libev can watch signals only on its default loop; a signalfd is a plain
 * descriptor, so any loop's task waits on it with async_wait_fd_dl.  The
 * signals must be blocked for the signalfd to see them: async_signal_new
 * blocks them in the calling thread and async_signal_destroy, on that thread,
 * unblocks exactly those it blocked.  A task of a loop on another thread may
 * wait too, if that thread blocks the signals (inherited from the creator,
 * say): else a signal could be delivered to it with its default action. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/signalfd.h>
#include <unistd.h>
#include "net_internal.h"

struct async_signal {
    int fd;
    sigset_t set;     /* the signals of the set */
    sigset_t added;   /* the ones this set blocked, to unblock at free */
    pthread_t thread; /* the thread whose mask that is */
    /* A task waits in async_signal_wait_dl.  Atomic: tasks of loops on other
     * threads may wait on the set (their threads block the signals too). */
    _Atomic bool waiting;
};

/* The calling thread blocks every signal of the set: else the kernel may
 * deliver one to this thread with its default action while it waits. */
static bool thread_blocks(const async_signal_t *s)
{
    sigset_t cur;
    if (pthread_sigmask(SIG_BLOCK, NULL, &cur)) return false;
    for (int sig = 1; sig < NSIG; sig++)
        if (sigismember(&s->set, sig) == 1 && sigismember(&cur, sig) != 1) return false;
    return true;
}

int async_signal_new(async_signal_t **out, const int *signals, size_t n)
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
    s->set = set;
    s->thread = pthread_self();
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

int async_signal_destroy(async_signal_t *s)
{
    if (!s) return 0;
    /* The mask to restore is the creating thread's. */
    if (!pthread_equal(s->thread, pthread_self())) return ASYNC_EWRONGLOOP;
    if (atomic_load(&s->waiting)) return ASYNC_EBUSY;
    close(s->fd);
    pthread_sigmask(SIG_UNBLOCK, &s->added, NULL);
    async__free(s);
    return 0;
}

int async_signal_wait_dl(async_signal_t *s, int *signo, int64_t deadline)
{
    if (!s || !signo) return ASYNC_EINVAL;
    if (atomic_load(&s->waiting)) return ASYNC_EBUSY;
    if (!pthread_equal(s->thread, pthread_self()) && !thread_blocks(s)) return ASYNC_EWRONGLOOP;
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
        if (atomic_exchange(&s->waiting, true)) return ASYNC_EBUSY;
        rc = async_wait_fd_dl(s->fd, ASYNC_READABLE, deadline);
        atomic_store(&s->waiting, false);
        if (rc) return rc;
    }
}

int async_signal_wait(async_signal_t *s, int *signo)
{
    return async_signal_wait_dl(s, signo, ASYNC_FOREVER);
}
