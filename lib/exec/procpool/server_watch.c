/* The fork server seen from the parent: how it ended (its wait status, from
 * waitpid or, once another waiter reaped it, from its pidfd), killing it
 * without reaching a stranger, the check of every message it sends, and
 * whether it (or its spare) is stopped, starved or wedged.
 * The supervisor thread (supervisor.c) reads its socket and acts on what
 * these say. */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include "parent_internal.h"

/* PIDFD_GET_INFO's first layout (Linux 6.15), as lib/ipc/process.c declares
 * it (exec does not include ipc): the kernel reads the size from the
 * request number, so this 64-byte layout stays valid as the struct grows. */
struct pp_pidfd_info {
    uint64_t mask, cgroupid;
    uint32_t pid, tgid, ppid, ruid, rgid, euid, egid, suid, sgid, fsuid, fsgid;
    int32_t exit_code; /* a wait status, as waitpid gives */
};
#define PP_PIDFD_GET_INFO _IOWR(0xFF, 11, struct pp_pidfd_info)
#define PP_PIDFD_INFO_EXIT (1ull << 3)

/* The wait status of a server another waiter reaped, from its pidfd.  The
 * reaper records it while it releases the child, a moment after our
 * waitpid already says ECHILD: a few milliseconds are given. */
static bool server_exit_info(int pidfd, int *status)
{
    if (pidfd < 0) return false;
    for (int i = 0; i < 50; i++) {
        struct pp_pidfd_info in = {.mask = PP_PIDFD_INFO_EXIT};
        if (ioctl(pidfd, PP_PIDFD_GET_INFO, &in) < 0) {
            if (errno == EINTR) continue;
            return false; /* ENOTTY, EINVAL: a kernel before 6.13 */
        }
        if (in.mask & PP_PIDFD_INFO_EXIT) {
            *status = in.exit_code;
            return true;
        }
        usleep(100); /* before 6.15 this never comes: 5 ms in all */
    }
    return false;
}

/* What /proc/PID/stat says of a process: its state letter, its parent and
 * the CPU time it used (user and system, in ns).  False when there is no
 * such process. */
typedef struct pp_proc {
    char state;
    int ppid;
    int64_t cpu_ns;
} pp_proc_t;

static bool proc_stat(pid_t pid, pp_proc_t *out)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f) return false;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* "pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt
     * majflt cmajflt utime stime ...": comm may hold anything, so from its
     * end. */
    const char *rp = strrchr(buf, ')');
    unsigned long long ut = 0, st = 0;
    if (!rp || sscanf(rp + 1, " %c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &out->state,
                      &out->ppid, &ut, &st) != 4)
        return false;
    long hz = sysconf(_SC_CLK_TCK);
    out->cpu_ns = (int64_t)((ut + st) * (1000000000ull / (unsigned long long)(hz > 0 ? hz : 100)));
    return true;
}

static int ppid_of(pid_t pid)
{
    pp_proc_t pr;
    return proc_stat(pid, &pr) ? pr.ppid : -1;
}

/* What waitid says of our child pid (through pidfd when there is one,
 * which cannot name another process), without taking its report:
 * PP_CHILD_GONE when it is no child of ours (never was, or reaped by
 * another waiter: SIGCHLD ignored, the application's waitpid(-1)). */
enum { PP_CHILD_GONE, PP_CHILD_RUNNING, PP_CHILD_STOPPED, PP_CHILD_EXITED };

static int child_state(pid_t pid, int pidfd)
{
    siginfo_t si;
    int r;
    do {
        memset(&si, 0, sizeof si);
        r = pidfd >= 0 ? waitid(P_PIDFD, (id_t)pidfd, &si, WEXITED | WSTOPPED | WNOHANG | WNOWAIT)
                       : waitid(P_PID, (id_t)pid, &si, WEXITED | WSTOPPED | WNOHANG | WNOWAIT);
        if (r < 0 && errno == EINVAL && pidfd >= 0) { /* Linux 5.3: pidfds, but no P_PIDFD */
            pidfd = -1;
            errno = EINTR;
        }
    } while (r < 0 && errno == EINTR);
    if (r < 0) return PP_CHILD_GONE;
    if (si.si_pid == 0) return PP_CHILD_RUNNING; /* or stopped with its report taken by another */
    if (si.si_code == CLD_STOPPED || si.si_code == CLD_TRAPPED) return PP_CHILD_STOPPED;
    return PP_CHILD_EXITED;
}

/* SIGKILLs our child pid, not reaped yet by us: through its pidfd, which
 * never reaches another process.  Without pidfds (ENOSYS: Linux before
 * 5.1 for pidfd_send_signal, 5.3 for pidfd_open) only while waitid says it
 * is still our child, and one window stays open: between that waitid and
 * the kill, the child exits, another waiter reaps it (SIGCHLD set to
 * SIG_IGN, or a waitpid(-1) in another thread: with neither, the zombie
 * holds its pid until we reap it), and the kernel gives its pid to a new
 * process, which the kill then reaches.  The kernel hands pids out in
 * order and wraps at pid_max, so that takes pid_max (32,768 by default)
 * process creations in those few microseconds; nothing short of a pidfd
 * closes it. */
static void kill_child(pid_t pid, int pidfd)
{
#ifdef SYS_pidfd_send_signal
    if (pidfd >= 0 && syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0) == 0) return;
    if (pidfd >= 0 && errno == ESRCH) return; /* it has exited: its pid may be a stranger's */
#endif
    siginfo_t si;
    if (pid > 0 && waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0) kill(pid, SIGKILL);
}

/* Reaps our child pid, which is dead or dying: until its exit status
 * (waitpid reports a ptrace stop too, when a thread of ours traces it), or
 * until waitpid says it is no child of ours any more. */
static void reap_child(pid_t pid)
{
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, 0);
        if (r == pid && (WIFEXITED(st) || WIFSIGNALED(st))) return; /* its end */
        if (r < 0 && errno != EINTR) return;                       /* no child of ours now */
    }
}

static void kill_server(async__procpool_t *p) { kill_child(p->server, p->server_pidfd); }

bool async__pp_reap_server(async__procpool_t *p, int64_t patience, int *status, bool *killed)
{
    if (killed) *killed = false;
    int64_t until = async_now() + patience;
    bool sent = false;
    while (!p->server_reaped) {
        int st;
        pid_t r = waitpid(p->server, &st, WNOHANG);
        if (r == p->server && !WIFEXITED(st) && !WIFSIGNALED(st)) {
            continue; /* a ptrace stop (a thread of ours traces it): not its end */
        } else if (r == p->server) {
            p->server_reaped = p->server_known = true;
            p->server_status = st;
        } else if (r < 0 && errno == EINTR) {
            continue;
        } else if (r < 0) {
            /* ECHILD: another waiter took it (SIGCHLD set to SIG_IGN, or
             * libev's default loop); its pidfd still tells how it ended. */
            p->server_reaped = true;
            p->server_known = server_exit_info(p->server_pidfd, &p->server_status);
        } else if (!sent && async_now() >= until) {
            kill_server(p);
            sent = true;
            if (killed) *killed = true;
        } else if (p->server_pidfd >= 0) {
            struct pollfd pfd = {.fd = p->server_pidfd, .events = POLLIN};
            int64_t left = sent ? ASYNC_MSEC(10) : until - async_now();
            poll(&pfd, 1, left > ASYNC_MSEC(10) ? 10 : left > 0 ? (int)(left / 1000000) + 1 : 0);
        } else {
            usleep(1000);
        }
    }
    *status = p->server_status;
    return p->server_known;
}

/* Whether pid is a live process whose parent is not the fork server (one
 * that has exited already cannot be checked, and is let pass: its EXITED
 * report follows). */
static bool not_the_servers(const async__procpool_t *p, pid_t pid)
{
    pp_proc_t pr;
    if (!proc_stat(pid, &pr)) return false;
    return pr.ppid != p->server && pr.state != 'Z' && pr.state != 'X';
}

const char *async__pp_bad_server_message(async__procpool_t *p, const pp_msg_t *m, char *buf,
                                         size_t cap)
{
    if (m->type == PP_MSG_PONG) {
        if (p->ping_out) return NULL;
        snprintf(buf, cap, "answered a ping the pool did not send");
        return buf;
    }
    if (m->type == PP_MSG_SELF) {
        /* A spare's first word, read once it has taken over. */
        if (m->pid == p->server && m->value == 0) return NULL;
        snprintf(buf, cap, "said it was pid %d (it is %d)", (int)m->pid, (int)p->server);
        return buf;
    }
    if (m->type == PP_MSG_SPARED) {
        int ppid;
        if (!p->spare_asked)
            snprintf(buf, cap, "reported a spare fork server (pid %d) though none was asked for",
                     (int)m->pid);
        else if (m->value > 0 || (m->value == 0 && (m->pid <= 0 || m->pid == p->server)))
            snprintf(buf, cap, "reported a spare fork server as pid %d (error %d)", (int)m->pid,
                     (int)m->value);
        else if (m->value == 0 && (ppid = ppid_of(m->pid)) != -1 && ppid != getpid())
            snprintf(buf, cap, "reported a spare fork server as pid %d, which is not the pool's child",
                     (int)m->pid);
        else
            return NULL;
        return buf;
    }
    if (m->type != PP_MSG_SPAWNED && m->type != PP_MSG_EXITED) {
        snprintf(buf, cap, "sent a message of unknown type %u", m->type);
        return buf;
    }
    if (m->w >= p->nworkers) {
        snprintf(buf, cap, "sent a message about worker %u (the pool has %u)", m->w, p->nworkers);
        return buf;
    }
    pp_pworker_t *pw = &p->w[m->w];
    if (m->type == PP_MSG_SPAWNED) {
        if (!pw->spawning)
            snprintf(buf, cap, "reported worker %u started (pid %d) though none was asked for",
                     m->w, (int)m->pid);
        else if (m->value > 0 || (m->value == 0 && (m->pid <= 0 || m->pid == p->server)))
            snprintf(buf, cap, "reported worker %u started as pid %d (error %d)", m->w,
                     (int)m->pid, (int)m->value);
        else if (m->value == 0 && not_the_servers(p, m->pid))
            snprintf(buf, cap, "reported worker %u started as pid %d, which is not its child",
                     m->w, (int)m->pid);
        else
            return NULL;
        return buf;
    }
    if (!pw->alive || m->pid != pw->pid) {
        snprintf(buf, cap, "reported worker %u (pid %d) exited, but %s", m->w, (int)m->pid,
                 pw->alive ? "that worker has another pid" : "it was not running");
        return buf;
    }
    return NULL;
}

/* --- is it alive, and its spare -------------------------------------------
 *
 * A fork server that is stopped (SIGSTOP, a debugger) or wedged reports no
 * worker's death, so the pool would run with fewer workers for ever, and
 * the job of a worker that died would never end.  While the pool wants
 * workers, the supervisor asks the server for a PONG after a quiet second,
 * and a server that says nothing for PP_SERVER_ANSWER_NS after that is given
 * up on if it is stopped or wedged, not if it is merely starved of CPU
 * (async__pp_server_silent).  Its replacement must come from a clean image: forking one from
 * the parent now would copy whatever locks the parent's other threads hold
 * and the parent's memory of now (workers see the parent as of the pool's
 * creation).  So the server itself makes a spare ahead of need: a clone of
 * itself (CLONE_PARENT, so that the spare is our child, reaped by us and
 * killed through its pidfd), idle on a socket of its own that we passed it. */

void async__pp_ask_spare(async__procpool_t *p, int64_t now)
{
    if (p->spare_sock >= 0 || p->server_gone || p->nowed || now < p->spare_retry_at) return;
    p->spare_retry_at = now + PP_SPARE_RETRY_NS;
    int sv[2], on = 1;
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) return;
    /* Each message on our end then comes with its sender's pid, which the
     * kernel writes (SCM_CREDENTIALS): the spare's word is taken only from
     * the spare itself.  Set before the request goes, so before any word. */
    if (setsockopt(sv[0], SOL_SOCKET, SO_PASSCRED, &on, sizeof on) < 0) {
        close(sv[0]);
        close(sv[1]);
        return;
    }
    pp_msg_t m = {PP_MSG_SPARE, 0, 0, 0};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } cb;
    memset(&cb, 0, sizeof cb);
    struct iovec iov = {&m, sizeof m};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cb.buf,
                        .msg_controllen = sizeof cb.buf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &sv[1], sizeof(int));
    ssize_t n;
    while ((n = sendmsg(p->sock, &mh, MSG_NOSIGNAL | MSG_DONTWAIT)) < 0 && errno == EINTR) {}
    close(sv[1]);
    if (n != (ssize_t)sizeof m) {
        close(sv[0]);
        return;
    }
    p->spare_sock = sv[0];
    p->spare_asked = true;
    p->spare_self = 0;
    memset(p->spare_claim, 0, sizeof p->spare_claim);
    p->spare_claimed_at = 0;
}

/* The spare's word on sock, waited for up to patience: its pid, 0 while
 * none came, -1 when none will (the socket's end: no spare was made, or it
 * died).  A word is the spare's only if the kernel says that very pid sent
 * it: the server held the socket before its clone, and a word it wrote
 * there naming another child of ours (the application's, another pool's)
 * would have made that child our spare, to be killed and reaped by us.
 * Whatever else comes is dropped. */
static pid_t spare_word(int sock, pid_t server, int64_t patience)
{
    int64_t until = async_now() + patience;
    for (;;) {
        pp_msg_t m;
        union {
            char buf[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(4 * sizeof(int))];
            struct cmsghdr align;
        } cb;
        struct iovec iov = {&m, sizeof m};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cb.buf,
                            .msg_controllen = sizeof cb.buf};
        ssize_t n = recvmsg(sock, &mh, MSG_DONTWAIT | MSG_TRUNC | MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return -1;
        pid_t from = 0;
        for (struct cmsghdr *c = n >= 0 ? CMSG_FIRSTHDR(&mh) : NULL; c; c = CMSG_NXTHDR(&mh, c)) {
            if (c->cmsg_level != SOL_SOCKET) continue;
            if (c->cmsg_type == SCM_CREDENTIALS && c->cmsg_len >= CMSG_LEN(sizeof(struct ucred))) {
                struct ucred uc;
                memcpy(&uc, CMSG_DATA(c), sizeof uc);
                from = uc.pid;
            } else if (c->cmsg_type == SCM_RIGHTS) { /* nobody sends us descriptors */
                for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
                    int fd;
                    memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
                    close(fd);
                }
            }
        }
        if (n == (ssize_t)sizeof m && m.type == PP_MSG_SELF && m.value == 0 && m.pid > 0 &&
            m.pid == from && m.pid != server)
            return m.pid;
        if (n == 0) {
            /* The end of the socket, or an empty message: poll tells. */
            struct pollfd pfd = {.fd = sock, .events = POLLIN | POLLRDHUP};
            if (poll(&pfd, 1, 0) == 1 && (pfd.revents & (POLLHUP | POLLRDHUP))) return -1;
        }
        if (n >= 0) continue;
        int64_t left = until - async_now();
        if (left <= 0) return 0;
        struct pollfd pfd = {.fd = sock, .events = POLLIN};
        poll(&pfd, 1, (int)(left / 1000000) + 1);
    }
}

/* Whether pid, whose word came on sock, is the spare: our child, through a
 * pidfd (*pidfd, OUT, -1 without pidfds) that from then on is the spare,
 * whatever becomes of its pid.  With SIGCHLD ignored a spare that died
 * since its word was reaped by the kernel, and its pid may be another
 * process's now: the pidfd is opened first, then asked whether it names
 * our child (waitid on a pidfd answers for that very process, ECHILD for
 * any other), and then the socket whether the spare's end is still open.
 * It closes as the spare dies, before its pid can be anyone else's, so a
 * live child of ours behind an ended socket is another process, or the
 * spare dying (its descriptors close before it is a zombie): the pidfd
 * tells them apart, which it shows ended within a moment.  A zombie
 * holds its pid: it is the spare, ours to reap. */
static bool is_spare(pid_t pid, int sock, int *pidfd)
{
    int fd = -1;
#ifdef SYS_pidfd_open
    fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd < 0 && errno == ESRCH) return false; /* gone; ENOSYS, EPERM (seccomp): none */
    if (fd >= 0) fcntl(fd, F_SETFD, FD_CLOEXEC);
#endif
    int cs = child_state(pid, fd); /* without pidfds, by pid (kill_child) */
    struct pollfd pfd = {.fd = sock, .events = POLLRDHUP};
    bool ended = poll(&pfd, 1, 0) == 1 && (pfd.revents & (POLLHUP | POLLRDHUP | POLLERR));
    if (ended && cs == PP_CHILD_RUNNING && fd >= 0) {
        struct pollfd pp = {.fd = fd, .events = POLLIN};
        poll(&pp, 1, 100);
        cs = child_state(pid, fd);
    }
    bool ours = cs == PP_CHILD_EXITED || (cs != PP_CHILD_GONE && !ended);
    if (!ours && fd >= 0) close(fd);
    *pidfd = ours ? fd : -1;
    return ours;
}

/* The spare asked for is pid, whose word came: known from now on, or, if it
 * is not the spare after all, the request is over. */
static void adopt(async__procpool_t *p, pid_t pid)
{
    p->spare_asked = false;
    if (is_spare(pid, p->spare_sock, &p->spare_pidfd)) {
        p->spare_pid = pid;
        return;
    }
    close(p->spare_sock);
    p->spare_sock = -1;
}

/* Takes the spare asked for once its word came and, unless anyway, one of
 * the server's claims names it too; reads the word first (patience). */
static void settle(async__procpool_t *p, bool anyway, int64_t patience)
{
    if (!p->spare_self) {
        pid_t w = spare_word(p->spare_sock, p->server, patience);
        if (w < 0) { /* no spare will speak: asked for again later */
            close(p->spare_sock);
            p->spare_sock = -1;
            p->spare_asked = false;
            return;
        }
        p->spare_self = w;
    }
    bool claimed = anyway;
    for (int i = 0; i < PP_SPARE_CLAIMS; i++) claimed |= p->spare_self && p->spare_claim[i] == p->spare_self;
    if (p->spare_self && claimed) adopt(p, p->spare_self);
}

/* The request is given up on, its spare's word not heard: its socket is
 * kept (spare_mute) for a word that comes later, so that the spare, if
 * one was made, is reaped then; at the socket's end, when none was made
 * or it died, the socket is closed (hear_mute). */
static void give_up(async__procpool_t *p)
{
    /* Its word came, and no report matched it, or one said the clone
     * failed: the server's reports are wrong, but the spare is ours, read
     * off its socket already; it stays asked for, for take_over and free,
     * which take it on its word. */
    if (p->spare_self) return;
    if (p->spare_mute >= 0) close(p->spare_mute);
    p->spare_mute = p->spare_sock;
    p->spare_sock = -1;
    p->spare_asked = false;
}

void async__pp_on_spared(async__procpool_t *p, pid_t pid, int err)
{
    if (err || pid <= 0) {
        /* The clone failed (the server closed the spare's socket before it
         * said so), or a false report says it did. */
        give_up(p);
        return;
    }
    /* Only a claim: a server that lies (or a forged report) named another
     * child of ours, which we must neither kill nor reap. */
    memmove(p->spare_claim + 1, p->spare_claim, sizeof p->spare_claim - sizeof p->spare_claim[0]);
    p->spare_claim[0] = pid;
    p->spare_claimed_at = async_now();
    settle(p, false, 0);
}

/* Kills and reaps the spare (it has no workers and nothing to finish). */
static void drop_spare(async__procpool_t *p, bool kill_it)
{
    if (p->spare_pid > 0) {
        if (kill_it) kill_child(p->spare_pid, p->spare_pidfd);
        reap_child(p->spare_pid);
    }
    if (p->spare_sock >= 0) close(p->spare_sock);
    if (p->spare_pidfd >= 0) close(p->spare_pidfd);
    p->spare_sock = p->spare_pidfd = -1;
    p->spare_pid = 0;
    p->spare_asked = false;
}

/* A spare given up on before it spoke: should its word come on its socket
 * now (within patience), it is killed and reaped, which only we can do; at
 * the socket's end (no spare was made, or it died) the socket is closed. */
static void hear_mute(async__procpool_t *p, int64_t patience)
{
    pid_t pid = spare_word(p->spare_mute, p->server, patience);
    int fd;
    if (pid == 0) return;
    if (pid > 0 && is_spare(pid, p->spare_mute, &fd)) {
        kill_child(pid, fd);
        reap_child(pid);
        if (fd >= 0) close(fd);
    }
    close(p->spare_mute);
    p->spare_mute = -1;
}

void async__pp_check_spare(async__procpool_t *p, int64_t now)
{
    if (p->spare_mute >= 0) hear_mute(p, 0);
    if (p->spare_asked && p->spare_claimed_at) {
        settle(p, false, 0);
        if (p->spare_asked && !p->spare_self && now - p->spare_claimed_at >= PP_SPARE_SELF_NS) {
            /* Reported, and silent since: stopped before its first word (a
             * debugger), or the report was false.  Not to be killed on a
             * claim: its socket waits for its word, and another is made. */
            give_up(p);
            p->spare_retry_at = now + PP_SPARE_RETRY_NS;
        }
    }
    if (p->spare_pid <= 0) return;
    /* Looked at without taking a report: waitpid(WNOHANG) alone took a
     * ptrace stop for a death (the spare left unreaped, a zombie once it
     * ended), and said nothing of a SIGSTOP, which left a spare that could
     * not take over in place. */
    int cs = child_state(p->spare_pid, p->spare_pidfd);
    pp_proc_t pr;
    if (cs == PP_CHILD_RUNNING && proc_stat(p->spare_pid, &pr) && (pr.state == 'T' || pr.state == 't'))
        cs = PP_CHILD_STOPPED; /* its stop report taken by another waiter, or its tracer's */
    if (cs == PP_CHILD_RUNNING) return;
    if (cs == PP_CHILD_GONE) p->spare_pid = 0; /* reaped by another waiter */
    drop_spare(p, cs == PP_CHILD_STOPPED);
    p->spare_retry_at = now + PP_SPARE_RETRY_NS;
}

bool async__pp_server_silent(async__procpool_t *p, int64_t now, bool want)
{
    if (!want || p->server_gone) {
        p->ping_at = 0;
        return false;
    }
    if (!p->ping_at && now - p->server_heard >= PP_PING_IDLE_NS) p->ping_at = now;
    if (p->ping_at && !p->ping_out) {
        /* A socket full of our messages: the wait counts from the first
         * try; once the ping goes, from then. */
        pp_msg_t m = {PP_MSG_PING, 0, 0, 0};
        ssize_t n;
        while ((n = send(p->sock, &m, sizeof m, MSG_NOSIGNAL | MSG_DONTWAIT)) < 0 && errno == EINTR) {}
        if (n == (ssize_t)sizeof m) {
            p->ping_out = true;
            p->ping_at = now;
        }
    }
    if (!p->ping_at || now - p->ping_at < PP_SERVER_ANSWER_NS) return false;
    /* What /proc says is the server's only while it is our live child (the
     * pid of one reaped by another waiter may be a stranger's). */
    pp_proc_t pr;
    bool ours = proc_stat(p->server, &pr) && child_state(p->server, p->server_pidfd) == PP_CHILD_RUNNING;
    /* An answer already in the socket is read on the next turn.  Looked
     * for after /proc: a server that answered between a look at the socket
     * and the read of its state is back asleep in its poll, and was taken
     * for a wedged one (tests/test-procpool-watch.c). */
    struct pollfd pfd = {.fd = p->sock, .events = POLLIN};
    if (poll(&pfd, 1, 0) > 0 && (pfd.revents & POLLIN)) return false;
    if (!ours) return true;
    if (pr.state != 'R' && pr.state != 'D') return true; /* stopped (T, t), or asleep: wedged */
    /* Runnable (or in a short uninterruptible wait): it answers as soon as
     * it runs, unless it spins, which shows as CPU time, counted from the
     * first look at this wait (a new ping_at is a new wait). */
    if (p->ping_cpu_at != p->ping_at) {
        p->ping_cpu_at = p->ping_at;
        p->ping_cpu = pr.cpu_ns;
    } else if (pr.cpu_ns - p->ping_cpu >= PP_SERVER_BUSY_NS) {
        return true;
    }
    p->starved++;
    return false;
}

pid_t async__pp_take_over(async__procpool_t *p)
{
    /* A server stopped after it cloned the spare and before it said so:
     * the spare's own word, which the server that is given up on need not
     * confirm. */
    if (p->spare_asked && p->spare_sock >= 0) settle(p, true, 0);
    pid_t spare = p->spare_pid;
    if (spare <= 0 || p->spare_asked) return 0;
    int status;
    /* Killed now, and reaped: by then the kernel has queued its workers'
     * SIGKILL (PR_SET_PDEATHSIG, sent as it exits), so none of them runs
     * another instruction of a job whose slot we are about to take back. */
    async__pp_reap_server(p, 0, &status, NULL);
    close(p->sock);
    if (p->server_pidfd >= 0) close(p->server_pidfd);
    p->sock = p->spare_sock;
    p->server = spare;
    p->server_pidfd = p->spare_pidfd;
    p->spare_sock = p->spare_pidfd = -1;
    p->spare_pid = 0;
    p->spare_retry_at = 0;
    p->server_reaped = p->server_known = false;
    p->server_heard = async_now();
    p->ping_at = 0;
    p->ping_out = false;
    for (unsigned w = 0; w < p->nworkers; w++) {
        p->w[w].kill_owed = 0;
        p->w[w].spawn_owed = false;
        atomic_store(&p->v.workers[w].pid, 0);
    }
    p->nowed = 0;
    p->replaced++;
    return spare;
}

void async__pp_free_spare(async__procpool_t *p)
{
    /* A spare asked for and not known yet (its server was killed after it
     * cloned the spare and before it said so, or reported it as it left):
     * the spare's own word tells its pid, or its socket's end that none
     * was made (the server's end, which held the spare's in flight, is
     * gone, so the kernel drops it).  The server's reports are not read:
     * free took each SPARED there for the spare (a forged second one made
     * another child of ours the spare), and the word alone is the spare's. */
    if (p->spare_asked && p->spare_sock >= 0) settle(p, true, PP_SPARE_SELF_NS);
    if (p->spare_mute >= 0) hear_mute(p, PP_SPARE_SELF_NS);
    if (p->spare_mute >= 0) close(p->spare_mute);
    p->spare_mute = -1;
    if (p->spare_sock >= 0) {
        pp_msg_t m = {PP_MSG_QUIT, 0, 0, 0};
        while (send(p->spare_sock, &m, sizeof m, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && errno == EINTR) {}
    }
    drop_spare(p, true);
}
