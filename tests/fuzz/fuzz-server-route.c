/* Fuzz target server-route: brewery-server's request routing and query
 * validation.  The input is a request target, "path?query", as a client
 * sends it; the harness splits and %-decodes it the way libmicrohttpd does
 * before it reaches the handler, then calls bsrv_route() on a small dataset
 * (tests/fuzz/data/breweries-mini.csv, loaded with bsrv_dataset_load_csv()).
 * The reply must be one of the statuses the API documents, with a body that
 * is valid JSON: an array for a 200 list, an object otherwise. */
#include "fuzz.h"
#include "server-query.h"
#if __has_include("server-like.h")
#include "server-like.h" /* bsrv_like, once it has its own file */
#endif

#include <ctype.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

const char fuzz_target_name[] = "server-route";

#define MAX_ARGS 64

struct args {
    size_t n;
    char *name[MAX_ARGS], *value[MAX_ARGS];
};

static const char *get_arg(void *cls, const char *name)
{
    struct args *a = cls;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->name[i], name) == 0) return a->value[i];
    return NULL;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* In place: %XX to a byte, and '+' to a space where plus is true (query
 * arguments, not the path), as libmicrohttpd unescapes them. */
static void unescape(char *s, bool plus)
{
    char *w = s;
    for (char *r = s; *r; r++) {
        int hi, lo;
        if (*r == '%' && (hi = hexval((unsigned char)r[1])) >= 0 &&
            (lo = hexval((unsigned char)r[2])) >= 0) {
            *w++ = (char)(hi * 16 + lo);
            r += 2;
        } else {
            *w++ = plus && *r == '+' ? ' ' : *r;
        }
    }
    *w = '\0';
}

static const bsrv_dataset_t *dataset(void)
{
    static bsrv_dataset_t ds;
    static bool loaded;
    if (!loaded) {
        char err[512];
        if (bsrv_dataset_load_csv(&ds, ASYNC_SRC_DIR "/tests/fuzz/data/breweries-mini.csv", err,
                                  sizeof err) != 0)
            fuzz_fail("cannot load the dataset: %s", err);
        loaded = true;
    }
    return &ds;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const bsrv_dataset_t *ds = dataset();
    char *req = malloc(size + 1);
    if (!req) return 0;
    memcpy(req, data, size);
    req[size] = '\0';

    struct args a = {0};
    char *query = strchr(req, '?');
    if (query) {
        *query++ = '\0';
        char *save = NULL;
        for (char *kv = strtok_r(query, "&", &save); kv && a.n < MAX_ARGS;
             kv = strtok_r(NULL, "&", &save)) {
            char *eq = strchr(kv, '=');
            if (eq) *eq++ = '\0';
            unescape(kv, true);
            if (eq) unescape(eq, true);
            a.name[a.n] = kv;
            a.value[a.n] = eq ? eq : kv + strlen(kv); /* "k" alone: an empty value */
            a.n++;
        }
    }
    unescape(req, false);

    bsrv_reply_t r;
    memset(&r, 0xA5, sizeof r);
    bsrv_route(ds, req, get_arg, &a, &r);
    if (r.status != 200 && r.status != 404 && r.status != 422 && r.status != 500)
        fuzz_fail("status %u for \"%s\"", r.status, req);
    if (!r.body || r.len == 0) fuzz_fail("empty body, status %u", r.status);
    json_error_t je;
    json_t *j = json_loadb(r.body, r.len, 0, &je);
    if (!j)
        fuzz_fail("status %u body is not JSON (%s at %d:%d): %.*s", r.status, je.text, je.line,
                  je.column, (int)(r.len < 200 ? r.len : 200), r.body);
    bool list = r.status == 200 && json_is_array(j);
    if (!list && !json_is_object(j)) fuzz_fail("status %u body is neither array nor object", r.status);
    if (r.status != 200 && !json_is_string(json_object_get(j, "message")))
        fuzz_fail("status %u without a \"message\"", r.status);
    json_decref(j);
    if (!r.persistent) free(r.body);
    free(req);
    return 0;
}
