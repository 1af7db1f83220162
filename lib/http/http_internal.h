/* HTTP client internals.  PRIVATE: shared by lib/http/multi.c (the curl multi
 * glue on libev, which calls neither of the other two), lib/http/request.c
 * (requests, retries, the rate limit, the easy handle pool and the three
 * calling styles) and lib/http/response.c (options, responses, headers,
 * JSON).  Everything here runs on the client's loop thread. */
#ifndef ASYNC_HTTP_INTERNAL_H
#define ASYNC_HTTP_INTERNAL_H

#include <curl/curl.h>
#include "core/core_internal.h"
#include "async/http.h"

/* A growable byte buffer on the allocator seam, always NUL-terminated. */
typedef struct http_buf {
    char *data;
    size_t len, cap;
} http_buf_t;

int async__http_buf_add(http_buf_t *b, const void *p, size_t n);
void async__http_buf_free(http_buf_t *b);

/* WAITING: in http->waiting; RUNNING: in http->running, its easy handle in
 * a shard; FAILED: could not start, in http->failed until fail_timer ends
 * it; DONE: ended, its waiter told. */
enum xfer_state { XFER_WAITING, XFER_RUNNING, XFER_FAILED, XFER_DONE };

/* --- multi.c: curl's multi interface on libev ------------------------------
 *
 * A plain adapter: it knows curl, libev and the easy handles added to it,
 * nothing of requests.  A finished transfer is reported through the
 * completion function of its http_transfer_t, after its easy handle has
 * left the multi handle. */

/* One curl multi handle and its timer.  A client spreads transfers over
 * shards of at most SHARD_CAP running transfers each: libcurl 7.88 walks
 * every connection of a multi handle in several per-transfer steps, so a
 * burst of thousands of connections in one multi handle costs n^2 while
 * shards keep each walk short.  With a connection limit there is one shard
 * only, because curl enforces limits per multi handle. */
#define SHARD_CAP 256
#define MAX_SHARDS 128

/* Plain (HTTP/1) transfers each of the first PLAIN_SHARDS shards takes.
 * For each new transfer libcurl 7.88 looks for an idle connection by
 * walking the host's connections from the oldest and takes the first idle
 * one; with 64 transfers kept running and a few answers a poll, that walk
 * passed 22 busy connections a GET, 184 of its 1,100 cache misses
 * (callgrind, 20,000 GETs 64 at a time against nginx).  Four shards of 16
 * keep the walk short for such loads: 3,300 fewer instructions a GET.
 * Larger bursts go on in shards of SHARD_CAP: 10,000 at once spread over
 * 128 shards of 78 took 0.1 s more CPU than over 40 of 256 (more shards a
 * loop iteration to drive, each with fewer sockets ready, docs/http.md). */
#define PLAIN_SHARD_CAP 16
#define PLAIN_SHARDS 4

/* Transfers that may multiplex (HTTP/2 over TLS) a shard carries, at most.
 * libcurl 7.88 lets a transfer wait (CURLOPT_PIPEWAIT) only for a host's
 * first connection: once the host is known to multiplex and its
 * connections carry as many streams as allowed, the next transfer opens a
 * connection, and every transfer after it opens one more, because curl
 * skips a connection still being set up (fixed in curl 8.0, PR #10456).
 * A shard holding no more multiplexing transfers than one connection
 * takes never needs a second connection to a host, and its first one is
 * waited for.  100 is curl's own limit of streams a connection
 * (CURLMOPT_MAX_CONCURRENT_STREAMS, set to this) and no more than any
 * common server allows (RFC 9113 asks for at least 100; nginx allows 128). */
#define MUX_SHARD_CAP 100

typedef struct http_multi http_multi_t;

typedef struct http_shard {
    http_multi_t *m;
    CURLM *multi;
    ev_timer timer;        /* armed by curl's CURLMOPT_TIMERFUNCTION */
    int still_running;
    size_t n_running;      /* transfers in this multi handle */
    size_t n_mux;          /* of which may multiplex (t->multiplex) */
    size_t n_sockets;      /* sockets it holds open: busy and idle connections */
    async__list_t transfers; /* http_transfer_t added here */
    async__list_t ready;   /* http_sock_t the last poll found ready (ready_link) */
    size_t n_ready;
    bool pending;          /* transfers joined that curl has not started yet */
    bool dead;             /* our socket callback failed: curl aborts it all */
} http_shard_t;

typedef struct http_transfer http_transfer_t;

/* Called once per finished attempt, on the loop, never inside a curl
 * callback; the easy handle is already out of the multi handle (t->shard
 * is NULL) and the callee may add it again.  rc is curl's result, or
 * CURLE_OUT_OF_MEMORY for every transfer of a shard that died because a
 * socket could not be watched. */
typedef void (*http_done_fn)(http_transfer_t *t, CURLcode rc, void *ud);

/* One easy handle's membership in a multi handle, embedded in the caller's
 * object.  The caller sets easy, done and ud; multi.c the rest. */
struct http_transfer {
    CURL *easy;
    http_done_fn done;
    void *ud;
    bool multiplex;        /* may multiplex (HTTP/2 over TLS), see MUX_SHARD_CAP */
    http_shard_t *shard;   /* while added */
    async__list_t link;    /* in shard->transfers while added */
};

/* Every shard of a client and the sockets curl asked it to watch. */
struct http_multi {
    struct ev_loop *ev;
    long max_connections, max_host_connections;
    bool no_http2;
    http_shard_t *shards[MAX_SHARDS];
    size_t n_shards;
    ev_prepare start;      /* drives what joined or became ready in this
                              iteration (on_prepare) */
    unsigned long n_drive_all; /* times one curl_multi_socket_all served a
                                  shard's ready sockets (tests read it) */
    unsigned long n_done;  /* transfers reported to their owner, ever */
    ev_idle flush;         /* keeps the poll after an on_prepare that
                              reported transfers from blocking */
    async__list_t socks;   /* http_sock_t */
    /* The context of each socket our open callback made, by descriptor,
     * from its open to its close (see http_sock_t). */
    struct http_sock **by_fd;
    size_t n_by_fd;
};

/* Initialises curl once per process (and SIGPIPE, see async_http_new) and m
 * with its first shard.  Errors: ASYNC_ECURL, ASYNC_ENOMEM. */
int async__http_multi_init(http_multi_t *m, struct ev_loop *ev, const async_http_opts_t *o);
/* Closes every shard and its cached connections; nothing may be added. */
void async__http_multi_cleanup(http_multi_t *m);
/* The shard a new transfer joins (made on demand), or NULL without memory:
 * one with fewer than SHARD_CAP transfers and, for a transfer that may
 * multiplex (mux), fewer than MUX_SHARD_CAP multiplexing ones, for a plain
 * one, in the first PLAIN_SHARDS shards, fewer than PLAIN_SHARD_CAP plain
 * ones; of those, one with an idle connection first. */
http_shard_t *async__http_shard_pick(http_multi_t *m, bool mux);
/* Adds t->easy to shard sh; t->done runs when it ends.  Returns curl's code. */
CURLMcode async__http_multi_add(http_shard_t *sh, http_transfer_t *t);
/* Takes an added transfer back out, unreported. */
void async__http_multi_remove(http_transfer_t *t);
/* Lets curl look at its timeouts in every shard, and collects what ended. */
void async__http_multi_kick(http_multi_t *m);

/* Per-socket context, attached with curl_multi_assign.  curl forgets the
 * association at CURL_POLL_REMOVE, which it sends whenever a keep-alive
 * connection falls idle, that is after every request; the next request on
 * the connection watches the socket again.  A socket our open callback made
 * therefore keeps its context (in m->by_fd) until our close callback: its
 * watcher is stopped and started again on the same descriptor, which libev
 * does without an epoll_ctl when both happen in one loop iteration, the
 * common case of one request following another.  Sockets curl makes itself
 * (a resolver's socket pair) are closed without our knowing, so theirs is a
 * fresh context at each watch, freed at CURL_POLL_REMOVE (kept false). */
typedef struct http_sock {
    ev_io io;
    async__list_t link;
    async__list_t ready_link; /* in shard->ready while ready */
    http_shard_t *shard;
    int events;
    int revents;           /* CURL_CSELECT_* the poll reported, while ready */
    bool ready;
    bool kept;             /* in m->by_fd until our close callback */
} http_sock_t;

/* Our open callback made socket s for shard sh / is closing it.  Without
 * memory for the context, s is watched as a socket curl made itself. */
void async__http_sock_opened(http_shard_t *sh, curl_socket_t s);
void async__http_sock_closing(http_shard_t *sh, curl_socket_t s);

/* --- request.c and response.c ---------------------------------------------- */

typedef struct http_xfer http_xfer_t;

#define HTTP_URL_KEEP 192

/* A pooled easy handle and what stays with it across the requests it
 * carries.  curl's data pointers (body, headers, socket open, error buffer)
 * aim here once, at the request it runs now (x); and the options last set
 * are remembered, so that each request sets only those that differ: the
 * setopt calls were a tenth of our own per-request work. */
typedef struct http_easy {
    CURL *curl;
    http_xfer_t *x;                /* the request it runs, or NULL */
    char errbuf[CURL_ERROR_SIZE];
    /* As last set on curl; initialised to values no request has. */
    http_shard_t *close_shard;     /* CLOSESOCKETDATA */
    long timeout_ms, connect_timeout_ms, fresh_connect, pipewait;
    bool plain_get;                /* GET without body, method or headers */
    /* CURLOPT_URL as last set, when it fits (url_len 0: unknown).  curl
     * starts each transfer from the URL set, also after it followed a
     * redirect, so a request to the same URL need not set it again (curl's
     * copy and its free cost 400 instructions). */
    size_t url_len;
    char url[HTTP_URL_KEEP];
    /* That URL parsed (CURLOPT_CURLU), or NULL when curl has the URL as a
     * string (CURLOPT_URL): libcurl 7.88 parses a string anew for every
     * transfer (response.c, set_url). */
    CURLU *uh;
    /* The headers of the running attempt, split as they came (on_header):
     * per header its name's and its value's length as two size_t, then the
     * name, a NUL, the value without the blanks around it and a NUL; n_hdr
     * of them, read with async__http_header_next.  The buffer stays with
     * the handle, so a request costs no allocation for it; a response
     * copies it in one go and points into the copy (parse_headers). */
    http_buf_t hdr;
    size_t n_hdr;
    /* The next header line starts a response's header block: the first of
     * the attempt, or one after the blank line that ended a block (a 1xx, a
     * redirect) before any body.  curl reads a status line only there; a
     * line elsewhere that begins "HTTP/" is one more header to it, and so
     * to on_header. */
    bool hdr_start;
    /* Why the client's decoding of the running attempt's body failed
     * (decode.h), for its response. */
    char dec_err[160];
} http_easy_t;

/* One request from the call to its end, over every attempt. */
struct http_xfer {
    async__list_t link;          /* in http->waiting or http->running */
    struct async_http *http;
    http_easy_t *easy;           /* from the pool while the request lives */
    http_transfer_t t;           /* t.easy: easy->curl; t.shard: while running */
    enum xfer_state state;
    char *url;                   /* query included */
    char *method;                /* NULL for GET */
    struct curl_slist *headers;
    char *body;
    size_t body_len;
    long timeout_ms, connect_timeout_ms;
    int max_retries;
    bool idempotent;
    bool custom;                 /* the attempt names its method (CURLOPT_CUSTOMREQUEST) */
    int attempt;                 /* attempts started */
    int64_t t_call, t_start, not_before; /* async_now() times */
    http_buf_t resp_body;        /* the headers are the easy handle's (hdr) */
    bool too_big;
    bool oom;                    /* a body or header buffer could not grow */
    bool bad_header;             /* a header line held a NUL byte (on_header) */
    /* The attempt's Content-Encoding decoder (decode.h), when the client
     * decodes (http->decode_self) and the response is encoded; looked for
     * at the body's first bytes.  dec_failed: its stream was corrupt or
     * named a coding it does not know (why in easy->dec_err). */
    struct http_decoder *dec;
    bool dec_looked, dec_failed;
    bool h2;                     /* may multiplex: https, HTTP/2 not turned off */
    /* The attempt's last status line as it came (on_header), cut to fit:
     * its code, version and reason phrase are read from it only when they
     * are needed (async__http_status_code, the response build). */
    char status_line[96];
    size_t status_line_len;      /* 0: none yet */
    long status;                 /* the response code of the attempt that ended */
    int socket_errno;            /* of this attempt's failed socket(), or 0 */
    async_http_response_t *resp; /* allocated with x, filled when it ends */

    /* The three ways to wait: a callback, a task's waker, or a blocking run. */
    async_http_cb cb;
    void *cb_arg;
    async_waker_t waker;
    bool done;                   /* ended; resp is set (await and blocking) */
};

struct async_http {
    async_loop_t *loop;
    bool own_loop;
    struct ev_loop *ev;
    http_multi_t multi;
    ev_timer wake_timer;   /* the next start allowed by backoff or the rate limit */
    async_http_opts_t opts;/* defaults filled in */
    char *user_agent;
    char *accept_encoding; /* NULL: no Accept-Encoding */
    bool decode_self;      /* accept_encoding, decoded by the client (decode.h) */
    char *ca_file;
    const char *ca_shared; /* the bundle of the shared CA store, or NULL (ca_store.h) */
    bool no_proxy_env;     /* no proxy variable was set when the client was made */
    /* "User-Agent: ..." as a header of its own on every request (the first
     * of x->headers, or alone for a plain GET), or NULL when curl adds it
     * (CURLOPT_USERAGENT): see async__http_ua_header. */
    struct curl_slist *ua_header;
    async__list_t waiting; /* http_xfer_t by not_before */
    async__list_t running; /* http_xfer_t added to the multi handle */
    async__list_t failed;  /* http_xfer_t that could not start (XFER_FAILED) */
    ev_timer fail_timer;   /* ends them on the loop, not inside the call that
                              tried to start them (request.c, fail_later) */
    http_easy_t **pool;    /* idle easy handles */
    size_t n_pool, cap_pool;
    size_t pool_floor;     /* idle handles kept however long they idle */
    size_t pool_low;       /* fewest idle handles since pool_timer last ran */
    ev_timer pool_timer;   /* frees what idled a whole period above the floor */
    double tokens;         /* rate limit bucket */
    int64_t tokens_at;
    unsigned batch_iter;   /* ev_iteration when batch_started was counted */
    unsigned batch_started;/* attempts started in that loop iteration */
    int dispatching;       /* inside user callbacks */
    int blocking;          /* blocking fetches in progress */
    bool closing;
    async_http_stats_t stats;
};

/* response.c */
/* One header of http_easy_t.hdr: its name and its value without the blanks
 * around it, each followed by a NUL (either may hold a NUL byte too). */
typedef struct http_header_span {
    const char *name, *value;
    size_t name_len, value_len;
} http_header_span_t;
/* The next header of raw from offset *at (0 for the first), which it moves
 * past it; false when there is none.  (Lines without a colon were never
 * kept.) */
bool async__http_header_next(const http_buf_t *raw, size_t *at, http_header_span_t *out);
/* The code of x's last status line ("HTTP/1.1 200 OK" -> 200), or 0 when it
 * has none or it is not one curl would accept. */
long async__http_status_code(const http_xfer_t *x);
/* A zeroed request in one allocation with its response (x->resp set) and,
 * when url is not NULL, a copy of it as x->url; NULL without memory.  The
 * block is freed with the response: by async_http_response_free once the
 * waiter has it, and until then by async__http_xfer_free. */
http_xfer_t *async__http_xfer_alloc(const char *url);
/* Frees what x owns, and x with its response unless the response was
 * handed out (x->resp NULL). */
void async__http_xfer_free(http_xfer_t *x);
/* Sets http->ua_header for a client without a proxy and with a User-Agent
 * that is not empty.  Returns ASYNC_ENOMEM or 0. */
int async__http_ua_header(async_http_t *http);
/* A new easy handle with the options every request of http shares, or NULL
 * without memory (or when curl refuses an option). */
http_easy_t *async__http_easy_new(async_http_t *http);
void async__http_easy_free(http_easy_t *e);
/* The options of x's next attempt, on shard sh (which it is about to join). */
int async__http_easy_setup(http_xfer_t *x, http_shard_t *sh);
/* Fills x->resp from the finished attempt.  Returns ASYNC_ENOMEM or 0. */
int async__http_response_build(http_xfer_t *x, CURLcode rc);
/* Makes x->resp carry only an error (cancelled, out of memory, ...). */
void async__http_response_error(http_xfer_t *x, int error, const char *msg);
int async__http_url_build(const char *url, const char *const *query, char **out);

/* wire.c */
/* libcurl (7.88 and 8) builds an HTTP/1 request's line and headers, with a
 * body of up to 64 KiB, in a buffer it lets grow to 1 MiB
 * (DYN_HTTP_REQUEST), and fails a transfer whose head does not fit with
 * CURLE_OUT_OF_MEMORY, which is no shortage of memory: a URL of a
 * megabyte was reported as one.  HEAD_SLACK covers the lines curl adds
 * itself (the request line's method and version, Host, Accept,
 * Content-Length). */
#define CURL_HEAD_MAX ((size_t)1 << 20)
#define CURL_POST_INLINE ((size_t)64 << 10)
#define HEAD_SLACK ((size_t)16 << 10)
/* The longest string curl takes as an option (CURL_MAX_INPUT_LENGTH). */
#define CURL_STRING_MAX ((size_t)8000000)
/* Whether m is a method: a token of at most 16 bytes. */
bool async__http_method_ok(const char *m);
/* Whether method m (upper case, NULL for GET) is idempotent (RFC 9110). */
bool async__http_idempotent(const char *m);
/* Whether h is a header line a request may carry beside a body of body_len
 * bytes (has_body: there is one, maybe empty). */
bool async__http_header_ok(const char *h, size_t body_len, bool has_body);
/* Whether x's response, ended without error, was cut short all the same
 * (why in its handle's error buffer). */
bool async__http_length_beyond_reach(http_xfer_t *x, long status);
/* The bytes of x's request head that are the caller's. */
size_t async__http_head_bytes(const http_xfer_t *x);

#endif
