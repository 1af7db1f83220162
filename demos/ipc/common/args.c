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

bool arg_seconds(const char *prog, const char *opt, const char *s, double max, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno || !isfinite(v) || v < 0 || v > max) {
        fprintf(stderr, "%s: invalid value for %s: '%s' (want 0..%g seconds)\n", prog, opt, s, max);
        return false;
    }
    *out = v;
    return true;
}
