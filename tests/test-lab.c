/* The lab demo, run as a program at small scale: every workload's answer
 * against known values or against python3 and numpy computing the same
 * thing (the prime count, the common items, prob3, the generated data, the
 * heavy sum, Python's repr and json.dumps), every mode agreeing exactly (the
 * lab records each mode's result hash in lab-report.json and exits non-zero
 * when they differ), CSV input and output with precise errors, soln.json's
 * exact shape, charts, and clean output when stderr is redirected. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <sched.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "support/teardown.h"

#define LAB ASYNC_OUT_DIR "/demos/lab/lab"

static char dir[64];

static void make_dir(void)
{
    snprintf(dir, sizeof dir, "/tmp/test-lab-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void remove_dir(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    TEARDOWN_CHECK(system(cmd) == 0, "could not remove %s", dir);
}

static char *path(const char *name)
{
    static char buf[4][128];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static char *slurp(const char *file)
{
    FILE *f = fopen(file, "r");
    if (!f) return strdup("");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *s = malloc((size_t)n + 1);
    size_t got = fread(s, 1, (size_t)n, f);
    s[got] = '\0';
    fclose(f);
    return s;
}

static void write_bytes(const char *file, const char *data, size_t len)
{
    FILE *f = fopen(file, "w");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(data, 1, len, f), len);
    fclose(f);
}

static void write_file(const char *file, const char *text)
{
    write_bytes(file, text, strlen(text));
}

typedef struct run {
    int status; /* exit code, or 128 + signal */
    char *out, *err;
} run_t;

/* Runs argv[0] (searched in PATH when search) with argv in dir, its standard
 * output and error to dir/stdout and dir/stderr; child_env, when not NULL,
 * sets the child's environment first.  Returns its status and both outputs. */
static run_t run_in_dir(const char *const *argv, bool search, void (*child_env)(const void *),
                        const void *env_arg)
{
    char out[128], err[128];
    snprintf(out, sizeof out, "%s/stdout", dir);
    snprintf(err, sizeof err, "%s/stderr", dir);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int o = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644), e = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(o, 1);
        dup2(e, 2);
        if (chdir(dir) != 0) _exit(126);
        if (child_env) child_env(env_arg);
        if (search) execvp(argv[0], (char *const *)argv);
        else execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    run_t r = {WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), slurp(out), slurp(err)};
    return r;
}

static void set_path(const void *env_path) { setenv("PATH", env_path, 1); }

/* Runs the lab with the arguments (NULL-terminated) in dir, output and errors
 * to files; env_path, when not NULL, replaces PATH. */
static run_t lab_env(const char *env_path, const char *arg, ...)
{
    const char *argv[32] = {LAB};
    int argc = 1;
    va_list ap;
    va_start(ap, arg);
    for (const char *a = arg; a && argc < 31; a = va_arg(ap, const char *)) argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;
    return run_in_dir(argv, false, env_path ? set_path : NULL, env_path);
}
#define lab(...) lab_env(NULL, __VA_ARGS__, NULL)

static void run_free(run_t *r)
{
    free(r->out);
    free(r->err);
}

static json_t *load_json(const char *name)
{
    json_error_t e;
    json_t *j = json_load_file(path(name), 0, &e);
    cr_assert_not_null(j, "%s: %s (line %d)", name, e.text, e.line);
    return j;
}
/* soln.json holds the notebook's four keys; the figures are in the report. */
#define load_soln() load_json("soln.json")
#define load_report() load_json("lab-report.json")

/* Runs Debian's python3 (with python3-numpy) on the script; returns its
 * standard output.  A missing numpy fails the test: the comparison is the
 * point. */
static char *python(const char *script)
{
    write_file(path("script.py"), script);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "cd '%s' && /usr/bin/python3 script.py > py.out 2> py.err", dir);
    int st = system(cmd);
    char *err = slurp(path("py.err"));
    cr_assert_eq(st, 0, "python3 failed (is python3-numpy installed?): %s", err);
    free(err);
    return slurp(path("py.out"));
}

/* The workload's figures: every mode ran, and they agree. */
static json_t *check_modes(json_t *soln, const char *name)
{
    json_t *w = json_object_get(json_object_get(soln, "workloads"), name);
    cr_assert_not_null(w, "no figures for %s", name);
    cr_assert(json_is_true(json_object_get(w, "agree")), "%s: modes disagree", name);
    json_t *secs = json_object_get(w, "seconds");
    cr_assert(json_is_number(json_object_get(secs, "serial")), "%s: no serial time", name);
    cr_assert(json_is_number(json_object_get(secs, "threads")), "%s: no threads time", name);
    cr_assert(json_is_number(json_object_get(secs, "processes")), "%s: no processes time", name);
    return w;
}

TestSuite(lab, .init = make_dir, .fini = remove_dir);

Test(lab, primes_count_is_9592_in_every_mode, .timeout = 60)
{
    run_t r = lab("primes", "--soln", "soln.json");
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    cr_assert(strstr(r.out, "primes below 100000: 9592"), "%s", r.out);
    cr_assert(strstr(r.out, "every mode agrees exactly"), "%s", r.out);
    json_t *s = load_report();
    json_t *w = check_modes(s, "primes");
    cr_assert_eq(json_integer_value(json_object_get(w, "count")), 9592);
    json_decref(s);
    run_free(&r);
}

Test(lab, common_items_answer, .timeout = 60)
{
    run_t r = lab("common", "--soln", "soln.json");
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    cr_assert(strstr(r.out, "answer: [[2, 3], [6], [11, 12], [21]]"), "%s", r.out);
    json_t *rep = load_report();
    check_modes(rep, "common");
    json_decref(rep);
    /* prob1 is the string the notebook's str() gives for its own answer. */
    char *want = python("list_a = [[1, 2, 3], [5, 6, 7, 8], [10, 11, 12], [20, 21]]\n"
                        "list_b = [[2, 3, 4, 5], [6, 9, 10], [11, 12, 13, 14], [21, 24, 25]]\n"
                        "print(str([sorted(set(a) & set(b)) for a, b in zip(list_a, list_b)]), end='')\n");
    json_t *s = load_soln();
    const char *got = json_string_value(json_object_get(s, "prob1"));
    cr_assert_not_null(got, "prob1 is a string");
    cr_assert_str_eq(got, want);
    cr_assert_str_eq(got, "[[2, 3], [6], [11, 12], [21]]");
    free(want);
    json_decref(s);
    run_free(&r);
}

Test(lab, normalize_sizes_and_prob3_match_numpy, .timeout = 60)
{
    run_t r = lab("normalize", "--scale", "0.01", "--soln", "soln.json");
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    json_t *rep = load_report();
    json_t *w = check_modes(rep, "normalize");
    cr_assert_eq(json_array_size(json_object_get(w, "sizes")), 5);
    json_decref(rep);
    /* prob3 is the notebook's expression on the full-size data, even at
     * --scale 0.01: str() of the first 5 normalised XXL rows. */
    char *want = python("import numpy as np\n"
                        "np.random.seed(42)\n"
                        "sizes = [(100, 50), (1000, 50), (10000, 50), (50000, 100), (100000, 100)]\n"
                        "data = [np.random.randint(0, 1000, size=s) for s in sizes]\n"
                        "def normalize(row):\n"
                        "    lo, hi = row.min(), row.max()\n"
                        "    return [0.0] * len(row) if hi == lo else [float(v) for v in (row - lo) / (hi - lo)]\n"
                        "print(str([normalize(row) for row in data[4][:5]]), end='')\n");
    json_t *s = load_soln();
    const char *got = json_string_value(json_object_get(s, "prob3"));
    cr_assert_not_null(got, "prob3 is a string");
    cr_assert_str_eq(got, want);
    cr_assert_gt(strlen(got), 5 * 100 * 3, "five rows of 100 floats");
    free(want);
    json_decref(s);
    run_free(&r);
}

Test(lab, normalize_csv_in_and_out, .timeout = 60)
{
    write_file(path("rows.csv"), "2,3,4,5\n100,100,100,100\n\n-1, 0 ,1,3\n");
    run_t r = lab("normalize", "--input", "rows.csv", "--output", "out.csv");
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    char *out = slurp(path("out.csv"));
    double v[3][4];
    int n = sscanf(out, "%lf,%lf,%lf,%lf\n%lf,%lf,%lf,%lf\n%lf,%lf,%lf,%lf", &v[0][0], &v[0][1], &v[0][2], &v[0][3],
                   &v[1][0], &v[1][1], &v[1][2], &v[1][3], &v[2][0], &v[2][1], &v[2][2], &v[2][3]);
    cr_assert_eq(n, 12, "%s", out);
    cr_assert_eq(v[0][1], 1.0 / 3);
    cr_assert_eq(v[0][2], 2.0 / 3);
    cr_assert_eq(v[0][3], 1.0);
    for (int k = 0; k < 4; k++) cr_assert_eq(v[1][k], 0.0);
    cr_assert_eq(v[2][0], 0.0);
    cr_assert_eq(v[2][1], 0.25);
    cr_assert_eq(v[2][3], 1.0);
    free(out);
    run_free(&r);
}

Test(lab, howmany_csv_in_and_out, .timeout = 60)
{
    write_file(path("rows.csv"), "1,4,8,9,5\n0,0,0,0,0\n4,5,6,7,8\n");
    run_t r = lab("howmany", "--input", "rows.csv", "--output", "counts.csv");
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    cr_assert(strstr(r.out, "first 10 counts: [3, 0, 5]  total: 8"), "%s", r.out);
    char *out = slurp(path("counts.csv"));
    cr_assert_str_eq(out, "3\n0\n5\n");
    free(out);
    run_free(&r);
}

Test(lab, howmany_default_data_repeats, .timeout = 60)
{
    run_t a = lab("howmany", "--scale", "0.01", "--soln", "soln.json");
    cr_assert_eq(a.status, 0, "%s%s", a.out, a.err);
    cr_assert(strstr(a.out, "RandomState(100).randint(0, 10, size=[10000, 5])"), "the seed is printed: %s", a.out);
    json_t *s = load_report();
    json_t *w = check_modes(s, "howmany");
    json_int_t total = json_integer_value(json_object_get(w, "total"));
    /* The notebook's data and count, computed by numpy. */
    char *want = python("import numpy as np\n"
                        "a = np.random.RandomState(100).randint(0, 10, size=[10000, 5])\n"
                        "print(int(((a >= 4) & (a <= 8)).sum()))\n");
    cr_assert_eq(total, strtoll(want, NULL, 10), "lab %lld, numpy %s", (long long)total, want);
    free(want);
    /* The notebook's three parallel variants, timed on both backends with
     * the pool's start-up apart (each checked against the table's counts
     * by the lab, which exits 1 on a difference). */
    json_t *var = json_object_get(w, "variants");
    static const char *backends[] = {"threads", "processes"};
    static const char *keys[] = {"start", "map", "starmap", "starmap_async"};
    for (int b = 0; b < 2; b++)
        for (int k = 0; k < 4; k++) {
            json_t *t = json_object_get(json_object_get(var, backends[b]), keys[k]);
            cr_assert(json_is_real(t) && json_real_value(t) >= 0, "variants.%s.%s", backends[b], keys[k]);
        }
    cr_assert(strstr(a.out, "starmap_async((i, row, 4, 8)) + sort"), "%s", a.out);
    json_decref(s);
    run_t b = lab("howmany", "--scale", "0.01", "--soln", "soln.json");
    s = load_report();
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(json_object_get(s, "workloads"), "howmany"), "total")),
                 total, "the same seed gives the same data");
    json_decref(s);
    run_free(&a);
    run_free(&b);
}

Test(lab, common_csv_in_and_out, .timeout = 60)
{
    write_file(path("lists.csv"), "a,1,2,3\nb,3,2,9\na,7,7,8\nb,7\n");
    run_t r = lab("common", "--input", "lists.csv", "--output", "common.csv");
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    cr_assert(strstr(r.out, "answer: [[2, 3], [7]]"), "%s", r.out);
    char *out = slurp(path("common.csv"));
    cr_assert_str_eq(out, "2,3\n7\n");
    free(out);
    run_free(&r);
}

/* A bad CSV exits with status 1 and a message naming file, line and column. */
static void bad_csv(const char *workload, const char *text, const char *want)
{
    write_file(path("bad.csv"), text);
    run_t r = lab(workload, "--input", "bad.csv");
    cr_assert_eq(r.status, 1, "%s: status %d\n%s%s", text, r.status, r.out, r.err);
    cr_assert(strstr(r.err, want), "%s: wanted \"%s\" in: %s", text, want, r.err);
    run_free(&r);
}

Test(lab, csv_errors_name_line_and_column, .timeout = 60)
{
    bad_csv("normalize", "1,2,3\n4,x5,6\n", "bad.csv: line 2, column 2: \"x5\" is not a number");
    bad_csv("normalize", "1,2,3\n4,5\n", "bad.csv: line 2, column 3: 2 fields where line 1 has 3 (ragged rows)");
    bad_csv("normalize", "1,2,3\n\n4,5,6,7\n", "bad.csv: line 3, column 4: 4 fields where line 1 has 3");
    bad_csv("normalize", "1,,3\n", "bad.csv: line 1, column 2: empty field");
    bad_csv("normalize", "1,2\n3,\"4\n", "bad.csv: line 2");
    bad_csv("howmany", "1,2,3\n4,5.5,6\n", "bad.csv: line 2, column 2: \"5.5\" is not an integer");
    bad_csv("howmany", "1,2,3\n4,5,abc\n", "line 2, column 3: \"abc\" is not a number");
    bad_csv("common", "a,1,2\nc,3\n", "bad.csv: line 2, column 1: \"c\" is not a list tag");
    bad_csv("common", "a,1,2\nb,3,z\n", "bad.csv: line 2, column 3: \"z\" is not a number");
    bad_csv("common", "a,1,2\n", "1 rows of list_a but 0 of list_b");
    bad_csv("normalize", "", "bad.csv: no rows");
    /* Lines ended by a lone CR (old Mac files) are lines too: "line 1" was
     * every row's (demos18's note); CRLF counts once. */
    bad_csv("normalize", "1,2,3\r4,5,6\r7,x,9\r", "bad.csv: line 3, column 2: \"x\" is not a number");
    bad_csv("normalize", "1,2,3\r\n4,5,6\r\n7,x,9\r\n", "bad.csv: line 3, column 2: \"x\" is not a number");
    bad_csv("normalize", "1,2,3\r4,5\r\n", "bad.csv: line 2, column 3: 2 fields where line 1 has 3");
    run_t r = lab("normalize", "--input", "missing.csv");
    cr_assert_eq(r.status, 1);
    cr_assert(strstr(r.err, "missing.csv: cannot open: No such file or directory"), "%s", r.err);
    run_free(&r);
}

/* Issue 10, defect 8: a NUL byte read as a number (`1,2,3,\0,5` counted
 * as 0), a directory read as an empty file, and a row whose span overflows
 * normalised to NaN with exit status 0. */
Test(lab, csv_nul_byte_is_an_error, .timeout = 60)
{
    static const char nul_row[] = "1,2,3,\0,5\n";
    write_bytes(path("nul.csv"), nul_row, sizeof nul_row - 1);
    run_t r = lab("howmany", "--input", "nul.csv", "--output", "counts.csv");
    cr_assert_eq(r.status, 1, "status %d\n%s%s", r.status, r.out, r.err);
    cr_assert(strstr(r.err, "nul.csv: line 1, column 4: a NUL byte in the field"), "%s", r.err);
    struct stat st;
    cr_assert_neq(stat(path("counts.csv"), &st), 0, "no counts written");
    run_free(&r);
    static const char nul_late[] = "1,2\n3,4\x00\n";
    write_bytes(path("nul.csv"), nul_late, sizeof nul_late - 1);
    r = lab("normalize", "--input", "nul.csv");
    cr_assert_eq(r.status, 1, "%s%s", r.out, r.err);
    cr_assert(strstr(r.err, "nul.csv: line 2, column 2: a NUL byte"), "%s", r.err);
    run_free(&r);
}

/* A double holds every integer only up to 2^53: 9007199254740993 once read
 * as ...992, so list_a's 9007199254740993 and list_b's 9007199254740992
 * came out as a common item (Python's ints say there is none), and
 * 99999999999999999999999 passed as 1e23.  Integers past 2^53 are an error
 * now; 2^53 itself and floats written as floats still read. */
Test(lab, csv_integers_beyond_2_53_are_errors, .timeout = 60)
{
    bad_csv("common", "a,9007199254740993,5\nb,9007199254740992,6\n",
            "bad.csv: line 1, column 2: \"9007199254740993\" is out of range: an integer must be within +-2^53");
    bad_csv("common", "a,1,2\nb,3,-9007199254740993\n", "bad.csv: line 2, column 3: \"-9007199254740993\" is out of range");
    bad_csv("normalize", "1,99999999999999999999999\n", "line 1, column 2: \"99999999999999999999999\" is out of range");
    bad_csv("howmany", "1,2\n3,9007199254740993\n", "line 2, column 2: \"9007199254740993\" is out of range");
    write_file(path("lists.csv"), "a,9007199254740992,-9007199254740992,1e16\nb,9007199254740992,1e16\n");
    run_t r = lab("common", "--input", "lists.csv", "--output", "common.csv", "--mode", "serial");
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    /* As Python's str() prints the int 2^53 and the float 1e16 (the answer
     * once came out as 9.00719925474099e+15, cut to 15 digits). */
    cr_assert(strstr(r.out, "answer: [[9007199254740992, 1e+16]]"), "%s", r.out);
    char *out = slurp(path("common.csv"));
    cr_assert_str_eq(out, "9007199254740992,1e+16\n");
    free(out);
    run_free(&r);
    write_file(path("lists.csv"), "a,0.1,2.5,1\nb,0.1,1,2.5\n");
    r = lab("common", "--input", "lists.csv", "--output", "common.csv", "--mode", "serial");
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    cr_assert(strstr(r.out, "answer: [[0.1, 1, 2.5]]"), "%s", r.out);
    out = slurp(path("common.csv"));
    cr_assert_str_eq(out, "0.1,1,2.5\n", "floats as repr, not %%.17g's 0.10000000000000001");
    free(out);
    run_free(&r);
}

/* A spreadsheet's UTF-8 byte order mark before the first field once made
 * it "not a number"; it is skipped, and the rows read as without it. */
Test(lab, csv_byte_order_mark_is_skipped, .timeout = 60)
{
    write_file(path("bom.csv"), "\xef\xbb\xbf" "1,4,9\n8,2,5\n");
    run_t r = lab("howmany", "--input", "bom.csv", "--output", "counts.csv", "--mode", "serial");
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    char *out = slurp(path("counts.csv"));
    cr_assert_str_eq(out, "1\n2\n");
    free(out);
    run_free(&r);
    /* Only at the start of the file: elsewhere it is still a bad field. */
    bad_csv("howmany", "1,2\n\xef\xbb\xbf" "3,4\n", "bad.csv: line 2, column 1: ");
}

Test(lab, csv_directory_is_a_read_error, .timeout = 60)
{
    cr_assert_eq(mkdir(path("rows.d"), 0755), 0);
    run_t r = lab("normalize", "--input", "rows.d");
    cr_assert_eq(r.status, 1, "%s%s", r.out, r.err);
    cr_assert(strstr(r.err, "rows.d: cannot read: Is a directory"), "%s", r.err);
    cr_assert_null(strstr(r.err, "no rows"), "%s", r.err);
    run_free(&r);
}

Test(lab, normalize_overflowing_row_is_an_error, .timeout = 60)
{
    struct stat st;
    write_file(path("big.csv"), "1,2,3\n1e308,-1e308,0\n");
    run_t r = lab("normalize", "--input", "big.csv", "--output", "norm.csv");
    cr_assert_eq(r.status, 1, "%s%s", r.out, r.err);
    cr_assert(strstr(r.err, "big.csv: line 2: the row runs from -1e+308 to 1e+308"), "%s", r.err);
    cr_assert_neq(stat(path("norm.csv"), &st), 0, "nothing written");
    run_free(&r);
    /* Huge values whose span fits still normalise. */
    write_file(path("big.csv"), "1e308,5e307,0\n");
    r = lab("normalize", "--input", "big.csv", "--output", "norm.csv");
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    char *out = slurp(path("norm.csv"));
    cr_assert_str_eq(out, "1,0.5,0\n");
    free(out);
    run_free(&r);
}

/* A bad command line is a usage error: a message naming the option and the
 * value, exit status 2, and nothing run; a value is never truncated or read
 * in another base ("2.5" workers, "0x10" as a seed). */
static void bad_option(const char *want, const char *a, const char *b, const char *c)
{
    run_t r = lab(a, b, c);
    cr_expect_eq(r.status, 2, "lab %s %s %s: status %d: %s", a, b ? b : "", c ? c : "", r.status, r.err);
    cr_expect(strstr(r.err, want), "lab %s %s %s: %s", a, b ? b : "", c ? c : "", r.err);
    cr_expect_null(strstr(r.out, "lab: "), "nothing ran: %s", r.out);
    run_free(&r);
}

Test(lab, bad_options, .timeout = 60)
{
    bad_option("no workload \"nosuch\"", "nosuch", NULL, NULL);
    bad_option("--mode: \"gpu\" is not serial, threads, processes, mpi, all or a list of them", "primes", "--mode",
               "gpu");
    bad_option("--mode: \"serial,,mpi\" is not", "primes", "--mode", "serial,,mpi");
    bad_option("--input and --output go with howmany, common or normalize", "primes", "--input", "x.csv");
    bad_option("--input and --output go with howmany, common or normalize", "all", "--output", "x.csv");
    bad_option("--plot goes with chunks, workers or all", "primes", "--plot", "charts");
    static const char *workers[] = {"0", "-1", "257", "abc", "", "2.5", "1e1", "0x4", " 4", "+4", "99999999999999999999999"};
    for (size_t i = 0; i < sizeof workers / sizeof *workers; i++)
        bad_option("--workers: ", "primes", "--workers", workers[i]);
    static const char *seeds[] = {"-1", "4294967296", "1.5", "1e3", "0x10", "seed", "", "18446744073709551616"};
    for (size_t i = 0; i < sizeof seeds / sizeof *seeds; i++) bad_option("--seed: ", "primes", "--seed", seeds[i]);
    static const char *repeats[] = {"0", "101", "2.5", "x"};
    for (size_t i = 0; i < sizeof repeats / sizeof *repeats; i++)
        bad_option("--repeat: ", "primes", "--repeat", repeats[i]);
    static const char *scales[] = {"0", "-1", "1e-5", "101", "nan", "inf", "", "1x"};
    for (size_t i = 0; i < sizeof scales / sizeof *scales; i++) bad_option("--scale: ", "primes", "--scale", scales[i]);
    bad_option("repr: \"abc\" is not a number", "repr", "abc", NULL);
    bad_option("unrecognized option", "primes", "--bogus", NULL);
    bad_option("requires an argument", "primes", "--seed", NULL);
    bad_option("usage: lab WORKLOAD", "primes", "sumsq", NULL);
    /* Files the run would write at its end are checked before it starts
     * (they once failed only after the work, "cannot write"). */
    bad_option("--soln /nonexistent-dir/soln.json: cannot write there: No such file or directory", "primes", "--soln",
               "/nonexistent-dir/soln.json");
    bad_option("--soln /tmp: cannot write there: it is a directory", "primes", "--soln", "/tmp");
    bad_option("--soln /dev/null/soln.json: cannot write there: Not a directory", "all", "--soln", "/dev/null/soln.json");
    {
        run_t r = lab("primes", "--soln", "soln.json", "--report", "/nonexistent-dir/r.json");
        cr_expect_eq(r.status, 2, "%s", r.err);
        cr_expect(strstr(r.err, "--report /nonexistent-dir/r.json: cannot write there"), "%s", r.err);
        run_free(&r);
        write_file(path("rows.csv"), "1,2\n");
        r = lab("normalize", "--input", "rows.csv", "--output", "/nonexistent-dir/out.csv");
        cr_expect_eq(r.status, 2, "%s", r.err);
        cr_expect(strstr(r.err, "--output /nonexistent-dir/out.csv: cannot write there"), "%s", r.err);
        cr_expect_null(strstr(r.out, "normalize"), "nothing ran: %s", r.out);
        run_free(&r);
    }
    run_t r = lab_env(NULL, NULL);
    cr_assert_eq(r.status, 2);
    cr_assert(strstr(r.err, "usage: lab WORKLOAD"), "%s", r.err);
    run_free(&r);
    /* The largest seed and pool are accepted. */
    r = lab("primes", "--seed", "4294967295", "--workers", "256", "--mode", "threads", "--scale", "0.01");
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    cr_assert(strstr(r.out, "256 workers, scale 0.01, seed 4294967295"), "%s", r.out);
    run_free(&r);
}

/* gnuplot reads the chart's file names inside single quotes: a quote in
 * --plot's folder ("Bob's charts") once ended the string early, so gnuplot
 * failed (and the rest of the name ran as gnuplot commands).  It is doubled
 * now, and the chart is drawn there. */
Test(lab, plot_dir_with_a_quote, .timeout = 60)
{
    run_t r = lab("chunks", "--scale", "0.01", "--mode", "serial", "--plot", "Bob's charts");
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    cr_assert_null(strstr(r.err, "gnuplot failed"), "%s", r.err);
    char *data = slurp(path("Bob's charts/chunks.png"));
    cr_assert(strncmp(data, "\x89PNG", 4) == 0, "no chart in \"Bob's charts\": %s", r.err);
    free(data);
    run_free(&r);
}

/* gcc -O2 would fold the sum of squares into its closed form; the lab keeps
 * the loop.  8 x 1,000,000 iterations cannot run in under 1 ms (that would
 * be 8 iterations a nanosecond), while a folded loop takes microseconds. */
Test(lab, sumsq_loop_really_runs, .timeout = 60)
{
    run_t r = lab("sumsq", "--mode", "serial", "--soln", "soln.json");
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    json_t *s = load_report();
    json_t *w = json_object_get(json_object_get(s, "workloads"), "sumsq");
    cr_assert_eq(json_integer_value(json_object_get(w, "each")), 333332833333500000LL);
    double secs = json_number_value(json_object_get(json_object_get(w, "seconds"), "serial"));
    cr_assert_geq(secs, 1e-3, "8 x 1e6 squares in %g s: the loop was folded", secs);
    json_decref(s);
    run_free(&r);
}

Test(lab, one_mode_only, .timeout = 60)
{
    run_t r = lab("sumsq", "--mode", "threads", "--scale", "0.01", "--soln", "soln.json");
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    json_t *s = load_report();
    json_t *secs = json_object_get(json_object_get(json_object_get(s, "workloads"), "sumsq"), "seconds");
    cr_assert_eq(json_object_size(secs), 1);
    cr_assert(json_is_number(json_object_get(secs, "threads")));
    json_decref(s);
    run_free(&r);
}

Test(lab, all_writes_soln_json_and_charts, .timeout = 120)
{
    run_t r = lab("all", "--scale", "0.005", "--plot", "plots", "--workers", "2");
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    cr_assert_null(strchr(r.err, '\r'), "no progress bar when stderr is redirected: %s", r.err);
    json_t *s = load_report();
    static const char *names[] = {"howmany", "common", "busywork", "normalize", "primes",
                                  "factors", "sumsq", "heavy", "chunks"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) check_modes(s, names[i]);
    json_t *w = json_object_get(json_object_get(s, "workloads"), "workers");
    cr_assert_not_null(w);
    json_t *f = json_object_get(json_object_get(w, "amdahl_parallel_fraction"), "threads");
    cr_assert(json_is_number(f) && json_number_value(f) >= 0 && json_number_value(f) <= 1);
    cr_assert_eq((json_int_t)json_array_size(json_object_get(w, "sweep")), 2 * json_integer_value(json_object_get(w, "cpus")));
    /* The busy work's details and the machine are in the report. */
    json_t *bw = json_object_get(s, "busywork");
    for (int k = 1; k <= 3; k++) {
        char key[8];
        snprintf(key, sizeof key, "part%d", k);
        json_t *part = json_object_get(bw, key);
        cr_assert_not_null(part, "busywork.%s", key);
        cr_assert_eq(json_array_size(json_object_get(part, "results")), 4);
    }
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(bw, "part3"), "workers")), 4);
    json_t *host = json_object_get(s, "host");
    cr_assert_geq(json_integer_value(json_object_get(host, "cpus")), 1);
    cr_assert(json_is_string(json_object_get(host, "cpu")));
    json_decref(s);

    /* soln.json: the notebook's four keys, of its types, and nothing else. */
    s = load_soln();
    cr_assert_eq(json_object_size(s), 4, "exactly prob1, prob2, prob3 and host");
    cr_assert(json_is_string(json_object_get(s, "prob1")));
    cr_assert(json_is_string(json_object_get(s, "prob3")));
    cr_assert(json_is_string(json_object_get(s, "host")));
    json_t *p2 = json_object_get(s, "prob2");
    cr_assert_eq(json_object_size(p2), 3);
    for (int k = 1; k <= 3; k++) {
        char key[8];
        snprintf(key, sizeof key, "part%d", k);
        json_t *v = json_object_get(p2, key);
        cr_assert(json_is_real(v) && json_real_value(v) > 0, "prob2.%s is a float of seconds", key);
    }
    /* The busy work sleeps 1+2+4+6 s x 0.005 serially: part1 cannot be
     * shorter. */
    cr_assert_geq(json_real_value(json_object_get(p2, "part1")), 13 * 0.005);
    char host_name[256] = "";
    gethostname(host_name, sizeof host_name - 1);
    cr_assert_str_eq(json_string_value(json_object_get(s, "host")), host_name);
    json_decref(s);
    /* Byte for byte what Python's json.dumps(answers, indent=2) writes for
     * the same values. */
    char *want = python("import json\n"
                        "answers = json.load(open('soln.json'))\n"
                        "print(json.dumps(answers, indent=2), end='')\n");
    char *got = slurp(path("soln.json"));
    cr_assert_str_eq(got, want);
    free(want);
    free(got);
    /* Charts: real PNG files (gnuplot-nox is one of scripts/packages). */
    const char *png[] = {"plots/workers.png", "plots/chunks.png", "plots/amdahl.png"};
    for (int i = 0; i < 3; i++) {
        char *data = slurp(path(png[i]));
        cr_assert(strncmp(data, "\x89PNG", 4) == 0, "%s is not a PNG", png[i]);
        free(data);
    }
    run_free(&r);
}

Test(lab, missing_gnuplot_is_a_message, .timeout = 60)
{
    run_t r = lab_env("/nonexistent", "workers", "--scale", "0.01", "--mode", "threads", "--plot", "plots", NULL);
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    cr_assert(strstr(r.err, "gnuplot not found on PATH"), "%s", r.err);
    cr_assert(strstr(r.err, "apt-get install gnuplot-nox"), "%s", r.err);
    struct stat st;
    cr_assert_neq(stat(path("plots/workers.png"), &st), 0);
    run_free(&r);
}

/* On a terminal, work over a second shows a bar (serial loops and imap-driven
 * pools alike); the sleeping busywork at x0.2 runs 2.6 s serially and 1.6 s
 * on a pool of 2. */
Test(lab, progress_bar_on_a_terminal, .timeout = 60)
{
    int master = posix_openpt(O_RDWR | O_NOCTTY);
    cr_assert_geq(master, 0);
    cr_assert_eq(grantpt(master), 0);
    cr_assert_eq(unlockpt(master), 0);
    char slave[128];
    snprintf(slave, sizeof slave, "%s", ptsname(master));
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int fd = open(slave, O_RDWR | O_NOCTTY), null = open("/dev/null", O_WRONLY);
        dup2(fd, 2);
        dup2(null, 1);
        execl(LAB, LAB, "busywork", "--scale", "0.2", (char *)NULL);
        _exit(127);
    }
    char buf[8192];
    size_t got = 0;
    for (;;) {
        ssize_t n = read(master, buf + got, sizeof buf - 1 - got);
        if (n <= 0) break; /* EIO once the child has exited and closed the slave */
        got += (size_t)n;
    }
    buf[got] = '\0';
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    cr_assert(strstr(buf, "busywork serial ["), "%s", buf);
    cr_assert(strstr(buf, "busywork threads ["), "%s", buf);
    cr_assert(strstr(buf, "busywork processes ["), "%s", buf);
    cr_assert(strstr(buf, "4/4 100%"), "%s", buf);
    close(master);
}

/* heavy computes what the lecture's numpy code computes on the same input:
 * three rounds of (sin + cos) ** (x * x) over RandomState(seed)'s
 * random_sample, summed per chunk, to a relative 1e-12, with the vector
 * math and with scalar libm; map_async is timed on both backends. */
static void heavy_vs_numpy(bool scalar)
{
    if (scalar) setenv("LAB_SCALAR_MATH", "1", 1);
    run_t r = lab("heavy", "--scale", "0.01", "--soln", "soln.json");
    unsetenv("LAB_SCALAR_MATH");
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    json_t *s = load_report();
    json_t *w = check_modes(s, "heavy");
    if (scalar) {
        cr_assert(strstr(r.out, "scalar math"), "%s", r.out);
        cr_assert_str_eq(json_string_value(json_object_get(w, "math")), "scalar");
    }
    cr_assert_eq(json_integer_value(json_object_get(w, "n")), 400000);
    json_t *async = json_object_get(w, "map_async_seconds");
    cr_assert(json_real_value(json_object_get(async, "threads")) > 0);
    cr_assert(json_real_value(json_object_get(async, "processes")) > 0);
    double got = json_real_value(json_object_get(w, "sum"));
    char *want = python("import numpy as np\n"
                        "x = np.random.RandomState(20240917).random_sample(400000)\n"
                        "for _ in range(3):\n"
                        "    x = (np.sin(x) + np.cos(x)) ** (x * x)\n"
                        "print(repr(sum(float(np.sum(c)) for c in np.array_split(x, 4))))\n");
    double py = strtod(want, NULL);
    cr_assert_gt(py, 400000, "every value ends >= 1: %s", want);
    cr_assert_leq(fabs(got - py) / py, 1e-12, "lab %.17g, numpy %.17g", got, py);
    free(want);
    json_decref(s);
    run_free(&r);
}

Test(lab, heavy_matches_numpy, .timeout = 90)
{
    heavy_vs_numpy(false);
}

Test(lab, heavy_scalar_math_matches_numpy, .timeout = 90)
{
    heavy_vs_numpy(true);
}

Test(lab, cpu_workloads_agree_across_modes, .timeout = 120)
{
    static const char *names[] = {"factors", "sumsq", "heavy", "busywork", "chunks"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        run_t r = lab(names[i], "--scale", "0.01", "--soln", "soln.json");
        cr_assert_eq(r.status, 0, "%s: %s%s", names[i], r.out, r.err);
        json_t *s = load_report();
        check_modes(s, names[i]);
        json_decref(s);
        run_free(&r);
    }
}

/* The generated data are numpy's legacy generator's, bit for bit: `lab data`
 * prints each stream's first 1,000 values and a digest of every whole data
 * set (normalize's five sizes from one np.random.seed(42) stream, howmany's
 * RandomState(100), heavy's random_sample), and numpy computes the same
 * lines. */
Test(lab, data_is_numpys_legacy_generator, .timeout = 120)
{
    run_t r = lab("data");
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    char *want = python(
        "import numpy as np\n"
        "def digest(chunks):\n"
        "    s, off = 0, 0\n"
        "    for v in chunks:\n"
        "        v = v.view(np.uint64) if v.dtype == np.float64 else v.astype(np.uint64)\n"
        "        i = np.arange(off, off + len(v), dtype=np.uint64)\n"
        "        off += len(v)\n"
        "        s = (s + int(((v + np.uint64(1)) * (np.uint64(2) * i + np.uint64(1))).sum(dtype=np.uint64))) % 2**64\n"
        "    return s\n"
        "out = ['stream normalize: first 1000: ' + ' '.join(map(str, np.random.RandomState(42).randint(0, 1000, size=1000)))]\n"
        "np.random.seed(42)\n"
        "for name, r, c in [('Small', 100, 50), ('Medium', 1000, 50), ('Large', 10000, 50), ('XL', 50000, 100), ('XXL', 100000, 100)]:\n"
        "    a = np.random.randint(0, 1000, size=(r, c))\n"
        "    out.append('data normalize-%s %dx%d seed 42 digest %d' % (name, r, c, digest([a.ravel()])))\n"
        "out.append('stream howmany: first 1000: ' + ' '.join(map(str, np.random.RandomState(100).randint(0, 10, size=1000))))\n"
        "a = np.random.RandomState(100).randint(0, 10, size=[1000000, 5])\n"
        "out.append('data howmany 1000000x5 seed 100 digest %d' % digest([a.ravel()]))\n"
        "out.append('stream heavy: first 1000: ' + ' '.join(repr(float(v)) for v in np.random.RandomState(20240917).random_sample(1000)))\n"
        "# 40,000,000 doubles in pieces of 2^20: the same stream, a tenth of the memory.\n"
        "rs, n = np.random.RandomState(20240917), 40000000\n"
        "pieces = (rs.random_sample(min(1 << 20, n - k)) for k in range(0, n, 1 << 20))\n"
        "out.append('data heavy %dx1 seed 20240917 digest %d' % (n, digest(pieces)))\n"
        "print('\\n'.join(out))\n");
    cr_assert_str_eq(r.out, want);
    /* --seed replaces the notebooks' seeds, and the data follow it. */
    run_t s = lab("data", "--seed", "7", "--scale", "0.001");
    cr_assert_eq(s.status, 0, "%s%s", s.out, s.err);
    char *want7 = python("import numpy as np\n"
                         "print(' '.join(map(str, np.random.RandomState(7).randint(0, 10, size=1000))))\n");
    char *line = strstr(s.out, "stream howmany: first 1000: ");
    cr_assert_not_null(line, "%s", s.out);
    line += strlen("stream howmany: first 1000: ");
    cr_assert_eq(strncmp(line, want7, strlen(want7)), 0, "%.200s\nwanted %.200s", line, want7);
    free(want7);
    run_free(&s);
    free(want);
    run_free(&r);
}

/* soln.json's floats are Python's repr: shortest round-trip digits, ".0"
 * on integral values, exponents as 1e-05 and 1.5e+16, over edge cases and
 * 2,000 doubles of random bits. */
Test(lab, floats_print_as_pythons_repr, .timeout = 60)
{
    char *values = python("import random, struct\n"
                          "random.seed(11)\n"
                          "edge = ['0', '-0.0', '1', '0.1', '0.5', '1e-05', '0.0001', '0.00012345', '1e16', '1.5e16',\n"
                          "        '1e15', '9999999999999998', '123456789012345678', '5e-324', '2.2250738585072014e-308',\n"
                          "        '1.7976931348623157e308', '0.30000000000000004', '-2.5e-07', '100', '1e22', '1e23',\n"
                          "        '3.141592653589793', '0.2295247724974722', '2.0', '-1234.5']\n"
                          "vals = [float(s) for s in edge]\n"
                          "while len(vals) < len(edge) + 2000:\n"
                          "    x = struct.unpack('<d', struct.pack('<Q', random.getrandbits(64)))[0]\n"
                          "    if x == x and abs(x) != float('inf'): vals.append(x)\n"
                          "vals += [random.random() for _ in range(200)] + [random.uniform(-1e6, 1e6) for _ in range(200)]\n"
                          "open('args', 'w').write(' '.join('%.17g' % v for v in vals))\n"
                          "print('\\n'.join(repr(v) for v in vals))\n");
    char cmd[512];
    snprintf(cmd, sizeof cmd, "cd '%s' && xargs -a args '%s' repr -- > repr.out", dir, LAB);
    cr_assert_eq(system(cmd), 0);
    char *got = slurp(path("repr.out"));
    cr_assert_gt(strlen(got), 2400 * 3);
    /* Line by line, to name the first value that differs. */
    char *g = got, *w = values;
    for (int line = 1; *g || *w; line++) {
        size_t gl = strcspn(g, "\n"), wl = strcspn(w, "\n");
        cr_assert(gl == wl && strncmp(g, w, gl) == 0, "value %d: lab says %.*s, Python %.*s", line, (int)gl, g,
                  (int)wl, w);
        g += gl + (g[gl] == '\n');
        w += wl + (w[wl] == '\n');
    }
    free(got);
    free(values);
}

/* The lecture's (x + y) ** 2 and create_and_save_file examples: every Pool
 * call they use is timed on both backends (the lab checks each variant's
 * results against the serial loop and exits 1 on a difference), and the
 * files' folder is removed afterwards. */
Test(lab, lecture_pairs_and_files_variants, .timeout = 120)
{
    run_t r = lab("pairs", "--scale", "0.01", "--soln", "soln.json");
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    cr_assert(strstr(r.out, "every variant agrees exactly; f(0, 1) = 1, f(9999, 10000) = 399960001"), "%s", r.out);
    json_t *s = load_report();
    json_t *w = json_object_get(json_object_get(s, "workloads"), "pairs");
    cr_assert(json_real_value(json_object_get(w, "serial")) > 0);
    cr_assert(json_real_value(json_object_get(w, "vectorised")) > 0);
    static const char *backends[] = {"threads", "processes"};
    for (int b = 0; b < 2; b++) {
        json_t *o = json_object_get(w, backends[b]);
        cr_assert(json_real_value(json_object_get(o, "starmap")) > 0, "%s", backends[b]);
        cr_assert(json_real_value(json_object_get(o, "starmap_async")) > 0, "%s", backends[b]);
    }
    json_decref(s);
    run_free(&r);

    setenv("TMPDIR", dir, 1);
    r = lab("files", "--scale", "0.1", "--soln", "soln.json");
    unsetenv("TMPDIR");
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    cr_assert(strstr(r.out, "every call wrote the same 20 files"), "%s", r.out);
    s = load_report();
    w = json_object_get(json_object_get(s, "workloads"), "files");
    static const char *calls[] = {"apply", "apply_async", "map", "map_async", "starmap"};
    for (int b = 0; b < 2; b++)
        for (int c = 0; c < 5; c++)
            cr_assert(json_real_value(json_object_get(json_object_get(w, backends[b]), calls[c])) > 0, "%s %s",
                      backends[b], calls[c]);
    json_decref(s);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "ls -d '%s'/lab-files-* 2>/dev/null | grep -q .", dir);
    cr_assert_neq(system(cmd), 0, "the files' folder was removed");
    run_free(&r);
}

/* One scheduler run's figures w, on a pool of `pool` at once: the two tasks
 * that run ten times past their timeout time out, the failing one fails
 * with its message, the rest are done; a done task's start is known; and
 * the queue hands tasks out by priority: the top task starts in the first
 * wave, and no task starts ahead of `pool` or more tasks of higher
 * priority (it can be ahead only of those taken from the queue together
 * with it, at most pool - 1 in a pool of `pool`).  Unknown starts (0)
 * take no part. */
static void check_scheduler_run(json_t *w, json_int_t pool)
{
    cr_assert_eq(json_integer_value(json_object_get(w, "workers")), pool);
    json_t *list = json_object_get(w, "tasks");
    cr_assert_eq(json_array_size(list), 8);
    for (size_t i = 0; i < 8; i++) {
        json_t *t = json_array_get(list, i);
        const char *name = json_string_value(json_object_get(t, "name"));
        const char *outcome = json_string_value(json_object_get(t, "outcome"));
        json_int_t started = json_integer_value(json_object_get(t, "started"));
        json_int_t prio = json_integer_value(json_object_get(t, "priority"));
        if (!strcmp(name, "index") || !strcmp(name, "train")) cr_assert_str_eq(outcome, "timed out", "%s", name);
        else if (!strcmp(name, "resize")) {
            cr_assert_str_eq(outcome, "failed");
            cr_assert(strstr(json_string_value(json_object_get(t, "message")), "the input image is corrupt"));
        } else {
            cr_assert_str_eq(outcome, "done", "%s", name);
            cr_assert_gt(started, 0, "%s ran", name);
        }
        if (prio == 9) cr_assert_leq(started, pool, "%s started %lld", name, (long long)started);
        if (started == 0) continue;
        int later_higher = 0; /* higher priority, started after this one */
        for (size_t k = 0; k < 8; k++) {
            json_t *o = json_array_get(list, k);
            json_int_t os = json_integer_value(json_object_get(o, "started"));
            later_higher += os > started && json_integer_value(json_object_get(o, "priority")) > prio;
        }
        cr_assert_lt(later_higher, pool, "%s (priority %lld) started %lld, before %d tasks of higher priority", name,
                     (long long)prio, (long long)started, later_higher);
    }
}

/* The scheduler hands tasks out by priority, times out the two that run ten
 * times past their timeout (killing their workers), fails the failing one
 * with its message, and finishes the rest. */
Test(lab, scheduler_priorities_timeouts_failures, .timeout = 120)
{
    run_t r = lab("scheduler", "--scale", "0.05", "--workers", "2", "--soln", "soln.json");
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    cr_assert(strstr(r.out, "summary: 5 done, 2 timed out, 1 failed"), "%s", r.out);
    json_t *s = load_report();
    json_t *w = json_object_get(json_object_get(s, "workloads"), "scheduler");
    cr_assert_str_eq(json_string_value(json_object_get(w, "backend")), "processes");
    check_scheduler_run(w, 2);
    json_t *list = json_object_get(w, "tasks");
    cr_assert_eq(json_array_size(list), 8);
    /* A task that times out while still queued never starts, so "last" is
     * the highest start rank given. */
    json_int_t last = 0;
    for (size_t i = 0; i < 8; i++) {
        json_int_t st = json_integer_value(json_object_get(json_array_get(list, i), "started"));
        if (st > last) last = st;
    }
    for (size_t i = 0; i < 8; i++) {
        json_t *t = json_array_get(list, i);
        const char *name = json_string_value(json_object_get(t, "name"));
        json_int_t started = json_integer_value(json_object_get(t, "started"));
        json_int_t prio = json_integer_value(json_object_get(t, "priority"));
        /* Outcomes: check_scheduler_run.  Highest priority first: the two
         * top tasks take the two workers, and the lowest starts last. */
        if (prio == 9 || prio == 7) cr_assert_leq(started, 2, "%s started %lld", name, (long long)started);
        if (prio == 1) cr_assert_eq(started, last, "%s started %lld of %lld", name, (long long)started, (long long)last);
    }
    json_decref(s);
    run_free(&r);
}

/* Each busy-work task reports the process that ran it and its own elapsed
 * time, as the lab's do_busy_work prints them: serially one process, on the
 * pool of 4 processes several, and no task took less than its sleep. */
Test(lab, busywork_tasks_report_pid_and_elapsed, .timeout = 60)
{
    run_t r = lab("busywork", "--scale", "0.2", "--soln", "soln.json");
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    cr_assert(strstr(r.out, "part3 task 4 done in pid "), "%s", r.out);
    json_t *s = load_report();
    json_t *bw = json_object_get(s, "busywork");
    static const double secs[] = {1, 2, 4, 6};
    json_t *serial = json_object_get(json_object_get(json_object_get(bw, "part1"), "tasks"), "serial");
    json_t *procs = json_object_get(json_object_get(json_object_get(bw, "part3"), "tasks"), "processes");
    cr_assert_eq(json_array_size(serial), 4);
    cr_assert_eq(json_array_size(procs), 4);
    json_int_t serial_pid = json_integer_value(json_object_get(json_array_get(serial, 0), "pid"));
    int distinct = 0;
    for (size_t i = 0; i < 4; i++) {
        json_t *a = json_array_get(serial, i), *b = json_array_get(procs, i);
        cr_assert_eq(json_integer_value(json_object_get(a, "pid")), serial_pid, "one process runs the serial loop");
        json_int_t pid = json_integer_value(json_object_get(b, "pid"));
        cr_assert_gt(pid, 0);
        cr_assert_neq(pid, serial_pid, "task %zu ran in a worker process", i + 1);
        bool seen = false;
        for (size_t k = 0; k < i; k++) seen |= json_integer_value(json_object_get(json_array_get(procs, k), "pid")) == pid;
        distinct += !seen;
        cr_assert_geq(json_real_value(json_object_get(a, "elapsed")), secs[i] * 0.2 * 0.999);
        cr_assert_geq(json_real_value(json_object_get(b, "elapsed")), secs[i] * 0.2 * 0.999);
    }
    cr_assert_geq(distinct, 2, "the pool of 4 ran the tasks in several processes");
    json_decref(s);
    run_free(&r);
}

/* prob2's part2 pool has as many workers as the CPUs the lab may run on, as
 * len(os.sched_getaffinity(0)) counts them: under taskset to one CPU that is
 * 1, where the machine's online count (what the lab once read) is more. */
Test(lab, busywork_cpu_count_pool_follows_taskset, .timeout = 60)
{
    cpu_set_t set;
    cr_assert_eq(sched_getaffinity(0, sizeof set, &set), 0);
    int cpu = 0;
    while (cpu < CPU_SETSIZE && !CPU_ISSET(cpu, &set)) cpu++;
    cr_assert_lt(cpu, CPU_SETSIZE);
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "cd '%s' && taskset -c %d " LAB " busywork --scale 0.01 --soln soln.json > out.txt 2>&1 && "
             "taskset -c %d /usr/bin/python3 -c 'import os; print(len(os.sched_getaffinity(0)))' > py.txt",
             dir, cpu, cpu);
    int st = system(cmd);
    char *out = slurp(path("out.txt"));
    cr_assert_eq(st, 0, "%s", out);
    free(out);
    char *py = slurp(path("py.txt"));
    long want = strtol(py, NULL, 10);
    free(py);
    cr_assert_eq(want, 1, "python3 under taskset -c %d sees %ld CPUs", cpu, want);
    json_t *s = load_report();
    json_t *part2 = json_object_get(json_object_get(s, "busywork"), "part2");
    cr_assert_eq(json_integer_value(json_object_get(part2, "workers")), want, "part2's pool has %lld workers",
                 (long long)json_integer_value(json_object_get(part2, "workers")));
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(s, "host"), "cpus")), want);
    json_decref(s);
}

/* --- --mode mpi: the same range functions over MPI ranks ------------------ */

/* The child's environment for mpirun on loopback (test-mpi's settings). */
static void set_mpi_env(const void *np_arg)
{
    int np = *(const int *)np_arg;
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    setenv("OMPI_MCA_btl", "self,vader", 1);
    setenv("OMPI_MCA_pml", "ob1", 1);
    setenv("OMPI_MCA_oob_tcp_if_include", "lo", 1);
    /* Under ASan, Open MPI's own leaks are suppressed (test-mpi's file). */
    setenv("LSAN_OPTIONS", "suppressions=" ASYNC_SRC_DIR "/tests/mpi/lsan-mpi.supp:print_suppressions=0", 1);
    /* With exactly 2 ranks, LeakSanitizer's exit-time tracer crashes
     * in one rank ("Tracer caught signal 11", over vader and tcp alike,
     * already at 18e9152; not analysed): those runs skip the leak check,
     * which the 3-rank runs still make. */
    setenv("ASAN_OPTIONS", np == 2 ? "fast_unwind_on_malloc=0:detect_leaks=0" : "fast_unwind_on_malloc=0", 1);
}

/* Runs `mpirun -np np lab ARGS...` in dir on loopback, bounded by coreutils'
 * timeout, stdout and stderr to files. */
static run_t lab_mpirun(int np, const char *arg, ...)
{
    char nps[16];
    snprintf(nps, sizeof nps, "%d", np);
    const char *argv[40] = {"timeout", "-s", "KILL", "300", "mpirun", "--oversubscribe", "--bind-to", "none",
                            "-np", nps, LAB};
    int argc = 11;
    va_list ap;
    va_start(ap, arg);
    for (const char *a = arg; a && argc < 39; a = va_arg(ap, const char *)) argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;
    return run_in_dir(argv, true, set_mpi_env, &np);
}
#define lab_mpi(np, ...) lab_mpirun(np, __VA_ARGS__, NULL)

/* Skips (counted, named) when this lab was built without Open MPI: it then
 * says so for --mode mpi; built with it, outside mpirun it says a single
 * rank cannot serve. */
static void need_mpi_lab(void)
{
    run_t r = lab("primes", "--mode", "mpi");
    bool without = strstr(r.err, "built without Open MPI") != NULL;
    cr_assert(without || strstr(r.err, "single rank"), "lab primes --mode mpi outside mpirun: %d %s%s", r.status,
              r.out, r.err);
    cr_assert_eq(r.status, 1, "%s", r.err);
    run_free(&r);
    if (without) cr_skip_test("the lab was built without Open MPI (libopenmpi-dev)");
}

/* Every workload runs over MPI (scheduler in a run of its own, with rank
 * pools: mpi_scheduler_agrees_with_processes).  Each of these reports the
 * hash of its results (FNV of every result byte; busywork's: the sleeps its
 * tasks were given) computed from whatever modes ran, so a serial run's
 * hash against an MPI run's compares the two modes' answers across runs.
 * pairs' hash is of its serial loop, which every run computes as its
 * reference; there the check is the lab's own (it exits 1 when starmap over
 * MPI differs), as it is for files (the bytes each call wrote, below). */
static const char *const mpi_workloads[] = {"howmany", "common", "busywork", "normalize", "primes", "factors",
                                            "sumsq",   "heavy",  "chunks",   "workers",   "pairs"};
#define N_MPI_WORKLOADS (sizeof mpi_workloads / sizeof mpi_workloads[0])

/* Each workload's result hash in the report, and the bytes files wrote (in
 * hashes[N_MPI_WORKLOADS]); *files_mpi: whether files ran over MPI. */
static void report_hashes(char hashes[][17], bool *files_mpi)
{
    json_t *s = load_report();
    json_t *w = json_object_get(s, "workloads");
    for (size_t i = 0; i < N_MPI_WORKLOADS; i++) {
        const char *h = json_string_value(json_object_get(json_object_get(w, mpi_workloads[i]), "hash"));
        cr_assert_not_null(h, "no hash for %s", mpi_workloads[i]);
        snprintf(hashes[i], 17, "%s", h);
    }
    json_t *files = json_object_get(w, "files");
    cr_assert_not_null(json_object_get(files, "bytes"), "no files figures");
    snprintf(hashes[N_MPI_WORKLOADS], 17, "%lld", (long long)json_integer_value(json_object_get(files, "bytes")));
    *files_mpi = json_object_get(files, "mpi") != NULL;
    json_decref(s);
}

/* The answers over 1 and 2 serving ranks equal the serial mode's on the same
 * seed, byte for byte: a serial run's hashes against `--mode mpi` runs. */
Test(lab, mpi_mode_answers_equal_serial, .timeout = 900)
{
    need_mpi_lab();
    char serial[N_MPI_WORKLOADS + 1][17], mpi[N_MPI_WORKLOADS + 1][17];
    bool files_mpi;
    run_t r = lab("all", "--mode", "serial", "--quick", "--seed", "7", "--soln", "soln.json");
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    report_hashes(serial, &files_mpi);
    cr_assert(!files_mpi);
    run_free(&r);
    for (int np = 2; np <= 3; np++) {
        unlink(path("lab-report.json"));
        r = lab_mpi(np, "all", "--mode", "mpi", "--quick", "--seed", "7", "--soln", "soln.json");
        cr_assert_eq(r.status, 0, "-np %d: %s%s", np, r.out, r.err);
        char want[64];
        snprintf(want, sizeof want, "mpi: %d serving ranks", np - 1);
        cr_assert(strstr(r.out, want), "-np %d: no '%s':\n%s", np, want, r.out);
        /* scheduler too: `lab all` starts rank pools, which kill a task
         * past its timeout (its outcomes against a local pool's:
         * mpi_scheduler_agrees_with_processes). */
        cr_assert(strstr(r.out, "timeouts on mpi") || strstr(r.out, "over MPI"), "-np %d: scheduler:\n%s", np, r.out);
        cr_assert(!strstr(r.out, "not in this run"), "-np %d: scheduler:\n%s", np, r.out);
        cr_assert(!strstr(r.out, "heavy: not run"), "%s", r.out);
        report_hashes(mpi, &files_mpi);
        for (size_t i = 0; i < N_MPI_WORKLOADS; i++)
            cr_expect_str_eq(mpi[i], serial[i], "-np %d: %s: mpi hash %s, serial %s", np, mpi_workloads[i], mpi[i],
                             serial[i]);
        cr_expect(files_mpi, "-np %d: files did not run over MPI", np);
        cr_expect_str_eq(mpi[N_MPI_WORKLOADS], serial[N_MPI_WORKLOADS], "-np %d: files wrote %s bytes, serial %s", np,
                         mpi[N_MPI_WORKLOADS], serial[N_MPI_WORKLOADS]);
        run_free(&r);
    }
}

/* serial,mpi in one run: the lab itself checks that both modes agree, and
 * the answers are the known ones. */
Test(lab, mpi_and_serial_agree_in_one_run, .timeout = 300)
{
    need_mpi_lab();
    run_t r = lab_mpi(3, "primes", "--mode", "serial,mpi");
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    cr_assert(strstr(r.out, "primes below 100000: 9592"), "%s", r.out);
    cr_assert(strstr(r.out, "every mode agrees exactly"), "%s", r.out);
    cr_assert(strstr(r.out, "  mpi  "), "no mpi row:\n%s", r.out);
    run_free(&r);
    /* The user's rows over MPI (--input, --output): the counts come back. */
    write_file(path("rows.csv"), "1,4,8,9,5\n0,0,0,0,0\n4,5,6,7,8\n");
    r = lab_mpi(3, "howmany", "--mode", "mpi", "--input", "rows.csv", "--output", "counts.csv");
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    cr_assert(strstr(r.out, "first 10 counts: [3, 0, 5]  total: 8"), "%s", r.out);
    char *out = slurp(path("counts.csv"));
    cr_assert_str_eq(out, "3\n0\n5\n");
    free(out);
    run_free(&r);
    /* common's answers are of different lengths per pair (each pair's
     * slot is its a row's length): the user's rows over MPI come back too. */
    write_file(path("lists.csv"), "a,1,2,3\nb,3,2,9\na,7,7,8\nb,7\na,5\nb,6\n");
    r = lab_mpi(3, "common", "--mode", "serial,mpi", "--input", "lists.csv", "--output", "common.csv");
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    cr_assert(strstr(r.out, "answer: [[2, 3], [7], []]"), "%s", r.out);
    cr_assert(strstr(r.out, "every mode agrees exactly"), "%s", r.out);
    out = slurp(path("common.csv"));
    cr_assert_str_eq(out, "2,3\n7\n\n");
    free(out);
    run_free(&r);
    /* The workloads that call the executor API themselves take an mpi
     * column, checked inside the lab against the serial loop. */
    r = lab_mpi(3, "files", "--mode", "serial,mpi", "--quick");
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    cr_assert(strstr(r.out, "threads  processes        mpi"), "no mpi column:\n%s", r.out);
    cr_assert(strstr(r.out, "every call wrote the same 20 files"), "%s", r.out);
    run_free(&r);
    /* No MPI job at all (lab data): the serving ranks are released. */
    r = lab_mpi(3, "data", "--mode", "mpi");
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    run_free(&r);
}

/* The scheduler over MPI ranks with their process pools: every task has the
 * outcome it has on the same run's pool of processes (the lab exits 1
 * otherwise, and the test compares them again from the report), the
 * runaway tasks are killed at their deadline on their rank, and the queue
 * hands the tasks out by priority to the pool of --workers slots.  -np 3:
 * two serving ranks of one process each; -np 2: one rank of two. */
Test(lab, mpi_scheduler_agrees_with_processes, .timeout = 300)
{
    need_mpi_lab();
    run_t r = lab_mpi(3, "scheduler", "--mode", "processes,mpi", "--scale", "0.05", "--workers", "2", "--soln",
                      "soln.json");
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    cr_assert(strstr(r.out, "processes and mpi agree"), "%s", r.out);
    json_t *s = load_report();
    json_t *w = json_object_get(json_object_get(s, "workloads"), "scheduler");
    json_t *m = json_object_get(w, "mpi");
    cr_assert_str_eq(json_string_value(json_object_get(w, "backend")), "processes");
    cr_assert_str_eq(json_string_value(json_object_get(m, "backend")), "mpi", "no mpi run:\n%s", r.out);
    static const char *const counts[] = {"done", "timed_out", "failed"};
    for (size_t c = 0; c < 3; c++)
        cr_assert_eq(json_integer_value(json_object_get(m, counts[c])), json_integer_value(json_object_get(w, counts[c])),
                     "%s", counts[c]);
    json_t *pl = json_object_get(w, "tasks"), *ml = json_object_get(m, "tasks");
    for (size_t i = 0; i < 8; i++) {
        json_t *pt = json_array_get(pl, i);
        const char *name = json_string_value(json_object_get(pt, "name"));
        json_t *mt = NULL;
        for (size_t k = 0; k < json_array_size(ml); k++)
            if (!strcmp(json_string_value(json_object_get(json_array_get(ml, k), "name")), name)) mt = json_array_get(ml, k);
        cr_assert_not_null(mt, "%s: not in the mpi run", name);
        cr_assert_str_eq(json_string_value(json_object_get(mt, "outcome")),
                         json_string_value(json_object_get(pt, "outcome")), "%s", name);
        /* A timed-out task either never started or was killed on its rank
         * at its deadline (the rank's pool says which); it returns no
         * output, so its start is unknown. */
        if (!strcmp(json_string_value(json_object_get(mt, "outcome")), "timed out")) {
            const char *msg = json_string_value(json_object_get(mt, "message"));
            cr_assert(strstr(msg, "was killed") || strstr(msg, "before"), "%s: %s", name, msg);
            cr_assert_eq(json_integer_value(json_object_get(mt, "started")), 0, "%s: a start without an output", name);
        }
    }
    check_scheduler_run(w, 2);
    check_scheduler_run(m, 2);
    json_decref(s);
    run_free(&r);
    /* Alone, on one serving rank whose pool runs both at once. */
    unlink(path("lab-report.json"));
    r = lab_mpi(2, "scheduler", "--mode", "mpi", "--scale", "0.05", "--workers", "2", "--soln", "soln.json");
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    cr_assert(strstr(r.out, "summary: 5 done, 2 timed out, 1 failed"), "%s", r.out);
    s = load_report();
    w = json_object_get(json_object_get(s, "workloads"), "scheduler");
    cr_assert_str_eq(json_string_value(json_object_get(w, "backend")), "mpi");
    check_scheduler_run(w, 2);
    json_decref(s);
    run_free(&r);
}
