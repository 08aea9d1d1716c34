/* Start-up and thread trampoline for the freestanding user programs. */
	.text
	.globl _start
_start:
	movq %rsp, %rdi          /* -> argc, argv[] */
	andq $-16, %rsp
	call umain
	movl %eax, %edi
	movl $231, %eax          /* exit_group */
	syscall
	hlt

/* long clone_thread(void (*fn)(void *), void *arg, void *stack_top) */
	.globl clone_thread
clone_thread:
	subq $16, %rdx
	movq %rdi, 0(%rdx)
	movq %rsi, 8(%rdx)
	movq %rdx, %rsi          /* newsp */
	movl $0x50f00, %edi      /* CLONE_VM|FS|FILES|SIGHAND|THREAD|SYSVSEM */
	xorl %edx, %edx
	xorl %r10d, %r10d
	xorl %r8d, %r8d
	movl $56, %eax
	syscall
	testq %rax, %rax
	jnz 1f
	popq %rax                /* child: fn */
	popq %rdi                /* arg */
	xorl %ebp, %ebp
	call *%rax
	xorl %edi, %edi
	movl $60, %eax           /* exit this thread */
	syscall
	hlt
1:	ret
