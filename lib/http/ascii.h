/* ASCII's case-insensitive comparisons, for HTTP's names (header names,
 * codings, schemes).  strcasecmp follows the program's locale: under a
 * Turkish one 'I' lowers to a dotless i, so "CONTENT-LENGTH" no longer
 * matched "content-length". */
#ifndef ASYNC_HTTP_ASCII_H
#define ASYNC_HTTP_ASCII_H
#include <stddef.h>

static inline unsigned char async__ascii_lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c - 'A' + 'a') : c;
}

/* strncasecmp's contract in the C locale: <0, 0 or >0 as the first n bytes
 * of a (to a NUL) sort against b's, letters folded to lower case. */
static inline int async__ascii_ncasecmp(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char x = async__ascii_lower((unsigned char)a[i]), y = async__ascii_lower((unsigned char)b[i]);
        if (x != y) return x - y;
        if (!x) return 0;
    }
    return 0;
}

/* strcasecmp's contract in the C locale. */
static inline int async__ascii_casecmp(const char *a, const char *b)
{
    return async__ascii_ncasecmp(a, b, (size_t)-1);
}

#endif
