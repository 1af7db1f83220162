/* Leak counters read from /proc for tests: open descriptors, and mappings
 * (all of them, or those whose line contains a name, such as a memfd's). */
#ifndef TEST_SUPPORT_PROC_H
#define TEST_SUPPORT_PROC_H
int test_count_fds(void);
int test_count_maps(const char *containing); /* NULL: every mapping */
#endif
