/* Thread, process and memory-map structures with McKernel's names, members and member types. */
#ifndef MCK_PROCESS_H
#define MCK_PROCESS_H

#include "kernel.h"
#include "context.h"

enum process_status {
	PS_RUNNING = 0x1,
	PS_INTERRUPTIBLE = 0x2,
	PS_UNINTERRUPTIBLE = 0x4,
	PS_ZOMBIE = 0x8,
	PS_EXITED = 0x10,
	PS_STOPPED = 0x20,
	PS_TRACED = 0x40,
	PS_STOPPING = 0x80,
	PS_TRACING = 0x100,
	PS_DELAY_STOPPED = 0x200,
	PS_DELAY_TRACED = 0x400,
	PS_NORMAL = PS_INTERRUPTIBLE | PS_UNINTERRUPTIBLE,
};

enum cpu_status {
	CPU_STATUS_DISABLE = 0,
	CPU_STATUS_IDLE = 1,
	CPU_STATUS_RUNNING = 2,
	CPU_STATUS_RESERVED = 3,
};

enum vm_range_flag {
	VR_NONE = 0x0,
	VR_STACK = 0x1,
	VR_RESERVED = 0x2,
	VR_AP_USER = 0x4,
	VR_IO_NOCACHE = 0x100,
	VR_REMOTE = 0x200,
	VR_WRITE_COMBINED = 0x400,
	VR_DONTFORK = 0x800,
	VR_DEMAND_PAGING = 0x1000,
	VR_PRIVATE = 0x2000,
	VR_LOCKED = 0x4000,
	VR_FILEOFF = 0x8000,
	VR_PROT_NONE = 0x0,
	VR_PROT_READ = 0x10000,
	VR_PROT_WRITE = 0x20000,
	VR_PROT_EXEC = 0x40000,
	VR_PROT_MASK = 0x70000,
	VR_MAXPROT_NONE = 0x0,
	VR_MAXPROT_READ = 0x100000,
	VR_MAXPROT_WRITE = 0x200000,
	VR_MAXPROT_EXEC = 0x400000,
	VR_MAXPROT_MASK = 0x700000,
	VR_MEMTYPE_WB = 0x0,
	VR_MEMTYPE_UC = 0x01000000,
	VR_MEMTYPE_MASK = 0x0f000000,
	VR_PAGEOUT = 0x10000000,
	VR_DONTDUMP = 0x20000000,
	VR_XPMEM = 0x40000000,
	VR_WIPEONFORK = 0x80000000U,
};

/* Linux's rb_node: parent pointer and colour (bit 0, 1 = black) share one word. */
struct rb_node {
	unsigned long __rb_parent_color;
	struct rb_node *rb_right;
	struct rb_node *rb_left;
} __attribute__((aligned(sizeof(long))));

struct rb_root {
	struct rb_node *rb_node;
};

struct page_table {
	unsigned long entry[512];
};

struct address_space {
	struct page_table *page_table; /* PGD VA (direct map) */
	void *opt;
	void (*free_cb)(struct address_space *, void *);
	int refcount;
	unsigned long page_table_pa;   /* not McKernel's: saves a walk on every switch */
};

struct vm_regions {
	unsigned long vm_start, vm_end;
	unsigned long text_start, text_end;
	unsigned long data_start, data_end;
	unsigned long brk_start, brk_end, brk_end_allocated;
	unsigned long map_start, map_end;
	unsigned long stack_start, stack_end;
	unsigned long user_start, user_end;
};

struct memobj {
	void *ops;
	uint32_t flags;
	uint32_t status;
	size_t size;
	long refcnt;
	void *pages;
	long nr_pages;
	char *path;
};

#define MF_REG_FILE 0x1000

struct vm_range {
	struct rb_node vm_rb_node; /* first: node pointer == range pointer */
	unsigned long start, end;
	unsigned long flag;
	unsigned long straight_start;
	struct memobj *memobj;
	long objoff;
	int pgshift;
	void *private_data;
};

struct process;

struct process_vm {
	struct address_space *address_space;
	struct rb_root vm_range_tree;
	struct vm_regions region;
	struct process *proc;
	ihk_spinlock_t memory_range_lock;
	void *vdso_addr;
	void *vvar_addr;
	long currss;
};

struct thread {
	struct list_head hash_list;
	int cpu_id;
	int tid;
	int status;
	int exit_status;
	struct process_vm *vm;
	ihk_mc_kernel_context_t ctx;
	ihk_mc_user_context_t *uctx;
	struct process *proc;
	struct list_head siblings_list;
	struct list_head sched_list;
	int in_kernel;
	/* Not McKernel's: bookkeeping for this reference kernel. */
	unsigned long wake_tick;     /* nanosleep deadline in timer ticks */
	unsigned long counter_va;    /* user counter registered by the program */
};

struct process {
	struct list_head hash_list;
	struct process_vm *vm;
	struct list_head threads_list;
	struct thread *main_thread;
	struct process *parent;
	struct process *ppid_parent;
	int status;
	int exit_status;
	int pid;
	int pgid;
	char *saved_cmdline;     /* argv strings, NUL-terminated, back to back */
	long saved_cmdline_len;
	int nr_threads;
};

#define HASH_SIZE 73

struct process_hash {
	struct list_head list[HASH_SIZE];
	ihk_spinlock_t lock[HASH_SIZE];
};

struct thread_hash {
	struct list_head list[HASH_SIZE];
	ihk_spinlock_t lock[HASH_SIZE];
};

struct resource_set {
	struct list_head list;
	char *path;
	struct process_hash *process_hash;
	struct thread_hash *thread_hash;
	struct process *pid1;
};

#endif
