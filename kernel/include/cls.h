/* Per-CPU kernel state, McKernel's struct cpu_local_var. */
#ifndef MCK_CLS_H
#define MCK_CLS_H
#include "process.h"

struct cpu_local_var {
	void *free_list;
	void *remote_free_list;
	ihk_spinlock_t remote_free_list_lock;
	struct thread idle;
	struct process idle_proc;
	struct process_vm idle_vm;
	struct address_space idle_asp;
	ihk_spinlock_t runq_lock;
	struct thread *current;
	struct list_head runq;   /* every thread of this CPU except idle, whatever its state */
	size_t runq_len;
	struct resource_set *resource_set;
	int status;              /* enum cpu_status */
	int in_interrupt;
	int no_preempt;
	unsigned long nr_ctx_switches;
	/* Not McKernel's: set when a kernel fault already stored panic_regs (dump.c). */
	int panic_regs_saved;
} __attribute__((aligned(64)));

extern struct cpu_local_var *clv;
extern int num_processors;
extern int *mck_num_processors;

static inline struct cpu_local_var *get_cpu_local_var(int cpu) { return &clv[cpu]; }
#define cpu_local_var(name) (get_cpu_local_var(this_cpu())->name)

#endif
