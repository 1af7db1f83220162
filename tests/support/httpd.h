/* A tiny fault-injecting HTTP server for the HTTP client's tests, on
 * libmicrohttpd, bound to 127.0.0.1 on a free port, one thread per
 * connection.  Routes (query arguments in brackets):
 *
 *   /ok                         200 "ok"
 *   /status?code=N              status N, body "status N"
 *   /retry-after?s=S[&code=C]   429 (or C) with "Retry-After: S"
 *   /retry-after?raw=TEXT[&code=C] 429 (or C) with "Retry-After: TEXT" verbatim
 *   /json                       200 {"ok": true, "n": 42}
 *   /badjson                    200 with malformed JSON (error at line 3, column 1)
 *   /stall?ms=N                 sleeps N ms, then 200 "stalled"
 *   /drop                       closes the connection without a response
 *   /echo                       200 JSON {"method", "path", "query", "headers", "body"}
 *   /slow?chunks=N&ms=M         N chunks of "chunk\n", M ms apart
 *   /flaky?key=K&fail=N[&code=C][&after=S]
 *                               the first N hits of key K answer C (default
 *                               503; 0 drops the connection), with
 *                               "Retry-After: S" (verbatim) if given; later
 *                               ones 200
 *   /big?n=BYTES                a body of n bytes of 'x'
 *   /redirect                   302 to /ok
 *   anything else               404
 */
#ifndef TEST_SUPPORT_HTTPD_H
#define TEST_SUPPORT_HTTPD_H

typedef struct test_httpd test_httpd_t;

/* Starts the server; NULL on failure. */
test_httpd_t *test_httpd_start(void);
void test_httpd_stop(test_httpd_t *h);
unsigned short test_httpd_port(const test_httpd_t *h);
/* "http://127.0.0.1:PORT" + path, in a buffer of the server's (each call
 * overwrites the last one's result: copy it if you need two at once). */
const char *test_httpd_url(test_httpd_t *h, const char *path);
long test_httpd_requests(const test_httpd_t *h);    /* requests answered or dropped */
long test_httpd_connections(const test_httpd_t *h); /* connections accepted */
long test_httpd_max_open(const test_httpd_t *h);    /* most connections open at once */
long test_httpd_max_busy(const test_httpd_t *h);    /* most requests in a handler at once */

#endif
