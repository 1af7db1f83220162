/* Python's text for the values soln.json holds, so that the file is byte for
 * byte what the notebook's `json.dumps(answers, indent=2)` writes.
 *
 * A float is printed as Python's repr prints it: the shortest decimal string
 * that reads back as the same double (CPython's dtoa mode 0), in fixed
 * notation for 1e-4 <= |x| < 1e16 with ".0" after an integral value, and
 * otherwise as d.ddde+XX with at least two exponent digits ("1e-05",
 * "1.5e+16").  The shortest digits come from trying 1 to 17 significant
 * digits with printf's correctly rounded %.*e and keeping the first that
 * strtod reads back exactly: among strings of that length the correctly
 * rounded one is the nearest to x, which is the one Python picks. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lab.h"

size_t lab_py_float(double x, char *buf, size_t cap)
{
    if (isnan(x)) return (size_t)snprintf(buf, cap, "nan");
    if (isinf(x)) return (size_t)snprintf(buf, cap, x < 0 ? "-inf" : "inf");
    if (x == 0) return (size_t)snprintf(buf, cap, signbit(x) ? "-0.0" : "0.0");
    char e[40];
    for (int prec = 0; prec < 17; prec++) {
        snprintf(e, sizeof e, "%.*e", prec, x);
        if (strtod(e, NULL) == x) break;
    }
    /* e is "-d.ddde-XX": split it into sign, digits and exponent. */
    const char *p = e;
    bool neg = *p == '-';
    if (neg) p++;
    char digits[24];
    size_t nd = 0;
    for (; *p && *p != 'e'; p++)
        if (*p != '.') digits[nd++] = *p;
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = '\0';
    int decpt = atoi(p + 1) + 1; /* x = 0.DIGITS x 10^decpt */
    char out[64];
    size_t n = 0;
    if (neg) out[n++] = '-';
    if (decpt > -4 && decpt <= 16) {
        if (decpt <= 0) {
            n += (size_t)sprintf(out + n, "0.%.*s%s", -decpt, "0000", digits);
        } else if ((size_t)decpt >= nd) {
            n += (size_t)sprintf(out + n, "%s%.*s.0", digits, decpt - (int)nd, "0000000000000000");
        } else {
            n += (size_t)sprintf(out + n, "%.*s.%s", decpt, digits, digits + decpt);
        }
    } else {
        int ex = decpt - 1;
        n += (size_t)sprintf(out + n, "%c%s%se%c%02d", digits[0], nd > 1 ? "." : "", digits + 1,
                             ex < 0 ? '-' : '+', ex < 0 ? -ex : ex);
    }
    return (size_t)snprintf(buf, cap, "%s", out);
}

/* --- a growing string ------------------------------------------------------ */

void lab_str_add(lab_str_t *s, const char *text, size_t len)
{
    if (s->len + len + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 256;
        while (cap < s->len + len + 1) cap *= 2;
        char *p = realloc(s->s, cap);
        if (!p) lab_die("out of memory");
        s->s = p;
        s->cap = cap;
    }
    memcpy(s->s + s->len, text, len);
    s->len += len;
    s->s[s->len] = '\0';
}

void lab_str_puts(lab_str_t *s, const char *text)
{
    lab_str_add(s, text, strlen(text));
}

void lab_str_float(lab_str_t *s, double x)
{
    char b[40];
    lab_str_add(s, b, lab_py_float(x, b, sizeof b));
}

/* Python's str() of a list of lists of floats (or of ints, when ints). */
void lab_py_rows(lab_str_t *s, const double *v, const size_t *off, size_t nrows, bool ints)
{
    lab_str_puts(s, "[");
    for (size_t r = 0; r < nrows; r++) {
        lab_str_puts(s, r ? ", [" : "[");
        for (size_t i = off[r]; i < off[r + 1]; i++) {
            if (i > off[r]) lab_str_puts(s, ", ");
            if (ints) {
                char b[32];
                lab_str_add(s, b, (size_t)snprintf(b, sizeof b, "%.0f", v[i]));
            } else {
                lab_str_float(s, v[i]);
            }
        }
        lab_str_puts(s, "]");
    }
    lab_str_puts(s, "]");
}

/* A JSON string as json.dumps writes it with its default ensure_ascii: the
 * two-character escapes, \u00XX for other control characters and DEL (its
 * ESCAPE_ASCII takes everything outside ' '..'~'), and \uXXXX (surrogate
 * pairs above U+FFFF) for everything outside ASCII.  A byte that is not part
 * of a UTF-8 character is \udcXX, as Python's file-system decoding
 * (surrogateescape) hands such bytes of a hostname to json.dumps. */
void lab_json_string(lab_str_t *s, const char *text)
{
    const unsigned char *p = (const unsigned char *)text;
    char b[16];
    lab_str_puts(s, "\"");
    while (*p) {
        unsigned c = *p, cp;
        int extra;
        if (c < 0x80) {
            p++;
            switch (c) {
            case '"': lab_str_puts(s, "\\\""); break;
            case '\\': lab_str_puts(s, "\\\\"); break;
            case '\n': lab_str_puts(s, "\\n"); break;
            case '\r': lab_str_puts(s, "\\r"); break;
            case '\t': lab_str_puts(s, "\\t"); break;
            case '\b': lab_str_puts(s, "\\b"); break;
            case '\f': lab_str_puts(s, "\\f"); break;
            default:
                if (c < 0x20 || c == 0x7f) lab_str_add(s, b, (size_t)snprintf(b, sizeof b, "\\u%04x", c));
                else lab_str_add(s, (const char *)&c, 1);
            }
            continue;
        }
        const unsigned char *start = p;
        if (c >= 0xf0 && c < 0xf5) extra = 3, cp = c & 7;
        else if (c >= 0xe0 && c < 0xf0) extra = 2, cp = c & 15;
        else if (c >= 0xc2 && c < 0xe0) extra = 1, cp = c & 31;
        else extra = -1, cp = 0;
        p++;
        for (int k = 0; k < extra; k++, p++) {
            if ((*p & 0xc0) != 0x80) {
                extra = -1;
                break;
            }
            cp = cp << 6 | (*p & 0x3fu);
        }
        if (extra > 0 && ((extra == 2 && (cp < 0x800 || (cp >= 0xd800 && cp < 0xe000))) ||
                          (extra == 3 && (cp < 0x10000 || cp > 0x10ffff))))
            extra = -1;
        if (extra < 0) {
            /* One surrogate a byte, as Python's decoder escapes each byte of
             * an invalid sequence; a byte that ended it is read again. */
            for (const unsigned char *q = start; q < p; q++)
                lab_str_add(s, b, (size_t)snprintf(b, sizeof b, "\\udc%02x", *q));
            continue;
        }
        if (cp >= 0x10000) {
            cp -= 0x10000;
            lab_str_add(s, b, (size_t)snprintf(b, sizeof b, "\\u%04x\\u%04x", 0xd800 + (cp >> 10), 0xdc00 + (cp & 0x3ff)));
        } else {
            lab_str_add(s, b, (size_t)snprintf(b, sizeof b, "\\u%04x", cp));
        }
    }
    lab_str_puts(s, "\"");
}
