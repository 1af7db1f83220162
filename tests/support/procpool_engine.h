/* What the process pool's engine tests share (tests/test-procpool-heap.c,
 * -scribble.c, -server.c, -spare.c, -untrusted.c, driven through the
 * engine's private API): a record of every job's done, the wait for a
 * number of them, two work functions, a one-call pool, and what they read
 * of the pool's processes (a pid's parent, the spare fork server). */
#ifndef TEST_SUPPORT_PROCPOOL_ENGINE_H
#define TEST_SUPPORT_PROCPOOL_ENGINE_H
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include "exec/procpool/parent_internal.h"

#define ENG_MAXJ 256

/* What the done of job i said: eng_res[i].  The job's arg is i. */
typedef struct eng_res {
    int err;
    char msg[600];
    long val;   /* the first 8 bytes of its result */
    size_t len;
} eng_res_t;

extern eng_res_t eng_res[ENG_MAXJ];
extern atomic_int eng_ndone;
extern atomic_int eng_calls[ENG_MAXJ]; /* done callbacks per job: exactly one each */
/* The job whose done holds the supervisor thread (eng_held set) until
 * eng_release is; -1, none. */
extern int eng_hold_job;
extern atomic_int eng_held, eng_release;

/* async__procjob_t's done: records job (intptr_t)arg in eng_res. */
void eng_on_done(void *user, void *arg, int err, const char *msg, const void *out, size_t len);
/* Until n dones in all have run; fails the test after 30 s. */
void eng_wait_done(int n);
/* Until *f is set; fails the test after 20 s. */
void eng_wait_flag(atomic_int *f);

/* Work functions: a long in, its square out; a long in, asleep that many
 * milliseconds, the long out. */
int eng_square(void *ctx, const void *in, size_t n, async__procout_t *out);
int eng_sleeper(void *ctx, const void *in, size_t n, async__procout_t *out);

/* A pool of `workers` workers and 16 slots, no idle spin, ready (20 s). */
async__procpool_t *eng_pool_new(unsigned workers);
/* Submits fn on the long `in`, 8 bytes out, as job i, no deadline. */
int eng_submit(async__procpool_t *p, async__procpool_fn fn, long in, int i);

/* The parent of a live process, from /proc/PID/stat; -1 when there is no
 * such process or it has ended (a zombie). */
int eng_ppid_of(pid_t pid);
/* The pool's spare fork server once the pool knows one other than `not`:
 * fails the test after 20 s without one, or if it is not our child. */
pid_t eng_wait_spare(async__procpool_t *p, pid_t not);
/* The next ptrace stop of pid (a tracee of ours), within 20 s: its wait
 * status. */
int eng_wait_stop(pid_t pid);
/* kill() for a pool's process: refuses (fails the test on) a pid of 0 or
 * below, which would signal our process group or every process we may. */
void eng_signal(pid_t pid, int sig);
/* A descriptor of one of the fork server's sockets, taken from it
 * (pidfd_getfd), so that the test speaks as the server: the lowest one,
 * its own socket, or with highest the one a SPARE it holds carried (the
 * server moves that above its own); -1 (and a reason in why) if this
 * kernel or its security settings do not allow it. */
int eng_server_socket(pid_t server, bool highest, char *why, size_t cap);

#endif
