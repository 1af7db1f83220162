/* Requests of the HTTP client: from a call to the response, over every
 * attempt.  A request waits in a queue ordered by the earliest time it may
 * start (now, or after a retry's backoff); the pump starts those whose time
 * has come as far as the client-wide rate limit (a token bucket) allows, and
 * arms one timer for the next.  When an attempt ends, a transient failure
 * (connection error, 5xx, 429) is retried with exponential backoff and
 * jitter, or after the server's Retry-After; otherwise the request ends and
 * its waiter is told: a callback, a sleeping task, or a blocking call running
 * the client's private loop.  Nothing here runs inside a curl callback. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ca_store.h"
#include "ascii.h"
#include "decode.h"
#include "http_internal.h"

#define DEFAULT_TIMEOUT ASYNC_SEC(30)
#define DEFAULT_CONNECT_TIMEOUT ASYNC_SEC(10)
#define DEFAULT_RETRY_BASE ASYNC_MSEC(100)
#define DEFAULT_RETRY_MAX ASYNC_SEC(30)
#define DEFAULT_MAX_BODY ((size_t)64 << 20)
/* The largest header buffer a pooled easy handle keeps for its next request. */
#define HDR_KEEP ((size_t)16 << 10)
/* The easy handle pool keeps up to POOL_FLOOR idle handles (or one per
 * allowed connection, if more) for good, and grows for a burst up to
 * POOL_MAX: freeing the handles of a burst as its first requests end cost
 * every later request of the burst a curl_easy_init and its options (5.4k
 * instructions).  What stays idle above the floor for a whole POOL_IDLE
 * period is freed (an idle handle holds about 10 KB of heap in libcurl 7.88). */
#define POOL_FLOOR 64
#define POOL_MAX 4096
#define POOL_IDLE 1.0

/* Attempts started in one loop iteration, at most.  curl opens the
 * connection of every transfer added before the loop polls again, so a
 * burst of 10,000 requests made every connect() before the first request
 * could be written (the first left at 0.2 s, the server's work on them only
 * began then, and the first answer of a 1 s server came at 2.2 s under
 * load).  In batches, the loop polls between them: the connections of one
 * batch carry their requests while the next batch connects. */
#define START_BATCH SHARD_CAP

/* The sizes of the 0.2 layouts.  When a later version adds fields, these
 * stay the 0.2 sizes (the offset of the first new field), and the new
 * fields are read only when the caller's size covers them. */
#define OPTS_SIZE_0_2 sizeof(async_http_opts_t)
#define REQUEST_SIZE_0_2 sizeof(async_http_request_t)

static void on_wake_timer(struct ev_loop *ev, ev_timer *w, int revents);
static void on_fail_timer(struct ev_loop *ev, ev_timer *w, int revents);
static void on_pool_timer(struct ev_loop *ev, ev_timer *w, int revents);
static void pump(async_http_t *http);
static void xfer_free(http_xfer_t *x);

/* --- clients --------------------------------------------------------------- */

/* Whether the environment names a proxy, or hosts to keep from one: the
 * variables libcurl 7.88 reads for http and https transfers (it reads
 * http_proxy only in lower case, on purpose).  curl looks them up with
 * getenv on every new connection and every reuse, some 1,500 instructions
 * a request; a client made without any tells curl so once for all
 * (response.c, easy_init). */
static bool proxy_env(void)
{
    static const char *const names[] = {"http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy",
                                        "ALL_PROXY",  "no_proxy",    "NO_PROXY"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (getenv(names[i])) return true;
    return false;
}

int async_http_new(async_http_t **out, async_loop_t *loop, const async_http_opts_t *opts)
{
    if (!out) return ASYNC_EINVAL;
    *out = NULL;
    async_http_opts_t o = {0};
    if (opts) {
        if (opts->size && opts->size < OPTS_SIZE_0_2) return ASYNC_EINVAL;
        o = *opts;
    }
    o.size = sizeof o;
    /* A rate that is not a number would compare false with everything and
     * start requests without any limit: refused like a negative one. */
    if (o.max_connections < 0 || o.max_host_connections < 0 || !(o.rate_limit >= 0) ||
        o.max_retries < 0 || o.retry_base_ns < 0 || o.retry_max_ns < 0)
        return ASYNC_EINVAL;
    /* Both go out as header lines of every request: a CR or LF would let
     * them write more headers, or a second request. */
    if ((o.user_agent && strpbrk(o.user_agent, "\r\n")) ||
        (o.accept_encoding && strpbrk(o.accept_encoding, "\r\n")))
        return ASYNC_EINVAL;
    if (!o.rate_burst) o.rate_burst = 1;
    if (!o.retry_base_ns) o.retry_base_ns = DEFAULT_RETRY_BASE;
    if (!o.retry_max_ns) o.retry_max_ns = DEFAULT_RETRY_MAX;
    if (!o.timeout_ns) o.timeout_ns = DEFAULT_TIMEOUT;
    if (!o.connect_timeout_ns) o.connect_timeout_ns = DEFAULT_CONNECT_TIMEOUT;
    if (!o.max_body) o.max_body = DEFAULT_MAX_BODY;

    async_http_t *http = async__calloc(1, sizeof *http);
    if (!http) return ASYNC_ENOMEM;
    int err = ASYNC_ENOMEM;
    http->opts = o;
    http->user_agent = async__strdup(o.user_agent ? o.user_agent : "libasync/" ASYNC_VERSION);
    if (!http->user_agent) goto fail_ua;
    http->opts.user_agent = http->user_agent;
    if (o.accept_encoding) {
        http->accept_encoding = async__strdup(o.accept_encoding);
        if (!http->accept_encoding) goto fail_pool;
        http->opts.accept_encoding = http->accept_encoding;
    }
    if (o.ca_file) {
        http->ca_file = async__strdup(o.ca_file);
        if (!http->ca_file) goto fail_pool;
        http->opts.ca_file = http->ca_file;
    }
    http->decode_self = http->accept_encoding;
    http->ca_shared = async__http_ca_shared(http->ca_file);
    http->no_proxy_env = !proxy_env();
    if (async__http_ua_header(http)) goto fail_pool;
    async__list_init(&http->waiting);
    async__list_init(&http->running);
    async__list_init(&http->failed);
    http->pool_floor = o.max_connections > POOL_FLOOR ? (size_t)o.max_connections : POOL_FLOOR;
    http->cap_pool = http->pool_floor;
    http->pool = async__calloc(http->cap_pool, sizeof *http->pool);
    if (!http->pool) goto fail_pool;
    if (!loop) {
        err = async_loop_new(&http->loop);
        if (err) goto fail_loop;
        http->own_loop = true;
    } else {
        http->loop = loop;
    }
    http->ev = async_loop_ev(http->loop);
    ev_init(&http->wake_timer, on_wake_timer);
    http->wake_timer.data = http;
    ev_init(&http->fail_timer, on_fail_timer);
    http->fail_timer.data = http;
    ev_init(&http->pool_timer, on_pool_timer);
    http->pool_timer.data = http;
    http->tokens = o.rate_burst;
    http->tokens_at = async_now();
    err = async__http_multi_init(&http->multi, http->ev, &http->opts);
    if (err) goto fail_multi;
    *out = http;
    return 0;

fail_multi:
    if (http->own_loop) async_loop_destroy(http->loop);
fail_loop:
    async__free(http->pool);
fail_pool:
    curl_slist_free_all(http->ua_header);
    async__free(http->ca_file);
    async__free(http->accept_encoding);
    async__free(http->user_agent);
fail_ua:
    async__free(http);
    return err;
}

async_loop_t *async_http_loop(async_http_t *http) { return http ? http->loop : NULL; }

void async_http_stats(const async_http_t *http, async_http_stats_t *out)
{
    if (!out) return;
    memset(out, 0, sizeof *out);
    if (!http) return;
    *out = http->stats;
    out->easy_pooled = http->n_pool;
    for (size_t i = 0; i < http->multi.n_shards; i++)
        out->connections += http->multi.shards[i]->n_sockets;
}

/* --- easy handle pool ------------------------------------------------------ */

static http_easy_t *easy_get(async_http_t *http)
{
    if (http->n_pool) {
        http_easy_t *h = http->pool[--http->n_pool];
        if (http->n_pool < http->pool_low) http->pool_low = http->n_pool;
        return h;
    }
    return async__http_easy_new(http);
}

/* Stops the shrinking timer; it holds no reference on the loop. */
static void pool_timer_stop(async_http_t *http)
{
    if (!ev_is_active(&http->pool_timer)) return;
    ev_ref(http->ev);
    ev_timer_stop(http->ev, &http->pool_timer);
}

/* Room for one more idle handle: the array grows (to POOL_MAX at most), and
 * once the pool is above its floor the timer that shrinks it runs.  The
 * timer does not keep the loop alive (ev_unref): an idle client must not
 * hold up a loop run to its end. */
static bool pool_room(async_http_t *http)
{
    if (http->n_pool == http->cap_pool) {
        size_t cap = http->cap_pool * 2 < POOL_MAX ? http->cap_pool * 2 : POOL_MAX;
        if (cap <= http->cap_pool) return false;
        http_easy_t **p = async__realloc(http->pool, cap * sizeof *p);
        if (!p) return false;
        http->pool = p;
        http->cap_pool = cap;
    }
    if (http->n_pool >= http->pool_floor && !ev_is_active(&http->pool_timer)) {
        http->pool_low = http->n_pool;
        ev_timer_set(&http->pool_timer, POOL_IDLE, POOL_IDLE);
        ev_timer_start(http->ev, &http->pool_timer);
        ev_unref(http->ev);
    }
    return true;
}

/* Frees the handles that stayed idle above the floor for the whole period
 * (the pool never went below pool_low since the last run).  They are taken
 * from the bottom of the stack, which easy_get reaches last. */
static void on_pool_timer(struct ev_loop *ev, ev_timer *w, int revents)
{
    ASYNC_UNUSED(ev);
    ASYNC_UNUSED(revents);
    async_http_t *http = w->data;
    size_t extra = http->pool_low > http->pool_floor ? http->pool_low - http->pool_floor : 0;
    for (size_t i = 0; i < extra; i++) async__http_easy_free(http->pool[i]);
    if (extra) {
        http->n_pool -= extra;
        memmove(http->pool, http->pool + extra, http->n_pool * sizeof *http->pool);
    }
    http->pool_low = http->n_pool;
    if (http->n_pool <= http->pool_floor) pool_timer_stop(http);
}

/* Gives x's easy handle back to the pool. */
static void easy_put(async_http_t *http, http_xfer_t *x)
{
    http_easy_t *h = x->easy;
    x->easy = NULL;
    x->t.easy = NULL;
    if (!h) return;
    h->x = NULL;
    /* A rare large header block does not stay with the handle. */
    if (h->hdr.cap > HDR_KEEP) async__http_buf_free(&h->hdr);
    if (!http->closing && pool_room(http)) {
        /* Kept configured, not reset: the next request sets every option
         * that differs from this one's (async__http_easy_setup). */
        http->pool[http->n_pool++] = h;
        return;
    }
    async__http_easy_free(h);
}

/* Frees x's easy handle instead: its transfer may have stopped mid-way. */
static void easy_discard(http_xfer_t *x)
{
    async__http_easy_free(x->easy);
    x->easy = NULL;
    x->t.easy = NULL;
}

/* --- ending a request ------------------------------------------------------ */

static void xfer_free(http_xfer_t *x) { async__http_xfer_free(x); }

/* Hands the finished request and its response to its waiter. */
static void finish(async_http_t *http, http_xfer_t *x)
{
    x->state = XFER_DONE;
    http->stats.in_flight--;
    easy_put(http, x);
    if (!x->resp || x->resp->error) http->stats.failed++;
    if (x->cb) {
        async_http_response_t *r = x->resp;
        x->resp = NULL;
        async_http_cb cb = x->cb;
        void *arg = x->cb_arg;
        xfer_free(x);
        http->dispatching++;
        cb(r, arg);
        http->dispatching--;
        return;
    }
    /* A task or a blocking call owns x and frees it.  A stale waker (the
     * task's wait already ended by its deadline or cancellation) is fine:
     * the task finds x done when it resumes. */
    x->done = true;
    if (x->waker.ptr_) async_waker_wake(x->waker, 0);
}

static void fail(async_http_t *http, http_xfer_t *x, int error, const char *msg)
{
    async__http_response_error(x, error, msg);
    finish(http, x);
}

/* Fails a request that could not start, from the loop a moment later.  The
 * pump that starts requests runs inside async_http_send, whose callback must
 * never run before it returns (http.h), and inside a task's fetch that gives
 * up on its own request: ending the request there would call a callback
 * from inside the send, or from a task's stack.  Until round 12 it did, when
 * memory for an easy handle or a shard ran out. */
static void fail_later(async_http_t *http, http_xfer_t *x, int error, const char *msg)
{
    async__http_response_error(x, error, msg);
    x->state = XFER_FAILED;
    async__list_push(&http->failed, &x->link);
    if (!ev_is_active(&http->fail_timer)) {
        ev_timer_set(&http->fail_timer, 0., 0.);
        ev_timer_start(http->ev, &http->fail_timer);
    }
}

/* Ends the requests that had failed to start when it was armed; those its
 * callbacks fail to start wait for its next run, so that a chain of them
 * does not keep the loop from polling. */
static void on_fail_timer(struct ev_loop *ev, ev_timer *w, int revents)
{
    ASYNC_UNUSED(ev);
    ASYNC_UNUSED(revents);
    async_http_t *http = w->data;
    async__list_t now, *l;
    async__list_init(&now);
    while ((l = async__list_pop(&http->failed))) async__list_push(&now, l);
    while ((l = async__list_pop(&now))) finish(http, container_of(l, http_xfer_t, link));
}

/* --- retries --------------------------------------------------------------- */

static bool transient_curl(CURLcode rc, bool idempotent)
{
    switch (rc) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return true; /* nothing reached the server */
    case CURLE_GOT_NOTHING:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return idempotent;
    default:
        return false;
    }
}

static bool transient_status(long status, bool idempotent)
{
    if (status == 429 || status == 503) return true; /* the server did not act on it */
    return idempotent && status >= 500 && status <= 599 && status != 501 && status != 505;
}

static double jitter(void)
{
    /* Jitter only spreads retries; it needs no quality.  rand_r keeps the
     * state per thread. */
    static _Thread_local unsigned seed;
    if (!seed) seed = (unsigned)async_now() | 1u;
    return (double)rand_r(&seed) / ((double)RAND_MAX + 1.0);
}

static void enqueue(async_http_t *http, http_xfer_t *x)
{
    /* Sorted by not_before; new requests go at the tail in O(1). */
    async__list_t *pos = http->waiting.prev;
    while (pos != &http->waiting &&
           container_of(pos, http_xfer_t, link)->not_before > x->not_before)
        pos = pos->prev;
    x->link.prev = pos;
    x->link.next = pos->next;
    pos->next->prev = &x->link;
    pos->next = &x->link;
    x->state = XFER_WAITING;
}

/* The wait a 429 or 503 asks for, in nanoseconds: -1 when it names none (no
 * Retry-After, a date in the past, or text that is neither a number nor a
 * date), INT64_MAX when it is beyond ASYNC_HTTP_RETRY_AFTER_MAX (then no
 * retry can honour it).  Delay-seconds are read here, saturating, because
 * curl reads an overflowing number as 0, which would retry at once; the
 * HTTP-date form is curl's (CURLINFO_RETRY_AFTER, seconds from now). */
static int64_t retry_after(http_xfer_t *x)
{
    http_header_span_t sp;
    size_t at = 0;
    const char *v = NULL, *ve = NULL;
    while (async__http_header_next(&x->easy->hdr, &at, &sp)) {
        /* A NUL byte ends a name or value, as in the response's headers. */
        if (strnlen(sp.name, sp.name_len) != 11 || async__ascii_ncasecmp(sp.name, "Retry-After", 11) != 0)
            continue;
        v = sp.value; /* the last one */
        ve = v + strnlen(v, sp.value_len);
    }
    if (!v) return -1;
    if (v < ve && *v >= '0' && *v <= '9') {
        int64_t sec = 0;
        for (; v < ve && *v >= '0' && *v <= '9'; v++) {
            if (sec <= ASYNC_HTTP_RETRY_AFTER_MAX) sec = sec * 10 + (*v - '0');
        }
        if (v < ve) return -1; /* "12abc": not a delay (the value has no trailing blanks) */
        if (sec > ASYNC_HTTP_RETRY_AFTER_MAX) return INT64_MAX;
        return sec ? ASYNC_SEC(sec) : -1;
    }
    curl_off_t after = 0;
    if (curl_easy_getinfo(x->t.easy, CURLINFO_RETRY_AFTER, &after) != CURLE_OK || after <= 0)
        return -1;
    if (after > ASYNC_HTTP_RETRY_AFTER_MAX) return INT64_MAX;
    return ASYNC_SEC(after);
}

/* The completion function of every attempt (multi.c calls it once the easy
 * handle is out of the multi handle): retry, or end the request. */
static void on_attempt_done(http_transfer_t *t, CURLcode rc, void *ud)
{
    http_xfer_t *x = ud;
    async_http_t *http = x->http;
    (void)t;
    async__list_remove(&x->link);
    if (rc == CURLE_OUT_OF_MEMORY) {
        /* curl's own, or the shard died watching a socket: the transfer may
         * have stopped mid-way, so its handle is not pooled. */
        easy_discard(x);
        size_t head = async__http_head_bytes(x);
        if (head + HEAD_SLACK >= CURL_HEAD_MAX) {
            /* No memory ran out: curl's request head is full. */
            char msg[160];
            snprintf(msg, sizeof msg,
                     "request too large for curl: %zu bytes of URL and headers, and libcurl "
                     "builds a request head in at most %zu",
                     head, CURL_HEAD_MAX);
            fail(http, x, ASYNC_EINVAL, msg);
            return;
        }
        fail(http, x, ASYNC_ENOMEM, "out of memory in curl or watching its sockets");
        return;
    }
    /* A transfer that succeeded ended with the response of its last status
     * line, whose code is curl's CURLINFO_RESPONSE_CODE: read there, it
     * spares a curl_easy_getinfo a request.  A failed one asks curl, which
     * knows whether a status line seen (a proxy's CONNECT answer, say) was
     * the server's. */
    long status = rc == CURLE_OK ? async__http_status_code(x) : 0;
    if (!status) curl_easy_getinfo(x->t.easy, CURLINFO_RESPONSE_CODE, &status);
    x->status = status; /* the response reads it from here, not from curl again */
    if (rc == CURLE_OK && async__http_length_beyond_reach(x, status)) rc = CURLE_PARTIAL_FILE;
    bool refused = x->too_big || x->bad_header; /* our callbacks ended it: no retry */
    bool transient = rc != CURLE_OK ? (!refused && transient_curl(rc, x->idempotent))
                                    : transient_status(status, x->idempotent);
    if (transient && x->attempt <= x->max_retries && !http->closing) {
        int64_t delay = -1;
        if (rc == CURLE_OK && (status == 429 || status == 503)) delay = retry_after(x);
        if (delay < 0) {
            int shift = x->attempt - 1 < 30 ? x->attempt - 1 : 30;
            int64_t b = http->opts.retry_base_ns;
            delay = b > http->opts.retry_max_ns >> shift ? http->opts.retry_max_ns : b << shift;
            /* "Equal jitter": half the backoff, plus up to the other half. */
            delay = delay / 2 + (int64_t)(jitter() * ((double)delay / 2.0));
        }
        if (delay != INT64_MAX && delay <= http->opts.retry_max_ns) {
            http->stats.retries++;
            x->resp_body.len = 0;
            x->status_line_len = 0;
            int64_t now = async_now();
            x->not_before = delay > INT64_MAX - now ? INT64_MAX : now + delay;
            enqueue(http, x);
            pump(http);
            return;
        }
        /* A Retry-After longer than we may wait (or than anyone may): the 429
         * or 503 stands, rather than a retry sooner than the server asked. */
    }
    if (async__http_response_build(x, rc)) {
        fail(http, x, ASYNC_ENOMEM, "out of memory building the response");
        return;
    }
    finish(http, x);
}

/* --- starting attempts: backoff and the rate limit ------------------------- */

static void start(async_http_t *http, http_xfer_t *x)
{
    if (!x->easy) {
        x->easy = easy_get(http);
        if (!x->easy) {
            fail_later(http, x, ASYNC_ENOMEM, "curl_easy_init failed");
            return;
        }
        x->t.easy = x->easy->curl;
    }
    /* As async__http_easy_setup uses it (CURLOPT_PIPEWAIT). */
    http_shard_t *sh = async__http_shard_pick(&http->multi, x->h2);
    if (!sh) {
        fail_later(http, x, ASYNC_ENOMEM, "out of memory for a curl multi handle");
        return;
    }
    int err = async__http_easy_setup(x, sh);
    if (err) {
        size_t ul = strlen(x->url);
        if (ul > CURL_STRING_MAX) {
            char msg[128];
            snprintf(msg, sizeof msg, "curl rejected the URL: %zu bytes, and it takes at most %zu",
                     ul, CURL_STRING_MAX);
            fail_later(http, x, err, msg);
            return;
        }
        fail_later(http, x, err, "curl rejected an option of the request");
        return;
    }
    if (!x->attempt) x->t_start = async_now();
    x->attempt++;
    http->stats.attempts++;
    CURLMcode mc = async__http_multi_add(sh, &x->t);
    if (mc != CURLM_OK) {
        char msg[128];
        snprintf(msg, sizeof msg, "curl_multi_add_handle: %s", curl_multi_strerror(mc));
        fail_later(http, x, mc == CURLM_OUT_OF_MEMORY ? ASYNC_ENOMEM : ASYNC_ECURL, msg);
        return;
    }
    x->state = XFER_RUNNING;
    async__list_push(&http->running, &x->link);
}

static void pump(async_http_t *http)
{
    ev_timer_stop(http->ev, &http->wake_timer);
    double rate = http->opts.rate_limit;
    unsigned iter = ev_iteration(http->ev);
    if (iter != http->batch_iter) {
        http->batch_iter = iter;
        http->batch_started = 0;
    }
    while (!async__list_empty(&http->waiting)) {
        if (http->batch_started >= START_BATCH) {
            /* The rest start in the next iteration, after the loop has
             * polled: see START_BATCH. */
            ev_timer_set(&http->wake_timer, 0., 0.);
            ev_timer_start(http->ev, &http->wake_timer);
            return;
        }
        http_xfer_t *x = container_of(http->waiting.next, http_xfer_t, link);
        int64_t now = async_now();
        int64_t wait = x->not_before - now;
        if (wait <= 0 && rate > 0) {
            double burst = http->opts.rate_burst;
            http->tokens += (double)(now - http->tokens_at) / 1e9 * rate;
            if (http->tokens > burst) http->tokens = burst;
            http->tokens_at = now;
            if (http->tokens < 1.0) {
                /* A rate small enough makes the wait more nanoseconds than
                 * an int64_t holds, and the conversion of such a double is
                 * undefined: on x86-64 it gave INT64_MIN, a wait below zero,
                 * and the request started at once.  It waits for ever
                 * instead, as the rate asks. */
                double w = (1.0 - http->tokens) / rate * 1e9;
                wait = w < (double)INT64_MAX ? (int64_t)w + 1 : INT64_MAX;
            } else {
                http->tokens -= 1.0;
            }
        }
        if (wait > 0) {
            ev_now_update(http->ev); /* timers count from the loop's clock */
            ev_timer_set(&http->wake_timer, (double)wait / 1e9, 0.);
            ev_timer_start(http->ev, &http->wake_timer);
            return;
        }
        async__list_remove(&x->link);
        http->batch_started++;
        start(http, x);
    }
}

static void on_wake_timer(struct ev_loop *ev, ev_timer *w, int revents)
{
    ASYNC_UNUSED(ev);
    ASYNC_UNUSED(revents);
    pump(w->data);
}

/* --- making requests ------------------------------------------------------- */

/* A client on a caller's loop is that loop's thread's: another thread would
 * race the loop on curl's handles and the queues.  A private-loop client has
 * no fixed thread (one thread at a time may use it), so it is not checked. */
static int check_thread(const async_http_t *http)
{
    if (!http->own_loop && !async__on_loop_thread(http->loop)) return ASYNC_EWRONGLOOP;
    return 0;
}

static long to_ms(int64_t req, int64_t client)
{
    int64_t ns = req ? req : client;
    if (ns < 0) return 0; /* curl: 0 is no timeout */
    /* Rounded up without adding first: ns + 999999 overflowed for
     * ASYNC_FOREVER, a caller's natural "no limit" (undefined behaviour,
     * which UBSan stops at; in practice a negative timeout for curl, which
     * libcurl 7.88 happens to read as none). */
    int64_t ms = ns / 1000000 + (ns % 1000000 != 0);
    if (ms > LONG_MAX) ms = LONG_MAX;
    return ms ? (long)ms : 1;
}

static int xfer_new(async_http_t *http, const async_http_request_t *req, http_xfer_t **out)
{
    *out = NULL;
    if (!http || !req || !req->url || !*req->url) return ASYNC_EINVAL;
    if (req->size && req->size < REQUEST_SIZE_0_2) return ASYNC_EINVAL;
    if (req->method && !async__http_method_ok(req->method)) return ASYNC_EINVAL;
    if (req->body_len && !req->body) return ASYNC_EINVAL;
    if (http->closing) return ASYNC_ECLOSED;
    /* The response exists from the start, so a request always ends with one,
     * even when memory runs out on the way. */
    /* A URL without a query needs no building: it is copied into the block. */
    http_xfer_t *x = async__http_xfer_alloc(req->query ? NULL : req->url);
    if (!x) return ASYNC_ENOMEM;
    async__list_init(&x->link);
    async__list_init(&x->t.link);
    x->http = http;
    x->t.done = on_attempt_done;
    x->t.ud = x;
    int err = x->url ? 0 : async__http_url_build(req->url, req->query, &x->url);
    if (err) goto fail;
    err = ASYNC_ENOMEM;
    const char *m = req->method ? req->method : (req->body ? "POST" : NULL);
    /* A GET that carries a body keeps its name: without one curl would
     * send the body as a POST (CURLOPT_POSTFIELDS), and the request would
     * have been judged idempotent as a GET and retried as a POST. */
    if (m && (async__ascii_casecmp(m, "GET") != 0 || req->body)) {
        if (!(x->method = async__strdup(m))) goto fail;
        for (char *p = x->method; *p; p++)
            if (*p >= 'a' && *p <= 'z') *p = (char)(*p - 'a' + 'A');
    }
    x->idempotent = async__http_idempotent(x->method);
    /* Where HTTP/2 can be negotiated (TLS ALPN), the transfer may multiplex. */
    x->h2 = !http->opts.no_http2 && async__ascii_ncasecmp(x->url, "https:", 6) == 0;
    /* The client's User-Agent leads a request's own header list, unless the
     * request names one itself (even empty, which sends none), as curl
     * leaves its own out then. */
    bool own_ua = false;
    for (size_t i = 0; req->headers && req->headers[i]; i++)
        own_ua |= async__ascii_ncasecmp(req->headers[i], "User-Agent", 10) == 0 &&
                  (req->headers[i][10] == ':' || req->headers[i][10] == ';');
    bool ua = http->ua_header && !own_ua && (req->body || (req->headers && req->headers[0]));
    if (ua && !(x->headers = curl_slist_append(NULL, http->ua_header->data))) goto fail;
    if (req->body) {
        if (!(x->body = async__malloc(req->body_len ? req->body_len : 1))) goto fail;
        memcpy(x->body, req->body, req->body_len);
        x->body_len = req->body_len;
        /* No "Expect: 100-continue" round trip before larger bodies. */
        struct curl_slist *l = curl_slist_append(x->headers, "Expect:");
        if (!l) goto fail;
        x->headers = l;
    }
    for (size_t i = 0; req->headers && req->headers[i]; i++) {
        if (!async__http_header_ok(req->headers[i], req->body ? req->body_len : 0,
                                   req->body != NULL)) {
            err = ASYNC_EINVAL;
            goto fail;
        }
        struct curl_slist *l = curl_slist_append(x->headers, req->headers[i]);
        if (!l) goto fail;
        x->headers = l;
    }
    x->timeout_ms = to_ms(req->timeout_ns, http->opts.timeout_ns);
    x->connect_timeout_ms = to_ms(req->connect_timeout_ns, http->opts.connect_timeout_ns);
    x->max_retries = req->max_retries < 0 ? 0 : req->max_retries ? req->max_retries
                                                                  : http->opts.max_retries;
    x->t_call = x->not_before = async_now();
    *out = x;
    return 0;
fail:
    xfer_free(x);
    return err;
}

static void submit(async_http_t *http, http_xfer_t *x)
{
    http->stats.requests++;
    http->stats.in_flight++;
    enqueue(http, x);
    pump(http);
}

int async_http_send(async_http_t *http, const async_http_request_t *req, async_http_cb cb,
                    void *arg)
{
    if (!cb || !http) return ASYNC_EINVAL;
    int err = check_thread(http);
    if (err) return err;
    http_xfer_t *x;
    err = xfer_new(http, req, &x);
    if (err) return err;
    x->cb = cb;
    x->cb_arg = arg;
    submit(http, x);
    return 0;
}

/* Takes a request that did not end back out of the client. */
static void abandon(async_http_t *http, http_xfer_t *x)
{
    if (x->state == XFER_RUNNING) async__http_multi_remove(&x->t);
    bool was_waiting = x->state == XFER_WAITING;
    if (x->state != XFER_DONE) async__list_remove(&x->link);
    easy_discard(x);
    if (x->state != XFER_DONE) {
        http->stats.failed++;
        http->stats.in_flight--;
    }
    xfer_free(x);
    /* Re-arm (or stop) the timer that waited for this request's turn, so an
     * empty queue does not hold the loop; the same for the one that would
     * have ended it after a failed start. */
    if (was_waiting) pump(http);
    if (async__list_empty(&http->failed)) ev_timer_stop(http->ev, &http->fail_timer);
}

static void on_deadline(struct ev_loop *ev, ev_timer *w, int revents)
{
    ASYNC_UNUSED(revents);
    ASYNC_UNUSED(ev);
    *(bool *)w->data = true;
}

int async_http_fetch_dl(async_http_response_t **out, async_http_t *http,
                        const async_http_request_t *req, int64_t deadline)
{
    if (!out) return ASYNC_EINVAL;
    *out = NULL;
    if (!http) return ASYNC_EINVAL;
    int err = check_thread(http);
    if (err) return err;
    async_waker_t waker = async_task_waker();
    if (waker.ptr_) {
        if (async_waker_loop(waker) != http->loop) return ASYNC_EWRONGLOOP;
    } else if (!http->own_loop) {
        return ASYNC_ENOTASK;
    } else if (http->dispatching || http->blocking || async_loop_current() == http->loop) {
        /* Called from inside the private loop's own run (a callback, a
         * watcher) or from a callback that async_http_destroy runs: running the
         * loop again here would wait for the call that is waiting. */
        return ASYNC_EDEADLK;
    } else if (async_loop_current()) {
        return ASYNC_EWRONGLOOP; /* another loop runs on this thread: it would stall */
    }
    http_xfer_t *x;
    err = xfer_new(http, req, &x);
    if (err) return err;
    if (deadline != ASYNC_FOREVER && deadline <= async_now()) {
        /* No transfer could end in time: do not start one only to abandon it. */
        xfer_free(x);
        return ASYNC_ETIMEDOUT;
    }
    submit(http, x);

    if (waker.ptr_) {
        /* Suspend until finish() wakes us, the deadline or cancellation.  The
         * waker is taken right before each suspension (a wake before it
         * would be kept for a later, unrelated one), so a request that ended
         * inside submit() is seen through x->done and nobody wakes us. */
        while (!x->done) {
            x->waker = async_task_waker();
            err = async_task_suspend_dl(deadline);
            if (err && !x->done) {
                abandon(http, x);
                return err;
            }
        }
    } else {
        bool expired = false;
        ev_timer dl;
        ev_init(&dl, on_deadline);
        dl.data = &expired;
        if (deadline != ASYNC_FOREVER) {
            int64_t left = deadline - async_now();
            ev_now_update(http->ev);
            ev_timer_set(&dl, left > 0 ? (double)left / 1e9 : 0., 0.);
            ev_timer_start(http->ev, &dl);
        }
        http->blocking++;
        int idle = 0;
        while (!x->done && !expired) {
            int rc = async_loop_run(http->loop, ASYNC_RUN_ONCE);
            if (rc < 0) {
                err = rc;
                break;
            }
            /* 0: nothing is left to wake the loop, yet the request has not
             * ended.  That should not happen; rather than spin, let curl
             * look at its timeouts once more, then give up. */
            if (rc == 0 && ++idle > 1) {
                err = ASYNC_EIO;
                break;
            }
            if (rc == 0) async__http_multi_kick(&http->multi);
        }
        http->blocking--;
        ev_timer_stop(http->ev, &dl);
        if (!x->done) {
            abandon(http, x);
            return err ? err : ASYNC_ETIMEDOUT;
        }
    }
    async_http_response_t *r = x->resp;
    x->resp = NULL;
    xfer_free(x);
    if (!r) return ASYNC_ENOMEM;
    *out = r;
    return r->error;
}

int async_http_fetch(async_http_response_t **out, async_http_t *http,
                     const async_http_request_t *req)
{
    return async_http_fetch_dl(out, http, req, ASYNC_FOREVER);
}

int async_http_get_dl(async_http_response_t **out, async_http_t *http, const char *url,
                      const char *const *query, int64_t deadline)
{
    async_http_request_t req = {.url = url, .query = query};
    return async_http_fetch_dl(out, http, &req, deadline);
}

int async_http_get(async_http_response_t **out, async_http_t *http, const char *url,
                   const char *const *query)
{
    return async_http_get_dl(out, http, url, query, ASYNC_FOREVER);
}

/* --- freeing a client ------------------------------------------------------ */

int async_http_destroy(async_http_t *http)
{
    if (!http) return 0;
    int err = check_thread(http);
    if (err) return err;
    /* From one of its own callbacks, or from inside a blocking fetch's run of
     * the private loop: the caller's own frames still use the client. */
    if (http->dispatching || http->blocking ||
        (http->own_loop && async_loop_current() == http->loop))
        return ASYNC_EDEADLK;
    http->closing = true;
    ev_timer_stop(http->ev, &http->wake_timer);
    pool_timer_stop(http);
    async__list_t *l;
    /* Every waiter hears ECLOSED (ECANCELED is for a cancelled task);
     * callbacks run here, so count them as dispatching to keep them from
     * freeing the client again. */
    http->dispatching++;
    while ((l = async__list_pop(&http->running))) {
        http_xfer_t *x = container_of(l, http_xfer_t, link);
        async__http_multi_remove(&x->t);
        easy_discard(x);
        fail(http, x, ASYNC_ECLOSED, "the HTTP client was freed");
    }
    while ((l = async__list_pop(&http->waiting))) {
        http_xfer_t *x = container_of(l, http_xfer_t, link);
        fail(http, x, ASYNC_ECLOSED, "the HTTP client was freed");
    }
    /* Those that had failed to start already end with their own error. */
    ev_timer_stop(http->ev, &http->fail_timer);
    while ((l = async__list_pop(&http->failed))) finish(http, container_of(l, http_xfer_t, link));
    http->dispatching--;
    for (size_t i = 0; i < http->n_pool; i++) async__http_easy_free(http->pool[i]);
    http->n_pool = 0;
    async__http_multi_cleanup(&http->multi);
    ev_timer_stop(http->ev, &http->wake_timer);
    if (http->own_loop) async_loop_destroy(http->loop);
    async__free(http->pool);
    curl_slist_free_all(http->ua_header); /* after every handle that sent it */
    async__free(http->ca_file);
    async__free(http->accept_encoding);
    async__free(http->user_agent);
    async__free(http);
    return 0;
}
