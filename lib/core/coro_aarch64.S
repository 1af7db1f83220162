/* The context switch for AArch64 (AAPCS64): callee-saved x19-x30 and d8-d15
 * are stored below the stack pointer, which is then exchanged. */
    .text
    .globl  async__coro_switch_asm
    .hidden async__coro_switch_asm
    .type   async__coro_switch_asm, %function
/* void async__coro_switch_asm(void **save_sp, void *load_sp) */
async__coro_switch_asm:
    sub     sp, sp, #160
    stp     x19, x20, [sp, #0]
    stp     x21, x22, [sp, #16]
    stp     x23, x24, [sp, #32]
    stp     x25, x26, [sp, #48]
    stp     x27, x28, [sp, #64]
    stp     x29, x30, [sp, #80]
    stp     d8,  d9,  [sp, #96]
    stp     d10, d11, [sp, #112]
    stp     d12, d13, [sp, #128]
    stp     d14, d15, [sp, #144]
    mov     x9, sp
    str     x9, [x0]
    mov     sp, x1
    ldp     x19, x20, [sp, #0]
    ldp     x21, x22, [sp, #16]
    ldp     x23, x24, [sp, #32]
    ldp     x25, x26, [sp, #48]
    ldp     x27, x28, [sp, #64]
    ldp     x29, x30, [sp, #80]
    ldp     d8,  d9,  [sp, #96]
    ldp     d10, d11, [sp, #112]
    ldp     d12, d13, [sp, #128]
    ldp     d14, d15, [sp, #144]
    add     sp, sp, #160
    ret
    .size   async__coro_switch_asm, .-async__coro_switch_asm

    .globl  async__coro_trampoline_asm
    .hidden async__coro_trampoline_asm
    .type   async__coro_trampoline_asm, %function
/* x19 = argument, x20 = entry function; the entry never returns. */
async__coro_trampoline_asm:
    mov     x0, x19
    blr     x20
    brk     #0
    .size   async__coro_trampoline_asm, .-async__coro_trampoline_asm

    .section .note.GNU-stack,"",%progbits
