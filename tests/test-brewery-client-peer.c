/* The lab's Python client (tests/bench/peer-brewery.py) agrees with the
 * brewery demo on every state's count, and reports failures as it does. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "support/brewery.h"

/* The demo's state list, compiled in (tests link only the library). */
#include "../demos/brewery/common/client-states.c"

TestSuite(brewery_client, .fini = cli_server_stop, .timeout = 30);

#define PEER ASYNC_SRC_DIR "/tests/bench/peer-brewery.py"

/* Runs the peer; returns its exit status and its stdout in out. */
static int peer(const char *base, const char *states, char *out, size_t size)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "python3 %s --require-requests --mode serial,async --base-url %s --states %s",
             PEER, base, states);
    FILE *f = popen(cmd, "r");
    cr_assert_not_null(f);
    size_t n = fread(out, 1, size - 1, f);
    out[n] = 0;
    int st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The count the peer printed for a state ("python-counts: a=1,b=2"), or -1. */
static long peer_count(const char *out, const char *state)
{
    const char *line = strstr(out, "python-counts: ");
    cr_assert_not_null(line, "no counts in: %s", out);
    char key[64];
    snprintf(key, sizeof key, "%s=", state);
    for (const char *p = line + 15; *p && *p != '\n';) {
        if (strncmp(p, key, strlen(key)) == 0) return strtol(p + strlen(key), NULL, 10);
        p += strcspn(p, ",\n");
        if (*p == ',') p++;
    }
    return -1;
}

/* How many counts the peer printed. */
static int peer_states(const char *out)
{
    const char *line = strstr(out, "python-counts: ");
    cr_assert_not_null(line, "no counts in: %s", out);
    int n = 0;
    for (const char *p = line + 15; *p && *p != '\n'; p++) n += *p == '=';
    return n;
}

Test(brewery_client, python_peer_counts_as_we_do, .timeout = 180)
{
    /* The demo's list of states; the peer has its own, so the number of
     * counts each printed checks the lists against each other. */
    const char *const *all = client_all_states;
    enum { N = CLIENT_NALL_STATES };
    long want[N];
    cli_csv_counts(all, N, want);
    const char *flags[] = {"--data", CSV, "--latency", "2", NULL};
    cli_server_start(flags);
    char base[64], args[256];
    snprintf(base, sizeof base, "http://127.0.0.1:%u/v1", cli_server.port);
    static char out[16384];
    int st = peer(base, "all", out, sizeof out);
    cr_assert_eq(st, 0, "peer-brewery.py failed (%d): %s", st, out);
    cr_assert(strstr(out, "python-client: requests"), "%s", out);
    snprintf(args, sizeof args, "--mode serial,async,meta --states all --base-url %s", base);
    json_t *j;
    cr_assert_eq(cli_demo(args, &j), 0);
    cr_assert_eq(peer_states(out), N, "the peer counted other states: %s", out);
    for (int i = 0; i < 3; i++) {
        const char *m = (const char *[]){"serial", "async", "meta"}[i];
        cr_assert_eq(json_object_size(json_object_get(cli_mode(j, m), "counts")), N, "%s", m);
    }
    for (int i = 0; i < N; i++) {
        cr_assert_eq(peer_count(out, all[i]), want[i], "python, %s", all[i]);
        cr_assert_eq(cli_count(j, "serial", all[i]), want[i], "serial, %s", all[i]);
        cr_assert_eq(cli_count(j, "async", all[i]), want[i], "async, %s", all[i]);
        cr_assert_eq(cli_count(j, "meta", all[i]), want[i], "meta, %s", all[i]);
    }
    json_decref(j);
}

Test(brewery_client, python_peer_reports_failures)
{
    /* The lab's loop would page this server forever; the peer stops, says
     * why, and exits 1 instead of printing a count. */
    cli_fake_t f = {.mode = FAKE_SAME_PAGE};
    cli_fake_start(&f);
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%u/v1", f.port);
    static char out[4096];
    int st = peer(base, "maryland", out, sizeof out);
    cli_fake_stop(&f);
    cr_assert_eq(st, 1, "exit %d: %s", st, out);
    cr_assert(strstr(out, "python-failed: maryland=page 2 repeats an earlier page"), "%s", out);
    cr_assert_eq(peer_count(out, "maryland"), -1, "%s", out);
}
