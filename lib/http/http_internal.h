/* HTTP client internals.  PRIVATE: shared by lib/http/multi.c (the curl multi
 * glue on libev), lib/http/request.c (requests, retries, the rate limit and
 * the three calling styles) and lib/http/response.c (responses, headers,
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

enum xfer_state { XFER_WAITING, XFER_RUNNING, XFER_DONE };

/* One curl multi handle and its timer.  A client spreads transfers over
 * shards of at most SHARD_CAP running transfers each: libcurl 7.88 walks
 * every connection of a multi handle in several per-transfer steps, so a
 * burst of thousands of connections in one multi handle costs n^2 while
 * shards keep each walk short.  With a connection limit there is one shard
 * only, because curl enforces limits per multi handle. */
#define SHARD_CAP 256
#define MAX_SHARDS 64

typedef struct http_shard {
    struct async_http *http;
    CURLM *multi;
    ev_timer timer;        /* armed by curl's CURLMOPT_TIMERFUNCTION */
    int still_running;
    size_t n_running;      /* transfers in this multi handle */
    size_t n_sockets;      /* sockets it holds open: busy and idle connections */
    bool added;            /* a transfer joined since collect began */
    bool dead;             /* our socket callback failed: curl aborts it all */
} http_shard_t;

/* One request from the call to its end, over every attempt. */
typedef struct http_xfer {
    async__list_t link;          /* in http->waiting or http->running */
    struct async_http *http;
    http_shard_t *shard;         /* while running */
    enum xfer_state state;
    CURL *easy;                  /* from the pool while the request lives */
    char *url;                   /* query included */
    char *method;                /* NULL for GET */
    struct curl_slist *headers;
    char *body;
    size_t body_len;
    long timeout_ms, connect_timeout_ms;
    int max_retries;
    bool idempotent;
    int attempt;                 /* attempts started */
    int64_t t_call, t_start, not_before; /* async_now() times */
    http_buf_t resp_body, resp_hdr;
    bool too_big;
    char reason[64];             /* the status line's reason phrase */
    char errbuf[CURL_ERROR_SIZE];
    int socket_errno;            /* of this attempt's failed socket(), or 0 */
    async_http_response_t *resp; /* allocated with x, filled when it ends */

    /* The three ways to wait: a callback, a task's waker, or a blocking run. */
    async_http_cb cb;
    void *cb_arg;
    async_waker_t waker;
    bool done;                   /* ended; resp is set (await and blocking) */
} http_xfer_t;

/* Per-socket context, attached with curl_multi_assign.  curl forgets the
 * association at CURL_POLL_REMOVE, so a socket that comes back, or a new
 * socket on a reused fd number, gets a fresh context. */
typedef struct http_sock {
    ev_io io;
    async__list_t link;
    http_shard_t *shard;
    int events;
} http_sock_t;

struct async_http {
    async_loop_t *loop;
    bool own_loop;
    struct ev_loop *ev;
    http_shard_t *shards[MAX_SHARDS];
    size_t n_shards;
    ev_timer wake_timer;   /* the next start allowed by backoff or the rate limit */
    async_http_opts_t opts;/* defaults filled in */
    char *user_agent;
    char *accept_encoding; /* NULL: no Accept-Encoding */
    char *ca_file;
    async__list_t socks;   /* http_sock_t */
    async__list_t waiting; /* http_xfer_t by not_before */
    async__list_t running; /* http_xfer_t added to the multi handle */
    CURL **pool;           /* idle easy handles */
    size_t n_pool, cap_pool;
    double tokens;         /* rate limit bucket */
    int64_t tokens_at;
    int dispatching;       /* inside user callbacks */
    int blocking;          /* blocking fetches in progress */
    bool closing;
    async_http_stats_t stats;
};

/* multi.c */
int async__http_multi_init(async_http_t *http);
void async__http_multi_cleanup(async_http_t *http);
/* The shard a new transfer joins (made on demand), or NULL without memory. */
http_shard_t *async__http_shard_pick(async_http_t *http);
/* Reads curl_multi_info_read and hands every finished transfer on. */
void async__http_collect(http_shard_t *shard);
CURL *async__http_easy_get(async_http_t *http);
void async__http_easy_put(async_http_t *http, CURL *easy);

/* request.c */
/* Called for each finished attempt, after curl_multi_remove_handle. */
void async__http_attempt_done(async_http_t *http, http_xfer_t *x, CURLcode rc);
/* Ends a request with an error response (also for running ones, whose easy
 * handle the caller has already taken out of curl). */
void async__http_fail(async_http_t *http, http_xfer_t *x, int error, const char *msg);
/* Starts waiting transfers the backoff and the rate limit allow. */
void async__http_pump(async_http_t *http);
void async__http_xfer_free(http_xfer_t *x);

/* response.c */
int async__http_easy_init(async_http_t *http, CURL *easy);
int async__http_easy_setup(http_xfer_t *x);
/* Fills x->resp from the finished attempt.  Returns ASYNC_ENOMEM or 0. */
int async__http_response_build(http_xfer_t *x, CURLcode rc);
/* Makes x->resp carry only an error (cancelled, out of memory, ...). */
void async__http_response_error(http_xfer_t *x, int error, const char *msg);
int async__http_url_build(const char *url, const char *const *query, char **out);

#endif
