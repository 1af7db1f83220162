/* Child processes: run a function in a forked child (Python's
 * multiprocessing.Process), and run a list of commands at most N at a time,
 * capturing each one's output and exit status (the labs' "run three scripts
 * in parallel").
 *
 * No zombies: a child is reaped by join, by is_alive once it has ended, or by
 * free (which kills it first if it still runs).  Joining from inside a
 * libasync task waits through the loop, so the loop's other tasks keep
 * running.  Deadlines are absolute async_now() times (ASYNC_FOREVER: none;
 * any at or before now, 0 included, has passed).  A child spawned as a
 * daemon (async_process_spawn_opts) is killed by the kernel when its parent
 * exits, however it exits, so it is never left running as an orphan.
 *
 * Another waiter may reap a child first: libev's default loop
 * (async_loop_default) reaps every child that exits while it runs, and so do
 * a SIGCHLD handler that waits for any child and SIGCHLD set to SIG_IGN.
 * Such a child counts as reaped (join returns 0, is_alive false, kill and
 * terminate ASYNC_EDONE: it is never signalled again, its pid may be a
 * stranger's); its status comes from its pidfd on Linux 6.15 and later, and
 * is lost before that (status says ASYNC_ECHILD). */
#ifndef ASYNC_PROCESS_H
#define ASYNC_PROCESS_H

#include <string.h>
#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* --- a function in a child ---------------------------------------------------- */

typedef struct async_process async_process_t;

/* The child's body; its return value is the child's exit code (taken modulo
 * 256, so return 0..255). */
typedef int (*async_process_fn)(void *arg);

/* Forks a child that runs fn(arg) and exits with its return value, without
 * running the parent's atexit handlers or flushing its stdio buffers (flush
 * them before spawning).  The child gets a copy of the parent's memory, and
 * shares the IPC objects (ipc.h) created before the spawn.  Fork only from a
 * single-threaded program, or call only async-signal-safe functions in fn.
 * Errors: ASYNC_EINVAL (fn or out NULL), ASYNC_ENOMEM, or the system's -errno
 * from fork (EAGAIN: too many processes). */
ASYNC_API int async_process_spawn(async_process_t **out, async_process_fn fn, void *arg);

/* Options for async_process_spawn_opts.  size: 0 or
 * sizeof(async_process_opts_t) as the program was compiled; 0 reads the 0.2
 * layout.  Later versions add fields only at the end and read them only when
 * size covers them.  Fill it with async_process_opts_init, or with a
 * designated initialiser (size 0). */
typedef struct async_process_opts {
    size_t size;
    /* Kill the child (SIGKILL) when the parent exits, for whatever reason,
     * SIGKILL included (Python's Process(daemon=True), but enforced by the
     * kernel: PR_SET_PDEATHSIG).  Precisely, the kernel sends it when the
     * thread that called spawn exits: spawn daemons from the main thread, or
     * from a thread that lives as long as they should.  A parent that dies
     * before the child has set this up is caught too: the child then exits
     * with code 127 without running fn. */
    bool daemon;
} async_process_opts_t;

/* Zeroes *o (the defaults) and sets its size. */
static inline void async_process_opts_init(async_process_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->size = sizeof *o;
}

/* As async_process_spawn, with options (opts NULL: the defaults, which is
 * async_process_spawn).  Same errors, and ASYNC_EINVAL for an opts->size
 * that is neither 0 nor at least the 0.2 struct's (nothing is forked). */
ASYNC_API int async_process_spawn_opts(async_process_t **out, async_process_fn fn, void *arg,
                                       const async_process_opts_t *opts);

/* The child's process id. */
ASYNC_API int async_process_pid(const async_process_t *p);

/* Waits for the child to end and reaps it; 0 once it has ended (also when it
 * had already been reaped).  Errors: ASYNC_ETIMEDOUT (_dl: still running),
 * ASYNC_ECANCELED (the calling task was cancelled), or the system's -errno. */
ASYNC_API int async_process_join(async_process_t *p);
ASYNC_API int async_process_join_dl(async_process_t *p, int64_t deadline);

/* True while the child runs; reaps it if it has ended. */
ASYNC_API bool async_process_is_alive(async_process_t *p);

/* Sends SIGTERM (terminate) or SIGKILL (kill), through the child's pidfd
 * where there is one; join to reap.  Errors: ASYNC_EDONE (already reaped,
 * by this handle or by another waiter), or the system's -errno. */
ASYNC_API int async_process_terminate(async_process_t *p);
ASYNC_API int async_process_kill(async_process_t *p);

/* How the child ended: *exit_code (OUT, may be NULL) its exit code, or -1 if
 * a signal ended it; *signal (OUT, may be NULL) that signal, or 0.  Never
 * waits and never reaps.  Errors: ASYNC_EAGAIN (not yet reaped, so not yet
 * known: join, or is_alive until it says false, first), ASYNC_ECHILD
 * (another waiter reaped it and the kernel, before 6.15, kept no status). */
ASYNC_API int async_process_status(const async_process_t *p, int *exit_code, int *signal);

/* Frees the handle; a child still running is killed (SIGKILL) and reaped
 * first (one that another waiter reaped is left alone).  NULL is ignored. */
ASYNC_API void async_process_free(async_process_t *p);

/* --- commands in parallel --------------------------------------------------- */

typedef struct async_command {
    const char *const *argv; /* NULL-terminated; argv[0] is looked up in PATH */
    const char *cwd;         /* working directory, or NULL for the caller's */
} async_command_t;

typedef struct async_command_result {
    int error;          /* 0: it ran and ended (see below); ASYNC_ECHILD: it could
                           not start (start_errno says why); ASYNC_ETIMEDOUT:
                           killed, or never started, at the deadline;
                           ASYNC_ECANCELED: the same, because the calling
                           task was cancelled; ASYNC_ENOMEM or -errno:
                           setting it up, or capturing its output, failed (it
                           still ran to its end; what was captured is kept);
                           -ECHILD: it ended, but another waiter reaped it and
                           the kernel (before 6.15) kept no status: exit_code
                           is then -1 and signal 0 (see the top) */
    int start_errno;    /* errno of the failed start (ENOENT, EACCES, ...) */
    int exit_code;      /* its exit code, or -1 if a signal ended it */
    int signal;         /* the signal that ended it, or 0 */
    char *out, *err;    /* captured stdout and stderr, NUL-terminated; owned:
                           release with async_command_result_clear */
    size_t out_len, err_len;
    int64_t elapsed_ns; /* from start to exit */
} async_command_result_t;

/* Runs the n commands, at most max_parallel at a time, in the order given,
 * each with stdin from /dev/null and its stdout and stderr captured into
 * results[i].  A command that cannot start fails alone; the others run.  At
 * the deadline (one that has passed included), running commands are killed
 * (SIGKILL) and the rest not started.  Called from a task, it waits through
 * the loop, so the loop's other tasks run meanwhile; when the task is
 * cancelled, running commands are killed and the rest not started, as at a
 * deadline.  Outside a task it blocks the calling thread.
 * Returns 0 when every command ran and exited with code 0; ASYNC_ECHILD when
 * some failed to start, exited non-zero or died by a signal; ASYNC_ETIMEDOUT
 * when the deadline cut some short; ASYNC_ECANCELED when the cancellation
 * did.  Either way every results[i] is filled and must be cleared.  Errors
 * with nothing run: ASYNC_EINVAL (NULL arrays with n > 0, a NULL argv or
 * argv[0], max_parallel 0), ASYNC_ENOMEM, or the system's -errno (in a task, no
 * descriptor for the wait: EMFILE, ENFILE). */
ASYNC_API int async_process_run_commands_dl(const async_command_t *cmds, size_t n,
                                            size_t max_parallel,
                                            async_command_result_t *results, int64_t deadline);

/* Frees a result's captured output and zeroes it.  NULL is ignored. */
ASYNC_API void async_command_result_clear(async_command_result_t *r);

#ifdef __cplusplus
}
#endif
#endif
