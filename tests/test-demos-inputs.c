/* The demos as a hostile user runs them, options and inputs: each test
 * failed before its fix.
 *   brewery-server --data: a NUL byte in a field (the field was served cut
 *     at it), a column named twice (the later value won without a word), a
 *     duplicate id (the message named no file and no line), a directory (a
 *     bare "read error"), an empty --data name (exit 1, not 2); the API's
 *     exclude_types filter (ignored: every type came back); a parameter
 *     given twice (the first value won, where the real service takes the
 *     last);
 *   brewery: an empty --json name (the whole run, then "cannot write : ..."
 *     and exit 1), a state named twice (counted twice under one key), a
 *     --base-url that is not http(s) (every state failed) or ends in '/'
 *     (".../v1//breweries": every state failed);
 *   lab: an empty --soln, --report, --output or --input name (the workload
 *     ran, then "lab: : cannot write" and exit 1); --soln and the report as
 *     one file (the report replaced the answers, exit 0); a CSV number of
 *     64 bytes or more ("not a number") or below DBL_MIN ("out of range"),
 *     which Python's float() reads; howmany's 20-digit integer ("is not an
 *     integer" where the others say out of range); a --plot folder that
 *     cannot be written (found after the run, exit 1); a CSV number in
 *     hexadecimal (strtod read 0x10 as 16, where float() refuses it) or
 *     with PEP 515's underscores (refused, where float() reads 1_000);
 *   lab --output over --input or --soln, brewery --json over
 *     --server-data (the results replaced the rows, the answers the
 *     results, async.json the CSV, each with exit 0);
 *   wordcount --input: a FIFO or a /proc file (st_size 0: counted 0 words),
 *     a directory ("No such device"), an empty file ("+inf ns per word"). */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <async.h>

#include "support/brewery.h"

#define LAB ASYNC_OUT_DIR "/demos/lab/lab"
#define WORDCOUNT ASYNC_OUT_DIR "/demos/ipc/wordcount"

TestSuite(demos_inputs, .init = srv_suite_init, .fini = cli_server_stop, .timeout = 60);

/* Runs argv (NULL-terminated) to its end, 40 s at most, stdout and stderr
 * captured into *r (clear it). */
static void run(const char *const *argv, async_command_result_t *r)
{
    async_command_t cmd = {argv, NULL};
    int rc = async_process_run_commands_dl(&cmd, 1, 1, r, async_deadline_after(ASYNC_SEC(40)));
    cr_assert(rc == 0 || rc == ASYNC_ECHILD, "%s: %s", argv[0], async_strerror(rc));
    cr_assert_eq(r->error, 0, "%s did not run to its end: %s", argv[0], async_strerror(r->error));
}

/* A temporary file holding len bytes of text; its path in path[64]. */
static void temp_file(char path[64], const char *text, size_t len)
{
    snprintf(path, 64, "/tmp/test-demos-inputs-XXXXXX");
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, text, len), (ssize_t)len);
    close(fd);
}

/* brewery-server --data on len bytes of CSV: it must refuse to start with
 * exit 1 and print each of the NULL-terminated `want` strings on stderr. */
static void server_refuses(const char *text, size_t len, const char *const *want)
{
    char path[64];
    temp_file(path, text, len);
    const char *argv[] = {SERVER, "--port", "0", "--quiet", "--latency", "0", "--data", path, NULL};
    async_command_result_t r;
    run(argv, &r);
    unlink(path);
    cr_expect_eq(r.exit_code, 1, "exit %d, stderr: %s", r.exit_code, r.err);
    cr_expect_eq(r.out_len, 0, "it started listening: %s", r.out);
    cr_expect(strstr(r.err, path) != NULL, "names the file: %s", r.err);
    for (int i = 0; want[i]; i++) cr_expect(strstr(r.err, want[i]), "no \"%s\" in: %s", want[i], r.err);
    async_command_result_clear(&r);
}

Test(demos_inputs, server_csv_nul_byte_is_an_error)
{
    static const char text[] = "id,name,state_province\n"
                               "b1,Good,Ohio\n"
                               "b2,Cut\0here,Ohio\n";
    server_refuses(text, sizeof text - 1,
                   (const char *const[]){"line 3, column 2", "NUL byte", NULL});
}

Test(demos_inputs, server_csv_column_named_twice_is_an_error)
{
    static const char text[] = "id,name,state_province,name\n"
                               "b1,First,Ohio,Second\n";
    server_refuses(text, sizeof text - 1,
                   (const char *const[]){"line 1", "\"name\" is named twice", "columns 2 and 4", NULL});
}

Test(demos_inputs, server_csv_duplicate_id_names_both_lines)
{
    /* The duplicate's rows are 2 and 4; qsort may put either in front. */
    static const char text[] = "id,name,state_province\n"
                               "zz,One,Ohio\n"
                               "aa,Two,Ohio\n"
                               "zz,Three,Ohio\n";
    server_refuses(text, sizeof text - 1,
                   (const char *const[]){"line 4: duplicate brewery id zz", "also on line 2", NULL});
}

Test(demos_inputs, server_data_directory_says_so)
{
    const char *argv[] = {SERVER, "--port", "0", "--quiet", "--data", "/tmp", NULL};
    async_command_result_t r;
    run(argv, &r);
    cr_expect_eq(r.exit_code, 1, "exit %d", r.exit_code);
    cr_expect(strstr(r.err, "/tmp: read error: Is a directory"), "%s", r.err);
    async_command_result_clear(&r);
}

/* exclude_types, the real API's `lower(brewery_type) NOT IN (list)` on the
 * list and meta, was ignored: every type came back.  Counts are the CSV's,
 * read here with libcsv; a name the data lacks excludes nothing and an empty
 * value is no filter, as on the real service. */
static long csv_count_without(const csv_table_t *t, const char *const *types, size_t n, const char *state)
{
    long count = 0;
    for (size_t r = 0; r < t->nrows; r++) {
        const char *ty = csv_cell(t, r, "brewery_type");
        bool out = !*ty;
        for (size_t i = 0; i < n && !out; i++) out = strcasecmp(ty, types[i]) == 0;
        if (!out && (!state || strcasecmp(csv_cell(t, r, "state_province"), state) == 0)) count++;
    }
    return count;
}

Test(demos_inputs, server_exclude_types_filters_list_and_meta)
{
    srv_t s;
    srv_start_on_csv(&s);
    csv_table_t *t = csv_table_load(CSV);
    static const char *const two[] = {"micro", "brewpub"};
    cr_expect_eq(srv_meta_total(&s, "exclude_types=micro"), csv_count_without(t, two, 1, NULL));
    cr_expect_eq(srv_meta_total(&s, "exclude_types=micro,%20Brewpub"), csv_count_without(t, two, 2, NULL));
    cr_expect_eq(srv_meta_total(&s, "exclude_types=micro&by_state=ohio"), csv_count_without(t, two, 1, "Ohio"));
    cr_expect_eq(srv_meta_total(&s, "exclude_types=no_such_type"), (long)t->nrows);
    cr_expect_eq(srv_meta_total(&s, "exclude_types="), (long)t->nrows);
    /* Every page of the list: no excluded type, and as many as meta says. */
    long seen = 0;
    for (int page = 1;; page++) {
        char path[128];
        snprintf(path, sizeof path, "/v1/breweries?exclude_types=micro,brewpub&per_page=200&page=%d", page);
        json_t *a = srv_get_json(&s, path);
        size_t n = json_array_size(a), i;
        json_t *b;
        json_array_foreach(a, i, b) {
            const char *ty = json_string_value(json_object_get(b, "brewery_type"));
            cr_assert(ty && strcmp(ty, "micro") && strcmp(ty, "brewpub"), "page %d: %s", page, ty ? ty : "null");
        }
        json_decref(a);
        seen += (long)n;
        if (n < 200) break;
    }
    cr_expect_eq(seen, csv_count_without(t, two, 2, NULL));
    csv_table_free(t);
    srv_stop(&s);
}

/* A parameter given twice takes its last value, as PHP (and Rack before
 * it) reads a query string; libmicrohttpd's lookup gave the first. */
Test(demos_inputs, server_repeated_parameter_takes_the_last_value)
{
    srv_t s;
    srv_start(&s, "--latency", "0", NULL);
    json_t *a = srv_get_json(&s, "/v1/breweries?per_page=5&per_page=7");
    cr_expect_eq(json_array_size(a), 7);
    json_decref(a);
    long texas = srv_meta_total(&s, "by_state=texas");
    cr_expect_eq(srv_meta_total(&s, "by_state=ohio&by_state=texas"), texas);
    a = srv_get_json(&s, "/v1/breweries?by_state=ohio&by_state=texas&per_page=200");
    size_t i;
    json_t *b;
    cr_expect_eq((long)json_array_size(a), texas < 200 ? texas : 200);
    json_array_foreach(a, i, b) {
        const char *st = json_string_value(json_object_get(b, "state_province"));
        cr_expect(st && strcmp(st, "Texas") == 0, "%s", st ? st : "null");
    }
    json_decref(a);
    /* A key without '=' is still no parameter: the earlier value stands. */
    cr_expect_eq(srv_meta_total(&s, "by_state=texas&by_state"), texas);
    srv_stop(&s);
}

Test(demos_inputs, server_empty_data_name_is_a_bad_option)
{
    const char *argv[] = {SERVER, "--port", "0", "--quiet", "--data", "", NULL};
    async_command_result_t r;
    run(argv, &r);
    cr_expect_eq(r.exit_code, 2, "exit %d: %s", r.exit_code, r.err);
    cr_expect(strstr(r.err, "invalid value for --data: ''"), "%s", r.err);
    cr_expect_eq(r.out_len, 0, "it started: %s", r.out);
    async_command_result_clear(&r);
}

/* The client's refusals come before any request: a fake API counts them. */
static void client_refuses(const char *const *args, const char *want)
{
    cli_fake_t f = {.mode = FAKE_BODY, .body = "[]"};
    cli_fake_start(&f);
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%u/v1", f.port);
    const char *argv[24];
    int n = 0;
    for (int i = 0; args[i]; i++) argv[n++] = args[i];
    bool has_base = false;
    for (int i = 0; i < n; i++) has_base |= strcmp(argv[i], "--base-url") == 0;
    if (!has_base) argv[n++] = "--base-url", argv[n++] = base;
    argv[n] = NULL;
    char err[2048];
    int status = cli_demo_argv(argv, err, sizeof err);
    cli_fake_stop(&f);
    cr_expect_eq(status, 2, "%s: exit %d, stderr: %s", want, status, err);
    cr_expect(strstr(err, want), "no \"%s\" in: %s", want, err);
    cr_expect_eq(f.requests, 0, "%s: %ld requests before the refusal", want, f.requests);
}

Test(demos_inputs, client_empty_json_name_is_refused_first)
{
    client_refuses((const char *const[]){"--mode", "serial", "--states", "ohio", "--json", "", NULL},
                   "--json : cannot write there: the file name is empty");
}

Test(demos_inputs, client_state_named_twice_is_refused)
{
    client_refuses((const char *const[]){"--mode", "serial", "--states", "new_york,ohio,New-York",
                                         "--json", "/dev/null", NULL},
                   "--states names 'new_york' twice ('new_york' and 'New-York')");
    client_refuses((const char *const[]){"--mode", "serial", "--states", "atlantis,atlantis",
                                         "--json", "/dev/null", NULL},
                   "--states names 'atlantis' twice");
}

Test(demos_inputs, client_base_url_must_be_http)
{
    client_refuses((const char *const[]){"--mode", "serial", "--states", "ohio", "--json", "/dev/null",
                                         "--base-url", "ftp://127.0.0.1/v1", NULL},
                   "--base-url 'ftp://127.0.0.1/v1' is not an http:// or https:// URL");
    client_refuses((const char *const[]){"--mode", "serial", "--states", "ohio", "--json", "/dev/null",
                                         "--base-url", "http:///v1", NULL},
                   "--base-url 'http:///v1' names no host");
}

/* ".../v1/" counts what ".../v1" counts (the API's path has no empty
 * segment: brewery-server answers 404 to /v1//breweries, as a router does). */
Test(demos_inputs, client_base_url_trailing_slash_is_dropped)
{
    cli_server_start((const char *const[]){"--latency", "0", NULL});
    json_t *plain = NULL, *slash = NULL;
    cr_assert_eq(cli_demo_on_server("--mode serial,async --states ohio,maryland", &plain), 0);
    char args[256];
    snprintf(args, sizeof args, "--mode serial,async --states ohio,maryland --base-url http://127.0.0.1:%u/v1//",
             cli_server.port);
    cr_assert_eq(cli_demo(args, &slash), 0, "a base URL ending in / failed");
    const char *base = json_string_value(json_object_get(slash, "base_url"));
    char want[64];
    snprintf(want, sizeof want, "http://127.0.0.1:%u/v1", cli_server.port);
    cr_expect_str_eq(base, want);
    for (int m = 0; m < 2; m++)
        for (int s = 0; s < 2; s++) {
            const char *mode = m ? "async" : "serial", *state = s ? "maryland" : "ohio";
            long a = cli_count(plain, mode, state), b = cli_count(slash, mode, state);
            cr_expect(a > 0 && a == b, "%s %s: %ld against %ld", mode, state, b, a);
        }
    cli_check_result(slash);
    json_decref(plain);
    json_decref(slash);
}

/* The lab refuses an empty file name before anything runs: exit 2 and
 * nothing on stdout (its first line comes after the checks). */
Test(demos_inputs, lab_empty_file_names_are_refused_first)
{
    static const struct {
        const char *const argv[9];
        const char *want;
    } cases[] = {
        {{LAB, "primes", "--mode", "serial", "--soln", "", NULL}, "--soln : cannot write there: the file name is empty"},
        {{LAB, "primes", "--mode", "serial", "--soln", "/dev/null", "--report", "", NULL},
         "--report : cannot write there: the file name is empty"},
        {{LAB, "howmany", "--mode", "serial", "--quick", "--output", "", NULL},
         "--output : cannot write there: the file name is empty"},
        {{LAB, "howmany", "--mode", "serial", "--input", "", NULL}, "--input: the file name is empty"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        async_command_result_t r;
        run(cases[i].argv, &r);
        cr_expect_eq(r.exit_code, 2, "%s: exit %d, stderr: %s", cases[i].want, r.exit_code, r.err);
        cr_expect(strstr(r.err, cases[i].want), "no \"%s\" in: %s", cases[i].want, r.err);
        cr_expect_eq(r.out_len, 0, "%s: it ran: %s", cases[i].want, r.out);
        async_command_result_clear(&r);
    }
}

/* soln.json and its report as one file: the report replaced the answers and
 * the lab exited 0.  Both spellings of one path are caught, and a soln.json
 * named like the default report beside it. */
Test(demos_inputs, lab_soln_and_report_as_one_file_is_refused)
{
    char dir[] = "/tmp/test-demos-inputs-lab-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char soln[128], other[128], dflt[128];
    snprintf(soln, sizeof soln, "%s/answers.json", dir);
    snprintf(other, sizeof other, "%s/../%s/./answers.json", dir, strrchr(dir, '/') + 1);
    snprintf(dflt, sizeof dflt, "%s/lab-report.json", dir);
    const char *const argvs[][9] = {
        {LAB, "primes", "--mode", "serial", "--soln", soln, "--report", soln, NULL},
        {LAB, "primes", "--mode", "serial", "--soln", soln, "--report", other, NULL},
        {LAB, "primes", "--mode", "serial", "--soln", dflt, NULL},
    };
    for (size_t i = 0; i < sizeof argvs / sizeof argvs[0]; i++) {
        async_command_result_t r;
        run(argvs[i], &r);
        cr_expect_eq(r.exit_code, 2, "case %zu: exit %d, stderr: %s", i, r.exit_code, r.err);
        cr_expect(strstr(r.err, "are one file"), "case %zu: %s", i, r.err);
        cr_expect_eq(r.out_len, 0, "case %zu ran: %s", i, r.out);
        async_command_result_clear(&r);
    }
    /* Two names in one folder are fine, and soln.json keeps its four keys. */
    const char *ok[] = {LAB, "primes", "--mode", "serial", "--soln", soln, "--report", dflt, NULL};
    async_command_result_t r;
    run(ok, &r);
    cr_expect_eq(r.exit_code, 0, "exit %d: %s", r.exit_code, r.err);
    async_command_result_clear(&r);
    json_error_t e;
    json_t *j = json_load_file(soln, 0, &e);
    cr_assert_not_null(j, "%s: %s", soln, e.text);
    cr_expect_eq(json_object_size(j), 4);
    cr_expect_not_null(json_object_get(j, "prob1"));
    json_decref(j);
    unlink(soln);
    unlink(dflt);
    rmdir(dir);
}

/* A --plot folder that cannot be written was found at the first chart,
 * after the workload had run (minutes, for `all`), with exit 1. */
Test(demos_inputs, lab_plot_dir_is_checked_before_the_run)
{
    char file[64];
    temp_file(file, "not a folder\n", 13);
    const char *dirs[] = {"", "/nonexistent-round12/charts", file};
    const char *want[] = {"the folder name is empty", "No such file or directory", "Not a directory"};
    for (size_t i = 0; i < 3; i++) {
        const char *argv[] = {LAB, "chunks", "--mode", "serial", "--scale", "0.01", "--plot", dirs[i], NULL};
        async_command_result_t r;
        run(argv, &r);
        cr_expect_eq(r.exit_code, 2, "[%s]: exit %d, stderr: %s", dirs[i], r.exit_code, r.err);
        cr_expect(strstr(r.err, "cannot write charts there") && strstr(r.err, want[i]), "[%s]: %s", dirs[i], r.err);
        cr_expect_eq(r.out_len, 0, "[%s] ran: %s", dirs[i], r.out);
        async_command_result_clear(&r);
    }
    unlink(file);
}

/* The lab's CSV numbers as Python's float() reads them: a field past 63
 * bytes (a long decimal expansion) was "not a number", and a value below
 * DBL_MIN (glibc's strtod sets ERANGE for it) was "out of range", where
 * float() gives the subnormal or 0.0.  The normalised rows are compared with
 * numpy's on the same file (Debian's python3 with python3-numpy). */
Test(demos_inputs, lab_csv_reads_long_and_subnormal_numbers_as_python)
{
    char dir[] = "/tmp/test-demos-inputs-csv-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char in[128], out[128], cmd[1024];
    snprintf(in, sizeof in, "%s/rows.csv", dir);
    snprintf(out, sizeof out, "%s/norm.csv", dir);
    char row1[256];
    snprintf(row1, sizeof row1, "0,0.%s,1,3\n", "1111111111222222222233333333334444444444555555555566666666667777777777");
    FILE *f = fopen(in, "w");
    cr_assert_not_null(f);
    fputs(row1, f);
    fputs("1,4.9e-324,2,1e-400\n", f);
    fputs("2.2e-308,1e-310,5,-0.000000000000000000000000000000000000000000000000000000000000000000001\n", f);
    fclose(f);
    const char *argv[] = {LAB, "normalize", "--mode", "serial", "--input", in, "--output", out, NULL};
    async_command_result_t r;
    run(argv, &r);
    cr_expect_eq(r.exit_code, 0, "exit %d: %s", r.exit_code, r.err);
    async_command_result_clear(&r);
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c 'import numpy as np, csv, sys\n"
             "rows = [[float(x) for x in row] for row in csv.reader(open(sys.argv[1]))]\n"
             "got = [[float(x) for x in row] for row in csv.reader(open(sys.argv[2]))]\n"
             "want = []\n"
             "for row in rows:\n"
             "    a = np.array(row)\n"
             "    want.append(((a - a.min()) / (a.max() - a.min())).tolist())\n"
             "sys.exit(0 if got == want else print(got, want) or 1)' '%s' '%s' 2>&1",
             in, out);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    char said[2048] = "";
    size_t n = fread(said, 1, sizeof said - 1, p);
    said[n] = '\0';
    int st = pclose(p);
    cr_expect_eq(st, 0, "the lab's rows differ from numpy's (got, want): %s", said);
    /* howmany's integers: twenty digits are out of range, not "not an integer". */
    FILE *g = fopen(in, "w");
    cr_assert_not_null(g);
    fputs("1,99999999999999999999\n", g);
    fclose(g);
    const char *hm[] = {LAB, "howmany", "--mode", "serial", "--input", in, NULL};
    run(hm, &r);
    cr_expect_eq(r.exit_code, 1, "exit %d", r.exit_code);
    cr_expect(strstr(r.err, "line 1, column 2: \"99999999999999999999\" is out of range"), "%s", r.err);
    async_command_result_clear(&r);
    unlink(in);
    unlink(out);
    rmdir(dir);
}

/* The lab's CSV numbers in float()'s own syntax, python3 deciding each:
 * strtod also took hexadecimal (0x10 read as 16, 0x1p3 as 8, where float()
 * refuses them), and refused PEP 515's underscores (1_000, 1e1_0), which
 * float() reads.  inf and nan, which float() reads, stay out of range (a
 * row of them normalises to NaN).  `common` prints what it read as
 * Python's str() does. */
Test(demos_inputs, lab_csv_numbers_follow_python_float_syntax)
{
    static const char *const fields[] = {"0x10", "0X1p3", "-0x1.8p1", "1_000", "1_0.2_5", "1e1_0", "+.5e-3_0",
                                         "1__0", "_1", "1_", "1._5", "1_.5", "1e_5", "1e", ".", "+1", ".5",
                                         "5.", "1E5", "0_0", "inf", "-Infinity", "nan", "1e400", NULL};
    char dir[] = "/tmp/test-demos-inputs-syntax-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char in[128], out[128], cmd[4096];
    snprintf(in, sizeof in, "%s/rows.csv", dir);
    snprintf(out, sizeof out, "%s/common.csv", dir);
    /* python3's verdict per field: ERR, SPECIAL (inf or nan) or str() of
     * the value as common prints it. */
    size_t n = snprintf(cmd, sizeof cmd,
                        "/usr/bin/python3 -c 'import sys, math\n"
                        "for f in sys.argv[1:]:\n"
                        "    try: v = float(f)\n"
                        "    except ValueError: print(\"ERR\"); continue\n"
                        "    if not math.isfinite(v): print(\"SPECIAL\")\n"
                        "    elif v == int(v) and abs(v) <= 2**53: print(int(v))\n"
                        "    else: print(repr(v))' ");
    for (int i = 0; fields[i]; i++) n += snprintf(cmd + n, sizeof cmd - n, " '%s'", fields[i]);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    for (int i = 0; fields[i]; i++) {
        char want[64];
        cr_assert_not_null(fgets(want, sizeof want, p), "python3 said nothing for %s", fields[i]);
        want[strcspn(want, "\n")] = '\0';
        FILE *f = fopen(in, "w");
        cr_assert_not_null(f);
        fprintf(f, "a,%s\nb,%s\n", fields[i], fields[i]);
        fclose(f);
        unlink(out);
        const char *argv[] = {LAB, "common", "--mode", "serial", "--input", in, "--output", out, NULL};
        async_command_result_t r;
        run(argv, &r);
        if (!strcmp(want, "ERR")) {
            cr_expect_eq(r.exit_code, 1, "%s: float() refuses it, the lab took it (exit %d)", fields[i], r.exit_code);
            cr_expect(strstr(r.err, "is not a number"), "%s: %s", fields[i], r.err);
        } else if (!strcmp(want, "SPECIAL")) {
            cr_expect_eq(r.exit_code, 1, "%s: exit %d", fields[i], r.exit_code);
            cr_expect(strstr(r.err, "is out of range"), "%s: %s", fields[i], r.err);
        } else {
            cr_expect_eq(r.exit_code, 0, "%s: float() reads it as %s, the lab refused: %s", fields[i], want, r.err);
            char got[64] = "";
            FILE *g = fopen(out, "r");
            if (g) {
                if (!fgets(got, sizeof got, g)) got[0] = '\0';
                fclose(g);
            }
            got[strcspn(got, "\n")] = '\0';
            cr_expect_str_eq(got, want, "%s read as %s, float() reads %s", fields[i], got, want);
        }
        async_command_result_clear(&r);
    }
    cr_expect_eq(pclose(p), 0);
    unlink(in);
    unlink(out);
    rmdir(dir);
}

/* A results file that is one of the run's inputs or other outputs, by any
 * spelling: refused before the run (exit 2), the file as it was.  lab
 * --output over --input replaced the user's rows with the results, --output
 * over --soln had the answers replace the results, and brewery --json over
 * --server-data replaced the CSV with async.json, each with exit 0. */
Test(demos_inputs, outputs_over_inputs_are_refused_first)
{
    char dir[] = "/tmp/test-demos-inputs-same-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char rows[128], rows2[160], out[128], data[128], data2[160];
    snprintf(rows, sizeof rows, "%s/rows.csv", dir);
    snprintf(rows2, sizeof rows2, "%s/./rows.csv", dir);
    snprintf(out, sizeof out, "%s/out.csv", dir);
    snprintf(data, sizeof data, "%s/data.csv", dir);
    snprintf(data2, sizeof data2, "%s/../%s/data.csv", dir, strrchr(dir, '/') + 1);
    static const char rows_text[] = "1,2,3\n4,5,6\n";
    char data_text[256];
    snprintf(data_text, sizeof data_text, "%sb1,One,micro,,,,Town,Ohio,1,United States,,,,\n", srv_csv_header);
    const struct {
        const char *const argv[12];
        const char *file, *text, *want;
    } cases[] = {
        {{LAB, "normalize", "--mode", "serial", "--input", rows, "--output", rows2, NULL}, rows, rows_text,
         "are one file (the results would replace the rows)"},
        {{LAB, "howmany", "--mode", "serial", "--input", rows, "--output", rows, NULL}, rows, rows_text,
         "are one file (the results would replace the rows)"},
        {{LAB, "normalize", "--mode", "serial", "--input", rows, "--output", out, "--soln", out, NULL}, rows,
         rows_text, "--output " /* and --soln */},
        {{DEMO, "--mode", "meta", "--latency", "0", "--server-data", data, "--json", data2, NULL}, data, data_text,
         "are one file (the results would replace the data)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        FILE *f = fopen(rows, "w");
        cr_assert_not_null(f);
        fputs(rows_text, f);
        fclose(f);
        f = fopen(data, "w");
        cr_assert_not_null(f);
        fputs(data_text, f);
        fclose(f);
        async_command_result_t r;
        run(cases[i].argv, &r);
        cr_expect_eq(r.exit_code, 2, "case %zu: exit %d, stderr: %s", i, r.exit_code, r.err);
        cr_expect(strstr(r.err, cases[i].want), "case %zu: no \"%s\" in: %s", i, cases[i].want, r.err);
        FILE *g = fopen(cases[i].file, "r");
        char got[256] = "";
        size_t n = g ? fread(got, 1, sizeof got - 1, g) : 0;
        got[n] = '\0';
        if (g) fclose(g);
        cr_expect_str_eq(got, cases[i].text, "case %zu: %s was replaced", i, cases[i].file);
        async_command_result_clear(&r);
    }
    unlink(rows);
    unlink(out);
    unlink(data);
    rmdir(dir);
}

/* --- wordcount --input ---------------------------------------------------- */

/* The text the FIFO carries, and its words counted here: "w<k % 7>" for k
 * in 0..n, so word w<i> occurs once for each k with k % 7 == i. */
enum { FIFO_WORDS = 20000 };

static char *fifo_text(size_t *len)
{
    char *t = malloc(FIFO_WORDS * 4 + 1);
    cr_assert_not_null(t);
    size_t n = 0;
    for (int k = 0; k < FIFO_WORDS; k++) n += (size_t)sprintf(t + n, "w%d%c", k % 7, k % 10 == 9 ? '\n' : ' ');
    *len = n;
    return t;
}

struct writer {
    const char *path;
    const char *text;
    size_t len;
};

static void *write_fifo(void *arg)
{
    struct writer *w = arg;
    int fd = open(w->path, O_WRONLY); /* blocks until wordcount opens it */
    if (fd < 0) return NULL;
    for (size_t off = 0; off < w->len;) {
        ssize_t k = write(fd, w->text + off, w->len - off);
        if (k <= 0) break;
        off += (size_t)k;
    }
    close(fd);
    return NULL;
}

/* The count of `word` on wordcount's "most frequent:" line, or -1. */
static long frequent(const char *out, const char *word)
{
    const char *line = strstr(out, "most frequent:");
    char key[32];
    snprintf(key, sizeof key, " %s=", word);
    const char *p = line ? strstr(line, key) : NULL;
    return p ? strtol(p + strlen(key), NULL, 10) : -1;
}

Test(demos_inputs, wordcount_reads_a_fifo_to_its_end)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/test-demos-inputs-fifo-%d", (int)getpid());
    unlink(path);
    cr_assert_eq(mkfifo(path, 0600), 0, "%s", strerror(errno));
    struct writer w = {path, NULL, 0};
    char *text = fifo_text(&w.len);
    w.text = text;
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, write_fifo, &w), 0);
    const char *argv[] = {WORDCOUNT, "--input", path, "--workers", "2", NULL};
    async_command_result_t r;
    run(argv, &r);
    pthread_join(th, NULL);
    unlink(path);
    cr_expect_eq(r.exit_code, 0, "exit %d: %s", r.exit_code, r.err);
    char head[128];
    snprintf(head, sizeof head, "%zu bytes, %d words, 7 distinct", w.len, FIFO_WORDS);
    cr_expect(strstr(r.out, head), "no \"%s\" in: %s", head, r.out);
    /* The five most frequent are listed; ties may put any of them there. */
    int listed = 0;
    for (int i = 0; i < 7; i++) {
        char word[8];
        snprintf(word, sizeof word, "w%d", i);
        long want = 0, got = frequent(r.out, word);
        for (int k = 0; k < FIFO_WORDS; k++) want += k % 7 == i;
        if (got < 0) continue;
        listed++;
        cr_expect_eq(got, want, "%s: %s", word, r.out);
    }
    cr_expect_eq(listed, 5, "%s", r.out);
    async_command_result_clear(&r);
    free(text);
}

/* /proc files say st_size 0 and have text (every mount line has words). */
Test(demos_inputs, wordcount_reads_a_proc_file)
{
    const char *argv[] = {WORDCOUNT, "--input", "/proc/self/mountinfo", "--workers", "2", NULL};
    async_command_result_t r;
    run(argv, &r);
    cr_expect_eq(r.exit_code, 0, "exit %d: %s", r.exit_code, r.err);
    long bytes = -1, words = -1;
    const char *p = strstr(r.out, "text: /proc/self/mountinfo, ");
    cr_assert_not_null(p, "%s", r.out);
    cr_assert_eq(sscanf(p, "text: /proc/self/mountinfo, %ld bytes, %ld words", &bytes, &words), 2, "%s", r.out);
    cr_expect_gt(bytes, 0, "read nothing of a /proc file: %s", r.out);
    cr_expect_gt(words, 0, "counted no words of a /proc file: %s", r.out);
    async_command_result_clear(&r);
}

Test(demos_inputs, wordcount_directory_and_empty_name_say_why)
{
    static const struct {
        const char *input, *want;
    } cases[] = {
        {"/tmp", "wordcount: /tmp: Is a directory"},
        {"", "wordcount: (empty file name): No such file or directory"},
        {"/nonexistent-round12", "wordcount: /nonexistent-round12: No such file or directory"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *argv[] = {WORDCOUNT, "--input", cases[i].input, NULL};
        async_command_result_t r;
        run(argv, &r);
        cr_expect_eq(r.exit_code, 1, "%s: exit %d", cases[i].input, r.exit_code);
        cr_expect(strstr(r.err, cases[i].want), "no \"%s\" in: %s", cases[i].want, r.err);
        async_command_result_clear(&r);
    }
}

Test(demos_inputs, wordcount_empty_file_prints_no_infinite_cost)
{
    char path[64];
    temp_file(path, "", 0);
    const char *argv[] = {WORDCOUNT, "--input", path, "--workers", "2", NULL};
    async_command_result_t r;
    run(argv, &r);
    unlink(path);
    cr_expect_eq(r.exit_code, 0, "exit %d: %s", r.exit_code, r.err);
    cr_expect(strstr(r.out, "0 bytes, 0 words, 0 distinct"), "%s", r.out);
    cr_expect(!strstr(r.out, "inf") && !strstr(r.out, "nan"), "%s", r.out);
    async_command_result_clear(&r);
}
