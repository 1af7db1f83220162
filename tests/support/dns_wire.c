/* See dns_wire.h. */
#include <string.h>
#include "dns_wire.h"

size_t test_dns_question(const unsigned char *q, size_t n, char *name, size_t cap, unsigned *qtype)
{
    size_t p = 12, k = 0;
    while (p < n && q[p] && k < cap - 64) {
        unsigned len = q[p++];
        if (k) name[k++] = '.';
        for (unsigned i = 0; i < len && p < n; i++) name[k++] = (char)q[p++];
    }
    name[k] = 0;
    size_t qend = p + 5; /* the root label, type and class */
    if (qend > n) return 0;
    *qtype = (unsigned)q[p + 1] << 8 | q[p + 2];
    return qend;
}

void test_dns_reply_head(const unsigned char *q, size_t qend, unsigned char *r)
{
    memcpy(r, q, qend);
    r[2] = 0x81; /* a response, recursion desired */
    r[3] = 0x80; /* recursion available, no error */
    memset(r + 6, 0, 6);
}
