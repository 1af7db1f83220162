/* The contract between a fuzz harness and the two programs that run it.
 * Each harness (tests/fuzz/fuzz-<target>.c) defines LLVMFuzzerTestOneInput
 * and fuzz_target_name.  Linked with clang's libFuzzer it is a fuzzer
 * (`make fuzz`); linked with tests/fuzz/regress.c it is a Criterion test
 * that replays the target's corpus and crashes folders (`make test`).
 * A harness reports a broken contract with fuzz_fail(), which aborts: for
 * libFuzzer an abort is a crash, and the replay sees the child die. */
#ifndef TESTS_FUZZ_FUZZ_H
#define TESTS_FUZZ_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The folder name under tests/fuzz/corpus/ and crashes/. */
extern const char fuzz_target_name[];

/* Prints "fuzz <target>: <message>" and aborts. */
void fuzz_fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));


#endif
