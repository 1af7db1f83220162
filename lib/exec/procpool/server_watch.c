/* The fork server seen from the parent: how it ended (its wait status, from
 * waitpid or, once another waiter reaped it, from its pidfd), killing it
 * without reaching a stranger, and the check of every message it sends.
 * The supervisor thread (supervisor.c) reads its socket and acts on what
 * these say. */
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
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

/* SIGKILLs the server, which is not reaped yet by us: through its pidfd,
 * which never reaches another process; without one, only while waitid
 * says it is still our child to signal. */
static void kill_server(async__procpool_t *p)
{
#ifdef SYS_pidfd_send_signal
    if (p->server_pidfd >= 0 && syscall(SYS_pidfd_send_signal, p->server_pidfd, SIGKILL, NULL, 0) == 0)
        return;
#endif
    siginfo_t si;
    if (waitid(P_PID, (id_t)p->server, &si, WEXITED | WNOHANG | WNOWAIT) == 0) kill(p->server, SIGKILL);
}

bool async__pp_reap_server(async__procpool_t *p, int64_t patience, int *status, bool *killed)
{
    if (killed) *killed = false;
    int64_t until = async_now() + patience;
    bool sent = false;
    while (!p->server_reaped) {
        int st;
        pid_t r = waitpid(p->server, &st, WNOHANG);
        if (r == p->server) {
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
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f) return false;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* "pid (comm) state ppid ...": comm may hold anything, so from its end. */
    const char *rp = strrchr(buf, ')');
    char state;
    int ppid;
    if (!rp || sscanf(rp + 1, " %c %d", &state, &ppid) != 2) return false;
    return ppid != p->server && state != 'Z' && state != 'X';
}

const char *async__pp_bad_server_message(async__procpool_t *p, const pp_msg_t *m, char *buf,
                                         size_t cap)
{
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
