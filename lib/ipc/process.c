/* Child processes.  async_process_spawn forks a child that runs a function;
 * its handle keeps a pidfd (pidfd_open, Linux 5.3+) so that join can wait
 * with poll, or with async_wait_fd_dl inside a task, until a deadline; where
 * pidfd_open is missing, join polls waitpid with short sleeps.  Every child is
 * reaped exactly once, by join, is_alive or free, so none is left a zombie.
 *
 * Another waiter may reap our children first: libev's default loop reaps
 * every child that exits while it runs (its SIGCHLD watcher calls
 * waitpid(-1)), and so do a SIGCHLD handler that waits for any child and a
 * SIGCHLD set to SIG_IGN.  waitpid then says ECHILD.  The pidfd still tells
 * the status (PIDFD_GET_INFO, Linux 6.15+); without it the status is lost
 * and says so.  Either way the child counts as reaped: it is never signalled
 * again, since its pid may already belong to another process, and signals go
 * through the pidfd where there is one, which can never reach a stranger.
 *
 * async_process_run_commands_dl starts commands with posix_spawnp (glibc
 * reports a failed exec as its return value, so a command that cannot start
 * fails alone) and runs one wait loop over every running command's stdout,
 * stderr and pidfd until all have ended or the deadline passes.  Outside a
 * task the loop waits in poll; inside one, those descriptors sit in an epoll
 * set whose own descriptor the task waits on through the loop
 * (async_wait_fd_dl), so the loop's other tasks run meanwhile. */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include "ipc_internal.h"
#include "async/process.h"

extern char **environ;

struct async_process {
    pid_t pid;
    int pidfd;     /* -1 if pidfd_open is unavailable */
    bool reaped;
    bool known;    /* once reaped: status is known (another waiter may have taken it) */
    int status;    /* waitpid status once reaped */
};

static int pidfd_open_(pid_t pid)
{
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    (void)pid;
    errno = ENOSYS;
    return -1;
#endif
}

int async_process_spawn_opts(async_process_t **out, async_process_fn fn, void *arg,
                             const async_process_opts_t *opts)
{
    if (!out || !fn) return ASYNC_EINVAL;
    /* sizeof is 0.2's layout; a later version keeps this bound at 0.2's size
     * and reads its new fields only when opts->size covers them. */
    if (opts && opts->size && opts->size < sizeof(async_process_opts_t)) return ASYNC_EINVAL;
    bool daemon = opts && opts->daemon;
    async_process_t *p = async__calloc(1, sizeof *p);
    if (!p) return ASYNC_ENOMEM;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int err = -errno;
        async__free(p);
        return err;
    }
    if (pid == 0) {
        if (daemon) {
            /* The death signal only covers a parent that dies after prctl; a
             * parent that died between fork and prctl has already left the
             * child with another parent, so check once more afterwards. */
            if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0) async__child_exit(127);
            if (getppid() != parent) async__child_exit(127);
        }
        async__child_exit(fn(arg) & 0xff);
    }
    p->pid = pid;
    p->pidfd = pidfd_open_(pid);
    if (p->pidfd >= 0) fcntl(p->pidfd, F_SETFD, FD_CLOEXEC);
    *out = p;
    return 0;
}

int async_process_spawn(async_process_t **out, async_process_fn fn, void *arg)
{
    return async_process_spawn_opts(out, fn, arg, NULL);
}

int async_process_pid(const async_process_t *p) { return p->pid; }

/* PIDFD_GET_INFO's first layout (Linux 6.15), declared here because the
 * system's headers may predate it; the kernel reads the size from the
 * request number, so this 64-byte layout stays valid as the struct grows. */
struct pidfd_info_v0 {
    uint64_t mask, cgroupid;
    uint32_t pid, tgid, ppid, ruid, rgid, euid, egid, suid, sgid, fsuid, fsgid;
    int32_t exit_code; /* a wait status, as waitpid gives */
};
#define PIDFD_GET_INFO_V0 _IOWR(0xFF, 11, struct pidfd_info_v0)
#define PIDFD_INFO_EXIT_BIT (1ull << 3)

/* The wait status of a child another waiter reaped, from its pidfd: true
 * with *status (OUT) set, or false when the kernel cannot tell.  The reaper
 * records the status while it releases the child, a moment after our
 * waitpid already says ECHILD: give it a few milliseconds. */
static bool exit_info(int pidfd, int *status)
{
    if (pidfd < 0) return false;
    for (int i = 0; i < 50; i++) {
        struct pidfd_info_v0 in = {.mask = PIDFD_INFO_EXIT_BIT};
        if (ioctl(pidfd, PIDFD_GET_INFO_V0, &in) < 0) {
            if (errno == EINTR) continue;
            return false; /* ENOTTY, EINVAL: a kernel before 6.13 */
        }
        if (in.mask & PIDFD_INFO_EXIT_BIT) {
            *status = in.exit_code;
            return true;
        }
        struct timespec ts = {0, 100000}; /* before 6.15 this never comes: 5 ms in all */
        nanosleep(&ts, NULL);
    }
    return false;
}

/* Reaps pid if it has ended (block: waits for that).  1: it has ended, with
 * *status (OUT) set when *known (OUT) says so; 0: it runs; or -errno.  ECHILD
 * means another waiter reaped it (see the top), or it is not this process's
 * child at all (a handle inherited through fork): either way it is not ours
 * to wait for or to signal any more. */
static int reap_pid(pid_t pid, int pidfd, bool block, int *status, bool *known)
{
    for (;;) {
        pid_t r = waitpid(pid, status, block ? 0 : WNOHANG);
        if (r == pid) {
            *known = true;
            return 1;
        }
        if (r == 0) return 0;
        if (errno == EINTR) continue;
        if (errno != ECHILD) return -errno;
        *known = exit_info(pidfd, status);
        return 1;
    }
}

/* Sends sig to a child not yet reaped: through its pidfd when there is one
 * (a pidfd never reaches another process, even once the pid is reused),
 * else with kill() after checking that it is still ours to signal.  0,
 * ESRCH when it has been reaped meanwhile (by another waiter), or -errno. */
static int signal_child(pid_t pid, int pidfd, int sig)
{
#ifdef SYS_pidfd_send_signal
    if (pidfd >= 0) {
        if (syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0) == 0) return 0;
        if (errno != ENOSYS) return -errno;
    }
#endif
    if (pid <= 0) return -ESRCH; /* never kill(0) or kill(-1): the group, or everyone */
    siginfo_t si;
    if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0 && errno == ECHILD)
        return -ESRCH;
    return kill(pid, sig) < 0 ? -errno : 0;
}

/* Reaps the child if it has ended: 1 reaped (now or before), 0 running, or
 * -errno. */
static int reap(async_process_t *p, bool block)
{
    if (p->reaped) return 1;
    int r = reap_pid(p->pid, p->pidfd, block, &p->status, &p->known);
    if (r == 1) {
        p->reaped = true;
        if (p->pidfd >= 0) {
            close(p->pidfd);
            p->pidfd = -1;
        }
    }
    return r;
}

int async_process_join_dl(async_process_t *p, int64_t deadline)
{
    for (;;) {
        int r = reap(p, false);
        if (r != 0) return r < 0 ? r : 0;
        int64_t now = async_now();
        if (deadline != ASYNC_FOREVER && now >= deadline) return ASYNC_ETIMEDOUT;
        if (p->pidfd >= 0 && async__in_task()) {
            int err = async_wait_fd_dl(p->pidfd, ASYNC_READABLE, deadline);
            if (err) return err;
        } else if (p->pidfd >= 0) {
            struct pollfd pfd = {.fd = p->pidfd, .events = POLLIN};
            int ms = -1;
            if (deadline != ASYNC_FOREVER) {
                int64_t left = (deadline - now + 999999) / 1000000;
                ms = left > INT32_MAX ? INT32_MAX : (int)left;
            }
            if (poll(&pfd, 1, ms) < 0 && errno != EINTR) return -errno;
        } else {
            /* No pidfd: poll waitpid every millisecond (or sooner, at the deadline). */
            int64_t step = ASYNC_MSEC(1);
            if (deadline != ASYNC_FOREVER && deadline - now < step) step = deadline - now;
            if (async__in_task()) {
                int err = async_sleep(step);
                if (err) return err;
            } else {
                struct timespec ts = {0, (long)step};
                nanosleep(&ts, NULL);
            }
        }
    }
}

int async_process_join(async_process_t *p) { return async_process_join_dl(p, ASYNC_FOREVER); }

bool async_process_is_alive(async_process_t *p) { return reap(p, false) == 0; }

static int send_signal(async_process_t *p, int sig)
{
    if (p->reaped) return ASYNC_EDONE;
    int err = signal_child(p->pid, p->pidfd, sig);
    if (err == -ESRCH) {
        /* Another waiter reaped it: take what the kernel still knows. */
        reap(p, false);
        return ASYNC_EDONE;
    }
    return err;
}

int async_process_terminate(async_process_t *p) { return send_signal(p, SIGTERM); }
int async_process_kill(async_process_t *p) { return send_signal(p, SIGKILL); }

int async_process_status(const async_process_t *p, int *exit_code, int *signal)
{
    if (!p->reaped) return ASYNC_EAGAIN; /* not yet: the result does not exist */
    if (!p->known) return ASYNC_ECHILD;  /* another waiter took it */
    bool sig = WIFSIGNALED(p->status);
    if (exit_code) *exit_code = sig ? -1 : WEXITSTATUS(p->status);
    if (signal) *signal = sig ? WTERMSIG(p->status) : 0;
    return 0;
}

void async_process_free(async_process_t *p)
{
    if (!p) return;
    /* Only a child still ours and running is killed: one reaped by another
     * waiter may have left its pid to a stranger. */
    if (reap(p, false) == 0) {
        signal_child(p->pid, p->pidfd, SIGKILL);
        reap(p, true);
    }
    if (p->pidfd >= 0) close(p->pidfd);
    async__free(p);
}

/* --- commands in parallel ------------------------------------------------------- */

typedef struct buf {
    char *data;
    size_t len, cap;
    bool lost; /* out of memory: what comes now is read and dropped */
} buf_t;

typedef struct run {
    size_t idx;
    pid_t pid;
    int fd[2];     /* stdout, stderr read ends; -1 at end of file */
    int pidfd;     /* -1 once reaped or if unavailable */
    bool reaped;
    bool known;    /* once reaped: status is known (see reap_pid) */
    bool tick;     /* in a task, a descriptor is missing from the epoll set */
    int status;
    int error;     /* a capture error, kept until the run is finished */
    int64_t start;
    buf_t b[2];
} run_t;

/* Reads what fd has: 1 at end of file, 0 when it would block, or -errno;
 * *nomem (OUT) is set when the buffer could not grow.  The pipe is drained
 * then all the same, into a scratch buffer, and stays open: a command whose
 * output cannot be kept still runs to its end, where closing the pipe
 * killed it with SIGPIPE at its next write (before round 14). */
static int buf_read(buf_t *b, int fd, bool *nomem)
{
    char scratch[4096];
    for (;;) {
        if (!b->lost && b->cap - b->len < 4096) {
            size_t cap = b->cap ? b->cap * 2 : 8192;
            char *nd = async__realloc(b->data, cap);
            if (nd) {
                b->data = nd;
                b->cap = cap;
            } else {
                b->lost = true;
                *nomem = true;
            }
        }
        char *to = b->lost ? scratch : b->data + b->len;
        size_t room = b->lost ? sizeof scratch : b->cap - b->len - 1;
        ssize_t n = read(fd, to, room);
        if (n > 0) {
            if (!b->lost) b->len += (size_t)n;
            continue;
        }
        if (n == 0) return 1;
        if (errno == EINTR) continue;
        if (errno == EAGAIN) return 0;
        return -errno;
    }
}

static void close_fd(int *fd)
{
    if (*fd >= 0) close(*fd);
    *fd = -1;
}

/* In a task, every descriptor the loop waits on is also in the epoll set
 * epfd (-1 outside a task): level-triggered, so what is left unread keeps
 * the set readable. */
static int track(int epfd, int fd)
{
    if (epfd < 0 || fd < 0) return 0;
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

static void untrack_close(int epfd, int *fd)
{
    if (epfd >= 0 && *fd >= 0) epoll_ctl(epfd, EPOLL_CTL_DEL, *fd, NULL);
    close_fd(fd);
}

/* Starts cmds[r->idx]; 0 or the error to store in its result. */
static int start(run_t *r, const async_command_t *cmd, async_command_result_t *res, int epfd)
{
    int out[2] = {-1, -1}, err[2] = {-1, -1}, e;
    if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) {
        e = -errno;
        close_fd(&out[0]);
        close_fd(&out[1]);
        return e;
    }
    posix_spawn_file_actions_t fa;
    if ((e = posix_spawn_file_actions_init(&fa))) goto fail_pipes;
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, err[1], 2);
    if (cmd->cwd) posix_spawn_file_actions_addchdir_np(&fa, cmd->cwd);
    r->start = async_now();
    e = posix_spawnp(&r->pid, cmd->argv[0], &fa, NULL, (char *const *)cmd->argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (e) {
        res->start_errno = e;
        e = ASYNC_ECHILD;
        goto fail_pipes;
    }
    close(out[1]);
    close(err[1]);
    r->fd[0] = out[0];
    r->fd[1] = err[0];
    fcntl(out[0], F_SETFL, O_NONBLOCK);
    fcntl(err[0], F_SETFL, O_NONBLOCK);
    r->pidfd = pidfd_open_(r->pid);
    if (r->pidfd >= 0) fcntl(r->pidfd, F_SETFD, FD_CLOEXEC);
    r->reaped = false;
    /* A descriptor the set refused (out of memory, or the user's epoll
     * watch limit) would never wake the task: look at this run every tick,
     * as at a missing pidfd, instead. */
    for (int k = 0; k < 2; k++)
        if (track(epfd, r->fd[k])) r->tick = true;
    if (track(epfd, r->pidfd)) r->tick = true;
    return 0;
fail_pipes:
    close(out[0]);
    close(out[1]);
    close(err[0]);
    close(err[1]);
    return e > 0 ? -e : e;
}

/* Moves a finished run's captures and status into its result. */
static void finish(run_t *r, async_command_result_t *res, int error, int epfd)
{
    for (int i = 0; i < 2; i++) {
        untrack_close(epfd, &r->fd[i]);
        if (!r->b[i].data) r->b[i].data = async__malloc(1);
        if (r->b[i].data) r->b[i].data[r->b[i].len] = '\0';
    }
    untrack_close(epfd, &r->pidfd);
    res->out = r->b[0].data;
    res->out_len = r->b[0].len;
    res->err = r->b[1].data;
    res->err_len = r->b[1].len;
    memset(r->b, 0, sizeof r->b);
    res->elapsed_ns = async_now() - r->start;
    res->error = error;
    if (r->reaped && r->known) {
        bool sig = WIFSIGNALED(r->status);
        res->exit_code = sig ? -1 : WEXITSTATUS(r->status);
        res->signal = sig ? WTERMSIG(r->status) : 0;
    } else if (r->reaped) {
        res->exit_code = -1; /* another waiter took its status */
        if (!error) res->error = -ECHILD;
    }
    if (!error && (!res->out || !res->err)) res->error = ASYNC_ENOMEM;
}

/* Waits for output, an exit or the deadline; a wait shortened to a tick
 * (no pidfd) ends early.  Outside a task: poll over pfds.  In a task: the
 * epoll set through the loop.  0, or ASYNC_ECANCELED (the task), or the
 * system's -errno. */
static int wait_runs(struct pollfd *pfds, size_t np, int epfd, bool need_tick, int64_t deadline)
{
    int64_t now = async_now(), until = deadline;
    if (need_tick && (until == ASYNC_FOREVER || until - now > ASYNC_MSEC(5)))
        until = now + ASYNC_MSEC(5); /* no pidfd: poll waitpid */
    if (epfd >= 0) {
        int err = async_wait_fd_dl(epfd, ASYNC_READABLE, until);
        return err == ASYNC_ETIMEDOUT ? 0 : err;
    }
    int ms = -1;
    if (until != ASYNC_FOREVER) {
        /* Compare before subtracting: a deadline far in the past would overflow. */
        int64_t left = until <= now ? 0 : (until - now + 999999) / 1000000;
        ms = left > INT32_MAX ? INT32_MAX : (int)left;
    }
    if (poll(pfds, np, ms) < 0 && errno != EINTR) return -errno;
    return 0;
}

/* One async_process_run_commands_dl call's state. */
typedef struct batch {
    const async_command_t *cmds;
    async_command_result_t *results;
    size_t n, max_parallel;
    run_t *runs;          /* the running commands, runs[0..nrun) */
    size_t nrun, next;    /* next: the first command not yet started */
    struct pollfd *pfds;  /* 3 a run: stdout, stderr, pidfd */
    int epfd;             /* in a task: the descriptors the task waits on; else -1 */
    bool failed;          /* a command could not start, failed or exited non-zero */
    int stop;             /* ASYNC_ETIMEDOUT or ASYNC_ECANCELED: kill the rest, start no more */
} batch_t;

/* Starts commands while there is room. */
static void start_more(batch_t *b)
{
    while (b->nrun < b->max_parallel && b->next < b->n && !b->stop) {
        run_t *r = &b->runs[b->nrun];
        memset(r, 0, sizeof *r);
        r->idx = b->next++;
        r->fd[0] = r->fd[1] = r->pidfd = -1;
        int e = start(r, &b->cmds[r->idx], &b->results[r->idx], b->epfd);
        if (e) {
            b->results[r->idx].error = e;
            b->results[r->idx].exit_code = -1;
            b->failed = true;
            continue;
        }
        b->nrun++;
    }
}

/* Waits for output, an end, or the deadline; sets b->stop at the deadline
 * or on cancellation. */
static void wait_any(batch_t *b, int64_t deadline)
{
    size_t np = 0;
    bool need_tick = false;
    for (size_t i = 0; i < b->nrun; i++) {
        const run_t *r = &b->runs[i];
        for (int k = 0; k < 2; k++)
            if (r->fd[k] >= 0) b->pfds[np++] = (struct pollfd){r->fd[k], POLLIN, 0};
        if (r->pidfd >= 0) b->pfds[np++] = (struct pollfd){r->pidfd, POLLIN, 0};
        else if (!r->reaped) need_tick = true;
        if (r->tick) need_tick = true;
    }
    int werr = wait_runs(b->pfds, np, b->epfd, need_tick, deadline);
    if (werr == ASYNC_ECANCELED) b->stop = ASYNC_ECANCELED;
    else if (werr) b->stop = ASYNC_ETIMEDOUT; /* should not happen; stop so nothing hangs */
    if (!b->stop && deadline != ASYNC_FOREVER && async_now() >= deadline) b->stop = ASYNC_ETIMEDOUT;
}

/* Reads output and exits; finishes the runs that are over (all of them,
 * killed, once b->stop is set) and compacts them out of the array. */
static void collect(batch_t *b)
{
    for (size_t i = 0; i < b->nrun;) {
        run_t *r = &b->runs[i];
        async_command_result_t *res = &b->results[r->idx];
        for (int k = 0; k < 2; k++) {
            if (r->fd[k] < 0) continue;
            bool nomem = false;
            int rr = buf_read(&r->b[k], r->fd[k], &nomem);
            if (nomem && !r->error) r->error = ASYNC_ENOMEM;
            if (rr == 1) untrack_close(b->epfd, &r->fd[k]);
            else if (rr < 0) {
                /* The child may run on: remember the error until it ends. */
                if (!r->error) r->error = rr;
                untrack_close(b->epfd, &r->fd[k]);
            }
        }
        int error = r->error;
        /* An error other than ECHILD (none is expected) leaves the run to
         * the deadline, as before. */
        if (!r->reaped && reap_pid(r->pid, r->pidfd, false, &r->status, &r->known) == 1) {
            r->reaped = true;
            untrack_close(b->epfd, &r->pidfd);
        }
        if (b->stop && !r->reaped) {
            signal_child(r->pid, r->pidfd, SIGKILL);
            reap_pid(r->pid, r->pidfd, true, &r->status, &r->known);
            r->reaped = true;
            for (int k = 0; k < 2; k++)
                if (r->fd[k] >= 0) buf_read(&r->b[k], r->fd[k], &(bool){false});
            error = b->stop;
        }
        if (r->reaped && (b->stop || error || (r->fd[0] < 0 && r->fd[1] < 0))) {
            finish(r, res, error, b->epfd);
            if (res->error != ASYNC_ETIMEDOUT && res->error != ASYNC_ECANCELED &&
                (res->error || res->exit_code != 0))
                b->failed = true;
            b->runs[i] = b->runs[--b->nrun];
            continue;
        }
        i++;
    }
}

int async_process_run_commands_dl(const async_command_t *cmds, size_t n, size_t max_parallel,
                                  async_command_result_t *results, int64_t deadline)
{
    if ((n && (!cmds || !results)) || max_parallel == 0) return ASYNC_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!cmds[i].argv || !cmds[i].argv[0]) return ASYNC_EINVAL;
    if (max_parallel > n) max_parallel = n ? n : 1;
    batch_t b = {.cmds = cmds, .results = results, .n = n, .max_parallel = max_parallel, .epfd = -1};
    if (n && async__in_task()) {
        b.epfd = epoll_create1(EPOLL_CLOEXEC);
        if (b.epfd < 0) return errno == ENOMEM ? ASYNC_ENOMEM : -errno;
    }
    b.runs = async__calloc(max_parallel, sizeof *b.runs);
    b.pfds = async__calloc(max_parallel * 3, sizeof *b.pfds);
    if (!b.runs || !b.pfds) {
        async__free(b.runs);
        async__free(b.pfds);
        if (b.epfd >= 0) close(b.epfd);
        return ASYNC_ENOMEM;
    }
    if (n) memset(results, 0, n * sizeof *results); /* results may be NULL when n is 0 */
    for (;;) {
        start_more(&b);
        if (b.nrun == 0) break;
        wait_any(&b, deadline);
        collect(&b);
    }
    /* Commands never started because of the deadline or the cancellation. */
    for (size_t i = b.next; i < n; i++) {
        results[i].error = b.stop;
        results[i].exit_code = -1;
    }
    async__free(b.runs);
    async__free(b.pfds);
    if (b.epfd >= 0) close(b.epfd);
    return b.stop ? b.stop : b.failed ? ASYNC_ECHILD : 0;
}

void async_command_result_clear(async_command_result_t *r)
{
    if (!r) return;
    async__free(r->out);
    async__free(r->err);
    memset(r, 0, sizeof *r);
}
