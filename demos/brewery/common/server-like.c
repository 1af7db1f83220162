/* brewery-server's SQL LIKE matcher: the two-pointer wildcard algorithm.
 * It walks text and pattern together; at a '%' it remembers where it is in
 * both, and on a mismatch it goes back only to the last '%' seen, retrying it
 * one code point further on in the text.  Going back to an earlier '%' is
 * never needed: whatever an earlier '%' could absorb, the last one can absorb
 * too, because everything between them matched already.  So each retry costs
 * at most the pattern's length and there is at most one retry per text code
 * point: O(m * n) in the worst case, where the recursive matcher this
 * replaces was exponential on patterns such as '%_%_%_%_%_%_%qqq'. */
#include "server-like.h"

#include <stddef.h>
#include <string.h>

const char *bsrv_utf8_next(const char *t)
{
    t++;
    while ((*t & 0xC0) == 0x80)
        t++;
    return t;
}

static unsigned char fold(char c)
{
    unsigned char u = (unsigned char)c;
    return u >= 'A' && u <= 'Z' ? (unsigned char)(u - 'A' + 'a') : u;
}

/* `floating`: an implicit leading '%', so a match may start anywhere. */
static bool like(const char *pattern, const char *text, bool floating)
{
    const char *p = pattern, *t = text;
    const char *star_p = floating ? pattern : NULL, *star_t = text;
    for (;;) {
        if (*p == '%') {
            while (*p == '%')
                p++;
            star_p = p;
            star_t = t;
            continue;
        }
        /* The implicit trailing '%' absorbs whatever text is left. */
        if (*p == '\0')
            return true;
        if (*t != '\0') {
            const char *tn = bsrv_utf8_next(t);
            if (*p == '_') {
                p++;
                t = tn;
                continue;
            }
            /* A literal is a whole code point, as '_' and '%' are: were it a
             * byte, a stray lead or continuation byte in the pattern could
             * match inside a character of the text, and the last '%' would
             * retry from a point between code points that it cannot reach,
             * missing a match (the fuzzer's find, round 17). */
            const char *pn = bsrv_utf8_next(p);
            size_t len = (size_t)(pn - p);
            if (len == (size_t)(tn - t) && fold(*p) == fold(*t) && !memcmp(p + 1, t + 1, len - 1)) {
                p = pn;
                t = tn;
                continue;
            }
        }
        /* The rest of the pattern needs text and none is left: starting the
         * last '%' later leaves even less. */
        if (!star_p || *t == '\0' || *star_t == '\0')
            return false;
        star_t = bsrv_utf8_next(star_t);
        t = star_t;
        p = star_p;
    }
}

bool bsrv_like(const char *pattern, const char *text)
{
    return like(pattern, text, true);
}

bool bsrv_like_prefix(const char *pattern, const char *text)
{
    return like(pattern, text, false);
}
