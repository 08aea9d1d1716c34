/* Cooperative round-robin scheduling as McKernel's: one run queue per CPU holding every thread
 * of that CPU whatever its state; switches happen in syscalls (yield, sleep, exit) and on the
 * timer tick when it interrupts user mode. */
#include "mck.h"

volatile int world_pause_req, world_pause_ack;

void sched_init_cpu(int cpu)
{
	struct cpu_local_var *v = get_cpu_local_var(cpu);
	memset(v, 0, sizeof(*v));
	v->idle_asp.page_table = init_pt_va();
	v->idle_asp.page_table_pa = init_pt_pa();
	v->idle_vm.address_space = &v->idle_asp;
	v->idle_vm.proc = &v->idle_proc;
	v->idle_proc.vm = &v->idle_vm;
	v->idle_proc.pid = 0;
	v->idle_proc.status = PS_RUNNING;
	INIT_LIST_HEAD(&v->idle_proc.threads_list);
	INIT_LIST_HEAD(&v->idle_proc.hash_list);
	v->idle_proc.main_thread = &v->idle;
	v->idle.tid = cpu;
	v->idle.cpu_id = cpu;
	v->idle.status = PS_RUNNING;
	v->idle.proc = &v->idle_proc;
	v->idle.vm = &v->idle_vm;
	v->idle.in_kernel = 1;
	INIT_LIST_HEAD(&v->idle.hash_list);
	INIT_LIST_HEAD(&v->idle.sched_list);
	list_add_tail(&v->idle.siblings_list, &v->idle_proc.threads_list);
	INIT_LIST_HEAD(&v->runq);
	v->current = &v->idle;
	v->status = CPU_STATUS_IDLE;
	v->resource_set = default_resource_set;
}

void runq_add(struct thread *t, int cpu)
{
	struct cpu_local_var *v = get_cpu_local_var(cpu);
	t->cpu_id = cpu;
	spin_lock(&v->runq_lock);
	list_add_tail(&t->sched_list, &v->runq);
	v->runq_len++;
	if (v->status == CPU_STATUS_IDLE) v->status = CPU_STATUS_RESERVED;
	spin_unlock(&v->runq_lock);
}

static void update_status(struct cpu_local_var *v)
{
	if (v->current != &v->idle) v->status = CPU_STATUS_RUNNING;
	else v->status = v->runq_len ? CPU_STATUS_RESERVED : CPU_STATUS_IDLE;
}

void schedule(void)
{
	struct cpu_local_var *v = get_cpu_local_var(this_cpu());
	struct thread *prev = v->current, *next = NULL;

	spin_lock(&v->runq_lock);
	struct list_head *start = prev == &v->idle ? &v->runq : &prev->sched_list;
	struct list_head *pos = start->next;
	for (size_t n = 0; n <= v->runq_len; n++, pos = pos->next) {
		if (pos == &v->runq) continue;
		struct thread *t = container_of(pos, struct thread, sched_list);
		if (t->status == PS_RUNNING) { next = t; break; }
		if (pos == start) break;
	}
	if (!next) {
		if (prev != &v->idle && prev->status == PS_RUNNING) next = prev;
		else next = &v->idle;
	}
	v->current = next;
	update_status(v);
	spin_unlock(&v->runq_lock);
	if (next == prev) return;
	v->nr_ctx_switches++;
	if (next != &v->idle) load_cr3(next->vm->address_space->page_table_pa);
	ihk_mc_switch_context(&prev->ctx, &next->ctx, prev);
}

/* Idle thread status follows McKernel: STOPPED inside schedule(), INTERRUPTIBLE while halted. */
void idle_loop(void)
{
	struct cpu_local_var *v = get_cpu_local_var(this_cpu());
	for (;;) {
		v->idle.status = PS_STOPPED;
		schedule();
		if (v->current == &v->idle) {
			v->idle.status = PS_INTERRUPTIBLE;
			__asm__ volatile("sti; hlt; cli" ::: "memory");
		}
		v->idle.status = PS_RUNNING;
	}
}

void timer_tick(struct x86_user_context *frame)
{
	int cpu = this_cpu();
	struct cpu_local_var *v = get_cpu_local_var(cpu);
	lapic_eoi();
	if (cpu == 0) ticks++;
	spin_lock(&v->runq_lock);
	struct list_head *pos;
	list_for_each(pos, &v->runq) {
		struct thread *t = container_of(pos, struct thread, sched_list);
		if (t->status == PS_INTERRUPTIBLE && t->wake_tick && t->wake_tick <= ticks) {
			t->wake_tick = 0;
			t->status = PS_RUNNING;
		}
	}
	spin_unlock(&v->runq_lock);
	if (cpu == 0) {
		scenario_tick();
	} else if (world_pause_req) {
		/* CPU 0 prints a consistent setup manifest while the others wait here. */
		__atomic_fetch_add(&world_pause_ack, 1, __ATOMIC_ACQ_REL);
		while (__atomic_load_n(&world_pause_req, __ATOMIC_ACQUIRE)) cpu_pause();
		__atomic_fetch_sub(&world_pause_ack, 1, __ATOMIC_ACQ_REL);
	}
	if (frame->gpr.cs & 3) schedule();
}
