/* A small stand-in for Criterion, used only by `make test SANITIZE=thread`.
 *
 * Criterion cannot start under ThreadSanitizer (its inheritable arena fails
 * to map: Criterion issue #274), so thread-sanitized test binaries are built
 * against this header instead.  It implements the subset of Criterion the
 * tests use, with the same meaning: Test() and TestSuite() with .timeout,
 * .init, .fini, .exit_code, .signal and .disabled; the cr_assert_* (fatal) and
 * cr_expect_* (non-fatal) checks; cr_skip_test.  Each test runs in its own
 * forked process under an alarm, and the run prints what Criterion prints
 * under --verbose for what scripts/run-tests reads: "[SKIP] suite::test:
 * reason" for a skipped or disabled test, and the "Synthesis:" line, whose
 * Failing count includes the crashed tests and which leaves skips out.  A
 * skip (the child's exit 77 after cr_skip_test) is never counted as a pass. */
#ifndef TEST_SHIM_CRITERION_H
#define TEST_SHIM_CRITERION_H

#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

struct shim_opts {
    double timeout;
    void (*init)(void);
    void (*fini)(void);
    int exit_code;
    int signal;
    bool disabled;
    const char *description;
};

struct shim_test {
    const char *suite, *name;
    void (*fn)(void);
    struct shim_opts opts;
    struct shim_test *next;
};

struct shim_suite {
    const char *name;
    struct shim_opts opts;
    struct shim_suite *next;
};

__attribute__((weak)) struct shim_test *shim_tests;
__attribute__((weak)) struct shim_suite *shim_suites;
__attribute__((weak)) int shim_expect_failed;
/* The test the forked child runs, for the skip line it prints. */
__attribute__((weak)) const struct shim_test *shim_current;
__attribute__((weak)) int shim_in_teardown;

/* The current test's .fini, then its suite's, once: after the body, or
 * after a failed fatal check, as Criterion runs them (a check failing in a
 * .fini ends the child at once). */
__attribute__((weak)) void shim_teardown(void)
{
    if (shim_in_teardown || !shim_current) return;
    shim_in_teardown = 1;
    if (shim_current->opts.fini) shim_current->opts.fini();
    for (const struct shim_suite *s = shim_suites; s; s = s->next)
        if (!strcmp(s->name, shim_current->suite)) {
            if (s->opts.fini) s->opts.fini();
            break;
        }
}

#define SHIM_CAT_(a, b) a##b
#define SHIM_CAT(a, b) SHIM_CAT_(a, b)

#define Test(suite_, name_, ...)                                                      \
    static void SHIM_CAT(shim_fn_, SHIM_CAT(suite_, SHIM_CAT(_, name_)))(void);       \
    __attribute__((constructor)) static void SHIM_CAT(shim_reg_, SHIM_CAT(suite_, SHIM_CAT(_, name_)))(void) \
    {                                                                                 \
        static struct shim_test t = {#suite_, #name_,                                 \
                                     SHIM_CAT(shim_fn_, SHIM_CAT(suite_, SHIM_CAT(_, name_))), \
                                     {.description = NULL, __VA_ARGS__}, NULL};                          \
        t.next = shim_tests;                                                          \
        shim_tests = &t;                                                              \
    }                                                                                 \
    static void SHIM_CAT(shim_fn_, SHIM_CAT(suite_, SHIM_CAT(_, name_)))(void)

#define TestSuite(suite_, ...)                                                        \
    __attribute__((constructor)) static void SHIM_CAT(shim_suite_, suite_)(void)      \
    {                                                                                 \
        static struct shim_suite s = {#suite_, {.description = NULL, __VA_ARGS__}, NULL};               \
        s.next = shim_suites;                                                         \
        shim_suites = &s;                                                             \
    }

__attribute__((weak)) void shim_fail(bool fatal, const char *file, int line,
                                                            const char *expr, const char *fmt, ...)
{
    fprintf(stderr, "[----] %s:%d: %s\n", file, line, fatal ? "Assertion Failed" : "Expectation Failed");
    if (fmt && *fmt) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "[----]   ");
        vfprintf(stderr, fmt, ap);
        fprintf(stderr, "\n");
        va_end(ap);
    } else {
        fprintf(stderr, "[----]   The expression %s is false.\n", expr);
    }
    if (fatal) {
        shim_teardown();
        fflush(NULL);
        _exit(1);
    }
    shim_expect_failed = 1;
}

#define SHIM_CHECK(fatal, cond, expr, ...) \
    do { if (!(cond)) shim_fail(fatal, __FILE__, __LINE__, expr, "" __VA_ARGS__); } while (0)

#define cr_assert(c, ...) SHIM_CHECK(1, (c), #c, __VA_ARGS__)
#define cr_assert_not(c, ...) SHIM_CHECK(1, !(c), "!(" #c ")", __VA_ARGS__)
#define cr_assert_null(p, ...) SHIM_CHECK(1, (p) == NULL, #p " == NULL", __VA_ARGS__)
#define cr_assert_not_null(p, ...) SHIM_CHECK(1, (p) != NULL, #p " != NULL", __VA_ARGS__)
#define cr_assert_eq(a, b, ...) SHIM_CHECK(1, (a) == (b), #a " == " #b, __VA_ARGS__)
#define cr_assert_neq(a, b, ...) SHIM_CHECK(1, (a) != (b), #a " != " #b, __VA_ARGS__)
#define cr_assert_lt(a, b, ...) SHIM_CHECK(1, (a) < (b), #a " < " #b, __VA_ARGS__)
#define cr_assert_leq(a, b, ...) SHIM_CHECK(1, (a) <= (b), #a " <= " #b, __VA_ARGS__)
#define cr_assert_gt(a, b, ...) SHIM_CHECK(1, (a) > (b), #a " > " #b, __VA_ARGS__)
#define cr_assert_geq(a, b, ...) SHIM_CHECK(1, (a) >= (b), #a " >= " #b, __VA_ARGS__)
#define cr_assert_str_eq(a, b, ...) SHIM_CHECK(1, strcmp((a), (b)) == 0, #a " equals " #b, __VA_ARGS__)
#define cr_expect(c, ...) SHIM_CHECK(0, (c), #c, __VA_ARGS__)
#define cr_expect_not(c, ...) SHIM_CHECK(0, !(c), "!(" #c ")", __VA_ARGS__)
#define cr_expect_null(p, ...) SHIM_CHECK(0, (p) == NULL, #p " == NULL", __VA_ARGS__)
#define cr_expect_not_null(p, ...) SHIM_CHECK(0, (p) != NULL, #p " != NULL", __VA_ARGS__)
#define cr_expect_eq(a, b, ...) SHIM_CHECK(0, (a) == (b), #a " == " #b, __VA_ARGS__)
#define cr_expect_neq(a, b, ...) SHIM_CHECK(0, (a) != (b), #a " != " #b, __VA_ARGS__)
#define cr_expect_lt(a, b, ...) SHIM_CHECK(0, (a) < (b), #a " < " #b, __VA_ARGS__)
#define cr_expect_leq(a, b, ...) SHIM_CHECK(0, (a) <= (b), #a " <= " #b, __VA_ARGS__)
#define cr_expect_gt(a, b, ...) SHIM_CHECK(0, (a) > (b), #a " > " #b, __VA_ARGS__)
#define cr_expect_geq(a, b, ...) SHIM_CHECK(0, (a) >= (b), #a " >= " #b, __VA_ARGS__)
#define cr_expect_str_eq(a, b, ...) SHIM_CHECK(0, strcmp((a), (b)) == 0, #a " equals " #b, __VA_ARGS__)
#define cr_expect_str_neq(a, b, ...) SHIM_CHECK(0, strcmp((a), (b)) != 0, #a " differs from " #b, __VA_ARGS__)
#define cr_assert_str_neq(a, b, ...) SHIM_CHECK(1, strcmp((a), (b)) != 0, #a " differs from " #b, __VA_ARGS__)
#define cr_assert_fail(...) SHIM_CHECK(1, 0, "cr_assert_fail", __VA_ARGS__)
#define cr_expect_fail(...) SHIM_CHECK(0, 0, "cr_expect_fail", __VA_ARGS__)
/* Criterion's log lines, on stderr as Criterion prints them. */
#define cr_log_info(...) (fprintf(stderr, "[----] " __VA_ARGS__), fputc('\n', stderr))
#define cr_log_warn(...) (fprintf(stderr, "[WARN] " __VA_ARGS__), fputc('\n', stderr))
#define cr_log_error(...) (fprintf(stderr, "[ERR ] " __VA_ARGS__), fputc('\n', stderr))
/* Exit status 77 tells the runner the child skipped (the automake convention). */
#define SHIM_SKIPPED 77
#define cr_skip_test(...)                                                              \
    do {                                                                               \
        fprintf(stderr, "[SKIP] %s::%s: ", shim_current ? shim_current->suite : "?",  \
                shim_current ? shim_current->name : "?");                             \
        fprintf(stderr, "" __VA_ARGS__);                                               \
        fprintf(stderr, "\n");                                                         \
        fflush(NULL);                                                                  \
        _exit(SHIM_SKIPPED);                                                           \
    } while (0)
#define cr_skip(...) cr_skip_test(__VA_ARGS__)

/* The runner.  Arguments Criterion would take are accepted and ignored. */
__attribute__((weak)) int main(int argc, char **argv)
{
    (void)argc, (void)argv;
    int tested = 0, passing = 0, failing = 0, crashing = 0, skipped = 0;
    for (struct shim_test *t = shim_tests; t; t = t->next) {
        struct shim_opts o = t->opts;
        const struct shim_suite *suite = NULL;
        for (const struct shim_suite *s = shim_suites; s; s = s->next)
            if (!strcmp(s->name, t->suite)) suite = s;
        if (suite && !o.timeout) o.timeout = suite->opts.timeout;
        if (o.disabled) {
            fprintf(stderr, "[SKIP] %s::%s: Test is disabled\n", t->suite, t->name);
            skipped++;
            continue;
        }
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            shim_current = t;
            if (o.timeout > 0) alarm((unsigned)(o.timeout + 0.999));
            if (suite && suite->opts.init) suite->opts.init();
            if (o.init) o.init();
            t->fn();
            shim_teardown();
            fflush(NULL);
            exit(shim_expect_failed ? 1 : 0);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        if (WIFEXITED(status) && WEXITSTATUS(status) == SHIM_SKIPPED && o.exit_code != SHIM_SKIPPED) {
            skipped++; /* the child printed its [SKIP] line */
            continue;
        }
        tested++;
        bool ok;
        if (o.signal) ok = WIFSIGNALED(status) && WTERMSIG(status) == o.signal;
        else ok = WIFEXITED(status) && WEXITSTATUS(status) == o.exit_code;
        /* As in Criterion, Failing counts every test that did not pass and
         * Crashing those of them that died of a signal they did not expect. */
        if (ok) passing++;
        else failing++;
        if (!ok && WIFSIGNALED(status)) crashing++;
        fprintf(stderr, "[%s] %s::%s", ok ? "PASS" : WIFSIGNALED(status) ? "CRASH" : "FAIL", t->suite, t->name);
        if (!ok && WIFSIGNALED(status)) fprintf(stderr, " (signal %d)", WTERMSIG(status));
        fprintf(stderr, "\n");
    }
    fprintf(stderr, "[====] Synthesis: Tested: %d | Passing: %d | Failing: %d | Crashing: %d \n", tested,
            passing, failing, crashing);
    (void)skipped; /* listed line by line above, as Criterion does */
    return failing != 0;
}

#endif
