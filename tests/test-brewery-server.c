/* Tests of demos/brewery/brewery-server, the local Open Brewery DB stand-in:
 * each test starts the built binary on a free port, talks to it with
 * libcurl's easy (and for concurrency, multi) interface, and stops it with
 * SIGTERM, checking that it exits 0.  Covered: the lab's four counts with the
 * shared CSV and with the built-in data (paging and meta), LIKE matching
 * (case, '_' wildcard, West Virginia inside virginia), validation (422) and
 * 404s, paging, one brewery by id, the rate limit (429 + Retry-After), every
 * fault flag, latency without a thread per request, and a ragged CSV. */
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
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
static void child_setup(void)
{
    prctl(PR_SET_PDEATHSIG, SIGTERM);
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

/* Criterion 2.4.1's runner (the parent process) loses a few 48-byte blocks
 * allocated under criterion_run_all_tests when this file's tests run with
 * --jobs 2, and LSan then fails the whole binary under SANITIZE=address.  With
 * the default fast unwinder those stacks hold only libcriterion frames, so
 * the suppression names the module.  It applies to this test binary only; the
 * server, whose memory these tests are about, is a separate program that
 * LSan (and valgrind, see docs/brewery-server.md) checks on its own. */
const char *__lsan_default_suppressions(void);
__attribute__((used)) const char *__lsan_default_suppressions(void)
{
    return "leak:libcriterion.so\n";
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
