/* See args.h. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include "args.h"

bool arg_ulong(const char *prog, const char *opt, const char *s, unsigned long min,
               unsigned long max, unsigned long *out)
{
    char *end = (char *)s;
    unsigned long v = 0;
    errno = 0;
    /* strtoul accepts a sign ("-1" becomes ULONG_MAX): digits only. */
    if (isdigit((unsigned char)*s)) v = strtoul(s, &end, 10);
    if (end == s || *end || errno || v < min || v > max) {
        fprintf(stderr, "%s: invalid value for %s: '%s' (want %lu..%lu)\n", prog, opt, s, min, max);
        return false;
    }
    *out = v;
    return true;
}

/* Whether s is a plain decimal number: digits with at most one '.', at
 * least one digit, and an optional exponent.  strtod also reads leading
 * blanks, a sign, hexadecimal ("0x10" is 16) and "inf". */
static bool plain_decimal(const char *s)
{
    bool digits = false;
    for (; isdigit((unsigned char)*s); s++) digits = true;
    if (*s == '.')
        for (s++; isdigit((unsigned char)*s); s++) digits = true;
    if (!digits) return false;
    if (*s == 'e' || *s == 'E') {
        s++;
        if (*s == '+' || *s == '-') s++;
        if (!isdigit((unsigned char)*s)) return false;
        while (isdigit((unsigned char)*s)) s++;
    }
    return *s == '\0';
}

bool arg_seconds(const char *prog, const char *opt, const char *s, double max, double *out)
{
    char *end = (char *)s;
    errno = 0;
    double v = plain_decimal(s) ? strtod(s, &end) : 0;
    if (end == s || *end || errno || !isfinite(v) || v < 0 || v > max) {
        fprintf(stderr, "%s: invalid value for %s: '%s' (want 0..%g seconds)\n", prog, opt, s, max);
        return false;
    }
    *out = v;
    return true;
}
