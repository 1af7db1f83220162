/* See client-server.h.  The child's stdout is a pipe read until the
 * listening line, then closed; the server writes nothing more there. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "client-server.h"

#ifndef ASYNC_OUT_DIR
#define ASYNC_OUT_DIR "."
#endif

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
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        perror("brewery: fork");
        close(p[0]);
        close(p[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(p[1], STDOUT_FILENO);
        close(p[0]);
        close(p[1]);
        execv(path, (char *const *)argv);
        fprintf(stderr, "brewery: exec %s: %s\n", path, strerror(errno));
        _exit(127);
    }
    close(p[1]);
    s->pid = pid;
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
    kill(s->pid, SIGTERM);
    int status;
    while (waitpid(s->pid, &status, 0) < 0 && errno == EINTR) {}
    s->pid = -1;
}
