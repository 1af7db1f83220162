/* Fixtures of the brewery tests (tests/test-brewery-server-*.c and
 * tests/test-brewery-client-*.c): the built programs and the shared CSV,
 * brewery-server started on a free port and stopped, GETs against it with
 * libcurl, the Open Brewery DB CSV read independently of the server (with
 * libcsv), and a reference LIKE matcher to check the server's answers by;
 * for the demo's tests, runs of the demo, readers of the JSON it writes, the
 * lab's counts by python3, and a fake API that misbehaves on request. */
#ifndef TEST_SUPPORT_BREWERY_H
#define TEST_SUPPORT_BREWERY_H
#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdint.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/resource.h>
#include <sys/types.h>

#define SERVER ASYNC_OUT_DIR "/demos/brewery/brewery-server"
#define DEMO ASYNC_OUT_DIR "/demos/brewery/brewery"
#define CSV ASYNC_SRC_DIR "/../shared/data/openbrewerydb/breweries.csv"

/* Whether the shared CSV is there (tests that need it skip, and say so). */
bool srv_have_csv(void);

/* The suite's .init and .fini: libcurl's global state. */
void srv_suite_init(void);
void srv_suite_fini(void);

/* --- the server process ---------------------------------------------------- */

typedef struct srv {
    pid_t pid;
    unsigned port;
} srv_t;

/* Starts brewery-server with `--port 0 --quiet` and the extra arguments (a
 * NULL-terminated list, or NULL), and reads the port it prints.  The server
 * gets SIGTERM if the test process dies (a failed cr_assert ends it at once),
 * so no server outlives its test.  Fails the test if it printed no port. */
void srv_start_argv(srv_t *s, const char *const *extra);
/* The same with the extra arguments as the NULL-terminated parameters. */
void srv_start(srv_t *s, const char *first, ...);
/* Waits for the server to exit; returns its wait status. */
int srv_wait(srv_t *s);
/* SIGTERM, then the server must exit 0 on its own (clean shutdown). */
void srv_stop(srv_t *s);
/* For a fixture's teardown: SIGTERM and reap if s->pid > 0 (no check of how
 * it ended; it may be gone already); s->pid becomes -1. */
void srv_kill(srv_t *s);

/* In a forked child before exec (srv_start does it): the death signal above,
 * and srv_nofile as its RLIMIT_NOFILE if srv_nofile.rlim_max is set. */
void srv_child_setup(void);
extern struct rlimit srv_nofile;

/* --- requests ------------------------------------------------------------- */

/* An answer: curl's code, the status, the body (malloc'd: free it; NULL if
 * empty), two headers, and how long it took. */
typedef struct srv_resp {
    CURLcode rc;
    long status;
    char *body;
    size_t len;
    char retry_after[32];
    char remaining[32]; /* X-RateLimit-Remaining */
    double secs;
} srv_resp_t;

/* An easy handle for http://127.0.0.1:PORT/path that fills r (for multi). */
CURL *srv_easy(const srv_t *s, const char *path, srv_resp_t *r, long timeout_ms);
/* GET path with a timeout in ms. */
srv_resp_t srv_get_t(const srv_t *s, const char *path, long timeout_ms);
/* GET of a printf-formatted path with a 20 s timeout. */
srv_resp_t srv_get(const srv_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* GET that must answer 200 with JSON (else the test fails); the parsed body. */
json_t *srv_get_json(const srv_t *s, const char *path);
/* srv_start with `--latency 0 --data CSV`; skips the test (it is counted and
 * named as skipped) if the shared CSV is missing. */
void srv_start_on_csv(srv_t *s);
/* The integer "total" of /v1/breweries/meta?query (the test fails without it). */
long srv_meta_total(const srv_t *s, const char *query);
/* The status of a GET of path (the test fails if there is no answer). */
long srv_status(const srv_t *s, const char *path);
/* GET that must answer status with a JSON message and, if field is not
 * NULL, an errors.field list (the API's 422). */
void srv_expect_error(const srv_t *s, long status, const char *path, const char *field);

/* --- the CSV, read by the test, for answers to check against ---------------- */

/* The Open Brewery DB CSV's header line (with its newline), for small CSVs. */
extern const char srv_csv_header[];

/* A whole CSV in memory, read with libcsv in strict mode: the server's own
 * loader is what is under test, so this one is written separately. */
typedef struct csv_table {
    char **cell;    /* nrows x ncols, "" where empty */
    size_t nrows, ncols, cap;
    char *head[32]; /* the header's column names */
    size_t col;     /* column of the field being read */
    bool in_header;
} csv_table_t;

/* Reads path (the test fails if it cannot). */
csv_table_t *csv_table_load(const char *path);
/* The cell of row in the column named name (the test fails if there is no such column). */
const char *csv_cell(const csv_table_t *t, size_t row, const char *name);
void csv_table_free(csv_table_t *t);

/* SQL LIKE '%pattern%' on text, any case for ASCII letters, '_' one code
 * point: the textbook O(m*n) dynamic program, obviously right, to check the
 * server's matcher against. */
bool srv_like_ref(const char *pattern, const char *text);

/* --- the brewery demo's tests ----------------------------------------------- */

/* The suite's brewery-server, started by cli_server_start with extra flags
 * (a NULL-terminated list, or NULL), and stopped by cli_server_stop: the
 * suite's .fini, so a test need not stop it. */
extern srv_t cli_server;
void cli_server_start(const char *const *flags);
void cli_server_stop(void);

/* Runs the demo with args (one string, split by the shell) and --json to a
 * temporary file, output to /dev/null; returns its exit status (-1 if it did
 * not exit) and the JSON it wrote (the test fails if it wrote none). */
int cli_demo(const char *args, json_t **out);
/* cli_demo with `--base-url` the suite's server's /v1 after args. */
int cli_demo_on_server(const char *args, json_t **out);
/* Runs the demo with argv after the program name (NULL-terminated), stdout to
 * /dev/null, in the environment cli_demo_env (NULL: ours), for at most 20 s;
 * returns its exit status (-1 if it did not exit) and its stderr in err. */
int cli_demo_argv(const char *const *args, char *err, size_t errsize);
extern char *const *cli_demo_env;
/* Waits for a child of ours for up to deadline_ms; its wait status or -1. */
int cli_wait_deadline(pid_t pid, int64_t deadline_ms);

/* The lab's four states. */
extern const char *const cli_lab[4];
/* The breweries of each state in the shared CSV, counted by python3 the way
 * the API matches by_state: SQL LIKE '%state%' on state_province, any case,
 * '_' matching any one character (so "virginia" counts West Virginia too). */
void cli_csv_counts(const char *const *states, size_t n, long *out);

/* In the demo's JSON j: mode m's object, its count for state (-1 if none),
 * and its failure message for state (NULL if none). */
json_t *cli_mode(json_t *j, const char *m);
long cli_count(json_t *j, const char *m, const char *state);
const char *cli_failure(json_t *j, const char *m, const char *state);
/* j's "result" sentence and async_faster_percent are those the durations
 * in the file give, and "host" is this host. */
void cli_check_result(json_t *j);

/* A fake Open Brewery DB API on a thread of this process, on a free port of
 * 127.0.0.1; every answer is 200 JSON and ends the connection. */
typedef enum cli_fake_mode {
    FAKE_SAME_PAGE,  /* ignores `page`: the same 200 breweries every time */
    FAKE_ENDLESS,    /* a fresh full page every time, forever */
    FAKE_SLOW_LATER, /* "[]" at once for the first `fast` requests, then after `ms` */
    FAKE_BODY        /* `body` every time */
} cli_fake_mode_t;

typedef struct cli_fake {
    cli_fake_mode_t mode;
    const char *body;
    int fast, ms;
    int fd;
    unsigned port;  /* set by cli_fake_start */
    long requests;  /* answered so far (read it after cli_fake_stop) */
    pthread_t thread;
} cli_fake_t;

/* Starts f (mode and its parameters set by the caller). */
void cli_fake_start(cli_fake_t *f);
void cli_fake_stop(cli_fake_t *f);

#endif
