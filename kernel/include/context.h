/* Register frames with McKernel's names and layouts (reference section 7). */
#ifndef MCK_CONTEXT_H
#define MCK_CONTEXT_H

/* Switched-out kernel context, filled by ihk_mc_switch_context (context.S). */
struct x86_kregs {
	unsigned long rsp, rbp, rbx, rsi, rdi, r12, r13, r14, r15, rflags;
	unsigned long rsp0; /* kernel stack top loaded into tss.rsp0 when switching in */
};
typedef struct x86_kregs ihk_mc_kernel_context_t;

struct x86_sregs {
	unsigned long fs_base, gs_base, ds, es, fs, gs;
};

struct x86_basic_regs {
	unsigned long r15, r14, r13, r12, rbp, rbx, r11, r10, r9, r8;
	unsigned long rax, rcx, rdx, rsi, rdi;
	union {
		unsigned long orig_rax;
		unsigned long error;
	};
	unsigned long rip, cs, rflags, rsp, ss;
};

/* Entry code pushes the GPRs and a qword 1 (is_gpr_valid), then skips sr. */
struct x86_user_context {
	struct x86_sregs sr;
	unsigned char is_gpr_valid;
	unsigned char is_sr_valid;
	unsigned char spare_flags[6];
	struct x86_basic_regs gpr;
};
typedef struct x86_user_context ihk_mc_user_context_t;

#endif
