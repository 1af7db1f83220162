/* The rest of the brewery-server's v1 API (issue 12), each endpoint checked
 * against the shared CSV as the test reads it with libcsv: by_country,
 * by_postal, by_ids, by_dist, sort, random, search and autocomplete, and the
 * new filters on meta and on the built-in data. */
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <ctype.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support/brewery.h"
#include "support/run.h"

TestSuite(brewery_server, .init = srv_suite_init, .fini = srv_suite_fini);

/* Every row of every page of `path` (which has no page/per_page), 200 a page. */
static json_t *all_pages(const srv_t *s, const char *path)
{
    json_t *all = json_array();
    for (int page = 1;; page++) {
        char p[2048];
        snprintf(p, sizeof p, "%s%cper_page=200&page=%d", path, strchr(path, '?') ? '&' : '?',
                 page);
        json_t *a = srv_get_json(s, p);
        cr_assert(json_is_array(a), "%s: not an array", p);
        json_array_extend(all, a);
        size_t n = json_array_size(a);
        json_decref(a);
        if (n < 200)
            return all;
        cr_assert_lt(page, 100, "paging does not end");
    }
}

static const char *jstr(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* Underscores for spaces, as clients write query values. */
static void underscored(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src);
    for (char *c = dst; *c; c++)
        if (*c == ' ')
            *c = '_';
}

/* Orders row indices of a table with a comparator that sees the table. */
typedef int (*row_cmp_fn)(const csv_table_t *t, size_t a, size_t b);

struct row_sort {
    const csv_table_t *t;
    row_cmp_fn cmp;
};

static int row_sort_cmp(const void *a, const void *b, void *arg)
{
    const struct row_sort *rs = arg;
    return rs->cmp(rs->t, *(const size_t *)a, *(const size_t *)b);
}

static void sort_rows(const csv_table_t *t, size_t *ix, size_t n, row_cmp_fn cmp)
{
    struct row_sort rs = { t, cmp };
    qsort_r(ix, n, sizeof *ix, row_sort_cmp, &rs);
}

static int by_id(const csv_table_t *t, size_t a, size_t b)
{
    return strcmp(csv_cell(t, a, "id"), csv_cell(t, b, "id"));
}

Test(brewery_server, api_by_country_matches_csv, .timeout = 120)
{
    srv_t s, b;
    srv_start_on_csv(&s);
    csv_table_t *t = csv_table_load(CSV);
    srv_start(&b, "--latency", "0", NULL);
    /* Every distinct country, counted in the file, against both data sets. */
    char **seen = calloc(t->nrows, sizeof *seen);
    size_t ns = 0;
    for (size_t r = 0; r < t->nrows; r++) {
        const char *c = csv_cell(t, r, "country");
        bool dup = !*c;
        for (size_t i = 0; i < ns && !dup; i++)
            dup = strcmp(seen[i], c) == 0;
        if (!dup)
            seen[ns++] = (char *)c;
    }
    cr_assert_gt(ns, 5);
    for (size_t i = 0; i < ns; i++) {
        long want = 0;
        for (size_t r = 0; r < t->nrows; r++)
            want += strcmp(csv_cell(t, r, "country"), seen[i]) == 0;
        char u[256], q[600];
        underscored(u, sizeof u, seen[i]);
        char *e = curl_easy_escape(NULL, u, 0);
        snprintf(q, sizeof q, "by_country=%s", e);
        curl_free(e);
        if (strlen(seen[i]) < 3)
            continue;   /* below the filter's 3-character minimum */
        cr_expect_eq(srv_meta_total(&s, q), want, "%s (CSV)", seen[i]);
        cr_expect_eq(srv_meta_total(&b, q), want, "%s (built-in)", seen[i]);
    }
    /* Case does not matter, a prefix is not a match. */
    long us = 0;
    for (size_t r = 0; r < t->nrows; r++)
        us += strcmp(csv_cell(t, r, "country"), "United States") == 0;
    cr_expect_eq(srv_meta_total(&s, "by_country=UNITED%20states"), us);
    cr_expect_eq(srv_meta_total(&s, "by_country=united"), 0);
    free(seen);
    csv_table_free(t);
    srv_stop(&s);
    srv_stop(&b);
}

static bool postal_prefix(const char *q, const char *v)
{
    for (; *q; q++, v++)
        if (!*v || (*q != '_' && tolower((unsigned char)*q) != tolower((unsigned char)*v)))
            return false;
    return true;
}

Test(brewery_server, api_by_postal_is_a_5_or_9_digit_prefix, .timeout = 120)
{
    srv_t s;
    srv_start_on_csv(&s);
    csv_table_t *t = csv_table_load(CSV);
    int tried9 = 0;
    for (size_t r = 0, k = 0; r < t->nrows && k < 25; r += 397) {
        const char *pc = csv_cell(t, r, "postal_code");
        if (strlen(pc) < 5)
            continue;
        k++;
        char q5[6], q9[16], path[64];
        snprintf(q5, sizeof q5, "%.5s", pc);
        long want = 0;
        for (size_t i = 0; i < t->nrows; i++)
            want += postal_prefix(q5, csv_cell(t, i, "postal_code"));
        char *e = curl_easy_escape(NULL, q5, 0);
        snprintf(path, sizeof path, "by_postal=%s", e);
        curl_free(e);
        cr_expect_eq(srv_meta_total(&s, path), want, "%s", path);
        if (strlen(pc) == 10 && pc[5] == '-') {
            /* postal+4 with '-' and with '_', as the documentation allows. */
            for (int sep = 0; sep < 2; sep++) {
                snprintf(q9, sizeof q9, "%.5s%c%.4s", pc, sep ? '_' : '-', pc + 6);
                want = 0;
                for (size_t i = 0; i < t->nrows; i++)
                    want += postal_prefix(q9, csv_cell(t, i, "postal_code"));
                cr_expect_geq(want, 1);
                snprintf(path, sizeof path, "by_postal=%s", q9);
                cr_expect_eq(srv_meta_total(&s, path), want, "%s", path);
                tried9++;
            }
        }
    }
    cr_expect_gt(tried9, 0, "no 9-digit postal code was tried");
    csv_table_free(t);
    srv_stop(&s);
}

/* The ids of a JSON array of breweries, in order, into ids[cap]. */
static size_t ids_of(json_t *a, const char **ids, size_t cap)
{
    size_t n = json_array_size(a);
    for (size_t i = 0; i < n && i < cap; i++)
        ids[i] = jstr(json_array_get(a, i), "id");
    return n;
}

Test(brewery_server, api_by_ids_returns_exactly_those, .timeout = 60)
{
    srv_t s;
    srv_start_on_csv(&s);
    csv_table_t *t = csv_table_load(CSV);
    size_t pick[] = { 7, 100, 2000, 7000, t->nrows - 1 };
    char path[1024] = "/v1/breweries?by_ids=";
    for (size_t i = 0; i < 5; i++) {
        strcat(path, csv_cell(t, pick[i], "id"));
        strcat(path, i == 2 ? ",%20" : ",");
    }
    strcat(path, "no-such-id");
    json_t *a = srv_get_json(&s, path);
    cr_assert_eq(json_array_size(a), 5, "%s: %zu rows", path, json_array_size(a));
    sort_rows(t, pick, 5, by_id);
    for (size_t i = 0; i < 5; i++) {
        json_t *o = json_array_get(a, i);
        cr_expect_str_eq(jstr(o, "id"), csv_cell(t, pick[i], "id"));
        cr_expect_str_eq(jstr(o, "name"), csv_cell(t, pick[i], "name"));
    }
    json_decref(a);
    snprintf(path, sizeof path, "by_ids=%s,%s", csv_cell(t, 3, "id"), csv_cell(t, 4, "id"));
    cr_expect_eq(srv_meta_total(&s, path), 2);
    srv_expect_error(&s, 422, "/v1/breweries?by_ids=", "by_ids");
    csv_table_free(t);
    srv_stop(&s);
}

static double to_rad(double d)
{
    return d * M_PI / 180;
}

static double haversine(double la1, double lo1, double la2, double lo2)
{
    double a = sin(to_rad(la2 - la1) / 2), b = sin(to_rad(lo2 - lo1) / 2);
    double h = a * a + cos(to_rad(la1)) * cos(to_rad(la2)) * b * b;
    return 2 * 6371.0088 * asin(sqrt(h));
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

Test(brewery_server, api_by_dist_orders_by_distance, .timeout = 60)
{
    srv_t s;
    srv_start_on_csv(&s);
    csv_table_t *t = csv_table_load(CSV);
    const double lat = 38.8977, lon = -77.0365;
    double *d = malloc(t->nrows * sizeof *d);
    size_t nd = 0;
    for (size_t r = 0; r < t->nrows; r++) {
        const char *la = csv_cell(t, r, "latitude"), *lo = csv_cell(t, r, "longitude");
        if (*la && *lo)
            d[nd++] = haversine(lat, lon, atof(la), atof(lo));
    }
    qsort(d, nd, sizeof *d, cmp_double);
    /* Pages 1 and 3 of 100: the k-th answer is at the k-th smallest distance. */
    for (int page = 1; page <= 3; page += 2) {
        char path[128];
        snprintf(path, sizeof path, "/v1/breweries?by_dist=%g,%g&per_page=100&page=%d", lat, lon,
                 page);
        json_t *a = srv_get_json(&s, path);
        cr_assert_eq(json_array_size(a), 100);
        for (size_t i = 0; i < 100; i++) {
            json_t *o = json_array_get(a, i);
            double di = haversine(lat, lon, atof(jstr(o, "latitude")), atof(jstr(o, "longitude")));
            size_t k = (size_t)(page - 1) * 100 + i;
            cr_expect(fabs(di - d[k]) < 1e-6, "page %d row %zu: %.9f km, want %.9f", page, i, di,
                      d[k]);
        }
        json_decref(a);
    }
    /* Rows without coordinates come after all the others. */
    long total = srv_meta_total(&s, "per_page=1");
    char path[128];
    snprintf(path, sizeof path, "/v1/breweries?by_dist=0,0&per_page=200&page=%ld",
             (total + 199) / 200);
    json_t *last = srv_get_json(&s, path);
    json_t *o = json_array_get(last, json_array_size(last) - 1);
    cr_expect(json_is_null(json_object_get(o, "latitude")), "the last row has coordinates");
    json_decref(last);
    srv_expect_error(&s, 422, "/v1/breweries?by_dist=91,0", "by_dist");
    srv_expect_error(&s, 422, "/v1/breweries?by_dist=abc", "by_dist");
    srv_expect_error(&s, 422, "/v1/breweries?by_dist=1,2&sort=name", "sort");
    srv_resp_t r = srv_get(&s, "/v1/breweries?by_dist=1,2&sort=name");
    cr_expect_not_null(strstr(r.body, "by_dist"), "the 422 does not say why: %s", r.body);
    free(r.body);
    free(d);
    csv_table_free(t);
    srv_stop(&s);

    /* The built-in data has no coordinates: a clear 501, not a silent order. */
    srv_start(&s, "--latency", "0", NULL);
    r = srv_get(&s, "/v1/breweries?by_dist=1,2");
    cr_expect_eq(r.status, 501);
    cr_expect_not_null(strstr(r.body ? r.body : "", "--data"), "%s", r.body);
    free(r.body);
    srv_stop(&s);
}

/* The order the documentation's example asks for, done by the test:
 * brewery_type ascending, then name descending, empty last when ascending
 * and first when descending, ASCII case ignored, ids breaking ties. */
static int null_cmp(const char *x, const char *y, bool desc)
{
    if (!*x || !*y)
        return !*x && !*y ? 0 : (!*x) != desc ? 1 : -1;
    int c = strcasecmp(x, y);
    if (c == 0)
        c = strcmp(x, y);
    return desc ? -c : c;
}

static int by_type_name_desc(const csv_table_t *t, size_t a, size_t b)
{
    int c = null_cmp(csv_cell(t, a, "brewery_type"), csv_cell(t, b, "brewery_type"), false);
    if (!c)
        c = null_cmp(csv_cell(t, a, "name"), csv_cell(t, b, "name"), true);
    return c ? c : by_id(t, a, b);
}

static int by_city_desc(const csv_table_t *t, size_t a, size_t b)
{
    int c = null_cmp(csv_cell(t, a, "city"), csv_cell(t, b, "city"), true);
    return c ? c : by_id(t, a, b);
}

static void expect_order(const srv_t *s, const csv_table_t *t, const char *query,
                         const char *state, row_cmp_fn cmp)
{
    size_t *ix = malloc(t->nrows * sizeof *ix), n = 0;
    for (size_t r = 0; r < t->nrows; r++)
        if (strcmp(csv_cell(t, r, "state_province"), state) == 0)
            ix[n++] = r;
    sort_rows(t, ix, n, cmp);
    json_t *a = all_pages(s, query);
    cr_assert_eq(json_array_size(a), n, "%s: %zu rows, want %zu", query, json_array_size(a), n);
    for (size_t i = 0; i < n; i++)
        cr_assert_str_eq(jstr(json_array_get(a, i), "id"), csv_cell(t, ix[i], "id"),
                         "%s: row %zu differs", query, i);
    json_decref(a);
    free(ix);
}

Test(brewery_server, api_sort_matches_csv_order, .timeout = 60)
{
    srv_t s;
    srv_start_on_csv(&s);
    csv_table_t *t = csv_table_load(CSV);
    expect_order(&s, t, "/v1/breweries?by_state=ohio&sort=type,name:desc", "Ohio",
                 by_type_name_desc);
    expect_order(&s, t, "/v1/breweries?by_state=california&sort=brewery_type:asc,name:DESC",
                 "California", by_type_name_desc);
    expect_order(&s, t, "/v1/breweries?by_state=new_york&sort=city:desc", "New York",
                 by_city_desc);
    /* Latitude sorts as a number, empty ones last. */
    json_t *a = all_pages(&s, "/v1/breweries?by_state=maryland&sort=latitude");
    bool seen_null = false;
    double prev = -1e9;
    for (size_t i = 0; i < json_array_size(a); i++) {
        const char *la = jstr(json_array_get(a, i), "latitude");
        if (!la) {
            seen_null = true;
            continue;
        }
        cr_expect(!seen_null, "a latitude after an empty one at row %zu", i);
        cr_expect_geq(atof(la), prev, "row %zu", i);
        prev = atof(la);
    }
    json_decref(a);
    srv_expect_error(&s, 422, "/v1/breweries?sort=bogus", "sort");
    srv_expect_error(&s, 422, "/v1/breweries?sort=name:up", "sort");
    srv_expect_error(&s, 422, "/v1/breweries?sort=name,", "sort");
    srv_expect_error(&s, 422, "/v1/breweries?sort=a,b,c,d,e,f,g,h,i", "sort");
    csv_table_free(t);
    srv_stop(&s);
}

Test(brewery_server, api_random_breweries, .timeout = 60)
{
    srv_t s;
    srv_start_on_csv(&s);
    csv_table_t *t = csv_table_load(CSV);
    size_t *ix = malloc(t->nrows * sizeof *ix);
    for (size_t i = 0; i < t->nrows; i++)
        ix[i] = i;
    sort_rows(t, ix, t->nrows, by_id);
    json_t *one = srv_get_json(&s, "/v1/breweries/random");
    cr_expect(json_is_array(one) && json_array_size(one) == 1, "default size is 1");
    json_decref(one);
    json_t *a = srv_get_json(&s, "/v1/breweries/random?size=50");
    json_t *b = srv_get_json(&s, "/v1/breweries/random?size=50");
    cr_assert_eq(json_array_size(a), 50);
    const char *ids[50];
    ids_of(a, ids, 50);
    int same = 0;
    for (size_t i = 0; i < 50; i++) {
        for (size_t j = 0; j < i; j++)
            cr_expect_str_neq(ids[i], ids[j], "a brewery twice in one draw");
        /* Each is a real row of the file, field for field. */
        size_t lo = 0, hi = t->nrows;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (strcmp(csv_cell(t, ix[mid], "id"), ids[i]) < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        cr_assert(lo < t->nrows && strcmp(csv_cell(t, ix[lo], "id"), ids[i]) == 0, "no row %s",
                  ids[i]);
        cr_expect_str_eq(jstr(json_array_get(a, i), "name"), csv_cell(t, ix[lo], "name"));
        same += strcmp(ids[i], jstr(json_array_get(b, i), "id")) == 0;
    }
    cr_expect_lt(same, 50, "two draws of 50 were identical");
    json_decref(a);
    json_decref(b);
    srv_expect_error(&s, 422, "/v1/breweries/random?size=51", "size");
    srv_expect_error(&s, 422, "/v1/breweries/random?size=0", "size");
    srv_expect_error(&s, 422, "/v1/breweries/random?size=x", "size");
    free(ix);
    csv_table_free(t);
    srv_stop(&s);
}

/* The rows /search?query=q should find: q LIKE'd into name, city or state. */
static size_t search_ref(const csv_table_t *t, const char *q, size_t *ix)
{
    size_t n = 0;
    for (size_t r = 0; r < t->nrows; r++)
        if (srv_like_ref(q, csv_cell(t, r, "name")) ||
            (*csv_cell(t, r, "city") && srv_like_ref(q, csv_cell(t, r, "city"))) ||
            srv_like_ref(q, csv_cell(t, r, "state_province")))
            ix[n++] = r;
    sort_rows(t, ix, n, by_id);
    return n;
}

Test(brewery_server, api_search_and_autocomplete_match_csv, .timeout = 120)
{
    srv_t s;
    srv_start_on_csv(&s);
    csv_table_t *t = csv_table_load(CSV);
    size_t *ix = malloc(t->nrows * sizeof *ix);
    static const char *const queries[] = { "dog", "san_diego", "Bayern", "x", "brew%co", "zzzzqqq" };
    for (size_t q = 0; q < sizeof queries / sizeof queries[0]; q++) {
        size_t n = search_ref(t, queries[q], ix);
        char path[256];
        char *e = curl_easy_escape(NULL, queries[q], 0);
        snprintf(path, sizeof path, "/v1/breweries/search?query=%s", e);
        json_t *a = all_pages(&s, path);
        cr_expect_eq(json_array_size(a), n, "%s: %zu, want %zu", queries[q], json_array_size(a), n);
        for (size_t i = 0; i < n && i < json_array_size(a); i++)
            cr_expect_str_eq(jstr(json_array_get(a, i), "id"), csv_cell(t, ix[i], "id"));
        json_decref(a);
        /* Paged like the list: page 2 of 3 starts with the fourth match. */
        if (n > 3) {
            snprintf(path, sizeof path, "/v1/breweries/search?query=%s&per_page=3&page=2", e);
            json_t *p2 = srv_get_json(&s, path);
            cr_expect_str_eq(jstr(json_array_get(p2, 0), "id"), csv_cell(t, ix[3], "id"));
            json_decref(p2);
        }
        snprintf(path, sizeof path, "/v1/breweries/autocomplete?query=%s", e);
        curl_free(e);
        json_t *ac = srv_get_json(&s, path);
        size_t want = n < 15 ? n : 15;
        cr_expect_eq(json_array_size(ac), want, "%s: %zu suggestions", queries[q],
                     json_array_size(ac));
        for (size_t i = 0; i < json_array_size(ac) && i < want; i++) {
            json_t *o = json_array_get(ac, i);
            cr_expect_eq(json_object_size(o), 2, "autocomplete objects are {id, name}");
            cr_expect_str_eq(jstr(o, "id"), csv_cell(t, ix[i], "id"));
            cr_expect_str_eq(jstr(o, "name"), csv_cell(t, ix[i], "name"));
        }
        json_decref(ac);
    }
    srv_expect_error(&s, 422, "/v1/breweries/search", "query");
    srv_expect_error(&s, 422, "/v1/breweries/search?query=", "query");
    srv_expect_error(&s, 422, "/v1/breweries/autocomplete", "query");
    free(ix);
    csv_table_free(t);
    srv_stop(&s);
}

Test(brewery_server, api_new_filters_on_meta_and_builtin, .timeout = 60)
{
    srv_t s;
    srv_start_on_csv(&s);
    csv_table_t *t = csv_table_load(CSV);
    /* meta counts what the list returns, for the new filters together. */
    const char *q = "by_country=united_states&by_postal=940&by_type=micro";
    long want = 0;
    for (size_t r = 0; r < t->nrows; r++)
        want += strcmp(csv_cell(t, r, "country"), "United States") == 0 &&
                strncmp(csv_cell(t, r, "postal_code"), "940", 3) == 0 &&
                strcmp(csv_cell(t, r, "brewery_type"), "micro") == 0;
    char path[256];
    snprintf(path, sizeof path, "/v1/breweries?%s", q);
    json_t *a = all_pages(&s, path);
    cr_expect_eq((long)json_array_size(a), want);
    json_decref(a);
    cr_expect_eq(srv_meta_total(&s, q), want);
    cr_expect_eq(srv_meta_total(&s, "by_dist=40,-100"), (long)t->nrows, "by_dist filters nothing");
    srv_stop(&s);
    csv_table_free(t);

    /* The built-in data serves every endpoint but by_dist. */
    srv_start(&s, "--latency", "0", NULL);
    json_t *r = srv_get_json(&s, "/v1/breweries/random?size=3");
    cr_expect_eq(json_array_size(r), 3);
    const char *id = jstr(json_array_get(r, 0), "id");
    snprintf(path, sizeof path, "by_ids=%s", id);
    cr_expect_eq(srv_meta_total(&s, path), 1);
    json_decref(r);
    json_t *sr = srv_get_json(&s, "/v1/breweries/search?query=ohio&per_page=200");
    cr_expect_gt(json_array_size(sr), 0);
    json_decref(sr);
    json_t *ac = srv_get_json(&s, "/v1/breweries/autocomplete?query=ohio");
    cr_expect_eq(json_array_size(ac), 15);
    json_decref(ac);
    json_t *so = srv_get_json(&s, "/v1/breweries?by_state=ohio&sort=name:desc&per_page=2");
    cr_expect_eq(json_array_size(so), 2);
    cr_expect_gt(strcmp(jstr(json_array_get(so, 0), "name"), jstr(json_array_get(so, 1), "name")), 0);
    json_decref(so);
    srv_stop(&s);
}
