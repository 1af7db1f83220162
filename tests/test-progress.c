/* The progress bar: drawn on a terminal only, nothing on a pipe or file unless
 * forced, exact counts from many threads at once, the line's content, bad
 * arguments, and no leak through the allocator seam. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "async/common.h"
#include "async/progress.h"
#include "support/alloc.h"

/* Reads whatever is in the pipe's read end without blocking. */
static size_t drain(int fd, char *buf, size_t len)
{
    size_t got = 0;
    fcntl(fd, F_SETFL, O_NONBLOCK);
    for (;;) {
        ssize_t n = read(fd, buf + got, len - 1 - got);
        if (n <= 0) break;
        got += (size_t)n;
    }
    buf[got] = '\0';
    return got;
}

Test(progress, silent_when_not_a_terminal, .timeout = 10)
{
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    async_progress_t *p;
    cr_assert_eq(async_progress_new_fd(&p, fds[1], "work", 10, 0), 0);
    cr_assert_not(async_progress_enabled(p));
    for (int i = 0; i < 10; i++) async_progress_add(p, 1);
    cr_assert_eq(async_progress_done(p), 10);
    async_progress_finish(p);
    async_progress_free(p);
    char buf[256];
    cr_assert_eq(drain(fds[0], buf, sizeof buf), 0, "wrote \"%s\" to a pipe", buf);
    close(fds[0]);
    close(fds[1]);
}

Test(progress, forced_bar_draws_final_line, .timeout = 10)
{
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    async_progress_t *p;
    cr_assert_eq(async_progress_new_fd(&p, fds[1], "primes", 200,
                                       ASYNC_PROGRESS_FORCE | ASYNC_PROGRESS_NOW), 0);
    cr_assert(async_progress_enabled(p));
    async_progress_add(p, 200);
    async_progress_finish(p);
    async_progress_finish(p); /* a second finish draws nothing more */
    async_progress_free(p);
    char buf[1024];
    size_t n = drain(fds[0], buf, sizeof buf);
    cr_assert_gt(n, 0);
    cr_assert_eq(buf[n - 1], '\n');
    cr_assert_eq(strchr(buf, '\n'), buf + n - 1, "one final line only: \"%s\"", buf);
    cr_assert(strstr(buf, "primes ["), "%s", buf);
    cr_assert(strstr(buf, "200/200 100%"), "%s", buf);
    cr_assert(strstr(buf, " in 0:00"), "%s", buf);
    close(fds[0]);
    close(fds[1]);
}

Test(progress, terminal_is_detected, .timeout = 10)
{
    int master = posix_openpt(O_RDWR | O_NOCTTY);
    cr_assert_geq(master, 0);
    cr_assert_eq(grantpt(master), 0);
    cr_assert_eq(unlockpt(master), 0);
    int slave = open(ptsname(master), O_RDWR | O_NOCTTY);
    cr_assert_geq(slave, 0);
    async_progress_t *p;
    cr_assert_eq(async_progress_new_fd(&p, slave, "tty", 4, ASYNC_PROGRESS_NOW), 0);
    cr_assert(async_progress_enabled(p));
    async_progress_add(p, 4);
    async_progress_free(p);
    char buf[1024];
    size_t n = drain(master, buf, sizeof buf);
    cr_assert(n > 0 && strstr(buf, "4/4 100%"), "%s", buf);
    cr_assert_eq(buf[0], '\r', "a redraw starts with a carriage return");
    close(slave);
    close(master);
}

Test(progress, short_work_shows_no_bar, .timeout = 10)
{
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    async_progress_t *p;
    cr_assert_eq(async_progress_new_fd(&p, fds[1], "quick", 5, ASYNC_PROGRESS_FORCE), 0);
    async_progress_add(p, 5);
    async_progress_free(p);
    char buf[256];
    cr_assert_eq(drain(fds[0], buf, sizeof buf), 0, "wrote \"%s\" for work under a second", buf);
    close(fds[0]);
    close(fds[1]);
}

Test(progress, long_work_shows_bar_after_delay, .timeout = 10)
{
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    async_progress_t *p;
    cr_assert_eq(async_progress_new_fd(&p, fds[1], "slow", 5, ASYNC_PROGRESS_FORCE), 0);
    async_progress_add(p, 1);
    usleep(1100 * 1000);
    async_progress_add(p, 1);
    char buf[1024];
    cr_assert_gt(drain(fds[0], buf, sizeof buf), 0, "a redraw after the delay");
    cr_assert(strstr(buf, "2/5"), "%s", buf);
    async_progress_add(p, 3);
    async_progress_free(p);
    drain(fds[0], buf, sizeof buf);
    cr_assert(strstr(buf, "5/5 100%") && strchr(buf, '\n'), "%s", buf);
    close(fds[0]);
    close(fds[1]);
}

Test(progress, format_half_done, .timeout = 10)
{
    async_progress_t *p;
    cr_assert_eq(async_progress_new_fd(&p, 1, "half", 1000, 0), 0);
    async_progress_add(p, 500);
    char buf[200];
    async_progress_format(p, 80, buf, sizeof buf);
    cr_assert(strstr(buf, "half ["), "%s", buf);
    cr_assert(strstr(buf, "500/1.00k  50%"), "%s", buf);
    cr_assert(strstr(buf, "ETA "), "%s", buf);
    /* The bar is half full. */
    const char *open = strchr(buf, '['), *close_ = strchr(buf, ']');
    int cells = (int)(close_ - open - 1), full = 0;
    for (const char *c = open + 1; c < close_; c++) full += *c == '#';
    cr_assert_eq(full, cells / 2, "%s", buf);
    /* Narrow: the bar goes, the numbers stay. */
    async_progress_format(p, 20, buf, sizeof buf);
    cr_assert_null(strchr(buf, '['), "%s", buf);
    cr_assert(strstr(buf, "500/1.00k"), "%s", buf);
    async_progress_free(p);
}

/* A width below any line's, down to INT_MIN, is a narrow one: the line
 * without its bar.  Until round 17 the bar's room was width minus the text,
 * which overflowed int below INT_MIN + 100 or so (UBSan stopped there; a
 * plain build wrapped to a 40-cell bar). */
Test(progress, format_negative_width_is_narrow, .timeout = 10)
{
    async_progress_t *p;
    cr_assert_eq(async_progress_new_fd(&p, 1, "half", 1000, 0), 0);
    async_progress_add(p, 500);
    static const int widths[] = {0, -1, -1000, INT_MIN + 200, INT_MIN + 1, INT_MIN};
    for (size_t i = 0; i < sizeof widths / sizeof widths[0]; i++) {
        char buf[200];
        int n = async_progress_format(p, widths[i], buf, sizeof buf);
        cr_assert_gt(n, 0, "width %d", widths[i]);
        cr_assert_null(strchr(buf, '['), "width %d drew a bar: %s", widths[i], buf);
        cr_assert(strstr(buf, "half 500/1.00k  50%"), "width %d: %s", widths[i], buf);
    }
    async_progress_free(p);
}

Test(progress, format_unknown_total, .timeout = 10)
{
    async_progress_t *p;
    cr_assert_eq(async_progress_new_fd(&p, 1, "rows", 0, 0), 0);
    async_progress_add(p, 12345);
    char buf[200];
    async_progress_format(p, 80, buf, sizeof buf);
    cr_assert(strstr(buf, "rows 12.3k done"), "%s", buf);
    async_progress_free(p);
}

struct adder {
    async_progress_t *p;
    int n;
};

static void *add_many(void *arg)
{
    struct adder *a = arg;
    for (int i = 0; i < a->n; i++) async_progress_add(a->p, 1);
    return NULL;
}

Test(progress, exact_count_from_threads, .timeout = 20)
{
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    fcntl(fds[1], F_SETFL, O_NONBLOCK); /* a full pipe must not stall workers */
    async_progress_t *p;
    cr_assert_eq(async_progress_new_fd(&p, fds[1], "mt", 400000, ASYNC_PROGRESS_FORCE), 0);
    pthread_t t[4];
    struct adder a = {p, 100000};
    for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, add_many, &a);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    cr_assert_eq(async_progress_done(p), 400000);
    async_progress_free(p);
    close(fds[0]);
    close(fds[1]);
}

Test(progress, bad_arguments, .timeout = 10)
{
    async_progress_t *p = (async_progress_t *)0x1;
    cr_assert_eq(async_progress_new(&p, NULL, 1), ASYNC_EINVAL);
    cr_assert_eq(async_progress_new(NULL, "x", 1), ASYNC_EINVAL);
    cr_assert_eq(async_progress_new_fd(&p, -1, "x", 1, 0), ASYNC_EINVAL);
    cr_assert_eq(async_progress_new_fd(&p, 2, "x", 1, 0x100), ASYNC_EINVAL);
    cr_assert_eq(p, (async_progress_t *)0x1, "out untouched on failure");
    /* NULL bars are allowed everywhere a caller may hold an optional one. */
    async_progress_add(NULL, 1);
    async_progress_finish(NULL);
    async_progress_free(NULL);
    cr_assert_eq(async_progress_done(NULL), 0);
    cr_assert_not(async_progress_enabled(NULL));
}

Test(progress, no_leak_and_out_of_memory, .timeout = 10)
{
    test_alloc_install();
    long before = test_alloc_live();
    async_progress_t *p;
    cr_assert_eq(async_progress_new(&p, "leak", 3), 0);
    async_progress_add(p, 3);
    async_progress_free(p);
    cr_assert_eq(test_alloc_live(), before);
    test_alloc_fail_after(0);
    cr_assert_eq(async_progress_new(&p, "oom", 3), ASYNC_ENOMEM);
    test_alloc_fail_after(-1);
    cr_assert_eq(test_alloc_live(), before);
    test_alloc_uninstall();
}

/* With nothing done yet there is no rate, so no ETA: "--:--", not a division
 * by zero or a huge number. */
Test(progress, eta_unknown_before_any_progress, .timeout = 10)
{
    async_progress_t *p;
    cr_assert_eq(async_progress_new_fd(&p, 1, "idle", 1000, 0), 0);
    char buf[200];
    async_progress_format(p, 80, buf, sizeof buf);
    cr_assert(strstr(buf, "0/1.00k   0% "), "%s", buf);
    cr_assert(strstr(buf, "ETA --:--"), "%s", buf);
    async_progress_free(p);
}

/* An ETA of hours is written h:mm:ss.  The count added is chosen from the
 * measured elapsed time so that the ETA is about ten hours: any delay of the
 * machine changes it by far less than the factor of ten either way that would
 * leave the h:mm:ss range (one hour to 99:59:59). */
Test(progress, eta_of_hours, .timeout = 10)
{
    const uint64_t total = 1000000000000ULL;
    int64_t before = async_now();
    async_progress_t *p;
    cr_assert_eq(async_progress_new_fd(&p, 1, "long", total, 0), 0);
    usleep(20000);
    double elapsed = (double)(async_now() - before) / 1e9;
    /* remaining / rate = (total - done) * elapsed / done = 36000 s */
    uint64_t done = (uint64_t)((double)total * elapsed / (36000.0 + elapsed));
    cr_assert_gt(done, 0);
    async_progress_add(p, done);
    char buf[200];
    async_progress_format(p, 80, buf, sizeof buf);
    const char *eta = strstr(buf, "ETA ");
    cr_assert_not_null(eta, "%s", buf);
    unsigned h, m, s;
    cr_assert_eq(sscanf(eta, "ETA %u:%2u:%2u", &h, &m, &s), 3, "h:mm:ss: %s", buf);
    cr_assert(h >= 1 && h <= 99 && m < 60 && s < 60, "%s", buf);
    async_progress_free(p);
}
