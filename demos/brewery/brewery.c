/* brewery: count the breweries of US states through the Open Brewery DB API,
 * serially, with threads, with processes, event-driven, and with one meta
 * request per state; print a table of counts and seconds per mode and write
 * them to a JSON file (the lab's async.json, extended).
 *
 *   brewery [--mode serial|threads|processes|async|meta|all[,..]]
 *           [--states a,b,..|all] [--base-url URL] [--json FILE]
 *           [--latency MS] [--server-data FILE] [--rate N] [--retries N]
 *           [--timeout-ms N] [--plot DIR]
 *
 * --plot DIR draws each mode's request timeline into DIR/timeline-MODE.png
 * (client-plot.h); a DIR it cannot write or a missing gnuplot is reported
 * with exit status 2 before any request, as is a --json FILE that cannot
 * be written there (an empty name included) or is the --server-data file
 * itself, an empty --mode, a state named
 * twice in --states, a --base-url that is not http:// or https:// (its
 * trailing slashes are dropped); --latency or --server-data with
 * --base-url (they set the local server, which then does not run) is
 * ignored with a warning.  State names and messages that are
 * not UTF-8 are written to the JSON with U+FFFD for each bad byte.
 *
 * Without --base-url it starts the local brewery-server on a free port.  A
 * state that fails in a mode is marked failed and the others are still
 * reported (a mode that cannot run at all, as a process pool under a small
 * ulimit -v or -f, fails each of its states); async.json is written whole
 * or not at all (demos/common/outfile.h); the exit status is 1 if anything
 * failed, 2 on a bad option (every
 * numeric option must be a plain decimal number in its range: --latency
 * 0..3600000, --rate 0..1e6, --retries 0..100, --timeout-ms 0..86400000). */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <async.h>
#include "common/client-modes.h"
#include "common/client-plot.h"
#include "common/client-server.h"
#include "common/client-states.h"
#include "../common/outfile.h"

/* The numeric options' ranges: the server's own bound on latency (an hour),
 * a day for one attempt, and enough retries and rate for any real use. */
#define BREWERY_MAX_LATENCY_MS 3600000L
#define BREWERY_MAX_TIMEOUT_MS 86400000L
#define BREWERY_MAX_RETRIES 100L
#define BREWERY_MAX_RATE 1e6

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static void usage(FILE *f)
{
    fprintf(f,
            "usage: brewery [options]\n"
            "  --mode M          serial, threads, processes, async, meta or all (default),\n"
            "                    or a comma list of them\n"
            "  --states LIST     comma list of states (default %s,%s,%s,%s), or all\n"
            "  --base-url URL    API base, e.g. https://api.openbrewerydb.org/v1\n"
            "                    (default: start the local brewery-server)\n"
            "  --json FILE       results file (default async.json)\n"
            "  --latency MS      the local server's latency, 0..3600000 (default: its own, 100)\n"
            "  --server-data F   the local server serves this Open Brewery DB CSV\n"
            "  --rate N          at most N requests per second, 0..1e6; 0: no limit\n"
            "                    (default: 2 for a remote base URL, as Open Brewery DB\n"
            "                    allows 120 a minute; else none)\n"
            "  --retries N       retries of a transient failure, 0..100 (default 3)\n"
            "  --timeout-ms N    per request attempt, 0..86400000 (default 30000; 0: none)\n"
            "  --plot DIR        draw each mode's request timeline with gnuplot as\n"
            "                    DIR/timeline-MODE.png (one row per state, one bar per\n"
            "                    request); DIR is made if missing\n",
            client_lab_states[0], client_lab_states[1], client_lab_states[2],
            client_lab_states[3]);
}

/* The numeric options: a plain decimal number in [0, max], nothing before or
 * after it (strtol and strtod would take " 5", "+5", "5abc" as far as they
 * read, "inf", "nan" and hex).  0 or -1 with the message printed. */
static int bad_number(const char *opt, const char *val, const char *want)
{
    fprintf(stderr, "brewery: invalid value for --%s: '%s' (%s)\n", opt, val, want);
    return -1;
}

static int parse_long(const char *opt, const char *val, long max, long *out)
{
    char want[64];
    snprintf(want, sizeof want, "want a whole number from 0 to %ld", max);
    if (!(*val >= '0' && *val <= '9')) return bad_number(opt, val, want);
    char *end;
    errno = 0;
    long v = strtol(val, &end, 10);
    if (errno || *end || v > max) return bad_number(opt, val, want);
    *out = v;
    return 0;
}

static int parse_double(const char *opt, const char *val, double max, double *out)
{
    char want[64];
    snprintf(want, sizeof want, "want a number from 0 to %g", max);
    bool digit = *val >= '0' && *val <= '9', dot = *val == '.' && val[1] >= '0' && val[1] <= '9';
    if (!digit && !dot) return bad_number(opt, val, want);
    for (const char *p = val; *p; p++)
        if (*p == 'x' || *p == 'X') return bad_number(opt, val, want);
    char *end;
    errno = 0;
    double v = strtod(val, &end);
    if (errno || *end || !isfinite(v) || v > max) return bad_number(opt, val, want);
    *out = v;
    return 0;
}

/* Splits a comma list in place into out[0..n); returns n, or SIZE_MAX when
 * it has more than max items (which used to be dropped without a word). */
static size_t split(char *s, const char **out, size_t max)
{
    size_t n = 0;
    for (char *tok = strtok(s, ","); tok; tok = strtok(NULL, ",")) {
        if (n == max) return SIZE_MAX;
        out[n++] = tok;
    }
    return n;
}

/* Seconds are written to the microsecond with WRITTEN_DIGITS significant
 * digits (exact up to 999 s), and the result sentence is computed from the
 * values as written, so that anyone reading async.json gets the sentence's
 * figure back from its durations, to the last digit. */
#define WRITTEN_DIGITS 9

static double as_written(double seconds)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%.*g", WRITTEN_DIGITS, round(seconds * 1e6) / 1e6);
    return strtod(buf, NULL);
}

/* The lab's sentence, X = (serial - async) / serial * 100 with two
 * decimals.  When async was slower, X is negative and the sentence says
 * "slower" with -X ("async version was 12.34% slower than the serial
 * version"), as "-12.34% faster" reads badly; a figure that rounds to zero
 * is "0.00% faster".  Returns X, rounded to the two decimals printed. */
static double result_sentence(double serial, double async, char *buf, size_t size)
{
    double x = (serial - async) / serial * 100.0;
    char fig[64];
    snprintf(fig, sizeof fig, "%.2f", x < 0 ? -x : x);
    bool slower = x < 0 && strcmp(fig, "0.00") != 0;
    snprintf(buf, size, "async version was %s%% %s than the serial version", fig,
             slower ? "slower" : "faster");
    double r = strtod(fig, NULL);
    return slower ? -r : r;
}

/* jansson refuses a string that is not UTF-8 (json_string returns NULL, and
 * the state or its failure then vanished from async.json without a word):
 * --states is the user's bytes, and a message cut at a fixed length can end
 * inside a character.  Each byte that does not begin a complete UTF-8
 * sequence becomes U+FFFD, as Python's errors="replace" reads it. */
typedef struct utf8 {
    char s[3 * 256 + 1];
} utf8_t;

static utf8_t text(const char *in)
{
    utf8_t o;
    size_t n = 0;
    const unsigned char *p = (const unsigned char *)in;
    while (*p && n + 4 < sizeof o.s) {
        int len = p[0] < 0x80 ? 1 : p[0] >= 0xc2 && p[0] < 0xe0 ? 2 : p[0] >= 0xe0 && p[0] < 0xf0 ? 3
                                 : p[0] >= 0xf0 && p[0] < 0xf5 ? 4 : 0;
        for (int k = 1; k < len; k++)
            if ((p[k] & 0xc0) != 0x80) len = 0;
        /* Overlong forms, surrogates and code points past U+10FFFF. */
        if ((len == 3 && ((p[0] == 0xe0 && p[1] < 0xa0) || (p[0] == 0xed && p[1] >= 0xa0))) ||
            (len == 4 && ((p[0] == 0xf0 && p[1] < 0x90) || (p[0] == 0xf4 && p[1] >= 0x90))))
            len = 0;
        if (len == 0) {
            memcpy(o.s + n, "\xef\xbf\xbd", 3);
            n += 3;
            p++;
        } else {
            memcpy(o.s + n, p, (size_t)len);
            n += (size_t)len;
            p += len;
        }
    }
    o.s[n] = '\0';
    return o;
}

static json_t *json_text(const char *in) { return json_string(text(in).s); }

/* --json's file must be writable before the run starts: an existing file
 * (not a directory) we may write, or a new name in a folder we may write. */
static int json_check(const char *path)
{
    struct stat st;
    const char *why = NULL;
    /* stat("") fails with ENOENT and "." is writable, so an empty name
     * passed, and the run ended in "cannot write : No such file". */
    if (!*path) why = "the file name is empty";
    else if (stat(path, &st) == 0) {
        if (S_ISDIR(st.st_mode)) why = "it is a directory";
        else if (access(path, W_OK) != 0) why = strerror(errno);
    } else if (errno != ENOENT) {
        why = strerror(errno);
    } else {
        char dir[4096];
        const char *slash = strrchr(path, '/');
        if (!slash) snprintf(dir, sizeof dir, ".");
        else snprintf(dir, sizeof dir, "%.*s", slash == path ? 1 : (int)(slash - path), path);
        if (stat(dir, &st) != 0) why = strerror(errno);
        else if (!S_ISDIR(st.st_mode)) why = strerror(ENOTDIR);
        else if (access(dir, W_OK | X_OK) != 0) why = strerror(errno);
    }
    if (!why) return 0;
    fprintf(stderr, "brewery: --json %s: cannot write there: %s\n", path, why);
    return -1;
}

typedef struct mode_run {
    bool ran;
    int error;        /* the mode could not run at all */
    int64_t t0;       /* async_now() at its start */
    double seconds;
    long requests;
    size_t failed;
    client_count_t *counts;
} mode_run_t;

static json_t *mode_json(const mode_run_t *m, const char *const *states, size_t n)
{
    json_t *counts = json_object(), *failed = json_object();
    for (size_t i = 0; i < n; i++) {
        if (m->counts[i].error)
            json_object_set_new(failed, text(states[i]).s, json_text(m->counts[i].errmsg));
        else
            json_object_set_new(counts, text(states[i]).s, json_integer(m->counts[i].count));
    }
    json_t *o = json_pack("{s:f, s:I, s:o, s:o}", "seconds", m->seconds, "requests",
                          (json_int_t)m->requests, "counts", counts, "failed", failed);
    if (m->error) json_object_set_new(o, "error", json_string(async_strerror(m->error)));
    return o;
}
/* What the command line asked for. */
typedef struct cli {
    bool want[CLIENT_NMODES];
    const char *const *states;
    size_t n;
    const char *states_buf[128]; /* --states, split in place */
    const char *base, *json_path, *latency, *data, *plot_dir;
    double rate; /* < 0: the default for the server's place */
    int retries;
    long timeout_ms;
} cli_t;

/* --mode: "all", or a list of modes (and "all"). */
static int parse_modes(char *arg, bool want[CLIENT_NMODES])
{
    if (!arg || strcmp(arg, "all") == 0) {
        for (int i = 0; i < CLIENT_NMODES; i++) want[i] = true;
        return 0;
    }
    const char *m[16];
    size_t nm = split(arg, m, 16);
    if (nm == SIZE_MAX) {
        fprintf(stderr, "brewery: --mode lists more than 16 modes\n");
        return 2;
    }
    if (nm == 0) {
        /* "" or "," once ran nothing and exited 0 with an empty table. */
        fprintf(stderr, "brewery: --mode is empty\n");
        return 2;
    }
    for (size_t i = 0; i < nm; i++) {
        int k = strcmp(m[i], "all") == 0 ? -2 : client_mode_parse(m[i]);
        if (k == -1) {
            fprintf(stderr, "brewery: unknown mode '%s'\n", m[i]);
            return 2;
        }
        for (int j = 0; j < CLIENT_NMODES; j++)
            if (k == -2 || k == j) want[j] = true;
    }
    return 0;
}

/* --states: the lab's four by default, "all", or a list. */
static int parse_states(char *arg, cli_t *o)
{
    o->states = client_lab_states;
    o->n = CLIENT_NLAB_STATES;
    if (arg && strcmp(arg, "all") == 0) {
        o->states = client_all_states;
        o->n = CLIENT_NALL_STATES;
    } else if (arg) {
        o->n = split(arg, o->states_buf, NELEM(o->states_buf));
        if (o->n == SIZE_MAX) {
            fprintf(stderr, "brewery: --states lists more than %zu states\n", NELEM(o->states_buf));
            return 2;
        }
        o->states = o->states_buf;
        if (!o->n) {
            fprintf(stderr, "brewery: --states is empty\n");
            return 2;
        }
    }
    /* A state named twice (new_york,New_York) was counted twice under one
     * key of "counts", with its requests doubled in "requests". */
    for (size_t i = 0; i < o->n; i++)
        for (size_t j = 0; j < i; j++) {
            int a = client_state_index(o->states[i]), b = client_state_index(o->states[j]);
            if (a >= 0 ? a == b : strcmp(o->states[i], o->states[j]) == 0) {
                fprintf(stderr, "brewery: --states names '%s' twice ('%s' and '%s')\n",
                        a >= 0 ? client_all_states[a] : o->states[i], o->states[j], o->states[i]);
                return 2;
            }
        }
    return 0;
}

/* --base-url: http:// or https:// (curl would try ftp:// and fail every
 * state), without trailing slashes (".../v1/" made ".../v1//breweries", a
 * 404 on every page).  Trims base_buf in place. */
static int check_base(char *base)
{
    if (strncasecmp(base, "http://", 7) != 0 && strncasecmp(base, "https://", 8) != 0) {
        fprintf(stderr, "brewery: --base-url '%s' is not an http:// or https:// URL\n", base);
        return 2;
    }
    const char *host = base + (base[4] == ':' ? 7 : 8);
    if (!*host || *host == '/') {
        fprintf(stderr, "brewery: --base-url '%s' names no host\n", base);
        return 2;
    }
    size_t n = strlen(base);
    while (n > 0 && base[n - 1] == '/') base[--n] = '\0';
    return 0;
}

/* Fills o from the command line.  Returns -1 to go on, or the status to
 * exit with (0 after --help, 2 for a usage error). */
static int parse_args(int argc, char **argv, cli_t *o)
{
    enum { O_MODE = 256, O_STATES, O_BASE, O_JSON, O_LATENCY, O_DATA, O_RATE, O_RETRIES,
           O_TIMEOUT, O_PLOT, O_HELP };
    static const struct option opts[] = {
        {"mode", required_argument, NULL, O_MODE},
        {"states", required_argument, NULL, O_STATES},
        {"base-url", required_argument, NULL, O_BASE},
        {"json", required_argument, NULL, O_JSON},
        {"latency", required_argument, NULL, O_LATENCY},
        {"server-data", required_argument, NULL, O_DATA},
        {"rate", required_argument, NULL, O_RATE},
        {"retries", required_argument, NULL, O_RETRIES},
        {"timeout-ms", required_argument, NULL, O_TIMEOUT},
        {"plot", required_argument, NULL, O_PLOT},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    *o = (cli_t){.json_path = "async.json", .rate = -1, .retries = 3, .timeout_ms = 30000};
    char *mode_arg = NULL, *states_arg = NULL;
    int c;
    long num;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_MODE: mode_arg = optarg; break;
        case O_STATES: states_arg = optarg; break;
        case O_BASE:
            if (check_base(optarg)) return 2;
            o->base = optarg;
            break;
        case O_JSON: o->json_path = optarg; break;
        case O_LATENCY:
            if (parse_long("latency", optarg, BREWERY_MAX_LATENCY_MS, &num)) return 2;
            o->latency = optarg;
            break;
        case O_DATA: o->data = optarg; break;
        case O_RATE:
            if (parse_double("rate", optarg, BREWERY_MAX_RATE, &o->rate)) return 2;
            break;
        case O_RETRIES:
            if (parse_long("retries", optarg, BREWERY_MAX_RETRIES, &num)) return 2;
            o->retries = (int)num;
            break;
        case O_TIMEOUT:
            if (parse_long("timeout-ms", optarg, BREWERY_MAX_TIMEOUT_MS, &o->timeout_ms)) return 2;
            break;
        case O_PLOT: o->plot_dir = optarg; break;
        case O_HELP: usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return 2;
    }
    if (parse_modes(mode_arg, o->want) || parse_states(states_arg, o)) return 2;
    /* They set the local server, which --base-url replaces: say so rather
     * than drop them without a word (the run goes on). */
    if (o->base && o->latency)
        fprintf(stderr, "brewery: --latency is ignored with --base-url (it sets the local server)\n");
    if (o->base && o->data)
        fprintf(stderr, "brewery: --server-data is ignored with --base-url (it sets the local server)\n");
    return -1;
}

/* Runs one mode over the states into r.  Unknown states fail without a
 * request: the API would answer them with an empty list, which would read
 * as zero breweries.  Returns 0, or -1 without memory. */
static int run_mode(client_mode_t m, const client_config_t *cfg, const char *const *states, size_t n,
                    mode_run_t *r)
{
    r->counts = calloc(n, sizeof *r->counts);
    const char **run = calloc(n, sizeof *run);
    client_count_t *got = calloc(n, sizeof *got);
    if (!r->counts || !run || !got) {
        free(run);
        free(got);
        return -1;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (client_known_state(states[i])) run[k++] = states[i];
    r->t0 = async_now();
    r->error = k ? client_run(m, cfg, run, k, got) : 0;
    r->seconds = as_written((double)(async_now() - r->t0) / 1e9);
    r->ran = true;
    for (size_t i = 0, j = 0; i < n; i++) {
        if (j < k && run[j] == states[i]) {
            r->counts[i] = got[j++];
            /* A mode that could not run (no process pool under ulimit -v,
             * no loop) left its states' counts at 0, which the table and
             * async.json showed as 0 breweries, failed nowhere. */
            if (r->error && !r->counts[i].error && r->counts[i].requests == 0) {
                r->counts[i].count = -1;
                r->counts[i].error = r->error;
                snprintf(r->counts[i].errmsg, sizeof r->counts[i].errmsg, "the %s mode could not run: %s",
                         client_mode_name(m), async_strerror(r->error));
            }
        } else {
            r->counts[i].count = -1;
            r->counts[i].error = ASYNC_EINVAL;
            snprintf(r->counts[i].errmsg, sizeof r->counts[i].errmsg,
                     "unknown state '%.180s' (not a US state or district_of_columbia)", states[i]);
        }
    }
    free(run);
    free(got);
    for (size_t i = 0; i < n; i++) {
        r->requests += r->counts[i].requests;
        if (r->counts[i].error || r->error) r->failed++;
    }
    fprintf(stderr, "%-9s %7.3f s  %5ld requests%s\n", client_mode_name(m), r->seconds, r->requests,
            r->failed ? "  (some states failed)" : "");
    return 0;
}

/* The table on stdout: one row per state, one column per mode that ran;
 * each failure's message on stderr. */
static void print_table(const mode_run_t runs[CLIENT_NMODES], const char *const *states, size_t n)
{
    printf("%-22s", "state");
    for (int m = 0; m < CLIENT_NMODES; m++)
        if (runs[m].ran) printf(" %10s", client_mode_name((client_mode_t)m));
    printf("\n");
    for (size_t i = 0; i < n; i++) {
        printf("%-22s", states[i]);
        for (int m = 0; m < CLIENT_NMODES; m++) {
            if (!runs[m].ran) continue;
            if (runs[m].counts[i].error) printf(" %10s", "failed");
            else printf(" %10ld", runs[m].counts[i].count);
        }
        printf("\n");
    }
    printf("%-22s", "seconds");
    for (int m = 0; m < CLIENT_NMODES; m++)
        if (runs[m].ran) printf(" %10.3f", runs[m].seconds);
    printf("\n");
    for (int m = 0; m < CLIENT_NMODES; m++)
        for (size_t i = 0; runs[m].ran && i < n; i++)
            if (runs[m].counts[i].error)
                fprintf(stderr, "%s: %s failed: %s\n", client_mode_name((client_mode_t)m), states[i],
                        runs[m].counts[i].errmsg);
}

/* async.json: the lab's two keys, X as a number (signed: negative when
 * async was slower), then everything measured; prints the result
 * sentence.  Returns 0, or 1 when the file could not be written. */
static int write_async_json(const cli_t *o, const mode_run_t runs[CLIENT_NMODES])
{
    char result[160], host[256] = "";
    gethostname(host, sizeof host - 1);
    const mode_run_t *s = &runs[CLIENT_SERIAL], *a = &runs[CLIENT_ASYNC];
    double faster = 0;
    /* Times are compared only between complete runs: a mode whose states
     * failed may have failed fast, and was once reported "faster". */
    bool both = s->ran && a->ran && s->seconds > 0 && !s->failed && !a->failed;
    if (both) faster = result_sentence(s->seconds, a->seconds, result, sizeof result);
    else if (s->ran && a->ran)
        snprintf(result, sizeof result,
                 "the serial and async versions did not both succeed (%zu and %zu of %zu states failed), "
                 "so their times are not compared",
                 s->failed, a->failed, o->n);
    else snprintf(result, sizeof result, "the serial and async versions did not both run");
    json_t *modes = json_object(), *st = json_array();
    for (size_t i = 0; i < o->n; i++) json_array_append_new(st, json_text(o->states[i]));
    for (int m = 0; m < CLIENT_NMODES; m++)
        if (runs[m].ran)
            json_object_set_new(modes, client_mode_name((client_mode_t)m), mode_json(&runs[m], o->states, o->n));
    json_t *out = json_pack("{s:s, s:o}", "result", result, "host", json_text(host));
    if (out && both) json_object_set_new(out, "async_faster_percent", json_real(faster));
    if (out) {
        json_object_set_new(out, "base_url", json_string(o->base));
        json_object_set_new(out, "states", st);
        json_object_set_new(out, "modes", modes);
    } else {
        json_decref(st);
        json_decref(modes);
    }
    int status = 0;
    /* Through a temporary renamed into place: json_dump_file truncated the
     * old results first, and a full disk or `ulimit -f` left half a file. */
    demo_out_t file;
    const char *why = NULL;
    errno = 0;
    if (!out) why = "out of memory";
    else if (!demo_out_open(&file, o->json_path)) why = strerror(errno);
    else if (json_dumpf(out, file.f, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(WRITTEN_DIGITS))) {
        why = errno ? strerror(errno) : "out of memory";
        demo_out_abort(&file);
    } else if (demo_out_close(&file) != 0) {
        why = strerror(errno);
    }
    if (why) {
        fprintf(stderr, "brewery: cannot write %s: %s\n", o->json_path, why);
        status = 1;
    }
    json_decref(out);
    printf("%s\n", result);
    return status;
}

int main(int argc, char **argv)
{
    /* As Python ignores it at start-up: under a file size limit (ulimit -f)
     * the process pool's shared heap cannot be sized, and SIGXFSZ killed the
     * whole run there, async.json unwritten; ignored, that mode fails alone
     * (its states marked failed) and the others are reported. */
    signal(SIGXFSZ, SIG_IGN);
    cli_t o;
    int status = parse_args(argc, argv, &o);
    if (status >= 0) return status;
    /* Before any request: a run of minutes must not end in "cannot plot" or
     * "cannot write". */
    if (o.plot_dir && client_plot_check(o.plot_dir)) return 2;
    if (json_check(o.json_path)) return 2;
    /* The server reads its CSV at start, so the run went well, and then
     * async.json replaced the user's data. */
    struct stat js, ds;
    if (o.data && !o.base && stat(o.json_path, &js) == 0 && S_ISREG(js.st_mode) && stat(o.data, &ds) == 0 &&
        js.st_dev == ds.st_dev && js.st_ino == ds.st_ino) {
        fprintf(stderr, "brewery: --json %s and --server-data %s are one file (the results would replace the data)\n",
                o.json_path, o.data);
        return 2;
    }

    client_server_t server = {.pid = -1};
    char base_buf[96];
    if (!o.base) {
        const char *extra[8];
        size_t ne = 0;
        if (o.latency) extra[ne++] = "--latency", extra[ne++] = o.latency;
        if (o.data) extra[ne++] = "--data", extra[ne++] = o.data;
        extra[ne] = NULL;
        if (client_server_start(&server, argv[0], extra)) return 1;
        snprintf(base_buf, sizeof base_buf, "%s/v1", server.url);
        o.base = base_buf;
    }
    /* Be polite to a remote API (Open Brewery DB allows 120 requests a
     * minute) and ask it for compressed pages; a server on this machine gets
     * neither. */
    bool local = strstr(o.base, "://127.0.0.1") || strstr(o.base, "://localhost") ||
                 strstr(o.base, "://[::1]");
    if (o.rate < 0) o.rate = local ? 0 : 2;
    client_config_t cfg = {.base_url = o.base, .rate_limit = o.rate, .max_retries = o.retries,
                           .timeout_ns = o.timeout_ms > 0 ? ASYNC_MSEC(o.timeout_ms) : -1,
                           .compressed = !local};

    mode_run_t runs[CLIENT_NMODES] = {0};
    status = 0;
    for (int m = 0; m < CLIENT_NMODES; m++) {
        if (!o.want[m]) continue;
        if (run_mode((client_mode_t)m, &cfg, o.states, o.n, &runs[m])) {
            fprintf(stderr, "brewery: out of memory\n");
            status = 1;
            break;
        }
        if (runs[m].failed) status = 1;
    }
    client_server_stop(&server);
    for (int m = 0; o.plot_dir && m < CLIENT_NMODES; m++) {
        if (!runs[m].ran) continue;
        const char *name = client_mode_name((client_mode_t)m);
        if (client_plot_timeline(o.plot_dir, name, o.states, o.n, runs[m].counts, runs[m].t0, runs[m].seconds))
            status = 1;
        else
            fprintf(stderr, "plot      %s/timeline-%s.png\n", o.plot_dir, name);
    }
    print_table(runs, o.states, o.n);
    status |= write_async_json(&o, runs);
    for (int m = 0; m < CLIENT_NMODES; m++) free(runs[m].counts);
    return status;
}
