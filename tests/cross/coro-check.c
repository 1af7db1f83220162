/* A cross-architecture check of the context switch and stacks: run under
 * qemu-user by `make check-aarch64`.  It needs no libev: it drives lib/core/coro.c and
 * lib/core/stack.c directly, ping-ponging two coroutines and checking that
 * callee-saved integer and floating-point state survives every switch. */
#include <stdio.h>
#include <stdlib.h>
#include "core/core_internal.h"

static async__coro_t main_coro, co;
static long bounces;

static void entry(void *arg)
{
    double scale = *(double *)arg; /* lives in a callee-saved FP register */
    for (;;) {
        bounces++;
        async__coro_switch(&co, &main_coro, false);
        scale *= 1.0;
        if (scale != 1.25) abort();
    }
}

int main(void)
{
    async__stack_pool_t *pool = async__stack_pool_new();
    async__stack_t *stack;
    double scale = 1.25;
    if (!pool || async__stack_get(pool, ASYNC_STACK_DEFAULT, &stack)) return 1;
    async__coro_init_main(&main_coro);
    if (async__coro_init(&co, stack, entry, &scale)) return 1;
    double local = 3.5;
    long sum = 0;
    for (long i = 0; i < 100000; i++) {
        async__coro_switch(&main_coro, &co, false);
        sum += i;
        local += 0.0;
    }
    int ok = bounces == 100000 && local == 3.5 && sum == 4999950000L && async__stack_intact(stack);
    async__stack_put(pool, stack);
    async__stack_pool_free(pool);
    printf("%s: %ld switches round trip, state preserved: %s\n", ok ? "ok" : "FAILED", bounces,
           ok ? "yes" : "no");
    return ok ? 0 : 1;
}
