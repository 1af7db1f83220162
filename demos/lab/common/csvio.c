/* CSV input with libcsv.  The file is fed to the parser one physical line at
 * a time, so when a field is bad the reader knows the line it came from; the
 * column is the field's 1-based position in its row.  The first error wins
 * and stops the parse; the message names file, line and column and says what
 * was wrong and what was expected.  A UTF-8 byte order mark at the start is
 * skipped; an integer beyond 2^53, which a double cannot hold exactly, is an
 * error. */
#include <csv.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "lab.h"

typedef struct reader {
    const char *path;
    unsigned flags;
    lab_rows_t *rows;
    size_t cap_v, cap_r;
    size_t line, col;      /* current physical line, fields so far in the row */
    size_t row_line;       /* line the current row started on */
    size_t first_len, first_line;
    char tag;
    bool failed;
    char *err;
    size_t errlen;
} reader_t;

static void fail(reader_t *r, size_t col, const char *fmt, const char *what)
{
    if (r->failed) return;
    r->failed = true;
    char msg[256];
    snprintf(msg, sizeof msg, fmt, what);
    if (col) snprintf(r->err, r->errlen, "%s: line %zu, column %zu: %s", r->path, r->line, col, msg);
    else snprintf(r->err, r->errlen, "%s: line %zu: %s", r->path, r->line, msg);
}

static void push(reader_t *r, double v)
{
    lab_rows_t *rows = r->rows;
    if (rows->off[rows->nrows] + r->col >= r->cap_v) {
        r->cap_v = r->cap_v ? 2 * r->cap_v : 1024;
        rows->v = realloc(rows->v, r->cap_v * sizeof *rows->v);
        if (!rows->v) lab_die("out of memory");
    }
    rows->v[rows->off[rows->nrows] + r->col] = v;
}

#define OUT_OF_RANGE \
    "\"%s\" is out of range: an integer must be within +-2^53 (9007199254740992), which a double holds exactly"

/* Digits with single underscores between them, copied to clean[*n..]
 * without the underscores; returns how many digits. */
static size_t digit_run(const char **s, char *clean, size_t *n)
{
    size_t count = 0;
    const char *p = *s;
    while ((*p >= '0' && *p <= '9') || (*p == '_' && count && p[1] >= '0' && p[1] <= '9')) {
        if (*p != '_') clean[(*n)++] = *p, count++;
        p++;
    }
    *s = p;
    return count;
}

/* Whether text is a finite number in the syntax of Python's float() and
 * int(): [sign] digits [. [digits]] or [sign] . digits, then an optional
 * exponent e [sign] digits, where an underscore may stand between two
 * digits (PEP 515: 1_000, 1_0.2_5, 1e1_0).  The text without its
 * underscores goes to clean (as long as text).  strtod alone also took
 * hexadecimal (0x10 read as 16, 0x1p3 as 8), which float() refuses. */
static bool py_syntax(const char *s, char *clean)
{
    size_t n = 0, digits;
    bool ok = true;
    if (*s == '+' || *s == '-') clean[n++] = *s++;
    digits = digit_run(&s, clean, &n);
    if (*s == '.') {
        clean[n++] = *s++;
        digits += digit_run(&s, clean, &n);
    }
    if (digits && (*s == 'e' || *s == 'E')) {
        clean[n++] = *s++;
        if (*s == '+' || *s == '-') clean[n++] = *s++;
        ok = digit_run(&s, clean, &n) > 0;
    }
    clean[n] = '\0';
    return ok && digits && !*s;
}

/* number's reading, on text in float()'s syntax (or inf and nan). */
static void number_checked(reader_t *r, size_t col, const char *text, const char *what)
{
    char *end;
    errno = 0;
    double v;
    if (r->flags & LAB_CSV_INTS) {
        long long i = strtoll(text, &end, 10);
        /* Twenty digits overflow strtoll: out of range, as normalize and
         * common say it, not "is not an integer". */
        if (!*end && errno == ERANGE) {
            fail(r, col, OUT_OF_RANGE, what);
            return;
        }
        if (*end || errno) {
            strtod(text, &end);
            fail(r, col, *end ? "\"%s\" is not a number: expected an integer" : "\"%s\" is not an integer",
                 what);
            return;
        }
        v = (double)i;
    } else {
        v = strtod(text, &end);
        /* Only overflow is out of range: glibc also sets ERANGE for a
         * result below DBL_MIN (4.9e-324, 1e-310, 1e-400), which Python's
         * float() and numpy read as the subnormal or 0.0, and which was
         * refused here as "out of range". */
        if (*end || !isfinite(v)) {
            fail(r, col, *end ? "\"%s\" is not a number" : "\"%s\" is out of range", what);
            return;
        }
    }
    /* Past 2^53 a double no longer holds every integer, so two different
     * integers could read as one value (9007199254740993 as ...992) and
     * compare equal, where Python's ints would not: refuse an integer
     * written in digits that the double does not hold exactly. */
    const char *digits = text + (*text == '+' || *text == '-');
    if (*digits && !digits[strspn(digits, "0123456789")]) {
        errno = 0;
        long long i = strtoll(text, NULL, 10);
        if (errno == ERANGE || i > (1LL << 53) || i < -(1LL << 53)) {
            fail(r, col, OUT_OF_RANGE, what);
            return;
        }
    }
    push(r, v);
    r->col++;
}

/* Reads the number `text` of column col (`what`: text as messages show it)
 * into the row, or fails naming why. */
static void number(reader_t *r, size_t col, const char *text, const char *what)
{
    char small[64], *clean = strlen(text) < sizeof small ? small : malloc(strlen(text) + 1);
    if (!clean) lab_die("out of memory");
    if (py_syntax(text, clean)) {
        text = clean;
    } else {
        /* inf and nan, which float() reads, stay out of range below (a
         * normalised row of them would be NaN); anything else strtod
         * might take is not a number. */
        const char *t = text + (*text == '+' || *text == '-');
        bool special = !strncasecmp(t, "inf", 3) || !strncasecmp(t, "nan", 3);
        if (!special || (r->flags & LAB_CSV_INTS)) {
            fail(r, col,
                 (r->flags & LAB_CSV_INTS) ? "\"%s\" is not a number: expected an integer" : "\"%s\" is not a number",
                 what);
            if (clean != small) free(clean);
            return;
        }
    }
    number_checked(r, col, text, what);
    if (clean != small) free(clean);
}

static void on_field(void *data, size_t len, void *arg)
{
    reader_t *r = arg;
    if (r->failed) return;
    char text[64];
    size_t col = r->col + 1 + (r->tag ? 1 : 0);
    if (r->col == 0 && !r->tag) r->row_line = r->line;
    /* A NUL byte would end the copy below early and read as an empty or
     * shorter number (`1,2,3,\0,5` once counted as 0): name it instead. */
    if (len && memchr(data, '\0', len)) {
        fail(r, col, "a NUL byte in the field%s: expected a number", "");
        return;
    }
    if ((r->flags & LAB_CSV_TAGGED) && !r->tag) {
        if (len == 1 && (*(char *)data == 'a' || *(char *)data == 'b')) {
            r->tag = *(char *)data;
            r->row_line = r->line;
        } else {
            snprintf(text, sizeof text, "%.*s", (int)(len < 40 ? len : 40), (char *)data);
            fail(r, 1, "\"%s\" is not a list tag: expected a (list_a) or b (list_b)", text);
        }
        return;
    }
    /* Trim blanks, which CSV written by hand often has. */
    const char *s = data;
    while (len && (*s == ' ' || *s == '\t')) s++, len--;
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\t' || s[len - 1] == '\r')) len--;
    if (len == 0) {
        fail(r, col, "%sempty field: expected a number", "");
        return;
    }
    /* A field too long for the stack buffer (a decimal expansion of many
     * digits, which Python's float() reads) is parsed from a heap copy; it
     * was refused as "not a number".  Messages show the first 40 bytes of
     * such a field. */
    char *big = NULL, *num = text, shown[48];
    if (len >= sizeof text) {
        big = malloc(len + 1);
        if (!big) lab_die("out of memory");
        num = big;
    }
    memcpy(num, s, len);
    num[len] = '\0';
    const char *what = num;
    if (len >= sizeof text) {
        snprintf(shown, sizeof shown, "%.40s...", num);
        what = shown;
    }
    number(r, col, num, what);
    free(big);
}

static void on_row(int c, void *arg)
{
    (void)c;
    reader_t *r = arg;
    if (r->failed) return;
    lab_rows_t *rows = r->rows;
    if (r->col == 0 && !r->tag) return; /* a blank line */
    size_t width = r->col + (r->tag ? 1 : 0);
    if (r->col == 0) {
        fail(r, 2, "%sthe row has a tag but no numbers", "");
        return;
    }
    if (r->flags & LAB_CSV_SQUARE) {
        if (rows->nrows == 0) {
            r->first_len = r->col;
            r->first_line = r->row_line;
        } else if (r->col != r->first_len) {
            char why[96];
            snprintf(why, sizeof why, "%zu fields where line %zu has %zu (ragged rows)", width,
                     r->first_line, r->first_len);
            fail(r, r->col < r->first_len ? width + 1 : r->first_len + 1, "%s", why);
            return;
        }
    }
    if (rows->nrows + 2 > r->cap_r) {
        r->cap_r = r->cap_r ? 2 * r->cap_r : 256;
        rows->off = realloc(rows->off, r->cap_r * sizeof *rows->off);
        rows->tag = realloc(rows->tag, r->cap_r);
        rows->line = realloc(rows->line, r->cap_r * sizeof *rows->line);
        if (!rows->off || !rows->tag || !rows->line) lab_die("out of memory");
    }
    rows->tag[rows->nrows] = r->tag;
    rows->line[rows->nrows] = r->row_line;
    rows->off[rows->nrows + 1] = rows->off[rows->nrows] + r->col;
    rows->nrows++;
    r->col = 0;
    r->tag = 0;
}

int lab_csv_read(const char *path, unsigned flags, lab_rows_t *rows, char *err, size_t errlen)
{
    memset(rows, 0, sizeof *rows);
    reader_t r = {.path = path, .flags = flags, .rows = rows, .err = err, .errlen = errlen, .cap_r = 256};
    rows->off = calloc(r.cap_r, sizeof *rows->off);
    rows->tag = calloc(r.cap_r, 1);
    rows->line = calloc(r.cap_r, sizeof *rows->line);
    if (!rows->off || !rows->tag || !rows->line) lab_die("out of memory");
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        lab_rows_free(rows);
        return -1;
    }
    struct csv_parser p;
    csv_init(&p, CSV_STRICT | CSV_STRICT_FINI);
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int read_errno = 0;
    while (!r.failed) {
        errno = 0;
        if ((n = getline(&line, &cap, f)) <= 0) {
            /* End of file, or a read error (EISDIR for a directory, EIO):
             * the error must not pass for an empty file. */
            if (ferror(f)) read_errno = errno ? errno : EIO;
            break;
        }
        r.line++;
        /* A UTF-8 byte order mark, as spreadsheets write it, is not data. */
        char *at = line;
        if (r.line == 1 && n >= 3 && memcmp(line, "\xef\xbb\xbf", 3) == 0) at += 3, n -= 3;
        /* A lone CR ends a line too (old Mac files, which Python's csv
         * reads as lines): fed a line at a time, so that a message names
         * the line, not line 1 for every row of such a file. */
        const char *end = at + n;
        while (at < end && !r.failed) {
            const char *cr = memchr(at, '\r', (size_t)(end - at));
            while (cr && cr + 1 < end && cr[1] == '\n') cr = memchr(cr + 1, '\r', (size_t)(end - cr - 1));
            size_t seg = cr && cr + 1 < end ? (size_t)(cr + 1 - at) : (size_t)(end - at);
            if (csv_parse(&p, at, seg, on_field, on_row, &r) != seg && !r.failed)
                fail(&r, r.col + 1, "%s (a stray or unclosed quote)", csv_strerror(csv_error(&p)));
            at += seg;
            if (at < end) r.line++;
        }
    }
    if (read_errno && !r.failed) {
        r.failed = true;
        if (r.line) snprintf(err, errlen, "%s: cannot read after line %zu: %s", path, r.line, strerror(read_errno));
        else snprintf(err, errlen, "%s: cannot read: %s", path, strerror(read_errno));
    }
    if (!r.failed && csv_fini(&p, on_field, on_row, &r) != 0)
        fail(&r, r.col + 1, "%s (a quote left open at the end of the file)", csv_strerror(csv_error(&p)));
    if (!r.failed && rows->nrows == 0) snprintf(err, errlen, "%s: no rows", path), r.failed = true;
    csv_free(&p);
    free(line);
    fclose(f);
    if (r.failed) {
        lab_rows_free(rows);
        return -1;
    }
    return 0;
}

void lab_rows_free(lab_rows_t *rows)
{
    free(rows->off);
    free(rows->v);
    free(rows->tag);
    free(rows->line);
    memset(rows, 0, sizeof *rows);
}
