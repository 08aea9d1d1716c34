/* Boot: command line, memory partition check, address map, per-CPU state, then the scenario.
 * Also defines the globals the debug tools look up by name (reference section 5). */
#include "mck.h"

unsigned long linux_page_offset_base = LINUX_PAGE_OFFSET_DEF;
unsigned long x86_kernel_phys_base = LINK_PHYS_BASE;  /* initialised: readable from the file */
struct smp_boot_param *boot_param;
unsigned long boot_param_pa;
struct ihk_dump_page *dump_page;
volatile int nmi_mode;
int num_processors;
int *mck_num_processors = &num_processors;
struct cpu_local_var *clv;
struct x86_cpu_local_variables *locals;
size_t x86_cpu_local_variables_span = LOCALS_SPAN;
char scenario_name[32] = "multi";
int kargs_dump_level = 24;  /* McKernel's default when dump_level= is missing */
volatile unsigned long ticks;
static char kernel_cmdline[256];

/* Same entries and order as McKernel's table (reference section 5). */
uintptr_t debug_constants[] = {
	sizeof(struct cpu_local_var),
	offsetof(struct cpu_local_var, current),
	offsetof(struct cpu_local_var, runq),
	offsetof(struct cpu_local_var, status),
	offsetof(struct cpu_local_var, idle),
	offsetof(struct thread, ctx),
	offsetof(struct thread, sched_list),
	offsetof(struct thread, proc),
	offsetof(struct thread, status),
	offsetof(struct process, pid),
	offsetof(struct thread, tid),
	(uintptr_t)-1,
};

const char *kernel_args(void) { return kernel_cmdline; }

static void parse_cmdline(void)
{
	const char *p = kernel_cmdline;
	while (*p) {
		while (*p == ' ') p++;
		if (!strncmp(p, "mem=", 4)) {
			p += 4;
			for (;;) {
				unsigned long size = parse_num(&p);
				if (*p != '@') fatal("bad mem= argument");
				p++;
				unsigned long start = parse_num(&p);
				if (nr_mem_chunks == MAX_CHUNKS) fatal("too many chunks");
				mem_chunks[nr_mem_chunks].start = start;
				mem_chunks[nr_mem_chunks].size = size;
				nr_mem_chunks++;
				if (*p != ',') break;
				p++;
			}
		} else if (!strncmp(p, "scenario=", 9)) {
			p += 9;
			int n = 0;
			while (*p && *p != ' ' && n < (int)sizeof(scenario_name) - 1) scenario_name[n++] = *p++;
			scenario_name[n] = 0;
		} else if (!strncmp(p, "dump_level=", 11)) {
			p += 11;
			kargs_dump_level = (int)parse_num(&p);
		}
		while (*p && *p != ' ') p++;
	}
}

/* McKernel's load address rule from PROTOCOL.md: largest chunk start, 2 MiB aligned, + 2 MiB. */
static unsigned long expected_kernel_base(void)
{
	int best = 0;
	for (int c = 1; c < nr_mem_chunks; c++)
		if (mem_chunks[c].size > mem_chunks[best].size) best = c;
	return ((mem_chunks[best].start + LARGE_PAGE_SIZE - 1) & ~(LARGE_PAGE_SIZE - 1)) + LARGE_PAGE_SIZE;
}

static int fw_cfg_nb_cpus(void)
{
	outw(0x510, 0x05);  /* FW_CFG_NB_CPUS */
	int lo = inb(0x511);
	int hi = inb(0x511);
	return lo | (hi << 8);
}

extern void cpu_switch_stack_and_idle(unsigned long rsp);

void kmain(unsigned long start_info_pa)
{
	serial_init();
	/* hvm_start_info.cmdline_paddr is at offset 24; still identity-mapped here */
	const char *cl = (const char *)*(unsigned long *)(start_info_pa + 24);
	if (cl) {
		int n = 0;
		while (cl[n] && n < (int)sizeof(kernel_cmdline) - 1) { kernel_cmdline[n] = cl[n]; n++; }
	}
	parse_cmdline();
	if (!nr_mem_chunks) fatal("no mem= chunks on the command line");
	x86_kernel_phys_base = LINK_PHYS_BASE;
	if (expected_kernel_base() != LINK_PHYS_BASE)
		fatal("mem= gives kernel_base 0x%lx but the image is loaded at 0x%lx",
		      expected_kernel_base(), LINK_PHYS_BASE);

	mm_early_init();
	mm_init_pt();
	setup_linux_memory();

	num_processors = fw_cfg_nb_cpus();
	if (num_processors < 1) num_processors = 1;
	if (num_processors > MAX_CPUS) num_processors = MAX_CPUS;
	boot_param->nr_cpus = num_processors;
	clv = ihk_mc_alloc_pages(PAGE_ALIGN(sizeof(struct cpu_local_var) * num_processors) >> PAGE_SHIFT);
	locals = ihk_mc_alloc_pages((LOCALS_SPAN / PAGE_SIZE) * num_processors);

	idt_init();
	cpu_init_local(0);
	kmsg_init(boot_param->msg_buffer, kmsg_buf);
	kprintf("mcktools reference LWK booting, %d CPUs, cmdline \"%s\"\n", num_processors, kernel_cmdline);
	kprintf("kernel_base 0x%lx, linux_page_offset_base 0x%lx, boot_param_pa 0x%lx\n",
		x86_kernel_phys_base, linux_page_offset_base, boot_param_pa);
	lapic_init();
	sched_init_cpu(0);
	smp_boot_aps();
	boot_param->status = 2;  /* IHK: 1 booted, 2 ready, 3 running (set with MCKTOOLS-READY) */
	scenario_start();
	cpu_switch_stack_and_idle((unsigned long)get_x86_cpu_local_variable(0) + LOCALS_SPAN);
}

/* The boot CPU's idle frame is the outermost one on its new stack: rip undefined tells
 * unwinders to stop instead of reading past the stack top. */
__asm__(".text\n.globl cpu_switch_stack_and_idle\ncpu_switch_stack_and_idle:\n"
	"  .cfi_startproc\n  .cfi_undefined rip\n"
	"  movq %rdi, %rsp\n  xorl %ebp, %ebp\n  call idle_loop\n  ud2\n  .cfi_endproc\n");
