/* See brewery.h. */
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <csv.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include "brewery.h"
#include "run.h"

/* In a forked child before exec: if the test process dies (a failed
 * cr_assert ends it at once), the kernel sends the server SIGTERM, so no
 * server outlives its test. */
struct rlimit srv_nofile;

void srv_child_setup(void)
{
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (srv_nofile.rlim_max)
        setrlimit(RLIMIT_NOFILE, &srv_nofile);
}

/* Starts the server with `--port 0 --quiet` and the NULL-terminated extra
 * arguments, and reads its port.  Returns false if it printed no port. */
static bool srv_spawn(srv_t *s, const char *const *extra)
{
    const char *argv[40] = { SERVER, "--port", "0", "--quiet" };
    int argc = 4, out[2];
    for (size_t i = 0; extra && extra[i] && argc < 39; i++)
        argv[argc++] = extra[i];
    argv[argc] = NULL;
    cr_assert_eq(pipe2(out, O_CLOEXEC), 0);
    s->pid = fork();
    cr_assert_geq(s->pid, 0);
    if (s->pid == 0) {
        srv_child_setup();
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

void srv_start_argv(srv_t *s, const char *const *extra)
{
    cr_assert(srv_spawn(s, extra), "brewery-server did not print its port (is it built? %s)", SERVER);
}

void srv_start(srv_t *s, const char *first, ...)
{
    const char *extra[40];
    size_t n = 0;
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a && n < 39; a = va_arg(ap, const char *))
        extra[n++] = a;
    va_end(ap);
    extra[n] = NULL;
    srv_start_argv(s, extra);
}

/* Waits for the child to exit and returns its wait status. */
int srv_wait(srv_t *s)
{
    int status = 0;
    cr_assert_eq(waitpid(s->pid, &status, 0), s->pid);
    return status;
}

void srv_kill(srv_t *s)
{
    if (s->pid > 0) {
        kill(s->pid, SIGTERM);
        waitpid(s->pid, NULL, 0);
    }
    s->pid = -1;
}

/* SIGTERM, then the server must exit 0 on its own (clean shutdown). */
void srv_stop(srv_t *s)
{
    cr_assert_eq(kill(s->pid, SIGTERM), 0);
    int status = srv_wait(s);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "brewery-server did not exit 0 on SIGTERM (status %#x)", status);
}

static size_t on_body(char *p, size_t size, size_t n, void *cls)
{
    srv_resp_t *r = cls;
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
    srv_resp_t *r = cls;
    header_value(p, size * n, "Retry-After:", r->retry_after, sizeof r->retry_after);
    header_value(p, size * n, "X-RateLimit-Remaining:", r->remaining, sizeof r->remaining);
    return size * n;
}

CURL *srv_easy(const srv_t *s, const char *path, srv_resp_t *r, long timeout_ms)
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

srv_resp_t srv_get_t(const srv_t *s, const char *path, long timeout_ms)
{
    srv_resp_t r = { 0 };
    CURL *e = srv_easy(s, path, &r, timeout_ms);
    double t0 = test_now_s();
    r.rc = curl_easy_perform(e);
    r.secs = test_now_s() - t0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &r.status);
    curl_easy_cleanup(e);
    return r;
}

srv_resp_t srv_get(const srv_t *s, const char *fmt, ...)
{
    char path[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(path, sizeof path, fmt, ap);
    va_end(ap);
    return srv_get_t(s, path, 20000);
}

/* GET that must answer 200 with JSON; returns the parsed body. */
json_t *srv_get_json(const srv_t *s, const char *path)
{
    srv_resp_t r = srv_get(s, "%s", path);
    cr_assert_eq(r.rc, CURLE_OK, "%s: %s", path, curl_easy_strerror(r.rc));
    cr_assert_eq(r.status, 200, "%s: status %ld: %s", path, r.status, r.body ? r.body : "");
    json_error_t je;
    json_t *v = json_loadb(r.body, r.len, 0, &je);
    cr_assert_not_null(v, "%s: bad JSON: %s", path, je.text);
    free(r.body);
    return v;
}

long srv_meta_total(const srv_t *s, const char *query)
{
    char path[2048];
    snprintf(path, sizeof path, "/v1/breweries/meta?%s", query);
    json_t *m = srv_get_json(s, path);
    cr_assert(json_is_integer(json_object_get(m, "total")), "meta has no integer total");
    long t = (long)json_integer_value(json_object_get(m, "total"));
    json_decref(m);
    return t;
}

bool srv_have_csv(void)
{
    return access(CSV, R_OK) == 0;
}

void srv_suite_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

void srv_suite_fini(void)
{
    curl_global_cleanup();
}

void srv_start_on_csv(srv_t *s)
{
    if (!srv_have_csv())
        cr_skip_test("no %s", CSV);
    srv_start(s, "--latency", "0", "--data", CSV, NULL);
}

long srv_status(const srv_t *s, const char *path)
{
    srv_resp_t r = srv_get(s, "%s", path);
    cr_assert_eq(r.rc, CURLE_OK, "%s: %s", path, curl_easy_strerror(r.rc));
    free(r.body);
    return r.status;
}

void srv_expect_error(const srv_t *s, long status, const char *path, const char *field)
{
    srv_resp_t r = srv_get(s, "%s", path);
    cr_assert_eq(r.rc, CURLE_OK);
    cr_expect_eq(r.status, status, "%s: status %ld", path, r.status);
    json_t *v = json_loadb(r.body, r.len, 0, NULL);
    cr_expect(json_is_string(json_object_get(v, "message")), "%s: no message in %s", path, r.body);
    if (field)
        cr_expect(json_is_array(json_object_get(json_object_get(v, "errors"), field)),
                  "%s: no errors.%s in %s", path, field, r.body);
    json_decref(v);
    free(r.body);
}

const char srv_csv_header[] =
    "id,name,brewery_type,address_1,address_2,address_3,city,state_province,postal_code,"
    "country,phone,website_url,longitude,latitude\n";

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
bool srv_like_ref(const char *pattern, const char *text)
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

static void tab_field(void *s, size_t len, void *cls)
{
    csv_table_t *t = cls;
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
    csv_table_t *t = cls;
    (void)c;
    if (t->in_header)
        t->in_header = false;
    else
        t->nrows++;
    t->col = 0;
}

/* Reads the whole CSV with libcsv (the server's loader is what is under test,
 * so this one is written separately and kept simple). */
csv_table_t *csv_table_load(const char *path)
{
    csv_table_t *t = calloc(1, sizeof *t);
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

static int table_col(const csv_table_t *t, const char *name)
{
    for (size_t i = 0; i < t->ncols; i++)
        if (strcmp(t->head[i], name) == 0)
            return (int)i;
    cr_assert_fail("no column %s", name);
    return -1;
}

const char *csv_cell(const csv_table_t *t, size_t row, const char *name)
{
    return t->cell[row * t->ncols + (size_t)table_col(t, name)];
}

void csv_table_free(csv_table_t *t)
{
    for (size_t i = 0; i < t->nrows * t->ncols; i++)
        free(t->cell[i]);
    for (size_t i = 0; i < t->ncols; i++)
        free(t->head[i]);
    free(t->cell);
    free(t);
}

/* --- the brewery demo's tests ----------------------------------------------- */

srv_t cli_server = { -1, 0 };

void cli_server_start(const char *const *flags)
{
    srv_start_argv(&cli_server, flags);
}

int cli_demo_on_server(const char *args, json_t **out)
{
    char all[1024];
    snprintf(all, sizeof all, "%s --base-url http://127.0.0.1:%u/v1", args, cli_server.port);
    return cli_demo(all, out);
}

void cli_server_stop(void)
{
    srv_kill(&cli_server);
}

/* Runs the demo; returns its exit status and the JSON it wrote. */
int cli_demo(const char *args, json_t **out)
{
    char path[] = "/tmp/test-brewery-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s %s --json %s >/dev/null 2>&1", DEMO, args, path);
    int rc = system(cmd);
    json_error_t e;
    *out = json_load_file(path, 0, &e);
    unlink(path);
    cr_assert_not_null(*out, "no JSON written: %s", e.text);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* The breweries of each state in the shared CSV, counted by python3 the way
 * the API matches by_state: SQL LIKE '%state%' on state_province, any case,
 * '_' matching any one character (so "virginia" counts West Virginia too). */
void cli_csv_counts(const char *const *states, size_t n, long *out)
{
    cr_assert_eq(access(CSV, R_OK), 0, "no shared CSV at %s", CSV);
    char cmd[2048];
    int len = snprintf(cmd, sizeof cmd,
                       "python3 -c 'import csv, re, sys\n"
                       "rows = [r[\"state_province\"] for r in csv.DictReader(open(sys.argv[1], "
                       "newline=\"\", encoding=\"utf-8\"))]\n"
                       "for s in sys.argv[2:]:\n"
                       "    p = re.compile(\"\".join(\".\" if c == \"_\" else re.escape(c) "
                       "for c in s), re.I | re.S)\n"
                       "    print(sum(1 for v in rows if p.search(v)))' '%s'",
                       CSV);
    for (size_t i = 0; i < n; i++) len += snprintf(cmd + len, sizeof cmd - (size_t)len, " '%s'", states[i]);
    FILE *f = popen(cmd, "r");
    cr_assert_not_null(f);
    for (size_t i = 0; i < n; i++) cr_assert_eq(fscanf(f, "%ld", &out[i]), 1, "python3 counted nothing");
    cr_assert_eq(pclose(f), 0, "python3 failed");
}

const char *const cli_lab[4] = {"district_of_columbia", "maryland", "new_york", "virginia"};

/* The lab's sentence, from the durations in the file itself. */
void cli_check_result(json_t *j)
{
    double s = json_real_value(json_object_get(cli_mode(j, "serial"), "seconds"));
    double a = json_real_value(json_object_get(cli_mode(j, "async"), "seconds"));
    cr_assert_gt(s, 0);
    double x = (s - a) / s * 100;
    char want[160], fig[32];
    snprintf(fig, sizeof fig, "%.2f", x < 0 ? -x : x);
    bool slower = x < 0 && strcmp(fig, "0.00") != 0;
    snprintf(want, sizeof want, "async version was %s%% %s than the serial version", fig,
             slower ? "slower" : "faster");
    const char *result = json_string_value(json_object_get(j, "result"));
    cr_assert(result && strcmp(result, want) == 0, "result '%s', the durations say '%s'",
              result ? result : "(none)", want);
    double pct = json_real_value(json_object_get(j, "async_faster_percent"));
    cr_assert(fabs(pct - (slower ? -1 : 1) * strtod(fig, NULL)) < 1e-9, "%g vs %s", pct, fig);
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    cr_assert_str_eq(json_string_value(json_object_get(j, "host")), host);
}

json_t *cli_mode(json_t *j, const char *name)
{
    return json_object_get(json_object_get(j, "modes"), name);
}

long cli_count(json_t *j, const char *m, const char *state)
{
    json_t *c = json_object_get(json_object_get(cli_mode(j, m), "counts"), state);
    return c ? (long)json_integer_value(c) : -1;
}

const char *cli_failure(json_t *j, const char *m, const char *state)
{
    return json_string_value(json_object_get(json_object_get(cli_mode(j, m), "failed"), state));
}

/* Waits for a child of ours with a deadline; returns its status or -1. */
int cli_wait_deadline(pid_t pid, int64_t deadline_ms)
{
    for (int64_t waited = 0; waited < deadline_ms; waited += 10) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) return st;
        cr_assert_geq(r, 0, "waitpid: %s", strerror(errno));
        usleep(10 * 1000);
    }
    return -1;
}

static void *fake_serve(void *arg)
{
    cli_fake_t *f = arg;
    static char body[64 * 1024], head[256];
    for (;;) {
        int c = accept(f->fd, NULL, NULL);
        if (c < 0) return NULL; /* shut down */
        char req[4096];
        size_t got = 0;
        while (got < sizeof req - 1) {
            ssize_t k = read(c, req + got, sizeof req - 1 - got);
            if (k <= 0) break;
            got += (size_t)k;
            req[got] = 0;
            if (strstr(req, "\r\n\r\n")) break;
        }
        long nth = f->requests++;
        size_t len = 0;
        /* A given body is written from the caller's memory, whatever its
         * size: copied into body[] it was cut at 64 KiB while its length
         * (snprintf's) said the whole, and the write read past body[]. */
        const char *out = body;
        if (f->mode == FAKE_SLOW_LATER) {
            if (nth >= f->fast) usleep((useconds_t)f->ms * 1000);
            len = (size_t)snprintf(body, sizeof body, "[]");
        } else if (f->mode == FAKE_BODY) {
            out = f->body;
            len = strlen(out);
        } else {
            body[len++] = '[';
            for (int i = 0; i < 200; i++)
                len += (size_t)snprintf(body + len, sizeof body - len, "%s{\"id\":\"%ld-%d\"}",
                                        i ? "," : "", f->mode == FAKE_ENDLESS ? nth : 0, i);
            body[len++] = ']';
        }
        int hl = snprintf(head, sizeof head,
                          "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                          "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                          len);
        if (write(c, head, (size_t)hl) == hl) {
            /* A client that stops reading (a body past its limit) closes
             * its end: the write fails then, and the loop ends. */
            for (size_t sent = 0; sent < len;) {
                ssize_t k = send(c, out + sent, len - sent, MSG_NOSIGNAL);
                if (k <= 0) break;
                sent += (size_t)k;
            }
        }
        close(c);
    }
}

void cli_fake_start(cli_fake_t *f)
{
    f->fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(f->fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    cr_assert_eq(bind(f->fd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(f->fd, 64), 0);
    cr_assert_eq(getsockname(f->fd, (struct sockaddr *)&a, &al), 0);
    f->port = ntohs(a.sin_port);
    cr_assert_eq(pthread_create(&f->thread, NULL, fake_serve, f), 0);
}

void cli_fake_stop(cli_fake_t *f)
{
    shutdown(f->fd, SHUT_RDWR); /* wakes accept() */
    pthread_join(f->thread, NULL);
    close(f->fd);
}

/* The environment of the next cli_demo_argv(); NULL: ours. */
char *const *cli_demo_env;

/* Runs the demo with argv (after the program name), stdout to /dev/null;
 * returns the exit status (-1 if it did not exit) and its stderr in err. */
int cli_demo_argv(const char *const *args, char *err, size_t errsize)
{
    char path[] = "/tmp/test-brewery-err-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    unlink(path);
    const char *argv[32] = {DEMO};
    int argc = 1;
    for (int i = 0; args[i]; i++) argv[argc++] = args[i];
    argv[argc] = NULL;
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(fd, 2);
        if (cli_demo_env) execve(DEMO, (char *const *)argv, cli_demo_env);
        else execv(DEMO, (char *const *)argv);
        _exit(127);
    }
    int st = cli_wait_deadline(pid, 20000);
    if (st == -1) kill(pid, SIGKILL), waitpid(pid, NULL, 0);
    ssize_t n = pread(fd, err, errsize - 1, 0);
    err[n > 0 ? n : 0] = 0;
    close(fd);
    return st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}
