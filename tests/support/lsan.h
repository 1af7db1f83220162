/* LeakSanitizer's suppressions for every test binary (tests/support is linked
 * into each).  Criterion 2.4.1's runner, the parent process, loses a few
 * 48-byte blocks allocated under criterion_run_all_tests when two workers
 * finish close together (--jobs 2), and LSan then fails the whole binary
 * under SANITIZE=address.  With the default fast unwinder those stacks hold
 * only libcriterion frames, so the suppression names the module: it hides
 * nothing of the library's or of a program under test (which LSan checks in
 * its own process).  scripts/run-tests passes the same rule through
 * LSAN_OPTIONS (scripts/lsan.supp); this copy covers a binary run by hand.
 * Nothing to include: the definition in lsan.c is found by the sanitizer. */
#ifndef TEST_SUPPORT_LSAN_H
#define TEST_SUPPORT_LSAN_H
const char *__lsan_default_suppressions(void);
#endif
