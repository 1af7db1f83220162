/* Small helpers of the lab: the clock, shared memory, the splitmix64
 * generator of the data that have no notebook counterpart (factors), a hash
 * for comparing results across modes, and scaling. */
#include <stdarg.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <time.h>
#include "lab.h"

lab_opts_t lab_opt = {.scale = 1.0, .seed = 20240917, .modes = 7, .repeat = 1};

double lab_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void lab_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("lab: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

void *lab_shared_alloc(size_t size)
{
    if (size == 0) size = 1;
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) lab_die("cannot map %zu bytes of shared memory", size);
    return p;
}

void lab_shared_free(void *p, size_t size)
{
    if (p) munmap(p, size ? size : 1);
}

uint64_t lab_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t lab_fnv(const void *data, size_t len, uint64_t h)
{
    const unsigned char *p = data;
    if (h == 0) h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}

size_t lab_scaled(size_t n, size_t min)
{
    double v = (double)n * lab_opt.scale;
    return v < (double)min ? min : (size_t)v;
}

const char *lab_unwritable(const char *path)
{
    struct stat st;
    /* stat("") fails with ENOENT and "." is writable, so an empty name
     * passed and the run ended in "lab: : cannot write". */
    if (!*path) return "the file name is empty";
    if (stat(path, &st) == 0) {
        if (S_ISDIR(st.st_mode)) return "it is a directory";
        return access(path, W_OK) == 0 ? NULL : strerror(errno);
    }
    if (errno != ENOENT) return strerror(errno);
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else snprintf(dir, sizeof dir, "%.*s", slash == path ? 1 : (int)(slash - path), path);
    if (stat(dir, &st) != 0) return strerror(errno);
    if (!S_ISDIR(st.st_mode)) return strerror(ENOTDIR);
    return access(dir, W_OK | X_OK) == 0 ? NULL : strerror(errno);
}

/* path with its folder resolved (symbolic links, "..", "."), into buf; the
 * folder must exist (lab_unwritable has said so). */
static const char *resolved(const char *path, char *buf, size_t cap)
{
    char dir[4096], real[PATH_MAX];
    const char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path;
    if (!slash) snprintf(dir, sizeof dir, ".");
    else snprintf(dir, sizeof dir, "%.*s", slash == path ? 1 : (int)(slash - path), path);
    if (!realpath(dir, real)) return path;
    snprintf(buf, cap, "%s/%s", real, base);
    return buf;
}

bool lab_same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    if (stat(a, &sa) == 0 && stat(b, &sb) == 0) return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
    char ba[PATH_MAX + 256], bb[PATH_MAX + 256];
    return strcmp(resolved(a, ba, sizeof ba), resolved(b, bb, sizeof bb)) == 0;
}
