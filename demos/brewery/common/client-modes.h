/* The brewery demo's client side: count the breweries of each US state
 * through the Open Brewery DB API, five ways.
 *
 *   serial     one blocking client, one state after another (the lab's serial
 *              version);
 *   threads    a map over the states on the executor's thread pool, one
 *              worker per state, each job paginating with a blocking client
 *              (the lab's ThreadPoolExecutor version);
 *   processes  the same map on the executor's process pool, the count coming
 *              back as bytes (the lab's ProcessPoolExecutor version);
 *   async      one loop, one task per state, every task paginating on one
 *              shared client (the lab's asyncio version, without threads);
 *   meta       one loop, one /breweries/meta request per state, all at once:
 *              the API reports each state's total, so no paging at all.
 *
 * Paging is the lab's: per_page=200, next page until a short or empty page or
 * a non-200 answer.  Unlike the lab's, it also stops, with the state failed,
 * when a full page repeats an earlier one (a server that ignores `page`) or
 * after CLIENT_MAX_PAGES full pages (one that never ends).  A state that fails is marked failed with a precise
 * message; the others still count.  Symbols here start with client_ so they
 * cannot clash with the server's files in the same directory. */
#ifndef BREWERY_CLIENT_MODES_H
#define BREWERY_CLIENT_MODES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <async/http.h>

#define CLIENT_PER_PAGE 200
/* Full pages read for one state before it fails: 100,000 breweries, a
 * hundred times the largest state of Open Brewery DB. */
#define CLIENT_MAX_PAGES 500

typedef enum client_mode {
    CLIENT_SERIAL,
    CLIENT_THREADS,
    CLIENT_PROCESSES,
    CLIENT_ASYNC,
    CLIENT_META,
    CLIENT_NMODES
} client_mode_t;

/* The most a page's body may hold, after decoding: a real page of 200
 * breweries is about 150 KB, so 4 MiB is ample, and a hostile or broken
 * server costs at most that a request in flight (the library's default, 64
 * MiB, came to 3 GiB over 51 states at once). */
#define CLIENT_MAX_PAGE_BYTES ((size_t)4 << 20)

/* Requests whose times a state keeps, for the --plot timeline: 64 pages of
 * 200 are 12,800 breweries, thirteen times the largest state.  Later ones
 * are counted in `requests` but not drawn. */
#define CLIENT_MAX_SPANS 64

/* One request (a page, or a meta call), retries included: from the call to
 * its answer, in async_now() nanoseconds.  The clock is CLOCK_MONOTONIC,
 * one for every process of the machine, so times taken in a worker process
 * compare with the parent's. */
typedef struct client_span {
    int64_t start, end;
} client_span_t;

/* One state's outcome in one mode.  Plain bytes with no pointers, so that
 * it comes back from a worker process as it is. */
typedef struct client_count {
    long count;        /* breweries; -1 when the state failed */
    long requests;     /* HTTP requests made for it (retries included) */
    int error;         /* 0 or the ASYNC_E* code that failed it */
    char errmsg[256];  /* why it failed */
    int nspans;        /* spans[0..nspans): its first CLIENT_MAX_SPANS requests */
    client_span_t spans[CLIENT_MAX_SPANS];
} client_count_t;

typedef struct client_config {
    const char *base_url;      /* ".../v1" */
    double rate_limit;         /* requests per second, 0 for none */
    int max_retries;           /* per request */
    int64_t timeout_ns;        /* per request attempt */
    bool compressed;           /* ask for gzip/br/zstd bodies (remote APIs) */
} client_config_t;

/* Name of a mode ("serial", ...) and the reverse; -1 for an unknown name. */
const char *client_mode_name(client_mode_t mode);
int client_mode_parse(const char *name);

/* Counts states[0..n) in the given mode into out[0..n).  Returns 0 when the
 * mode ran (states may still have failed: see out[i].error), or a negative
 * ASYNC_E* code when it could not run at all. */
int client_run(client_mode_t mode, const client_config_t *cfg, const char *const *states,
               size_t n, client_count_t *out);

/* Paginates one state with a blocking client (serial, threads, processes),
 * or from a task on a loop's client (async).  Fails the state (out->error)
 * with ASYNC_EIO when a full page repeats an earlier one or past
 * CLIENT_MAX_PAGES full pages, with ASYNC_EJSON on a body that is not a JSON
 * array, with ASYNC_ENOMEM, or with the HTTP client's error. */
void client_count_state(async_http_t *http, const client_config_t *cfg, const char *state,
                        client_count_t *out);

#endif
