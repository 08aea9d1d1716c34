/* Per-CPU "locals" area (GS base), packed like McKernel's cpulocal.h. */
#ifndef MCK_CPULOCAL_H
#define MCK_CPULOCAL_H
#include <stdint.h>

struct x86_desc_ptr {
	uint16_t size;
	uint64_t address;
} __attribute__((packed));

struct tss64 {
	uint32_t reserved0;
	uint64_t rsp0, rsp1, rsp2;
	uint64_t reserved1;
	uint64_t ist[7];
	uint64_t reserved2;
	uint16_t reserved3;
	uint16_t iomap_address;
} __attribute__((packed));

struct x86_cpu_local_variables {
	uint64_t processor_id;   /* %gs:0 */
	uint64_t apic_id;
	uint64_t kernel_stack;
	uint64_t user_stack;     /* %gs:24, user RSP saved by syscall entry */
	struct x86_desc_ptr gdt_ptr;
	uint16_t pad[3];
	uint64_t gdt[16];
	struct tss64 tss;        /* tss.rsp0 is %gs:180 */
	uint64_t paniced;        /* offset 280 */
	uint64_t panic_regs[21]; /* offset 288, GDB amd64 'g' order */
} __attribute__((packed));

extern struct x86_cpu_local_variables *locals;
extern size_t x86_cpu_local_variables_span;

static inline struct x86_cpu_local_variables *get_x86_cpu_local_variable(int cpu)
{
	return (struct x86_cpu_local_variables *)((char *)locals + (size_t)cpu * LOCALS_SPAN);
}

#endif
