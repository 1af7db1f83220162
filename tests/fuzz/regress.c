/* Replays a fuzz target's saved inputs as an ordinary test: every file of
 * tests/fuzz/corpus/<target>/ and tests/fuzz/crashes/<target>/ is fed to the
 * harness in a process of its own, so that a crash, a sanitizer report,
 * a leak or a hang names the file that caused it and the replay goes on with
 * the next.  Reproducers of defects not fixed yet live in pending/, which is
 * not replayed.  Built with the compiler and sanitizers of the build in use,
 * so the corpus also runs without clang. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "fuzz.h"

/* Criterion's runner sometimes leaks 48 bytes of its own under --jobs 2. */
const char *__lsan_default_suppressions(void);
__attribute__((weak)) const char *__lsan_default_suppressions(void)
{
    return "leak:libcriterion.so\n";
}

/* Generous: one input takes milliseconds, but sanitizer builds on a loaded
 * machine are slow, and a hang must still end. */
#define INPUT_SECONDS 60

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    unsigned char *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            unsigned char *nb = realloc(buf, cap *= 2);
            if (!nb) free(buf);
            buf = nb;
        }
    }
    if (ferror(f)) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = n;
    return buf;
}

/* The child: a fresh copy of this program, started with FUZZ_REPLAY_FILE set,
 * runs the input from a constructor, before Criterion starts.  A fresh
 * program rather than a fork, because a fork of the test process inherits
 * Criterion's threads in name only and LeakSanitizer then warns about each. */
__attribute__((constructor)) static void replay_child(void)
{
    const char *path = getenv("FUZZ_REPLAY_FILE");
    if (!path) return;
    alarm(INPUT_SECONDS);
    size_t len = 0;
    unsigned char *data = slurp(path, &len);
    if (!data) {
        fprintf(stderr, "cannot read %s\n", path);
        _exit(3);
    }
    LLVMFuzzerTestOneInput(data, len);
    free(data);
    /* exit, not _exit: LeakSanitizer checks at exit. */
    exit(0);
}

/* Runs one input in a child.  Returns 0, or the child's wait status. */
static int run_one(const char *path)
{
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        setenv("FUZZ_REPLAY_FILE", path, 1);
        execl("/proc/self/exe", "fuzz-replay", (char *)NULL);
        fprintf(stderr, "exec /proc/self/exe: %s\n", strerror(errno));
        _exit(4);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        cr_assert_eq(errno, EINTR, "waitpid: %s", strerror(errno));
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : (st ? st : -1);
}

static int only_files(const struct dirent *d)
{
    return d->d_name[0] != '.';
}

/* Replays every file of dir; returns how many there were.  A missing folder
 * counts as empty (crashes/<target>/ exists only once something was found). */
static size_t replay_dir(const char *dir, size_t *failed)
{
    struct dirent **names;
    int n = scandir(dir, &names, only_files, alphasort);
    if (n < 0) {
        cr_assert_eq(errno, ENOENT, "%s: %s", dir, strerror(errno));
        return 0;
    }
    size_t files = 0;
    for (int i = 0; i < n; i++) {
        char path[4096];
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name);
        if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode)) {
            files++;
            int st = run_one(path);
            if (st) {
                (*failed)++;
                if (WIFSIGNALED(st))
                    cr_expect(0, "%s: killed by signal %d%s", path, WTERMSIG(st),
                                   WTERMSIG(st) == SIGALRM ? " (over the per-input time limit)" : "");
                else
                    cr_expect(0, "%s: exit status %d", path, WEXITSTATUS(st));
            }
        }
        free(names[i]);
    }
    free(names);
    return files;
}

Test(fuzz, replay_corpus_and_crashes, .timeout = 600)
{
    char dir[4096];
    size_t failed = 0;
    snprintf(dir, sizeof dir, "%s/tests/fuzz/corpus/%s", ASYNC_SRC_DIR, fuzz_target_name);
    size_t corpus = replay_dir(dir, &failed);
    /* An empty corpus would make this test pass without testing anything. */
    cr_assert_gt(corpus, 0, "%s is empty", dir);
    snprintf(dir, sizeof dir, "%s/tests/fuzz/crashes/%s", ASYNC_SRC_DIR, fuzz_target_name);
    size_t crashes = replay_dir(dir, &failed);
    fprintf(stderr, "fuzz %s: %zu corpus and %zu crash inputs replayed, %zu failed\n",
            fuzz_target_name, corpus, crashes, failed);
    cr_assert_eq(failed, 0);
}
