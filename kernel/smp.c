/* Per-CPU descriptor tables, the local APIC (timer, NMI pin, IPIs) and AP start-up through a
 * real-mode trampoline below 1 MiB (INIT-SIPI-SIPI). */
#include "mck.h"

#define TRAMPOLINE_PA 0x8000UL

#define APIC_ID     0x20
#define APIC_EOI    0xb0
#define APIC_SVR    0xf0
#define APIC_ICR_LO 0x300
#define APIC_ICR_HI 0x310
#define APIC_LVT_TIMER 0x320
#define APIC_LVT_LINT0 0x350
#define APIC_LVT_LINT1 0x360
#define APIC_TIMER_INIT 0x380
#define APIC_TIMER_DIV  0x3e0

struct idt_gate { uint16_t off0, sel; uint8_t ist, type; uint16_t off1; uint32_t off2, zero; } __attribute__((packed));
static struct idt_gate idt[256] __attribute__((aligned(16)));
static volatile uint32_t *lapic;
static volatile int ap_started;
static volatile int ap_booting_cpu;
unsigned long ap_cr3;

extern uint64_t trap_vectors[32];
extern char vector_239[], vector_255[], syscall_entry[], ap_entry[];
extern char trampoline_start[], trampoline_end[], tramp_gdtr[], tramp_cr3[], tramp_stack[], tramp_entry[];
extern char boot_gdt[], early_pml4[];

static void set_gate(int v, void *handler)
{
	unsigned long a = (unsigned long)handler;
	idt[v].off0 = a & 0xffff;
	idt[v].sel = KERNEL_CS;
	idt[v].ist = 0;
	idt[v].type = 0x8e;  /* present, DPL 0, 64-bit interrupt gate (NMI too, no IST) */
	idt[v].off1 = (a >> 16) & 0xffff;
	idt[v].off2 = a >> 32;
	idt[v].zero = 0;
}

void idt_init(void)
{
	for (int v = 0; v < 32; v++) set_gate(v, (void *)trap_vectors[v]);
	set_gate(TIMER_VECTOR, vector_239);
	set_gate(SPURIOUS_VECTOR, vector_255);
}

/* GDT, TSS, GS base, IDT and SYSCALL MSRs of this CPU, all inside its locals area. */
void cpu_init_local(int cpu)
{
	struct x86_cpu_local_variables *l = get_x86_cpu_local_variable(cpu);
	memset(l, 0, sizeof(*l));
	l->processor_id = cpu;
	l->apic_id = cpu;
	unsigned long stack_top = (unsigned long)l + LOCALS_SPAN;
	l->kernel_stack = stack_top;
	l->gdt[4] = 0x00af9a000000ffffUL;  /* KERNEL_CS */
	l->gdt[5] = 0x00cf92000000ffffUL;  /* KERNEL_DS */
	l->gdt[6] = 0x00affa000000ffffUL;  /* USER_CS 0x33 */
	l->gdt[7] = 0x00cff2000000ffffUL;  /* USER_DS 0x3b */
	unsigned long base = (unsigned long)&l->tss, limit = sizeof(l->tss) - 1;
	l->gdt[8] = (limit & 0xffff) | ((base & 0xffffff) << 16) | (0x89UL << 40) |
		    (((limit >> 16) & 0xf) << 48) | (((base >> 24) & 0xff) << 56);
	l->gdt[9] = base >> 32;
	l->tss.rsp0 = stack_top;
	l->tss.iomap_address = sizeof(l->tss);
	l->gdt_ptr.size = sizeof(l->gdt) - 1;
	l->gdt_ptr.address = (unsigned long)l->gdt;
	__asm__ volatile("lgdt %0\n"
			 "pushq $0x20\n leaq 1f(%%rip), %%rax\n pushq %%rax\n lretq\n1:\n"
			 "movl $0x28, %%eax\n movl %%eax, %%ds\n movl %%eax, %%es\n movl %%eax, %%ss\n"
			 "xorl %%eax, %%eax\n movl %%eax, %%fs\n movl %%eax, %%gs\n"
			 ::"m"(l->gdt_ptr) : "rax", "memory");
	__asm__ volatile("ltr %w0" ::"r"(GDT_TSS));
	wrmsr(0xc0000101, (unsigned long)l);  /* GS_BASE */
	struct { uint16_t size; uint64_t addr; } __attribute__((packed)) idtr = { sizeof(idt) - 1, (unsigned long)idt };
	__asm__ volatile("lidt %0" ::"m"(idtr));
	wrmsr(0xc0000081, (unsigned long)KERNEL_CS << 32);   /* STAR: SYSCALL CS/SS */
	wrmsr(0xc0000082, (unsigned long)syscall_entry);     /* LSTAR */
	wrmsr(0xc0000084, 0x47700);                          /* FMASK: IF, DF, TF, AC, NT */
}

static inline uint32_t lapic_read(int reg) { return lapic[reg / 4]; }
static inline void lapic_write(int reg, uint32_t v) { lapic[reg / 4] = v; (void)lapic_read(APIC_ID); }

void lapic_eoi(void) { lapic_write(APIC_EOI, 0); }

void lapic_init(void)
{
	if (!lapic) {
		outb(0x21, 0xff);  /* mask the legacy PICs */
		outb(0xa1, 0xff);
		lapic = map_fixed_area(0xfee00000UL, PAGE_SIZE, 1);
	}
	wrmsr(0x1b, rdmsr(0x1b) | (1 << 11));
	lapic_write(APIC_SVR, 0x100 | SPURIOUS_VECTOR);
	lapic_write(APIC_LVT_LINT0, 0x10000);       /* masked */
	lapic_write(APIC_LVT_LINT1, 0x400);         /* NMI: QEMU's inject-nmi arrives through LINT1 */
	lapic_write(APIC_TIMER_DIV, 0xb);           /* divide by 1 */
	lapic_write(APIC_LVT_TIMER, 0x20000 | TIMER_VECTOR);  /* periodic */
	lapic_write(APIC_TIMER_INIT, 10000000);     /* QEMU counts at 1 GHz: 10 ms */
}

static void delay(int n) { for (volatile int i = 0; i < n; i++) cpu_pause(); }

void ap_main(void)
{
	int cpu = ap_booting_cpu;
	cpu_init_local(cpu);
	lapic_init();
	sched_init_cpu(cpu);
	kprintf("CPU %d up\n", cpu);
	__atomic_store_n(&ap_started, cpu, __ATOMIC_RELEASE);
	idle_loop();
}

void smp_boot_aps(void)
{
	char *tramp = phys_to_virt(TRAMPOLINE_PA);
	memcpy(tramp, trampoline_start, trampoline_end - trampoline_start);
	*(uint32_t *)(tramp + (tramp_gdtr - trampoline_start) + 2) = (uint32_t)virt_to_phys(boot_gdt);
	*(uint64_t *)(tramp + (tramp_cr3 - trampoline_start)) = virt_to_phys(early_pml4);
	*(uint64_t *)(tramp + (tramp_entry - trampoline_start)) = (uint64_t)ap_entry;
	ap_cr3 = init_pt_pa();
	for (int cpu = 1; cpu < num_processors; cpu++) {
		*(uint64_t *)(tramp + (tramp_stack - trampoline_start)) =
			(uint64_t)get_x86_cpu_local_variable(cpu) + LOCALS_SPAN;
		ap_booting_cpu = cpu;
		ap_started = 0;
		lapic_write(APIC_ICR_HI, (uint32_t)cpu << 24);
		lapic_write(APIC_ICR_LO, 0x4500);  /* INIT */
		delay(10000);
		for (int k = 0; k < 2; k++) {
			lapic_write(APIC_ICR_HI, (uint32_t)cpu << 24);
			lapic_write(APIC_ICR_LO, 0x4600 | (TRAMPOLINE_PA >> 12));  /* SIPI */
			delay(2000);
		}
		for (long spin = 0; __atomic_load_n(&ap_started, __ATOMIC_ACQUIRE) != cpu; spin++) {
			if (spin > 200000000L) fatal("CPU %d did not start", cpu);
			cpu_pause();
		}
	}
}
