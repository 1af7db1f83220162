/* brewery-server: a local stand-in for the Open Brewery DB API
 * (https://api.openbrewerydb.org/v1), for the brewery demo, its benchmarks
 * and the tests, which have no internet.  It serves an Open Brewery DB CSV
 * (--data) or a built-in dataset with the real per-state counts, on
 * 127.0.0.1 only, with a configurable latency, rate limit and injected
 * faults.  It prints exactly one line to stdout, "listening on
 * http://127.0.0.1:PORT", once it accepts connections, and runs until SIGINT
 * or SIGTERM, after which it shuts down cleanly and exits 0.  See
 * docs/brewery-server.md. */
#include "common/server-data.h"
#include "common/server-http.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static void usage(FILE *out)
{
    fprintf(out,
            "usage: brewery-server [options]\n"
            "  --port N            port on 127.0.0.1 (default 0: any free port)\n"
            "  --data FILE         serve this Open Brewery DB CSV (default: built-in data)\n"
            "  --latency MS        delay before every answer (default 100)\n"
            "  --rate-limit N      allow N requests per window, then 429 (default 0: off)\n"
            "  --rate-window S     rate-limit window in seconds (default 60)\n"
            "  --fail-rate P       share of requests answered 500 (0..1)\n"
            "  --fail-first N      answer the first N requests 500\n"
            "  --drop-rate P       share of connections closed without an answer\n"
            "  --malformed-rate P  share answered 200 with truncated JSON\n"
            "  --stall-rate P      share held --stall-ms, then closed unanswered\n"
            "  --stall-ms MS       how long a stall lasts (default 30000)\n"
            "  --seed N            seed of the fault draws (default 1)\n"
            "  --header-timeout MS a new connection must send its first request's headers by then (default 10000)\n"
            "  --idle-timeout S    close a connection silent this long (default 30)\n"
            "  --quiet             print nothing but the listening line\n"
            "  --verbose           also print libmicrohttpd's error log\n");
}

static int bad(const char *opt, const char *val)
{
    fprintf(stderr, "brewery-server: invalid value for --%s: '%s'\n", opt, val);
    return 2;
}

static int parse_uint(const char *s, unsigned long long max, unsigned long long *out)
{
    char *end;
    errno = 0;
    if (!*s || *s == '-')
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v > max)
        return -1;
    *out = v;
    return 0;
}

static int parse_rate(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || errno || *end || !(v >= 0.0 && v <= 1.0))
        return -1;
    *out = v;
    return 0;
}

/* Fills cfg, *data and *quiet from the command line.  Returns -1 to go
 * on, or the status to exit with (0 after --help, 2 for a usage error). */
static int parse_args(int argc, char **argv, bsrv_config_t *cfg, const char **data, bool *quiet)
{
    enum { O_PORT = 256, O_DATA, O_LATENCY, O_RATE, O_WINDOW, O_FAIL, O_FAILFIRST, O_DROP,
           O_MALFORMED, O_STALL, O_STALLMS, O_SEED, O_HEADTO, O_IDLETO, O_QUIET, O_VERBOSE, O_HELP };
    static const struct option opts[] = {
        { "port", required_argument, NULL, O_PORT },
        { "data", required_argument, NULL, O_DATA },
        { "latency", required_argument, NULL, O_LATENCY },
        { "rate-limit", required_argument, NULL, O_RATE },
        { "rate-window", required_argument, NULL, O_WINDOW },
        { "fail-rate", required_argument, NULL, O_FAIL },
        { "fail-first", required_argument, NULL, O_FAILFIRST },
        { "drop-rate", required_argument, NULL, O_DROP },
        { "malformed-rate", required_argument, NULL, O_MALFORMED },
        { "stall-rate", required_argument, NULL, O_STALL },
        { "stall-ms", required_argument, NULL, O_STALLMS },
        { "seed", required_argument, NULL, O_SEED },
        { "header-timeout", required_argument, NULL, O_HEADTO },
        { "idle-timeout", required_argument, NULL, O_IDLETO },
        { "quiet", no_argument, NULL, O_QUIET },
        { "verbose", no_argument, NULL, O_VERBOSE },
        { "help", no_argument, NULL, O_HELP },
        { NULL, 0, NULL, 0 },
    };
    unsigned long long v;
    int c;

    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        const char *name = c >= O_PORT && c <= O_HELP ? opts[c - O_PORT].name : "?";
        switch (c) {
        case O_PORT:
            if (parse_uint(optarg, 65535, &v))
                return bad(name, optarg);
            cfg->port = (unsigned)v;
            break;
        case O_DATA:
            /* An empty name is a bad option (exit 2), not a file that
             * failed to load (": No such file or directory", exit 1). */
            if (!*optarg)
                return bad(name, optarg);
            *data = optarg;
            break;
        case O_LATENCY:
        case O_STALLMS:
            if (parse_uint(optarg, 3600000, &v))
                return bad(name, optarg);
            *(c == O_LATENCY ? &cfg->latency_ms : &cfg->stall_ms) = (unsigned)v;
            break;
        case O_RATE:
            if (parse_uint(optarg, 1000000000, &v))
                return bad(name, optarg);
            cfg->rate_limit = (unsigned)v;
            break;
        case O_WINDOW:
            if (parse_uint(optarg, 86400, &v) || v == 0)
                return bad(name, optarg);
            cfg->rate_window_s = (unsigned)v;
            break;
        case O_FAILFIRST:
            if (parse_uint(optarg, ULONG_MAX, &v))
                return bad(name, optarg);
            cfg->fail_first = (unsigned long)v;
            break;
        case O_HEADTO:
            if (parse_uint(optarg, 3600000, &v) || v == 0)
                return bad(name, optarg);
            cfg->header_timeout_ms = (unsigned)v;
            break;
        case O_IDLETO:
            if (parse_uint(optarg, 86400, &v) || v == 0)
                return bad(name, optarg);
            cfg->idle_timeout_s = (unsigned)v;
            break;
        case O_SEED:
            if (parse_uint(optarg, UINT64_MAX, &v))
                return bad(name, optarg);
            cfg->seed = v;
            break;
        case O_FAIL:
        case O_DROP:
        case O_MALFORMED:
        case O_STALL: {
            double *dst = c == O_FAIL ? &cfg->fail_rate : c == O_DROP ? &cfg->drop_rate
                        : c == O_MALFORMED ? &cfg->malformed_rate : &cfg->stall_rate;
            if (parse_rate(optarg, dst))
                return bad(name, optarg);
            break;
        }
        case O_QUIET:
            *quiet = true;
            break;
        case O_VERBOSE:
            cfg->verbose = true;
            break;
        case O_HELP:
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "brewery-server: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    return -1;
}

int main(int argc, char **argv)
{
    bool quiet = false;
    bsrv_config_t cfg = { .latency_ms = 100, .stall_ms = 30000, .rate_window_s = 60, .seed = 1,
                          .header_timeout_ms = 10000, .idle_timeout_s = 30 };
    const char *data = NULL;
    int status = parse_args(argc, argv, &cfg, &data, &quiet);
    if (status >= 0)
        return status;

    /* Thousands of concurrent connections need thousands of descriptors. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    /* The signals are taken with sigwait() by the main thread; block them
     * before any thread starts so that they all inherit the mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    bsrv_dataset_t ds;
    char err[512];
    int rc = data ? bsrv_dataset_load_csv(&ds, data, err, sizeof err)
                  : bsrv_dataset_builtin(&ds, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "brewery-server: %s\n", err);
        return 1;
    }
    bsrv_server_t *srv;
    if (bsrv_server_start(&srv, &cfg, &ds, err, sizeof err) != 0) {
        fprintf(stderr, "brewery-server: %s\n", err);
        bsrv_dataset_free(&ds);
        return 1;
    }
    printf("listening on http://127.0.0.1:%u\n", bsrv_server_port(srv));
    fflush(stdout);
    if (!quiet)
        fprintf(stderr, "brewery-server: %zu breweries (%s), %zu states, latency %u ms\n", ds.n,
                data ? data : "built-in", ds.nstates, cfg.latency_ms);

    int sig = 0;
    while (sigwait(&sigs, &sig) != 0)
        ;
    bsrv_stats_t st;
    bsrv_server_stop(srv, &st);
    if (!quiet)
        fprintf(stderr,
                "brewery-server: %s: %llu requests (%llu rate-limited, %llu failed, %llu dropped, "
                "%llu malformed, %llu stalled)\n",
                strsignal(sig), st.requests, st.limited, st.failed, st.dropped, st.malformed,
                st.stalled);
    bsrv_dataset_free(&ds);
    return 0;
}
