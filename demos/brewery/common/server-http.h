/* brewery-server's HTTP side on libmicrohttpd: one epoll thread serves every
 * connection; a request's answer is computed at once and held back for the
 * configured latency by suspending the connection (no thread per request),
 * then resumed by a single timer thread.  It also applies the rate limit and
 * the fault injection used by tests. */
#ifndef BREWERY_SERVER_HTTP_H
#define BREWERY_SERVER_HTTP_H

#include "server-data.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct bsrv_config {
    unsigned port;            /* 0: any free port */
    unsigned latency_ms;      /* added to every answer */
    unsigned stall_ms;        /* how long a stalled request is held before the close */
    unsigned rate_limit;      /* requests per window, 0 = unlimited */
    unsigned rate_window_s;   /* window of the rate limit (60) */
    unsigned long fail_first; /* the first N requests answer 500 */
    double fail_rate;         /* share answered 500 */
    double drop_rate;         /* share closed without an answer */
    double malformed_rate;    /* share answered 200 with truncated JSON */
    double stall_rate;        /* share never answered (held stall_ms, then closed) */
    uint64_t seed;            /* fault draws are a function of (seed, request number) */
    unsigned header_timeout_ms; /* a new connection's first header block must arrive by then (0: 10 s) */
    unsigned idle_timeout_s;  /* a silent connection is closed after this (0: 30 s) */
    bool verbose;             /* libmicrohttpd's error log on stderr */
} bsrv_config_t;

typedef struct bsrv_server bsrv_server_t;

typedef struct bsrv_stats {
    unsigned long long requests, limited, failed, dropped, malformed, stalled;
} bsrv_stats_t;

/* Starts serving `ds` (borrowed: it must outlive the server) on
 * 127.0.0.1:cfg->port.  Returns 0 and the server in *out, or -1 with a
 * message in err[errlen]. */
int bsrv_server_start(bsrv_server_t **out, const bsrv_config_t *cfg, const bsrv_dataset_t *ds,
                      char *err, size_t errlen);

/* The port actually bound. */
unsigned bsrv_server_port(const bsrv_server_t *s);

/* Stops the server: answers held connections at once (or closes them),
 * joins its threads, and frees it.  OUT: the counters, if `stats` is set. */
void bsrv_server_stop(bsrv_server_t *s, bsrv_stats_t *stats);

#endif
