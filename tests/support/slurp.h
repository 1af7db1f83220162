/* Reading a whole file for a test's checks. */
#ifndef TEST_SUPPORT_SLURP_H
#define TEST_SUPPORT_SLURP_H

/* The whole text of the file at path, NUL-terminated and malloc'd (the
 * caller frees it), or NULL if it cannot be opened or memory runs out.  A
 * NUL byte inside the file ends the string early for str* functions. */
char *test_slurp(const char *path);

#endif
