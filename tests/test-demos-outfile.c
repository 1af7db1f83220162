/* The demos' output files (the lab's soln.json, its report and --output CSV;
 * brewery's async.json) are written whole or not at all.  Each was opened
 * with fopen(path, "w") and written in place, so a run that hit the file
 * size limit (`ulimit -f`: SIGXFSZ mid-write, the process killed), a full
 * disk or a signal mid-write left the old answers truncated and the new ones
 * half there.  Now each goes to a temporary file beside it, renamed over the
 * old one once complete; a failed write leaves the old file as it was and no
 * temporary behind, with exit status 1 naming the reason.  The other tests
 * guard what the rename must not change: a device or a FIFO is written in
 * place, a symbolic link keeps pointing at its file, an existing file keeps
 * its mode, a new one gets the umask's. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "support/slurp.h"

#define LAB ASYNC_OUT_DIR "/demos/lab/lab"
#define BREWERY ASYNC_OUT_DIR "/demos/brewery/brewery"
#define OLD "OLD answers\n"

TestSuite(demos_outfile, .timeout = 90);

typedef struct ran {
    int status;      /* waitpid's */
    char out[65536]; /* stdout, cut */
    char err[8192];  /* stderr, cut */
} ran_t;

static void drain(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    for (ssize_t k; (k = read(fd, buf + n, cap - 1 - n)) != 0;) {
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) break;
        n += (size_t)k;
        if (n == cap - 1) {
            char sink[4096];
            while ((k = read(fd, sink, sizeof sink)) > 0 || (k < 0 && errno == EINTR)) {}
            break;
        }
    }
    buf[n] = '\0';
}

/* Runs argv with RLIMIT_FSIZE at fsize bytes (0: unlimited) and SIGXFSZ at
 * its default, as a shell's `ulimit -f` leaves it, under umask 022.  stdout
 * goes to a pipe read after stderr's (both small here). */
static void run(const char *const *argv, rlim_t fsize, ran_t *r)
{
    int out[2], err[2];
    cr_assert_eq(pipe(out), 0);
    cr_assert_eq(pipe(err), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        dup2(out[1], 1);
        dup2(err[1], 2);
        close(out[0]), close(out[1]), close(err[0]), close(err[1]);
        signal(SIGXFSZ, SIG_DFL);
        umask(022);
        if (fsize) setrlimit(RLIMIT_FSIZE, &(struct rlimit){fsize, fsize});
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(out[1]), close(err[1]);
    /* The outputs stay far below a pipe's 64 KiB, so one can wait while
     * the other is read. */
    drain(err[0], r->err, sizeof r->err);
    drain(out[0], r->out, sizeof r->out);
    close(out[0]), close(err[0]);
    cr_assert_eq(waitpid(pid, &r->status, 0), pid);
}

static void make_dir(char dir[64])
{
    snprintf(dir, 64, "/tmp/test-demos-outfile-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void put(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    fputs(text, f);
    cr_assert_eq(fclose(f), 0);
}


/* The names in dir, sorted and joined with spaces, into buf. */
static const char *listing(const char *dir, char *buf, size_t cap)
{
    struct dirent **e;
    int n = scandir(dir, &e, NULL, alphasort);
    cr_assert_geq(n, 0);
    buf[0] = '\0';
    for (int i = 0; i < n; i++) {
        if (strcmp(e[i]->d_name, ".") && strcmp(e[i]->d_name, "..")) {
            if (*buf) strncat(buf, " ", cap - strlen(buf) - 1);
            strncat(buf, e[i]->d_name, cap - strlen(buf) - 1);
        }
        free(e[i]);
    }
    free(e);
    return buf;
}

static void remove_dir(const char *dir)
{
    struct dirent **e;
    int n = scandir(dir, &e, NULL, NULL);
    for (int i = 0; i < n; i++) {
        char p[512];
        snprintf(p, sizeof p, "%s/%s", dir, e[i]->d_name);
        if (strcmp(e[i]->d_name, ".") && strcmp(e[i]->d_name, "..")) unlink(p);
        free(e[i]);
    }
    if (n >= 0) free(e);
    rmdir(dir);
}

/* A failed write: exit 1 (not killed by SIGXFSZ), the reason on stderr, the
 * old file's text as it was and nothing else new in dir. */
static void expect_untouched_because(const ran_t *r, const char *dir, const char *file, const char *want_listing,
                                     const char *reason)
{
    cr_expect(WIFEXITED(r->status) && WEXITSTATUS(r->status) == 1, "%s: wait status %#x (signal %d), stderr: %s",
              file, r->status, WIFSIGNALED(r->status) ? WTERMSIG(r->status) : 0, r->err);
    cr_expect(strstr(r->err, reason), "%s: the reason is not named: %s", file, r->err);
    char path[256], names[1024];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    char *text = test_slurp(path);
    cr_expect(text && strcmp(text, OLD) == 0, "%s was changed: now \"%.200s\"", file, text ? text : "(gone)");
    free(text);
    cr_expect_str_eq(listing(dir, names, sizeof names), want_listing, "%s: files left behind", file);
}

static void expect_untouched(const ran_t *r, const char *dir, const char *file, const char *want_listing)
{
    expect_untouched_because(r, dir, file, want_listing, "File too large");
}

Test(demos_outfile, lab_soln_past_the_file_size_limit_is_left_as_it_was)
{
    char dir[64], soln[128];
    make_dir(dir);
    snprintf(soln, sizeof soln, "%s/soln.json", dir);
    put(soln, OLD);
    ran_t *r = calloc(1, sizeof *r);
    /* soln.json for `common` alone is about 110 bytes. */
    run((const char *const[]){LAB, "common", "--mode", "serial", "--soln", soln, NULL}, 40, r);
    expect_untouched(r, dir, "soln.json", "soln.json");
    free(r);
    remove_dir(dir);
}

Test(demos_outfile, lab_report_past_the_file_size_limit_is_left_as_it_was)
{
    char dir[64], report[128];
    make_dir(dir);
    snprintf(report, sizeof report, "%s/report.json", dir);
    put(report, OLD);
    ran_t *r = calloc(1, sizeof *r);
    /* soln.json to a device, which no file size limit applies to. */
    run((const char *const[]){LAB, "common", "--mode", "serial", "--soln", "/dev/null", "--report", report, NULL},
        40, r);
    expect_untouched(r, dir, "report.json", "report.json");
    free(r);
    remove_dir(dir);
}

Test(demos_outfile, lab_output_csv_past_the_file_size_limit_is_left_as_it_was)
{
    char dir[64], in[128], out[128];
    make_dir(dir);
    snprintf(in, sizeof in, "%s/in.csv", dir);
    snprintf(out, sizeof out, "%s/out.csv", dir);
    FILE *f = fopen(in, "w");
    cr_assert_not_null(f);
    for (int i = 0; i < 500; i++) fprintf(f, "%d,%d,%d\n", i, i + 2, i + 1);
    cr_assert_eq(fclose(f), 0);
    put(out, OLD);
    ran_t *r = calloc(1, sizeof *r);
    /* 500 rows of "0,1,0.5\n": 4,000 bytes. */
    run((const char *const[]){LAB, "normalize", "--mode", "serial", "--input", in, "--output", out, NULL}, 1000,
        r);
    expect_untouched(r, dir, "out.csv", "in.csv out.csv");
    free(r);
    remove_dir(dir);
}

Test(demos_outfile, brewery_json_past_the_file_size_limit_is_left_as_it_was)
{
    char dir[64], json[128];
    make_dir(dir);
    snprintf(json, sizeof json, "%s/async.json", dir);
    put(json, OLD);
    ran_t *r = calloc(1, sizeof *r);
    /* The meta mode's async.json for the lab's four states: about 600 bytes. */
    run((const char *const[]){BREWERY, "--mode", "meta", "--latency", "0", "--json", json, NULL}, 200, r);
    expect_untouched(r, dir, "async.json", "async.json");
    free(r);
    remove_dir(dir);
}

/* A full disk: a tmpfs of two pages, mounted in this test's own mount
 * namespace (each test is a process of its own), holding the old file.
 * fopen "w" freed the old file's page, so the new one was cut at 8 KiB. */
Test(demos_outfile, lab_output_csv_on_a_full_disk_is_left_as_it_was)
{
    if (unshare(CLONE_NEWNS) != 0)
        cr_skip_test("cannot make a mount namespace to mount a small tmpfs in: %s", strerror(errno));
    cr_assert_eq(mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL), 0, "%s", strerror(errno));
    char dir[64], in[128], out[128];
    make_dir(dir);
    snprintf(in, sizeof in, "/tmp/test-demos-outfile-in-%d.csv", (int)getpid());
    FILE *f = fopen(in, "w");
    cr_assert_not_null(f);
    /* 3,000 rows of "0,1,0.5\n": 24,000 bytes. */
    for (int i = 0; i < 3000; i++) fprintf(f, "%d,%d,%d\n", i, i + 2, i + 1);
    cr_assert_eq(fclose(f), 0);
    cr_assert_eq(mount("tmpfs", dir, "tmpfs", 0, "size=8k"), 0, "%s", strerror(errno));
    snprintf(out, sizeof out, "%s/out.csv", dir);
    put(out, OLD);
    ran_t *r = calloc(1, sizeof *r);
    run((const char *const[]){LAB, "normalize", "--mode", "serial", "--input", in, "--output", out, NULL}, 0, r);
    unlink(in);
    expect_untouched_because(r, dir, "out.csv", "out.csv", "No space left on device");
    free(r);
    umount(dir);
    rmdir(dir);
}

/* True while a ".out.csv.*" temporary is in dir. */
static bool temporary_in(const char *dir)
{
    struct dirent **e;
    int n = scandir(dir, &e, NULL, NULL);
    bool found = false;
    for (int i = 0; i < n; i++) {
        if (!strncmp(e[i]->d_name, ".out.csv.", 9)) found = true;
        free(e[i]);
    }
    if (n >= 0) free(e);
    return found;
}

/* SIGTERM while --output is being written: the lab dies of it once the
 * file is whole, never leaving it half-written (fopen "w" had truncated the
 * old file, and the signal cut the new one wherever it came). */
Test(demos_outfile, lab_output_csv_is_whole_after_a_sigterm_mid_write)
{
    enum { ROWS = 20000, COLS = 100 };
    char dir[64], in[128], out[128];
    make_dir(dir);
    snprintf(in, sizeof in, "%s/in.csv", dir);
    snprintf(out, sizeof out, "%s/out.csv", dir);
    FILE *f = fopen(in, "w");
    cr_assert_not_null(f);
    for (int i = 0; i < ROWS; i++)
        for (int j = 0; j < COLS; j++) fprintf(f, "%d%c", (i * 7 + j * 13) % 1000, j + 1 < COLS ? ',' : '\n');
    cr_assert_eq(fclose(f), 0);
    put(out, OLD);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1), dup2(null, 2);
        signal(SIGTERM, SIG_DFL);
        execl(LAB, LAB, "normalize", "--mode", "serial", "--input", in, "--output", out, (char *)NULL);
        _exit(127);
    }
    /* The write has begun when the old file changes or a temporary shows;
     * 38 MB of text take far longer than a poll. */
    bool sent = false;
    int status = 0;
    for (int tries = 0; tries < 60000 && !sent; tries++) {
        struct stat st;
        if ((stat(out, &st) == 0 && st.st_size != (off_t)strlen(OLD)) || temporary_in(dir)) {
            cr_assert_gt(pid, 0);
            kill(pid, SIGTERM);
            sent = true;
            break;
        }
        if (waitpid(pid, &status, WNOHANG) == pid) break;
        usleep(500);
    }
    cr_assert(sent, "the lab ended (status %#x) before its output was seen being written", status);
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_expect(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM, "wait status %#x", status);
    /* Whole: every row there and the last one ended. */
    char *text = test_slurp(out);
    cr_assert_not_null(text);
    size_t lines = 0, len = strlen(text);
    for (const char *p = text; (p = strchr(p, '\n')); p++) lines++;
    cr_expect(lines == ROWS && len && text[len - 1] == '\n', "out.csv has %zu of %d rows (%zu bytes)", lines, ROWS,
              len);
    free(text);
    char names[1024];
    cr_expect_str_eq(listing(dir, names, sizeof names), "in.csv out.csv", "a temporary was left behind");
    remove_dir(dir);
}

/* Under a file size limit the demos go on as Python does (it ignores
 * SIGXFSZ at start-up): a write past it fails with EFBIG and says so.  The
 * lab's `files` workload died of SIGXFSZ with no word, leaving its folder
 * under $TMPDIR; brewery died of it as its process pool sized its shared
 * heap, before writing anything. */
Test(demos_outfile, lab_files_past_the_file_size_limit_says_why_and_leaves_no_folder)
{
    char dir[64], names[1024];
    make_dir(dir);
    cr_assert_eq(setenv("TMPDIR", dir, 1), 0);
    ran_t *r = calloc(1, sizeof *r);
    /* Each file is 2,640 bytes. */
    run((const char *const[]){LAB, "files", "--quick", "--mode", "serial", NULL}, 1000, r);
    cr_expect(WIFEXITED(r->status) && WEXITSTATUS(r->status) == 1, "wait status %#x (signal %d), stderr: %s",
              r->status, WIFSIGNALED(r->status) ? WTERMSIG(r->status) : 0, r->err);
    cr_expect(strstr(r->err, "file_0.txt: write failed: File too large"), "the reason is not named: %s", r->err);
    cr_expect_str_eq(listing(dir, names, sizeof names), "", "the files folder was left behind");
    free(r);
    remove_dir(dir);
}

Test(demos_outfile, brewery_past_the_file_size_limit_reports_every_mode)
{
    char dir[64], json[128];
    make_dir(dir);
    snprintf(json, sizeof json, "%s/async.json", dir);
    ran_t *r = calloc(1, sizeof *r);
    /* 1 MiB: async.json needs 2 KB, the process pool's heap far more. */
    run((const char *const[]){BREWERY, "--mode", "serial,processes", "--latency", "0", "--json", json, NULL},
        (rlim_t)1 << 20, r);
    cr_expect(WIFEXITED(r->status), "wait status %#x (signal %d), stderr: %s", r->status,
              WIFSIGNALED(r->status) ? WTERMSIG(r->status) : 0, r->err);
    char *text = test_slurp(json);
    cr_assert_not_null(text, "no async.json");
    /* Serial counted every state; processes counted or failed each. */
    const char *serial = strstr(text, "\"serial\": {"), *procs = strstr(text, "\"processes\": {");
    cr_assert(serial && procs, "%s", text);
    cr_expect(strstr(serial, "\"failed\": {}") && strstr(serial, "\"failed\": {}") < procs,
              "serial failed under the limit: %s", text);
    static const char *const states[] = {"district_of_columbia", "maryland", "new_york", "virginia"};
    for (int i = 0; i < 4; i++) {
        char key[64];
        snprintf(key, sizeof key, "\"%s\": ", states[i]);
        cr_expect(strstr(procs, key), "processes says nothing of %s: %s", states[i], text);
    }
    free(text);
    free(r);
    remove_dir(dir);
}

/* The same runs without a limit write their files whole, and the rename
 * keeps what fopen "w" kept: the mode of a file that was there (0640), the
 * umask's for a new one (0644 under 022). */
Test(demos_outfile, written_files_are_whole_with_the_modes_fopen_gave)
{
    char dir[64], soln[128], report[128], json[128];
    make_dir(dir);
    snprintf(soln, sizeof soln, "%s/soln.json", dir);
    snprintf(report, sizeof report, "%s/lab-report.json", dir);
    snprintf(json, sizeof json, "%s/async.json", dir);
    put(soln, OLD);
    cr_assert_eq(chmod(soln, 0640), 0);
    ran_t *r = calloc(1, sizeof *r);
    run((const char *const[]){LAB, "common", "--mode", "serial", "--soln", soln, NULL}, 0, r);
    cr_assert(WIFEXITED(r->status) && WEXITSTATUS(r->status) == 0, "lab: %#x %s", r->status, r->err);
    run((const char *const[]){BREWERY, "--mode", "meta", "--latency", "0", "--json", json, NULL}, 0, r);
    cr_assert(WIFEXITED(r->status) && WEXITSTATUS(r->status) == 0, "brewery: %#x %s", r->status, r->err);
    char *text = test_slurp(soln);
    cr_assert_not_null(text);
    cr_expect(strncmp(text, "{\n  \"prob1\": \"[[2, 3], [6], [11, 12], [21]]\",\n", 46) == 0, "%s", text);
    cr_expect(text[0] && text[strlen(text) - 1] == '}', "soln.json is not whole: %s", text);
    free(text);
    text = test_slurp(json);
    cr_assert_not_null(text);
    cr_expect(strstr(text, "\"meta\"") && text[strlen(text) - 1] == '}', "async.json is not whole: %s", text);
    free(text);
    struct stat st;
    cr_assert_eq(stat(soln, &st), 0);
    cr_expect_eq(st.st_mode & 07777, 0640, "soln.json's mode %o", st.st_mode & 07777);
    cr_assert_eq(stat(report, &st), 0);
    cr_expect_eq(st.st_mode & 07777, 0644, "lab-report.json's mode %o", st.st_mode & 07777);
    cr_assert_eq(stat(json, &st), 0);
    cr_expect_eq(st.st_mode & 07777, 0644, "async.json's mode %o", st.st_mode & 07777);
    char names[1024];
    cr_expect_str_eq(listing(dir, names, sizeof names), "async.json lab-report.json soln.json");
    free(r);
    remove_dir(dir);
}

/* A device is written in place (a rename would replace /dev/stdout's link,
 * as root), and a symbolic link's file is replaced, the link kept. */
Test(demos_outfile, devices_are_written_in_place_and_links_kept)
{
    char dir[64], target[128], link[128], report[128];
    make_dir(dir);
    snprintf(target, sizeof target, "%s/real.json", dir);
    snprintf(link, sizeof link, "%s/link.json", dir);
    snprintf(report, sizeof report, "%s/report.json", dir);
    put(target, OLD);
    cr_assert_eq(symlink("real.json", link), 0);
    ran_t *r = calloc(1, sizeof *r);
    run((const char *const[]){BREWERY, "--mode", "meta", "--latency", "0", "--json", "/dev/stdout", NULL}, 0, r);
    cr_assert(WIFEXITED(r->status) && WEXITSTATUS(r->status) == 0, "%#x %s", r->status, r->err);
    cr_expect(strstr(r->out, "{\n  \"result\": "), "no JSON on stdout: %s", r->out);
    struct stat st;
    cr_expect(lstat("/dev/stdout", &st) == 0 && S_ISLNK(st.st_mode), "/dev/stdout is no longer a link");
    run((const char *const[]){LAB, "common", "--mode", "serial", "--soln", link, "--report", report, NULL}, 0, r);
    cr_assert(WIFEXITED(r->status) && WEXITSTATUS(r->status) == 0, "%#x %s", r->status, r->err);
    cr_expect(lstat(link, &st) == 0 && S_ISLNK(st.st_mode), "link.json is no longer a link");
    char *text = test_slurp(target);
    cr_expect(text && strstr(text, "\"prob1\""), "real.json: %s", text ? text : "(gone)");
    free(text);
    char names[1024];
    cr_expect_str_eq(listing(dir, names, sizeof names), "link.json real.json report.json");
    free(r);
    remove_dir(dir);
}
