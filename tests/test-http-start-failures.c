/* The HTTP client (lib/http) when a request cannot start or its resources
 * run out: failing allocations at every point of a request's start,
 * descriptors running out while requests are in flight, tasks cancelled and
 * clients freed with requests under way.  Each request must end once, with
 * a precise error, without a leak. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ev.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <async.h>
#include <async/http.h>
#include "support/http_fixture.h"
#include "support/answer.h"

/* The scripted server of the test that has one (raw_answer's paths): the
 * test starts it, and the suite's teardown stops it whatever the test's
 * outcome, so that a failed check leaves no server running. */
static raw_srv_t slow;

static void teardown(void)
{
    raw_stop(&slow); /* signals nothing unless it started (pid > 0) */
    http_fixture_teardown();
}

TestSuite(http_start_failures, .init = http_fixture_setup, .fini = teardown, .timeout = 60);

/* --- failing allocations when a request starts -------------------------------- */

typedef struct inside {
    test_answer_t a;
    bool in_send;      /* async_http_send has not returned yet */
    int calls_in_send; /* callbacks that ran inside it */
} inside_t;

static void on_inside(async_http_response_t *resp, void *arg)
{
    inside_t *in = arg;
    if (in->in_send) in->calls_in_send++;
    test_answer_catch(resp, &in->a);
}

/* A request that could not start (no memory for its easy handle, its
 * shard, curl's multi handle entry) fails, but async_http_send accepted it:
 * its callback runs later, on the loop, never inside the send (http.h), and
 * a task's fetch of it suspends and wakes as for any other failure. */
Test(http_start_failures, a_request_that_cannot_start_never_calls_back_inside_send)
{
    int failed = 0;
    for (long n = 0; n < 30; n++) {
        long before = test_alloc_live();
        async_http_t *http;
        cr_assert_eq(async_http_new(&http, loop, NULL), 0);
        inside_t in = {.in_send = true};
        async_http_request_t req = {.url = test_httpd_url(srv, "/ok")};
        test_alloc_fail_after(n);
        int rc = async_http_send(http, &req, on_inside, &in);
        test_alloc_fail_after(-1);
        in.in_send = false;
        cr_expect_eq(in.calls_in_send, 0, "allocation %ld: the callback ran inside send", n);
        if (rc == 0) {
            cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
            cr_assert_eq(in.a.calls, 1, "allocation %ld", n);
            if (in.a.resp->error) {
                failed++;
                cr_expect_eq(in.a.resp->error, ASYNC_ENOMEM, "%s", in.a.resp->errmsg);
            }
            async_http_response_free(in.a.resp);
        } else {
            cr_expect_eq(rc, ASYNC_ENOMEM);
            cr_expect_eq(in.a.calls, 0);
        }
        async_http_stats_t st;
        async_http_stats(http, &st);
        cr_expect_eq(st.in_flight, 0);
        cr_assert_eq(async_http_destroy(http), 0);
        cr_assert_eq(test_alloc_live(), before, "leak after failing allocation %ld", n);
    }
    cr_expect_gt(failed, 0, "no accepted request failed to start: the test missed its point");
}

/* --- cancelled and freed with requests under way ------------------------------ */

typedef struct fetcher {
    async_http_t *http;
    char url[128];
    int64_t deadline;
    int rc;
    async_http_response_t *resp;
} fetcher_t;

static int fetch_task(void *arg, void **result)
{
    (void)result;
    fetcher_t *f = arg;
    async_http_request_t req = {.url = f->url};
    f->rc = async_http_fetch_dl(&f->resp, f->http, &req, f->deadline);
    return 0;
}

static int cancel_it(void *arg, void **result)
{
    (void)result;
    async_task_cancel(*(async_task_t *)arg);
    return 0;
}

/* Tasks run from the loop's prepare watcher, and a request a task starts
 * arms the client's own prepare watcher, which libev then runs only after
 * the next poll; curl's zero timeout keeps that poll from blocking.  A task
 * cancelled in the same turn gives its transfer up, which stopped curl's
 * timer and left the prepare watcher armed with nothing to do: the poll
 * blocked for libev's longest wait (59.7 s) before the loop could end. */
Test(http_start_failures, a_fetch_cancelled_in_the_turn_it_started_lets_the_loop_end, .timeout = 120)
{
    async_http_t *http;
    cr_assert_eq(async_http_new(&http, loop, NULL), 0);
    for (int round = 0; round < 3; round++) {
        fetcher_t f = {.http = http, .deadline = ASYNC_FOREVER};
        snprintf(f.url, sizeof f.url, "%s", test_httpd_url(srv, "/stall?ms=20000"));
        async_task_t t;
        cr_assert_eq(async_task_spawn(&t, loop, fetch_task, &f, NULL), 0);
        async_task_opts_t detached = {.size = sizeof detached, .detached = true};
        cr_assert_eq(async_task_spawn(NULL, loop, cancel_it, &t, &detached), 0);
        int64_t t0 = async_now();
        cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
        double took = (double)(async_now() - t0) / 1e9;
        cr_assert_eq(async_task_detach(t), 0);
        cr_expect_eq(f.rc, ASYNC_ECANCELED, "%s", async_errname(f.rc));
        cr_expect_null(f.resp);
        cr_expect_lt(took, 10.0, "round %d: the loop ended %.1f s after the cancel", round, took);
        async_http_stats_t st;
        async_http_stats(http, &st);
        cr_expect_eq(st.in_flight, 0);
    }
    cr_assert_eq(async_http_destroy(http), 0);
}

typedef struct starter {
    fetcher_t f;
    long fail_at;
} starter_t;

static int fetch_failing(void *arg, void **result)
{
    (void)result;
    starter_t *s = arg;
    async_http_request_t req = {.url = s->f.url};
    test_alloc_fail_after(s->fail_at);
    s->f.rc = async_http_fetch_dl(&s->f.resp, s->f.http, &req, s->f.deadline);
    test_alloc_fail_after(-1);
    return 0;
}

/* A request that cannot start, fetched from a task: the task sees its
 * failure (or, cancelled before the loop reports it, gives it up), and a
 * client freed before the loop reported it ends it in the free, with its
 * own error.  Each request ends once; nothing leaks (the canceller is
 * spawned detached: a task spawned without a handle and without
 * opts.detached keeps its slot until the loop is freed, task.h). */
Test(http_start_failures, a_request_that_cannot_start_ends_once_when_cancelled_or_freed,
     .timeout = 120)
{
    /* The loop keeps finished tasks' stacks for the next ones: two tasks at
     * once first, as in the rounds below, so that the counts compare like
     * with like. */
    static async_task_t nobody; /* a spent handle: the cancel is refused */
    async_task_opts_t detached = {.size = sizeof detached, .detached = true};
    async_task_t warm;
    cr_assert_eq(async_task_spawn(&warm, loop, cancel_it, &nobody, NULL), 0);
    cr_assert_eq(async_task_spawn(NULL, loop, cancel_it, &nobody, &detached), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(async_task_detach(warm), 0);
    int enomem = 0;
    for (long n = 0; n < 30; n++) {
        for (int cancel = 0; cancel < 2; cancel++) {
            long before = test_alloc_live();
            starter_t s = {.f = {.deadline = async_deadline_after(ASYNC_SEC(20))}, .fail_at = n};
            snprintf(s.f.url, sizeof s.f.url, "%s", test_httpd_url(srv, "/ok"));
            cr_assert_eq(async_http_new(&s.f.http, loop, NULL), 0);
            async_task_t t;
            cr_assert_eq(async_task_spawn(&t, loop, fetch_failing, &s, NULL), 0);
            if (cancel) cr_assert_eq(async_task_spawn(NULL, loop, cancel_it, &t, &detached), 0);
            int64_t t0 = async_now();
            cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
            cr_expect_lt(async_now() - t0, ASYNC_SEC(10), "allocation %ld, cancel %d: a stall", n,
                         cancel);
            cr_assert_eq(async_task_detach(t), 0);
            if (s.f.rc == ASYNC_ECANCELED) {
                cr_expect(cancel, "allocation %ld: cancelled without a cancel", n);
                cr_expect_null(s.f.resp);
            } else if (s.f.resp) {
                cr_expect_eq(s.f.rc, s.f.resp->error);
                enomem += s.f.rc == ASYNC_ENOMEM;
                cr_expect(s.f.rc == 0 || s.f.rc == ASYNC_ENOMEM, "allocation %ld: %s", n,
                          s.f.resp->errmsg);
            } else {
                cr_expect_eq(s.f.rc, ASYNC_ENOMEM, "allocation %ld: %s", n, async_errname(s.f.rc));
            }
            async_http_response_free(s.f.resp);
            async_http_stats_t st;
            async_http_stats(s.f.http, &st);
            cr_expect_eq(st.in_flight, 0, "allocation %ld, cancel %d", n, cancel);
            cr_assert_eq(async_http_destroy(s.f.http), 0);
            cr_assert_eq(test_alloc_live(), before, "leak after failing allocation %ld, cancel %d",
                         n, cancel);
        }

        long before = test_alloc_live();
        async_http_t *http;
        cr_assert_eq(async_http_new(&http, loop, NULL), 0);
        test_answer_t a = {0};
        async_http_request_t req = {.url = test_httpd_url(srv, "/ok")};
        test_alloc_fail_after(n);
        int rc = async_http_send(http, &req, test_answer_catch, &a);
        test_alloc_fail_after(-1);
        cr_expect_eq(a.calls, 0);
        cr_assert_eq(async_http_destroy(http), 0);
        if (rc == 0) {
            cr_assert_eq(a.calls, 1, "allocation %ld: the free ended the request %d times", n,
                         a.calls);
            cr_expect(a.resp->error == ASYNC_ECLOSED || a.resp->error == ASYNC_ENOMEM, "%s",
                      a.resp->errmsg);
            async_http_response_free(a.resp);
        }
        cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
        cr_assert_eq(test_alloc_live(), before, "leak after failing allocation %ld", n);
    }
    cr_expect_gt(enomem, 0, "no fetch met a failed start");
}

/* --- descriptors running out mid-run -------------------------------------------- */

static int open_fds(void)
{
    int n = 0;
    for (int fd = 0; fd < 1024; fd++) n += fcntl(fd, F_GETFD) >= 0;
    return n;
}

/* In a child: twelve requests at once to a server that answers after 300
 * ms, with room for only a few sockets.  Those that got one succeed; the
 * rest end at once with ASYNC_EMFILE and say so.  With retries, the later
 * attempts reuse the connections the first ones leave (keep-alive), so all
 * twelve succeed.  Nothing leaks a descriptor.  Returns 0, or 1 after
 * saying what went wrong on stderr. */
#define MID_N 12

static int emfile_child(raw_srv_t *s, int retries)
{
    async_loop_t *l;
    if (async_loop_new(&l)) return 1;
    int fds0 = open_fds();
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    struct rlimit low = rl;
    int highest = 0;
    for (int fd = 0; fd < 1024; fd++)
        if (fcntl(fd, F_GETFD) >= 0) highest = fd;
    low.rlim_cur = (rlim_t)highest + 64;
    if (setrlimit(RLIMIT_NOFILE, &low)) return 1;
    /* Every descriptor taken, holes included. */
    static int fill[4096];
    int n_fill = 0;
    while (n_fill < 4096 && (fill[n_fill] = dup(0)) >= 0) n_fill++;
    if (n_fill == 4096 || errno != EMFILE) {
        fprintf(stderr, "could not take every descriptor: %d taken, %s\n", n_fill, strerror(errno));
        return 1;
    }
    /* None left: a client on a given loop needs none of its own (curl
     * makes its multi handle without the wake-up socket pair it would
     * otherwise keep, two descriptors), so it can still be made. */
    async_http_opts_t o = {.max_retries = retries, .retry_base_ns = ASYNC_MSEC(200)};
    async_http_t *http = NULL;
    int rc = async_http_new(&http, l, &o);
    if (rc) {
        fprintf(stderr, "a client without descriptors: %s\n", async_errname(rc));
        return 1;
    }
    int bad = 0;
    for (int k = 0; k < 4 && n_fill; k++) close(fill[--n_fill]); /* room for four sockets */
    test_answer_t a[MID_N];
    memset(a, 0, sizeof a);
    for (int i = 0; i < MID_N; i++) {
        async_http_request_t req = {.url = raw_url(s, "/slow-ok")};
        if (async_http_send(http, &req, test_answer_catch, &a[i])) return 1;
    }
    if (async_loop_run(l, ASYNC_RUN_DEFAULT)) return 1;
    int ok = 0, emfile = 0;
    for (int i = 0; i < MID_N; i++) {
        if (a[i].calls != 1 || !a[i].resp) {
            fprintf(stderr, "request %d ended %d times\n", i, a[i].calls);
            bad = 1;
            continue;
        }
        if (a[i].resp->error == 0 && !strcmp(a[i].resp->body, "ok")) {
            ok++;
        } else if (a[i].resp->error == ASYNC_EMFILE &&
                   strstr(a[i].resp->errmsg, "out of descriptors")) {
            emfile++;
        } else {
            fprintf(stderr, "request %d: %s: %s\n", i, async_errname(a[i].resp->error),
                    a[i].resp->errmsg);
            bad = 1;
        }
        async_http_response_free(a[i].resp);
    }
    fprintf(stderr, "retries %d: %d ok, %d out of descriptors\n", retries, ok, emfile);
    if (ok == 0) bad = 1;
    if (retries ? ok != MID_N : emfile == 0) {
        fprintf(stderr, "retries %d: %d of %d succeeded\n", retries, ok, MID_N);
        bad = 1;
    }
    while (n_fill) close(fill[--n_fill]);
    setrlimit(RLIMIT_NOFILE, &rl);
    if (async_http_destroy(http)) bad = 1;
    if (open_fds() != fds0) {
        fprintf(stderr, "%d descriptors open before, %d after\n", fds0, open_fds());
        bad = 1;
    }
    if (async_loop_destroy(l)) bad = 1;
    return bad;
}

Test(http_start_failures, descriptors_running_out_mid_run_fail_those_requests_only)
{
    raw_start(&slow, raw_answer);
    for (int retries = 0; retries < 2; retries++) {
        fflush(NULL);
        pid_t test = getpid();
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
            raw_die_with(test);
            _exit(emfile_child(&slow, retries * 3));
        }
        int st;
        cr_assert_eq(waitpid(pid, &st, 0), pid);
        cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "retries %d: the child failed (status %d)",
                  retries * 3, st);
    }
}
