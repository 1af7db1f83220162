/* The brewery demo against the real brewery-server on loopback, with the
 * server's injected faults: every mode counts the right numbers, a failing
 * state is marked failed with a precise message while the others are still
 * written to the JSON file, retries recover transient faults, and an
 * unreachable server or an unknown state fails cleanly. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define SERVER ASYNC_OUT_DIR "/demos/brewery/brewery-server"
#define DEMO ASYNC_OUT_DIR "/demos/brewery/brewery"
#define CSV ASYNC_SRC_DIR "/../shared/data/openbrewerydb/breweries.csv"

static json_t *mode(json_t *j, const char *name);

static pid_t server_pid = -1;
static unsigned server_port;

/* Starts brewery-server with extra flags (a NULL-terminated list). */
static void server_start(const char *const *flags)
{
    int p[2];
    cr_assert_eq(pipe(p), 0);
    const char *argv[24] = {SERVER, "--port", "0", "--quiet"};
    int argc = 4;
    for (int i = 0; flags && flags[i]; i++) argv[argc++] = flags[i];
    argv[argc] = NULL;
    server_pid = fork();
    cr_assert_geq(server_pid, 0);
    if (server_pid == 0) {
        dup2(p[1], 1);
        close(p[0]);
        close(p[1]);
        execv(SERVER, (char *const *)argv);
        _exit(127);
    }
    close(p[1]);
    FILE *f = fdopen(p[0], "r");
    char line[256];
    server_port = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "listening on http://127.0.0.1:%u", &server_port) == 1) break;
    fclose(f);
    cr_assert_gt(server_port, 0, "brewery-server did not start");
}

static void server_stop(void)
{
    if (server_pid > 0) {
        kill(server_pid, SIGTERM);
        waitpid(server_pid, NULL, 0);
    }
    server_pid = -1;
}

TestSuite(brewery_client, .fini = server_stop, .timeout = 30);

/* Runs the demo; returns its exit status and the JSON it wrote. */
static int demo(const char *args, json_t **out)
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
static void csv_counts(const char *const *states, size_t n, long *out)
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

static const char *const lab[] = {"district_of_columbia", "maryland", "new_york", "virginia"};

/* The lab's sentence, from the durations in the file itself. */
static void check_result(json_t *j)
{
    double s = json_real_value(json_object_get(mode(j, "serial"), "seconds"));
    double a = json_real_value(json_object_get(mode(j, "async"), "seconds"));
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

static json_t *mode(json_t *j, const char *name)
{
    return json_object_get(json_object_get(j, "modes"), name);
}

static long count(json_t *j, const char *m, const char *state)
{
    json_t *c = json_object_get(json_object_get(mode(j, m), "counts"), state);
    return c ? (long)json_integer_value(c) : -1;
}

static const char *failure(json_t *j, const char *m, const char *state)
{
    return json_string_value(json_object_get(json_object_get(mode(j, m), "failed"), state));
}

Test(brewery_client, every_mode_counts_the_csv)
{
    const char *flags[] = {"--data", CSV, "--latency", "5", NULL};
    server_start(flags);
    char args[256];
    snprintf(args, sizeof args, "--base-url http://127.0.0.1:%u/v1", server_port);
    json_t *j;
    cr_assert_eq(demo(args, &j), 0);
    long want[4];
    csv_counts(lab, 4, want);
    const char *modes[] = {"serial", "threads", "processes", "async", "meta"};
    long pages = 0;
    for (int i = 0; i < 4; i++) pages += want[i] / 200 + 1;
    for (int m = 0; m < 5; m++) {
        cr_assert_not_null(mode(j, modes[m]), "%s", modes[m]);
        for (int i = 0; i < 4; i++)
            cr_assert_eq(count(j, modes[m], lab[i]), want[i], "%s %s", modes[m], lab[i]);
    }
    check_result(j);
    cr_assert_eq(json_integer_value(json_object_get(mode(j, "serial"), "requests")), pages);
    json_decref(j);
}

Test(brewery_client, failed_state_marked_others_written)
{
    /* The first request answers 500; without retries the state that made
     * it fails, the others count. */
    const char *flags[] = {"--latency", "0", "--fail-first", "1", NULL};
    server_start(flags);
    char args[256];
    snprintf(args, sizeof args, "--mode serial --retries 0 --base-url http://127.0.0.1:%u/v1",
             server_port);
    json_t *j;
    cr_assert_eq(demo(args, &j), 1, "a failed state makes the exit status 1");
    const char *why = failure(j, "serial", "district_of_columbia");
    cr_assert_not_null(why);
    cr_assert(strstr(why, "HTTP status 500"), "%s", why);
    long want[4];
    csv_counts(lab, 4, want); /* the built-in data has the CSV's counts */
    for (int i = 1; i < 4; i++) cr_assert_eq(count(j, "serial", lab[i]), want[i], "%s", lab[i]);
    json_decref(j);
}

Test(brewery_client, retries_recover_transient_faults)
{
    const char *flags[] = {"--latency", "0", "--fail-rate", "0.3", "--drop-rate", "0.1",
                           "--seed", "7", NULL};
    server_start(flags);
    char args[256];
    snprintf(args, sizeof args, "--mode async,meta --retries 8 --base-url http://127.0.0.1:%u/v1",
             server_port);
    json_t *j;
    cr_assert_eq(demo(args, &j), 0);
    long want[4];
    csv_counts(lab, 4, want);
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(count(j, "async", lab[i]), want[i], "%s", lab[i]);
        cr_assert_eq(count(j, "meta", lab[i]), want[i], "%s", lab[i]);
    }
    /* Retries happened: more requests than pages. */
    cr_assert_gt(json_integer_value(json_object_get(mode(j, "async"), "requests")), 7);
    json_decref(j);
}

Test(brewery_client, malformed_json_is_precise)
{
    const char *flags[] = {"--latency", "0", "--malformed-rate", "1", NULL};
    server_start(flags);
    char args[256];
    snprintf(args, sizeof args, "--mode async,meta --retries 0 --base-url http://127.0.0.1:%u/v1",
             server_port);
    json_t *j;
    cr_assert_eq(demo(args, &j), 1);
    const char *why = failure(j, "async", "maryland");
    cr_assert(why && strstr(why, "JSON error at line"), "%s", why ? why : "(none)");
    why = failure(j, "meta", "maryland");
    cr_assert(why && strstr(why, "JSON error at line"), "%s", why ? why : "(none)");
    json_decref(j);
}

Test(brewery_client, stalled_server_times_out)
{
    const char *flags[] = {"--latency", "0", "--stall-rate", "1", "--stall-ms", "20000", NULL};
    server_start(flags);
    char args[256];
    snprintf(args, sizeof args,
             "--mode meta --retries 0 --timeout-ms 300 --base-url http://127.0.0.1:%u/v1",
             server_port);
    json_t *j;
    cr_assert_eq(demo(args, &j), 1);
    const char *why = failure(j, "meta", "virginia");
    cr_assert(why && strstr(why, "timed out"), "%s", why ? why : "(none)");
    json_decref(j);
}

Test(brewery_client, unreachable_base_url)
{
    json_t *j;
    cr_assert_eq(demo("--mode serial,async --retries 0 --base-url http://127.0.0.1:1/v1", &j), 1);
    const char *why = failure(j, "async", "new_york");
    cr_assert(why && strstr(why, "Couldn't connect") && strstr(why, "curl error 7"), "%s",
              why ? why : "(none)");
    cr_assert_not_null(failure(j, "serial", "maryland"));
    json_decref(j);
}

Test(brewery_client, unknown_state)
{
    const char *flags[] = {"--latency", "0", NULL};
    server_start(flags);
    char args[256];
    snprintf(args, sizeof args,
             "--mode async --states maryland,atlantis --base-url http://127.0.0.1:%u/v1",
             server_port);
    json_t *j;
    cr_assert_eq(demo(args, &j), 1);
    long want;
    csv_counts(&lab[1], 1, &want);
    cr_assert_eq(count(j, "async", "maryland"), want);
    const char *why = failure(j, "async", "atlantis");
    cr_assert(why && strstr(why, "unknown state"), "%s", why ? why : "(none)");
    json_decref(j);
}

Test(brewery_client, local_server_started_by_default)
{
    json_t *j;
    cr_assert_eq(demo("--mode meta --latency 0", &j), 0);
    long want;
    csv_counts(&lab[2], 1, &want);
    cr_assert_eq(count(j, "meta", "new_york"), want);
    const char *base = json_string_value(json_object_get(j, "base_url"));
    cr_assert(base && strncmp(base, "http://127.0.0.1:", 17) == 0, "%s", base ? base : "");
    json_decref(j);
}

/* --- the server child dies with the client (issue 10, defect 7) ----------- */

/* The pid of the brewery-server that `parent` started, once it has exec'd;
 * -1 if none shows up within the deadline. */
static pid_t server_child_of(pid_t parent, int64_t deadline_ms)
{
    for (int64_t waited = 0; waited < deadline_ms; waited += 20) {
        DIR *d = opendir("/proc");
        cr_assert_not_null(d);
        struct dirent *e;
        pid_t found = -1;
        while (found < 0 && (e = readdir(d))) {
            char path[300], buf[512];
            snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
            FILE *f = fopen(path, "r");
            if (!f) continue;
            size_t len = fread(buf, 1, sizeof buf - 1, f);
            fclose(f);
            buf[len] = 0;
            /* pid (comm) state ppid ...; comm has no ')' here. */
            int pid, ppid;
            char comm[64], state;
            if (sscanf(buf, "%d (%63[^)]) %c %d", &pid, comm, &state, &ppid) == 4 &&
                ppid == parent && strcmp(comm, "brewery-server") == 0)
                found = pid;
        }
        closedir(d);
        if (found > 0) return found;
        usleep(20 * 1000);
    }
    return -1;
}

/* Waits for a child of ours with a deadline; returns its status or -1. */
static int wait_deadline(pid_t pid, int64_t deadline_ms)
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

/* Starts the demo (which starts its own server, slow enough that it is
 * mid-run when `sig` arrives), sends it `sig`, and checks that the server
 * is gone within a bound.  This process is a subreaper, so a server the
 * demo left behind becomes our child instead of vanishing into PID 1.
 * `clean`: the demo itself must have stopped and reaped the server before
 * it exited. */
static void server_dies_with_client(int sig, bool clean, const char *run_mode)
{
    cr_assert_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    pid_t demo_pid = fork();
    cr_assert_geq(demo_pid, 0);
    if (demo_pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        execl(DEMO, DEMO, "--mode", run_mode, "--latency", "5000", "--json", "/dev/null",
              (char *)NULL);
        _exit(127);
    }
    pid_t srv = server_child_of(demo_pid, 10000);
    cr_assert_gt(srv, 0, "the demo started no brewery-server");
    usleep(300 * 1000); /* the demo now waits on the server's first answer */
    cr_assert_eq(kill(demo_pid, sig), 0);
    int st = wait_deadline(demo_pid, 10000);
    cr_assert_neq(st, -1, "the demo did not exit after %s", strsignal(sig));
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == sig, "the demo's status %#x", st);
    /* Not our child: the demo reaped it.  Our child: it was orphaned, and
     * must die within the bound. */
    pid_t r = waitpid(srv, &st, WNOHANG);
    if (r < 0) {
        cr_assert_eq(errno, ECHILD);
    } else {
        if (r == 0) st = wait_deadline(srv, 10000);
        if (st == -1) kill(srv, SIGKILL), waitpid(srv, NULL, 0);
        cr_assert_neq(st, -1, "brewery-server %d outlived the demo's %s", (int)srv,
                      strsignal(sig));
        cr_assert(!clean, "the demo exited on %s without reaping brewery-server", strsignal(sig));
    }
    /* Nothing else the demo started (the process pool's workers) survives
     * it either: every orphan handed to us dies within the bound. */
    for (int waited = 0;; waited += 10) {
        pid_t o = waitpid(-1, NULL, WNOHANG);
        if (o < 0 && errno == ECHILD) break;
        cr_assert_lt(waited, 10000, "a process of the demo outlived it");
        if (o == 0) usleep(10 * 1000);
    }
}

Test(brewery_client, server_dies_on_sigterm) { server_dies_with_client(SIGTERM, true, "serial"); }
Test(brewery_client, server_dies_on_sigint) { server_dies_with_client(SIGINT, true, "serial"); }
Test(brewery_client, server_dies_on_sigkill) { server_dies_with_client(SIGKILL, false, "serial"); }

/* The handler must run whichever thread takes the signal, and with the
 * executor's workers and the loop in place. */
Test(brewery_client, server_dies_on_sigterm_in_threads)
{
    server_dies_with_client(SIGTERM, true, "threads");
}
Test(brewery_client, server_dies_on_sigterm_in_processes)
{
    server_dies_with_client(SIGTERM, true, "processes");
}
Test(brewery_client, server_dies_on_sigterm_in_async)
{
    server_dies_with_client(SIGTERM, true, "async");
}
Test(brewery_client, server_dies_on_sigkill_in_processes)
{
    server_dies_with_client(SIGKILL, false, "processes");
}

/* --- a fake API on a thread of this process -------------------------------- */

typedef enum fake_mode {
    FAKE_SAME_PAGE, /* ignores `page`: the same 200 breweries every time */
    FAKE_ENDLESS,   /* a fresh full page every time, forever */
    FAKE_SLOW_LATER, /* "[]" at once for the first `fast` requests, then after `ms` */
    FAKE_BODY        /* `body` every time */
} fake_mode_t;

typedef struct fake {
    fake_mode_t mode;
    const char *body;
    int fast, ms;
    int fd;
    unsigned port;
    long requests;
    pthread_t thread;
} fake_t;

static void *fake_serve(void *arg)
{
    fake_t *f = arg;
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
        if (f->mode == FAKE_SLOW_LATER) {
            if (nth >= f->fast) usleep((useconds_t)f->ms * 1000);
            len = (size_t)snprintf(body, sizeof body, "[]");
        } else if (f->mode == FAKE_BODY) {
            len = (size_t)snprintf(body, sizeof body, "%s", f->body);
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
        if (write(c, head, (size_t)hl) == hl && write(c, body, len) == (ssize_t)len) {}
        close(c);
    }
}

static void fake_start(fake_t *f)
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

static void fake_stop(fake_t *f)
{
    shutdown(f->fd, SHUT_RDWR); /* wakes accept() */
    pthread_join(f->thread, NULL);
    close(f->fd);
}

/* --- paging stops against a server that ignores `page` (defect 9) -------- */

Test(brewery_client, repeated_page_stops_paging)
{
    fake_t f = {.mode = FAKE_SAME_PAGE};
    fake_start(&f);
    char args[256];
    snprintf(args, sizeof args,
             "--mode serial,async --states maryland,virginia --retries 0 "
             "--base-url http://127.0.0.1:%u/v1",
             f.port);
    json_t *j;
    cr_assert_eq(demo(args, &j), 1);
    fake_stop(&f);
    const char *modes[] = {"serial", "async"};
    for (int m = 0; m < 2; m++) {
        const char *why = failure(j, modes[m], "virginia");
        cr_assert(why && strstr(why, "page 2 repeats page 1"), "%s: %s", modes[m],
                  why ? why : "(none)");
        /* Two requests a state, no more. */
        cr_assert_eq(json_integer_value(json_object_get(mode(j, modes[m]), "requests")), 4,
                     "%s", modes[m]);
    }
    cr_assert_eq(f.requests, 8);
    json_decref(j);
}

Test(brewery_client, endless_paging_stops_at_the_limit)
{
    fake_t f = {.mode = FAKE_ENDLESS};
    fake_start(&f);
    char args[256];
    snprintf(args, sizeof args,
             "--mode serial --states maryland --retries 0 --base-url http://127.0.0.1:%u/v1",
             f.port);
    json_t *j;
    cr_assert_eq(demo(args, &j), 1);
    fake_stop(&f);
    const char *why = failure(j, "serial", "maryland");
    cr_assert(why && strstr(why, "page limit: 500 full pages"), "%s", why ? why : "(none)");
    cr_assert_eq(json_integer_value(json_object_get(mode(j, "serial"), "requests")), 500);
    cr_assert_eq(f.requests, 500);
    json_decref(j);
}

/* --- every numeric option is validated (issue 10 item 10) ----------------- */

/* The environment of the next demo_argv(); NULL: ours. */
static char *const *demo_env;

/* Runs the demo with argv (after the program name), stdout to /dev/null;
 * returns the exit status (-1 if it did not exit) and its stderr in err. */
static int demo_argv(const char *const *args, char *err, size_t errsize)
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
        if (demo_env) execve(DEMO, (char *const *)argv, demo_env);
        else execv(DEMO, (char *const *)argv);
        _exit(127);
    }
    int st = wait_deadline(pid, 20000);
    if (st == -1) kill(pid, SIGKILL), waitpid(pid, NULL, 0);
    ssize_t n = pread(fd, err, errsize - 1, 0);
    err[n > 0 ? n : 0] = 0;
    close(fd);
    return st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

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
            int st = demo_argv(args, err, sizeof err);
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
    cr_assert_eq(demo_argv(args, err, sizeof err), 2, "%s", err);
    cr_assert(strstr(err, "brewery: --states lists more than 128 states"), "%s", err);
}

Test(brewery_client, numeric_options_in_range_are_taken)
{
    fake_t f = {.mode = FAKE_SLOW_LATER, .fast = 1000};
    fake_start(&f);
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%u/v1", f.port);
    const char *args[] = {"--mode", "serial", "--states", "maryland", "--base-url", base,
                          "--json", "/dev/null", "--rate", "0.5", "--retries", "100",
                          "--timeout-ms", "86400000", "--latency", "3600000", NULL};
    char err[1024];
    cr_assert_eq(demo_argv(args, err, sizeof err), 0, "%s", err);
    fake_stop(&f);
    cr_assert_eq(f.requests, 1);
}

/* --- async.json's sentence (issue 12) -------------------------------------- */

Test(brewery_client, result_sentence_when_async_is_slower)
{
    /* Serial's one request is answered at once, async's after a second. */
    fake_t f = {.mode = FAKE_SLOW_LATER, .fast = 1, .ms = 1000};
    fake_start(&f);
    char args[256];
    snprintf(args, sizeof args,
             "--mode serial,async --states maryland --base-url http://127.0.0.1:%u/v1", f.port);
    json_t *j;
    cr_assert_eq(demo(args, &j), 0);
    fake_stop(&f);
    check_result(j);
    const char *result = json_string_value(json_object_get(j, "result"));
    cr_assert(strstr(result, "% slower than the serial version"), "%s", result);
    cr_assert_lt(json_real_value(json_object_get(j, "async_faster_percent")), 0);
    json_decref(j);
}

/* --- --plot DIR: a request timeline per mode (issue 12) -------------------- */

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* The PNG's signature and its IHDR width and height. */
static void check_png(const char *path, unsigned want_w, unsigned want_h)
{
    unsigned char h[24];
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s missing", path);
    size_t got = fread(h, 1, sizeof h, f);
    fclose(f);
    cr_assert_eq(got, sizeof h, "%s is too short", path);
    cr_assert(memcmp(h, "\x89PNG\r\n\x1a\n", 8) == 0 && memcmp(h + 12, "IHDR", 4) == 0,
              "%s is not a PNG", path);
    unsigned w = (unsigned)h[16] << 24 | h[17] << 16 | h[18] << 8 | h[19];
    unsigned hh = (unsigned)h[20] << 24 | h[21] << 16 | h[22] << 8 | h[23];
    cr_assert(w == want_w && hh == want_h, "%s is %ux%u", path, w, hh);
    cr_assert_gt(file_size(path), 1000, "%s has %ld bytes", path, file_size(path));
}

/* Bars in a timeline's data file (lines that are not comments or blank). */
static long bars(const char *path)
{
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s missing", path);
    char line[512];
    long n = 0;
    while (fgets(line, sizeof line, f))
        if (line[0] != '#' && line[0] != '\n') n++;
    fclose(f);
    return n;
}

/* Counts a PNG's bar-blue and failure-red pixels, decoding it with the
 * python3 standard library (zlib and the five PNG row filters). */
static const char png_counter[] =
    "import struct, sys, zlib\n"
    "def pixels(path):\n"
    "    data = open(path, 'rb').read()\n"
    "    assert data[:8] == b'\\x89PNG\\r\\n\\x1a\\n'\n"
    "    pos, idat = 8, b''\n"
    "    while pos < len(data):\n"
    "        n, kind = struct.unpack('>I4s', data[pos:pos + 8])\n"
    "        body = data[pos + 8:pos + 8 + n]\n"
    "        if kind == b'IHDR':\n"
    "            w, h, depth, ctype = struct.unpack('>IIBB', body[:10])\n"
    "        elif kind == b'IDAT':\n"
    "            idat += body\n"
    "        pos += 12 + n\n"
    "    assert depth == 8 and ctype in (2, 6), (depth, ctype)\n"
    "    bpp = 3 if ctype == 2 else 4\n"
    "    raw, stride, prev, out = zlib.decompress(idat), w * bpp, bytearray(w * bpp), []\n"
    "    for y in range(h):\n"
    "        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])\n"
    "        for i in range(stride):\n"
    "            a = line[i - bpp] if i >= bpp else 0\n"
    "            b, c = prev[i], prev[i - bpp] if i >= bpp else 0\n"
    "            if f == 1: line[i] = (line[i] + a) & 255\n"
    "            elif f == 2: line[i] = (line[i] + b) & 255\n"
    "            elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255\n"
    "            elif f == 4:\n"
    "                p = a + b - c; pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)\n"
    "                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255\n"
    "        out.append(bytes(line)); prev = line\n"
    "    return out, bpp\n"
    "rows, bpp = pixels(sys.argv[1])\n"
    "blue = red = 0\n"
    "for line in rows:\n"
    "    for i in range(0, len(line), bpp):\n"
    "        r, g, b = line[i], line[i + 1], line[i + 2]\n"
    "        if b > r + 60 and b > 150: blue += 1\n"
    "        elif r > g + 60 and r > b + 60: red += 1\n"
    "print(blue, red)\n"
;

static void png_colors(const char *png, long *blue, long *red)
{
    char py[] = "/tmp/test-brewery-png-XXXXXX";
    int fd = mkstemp(py);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, png_counter, sizeof png_counter - 1), (ssize_t)sizeof png_counter - 1);
    close(fd);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "python3 %s '%s'", py, png);
    FILE *f = popen(cmd, "r");
    cr_assert_not_null(f);
    int got = fscanf(f, "%ld %ld", blue, red);
    int st = pclose(f);
    unlink(py);
    cr_assert(got == 2 && st == 0, "python3 could not read %s", png);
}

static void tmpdir(char *dir)
{
    strcpy(dir, "/tmp/test-brewery-plot-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void rmtree(const char *dir)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

Test(brewery_client, plot_draws_a_timeline_per_mode, .timeout = 120)
{
    /* The first request fails: the chart must show a failed state too. */
    const char *flags[] = {"--latency", "20", "--fail-first", "1", NULL};
    server_start(flags);
    char dir[64], sub[96], args[512];
    tmpdir(dir);
    snprintf(sub, sizeof sub, "%s/charts", dir); /* made by the demo */
    snprintf(args, sizeof args,
             "--mode serial,threads,processes,async,meta --retries 0 --plot %s "
             "--base-url http://127.0.0.1:%u/v1",
             sub, server_port);
    json_t *j;
    cr_assert_eq(demo(args, &j), 1, "one state failed");
    const char *modes[] = {"serial", "threads", "processes", "async", "meta"};
    for (int m = 0; m < 5; m++) {
        char png[160], dat[160];
        snprintf(png, sizeof png, "%s/timeline-%s.png", sub, modes[m]);
        snprintf(dat, sizeof dat, "%s/timeline-%s.dat", sub, modes[m]);
        check_png(png, 1000, 260);
        /* One bar per request the mode made (no retries here). */
        long reqs = (long)json_integer_value(json_object_get(mode(j, modes[m]), "requests"));
        cr_assert_gt(reqs, 0);
        cr_assert_eq(bars(dat), reqs, "%s: %ld bars, %ld requests", modes[m], bars(dat), reqs);
        /* Drawn: a bar of 20 ms or more at this scale covers hundreds of
         * pixels; the serial run's first request failed and is red. */
        long blue, red;
        png_colors(png, &blue, &red);
        bool failed = m == 0;
        cr_assert_geq(blue, 300 * (reqs - failed), "%s: %ld blue pixels", modes[m], blue);
        if (failed) cr_assert_geq(red, 300, "%s: %ld red pixels", modes[m], red);
        else cr_assert_eq(red, 0, "%s: %ld red pixels", modes[m], red);
    }
    json_decref(j);
    rmtree(dir);
}

/* A --plot that cannot work fails before any request, with exit status 2. */
static void plot_refused(const char *plot_dir, const char *want)
{
    fake_t f = {.mode = FAKE_SLOW_LATER, .fast = 1000};
    fake_start(&f);
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%u/v1", f.port);
    const char *args[] = {"--mode", "serial", "--base-url", base, "--json", "/dev/null",
                          "--plot", plot_dir, NULL};
    char err[1024];
    int st = demo_argv(args, err, sizeof err);
    fake_stop(&f);
    cr_assert_eq(st, 2, "--plot %s: exit %d: %s", plot_dir, st, err);
    cr_assert(strstr(err, want), "--plot %s said: %s", plot_dir, err);
    cr_assert_eq(f.requests, 0, "--plot %s: requests were made", plot_dir);
}

Test(brewery_client, plot_without_gnuplot_is_refused)
{
    char dir[64], sub[96];
    tmpdir(dir);
    snprintf(sub, sizeof sub, "%s/charts", dir);
    char *env[] = {"PATH=/nonexistent", NULL};
    demo_env = env;
    plot_refused(sub, "--plot needs gnuplot, which is not on PATH");
    demo_env = NULL;
    cr_assert_neq(access(sub, F_OK), 0, "a refused --plot made its directory");
    rmtree(dir);
}

Test(brewery_client, plot_dir_not_writable_is_refused)
{
    char dir[64], file[96], under[128];
    tmpdir(dir);
    snprintf(file, sizeof file, "%s/a-file", dir);
    FILE *f = fopen(file, "w");
    cr_assert_not_null(f);
    fclose(f);
    plot_refused(file, "cannot write there: Not a directory");
    snprintf(under, sizeof under, "%s/sub", file);
    plot_refused(under, "cannot create the directory: Not a directory");
    if (geteuid() != 0) {
        /* root writes anywhere; everyone else is kept out by the mode. */
        char ro[96];
        snprintf(ro, sizeof ro, "%s/read-only", dir);
        cr_assert_eq(mkdir(ro, 0500), 0);
        plot_refused(ro, "cannot write there: Permission denied");
    }
    rmtree(dir);
}

Test(brewery_client, plot_gnuplot_failure_is_reported)
{
    /* A gnuplot that fails: the counts are still written, the exit status
     * is 1, the message names the script, and no PNG is left behind. */
    char dir[64], bin[96], fake[128], path_env[160], out[96];
    tmpdir(dir);
    snprintf(bin, sizeof bin, "%s/bin", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    cr_assert_eq(mkdir(bin, 0755), 0);
    snprintf(fake, sizeof fake, "%s/gnuplot", bin);
    FILE *f = fopen(fake, "w");
    cr_assert_not_null(f);
    fputs("#!/bin/sh\n: > timeline-serial.png\necho 'gnuplot: broken' >&2\nexit 3\n", f);
    fclose(f);
    cr_assert_eq(chmod(fake, 0755), 0);
    snprintf(path_env, sizeof path_env, "PATH=%s:/usr/bin:/bin", bin);
    char *env[] = {path_env, NULL};
    fake_t fk = {.mode = FAKE_SLOW_LATER, .fast = 1000};
    fake_start(&fk);
    char base[64], json[128];
    snprintf(base, sizeof base, "http://127.0.0.1:%u/v1", fk.port);
    snprintf(json, sizeof json, "%s/async.json", dir);
    const char *args[] = {"--mode", "serial", "--states", "maryland", "--base-url", base,
                          "--json", json, "--plot", out, NULL};
    char err[2048];
    demo_env = env;
    int st = demo_argv(args, err, sizeof err);
    demo_env = NULL;
    fake_stop(&fk);
    cr_assert_eq(st, 1, "exit %d: %s", st, err);
    cr_assert(strstr(err, "brewery: --plot: gnuplot failed on") &&
                  strstr(err, "timeline-serial.gp (exit 3)"),
              "%s", err);
    char png[160];
    snprintf(png, sizeof png, "%s/timeline-serial.png", out);
    cr_assert_neq(access(png, F_OK), 0, "a broken PNG was left behind");
    json_error_t e;
    json_t *j = json_load_file(json, 0, &e);
    cr_assert_not_null(j, "no JSON: %s", e.text);
    cr_assert_eq(count(j, "serial", "maryland"), 0);
    json_decref(j);
    rmtree(dir);
}

/* --- the lab's Python client agrees (issue 12) ----------------------------- */

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

Test(brewery_client, python_peer_counts_as_we_do, .timeout = 180)
{
    static const char *const all[] = {
        "alabama", "alaska", "arizona", "arkansas", "california", "colorado", "connecticut",
        "delaware", "district_of_columbia", "florida", "georgia", "hawaii", "idaho", "illinois",
        "indiana", "iowa", "kansas", "kentucky", "louisiana", "maine", "maryland",
        "massachusetts", "michigan", "minnesota", "mississippi", "missouri", "montana",
        "nebraska", "nevada", "new_hampshire", "new_jersey", "new_mexico", "new_york",
        "north_carolina", "north_dakota", "ohio", "oklahoma", "oregon", "pennsylvania",
        "rhode_island", "south_carolina", "south_dakota", "tennessee", "texas", "utah", "vermont",
        "virginia", "washington", "west_virginia", "wisconsin", "wyoming"};
    enum { N = sizeof all / sizeof *all };
    long want[N];
    csv_counts(all, N, want);
    const char *flags[] = {"--data", CSV, "--latency", "2", NULL};
    server_start(flags);
    char base[64], args[256];
    snprintf(base, sizeof base, "http://127.0.0.1:%u/v1", server_port);
    static char out[16384];
    int st = peer(base, "all", out, sizeof out);
    cr_assert_eq(st, 0, "peer-brewery.py failed (%d): %s", st, out);
    cr_assert(strstr(out, "python-client: requests"), "%s", out);
    snprintf(args, sizeof args, "--mode serial,async,meta --states all --base-url %s", base);
    json_t *j;
    cr_assert_eq(demo(args, &j), 0);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(peer_count(out, all[i]), want[i], "python, %s", all[i]);
        cr_assert_eq(count(j, "serial", all[i]), want[i], "serial, %s", all[i]);
        cr_assert_eq(count(j, "async", all[i]), want[i], "async, %s", all[i]);
        cr_assert_eq(count(j, "meta", all[i]), want[i], "meta, %s", all[i]);
    }
    json_decref(j);
}

Test(brewery_client, python_peer_reports_failures)
{
    /* The lab's loop would page this server forever; the peer stops, says
     * why, and exits 1 instead of printing a count. */
    fake_t f = {.mode = FAKE_SAME_PAGE};
    fake_start(&f);
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%u/v1", f.port);
    static char out[4096];
    int st = peer(base, "maryland", out, sizeof out);
    fake_stop(&f);
    cr_assert_eq(st, 1, "exit %d: %s", st, out);
    cr_assert(strstr(out, "python-failed: maryland=page 2 repeats an earlier page"), "%s", out);
    cr_assert_eq(peer_count(out, "maryland"), -1, "%s", out);
}

/* --- the command line, attacked ------------------------------------------- */

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
        cr_assert_eq(demo_argv(args, err, sizeof err), 2, "--mode '%s': %s", modes[i], err);
        cr_assert(strstr(err, "brewery: --mode is empty"), "--mode '%s': %s", modes[i], err);
        cr_assert_neq(access(json, F_OK), 0, "--mode '%s' still wrote %s", modes[i], json);
    }
}

/* A --json file that cannot be written is refused before the first request
 * (exit 2, with the reason), not after a run of minutes with "cannot
 * write". */
Test(brewery_client, unwritable_json_is_refused_before_any_request)
{
    fake_t f = {.mode = FAKE_SLOW_LATER, .fast = 1000};
    fake_start(&f);
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%u/v1", f.port);
    static const char *const paths[][2] = {{"/nonexistent-dir/async.json", "No such file or directory"},
                                           {"/tmp", "it is a directory"},
                                           {"/dev/null/async.json", "Not a directory"}};
    for (size_t i = 0; i < 3; i++) {
        const char *args[] = {"--mode", "serial", "--states", "maryland", "--base-url", base, "--json", paths[i][0], NULL};
        char err[1024], want[160];
        cr_assert_eq(demo_argv(args, err, sizeof err), 2, "--json %s: %s", paths[i][0], err);
        snprintf(want, sizeof want, "brewery: --json %s: cannot write there: %s", paths[i][0], paths[i][1]);
        cr_assert(strstr(err, want), "--json %s said: %s", paths[i][0], err);
    }
    fake_stop(&f);
    cr_assert_eq(f.requests, 0, "the run started before --json was checked");
}

/* jansson takes only UTF-8: a state name that is not (a Latin-1 "delaware"
 * with an e-acute), or whose failure message is cut inside a character,
 * once vanished from async.json's states and failures without a word.  Each
 * bad byte is now U+FFFD, and every state is in the file. */
Test(brewery_client, non_utf8_state_is_kept_in_json)
{
    const char *flags[] = {"--latency", "0", NULL};
    server_start(flags);
    /* "x" then 100 e-acutes: the message keeps 180 bytes of the name, which
     * ends half-way through a character. */
    char longname[1 + 200 + 1] = "x";
    for (int i = 0; i < 100; i++) strcat(longname, "\xc3\xa9");
    char args[1024];
    snprintf(args, sizeof args, "--mode serial --states 'del\xe9ware,maryland,%s' --base-url http://127.0.0.1:%u/v1",
             longname, server_port);
    json_t *j;
    cr_assert_eq(demo(args, &j), 1);
    json_t *states = json_object_get(j, "states");
    cr_assert_eq(json_array_size(states), 3, "every state is listed");
    cr_assert_str_eq(json_string_value(json_array_get(states, 0)), "del\xef\xbf\xbdware");
    cr_assert_str_eq(json_string_value(json_array_get(states, 2)), longname);
    long want;
    csv_counts(&lab[1], 1, &want);
    cr_assert_eq(count(j, "serial", "maryland"), want);
    const char *why = failure(j, "serial", "del\xef\xbf\xbdware");
    cr_assert(why && strstr(why, "unknown state 'del\xef\xbf\xbdware'"), "%s", why ? why : "(none)");
    why = failure(j, "serial", longname);
    cr_assert(why && strstr(why, "unknown state 'x\xc3\xa9"), "%s", why ? why : "(none)");
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
        fake_t f = {.mode = FAKE_BODY, .body = bodies[i][0]};
        fake_start(&f);
        char args[160];
        snprintf(args, sizeof args, "--mode meta --states maryland --retries 0 --base-url http://127.0.0.1:%u/v1", f.port);
        json_t *j;
        int st = demo(args, &j);
        fake_stop(&f);
        cr_expect_eq(st, 1, "%s: exit %d", bodies[i][0], st);
        cr_expect_eq(count(j, "meta", "maryland"), -1, "%s was taken as a count", bodies[i][0]);
        const char *why = failure(j, "meta", "maryland");
        char want[96];
        snprintf(want, sizeof want, "bad total '%s'", bodies[i][1]);
        cr_expect(why && strstr(why, want), "%s: %s", bodies[i][0], why ? why : "(no failure)");
        json_decref(j);
    }
    /* A count, as a number or as the real service's string, still counts. */
    static const char *const good[] = {"{\"total\": 7}", "{\"total\": \"7\"}", "{\"total\": 0}"};
    for (size_t i = 0; i < 3; i++) {
        fake_t f = {.mode = FAKE_BODY, .body = good[i]};
        fake_start(&f);
        char args[160];
        snprintf(args, sizeof args, "--mode meta --states maryland --retries 0 --base-url http://127.0.0.1:%u/v1", f.port);
        json_t *j;
        cr_expect_eq(demo(args, &j), 0, "%s", good[i]);
        fake_stop(&f);
        cr_expect_eq(count(j, "meta", "maryland"), i == 2 ? 0 : 7, "%s", good[i]);
        json_decref(j);
    }
}

/* A mode whose states failed may fail fast: the sentence once said "async
 * version was 97.00% faster" when serial's requests had failed and async's
 * had not.  Times are compared only when both modes counted every state. */
Test(brewery_client, result_sentence_only_compares_complete_runs)
{
    const char *flags[] = {"--latency", "0", "--fail-first", "1", NULL};
    server_start(flags);
    char args[256];
    snprintf(args, sizeof args, "--mode serial,async --retries 0 --base-url http://127.0.0.1:%u/v1", server_port);
    json_t *j;
    cr_assert_eq(demo(args, &j), 1);
    cr_assert_not_null(failure(j, "serial", "district_of_columbia"), "the first request failed");
    const char *result = json_string_value(json_object_get(j, "result"));
    cr_assert(result && strstr(result, "the serial and async versions did not both succeed (1 and 0 of 4 states failed)"),
              "%s", result ? result : "(none)");
    cr_assert_null(json_object_get(j, "async_faster_percent"));
    json_decref(j);
}
