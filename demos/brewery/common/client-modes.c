/* The five ways of counting breweries (see client-modes.h).  Every mode uses
 * the same libasync HTTP client: blocking on a private loop in serial,
 * threads and processes; awaited from tasks in async; with callbacks in meta.
 * The threads and processes modes map over the states with libasync's
 * executor (async/executor.h) when the library has it and the backend is
 * built in, one worker per state; otherwise with plain pthreads and fork. */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <async.h>
#include "client-json.h"
#include "client-modes.h"

static const char *const names[CLIENT_NMODES] = {"serial", "threads", "processes", "async",
                                                 "meta"};

const char *client_mode_name(client_mode_t mode)
{
    return mode < CLIENT_NMODES ? names[mode] : "?";
}

int client_mode_parse(const char *name)
{
    for (int i = 0; i < CLIENT_NMODES; i++)
        if (strcmp(name, names[i]) == 0) return i;
    return -1;
}

static int client_new(async_loop_t *loop, const client_config_t *cfg, async_http_t **out)
{
    async_http_opts_t o = {
        .rate_limit = cfg->rate_limit,
        .max_retries = cfg->max_retries,
        .timeout_ns = cfg->timeout_ns,
        .user_agent = "libasync-brewery/0.1",
        .accept_encoding = cfg->compressed ? "" : NULL,
        .max_body = CLIENT_MAX_PAGE_BYTES,
    };
    return async_http_new(out, loop, &o);
}

static void span_begin(client_count_t *out)
{
    if (out->nspans < CLIENT_MAX_SPANS) out->spans[out->nspans].start = async_now();
}

static void span_end(client_count_t *out)
{
    if (out->nspans < CLIENT_MAX_SPANS) out->spans[out->nspans++].end = async_now();
}

static void set_error(client_count_t *out, int error, const char *fmt, const char *detail)
{
    out->count = -1;
    out->error = error;
    snprintf(out->errmsg, sizeof out->errmsg, fmt, detail);
}

/* --- one state, page by page (blocking, or awaited inside a task) ---------- */

/* FNV-1a: a page's fingerprint.  Two different pages of breweries sharing a
 * 64-bit fingerprint is far less likely than any other failure here. */
static uint64_t fingerprint(const char *p, size_t n)
{
    uint64_t h = 14695981039346656037u;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * 1099511628211u;
    return h;
}

void client_count_state(async_http_t *http, const client_config_t *cfg, const char *state,
                        client_count_t *out)
{
    char url[1024], page[16], per_page[16], why[200];
    snprintf(url, sizeof url, "%s/breweries", cfg->base_url);
    snprintf(per_page, sizeof per_page, "%d", CLIENT_PER_PAGE);
    memset(out, 0, sizeof *out);
    /* The fingerprints of the full pages so far: a server that ignores
     * `page` (or cycles) would otherwise be paged forever. */
    uint64_t *seen = malloc(CLIENT_MAX_PAGES * sizeof *seen);
    if (!seen) {
        set_error(out, ASYNC_ENOMEM, "%s", async_strerror(ASYNC_ENOMEM));
        return;
    }
    for (int p = 1;; p++) {
        if (p > CLIENT_MAX_PAGES) {
            snprintf(why, sizeof why,
                     "stopped at the page limit: %d full pages of %d and more to come "
                     "(does the server honour 'page'?)",
                     CLIENT_MAX_PAGES, CLIENT_PER_PAGE);
            set_error(out, ASYNC_EIO, "%s", why);
            break;
        }
        snprintf(page, sizeof page, "%d", p);
        const char *query[] = {"by_state", state, "per_page", per_page, "page", page, NULL};
        async_http_response_t *r = NULL;
        span_begin(out);
        int rc = async_http_get(&r, http, url, query);
        span_end(out);
        out->requests += r ? r->attempts : 1;
        long n = 0;
        int bad = rc || !r ? 0 : client_json_array_count(r->body, r->body_len, &n);
        if (bad == -1) {
            /* Malformed: jansson says where, with line and column. */
            json_t *j = NULL;
            rc = async_http_response_json(&j, r);
            json_decref(j);
            if (!rc) rc = ASYNC_EJSON;
        }
        if (rc) {
            set_error(out, rc, "%s", r && r->errmsg[0] ? r->errmsg : async_strerror(rc));
            async_http_response_free(r);
            break;
        }
        uint64_t h = bad ? 0 : fingerprint(r->body, r->body_len);
        async_http_response_free(r);
        if (bad == -2) {
            set_error(out, ASYNC_EJSON, "%s", "page is not a JSON array");
            break;
        }
        if (n < CLIENT_PER_PAGE) { /* a short or empty page is the last */
            out->count += (long)n;
            break;
        }
        int again = 0;
        for (int q = 1; q < p && !again; q++)
            if (seen[q - 1] == h) again = q;
        if (again) {
            snprintf(why, sizeof why,
                     "page %d repeats page %d: the server ignores 'page' (stopped after %ld "
                     "breweries)",
                     p, again, out->count);
            set_error(out, ASYNC_EIO, "%s", why);
            break;
        }
        seen[p - 1] = h;
        out->count += (long)n;
    }
    free(seen);
}

/* --- serial ---------------------------------------------------------------- */

static int run_serial(const client_config_t *cfg, const char *const *states, size_t n,
                      client_count_t *out)
{
    async_http_t *http;
    int err = client_new(NULL, cfg, &http);
    if (err) return err;
    for (size_t i = 0; i < n; i++) client_count_state(http, cfg, states[i], &out[i]);
    async_http_destroy(http);
    return 0;
}

/* --- threads and processes through the executor ---------------------------- */

#define NAME_MAX_LEN 64

/* A work function: one state, paged with a blocking client of the worker's
 * own.  Input is the state's name (plain bytes, so it crosses to a worker
 * process); output a client_count_t.  ctx is the configuration, prepared
 * before the pool was made (the process backend sees its copy). */
static int count_work(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out_size;
    const client_config_t *cfg = ctx;
    client_count_t *c = out;
    async_http_t *http;
    int err = client_new(NULL, cfg, &http);
    if (err) return async_work_fail(err, "HTTP client: %s", async_strerror(err));
    client_count_state(http, cfg, in, c);
    async_http_destroy(http);
    return 0; /* a failed state is reported in its count, not as a failed job */
}

/* threads and processes: the same work function on either backend. */
static int run_executor(async_backend_t backend, const client_config_t *cfg,
                        const char *const *states, size_t n, client_count_t *out)
{
    async_executor_opts_t eo = {.backend = backend, .workers = n < 64 ? (unsigned)n : 64};
    async_executor_t *ex;
    int err = async_executor_new(&ex, &eo);
    if (err) return err;
    char(*names)[NAME_MAX_LEN] = calloc(n, NAME_MAX_LEN);
    if (!names) {
        async_executor_free(ex);
        return ASYNC_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) snprintf(names[i], NAME_MAX_LEN, "%s", states[i]);
    async_map_t m = {.fn = count_work, .ctx = (void *)cfg, .in = names, .in_size = NAME_MAX_LEN,
                     .out = out, .out_size = sizeof *out, .n = n, .chunksize = 1};
    async_map_error_t me;
    err = async_executor_map(ex, &m, &me);
    if (err && me.index < n) {
        /* Only a job that failed outright lands here (a worker died, the
         * client could not start); chunks of one keep it to that state. */
        set_error(&out[me.index], me.code, "%s", me.message);
        /* The map names only its lowest failure.  Any other state without
         * a request or an error had its job fail too (a state that ran made
         * a request), and its zeroed count read as "0 breweries". */
        char why[sizeof out->errmsg];
        snprintf(why, sizeof why, "its job ended without a result, as %.64s's did: %.140s", states[me.index],
                 me.message);
        for (size_t i = 0; i < n; i++)
            if (!out[i].error && out[i].requests == 0) set_error(&out[i], me.code, "%s", why);
    }
    async_executor_free(ex);
    free(names);
    return 0;
}

static int run_threads(const client_config_t *cfg, const char *const *states, size_t n,
                       client_count_t *out)
{
    return run_executor(ASYNC_BACKEND_THREADS, cfg, states, n, out);
}

static int run_processes(const client_config_t *cfg, const char *const *states, size_t n,
                         client_count_t *out)
{
    return run_executor(ASYNC_BACKEND_PROCESSES, cfg, states, n, out);
}

/* A loop and a client on it, for the event-driven modes; both or neither. */
static int loop_client_new(const client_config_t *cfg, async_loop_t **loop, async_http_t **http)
{
    int err = async_loop_new(loop);
    if (err) return err;
    if ((err = client_new(*loop, cfg, http))) async_loop_destroy(*loop);
    return err;
}

/* --- async: one task per state --------------------------------------------- */

typedef struct task_job {
    async_http_t *http;
    const client_config_t *cfg;
    const char *state;
    client_count_t *out;
} task_job_t;

static int state_task(void *arg, void **result)
{
    (void)result;
    task_job_t *j = arg;
    client_count_state(j->http, j->cfg, j->state, j->out);
    return 0;
}

static int run_async(const client_config_t *cfg, const char *const *states, size_t n,
                     client_count_t *out)
{
    async_loop_t *loop;
    async_http_t *http;
    int err = loop_client_new(cfg, &loop, &http);
    if (err) return err;
    task_job_t *jobs = calloc(n, sizeof *jobs);
    if (!jobs) err = ASYNC_ENOMEM;
    async_task_opts_t topts = {.detached = true};
    for (size_t i = 0; jobs && i < n; i++) {
        jobs[i] = (task_job_t){http, cfg, states[i], &out[i]};
        int e = async_task_spawn(NULL, loop, state_task, &jobs[i], &topts);
        if (e) set_error(&out[i], e, "%s", async_strerror(e));
    }
    async_loop_run(loop, ASYNC_RUN_DEFAULT);
    free(jobs);
    async_http_destroy(http);
    async_loop_destroy(loop);
    return err;
}

/* --- meta: one request per state, all at once ------------------------------ */

/* A count in decimal digits only: strtol alone would take " 7", "+7" and
 * "-5", and an overflow as LONG_MAX, and a negative count would reach
 * async.json as breweries. */
static bool whole(const char *s, long *out)
{
    if (!(*s >= '0' && *s <= '9')) return false;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end) return false;
    *out = v;
    return true;
}

static void on_meta(async_http_response_t *r, void *arg)
{
    client_count_t *out = arg;
    span_end(out);
    out->requests = r->attempts;
    json_t *j;
    int rc = async_http_response_json(&j, r);
    if (rc) {
        set_error(out, rc, "%s", r->errmsg);
        async_http_response_free(r);
        return;
    }
    async_http_response_free(r);
    /* The real service sends the total as a string, the local one as a
     * number: take either. */
    json_t *t = json_object_get(j, "total");
    if (json_is_integer(t) && json_integer_value(t) >= 0 && json_integer_value(t) <= LONG_MAX) {
        out->count = (long)json_integer_value(t);
    } else if (json_is_string(t) && whole(json_string_value(t), &out->count)) {
        /* counted */
    } else if (json_is_string(t)) {
        set_error(out, ASYNC_EJSON, "bad total '%.100s' (not a count of breweries)", json_string_value(t));
    } else if (json_is_number(t)) {
        char v[32];
        snprintf(v, sizeof v, "%.17g", json_number_value(t));
        set_error(out, ASYNC_EJSON, "bad total '%s' (not a count of breweries)", v);
    } else {
        set_error(out, ASYNC_EJSON, "%s", "meta has no total");
    }
    json_decref(j);
}

static int run_meta(const client_config_t *cfg, const char *const *states, size_t n,
                    client_count_t *out)
{
    async_loop_t *loop;
    async_http_t *http;
    int err = loop_client_new(cfg, &loop, &http);
    if (err) return err;
    char url[1024];
    snprintf(url, sizeof url, "%s/breweries/meta", cfg->base_url);
    for (size_t i = 0; i < n; i++) {
        memset(&out[i], 0, sizeof out[i]);
        const char *query[] = {"by_state", states[i], NULL};
        async_http_request_t req = {.url = url, .query = query};
        span_begin(&out[i]);
        int e = async_http_send(http, &req, on_meta, &out[i]);
        if (e) set_error(&out[i], e, "%s", async_strerror(e));
    }
    async_loop_run(loop, ASYNC_RUN_DEFAULT);
    async_http_destroy(http);
    async_loop_destroy(loop);
    return 0;
}

int client_run(client_mode_t mode, const client_config_t *cfg, const char *const *states,
               size_t n, client_count_t *out)
{
    memset(out, 0, n * sizeof *out);
    switch (mode) {
    case CLIENT_SERIAL: return run_serial(cfg, states, n, out);
    case CLIENT_THREADS: return run_threads(cfg, states, n, out);
    case CLIENT_PROCESSES: return run_processes(cfg, states, n, out);
    case CLIENT_ASYNC: return run_async(cfg, states, n, out);
    case CLIENT_META: return run_meta(cfg, states, n, out);
    default: return ASYNC_EINVAL;
    }
}
