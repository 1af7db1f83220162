/* HTTP client internals.  PRIVATE: shared by lib/http_multi.c (the curl multi
 * glue on libev), lib/http_request.c (requests, retries, the rate limit and
 * the three calling styles) and lib/http_response.c (responses, headers,
 * JSON).  Everything here runs on the client's loop thread. */
#ifndef ASYNC_HTTP_INTERNAL_H
#define ASYNC_HTTP_INTERNAL_H

#include <curl/curl.h>
#include "internal.h"
#include "async/http.h"

/* A growable byte buffer on the allocator seam, always NUL-terminated. */
typedef struct http_buf {
    char *data;
    size_t len, cap;
} http_buf_t;

int async__http_buf_add(http_buf_t *b, const void *p, size_t n);
void async__http_buf_free(http_buf_t *b);

enum xfer_state { XFER_WAITING, XFER_RUNNING, XFER_DONE };

/* One request from the call to its end, over every attempt. */
typedef struct http_xfer {
    async__list_t link;          /* in http->waiting or http->running */
    struct async_http *http;
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
    async_http_response_t *resp; /* built when the request ends */

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
    struct async_http *http;
    int events;
} http_sock_t;

struct async_http {
    async_loop_t *loop;
    bool own_loop;
    struct ev_loop *ev;
    CURLM *multi;
    ev_timer curl_timer;   /* armed by curl's CURLMOPT_TIMERFUNCTION */
    ev_timer wake_timer;   /* the next start allowed by backoff or the rate limit */
    async_http_opts_t opts;/* defaults filled in */
    char *user_agent;
    async__list_t socks;   /* http_sock_t */
    async__list_t waiting; /* http_xfer_t by not_before */
    async__list_t running; /* http_xfer_t added to the multi handle */
    CURL **pool;           /* idle easy handles */
    size_t n_pool, cap_pool;
    double tokens;         /* rate limit bucket */
    int64_t tokens_at;
    int still_running;
    size_t n_running;      /* transfers in the multi handle */
    size_t n_sockets;      /* sockets curl holds open: busy and idle connections */
    int dispatching;       /* inside user callbacks */
    int blocking;          /* blocking fetches in progress */
    bool closing;
    bool added;            /* a transfer joined the multi handle since collect began */
    async_http_stats_t stats;
};

/* http_multi.c */
int async__http_multi_init(async_http_t *http);
void async__http_multi_cleanup(async_http_t *http);
/* Runs curl_multi_socket_action on a timeout and collects what finished. */
void async__http_multi_kick(async_http_t *http);
/* Reads curl_multi_info_read and hands every finished transfer on. */
void async__http_collect(async_http_t *http);
CURL *async__http_easy_get(async_http_t *http);
void async__http_easy_put(async_http_t *http, CURL *easy);

/* http_request.c */
/* Called for each finished attempt, after curl_multi_remove_handle. */
void async__http_attempt_done(async_http_t *http, http_xfer_t *x, CURLcode rc);
/* Starts waiting transfers the backoff and the rate limit allow. */
void async__http_pump(async_http_t *http);
void async__http_xfer_free(http_xfer_t *x);

/* http_response.c */
int async__http_easy_init(async_http_t *http, CURL *easy);
int async__http_easy_setup(http_xfer_t *x);
/* Fills x->resp from the finished attempt.  Returns ASYNC_ENOMEM or 0. */
int async__http_response_build(http_xfer_t *x, CURLcode rc);
/* An empty response carrying only an error (for cancelled requests). */
async_http_response_t *async__http_response_error(http_xfer_t *x, int error, const char *msg);
int async__http_url_build(const char *url, const char *const *query, char **out);

#endif
