/* A progress bar for long work: done/total, percentage, rate and ETA on one
 * line of a terminal, redrawn in place.
 *
 * The bar draws only when its file descriptor is a terminal (stderr by
 * default), so output redirected to a file or a pipe stays clean: there, every
 * call is a cheap no-op apart from the counter.  Any number of threads may
 * call async_progress_add() at once: the count is an atomic, and redraws are
 * throttled (at most one every ASYNC_PROGRESS_INTERVAL) and made by whichever
 * caller wins a try-lock, so workers never wait for the terminal.  Each
 * redraw is a single write(2) of the whole line. */
#ifndef ASYNC_PROGRESS_H
#define ASYNC_PROGRESS_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct async_progress async_progress_t;

/* The minimum time between two redraws. */
#define ASYNC_PROGRESS_INTERVAL ASYNC_MSEC(100)
/* Nothing is drawn before the work has run this long, so work that ends
 * sooner shows no bar at all (unless ASYNC_PROGRESS_NOW). */
#define ASYNC_PROGRESS_DELAY ASYNC_SEC(1)

/* Flags for async_progress_new_fd(). */
enum {
    ASYNC_PROGRESS_FORCE = 1 << 0, /* draw even when fd is not a terminal */
    ASYNC_PROGRESS_NOW = 1 << 1,   /* draw from the start, without the delay */
};

/* Starts a bar on stderr labelled `label` (copied) for `total` units of work;
 * a total of 0 means unknown, and the bar then shows the count and the rate
 * only.  Nothing is drawn unless stderr is a terminal.  *out is set only on
 * success; free it with async_progress_free().
 * Errors: ASYNC_EINVAL (out or label NULL), ASYNC_ENOMEM. */
ASYNC_API int async_progress_new(async_progress_t **out, const char *label, uint64_t total);

/* As async_progress_new(), drawing on `fd` (which the caller keeps owning)
 * when it is a terminal, or always with ASYNC_PROGRESS_FORCE.
 * Errors: ASYNC_EINVAL (out or label NULL, fd negative, unknown flag),
 * ASYNC_ENOMEM. */
ASYNC_API int async_progress_new_fd(async_progress_t **out, int fd, const char *label,
                                    uint64_t total,
                                    unsigned flags);

/* Whether this bar draws at all (its fd is a terminal, or it was forced). */
ASYNC_API bool async_progress_enabled(const async_progress_t *p);

/* Adds n units done, from any thread; redraws if the last redraw is older
 * than ASYNC_PROGRESS_INTERVAL and no other thread is drawing.  NULL p is
 * allowed and does nothing, so callers need no test around optional bars. */
ASYNC_API void async_progress_add(async_progress_t *p, uint64_t n);

/* The units done so far. */
ASYNC_API uint64_t async_progress_done(const async_progress_t *p);

/* Draws the final state and ends the line, if the bar has been shown (once;
 * later calls do nothing).  Call it from one thread after the workers are
 * done.  NULL p is allowed. */
ASYNC_API void async_progress_finish(async_progress_t *p);

/* Formats the bar's current line (no control characters, no newline) into
 * buf of size len, as it would be drawn `width` columns wide (too narrow
 * for the bar, any negative width included: the line without it); returns
 * the length snprintf would have written.  For tests and for callers that draw
 * elsewhere. */
ASYNC_API int async_progress_format(const async_progress_t *p, int width, char *buf, size_t len);

/* Finishes the bar if it was not finished, and frees it.  NULL is allowed. */
ASYNC_API void async_progress_free(async_progress_t *p);

#ifdef __cplusplus
}
#endif
#endif
