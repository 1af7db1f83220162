/* The brewery-server's LIKE matcher (demos/brewery/common/server-like.c),
 * compiled in: it agrees with a textbook dynamic program on random patterns
 * and texts, and its worst case (issue 10) is polynomial. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "support/brewery.h"
#include "support/run.h"

TestSuite(brewery_server, .init = srv_suite_init, .fini = srv_suite_fini);

/* The matcher is compiled in directly: tests link only the library, and it has
 * no dependency of its own. */
#include "../demos/brewery/common/server-like.c"

static void random_like_string(unsigned *seed, char *dst, int maxunits, bool wild)
{
    /* Few letters so that matches are common; two with the same UTF-8 lead
     * byte (é, ü) so that a half-matched code point must back off. */
    static const char *const lit[] = { "a", "A", "b", "B", "\xc3\xa9", "\xc3\xbc" };
    static const char *const all[] = { "a", "A", "b", "B", "\xc3\xa9", "\xc3\xbc", "%", "_", "%", "_" };
    int n = rand_r(seed) % (maxunits + 1);
    dst[0] = '\0';
    for (int i = 0; i < n; i++)
        strcat(dst, wild ? all[rand_r(seed) % 10] : lit[rand_r(seed) % 6]);
}

Test(brewery_server, like_matches_a_reference_on_random_patterns, .timeout = 60)
{
    unsigned seed = 12345;
    char pat[64], text[64];
    long yes = 0, runs = 200000;
    for (long k = 0; k < runs; k++) {
        random_like_string(&seed, pat, 9, true);
        random_like_string(&seed, text, 14, false);
        bool want = srv_like_ref(pat, text), got = bsrv_like(pat, text);
        cr_assert_eq(got, want, "LIKE '%%%s%%' on '%s': %d, reference %d", pat, text, got, want);
        yes += want;
    }
    /* The property is only worth something if both answers are common. */
    cr_expect(yes > runs / 10 && yes < runs - runs / 10, "%ld of %ld matched", yes, runs);
    cr_expect(bsrv_like("", ""));
    cr_expect(bsrv_like("%", "x"));
    cr_expect(!bsrv_like("_", ""));
}

Test(brewery_server, like_worst_case_is_polynomial, .timeout = 60)
{
    /* The pattern and a longer one of the same shape on a 2,000-code
     * point text: exponential matching takes hours here, O(m*n) about 0.1 ms. */
    char text[2001], pat[256] = "";
    memset(text, 'a', 2000);
    text[2000] = '\0';
    for (int i = 0; i < 60; i++)
        strcat(pat, "%_");
    strcat(pat, "%qqq");
    double t0 = test_now_s();
    for (int i = 0; i < 20; i++) {
        cr_expect(!bsrv_like("%_%_%_%_%_%_%qqq", text));
        cr_expect(!bsrv_like(pat, text));
    }
    double secs = test_now_s() - t0;
    cr_expect_lt(secs, 2.0 * test_slack(), "40 worst-case matches took %.2f s", secs);
}

/* A literal is a whole code point (the fuzzer's find, round 17: '%%_%\xdf%\xb4'
 * on '_%%\xdf\xdf\xb4' answered no where a byte-wise reading said yes, as
 * the last '%' could not retry from inside a character).  A lone byte of a
 * multi-byte character matches no part of one; a stray byte in the text is
 * a code point of its own. */
Test(brewery_server, like_a_lone_byte_of_a_character_matches_no_part_of_one)
{
    cr_expect(!bsrv_like("\xc3", "caf\xc3\xa9"), "a lead byte inside a character");
    cr_expect(!bsrv_like("\xa9", "caf\xc3\xa9"), "a continuation byte inside a character");
    cr_expect(!bsrv_like("%%_%\xdf%\xb4", "_%%\xdf\xdf\xb4"));
    cr_expect(bsrv_like("%%_%\xdf%\xdf\xb4", "_%%\xdf\xdf\xb4"));
    cr_expect(bsrv_like("\xc3", "x\xc3y"), "a stray lead byte is a code point of its own");
    cr_expect(bsrv_like("x_y", "x\xc3y"));
    cr_expect(bsrv_like("f\xc3\xa9", "caf\xc3\xa9"));
    cr_expect(bsrv_like("CAF\xc3\xa9", "caf\xc3\xa9"), "ASCII letters in either case");
    cr_expect(!bsrv_like("caf\xc3\x89", "caf\xc3\xa9"), "only ASCII letters fold");
    cr_expect(bsrv_like_prefix("\xc3\xa9t", "\xc3\xa9t\xc3\xa9"));
    cr_expect(!bsrv_like_prefix("\xc3", "\xc3\xa9t\xc3\xa9"));
}
