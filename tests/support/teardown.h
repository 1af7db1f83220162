/* Checks in a suite's teardown (.fini) that can fail a test.
 *
 * Criterion 2.4 counts a test as passed whatever its teardown does: a failed
 * cr_expect or cr_assert there is printed and forgotten, and so is a crash.
 * A teardown check therefore logs its message and aborts: Criterion then
 * prints "Warning! The test `suite::name` crashed during its setup or
 * teardown.", which scripts/run-tests counts as a failure of that test, and
 * the ThreadSanitizer shim (tests/shim) counts the abort as a crash. */
#ifndef TEST_SUPPORT_TEARDOWN_H
#define TEST_SUPPORT_TEARDOWN_H
#include <criterion/criterion.h>
#include <stdlib.h>

#define TEARDOWN_CHECK(cond, ...)                                                      \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            cr_log_error("teardown check failed: " #cond ": " __VA_ARGS__);            \
            abort();                                                                   \
        }                                                                              \
    } while (0)

/* The counting allocator's live allocations are back to zero. */
#define TEARDOWN_CHECK_NO_LEAK()                                                       \
    TEARDOWN_CHECK(test_alloc_live() == 0, "leaked %ld allocations", test_alloc_live())
#endif
