/* Fixtures of the brewery tests (tests/test-brewery-server-*.c and
 * tests/test-brewery-client-*.c): the built programs and the shared CSV,
 * brewery-server started on a free port and stopped, GETs against it with
 * libcurl, the Open Brewery DB CSV read independently of the server (with
 * libcsv), and a reference LIKE matcher to check the server's answers by. */
#ifndef TEST_SUPPORT_BREWERY_H
#define TEST_SUPPORT_BREWERY_H
#include <curl/curl.h>
#include <jansson.h>
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

#endif
