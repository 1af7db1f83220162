/* Starts the local brewery-server as a child process for the brewery demo
 * and its benchmark: on a free port (--port 0), reading the line
 * "listening on http://127.0.0.1:PORT" it prints, and stops it again.
 *
 * The child never outlives the program that started it.  It asks the kernel
 * for SIGKILL when its parent dies (PR_SET_PDEATHSIG), so a crash or a
 * SIGKILL of the parent takes it along; and SIGTERM, SIGINT or SIGHUP of the
 * parent first stop the child with SIGTERM and wait for it (SIGKILL after
 * CLIENT_SERVER_STOP_MS), then end the parent with the same signal. */
#ifndef BREWERY_CLIENT_SERVER_H
#define BREWERY_CLIENT_SERVER_H

#include <sys/types.h>

/* How long a stop waits for the child to exit after SIGTERM before it sends
 * SIGKILL. */
#define CLIENT_SERVER_STOP_MS 2000

typedef struct client_server {
    pid_t pid;
    unsigned port;
    char url[64]; /* "http://127.0.0.1:PORT" */
} client_server_t;

/* Finds brewery-server beside argv0, else in ASYNC_OUT_DIR/demos/brewery,
 * starts it with `extra` arguments (NULL-terminated; may be NULL) and waits
 * for its listening line.  Installs the SIGTERM, SIGINT and SIGHUP handlers
 * described above (one server at a time).  Call it from the main thread: the
 * kernel's parent-death signal follows the thread that forked, not the
 * process.  Returns 0, or -1 with a message on stderr. */
int client_server_start(client_server_t *s, const char *argv0, const char *const *extra);

/* SIGTERM, then waits for the child (SIGKILL after CLIENT_SERVER_STOP_MS),
 * and restores the signal dispositions the start replaced.  Safe to call on
 * a server that never started. */
void client_server_stop(client_server_t *s);

#endif
