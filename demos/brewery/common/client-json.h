/* A validating counter of a JSON document's top-level array elements, with
 * no allocation (see client-json.c for why the demo wants it). */
#ifndef BREWERY_CLIENT_JSON_H
#define BREWERY_CLIENT_JSON_H

#include <stddef.h>

/* Returns 0 and the element count in *out when text[0..len) is a JSON array;
 * -1 when it is not valid JSON (ask jansson for the message); -2 when it is
 * valid JSON but not an array. */
int client_json_array_count(const char *text, size_t len, long *out);

#endif
