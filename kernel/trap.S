/* Interrupt, exception and SYSCALL entry. Every entry builds a struct x86_user_context
 * (reference 7.4): GPRs, a qword 1 (is_gpr_valid), and 48 unwritten bytes for the sregs.
 * Entries from user mode land at tss.rsp0 - 224 = thread->uctx. */
	.text

.macro PUSH_FRAME
	pushq %rdi
	pushq %rsi
	pushq %rdx
	pushq %rcx
	pushq %rax
	pushq %r8
	pushq %r9
	pushq %r10
	pushq %r11
	pushq %rbx
	pushq %rbp
	pushq %r12
	pushq %r13
	pushq %r14
	pushq %r15
	pushq $1
	subq $48, %rsp
.endm

.macro VECTOR v, has_err
	.globl vector_\v
vector_\v:
	/* Outermost kernel frame: the interrupted context is described by the
	 * x86_user_context on the stack, not by a return address, so debuggers stop here. */
	.cfi_startproc
	.cfi_undefined rip
	.if \has_err == 0
	pushq $0
	.endif
	PUSH_FRAME
	movq %rsp, %rdi
	movq $\v, %rsi
	cld
	call trap_handler
	jmp ret_from_frame
	.cfi_endproc
.endm

.irp v, 0,1,2,3,4,5,6,7,9,15,16,18,19,20,21,22,23,24,25,26,27,28,29,30,31
	VECTOR \v, 0
.endr
.irp v, 8,10,11,12,13,14,17
	VECTOR \v, 1
.endr
	VECTOR 239, 0      /* TIMER_VECTOR */
	VECTOR 255, 0      /* SPURIOUS_VECTOR */

	.globl ret_from_frame
ret_from_frame:
	addq $56, %rsp
	popq %r15
	popq %r14
	popq %r13
	popq %r12
	popq %rbp
	popq %rbx
	popq %r11
	popq %r10
	popq %r9
	popq %r8
	popq %rax
	popq %rcx
	popq %rdx
	popq %rsi
	popq %rdi
	addq $8, %rsp
	iretq

/* SYSCALL: rcx = user rip, r11 = user rflags, IF cleared by FMASK. GS base is the kernel's
 * locals area at all times (user programs never change it), so no swapgs. */
	.globl syscall_entry
syscall_entry:
	.cfi_startproc
	.cfi_undefined rip        /* outermost kernel frame: user state is in the uctx frame */
	movq %rsp, %gs:24
	movq %gs:180, %rsp
	pushq $0x3b
	pushq %gs:24
	pushq %r11
	pushq $0x33
	pushq %rcx
	pushq %rax
	PUSH_FRAME
	movq %rsp, %rdi
	cld
	call syscall_dispatch
	jmp ret_from_frame
	.cfi_endproc

	.section .rodata
	.balign 8
	.globl trap_vectors
trap_vectors:
.irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
	.quad vector_\v
.endr
