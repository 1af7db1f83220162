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
#include "support/slurp.h"

#define LAB ASYNC_OUT_DIR "/demos/lab/lab"

TestSuite(demos_soln, .timeout = 60);


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
    char *ours = test_slurp(path);
    snprintf(path, sizeof path, "%s/py.json", dir);
    char *py = test_slurp(path);
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

/* prob2 always has part1, part2 and part3, in that order, a part whose mode
 * did not run being null: --mode serial wrote {"part1": ...} alone and
 * --mode threads {"part2": ..., "part3": ...}, so a grader's
 * answers["prob2"]["part2"] was a KeyError. */
static void expect_parts(const char *mode, const char *const nulls[3])
{
    char dir[64], cmd[1024], path[128];
    snprintf(dir, sizeof dir, "/tmp/test-demos-soln-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s' busywork --quick --mode %s --soln soln.json > lab.out 2>&1", dir, LAB,
             mode);
    cr_assert_eq(system(cmd), 0, "the lab failed");
    snprintf(path, sizeof path, "%s/soln.json", dir);
    json_t *soln = json_load_file(path, 0, NULL);
    cr_assert_not_null(soln);
    json_t *prob2 = json_object_get(soln, "prob2");
    cr_assert(json_is_object(prob2), "%s: prob2 is not an object", mode);
    const char *key;
    json_t *v;
    int i = 0;
    json_object_foreach(prob2, key, v) {
        char want[16];
        snprintf(want, sizeof want, "part%d", i + 1);
        cr_expect_str_eq(key, want, "%s: prob2's key %d", mode, i + 1);
        if (i < 3 && nulls[i]) cr_expect(json_is_null(v), "%s: %s is not null", mode, key);
        else cr_expect(json_is_real(v) && json_real_value(v) > 0, "%s: %s is not a time", mode, key);
        i++;
    }
    cr_expect_eq(i, 3, "%s: prob2 has %d parts", mode, i);
    json_decref(soln);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_expect_eq(system(cmd), 0);
}

Test(demos_soln, prob2_has_its_three_parts_whatever_the_modes)
{
    expect_parts("serial", (const char *const[]){NULL, "null", "null"});
    expect_parts("threads", (const char *const[]){"null", NULL, NULL});
    expect_parts("serial,processes", (const char *const[]){NULL, NULL, NULL});
}
