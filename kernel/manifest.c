/* Ground-truth manifest: one JSON line built from the kernel's own data structures
 * (keys in PROTOCOL.md). Printed with the other CPUs stopped (setup: paused in their timer
 * handler; frozen: in the dump NMI), so no locks are taken while walking. */
#include "mck.h"

static int first;  /* comma bookkeeping for the current JSON container */

static void sp(void *arg, char c) { (void)arg; serial_putc_locked(c); }

static void o(const char *fmt, ...)
{
	__builtin_va_list ap;
	__builtin_va_start(ap, fmt);
	vformat(sp, NULL, fmt, ap);
	__builtin_va_end(ap);
}

static void sep(void) { if (!first) o(","); first = 0; }

static void jstr_n(const char *s, long n)
{
	o("\"");
	for (long i = 0; i < n && s[i]; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\') o("\\%c", c);
		else if (c == '\n') o("\\n");
		else if (c < 0x20 || c >= 0x7f) o("\\u%04x", c);
		else serial_putc_locked((char)c);
	}
	o("\"");
}
static void jstr(const char *s) { jstr_n(s, 1L << 30); }

static const char *ps_name(int s)
{
	switch (s) {
	case PS_RUNNING: return "PS_RUNNING";
	case PS_INTERRUPTIBLE: return "PS_INTERRUPTIBLE";
	case PS_UNINTERRUPTIBLE: return "PS_UNINTERRUPTIBLE";
	case PS_ZOMBIE: return "PS_ZOMBIE";
	case PS_EXITED: return "PS_EXITED";
	case PS_STOPPED: return "PS_STOPPED";
	case PS_TRACED: return "PS_TRACED";
	default: return "PS_UNKNOWN";
	}
}

static const char *cpu_status_name(int s)
{
	static const char *const n[] = { "CPU_STATUS_DISABLE", "CPU_STATUS_IDLE", "CPU_STATUS_RUNNING", "CPU_STATUS_RESERVED" };
	return s >= 0 && s < 4 ? n[s] : "CPU_STATUS_UNKNOWN";
}

static const char *comm_of(struct process *p)
{
	if (!p->saved_cmdline) return "idle";
	const char *c = p->saved_cmdline, *b = c;
	for (; *c; c++) if (*c == '/') b = c + 1;
	return b;
}

#define MAXP 64
static struct process *procs[MAXP];
static int nprocs;

static void collect_processes(void)
{
	nprocs = 0;
	if (!default_resource_set) return;
	for (int b = 0; b < HASH_SIZE; b++) {
		struct list_head *pos;
		list_for_each(pos, &default_resource_set->process_hash->list[b])
			if (nprocs < MAXP) procs[nprocs++] = container_of(pos, struct process, hash_list);
	}
	/* sort by pid for a stable order */
	for (int i = 1; i < nprocs; i++)
		for (int j = i; j > 0 && procs[j - 1]->pid > procs[j]->pid; j--) {
			struct process *t = procs[j]; procs[j] = procs[j - 1]; procs[j - 1] = t;
		}
}

static void thread_row(struct thread *t, int cpu, int idle)
{
	struct cpu_local_var *v = get_cpu_local_var(cpu);
	sep();
	o("{\"tid\":%d,\"pid\":%d,\"cpu\":%d,\"state\":\"%s\",\"addr\":%lu,\"idle\":%s,\"comm\":",
	  t->tid, t->proc->pid, cpu, ps_name(t->status), (unsigned long)t, idle ? "true" : "false");
	jstr(comm_of(t->proc));
	if (v->current != t && t->ctx.rsp)
		o(",\"kernel_rip\":%lu,\"kernel_rsp\":%lu", *(unsigned long *)t->ctx.rsp, t->ctx.rsp);
	else
		o(",\"kernel_rip\":null,\"kernel_rsp\":null");
	if (!idle && t->uctx)
		o(",\"user_rip\":%lu,\"user_rsp\":%lu}", t->uctx->gpr.rip, t->uctx->gpr.rsp);
	else
		o(",\"user_rip\":null,\"user_rsp\":null}");
}

static void struct_row(const char *kind, const void *addr, unsigned long size)
{
	sep();
	o("{\"kind\":\"%s\",\"addr\":%lu,\"size\":%lu,\"pa\":%lu}", kind, (unsigned long)addr, size, virt_to_phys(addr));
}

static void page_table_rows(struct page_table *pgd)
{
	struct_row("page_table", pgd, PAGE_SIZE);
	for (int i4 = 0; i4 < 256; i4++) {
		if (!(pgd->entry[i4] & PTE_P)) continue;
		unsigned long *l3 = phys_to_virt(pgd->entry[i4] & PT_PHYSMASK);
		struct_row("page_table", l3, PAGE_SIZE);
		for (int i3 = 0; i3 < 512; i3++) {
			if (!(l3[i3] & PTE_P) || (l3[i3] & PTE_PS)) continue;
			unsigned long *l2 = phys_to_virt(l3[i3] & PT_PHYSMASK);
			struct_row("page_table", l2, PAGE_SIZE);
			for (int i2 = 0; i2 < 512; i2++)
				if ((l2[i2] & PTE_P) && !(l2[i2] & PTE_PS))
					struct_row("page_table", phys_to_virt(l2[i2] & PT_PHYSMASK), PAGE_SIZE);
		}
	}
}

static void kmsg_text(void)
{
	struct ihk_kmsg_buf *kb = kmsg_buf;
	int head = kb->head, tail = kb->tail, len = kb->len;
	o("\"");
	for (int pass = 0; pass < 2; pass++) {
		int s, e;
		if (head > tail) {
			if (pass == 0) { s = head; e = head; while (e < len && kb->str[e]) e++; }
			else { s = 0; e = tail; }
		} else {
			if (pass == 1) break;
			s = head; e = tail;
		}
		for (int i = s; i < e; i++) {
			unsigned char c = (unsigned char)kb->str[i];
			if (c == '"' || c == '\\') o("\\%c", c);
			else if (c == '\n') o("\\n");
			else if (c < 0x20 || c >= 0x7f) o("\\u%04x", c);
			else serial_putc_locked((char)c);
		}
	}
	o("\"");
}

void print_manifest(const char *phase)
{
	int frozen = phase[0] == 'f';
	extern uintptr_t debug_constants[];
	if (!frozen) serial_lock();  /* frozen: another CPU may hold the lock forever; go ahead */
	collect_processes();
	o("\n%s {\"scenario\":", frozen ? "MCKTOOLS-FROZEN-MANIFEST" : "MCKTOOLS-MANIFEST");
	jstr(scenario_name);
	o(",\"phase\":\"%s\",\"ncpus\":%d,\"dump_level\":%d,\"kernel_base\":%lu,\"linux_page_offset_base\":%lu,\"boot_param_pa\":%lu",
	  phase, num_processors, boot_param->dump_level, x86_kernel_phys_base, linux_page_offset_base, boot_param_pa);
	o(",\"symbols\":{\"clv\":%lu,\"locals\":%lu,\"num_processors\":%lu,\"mck_num_processors\":%lu,"
	  "\"x86_cpu_local_variables_span\":%lu,\"debug_constants\":%lu,\"init_pt\":%lu,\"boot_param\":%lu,"
	  "\"linux_page_offset_base\":%lu,\"x86_kernel_phys_base\":%lu,\"kmsg_buf\":%lu,\"ihk_mc_switch_context\":%lu,"
	  "\"_head\":%lu,\"nmi_mode\":%lu,\"boot_param_pa\":%lu}",
	  (unsigned long)&clv, (unsigned long)&locals, (unsigned long)&num_processors, (unsigned long)&mck_num_processors,
	  (unsigned long)&x86_cpu_local_variables_span, (unsigned long)debug_constants, init_pt_symbol_addr(),
	  (unsigned long)&boot_param, (unsigned long)&linux_page_offset_base, (unsigned long)&x86_kernel_phys_base,
	  (unsigned long)&kmsg_buf, (unsigned long)ihk_mc_switch_context, (unsigned long)_head,
	  (unsigned long)&nmi_mode, (unsigned long)&boot_param_pa);

	o(",\"chunks\":[");
	first = 1;
	for (int c = 0; c < nr_mem_chunks; c++) { sep(); o("{\"addr\":%lu,\"size\":%lu}", mem_chunks[c].start, mem_chunks[c].size); }
	o("]");

	o(",\"cpus\":[");
	first = 1;
	for (int c = 0; c < num_processors; c++) {
		struct cpu_local_var *v = get_cpu_local_var(c);
		sep();
		o("{\"id\":%d,\"status\":\"%s\",\"clv\":%lu,\"current\":%lu,\"idle\":%lu,\"runq\":[",
		  c, cpu_status_name(v->status), (unsigned long)v, (unsigned long)v->current, (unsigned long)&v->idle);
		int f2 = 1;
		struct list_head *pos;
		list_for_each(pos, &v->runq) {
			o("%s%lu", f2 ? "" : ",", (unsigned long)container_of(pos, struct thread, sched_list));
			f2 = 0;
		}
		o("]}");
	}
	o("]");

	o(",\"threads\":[");
	first = 1;
	for (int c = 0; c < num_processors; c++) {
		struct cpu_local_var *v = get_cpu_local_var(c);
		thread_row(&v->idle, c, 1);
		struct list_head *pos;
		list_for_each(pos, &v->runq) thread_row(container_of(pos, struct thread, sched_list), c, 0);
	}
	o("]");

	o(",\"processes\":[");
	first = 1;
	for (int i = 0; i < nprocs; i++) {
		struct process *p = procs[i];
		sep();
		o("{\"pid\":%d,\"ppid\":%d,\"argv\":[", p->pid, p->ppid_parent ? p->ppid_parent->pid : 0);
		for (long off = 0, k = 0; off < p->saved_cmdline_len; k++) {
			if (k) o(",");
			jstr(p->saved_cmdline + off);
			off += strlen(p->saved_cmdline + off) + 1;
		}
		o("],\"addr\":%lu,\"page_table\":%lu,\"page_table_pa\":%lu,\"threads\":[", (unsigned long)p,
		  (unsigned long)p->vm->address_space->page_table, p->vm->address_space->page_table_pa);
		struct list_head *pos;
		int f2 = 1;
		list_for_each(pos, &p->threads_list) {
			o("%s%d", f2 ? "" : ",", container_of(pos, struct thread, siblings_list)->tid);
			f2 = 0;
		}
		o("],\"state\":\"%s\"}", ps_name(p->status));
	}
	o("]");

	static struct vm_range *ranges[128];
	o(",\"vm_ranges\":{");
	first = 1;
	for (int i = 0; i < nprocs; i++) {
		int n = vm_ranges_sorted(procs[i]->vm, ranges, 128);
		sep();
		o("\"%d\":[", procs[i]->pid);
		for (int k = 0; k < n; k++) {
			o("%s{\"start\":%lu,\"end\":%lu,\"flag\":%lu,\"path\":", k ? "," : "", ranges[k]->start, ranges[k]->end, ranges[k]->flag);
			if (ranges[k]->memobj && ranges[k]->memobj->path) jstr(ranges[k]->memobj->path);
			else o("null");
			o("}");
		}
		o("]");
	}
	o("}");

	o(",\"translations\":{");
	first = 1;
	for (int i = 0; i < nprocs; i++) {
		int n = vm_ranges_sorted(procs[i]->vm, ranges, 128);
		struct page_table *pgd = procs[i]->vm->address_space->page_table;
		sep();
		o("\"%d\":[", procs[i]->pid);
		int f2 = 1;
		for (int k = 0; k < n; k++) {
			unsigned long vas[2] = { ranges[k]->start, ranges[k]->end - PAGE_SIZE + 0x10 };
			for (int j = 0; j < 2; j++) {
				unsigned long size, entry, pa = pt_lookup(pgd, vas[j], &size, &entry);
				if (!pa) continue;
				o("%s{\"va\":%lu,\"pa\":%lu,\"size\":%lu,\"flags\":%lu}", f2 ? "" : ",", vas[j], pa, size, entry & ~PT_PHYSMASK);
				f2 = 0;
			}
		}
		o("]");
	}
	o("}");

	o(",\"counters\":[");
	first = 1;
	for (int i = 0; i < nprocs; i++) {
		struct list_head *pos;
		list_for_each(pos, &procs[i]->threads_list) {
			struct thread *t = container_of(pos, struct thread, siblings_list);
			if (!t->counter_va) continue;
			unsigned long pa = pt_lookup(procs[i]->vm->address_space->page_table, t->counter_va, NULL, NULL);
			sep();
			o("{\"pid\":%d,\"tid\":%d,\"va\":%lu,\"pa\":%lu}", procs[i]->pid, t->tid, t->counter_va, pa);
		}
	}
	o("]");

	o(",\"structures\":[");
	first = 1;
	struct_row("clv", clv, sizeof(struct cpu_local_var) * num_processors);
	struct_row("locals", locals, LOCALS_SPAN * num_processors);
	if (default_resource_set) {
		struct_row("resource_set", default_resource_set, sizeof(struct resource_set));
		struct_row("process_hash", default_resource_set->process_hash, sizeof(struct process_hash));
		struct_row("thread_hash", default_resource_set->thread_hash, sizeof(struct thread_hash));
	}
	for (int i = 0; i < nprocs; i++) {
		struct process *p = procs[i];
		struct_row("process", p, sizeof(*p));
		struct_row("saved_cmdline", p->saved_cmdline, p->saved_cmdline_len);
		struct_row("process_vm", p->vm, sizeof(*p->vm));
		struct_row("address_space", p->vm->address_space, sizeof(struct address_space));
		struct list_head *pos;
		list_for_each(pos, &p->threads_list)
			struct_row("thread", container_of(pos, struct thread, siblings_list), KERNEL_STACK_SIZE);
		int n = vm_ranges_sorted(p->vm, ranges, 128);
		for (int k = 0; k < n; k++) {
			struct_row("vm_range", ranges[k], sizeof(struct vm_range));
			if (ranges[k]->memobj) struct_row("memobj", ranges[k]->memobj, sizeof(struct memobj));
		}
		page_table_rows(p->vm->address_space->page_table);
	}
	o("]");

	o(",\"kmsg\":");
	kmsg_text();
	if (panic_cpu >= 0) {
		o(",\"panic\":{\"cpu\":%d,\"rip\":%lu,\"function\":", panic_cpu, panic_rip);
		jstr(panic_function);
		o("}}\n");
	} else {
		o(",\"panic\":null}\n");
	}
	if (!frozen) serial_unlock();
}
