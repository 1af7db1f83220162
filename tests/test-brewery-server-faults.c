/* The brewery-server's rate limit (429 with Retry-After, a minute's window by
 * default), every fault flag (fail rate, fail first, drop, malformed, stall;
 * deterministic with a seed), and latency: applied to each request, and
 * overlapping across connections without a thread per request. */
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "support/brewery.h"
#include "support/run.h"

TestSuite(brewery_server, .init = srv_suite_init, .fini = srv_suite_fini);

Test(brewery_server, rate_limit_429_with_retry_after, .timeout = 30)
{
    srv_t s;
    srv_start(&s, "--latency", "0", "--rate-limit", "3", "--rate-window", "1", NULL);
    for (int i = 0; i < 3; i++) {
        srv_resp_t r = srv_get(&s, "/v1/breweries?per_page=1");
        cr_expect_eq(r.status, 200, "request %d", i + 1);
        free(r.body);
    }
    srv_resp_t r = srv_get(&s, "/v1/breweries?per_page=1");
    cr_expect_eq(r.status, 429);
    cr_expect_neq(r.retry_after[0], '\0', "no Retry-After");
    int after = atoi(r.retry_after);
    cr_expect(after >= 1 && after <= 1, "Retry-After %s", r.retry_after);
    cr_expect_str_eq(r.remaining, "0");
    json_t *v = json_loadb(r.body, r.len, 0, NULL);
    cr_expect(json_is_string(json_object_get(v, "message")));
    json_decref(v);
    free(r.body);
    /* After Retry-After the window has passed. */
    usleep((useconds_t)after * 1000000 + 100000);
    cr_expect_eq(srv_status(&s, "/v1/breweries?per_page=1"), 200);
    srv_stop(&s);
}

Test(brewery_server, rate_limit_default_window_is_a_minute, .timeout = 30)
{
    srv_t s;
    srv_start(&s, "--latency", "0", "--rate-limit", "1", NULL);
    cr_expect_eq(srv_status(&s, "/v1/breweries?per_page=1"), 200);
    srv_resp_t r = srv_get(&s, "/v1/breweries?per_page=1");
    cr_expect_eq(r.status, 429);
    cr_expect(atoi(r.retry_after) >= 55 && atoi(r.retry_after) <= 60, "Retry-After %s",
              r.retry_after);
    free(r.body);
    srv_stop(&s);
}

Test(brewery_server, fault_fail_rate, .timeout = 30)
{
    srv_t s;
    srv_start(&s, "--latency", "0", "--fail-rate", "1", NULL);
    srv_resp_t r = srv_get(&s, "/v1/breweries?by_state=maryland");
    cr_expect_eq(r.status, 500);
    json_t *v = json_loadb(r.body, r.len, 0, NULL);
    cr_expect(json_is_string(json_object_get(v, "message")));
    json_decref(v);
    free(r.body);
    srv_stop(&s);
}

Test(brewery_server, fault_fail_first, .timeout = 30)
{
    srv_t s;
    srv_start(&s, "--latency", "0", "--fail-first", "2", NULL);
    long want[] = { 500, 500, 200, 200 };
    for (int i = 0; i < 4; i++) {
        srv_resp_t r = srv_get(&s, "/v1/breweries/meta?by_state=maryland");
        cr_expect_eq(r.status, want[i], "request %d: %ld", i + 1, r.status);
        free(r.body);
    }
    srv_stop(&s);
}

Test(brewery_server, fault_drop, .timeout = 30)
{
    const char *latency[] = { "0", "50" };
    for (int i = 0; i < 2; i++) {
        srv_t s;
        srv_start(&s, "--latency", latency[i], "--drop-rate", "1", NULL);
        srv_resp_t r = srv_get(&s, "/v1/breweries?by_state=maryland");
        cr_expect_eq(r.rc, CURLE_GOT_NOTHING, "latency %s: %s", latency[i],
                     curl_easy_strerror(r.rc));
        free(r.body);
        srv_stop(&s);
    }
}

Test(brewery_server, fault_malformed, .timeout = 30)
{
    srv_t s;
    srv_start(&s, "--latency", "0", "--malformed-rate", "1", NULL);
    static const char *const paths[] = { "/v1/breweries?by_state=maryland",
                                         "/v1/breweries/meta?by_state=maryland",
                                         "/v1/breweries?by_state=nowhere" };
    for (size_t i = 0; i < 3; i++) {
        srv_resp_t r = srv_get(&s, "%s", paths[i]);
        cr_expect_eq(r.status, 200);
        json_error_t je;
        json_t *v = json_loadb(r.body ? r.body : "", r.len, 0, &je);
        cr_expect_null(v, "%s: body parsed: %s", paths[i], r.body);
        json_decref(v);
        free(r.body);
    }
    srv_stop(&s);
}

Test(brewery_server, fault_stall_and_shutdown_while_held, .timeout = 30)
{
    srv_t s;
    srv_start(&s, "--latency", "0", "--stall-rate", "1", "--stall-ms", "20000", NULL);
    srv_resp_t r = srv_get_t(&s, "/v1/breweries?by_state=maryland", 300);
    cr_expect_eq(r.rc, CURLE_OPERATION_TIMEDOUT, "%s", curl_easy_strerror(r.rc));
    cr_expect_geq(r.secs, 0.25);
    free(r.body);
    /* The stalled connection is still held; SIGTERM must end the server promptly. */
    double t0 = test_now_s();
    srv_stop(&s);
    cr_expect_lt(test_now_s() - t0, 10.0 * test_slack(), "shutdown waited for the stall");
}

Test(brewery_server, faults_deterministic_with_seed, .timeout = 30)
{
    long seq[2][30];
    for (int run = 0; run < 2; run++) {
        srv_t s;
        srv_start(&s, "--latency", "0", "--fail-rate", "0.5", "--seed", "42", NULL);
        for (int i = 0; i < 30; i++) {
            srv_resp_t r = srv_get(&s, "/v1/breweries?per_page=1");
            seq[run][i] = r.status;
            free(r.body);
        }
        srv_stop(&s);
    }
    int fails = 0;
    for (int i = 0; i < 30; i++) {
        cr_expect_eq(seq[0][i], seq[1][i], "request %d differs between runs", i + 1);
        cr_expect(seq[0][i] == 200 || seq[0][i] == 500);
        fails += seq[0][i] == 500;
    }
    cr_expect(fails > 0 && fails < 30, "%d of 30 failed at rate 0.5", fails);
}

Test(brewery_server, latency_is_applied, .timeout = 30)
{
    srv_t s;
    srv_start(&s, "--latency", "200", NULL);
    srv_resp_t r = srv_get(&s, "/v1/breweries?per_page=1");
    cr_expect_eq(r.status, 200);
    cr_expect_geq(r.secs, 0.2, "answered after %.3f s", r.secs);
    free(r.body);
    srv_stop(&s);
}

/* n requests at once with curl multi, each on its own connection; returns
 * the wall time and checks that each answered 200. */
static double concurrent(const srv_t *s, int n)
{
    CURLM *m = curl_multi_init();
    CURL **e = calloc((size_t)n, sizeof *e);
    srv_resp_t *r = calloc((size_t)n, sizeof *r);
    for (int i = 0; i < n; i++) {
        char path[128];
        snprintf(path, sizeof path, "/v1/breweries?per_page=1&page=%d", i + 1);
        e[i] = srv_easy(s, path, &r[i], 60000);
        curl_multi_add_handle(m, e[i]);
    }
    double t0 = test_now_s();
    int running = 1;
    while (running) {
        cr_assert_eq(curl_multi_perform(m, &running), CURLM_OK);
        if (running)
            curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    double secs = test_now_s() - t0;
    int ok = 0;
    for (int i = 0; i < n; i++) {
        long status = 0;
        curl_easy_getinfo(e[i], CURLINFO_RESPONSE_CODE, &status);
        ok += status == 200;
        curl_multi_remove_handle(m, e[i]);
        curl_easy_cleanup(e[i]);
        free(r[i].body);
    }
    curl_multi_cleanup(m);
    free(e);
    free(r);
    cr_expect_eq(ok, n, "%d of %d answered 200", ok, n);
    return secs;
}

Test(brewery_server, latency_overlaps_across_connections, .timeout = 60)
{
    srv_t s;
    srv_start(&s, "--latency", "200", NULL);
    double secs = concurrent(&s, 50);
    /* Served one after another they would take 10 s; overlapped, ~0.2 s. */
    cr_expect_geq(secs, 0.2);
    cr_expect_lt(secs, 5.0 * test_slack(), "50 requests at 200 ms latency took %.2f s", secs);
    srv_stop(&s);
}

Test(brewery_server, many_held_connections, .timeout = 60)
{
    /* 800 connections fit the usual soft limit of 1024 descriptors. */
    srv_t s;
    srv_start(&s, "--latency", "1000", NULL);
    double secs = concurrent(&s, 800);
    cr_expect_geq(secs, 1.0);
    cr_expect_lt(secs, 20.0 * test_slack(), "800 requests at 1 s latency took %.2f s", secs);
    srv_stop(&s);
}
