/* brewery-server's result orders.  The real service sorts in PostgreSQL, so
 * the choices mirror it where a choice was needed: ascending by default,
 * NULLs last when ascending and first when descending, and (our addition) the
 * id as the last key so that equal rows keep one order across pages.  Text is
 * compared byte-wise with ASCII case folded, not by a locale's collation. */
#include "server-order.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const struct {
    const char *name;
    int field;
} sortable[] = {
    { "id", BSRV_ID },
    { "name", BSRV_NAME },
    { "brewery_type", BSRV_TYPE },
    { "type", BSRV_TYPE },
    { "address_1", BSRV_ADDRESS_1 },
    { "street", BSRV_ADDRESS_1 },
    { "address_2", BSRV_ADDRESS_2 },
    { "address_3", BSRV_ADDRESS_3 },
    { "city", BSRV_CITY },
    { "state_province", BSRV_STATE },
    { "state", BSRV_STATE },
    { "postal_code", BSRV_POSTAL },
    { "country", BSRV_COUNTRY },
    { "phone", BSRV_PHONE },
    { "website_url", BSRV_WEBSITE },
    { "longitude", BSRV_LONGITUDE },
    { "latitude", BSRV_LATITUDE },
};

int bsrv_sort_parse(const char *spec, bsrv_sort_key_t keys[BSRV_MAX_SORT_KEYS])
{
    bsrv_sort_key_t k[BSRV_MAX_SORT_KEYS];
    int n = 0;
    const char *s = spec;
    for (;;) {
        const char *e = s + strcspn(s, ",");
        const char *colon = memchr(s, ':', (size_t)(e - s));
        const char *fe = colon ? colon : e;
        if (n == BSRV_MAX_SORT_KEYS)
            return -1;
        int field = -1;
        for (size_t i = 0; i < sizeof sortable / sizeof sortable[0] && field < 0; i++)
            if (strlen(sortable[i].name) == (size_t)(fe - s) &&
                memcmp(sortable[i].name, s, (size_t)(fe - s)) == 0)
                field = sortable[i].field;
        if (field < 0)
            return -1;
        bool desc = false;
        if (colon) {
            size_t dl = (size_t)(e - colon - 1);
            if (dl == 4 && strncasecmp(colon + 1, "desc", 4) == 0)
                desc = true;
            else if (!(dl == 3 && strncasecmp(colon + 1, "asc", 3) == 0))
                return -1;
        }
        k[n++] = (bsrv_sort_key_t){ field, desc };
        if (*e == '\0')
            break;
        s = e + 1;
    }
    memcpy(keys, k, sizeof k[0] * (size_t)n);
    return n;
}

struct sort_ctx {
    const bsrv_sort_key_t *keys;
    int nkeys;
};

/* One key; the caller has dealt with missing coordinates. */
static int cmp_key(const bsrv_brewery_t *a, const bsrv_brewery_t *b, const bsrv_sort_key_t *k)
{
    int c;
    if (k->field == BSRV_LATITUDE || k->field == BSRV_LONGITUDE) {
        double x = k->field == BSRV_LATITUDE ? a->lat : a->lon;
        double y = k->field == BSRV_LATITUDE ? b->lat : b->lon;
        c = (x > y) - (x < y);
    } else {
        const char *x = a->f[k->field], *y = b->f[k->field];
        /* NULL last ascending, first descending, whatever the direction. */
        if (!x || !y)
            return !x && !y ? 0 : (!x) != k->desc ? 1 : -1;
        c = strcasecmp(x, y);
        if (c == 0)
            c = strcmp(x, y);
    }
    return k->desc ? -c : c;
}

static int cmp_rows(const void *pa, const void *pb, void *arg)
{
    const struct sort_ctx *ctx = arg;
    const bsrv_brewery_t *a = *(const bsrv_brewery_t *const *)pa;
    const bsrv_brewery_t *b = *(const bsrv_brewery_t *const *)pb;
    for (int i = 0; i < ctx->nkeys; i++) {
        const bsrv_sort_key_t *k = &ctx->keys[i];
        int c;
        if ((k->field == BSRV_LATITUDE || k->field == BSRV_LONGITUDE) &&
            (!a->has_coord || !b->has_coord)) {
            if (a->has_coord == b->has_coord)
                continue;
            /* NULL last ascending, first descending. */
            c = a->has_coord ? -1 : 1;
            return k->desc ? -c : c;
        }
        if ((c = cmp_key(a, b, k)) != 0)
            return c;
    }
    return strcmp(a->f[BSRV_ID], b->f[BSRV_ID]);
}

void bsrv_sort_rows(const bsrv_brewery_t **rows, size_t n, const bsrv_sort_key_t *keys, int nkeys)
{
    struct sort_ctx ctx = { keys, nkeys };
    qsort_r(rows, n, sizeof *rows, cmp_rows, &ctx);
}

bool bsrv_dist_parse(const char *s, double *lat, double *lon)
{
    char *end;
    double a = strtod(s, &end);
    if (end == s || *end != ',')
        return false;
    const char *t = end + 1;
    double b = strtod(t, &end);
    if (end == t || *end != '\0' || !(a >= -90 && a <= 90) || !(b >= -180 && b <= 180))
        return false;
    *lat = a;
    *lon = b;
    return true;
}

double bsrv_dist_km(double lat1, double lon1, double lat2, double lon2)
{
    const double rad = M_PI / 180;
    double dphi = (lat2 - lat1) * rad, dl = (lon2 - lon1) * rad;
    double h = sin(dphi / 2) * sin(dphi / 2) +
               cos(lat1 * rad) * cos(lat2 * rad) * sin(dl / 2) * sin(dl / 2);
    return 2 * 6371.0088 * asin(sqrt(h < 1 ? h : 1));
}

struct dist_row {
    double d;
    const bsrv_brewery_t *row;
};

static int cmp_dist(const void *pa, const void *pb)
{
    const struct dist_row *a = pa, *b = pb;
    if (a->d != b->d)
        return a->d < b->d ? -1 : 1;
    return strcmp(a->row->f[BSRV_ID], b->row->f[BSRV_ID]);
}

bool bsrv_dist_sort(const bsrv_brewery_t **rows, size_t n, double lat, double lon)
{
    struct dist_row *d = malloc((n ? n : 1) * sizeof *d);
    if (!d)
        return false;
    for (size_t i = 0; i < n; i++)
        d[i] = (struct dist_row){ rows[i]->has_coord
                                      ? bsrv_dist_km(lat, lon, rows[i]->lat, rows[i]->lon)
                                      : INFINITY,
                                  rows[i] };
    qsort(d, n, sizeof *d, cmp_dist);
    for (size_t i = 0; i < n; i++)
        rows[i] = d[i].row;
    free(d);
    return true;
}
