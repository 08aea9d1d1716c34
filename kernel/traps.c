/* C side of interrupts and exceptions. */
#include "mck.h"

extern char sys_test_panic[];

static const char *const exc_names[32] = {
	"#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "#CSO", "#TS", "#NP", "#SS", "#GP", "#PF", "#15",
	"#MF", "#AC", "#MC", "#XM", "#VE", "#CP",
};

void trap_handler(struct x86_user_context *frame, unsigned long vector)
{
	if (vector == 2) { dump_nmi(frame); return; }
	if (vector == TIMER_VECTOR) { timer_tick(frame); return; }
	if (vector == SPURIOUS_VECTOR) return;

	struct cpu_local_var *v = get_cpu_local_var(this_cpu());
	if (frame->gpr.cs & 3) {
		/* A user fault kills the thread's process (no signals here). */
		struct thread *t = v->current;
		kprintf("tid %d: %s at rip 0x%lx addr 0x%lx, killed\n", t->tid,
			vector < 32 && exc_names[vector] ? exc_names[vector] : "trap", frame->gpr.rip,
			vector == 14 ? read_cr2() : 0);
		struct list_head *pos;
		list_for_each(pos, &t->proc->threads_list)
			container_of(pos, struct thread, siblings_list)->status = PS_ZOMBIE;
		t->proc->status = PS_ZOMBIE;
		schedule();
		halt_forever();
	}
	const char *fn = "unknown";
	if (frame->gpr.rip >= (unsigned long)sys_test_panic && frame->gpr.rip < (unsigned long)sys_test_panic + 64)
		fn = "sys_test_panic";
	serial_printf("\nMCKTOOLS-PANIC cpu %d %s vector %lu at rip 0x%lx (%s) cr2 0x%lx error 0x%lx\n",
		      this_cpu(), vector < 32 && exc_names[vector] ? exc_names[vector] : "?", vector,
		      frame->gpr.rip, fn, read_cr2(), frame->gpr.error);
	panic_from_fault(frame, fn);
}
