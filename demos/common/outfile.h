/* Output files written whole or not at all, for every demo's results
 * (soln.json, lab-report.json, --output CSVs, async.json).
 *
 * A regular file (or a new name) is written to a temporary file beside it,
 * flushed to disk and renamed over it, so a reader sees the old file or the
 * new one, never a mix: a full disk, `ulimit -f` or a signal mid-write leave
 * the old file as it was.  While one is open, the calling thread blocks the
 * signals that stop a program (SIGINT, SIGTERM, SIGHUP, SIGQUIT), so a stop
 * asked for meanwhile takes effect once the file is complete and renamed (or
 * its temporary removed), and SIGXFSZ is ignored, so the file size limit is
 * an error (EFBIG) rather than death.  Only SIGKILL, or a stop signal taken
 * by another thread, can leave a temporary (".NAME.XXXXXX") behind; the
 * file itself is never half-written.
 *
 * A path that names something other than a regular file (/dev/stdout, a
 * FIFO, /dev/null) is written in place, as it always was, since it cannot
 * be replaced by a rename.  A symbolic link to a regular file replaces its
 * target and stays a link.  An existing file keeps its mode (and, for root,
 * its owner); a new one gets 0666 less the umask, as fopen gives.  A file
 * with other hard links is replaced under this name only (the other names
 * keep the old text, as with any editor that saves by rename).  If the
 * folder cannot take a new file but the file itself may be written, it is
 * written in place. */
#ifndef DEMOS_COMMON_OUTFILE_H
#define DEMOS_COMMON_OUTFILE_H
#include <signal.h>
#include <stddef.h>
#include <stdio.h>

typedef struct demo_out {
    FILE *f;          /* write here between open and close */
    char *tmp;        /* the temporary's path; NULL when written in place */
    char *target;     /* what the temporary replaces */
    sigset_t mask;    /* the thread's signal mask before open */
    struct sigaction xfsz;
} demo_out_t;

/* Opens path for writing (OUT: o).  Returns o->f, or NULL with errno set
 * and nothing changed or left open. */
FILE *demo_out_open(demo_out_t *o, const char *path);

/* Finishes the file: flushes it, checks every write went through, and
 * renames the temporary over the target.  Returns 0, or -1 with errno set
 * (the first failure's), the temporary removed and the old file as it was.
 * Either way the signals are back as before open, and o is spent. */
int demo_out_close(demo_out_t *o);

/* Abandons the file: the temporary is removed, the old file kept. */
void demo_out_abort(demo_out_t *o);

/* open, one write of len bytes, close: 0, or -1 with errno set. */
int demo_write_file(const char *path, const void *data, size_t len);
#endif
