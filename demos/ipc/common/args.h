/* Option values for the IPC demos, read strictly: a whole number in a range,
 * or a number of seconds.  A value that is not one (empty, trailing junk,
 * out of range) is reported on stderr, naming the option, and refused. */
#ifndef DEMOS_IPC_ARGS_H
#define DEMOS_IPC_ARGS_H
#include <stdbool.h>

/* *out (OUT) gets s as a whole number in [min, max]; false after printing
 * "<prog>: invalid value for <opt>: '<s>' (want min..max)". */
bool arg_ulong(const char *prog, const char *opt, const char *s, unsigned long min,
               unsigned long max, unsigned long *out);

/* *out (OUT) gets s as a number of seconds in [0, max]; false after printing
 * the same kind of message. */
bool arg_seconds(const char *prog, const char *opt, const char *s, double max, double *out);
#endif
