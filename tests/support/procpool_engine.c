/* The process pool's engine tests' shared helpers (procpool_engine.h). */
#include "procpool_engine.h"
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <async.h>

eng_res_t eng_res[ENG_MAXJ];
atomic_int eng_ndone;
atomic_int eng_calls[ENG_MAXJ];
int eng_hold_job = -1;
atomic_int eng_held, eng_release;

void eng_on_done(void *user, void *arg, int err, const char *msg, const void *out, size_t len)
{
    (void)user;
    int i = (int)(intptr_t)arg;
    eng_res_t *r = &eng_res[i];
    r->err = err;
    if (msg) snprintf(r->msg, sizeof r->msg, "%s", msg);
    r->len = len;
    if (out && len >= sizeof(long)) memcpy(&r->val, out, sizeof(long));
    atomic_fetch_add(&eng_calls[i], 1);
    if (i == eng_hold_job) {
        atomic_store(&eng_held, 1);
        while (!atomic_load(&eng_release)) usleep(1000);
    }
    atomic_fetch_add(&eng_ndone, 1);
}

void eng_wait_done(int n)
{
    int64_t until = async_now() + ASYNC_SEC(30);
    while (atomic_load(&eng_ndone) < n && async_now() < until) usleep(500);
    cr_assert_eq(atomic_load(&eng_ndone), n, "%d of %d jobs done", atomic_load(&eng_ndone), n);
}

void eng_wait_flag(atomic_int *f)
{
    int64_t until = async_now() + ASYNC_SEC(20);
    while (!atomic_load(f) && async_now() < until) usleep(500);
    cr_assert(atomic_load(f), "timed out");
}

int eng_square(void *ctx, const void *in, size_t n, async__procout_t *out)
{
    (void)ctx, (void)n;
    long x;
    memcpy(&x, in, sizeof x);
    x *= x;
    memcpy(async__procout_data(out), &x, sizeof x);
    return 0;
}

int eng_sleeper(void *ctx, const void *in, size_t n, async__procout_t *out)
{
    (void)ctx, (void)n;
    long ms;
    memcpy(&ms, in, sizeof ms);
    usleep((useconds_t)ms * 1000);
    memcpy(async__procout_data(out), &ms, sizeof ms);
    return 0;
}

async__procpool_t *eng_pool_new(unsigned workers)
{
    async__procpool_opts_t o = {.workers = workers, .slots = 16, .idle_spin_ns = -1};
    async__procpool_t *p;
    cr_assert_eq(async__procpool_new(&o, &p), 0);
    cr_assert_eq(async__procpool_wait_ready(p, async_deadline_after(ASYNC_SEC(20))), 0);
    return p;
}

int eng_submit(async__procpool_t *p, async__procpool_fn fn, long in, int i)
{
    async__procjob_t j = {.fn = (async__anyfn_t)fn, .in = &in, .in_len = sizeof in, .out_cap = 8,
                          .deadline = ASYNC_FOREVER, .done = eng_on_done, .arg = (void *)(intptr_t)i};
    return async__procpool_submit(p, &j, NULL);
}

int eng_ppid_of(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* "pid (comm) state ppid ...": comm may hold anything, so from its end. */
    const char *rp = strrchr(buf, ')');
    char state;
    int ppid;
    if (!rp || sscanf(rp + 1, " %c %d", &state, &ppid) != 2 || state == 'Z') return -1;
    return ppid;
}

pid_t eng_wait_spare(async__procpool_t *p, pid_t not)
{
    int64_t until = async_now() + ASYNC_SEC(20);
    pid_t s;
    while (((s = READ_ONCE(p->spare_pid)) <= 0 || s == not) && async_now() < until) usleep(1000);
    cr_assert(s > 0 && s != not, "no spare fork server (other than %d)", (int)not);
    cr_assert_eq(eng_ppid_of(s), getpid(), "the spare %d is not our child", (int)s);
    return s;
}

void eng_signal(pid_t pid, int sig)
{
    cr_assert_gt(pid, 0, "no such process of the pool");
    cr_assert_eq(kill(pid, sig), 0);
}

int eng_wait_stop(pid_t pid)
{
    int64_t until = async_now() + ASYNC_SEC(20);
    int st;
    pid_t r;
    while ((r = waitpid(pid, &st, __WALL | WNOHANG)) == 0 && async_now() < until) usleep(1000);
    cr_assert_eq(r, pid, "no stop of %d: %s", (int)pid, r < 0 ? strerror(errno) : "timed out");
    cr_assert(WIFSTOPPED(st), "%d: status %#x", (int)pid, st);
    return st;
}

int eng_server_socket(pid_t server, bool highest, char *why, size_t cap)
{
    int pidfd = (int)syscall(SYS_pidfd_open, server, 0);
    if (pidfd < 0) {
        snprintf(why, cap, "pidfd_open: %s", strerror(errno));
        return -1;
    }
    char dir[64];
    snprintf(dir, sizeof dir, "/proc/%d/fd", (int)server);
    DIR *d = opendir(dir);
    int pick = -1;
    snprintf(why, cap, "no socket among the fork server's descriptors");
    for (struct dirent *e; d && (e = readdir(d));) {
        int fd = atoi(e->d_name);
        if (fd <= 2 || (pick >= 0 && (highest ? fd < pick : fd > pick))) continue;
        char path[400], link[64] = "";
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (readlink(path, link, sizeof link - 1) < 0 || strncmp(link, "socket:", 7) != 0) continue;
        pick = fd;
    }
    if (d) closedir(d);
    int got = pick >= 0 ? (int)syscall(SYS_pidfd_getfd, pidfd, pick, 0) : -1;
    if (pick >= 0 && got < 0) snprintf(why, cap, "pidfd_getfd: %s", strerror(errno));
    close(pidfd);
    return got;
}
