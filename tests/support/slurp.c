/* A whole file as a string (slurp.h). */
#include "slurp.h"
#include <stdio.h>
#include <stdlib.h>

char *test_slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *s = malloc(cap);
    for (size_t k; s && (k = fread(s + n, 1, cap - 1 - n, f)) > 0;) {
        n += k;
        if (n == cap - 1) {
            char *grown = realloc(s, cap *= 2);
            if (!grown) free(s);
            s = grown;
        }
    }
    fclose(f);
    if (s) s[n] = '\0';
    return s;
}
