/* Tests of demos/brewery/brewery-server, the local Open Brewery DB stand-in:
 * each test starts the built binary on a free port, talks to it with
 * libcurl's easy (and for concurrency, multi) interface, and stops it with
 * SIGTERM, checking that it exits 0.  Covered: the lab's four counts with the
 * shared CSV and with the built-in data (paging and meta), LIKE matching
 * (case, '_' wildcard, West Virginia inside virginia), validation (422) and
 * 404s, paging, one brewery by id, the rate limit (429 + Retry-After), every
 * fault flag, latency without a thread per request, and a ragged CSV.
 * Issue 10: the LIKE matcher against a DP reference and on its worst case,
 * SIGTERM during a long request, garbage request lines (400), invalid UTF-8
 * paths (404), a slowloris and a connection flood with a bystander served.
 * Issue 12: by_country, by_postal, by_ids, by_dist, sort, random, search and
 * autocomplete, each against the CSV as this file reads it with libcsv. */
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <ctype.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "support/run.h"

#define SERVER ASYNC_OUT_DIR "/demos/brewery/brewery-server"
#define CSV ASYNC_SRC_DIR "/../shared/data/openbrewerydb/breweries.csv"

/* The lab's states and the real service's counts for them. */
static const struct {
    const char *query;
    long count;
} lab[] = {
    { "district_of_columbia", 22 },
    { "maryland", 158 },
    { "new_york", 419 },
    { "virginia", 295 },
};

typedef struct server {
    pid_t pid;
    unsigned port;
} server_t;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* In a forked child before exec: if the test process dies (a failed
 * cr_assert ends it at once), the kernel sends the server SIGTERM, so no
 * server outlives its test. */
static struct rlimit child_nofile;   /* applied to the next server if set */

static void child_setup(void)
{
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (child_nofile.rlim_max)
        setrlimit(RLIMIT_NOFILE, &child_nofile);
}

/* Starts the server with `--port 0 --quiet` and the NULL-terminated extra
 * arguments, and reads its port.  Returns false if it printed no port. */
static bool server_spawn(server_t *s, const char *first, va_list ap)
{
    const char *argv[40] = { SERVER, "--port", "0", "--quiet" };
    int argc = 4, out[2];
    for (const char *a = first; a && argc < 39; a = va_arg(ap, const char *))
        argv[argc++] = a;
    argv[argc] = NULL;
    cr_assert_eq(pipe2(out, O_CLOEXEC), 0);
    s->pid = fork();
    cr_assert_geq(s->pid, 0);
    if (s->pid == 0) {
        child_setup();
        dup2(out[1], 1);
        execv(SERVER, (char *const *)argv);
        _exit(127);
    }
    close(out[1]);

    char line[128];
    size_t n = 0;
    struct pollfd pfd = { out[0], POLLIN, 0 };
    while (n < sizeof line - 1 && poll(&pfd, 1, 30000) == 1) {
        if (read(out[0], &line[n], 1) != 1)
            break;
        if (line[n++] == '\n')
            break;
    }
    line[n] = '\0';
    close(out[0]);
    s->port = 0;
    return sscanf(line, "listening on http://127.0.0.1:%u\n", &s->port) == 1 && s->port > 0;
}

static void server_start(server_t *s, const char *first, ...)
{
    va_list ap;
    va_start(ap, first);
    bool ok = server_spawn(s, first, ap);
    va_end(ap);
    cr_assert(ok, "brewery-server did not print its port (is it built? %s)", SERVER);
}

/* Waits for the child to exit and returns its wait status. */
static int server_wait(server_t *s)
{
    int status = 0;
    cr_assert_eq(waitpid(s->pid, &status, 0), s->pid);
    return status;
}

/* SIGTERM, then the server must exit 0 on its own (clean shutdown). */
static void server_stop(server_t *s)
{
    cr_assert_eq(kill(s->pid, SIGTERM), 0);
    int status = server_wait(s);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "brewery-server did not exit 0 on SIGTERM (status %#x)", status);
}

typedef struct resp {
    CURLcode rc;
    long status;
    char *body;
    size_t len;
    char retry_after[32];
    char remaining[32];
    double secs;
} resp_t;

static size_t on_body(char *p, size_t size, size_t n, void *cls)
{
    resp_t *r = cls;
    r->body = realloc(r->body, r->len + size * n + 1);
    memcpy(r->body + r->len, p, size * n);
    r->len += size * n;
    r->body[r->len] = '\0';
    return size * n;
}

static void header_value(const char *line, size_t len, const char *name, char *dst, size_t cap)
{
    size_t nl = strlen(name);
    if (len <= nl || strncasecmp(line, name, nl) != 0)
        return;
    const char *v = line + nl;
    size_t vl = len - nl;
    while (vl && (*v == ' '))
        v++, vl--;
    while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n'))
        vl--;
    snprintf(dst, cap, "%.*s", (int)vl, v);
}

static size_t on_header(char *p, size_t size, size_t n, void *cls)
{
    resp_t *r = cls;
    header_value(p, size * n, "Retry-After:", r->retry_after, sizeof r->retry_after);
    header_value(p, size * n, "X-RateLimit-Remaining:", r->remaining, sizeof r->remaining);
    return size * n;
}

static CURL *easy_for(const server_t *s, const char *path, resp_t *r, long timeout_ms)
{
    char url[2100];
    snprintf(url, sizeof url, "http://127.0.0.1:%u%s", s->port, path);
    CURL *e = curl_easy_init();
    cr_assert_not_null(e);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
    return e;
}

static resp_t get_t(const server_t *s, const char *path, long timeout_ms)
{
    resp_t r = { 0 };
    CURL *e = easy_for(s, path, &r, timeout_ms);
    double t0 = now_s();
    r.rc = curl_easy_perform(e);
    r.secs = now_s() - t0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &r.status);
    curl_easy_cleanup(e);
    return r;
}

static resp_t get(const server_t *s, const char *fmt, ...)
{
    char path[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(path, sizeof path, fmt, ap);
    va_end(ap);
    return get_t(s, path, 20000);
}

/* GET that must answer 200 with JSON; returns the parsed body. */
static json_t *get_json(const server_t *s, const char *path)
{
    resp_t r = get(s, "%s", path);
    cr_assert_eq(r.rc, CURLE_OK, "%s: %s", path, curl_easy_strerror(r.rc));
    cr_assert_eq(r.status, 200, "%s: status %ld: %s", path, r.status, r.body ? r.body : "");
    json_error_t je;
    json_t *v = json_loadb(r.body, r.len, 0, &je);
    cr_assert_not_null(v, "%s: bad JSON: %s", path, je.text);
    free(r.body);
    return v;
}

/* Counts a state the lab's way: per_page=200, next page until a short one. */
static long count_by_paging(const server_t *s, const char *state, long *pages)
{
    long total = 0;
    *pages = 0;
    for (int page = 1;; page++) {
        char path[256];
        snprintf(path, sizeof path, "/v1/breweries?by_state=%s&per_page=200&page=%d", state, page);
        json_t *a = get_json(s, path);
        cr_assert(json_is_array(a));
        size_t n = json_array_size(a);
        total += (long)n;
        ++*pages;
        json_decref(a);
        if (n < 200)
            return total;
        cr_assert_lt(page, 100, "paging does not end");
    }
}

static long meta_total(const server_t *s, const char *query)
{
    char path[2048];
    snprintf(path, sizeof path, "/v1/breweries/meta?%s", query);
    json_t *m = get_json(s, path);
    cr_assert(json_is_integer(json_object_get(m, "total")), "meta has no integer total");
    long t = (long)json_integer_value(json_object_get(m, "total"));
    json_decref(m);
    return t;
}

static void check_lab_counts(const server_t *s)
{
    for (size_t i = 0; i < sizeof lab / sizeof lab[0]; i++) {
        long pages, n = count_by_paging(s, lab[i].query, &pages);
        cr_expect_eq(n, lab[i].count, "%s by paging: %ld, want %ld", lab[i].query, n,
                     lab[i].count);
        cr_expect_eq(pages, lab[i].count / 200 + 1);
        char q[64];
        snprintf(q, sizeof q, "by_state=%s", lab[i].query);
        long m = meta_total(s, q);
        cr_expect_eq(m, lab[i].count, "%s by meta: %ld, want %ld", lab[i].query, m, lab[i].count);
    }
}

static bool have_csv(void)
{
    return access(CSV, R_OK) == 0;
}

static void setup(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void teardown(void)
{
    curl_global_cleanup();
}

TestSuite(brewery_server, .init = setup, .fini = teardown);

Test(brewery_server, csv_lab_counts, .timeout = 60)
{
    if (!have_csv())
        cr_skip_test("no %s", CSV);
    server_t s;
    server_start(&s, "--latency", "0", "--data", CSV, NULL);
    check_lab_counts(&s);
    /* The whole file, and West Virginia inside "virginia" as the service does. */
    cr_expect_eq(meta_total(&s, "per_page=1"), 11822);
    json_t *m = get_json(&s, "/v1/breweries/meta?by_state=virginia");
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(m, "by_state"), "Virginia")), 255);
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(m, "by_state"), "West Virginia")), 40);
    cr_expect(json_is_object(json_object_get(m, "by_type")));
    cr_expect_eq(json_integer_value(json_object_get(m, "page")), 1);
    cr_expect_eq(json_integer_value(json_object_get(m, "per_page")), 50);
    json_decref(m);
    server_stop(&s);
}

Test(brewery_server, builtin_lab_counts, .timeout = 60)
{
    server_t s;
    server_start(&s, "--latency", "0", NULL);
    check_lab_counts(&s);
    cr_expect_eq(meta_total(&s, "per_page=1"), 11822);
    server_stop(&s);
}

Test(brewery_server, builtin_matches_csv_per_state, .timeout = 60)
{
    if (!have_csv())
        cr_skip_test("no %s", CSV);
    server_t a, b;
    server_start(&a, "--latency", "0", "--data", CSV, NULL);
    server_start(&b, "--latency", "0", NULL);
    json_t *ma = get_json(&a, "/v1/breweries/meta?per_page=200");
    json_t *mb = get_json(&b, "/v1/breweries/meta?per_page=200");
    cr_expect(json_equal(json_object_get(ma, "by_state"), json_object_get(mb, "by_state")),
              "per-state counts of the built-in data differ from the CSV's");
    cr_expect(json_equal(json_object_get(ma, "by_type"), json_object_get(mb, "by_type")));
    json_decref(ma);
    json_decref(mb);
    server_stop(&a);
    server_stop(&b);
}

Test(brewery_server, state_match_is_like_case_insensitive_with_wildcard, .timeout = 30)
{
    server_t s;
    server_start(&s, "--latency", "0", NULL);
    static const char *const ny[] = { "by_state=new_york", "by_state=NEW_YORK",
                                      "by_state=New%20York", "by_state=new+york",
                                      "by_state=nEw%20yOrK", "by_state=ew_yor" };
    for (size_t i = 0; i < sizeof ny / sizeof ny[0]; i++)
        cr_expect_eq(meta_total(&s, ny[i]), 419, "%s", ny[i]);
    cr_expect_eq(meta_total(&s, "by_state=v_rginia"), 295);
    cr_expect_eq(meta_total(&s, "by_state=west_virginia"), 40);
    cr_expect_eq(meta_total(&s, "by_state=district%20of%20columbia"), 22);
    cr_expect_eq(meta_total(&s, "by_state=no_such_state"), 0);
    json_t *a = get_json(&s, "/v1/breweries?by_state=no_such_state");
    cr_expect(json_is_array(a) && json_array_size(a) == 0);
    json_decref(a);
    server_stop(&s);
}

Test(brewery_server, other_filters, .timeout = 30)
{
    if (!have_csv())
        cr_skip_test("no %s", CSV);
    server_t s;
    server_start(&s, "--latency", "0", "--data", CSV, NULL);
    cr_expect_eq(meta_total(&s, "by_state=new_york&by_type=micro"), 226);
    cr_expect_eq(meta_total(&s, "by_state=new_york&by_type=micro,brewpub"), 337);
    json_t *a = get_json(&s, "/v1/breweries?by_city=tupper%20lake&by_name=big_tupper");
    cr_expect_eq(json_array_size(a), 1);
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(a, 0), "name")),
                     "Big Tupper Brewing");
    json_decref(a);
    resp_t r = get(&s, "/v1/breweries?by_type=nonsense");
    cr_expect_eq(r.status, 422);
    free(r.body);
    server_stop(&s);
}

static void expect_422(const server_t *s, const char *path, const char *field)
{
    resp_t r = get(s, "%s", path);
    cr_assert_eq(r.rc, CURLE_OK);
    cr_expect_eq(r.status, 422, "%s: status %ld", path, r.status);
    json_t *v = json_loadb(r.body, r.len, 0, NULL);
    cr_expect(json_is_string(json_object_get(v, "message")), "%s: no message", path);
    cr_expect(json_is_array(json_object_get(json_object_get(v, "errors"), field)),
              "%s: no errors.%s in %s", path, field, r.body);
    json_decref(v);
    free(r.body);
}

Test(brewery_server, validation_422, .timeout = 30)
{
    server_t s;
    server_start(&s, "--latency", "0", NULL);
    expect_422(&s, "/v1/breweries?per_page=201", "per_page");
    expect_422(&s, "/v1/breweries?per_page=0", "per_page");
    expect_422(&s, "/v1/breweries?per_page=abc", "per_page");
    expect_422(&s, "/v1/breweries?per_page=99999999999999999999999", "per_page");
    expect_422(&s, "/v1/breweries?page=0", "page");
    expect_422(&s, "/v1/breweries?page=-3", "page");
    expect_422(&s, "/v1/breweries?by_state=ny", "by_state");
    expect_422(&s, "/v1/breweries?by_state=", "by_state");
    expect_422(&s, "/v1/breweries/meta?per_page=500", "per_page");
    expect_422(&s, "/v1/breweries/meta?by_state=va", "by_state");
    /* The limits themselves are fine. */
    json_t *a = get_json(&s, "/v1/breweries?per_page=200");
    cr_expect_eq(json_array_size(a), 200);
    json_decref(a);
    a = get_json(&s, "/v1/breweries?per_page=1&by_state=ohi");
    cr_expect_eq(json_array_size(a), 1);
    json_decref(a);
    server_stop(&s);
}

static void expect_404(const server_t *s, const char *path)
{
    resp_t r = get(s, "%s", path);
    cr_assert_eq(r.rc, CURLE_OK);
    cr_expect_eq(r.status, 404, "%s: status %ld", path, r.status);
    json_t *v = json_loadb(r.body, r.len, 0, NULL);
    cr_expect(json_is_string(json_object_get(v, "message")), "%s: body %s", path, r.body);
    json_decref(v);
    free(r.body);
}

Test(brewery_server, not_found_404, .timeout = 30)
{
    server_t s;
    server_start(&s, "--latency", "0", NULL);
    expect_404(&s, "/v1/breweries/no-such-id");
    expect_404(&s, "/v1/breweries/a/b");
    expect_404(&s, "/v1/brewery");
    expect_404(&s, "/v2/breweries");
    expect_404(&s, "/");
    resp_t r = get_t(&s, "/v1/breweries", 5000);
    cr_expect_eq(r.status, 200);
    free(r.body);
    server_stop(&s);
}

Test(brewery_server, paging_and_fields, .timeout = 30)
{
    server_t s;
    server_start(&s, "--latency", "0", NULL);
    json_t *a = get_json(&s, "/v1/breweries");
    cr_expect_eq(json_array_size(a), 50, "default per_page is 50");
    static const char *const fields[] = {
        "id", "name", "brewery_type", "address_1", "address_2", "address_3", "city",
        "state_province", "postal_code", "country", "longitude", "latitude", "phone",
        "website_url", "state", "street",
    };
    json_t *b = json_array_get(a, 0);
    cr_assert(json_is_object(b));
    cr_expect_eq(json_object_size(b), sizeof fields / sizeof fields[0]);
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        cr_expect_not_null(json_object_get(b, fields[i]), "no field %s", fields[i]);

    /* Pages are disjoint and ordered: page 2 of 25 starts where page 1 of 50 is at 25. */
    json_t *p2 = get_json(&s, "/v1/breweries?per_page=25&page=2");
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(p2, 0), "id")),
                     json_string_value(json_object_get(json_array_get(a, 25), "id")));
    json_decref(p2);

    /* One brewery by id. */
    const char *id = json_string_value(json_object_get(b, "id"));
    char path[128];
    snprintf(path, sizeof path, "/v1/breweries/%s", id);
    json_t *one = get_json(&s, path);
    cr_expect(json_equal(one, b), "GET /v1/breweries/{id} differs from the list entry");
    json_decref(one);
    json_decref(a);

    /* A page past the end is an empty array. */
    resp_t r = get(&s, "/v1/breweries?by_state=district_of_columbia&page=2");
    cr_expect_eq(r.status, 200);
    cr_expect_str_eq(r.body, "[]");
    free(r.body);
    r = get(&s, "/v1/breweries?page=99999999999999");
    cr_expect_eq(r.status, 200);
    cr_expect_str_eq(r.body, "[]");
    free(r.body);
    server_stop(&s);
}

Test(brewery_server, rate_limit_429_with_retry_after, .timeout = 30)
{
    server_t s;
    server_start(&s, "--latency", "0", "--rate-limit", "3", "--rate-window", "1", NULL);
    for (int i = 0; i < 3; i++) {
        resp_t r = get(&s, "/v1/breweries?per_page=1");
        cr_expect_eq(r.status, 200, "request %d", i + 1);
        free(r.body);
    }
    resp_t r = get(&s, "/v1/breweries?per_page=1");
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
    r = get(&s, "/v1/breweries?per_page=1");
    cr_expect_eq(r.status, 200);
    free(r.body);
    server_stop(&s);
}

Test(brewery_server, rate_limit_default_window_is_a_minute, .timeout = 30)
{
    server_t s;
    server_start(&s, "--latency", "0", "--rate-limit", "1", NULL);
    resp_t r = get(&s, "/v1/breweries?per_page=1");
    cr_expect_eq(r.status, 200);
    free(r.body);
    r = get(&s, "/v1/breweries?per_page=1");
    cr_expect_eq(r.status, 429);
    cr_expect(atoi(r.retry_after) >= 55 && atoi(r.retry_after) <= 60, "Retry-After %s",
              r.retry_after);
    free(r.body);
    server_stop(&s);
}

Test(brewery_server, fault_fail_rate, .timeout = 30)
{
    server_t s;
    server_start(&s, "--latency", "0", "--fail-rate", "1", NULL);
    resp_t r = get(&s, "/v1/breweries?by_state=maryland");
    cr_expect_eq(r.status, 500);
    json_t *v = json_loadb(r.body, r.len, 0, NULL);
    cr_expect(json_is_string(json_object_get(v, "message")));
    json_decref(v);
    free(r.body);
    server_stop(&s);
}

Test(brewery_server, fault_fail_first, .timeout = 30)
{
    server_t s;
    server_start(&s, "--latency", "0", "--fail-first", "2", NULL);
    long want[] = { 500, 500, 200, 200 };
    for (int i = 0; i < 4; i++) {
        resp_t r = get(&s, "/v1/breweries/meta?by_state=maryland");
        cr_expect_eq(r.status, want[i], "request %d: %ld", i + 1, r.status);
        free(r.body);
    }
    server_stop(&s);
}

Test(brewery_server, fault_drop, .timeout = 30)
{
    const char *latency[] = { "0", "50" };
    for (int i = 0; i < 2; i++) {
        server_t s;
        server_start(&s, "--latency", latency[i], "--drop-rate", "1", NULL);
        resp_t r = get(&s, "/v1/breweries?by_state=maryland");
        cr_expect_eq(r.rc, CURLE_GOT_NOTHING, "latency %s: %s", latency[i],
                     curl_easy_strerror(r.rc));
        free(r.body);
        server_stop(&s);
    }
}

Test(brewery_server, fault_malformed, .timeout = 30)
{
    server_t s;
    server_start(&s, "--latency", "0", "--malformed-rate", "1", NULL);
    static const char *const paths[] = { "/v1/breweries?by_state=maryland",
                                         "/v1/breweries/meta?by_state=maryland",
                                         "/v1/breweries?by_state=nowhere" };
    for (size_t i = 0; i < 3; i++) {
        resp_t r = get(&s, "%s", paths[i]);
        cr_expect_eq(r.status, 200);
        json_error_t je;
        json_t *v = json_loadb(r.body ? r.body : "", r.len, 0, &je);
        cr_expect_null(v, "%s: body parsed: %s", paths[i], r.body);
        json_decref(v);
        free(r.body);
    }
    server_stop(&s);
}

Test(brewery_server, fault_stall_and_shutdown_while_held, .timeout = 30)
{
    server_t s;
    server_start(&s, "--latency", "0", "--stall-rate", "1", "--stall-ms", "20000", NULL);
    resp_t r = get_t(&s, "/v1/breweries?by_state=maryland", 300);
    cr_expect_eq(r.rc, CURLE_OPERATION_TIMEDOUT, "%s", curl_easy_strerror(r.rc));
    cr_expect_geq(r.secs, 0.25);
    free(r.body);
    /* The stalled connection is still held; SIGTERM must end the server promptly. */
    double t0 = now_s();
    server_stop(&s);
    cr_expect_lt(now_s() - t0, 10.0 * test_slack(), "shutdown waited for the stall");
}

Test(brewery_server, faults_deterministic_with_seed, .timeout = 30)
{
    long seq[2][30];
    for (int run = 0; run < 2; run++) {
        server_t s;
        server_start(&s, "--latency", "0", "--fail-rate", "0.5", "--seed", "42", NULL);
        for (int i = 0; i < 30; i++) {
            resp_t r = get(&s, "/v1/breweries?per_page=1");
            seq[run][i] = r.status;
            free(r.body);
        }
        server_stop(&s);
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
    server_t s;
    server_start(&s, "--latency", "200", NULL);
    resp_t r = get(&s, "/v1/breweries?per_page=1");
    cr_expect_eq(r.status, 200);
    cr_expect_geq(r.secs, 0.2, "answered after %.3f s", r.secs);
    free(r.body);
    server_stop(&s);
}

/* n requests at once with curl multi, each on its own connection; returns
 * the wall time and checks that each answered 200. */
static double concurrent(const server_t *s, int n)
{
    CURLM *m = curl_multi_init();
    CURL **e = calloc((size_t)n, sizeof *e);
    resp_t *r = calloc((size_t)n, sizeof *r);
    for (int i = 0; i < n; i++) {
        char path[128];
        snprintf(path, sizeof path, "/v1/breweries?per_page=1&page=%d", i + 1);
        e[i] = easy_for(s, path, &r[i], 60000);
        curl_multi_add_handle(m, e[i]);
    }
    double t0 = now_s();
    int running = 1;
    while (running) {
        cr_assert_eq(curl_multi_perform(m, &running), CURLM_OK);
        if (running)
            curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    double secs = now_s() - t0;
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
    server_t s;
    server_start(&s, "--latency", "200", NULL);
    double secs = concurrent(&s, 50);
    /* Served one after another they would take 10 s; overlapped, ~0.2 s. */
    cr_expect_geq(secs, 0.2);
    cr_expect_lt(secs, 5.0 * test_slack(), "50 requests at 200 ms latency took %.2f s", secs);
    server_stop(&s);
}

Test(brewery_server, many_held_connections, .timeout = 60)
{
    /* 800 connections fit the usual soft limit of 1024 descriptors. */
    server_t s;
    server_start(&s, "--latency", "1000", NULL);
    double secs = concurrent(&s, 800);
    cr_expect_geq(secs, 1.0);
    cr_expect_lt(secs, 20.0 * test_slack(), "800 requests at 1 s latency took %.2f s", secs);
    server_stop(&s);
}

Test(brewery_server, methods, .timeout = 30)
{
    server_t s;
    server_start(&s, "--latency", "0", NULL);
    resp_t r = { 0 };
    CURL *e = easy_for(&s, "/v1/breweries", &r, 5000);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, "x=1");
    cr_expect_eq(curl_easy_perform(e), CURLE_OK);
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &r.status);
    cr_expect_eq(r.status, 405);
    curl_easy_cleanup(e);
    free(r.body);
    server_stop(&s);
}

/* Writes `text` to a temporary CSV and runs the server on it; returns the
 * exit status and what it wrote to stderr. */
static int run_on_csv(const char *text, char *err, size_t cap)
{
    char path[] = "/tmp/brewery-csv-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);

    server_t s;
    bool started;
    int out[2], ep[2];
    cr_assert_eq(pipe2(out, O_CLOEXEC), 0);
    cr_assert_eq(pipe2(ep, O_CLOEXEC), 0);
    s.pid = fork();
    if (s.pid == 0) {
        child_setup();
        dup2(out[1], 1);
        dup2(ep[1], 2);
        execl(SERVER, SERVER, "--port", "0", "--quiet", "--data", path, (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    close(ep[1]);
    size_t n = 0;
    ssize_t k;
    struct pollfd pfd = { ep[0], POLLIN, 0 };
    while (n < cap - 1 && poll(&pfd, 1, 20000) == 1 && (k = read(ep[0], err + n, cap - 1 - n)) > 0)
        n += (size_t)k;
    err[n] = '\0';
    char line[128];
    k = read(out[0], line, sizeof line - 1);
    started = k > 0;
    if (started)
        kill(s.pid, SIGTERM);
    close(out[0]);
    close(ep[0]);
    int status = 0;
    waitpid(s.pid, &status, 0);
    unlink(path);
    cr_expect(!started, "the server started on a bad CSV");
    return status;
}

static const char header[] =
    "id,name,brewery_type,address_1,address_2,address_3,city,state_province,postal_code,"
    "country,phone,website_url,longitude,latitude\n";

Test(brewery_server, ragged_csv_names_the_line, .timeout = 30)
{
    char text[2048], err[1024];
    snprintf(text, sizeof text,
             "%s"
             "a1,One,micro,,,,Town,Ohio,1,United States,,,,\n"
             "a2,Two,micro,,,,Town,Ohio,1,United States,,\n"
             "a3,Three,micro,,,,Town,Ohio,1,United States,,,,\n",
             header);
    int status = run_on_csv(text, err, sizeof err);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) != 0, "status %#x", status);
    cr_expect_not_null(strstr(err, "line 3"), "stderr: %s", err);
}

Test(brewery_server, multiline_quoted_field_is_fine_and_lines_still_count, .timeout = 30)
{
    char text[2048], err[1024];
    /* Row 2 has a name over two lines; the ragged row starts on line 4. */
    snprintf(text, sizeof text,
             "%s"
             "a1,\"Two\nLines\",micro,,,,Town,Ohio,1,United States,,,,\n"
             "a2,Two,micro,,,,Town,Ohio,1,United States,,,,\n"
             "a3,Three,micro,,,,Town,Ohio\n",
             header);
    int status = run_on_csv(text, err, sizeof err);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) != 0);
    cr_expect_not_null(strstr(err, "line 5"), "stderr: %s", err);
}

Test(brewery_server, broken_quote_and_duplicate_id, .timeout = 30)
{
    char text[2048], err[1024];
    snprintf(text, sizeof text, "%sa1,One,micro,,,,Town,Ohio,1,United States,,,,\n"
                                "a2,\"Two\"x,micro,,,,Town,Ohio,1,United States,,,,\n", header);
    int status = run_on_csv(text, err, sizeof err);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 1, "status %#x", status);
    cr_expect_not_null(strstr(err, "line 3"), "stderr: %s", err);
    snprintf(text, sizeof text, "%sa1,One,micro,,,,Town,Ohio,1,United States,,,,\n"
                                "a1,Two,micro,,,,Town,Ohio,1,United States,,,,\n", header);
    status = run_on_csv(text, err, sizeof err);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 1, "status %#x", status);
    cr_expect_not_null(strstr(err, "duplicate"), "stderr: %s", err);
}

Test(brewery_server, small_csv_serves_multiline_names, .timeout = 30)
{
    char path[] = "/tmp/brewery-csv-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    dprintf(fd, "%sa1,\"Two\nLines\",micro,,,,Town,Ohio,1,United States,,,,\n"
                "a2,Plain,brewpub,1 Road,,,City,Ohio,2,United States,555,http://x,1.5,2.5",
            header);
    close(fd);
    server_t s;
    server_start(&s, "--latency", "0", "--data", path, NULL);
    json_t *a = get_json(&s, "/v1/breweries?by_state=ohio");
    cr_expect_eq(json_array_size(a), 2);
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(a, 0), "name")),
                     "Two\nLines");
    json_t *b = json_array_get(a, 1);
    cr_expect(json_is_null(json_object_get(b, "address_2")));
    cr_expect_str_eq(json_string_value(json_object_get(b, "street")), "1 Road");
    cr_expect_str_eq(json_string_value(json_object_get(b, "longitude")), "1.5");
    json_decref(a);
    server_stop(&s);
    unlink(path);
}

Test(brewery_server, bad_arguments_and_missing_file, .timeout = 30)
{
    int status;
    /* A missing file: exit 1 with the file's name. */
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 1);
        dup2(devnull, 2);
        execl(SERVER, SERVER, "--port", "0", "--data", "/nonexistent/x.csv", (char *)NULL);
        _exit(127);
    }
    waitpid(pid, &status, 0);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 1, "status %#x", status);
    static const char *const bad[][2] = {
        { "--latency", "-1" }, { "--fail-rate", "1.5" }, { "--port", "70000" },
        { "--rate-window", "0" }, { "--bogus", "1" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        pid = fork();
        if (pid == 0) {
            int devnull = open("/dev/null", O_WRONLY);
            dup2(devnull, 1);
            dup2(devnull, 2);
            execl(SERVER, SERVER, bad[i][0], bad[i][1], (char *)NULL);
            _exit(127);
        }
        waitpid(pid, &status, 0);
        cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 2, "%s %s: status %#x", bad[i][0],
                  bad[i][1], status);
    }
}

/* ---- LIKE: linear in the worst case, and right --------------------------- */

/* The matcher is compiled in directly: tests link only the library, and it has
 * no dependency of its own. */
#include "../demos/brewery/common/server-like.c"

/* One LIKE unit: a byte and the continuation bytes after it, as the matcher
 * steps through text, with ASCII letters folded. */
static size_t units(const char *s, uint32_t *out, size_t cap)
{
    size_t n = 0;
    while (*s && n < cap) {
        uint32_t u = (unsigned char)*s++;
        if (u >= 'A' && u <= 'Z')
            u += 'a' - 'A';
        while ((*s & 0xC0) == 0x80)
            u = u << 8 | (unsigned char)*s++;
        out[n++] = u;
    }
    return n;
}

/* The textbook dynamic program for LIKE '%pattern%', O(m*n) and obviously
 * right: row i holds "the first i text units match the first j pattern
 * units" for every j. */
static bool like_ref(const char *pattern, const char *text)
{
    size_t pl = strlen(pattern), tl = strlen(text);
    uint32_t *p = malloc((pl + 2) * sizeof *p), *t = malloc((tl + 1) * sizeof *t);
    size_t m = units(pattern, p + 1, pl) + 2, n = units(text, t, tl);
    p[0] = p[m - 1] = '%';
    bool *prev = calloc(m + 1, 1), *cur = calloc(m + 1, 1);
    prev[0] = true;
    for (size_t j = 1; j <= m; j++)
        prev[j] = prev[j - 1] && p[j - 1] == '%';
    for (size_t i = 1; i <= n; i++) {
        cur[0] = false;
        for (size_t j = 1; j <= m; j++) {
            uint32_t c = p[j - 1];
            cur[j] = c == '%' ? cur[j - 1] || prev[j]
                              : prev[j - 1] && (c == '_' || c == t[i - 1]);
        }
        bool *x = prev;
        prev = cur;
        cur = x;
    }
    bool r = prev[m];
    free(p);
    free(t);
    free(prev);
    free(cur);
    return r;
}

static void random_like_string(unsigned *seed, char *dst, int maxunits, bool wild)
{
    /* Few letters so that matches are common; two with the same UTF-8 lead
     * byte (é, ü) so that a half-matched code point must back off. */
    static const char *const lit[] = { "a", "A", "b", "B", "\xc3\xa9", "\xc3\xbc" };
    static const char *const all[] = { "a", "A", "b", "B", "\xc3\xa9", "\xc3\xbc", "%", "_", "%", "_" };
    int n = rand_r(seed) % (maxunits + 1);
    dst[0] = '\0';
    for (int i = 0; i < n; i++)
        strcat(dst, wild ? all[rand_r(seed) % 10] : lit[rand_r(seed) % 6]);
}

Test(brewery_server, like_matches_a_reference_on_random_patterns, .timeout = 60)
{
    unsigned seed = 12345;
    char pat[64], text[64];
    long yes = 0, runs = 200000;
    for (long k = 0; k < runs; k++) {
        random_like_string(&seed, pat, 9, true);
        random_like_string(&seed, text, 14, false);
        bool want = like_ref(pat, text), got = bsrv_like(pat, text);
        cr_assert_eq(got, want, "LIKE '%%%s%%' on '%s': %d, reference %d", pat, text, got, want);
        yes += want;
    }
    /* The property is only worth something if both answers are common. */
    cr_expect(yes > runs / 10 && yes < runs - runs / 10, "%ld of %ld matched", yes, runs);
    cr_expect(bsrv_like("", ""));
    cr_expect(bsrv_like("%", "x"));
    cr_expect(!bsrv_like("_", ""));
}

Test(brewery_server, like_worst_case_is_polynomial, .timeout = 60)
{
    /* The issue's pattern and a longer one of the same shape on a 2,000-code
     * point text: exponential matching takes hours here, O(m*n) about 0.1 ms. */
    char text[2001], pat[256] = "";
    memset(text, 'a', 2000);
    text[2000] = '\0';
    for (int i = 0; i < 60; i++)
        strcat(pat, "%_");
    strcat(pat, "%qqq");
    double t0 = now_s();
    for (int i = 0; i < 20; i++) {
        cr_expect(!bsrv_like("%_%_%_%_%_%_%qqq", text));
        cr_expect(!bsrv_like(pat, text));
    }
    double secs = now_s() - t0;
    cr_expect_lt(secs, 2.0 * test_slack(), "40 worst-case matches took %.2f s", secs);
}

/* ---- the CSV itself, read by the test, for answers to check against ------ */

#include <csv.h>

typedef struct table {
    char **cell;    /* nrows x ncols, "" where empty */
    size_t nrows, ncols, cap;
    char *head[32]; /* the header's column names */
    size_t col;     /* column of the field being read */
    bool in_header;
} table_t;

static void tab_field(void *s, size_t len, void *cls)
{
    table_t *t = cls;
    char *v = strndup(s ? s : "", len);
    if (t->in_header) {
        if (t->col < 32)
            t->head[t->col] = v;
        else
            free(v);
        t->ncols = ++t->col;
        return;
    }
    if (t->col < t->ncols) {
        if (t->nrows * t->ncols + t->col >= t->cap) {
            t->cap = t->cap ? t->cap * 2 : 4096;
            t->cell = realloc(t->cell, t->cap * sizeof *t->cell);
        }
        t->cell[t->nrows * t->ncols + t->col] = v;
    } else {
        free(v);
    }
    t->col++;
}

static void tab_row(int c, void *cls)
{
    table_t *t = cls;
    (void)c;
    if (t->in_header)
        t->in_header = false;
    else
        t->nrows++;
    t->col = 0;
}

/* Reads the whole CSV with libcsv (the server's loader is what is under test,
 * so this one is written separately and kept simple). */
static table_t *table_load(const char *path)
{
    table_t *t = calloc(1, sizeof *t);
    struct csv_parser p;
    t->in_header = true;
    cr_assert_eq(csv_init(&p, CSV_STRICT | CSV_STRICT_FINI), 0);
    FILE *fp = fopen(path, "r");
    cr_assert_not_null(fp, "%s: %s", path, strerror(errno));
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, fp)) > 0)
        cr_assert_eq(csv_parse(&p, buf, n, tab_field, tab_row, t), n);
    csv_fini(&p, tab_field, tab_row, t);
    csv_free(&p);
    fclose(fp);
    return t;
}

static int table_col(const table_t *t, const char *name)
{
    for (size_t i = 0; i < t->ncols; i++)
        if (strcmp(t->head[i], name) == 0)
            return (int)i;
    cr_assert_fail("no column %s", name);
    return -1;
}

static const char *cell(const table_t *t, size_t row, const char *name)
{
    return t->cell[row * t->ncols + (size_t)table_col(t, name)];
}

static void table_free(table_t *t)
{
    for (size_t i = 0; i < t->nrows * t->ncols; i++)
        free(t->cell[i]);
    for (size_t i = 0; i < t->ncols; i++)
        free(t->head[i]);
    free(t->cell);
    free(t);
}

/* The rows whose `column` is LIKE '%pattern%', by the reference matcher. */
static long count_like(const table_t *t, const char *column, const char *pattern)
{
    long n = 0;
    for (size_t r = 0; r < t->nrows; r++) {
        const char *v = cell(t, r, column);
        n += *v && like_ref(pattern, v);
    }
    return n;
}

/* ---- raw sockets ----------------------------------------------------------- */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

static int tcp_connect(const server_t *s)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0, "socket: %s", strerror(errno));
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)s->port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    cr_assert_eq(connect(fd, (struct sockaddr *)&sin, sizeof sin), 0, "connect: %s",
                 strerror(errno));
    return fd;
}

static void send_all(int fd, const char *text)
{
    size_t n = strlen(text);
    cr_assert_eq(send(fd, text, n, MSG_NOSIGNAL), (ssize_t)n, "send: %s", strerror(errno));
}

/* Reads until the peer closes, `cap` bytes arrive or `secs` pass.  Returns
 * the bytes read; *closed says whether the peer closed. */
static size_t recv_until_close(int fd, char *buf, size_t cap, double secs, bool *closed)
{
    size_t n = 0;
    double end = now_s() + secs;
    *closed = false;
    while (n < cap - 1) {
        int ms = (int)((end - now_s()) * 1000);
        struct pollfd pfd = { fd, POLLIN, 0 };
        if (ms <= 0 || poll(&pfd, 1, ms) != 1)
            break;
        ssize_t k = recv(fd, buf + n, cap - 1 - n, 0);
        if (k <= 0) {
            *closed = true;
            break;
        }
        n += (size_t)k;
    }
    buf[n] = '\0';
    return n;
}

/* Waits up to `secs` for the server to exit; kills it if it does not.
 * Returns the wait status, or -1 if it had to be killed. */
static int server_wait_for(server_t *s, double secs)
{
    double end = now_s() + secs;
    int status = 0;
    while (now_s() < end) {
        pid_t r = waitpid(s->pid, &status, WNOHANG);
        cr_assert_geq(r, 0);
        if (r == s->pid)
            return status;
        usleep(10000);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, &status, 0);
    return -1;
}

/* ---- defect 1 of issue 10: one request pinned the server ------------------ */

#define ISSUE_PATTERN "%_%_%_%_%_%_%qqq"
#define ISSUE_REQUEST "/v1/breweries/meta?by_name=%25_%25_%25_%25_%25_%25_%25qqq"

Test(brewery_server, issue_like_request_answers_promptly, .timeout = 60)
{
    server_t s;
    server_start(&s, "--latency", "0", NULL);
    resp_t r = get_t(&s, ISSUE_REQUEST, 60000);
    cr_expect_eq(r.status, 200);
    cr_expect_lt(r.secs, 2.0 * test_slack(), "built-in data: answered after %.2f s", r.secs);
    free(r.body);
    server_stop(&s);

    if (!have_csv())
        cr_skip_test("no %s", CSV);
    server_start(&s, "--latency", "0", "--data", CSV, NULL);
    r = get_t(&s, ISSUE_REQUEST, 60000);
    cr_expect_eq(r.status, 200);
    cr_expect_lt(r.secs, 2.0 * test_slack(), "CSV: answered after %.2f s", r.secs);
    free(r.body);
    /* And the answers are right: names against the reference matcher. */
    table_t *t = table_load(CSV);
    static const char *const pats[] = { ISSUE_PATTERN, "brew%co", "%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%z", "s_ein", "_ _ _" };
    for (size_t i = 0; i < sizeof pats / sizeof pats[0]; i++) {
        char *q = curl_easy_escape(NULL, pats[i], 0);
        char path[1024];
        snprintf(path, sizeof path, "by_name=%s", q);
        curl_free(q);
        cr_expect_eq(meta_total(&s, path), count_like(t, "name", pats[i]), "%s", pats[i]);
    }
    table_free(t);
    server_stop(&s);
}

/* Writes a CSV of `rows` breweries whose names are `len` letters 'a'. */
static void write_long_names_csv(const char *path, int rows, int len)
{
    FILE *fp = fopen(path, "w");
    cr_assert_not_null(fp);
    char *name = malloc((size_t)len + 1);
    memset(name, 'a', (size_t)len);
    name[len] = '\0';
    fputs(header, fp);
    for (int i = 0; i < rows; i++)
        fprintf(fp, "id%06d,%s,micro,,,,Town,Ohio,1,United States,,,,\n", i, name);
    free(name);
    cr_assert_eq(fclose(fp), 0);
}

Test(brewery_server, sigterm_stops_a_request_being_computed, .timeout = 120)
{
    /* 3,000 names of 6,000 letters and a 255-character pattern that matches
     * 254 characters at every position before it fails: about 4e9 steps of
     * O(m*n) matching, many seconds, for one request. */
    char path[] = "/tmp/brewery-long-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    write_long_names_csv(path, 3000, 6000);
    server_t s;
    server_start(&s, "--latency", "0", "--data", path, NULL);
    unlink(path);

    char req[1024] = "GET /v1/breweries/meta?by_name=";
    for (int i = 0; i < 254; i++)
        strcat(req, "_");
    strcat(req, "b HTTP/1.1\r\nHost: x\r\n\r\n");
    int c = tcp_connect(&s);
    send_all(c, req);
    usleep(500000);
    double t0 = now_s();
    cr_assert_eq(kill(s.pid, SIGTERM), 0);
    int status = server_wait_for(&s, 5.0 * test_slack());
    double secs = now_s() - t0;
    cr_expect_neq(status, -1, "still running %.1f s after SIGTERM (killed)", secs);
    cr_expect(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %#x",
              status);
    /* The request was still being computed when the signal came: it got a
     * 503 or nothing, not its answer. */
    char buf[4096];
    bool closed;
    recv_until_close(c, buf, sizeof buf, 5.0, &closed);
    cr_expect(strncmp(buf, "HTTP/1.1 200", 12) != 0, "the request finished first: %s", buf);
    close(c);
}

/* ---- issue 10 item 10: what libmicrohttpd cannot parse -------------------- */

/* Sends `req` on a fresh connection and returns what came back before the
 * server closed (asserting that it did close within 5 s when `must_close`). */
static void raw_exchange(const server_t *s, const char *req, char *buf, size_t cap,
                         bool must_close)
{
    int c = tcp_connect(s);
    send_all(c, req);
    bool closed;
    recv_until_close(c, buf, cap, 5.0 * test_slack(), &closed);
    if (must_close)
        cr_expect(closed, "%s: the server kept the connection open", req);
    close(c);
}

Test(brewery_server, garbage_request_line_gets_400_and_close, .timeout = 60)
{
    server_t s;
    server_start(&s, "--latency", "0", NULL);
    static const char *const garbage[] = {
        "GARBAGE\r\n\r\n",
        "GET\r\n\r\n",
        "GET /v1/breweries\r\n\r\n",
        "\x01\x02\x03 / HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n",
        "GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
        "\xff\xfe\xfd\r\n\r\n",
    };
    char buf[4096];
    for (size_t i = 0; i < sizeof garbage / sizeof garbage[0]; i++) {
        raw_exchange(&s, garbage[i], buf, sizeof buf, true);
        cr_expect(strncmp(buf, "HTTP/1.1 400 ", 13) == 0, "request %zu: got '%.60s'", i, buf);
        char *body = strstr(buf, "\r\n\r\n");
        json_t *v = body ? json_loads(body + 4, 0, NULL) : NULL;
        cr_expect(json_is_string(json_object_get(v, "message")), "request %zu: body %s", i, buf);
        json_decref(v);
    }
    /* A request line longer than the 16 KB the server looks at is refused
     * too, and so is a good line with more than 16 KB of headers (431). */
    char *huge = malloc(20000);
    memcpy(huge, "GET /", 5);
    memset(huge + 5, 'a', 19990);
    huge[19995] = '\0';
    raw_exchange(&s, huge, buf, sizeof buf, true);
    cr_expect(strncmp(buf, "HTTP/1.1 400 ", 13) == 0, "long line: got '%.60s'", buf);
    strcpy(huge, "GET / HTTP/1.1\r\nX: ");
    memset(huge + strlen(huge), 'b', 18000);
    huge[19 + 18000] = '\0';
    raw_exchange(&s, huge, buf, sizeof buf, true);
    cr_expect(strncmp(buf, "HTTP/1.1 431 ", 13) == 0, "long header: got '%.60s'", buf);
    free(huge);
    /* And the server goes on serving; a leading empty line is allowed. */
    raw_exchange(&s, "\r\nGET /v1/breweries?per_page=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                 buf, sizeof buf, true);
    cr_expect(strncmp(buf, "HTTP/1.1 200 ", 13) == 0, "got '%.60s'", buf);
    server_stop(&s);
}

Test(brewery_server, invalid_utf8_in_the_path_is_404, .timeout = 60)
{
    server_t s;
    server_start(&s, "--latency", "0", NULL);
    static const char *const paths[] = {
        "/\xff\xfe", "/%ff%fe", "/v1/\xc3\x28", "/v1/breweries/\xed\xa0\x80", "/v1/breweries/%ff",
        "/v1/breweries/x/\xf8\x88\x80\x80\x80",
    };
    char req[256], buf[4096];
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                 paths[i]);
        raw_exchange(&s, req, buf, sizeof buf, true);
        cr_expect(strncmp(buf, "HTTP/1.1 404 ", 13) == 0, "path %zu: got '%.60s'", i, buf);
        char *body = strstr(buf, "\r\n\r\n");
        json_t *v = body ? json_loads(body + 4, 0, NULL) : NULL;
        cr_expect(json_is_string(json_object_get(v, "message")), "path %zu: body %s", i, buf);
        json_decref(v);
    }
    server_stop(&s);
}

/* ---- issue 10 fault suite: slowloris and connection flood ----------------- */

#include <pthread.h>
#include <sys/resource.h>

/* A well-behaved client that keeps asking while an attack runs: each of its
 * requests must succeed within `bound` seconds. */
typedef struct bystander {
    const server_t *s;
    atomic_bool done;
    int asked, ok;
    double worst;
} bystander_t;

static void *bystander_main(void *arg)
{
    bystander_t *b = arg;
    while (!atomic_load(&b->done)) {
        resp_t r = get_t(b->s, "/v1/breweries/meta?by_state=maryland", 30000);
        b->asked++;
        b->ok += r.rc == CURLE_OK && r.status == 200;
        if (r.secs > b->worst)
            b->worst = r.secs;
        free(r.body);
        usleep(50000);
    }
    return NULL;
}

static void raise_nofile(void)
{
    struct rlimit rl;
    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
}

/* True if the server has closed `fd` (EOF or reset), waiting up to `secs`. */
static bool closed_by_peer(int fd, double secs)
{
    char buf[4096];
    bool closed;
    recv_until_close(fd, buf, sizeof buf, secs, &closed);
    return closed;
}

Test(brewery_server, slowloris_does_not_starve_others_and_is_cut_off, .timeout = 120)
{
    raise_nofile();
    server_t s;
    server_start(&s, "--latency", "0", "--header-timeout", "2000", "--idle-timeout", "2", NULL);
    enum { SLOW = 400 };
    static const char req[] = "GET /v1/breweries HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n\r\n";
    int fds[SLOW];
    size_t sent[SLOW] = { 0 };
    for (int i = 0; i < SLOW; i++)
        fds[i] = tcp_connect(&s);

    bystander_t b = { .s = &s };
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, bystander_main, &b), 0);
    /* One byte per connection every 100 ms: the request would take 5 s to
     * arrive, past the 2 s header deadline. */
    double t0 = now_s();
    int cut = 0;
    while (now_s() - t0 < 4.0) {
        for (int i = 0; i < SLOW; i++)
            if (fds[i] >= 0 && sent[i] < sizeof req - 1) {
                if (send(fds[i], req + sent[i], 1, MSG_NOSIGNAL) == 1) {
                    sent[i]++;
                } else {
                    close(fds[i]);
                    fds[i] = -1;
                    cut++;
                }
            }
        usleep(100000);
    }
    atomic_store(&b.done, true);
    pthread_join(th, NULL);
    cr_expect_gt(b.asked, 5, "the bystander asked only %d times in 4 s", b.asked);
    cr_expect_eq(b.ok, b.asked, "%d of %d bystander requests failed", b.asked - b.ok, b.asked);
    cr_expect_lt(b.worst, 2.0 * test_slack(), "a bystander request took %.2f s", b.worst);
    /* Every trickler is cut off at the header deadline, none was served. */
    for (int i = 0; i < SLOW; i++)
        if (fds[i] >= 0) {
            cut += closed_by_peer(fds[i], 5.0 * test_slack());
            close(fds[i]);
        }
    cr_expect_eq(cut, SLOW, "%d of %d slow connections were closed by the server", cut, SLOW);
    json_t *m = get_json(&s, "/v1/breweries/meta?per_page=1");
    json_decref(m);
    server_stop(&s);
}

Test(brewery_server, connection_flood_does_not_starve_others, .timeout = 120)
{
    raise_nofile();
    server_t s;
    server_start(&s, "--latency", "0", "--header-timeout", "2000", NULL);
    enum { FLOOD = 3000 };
    int *fds = malloc(FLOOD * sizeof *fds);
    bystander_t b = { .s = &s };
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, bystander_main, &b), 0);
    /* 3,000 connections held open and silent, then 3,000 opened and closed. */
    for (int i = 0; i < FLOOD; i++)
        fds[i] = tcp_connect(&s);
    for (int i = 0; i < FLOOD; i++)
        close(tcp_connect(&s));
    usleep(500000);
    atomic_store(&b.done, true);
    pthread_join(th, NULL);
    cr_expect_gt(b.asked, 0);
    cr_expect_eq(b.ok, b.asked, "%d of %d bystander requests failed", b.asked - b.ok, b.asked);
    cr_expect_lt(b.worst, 5.0 * test_slack(), "a bystander request took %.2f s", b.worst);
    /* The silent ones are closed by the server at the header deadline. */
    int cut = 0;
    for (int i = 0; i < FLOOD; i++) {
        cut += closed_by_peer(fds[i], 5.0 * test_slack());
        close(fds[i]);
    }
    free(fds);
    cr_expect_eq(cut, FLOOD, "%d of %d idle connections were closed by the server", cut, FLOOD);
    json_t *m = get_json(&s, "/v1/breweries/meta?per_page=1");
    json_decref(m);
    server_stop(&s);
}

/* ---- issue 12: the rest of the v1 API, checked against the CSV ------------ */

/* Every row of every page of `path` (which has no page/per_page), 200 a page. */
static json_t *all_pages(const server_t *s, const char *path)
{
    json_t *all = json_array();
    for (int page = 1;; page++) {
        char p[2048];
        snprintf(p, sizeof p, "%s%cper_page=200&page=%d", path, strchr(path, '?') ? '&' : '?',
                 page);
        json_t *a = get_json(s, p);
        cr_assert(json_is_array(a), "%s: not an array", p);
        json_array_extend(all, a);
        size_t n = json_array_size(a);
        json_decref(a);
        if (n < 200)
            return all;
        cr_assert_lt(page, 100, "paging does not end");
    }
}

static const char *jstr(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* Underscores for spaces, as clients write query values. */
static void underscored(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src);
    for (char *c = dst; *c; c++)
        if (*c == ' ')
            *c = '_';
}

/* Orders row indices of a table with a comparator that sees the table. */
typedef int (*row_cmp_fn)(const table_t *t, size_t a, size_t b);

struct row_sort {
    const table_t *t;
    row_cmp_fn cmp;
};

static int row_sort_cmp(const void *a, const void *b, void *arg)
{
    const struct row_sort *rs = arg;
    return rs->cmp(rs->t, *(const size_t *)a, *(const size_t *)b);
}

static void sort_rows(const table_t *t, size_t *ix, size_t n, row_cmp_fn cmp)
{
    struct row_sort rs = { t, cmp };
    qsort_r(ix, n, sizeof *ix, row_sort_cmp, &rs);
}

static int by_id(const table_t *t, size_t a, size_t b)
{
    return strcmp(cell(t, a, "id"), cell(t, b, "id"));
}

Test(brewery_server, api_by_country_matches_csv, .timeout = 120)
{
    if (!have_csv())
        cr_skip_test("no %s", CSV);
    table_t *t = table_load(CSV);
    server_t s, b;
    server_start(&s, "--latency", "0", "--data", CSV, NULL);
    server_start(&b, "--latency", "0", NULL);
    /* Every distinct country, counted in the file, against both data sets. */
    char **seen = calloc(t->nrows, sizeof *seen);
    size_t ns = 0;
    for (size_t r = 0; r < t->nrows; r++) {
        const char *c = cell(t, r, "country");
        bool dup = !*c;
        for (size_t i = 0; i < ns && !dup; i++)
            dup = strcmp(seen[i], c) == 0;
        if (!dup)
            seen[ns++] = (char *)c;
    }
    cr_assert_gt(ns, 5);
    for (size_t i = 0; i < ns; i++) {
        long want = 0;
        for (size_t r = 0; r < t->nrows; r++)
            want += strcmp(cell(t, r, "country"), seen[i]) == 0;
        char u[256], q[600];
        underscored(u, sizeof u, seen[i]);
        char *e = curl_easy_escape(NULL, u, 0);
        snprintf(q, sizeof q, "by_country=%s", e);
        curl_free(e);
        if (strlen(seen[i]) < 3)
            continue;   /* below the filter's 3-character minimum */
        cr_expect_eq(meta_total(&s, q), want, "%s (CSV)", seen[i]);
        cr_expect_eq(meta_total(&b, q), want, "%s (built-in)", seen[i]);
    }
    /* Case does not matter, a prefix is not a match. */
    long us = 0;
    for (size_t r = 0; r < t->nrows; r++)
        us += strcmp(cell(t, r, "country"), "United States") == 0;
    cr_expect_eq(meta_total(&s, "by_country=UNITED%20states"), us);
    cr_expect_eq(meta_total(&s, "by_country=united"), 0);
    free(seen);
    table_free(t);
    server_stop(&s);
    server_stop(&b);
}

static bool postal_prefix(const char *q, const char *v)
{
    for (; *q; q++, v++)
        if (!*v || (*q != '_' && tolower((unsigned char)*q) != tolower((unsigned char)*v)))
            return false;
    return true;
}

Test(brewery_server, api_by_postal_is_a_5_or_9_digit_prefix, .timeout = 120)
{
    if (!have_csv())
        cr_skip_test("no %s", CSV);
    table_t *t = table_load(CSV);
    server_t s;
    server_start(&s, "--latency", "0", "--data", CSV, NULL);
    int tried9 = 0;
    for (size_t r = 0, k = 0; r < t->nrows && k < 25; r += 397) {
        const char *pc = cell(t, r, "postal_code");
        if (strlen(pc) < 5)
            continue;
        k++;
        char q5[6], q9[16], path[64];
        snprintf(q5, sizeof q5, "%.5s", pc);
        long want = 0;
        for (size_t i = 0; i < t->nrows; i++)
            want += postal_prefix(q5, cell(t, i, "postal_code"));
        char *e = curl_easy_escape(NULL, q5, 0);
        snprintf(path, sizeof path, "by_postal=%s", e);
        curl_free(e);
        cr_expect_eq(meta_total(&s, path), want, "%s", path);
        if (strlen(pc) == 10 && pc[5] == '-') {
            /* postal+4 with '-' and with '_', as the documentation allows. */
            for (int sep = 0; sep < 2; sep++) {
                snprintf(q9, sizeof q9, "%.5s%c%.4s", pc, sep ? '_' : '-', pc + 6);
                want = 0;
                for (size_t i = 0; i < t->nrows; i++)
                    want += postal_prefix(q9, cell(t, i, "postal_code"));
                cr_expect_geq(want, 1);
                snprintf(path, sizeof path, "by_postal=%s", q9);
                cr_expect_eq(meta_total(&s, path), want, "%s", path);
                tried9++;
            }
        }
    }
    cr_expect_gt(tried9, 0, "no 9-digit postal code was tried");
    table_free(t);
    server_stop(&s);
}

/* The ids of a JSON array of breweries, in order, into ids[cap]. */
static size_t ids_of(json_t *a, const char **ids, size_t cap)
{
    size_t n = json_array_size(a);
    for (size_t i = 0; i < n && i < cap; i++)
        ids[i] = jstr(json_array_get(a, i), "id");
    return n;
}

Test(brewery_server, api_by_ids_returns_exactly_those, .timeout = 60)
{
    if (!have_csv())
        cr_skip_test("no %s", CSV);
    table_t *t = table_load(CSV);
    server_t s;
    server_start(&s, "--latency", "0", "--data", CSV, NULL);
    size_t pick[] = { 7, 100, 2000, 7000, t->nrows - 1 };
    char path[1024] = "/v1/breweries?by_ids=";
    for (size_t i = 0; i < 5; i++) {
        strcat(path, cell(t, pick[i], "id"));
        strcat(path, i == 2 ? ",%20" : ",");
    }
    strcat(path, "no-such-id");
    json_t *a = get_json(&s, path);
    cr_assert_eq(json_array_size(a), 5, "%s: %zu rows", path, json_array_size(a));
    sort_rows(t, pick, 5, by_id);
    for (size_t i = 0; i < 5; i++) {
        json_t *o = json_array_get(a, i);
        cr_expect_str_eq(jstr(o, "id"), cell(t, pick[i], "id"));
        cr_expect_str_eq(jstr(o, "name"), cell(t, pick[i], "name"));
    }
    json_decref(a);
    snprintf(path, sizeof path, "by_ids=%s,%s", cell(t, 3, "id"), cell(t, 4, "id"));
    cr_expect_eq(meta_total(&s, path), 2);
    expect_422(&s, "/v1/breweries?by_ids=", "by_ids");
    table_free(t);
    server_stop(&s);
}

static double to_rad(double d)
{
    return d * M_PI / 180;
}

static double haversine(double la1, double lo1, double la2, double lo2)
{
    double a = sin(to_rad(la2 - la1) / 2), b = sin(to_rad(lo2 - lo1) / 2);
    double h = a * a + cos(to_rad(la1)) * cos(to_rad(la2)) * b * b;
    return 2 * 6371.0088 * asin(sqrt(h));
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

Test(brewery_server, api_by_dist_orders_by_distance, .timeout = 60)
{
    if (!have_csv())
        cr_skip_test("no %s", CSV);
    table_t *t = table_load(CSV);
    const double lat = 38.8977, lon = -77.0365;
    double *d = malloc(t->nrows * sizeof *d);
    size_t nd = 0;
    for (size_t r = 0; r < t->nrows; r++) {
        const char *la = cell(t, r, "latitude"), *lo = cell(t, r, "longitude");
        if (*la && *lo)
            d[nd++] = haversine(lat, lon, atof(la), atof(lo));
    }
    qsort(d, nd, sizeof *d, cmp_double);
    server_t s;
    server_start(&s, "--latency", "0", "--data", CSV, NULL);
    /* Pages 1 and 3 of 100: the k-th answer is at the k-th smallest distance. */
    for (int page = 1; page <= 3; page += 2) {
        char path[128];
        snprintf(path, sizeof path, "/v1/breweries?by_dist=%g,%g&per_page=100&page=%d", lat, lon,
                 page);
        json_t *a = get_json(&s, path);
        cr_assert_eq(json_array_size(a), 100);
        for (size_t i = 0; i < 100; i++) {
            json_t *o = json_array_get(a, i);
            double di = haversine(lat, lon, atof(jstr(o, "latitude")), atof(jstr(o, "longitude")));
            size_t k = (size_t)(page - 1) * 100 + i;
            cr_expect(fabs(di - d[k]) < 1e-6, "page %d row %zu: %.9f km, want %.9f", page, i, di,
                      d[k]);
        }
        json_decref(a);
    }
    /* Rows without coordinates come after all the others. */
    long total = meta_total(&s, "per_page=1");
    char path[128];
    snprintf(path, sizeof path, "/v1/breweries?by_dist=0,0&per_page=200&page=%ld",
             (total + 199) / 200);
    json_t *last = get_json(&s, path);
    json_t *o = json_array_get(last, json_array_size(last) - 1);
    cr_expect(json_is_null(json_object_get(o, "latitude")), "the last row has coordinates");
    json_decref(last);
    expect_422(&s, "/v1/breweries?by_dist=91,0", "by_dist");
    expect_422(&s, "/v1/breweries?by_dist=abc", "by_dist");
    expect_422(&s, "/v1/breweries?by_dist=1,2&sort=name", "sort");
    resp_t r = get(&s, "/v1/breweries?by_dist=1,2&sort=name");
    cr_expect_not_null(strstr(r.body, "by_dist"), "the 422 does not say why: %s", r.body);
    free(r.body);
    free(d);
    table_free(t);
    server_stop(&s);

    /* The built-in data has no coordinates: a clear 501, not a silent order. */
    server_start(&s, "--latency", "0", NULL);
    r = get(&s, "/v1/breweries?by_dist=1,2");
    cr_expect_eq(r.status, 501);
    cr_expect_not_null(strstr(r.body ? r.body : "", "--data"), "%s", r.body);
    free(r.body);
    server_stop(&s);
}

/* The order the documentation's example asks for, done by the test:
 * brewery_type ascending, then name descending, empty last when ascending
 * and first when descending, ASCII case ignored, ids breaking ties. */
static int null_cmp(const char *x, const char *y, bool desc)
{
    if (!*x || !*y)
        return !*x && !*y ? 0 : (!*x) != desc ? 1 : -1;
    int c = strcasecmp(x, y);
    if (c == 0)
        c = strcmp(x, y);
    return desc ? -c : c;
}

static int by_type_name_desc(const table_t *t, size_t a, size_t b)
{
    int c = null_cmp(cell(t, a, "brewery_type"), cell(t, b, "brewery_type"), false);
    if (!c)
        c = null_cmp(cell(t, a, "name"), cell(t, b, "name"), true);
    return c ? c : by_id(t, a, b);
}

static int by_city_desc(const table_t *t, size_t a, size_t b)
{
    int c = null_cmp(cell(t, a, "city"), cell(t, b, "city"), true);
    return c ? c : by_id(t, a, b);
}

static void expect_order(const server_t *s, const table_t *t, const char *query,
                         const char *state, row_cmp_fn cmp)
{
    size_t *ix = malloc(t->nrows * sizeof *ix), n = 0;
    for (size_t r = 0; r < t->nrows; r++)
        if (strcmp(cell(t, r, "state_province"), state) == 0)
            ix[n++] = r;
    sort_rows(t, ix, n, cmp);
    json_t *a = all_pages(s, query);
    cr_assert_eq(json_array_size(a), n, "%s: %zu rows, want %zu", query, json_array_size(a), n);
    for (size_t i = 0; i < n; i++)
        cr_assert_str_eq(jstr(json_array_get(a, i), "id"), cell(t, ix[i], "id"),
                         "%s: row %zu differs", query, i);
    json_decref(a);
    free(ix);
}

Test(brewery_server, api_sort_matches_csv_order, .timeout = 60)
{
    if (!have_csv())
        cr_skip_test("no %s", CSV);
    table_t *t = table_load(CSV);
    server_t s;
    server_start(&s, "--latency", "0", "--data", CSV, NULL);
    expect_order(&s, t, "/v1/breweries?by_state=ohio&sort=type,name:desc", "Ohio",
                 by_type_name_desc);
    expect_order(&s, t, "/v1/breweries?by_state=california&sort=brewery_type:asc,name:DESC",
                 "California", by_type_name_desc);
    expect_order(&s, t, "/v1/breweries?by_state=new_york&sort=city:desc", "New York",
                 by_city_desc);
    /* Latitude sorts as a number, empty ones last. */
    json_t *a = all_pages(&s, "/v1/breweries?by_state=maryland&sort=latitude");
    bool seen_null = false;
    double prev = -1e9;
    for (size_t i = 0; i < json_array_size(a); i++) {
        const char *la = jstr(json_array_get(a, i), "latitude");
        if (!la) {
            seen_null = true;
            continue;
        }
        cr_expect(!seen_null, "a latitude after an empty one at row %zu", i);
        cr_expect_geq(atof(la), prev, "row %zu", i);
        prev = atof(la);
    }
    json_decref(a);
    expect_422(&s, "/v1/breweries?sort=bogus", "sort");
    expect_422(&s, "/v1/breweries?sort=name:up", "sort");
    expect_422(&s, "/v1/breweries?sort=name,", "sort");
    expect_422(&s, "/v1/breweries?sort=a,b,c,d,e,f,g,h,i", "sort");
    table_free(t);
    server_stop(&s);
}

Test(brewery_server, api_random_breweries, .timeout = 60)
{
    if (!have_csv())
        cr_skip_test("no %s", CSV);
    table_t *t = table_load(CSV);
    size_t *ix = malloc(t->nrows * sizeof *ix);
    for (size_t i = 0; i < t->nrows; i++)
        ix[i] = i;
    sort_rows(t, ix, t->nrows, by_id);
    server_t s;
    server_start(&s, "--latency", "0", "--data", CSV, NULL);
    json_t *one = get_json(&s, "/v1/breweries/random");
    cr_expect(json_is_array(one) && json_array_size(one) == 1, "default size is 1");
    json_decref(one);
    json_t *a = get_json(&s, "/v1/breweries/random?size=50");
    json_t *b = get_json(&s, "/v1/breweries/random?size=50");
    cr_assert_eq(json_array_size(a), 50);
    const char *ids[50];
    ids_of(a, ids, 50);
    int same = 0;
    for (size_t i = 0; i < 50; i++) {
        for (size_t j = 0; j < i; j++)
            cr_expect_str_neq(ids[i], ids[j], "a brewery twice in one draw");
        /* Each is a real row of the file, field for field. */
        size_t lo = 0, hi = t->nrows;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (strcmp(cell(t, ix[mid], "id"), ids[i]) < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        cr_assert(lo < t->nrows && strcmp(cell(t, ix[lo], "id"), ids[i]) == 0, "no row %s",
                  ids[i]);
        cr_expect_str_eq(jstr(json_array_get(a, i), "name"), cell(t, ix[lo], "name"));
        same += strcmp(ids[i], jstr(json_array_get(b, i), "id")) == 0;
    }
    cr_expect_lt(same, 50, "two draws of 50 were identical");
    json_decref(a);
    json_decref(b);
    expect_422(&s, "/v1/breweries/random?size=51", "size");
    expect_422(&s, "/v1/breweries/random?size=0", "size");
    expect_422(&s, "/v1/breweries/random?size=x", "size");
    free(ix);
    table_free(t);
    server_stop(&s);
}

/* The rows /search?query=q should find: q LIKE'd into name, city or state. */
static size_t search_ref(const table_t *t, const char *q, size_t *ix)
{
    size_t n = 0;
    for (size_t r = 0; r < t->nrows; r++)
        if (like_ref(q, cell(t, r, "name")) ||
            (*cell(t, r, "city") && like_ref(q, cell(t, r, "city"))) ||
            like_ref(q, cell(t, r, "state_province")))
            ix[n++] = r;
    sort_rows(t, ix, n, by_id);
    return n;
}

Test(brewery_server, api_search_and_autocomplete_match_csv, .timeout = 120)
{
    if (!have_csv())
        cr_skip_test("no %s", CSV);
    table_t *t = table_load(CSV);
    size_t *ix = malloc(t->nrows * sizeof *ix);
    server_t s;
    server_start(&s, "--latency", "0", "--data", CSV, NULL);
    static const char *const queries[] = { "dog", "san_diego", "Bayern", "x", "brew%co", "zzzzqqq" };
    for (size_t q = 0; q < sizeof queries / sizeof queries[0]; q++) {
        size_t n = search_ref(t, queries[q], ix);
        char path[256];
        char *e = curl_easy_escape(NULL, queries[q], 0);
        snprintf(path, sizeof path, "/v1/breweries/search?query=%s", e);
        json_t *a = all_pages(&s, path);
        cr_expect_eq(json_array_size(a), n, "%s: %zu, want %zu", queries[q], json_array_size(a), n);
        for (size_t i = 0; i < n && i < json_array_size(a); i++)
            cr_expect_str_eq(jstr(json_array_get(a, i), "id"), cell(t, ix[i], "id"));
        json_decref(a);
        /* Paged like the list: page 2 of 3 starts with the fourth match. */
        if (n > 3) {
            snprintf(path, sizeof path, "/v1/breweries/search?query=%s&per_page=3&page=2", e);
            json_t *p2 = get_json(&s, path);
            cr_expect_str_eq(jstr(json_array_get(p2, 0), "id"), cell(t, ix[3], "id"));
            json_decref(p2);
        }
        snprintf(path, sizeof path, "/v1/breweries/autocomplete?query=%s", e);
        curl_free(e);
        json_t *ac = get_json(&s, path);
        size_t want = n < 15 ? n : 15;
        cr_expect_eq(json_array_size(ac), want, "%s: %zu suggestions", queries[q],
                     json_array_size(ac));
        for (size_t i = 0; i < json_array_size(ac) && i < want; i++) {
            json_t *o = json_array_get(ac, i);
            cr_expect_eq(json_object_size(o), 2, "autocomplete objects are {id, name}");
            cr_expect_str_eq(jstr(o, "id"), cell(t, ix[i], "id"));
            cr_expect_str_eq(jstr(o, "name"), cell(t, ix[i], "name"));
        }
        json_decref(ac);
    }
    expect_422(&s, "/v1/breweries/search", "query");
    expect_422(&s, "/v1/breweries/search?query=", "query");
    expect_422(&s, "/v1/breweries/autocomplete", "query");
    free(ix);
    table_free(t);
    server_stop(&s);
}

Test(brewery_server, api_new_filters_on_meta_and_builtin, .timeout = 60)
{
    if (!have_csv())
        cr_skip_test("no %s", CSV);
    table_t *t = table_load(CSV);
    server_t s;
    server_start(&s, "--latency", "0", "--data", CSV, NULL);
    /* meta counts what the list returns, for the new filters together. */
    const char *q = "by_country=united_states&by_postal=940&by_type=micro";
    long want = 0;
    for (size_t r = 0; r < t->nrows; r++)
        want += strcmp(cell(t, r, "country"), "United States") == 0 &&
                strncmp(cell(t, r, "postal_code"), "940", 3) == 0 &&
                strcmp(cell(t, r, "brewery_type"), "micro") == 0;
    char path[256];
    snprintf(path, sizeof path, "/v1/breweries?%s", q);
    json_t *a = all_pages(&s, path);
    cr_expect_eq((long)json_array_size(a), want);
    json_decref(a);
    cr_expect_eq(meta_total(&s, q), want);
    cr_expect_eq(meta_total(&s, "by_dist=40,-100"), (long)t->nrows, "by_dist filters nothing");
    server_stop(&s);
    table_free(t);

    /* The built-in data serves every endpoint but by_dist. */
    server_start(&s, "--latency", "0", NULL);
    json_t *r = get_json(&s, "/v1/breweries/random?size=3");
    cr_expect_eq(json_array_size(r), 3);
    const char *id = jstr(json_array_get(r, 0), "id");
    snprintf(path, sizeof path, "by_ids=%s", id);
    cr_expect_eq(meta_total(&s, path), 1);
    json_decref(r);
    json_t *sr = get_json(&s, "/v1/breweries/search?query=ohio&per_page=200");
    cr_expect_gt(json_array_size(sr), 0);
    json_decref(sr);
    json_t *ac = get_json(&s, "/v1/breweries/autocomplete?query=ohio");
    cr_expect_eq(json_array_size(ac), 15);
    json_decref(ac);
    json_t *so = get_json(&s, "/v1/breweries?by_state=ohio&sort=name:desc&per_page=2");
    cr_expect_eq(json_array_size(so), 2);
    cr_expect_gt(strcmp(jstr(json_array_get(so, 0), "name"), jstr(json_array_get(so, 1), "name")), 0);
    json_decref(so);
    server_stop(&s);
}

Test(brewery_server, api_hostile_parameters_answer_promptly, .timeout = 120)
{
    if (!have_csv())
        cr_skip_test("no %s", CSV);
    server_t s;
    server_start(&s, "--latency", "0", "--data", CSV, NULL);
    char wild[512] = "";
    for (int i = 0; i < 127; i++)
        strcat(wild, "%25_");
    strcat(wild, "q");
    char *ids = malloc(16000);
    strcpy(ids, "/v1/breweries?by_ids=");
    for (int i = 0; i < 350; i++)
        strcat(ids, "00000000-0000-4000-8000-000000000000,");
    char paths[6][3 * sizeof wild + 128]; /* room for three wild values: no truncation */
    snprintf(paths[0], sizeof paths[0], "/v1/breweries/search?query=%s&per_page=200", wild);
    snprintf(paths[1], sizeof paths[1], "/v1/breweries/autocomplete?query=%s", wild);
    snprintf(paths[2], sizeof paths[2], "/v1/breweries/meta?by_postal=%s&by_city=%s&by_name=%s",
             wild, wild, wild);
    snprintf(paths[3], sizeof paths[3],
             "/v1/breweries?sort=address_3:desc,address_2,phone:desc,website_url,latitude:desc,"
             "longitude,country:desc,city&per_page=200&page=30");
    snprintf(paths[4], sizeof paths[4], "/v1/breweries?by_dist=-89.9,179.9&per_page=200&page=59");
    snprintf(paths[5], sizeof paths[5], "/v1/breweries/random?size=50");
    for (int i = 0; i < 6; i++) {
        resp_t r = get_t(&s, paths[i], 60000);
        cr_expect_eq(r.status, 200, "%s: %ld", paths[i], r.status);
        cr_expect_lt(r.secs, 2.0 * test_slack(), "%.60s...: %.2f s", paths[i], r.secs);
        free(r.body);
    }
    resp_t r = get_t(&s, ids, 60000);
    cr_expect_eq(r.status, 200, "350 ids: %ld", r.status);
    cr_expect_lt(r.secs, 2.0 * test_slack(), "350 ids: %.2f s", r.secs);
    free(r.body);
    free(ids);
    server_stop(&s);
}

/* CPU seconds the process has used (user + system), from /proc. */
static double cpu_seconds(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *fp = fopen(path, "r");
    cr_assert_not_null(fp);
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    /* Fields 14 and 15 (utime, stime) follow the ")" that ends the name. */
    char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    cr_assert(p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut,
                          &st) == 2);
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

Test(brewery_server, out_of_descriptors_does_not_spin_and_recovers, .timeout = 90)
{
    /* 100 descriptors: 60 requests held by the latency plus 60 silent
     * connections are more than the server can have open, so accept fails
     * with EMFILE while the listening socket stays readable. */
    child_nofile = (struct rlimit){ 100, 100 };
    server_t s;
    server_start(&s, "--latency", "3000", "--header-timeout", "30000", NULL);
    child_nofile = (struct rlimit){ 0, 0 };
    enum { N = 60 };
    int held[N], idle[N];
    for (int i = 0; i < N; i++) {
        held[i] = tcp_connect(&s);
        send_all(held[i], "GET /v1/breweries?per_page=1 HTTP/1.1\r\nHost: x\r\n"
                          "Connection: close\r\n\r\n");
    }
    for (int i = 0; i < N; i++)
        idle[i] = tcp_connect(&s);
    usleep(300000);
    double c0 = cpu_seconds(s.pid);
    usleep(1000000);
    double used = cpu_seconds(s.pid) - c0;
    /* Spinning takes whatever CPU the machine gives it (0.2 s here on a
     * loaded machine, 1 s idle); pausing 10 ms a try takes about 1 ms. */
    cr_expect_lt(used, 0.05, "the server used %.2f s of CPU in 1 s while out of descriptors", used);
    /* Once the silent ones go, every held request is answered. */
    for (int i = 0; i < N; i++)
        close(idle[i]);
    int ok = 0;
    for (int i = 0; i < N; i++) {
        char buf[8192];
        bool closed;
        recv_until_close(held[i], buf, sizeof buf, 20.0 * test_slack(), &closed);
        ok += strncmp(buf, "HTTP/1.1 200 ", 13) == 0;
        close(held[i]);
    }
    cr_expect_eq(ok, N, "%d of %d held requests were answered", ok, N);
    resp_t r = get_t(&s, "/v1/breweries?per_page=1", 20000);
    cr_expect_eq(r.status, 200, "%s", curl_easy_strerror(r.rc));
    free(r.body);
    server_stop(&s);
}
