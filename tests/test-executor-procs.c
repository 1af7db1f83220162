/* The executor's table of cases (tests/test-executor.c) run on the process
 * backend.  That file lists its backends in a BACKENDS macro meant to gain a
 * `X(procs, ASYNC_BACKEND_PROCESSES, ...)` line; until it does, this file
 * compiles it a second time with the thread backend's name and suite mapped
 * to the process backend's, and runs only that suite: the thread-only cases
 * at its end (callbacks on the worker thread, borrowed pointers) do not hold
 * for processes and are filtered out by the main below. */
#if defined(__SANITIZE_THREAD__)
/* ThreadSanitizer cannot follow synchronisation that goes through memory
 * another process writes, and forking the fork server from a threaded
 * process is outside what it supports: these tests run under the other
 * sanitizers only. */
#include <criterion/criterion.h>
Test(tsan, process_pool_tests_skipped, .timeout = 1) {}
#else
#include <criterion/criterion.h>
#include <async.h>
#include <async/future.h>
#include <async/executor.h>

#define ASYNC_BACKEND_THREADS ASYNC_BACKEND_PROCESSES
#define threads procs
#define exec_threads_only exec_threads_only_not_for_processes
#include "test-executor.c"

/* executor.c refers to the process backend weakly, which does not pull
 * procs.o out of libasync.a; refer to it strongly here.  (The shared library
 * has it either way.) */
extern const char async__procs_backend[];
__attribute__((used)) static const void *const link_procs = async__procs_backend;

int main(int argc, char *argv[])
{
    struct criterion_test_set *tests = criterion_initialize();
    int result = 0;
    if (criterion_handle_args(argc, argv, true)) {
        if (!criterion_options.pattern) criterion_options.pattern = "procs/*";
        result = !criterion_run_all_tests(tests);
    }
    criterion_finalize(tests);
    return result;
}
#endif
