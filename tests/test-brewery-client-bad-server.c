/* The brewery demo against a fake API on a thread of this process that
 * misbehaves: one that ignores `page` or never ends stops with a clear error
 * (defect 9), and a meta total that is not a count fails the state. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support/brewery.h"

TestSuite(brewery_client, .fini = cli_server_stop, .timeout = 30);

Test(brewery_client, repeated_page_stops_paging)
{
    cli_fake_t f = {.mode = FAKE_SAME_PAGE};
    cli_fake_start(&f);
    char args[256];
    snprintf(args, sizeof args,
             "--mode serial,async --states maryland,virginia --retries 0 "
             "--base-url http://127.0.0.1:%u/v1",
             f.port);
    json_t *j;
    cr_assert_eq(cli_demo(args, &j), 1);
    cli_fake_stop(&f);
    const char *modes[] = {"serial", "async"};
    for (int m = 0; m < 2; m++) {
        const char *why = cli_failure(j, modes[m], "virginia");
        cr_assert(why && strstr(why, "page 2 repeats page 1"), "%s: %s", modes[m],
                  why ? why : "(none)");
        /* Two requests a state, no more. */
        cr_assert_eq(json_integer_value(json_object_get(cli_mode(j, modes[m]), "requests")), 4,
                     "%s", modes[m]);
    }
    cr_assert_eq(f.requests, 8);
    json_decref(j);
}

Test(brewery_client, endless_paging_stops_at_the_limit)
{
    cli_fake_t f = {.mode = FAKE_ENDLESS};
    cli_fake_start(&f);
    char args[256];
    snprintf(args, sizeof args,
             "--mode serial --states maryland --retries 0 --base-url http://127.0.0.1:%u/v1",
             f.port);
    json_t *j;
    cr_assert_eq(cli_demo(args, &j), 1);
    cli_fake_stop(&f);
    const char *why = cli_failure(j, "serial", "maryland");
    cr_assert(why && strstr(why, "page limit: 500 full pages"), "%s", why ? why : "(none)");
    cr_assert_eq(json_integer_value(json_object_get(cli_mode(j, "serial"), "requests")), 500);
    cr_assert_eq(f.requests, 500);
    json_decref(j);
}

/* A meta answer whose total is not a count (negative, past a long, with
 * blanks or a sign strtol skips) was once taken as the count: -5 breweries
 * went into async.json.  Each is now the state's failure, naming the value. */
Test(brewery_client, meta_total_that_is_not_a_count_fails_the_state)
{
    static const char *const bodies[][2] = {
        {"{\"total\": -5}", "-5"},
        {"{\"total\": \"-5\"}", "-5"},
        {"{\"total\": \"99999999999999999999\"}", "99999999999999999999"},
        {"{\"total\": \" 7\"}", " 7"},
        {"{\"total\": \"+7\"}", "+7"},
        {"{\"total\": 7.5}", "7.5"},
    };
    for (size_t i = 0; i < sizeof bodies / sizeof *bodies; i++) {
        cli_fake_t f = {.mode = FAKE_BODY, .body = bodies[i][0]};
        cli_fake_start(&f);
        char args[160];
        snprintf(args, sizeof args, "--mode meta --states maryland --retries 0 --base-url http://127.0.0.1:%u/v1", f.port);
        json_t *j;
        int st = cli_demo(args, &j);
        cli_fake_stop(&f);
        cr_expect_eq(st, 1, "%s: exit %d", bodies[i][0], st);
        cr_expect_eq(cli_count(j, "meta", "maryland"), -1, "%s was taken as a count", bodies[i][0]);
        const char *why = cli_failure(j, "meta", "maryland");
        char want[96];
        snprintf(want, sizeof want, "bad total '%s'", bodies[i][1]);
        cr_expect(why && strstr(why, want), "%s: %s", bodies[i][0], why ? why : "(no failure)");
        json_decref(j);
    }
    /* A count, as a number or as the real service's string, still counts. */
    static const char *const good[] = {"{\"total\": 7}", "{\"total\": \"7\"}", "{\"total\": 0}"};
    for (size_t i = 0; i < 3; i++) {
        cli_fake_t f = {.mode = FAKE_BODY, .body = good[i]};
        cli_fake_start(&f);
        char args[160];
        snprintf(args, sizeof args, "--mode meta --states maryland --retries 0 --base-url http://127.0.0.1:%u/v1", f.port);
        json_t *j;
        cr_expect_eq(cli_demo(args, &j), 0, "%s", good[i]);
        cli_fake_stop(&f);
        cr_expect_eq(cli_count(j, "meta", "maryland"), i == 2 ? 0 : 7, "%s", good[i]);
        json_decref(j);
    }
}

/* A page past CLIENT_MAX_PAGE_BYTES (4 MiB) fails its state, named, in
 * every mode that fetches pages: the library's 64 MiB default let a server
 * cost 64 MiB a request in flight, 3 GiB over 51 states at once. */
Test(brewery_client, a_page_past_the_size_limit_fails_its_state)
{
    enum { ENTRIES = 5 << 18 }; /* 5 MiB of 4-byte entries */
    size_t len = 2 + (size_t)ENTRIES * 4;
    char *body = malloc(len + 1);
    cr_assert(body);
    body[0] = '[';
    for (size_t i = 0; i < ENTRIES; i++) memcpy(body + 1 + i * 4, "{},\n", 4);
    body[len - 2] = '{';
    body[len - 1] = ']';
    body[len - 3] = '}';
    body[len] = '\0';
    cli_fake_t f = {.mode = FAKE_BODY, .body = body};
    cli_fake_start(&f);
    char args[256];
    snprintf(args, sizeof args,
             "--mode serial,async --states maryland --retries 0 --base-url http://127.0.0.1:%u/v1",
             f.port);
    json_t *j;
    cr_assert_eq(cli_demo(args, &j), 1);
    cli_fake_stop(&f);
    free(body);
    const char *modes[] = {"serial", "async"};
    for (int m = 0; m < 2; m++) {
        const char *why = cli_failure(j, modes[m], "maryland");
        cr_assert(why && strstr(why, "response body larger than 4194304 bytes"), "%s: %s", modes[m],
                  why ? why : "a 5 MiB page was taken");
    }
    json_decref(j);
}
