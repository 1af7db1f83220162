/* Work functions' kernels that several benchmarks share, so that the same
 * figure name means the same work in each.  Header only, as rounds.h. */
#ifndef ASYNC_BENCH_WORKLOADS_H
#define ASYNC_BENCH_WORKLOADS_H
#include <stdbool.h>
#include <stdint.h>

/* Trial division by 2, 3 and 6k +- 1: the primes benchmarks' unit of work. */
static inline bool is_prime(uint32_t n)
{
    if (n < 2) return false;
    if (n < 4) return true;
    if (n % 2 == 0 || n % 3 == 0) return false;
    for (uint32_t d = 5; d * d <= n; d += 6)
        if (n % d == 0 || n % (d + 2) == 0) return false;
    return true;
}
#endif
