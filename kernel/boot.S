/* PVH entry: QEMU enters _start32 in 32-bit protected mode, paging off, %ebx = hvm_start_info PA.
 * We build throw-away page tables (identity 1 GiB + the image at MAP_KERNEL_START), enter long
 * mode and continue at the linked (higher-half) address. The APs reuse these tables through the
 * real-mode trampoline copied below 1 MiB. */
#define KVOFF (0xfffffffffe800000 - 0x1200000)
#define PA(x) ((x) - KVOFF)

	.section .note.Xen, "a", @note
	.balign 4
	.long 4          /* namesz "Xen\0" */
	.long 8          /* descsz */
	.long 18         /* XEN_ELFNOTE_PHYS32_ENTRY */
	.asciz "Xen"
	.balign 4
	.quad PA(_start32)
	.balign 4

	.section .text.boot, "ax"
	.code32
	.globl _start32
_start32:
	cli
	movl %ebx, %edi
	lgdt PA(boot_gdtr)
	movl $0x10, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %ss

	/* pml4[0] -> pdpt_low -> pd_low: identity map of 0..1 GiB, 2 MiB pages */
	movl $PA(early_pdpt_low), %eax
	orl $3, %eax
	movl %eax, PA(early_pml4)
	movl $PA(early_pd_low), %eax
	orl $3, %eax
	movl %eax, PA(early_pdpt_low)
	xorl %ecx, %ecx
1:	movl %ecx, %eax
	shll $21, %eax
	orl $0x83, %eax
	movl %eax, PA(early_pd_low)(,%ecx,8)
	incl %ecx
	cmpl $512, %ecx
	jne 1b
	/* pml4[511] -> pdpt_high[511] -> pd_high[500..511]: image at MAP_KERNEL_START */
	movl $PA(early_pdpt_high), %eax
	orl $3, %eax
	movl %eax, PA(early_pml4) + 511 * 8
	movl $PA(early_pd_high), %eax
	orl $3, %eax
	movl %eax, PA(early_pdpt_high) + 511 * 8
	xorl %ecx, %ecx
2:	movl %ecx, %eax
	shll $21, %eax
	addl $0x1200000, %eax
	orl $0x83, %eax
	movl %eax, PA(early_pd_high) + 500 * 8(,%ecx,8)
	incl %ecx
	cmpl $12, %ecx
	jne 2b

	movl %cr4, %eax
	orl $0x20, %eax            /* PAE */
	movl %eax, %cr4
	movl $PA(early_pml4), %eax
	movl %eax, %cr3
	movl $0xc0000080, %ecx     /* EFER: LME | NXE | SCE */
	rdmsr
	orl $0x901, %eax
	wrmsr
	movl %cr0, %eax
	orl $0x80010001, %eax      /* PG | WP | PE */
	movl %eax, %cr0
	ljmp $0x20, $PA(start64_low)

	.code64
start64_low:
	movabsq $start64_high, %rax
	jmp *%rax
start64_high:
	.cfi_startproc
	.cfi_undefined rip        /* first 64-bit frame: nothing above it to unwind to */
	movl $0x28, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %ss
	xorl %eax, %eax
	movl %eax, %fs
	movl %eax, %gs
	leaq boot_stack_top(%rip), %rsp
	xorl %ebp, %ebp
	movl %edi, %edi
	call kmain
3:	cli
	hlt
	jmp 3b
	.cfi_endproc

	/* APs arrive here from the trampoline with %rsp set to their locals stack top. */
	.globl ap_entry
ap_entry:
	.cfi_startproc
	.cfi_undefined rip        /* an AP's first frame: the trampoline left no caller */
	movl $0x28, %eax           /* while the boot GDT (a PA) is still mapped */
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %ss
	movq ap_cr3(%rip), %rax    /* init_pt: the stack is a direct-map address */
	movq %rax, %cr3
	xorl %ebp, %ebp
	call ap_main
4:	cli
	hlt
	jmp 4b
	.cfi_endproc

	.section .data
	.balign 16
	.globl boot_gdt
boot_gdt:
	.quad 0
	.quad 0x00cf9a000000ffff   /* 0x08 code32 */
	.quad 0x00cf92000000ffff   /* 0x10 data */
	.quad 0x00af9a000000ffff   /* 0x18 code64 (trampoline) */
	.quad 0x00af9a000000ffff   /* 0x20 KERNEL_CS */
	.quad 0x00cf92000000ffff   /* 0x28 KERNEL_DS */
boot_gdt_end:
	.balign 8
boot_gdtr:
	.word boot_gdt_end - boot_gdt - 1
	.long PA(boot_gdt)

	/* Real-mode AP trampoline, copied to TRAMPOLINE_PA (0x8000) by smp.c. */
	.globl trampoline_start, trampoline_end, tramp_gdtr, tramp_cr3, tramp_stack, tramp_entry
#define T(x) (0x8000 + (x) - trampoline_start)
	.code16
trampoline_start:
	cli
	xorw %ax, %ax
	movw %ax, %ds
	lgdtl T(tramp_gdtr)
	movl %cr0, %eax
	orl $1, %eax
	movl %eax, %cr0
	ljmpl $0x08, $T(tramp32)
	.code32
tramp32:
	movl $0x10, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %ss
	movl %cr4, %eax
	orl $0x20, %eax
	movl %eax, %cr4
	movl T(tramp_cr3), %eax
	movl %eax, %cr3
	movl $0xc0000080, %ecx
	rdmsr
	orl $0x901, %eax
	wrmsr
	movl %cr0, %eax
	orl $0x80010001, %eax
	movl %eax, %cr0
	ljmp $0x18, $T(tramp64)
	.code64
tramp64:
	movq T(tramp_stack), %rsp
	movq T(tramp_entry), %rax
	jmp *%rax
	.balign 8
tramp_gdtr:
	.word 47
	.long 0
	.balign 8
tramp_cr3:   .quad 0
tramp_stack: .quad 0
tramp_entry: .quad 0
trampoline_end:

	.section .bss
	.balign 4096
	.globl early_pml4
early_pml4:      .skip 4096
early_pdpt_low:  .skip 4096
early_pd_low:    .skip 4096
early_pdpt_high: .skip 4096
early_pd_high:   .skip 4096
	.balign 16
boot_stack:      .skip 16384
boot_stack_top:
