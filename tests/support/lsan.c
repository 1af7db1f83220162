/* See lsan.h.  Not weak: the copies some tests still carry are weak, and
 * this one wins over them (and over the sanitizer's empty default). */
#include "lsan.h"

__attribute__((used)) const char *__lsan_default_suppressions(void)
{
    return "leak:libcriterion.so\n";
}
