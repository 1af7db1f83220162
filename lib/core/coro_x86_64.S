/* The context switch for x86-64 (System V).  Saves the callee-saved registers
 * on the current stack, stores the stack pointer, loads the other one and pops
 * its registers.  The x87 control word and MXCSR are not switched: they are
 * per-thread state that tasks of one loop share. */
    .text
    .globl  async__coro_switch_asm
    .hidden async__coro_switch_asm
    .type   async__coro_switch_asm, @function
/* void async__coro_switch_asm(void **save_sp, void *load_sp) */
async__coro_switch_asm:
    .cfi_startproc
    pushq   %rbp
    pushq   %rbx
    pushq   %r12
    pushq   %r13
    pushq   %r14
    pushq   %r15
    movq    %rsp, (%rdi)
    movq    %rsi, %rsp
    popq    %r15
    popq    %r14
    popq    %r13
    popq    %r12
    popq    %rbx
    popq    %rbp
    ret
    .cfi_endproc
    .size   async__coro_switch_asm, .-async__coro_switch_asm

    .globl  async__coro_trampoline_asm
    .hidden async__coro_trampoline_asm
    .type   async__coro_trampoline_asm, @function
/* First frame of every coroutine: r12 = argument, r13 = entry function.  The
 * entry never returns; it switches away for good when its task ends. */
async__coro_trampoline_asm:
    .cfi_startproc
    .cfi_undefined rip
    movq    %r12, %rdi
    callq   *%r13
    ud2
    .cfi_endproc
    .size   async__coro_trampoline_asm, .-async__coro_trampoline_asm

    .section .note.GNU-stack,"",@progbits
