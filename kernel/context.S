/* Kernel context switch with McKernel's convention (reference 7.1): the saved ctx.rsp points at
 * the return address into the caller, so a debugger given rip = ihk_mc_switch_context and that
 * rsp unwinds with the CFI below (CFA = rsp + 8 throughout, return address at CFA - 8).
 *   struct thread *ihk_mc_switch_context(ctx *old (may be NULL), ctx *new, void *prev)
 * returns prev in the new context. */
	.cfi_sections .eh_frame, .debug_frame
	.text
	.globl ihk_mc_switch_context
	.type ihk_mc_switch_context, @function
ihk_mc_switch_context:
	.cfi_startproc
	pushfq
	.cfi_adjust_cfa_offset 8
	popq %rax
	.cfi_adjust_cfa_offset -8
	testq %rdi, %rdi
	jz 1f
	movq %rsp, 0(%rdi)
	movq %rbp, 8(%rdi)
	movq %rbx, 16(%rdi)
	movq %rsi, 24(%rdi)
	movq %rdi, 32(%rdi)
	movq %r12, 40(%rdi)
	movq %r13, 48(%rdi)
	movq %r14, 56(%rdi)
	movq %r15, 64(%rdi)
	movq %rax, 72(%rdi)
1:
	movq 80(%rsi), %rax
	testq %rax, %rax
	jz 2f
	movq %rax, %gs:180          /* tss.rsp0 */
	movq %rax, %gs:16           /* kernel_stack */
2:
	movq 0(%rsi), %rsp
	movq 8(%rsi), %rbp
	movq 16(%rsi), %rbx
	movq 40(%rsi), %r12
	movq 48(%rsi), %r13
	movq 56(%rsi), %r14
	movq 64(%rsi), %r15
	pushq 72(%rsi)
	.cfi_adjust_cfa_offset 8
	popfq
	.cfi_adjust_cfa_offset -8
	movq %rdx, %rax
	ret
	.cfi_endproc
	.size ihk_mc_switch_context, . - ihk_mc_switch_context

/* First kernel-side return address of a new user thread: [ctx.rsp] = enter_user_mode and
 * rsp then equals uctx, the frame iretq'd to user mode. */
	.globl enter_user_mode
	.type enter_user_mode, @function
enter_user_mode:
	.cfi_startproc
	.cfi_undefined rip
	jmp ret_from_frame
	.cfi_endproc
	.size enter_user_mode, . - enter_user_mode
