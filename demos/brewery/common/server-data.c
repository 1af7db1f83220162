/* brewery-server's dataset: the Open Brewery DB CSV read with libcsv, or the
 * built-in table of builtin-states.c expanded into synthetic breweries.  Every
 * row is rendered to JSON once, at load time, so that serving a page is only
 * copying bytes; rows are sorted by id (the real API's default order) and the
 * state and type names are interned so that queries can match each distinct
 * name once.  The loader reads the file one physical line at a time so that
 * an error can name the line it is on, while libcsv still joins quoted fields
 * that span lines. */
#include "server-data.h"
#include "builtin-states.h"

#include <csv.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const bsrv_field_names[BSRV_NFIELDS] = {
    "id", "name", "brewery_type", "address_1", "address_2", "address_3",
    "city", "state_province", "postal_code", "country", "phone", "website_url",
    "longitude", "latitude",
};

static void fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* libcsv's own words for a strict-mode failure are vague. */
static const char *csv_why(struct csv_parser *p)
{
    int e = csv_error(p);
    return e == CSV_EPARSE ? "malformed quoting (a quote inside an unquoted field, text after "
                             "a closing quote, or a quote never closed)"
                           : csv_strerror(e);
}

static json_t *field_json(const char *s)
{
    return s ? json_string(s) : json_null();
}

/* Renders `b` as the API's JSON object: the CSV columns in the API's order,
 * then `state` (= state_province) and `street` (= address_1), the legacy
 * names the v1 API still prints.  Coordinates stay strings, as in the CSV.
 * Returns false if a field is not valid UTF-8 or memory ran out. */
static bool render(bsrv_brewery_t *b)
{
    static const int order[] = {
        BSRV_ID, BSRV_NAME, BSRV_TYPE, BSRV_ADDRESS_1, BSRV_ADDRESS_2, BSRV_ADDRESS_3,
        BSRV_CITY, BSRV_STATE, BSRV_POSTAL, BSRV_COUNTRY, BSRV_LONGITUDE, BSRV_LATITUDE,
        BSRV_PHONE, BSRV_WEBSITE,
    };
    json_t *o = json_object();
    bool ok = o != NULL;
    for (size_t i = 0; ok && i < sizeof order / sizeof order[0]; i++) {
        json_t *v = field_json(b->f[order[i]]);
        ok = v && json_object_set_new(o, bsrv_field_names[order[i]], v) == 0;
    }
    if (ok) {
        json_t *v = field_json(b->f[BSRV_STATE]);
        ok = v && json_object_set_new(o, "state", v) == 0;
    }
    if (ok) {
        json_t *v = field_json(b->f[BSRV_ADDRESS_1]);
        ok = v && json_object_set_new(o, "street", v) == 0;
    }
    if (ok) {
        b->json = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
        ok = b->json != NULL;
        if (ok)
            b->json_len = strlen(b->json);
    }
    json_decref(o);
    return ok;
}

static bool parse_number(const char *s, double lo, double hi, double *out)
{
    char *end;
    if (!s || !*s)
        return false;
    double v = strtod(s, &end);
    if (*end || !(v >= lo && v <= hi))
        return false;
    *out = v;
    return true;
}

/* by_dist needs numbers; the JSON keeps the CSV's strings. */
static void parse_coord(bsrv_brewery_t *b)
{
    b->has_coord = parse_number(b->f[BSRV_LATITUDE], -90, 90, &b->lat) &&
                   parse_number(b->f[BSRV_LONGITUDE], -180, 180, &b->lon);
}

static void brewery_clear(bsrv_brewery_t *b)
{
    for (int i = 0; i < BSRV_NFIELDS; i++)
        free(b->f[i]);
    free(b->json);
    memset(b, 0, sizeof *b);
}

/* Appends a brewery whose fields `f` are moved into the dataset (and cleared
 * in the caller's array) whether or not the call succeeds. */
static bool add_row(bsrv_dataset_t *ds, char *f[BSRV_NFIELDS], size_t line)
{
    bsrv_brewery_t b = { .state = -1, .type = -1, .line = line };
    memcpy(b.f, f, sizeof b.f);
    memset(f, 0, sizeof b.f);
    if (ds->n == ds->cap) {
        size_t cap = ds->cap ? ds->cap * 2 : 1024;
        bsrv_brewery_t *rows = realloc(ds->rows, cap * sizeof *rows);
        if (!rows) {
            brewery_clear(&b);
            return false;
        }
        ds->rows = rows;
        ds->cap = cap;
    }
    if (!b.f[BSRV_ID] || !render(&b)) {
        brewery_clear(&b);
        return false;
    }
    parse_coord(&b);
    ds->ncoord += b.has_coord;
    ds->rows[ds->n++] = b;
    return true;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_id(const void *a, const void *b)
{
    const bsrv_brewery_t *x = a, *y = b;
    return strcmp(x->f[BSRV_ID], y->f[BSRV_ID]);
}

/* Collects the distinct values of field `field` into a sorted array and
 * stores each row's index into it at the int `idx_off` bytes into the row. */
static bool intern(bsrv_dataset_t *ds, int field, char ***out, size_t *nout, size_t idx_off)
{
    char **all = malloc((ds->n ? ds->n : 1) * sizeof *all);
    size_t n = 0;
    if (!all)
        return false;
    for (size_t i = 0; i < ds->n; i++)
        if (ds->rows[i].f[field])
            all[n++] = ds->rows[i].f[field];
    qsort(all, n, sizeof *all, cmp_str);
    size_t u = 0;
    for (size_t i = 0; i < n; i++)
        if (u == 0 || strcmp(all[u - 1], all[i]) != 0)
            all[u++] = all[i];
    /* The names point into rows; copy them so the table owns its strings. */
    char **names = calloc(u ? u : 1, sizeof *names);
    bool ok = names != NULL;
    for (size_t i = 0; ok && i < u; i++)
        ok = (names[i] = strdup(all[i])) != NULL;
    for (size_t i = 0; ok && i < ds->n; i++) {
        int *idx = (int *)((char *)&ds->rows[i] + idx_off);
        const char *v = ds->rows[i].f[field];
        char **hit = v ? bsearch(&v, names, u, sizeof *names, cmp_str) : NULL;
        *idx = hit ? (int)(hit - names) : -1;
    }
    free(all);
    *out = names;
    *nout = u;
    return ok;
}

/* Sorts by id, rejects duplicate ids and interns states and types.  `path`
 * is the CSV's (NULL for the built-in data), for the duplicate's message. */
static int finish(bsrv_dataset_t *ds, const char *path, char *err, size_t errlen)
{
    qsort(ds->rows, ds->n, sizeof *ds->rows, cmp_id);
    for (size_t i = 1; i < ds->n; i++)
        if (strcmp(ds->rows[i - 1].f[BSRV_ID], ds->rows[i].f[BSRV_ID]) == 0) {
            /* qsort is not stable: name the earlier line first whichever
             * of the two rows it left in front. */
            size_t a = ds->rows[i - 1].line, b = ds->rows[i].line;
            if (path)
                fail(err, errlen, "%s: line %zu: duplicate brewery id %s (also on line %zu)", path,
                     a > b ? a : b, ds->rows[i].f[BSRV_ID], a > b ? b : a);
            else
                fail(err, errlen, "duplicate brewery id %s", ds->rows[i].f[BSRV_ID]);
            return -1;
        }
    if (!intern(ds, BSRV_STATE, &ds->states, &ds->nstates, offsetof(bsrv_brewery_t, state)) ||
        !intern(ds, BSRV_TYPE, &ds->types, &ds->ntypes, offsetof(bsrv_brewery_t, type))) {
        fail(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

/* ---- CSV ---------------------------------------------------------------- */

#define MAX_COLUMNS 64

struct loader {
    bsrv_dataset_t *ds;
    const char *path;
    size_t line;          /* physical line being fed to libcsv */
    size_t row_line;      /* line on which the current row started */
    bool header_done;
    int ncols;            /* columns named by the header */
    int colmap[MAX_COLUMNS];  /* column -> enum bsrv_field, or -1 */
    int nfields;          /* fields seen in the current row */
    char *cur[BSRV_NFIELDS];
    bool failed;
    char *err;
    size_t errlen;
};

static void on_field(void *s, size_t len, void *data)
{
    struct loader *L = data;
    if (L->failed)
        return;
    if (L->nfields == 0)
        L->row_line = L->line;
    int col = L->nfields++;
    /* strndup would cut the field at a NUL byte and serve the rest of the
     * row as if the text ended there ("a\0evil" was served as "a"). */
    if (len && memchr(s, '\0', len)) {
        fail(L->err, L->errlen, "%s: line %zu, column %d: a NUL byte in the field", L->path,
             L->line, col + 1);
        L->failed = true;
        return;
    }
    if (!L->header_done) {
        if (col >= MAX_COLUMNS) {
            fail(L->err, L->errlen, "%s: line %zu: more than %d columns in the header",
                 L->path, L->line, MAX_COLUMNS);
            L->failed = true;
            return;
        }
        L->colmap[col] = -1;
        /* A UTF-8 byte order mark may precede the first column's name. */
        if (col == 0 && len >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) {
            s = (char *)s + 3;
            len -= 3;
        }
        for (int f = 0; f < BSRV_NFIELDS; f++)
            if (strlen(bsrv_field_names[f]) == len && memcmp(bsrv_field_names[f], s, len) == 0)
                L->colmap[col] = f;
        /* Two columns of one name: each row's later value silently won. */
        for (int c = 0; L->colmap[col] >= 0 && c < col; c++)
            if (L->colmap[c] == L->colmap[col]) {
                fail(L->err, L->errlen, "%s: line %zu: column \"%s\" is named twice (columns %d and %d)",
                     L->path, L->line, bsrv_field_names[L->colmap[col]], c + 1, col + 1);
                L->failed = true;
                return;
            }
        L->ncols = col + 1;
        return;
    }
    if (col >= L->ncols || L->colmap[col] < 0 || len == 0)
        return;
    int f = L->colmap[col];
    free(L->cur[f]);
    L->cur[f] = strndup(s, len);
    if (!L->cur[f]) {
        fail(L->err, L->errlen, "out of memory");
        L->failed = true;
    }
}

static void on_row(int c, void *data)
{
    struct loader *L = data;
    (void)c;
    if (L->failed)
        return;
    int got = L->nfields;
    L->nfields = 0;
    if (!L->header_done) {
        bool seen[BSRV_NFIELDS] = { false };
        for (int i = 0; i < L->ncols; i++)
            if (L->colmap[i] >= 0)
                seen[L->colmap[i]] = true;
        static const int required[] = { BSRV_ID, BSRV_NAME, BSRV_STATE };
        for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
            if (!seen[required[i]]) {
                fail(L->err, L->errlen, "%s: line %zu: header has no column \"%s\"", L->path,
                     L->row_line, bsrv_field_names[required[i]]);
                L->failed = true;
                return;
            }
        L->header_done = true;
        return;
    }
    if (got != L->ncols) {
        fail(L->err, L->errlen, "%s: line %zu: expected %d fields, got %d", L->path, L->row_line,
             L->ncols, got);
        L->failed = true;
    } else if (!L->cur[BSRV_ID]) {
        fail(L->err, L->errlen, "%s: line %zu: empty id", L->path, L->row_line);
        L->failed = true;
    } else if (!add_row(L->ds, L->cur, L->row_line)) {
        fail(L->err, L->errlen, "%s: line %zu: invalid UTF-8 or out of memory", L->path, L->row_line);
        L->failed = true;
    }
    for (int i = 0; i < BSRV_NFIELDS; i++) {
        free(L->cur[i]);
        L->cur[i] = NULL;
    }
}

int bsrv_dataset_load_csv(bsrv_dataset_t *ds, const char *path, char *err, size_t errlen)
{
    struct loader L = { .ds = ds, .path = path, .err = err, .errlen = errlen };
    struct csv_parser p;
    char *buf = NULL;
    size_t cap = 0;
    ssize_t len;
    int rc = -1;

    memset(ds, 0, sizeof *ds);
    FILE *fp = fopen(path, "r");
    if (!fp) {
        fail(err, errlen, "%s: %m", path);
        return -1;
    }
    if (csv_init(&p, CSV_STRICT | CSV_STRICT_FINI) != 0) {
        fail(err, errlen, "out of memory");
        fclose(fp);
        return -1;
    }
    while (!L.failed && (len = getline(&buf, &cap, fp)) > 0) {
        L.line++;
        if (csv_parse(&p, buf, (size_t)len, on_field, on_row, &L) != (size_t)len && !L.failed) {
            fail(err, errlen, "%s: line %zu: %s", path, L.line, csv_why(&p));
            L.failed = true;
        }
    }
    /* getline's errno, taken before anything else can change it: fopen
     * opens a directory for reading and getline then fails with EISDIR,
     * which used to read as a bare "read error". */
    int read_errno = errno;
    if (!L.failed && ferror(fp)) {
        fail(err, errlen, "%s: read error: %s", path, strerror(read_errno));
        L.failed = true;
    }
    if (!L.failed && csv_fini(&p, on_field, on_row, &L) != 0 && !L.failed) {
        fail(err, errlen, "%s: line %zu: %s", path, L.row_line, csv_why(&p));
        L.failed = true;
    }
    if (!L.failed && !L.header_done) {
        fail(err, errlen, "%s: empty file, no header row", path);
        L.failed = true;
    }
    if (!L.failed)
        rc = finish(ds, path, err, errlen);
    for (int i = 0; i < BSRV_NFIELDS; i++)
        free(L.cur[i]);
    csv_free(&p);
    free(buf);
    fclose(fp);
    if (rc != 0)
        bsrv_dataset_free(ds);
    return rc;
}

/* ---- built-in ----------------------------------------------------------- */

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static char *fmt(const char *f, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, f);
    if (vasprintf(&s, f, ap) < 0)
        s = NULL;
    va_end(ap);
    return s;
}

int bsrv_dataset_builtin(bsrv_dataset_t *ds, char *err, size_t errlen)
{
    size_t serial = 0;
    memset(ds, 0, sizeof *ds);
    for (size_t r = 0; r < bsrv_builtin_nrows; r++) {
        const bsrv_builtin_row_t *t = &bsrv_builtin_rows[r];
        /* Number breweries within a state so that names read "Ohio Brewery 12". */
        if (r == 0 || strcmp(t->state, bsrv_builtin_rows[r - 1].state) != 0)
            serial = 0;
        for (unsigned k = 0; k < t->count; k++) {
            uint64_t a = splitmix64(ds->n * 2 + 1), b = splitmix64(ds->n * 2 + 2);
            char *f[BSRV_NFIELDS] = { NULL };
            serial++;
            /* A version-4-shaped UUID, fixed for a given table. */
            f[BSRV_ID] = fmt("%08" PRIx32 "-%04" PRIx32 "-4%03" PRIx32 "-%" PRIx32 "%03" PRIx32
                             "-%012" PRIx64, (uint32_t)(a >> 32), (uint32_t)(a >> 16) & 0xffff,
                             (uint32_t)a & 0xfff, 8 + (uint32_t)(b >> 62),
                             (uint32_t)(b >> 48) & 0xfff, b & 0xffffffffffffull);
            f[BSRV_NAME] = fmt("%s Brewery %zu", t->state, serial);
            f[BSRV_TYPE] = strdup(t->type);
            f[BSRV_ADDRESS_1] = fmt("%zu Main Street", serial);
            f[BSRV_CITY] = strdup(t->state);
            f[BSRV_STATE] = strdup(t->state);
            f[BSRV_POSTAL] = fmt("%05zu", serial);
            f[BSRV_COUNTRY] = strdup(t->country);
            bool ok = f[BSRV_ID] && f[BSRV_NAME] && f[BSRV_TYPE] && f[BSRV_ADDRESS_1] &&
                      f[BSRV_CITY] && f[BSRV_STATE] && f[BSRV_POSTAL] && f[BSRV_COUNTRY];
            if (!ok) {
                for (int i = 0; i < BSRV_NFIELDS; i++)
                    free(f[i]);
            }
            if (!ok || !add_row(ds, f, 0)) {
                fail(err, errlen, "out of memory");
                bsrv_dataset_free(ds);
                return -1;
            }
        }
    }
    if (finish(ds, NULL, err, errlen) != 0) {
        bsrv_dataset_free(ds);
        return -1;
    }
    return 0;
}

const bsrv_brewery_t *bsrv_dataset_find(const bsrv_dataset_t *ds, const char *id)
{
    bsrv_brewery_t key = { .f = { [BSRV_ID] = (char *)id } };
    return ds->n ? bsearch(&key, ds->rows, ds->n, sizeof key, cmp_id) : NULL;
}

void bsrv_dataset_free(bsrv_dataset_t *ds)
{
    for (size_t i = 0; i < ds->n; i++)
        brewery_clear(&ds->rows[i]);
    free(ds->rows);
    for (size_t i = 0; i < ds->nstates; i++)
        free(ds->states[i]);
    free(ds->states);
    for (size_t i = 0; i < ds->ntypes; i++)
        free(ds->types[i]);
    free(ds->types);
    memset(ds, 0, sizeof *ds);
}
