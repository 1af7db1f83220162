/* Clients on several threads at once, each on its own loop: the way a
 * program spreads a burst over more than one core (docs/http.md, "Scaling a
 * client over cores").  Nothing in lib/http may assume one client a process:
 * the threads make their first client at the same moment (curl's global
 * init), run their requests side by side over plain HTTP and over TLS with
 * one CA file (the process-wide parsed CA store), and blocking clients on
 * their private loops do the same.  Each answer must reach its own request,
 * on the thread of its client's loop; the file is built for
 * SANITIZE=thread, which checks the rest.  The TLS test is skipped when
 * nginx or openssl is missing. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <async.h>
#include <async/http.h>
#include "http/ca_store.h"
#include "support/alloc.h"
#include "support/httpd.h"
#include "support/nginx.h"
#include "support/port.h"

enum { THREADS = 2, PER_THREAD = 40 };

/* One thread's client and what it saw; filled by the thread, checked by the
 * test's thread after the join (Criterion's asserts belong to that one). */
typedef struct worker {
    pthread_t id, self; /* self: as the thread itself sees it */
    int index;
    const char *base;    /* URL the requests go to, before the query */
    const async_http_opts_t *opts;
    bool blocking;       /* a NULL-loop client and async_http_get, else send */
    pthread_barrier_t *together;
    int answered, good;  /* callbacks run; answers right for their request */
    int wrong_thread;    /* callbacks run on a thread not the loop's */
    char error[320];     /* the first thing that went wrong */
} worker_t;

/* A request's identity, for the answer to be matched with. */
typedef struct ticket {
    worker_t *w;
    int i;
} ticket_t;

static void note(worker_t *w, const char *fmt, const char *what)
{
    if (!w->error[0]) snprintf(w->error, sizeof w->error, fmt, what);
}

/* Whether r is the test server's /echo answer to thread w's request i
 * (query t=w->index, i=i), or for nginx the file's content. */
static bool right_answer(worker_t *w, const async_http_response_t *r, int i)
{
    if (r->error || r->status != 200) {
        note(w, "a request failed: %s", r->errmsg[0] ? r->errmsg : "no status 200");
        return false;
    }
    if (strstr(w->base, "https://")) return strcmp(r->body, "hello\n") == 0;
    json_error_t e;
    json_t *j = json_loads(r->body, 0, &e);
    json_t *q = json_object_get(j, "query");
    const char *t = json_string_value(json_object_get(q, "t"));
    const char *n = json_string_value(json_object_get(q, "i"));
    bool ok = t && n && atoi(t) == w->index && atoi(n) == i;
    if (!ok) note(w, "an answer for another request: %s", r->body);
    json_decref(j);
    return ok;
}

static void on_answer(async_http_response_t *r, void *arg)
{
    ticket_t *k = arg;
    worker_t *w = k->w;
    w->answered++;
    /* The loop was made on this worker's thread and runs only there. */
    if (!pthread_equal(pthread_self(), w->self)) w->wrong_thread++;
    if (right_answer(w, r, k->i)) w->good++;
    async_http_response_free(r);
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    w->self = pthread_self();
    async_loop_t *loop = NULL;
    async_http_t *http = NULL;
    ticket_t tickets[PER_THREAD];
    char idx[16], num[PER_THREAD][16];
    snprintf(idx, sizeof idx, "%d", w->index);
    /* Both threads make their first client at once: curl's global init and
     * the client's process-wide set-up race here if they can. */
    pthread_barrier_wait(w->together);
    int rc = w->blocking ? 0 : async_loop_new(&loop);
    if (rc == 0) rc = async_http_new(&http, loop, w->opts);
    pthread_barrier_wait(w->together);
    if (rc != 0) {
        note(w, "no client: %s", async_strerror(rc));
        goto out;
    }
    for (int i = 0; i < PER_THREAD; i++) {
        snprintf(num[i], sizeof num[i], "%d", i);
        const char *const query[] = {"t", idx, "i", num[i], NULL};
        async_http_request_t req = {.url = w->base, .query = strstr(w->base, "https://") ? NULL : query};
        tickets[i] = (ticket_t){w, i};
        if (w->blocking) {
            async_http_response_t *r = NULL;
            async_http_fetch(&r, http, &req);
            w->answered++;
            if (r && right_answer(w, r, i)) w->good++;
            else if (!r) note(w, "%s", "a blocking fetch gave no response");
            async_http_response_free(r);
        } else if ((rc = async_http_send(http, &req, on_answer, &tickets[i])) != 0) {
            note(w, "send: %s", async_strerror(rc));
        }
    }
    if (!w->blocking && (rc = async_loop_run(loop, ASYNC_RUN_DEFAULT)) != 0)
        note(w, "loop run: %s", async_strerror(rc));
out:
    if (http && (rc = async_http_destroy(http)) != 0) note(w, "destroy: %s", async_strerror(rc));
    if (loop && (rc = async_loop_destroy(loop)) != 0) note(w, "loop destroy: %s", async_strerror(rc));
    return NULL;
}

/* THREADS clients at once, each on a thread of its own, PER_THREAD requests
 * each; every one must come back right, on its own thread. */
static void run_threads(const char *base, const async_http_opts_t *opts, bool blocking)
{
    worker_t w[THREADS];
    pthread_barrier_t together;
    cr_assert_eq(pthread_barrier_init(&together, NULL, THREADS), 0);
    for (int t = 0; t < THREADS; t++) {
        w[t] = (worker_t){.index = t, .base = base, .opts = opts, .blocking = blocking, .together = &together};
        cr_assert_eq(pthread_create(&w[t].id, NULL, worker_main, &w[t]), 0);
    }
    for (int t = 0; t < THREADS; t++) pthread_join(w[t].id, NULL);
    pthread_barrier_destroy(&together);
    for (int t = 0; t < THREADS; t++) {
        cr_expect_eq(w[t].error[0], 0, "thread %d: %s", t, w[t].error);
        cr_expect_eq(w[t].answered, PER_THREAD, "thread %d: %d answers", t, w[t].answered);
        cr_expect_eq(w[t].good, PER_THREAD, "thread %d: %d right answers", t, w[t].good);
        cr_expect_eq(w[t].wrong_thread, 0, "thread %d: %d callbacks on another thread", t,
                     w[t].wrong_thread);
    }
    cr_assert_eq(test_alloc_live(), 0, "leaked %ld allocations", test_alloc_live());
}

static test_httpd_t *srv;

static void plain_setup(void)
{
    test_alloc_install();
    srv = test_httpd_start();
    cr_assert(srv, "test server did not start");
}

static void plain_teardown(void)
{
    test_httpd_stop(srv);
    test_alloc_uninstall();
}

TestSuite(http_threads, .init = plain_setup, .fini = plain_teardown, .timeout = 30);

Test(http_threads, two_clients_on_two_loops_at_once)
{
    char base[128];
    snprintf(base, sizeof base, "%s", test_httpd_url(srv, "/echo"));
    run_threads(base, NULL, false);
    /* Each request once at the server: none lost, none sent twice. */
    cr_assert_eq(test_httpd_requests(srv), THREADS * PER_THREAD);
}

Test(http_threads, two_blocking_clients_at_once)
{
    char base[128];
    snprintf(base, sizeof base, "%s", test_httpd_url(srv, "/echo"));
    run_threads(base, NULL, true);
    cr_assert_eq(test_httpd_requests(srv), THREADS * PER_THREAD);
}

/* --- over TLS: one CA file, parsed once for both threads' connections --- */

static test_nginx_t ngx;
static char tls_url[128];

static void tls_setup(void)
{
    test_alloc_install();
    test_nginx_prepare(&ngx, "test-http-threads");
    test_nginx_serve_file(&ngx, 512, "small.txt", "hello\n", tls_url, sizeof tls_url);
}

static void tls_teardown(void)
{
    test_nginx_stop(&ngx);
    test_alloc_uninstall();
}

TestSuite(http_threads_tls, .init = tls_setup, .fini = tls_teardown, .timeout = 30);

/* HTTP/1.1, so that each thread opens a connection a request in flight and
 * the two threads' handshakes ask the CA store for it side by side. */
Test(http_threads_tls, two_clients_share_one_parsed_ca_file)
{
    async_http_opts_t o = {.ca_file = ngx.cert, .no_http2 = true};
    unsigned long parses = async__http_ca_parses();
    run_threads(tls_url, &o, false);
    if (async__http_ca_shared(ngx.cert))
        cr_assert_eq(async__http_ca_parses() - parses, 1, "the CA file was parsed %lu times",
                     async__http_ca_parses() - parses);
}
