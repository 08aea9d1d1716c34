/* Processes, threads and their memory maps: ELF loading of the embedded user programs,
 * vm_range bookkeeping in an rb-tree (Linux node layout), eager population of user pages. */
#include "mck.h"

#define USER_STACK_END   0x00007ffffffff000UL
#define USER_STACK_SIZE  (64 * 1024)
#define TASK_UNMAPPED_BASE 0x00002aaaaaa00000UL

struct resource_set *default_resource_set;
static int next_pid = 1000;
static ihk_spinlock_t hash_lock;

struct user_program { const char *name; const char *start, *end; };
extern const char _user_app_start[], _user_app_end[];
static const struct user_program programs[] = {
	{ "app", _user_app_start, _user_app_end },
};

typedef struct { unsigned char e_ident[16]; uint16_t e_type, e_machine; uint32_t e_version;
	uint64_t e_entry, e_phoff, e_shoff; uint32_t e_flags; uint16_t e_ehsize, e_phentsize, e_phnum,
	e_shentsize, e_shnum, e_shstrndx; } Elf64_Ehdr;
typedef struct { uint32_t p_type, p_flags; uint64_t p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align; } Elf64_Phdr;

/* Deterministic ids and placement whatever the SMP timing, so fixtures regenerate alike:
 * process k gets pid 1000 + 100k, its n-th thread tid pid + n and CPU (k + n) % ncpus. */
int alloc_id(void) { return __atomic_fetch_add(&next_pid, 100, __ATOMIC_RELAXED); }

void resource_set_init(void)
{
	struct resource_set *rs = kmalloc(sizeof(*rs));
	rs->path = "/";
	rs->process_hash = kmalloc(sizeof(struct process_hash));
	rs->thread_hash = kmalloc(sizeof(struct thread_hash));
	for (int i = 0; i < HASH_SIZE; i++) {
		INIT_LIST_HEAD(&rs->process_hash->list[i]);
		INIT_LIST_HEAD(&rs->thread_hash->list[i]);
	}
	INIT_LIST_HEAD(&rs->list);
	default_resource_set = rs;
	for (int c = 0; c < num_processors; c++) get_cpu_local_var(c)->resource_set = rs;
}

struct process *find_process(int pid)
{
	struct list_head *pos, *h = &default_resource_set->process_hash->list[pid % HASH_SIZE];
	list_for_each(pos, h) {
		struct process *p = container_of(pos, struct process, hash_list);
		if (p->pid == pid) return p;
	}
	return NULL;
}

struct thread *find_thread(int tid)
{
	struct list_head *pos, *h = &default_resource_set->thread_hash->list[tid % HASH_SIZE];
	list_for_each(pos, h) {
		struct thread *t = container_of(pos, struct thread, hash_list);
		if (t->tid == tid) return t;
	}
	return NULL;
}

/* ---- rb-tree: rebuilt balanced from the sorted ranges on every change (valid red-black
 * colouring: all levels black except an incomplete deepest level, which is red). ---- */
#define RB_BLACK 1UL
#define MAX_RANGES 128

static void collect(struct rb_node *n, struct vm_range **out, int *k, int max)
{
	if (!n) return;
	collect(n->rb_left, out, k, max);
	if (*k < max) out[(*k)++] = (struct vm_range *)n;
	collect(n->rb_right, out, k, max);
}

int vm_ranges_sorted(struct process_vm *vm, struct vm_range **out, int max)
{
	int k = 0;
	collect(vm->vm_range_tree.rb_node, out, &k, max);
	return k;
}

static struct rb_node *build(struct vm_range **a, int lo, int hi, struct rb_node *parent, int depth, int red_depth)
{
	if (lo > hi) return NULL;
	int mid = (lo + hi) / 2;
	struct rb_node *n = &a[mid]->vm_rb_node;
	n->__rb_parent_color = (unsigned long)parent | (depth == red_depth ? 0 : RB_BLACK);
	n->rb_left = build(a, lo, mid - 1, n, depth + 1, red_depth);
	n->rb_right = build(a, mid + 1, hi, n, depth + 1, red_depth);
	return n;
}

static void rebuild(struct process_vm *vm, struct vm_range **a, int n)
{
	int full = 0, levels = 0;  /* levels of a perfect tree that fit */
	while (full * 2 + 1 <= n) { full = full * 2 + 1; levels++; }
	int red_depth = n > full ? levels : -1;
	vm->vm_range_tree.rb_node = build(a, 0, n - 1, NULL, 0, red_depth);
}

static void tree_insert(struct process_vm *vm, struct vm_range *r)
{
	struct vm_range *a[MAX_RANGES + 1];
	int n = vm_ranges_sorted(vm, a, MAX_RANGES), i = n;
	while (i > 0 && a[i - 1]->start > r->start) { a[i] = a[i - 1]; i--; }
	a[i] = r;
	rebuild(vm, a, n + 1);
}

struct vm_range *vm_lookup(struct process_vm *vm, unsigned long va)
{
	struct rb_node *n = vm->vm_range_tree.rb_node;
	while (n) {
		struct vm_range *r = (struct vm_range *)n;
		if (va < r->start) n = n->rb_left;
		else if (va >= r->end) n = n->rb_right;
		else return r;
	}
	return NULL;
}

static unsigned long pte_flags(unsigned long flag)
{
	unsigned long f = PTE_P | PTE_U;
	if (flag & VR_PROT_WRITE) f |= PTE_W;
	if (!(flag & VR_PROT_EXEC)) f |= PTE_NX;
	return f;
}

/* Adds [start, end) and, if populate, backs it with fresh pages (2 MiB ones when pgshift 21). */
unsigned long vm_add_range(struct process_vm *vm, unsigned long start, unsigned long end,
			   unsigned long flag, struct memobj *memobj, int pgshift, int populate)
{
	struct vm_range *r = kmalloc(sizeof(*r));
	r->start = start;
	r->end = end;
	r->flag = flag;
	r->memobj = memobj;
	r->pgshift = pgshift;
	struct page_table *pgd = vm->address_space->page_table;
	if (populate) {
		unsigned long step = 1UL << pgshift;
		for (unsigned long va = start; va < end; va += step) {
			unsigned long pa = alloc_pages_pa(step >> PAGE_SHIFT, step);
			pt_map(pgd, va, pa, pte_flags(flag), pgshift == 21);
			vm->currss += step;
		}
	}
	tree_insert(vm, r);
	return start;
}

/* Removes every range inside [start, end) and frees its pages. */
int vm_remove_range(struct process_vm *vm, unsigned long start, unsigned long end)
{
	struct vm_range *a[MAX_RANGES];
	int n = vm_ranges_sorted(vm, a, MAX_RANGES), k = 0, removed = 0;
	for (int i = 0; i < n; i++) {
		struct vm_range *r = a[i];
		if (r->start >= start && r->end <= end) {
			for (unsigned long va = r->start; va < r->end;) {
				unsigned long pa; int large = 0;
				pt_unmap(vm->address_space->page_table, va, &pa, &large);
				unsigned long sz = large ? LARGE_PAGE_SIZE : PAGE_SIZE;
				if (pa) { free_pages_pa(pa, sz >> PAGE_SHIFT); vm->currss -= sz; }
				va += sz;
			}
			removed++;
		} else {
			a[k++] = r;
		}
	}
	rebuild(vm, a, k);
	return removed ? 0 : -1;
}

static void copy_to_user_pa(struct process_vm *vm, unsigned long va, const void *src, size_t len)
{
	const char *s = src;
	while (len) {
		unsigned long pa = pt_lookup(vm->address_space->page_table, va, NULL, NULL);
		size_t chunk = PAGE_SIZE - (va & (PAGE_SIZE - 1));
		if (chunk > len) chunk = len;
		memcpy(phys_to_virt(pa), s, chunk);
		s += chunk; va += chunk; len -= chunk;
	}
}

struct thread *create_thread(struct process *proc)
{
	/* 32 pages: struct thread at the bottom, kernel stack down from thread + 0x20000. */
	struct thread *t = ihk_mc_alloc_pages(KERNEL_STACK_NR_PAGES);
	t->status = PS_RUNNING;
	t->proc = proc;
	t->vm = proc->vm;
	t->uctx = (ihk_mc_user_context_t *)((char *)t + KERNEL_STACK_SIZE - sizeof(ihk_mc_user_context_t));
	t->uctx->is_gpr_valid = 1;
	t->uctx->gpr.cs = USER_CS;
	t->uctx->gpr.ss = USER_DS;
	t->uctx->gpr.rflags = 0x202;
	/* Never run: ctx.rsp = uctx - 8 holding enter_user_mode (reference 7.1). */
	unsigned long *ret = (unsigned long *)t->uctx - 1;
	*ret = (unsigned long)enter_user_mode;
	t->ctx.rsp = (unsigned long)ret;
	t->ctx.rflags = 0x2;
	t->ctx.rsp0 = (unsigned long)t + KERNEL_STACK_SIZE;
	spin_lock(&hash_lock);
	t->tid = proc->pid + proc->nr_threads;
	t->cpu_id = ((proc->pid - 1000) / 100 + proc->nr_threads) % num_processors;
	if (!proc->main_thread) proc->main_thread = t;
	list_add_tail(&t->siblings_list, &proc->threads_list);
	proc->nr_threads++;
	list_add_tail(&t->hash_list, &default_resource_set->thread_hash->list[t->tid % HASH_SIZE]);
	spin_unlock(&hash_lock);
	return t;
}

struct process *create_process(const char *prog_name, const char *const argv[], int argc)
{
	if (!default_resource_set) resource_set_init();
	const struct user_program *prog = NULL;
	for (size_t i = 0; i < sizeof(programs) / sizeof(programs[0]); i++)
		if (!strncmp(programs[i].name, prog_name, 16)) prog = &programs[i];
	if (!prog) fatal("no user program %s", prog_name);
	const Elf64_Ehdr *eh = (const Elf64_Ehdr *)prog->start;
	if (memcmp(eh->e_ident, "\177ELF", 4)) fatal("user program %s is not ELF", prog_name);

	struct process *proc = kmalloc(sizeof(*proc));
	struct process_vm *vm = kmalloc(sizeof(*vm));
	struct address_space *as = kmalloc(sizeof(*as));
	as->page_table = pt_create();
	as->page_table_pa = virt_to_phys(as->page_table);
	as->refcount = 1;
	vm->address_space = as;
	vm->proc = proc;
	proc->vm = vm;
	proc->pid = alloc_id();
	proc->pgid = proc->pid;
	proc->status = PS_RUNNING;
	INIT_LIST_HEAD(&proc->threads_list);

	long len = 0;
	for (int i = 0; i < argc; i++) len += strlen(argv[i]) + 1;
	proc->saved_cmdline = kmalloc(len);
	proc->saved_cmdline_len = len;
	for (int i = 0, off = 0; i < argc; i++) {
		memcpy(proc->saved_cmdline + off, argv[i], strlen(argv[i]) + 1);
		off += strlen(argv[i]) + 1;
	}

	struct vm_regions *rg = &vm->region;
	rg->user_start = 0x400000;
	rg->user_end = USER_END;
	unsigned long brk = 0;
	const Elf64_Phdr *ph = (const Elf64_Phdr *)(prog->start + eh->e_phoff);
	for (int i = 0; i < eh->e_phnum; i++) {
		if (ph[i].p_type != 1) continue;  /* PT_LOAD */
		unsigned long s = ph[i].p_vaddr & ~(PAGE_SIZE - 1);
		unsigned long e = PAGE_ALIGN(ph[i].p_vaddr + ph[i].p_memsz);
		unsigned long flag = VR_PRIVATE | VR_MAXPROT_READ | VR_MAXPROT_WRITE | VR_MAXPROT_EXEC;
		if (ph[i].p_flags & 4) flag |= VR_PROT_READ;
		if (ph[i].p_flags & 2) flag |= VR_PROT_WRITE;
		if (ph[i].p_flags & 1) flag |= VR_PROT_EXEC;
		vm_add_range(vm, s, e, flag, NULL, PAGE_SHIFT, 1);
		copy_to_user_pa(vm, ph[i].p_vaddr, prog->start + ph[i].p_offset, ph[i].p_filesz);
		if (ph[i].p_flags & 1) { rg->text_start = s; rg->text_end = e; }
		else { rg->data_start = s; rg->data_end = e; }
		if (e > brk) brk = e;
	}
	rg->vm_start = rg->text_start;
	rg->vm_end = brk;
	rg->brk_start = rg->brk_end = rg->brk_end_allocated = brk + 0x10000;
	rg->map_start = rg->map_end = TASK_UNMAPPED_BASE;

	/* stack: argc, argv[], NULL, envp NULL, auxv AT_NULL, strings above */
	rg->stack_end = USER_STACK_END;
	rg->stack_start = USER_STACK_END - USER_STACK_SIZE;
	vm_add_range(vm, rg->stack_start, rg->stack_end,
		     VR_STACK | VR_PRIVATE | VR_PROT_READ | VR_PROT_WRITE | VR_MAXPROT_READ | VR_MAXPROT_WRITE, NULL, PAGE_SHIFT, 1);
	unsigned long sp = USER_STACK_END - 256 - ((len + 15) & ~15UL);
	unsigned long strs = sp;
	copy_to_user_pa(vm, strs, proc->saved_cmdline, len);
	unsigned long frame[32];
	int k = 0;
	frame[k++] = argc;
	for (int i = 0, off = 0; i < argc; i++) { frame[k++] = strs + off; off += strlen(argv[i]) + 1; }
	frame[k++] = 0; frame[k++] = 0; frame[k++] = 0; frame[k++] = 0;
	sp = (sp - k * 8) & ~15UL;
	copy_to_user_pa(vm, sp, frame, k * 8);

	spin_lock(&hash_lock);
	list_add_tail(&proc->hash_list, &default_resource_set->process_hash->list[proc->pid % HASH_SIZE]);
	spin_unlock(&hash_lock);

	struct thread *t = create_thread(proc);
	t->uctx->gpr.rip = eh->e_entry;
	t->uctx->gpr.rsp = sp;
	runq_add(t, t->cpu_id);
	kprintf("process %d (%s) created, main thread on CPU %d\n", proc->pid, argv[0], t->cpu_id);
	return proc;
}
