/* IHK's Linux-side boot duties (boot_param, kmsg ring, dump bitmaps in "Linux memory") and
 * McKernel's dump NMI: every CPU saves panic_regs and waits; the last CPU clears level-24
 * bits, prints the frozen manifest and sets completion_flag; nmi_mode 4 resumes.
 *
 * Panic design: a kernel fault stores its own fault frame in panic_regs and sets
 * clv.panic_regs_saved; the faulting CPU then halts with interrupts off. A later dump NMI on
 * that CPU keeps those registers instead of overwriting them with the halt loop's. */
#include "mck.h"

/* "Linux memory": below 16 MiB, outside every chunk (PROTOCOL.md). */
#define BOOT_PARAM_PA 0x800000UL
#define KMSG_PA       0x804000UL
#define DUMP_PAGE_PA  0x80a000UL

int panic_cpu = -1;
unsigned long panic_rip;
const char *panic_function;
static volatile int frozen_count;

extern const char *kernel_args(void);

void setup_linux_memory(void)
{
	for (int c = 0; c < nr_mem_chunks; c++) {
		unsigned long s = mem_chunks[c].start, e = s + mem_chunks[c].size;
		if ((s < DUMP_PAGE_PA + PAGE_SIZE && e > BOOT_PARAM_PA) || e > (1UL << 30))
			fatal("mem= chunk 0x%lx overlaps the Linux-memory area at 0x%lx", s, BOOT_PARAM_PA);
	}
	struct smp_boot_param *bp = phys_to_virt(BOOT_PARAM_PA);
	memset(bp, 0, sizeof(*bp));
	unsigned long s = ~0UL, e = 0;
	for (int c = 0; c < nr_mem_chunks; c++) {
		if (mem_chunks[c].start < s) s = mem_chunks[c].start;
		if (mem_chunks[c].start + mem_chunks[c].size > e) e = mem_chunks[c].start + mem_chunks[c].size;
	}
	bp->start = s;
	bp->end = e;
	bp->status = 1;
	bp->param_size = sizeof(*bp);
	bp->bootstrap_mem_end = mem_chunks[0].start + mem_chunks[0].size;
	bp->msg_buffer = KMSG_PA;
	bp->msg_buffer_size = sizeof(struct ihk_kmsg_buf);
	bp->nmi_mode_addr = virt_to_phys((const void *)&nmi_mode);
	bp->page_offset_base = linux_page_offset_base;
	bp->dump_level = kargs_dump_level;
	const char *ka = kernel_args();
	for (int i = 0; i < 255 && ka[i]; i++) bp->kernel_args[i] = ka[i];

	struct ihk_kmsg_buf *kb = phys_to_virt(KMSG_PA);
	memset(kb, 0, sizeof(*kb));
	kb->len = sizeof(kb->str);

	/* One bitmap block per chunk, every page included at boot. */
	unsigned char *blk = phys_to_virt(DUMP_PAGE_PA);
	unsigned long total = 0;
	for (int c = 0; c < nr_mem_chunks; c++) {
		struct ihk_dump_page *dp = (struct ihk_dump_page *)(blk + total);
		unsigned long pages = mem_chunks[c].size >> PAGE_SHIFT;
		dp->start = mem_chunks[c].start;
		dp->map_count = (pages + 63) / 64;
		for (unsigned long w = 0; w < dp->map_count; w++) {
			unsigned long bits = pages - w * 64;
			dp->map[w] = bits >= 64 ? ~0UL : (1UL << bits) - 1;
		}
		total += 16 + 8 * dp->map_count;
	}
	if (total > PAGE_SIZE) fatal("dump bitmap does not fit in one page");
	bp->dump_page_set.completion_flag = IHK_DUMP_PAGE_SET_INCOMPLETE;
	bp->dump_page_set.count = nr_mem_chunks;
	bp->dump_page_set.page_size = PAGE_ALIGN(total);
	bp->dump_page_set.phy_page = DUMP_PAGE_PA;

	boot_param_pa = BOOT_PARAM_PA;
	boot_param = map_fixed_area(BOOT_PARAM_PA, sizeof(*bp), 0);
	kmsg_buf = map_fixed_area(KMSG_PA, sizeof(*kb), 0);
	dump_page = map_fixed_area(DUMP_PAGE_PA, PAGE_ALIGN(total), 0);
}

static void clear_dump_bits(unsigned long pa, unsigned long size)
{
	unsigned char *blk = (unsigned char *)dump_page;
	for (unsigned int b = 0; b < boot_param->dump_page_set.count; b++) {
		struct ihk_dump_page *dp = (struct ihk_dump_page *)blk;
		unsigned long end = dp->start + dp->map_count * 64 * PAGE_SIZE;
		for (unsigned long p = pa; p < pa + size; p += PAGE_SIZE) {
			if (p < dp->start || p >= end) continue;
			unsigned long i = (p - dp->start) >> PAGE_SHIFT;
			dp->map[i / 64] &= ~(1UL << (i % 64));
		}
		blk += 16 + 8 * dp->map_count;
	}
}

static void clear_user_pages(struct page_table *pgd)
{
	for (int i4 = 0; i4 < 256; i4++) {
		unsigned long e4 = pgd->entry[i4];
		if (!(e4 & PTE_P)) continue;
		unsigned long *l3 = phys_to_virt(e4 & PT_PHYSMASK);
		for (int i3 = 0; i3 < 512; i3++) {
			if (!(l3[i3] & PTE_P)) continue;
			unsigned long *l2 = phys_to_virt(l3[i3] & PT_PHYSMASK);
			for (int i2 = 0; i2 < 512; i2++) {
				unsigned long e2 = l2[i2];
				if (!(e2 & PTE_P)) continue;
				if (e2 & PTE_PS) {
					if ((e2 & PTE_U) && pa_in_chunks(e2 & PT_PHYSMASK))
						clear_dump_bits(e2 & PT_PHYSMASK & ~(LARGE_PAGE_SIZE - 1), LARGE_PAGE_SIZE);
					continue;
				}
				unsigned long *l1 = phys_to_virt(e2 & PT_PHYSMASK);
				for (int i1 = 0; i1 < 512; i1++)
					if ((l1[i1] & (PTE_P | PTE_U)) == (PTE_P | PTE_U) && pa_in_chunks(l1[i1] & PT_PHYSMASK))
						clear_dump_bits(l1[i1] & PT_PHYSMASK, PAGE_SIZE);
			}
		}
	}
}

/* McKernel's level-24 exclusion: user-mapped pages of every process, then free pages. */
static void query_mem_areas_level24(void)
{
	struct process_hash *ph = default_resource_set->process_hash;
	for (int b = 0; b < HASH_SIZE; b++) {
		struct list_head *pos;
		list_for_each(pos, &ph->list[b]) {
			struct process *p = container_of(pos, struct process, hash_list);
			if (p->vm && p->vm->address_space && p->vm->address_space->page_table)
				clear_user_pages(p->vm->address_space->page_table);
		}
	}
	for (int c = 0; c < nr_mem_chunks; c++)
		for (unsigned long pa = mem_chunks[c].start; pa < mem_chunks[c].start + mem_chunks[c].size; pa += PAGE_SIZE)
			if (page_is_free(pa)) clear_dump_bits(pa, PAGE_SIZE);
}

/* panic_regs layout (reference 7.3): 17 qwords rax..r15, rip, then 7 dwords eflags..gs. */
static void save_panic_regs(struct x86_cpu_local_variables *l, struct x86_user_context *f)
{
	uint64_t *r = l->panic_regs;
	uint32_t *seg = (uint32_t *)&r[17];
	memset(r, 0, sizeof(l->panic_regs));
	if (f->gpr.rip >= USER_END) {
		r[0] = f->gpr.rax; r[1] = f->gpr.rbx; r[2] = f->gpr.rcx; r[3] = f->gpr.rdx;
		r[4] = f->gpr.rsi; r[5] = f->gpr.rdi; r[6] = f->gpr.rbp; r[7] = f->gpr.rsp;
		r[8] = f->gpr.r8; r[9] = f->gpr.r9; r[10] = f->gpr.r10; r[11] = f->gpr.r11;
		r[12] = f->gpr.r12; r[13] = f->gpr.r13; r[14] = f->gpr.r14; r[15] = f->gpr.r15;
		r[16] = f->gpr.rip;
	} else {
		/* McKernel's user-mode rule: kernel ctx of current (stale), user r12-r15. */
		struct thread *t = get_cpu_local_var((int)l->processor_id)->current;
		r[1] = t->ctx.rbx; r[4] = t->ctx.rsi; r[5] = t->ctx.rdi; r[6] = t->ctx.rbp; r[7] = t->ctx.rsp;
		r[12] = f->gpr.r12; r[13] = f->gpr.r13; r[14] = f->gpr.r14; r[15] = f->gpr.r15;
		r[16] = (uint64_t)enter_user_mode;
	}
	seg[0] = (uint32_t)f->gpr.rflags;
	seg[1] = (uint32_t)f->gpr.cs;
	seg[2] = (uint32_t)f->gpr.ss;
	seg[3] = (uint32_t)f->sr.ds;
	seg[4] = (uint32_t)f->sr.es;
	seg[5] = (uint32_t)f->sr.fs;
	seg[6] = (uint32_t)f->sr.gs;
}

void panic_from_fault(struct x86_user_context *frame, const char *function)
{
	int cpu = this_cpu();
	struct x86_cpu_local_variables *l = get_x86_cpu_local_variable(cpu);
	save_panic_regs(l, frame);
	get_cpu_local_var(cpu)->panic_regs_saved = 1;
	panic_cpu = cpu;
	panic_rip = frame->gpr.rip;
	panic_function = function;
	kprintf("kernel panic on CPU %d at 0x%lx (%s)\n", cpu, frame->gpr.rip, function);
	halt_forever();  /* NMIs still arrive: the dump freeze works on this CPU */
}

void dump_nmi(struct x86_user_context *frame)
{
	int cpu = this_cpu();
	struct x86_cpu_local_variables *l = get_x86_cpu_local_variable(cpu);
	int mode = nmi_mode;
	if (mode == 0) {
		if (!get_cpu_local_var(cpu)->panic_regs_saved) save_panic_regs(l, frame);
		l->paniced = 1;
		__atomic_fetch_add(&frozen_count, 1, __ATOMIC_ACQ_REL);
		if (cpu == num_processors - 1) {
			/* Unlike McKernel we wait for the others, so the manifest is a true snapshot. */
			for (long spin = 0; __atomic_load_n(&frozen_count, __ATOMIC_ACQUIRE) < num_processors && spin < 400000000L; spin++)
				cpu_pause();
			if (boot_param->dump_level == DUMP_LEVEL_USER_UNUSED_EXCLUDE && boot_param->dump_page_set.count)
				query_mem_areas_level24();
			print_manifest("frozen");
			__atomic_store_n(&boot_param->dump_page_set.completion_flag, IHK_DUMP_PAGE_SET_COMPLETED, __ATOMIC_RELEASE);
		}
	} else if (mode != 3) {
		return;
	}
	while (__atomic_load_n(&nmi_mode, __ATOMIC_ACQUIRE) != 4) cpu_pause();
	l->paniced = 0;
	if (cpu == 0) boot_param->dump_page_set.completion_flag = IHK_DUMP_PAGE_SET_INCOMPLETE;
	if (mode == 0 && __atomic_sub_fetch(&frozen_count, 1, __ATOMIC_ACQ_REL) == 0)
		serial_printf("MCKTOOLS-RESUMED\n");
}
