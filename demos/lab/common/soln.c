/* soln.json: the lab's answer keys (prob1: the common items, prob2: the
 * busy-work parts, prob3: the normalised test rows, host: the machine) and,
 * beside them, every workload's figures from this run. */
#include <stdio.h>
#include <string.h>
#include <sys/utsname.h>
#include "lab.h"

static json_t *host(void)
{
    json_t *h = json_object();
    struct utsname u;
    if (uname(&u) == 0) {
        json_object_set_new(h, "hostname", json_string(u.nodename));
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
                    json_object_set_new(h, "cpu", json_string(v));
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

int lab_soln_write(const char *path)
{
    json_t *root = json_object();
    json_object_set(root, "prob1", lab_prob1 ? lab_prob1 : json_null());
    json_object_set(root, "prob2", lab_prob2 ? lab_prob2 : json_null());
    json_object_set(root, "prob3", lab_prob3 ? lab_prob3 : json_null());
    json_object_set_new(root, "host", host());
    json_object_set(root, "workloads", lab_figures);
    int rc = json_dump_file(root, path, JSON_INDENT(2) | JSON_REAL_PRECISION(17));
    json_decref(root);
    if (rc != 0) lab_die("%s: cannot write", path);
    printf("\nwrote %s\n", path);
    return 0;
}
