/* The README's tour is the compiled demos/tour/tour.c, word for word, and the
 * tour runs. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *s = malloc((size_t)n + 1);
    cr_assert_eq(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = 0;
    fclose(f);
    return s;
}

Test(readme, tour_is_the_demo, .timeout = 10)
{
    char *readme = slurp(ASYNC_SRC_DIR "/README.md");
    char *tour = slurp(ASYNC_SRC_DIR "/demos/tour/tour.c");
    char *start = strstr(readme, "```c\n");
    cr_assert_not_null(start);
    start += 5;
    char *end = strstr(start, "```");
    cr_assert_not_null(end);
    *end = 0;
    cr_assert_str_eq(start, tour, "README.md's tour and demos/tour/tour.c differ");
    free(readme);
    free(tour);
}

Test(readme, tour_runs, .timeout = 10)
{
    FILE *p = popen(ASYNC_OUT_DIR "/demos/tour/tour", "r");
    char out[512] = "";
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    cr_assert_eq(pclose(p), 0);
    cr_assert(strstr(out, "task 2 -> 6") && strstr(out, "received 3"), "got: %s", out);
}
