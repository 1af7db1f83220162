/* brewery-server's API logic.  Validation follows the real API's Laravel
 * rules and messages (per_page 1..200, page >= 1, by_* filters 3..255
 * characters, 422 with {"message", "errors"}); filtering follows its SQL:
 * LIKE '%value%' on state_province, city and name, an exact list for
 * by_type, an exact name for by_country, LIKE 'value%' for by_postal,
 * lower(brewery_type) NOT IN (list) for exclude_types.  Rows
 * are visited in id order, so pages are stable; sort and by_dist reorder the
 * matches (server-order.c).  A list page
 * is the concatenation of the rows' pre-rendered JSON, which keeps a request
 * at zero latency cheap enough for tens of thousands a second. */
#include "server-query.h"
#include "server-order.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <jansson.h>
#include <stdint.h>
#include <sys/random.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define DEFAULT_PER_PAGE 50
#define MAX_PER_PAGE 200
#define MIN_FILTER_LEN 3
#define MAX_FILTER_LEN 255
#define MAX_RANDOM 50
#define MAX_AUTOCOMPLETE 15

static const char oom_body[] = "{\"message\":\"Server Error\"}";

/* A scan over the rows polls this once a row, so that a shutdown never waits
 * for a long request to finish (a row costs at most pattern x field). */
static bool stopped(const atomic_bool *stop)
{
    return stop && atomic_load_explicit(stop, memory_order_relaxed);
}

/* Length of the valid UTF-8 sequence at `s`, or 0 if it is not one
 * (overlong forms, surrogates and code points past U+10FFFF are invalid,
 * as jansson, which refuses such strings, has them). */
static size_t utf8_valid_at(const unsigned char *s)
{
    if (s[0] < 0x80)
        return 1;
    size_t n = s[0] >= 0xF0 ? 4 : s[0] >= 0xE0 ? 3 : s[0] >= 0xC2 ? 2 : 0;
    if (n == 0 || s[0] > 0xF4)
        return 0;
    uint32_t cp = s[0] & (0x7F >> n);
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

/* Copies at most `max` bytes of `src` into dst[cap] as valid UTF-8, each
 * invalid byte replaced by U+FFFD, so that a message quoting client input
 * can always be rendered as JSON. */
static void utf8_sanitize(char *dst, size_t cap, const char *src, size_t max)
{
    const unsigned char *s = (const unsigned char *)src;
    size_t w = 0;
    for (size_t r = 0; s[r] && r < max;) {
        size_t n = utf8_valid_at(s + r);
        const char *piece = n ? (const char *)s + r : "\xEF\xBF\xBD";
        size_t len = n ? n : 3;
        if (w + len >= cap)
            break;
        memcpy(dst + w, piece, len);
        w += len;
        r += n ? n : 1;
    }
    dst[w] = '\0';
}

/* ---- replies ------------------------------------------------------------- */

static void reply_json(bsrv_reply_t *out, unsigned status, json_t *v)
{
    char *s = v ? json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(v);
    if (!s) {
        *out = (bsrv_reply_t){ 500, (char *)oom_body, sizeof oom_body - 1, true };
        return;
    }
    *out = (bsrv_reply_t){ status, s, strlen(s), false };
}

void bsrv_reply_message(bsrv_reply_t *out, unsigned status, const char *msg)
{
    reply_json(out, status, json_pack("{s:s}", "message", msg));
}

static void reply_stopped(bsrv_reply_t *out)
{
    bsrv_reply_message(out, 503, "The server is shutting down.");
}

/* ---- validation ------------------------------------------------------------ */

struct params {
    const atomic_bool *stop;   /* set when the server shuts down; may be NULL */
    long long page, per_page;
    const char *state, *city, *name, *type, *country, *postal, *ids, *query;
    const char *exclude; /* exclude_types, NULL when absent or empty */
    bool by_dist;
    double lat, lon;
    bsrv_sort_key_t sort[BSRV_MAX_SORT_KEYS];
    int nsort;
    long long size;      /* /random */
    json_t *errors;      /* {"field": ["message", ...]}, NULL while valid */
    const char *first;   /* first message, for "message" */
    int nerrors;
};

static void invalid(struct params *p, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void invalid(struct params *p, const char *field, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!p->errors)
        p->errors = json_object();
    json_t *list = json_array();
    if (p->errors && list && json_array_append_new(list, json_string(msg)) == 0 &&
        json_object_set_new(p->errors, field, list) == 0) {
        if (!p->first)
            p->first = json_string_value(json_array_get(list, 0));
    } else {
        json_decref(list);
    }
    p->nerrors++;
}

/* Laravel writes "per_page" as "per page" in its messages. */
static void human(char *dst, size_t n, const char *field)
{
    snprintf(dst, n, "%s", field);
    for (char *c = dst; *c; c++)
        if (*c == '_')
            *c = ' ';
}

static void int_param(struct params *p, bsrv_arg_fn arg, void *cls, const char *field,
                      long long dflt, long long max, long long *out)
{
    const char *v = arg(cls, field);
    char h[32];
    human(h, sizeof h, field);
    *out = dflt;
    if (!v)
        return;
    if (*v == '\0') {
        invalid(p, field, "The %s field is required.", h);
        return;
    }
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (end == v || *end != '\0' || isspace((unsigned char)*v)) {
        invalid(p, field, "The %s field must be an integer.", h);
        return;
    }
    if (errno == ERANGE)
        x = x < 0 ? LLONG_MIN : LLONG_MAX;
    if (x < 1)
        invalid(p, field, "The %s field must be at least 1.", h);
    else if (max && x > max)
        invalid(p, field, "The %s field must not be greater than %lld.", h, max);
    else
        *out = x;
}

static void str_param(struct params *p, bsrv_arg_fn arg, void *cls, const char *field,
                      const char **out)
{
    const char *v = arg(cls, field);
    char h[32];
    human(h, sizeof h, field);
    *out = NULL;
    if (!v)
        return;
    size_t chars = 0;
    for (const char *c = v; *c; c = bsrv_utf8_next(c))
        chars++;
    if (chars == 0)
        invalid(p, field, "The %s field is required.", h);
    else if (chars < MIN_FILTER_LEN)
        invalid(p, field, "The %s field must be at least %d characters.", h, MIN_FILTER_LEN);
    else if (chars > MAX_FILTER_LEN)
        invalid(p, field, "The %s field must not be greater than %d characters.", h,
                MAX_FILTER_LEN);
    else
        *out = v;
}

/* ---- filtering ------------------------------------------------------------- */

struct filter {
    const struct params *p;
    const bsrv_dataset_t *ds;
    unsigned char *state_ok;   /* per interned state, when by_state is given */
    unsigned char *type_ok;    /* per interned type, when by_type is given */
    unsigned char *type_out;   /* per interned type, when exclude_types is given */
    unsigned char *id_ok;      /* per row, when by_ids is given */
};

/* by_country is an exact name, ASCII case ignored, '_' standing for a space
 * (the real service turns underscores into spaces before comparing). */
static bool country_eq(const char *q, const char *v)
{
    for (; *q && *v; q++, v++) {
        unsigned char a = *q == '_' ? ' ' : (unsigned char)*q, b = (unsigned char)*v;
        if (a != b && !(a < 0x80 && b < 0x80 && tolower(a) == tolower(b)))
            return false;
    }
    return *q == *v;
}

/* Marks the rows named in by_ids (a comma list, spaces around ids ignored):
 * one binary search per listed id. */
static void mark_ids(const bsrv_dataset_t *ds, const char *list, unsigned char *ok)
{
    char id[128];
    for (const char *s = list; *s;) {
        while (*s == ' ' || *s == ',')
            s++;
        const char *e = s + strcspn(s, ",");
        const char *te = e;
        while (te > s && te[-1] == ' ')
            te--;
        if (te > s && (size_t)(te - s) < sizeof id) {
            memcpy(id, s, (size_t)(te - s));
            id[te - s] = '\0';
            const bsrv_brewery_t *b = bsrv_dataset_find(ds, id);
            if (b)
                ok[b - ds->rows] = 1;
        }
        s = e;
    }
}

/* by_type is a comma list of exact type names, spaces around them ignored. */
static bool type_listed(const char *list, const char *type)
{
    size_t tl = strlen(type);
    for (const char *s = list; *s;) {
        while (*s == ' ' || *s == ',')
            s++;
        const char *e = s;
        while (*e && *e != ',')
            e++;
        const char *te = e;
        while (te > s && te[-1] == ' ')
            te--;
        if ((size_t)(te - s) == tl && strncasecmp(s, type, tl) == 0)
            return true;
        s = e;
    }
    return false;
}

static void filter_free(struct filter *f)
{
    free(f->state_ok);
    free(f->type_ok);
    free(f->type_out);
    free(f->id_ok);
}

static bool filter_init(struct filter *f, const bsrv_dataset_t *ds, const struct params *p)
{
    memset(f, 0, sizeof *f);
    f->p = p;
    f->ds = ds;
    if (p->ids) {
        if (!(f->id_ok = calloc(ds->n + 1, 1)))
            return false;
        mark_ids(ds, p->ids, f->id_ok);
    }
    if (p->state) {
        if (!(f->state_ok = calloc(ds->nstates + 1, 1))) {
            free(f->id_ok);
            return false;
        }
        for (size_t i = 0; i < ds->nstates; i++)
            f->state_ok[i] = bsrv_like(p->state, ds->states[i]);
    }
    if (p->type) {
        if (!(f->type_ok = calloc(ds->ntypes + 1, 1))) {
            free(f->state_ok);
            free(f->id_ok);
            return false;
        }
        for (size_t i = 0; i < ds->ntypes; i++)
            f->type_ok[i] = type_listed(p->type, ds->types[i]);
    }
    if (p->exclude) {
        if (!(f->type_out = calloc(ds->ntypes + 1, 1))) {
            filter_free(f);
            return false;
        }
        for (size_t i = 0; i < ds->ntypes; i++)
            f->type_out[i] = type_listed(p->exclude, ds->types[i]);
    }
    return true;
}

static bool matches(const struct filter *f, const bsrv_brewery_t *b)
{
    if (f->state_ok && (b->state < 0 || !f->state_ok[b->state]))
        return false;
    if (f->type_ok && (b->type < 0 || !f->type_ok[b->type]))
        return false;
    /* SQL's NOT IN: a row without a type is not returned either. */
    if (f->type_out && (b->type < 0 || f->type_out[b->type]))
        return false;
    if (f->p->city && (!b->f[BSRV_CITY] || !bsrv_like(f->p->city, b->f[BSRV_CITY])))
        return false;
    if (f->p->name && (!b->f[BSRV_NAME] || !bsrv_like(f->p->name, b->f[BSRV_NAME])))
        return false;
    if (f->id_ok && !f->id_ok[b - f->ds->rows])
        return false;
    if (f->p->country && (!b->f[BSRV_COUNTRY] || !country_eq(f->p->country, b->f[BSRV_COUNTRY])))
        return false;
    if (f->p->postal &&
        (!b->f[BSRV_POSTAL] || !bsrv_like_prefix(f->p->postal, b->f[BSRV_POSTAL])))
        return false;
    if (f->p->query) {
        /* /search and /autocomplete: the term anywhere in name, city or state. */
        const char *q = f->p->query;
        if (!((b->f[BSRV_NAME] && bsrv_like(q, b->f[BSRV_NAME])) ||
              (b->f[BSRV_CITY] && bsrv_like(q, b->f[BSRV_CITY])) ||
              (b->f[BSRV_STATE] && bsrv_like(q, b->f[BSRV_STATE]))))
            return false;
    }
    return true;
}

/* ---- endpoints ------------------------------------------------------------- */

enum kind { LIST, META, RANDOM, SEARCH, AUTOCOMPLETE };

/* A free-text query (/search, /autocomplete): required, at most 255
 * characters, no lower bound. */
static void query_param(struct params *p, bsrv_arg_fn arg, void *cls)
{
    const char *v = arg(cls, "query");
    size_t chars = 0;
    for (const char *c = v ? v : ""; *c; c = bsrv_utf8_next(c))
        chars++;
    if (chars == 0)
        invalid(p, "query", "The query field is required.");
    else if (chars > MAX_FILTER_LEN)
        invalid(p, "query", "The query field must not be greater than %d characters.",
                MAX_FILTER_LEN);
    else
        p->query = v;
}

static void list_params(struct params *p, const bsrv_dataset_t *ds, bsrv_arg_fn arg, void *cls)
{
    str_param(p, arg, cls, "by_country", &p->country);
    str_param(p, arg, cls, "by_postal", &p->postal);
    const char *ids = arg(cls, "by_ids");
    if (ids && strspn(ids, " ,") == strlen(ids))
        invalid(p, "by_ids", "The by ids field is required.");
    else
        p->ids = ids;
    const char *dist = arg(cls, "by_dist");
    if (dist) {
        if (bsrv_dist_parse(dist, &p->lat, &p->lon))
            p->by_dist = true;
        else
            invalid(p, "by_dist", "The by dist field must be latitude,longitude (-90..90, "
                                  "-180..180).");
    }
    const char *sort = arg(cls, "sort");
    if (sort) {
        if (dist)
            invalid(p, "sort", "The sort field cannot be combined with by_dist, which orders "
                               "by distance.");
        else if ((p->nsort = bsrv_sort_parse(sort, p->sort)) < 0)
            invalid(p, "sort", "The sort field must be field[:asc|:desc],... (at most %d) with "
                               "fields id, name, brewery_type or type, address_1 or street, "
                               "address_2, address_3, city, state_province or state, "
                               "postal_code, country, phone, website_url, longitude, latitude.",
                    BSRV_MAX_SORT_KEYS);
    }
    (void)ds;
}

static bool parse_params(struct params *p, const bsrv_dataset_t *ds, bsrv_arg_fn arg,
                         void *cls, const atomic_bool *stop, enum kind kind, bsrv_reply_t *out)
{
    memset(p, 0, sizeof *p);
    p->stop = stop;
    if (kind == RANDOM) {
        int_param(p, arg, cls, "size", 1, MAX_RANDOM, &p->size);
        goto done;
    }
    int_param(p, arg, cls, "per_page", DEFAULT_PER_PAGE, MAX_PER_PAGE, &p->per_page);
    int_param(p, arg, cls, "page", 1, 0, &p->page);
    if (kind == SEARCH || kind == AUTOCOMPLETE) {
        query_param(p, arg, cls);
        goto done;
    }
    list_params(p, ds, arg, cls);
    str_param(p, arg, cls, "by_state", &p->state);
    str_param(p, arg, cls, "by_city", &p->city);
    str_param(p, arg, cls, "by_name", &p->name);
    /* exclude_types (the real API's `lower(brewery_type) NOT IN (list)` on
     * the list and meta): a comma list, ASCII case and spaces around names
     * ignored as in by_type; a name the data lacks excludes nothing, and an
     * empty value is no filter, as the real service has it (it validates
     * only by_type and by_dist).  It was ignored, so every type came back. */
    const char *ex = arg(cls, "exclude_types");
    p->exclude = ex && ex[strspn(ex, " ,")] ? ex : NULL;
    p->type = arg(cls, "by_type");
    if (p->type) {
        /* Every listed type must be one the data knows, as the real API checks
         * against its enum. */
        char *copy = strdup(p->type), *save = NULL;
        bool ok = copy && *p->type;
        for (char *t = copy ? strtok_r(copy, ",", &save) : NULL; ok && t;
             t = strtok_r(NULL, ",", &save)) {
            while (*t == ' ')
                t++;
            bool known = false;
            for (size_t i = 0; i < ds->ntypes && !known; i++)
                known = type_listed(t, ds->types[i]);
            ok = known;
        }
        free(copy);
        if (!ok)
            invalid(p, "by_type", "The selected by type is invalid.");
    }
done:
    if (p->nerrors == 0)
        return true;
    json_t *body = NULL;
    char msg[480];
    if (p->nerrors > 1)
        snprintf(msg, sizeof msg, "%s (and %d more error%s)", p->first ? p->first : "Invalid",
                 p->nerrors - 1, p->nerrors > 2 ? "s" : "");
    else
        snprintf(msg, sizeof msg, "%s", p->first ? p->first : "Invalid");
    if (p->errors)
        body = json_pack("{s:s,s:O}", "message", msg, "errors", p->errors);
    json_decref(p->errors);
    reply_json(out, 422, body);
    return false;
}

/* A JSON array of the rows' pre-rendered objects. */
static void reply_rows(bsrv_reply_t *out, const bsrv_brewery_t *const *rows, size_t n)
{
    size_t len = 2;
    for (size_t i = 0; i < n; i++)
        len += rows[i]->json_len + 1;
    char *body = malloc(len), *w = body;
    if (!body) {
        bsrv_reply_message(out, 500, "Server Error");
        return;
    }
    *w++ = '[';
    for (size_t i = 0; i < n; i++) {
        if (i)
            *w++ = ',';
        memcpy(w, rows[i]->json, rows[i]->json_len);
        w += rows[i]->json_len;
    }
    *w++ = ']';
    *out = (bsrv_reply_t){ 200, body, (size_t)(w - body), false };
}

/* Every match, in id order, into a fresh array (*n of them).  Returns NULL
 * with *out set on shutdown or out of memory. */
static const bsrv_brewery_t **collect(const bsrv_dataset_t *ds, const struct params *p,
                                      size_t *n, bsrv_reply_t *out)
{
    struct filter f;
    const bsrv_brewery_t **m = malloc((ds->n ? ds->n : 1) * sizeof *m);
    if (!m || !filter_init(&f, ds, p)) {
        free(m);
        bsrv_reply_message(out, 500, "Server Error");
        return NULL;
    }
    *n = 0;
    for (size_t i = 0; i < ds->n; i++) {
        if (stopped(p->stop)) {
            filter_free(&f);
            free(m);
            reply_stopped(out);
            return NULL;
        }
        if (matches(&f, &ds->rows[i]))
            m[(*n)++] = &ds->rows[i];
    }
    filter_free(&f);
    return m;
}

/* One page of the matches: `sort` and `by_dist` order them all first (that
 * is O(n log n)); otherwise they stay in id order. */
static void list(const bsrv_dataset_t *ds, const struct params *p, bsrv_reply_t *out)
{
    if (p->by_dist && ds->ncoord == 0) {
        bsrv_reply_message(out, 501, "by_dist needs brewery coordinates and this server's data "
                                     "has none (the built-in data never has): start "
                                     "brewery-server with --data FILE.");
        return;
    }
    size_t n;
    const bsrv_brewery_t **m = collect(ds, p, &n, out);
    if (!m)
        return;
    if (p->by_dist && !bsrv_dist_sort(m, n, p->lat, p->lon)) {
        free(m);
        bsrv_reply_message(out, 500, "Server Error");
        return;
    }
    if (p->nsort > 0)
        bsrv_sort_rows(m, n, p->sort, p->nsort);
    /* Skip (page - 1) * per_page matches without overflowing on a huge page. */
    size_t from = n, count = 0;
    if ((unsigned long long)(p->page - 1) <= n / (unsigned long long)p->per_page) {
        from = (size_t)(p->page - 1) * (size_t)p->per_page;
        count = n - from < (size_t)p->per_page ? n - from : (size_t)p->per_page;
    }
    reply_rows(out, m + from, count);
    free(m);
}

static uint64_t mix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* `size` distinct breweries drawn uniformly (all of them, shuffled, if the
 * data has fewer), by Floyd's sampling: O(size^2), never O(n). */
static void random_rows(const bsrv_dataset_t *ds, const struct params *p, bsrv_reply_t *out)
{
    const bsrv_brewery_t *pick[MAX_RANDOM];
    size_t k = (size_t)p->size < ds->n ? (size_t)p->size : ds->n;
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != (ssize_t)sizeof seed) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32);
    }
    size_t got = 0;
    for (size_t j = ds->n - k; j < ds->n; j++) {
        seed = mix64(seed);
        size_t t = (size_t)(seed % (j + 1));
        bool dup = false;
        for (size_t i = 0; i < got && !dup; i++)
            dup = pick[i] == &ds->rows[t];
        pick[got++] = dup ? &ds->rows[j] : &ds->rows[t];
    }
    /* Floyd's picks are a uniform set but not in a uniform order. */
    for (size_t i = got; i > 1; i--) {
        seed = mix64(seed);
        size_t t = (size_t)(seed % i);
        const bsrv_brewery_t *x = pick[i - 1];
        pick[i - 1] = pick[t];
        pick[t] = x;
    }
    reply_rows(out, pick, got);
}

/* At most 15 {id, name} of the search's first matches, in id order. */
static void autocomplete(const bsrv_dataset_t *ds, const struct params *p, bsrv_reply_t *out)
{
    size_t n;
    const bsrv_brewery_t **m = collect(ds, p, &n, out);
    if (!m)
        return;
    json_t *a = json_array();
    bool ok = a != NULL;
    for (size_t i = 0; ok && i < n && i < MAX_AUTOCOMPLETE; i++)
        ok = json_array_append_new(a, json_pack("{s:s,s:s?}", "id", m[i]->f[BSRV_ID], "name",
                                                m[i]->f[BSRV_NAME])) == 0;
    free(m);
    if (!ok) {
        json_decref(a);
        a = NULL;
    }
    reply_json(out, 200, a);
}

static void meta(const bsrv_dataset_t *ds, const struct params *p, bsrv_reply_t *out)
{
    struct filter f;
    size_t *by_state = calloc(ds->nstates + 1, sizeof *by_state);
    size_t *by_type = calloc(ds->ntypes + 1, sizeof *by_type);
    size_t total = 0;
    json_t *o = NULL, *st = NULL, *ty = NULL;

    if (!by_state || !by_type || !filter_init(&f, ds, p)) {
        free(by_state);
        free(by_type);
        bsrv_reply_message(out, 500, "Server Error");
        return;
    }
    for (size_t i = 0; i < ds->n; i++) {
        const bsrv_brewery_t *b = &ds->rows[i];
        if (stopped(p->stop)) {
            filter_free(&f);
            free(by_state);
            free(by_type);
            reply_stopped(out);
            return;
        }
        if (!matches(&f, b))
            continue;
        total++;
        if (b->state >= 0)
            by_state[b->state]++;
        if (b->type >= 0)
            by_type[b->type]++;
    }
    filter_free(&f);
    st = json_object();
    ty = json_object();
    bool ok = st && ty;
    for (size_t i = 0; ok && i < ds->nstates; i++)
        if (by_state[i])
            ok = json_object_set_new(st, ds->states[i], json_integer((json_int_t)by_state[i])) == 0;
    for (size_t i = 0; ok && i < ds->ntypes; i++)
        if (by_type[i])
            ok = json_object_set_new(ty, ds->types[i], json_integer((json_int_t)by_type[i])) == 0;
    if (ok)
        o = json_pack("{s:I,s:O,s:O,s:I,s:I}", "total", (json_int_t)total, "by_state", st,
                      "by_type", ty, "page", (json_int_t)p->page, "per_page",
                      (json_int_t)p->per_page);
    json_decref(st);
    json_decref(ty);
    free(by_state);
    free(by_type);
    reply_json(out, 200, o);
}

/* "/name" or "/name/" */
static bool is_route(const char *rest, const char *name)
{
    size_t n = strlen(name);
    return rest[0] == '/' && strncmp(rest + 1, name, n) == 0 &&
           (rest[n + 1] == '\0' || (rest[n + 1] == '/' && rest[n + 2] == '\0'));
}

void bsrv_route(const bsrv_dataset_t *ds, const char *path, bsrv_arg_fn arg, void *cls,
                bsrv_reply_t *out)
{
    bsrv_route_until(ds, path, arg, cls, NULL, out);
}

void bsrv_route_until(const bsrv_dataset_t *ds, const char *path, bsrv_arg_fn arg, void *cls,
                      const atomic_bool *stop, bsrv_reply_t *out)
{
    static const char prefix[] = "/v1/breweries";
    struct params p;
    const char *rest = strncmp(path, prefix, sizeof prefix - 1) == 0 ? path + sizeof prefix - 1
                                                                     : NULL;
    if (rest && (strcmp(rest, "") == 0 || strcmp(rest, "/") == 0)) {
        if (parse_params(&p, ds, arg, cls, stop, LIST, out))
            list(ds, &p, out);
    } else if (rest && is_route(rest, "meta")) {
        if (parse_params(&p, ds, arg, cls, stop, META, out))
            meta(ds, &p, out);
    } else if (rest && is_route(rest, "random")) {
        if (parse_params(&p, ds, arg, cls, stop, RANDOM, out))
            random_rows(ds, &p, out);
    } else if (rest && is_route(rest, "search")) {
        if (parse_params(&p, ds, arg, cls, stop, SEARCH, out))
            list(ds, &p, out);
    } else if (rest && is_route(rest, "autocomplete")) {
        if (parse_params(&p, ds, arg, cls, stop, AUTOCOMPLETE, out))
            autocomplete(ds, &p, out);
    } else if (rest && rest[0] == '/' && rest[1] && !strchr(rest + 1, '/')) {
        const bsrv_brewery_t *b = bsrv_dataset_find(ds, rest + 1);
        if (b)
            *out = (bsrv_reply_t){ 200, b->json, b->json_len, true };
        else
            bsrv_reply_message(out, 404, "Couldn't find Brewery");
    } else {
        char msg[300], quoted[240];
        utf8_sanitize(quoted, sizeof quoted, path + (*path == '/'), 200);
        snprintf(msg, sizeof msg, "The route %s could not be found.", quoted);
        bsrv_reply_message(out, 404, msg);
    }
}
