/* See httpd.h.  One thread per connection, so a stalled or slow route holds
 * only its own connection; every wait polls a stop flag so that
 * test_httpd_stop never hangs on a sleeping handler.  Counters are atomic:
 * handlers run on many threads. */
#include <microhttpd.h>
#include <jansson.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "httpd.h"

#define MAX_KEYS 64

struct test_httpd {
    struct MHD_Daemon *d;
    unsigned short port;
    atomic_bool stopping;
    atomic_long requests, connections, open, max_open, busy, max_busy;
    pthread_mutex_t lock; /* guards the flaky counters */
    struct { char key[64]; long hits; } flaky[MAX_KEYS];
    char url[512];
};

/* Per-request state: the request body read so far. */
typedef struct req {
    char *body;
    size_t len;
} req_t;

static void raise_max(atomic_long *max, long v)
{
    long m = atomic_load(max);
    while (v > m && !atomic_compare_exchange_weak(max, &m, v)) {}
}

static void nap(test_httpd_t *h, long ms)
{
    /* Sleeps in 5 ms steps so that stop does not wait for a long stall. */
    while (ms > 0 && !atomic_load(&h->stopping)) {
        long step = ms < 5 ? ms : 5;
        struct timespec ts = {0, step * 1000000L};
        nanosleep(&ts, NULL);
        ms -= step;
    }
}

static long arg_long(struct MHD_Connection *c, const char *name, long dflt)
{
    const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, name);
    return v ? strtol(v, NULL, 10) : dflt;
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *type,
                             const char *body, size_t len)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    if (type) MHD_add_response_header(r, "Content-Type", type);
    enum MHD_Result ok = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result text(struct MHD_Connection *c, unsigned status, const char *s)
{
    return reply(c, status, "text/plain", s, strlen(s));
}

static enum MHD_Result add_pair(void *cls, enum MHD_ValueKind kind, const char *k, const char *v)
{
    (void)kind;
    json_object_set_new(cls, k, json_string(v ? v : ""));
    return MHD_YES;
}

static enum MHD_Result echo(struct MHD_Connection *c, const char *url, const char *method, req_t *q)
{
    json_t *query = json_object(), *headers = json_object();
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, add_pair, query);
    MHD_get_connection_values(c, MHD_HEADER_KIND, add_pair, headers);
    json_t *o = json_pack("{s:s, s:s, s:o, s:o, s:s#}", "method", method, "path", url, "query",
                          query, "headers", headers, "body", q->body ? q->body : "", q->len);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!s) return MHD_NO;
    enum MHD_Result ok = reply(c, 200, "application/json", s, strlen(s));
    free(s);
    return ok;
}

typedef struct slow {
    test_httpd_t *h;
    long chunks, ms, sent;
} slow_t;

static ssize_t slow_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    slow_t *s = cls;
    if (s->sent >= s->chunks) return MHD_CONTENT_READER_END_OF_STREAM;
    if (atomic_load(&s->h->stopping)) return MHD_CONTENT_READER_END_WITH_ERROR;
    nap(s->h, s->ms);
    if (max < 6) return 0;
    memcpy(buf, "chunk\n", 6);
    s->sent++;
    return 6;
}

static enum MHD_Result flaky(test_httpd_t *h, struct MHD_Connection *c)
{
    const char *key = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "key");
    long fail = arg_long(c, "fail", 1), code = arg_long(c, "code", 503);
    if (!key) key = "";
    long hits = 0;
    pthread_mutex_lock(&h->lock);
    for (int i = 0; i < MAX_KEYS; i++) {
        if (!h->flaky[i].key[0]) snprintf(h->flaky[i].key, sizeof h->flaky[i].key, "%s", key);
        if (strcmp(h->flaky[i].key, key) == 0) {
            hits = ++h->flaky[i].hits;
            break;
        }
    }
    pthread_mutex_unlock(&h->lock);
    if (hits > fail) return text(c, 200, "recovered");
    if (code == 0) return MHD_NO;
    char body[64], after[64];
    snprintf(body, sizeof body, "failure %ld of %ld", hits, fail);
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), body,
                                                             MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    /* Verbatim, so that a test can send a date or a number too big for a
     * long. */
    const char *a = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "after");
    if (a) {
        snprintf(after, sizeof after, "%s", a);
        MHD_add_response_header(r, "Retry-After", after);
    }
    enum MHD_Result ok = MHD_queue_response(c, (unsigned)code, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result route(test_httpd_t *h, struct MHD_Connection *c, const char *url,
                             const char *method, req_t *q)
{
    char buf[128];
    if (strcmp(url, "/ok") == 0) return text(c, 200, "ok");
    if (strcmp(url, "/status") == 0) {
        long code = arg_long(c, "code", 500);
        snprintf(buf, sizeof buf, "status %ld", code);
        return text(c, (unsigned)code, buf);
    }
    if (strcmp(url, "/retry-after") == 0) {
        struct MHD_Response *r = MHD_create_response_from_buffer(
            strlen("slow down"), (void *)"slow down", MHD_RESPMEM_PERSISTENT);
        if (!r) return MHD_NO;
        const char *raw = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "raw");
        if (raw) snprintf(buf, sizeof buf, "%s", raw);
        else snprintf(buf, sizeof buf, "%ld", arg_long(c, "s", 1));
        MHD_add_response_header(r, "Retry-After", buf);
        enum MHD_Result ok = MHD_queue_response(c, (unsigned)arg_long(c, "code", 429), r);
        MHD_destroy_response(r);
        return ok;
    }
    if (strcmp(url, "/json") == 0) {
        const char *s = "{\"ok\": true, \"n\": 42}";
        return reply(c, 200, "application/json", s, strlen(s));
    }
    if (strcmp(url, "/badjson") == 0) {
        const char *s = "{\n  \"a\": [1, 2,\n}\n";
        return reply(c, 200, "application/json", s, strlen(s));
    }
    if (strcmp(url, "/stall") == 0) {
        nap(h, arg_long(c, "ms", 1000));
        return text(c, 200, "stalled");
    }
    if (strcmp(url, "/drop") == 0) return MHD_NO;
    if (strcmp(url, "/echo") == 0) return echo(c, url, method, q);
    if (strcmp(url, "/slow") == 0) {
        slow_t *s = calloc(1, sizeof *s);
        if (!s) return MHD_NO;
        s->h = h;
        s->chunks = arg_long(c, "chunks", 5);
        s->ms = arg_long(c, "ms", 50);
        struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64,
                                                                   slow_read, s, free);
        if (!r) {
            free(s);
            return MHD_NO;
        }
        enum MHD_Result ok = MHD_queue_response(c, 200, r);
        MHD_destroy_response(r);
        return ok;
    }
    if (strcmp(url, "/flaky") == 0) return flaky(h, c);
    if (strcmp(url, "/big") == 0) {
        long n = arg_long(c, "n", 1000);
        if (n < 0 || n > (64L << 20)) n = 0;
        char *b = malloc((size_t)n + 1);
        if (!b) return MHD_NO;
        memset(b, 'x', (size_t)n);
        struct MHD_Response *r =
            MHD_create_response_from_buffer((size_t)n, b, MHD_RESPMEM_MUST_FREE);
        if (!r) {
            free(b);
            return MHD_NO;
        }
        enum MHD_Result ok = MHD_queue_response(c, 200, r);
        MHD_destroy_response(r);
        return ok;
    }
    if (strcmp(url, "/redirect") == 0) {
        struct MHD_Response *r =
            MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        if (!r) return MHD_NO;
        MHD_add_response_header(r, "Location", "/ok");
        enum MHD_Result ok = MHD_queue_response(c, 302, r);
        MHD_destroy_response(r);
        return ok;
    }
    return text(c, 404, "not found");
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload, size_t *upload_size, void **state)
{
    (void)version;
    test_httpd_t *h = cls;
    req_t *q = *state;
    if (!q) {
        q = calloc(1, sizeof *q);
        if (!q) return MHD_NO;
        *state = q;
        return MHD_YES;
    }
    if (*upload_size) {
        char *b = realloc(q->body, q->len + *upload_size + 1);
        if (!b) return MHD_NO;
        memcpy(b + q->len, upload, *upload_size);
        q->body = b;
        q->len += *upload_size;
        q->body[q->len] = 0;
        *upload_size = 0;
        return MHD_YES;
    }
    atomic_fetch_add(&h->requests, 1);
    raise_max(&h->max_busy, atomic_fetch_add(&h->busy, 1) + 1);
    enum MHD_Result ok = route(h, c, url, method, q);
    atomic_fetch_sub(&h->busy, 1);
    return ok;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **state,
                         enum MHD_RequestTerminationCode code)
{
    (void)cls, (void)c, (void)code;
    req_t *q = *state;
    if (q) {
        free(q->body);
        free(q);
    }
    *state = NULL;
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    (void)c, (void)socket_context;
    test_httpd_t *h = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        atomic_fetch_add(&h->connections, 1);
        raise_max(&h->max_open, atomic_fetch_add(&h->open, 1) + 1);
    } else {
        atomic_fetch_sub(&h->open, 1);
    }
}

test_httpd_t *test_httpd_start(void)
{
    test_httpd_t *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    pthread_mutex_init(&h->lock, NULL);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = 0;
    h->d = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL, 0, NULL,
        NULL, on_request, h, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_NOTIFY_CONNECTION,
        on_connection, h, MHD_OPTION_CONNECTION_LIMIT, (unsigned)4000,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30, MHD_OPTION_END);
    if (!h->d) {
        free(h);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info ? info->port : 0;
    return h;
}

void test_httpd_stop(test_httpd_t *h)
{
    if (!h) return;
    atomic_store(&h->stopping, true);
    MHD_stop_daemon(h->d);
    pthread_mutex_destroy(&h->lock);
    free(h);
}

unsigned short test_httpd_port(const test_httpd_t *h) { return h->port; }

const char *test_httpd_url(test_httpd_t *h, const char *path)
{
    snprintf(h->url, sizeof h->url, "http://127.0.0.1:%u%s", h->port, path ? path : "");
    return h->url;
}

long test_httpd_requests(const test_httpd_t *h) { return atomic_load(&h->requests); }
long test_httpd_connections(const test_httpd_t *h) { return atomic_load(&h->connections); }
long test_httpd_max_open(const test_httpd_t *h) { return atomic_load(&h->max_open); }
long test_httpd_max_busy(const test_httpd_t *h) { return atomic_load(&h->max_busy); }
