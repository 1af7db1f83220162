/* Random delays for race tests: each side of a race draws its own.
 *
 * test_rnd() is a per-thread xorshift (seeded from its state's address, so
 * each thread gets its own sequence).  test_jitter(yield_one_in, max_spins)
 * waits 0 to max_spins - 1 spins of an empty loop, or, one time in
 * yield_one_in (a power of two), yields the CPU instead: enough to land on
 * either side of a few-instruction window such as a worker's finish. */
#ifndef TEST_SUPPORT_JITTER_H
#define TEST_SUPPORT_JITTER_H
#include <sched.h>
#include <stdint.h>

static _Thread_local uint64_t test_rng_state;

static inline uint64_t test_rnd(void)
{
    if (!test_rng_state) test_rng_state = (uint64_t)(uintptr_t)&test_rng_state ^ 0x9e3779b97f4a7c15u;
    test_rng_state ^= test_rng_state << 13;
    test_rng_state ^= test_rng_state >> 7;
    test_rng_state ^= test_rng_state << 17;
    return test_rng_state;
}

static inline void test_jitter(unsigned yield_one_in, unsigned max_spins)
{
    uint64_t r = test_rnd();
    if ((r & (yield_one_in - 1)) == 0) {
        sched_yield();
        return;
    }
    for (volatile unsigned i = 0, n = (unsigned)(r >> 8) % max_spins; i < n; i++) {
    }
}
#endif
