/* The table behind brewery-server's built-in dataset: breweries per
 * (state_province, country, brewery_type), generated from the Open Brewery DB
 * CSV by demos/brewery/gen-builtin-states.py so that a fresh clone serves the
 * real per-state counts without the CSV. */
#ifndef BREWERY_BUILTIN_STATES_H
#define BREWERY_BUILTIN_STATES_H

#include <stddef.h>

typedef struct bsrv_builtin_row {
    const char *state;   /* state_province, never empty */
    const char *country;
    const char *type;    /* brewery_type */
    unsigned count;      /* breweries with these three values */
} bsrv_builtin_row_t;

extern const bsrv_builtin_row_t bsrv_builtin_rows[];
extern const size_t bsrv_builtin_nrows;
extern const size_t bsrv_builtin_total;   /* sum of all counts */

#endif
