/* See client-server.h.  The child's stdout is a pipe read until the
 * listening line, then closed; the server writes nothing more there.
 *
 * The signal handler may run on any thread of the program, and in processes
 * forked from it (the executor's process pool inherits it): it acts only in
 * the process that started the server, and uses only async-signal-safe calls
 * (kill, waitpid, nanosleep, sigaction, raise). */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "client-server.h"

#ifndef ASYNC_OUT_DIR
#define ASYNC_OUT_DIR "."
#endif

static const int stop_signals[] = {SIGTERM, SIGINT, SIGHUP};
#define NSTOP (sizeof stop_signals / sizeof stop_signals[0])

/* The running child and the process that owns it; -1 when none. */
static volatile sig_atomic_t child = -1, owner = -1;
static struct sigaction saved[NSTOP];
static volatile sig_atomic_t handlers_on;

/* SIGTERM, a bounded wait, then SIGKILL: a server pinned by a request must
 * not keep its parent from exiting. */
static void reap(pid_t pid)
{
    kill(pid, SIGTERM);
    for (int waited = 0; waited < CLIENT_SERVER_STOP_MS; waited += 10) {
        pid_t r = waitpid(pid, NULL, WNOHANG);
        if (r == pid || (r < 0 && errno != EINTR)) return;
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
    }
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
}

static void on_stop_signal(int sig)
{
    int saved_errno = errno;
    if (owner == getpid() && child > 0) {
        pid_t pid = child;
        child = -1;
        reap(pid);
    }
    /* Die of the signal, as if there had been no handler, so the caller's
     * shell sees the usual status. */
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    sigemptyset(&dfl.sa_mask);
    sigaction(sig, &dfl, NULL);
    raise(sig); /* delivered when this handler returns */
    errno = saved_errno;
}

static void handlers_install(void)
{
    struct sigaction sa = {.sa_handler = on_stop_signal};
    sigemptyset(&sa.sa_mask);
    /* One stop at a time: a second signal waits until the first is done. */
    for (size_t i = 0; i < NSTOP; i++) sigaddset(&sa.sa_mask, stop_signals[i]);
    for (size_t i = 0; i < NSTOP; i++) {
        sigaction(stop_signals[i], NULL, &saved[i]);
        /* A signal the caller ignores (nohup) stays ignored. */
        if (saved[i].sa_handler != SIG_IGN) sigaction(stop_signals[i], &sa, NULL);
    }
    handlers_on = 1;
}

static void handlers_restore(void)
{
    if (!handlers_on) return;
    for (size_t i = 0; i < NSTOP; i++) sigaction(stop_signals[i], &saved[i], NULL);
    handlers_on = 0;
}

static int find_server(const char *argv0, char *path, size_t size)
{
    const char *slash = argv0 ? strrchr(argv0, '/') : NULL;
    if (slash) {
        snprintf(path, size, "%.*s/brewery-server", (int)(slash - argv0), argv0);
        if (access(path, X_OK) == 0) return 0;
    }
    snprintf(path, size, "%s/demos/brewery/brewery-server", ASYNC_OUT_DIR);
    return access(path, X_OK) == 0 ? 0 : -1;
}

int client_server_start(client_server_t *s, const char *argv0, const char *const *extra)
{
    char path[PATH_MAX];
    memset(s, 0, sizeof *s);
    s->pid = -1;
    if (find_server(argv0, path, sizeof path)) {
        fprintf(stderr, "brewery: cannot find brewery-server (looked beside %s and in %s)\n",
                argv0 ? argv0 : "?", ASYNC_OUT_DIR "/demos/brewery");
        return -1;
    }
    const char *argv[32] = {path, "--port", "0", "--quiet"};
    int argc = 4;
    for (size_t i = 0; extra && extra[i] && argc < 31; i++) argv[argc++] = extra[i];
    argv[argc] = NULL;

    int p[2];
    if (pipe(p)) {
        perror("brewery: pipe");
        return -1;
    }
    /* The handlers go in before the fork, so that no signal can fall between
     * the child's birth and the moment the parent knows its pid; the signals
     * stay blocked over that gap. */
    sigset_t stop, old;
    sigemptyset(&stop);
    for (size_t i = 0; i < NSTOP; i++) sigaddset(&stop, stop_signals[i]);
    pthread_sigmask(SIG_BLOCK, &stop, &old);
    handlers_install();
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        perror("brewery: fork");
        handlers_restore();
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        close(p[0]);
        close(p[1]);
        return -1;
    }
    if (pid == 0) {
        /* The parent may already have died before prctl took effect, and
         * then no signal would ever come: check that it is still ours. */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(127);
        for (size_t i = 0; i < NSTOP; i++) sigaction(stop_signals[i], &saved[i], NULL);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        dup2(p[1], STDOUT_FILENO);
        close(p[0]);
        close(p[1]);
        execv(path, (char *const *)argv);
        fprintf(stderr, "brewery: exec %s: %s\n", path, strerror(errno));
        _exit(127);
    }
    owner = parent;
    child = pid;
    s->pid = pid;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    close(p[1]);
    FILE *f = fdopen(p[0], "r");
    char line[256];
    unsigned port = 0;
    while (f && fgets(line, sizeof line, f)) {
        if (sscanf(line, "listening on http://127.0.0.1:%u", &port) == 1) break;
    }
    if (f) fclose(f);
    else close(p[0]);
    if (!port) {
        fprintf(stderr, "brewery: brewery-server did not start\n");
        client_server_stop(s);
        return -1;
    }
    s->port = port;
    snprintf(s->url, sizeof s->url, "http://127.0.0.1:%u", port);
    return 0;
}

void client_server_stop(client_server_t *s)
{
    if (s->pid <= 0) return;
    /* Take the child from the handler first, so that a signal arriving now
     * cannot reap it twice (or reap a recycled pid). */
    sigset_t stop, old;
    sigemptyset(&stop);
    for (size_t i = 0; i < NSTOP; i++) sigaddset(&stop, stop_signals[i]);
    pthread_sigmask(SIG_BLOCK, &stop, &old);
    child = -1;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    reap(s->pid);
    s->pid = -1;
    handlers_restore();
}
