/* The brewery demo against the real brewery-server on loopback, with the
 * server's injected faults: every mode counts the right numbers, a failing
 * state is marked failed with a precise message while the others are still
 * written to the JSON file, retries recover transient faults, and an
 * unreachable server or an unknown state fails cleanly. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "support/brewery.h"

TestSuite(brewery_client, .fini = cli_server_stop, .timeout = 30);

Test(brewery_client, every_mode_counts_the_csv)
{
    const char *flags[] = {"--data", CSV, "--latency", "5", NULL};
    cli_server_start(flags);
    char args[256];
    snprintf(args, sizeof args, "--base-url http://127.0.0.1:%u/v1", cli_server.port);
    json_t *j;
    cr_assert_eq(cli_demo(args, &j), 0);
    long want[4];
    cli_csv_counts(cli_lab, 4, want);
    const char *modes[] = {"serial", "threads", "processes", "async", "meta"};
    long pages = 0;
    for (int i = 0; i < 4; i++) pages += want[i] / 200 + 1;
    for (int m = 0; m < 5; m++) {
        cr_assert_not_null(cli_mode(j, modes[m]), "%s", modes[m]);
        for (int i = 0; i < 4; i++)
            cr_assert_eq(cli_count(j, modes[m], cli_lab[i]), want[i], "%s %s", modes[m], cli_lab[i]);
    }
    cli_check_result(j);
    cr_assert_eq(json_integer_value(json_object_get(cli_mode(j, "serial"), "requests")), pages);
    json_decref(j);
}

Test(brewery_client, failed_state_marked_others_written)
{
    /* The first request answers 500; without retries the state that made
     * it fails, the others count. */
    const char *flags[] = {"--latency", "0", "--fail-first", "1", NULL};
    cli_server_start(flags);
    json_t *j;
    cr_assert_eq(cli_demo_on_server("--mode serial --retries 0", &j), 1, "a failed state makes the exit status 1");
    const char *why = cli_failure(j, "serial", "district_of_columbia");
    cr_assert_not_null(why);
    cr_assert(strstr(why, "HTTP status 500"), "%s", why);
    long want[4];
    cli_csv_counts(cli_lab, 4, want); /* the built-in data has the CSV's counts */
    for (int i = 1; i < 4; i++) cr_assert_eq(cli_count(j, "serial", cli_lab[i]), want[i], "%s", cli_lab[i]);
    json_decref(j);
}

Test(brewery_client, retries_recover_transient_faults)
{
    const char *flags[] = {"--latency", "0", "--fail-rate", "0.3", "--drop-rate", "0.1",
                           "--seed", "7", NULL};
    cli_server_start(flags);
    json_t *j;
    cr_assert_eq(cli_demo_on_server("--mode async,meta --retries 8", &j), 0);
    long want[4];
    cli_csv_counts(cli_lab, 4, want);
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(cli_count(j, "async", cli_lab[i]), want[i], "%s", cli_lab[i]);
        cr_assert_eq(cli_count(j, "meta", cli_lab[i]), want[i], "%s", cli_lab[i]);
    }
    /* Retries happened: more requests than pages. */
    cr_assert_gt(json_integer_value(json_object_get(cli_mode(j, "async"), "requests")), 7);
    json_decref(j);
}

Test(brewery_client, malformed_json_is_precise)
{
    const char *flags[] = {"--latency", "0", "--malformed-rate", "1", NULL};
    cli_server_start(flags);
    json_t *j;
    cr_assert_eq(cli_demo_on_server("--mode async,meta --retries 0", &j), 1);
    const char *why = cli_failure(j, "async", "maryland");
    cr_assert(why && strstr(why, "JSON error at line"), "%s", why ? why : "(none)");
    why = cli_failure(j, "meta", "maryland");
    cr_assert(why && strstr(why, "JSON error at line"), "%s", why ? why : "(none)");
    json_decref(j);
}

Test(brewery_client, stalled_server_times_out)
{
    const char *flags[] = {"--latency", "0", "--stall-rate", "1", "--stall-ms", "20000", NULL};
    cli_server_start(flags);
    json_t *j;
    cr_assert_eq(cli_demo_on_server("--mode meta --retries 0 --timeout-ms 300", &j), 1);
    const char *why = cli_failure(j, "meta", "virginia");
    cr_assert(why && strstr(why, "timed out"), "%s", why ? why : "(none)");
    json_decref(j);
}

Test(brewery_client, unreachable_base_url)
{
    json_t *j;
    cr_assert_eq(cli_demo("--mode serial,async --retries 0 --base-url http://127.0.0.1:1/v1", &j), 1);
    const char *why = cli_failure(j, "async", "new_york");
    cr_assert(why && strstr(why, "Couldn't connect") && strstr(why, "curl error 7"), "%s",
              why ? why : "(none)");
    cr_assert_not_null(cli_failure(j, "serial", "maryland"));
    json_decref(j);
}

Test(brewery_client, unknown_state)
{
    const char *flags[] = {"--latency", "0", NULL};
    cli_server_start(flags);
    json_t *j;
    cr_assert_eq(cli_demo_on_server("--mode async --states maryland,atlantis", &j), 1);
    long want;
    cli_csv_counts(&cli_lab[1], 1, &want);
    cr_assert_eq(cli_count(j, "async", "maryland"), want);
    const char *why = cli_failure(j, "async", "atlantis");
    cr_assert(why && strstr(why, "unknown state"), "%s", why ? why : "(none)");
    json_decref(j);
}

Test(brewery_client, local_server_started_by_default)
{
    json_t *j;
    cr_assert_eq(cli_demo("--mode meta --latency 0", &j), 0);
    long want;
    cli_csv_counts(&cli_lab[2], 1, &want);
    cr_assert_eq(cli_count(j, "meta", "new_york"), want);
    const char *base = json_string_value(json_object_get(j, "base_url"));
    cr_assert(base && strncmp(base, "http://127.0.0.1:", 17) == 0, "%s", base ? base : "");
    json_decref(j);
}
