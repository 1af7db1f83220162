/* How many CPUs there are, for pool sizes: the logical CPUs this process may
 * run on (its affinity mask, which taskset, cgroup cpusets and container
 * limits narrow), and the physical cores of the machine.  Both are read from
 * the kernel at each call, never cached, and never fail: when the kernel
 * says nothing usable the answer falls back to the online CPU count, and it
 * is always at least 1. */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include "core_internal.h"

static unsigned online_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (unsigned)n;
}

unsigned async_cpu_count(void)
{
    /* The kernel refuses (EINVAL) a mask smaller than its own: grow it, so
     * that machines with more than CPU_SETSIZE (1024) CPUs count right. */
    for (size_t ncpus = CPU_SETSIZE; ncpus <= ((size_t)1 << 20); ncpus *= 2) {
        size_t size = CPU_ALLOC_SIZE(ncpus);
        cpu_set_t *set = async__malloc(size);
        if (!set) break;
        CPU_ZERO_S(size, set);
        int r = sched_getaffinity(0, size, set);
        int count = r == 0 ? CPU_COUNT_S(size, set) : 0;
        int err = errno;
        async__free(set);
        if (r == 0) return count > 0 ? (unsigned)count : 1;
        if (err != EINVAL) break;
    }
    return online_count();
}

/* Reads a small sysfs file into buf; false if it is missing or empty. */
static bool read_small(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "re");
    if (!f) return false;
    size_t n = fread(buf, 1, cap - 1, f);
    fclose(f);
    buf[n] = '\0';
    return n > 0;
}

unsigned async_cpu_cores(void)
{
    long conf = sysconf(_SC_NPROCESSORS_CONF);
    if (conf < 1 || conf > (1L << 20)) return online_count();
    /* A core is named by the lowest CPU in its list of hardware threads
     * (core_cpus_list; thread_siblings_list on kernels before 5.7), which
     * is the same string for every thread of the core. */
    unsigned char *seen = async__calloc((size_t)conf, 1);
    if (!seen) return online_count();
    unsigned cores = 0;
    char path[96], buf[64];
    for (long cpu = 0; cpu < conf; cpu++) {
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%ld/online", cpu);
        if (read_small(path, buf, sizeof buf) && buf[0] == '0') continue; /* offline */
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%ld/topology/core_cpus_list", cpu);
        if (!read_small(path, buf, sizeof buf)) {
            snprintf(path, sizeof path,
                     "/sys/devices/system/cpu/cpu%ld/topology/thread_siblings_list", cpu);
            if (!read_small(path, buf, sizeof buf)) continue;
        }
        char *end;
        long first = strtol(buf, &end, 10);
        if (end == buf || first < 0 || first >= conf) continue;
        if (!seen[first]) {
            seen[first] = 1;
            cores++;
        }
    }
    async__free(seen);
    return cores ? cores : online_count();
}
