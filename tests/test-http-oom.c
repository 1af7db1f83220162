/* The HTTP client at every failed allocation while four transfers run on
 * one client, by name: every transfer ends exactly once, with a response or
 * an error that says why (ASYNC_ENOMEM among them), nothing is leaked, and
 * the client goes on serving requests afterwards.  curl resolves
 * "localhost" itself; the machine's own name (when the hosts file maps it
 * to 127.0.0.1) goes to curl's resolver thread, whose wake-up socket reaches
 * the client's socket callback without a context: when that context cannot
 * be allocated, curl gives up on the whole multi handle and the client
 * retires the shard (multi.c's shard_retire, run by no other test). */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <async.h>
#include <async/http.h>
#include "support/alloc.h"
#include "support/answer.h"
#include "support/httpd.h"

static test_httpd_t *srv;

static void setup(void)
{
    srv = test_httpd_start();
    cr_assert_not_null(srv);
    test_alloc_install();
}

static void teardown(void)
{
    test_alloc_uninstall();
    test_httpd_stop(srv);
}

TestSuite(http_oom, .init = setup, .fini = teardown);

enum { NREQ = 4 };

static const char *host = "localhost";

/* "http://HOST:PORT/path" */
static void url_of(char *buf, size_t cap, const char *path)
{
    snprintf(buf, cap, "http://%s:%u%s", host, (unsigned)test_httpd_port(srv), path);
}

/* Runs NREQ requests on one client with allocation fail_at failing once
 * the loop runs (-1: none).  Returns how many ended with an error; each
 * ended exactly once. */
static int run_round(async_loop_t *loop, long fail_at, long *enomem)
{
    async_http_t *http;
    cr_assert_eq(async_http_new(&http, loop, NULL), 0);
    test_answer_t a[NREQ];
    memset(a, 0, sizeof a);
    char url[NREQ][96];
    for (int i = 0; i < NREQ; i++) {
        url_of(url[i], sizeof url[i], i % 2 ? "/json" : "/ok");
        async_http_request_t req = {.url = url[i], .max_retries = -1};
        cr_assert_eq(async_http_send(http, &req, test_answer_catch, &a[i]), 0);
    }
    test_alloc_fail_after(fail_at);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    test_alloc_fail_after(-1);
    int failed = 0;
    for (int i = 0; i < NREQ; i++) {
        cr_assert_eq(a[i].calls, 1, "allocation %ld: request %d ended %d times", fail_at, i,
                     a[i].calls);
        const async_http_response_t *r = a[i].resp;
        cr_assert_not_null(r);
        if (r->error == 0) {
            cr_assert_eq(r->status, 200, "allocation %ld: request %d", fail_at, i);
            cr_assert_str_eq(r->body, i % 2 ? "{\"ok\": true, \"n\": 42}" : "ok");
        } else {
            cr_assert(r->errmsg[0], "allocation %ld: request %d: a failure says why", fail_at, i);
            *enomem += r->error == ASYNC_ENOMEM;
            failed++;
        }
        async_http_response_free(a[i].resp);
    }
    cr_assert_eq(async_http_destroy(http), 0);
    return failed;
}

static void sweep(void)
{
    async_loop_t *loop;
    cr_assert_eq(async_loop_new(&loop), 0);
    long base = test_alloc_live(), t0 = test_alloc_total(), enomem = 0;
    cr_assert_eq(run_round(loop, -1, &enomem), 0, "without failures every request works");
    long total = test_alloc_total() - t0;
    cr_assert_gt(total, 0);
    long failures = 0;
    for (long n = 0; n < total + 8; n++) {
        failures += run_round(loop, n, &enomem) > 0;
        cr_assert_eq(test_alloc_live(), base, "allocation %ld failing: %ld blocks leaked", n,
                     test_alloc_live() - base);
        /* The client goes on: a round without failures works. */
        if (n % 8 == 0) cr_assert_eq(run_round(loop, -1, &enomem), 0, "after allocation %ld", n);
    }
    cr_assert_gt(enomem, 0, "some failure was ASYNC_ENOMEM");
    cr_log_info("%ld allocations a round; %ld rounds with failed requests, %ld ASYNC_ENOMEM",
                total, failures, enomem);
    cr_assert_eq(async_loop_destroy(loop), 0);
    cr_assert_eq(test_alloc_live(), 0);
}

Test(http_oom, transfers_by_name_at_every_failed_allocation, .timeout = 180)
{
    sweep();
}

/* The machine's own name, when the hosts file maps it to 127.0.0.1: curl
 * resolves it on its resolver thread, whose wake-up socket comes to the
 * client's socket callback without a context of the client's. */
Test(http_oom, transfers_by_resolved_name_at_every_failed_allocation, .timeout = 180)
{
    static char name[256];
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    bool loopback = gethostname(name, sizeof name) == 0 && strcmp(name, "localhost") &&
                    getaddrinfo(name, NULL, &hints, &ai) == 0 &&
                    ((struct sockaddr_in *)ai->ai_addr)->sin_addr.s_addr == htonl(INADDR_LOOPBACK);
    if (ai) freeaddrinfo(ai);
    if (!loopback) cr_skip("this machine's name does not resolve to 127.0.0.1 in its hosts file");
    host = name;
    sweep();
}
