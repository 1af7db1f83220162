/* See lsan.h.  Not weak: it replaces the sanitizer's empty default. */
#include "lsan.h"

__attribute__((used)) const char *__lsan_default_suppressions(void)
{
    return "leak:libcriterion.so\n";
}
