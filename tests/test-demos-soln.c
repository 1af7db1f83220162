/* soln.json byte for byte as the notebook's json.dumps(answers, indent=2)
 * writes it, for a hostname that is not plain ASCII.  soln.json took the
 * hostname through a checked json_string, which is NULL for bytes that are
 * not UTF-8, so "host" went missing from soln.json (and "hostname" from
 * lab-report.json); and DEL was written raw where json.dumps writes
 * \u007f.  Python decodes the hostname with surrogateescape, so json.dumps
 * writes each stray byte as \udcXX; python3 itself is the reference here,
 * run in the same UTS namespace (each test is a process of its own). */
#include <criterion/criterion.h>
#include <errno.h>
#include <jansson.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LAB ASYNC_OUT_DIR "/demos/lab/lab"

TestSuite(demos_soln, .timeout = 60);

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *s = malloc(cap);
    for (size_t k; s && (k = fread(s + n, 1, cap - 1 - n, f)) > 0;) {
        n += k;
        if (n == cap - 1) s = realloc(s, cap *= 2);
    }
    fclose(f);
    if (s) s[n] = '\0';
    return s;
}

Test(demos_soln, host_that_is_not_ascii_is_written_as_json_dumps_writes_it)
{
    if (unshare(CLONE_NEWUTS) != 0) cr_skip_test("cannot make a UTS namespace to rename the host in: %s", strerror(errno));
    /* ASCII, a stray byte, DEL, a 2-byte character, a cut 3-byte one, a
     * 4-byte one (a surrogate pair in JSON), an overlong form. */
    static const char name[] = "lab-\xff\x7f-\xc3\xa9-\xe2\x82-\xf0\x9f\x8d\xba-\xc0\xaf-end";
    cr_assert_eq(sethostname(name, sizeof name - 1), 0, "%s", strerror(errno));
    char dir[64], cmd[1024], path[128];
    snprintf(dir, sizeof dir, "/tmp/test-demos-soln-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s' common --mode serial --soln soln.json > lab.out 2>&1", dir, LAB);
    cr_assert_eq(system(cmd), 0, "the lab failed");
    /* The notebook's answers with Python's own hostname. */
    snprintf(cmd, sizeof cmd,
             "cd '%s' && /usr/bin/python3 -c 'import json, socket; d = json.load(open(\"soln.json\")); "
             "d[\"host\"] = socket.gethostname(); open(\"py.json\", \"w\").write(json.dumps(d, indent=2))'",
             dir);
    cr_assert_eq(system(cmd), 0, "python3 failed");
    snprintf(path, sizeof path, "%s/soln.json", dir);
    char *ours = slurp(path);
    snprintf(path, sizeof path, "%s/py.json", dir);
    char *py = slurp(path);
    cr_assert(ours && py);
    cr_expect_str_eq(ours, py, "soln.json differs from json.dumps");
    cr_expect(strstr(ours, "\"host\": \"lab-\\udcff\\u007f-\\u00e9-\\udce2\\udc82-\\ud83c\\udf7a-\\udcc0\\udcaf-end\""),
              "%s", ours);
    /* The report has the hostname too, its stray bytes as U+FFFD. */
    snprintf(path, sizeof path, "%s/lab-report.json", dir);
    json_t *report = json_load_file(path, 0, NULL);
    cr_assert_not_null(report);
    const char *h = json_string_value(json_object_get(json_object_get(report, "host"), "hostname"));
    cr_expect(h && strncmp(h, "lab-\xef\xbf\xbd\x7f-\xc3\xa9-", 12) == 0 && strstr(h, "\xf0\x9f\x8d\xba-") &&
                  strstr(h, "-end"),
              "the report's hostname: %s", h ? h : "(missing)");
    json_decref(report);
    free(ours);
    free(py);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_expect_eq(system(cmd), 0);
}
