/* Starts the local brewery-server as a child process for the brewery demo
 * and its benchmark: on a free port (--port 0), reading the line
 * "listening on http://127.0.0.1:PORT" it prints, and stops it again. */
#ifndef BREWERY_CLIENT_SERVER_H
#define BREWERY_CLIENT_SERVER_H

#include <sys/types.h>

typedef struct client_server {
    pid_t pid;
    unsigned port;
    char url[64]; /* "http://127.0.0.1:PORT" */
} client_server_t;

/* Finds brewery-server beside argv0, else in ASYNC_OUT_DIR/demos/brewery,
 * starts it with `extra` arguments (NULL-terminated; may be NULL) and waits
 * for its listening line.  Returns 0, or -1 with a message on stderr. */
int client_server_start(client_server_t *s, const char *argv0, const char *const *extra);

/* SIGTERM, then waits for the child. */
void client_server_stop(client_server_t *s);

#endif
