/* Fuzz target http-response: the HTTP client's response path, from the
 * bytes a server sends to the response object.  The bytes reach the library
 * the only way they can, through libcurl on a socket: a server thread in the
 * harness answers every connection with the input (byte 0 excepted) and
 * closes its side.  So each input runs curl's parser, the library's header
 * and body callbacks (lib/http/response.c), the response build with its
 * header split, the retry decision with Retry-After (lib/http/request.c),
 * async_http_response_header() and async_http_response_json().  Every
 * request goes through the harness server as an HTTP proxy (http_proxy), so
 * redirects to other hosts never leave the machine.
 * Byte 0 picks client options: one retry or none, a 64-byte body limit,
 * curl's content decoding.  The checks are the header's contracts. */
#include "fuzz.h"
#include "async.h"
#include "async/http.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

const char fuzz_target_name[] = "http-response";

static int listen_fd = -1;
static char url[64];

/* The answer to serve, and the server's finished connections, under mu.
 * The server only half-closes a connection (so the client reads the answer
 * to its end and may keep it); the fuzzing thread closes them once the
 * client that used them is freed. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static unsigned char *answer;
static size_t answer_len;
static int spent[256];
static size_t n_spent;

static void *serve(void *arg)
{
    (void)arg;
    for (;;) {
        int c = accept(listen_fd, NULL, NULL);
        if (c < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            fuzz_fail("accept: %s", strerror(errno));
        }
        struct timeval tv = {2, 0};
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        /* Read the request head, so that closing does not reset the
         * connection under unread bytes. */
        char req[16384];
        size_t got = 0;
        while (got < sizeof req - 1) {
            ssize_t k = recv(c, req + got, sizeof req - 1 - got, 0);
            if (k <= 0) break;
            got += (size_t)k;
            req[got] = '\0';
            if (strstr(req, "\r\n\r\n")) break;
        }
        pthread_mutex_lock(&mu);
        size_t len = answer_len;
        unsigned char *copy = malloc(len ? len : 1);
        if (copy && len) memcpy(copy, answer, len);
        pthread_mutex_unlock(&mu);
        for (size_t off = 0; copy && off < len;) {
            ssize_t k = send(c, copy + off, len - off, MSG_NOSIGNAL);
            if (k <= 0) break;
            off += (size_t)k;
        }
        free(copy);
        shutdown(c, SHUT_WR);
        pthread_mutex_lock(&mu);
        if (n_spent < sizeof spent / sizeof spent[0]) spent[n_spent++] = c;
        else close(c);
        pthread_mutex_unlock(&mu);
    }
    return NULL;
}

static void start_server(void)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sin;
    if ((listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
        bind(listen_fd, (struct sockaddr *)&sin, sizeof sin) != 0 || listen(listen_fd, 64) != 0 ||
        getsockname(listen_fd, (struct sockaddr *)&sin, &sl) != 0)
        fuzz_fail("cannot listen: %s", strerror(errno));
    char proxy[64];
    snprintf(proxy, sizeof proxy, "http://127.0.0.1:%u", ntohs(sin.sin_port));
    setenv("http_proxy", proxy, 1);
    setenv("https_proxy", proxy, 1);
    setenv("HTTPS_PROXY", proxy, 1);
    setenv("ALL_PROXY", proxy, 1);
    unsetenv("no_proxy");
    unsetenv("NO_PROXY");
    snprintf(url, sizeof url, "http://fuzz.invalid/v1/breweries");
    pthread_t t;
    if (pthread_create(&t, NULL, serve, NULL) != 0) fuzz_fail("cannot start the server thread");
    pthread_detach(t);
}

/* The seconds a Retry-After asks for, as curl reads it (delay-seconds or an
 * HTTP date); -1 if the value is neither. */
static long long retry_after_secs(const char *v)
{
    if (!v || !*v) return -1;
    long long x = 0;
    for (const char *c = v; *c; c++) {
        if (!isdigit((unsigned char)*c) || x > (INT64_MAX - 9) / 10) {
            time_t now = time(NULL), when = curl_getdate(v, &now);
            /* A second of slack: the date is read again at another time. */
            return when == -1 || when - now < 2 ? -1 : (long long)(when - now);
        }
        x = x * 10 + (*c - '0');
    }
    return x;
}

static void check(const async_http_response_t *r, int rc, bool retry)
{
    if (!r) {
        if (rc == 0) fuzz_fail("success without a response");
        return;
    }
    if (rc != r->error) fuzz_fail("returned %d but the response says %d", rc, r->error);
    if ((r->error != 0) != (r->errmsg[0] != '\0'))
        fuzz_fail("error %d with message \"%s\"", r->error, r->errmsg);
    if (r->error == 0 && (r->status < 200 || r->status >= 300))
        fuzz_fail("success with status %ld", r->status);
    if (r->error == ASYNC_EHTTP && r->status >= 200 && r->status < 300)
        fuzz_fail("EHTTP with status %ld", r->status);
    if (!r->body || r->body[r->body_len] != '\0') fuzz_fail("body missing or not terminated");
    if (!r->url || !r->http_version) fuzz_fail("url or http_version missing");
    if (r->n_headers && !r->headers) fuzz_fail("%zu headers but no array", r->n_headers);
    for (size_t i = 0; i < r->n_headers; i++) {
        const char *v = r->headers[i].value;
        size_t vl = v ? strlen(v) : 0;
        if (!r->headers[i].name || !v) fuzz_fail("header %zu without name or value", i);
        if (vl && (v[0] == ' ' || v[0] == '\t' || isspace((unsigned char)v[vl - 1])))
            fuzz_fail("header %s has blanks around \"%s\"", r->headers[i].name, v);
    }
    async_http_response_header(r, "Content-Type");
    /* Never sooner than asked: with a retry budget of one and a cap of 50 ms
     * on waiting, a 429 or 503 that asks for a second or more stands. */
    long long ra = retry_after_secs(async_http_response_header(r, "Retry-After"));
    if (retry && r->error == ASYNC_EHTTP && (r->status == 429 || r->status == 503) && ra >= 1 &&
        r->attempts != 1)
        fuzz_fail("Retry-After: %lld, yet %d attempts", ra, r->attempts);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (listen_fd < 0) start_server();
    if (size < 1) return 0;
    unsigned mode = data[0];
    pthread_mutex_lock(&mu);
    free(answer);
    answer_len = size - 1;
    answer = malloc(answer_len ? answer_len : 1);
    if (!answer) fuzz_fail("out of memory");
    memcpy(answer, data + 1, answer_len);
    pthread_mutex_unlock(&mu);

    async_http_opts_t opts = {
        .max_retries = mode & 1,
        .retry_base_ns = ASYNC_MSEC(1),
        .retry_max_ns = ASYNC_MSEC(50),
        .timeout_ns = ASYNC_SEC(5),
        .connect_timeout_ns = ASYNC_SEC(5),
        .no_http2 = true,
        .max_body = mode & 2 ? 64 : 0,
        .accept_encoding = mode & 4 ? "" : NULL,
    };
    async_http_t *http;
    int err = async_http_new(&http, NULL, &opts);
    if (err) fuzz_fail("async_http_new: %s", async_strerror(err));
    async_http_request_t req = {.url = url};
    async_http_response_t *r = NULL;
    int rc = async_http_fetch(&r, http, &req);
    if (getenv("FUZZ_VERBOSE"))
        fprintf(stderr, "rc %d status %ld attempts %d headers %zu body %zu: %s\n", rc,
                r ? r->status : 0, r ? r->attempts : 0, r ? r->n_headers : 0,
                r ? r->body_len : 0, r ? r->errmsg : "");
    check(r, rc, mode & 1);
    if (r && r->error == 0) {
        json_t *j = NULL;
        int je = async_http_response_json(&j, r);
        if (je == 0 && !j) fuzz_fail("JSON decoded to nothing");
        if (je == ASYNC_EJSON && strncmp(r->errmsg, "JSON error at line ", 19) != 0)
            fuzz_fail("JSON error message \"%s\"", r->errmsg);
        if (je != 0 && je != ASYNC_EJSON) fuzz_fail("async_http_response_json: %d", je);
        json_decref(j);
    }
    async_http_response_free(r);
    if ((err = async_http_destroy(http))) fuzz_fail("async_http_destroy: %s", async_strerror(err));

    pthread_mutex_lock(&mu);
    for (size_t i = 0; i < n_spent; i++) close(spent[i]);
    n_spent = 0;
    pthread_mutex_unlock(&mu);
    return 0;
}
