/* The HTTP client's engine (lib/http/multi.c): io watchers only mark their
 * sockets ready and an ev_prepare watcher drives them, an ev_idle keeps the
 * poll after reported answers from blocking.  These tests try the corners of
 * that design: a client that waits must block in the poll (not spin),
 * callbacks that destroy another client or add requests while sockets are
 * still on a ready list, a completion chain that must not starve the rest of
 * the loop, descriptors closed and reused among ready ones, curl's timeouts
 * firing while other transfers are busy, and a busy shard of transfers that
 * must not starve the next one. */
#include <criterion/criterion.h>
#include <ev.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <async.h>
#include <async/executor.h>
#include <async/future.h>
#include <async/http.h>
#include "support/http_fixture.h"
#include "support/answer.h"
#include "support/port.h"

TestSuite(http_multi, .init = http_fixture_setup, .fini = http_fixture_teardown,
          .timeout = 30);

/* A client whose requests are all waiting on a slow server blocks in the
 * poll: the loop turns a few times per request (connect, send, answer), not
 * thousands of times (an idle or prepare watcher left active would turn it
 * without blocking, at 100% CPU). */
#define SLOW_N 16

Test(http_multi, a_client_waiting_on_slow_answers_blocks_in_the_poll)
{
    async_http_t *http;
    cr_assert_eq(async_http_new(&http, loop, NULL), 0);
    test_answer_t s[SLOW_N] = {0};
    for (int i = 0; i < SLOW_N; i++) {
        async_http_request_t req = {.url = test_httpd_url(srv, "/stall?ms=1500")};
        cr_assert_eq(async_http_send(http, &req, test_answer_catch, &s[i]), 0);
    }
    struct ev_loop *ev = async_loop_ev(loop);
    unsigned it0 = ev_iteration(ev);
    double cpu0 = thread_cpu();
    int64_t t0 = async_now();
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    unsigned iters = ev_iteration(ev) - it0;
    cr_log_info("%d slow requests: %u loop iterations, %.3f s CPU in %.3f s", SLOW_N, iters,
                thread_cpu() - cpu0, (double)(async_now() - t0) / 1e9);
    for (int i = 0; i < SLOW_N; i++) {
        cr_assert_eq(s[i].calls, 1);
        cr_assert_eq(s[i].resp->error, 0, "%s", s[i].resp->errmsg);
        async_http_response_free(s[i].resp);
    }
    /* Each request needs a handful of turns; a spinning loop makes tens of
     * thousands in 1.5 s. */
    cr_assert_lt(iters, 40u * SLOW_N, "the loop turned %u times: it did not block", iters);
    cr_assert_eq(async_http_destroy(http), 0);
}

/* The same for a blocking fetch on a private loop (the ev_idle flush path). */
Test(http_multi, a_blocking_fetch_of_a_slow_answer_blocks_in_the_poll)
{
    async_http_t *http;
    cr_assert_eq(async_http_new(&http, NULL, NULL), 0);
    struct ev_loop *ev = async_loop_ev(async_http_loop(http));
    for (int round = 0; round < 2; round++) {
        unsigned it0 = ev_iteration(ev);
        async_http_response_t *r = NULL;
        cr_assert_eq(async_http_get_dl(&r, http, test_httpd_url(srv, "/stall?ms=700"), NULL,
                                       async_deadline_after(ASYNC_SEC(10))),
                     0);
        unsigned iters = ev_iteration(ev) - it0;
        cr_assert_str_eq(r->body, "stalled");
        async_http_response_free(r);
        cr_assert_lt(iters, 100u, "round %d: %u loop iterations for one request", round, iters);
    }
    cr_assert_eq(async_http_destroy(http), 0);
}

/* A callback of client A destroys client B, whose answers arrive in the
 * same polls as A's (B's sockets may be on its ready list and its prepare
 * watcher pending in this very iteration), and B's callbacks, run by the
 * destroy, send more requests on A while A's own prepare watcher is
 * iterating its shards.  Every request ends exactly once, nothing is
 * touched after it is freed (ASan build). */
#define PAIR_N 12

typedef struct pair {
    async_http_t *a, *b;
    test_answer_t sa[PAIR_N], sb[PAIR_N], more[PAIR_N];
    int n_more;
    int destroy_rc;
    bool destroyed;
} pair_t;

typedef struct pair_arg {
    pair_t *p;
    int i;
} pair_arg_t;

static void on_b(async_http_response_t *resp, void *arg)
{
    pair_arg_t *pa = arg;
    pair_t *p = pa->p;
    test_answer_catch(resp, &p->sb[pa->i]);
    if (p->n_more < PAIR_N) {
        async_http_request_t req = {.url = test_httpd_url(srv, "/ok")};
        cr_assert_eq(async_http_send(p->a, &req, test_answer_catch, &p->more[p->n_more]), 0);
        p->n_more++;
    }
}

static void on_a(async_http_response_t *resp, void *arg)
{
    pair_arg_t *pa = arg;
    pair_t *p = pa->p;
    test_answer_catch(resp, &p->sa[pa->i]);
    if (!p->destroyed) {
        p->destroyed = true;
        /* Its own client cannot be freed from here; another can. */
        cr_assert_eq(async_http_destroy(p->a), ASYNC_EDEADLK);
        p->destroy_rc = async_http_destroy(p->b);
    }
}

Test(http_multi, a_callback_destroys_another_client_whose_answers_are_ready)
{
    for (int round = 0; round < 6; round++) {
        pair_t p = {0};
        pair_arg_t aa[PAIR_N], ab[PAIR_N];
        cr_assert_eq(async_http_new(&p.a, loop, NULL), 0);
        cr_assert_eq(async_http_new(&p.b, loop, NULL), 0);
        for (int i = 0; i < PAIR_N; i++) {
            aa[i] = (pair_arg_t){&p, i};
            ab[i] = (pair_arg_t){&p, i};
            /* Same delay for both: the answers come back in the same polls. */
            async_http_request_t req = {.url = test_httpd_url(srv, "/stall?ms=100")};
            cr_assert_eq(async_http_send(p.a, &req, on_a, &aa[i]), 0);
            cr_assert_eq(async_http_send(p.b, &req, on_b, &ab[i]), 0);
        }
        cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
        cr_assert_eq(p.destroy_rc, 0);
        int closed = 0;
        for (int i = 0; i < PAIR_N; i++) {
            cr_assert_eq(p.sa[i].calls, 1, "round %d, A's request %d", round, i);
            cr_assert_eq(p.sa[i].resp->error, 0, "%s", p.sa[i].resp->errmsg);
            cr_assert_eq(p.sb[i].calls, 1, "round %d, B's request %d", round, i);
            closed += p.sb[i].resp->error == ASYNC_ECLOSED;
            async_http_response_free(p.sa[i].resp);
            async_http_response_free(p.sb[i].resp);
        }
        cr_assert_eq(p.n_more, PAIR_N);
        for (int i = 0; i < p.n_more; i++) {
            cr_assert_eq(p.more[i].calls, 1);
            cr_assert_eq(p.more[i].resp->error, 0, "%s", p.more[i].resp->errmsg);
            async_http_response_free(p.more[i].resp);
        }
        cr_log_info("round %d: %d of B's requests ended ECLOSED", round, closed);
        cr_assert_eq(async_http_destroy(p.a), 0);
    }
}

/* A completion that sends a request failing at once inside curl (an
 * unsupported scheme) starts a chain that never touches the network.  The
 * prepare watcher repeats while completions add transfers: the chain must
 * still let the loop poll and run its other watchers (a zero timer here)
 * long before it ends. */
#define CHAIN_N 3000

typedef struct chain {
    async_http_t *http;
    int links;
    int links_when_timer_ran;
    test_answer_t last;
} chain_t;

static void on_chain(async_http_response_t *resp, void *arg)
{
    chain_t *c = arg;
    cr_assert_eq(resp->error, ASYNC_ECURL, "%s", resp->errmsg);
    async_http_response_free(resp);
    if (++c->links < CHAIN_N) {
        async_http_request_t req = {.url = "ftp://127.0.0.1/x"};
        cr_assert_eq(async_http_send(c->http, &req, on_chain, c), 0);
    }
}

static void on_zero_timer(struct ev_loop *ev, ev_timer *w, int revents)
{
    (void)ev, (void)revents;
    chain_t *c = w->data;
    c->links_when_timer_ran = c->links;
}

Test(http_multi, a_chain_of_instant_failures_does_not_starve_the_loop)
{
    chain_t c = {0};
    cr_assert_eq(async_http_new(&c.http, loop, NULL), 0);
    async_http_request_t req = {.url = "ftp://127.0.0.1/x"};
    cr_assert_eq(async_http_send(c.http, &req, on_chain, &c), 0);
    ev_timer t;
    ev_timer_init(&t, on_zero_timer, 0., 0.);
    t.data = &c;
    c.links_when_timer_ran = -1;
    ev_timer_start(async_loop_ev(loop), &t);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(c.links, CHAIN_N);
    cr_log_info("the zero timer ran after %d of %d links", c.links_when_timer_ran, CHAIN_N);
    cr_assert_geq(c.links_when_timer_ran, 0);
    cr_assert_lt(c.links_when_timer_ran, CHAIN_N / 2,
                 "the chain ran %d links before the loop ran a due timer",
                 c.links_when_timer_ran);
    cr_assert_eq(async_http_destroy(c.http), 0);
}

/* Connections that the server drops are closed by curl while others are
 * ready, and new connections opened in the same calls take the freed
 * descriptor numbers.  A socket context left on a ready list, or a kept
 * context left in by_fd, would drive the wrong connection or touch freed
 * memory (ASan build).  Every request ends once, with its own answer. */
#define MIX_N 240

Test(http_multi, dropped_connections_and_reused_descriptors_among_ready_sockets)
{
    async_http_opts_t o;
    async_http_opts_init(&o);
    o.max_retries = 0;
    async_http_t *http;
    cr_assert_eq(async_http_new(&http, loop, &o), 0);
    static test_answer_t s[MIX_N];
    memset(s, 0, sizeof s);
    for (int i = 0; i < MIX_N; i++) {
        const char *path = i % 3 == 0 ? "/drop" : i % 3 == 1 ? "/ok" : "/stall?ms=20";
        async_http_request_t req = {.url = test_httpd_url(srv, path)};
        cr_assert_eq(async_http_send(http, &req, test_answer_catch, &s[i]), 0);
    }
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    for (int i = 0; i < MIX_N; i++) {
        cr_assert_eq(s[i].calls, 1, "request %d", i);
        if (i % 3 == 0) {
            cr_assert_neq(s[i].resp->error, 0, "request %d to /drop succeeded", i);
        } else {
            cr_assert_eq(s[i].resp->error, 0, "request %d: %s", i, s[i].resp->errmsg);
            cr_assert_str_eq(s[i].resp->body, i % 3 == 1 ? "ok" : "stalled", "request %d", i);
        }
        async_http_response_free(s[i].resp);
    }
    cr_assert_eq(async_http_destroy(http), 0);
}

/* curl's timeout of one transfer fires on time while the other transfers of
 * its shard stream data all along (their sockets ready poll after poll). */
Test(http_multi, a_timeout_fires_on_time_among_busy_transfers)
{
    async_http_t *http;
    cr_assert_eq(async_http_new(&http, loop, NULL), 0);
    test_answer_t busy[8] = {0}, late = {0};
    for (int i = 0; i < 8; i++) {
        async_http_request_t req = {.url = test_httpd_url(srv, "/slow?chunks=60&ms=20")};
        cr_assert_eq(async_http_send(http, &req, test_answer_catch, &busy[i]), 0);
    }
    async_http_request_t req = {.url = test_httpd_url(srv, "/stall?ms=5000"),
                                .timeout_ns = ASYNC_MSEC(300)};
    int64_t t0 = async_now(), took = 0;
    cr_assert_eq(async_http_send(http, &req, test_answer_catch, &late), 0);
    while (!late.calls) cr_assert_geq(async_loop_run(loop, ASYNC_RUN_ONCE), 0);
    took = async_now() - t0;
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(late.resp->error, ASYNC_ETIMEDOUT, "%s", late.resp->errmsg);
    cr_assert_geq(took, ASYNC_MSEC(295));
    cr_assert_lt(took, ASYNC_SEC(3), "the 300 ms timeout fired after %lld ms",
                 (long long)(took / 1000000));
    async_http_response_free(late.resp);
    for (int i = 0; i < 8; i++) {
        cr_assert_eq(busy[i].calls, 1);
        cr_assert_eq(busy[i].resp->error, 0, "%s", busy[i].resp->errmsg);
        async_http_response_free(busy[i].resp);
    }
    cr_assert_eq(async_http_destroy(http), 0);
}

#define SHARDS_N 300

typedef struct timed_slot {
    test_answer_t s;
    int64_t t0, took;
} timed_slot_t;

static void on_timed(async_http_response_t *resp, void *arg)
{
    timed_slot_t *t = arg;
    t->took = async_now() - t->t0;
    test_answer_catch(resp, &t->s);
}

Test(http_multi, a_busy_shard_does_not_starve_the_next_one, .timeout = 60)
{
    async_http_t *http;
    cr_assert_eq(async_http_new(&http, loop, NULL), 0);
    static timed_slot_t t[SHARDS_N];
    memset(t, 0, sizeof t);
    for (int i = 0; i < SHARDS_N; i++) {
        /* The first 256 stream for about a second; the rest want one short answer. */
        const char *path = i < 256 ? "/slow?chunks=50&ms=20" : "/ok";
        async_http_request_t req = {.url = test_httpd_url(srv, path),
                                    .timeout_ns = ASYNC_SEC(20)};
        t[i].t0 = async_now();
        cr_assert_eq(async_http_send(http, &req, on_timed, &t[i]), 0);
    }
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    int64_t slowest_ok = 0;
    for (int i = 0; i < SHARDS_N; i++) {
        cr_assert_eq(t[i].s.calls, 1, "request %d", i);
        cr_assert_eq(t[i].s.resp->error, 0, "request %d: %s", i, t[i].s.resp->errmsg);
        if (i >= 256 && t[i].took > slowest_ok) slowest_ok = t[i].took;
        async_http_response_free(t[i].s.resp);
    }
    cr_log_info("the slowest of the second shard's /ok answers took %lld ms",
                (long long)(slowest_ok / 1000000));
    /* Starved, they would wait for their 20 s timeout; a tolerance, not a speed figure. */
    cr_assert_lt(slowest_ok, ASYNC_SEC(10));
    cr_assert_eq(async_http_destroy(http), 0);
}
