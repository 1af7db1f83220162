/* Coroutine stacks: mmap'd, pooled per loop, overflow-checked.
 *
 * Linux caps a process at vm.max_map_count mappings (65,530 by default), and a
 * stack with a guard page costs two (the guard splits the mapping), which
 * would cap a program near 32k tasks.  So stacks come in two kinds:
 *   - guarded: their own mapping with a PROT_NONE page below, so an overflow
 *     faults at once.  Used while the process holds fewer than a quarter of
 *     max_map_count of them;
 *   - slab: carved 64 at a time from one mapping, without guard pages.
 * A slab stack carries a canary at its low end that the scheduler checks each
 * time its task switches out, so an overflow is caught at the next switch
 * (and the program aborts with a message, since the memory below is now
 * corrupt); a runaway one that faults below its slab before any switch is
 * named by the SIGSEGV handler below, from the stack pointer.  Slab stacks start SLAB_SKEW bytes into a page, so a stack's
 * canary shares its page with the top of the stack below: the canary costs no
 * page of its own.  Stacks are reserved with MAP_NORESERVE and only touched
 * pages cost memory, so an idle task holds about one page of stack.
 * Freed stacks of the default size return to the loop's pool; beyond
 * POOL_KEEP the pages are given back (munmap, or MADV_DONTNEED for slabs).
 *
 * An overflow into a guard page would kill the process with a bare SIGSEGV.
 * So, unless the program (or a sanitizer) has a SIGSEGV handler of its own,
 * the first loop installs one (SA_ONSTACK | SA_RESETHAND), and each thread
 * that runs a loop gets an alternate signal stack if it has none: a fault
 * on the running task's guard page (or just below it: a large frame can
 * jump the page), or any fault with the stack pointer below the task's
 * stack (a slab stack's runaway recursion, a frame that jumps the guard
 * page), then writes one line naming the overflow and the stack's size, and returns with the default action restored, so the fault
 * repeats and the process dies of SIGSEGV as before.  The handler reads only this
 * thread's loop and task, and writes with write(2). */
#include <sys/mman.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>
#include <unistd.h>
#include "core_internal.h"

#if defined(__has_include)
#  if __has_include(<valgrind/valgrind.h>)
#    include <valgrind/valgrind.h>
#    define HAVE_VALGRIND 1
#  endif
#endif

#define SLAB_STACKS 64
#define POOL_KEEP 1024
#define CANARY 0x5AFE57AC4CA9A2ULL
#define CANARY_WORDS 4
#define SLAB_SKEW 2048

typedef struct async__slab {
    void *map;
    size_t map_size;
    unsigned used; /* stacks handed out and not yet released to the pool */
    struct async__slab *next;
} slab_t;

struct async__stack_pool {
    async__stack_t *free_default; /* pooled stacks of ASYNC_STACK_DEFAULT */
    size_t nfree;
    async__stack_t *slab_spare;   /* slab stacks never handed out */
    slab_t *slabs;
};

/* Process-wide, read and set up by the loops of every thread: atomics.  The
 * lazy set-ups may run twice at once; both compute the same value. */
static _Atomic long guarded_live;
static _Atomic long guarded_budget = -1;

/* ASYNC_STACK_GUARDS=N overrides how many guarded stacks a process may hold
 * (0: none, every default-size stack comes from a slab). */
static long guard_budget(void)
{
    long budget = atomic_load_explicit(&guarded_budget, memory_order_relaxed);
    if (budget >= 0) return budget;
    const char *env = getenv("ASYNC_STACK_GUARDS");
    if (env && *env) {
        budget = strtol(env, NULL, 10);
        if (budget < 0) budget = 0;
    } else {
        long max = 65530;
        FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
        if (f) {
            if (fscanf(f, "%ld", &max) != 1) max = 65530;
            fclose(f);
        }
        budget = max / 4 / 2; /* two mappings a guarded stack */
    }
    atomic_store_explicit(&guarded_budget, budget, memory_order_relaxed);
    return budget;
}

static void write_canary(async__stack_t *s)
{
    if (s->map) return; /* guarded: the guard page catches overflows */
    uint64_t *w = s->base;
    for (int i = 0; i < CANARY_WORDS; i++) w[i] = CANARY;
}

static void arm(async__stack_t *s)
{
    write_canary(s);
#ifdef HAVE_VALGRIND
    s->valgrind_id = VALGRIND_STACK_REGISTER(s->base, (char *)s->base + s->size);
#endif
}

static void disarm(async__stack_t *s)
{
#ifdef HAVE_VALGRIND
    VALGRIND_STACK_DEREGISTER(s->valgrind_id);
#else
    (void)s;
#endif
}

bool async__stack_intact(const async__stack_t *s)
{
    if (s->map) return true;
    const uint64_t *w = s->base;
    for (int i = 0; i < CANARY_WORDS; i++)
        if (w[i] != CANARY) return false;
    return true;
}

async__stack_pool_t *async__stack_pool_new(void)
{
    return async__calloc(1, sizeof(async__stack_pool_t));
}

static void release_guarded(async__stack_t *s)
{
    disarm(s);
    munmap(s->map, s->map_size);
    atomic_fetch_sub(&guarded_live, 1);
    async__free(s);
}

void async__stack_pool_free(async__stack_pool_t *pool)
{
    if (!pool) return;
    async__stack_t *s, *next;
    for (s = pool->free_default; s; s = next) {
        next = s->next_free;
        if (s->map) release_guarded(s);
        else { disarm(s); async__free(s); }
    }
    for (s = pool->slab_spare; s; s = next) {
        next = s->next_free;
        async__free(s);
    }
    for (slab_t *sl = pool->slabs, *n; sl; sl = n) {
        n = sl->next;
        munmap(sl->map, sl->map_size);
        async__free(sl);
    }
    async__free(pool);
}

static int new_guarded(size_t size, async__stack_t **out)
{
    size_t ps = async__page_size();
    async__stack_t *s = async__calloc(1, sizeof *s);
    if (!s) return ASYNC_ENOMEM;
    s->map_size = size + ps;
    s->map = mmap(NULL, s->map_size, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (s->map == MAP_FAILED) {
        async__free(s);
        return ASYNC_ENOMEM;
    }
    if (mprotect(s->map, ps, PROT_NONE) != 0) {
        munmap(s->map, s->map_size);
        async__free(s);
        return ASYNC_ENOMEM;
    }
    s->base = (char *)s->map + ps;
    s->size = size;
    atomic_fetch_add(&guarded_live, 1);
    *out = s;
    return 0;
}

static int new_slab(async__stack_pool_t *pool)
{
    slab_t *sl = async__calloc(1, sizeof *sl);
    async__stack_t *stacks[SLAB_STACKS] = {0};
    if (!sl) return ASYNC_ENOMEM;
    for (int i = 0; i < SLAB_STACKS; i++)
        if (!(stacks[i] = async__calloc(1, sizeof(async__stack_t)))) goto fail;
    sl->map_size = (size_t)SLAB_STACKS * ASYNC_STACK_DEFAULT + async__page_size();
    sl->map = mmap(NULL, sl->map_size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (sl->map == MAP_FAILED) goto fail;
    for (int i = 0; i < SLAB_STACKS; i++) {
        stacks[i]->base = (char *)sl->map + SLAB_SKEW + (size_t)i * ASYNC_STACK_DEFAULT;
        stacks[i]->size = ASYNC_STACK_DEFAULT;
        stacks[i]->slab = sl;
        stacks[i]->next_free = pool->slab_spare;
        pool->slab_spare = stacks[i];
    }
    sl->next = pool->slabs;
    pool->slabs = sl;
    return 0;
fail:
    for (int i = 0; i < SLAB_STACKS; i++) async__free(stacks[i]);
    async__free(sl);
    return ASYNC_ENOMEM;
}

int async__stack_get(async__stack_pool_t *pool, size_t size, async__stack_t **out)
{
    async__stack_t *s;
    if (size == ASYNC_STACK_DEFAULT && pool->free_default) {
        s = pool->free_default;
        pool->free_default = s->next_free;
        pool->nfree--;
        write_canary(s); /* its pages may have been given back */
        *out = s;
        return 0;
    }
    if (size != ASYNC_STACK_DEFAULT || atomic_load(&guarded_live) < guard_budget()) {
        int rc = new_guarded(size, &s);
        if (rc) return rc;
    } else {
        if (!pool->slab_spare) {
            int rc = new_slab(pool);
            if (rc) return rc;
        }
        s = pool->slab_spare;
        pool->slab_spare = s->next_free;
    }
    arm(s);
    *out = s;
    return 0;
}

void async__stack_put(async__stack_pool_t *pool, async__stack_t *s)
{
    if (s->size != ASYNC_STACK_DEFAULT) {
        release_guarded(s);
        return;
    }
    if (pool->nfree >= POOL_KEEP) {
        if (s->map) {
            release_guarded(s);
            return;
        }
        /* Slab stacks stay in the pool but give their pages back; the canary
         * goes with them and is rewritten on reuse. */
        madvise(s->base, s->size, MADV_DONTNEED);
    }
    s->next_free = pool->free_default;
    pool->free_default = s;
    pool->nfree++;
}

/* --- reporting an overflow into a guard page ------------------------------- */

#define ALT_STACK ((size_t)64 * 1024)
#define SLAB_SPAN ((size_t)SLAB_STACKS * ASYNC_STACK_DEFAULT + SLAB_SKEW)
#define BELOW_GUARD ((size_t)64 * 1024) /* faults this far under it count too */

static pthread_once_t handler_once = PTHREAD_ONCE_INIT;
static pthread_key_t alt_key;
static bool handler_installed;

/* Appends the decimal digits of v to p; returns the new end. */
static char *put_num(char *p, size_t v)
{
    char digits[24];
    int n = 0;
    do digits[n++] = (char)('0' + v % 10); while ((v /= 10) && n < 24);
    while (n) *p++ = digits[--n];
    return p;
}

static char *put_str(char *p, const char *s)
{
    while (*s) *p++ = *s++;
    return p;
}

/* The faulting context's stack pointer, or 0 where this file does not know
 * the architecture's register layout. */
static uintptr_t fault_sp(const void *uc)
{
    const ucontext_t *c = uc;
#if defined(__x86_64__)
    return (uintptr_t)c->uc_mcontext.gregs[REG_RSP];
#elif defined(__aarch64__)
    return (uintptr_t)c->uc_mcontext.sp;
#else
    (void)c;
    return 0;
#endif
}

static void on_segv(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    async_loop_t *loop = async_loop_current();
    async_task_impl_t *t = loop ? loop->current : NULL;
    const async__stack_t *s = t ? t->stack : NULL;
    if (s) {
        uintptr_t a = (uintptr_t)si->si_addr, base = (uintptr_t)s->base;
        /* The stack pointer below the task's stack, by no more than a
         * slab's stacks and what faults below them: the task overflowed,
         * wherever the fault landed.  A slab stack has no guard page, so a
         * runaway recursion runs on through the stacks below it and faults
         * only past the slab, never reaching the switch that checks the
         * canary; a frame larger than the guard page jumps it. */
        uintptr_t sp = fault_sp(uc);
        bool sp_below = sp && sp < base && base - sp <= SLAB_SPAN + BELOW_GUARD;
        const char *how = NULL;
        uintptr_t low = (uintptr_t)s->map;
        low = low > BELOW_GUARD ? low - BELOW_GUARD : 0;
        if (s->map && a >= low && a < base) how = " bytes, into its guard page)";
        else if (sp_below && s->map) how = " bytes, past its guard page)";
        else if (sp_below) how = " bytes, without a guard page: it overwrote the memory below)";
        if (how) {
            char line[200], *p = line;
            p = put_str(p, "libasync: task stack overflow (stack of ");
            p = put_num(p, s->size);
            p = put_str(p, how);
            p = put_str(p, "; spawn it with a larger stack_size\n");
            if (write(2, line, (size_t)(p - line)) < 0) { /* nothing more to do */ }
        }
    }
    /* SA_RESETHAND restored the default action: the fault repeats and ends
     * the process as it would have without this handler. */
}

static void free_alt_stack(void *mem)
{
    stack_t ss = {.ss_flags = SS_DISABLE};
    stack_t cur;
    if (sigaltstack(NULL, &cur) == 0 && cur.ss_sp == mem) sigaltstack(&ss, NULL);
    munmap(mem, ALT_STACK);
}

static void install_handler(void)
{
    struct sigaction old;
    if (sigaction(SIGSEGV, NULL, &old) != 0) return;
    bool dfl = (old.sa_flags & SA_SIGINFO) ? old.sa_sigaction == NULL : old.sa_handler == SIG_DFL;
    if (!dfl || pthread_key_create(&alt_key, free_alt_stack) != 0) return;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    handler_installed = sigaction(SIGSEGV, &sa, NULL) == 0;
}

void async__stack_guard_report(void)
{
    pthread_once(&handler_once, install_handler);
    if (!handler_installed || pthread_getspecific(alt_key)) return;
    stack_t cur;
    if (sigaltstack(NULL, &cur) != 0 || !(cur.ss_flags & SS_DISABLE)) return; /* one is set */
    void *mem = mmap(NULL, ALT_STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) return; /* no report, as before */
    stack_t ss = {.ss_sp = mem, .ss_size = ALT_STACK, .ss_flags = 0};
    if (sigaltstack(&ss, NULL) != 0 || pthread_setspecific(alt_key, mem) != 0) {
        free_alt_stack(mem);
        return;
    }
}
