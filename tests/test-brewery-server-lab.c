/* The brewery-server's answers to the lab's queries: the four counts by
 * paging and by meta, with the shared CSV and with the built-in data; the
 * by_state LIKE match (any case, '_' a wildcard, West Virginia inside
 * virginia) and the other filters; validation (422) and 404s; paging, the
 * fields of a brewery, one brewery by id; and the methods it accepts. */
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

#include "support/brewery.h"
#include "support/run.h"

TestSuite(brewery_server, .init = srv_suite_init, .fini = srv_suite_fini);

/* The lab's states and the real service's counts for them. */
static const struct {
    const char *query;
    long count;
} lab[] = {
    { "district_of_columbia", 22 },
    { "maryland", 158 },
    { "new_york", 419 },
    { "virginia", 295 },
};

/* Counts a state the lab's way: per_page=200, next page until a short one. */
static long count_by_paging(const srv_t *s, const char *state, long *pages)
{
    long total = 0;
    *pages = 0;
    for (int page = 1;; page++) {
        char path[256];
        snprintf(path, sizeof path, "/v1/breweries?by_state=%s&per_page=200&page=%d", state, page);
        json_t *a = srv_get_json(s, path);
        cr_assert(json_is_array(a));
        size_t n = json_array_size(a);
        total += (long)n;
        ++*pages;
        json_decref(a);
        if (n < 200)
            return total;
        cr_assert_lt(page, 100, "paging does not end");
    }
}

static void check_lab_counts(const srv_t *s)
{
    for (size_t i = 0; i < sizeof lab / sizeof lab[0]; i++) {
        long pages, n = count_by_paging(s, lab[i].query, &pages);
        cr_expect_eq(n, lab[i].count, "%s by paging: %ld, want %ld", lab[i].query, n,
                     lab[i].count);
        cr_expect_eq(pages, lab[i].count / 200 + 1);
        char q[64];
        snprintf(q, sizeof q, "by_state=%s", lab[i].query);
        long m = srv_meta_total(s, q);
        cr_expect_eq(m, lab[i].count, "%s by meta: %ld, want %ld", lab[i].query, m, lab[i].count);
    }
}

Test(brewery_server, csv_lab_counts, .timeout = 60)
{
    srv_t s;
    srv_start_on_csv(&s);
    check_lab_counts(&s);
    /* The whole file, and West Virginia inside "virginia" as the service does. */
    cr_expect_eq(srv_meta_total(&s, "per_page=1"), 11822);
    json_t *m = srv_get_json(&s, "/v1/breweries/meta?by_state=virginia");
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(m, "by_state"), "Virginia")), 255);
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(m, "by_state"), "West Virginia")), 40);
    cr_expect(json_is_object(json_object_get(m, "by_type")));
    cr_expect_eq(json_integer_value(json_object_get(m, "page")), 1);
    cr_expect_eq(json_integer_value(json_object_get(m, "per_page")), 50);
    json_decref(m);
    srv_stop(&s);
}

Test(brewery_server, builtin_lab_counts, .timeout = 60)
{
    srv_t s;
    srv_start(&s, "--latency", "0", NULL);
    check_lab_counts(&s);
    cr_expect_eq(srv_meta_total(&s, "per_page=1"), 11822);
    srv_stop(&s);
}

Test(brewery_server, builtin_matches_csv_per_state, .timeout = 60)
{
    srv_t a, b;
    srv_start_on_csv(&a);
    srv_start(&b, "--latency", "0", NULL);
    json_t *ma = srv_get_json(&a, "/v1/breweries/meta?per_page=200");
    json_t *mb = srv_get_json(&b, "/v1/breweries/meta?per_page=200");
    cr_expect(json_equal(json_object_get(ma, "by_state"), json_object_get(mb, "by_state")),
              "per-state counts of the built-in data differ from the CSV's");
    cr_expect(json_equal(json_object_get(ma, "by_type"), json_object_get(mb, "by_type")));
    json_decref(ma);
    json_decref(mb);
    srv_stop(&a);
    srv_stop(&b);
}

Test(brewery_server, state_match_is_like_case_insensitive_with_wildcard, .timeout = 30)
{
    srv_t s;
    srv_start(&s, "--latency", "0", NULL);
    static const char *const ny[] = { "by_state=new_york", "by_state=NEW_YORK",
                                      "by_state=New%20York", "by_state=new+york",
                                      "by_state=nEw%20yOrK", "by_state=ew_yor" };
    for (size_t i = 0; i < sizeof ny / sizeof ny[0]; i++)
        cr_expect_eq(srv_meta_total(&s, ny[i]), 419, "%s", ny[i]);
    cr_expect_eq(srv_meta_total(&s, "by_state=v_rginia"), 295);
    cr_expect_eq(srv_meta_total(&s, "by_state=west_virginia"), 40);
    cr_expect_eq(srv_meta_total(&s, "by_state=district%20of%20columbia"), 22);
    cr_expect_eq(srv_meta_total(&s, "by_state=no_such_state"), 0);
    json_t *a = srv_get_json(&s, "/v1/breweries?by_state=no_such_state");
    cr_expect(json_is_array(a) && json_array_size(a) == 0);
    json_decref(a);
    srv_stop(&s);
}

Test(brewery_server, other_filters, .timeout = 30)
{
    srv_t s;
    srv_start_on_csv(&s);
    cr_expect_eq(srv_meta_total(&s, "by_state=new_york&by_type=micro"), 226);
    cr_expect_eq(srv_meta_total(&s, "by_state=new_york&by_type=micro,brewpub"), 337);
    json_t *a = srv_get_json(&s, "/v1/breweries?by_city=tupper%20lake&by_name=big_tupper");
    cr_expect_eq(json_array_size(a), 1);
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(a, 0), "name")),
                     "Big Tupper Brewing");
    json_decref(a);
    cr_expect_eq(srv_status(&s, "/v1/breweries?by_type=nonsense"), 422);
    srv_stop(&s);
}

Test(brewery_server, validation_422, .timeout = 30)
{
    srv_t s;
    srv_start(&s, "--latency", "0", NULL);
    srv_expect_error(&s, 422, "/v1/breweries?per_page=201", "per_page");
    srv_expect_error(&s, 422, "/v1/breweries?per_page=0", "per_page");
    srv_expect_error(&s, 422, "/v1/breweries?per_page=abc", "per_page");
    srv_expect_error(&s, 422, "/v1/breweries?per_page=99999999999999999999999", "per_page");
    srv_expect_error(&s, 422, "/v1/breweries?page=0", "page");
    srv_expect_error(&s, 422, "/v1/breweries?page=-3", "page");
    srv_expect_error(&s, 422, "/v1/breweries?by_state=ny", "by_state");
    srv_expect_error(&s, 422, "/v1/breweries?by_state=", "by_state");
    srv_expect_error(&s, 422, "/v1/breweries/meta?per_page=500", "per_page");
    srv_expect_error(&s, 422, "/v1/breweries/meta?by_state=va", "by_state");
    /* The limits themselves are fine. */
    json_t *a = srv_get_json(&s, "/v1/breweries?per_page=200");
    cr_expect_eq(json_array_size(a), 200);
    json_decref(a);
    a = srv_get_json(&s, "/v1/breweries?per_page=1&by_state=ohi");
    cr_expect_eq(json_array_size(a), 1);
    json_decref(a);
    srv_stop(&s);
}

Test(brewery_server, not_found_404, .timeout = 30)
{
    srv_t s;
    srv_start(&s, "--latency", "0", NULL);
    srv_expect_error(&s, 404, "/v1/breweries/no-such-id", NULL);
    srv_expect_error(&s, 404, "/v1/breweries/a/b", NULL);
    srv_expect_error(&s, 404, "/v1/brewery", NULL);
    srv_expect_error(&s, 404, "/v2/breweries", NULL);
    srv_expect_error(&s, 404, "/", NULL);
    srv_resp_t r = srv_get_t(&s, "/v1/breweries", 5000);
    cr_expect_eq(r.status, 200);
    free(r.body);
    srv_stop(&s);
}

Test(brewery_server, paging_and_fields, .timeout = 30)
{
    srv_t s;
    srv_start(&s, "--latency", "0", NULL);
    json_t *a = srv_get_json(&s, "/v1/breweries");
    cr_expect_eq(json_array_size(a), 50, "default per_page is 50");
    static const char *const fields[] = {
        "id", "name", "brewery_type", "address_1", "address_2", "address_3", "city",
        "state_province", "postal_code", "country", "longitude", "latitude", "phone",
        "website_url", "state", "street",
    };
    json_t *b = json_array_get(a, 0);
    cr_assert(json_is_object(b));
    cr_expect_eq(json_object_size(b), sizeof fields / sizeof fields[0]);
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        cr_expect_not_null(json_object_get(b, fields[i]), "no field %s", fields[i]);

    /* Pages are disjoint and ordered: page 2 of 25 starts where page 1 of 50 is at 25. */
    json_t *p2 = srv_get_json(&s, "/v1/breweries?per_page=25&page=2");
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(p2, 0), "id")),
                     json_string_value(json_object_get(json_array_get(a, 25), "id")));
    json_decref(p2);

    /* One brewery by id. */
    const char *id = json_string_value(json_object_get(b, "id"));
    char path[128];
    snprintf(path, sizeof path, "/v1/breweries/%s", id);
    json_t *one = srv_get_json(&s, path);
    cr_expect(json_equal(one, b), "GET /v1/breweries/{id} differs from the list entry");
    json_decref(one);
    json_decref(a);

    /* A page past the end is an empty array. */
    srv_resp_t r = srv_get(&s, "/v1/breweries?by_state=district_of_columbia&page=2");
    cr_expect_eq(r.status, 200);
    cr_expect_str_eq(r.body, "[]");
    free(r.body);
    r = srv_get(&s, "/v1/breweries?page=99999999999999");
    cr_expect_eq(r.status, 200);
    cr_expect_str_eq(r.body, "[]");
    free(r.body);
    srv_stop(&s);
}

Test(brewery_server, methods, .timeout = 30)
{
    srv_t s;
    srv_start(&s, "--latency", "0", NULL);
    srv_resp_t r = { 0 };
    CURL *e = srv_easy(&s, "/v1/breweries", &r, 5000);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, "x=1");
    cr_expect_eq(curl_easy_perform(e), CURLE_OK);
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &r.status);
    cr_expect_eq(r.status, 405);
    curl_easy_cleanup(e);
    free(r.body);
    srv_stop(&s);
}
