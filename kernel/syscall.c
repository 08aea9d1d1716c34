/* System calls (Linux x86_64 numbers) that the scenario programs use, plus two private ones:
 * 500 registers a user counter for the manifest, 501 faults deliberately (panic scenario). */
#include "mck.h"

#define MAP_PRIVATE   0x02
#define MAP_FIXED     0x10
#define MAP_ANONYMOUS 0x20
#define MAP_HUGETLB   0x40000
#define SIGSTOP 19
#define FAKE_FILE_FD 3   /* the one "file" the kernel knows: a fake shared library */

static struct thread *cur(void) { return cpu_local_var(current); }

static long sys_write(int fd, const char *buf, unsigned long len)
{
	char tmp[200];
	unsigned long n = len < sizeof(tmp) - 1 ? len : sizeof(tmp) - 1;
	if (fd != 1 && fd != 2) return -9;
	if ((unsigned long)buf >= USER_END || !vm_lookup(cur()->vm, (unsigned long)buf)) return -14;
	memcpy(tmp, buf, n);
	tmp[n] = 0;
	kprintf("%d: %s", cur()->proc->pid, tmp);
	return len;
}

static long sys_mmap(unsigned long addr, unsigned long len, unsigned long prot, unsigned long flags, long fd, unsigned long off)
{
	struct process_vm *vm = cur()->vm;
	struct vm_regions *rg = &vm->region;
	int huge = (flags & MAP_HUGETLB) != 0;
	unsigned long align = huge ? LARGE_PAGE_SIZE : PAGE_SIZE;
	struct memobj *obj = NULL;
	(void)off;
	if (!len) return -22;
	len = (len + align - 1) & ~(align - 1);
	if (!(flags & MAP_ANONYMOUS)) {
		if (fd != FAKE_FILE_FD) return -9;
		obj = kmalloc(sizeof(*obj));
		obj->flags = MF_REG_FILE;
		obj->size = len;
		obj->refcnt = 1;
		obj->nr_pages = len >> PAGE_SHIFT;
		obj->path = "/usr/lib/libfake.so";
	}
	spin_lock(&vm->memory_range_lock);
	if (!(flags & MAP_FIXED) || !addr) {
		addr = (rg->map_end + align - 1) & ~(align - 1);
		rg->map_end = addr + len + PAGE_SIZE;  /* a guard page keeps ranges apart */
	}
	unsigned long flag = (prot << 16) | VR_MAXPROT_READ | VR_MAXPROT_WRITE | VR_MAXPROT_EXEC;
	if (flags & MAP_PRIVATE) flag |= VR_PRIVATE;
	vm_add_range(vm, addr, addr + len, flag, obj, huge ? 21 : PAGE_SHIFT, 1);
	spin_unlock(&vm->memory_range_lock);
	if (obj) {  /* "file contents": an ELF-looking header then a recognisable pattern */
		unsigned long pa = pt_lookup(vm->address_space->page_table, addr, NULL, NULL);
		memcpy(phys_to_virt(pa), "\177ELF-fake libfake.so", 20);
	}
	return addr;
}

static long sys_munmap(unsigned long addr, unsigned long len)
{
	struct process_vm *vm = cur()->vm;
	spin_lock(&vm->memory_range_lock);
	int r = vm_remove_range(vm, addr, addr + PAGE_ALIGN(len));
	spin_unlock(&vm->memory_range_lock);
	return r ? -22 : 0;
}

static long sys_brk(unsigned long addr)
{
	struct process_vm *vm = cur()->vm;
	struct vm_regions *rg = &vm->region;
	if (addr <= rg->brk_end || addr > rg->brk_start + (64UL << 20)) return rg->brk_end;
	unsigned long want = PAGE_ALIGN(addr);
	spin_lock(&vm->memory_range_lock);
	if (want > rg->brk_end_allocated) {
		unsigned long flag = VR_PRIVATE | VR_PROT_READ | VR_PROT_WRITE | VR_MAXPROT_READ | VR_MAXPROT_WRITE | VR_MAXPROT_EXEC;
		struct vm_range *heap = rg->brk_end_allocated > rg->brk_start ? vm_lookup(vm, rg->brk_start) : NULL;
		if (heap) {  /* grow the heap range in place */
			for (unsigned long va = heap->end; va < want; va += PAGE_SIZE)
				pt_map(vm->address_space->page_table, va, alloc_pages_pa(1, PAGE_SIZE),
				       PTE_P | PTE_U | PTE_W | PTE_NX, 0);
			vm->currss += want - heap->end;
			heap->end = want;
		} else {
			vm_add_range(vm, rg->brk_start, want, flag, NULL, PAGE_SHIFT, 1);
		}
		rg->brk_end_allocated = want;
	}
	rg->brk_end = addr;
	spin_unlock(&vm->memory_range_lock);
	return addr;
}

static long sys_nanosleep(const unsigned long *req)
{
	unsigned long ns = req[0] * 1000000000UL + req[1];
	unsigned long n = (ns + 9999999) / 10000000;  /* 10 ms ticks */
	struct thread *t = cur();
	if (!n) n = 1;
	t->wake_tick = ticks + n;
	t->status = PS_INTERRUPTIBLE;
	schedule();
	return 0;
}

static long sys_clone(struct x86_user_context *frame, unsigned long flags, unsigned long newsp)
{
	struct thread *parent = cur();
	(void)flags;
	struct thread *t = create_thread(parent->proc);
	memcpy(t->uctx, frame, sizeof(*frame));
	t->uctx->gpr.rax = 0;
	t->uctx->gpr.rsp = newsp;
	runq_add(t, t->cpu_id);
	return t->tid;
}

static void update_process_state(struct process *p)
{
	struct list_head *pos;
	list_for_each(pos, &p->threads_list)
		if (container_of(pos, struct thread, siblings_list)->status != PS_ZOMBIE) return;
	p->status = PS_ZOMBIE;
}

static long sys_exit(int status)
{
	struct thread *t = cur();
	t->exit_status = status;
	t->status = PS_ZOMBIE;
	update_process_state(t->proc);
	schedule();
	halt_forever();
}

static long sys_exit_group(int status)
{
	struct thread *t = cur();
	struct list_head *pos;
	t->proc->exit_status = status;
	list_for_each(pos, &t->proc->threads_list)
		container_of(pos, struct thread, siblings_list)->status = PS_ZOMBIE;
	t->proc->status = PS_ZOMBIE;
	kprintf("process %d exited with status %d\n", t->proc->pid, status);
	schedule();
	halt_forever();
}

static long sys_tgkill(int tgid, int tid, int sig)
{
	struct thread *t = find_thread(tid);
	if (!t || t->proc->pid != tgid) return -3;
	if (sig != SIGSTOP) return -22;
	t->status = PS_STOPPED;
	if (t == cur()) schedule();
	return 0;
}

/* Deliberate NULL dereference: the panic scenario's kernel fault. Kept out of line so the
 * fault RIP lies inside this function. */
__attribute__((noinline)) long sys_test_panic(long value)
{
	int *p;
	__asm__ volatile("xorl %k0, %k0" : "=r"(p));
	*p = (int)value;
	return 0;
}

long syscall_dispatch(struct x86_user_context *f)
{
	struct thread *t = cur();
	unsigned long a0 = f->gpr.rdi, a1 = f->gpr.rsi, a2 = f->gpr.rdx, a3 = f->gpr.r10, a4 = f->gpr.r8, a5 = f->gpr.r9;
	long r;
	t->in_kernel = 1;
	switch (f->gpr.orig_rax) {
	case 1: r = sys_write((int)a0, (const char *)a1, a2); break;
	case 9: r = sys_mmap(a0, a1, a2, a3, (long)a4, a5); break;
	case 11: r = sys_munmap(a0, a1); break;
	case 12: r = sys_brk(a0); break;
	case 24: schedule(); r = 0; break;
	case 35: r = sys_nanosleep((const unsigned long *)a0); break;
	case 39: r = t->proc->pid; break;
	case 56: r = sys_clone(f, a0, a1); break;
	case 60: r = sys_exit((int)a0); break;
	case 186: r = t->tid; break;
	case 231: r = sys_exit_group((int)a0); break;
	case 234: r = sys_tgkill((int)a0, (int)a1, (int)a2); break;
	case 500: t->counter_va = a0; r = 0; break;
	case 501: r = sys_test_panic((long)a0); break;
	default: r = -38; break;
	}
	f->gpr.rax = r;
	t->in_kernel = 0;
	return r;
}
