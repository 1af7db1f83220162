/* The progress bar.  The counter is one atomic that workers add to with
 * relaxed ordering (it carries no other data).  Drawing is serialised by a
 * mutex that is only ever try-locked from async_progress_add(), so a worker
 * never blocks on another worker's write to the terminal; the time of the
 * last draw is an atomic so that the common case (too soon to draw) costs one
 * load.  finish() takes the mutex for real, after the workers are done. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include "core_internal.h"
#include "async/progress.h"

struct async_progress {
    _Atomic uint64_t done;
    _Atomic int64_t last_draw;
    uint64_t total;
    int64_t start;
    int fd;
    bool enabled, finished, shown;
    pthread_mutex_t draw_lock;
    char label[64];
};

int async_progress_new_fd(async_progress_t **out, int fd, const char *label, uint64_t total,
                          unsigned flags)
{
    if (!out || !label || fd < 0 || (flags & ~(unsigned)(ASYNC_PROGRESS_FORCE | ASYNC_PROGRESS_NOW))) return ASYNC_EINVAL;
    async_progress_t *p = async__calloc(1, sizeof *p);
    if (!p) return ASYNC_ENOMEM;
    atomic_init(&p->done, 0);
    p->total = total;
    p->start = async_now();
    /* The first draw is due DELAY after the start (or at once with NOW). */
    atomic_init(&p->last_draw, (flags & ASYNC_PROGRESS_NOW)
                                   ? p->start - ASYNC_PROGRESS_INTERVAL
                                   : p->start + ASYNC_PROGRESS_DELAY - ASYNC_PROGRESS_INTERVAL);
    p->fd = fd;
    p->enabled = (flags & ASYNC_PROGRESS_FORCE) || isatty(fd);
    pthread_mutex_init(&p->draw_lock, NULL);
    snprintf(p->label, sizeof p->label, "%s", label);
    *out = p;
    return 0;
}

int async_progress_new(async_progress_t **out, const char *label, uint64_t total)
{
    return async_progress_new_fd(out, STDERR_FILENO, label, total, 0);
}

bool async_progress_enabled(const async_progress_t *p)
{
    return p && p->enabled;
}

uint64_t async_progress_done(const async_progress_t *p)
{
    return p ? atomic_load_explicit(&p->done, memory_order_relaxed) : 0;
}

/* Writes v with an SI suffix into buf: 950, 12.3k, 4.56M. */
static void si(double v, char *buf, size_t len)
{
    static const char suffix[] = " kMGTP";
    int i = 0;
    while (v >= 999.5 && i < 5) {
        v /= 1000;
        i++;
    }
    if (i == 0)
        snprintf(buf, len, "%.0f", v);
    else
        snprintf(buf, len, "%.*f%c", v < 9.995 ? 2 : v < 99.95 ? 1 : 0, v, suffix[i]);
}

static void clock_text(double secs, char *buf, size_t len)
{
    if (secs < 0 || secs > 359999) {
        snprintf(buf, len, "--:--");
        return;
    }
    unsigned s = (unsigned)(secs + 0.5);
    if (s >= 3600)
        snprintf(buf, len, "%u:%02u:%02u", s / 3600, s / 60 % 60, s % 60);
    else
        snprintf(buf, len, "%u:%02u", s / 60, s % 60);
}

int async_progress_format(const async_progress_t *p, int width, char *buf, size_t len)
{
    if (!p || !buf || len == 0) return 0;
    uint64_t done = async_progress_done(p);
    uint64_t total = p->total;
    if (total && done > total) done = total;
    double elapsed = (double)(async_now() - p->start) / 1e9;
    double rate = elapsed > 0 ? (double)done / elapsed : 0;
    char r[16], when[16], d[16], t[16];
    si(rate, r, sizeof r);
    si((double)done, d, sizeof d);
    if (!total) {
        clock_text(elapsed, when, sizeof when);
        return snprintf(buf, len, "%s %s done %s/s in %s", p->label, d, r, when);
    }
    si((double)total, t, sizeof t);
    double frac = (double)done / (double)total;
    if (p->finished || done == total)
        clock_text(elapsed, when, sizeof when);
    else
        clock_text(rate > 0 ? (double)(total - done) / rate : -1, when, sizeof when);
    char tail[96];
    int tl = snprintf(tail, sizeof tail, " %s/%s %3.0f%% %s/s %s %s", d, t, frac * 100, r,
                      p->finished || done == total ? "in" : "ETA", when);
    /* The bar takes what is left of the width after the label and the tail;
     * a negative width has no room (and would overflow the subtraction). */
    int bar = width < 0 ? 0 : width - (int)strlen(p->label) - tl - 4;
    if (bar > 40) bar = 40;
    if (bar < 5) return snprintf(buf, len, "%s%s", p->label, tail);
    char cells[41];
    int full = (int)(frac * bar);
    for (int i = 0; i < bar; i++) cells[i] = i < full ? '#' : '-';
    cells[bar] = '\0';
    return snprintf(buf, len, "%s [%s]%s", p->label, cells, tail);
}

static int term_width(int fd)
{
    struct winsize ws;
    if (ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20) return ws.ws_col;
    return 80;
}

/* Draws one line in place: carriage return, the line, clear to its end, and
 * a newline when `last`.  One write(2), so lines from racing draws never mix. */
static void draw(async_progress_t *p, bool last)
{
    char line[256];
    int width = term_width(p->fd);
    if (width > (int)sizeof line - 8) width = (int)sizeof line - 8;
    line[0] = '\r';
    int n = async_progress_format(p, width - 1, line + 1, sizeof line - 8);
    if (n < 0) return;
    if (n > (int)sizeof line - 9) n = (int)sizeof line - 9;
    n += 1;
    memcpy(line + n, "\033[K", 3);
    n += 3;
    if (last) line[n++] = '\n';
    p->shown = true;
    ssize_t w = write(p->fd, line, (size_t)n);
    ASYNC_UNUSED(w); /* a progress bar that cannot be drawn is not an error */
}

void async_progress_add(async_progress_t *p, uint64_t n)
{
    if (!p) return;
    atomic_fetch_add_explicit(&p->done, n, memory_order_relaxed);
    if (!p->enabled) return;
    int64_t now = async_now();
    int64_t last = atomic_load_explicit(&p->last_draw, memory_order_relaxed);
    if (now - last < ASYNC_PROGRESS_INTERVAL) return;
    if (pthread_mutex_trylock(&p->draw_lock) != 0) return;
    /* Re-check under the lock: another thread may have drawn meanwhile. */
    last = atomic_load_explicit(&p->last_draw, memory_order_relaxed);
    if (now - last >= ASYNC_PROGRESS_INTERVAL && !p->finished) {
        atomic_store_explicit(&p->last_draw, now, memory_order_relaxed);
        draw(p, false);
    }
    pthread_mutex_unlock(&p->draw_lock);
}

void async_progress_finish(async_progress_t *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->draw_lock);
    if (!p->finished) {
        p->finished = true;
        if (p->enabled && p->shown) draw(p, true);
    }
    pthread_mutex_unlock(&p->draw_lock);
}

void async_progress_free(async_progress_t *p)
{
    if (!p) return;
    async_progress_finish(p);
    pthread_mutex_destroy(&p->draw_lock);
    async__free(p);
}
