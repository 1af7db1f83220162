/* soln.json, exactly as the notebook writes it with
 * `json.dumps(answers, indent=2)`: the four keys prob1 (str() of the common
 * items), prob2 (the busy-work seconds, part1..part3), prob3 (str() of the
 * first normalised XXL rows) and host (the hostname), and nothing else.
 * Every other figure of the run goes to the report file, lab-report.json. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>
#include <sys/utsname.h>
#include "lab.h"

/* jansson takes only UTF-8 (json_string is NULL otherwise, and the key went
 * missing from the report): each byte that begins no complete character
 * becomes U+FFFD, as Python's errors="replace" reads it. */
static json_t *report_text(const char *in)
{
    json_t *j = json_string(in);
    if (j) return j;
    size_t n = strlen(in), k = 0;
    char *o = malloc(3 * n + 1);
    if (!o) lab_die("out of memory");
    for (const unsigned char *p = (const unsigned char *)in; *p;) {
        int len = *p < 0x80 ? 1 : *p >= 0xc2 && *p < 0xe0 ? 2 : *p >= 0xe0 && *p < 0xf0 ? 3 : *p >= 0xf0 && *p < 0xf5 ? 4 : 0;
        for (int i = 1; i < len; i++)
            if ((p[i] & 0xc0) != 0x80) len = 0;
        /* Overlong forms, surrogates and code points past U+10FFFF. */
        if ((len == 3 && ((p[0] == 0xe0 && p[1] < 0xa0) || (p[0] == 0xed && p[1] >= 0xa0))) ||
            (len == 4 && ((p[0] == 0xf0 && p[1] < 0x90) || (p[0] == 0xf4 && p[1] >= 0x90))))
            len = 0;
        if (len) memcpy(o + k, p, (size_t)len), k += (size_t)len, p += len;
        else memcpy(o + k, "\xef\xbf\xbd", 3), k += 3, p++;
    }
    o[k] = '\0';
    j = json_string(o);
    free(o);
    return j;
}

static json_t *host(void)
{
    json_t *h = json_object();
    struct utsname u;
    if (uname(&u) == 0) {
        json_object_set_new(h, "hostname", report_text(u.nodename));
        json_object_set_new(h, "os", json_sprintf("%s %s %s", u.sysname, u.release, u.machine));
    }
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[512];
        while (fgets(line, sizeof line, f)) {
            if (strncmp(line, "model name", 10) == 0) {
                char *v = strchr(line, ':');
                if (v) {
                    v += 1 + (v[1] == ' ');
                    v[strcspn(v, "\n")] = '\0';
                    json_object_set_new(h, "cpu", report_text(v));
                }
                break;
            }
        }
        fclose(f);
    }
    json_object_set_new(h, "cpus", json_integer(lab_opt.ncpu));
    json_object_set_new(h, "workers", json_integer(lab_opt.workers));
    json_object_set_new(h, "compiler", json_string("gcc " __VERSION__));
    json_object_set_new(h, "scale", json_real(lab_opt.scale));
    json_object_set_new(h, "seed", json_integer((json_int_t)lab_opt.seed));
    json_object_set_new(h, "processes_backend", json_string(lab_backend(LAB_PROCESSES)));
    json_object_set_new(h, "threads_backend", json_string(lab_backend(LAB_THREADS)));
    return h;
}

/* A value of soln.json as json.dumps writes it: strings with its escapes,
 * reals as Python's repr (NaN and Infinity as json.dumps spells them),
 * objects of reals indented under their key. */
static void put_value(lab_str_t *o, const json_t *v, int depth)
{
    if (json_is_string(v)) {
        lab_json_string(o, json_string_value(v));
    } else if (json_is_number(v)) {
        double x = json_number_value(v);
        if (isnan(x)) lab_str_puts(o, "NaN");
        else if (isinf(x)) lab_str_puts(o, x < 0 ? "-Infinity" : "Infinity");
        else if (json_is_integer(v)) {
            char b[32];
            lab_str_add(o, b, (size_t)snprintf(b, sizeof b, "%lld", (long long)json_integer_value(v)));
        } else lab_str_float(o, x);
    } else if (json_is_object(v) && json_object_size(v) > 0) {
        const char *key;
        json_t *item;
        bool first = true;
        lab_str_puts(o, "{");
        json_object_foreach((json_t *)v, key, item) {
            lab_str_puts(o, first ? "\n" : ",\n");
            first = false;
            for (int i = 0; i <= depth; i++) lab_str_puts(o, "  ");
            lab_json_string(o, key);
            lab_str_puts(o, ": ");
            put_value(o, item, depth + 1);
        }
        lab_str_puts(o, "\n");
        for (int i = 0; i < depth; i++) lab_str_puts(o, "  ");
        lab_str_puts(o, "}");
    } else if (json_is_object(v)) {
        lab_str_puts(o, "{}");
    } else {
        lab_str_puts(o, "null");
    }
}

/* The report file's path: --report, else lab-report.json in soln's folder. */
const char *lab_report_path(const char *soln, char *buf, size_t cap)
{
    if (lab_opt.report) return lab_opt.report;
    const char *slash = strrchr(soln, '/');
    if (slash) snprintf(buf, cap, "%.*s/lab-report.json", (int)(slash - soln), soln);
    else snprintf(buf, cap, "lab-report.json");
    return buf;
}

int lab_soln_write(const char *path)
{
    /* The notebook's four keys, in its order, and nothing else. */
    json_t *soln = json_object();
    json_object_set(soln, "prob1", lab_prob1 ? lab_prob1 : json_null());
    json_object_set(soln, "prob2", lab_prob2 ? lab_prob2 : json_null());
    json_object_set(soln, "prob3", lab_prob3 ? lab_prob3 : json_null());
    char name[256] = "";
    if (gethostname(name, sizeof name - 1) != 0) name[0] = '\0';
    /* The hostname's own bytes, which put_value writes as Python does; a
     * checked json_string was NULL for one that is not UTF-8, and soln.json
     * came out without its "host". */
    json_object_set_new(soln, "host", json_string_nocheck(name));
    lab_str_t text = {0};
    put_value(&text, soln, 0);
    json_decref(soln);
    if (demo_write_file(path, text.s, text.len) != 0) lab_die("%s: cannot write: %s", path, strerror(errno));
    free(text.s);
    printf("\nwrote %s\n", path);

    json_t *root = json_object();
    json_object_set_new(root, "host", host());
    if (lab_prob2_detail) json_object_set(root, "busywork", lab_prob2_detail);
    json_object_set(root, "workloads", lab_figures);
    char buf[4096];
    const char *rp = lab_report_path(path, buf, sizeof buf);
    demo_out_t out;
    errno = 0;
    if (!demo_out_open(&out, rp)) lab_die("%s: cannot write: %s", rp, strerror(errno));
    if (json_dumpf(root, out.f, JSON_INDENT(2) | JSON_REAL_PRECISION(17)) != 0) {
        /* jansson fails a dump on a write error or on memory. */
        int e = errno ? errno : ENOMEM;
        demo_out_abort(&out);
        lab_die("%s: cannot write: %s", rp, strerror(e));
    }
    if (demo_out_close(&out) != 0) lab_die("%s: cannot write: %s", rp, strerror(errno));
    json_decref(root);
    printf("wrote %s\n", rp);
    return 0;
}
