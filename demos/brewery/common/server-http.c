/* brewery-server's HTTP side.  libmicrohttpd runs one internal epoll thread
 * for all connections.  The handler answers on its first call: it counts the
 * request, applies the rate limit and the fault draw, and builds the reply.
 * With no latency the reply is queued at once.  Otherwise the connection is
 * suspended and put on one of two FIFO queues (every entry of a queue waits
 * the same time, so arrival order is due order and no heap is needed); one
 * timer thread resumes connections as they fall due, and libmicrohttpd calls
 * the handler again, which queues the held reply or closes the connection.
 *
 * Threads and ownership: the MHD thread alone touches the counters, the rate
 * window and a held request before it is queued; the queues are under `mu`.
 * A held request is freed only by the completion callback (MHD thread); the
 * timer thread reads an entry's fields before resuming it and never after,
 * because the MHD thread may finish and free it as soon as it is resumed.
 * No MHD call is made while holding `mu`.
 *
 * libmicrohttpd forbids stopping a daemon with suspended connections, so
 * stop first sets `stopping` (the timer thread resumes everything held and
 * exits, and any later hold resumes at once), then stops the daemon. */
#include "server-http.h"
#include "server-front.h"
#include "server-query.h"

#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

enum action { ANSWER, DROP, STALL };
enum { Q_LATENCY, Q_STALL, NQUEUES };

struct held {
    struct held *next;
    struct MHD_Connection *conn;
    int64_t due_ns;
    enum action act;
    unsigned status;
    struct MHD_Response *resp;   /* ANSWER only, until queued */
};

struct bsrv_server {
    struct MHD_Daemon *d;
    bsrv_front_t *front;
    const bsrv_dataset_t *ds;
    bsrv_config_t cfg;
    unsigned port;

    /* MHD thread only. */
    unsigned long long nreq;
    bool window_open;
    int64_t window_start;
    unsigned window_count;
    bsrv_stats_t stats;

    /* Set first thing by stop, read by the MHD thread's long scans. */
    atomic_bool stop;

    /* Timer state, under mu. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t timer;
    bool stopping;
    struct { struct held *head, *tail; } q[NQUEUES];
};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static uint64_t mix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* ---- timer thread ------------------------------------------------------- */

static void *timer_main(void *arg)
{
    bsrv_server_t *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        int64_t now = now_ns(), next = INT64_MAX;
        struct held *ready = NULL, **tail = &ready;
        for (int i = 0; i < NQUEUES; i++) {
            while (s->q[i].head && (s->stopping || s->q[i].head->due_ns <= now)) {
                struct held *h = s->q[i].head;
                s->q[i].head = h->next;
                *tail = h;
                tail = &h->next;
            }
            if (!s->q[i].head)
                s->q[i].tail = NULL;
            else if (s->q[i].head->due_ns < next)
                next = s->q[i].head->due_ns;
        }
        *tail = NULL;
        if (ready) {
            pthread_mutex_unlock(&s->mu);
            for (struct held *h = ready, *nx; h; h = nx) {
                nx = h->next;   /* h may be freed once resumed */
                MHD_resume_connection(h->conn);
            }
            pthread_mutex_lock(&s->mu);
            continue;
        }
        if (s->stopping)
            break;
        if (next == INT64_MAX) {
            pthread_cond_wait(&s->cv, &s->mu);
        } else {
            struct timespec ts = { next / 1000000000, next % 1000000000 };
            pthread_cond_timedwait(&s->cv, &s->mu, &ts);
        }
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* Queues a connection the handler has just suspended (MHD thread). */
static void hold(bsrv_server_t *s, struct held *h, int queue)
{
    pthread_mutex_lock(&s->mu);
    if (s->stopping) {
        pthread_mutex_unlock(&s->mu);
        MHD_resume_connection(h->conn);
        return;
    }
    h->next = NULL;
    if (s->q[queue].tail)
        s->q[queue].tail->next = h;
    else
        s->q[queue].head = h;
    s->q[queue].tail = h;
    bool first = s->q[queue].head == h;
    pthread_mutex_unlock(&s->mu);
    /* Only a new head can make the timer's wait shorter. */
    if (first)
        pthread_cond_signal(&s->cv);
}

/* ---- requests ----------------------------------------------------------- */

struct args {
    struct MHD_Connection *conn;
};

struct last_value {
    const char *name, *value;
};

static enum MHD_Result keep_last(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *value)
{
    struct last_value *lv = cls;
    (void)kind;
    if (value && strcmp(key, lv->name) == 0)
        lv->value = value;
    return MHD_YES;
}

/* A parameter given twice takes its last value, as the real service's PHP
 * (and before it Rails' Rack) reads `per_page=5&per_page=7`: 7.
 * MHD_lookup_connection_value gives the first, so such a request once got
 * 5 here.  A key without '=' stays absent, as before. */
static const char *get_arg(void *cls, const char *name)
{
    struct args *a = cls;
    struct last_value lv = { name, NULL };
    MHD_get_connection_values(a->conn, MHD_GET_ARGUMENT_KIND, keep_last, &lv);
    return lv.value;
}

static struct MHD_Response *make_response(const bsrv_reply_t *r, size_t len)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        len, r->body, r->persistent ? MHD_RESPMEM_PERSISTENT : MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        if (!r->persistent)
            free(r->body);
        return NULL;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json; charset=utf-8");
    return resp;
}

/* Rate limit as Laravel's throttle does it: a fixed window opened by the
 * first request; refused requests do not count.  Returns false (and sets
 * *retry_after) when the request is over the limit. */
static bool rate_ok(bsrv_server_t *s, unsigned *remaining, unsigned *retry_after)
{
    int64_t now = now_ns(), window = (int64_t)s->cfg.rate_window_s * 1000000000;
    if (!s->window_open || now - s->window_start >= window) {
        s->window_open = true;
        s->window_start = now;
        s->window_count = 0;
    }
    if (s->window_count >= s->cfg.rate_limit) {
        int64_t left = s->window_start + window - now;
        *retry_after = (unsigned)((left + 999999999) / 1000000000);
        if (*retry_after < 1)
            *retry_after = 1;
        *remaining = 0;
        return false;
    }
    s->window_count++;
    *remaining = s->cfg.rate_limit - s->window_count;
    return true;
}

/* The fault for request number n: a pure function of (seed, n). */
static enum action draw_fault(bsrv_server_t *s, unsigned long long n, bool *fail, bool *malformed)
{
    const bsrv_config_t *c = &s->cfg;
    double u = (double)(mix(c->seed ^ mix(n)) >> 11) * 0x1.0p-53;
    *fail = *malformed = false;
    if (n <= c->fail_first) {
        *fail = true;
        return ANSWER;
    }
    if (u < c->drop_rate)
        return DROP;
    u -= c->drop_rate;
    if (u < c->fail_rate) {
        *fail = true;
        return ANSWER;
    }
    u -= c->fail_rate;
    if (u < c->malformed_rate) {
        *malformed = true;
        return ANSWER;
    }
    u -= c->malformed_rate;
    return u < c->stall_rate ? STALL : ANSWER;
}

static enum MHD_Result deliver(struct MHD_Connection *conn, unsigned status,
                               struct MHD_Response *resp)
{
    enum MHD_Result ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* An HTTP method is a token (RFC 9110 5.6.2); libmicrohttpd takes any run
 * of bytes before the first space. */
static bool is_token(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!(((unsigned char)*s > 0x20 && (unsigned char)*s < 0x7F) &&
              !strchr("\"(),/:;<=>?@[\\]{}", *s)))
            return false;
    return true;
}

/* Marks a request whose headers have been seen and that is not held. */
static struct held headers_seen;

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **req_cls)
{
    bsrv_server_t *s = cls;
    struct held *h = *req_cls;
    (void)version;
    (void)upload_data;

    /* The first call only announces the headers.  Answering there would make
     * libmicrohttpd close the connection (it cannot know the request is
     * complete), so wait for the call that ends the request, discarding any
     * body. */
    if (!h) {
        *req_cls = &headers_seen;
        return MHD_YES;
    }
    if (*upload_data_size) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (h != &headers_seen) {
        /* Resumed: answer with the held reply, or close. */
        if (h->act != ANSWER || !h->resp)
            return h->act == ANSWER ? MHD_YES : MHD_NO;
        struct MHD_Response *resp = h->resp;
        h->resp = NULL;
        return deliver(conn, h->status, resp);
    }

    unsigned long long n = ++s->nreq;
    s->stats.requests++;
    bsrv_reply_t r;
    enum action act = ANSWER;
    unsigned remaining = 0, retry_after = 0;
    bool limited = false, fail = false, malformed = false;

    bool bad_method = !is_token(method);
    if (bad_method) {
        bsrv_reply_message(&r, 400, "Malformed request line");
    } else if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
        bsrv_reply_message(&r, 405, "The method is not supported for this route. Supported methods: GET, HEAD.");
    } else if (s->cfg.rate_limit && !rate_ok(s, &remaining, &retry_after)) {
        limited = true;
        s->stats.limited++;
        bsrv_reply_message(&r, 429, "Too Many Attempts.");
    } else if ((act = draw_fault(s, n, &fail, &malformed)) != ANSWER) {
        if (act == DROP)
            s->stats.dropped++;
        else
            s->stats.stalled++;
        r = (bsrv_reply_t){ 0, NULL, 0, true };
    } else if (fail) {
        s->stats.failed++;
        bsrv_reply_message(&r, 500, "Server Error");
    } else {
        struct args a = { conn };
        bsrv_route_until(s->ds, url, get_arg, &a, &s->stop, &r);
        if (malformed)
            s->stats.malformed++;
    }

    struct MHD_Response *resp = NULL;
    if (act == ANSWER) {
        /* Malformed: the first half of the real body, which never parses. */
        resp = make_response(&r, malformed ? r.len / 2 : r.len);
        if (!resp)
            return MHD_NO;
        if (r.status == 405)
            MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
        if (bad_method)
            MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
        if (s->cfg.rate_limit && r.status != 405) {
            char buf[32];
            snprintf(buf, sizeof buf, "%u", s->cfg.rate_limit);
            MHD_add_response_header(resp, "X-RateLimit-Limit", buf);
            snprintf(buf, sizeof buf, "%u", remaining);
            MHD_add_response_header(resp, "X-RateLimit-Remaining", buf);
            if (limited) {
                snprintf(buf, sizeof buf, "%u", retry_after);
                MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, buf);
            }
        }
    }

    unsigned delay = act == STALL ? s->cfg.stall_ms : s->cfg.latency_ms;
    if (delay == 0) {
        if (act != ANSWER)
            return MHD_NO;
        return deliver(conn, r.status, resp);
    }
    if (!(h = malloc(sizeof *h))) {
        if (resp)
            MHD_destroy_response(resp);
        return MHD_NO;
    }
    *h = (struct held){ NULL, conn, now_ns() + (int64_t)delay * 1000000, act, r.status, resp };
    *req_cls = h;
    MHD_suspend_connection(conn);
    hold(s, h, act == STALL ? Q_STALL : Q_LATENCY);
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct held *h = *req_cls;
    (void)cls;
    (void)conn;
    (void)toe;
    if (h && h != &headers_seen) {
        if (h->resp)
            MHD_destroy_response(h->resp);
        free(h);
        *req_cls = NULL;
    }
}

/* ---- lifetime ------------------------------------------------------------ */

int bsrv_server_start(bsrv_server_t **out, const bsrv_config_t *cfg, const bsrv_dataset_t *ds,
                      char *err, size_t errlen)
{
    bsrv_server_t *s = calloc(1, sizeof *s);
    pthread_condattr_t ca;
    struct rlimit rl;

    if (!s) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    s->ds = ds;
    atomic_init(&s->stop, false);
    s->cfg = *cfg;
    if (s->cfg.rate_window_s == 0)
        s->cfg.rate_window_s = 60;
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&s->timer, NULL, timer_main, s) != 0) {
        snprintf(err, errlen, "cannot start the timer thread");
        goto fail_sync;
    }

    /* Let connections use every descriptor but a few for the process. */
    unsigned limit = 1024;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        limit = rl.rlim_cur > 64 ? (unsigned)rl.rlim_cur - 32 : 16;
    /* The front door (server-front.c) accepts and vets each connection's
     * first request line, then adds it here; libmicrohttpd has no listening
     * socket of its own.  The idle timeout ends a connection that stops
     * talking mid-request or between keep-alive requests; the memory limit
     * bounds the headers of each. */
    s->d = MHD_start_daemon(
        MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_NO_LISTEN_SOCKET |
            MHD_USE_ITC | (cfg->verbose ? MHD_USE_ERROR_LOG : 0),
        0, NULL, NULL, on_request, s,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_CONNECTION_LIMIT, limit,
        MHD_OPTION_CONNECTION_TIMEOUT, s->cfg.idle_timeout_s ? s->cfg.idle_timeout_s : 30u,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)16384,
        MHD_OPTION_END);
    if (!s->d) {
        snprintf(err, errlen, "cannot start libmicrohttpd");
        goto fail_timer;
    }
    if (bsrv_front_start(&s->front, cfg->port, s->d,
                         s->cfg.header_timeout_ms ? s->cfg.header_timeout_ms : 10000, limit, err,
                         errlen) != 0) {
        MHD_stop_daemon(s->d);
        goto fail_timer;
    }
    s->port = bsrv_front_port(s->front);
    *out = s;
    return 0;

fail_timer:
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_mutex_unlock(&s->mu);
    pthread_cond_signal(&s->cv);
    pthread_join(s->timer, NULL);
fail_sync:
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
    return -1;
}

unsigned bsrv_server_port(const bsrv_server_t *s)
{
    return s->port;
}

void bsrv_server_stop(bsrv_server_t *s, bsrv_stats_t *stats)
{
    /* A request being computed ends at its next row with a 503, so that
     * MHD_stop_daemon, which joins the MHD thread, never waits for it. */
    atomic_store(&s->stop, true);
    bsrv_front_stop(s->front);
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_mutex_unlock(&s->mu);
    pthread_cond_signal(&s->cv);
    pthread_join(s->timer, NULL);
    MHD_stop_daemon(s->d);
    if (stats)
        *stats = s->stats;
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
