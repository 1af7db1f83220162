/* brewery-server's result orders: `sort` (one or more fields, each ascending
 * or descending) and `by_dist` (nearest first).  Both order an array of row
 * pointers in O(n log n); ids break every tie, so pages stay stable. */
#ifndef BREWERY_SERVER_ORDER_H
#define BREWERY_SERVER_ORDER_H

#include "server-data.h"

#include <stdbool.h>
#include <stddef.h>

#define BSRV_MAX_SORT_KEYS 8

typedef struct bsrv_sort_key {
    int field;   /* enum bsrv_field */
    bool desc;
} bsrv_sort_key_t;

/* Parses a `sort` value: "field[:asc|:desc][,field...]" with the field
 * names of a brewery (and the aliases type, street, state), at most
 * BSRV_MAX_SORT_KEYS of them.  Returns the number of keys, or -1 (nothing
 * stored) if the value is not of that form. */
int bsrv_sort_parse(const char *spec, bsrv_sort_key_t keys[BSRV_MAX_SORT_KEYS]);

/* Sorts rows[n] by the keys: text ignores ASCII case; an empty field sorts
 * after every value when ascending and before when descending (PostgreSQL's
 * NULLS LAST/FIRST); longitude and latitude compare as numbers. */
void bsrv_sort_rows(const bsrv_brewery_t **rows, size_t n, const bsrv_sort_key_t *keys, int nkeys);

/* Parses "latitude,longitude" (-90..90, -180..180).  Returns false if the
 * value is not of that form. */
bool bsrv_dist_parse(const char *s, double *lat, double *lon);

/* Great-circle distance in km between two points. */
double bsrv_dist_km(double lat1, double lon1, double lat2, double lon2);

/* Sorts rows[n] nearest to (lat, lon) first; rows without coordinates come
 * last, in id order.  Returns false out of memory (rows unchanged). */
bool bsrv_dist_sort(const bsrv_brewery_t **rows, size_t n, double lat, double lon);

#endif
