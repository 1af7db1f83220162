/* Fuzz target server-like: brewery-server's SQL LIKE matcher, bsrv_like().
 * The input is "pattern\0text".  Besides crashes and hangs (the harness is
 * run with a per-input time limit: today's matcher is exponential on "%_%_"
 * patterns), every answer is checked against a dynamic-programming reference
 * that runs in O(pattern * text) with the semantics the header documents:
 * the pattern wrapped in '%...%', ASCII case-insensitive, '_' one UTF-8
 * code point (a byte and the continuation bytes after it), '%' any run of
 * code points, a literal code point the same code point. */
#include "fuzz.h"
#include "server-query.h"
#if __has_include("server-like.h")
#include "server-like.h" /* bsrv_like, once it has its own file */
#endif

#include <ctype.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

const char fuzz_target_name[] = "server-like";

struct ref {
    const char *p, *t;
    size_t m, n;
    signed char *memo;   /* (m + 1) * (n + 1): -1 unknown, else the answer */
};

static size_t next_cp(const char *t, size_t j)
{
    j++;
    while (((unsigned char)t[j] & 0xC0) == 0x80) j++;
    return j;
}

/* Does p[i..] match at t[j..], the pattern's end matching anything left? */
static bool ref_at(struct ref *r, size_t i, size_t j)
{
    signed char *m = &r->memo[i * (r->n + 1) + j];
    if (*m >= 0) return *m;
    bool ok;
    if (i == r->m) {
        ok = true;
    } else if (r->p[i] == '%') {
        /* Either the '%' matches nothing more, or it takes one more code
         * point: linear in total, unlike trying every split at once. */
        ok = ref_at(r, i + 1, j) || (r->t[j] && ref_at(r, i, next_cp(r->t, j)));
    } else if (!r->t[j]) {
        ok = false;
    } else if (r->p[i] == '_') {
        ok = ref_at(r, i + 1, next_cp(r->t, j));
    } else {
        /* A literal code point against the text's next one: the same
         * length, the same bytes, the first ASCII-folded. */
        size_t pn = next_cp(r->p, i), tn = next_cp(r->t, j);
        ok = pn - i == tn - j && tolower((unsigned char)r->p[i]) == tolower((unsigned char)r->t[j]) &&
             !memcmp(r->p + i + 1, r->t + j + 1, pn - i - 1) && ref_at(r, pn, tn);
    }
    *m = ok;
    return ok;
}

static bool ref_like(const char *p, const char *t)
{
    struct ref r = {p, t, strlen(p), strlen(t), NULL};
    r.memo = malloc((r.m + 1) * (r.n + 1));
    if (!r.memo) fuzz_fail("out of memory");
    memset(r.memo, -1, (r.m + 1) * (r.n + 1));
    /* The leading '%': every code point boundary, the end included. */
    bool ok = false;
    for (size_t j = 0;; j = next_cp(t, j)) {
        if ((ok = ref_at(&r, 0, j)) || !t[j]) break;
    }
    free(r.memo);
    return ok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* The server accepts filters of at most 255 characters; longer texts than
     * a brewery's name add nothing but time. */
    if (size > 4096) return 0;
    char *buf = malloc(size + 2);
    if (!buf) return 0;
    memcpy(buf, data, size);
    buf[size] = buf[size + 1] = '\0';
    const char *pattern = buf, *text = buf + strlen(buf) + 1;
    bool got = bsrv_like(pattern, text), want = ref_like(pattern, text);
    if (got != want)
        fuzz_fail("bsrv_like(\"%s\", \"%s\") is %d, the reference says %d", pattern, text, got, want);
    free(buf);
    return 0;
}
