/* --output files: the results of howmany, common and normalize, written
 * whole or not at all (demos/common/outfile.h).  Apart from csvio.c so
 * that the CSV reader's fuzz target links without the writer. */
#include <errno.h>
#include <string.h>
#include "lab.h"
FILE *lab_csv_create(demo_out_t *o, const char *path)
{
    FILE *f = demo_out_open(o, path);
    if (!f) lab_die("%s: cannot create: %s", path, strerror(errno));
    return f;
}

void lab_csv_finish(demo_out_t *o, const char *path)
{
    if (demo_out_close(o) != 0) lab_die("%s: write failed: %s", path, strerror(errno));
}
