/* The brewery-server's CSV loader and command line: a ragged row, a broken
 * quote or a duplicate id stops it with the line named; a quoted field over
 * several lines is fine and lines still count; bad arguments and a missing
 * file are refused. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support/brewery.h"
#include "support/run.h"

TestSuite(brewery_server, .init = srv_suite_init, .fini = srv_suite_fini);

/* Writes `text` to a temporary CSV and runs the server on it; returns the
 * exit status and what it wrote to stderr. */
static int run_on_csv(const char *text, char *err, size_t cap)
{
    char path[] = "/tmp/brewery-csv-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);

    srv_t s;
    bool started;
    int out[2], ep[2];
    cr_assert_eq(pipe2(out, O_CLOEXEC), 0);
    cr_assert_eq(pipe2(ep, O_CLOEXEC), 0);
    s.pid = fork();
    if (s.pid == 0) {
        srv_child_setup();
        dup2(out[1], 1);
        dup2(ep[1], 2);
        execl(SERVER, SERVER, "--port", "0", "--quiet", "--data", path, (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    close(ep[1]);
    size_t n = 0;
    ssize_t k;
    struct pollfd pfd = { ep[0], POLLIN, 0 };
    while (n < cap - 1 && poll(&pfd, 1, 20000) == 1 && (k = read(ep[0], err + n, cap - 1 - n)) > 0)
        n += (size_t)k;
    err[n] = '\0';
    char line[128];
    k = read(out[0], line, sizeof line - 1);
    started = k > 0;
    if (started)
        kill(s.pid, SIGTERM);
    close(out[0]);
    close(ep[0]);
    int status = 0;
    waitpid(s.pid, &status, 0);
    unlink(path);
    cr_expect(!started, "the server started on a bad CSV");
    return status;
}

Test(brewery_server, ragged_csv_names_the_line, .timeout = 30)
{
    char text[2048], err[1024];
    snprintf(text, sizeof text,
             "%s"
             "a1,One,micro,,,,Town,Ohio,1,United States,,,,\n"
             "a2,Two,micro,,,,Town,Ohio,1,United States,,\n"
             "a3,Three,micro,,,,Town,Ohio,1,United States,,,,\n",
             srv_csv_header);
    int status = run_on_csv(text, err, sizeof err);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) != 0, "status %#x", status);
    cr_expect_not_null(strstr(err, "line 3"), "stderr: %s", err);
}

Test(brewery_server, multiline_quoted_field_is_fine_and_lines_still_count, .timeout = 30)
{
    char text[2048], err[1024];
    /* Row 2 has a name over two lines; the ragged row starts on line 4. */
    snprintf(text, sizeof text,
             "%s"
             "a1,\"Two\nLines\",micro,,,,Town,Ohio,1,United States,,,,\n"
             "a2,Two,micro,,,,Town,Ohio,1,United States,,,,\n"
             "a3,Three,micro,,,,Town,Ohio\n",
             srv_csv_header);
    int status = run_on_csv(text, err, sizeof err);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) != 0);
    cr_expect_not_null(strstr(err, "line 5"), "stderr: %s", err);
}

Test(brewery_server, broken_quote_and_duplicate_id, .timeout = 30)
{
    char text[2048], err[1024];
    snprintf(text, sizeof text, "%sa1,One,micro,,,,Town,Ohio,1,United States,,,,\n"
                                "a2,\"Two\"x,micro,,,,Town,Ohio,1,United States,,,,\n", srv_csv_header);
    int status = run_on_csv(text, err, sizeof err);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 1, "status %#x", status);
    cr_expect_not_null(strstr(err, "line 3"), "stderr: %s", err);
    snprintf(text, sizeof text, "%sa1,One,micro,,,,Town,Ohio,1,United States,,,,\n"
                                "a1,Two,micro,,,,Town,Ohio,1,United States,,,,\n", srv_csv_header);
    status = run_on_csv(text, err, sizeof err);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 1, "status %#x", status);
    cr_expect_not_null(strstr(err, "duplicate"), "stderr: %s", err);
}

Test(brewery_server, small_csv_serves_multiline_names, .timeout = 30)
{
    char path[] = "/tmp/brewery-csv-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    dprintf(fd, "%sa1,\"Two\nLines\",micro,,,,Town,Ohio,1,United States,,,,\n"
                "a2,Plain,brewpub,1 Road,,,City,Ohio,2,United States,555,http://x,1.5,2.5",
            srv_csv_header);
    close(fd);
    srv_t s;
    srv_start(&s, "--latency", "0", "--data", path, NULL);
    json_t *a = srv_get_json(&s, "/v1/breweries?by_state=ohio");
    cr_expect_eq(json_array_size(a), 2);
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(a, 0), "name")),
                     "Two\nLines");
    json_t *b = json_array_get(a, 1);
    cr_expect(json_is_null(json_object_get(b, "address_2")));
    cr_expect_str_eq(json_string_value(json_object_get(b, "street")), "1 Road");
    cr_expect_str_eq(json_string_value(json_object_get(b, "longitude")), "1.5");
    json_decref(a);
    srv_stop(&s);
    unlink(path);
}

Test(brewery_server, bad_arguments_and_missing_file, .timeout = 30)
{
    int status;
    /* A missing file: exit 1 with the file's name. */
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 1);
        dup2(devnull, 2);
        execl(SERVER, SERVER, "--port", "0", "--data", "/nonexistent/x.csv", (char *)NULL);
        _exit(127);
    }
    waitpid(pid, &status, 0);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 1, "status %#x", status);
    static const char *const bad[][2] = {
        { "--latency", "-1" }, { "--fail-rate", "1.5" }, { "--port", "70000" },
        { "--rate-window", "0" }, { "--bogus", "1" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        pid = fork();
        if (pid == 0) {
            int devnull = open("/dev/null", O_WRONLY);
            dup2(devnull, 1);
            dup2(devnull, 2);
            execl(SERVER, SERVER, bad[i][0], bad[i][1], (char *)NULL);
            _exit(127);
        }
        waitpid(pid, &status, 0);
        cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 2, "%s %s: status %#x", bad[i][0],
                  bad[i][1], status);
    }
}
