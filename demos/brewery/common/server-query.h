/* brewery-server's API logic, free of HTTP plumbing: validate the query
 * string the way the real Open Brewery DB API does, match breweries (SQL LIKE
 * '%value%' on the state, city and name; by_country, by_postal, by_ids),
 * order them (sort, by_dist), and produce the status and JSON body of
 * /v1/breweries, /meta, /random, /search, /autocomplete and /{id}. */
#ifndef BREWERY_SERVER_QUERY_H
#define BREWERY_SERVER_QUERY_H

#include "server-data.h"
#include "server-like.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct bsrv_reply {
    unsigned status;
    char *body;        /* JSON text, not NUL-terminated necessarily */
    size_t len;
    bool persistent;   /* body belongs to the dataset (do not free) */
} bsrv_reply_t;

/* Returns the value of query argument `name` (already %-decoded), or NULL. */
typedef const char *(*bsrv_arg_fn)(void *cls, const char *name);

/* Answers GET `path`.  Never fails: a reply that cannot be built for lack of
 * memory becomes a 500 with a static body.  The caller frees a body that is
 * not persistent with free(). */
void bsrv_route(const bsrv_dataset_t *ds, const char *path, bsrv_arg_fn arg, void *cls,
                bsrv_reply_t *out);

/* bsrv_route that gives up when *stop becomes true (polled once a row, from
 * any thread): the reply is then a 503 "The server is shutting down.". */
void bsrv_route_until(const bsrv_dataset_t *ds, const char *path, bsrv_arg_fn arg, void *cls,
                      const atomic_bool *stop, bsrv_reply_t *out);

/* A {"message": msg} reply with this status. */
void bsrv_reply_message(bsrv_reply_t *out, unsigned status, const char *msg);

#endif
