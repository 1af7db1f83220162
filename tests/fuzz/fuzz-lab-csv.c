/* Fuzz target lab-csv: the lab's CSV reader, lab_csv_read().  The first
 * input byte picks the reader's flags (LAB_CSV_INTS, _SQUARE, _TAGGED), the
 * rest is the file, written to a memfd that the reader opens by its
 * /proc/self/fd path.  On success the rows must keep the header's promises
 * (offsets that grow, finite values, integers with INTS, equal rows with
 * SQUARE, tags 'a'/'b' with TAGGED); on failure the message must name the
 * file.  A NUL byte is never part of a number, so a file holding one must
 * be refused (issue 10, item 8). */
#include "fuzz.h"
#include "lab.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

const char fuzz_target_name[] = "lab-csv";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        if ((fd = memfd_create("fuzz-lab-csv", 0)) < 0) fuzz_fail("memfd_create failed");
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    if (size == 0) return 0;
    unsigned flags = data[0] & (LAB_CSV_INTS | LAB_CSV_SQUARE | LAB_CSV_TAGGED);
    const uint8_t *file = data + 1;
    size_t len = size - 1;
    bool has_nul = memchr(file, 0, len) != NULL;
    if (ftruncate(fd, 0) != 0 || pwrite(fd, file, len, 0) != (ssize_t)len)
        fuzz_fail("cannot write the memfd");

    lab_rows_t rows;
    char err[512] = "";
    int rc = lab_csv_read(path, flags, &rows, err, sizeof err);
    if (rc != 0) {
        if (rc != -1) fuzz_fail("lab_csv_read returned %d", rc);
        if (strncmp(err, path, strlen(path)) != 0 || err[strlen(path)] != ':')
            fuzz_fail("the error does not name the file: \"%s\"", err);
        return 0;
    }
    if (has_nul) fuzz_fail("a file with a NUL byte was read as %zu rows", rows.nrows);
    if (rows.nrows == 0 || rows.off[0] != 0) fuzz_fail("success with no rows or a bad first offset");
    for (size_t i = 0; i < rows.nrows; i++) {
        size_t w = rows.off[i + 1] - rows.off[i];
        if (rows.off[i + 1] <= rows.off[i]) fuzz_fail("row %zu is empty or offsets shrink", i);
        if ((flags & LAB_CSV_SQUARE) && w != rows.off[1]) fuzz_fail("row %zu is ragged", i);
        if ((flags & LAB_CSV_TAGGED) && rows.tag[i] != 'a' && rows.tag[i] != 'b')
            fuzz_fail("row %zu has tag %d", i, rows.tag[i]);
        for (size_t k = rows.off[i]; k < rows.off[i + 1]; k++) {
            double v = rows.v[k];
            if (!isfinite(v)) fuzz_fail("row %zu holds a non-finite value", i);
            if ((flags & LAB_CSV_INTS) && v != trunc(v)) fuzz_fail("row %zu holds %g with INTS", i, v);
        }
    }
    lab_rows_free(&rows);
    return 0;
}
