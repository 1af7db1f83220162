/* The brewery demo's command line, attacked (issue 10 item 10): every numeric
 * option is validated and taken in its whole range, too many states, an
 * empty --mode and an unwritable --json are refused before any request, and
 * a state name that is not UTF-8 is kept in the JSON. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "support/brewery.h"

TestSuite(brewery_client, .fini = cli_server_stop, .timeout = 30);

Test(brewery_client, numeric_options_are_validated)
{
    static const char *const opts[] = {"--latency", "--rate", "--retries", "--timeout-ms"};
    /* Not numbers, negative, past the range, overflowing, trailing or
     * leading garbage, and the forms strtod reads but a user never means. */
    static const char *const bad[] = {"abc", "-1", "", " 3", "+3", "3x", "3 ", "1e999",
                                      "99999999999999999999", "0x10", "inf", "nan"};
    static const char *const past[] = {"3600001", "1000001", "101", "86400001"};
    char json[] = "/tmp/test-brewery-json-XXXXXX";
    int fd = mkstemp(json);
    cr_assert_geq(fd, 0);
    close(fd);
    unlink(json);
    for (size_t o = 0; o < 4; o++) {
        for (size_t b = 0; b <= sizeof bad / sizeof *bad; b++) {
            const char *val = b < sizeof bad / sizeof *bad ? bad[b] : past[o];
            const char *args[] = {"--mode", "meta", "--base-url", "http://127.0.0.1:1/v1",
                                  "--json", json, opts[o], val, NULL};
            char err[1024], want[128];
            int st = cli_demo_argv(args, err, sizeof err);
            cr_assert_eq(st, 2, "%s '%s': exit %d, %s", opts[o], val, st, err);
            snprintf(want, sizeof want, "brewery: invalid value for %s: '%s'", opts[o], val);
            cr_assert(strstr(err, want), "%s '%s' said: %s", opts[o], val, err);
            cr_assert_neq(access(json, F_OK), 0, "%s '%s' still ran", opts[o], val);
        }
    }
}

Test(brewery_client, too_many_states_are_refused)
{
    /* 129 names: one past the list the demo keeps, which it used to cut
     * short without a word. */
    static char list[129 * 9];
    size_t len = 0;
    for (int i = 0; i < 129; i++) len += (size_t)sprintf(list + len, "%smaryland", i ? "," : "");
    const char *args[] = {"--mode", "meta", "--base-url", "http://127.0.0.1:1/v1", "--json",
                          "/dev/null", "--states", list, NULL};
    char err[1024];
    cr_assert_eq(cli_demo_argv(args, err, sizeof err), 2, "%s", err);
    cr_assert(strstr(err, "brewery: --states lists more than 128 states"), "%s", err);
}

Test(brewery_client, numeric_options_in_range_are_taken)
{
    cli_fake_t f = {.mode = FAKE_SLOW_LATER, .fast = 1000};
    cli_fake_start(&f);
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%u/v1", f.port);
    const char *args[] = {"--mode", "serial", "--states", "maryland", "--base-url", base,
                          "--json", "/dev/null", "--rate", "0.5", "--retries", "100",
                          "--timeout-ms", "86400000", "--latency", "3600000", NULL};
    char err[1024];
    cr_assert_eq(cli_demo_argv(args, err, sizeof err), 0, "%s", err);
    cli_fake_stop(&f);
    cr_assert_eq(f.requests, 1);
}

/* An empty --mode ("" or ",") once ran no mode at all, started a server for
 * nothing and exited 0 with an empty table. */
Test(brewery_client, empty_mode_is_refused)
{
    char json[] = "/tmp/test-brewery-json-XXXXXX";
    int fd = mkstemp(json);
    cr_assert_geq(fd, 0);
    close(fd);
    unlink(json);
    static const char *const modes[] = {"", ",", ",,"};
    for (size_t i = 0; i < 3; i++) {
        const char *args[] = {"--mode", modes[i], "--base-url", "http://127.0.0.1:1/v1", "--json", json, NULL};
        char err[1024];
        cr_assert_eq(cli_demo_argv(args, err, sizeof err), 2, "--mode '%s': %s", modes[i], err);
        cr_assert(strstr(err, "brewery: --mode is empty"), "--mode '%s': %s", modes[i], err);
        cr_assert_neq(access(json, F_OK), 0, "--mode '%s' still wrote %s", modes[i], json);
    }
}

/* A --json file that cannot be written is refused before the first request
 * (exit 2, with the reason), not after a run of minutes with "cannot
 * write". */
Test(brewery_client, unwritable_json_is_refused_before_any_request)
{
    cli_fake_t f = {.mode = FAKE_SLOW_LATER, .fast = 1000};
    cli_fake_start(&f);
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%u/v1", f.port);
    static const char *const paths[][2] = {{"/nonexistent-dir/async.json", "No such file or directory"},
                                           {"/tmp", "it is a directory"},
                                           {"/dev/null/async.json", "Not a directory"}};
    for (size_t i = 0; i < 3; i++) {
        const char *args[] = {"--mode", "serial", "--states", "maryland", "--base-url", base, "--json", paths[i][0], NULL};
        char err[1024], want[160];
        cr_assert_eq(cli_demo_argv(args, err, sizeof err), 2, "--json %s: %s", paths[i][0], err);
        snprintf(want, sizeof want, "brewery: --json %s: cannot write there: %s", paths[i][0], paths[i][1]);
        cr_assert(strstr(err, want), "--json %s said: %s", paths[i][0], err);
    }
    cli_fake_stop(&f);
    cr_assert_eq(f.requests, 0, "the run started before --json was checked");
}

/* jansson takes only UTF-8: a state name that is not (a Latin-1 "delaware"
 * with an e-acute), or whose failure message is cut inside a character,
 * once vanished from async.json's states and failures without a word.  Each
 * bad byte is now U+FFFD, and every state is in the file. */
Test(brewery_client, non_utf8_state_is_kept_in_json)
{
    const char *flags[] = {"--latency", "0", NULL};
    cli_server_start(flags);
    /* "x" then 100 e-acutes: the message keeps 180 bytes of the name, which
     * ends half-way through a character. */
    char longname[1 + 200 + 1] = "x";
    for (int i = 0; i < 100; i++) strcat(longname, "\xc3\xa9");
    char args[1024];
    snprintf(args, sizeof args, "--mode serial --states 'del\xe9ware,maryland,%s' --base-url http://127.0.0.1:%u/v1",
             longname, cli_server.port);
    json_t *j;
    cr_assert_eq(cli_demo(args, &j), 1);
    json_t *states = json_object_get(j, "states");
    cr_assert_eq(json_array_size(states), 3, "every state is listed");
    cr_assert_str_eq(json_string_value(json_array_get(states, 0)), "del\xef\xbf\xbdware");
    cr_assert_str_eq(json_string_value(json_array_get(states, 2)), longname);
    long want;
    cli_csv_counts(&cli_lab[1], 1, &want);
    cr_assert_eq(cli_count(j, "serial", "maryland"), want);
    const char *why = cli_failure(j, "serial", "del\xef\xbf\xbdware");
    cr_assert(why && strstr(why, "unknown state 'del\xef\xbf\xbdware'"), "%s", why ? why : "(none)");
    why = cli_failure(j, "serial", longname);
    cr_assert(why && strstr(why, "unknown state 'x\xc3\xa9"), "%s", why ? why : "(none)");
    json_decref(j);
}
