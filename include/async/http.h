/* HTTP client on libcurl's multi socket interface, driven by a libasync loop.
 *
 * A client (async_http_t) belongs to one loop and that loop's thread.  Its
 * transfers run on its curl multi handles (a burst is spread over several:
 * docs/http.md, "How it is built"), whose sockets and timers are libev
 * watchers on the loop, so thousands of requests run at once on one thread
 * without blocking it.  Clients on different loops are independent and may
 * run at the same time, one loop a thread, to use more than one core
 * (docs/http.md, "Scaling a client over cores").  Connections are kept
 * alive and reused, easy handles are pooled, HTTP/2 connections are
 * multiplexed when the server offers them,
 * failed attempts can be retried with exponential backoff and jitter
 * (honouring Retry-After), and a client-wide rate limit spaces the start of
 * requests.
 *
 * Three ways to call it:
 *   - async_http_send: a callback runs on the loop when the request ends;
 *   - async_http_fetch from a task: the task sleeps, the loop runs the others;
 *   - async_http_fetch from a plain thread or a worker process, on a client
 *     made with a NULL loop: the client runs its own private loop until the
 *     response is in (a blocking call).
 *
 * Every finished request yields an async_http_response_t, also when it
 * failed: its `error` says how (ASYNC_ECURL with curl's own message,
 * ASYNC_EHTTP with the status, ASYNC_ETIMEDOUT, ASYNC_EJSON with line and
 * column, ASYNC_EMFILE or ASYNC_ENFILE when no socket could be opened because
 * descriptors ran out, ...) and `errmsg` says it in words.  Descriptor
 * exhaustion is a transient failure like a refused connection: retried when
 * the request allows retries, and reported as ASYNC_EMFILE, never as
 * "Couldn't connect", when the last attempt still had no socket. */
#ifndef ASYNC_HTTP_H
#define ASYNC_HTTP_H

#include <string.h>
#include "common.h"
#include "loop.h"

#ifdef __cplusplus
extern "C" {
#endif

struct json_t; /* jansson's json_t */

typedef struct async_http async_http_t;

/* Client options.  Zero fields take the default shown.  Start from
 * async_http_opts_init, or a designated initialiser
 * (&(async_http_opts_t){.rate_limit = 2}, size 0). */
/* The longest Retry-After the client will wait for, in seconds (a year).
 * A 429 or 503 whose Retry-After (delay-seconds, or an HTTP-date) lies
 * further ahead, however large the number, is never retried sooner than
 * asked: it is returned as the response, as one longer than retry_max_ns
 * is.  Retry-After: 0, a date in the past or an unreadable value gives the
 * ordinary backoff. */
#define ASYNC_HTTP_RETRY_AFTER_MAX ((int64_t)366 * 24 * 3600)

typedef struct async_http_opts {
    size_t size;               /* 0 or sizeof(async_http_opts_t) as the program was
                                  compiled; 0 reads the 0.2 layout.  Later versions
                                  add fields only at the end and read them only
                                  when size covers them */
    long max_connections;      /* open connections in all; 0: unlimited */
    long max_host_connections; /* to one host; 0: unlimited */
    double rate_limit;         /* request starts per second; 0: no limit */
    unsigned rate_burst;       /* starts allowed back to back; 0: 1 */
    int max_retries;           /* extra attempts after a transient failure; 0: none */
    int64_t retry_base_ns;     /* first backoff; 0: 100 ms.  Doubles each retry */
    int64_t retry_max_ns;      /* cap on one backoff and on Retry-After; 0: 30 s.
                                  A Retry-After longer than this is not waited
                                  for: the 429 or 503 is the response */
    int64_t timeout_ns;        /* per attempt, whole transfer; 0: 30 s; <0: none */
    int64_t connect_timeout_ns;/* per attempt, connecting; 0: 10 s; <0: none */
    bool no_http2;             /* true: never multiplex over HTTP/2 */
    const char *user_agent;    /* NULL: "libasync/" ASYNC_VERSION */
    const char *accept_encoding; /* NULL: none, and a body that comes encoded
                                    anyway is kept as sent; "": every encoding
                                    curl decodes (gzip, deflate, br, zstd); or a
                                    list.  Whatever the server sends of those is
                                    decoded, up to five codings deep; a corrupt
                                    or cut-short stream, or a coding not known,
                                    fails with ASYNC_ECURL ("curl error 61") */
    size_t max_body;           /* response bytes kept, counted after decoding;
                                  0: 64 MiB; larger fails (ASYNC_ECURL) */
    const char *ca_file;       /* PEM bundle of trusted CAs for https, and only
                                  those; NULL: the system's.  Parsed once per
                                  process, again when the file changes */
    bool keep_sigpipe;         /* true: this call of async_http_new leaves SIGPIPE
                                  alone (see async_http_new) */
} async_http_opts_t;

/* One request.  Strings are copied by the call that takes the request, so
 * the caller may reuse or free them as soon as that call returns.  Start
 * from async_http_request_init, or a designated initialiser
 * ((async_http_request_t){.url = u}, size 0). */
typedef struct async_http_request {
    size_t size;                        /* 0 or sizeof(async_http_request_t) as the
                                           program was compiled; 0 reads the 0.2
                                           layout.  Later versions add fields only
                                           at the end and read them only when size
                                           covers them */
    const char *method;                 /* NULL: "GET", or "POST" when body is set; a
                                           method named (any token of at most 16
                                           bytes) is sent as named, a GET with a
                                           body included */
    const char *url;                    /* required: http:// or https:// */
    const char *const *query;           /* NULL or {"key", "value", ..., NULL}: appended
                                           URL-escaped (ASCII letters and digits
                                           kept, in every locale), before any
                                           fragment, after a '?' or '&' */
    const char *const *headers;         /* NULL or {"Name: value", ..., NULL} */
    const void *body;                   /* request body (POST, PUT, ...), or NULL */
    size_t body_len;
    int64_t timeout_ns;                 /* 0: the client's; <0: none */
    int64_t connect_timeout_ns;         /* 0: the client's; <0: none */
    int max_retries;                    /* 0: the client's; <0: never retry */
} async_http_request_t;

/* Zero every field and set size: the way to fill an option struct that
 * keeps working when later versions add fields. */
static inline void async_http_opts_init(async_http_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->size = sizeof *o;
}

/* The same for a request: zeroed, size set, every field at its default. */
static inline void async_http_request_init(async_http_request_t *r)
{
    memset(r, 0, sizeof *r);
    r->size = sizeof *r;
}

typedef struct async_http_header {
    const char *name;  /* as the server spelled it */
    const char *value; /* without leading and trailing blanks */
} async_http_header_t;

/* Seconds from the start of the last attempt (curl's CURLINFO_*_TIME_T). */
typedef struct async_http_timings {
    double queued;        /* from the call to the first attempt's start (rate limit) */
    double namelookup, connect, appconnect, pretransfer, starttransfer, total;
    double elapsed;       /* from the call to the end, over every attempt */
} async_http_timings_t;

/* A finished request.  Read-only for the caller, freed with
 * async_http_response_free. */
typedef struct async_http_response {
    int error;               /* 0, or why the request failed (see errmsg) */
    char errmsg[256];        /* "" on success; otherwise a precise message */
    long status;             /* HTTP status, 0 when none was received */
    char *body;              /* NUL-terminated (body[body_len] == 0); NULL only
                                when memory ran out while the request failed */
    size_t body_len;
    async_http_header_t *headers; /* of the final response */
    size_t n_headers;
    char *url;               /* the URL requested, query included */
    const char *http_version;/* "HTTP/1.1", "HTTP/2", ... or "" */
    int attempts;            /* 1 + retries made */
    async_http_timings_t timings;
} async_http_response_t;

/* Called once per request, on the loop's thread, with a response the callee
 * owns (free it with async_http_response_free). */
typedef void (*async_http_cb)(async_http_response_t *resp, void *arg);

/* Creates a client.  loop NULL gives the client a private loop of its own,
 * for blocking async_http_fetch calls from a plain thread or a worker
 * process; such a client must not be used from tasks of another loop.
 * opts may be NULL.  Errors: ASYNC_EINVAL (a negative limit, rate, retry
 * count or backoff; a rate that is not a number; a user_agent or
 * accept_encoding holding a CR or LF; opts->size neither 0 nor at least sizeof(async_http_opts_t) of
 * 0.2),
 * ASYNC_ENOMEM, ASYNC_ECURL (curl could not initialise), and for a private
 * loop those of async_loop_new (ASYNC_EMFILE or ASYNC_ENFILE when
 * descriptors run out).  A client on a given loop needs no descriptor of its
 * own until a request opens a socket; when descriptors are there, libcurl
 * 7.88 keeps two for each of its multi handles (a wake-up socket pair, not
 * close-on-exec), and does without them when they are not.
 *
 * SIGPIPE: the first async_http_new without opts->keep_sigpipe ignores
 * SIGPIPE process-wide (signal(SIGPIPE, SIG_IGN)) unless the program has
 * installed a handler of its own (a disposition other than SIG_DFL), which
 * is then left as it is; later calls do not look again.  The reason: curl
 * runs with CURLOPT_NOSIGNAL, as a threaded program needs, so it does not
 * ignore the signal around its calls itself.  With keep_sigpipe the call
 * leaves the disposition untouched, and the truth is then curl's: on Linux
 * its sends use MSG_NOSIGNAL, and a libcurl whose TLS backend writes
 * through curl's own socket layer (libcurl 7.88 with OpenSSL does, through
 * its own BIO) raises no SIGPIPE for http or https; but curl's
 * documentation of CURLOPT_NOSIGNAL says corner cases remain, and builds in
 * which the TLS library writes to the socket itself (older libcurl with
 * OpenSSL, sending close_notify to a peer that has gone) have raised it.  A
 * program that sets keep_sigpipe and keeps SIGPIPE fatal accepts that risk;
 * ignoring or handling SIGPIPE itself removes it.
 *
 * Proxies: the environment is looked at once, here.  If any variable curl
 * reads is set (http_proxy, https_proxy, HTTPS_PROXY, all_proxy, ALL_PROXY,
 * no_proxy, NO_PROXY; curl never reads HTTP_PROXY), curl reads them for
 * every request as usual.  If none is set, the client's requests go direct,
 * and a variable set later applies only to clients made after it (curl
 * would otherwise read up to five variables for every request). */
ASYNC_API int async_http_new(async_http_t **out, async_loop_t *loop,
                             const async_http_opts_t *opts);

/* Frees the client.  Requests not yet ended end first, inside this call:
 * their callbacks run with a response whose error is ASYNC_ECLOSED, and
 * tasks awaiting them resume with ASYNC_ECLOSED (and that response); a
 * request that had already failed to start (ASYNC_ENOMEM, waiting to be
 * reported on the loop) ends with its own error.  NULL
 * is ignored.  Call it from the thread of the client's loop (any thread, one
 * at a time, for a private-loop client).  Errors, nothing freed:
 * ASYNC_EDEADLK (called from inside one of the client's own callbacks, from
 * inside a blocking fetch's run of the private loop, such as one of its
 * tasks, or from inside any run of the private loop), ASYNC_EWRONGLOOP (a
 * client on a caller's loop, called from a thread other than that loop's). */
ASYNC_API int async_http_destroy(async_http_t *http);

/* The loop the client runs on (its private loop for a NULL-loop client). */
ASYNC_API async_loop_t *async_http_loop(async_http_t *http);

/* Starts a request; cb(resp, arg) runs on the loop's thread when it ends,
 * never inside this call, also when the request could not start (no memory
 * for its easy handle: the response says ASYNC_ENOMEM, from the loop).
 * Errors (cb will not run): ASYNC_EINVAL (no
 * client or callback, no URL, a method that is not a token of at most 16
 * bytes, a bad query, a header that is not "name: value" with a token name
 * right up to its colon or that holds a CR or LF, a Content-Length header
 * other than the body's length, a Transfer-Encoding header other than
 * "chunked" beside a body, a body_len without a body, req->size neither 0 nor at least
 * sizeof(async_http_request_t) of 0.2), ASYNC_ENOMEM,
 * ASYNC_ECLOSED (the client is being freed: a callback that
 * async_http_destroy runs), ASYNC_EWRONGLOOP (a client on a caller's loop,
 * called from a thread other than that loop's). */
ASYNC_API int async_http_send(async_http_t *http, const async_http_request_t *req,
                              async_http_cb cb, void *arg);

/* Makes the request and waits for it; the response is stored in `out`
 * (OUT).  From a task of the client's loop the task sleeps while others
 * run; from outside any task on a client with a private loop the call runs
 * that loop until done (a blocking call).
 * Returns the response's error: 0 for a 2xx status after redirects and
 * retries; ASYNC_EHTTP, ASYNC_ECURL, ASYNC_ETIMEDOUT for a timed-out
 * attempt, ASYNC_EMFILE or ASYNC_ENFILE when no socket could be opened,
 * ASYNC_ENOMEM when memory ran out on the way, ASYNC_EINVAL when curl
 * rejected an option of the request or the request is too large for curl
 * (URL and headers past its 1 MiB request head, a URL past 8,000,000
 * bytes), ASYNC_ECLOSED when the client was freed
 * meanwhile.  Then *out is the response, also on failure, and the
 * caller frees it.
 * *out is NULL, no response existing, on: ASYNC_EINVAL (no client or out, a
 * bad request as for async_http_send), ASYNC_ENOMEM, ASYNC_ECLOSED (the
 * client is being freed), ASYNC_ENOTASK (outside a task, on a client bound
 * to a caller's loop), ASYNC_EWRONGLOOP (from a task of another loop; from
 * a thread other than the loop's, for a client on a caller's loop; a
 * blocking call while another loop runs on this thread, such as from its
 * callback), ASYNC_EDEADLK (a blocking call from inside the private loop's
 * own run, such as one of the client's callbacks, or from a callback that
 * async_http_destroy runs), ASYNC_EIO (the private loop ran dry: an internal
 * failure, reported rather than hanging), ASYNC_ECANCELED (the calling task
 * was cancelled; the transfer is abandoned) and ASYNC_ETIMEDOUT from the
 * deadline of the _dl form, which covers every attempt and backoff (the
 * transfer is abandoned; a deadline that has already passed when the call
 * is made starts no request).  async_http_fetch is async_http_fetch_dl with
 * ASYNC_FOREVER. */
ASYNC_API int async_http_fetch(async_http_response_t **out, async_http_t *http,
                               const async_http_request_t *req);
ASYNC_API int async_http_fetch_dl(async_http_response_t **out, async_http_t *http,
                                  const async_http_request_t *req, int64_t deadline);

/* GET url (query as in async_http_request_t, may be NULL) into the response
 * `out`: async_http_get_dl is async_http_fetch_dl on a request of only that
 * url and query, with the same deadline, errors and ownership of the
 * response; async_http_get is async_http_get_dl with ASYNC_FOREVER. */
ASYNC_API int async_http_get(async_http_response_t **out, async_http_t *http, const char *url,
                             const char *const *query);
ASYNC_API int async_http_get_dl(async_http_response_t **out, async_http_t *http, const char *url,
                                const char *const *query, int64_t deadline);

/* Frees a response; NULL is ignored. */
ASYNC_API void async_http_response_free(async_http_response_t *resp);

/* The value of the response header `name` (case-insensitive), or NULL. */
ASYNC_API const char *async_http_response_header(const async_http_response_t *resp,
                                                 const char *name);

/* Decodes the body as JSON with jansson.  *out (OUT) receives a new
 * reference the caller releases with json_decref.  On failure the response's
 * error and errmsg are set ("JSON error at line L, column C: ...") and the
 * same code returned.  Errors: ASYNC_EJSON, ASYNC_EINVAL (resp NULL), or the
 * response's own error if the request had failed (nothing is decoded). */
ASYNC_API int async_http_response_json(struct json_t **out, async_http_response_t *resp);

/* Counters since the client was made. */
typedef struct async_http_stats {
    uint64_t requests;   /* calls accepted */
    uint64_t attempts;   /* transfers started, retries included */
    uint64_t retries;
    uint64_t failed;     /* requests that ended with an error */
    size_t in_flight;    /* requests not yet ended */
    size_t connections;  /* sockets open now, busy and idle (HTTP/2 shares one) */
    size_t easy_pooled;  /* idle easy handles kept for reuse */
} async_http_stats_t;

/* Fills *out (OUT) with the client's counters (all zero for a NULL http;
 * nothing for a NULL out); never fails.  It reads them without a lock: call it
 * where async_http_destroy may be called (the loop's thread; for a
 * private-loop client, one thread at a time). */
ASYNC_API void async_http_stats(const async_http_t *http, async_http_stats_t *out);

#ifdef __cplusplus
}
#endif
#endif
