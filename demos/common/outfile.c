/* Output files written whole or not at all: a temporary beside the file,
 * renamed over it once complete (outfile.h says what is guaranteed).  The
 * demos wrote their results with fopen(path, "w"), which truncates the old
 * file first, so `ulimit -f` (SIGXFSZ, the demo killed mid-write), a full
 * disk or a stop signal left a file that was neither the old answers nor the
 * new ones. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "outfile.h"

/* The signals whose default action ends the program and that a user sends
 * to stop it; while a file is open they wait, so the stop finds it whole. */
static const int stop_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};

static void hold_signals(demo_out_t *o)
{
    sigset_t set;
    sigemptyset(&set);
    for (size_t i = 0; i < sizeof stop_signals / sizeof stop_signals[0]; i++) sigaddset(&set, stop_signals[i]);
    pthread_sigmask(SIG_BLOCK, &set, &o->mask);
    /* Past RLIMIT_FSIZE a write is EFBIG instead of the process's death,
     * so the temporary can be removed and the failure named. */
    struct sigaction ign = {.sa_handler = SIG_IGN};
    sigemptyset(&ign.sa_mask);
    sigaction(SIGXFSZ, &ign, &o->xfsz);
}

static void release_signals(demo_out_t *o)
{
    sigaction(SIGXFSZ, &o->xfsz, NULL);
    pthread_sigmask(SIG_SETMASK, &o->mask, NULL);
}

/* A new file beside target named ".BASE.XXXXXX", created as fopen would
 * create target (0666 less the umask); the fd, or -1 with errno. */
static int create_beside(const char *target, char **tmp_out)
{
    const char *slash = strrchr(target, '/'), *base = slash ? slash + 1 : target;
    int dirlen = slash ? (int)(slash - target + 1) : 0;
    size_t cap = (size_t)dirlen + strlen(base) + 16;
    char *tmp = malloc(cap);
    if (!tmp) return -1;
    static unsigned counter;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32) ^ (uint64_t)ts.tv_sec;
    for (int tries = 0; tries < 100; tries++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL + __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED);
        char suffix[7];
        for (int i = 0; i < 6; i++) suffix[i] = "abcdefghijklmnopqrstuvwxyz0123456789"[(x >> (10 + 5 * i)) % 36];
        suffix[6] = '\0';
        /* A base near NAME_MAX would make the temporary's name too long. */
        snprintf(tmp, cap, "%.*s.%.200s.%s", dirlen, target, base, suffix);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd >= 0) {
            *tmp_out = tmp;
            return fd;
        }
        if (errno != EEXIST) break;
    }
    int e = errno;
    free(tmp);
    errno = e;
    return -1;
}

/* Where the temporary goes: path itself, or a link's regular file.  NULL
 * (errno untouched) when path is to be written in place. */
static char *replaceable(const char *path, struct stat *st, int *exists)
{
    *exists = 0;
    if (lstat(path, st) != 0) return errno == ENOENT ? strdup(path) : NULL;
    if (S_ISLNK(st->st_mode)) {
        /* A link to a device or to nothing yet is followed by fopen. */
        if (stat(path, st) != 0 || !S_ISREG(st->st_mode)) return NULL;
        *exists = 1;
        return realpath(path, NULL);
    }
    if (!S_ISREG(st->st_mode)) return NULL;
    *exists = 1;
    return strdup(path);
}

FILE *demo_out_open(demo_out_t *o, const char *path)
{
    *o = (demo_out_t){0};
    hold_signals(o);
    struct stat st;
    int exists, saved = errno;
    o->target = replaceable(path, &st, &exists);
    errno = saved;
    int fd = -1;
    if (o->target) {
        fd = create_beside(o->target, &o->tmp);
        if (fd < 0 && (errno == EACCES || errno == EPERM) && exists) {
            /* A folder we may not add to, holding a file we may write. */
            free(o->target);
            o->target = NULL;
        } else if (fd < 0) {
            goto fail;
        }
    }
    if (fd >= 0) {
        if (exists) {
            /* Before the mode: a change of owner clears set-id bits. */
            if (fchown(fd, st.st_uid, st.st_gid) != 0) { /* not root: it stays ours */ }
            fchmod(fd, st.st_mode & 07777);
        }
        o->f = fdopen(fd, "w");
        if (!o->f) {
            int e = errno;
            close(fd);
            unlink(o->tmp);
            errno = e;
            goto fail;
        }
    } else {
        o->f = fopen(path, "w");
        if (!o->f) goto fail;
    }
    /* So that close can name a write error that ferror kept but no later
     * call reported (most often the write's own errno). */
    errno = 0;
    return o->f;
fail:;
    int e = errno;
    free(o->tmp);
    free(o->target);
    release_signals(o);
    *o = (demo_out_t){0};
    errno = e;
    return NULL;
}

int demo_out_close(demo_out_t *o)
{
    int err = 0;
    if (fflush(o->f) != 0) err = errno ? errno : EIO;
    else if (ferror(o->f)) err = errno ? errno : EIO;
    /* Renamed before its data reached the disk, the file could come back
     * empty after a crash, which is what the rename is to prevent. */
    if (!err && o->tmp && fsync(fileno(o->f)) != 0 && errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)
        err = errno; /* (a file system that cannot sync has nothing to sync to) */
    if (fclose(o->f) != 0 && !err) err = errno;
    if (o->tmp) {
        if (!err && rename(o->tmp, o->target) != 0) err = errno;
        if (err) unlink(o->tmp);
    }
    free(o->tmp);
    free(o->target);
    release_signals(o);
    *o = (demo_out_t){0};
    errno = err;
    return err ? -1 : 0;
}

void demo_out_abort(demo_out_t *o)
{
    int e = errno;
    fclose(o->f);
    if (o->tmp) unlink(o->tmp);
    free(o->tmp);
    free(o->target);
    release_signals(o);
    *o = (demo_out_t){0};
    errno = e;
}

int demo_write_file(const char *path, const void *data, size_t len)
{
    demo_out_t o;
    if (!demo_out_open(&o, path)) return -1;
    if (len && fwrite(data, 1, len, o.f) != len) {
        int e = errno ? errno : EIO;
        demo_out_abort(&o);
        errno = e;
        return -1;
    }
    return demo_out_close(&o);
}
