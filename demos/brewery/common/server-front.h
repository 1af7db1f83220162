/* brewery-server's front door: it accepts connections itself and hands a
 * connection to libmicrohttpd only once the request line and headers of its
 * first request have arrived and the request line is well formed.
 * libmicrohttpd 0.9.75 closes a connection whose request line it cannot parse
 * without a word; here such a connection gets a 400 and a close (a header
 * block over 16 KB a 431).  A connection that has not sent its first header
 * block within the deadline is closed, so idle connections and slowloris
 * tricklers cannot pile up. */
#ifndef BREWERY_SERVER_FRONT_H
#define BREWERY_SERVER_FRONT_H

#include <microhttpd.h>
#include <stddef.h>

typedef struct bsrv_front bsrv_front_t;

/* Binds 127.0.0.1:port (0: any free port) and starts the accept thread,
 * which passes connections to `d` (started with MHD_USE_NO_LISTEN_SOCKET).
 * At most `max_pending` connections wait for their request line at once; a
 * new one past that is closed at once.  Returns 0, or -1 with a message in
 * err[errlen]. */
int bsrv_front_start(bsrv_front_t **out, unsigned port, struct MHD_Daemon *d,
                     unsigned header_timeout_ms, unsigned max_pending, char *err, size_t errlen);

/* The port actually bound. */
unsigned bsrv_front_port(const bsrv_front_t *f);

/* Stops accepting, closes the connections still waiting and frees `f`.
 * Call it before MHD_stop_daemon. */
void bsrv_front_stop(bsrv_front_t *f);

/* Counters since the start (read after stop, or racily for a log line). */
unsigned long long bsrv_front_rejected(const bsrv_front_t *f);   /* answered 400 */
unsigned long long bsrv_front_expired(const bsrv_front_t *f);    /* closed at the deadline */

#endif
