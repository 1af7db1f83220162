/* Coroutine contexts: preparing a stack to run a function, and switching
 * between contexts.  The switch itself is a few instructions of assembly
 * (coro_<arch>.S); with -DASYNC_CORO_UCONTEXT it is glibc's swapcontext, which
 * also saves and restores the signal mask with system calls and so costs
 * ~100x more.  A thread's signal mask belongs to the thread, not to a task
 * (a signal wait blocks its signals for the thread, and a task that switches
 * out must not take that back), so before each swapcontext the target's
 * saved mask is overwritten with the thread's current one.
 *
 * Sanitizers must be told about every switch: AddressSanitizer through
 * __sanitizer_{start,finish}_switch_fiber (or it reports stack reads as
 * overflows and loses its fake stacks), ThreadSanitizer through its fiber API.
 * Both hooks are compiled in only under those sanitizers. */
#include <stdint.h>
#include <string.h>
#include "core_internal.h"

#ifdef ASYNC_ASAN
#include <sanitizer/asan_interface.h>
#endif
#ifdef ASYNC_TSAN
#include <sanitizer/tsan_interface.h>
#endif

#ifdef ASYNC_CORO_UCONTEXT
#include <signal.h>
#include <ucontext.h>
#else
void async__coro_trampoline_asm(void);
#  if defined(ASYNC_ASAN) || defined(ASYNC_TSAN)
void async__coro_switch_asm(void **save_sp, void *load_sp);
#  endif
#endif

/* First C frame of every coroutine. */
static void coro_start(async__coro_t *coro)
{
#ifdef ASYNC_ASAN
    __sanitizer_finish_switch_fiber(NULL, NULL, NULL);
#endif
    coro->entry(coro->arg);
    __builtin_unreachable(); /* the entry switches away for good */
}

#ifdef ASYNC_CORO_UCONTEXT
static void coro_start_uc(unsigned hi, unsigned lo)
{
    coro_start((async__coro_t *)(((uintptr_t)hi << 32) | lo));
}
#endif

int async__coro_init(async__coro_t *coro, async__stack_t *stack, void (*entry)(void *), void *arg)
{
    memset(coro, 0, sizeof *coro);
    coro->entry = entry;
    coro->arg = arg;
    coro->stack_bottom = stack->base;
    coro->stack_size = stack->size;
#ifdef ASYNC_ASAN
    /* A pooled stack (or a new one mapped where an old one was) still holds
     * the shadow of the frames its last coroutine left: a coroutine ends by
     * switching away for good, so its outer frames never return and never
     * unpoison their redzones.  The new coroutine's frames lie elsewhere in
     * the same bytes, and ASan would report them as overflows. */
    __asan_unpoison_memory_region(stack->base, stack->size);
#endif
#ifdef ASYNC_CORO_UCONTEXT
    ucontext_t *uc = async__malloc(sizeof *uc);
    if (!uc) return ASYNC_ENOMEM;
    getcontext(uc);
    uc->uc_stack.ss_sp = stack->base;
    uc->uc_stack.ss_size = stack->size;
    uc->uc_link = NULL;
    uintptr_t p = (uintptr_t)coro;
    makecontext(uc, (void (*)(void))coro_start_uc, 2, (unsigned)(p >> 32), (unsigned)p);
    coro->uc = uc;
#else
    uintptr_t top = ((uintptr_t)stack->base + stack->size) & ~(uintptr_t)15;
#  if defined(__x86_64__)
    /* Popped by the switch: r15 r14 r13 r12 rbx rbp, then `ret` into the
     * trampoline with the stack 16-byte aligned for its call. */
    void **sp = (void **)(top - 72);
    memset(sp, 0, 72);
    sp[2] = (void *)coro_start;  /* r13 */
    sp[3] = coro;                /* r12 */
    sp[6] = (void *)async__coro_trampoline_asm;
#  elif defined(__aarch64__)
    /* Loaded by the switch: x19..x30 then d8..d15; x30 is the return address. */
    void **sp = (void **)(top - 160);
    memset(sp, 0, 160);
    sp[0] = coro;                /* x19 */
    sp[1] = (void *)coro_start;  /* x20 */
    sp[11] = (void *)async__coro_trampoline_asm; /* x30 */
#  else
#    error "no context switch for this architecture: build with CORO=ucontext"
#  endif
    coro->sp = sp;
#endif
#ifdef ASYNC_TSAN
    coro->tsan_fiber = __tsan_create_fiber(0);
#endif
    return 0;
}

void async__coro_init_main(async__coro_t *coro)
{
    memset(coro, 0, sizeof *coro);
#ifdef ASYNC_CORO_UCONTEXT
    coro->uc = async__malloc(sizeof(ucontext_t)); /* checked by the caller */
#endif
#ifdef ASYNC_ASAN
    /* ASan needs the bounds of the stack it switches back to. */
    pthread_attr_t attr;
    void *addr;
    size_t size;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
        if (pthread_attr_getstack(&attr, &addr, &size) == 0) {
            coro->stack_bottom = addr;
            coro->stack_size = size;
        }
        pthread_attr_destroy(&attr);
    }
#endif
#ifdef ASYNC_TSAN
    coro->tsan_fiber = __tsan_get_current_fiber();
#endif
}

void async__coro_destroy(async__coro_t *coro)
{
    (void)coro;
#ifdef ASYNC_CORO_UCONTEXT
    async__free(coro->uc);
    coro->uc = NULL;
#endif
#ifdef ASYNC_TSAN
    if (coro->entry && coro->tsan_fiber) __tsan_destroy_fiber(coro->tsan_fiber);
    coro->tsan_fiber = NULL;
#endif
}

#if defined(ASYNC_ASAN) || defined(ASYNC_TSAN) || defined(ASYNC_CORO_UCONTEXT)
void async__coro_switch(async__coro_t *from, async__coro_t *to, bool from_exiting)
{
#ifdef ASYNC_ASAN
    __sanitizer_start_switch_fiber(from_exiting ? NULL : &from->fake_stack, to->stack_bottom,
                                   to->stack_size);
#else
    (void)from_exiting;
#endif
#ifdef ASYNC_TSAN
    __tsan_switch_to_fiber(to->tsan_fiber, 0);
#endif
#ifdef ASYNC_CORO_UCONTEXT
    pthread_sigmask(SIG_SETMASK, NULL, &((ucontext_t *)to->uc)->uc_sigmask);
    swapcontext(from->uc, to->uc);
#else
    async__coro_switch_asm(&from->sp, to->sp);
#endif
#ifdef ASYNC_ASAN
    __sanitizer_finish_switch_fiber(from->fake_stack, NULL, NULL);
#endif
}
#endif
