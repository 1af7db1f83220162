/* brewery-server's SQL LIKE matcher, kept free of every other dependency so
 * that tests and fuzz targets can compile it on its own. */
#ifndef BREWERY_SERVER_LIKE_H
#define BREWERY_SERVER_LIKE_H

#include <stdbool.h>

/* SQL LIKE on `text` with `pattern` wrapped in '%...%': ASCII case-insensitive,
 * '_' matches one character (one UTF-8 code point), '%' any run, any other
 * code point the same code point.  Both strings are cut into code points as
 * bsrv_utf8_next does, so in text that is not UTF-8 a stray byte is one,
 * and a lone byte of a multi-byte character never matches part of one.
 * Costs at most O(strlen(pattern) * strlen(text)) whatever the pattern. */
bool bsrv_like(const char *pattern, const char *text);

/* SQL LIKE anchored at the start: `pattern` followed by '%' (a prefix
 * match, as by_postal's LIKE 'value%'), same rules and cost as bsrv_like. */
bool bsrv_like_prefix(const char *pattern, const char *text);

/* The first byte after the UTF-8 code point that starts at `t` (*t != 0);
 * a stray continuation byte counts as one code point. */
const char *bsrv_utf8_next(const char *t);

#endif
