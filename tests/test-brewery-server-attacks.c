/* The brewery-server under hostile clients (issue 10): a LIKE request that
 * once pinned it answers promptly; SIGTERM during a long request; garbage
 * request lines (400) and invalid UTF-8 paths (404) over raw sockets; a
 * slowloris and a connection flood while a bystander is served; hostile
 * query parameters; and descriptors running out without a spin. */
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support/brewery.h"
#include "support/run.h"

TestSuite(brewery_server, .init = srv_suite_init, .fini = srv_suite_fini);

static int tcp_connect(const srv_t *s)
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
    double end = test_now_s() + secs;
    *closed = false;
    while (n < cap - 1) {
        int ms = (int)((end - test_now_s()) * 1000);
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
static int server_wait_for(srv_t *s, double secs)
{
    double end = test_now_s() + secs;
    int status = 0;
    while (test_now_s() < end) {
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

/* The rows whose `column` is LIKE '%pattern%', by the reference matcher. */
static long count_like(const csv_table_t *t, const char *column, const char *pattern)
{
    long n = 0;
    for (size_t r = 0; r < t->nrows; r++) {
        const char *v = csv_cell(t, r, column);
        n += *v && srv_like_ref(pattern, v);
    }
    return n;
}

#define ISSUE_PATTERN "%_%_%_%_%_%_%qqq"

#define ISSUE_REQUEST "/v1/breweries/meta?by_name=%25_%25_%25_%25_%25_%25_%25qqq"

Test(brewery_server, issue_like_request_answers_promptly, .timeout = 60)
{
    srv_t s;
    srv_start(&s, "--latency", "0", NULL);
    srv_resp_t r = srv_get_t(&s, ISSUE_REQUEST, 60000);
    cr_expect_eq(r.status, 200);
    cr_expect_lt(r.secs, 2.0 * test_slack(), "built-in data: answered after %.2f s", r.secs);
    free(r.body);
    srv_stop(&s);

    srv_start_on_csv(&s);
    r = srv_get_t(&s, ISSUE_REQUEST, 60000);
    cr_expect_eq(r.status, 200);
    cr_expect_lt(r.secs, 2.0 * test_slack(), "CSV: answered after %.2f s", r.secs);
    free(r.body);
    /* And the answers are right: names against the reference matcher. */
    csv_table_t *t = csv_table_load(CSV);
    static const char *const pats[] = { ISSUE_PATTERN, "brew%co", "%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%z", "s_ein", "_ _ _" };
    for (size_t i = 0; i < sizeof pats / sizeof pats[0]; i++) {
        char *q = curl_easy_escape(NULL, pats[i], 0);
        char path[1024];
        snprintf(path, sizeof path, "by_name=%s", q);
        curl_free(q);
        cr_expect_eq(srv_meta_total(&s, path), count_like(t, "name", pats[i]), "%s", pats[i]);
    }
    csv_table_free(t);
    srv_stop(&s);
}

/* Writes a CSV of `rows` breweries whose names are `len` letters 'a'. */
static void write_long_names_csv(const char *path, int rows, int len)
{
    FILE *fp = fopen(path, "w");
    cr_assert_not_null(fp);
    char *name = malloc((size_t)len + 1);
    memset(name, 'a', (size_t)len);
    name[len] = '\0';
    fputs(srv_csv_header, fp);
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
    srv_t s;
    srv_start(&s, "--latency", "0", "--data", path, NULL);
    unlink(path);

    char req[1024] = "GET /v1/breweries/meta?by_name=";
    for (int i = 0; i < 254; i++)
        strcat(req, "_");
    strcat(req, "b HTTP/1.1\r\nHost: x\r\n\r\n");
    int c = tcp_connect(&s);
    send_all(c, req);
    usleep(500000);
    double t0 = test_now_s();
    cr_assert_eq(kill(s.pid, SIGTERM), 0);
    int status = server_wait_for(&s, 5.0 * test_slack());
    double secs = test_now_s() - t0;
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

/* Sends `req` on a fresh connection and returns what came back before the
 * server closed (asserting that it did close within 5 s when `must_close`). */
static void raw_exchange(const srv_t *s, const char *req, char *buf, size_t cap,
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
    srv_t s;
    srv_start(&s, "--latency", "0", NULL);
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
    srv_stop(&s);
}

Test(brewery_server, invalid_utf8_in_the_path_is_404, .timeout = 60)
{
    srv_t s;
    srv_start(&s, "--latency", "0", NULL);
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
    srv_stop(&s);
}

/* A well-behaved client that keeps asking while an attack runs: each of its
 * requests must succeed within `bound` seconds. */
typedef struct bystander {
    const srv_t *s;
    atomic_bool done;
    int asked, ok;
    double worst;
} bystander_t;

static void *bystander_main(void *arg)
{
    bystander_t *b = arg;
    while (!atomic_load(&b->done)) {
        srv_resp_t r = srv_get_t(b->s, "/v1/breweries/meta?by_state=maryland", 30000);
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
    srv_t s;
    srv_start(&s, "--latency", "0", "--header-timeout", "2000", "--idle-timeout", "2", NULL);
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
    double t0 = test_now_s();
    int cut = 0;
    while (test_now_s() - t0 < 4.0) {
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
    json_t *m = srv_get_json(&s, "/v1/breweries/meta?per_page=1");
    json_decref(m);
    srv_stop(&s);
}

Test(brewery_server, connection_flood_does_not_starve_others, .timeout = 120)
{
    raise_nofile();
    srv_t s;
    srv_start(&s, "--latency", "0", "--header-timeout", "2000", NULL);
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
    json_t *m = srv_get_json(&s, "/v1/breweries/meta?per_page=1");
    json_decref(m);
    srv_stop(&s);
}

Test(brewery_server, api_hostile_parameters_answer_promptly, .timeout = 120)
{
    srv_t s;
    srv_start_on_csv(&s);
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
        srv_resp_t r = srv_get_t(&s, paths[i], 60000);
        cr_expect_eq(r.status, 200, "%s: %ld", paths[i], r.status);
        cr_expect_lt(r.secs, 2.0 * test_slack(), "%.60s...: %.2f s", paths[i], r.secs);
        free(r.body);
    }
    srv_resp_t r = srv_get_t(&s, ids, 60000);
    cr_expect_eq(r.status, 200, "350 ids: %ld", r.status);
    cr_expect_lt(r.secs, 2.0 * test_slack(), "350 ids: %.2f s", r.secs);
    free(r.body);
    free(ids);
    srv_stop(&s);
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
    srv_nofile = (struct rlimit){ 100, 100 };
    srv_t s;
    srv_start(&s, "--latency", "3000", "--header-timeout", "30000", NULL);
    srv_nofile = (struct rlimit){ 0, 0 };
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
    srv_resp_t r = srv_get_t(&s, "/v1/breweries?per_page=1", 20000);
    cr_expect_eq(r.status, 200, "%s", curl_easy_strerror(r.rc));
    free(r.body);
    srv_stop(&s);
}
