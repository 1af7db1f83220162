/* async.json's sentence (issue 12): it follows from the durations written,
 * says "slower" when async was slower, and compares only complete runs. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "support/brewery.h"

TestSuite(brewery_client, .fini = cli_server_stop, .timeout = 30);

Test(brewery_client, result_sentence_when_async_is_slower)
{
    /* Serial's one request is answered at once, async's after a second. */
    cli_fake_t f = {.mode = FAKE_SLOW_LATER, .fast = 1, .ms = 1000};
    cli_fake_start(&f);
    char args[256];
    snprintf(args, sizeof args,
             "--mode serial,async --states maryland --base-url http://127.0.0.1:%u/v1", f.port);
    json_t *j;
    cr_assert_eq(cli_demo(args, &j), 0);
    cli_fake_stop(&f);
    cli_check_result(j);
    const char *result = json_string_value(json_object_get(j, "result"));
    cr_assert(strstr(result, "% slower than the serial version"), "%s", result);
    cr_assert_lt(json_real_value(json_object_get(j, "async_faster_percent")), 0);
    json_decref(j);
}

/* A mode whose states failed may fail fast: the sentence once said "async
 * version was 97.00% faster" when serial's requests had failed and async's
 * had not.  Times are compared only when both modes counted every state. */
Test(brewery_client, result_sentence_only_compares_complete_runs)
{
    const char *flags[] = {"--latency", "0", "--fail-first", "1", NULL};
    cli_server_start(flags);
    json_t *j;
    cr_assert_eq(cli_demo_on_server("--mode serial,async --retries 0", &j), 1);
    cr_assert_not_null(cli_failure(j, "serial", "district_of_columbia"), "the first request failed");
    const char *result = json_string_value(json_object_get(j, "result"));
    cr_assert(result && strstr(result, "the serial and async versions did not both succeed (1 and 0 of 4 states failed)"),
              "%s", result ? result : "(none)");
    cr_assert_null(json_object_get(j, "async_faster_percent"));
    json_decref(j);
}
