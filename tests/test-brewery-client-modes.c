/* brewery: a state whose mode or job failed is failed, never "0
 * breweries".  A mode that could not run at all (its process pool refused
 * under a small address space, `ulimit -v`) left every state's count at 0:
 * the table printed 0 for each and async.json had them all under "counts"
 * with "failed" empty, only a mode-level "error" saying why.  And when
 * several jobs of the threads or processes mode failed outright (their
 * workers killed), the map named only the lowest, so the others' states read
 * as 0 breweries.  Counts are checked against a serial run of the same
 * server. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "support/run.h"
#include "support/slurp.h"

#define BREWERY ASYNC_OUT_DIR "/demos/brewery/brewery"

TestSuite(brewery_client_modes, .timeout = 90);

/* Starts argv with stdout to out_path and stderr to /dev/null, under
 * RLIMIT_AS at as bytes (0: as it is); returns its pid. */
/* Starts the demo, its stdout into out_path; fsize, if not 0, its
 * RLIMIT_FSIZE. */
static pid_t start(const char *const *argv, const char *out_path, rlim_t fsize)
{
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        if (!freopen(out_path, "w", stdout) || !freopen("/dev/null", "w", stderr)) _exit(126);
        if (fsize) setrlimit(RLIMIT_FSIZE, &(struct rlimit){fsize, fsize});
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    return pid;
}

static int finish(pid_t pid)
{
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    return st;
}


/* The children of pid, from /proc (at most max); how many. */
static int children(pid_t pid, pid_t *out, int max)
{
    DIR *d = opendir("/proc");
    cr_assert_not_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) && n < max;) {
        char path[300], buf[512];
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t k = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[k] = '\0';
        /* pid (comm) state ppid: comm may hold spaces and parentheses. */
        char *close = strrchr(buf, ')');
        int ppid;
        if (close && sscanf(close + 1, " %*c %d", &ppid) == 1 && ppid == pid) out[n++] = (pid_t)atoi(e->d_name);
    }
    closedir(d);
    return n;
}

/* The serial mode's counts for the lab's four states, the reference. */
static json_t *reference_counts(const char *dir)
{
    char json[128], out[128];
    snprintf(json, sizeof json, "%s/serial.json", dir);
    snprintf(out, sizeof out, "%s/serial.out", dir);
    const char *argv[] = {BREWERY, "--mode", "serial", "--latency", "0", "--json", json, NULL};
    int st = finish(start(argv, out, 0));
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the serial run failed: %#x", st);
    json_t *root = json_load_file(json, 0, NULL);
    cr_assert_not_null(root);
    json_t *counts = json_incref(json_object_get(json_object_get(json_object_get(root, "modes"), "serial"), "counts"));
    json_decref(root);
    cr_assert_eq(json_object_size(counts), 4);
    return counts;
}

/* Every state of mode m is failed with a message, or counted as the
 * reference counts it; returns how many failed. */
static size_t check_mode(json_t *root, const char *m, json_t *ref)
{
    json_t *mode = json_object_get(json_object_get(root, "modes"), m);
    cr_assert_not_null(mode, "no mode %s", m);
    json_t *counts = json_object_get(mode, "counts"), *failed = json_object_get(mode, "failed");
    const char *state;
    json_t *want;
    size_t nfailed = 0;
    json_object_foreach(ref, state, want) {
        json_t *got = json_object_get(counts, state), *why = json_object_get(failed, state);
        cr_expect((got != NULL) != (why != NULL), "%s: %s is in counts (%p) and failed (%p) alike", m, state,
                  (void *)got, (void *)why);
        if (got)
            cr_expect_eq(json_integer_value(got), json_integer_value(want), "%s: %s counted %lld breweries, not %lld",
                         m, state, (long long)json_integer_value(got), (long long)json_integer_value(want));
        if (why) {
            cr_expect(json_string_length(why) > 0, "%s: %s failed without a message", m, state);
            nfailed++;
        }
    }
    return nfailed;
}

static void make_dir(char dir[64])
{
    snprintf(dir, 64, "/tmp/test-brewery-client-modes-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void remove_dir(const char *dir)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_expect_eq(system(cmd), 0);
}

Test(brewery_client_modes, a_mode_that_cannot_run_fails_every_state)
{
    char dir[64], json[128], out[128];
    make_dir(dir);
    json_t *ref = reference_counts(dir);
    snprintf(json, sizeof json, "%s/async.json", dir);
    snprintf(out, sizeof out, "%s/table.txt", dir);
    /* The process pool's shared memory is a file of 16 MiB at least (its
     * heap shrinks to fit the limits, down to that), so it cannot start
     * under a 2 MiB RLIMIT_FSIZE; serial, the local server and async.json
     * need far less.  (RLIMIT_AS stopped it no more once the heap fit.) */
    const char *argv[] = {BREWERY, "--mode", "serial,processes", "--latency", "0", "--json", json, NULL};
    int st = finish(start(argv, out, (rlim_t)2 << 20));
    json_t *root = json_load_file(json, 0, NULL);
    cr_assert_not_null(root, "no async.json (wait status %#x)", st);
    json_t *procs = json_object_get(json_object_get(root, "modes"), "processes");
    cr_assert(json_object_get(procs, "error"), "the process pool started under RLIMIT_FSIZE = 2 MiB");
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 1, "wait status %#x", st);
    cr_expect_eq(check_mode(root, "processes", ref), 4, "the mode failed, its states did not");
    cr_expect_eq(check_mode(root, "serial", ref), 0);
    char *table = test_slurp(out);
    cr_assert_not_null(table);
    /* Each state's row: its serial count, then "failed" for processes. */
    const char *state;
    json_t *want;
    json_object_foreach(ref, state, want) {
        char row[128];
        snprintf(row, sizeof row, "%-22s %10lld %10s\n", state, (long long)json_integer_value(want), "failed");
        cr_expect(strstr(table, row), "no row \"%s\" in:\n%s", row, table);
    }
    free(table);
    json_decref(root);
    json_decref(ref);
    remove_dir(dir);
}

Test(brewery_client_modes, workers_killed_mid_job_fail_their_states)
{
    char dir[64], json[128], out[128];
    make_dir(dir);
    json_t *ref = reference_counts(dir);
    snprintf(json, sizeof json, "%s/async.json", dir);
    snprintf(out, sizeof out, "%s/table.txt", dir);
    /* Every request waits 8 s at the server, so the four workers (one a
     * state) have taken their jobs and are inside them 3 s after they
     * appear, when they are killed (both scaled for a slow machine). */
    char latency[32];
    snprintf(latency, sizeof latency, "%d", (int)(8000 * test_slack()));
    const char *argv[] = {BREWERY, "--mode", "processes", "--latency", latency, "--json", json, NULL};
    pid_t pid = start(argv, out, 0);
    cr_assert_gt(pid, 0);
    /* brewery -> the pool's fork server -> its workers. */
    pid_t kids[16], workers[64];
    int nworkers = 0;
    for (int tries = 0; tries < 300 * test_slack() && nworkers < 4; tries++) {
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
        int nk = children(pid, kids, 16);
        nworkers = 0;
        for (int i = 0; i < nk; i++) nworkers += children(kids[i], workers + nworkers, 64 - nworkers);
    }
    cr_assert_geq(nworkers, 4, "the pool's four workers did not appear");
    /* Into their requests. */
    usleep((useconds_t)(3e6 * test_slack()));
    for (int i = 0; i < nworkers; i++)
        if (workers[i] > 0) kill(workers[i], SIGKILL);
    int st = finish(pid);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 1, "wait status %#x", st);
    json_t *root = json_load_file(json, 0, NULL);
    cr_assert_not_null(root);
    cr_expect_geq(check_mode(root, "processes", ref), 2, "fewer than two states failed: the kill missed the jobs");
    json_decref(root);
    json_decref(ref);
    remove_dir(dir);
}
