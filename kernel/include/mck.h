/* Cross-file kernel interfaces. */
#ifndef MCK_MCK_H
#define MCK_MCK_H
#include "kernel.h"
#include "cls.h"
#include "cpulocal.h"
#include "bootparam.h"
#include "kmsg.h"

struct mem_chunk { unsigned long start, size; };
extern struct mem_chunk mem_chunks[MAX_CHUNKS];
extern int nr_mem_chunks;
extern unsigned long linux_page_offset_base;
extern unsigned long x86_kernel_phys_base;
extern volatile int nmi_mode;
extern char scenario_name[32];
extern int kargs_dump_level;
extern volatile unsigned long ticks;
extern struct resource_set *default_resource_set;
extern char _head[], _end[];

/* mm.c */
static inline void *phys_to_virt(unsigned long pa) { return (void *)(pa + linux_page_offset_base); }
unsigned long virt_to_phys(const void *va);
void mm_early_init(void);
void mm_init_pt(void);
void *map_fixed_area(unsigned long pa, unsigned long size, int uncached);
unsigned long alloc_pages_pa(unsigned long npages, unsigned long align);
void free_pages_pa(unsigned long pa, unsigned long npages);
void *ihk_mc_alloc_pages(unsigned long npages);
void *kmalloc(size_t size);
int page_is_free(unsigned long pa);
int pa_in_chunks(unsigned long pa);
unsigned long init_pt_pa(void);
unsigned long init_pt_symbol_addr(void);
void resource_set_init(void);
struct page_table *init_pt_va(void);
struct page_table *pt_create(void);
int pt_map(struct page_table *pgd, unsigned long va, unsigned long pa, unsigned long flags, int large);
unsigned long pt_lookup(struct page_table *pgd, unsigned long va, unsigned long *size, unsigned long *entry);
void pt_unmap(struct page_table *pgd, unsigned long va, unsigned long *pa_out, int *large_out);

/* trap.c / smp.c */
void cpu_init_local(int cpu);
void lapic_init(void);
void lapic_eoi(void);
void smp_boot_aps(void);
void idt_init(void);
extern volatile int world_pause_req, world_pause_ack;

/* sched.c */
void sched_init_cpu(int cpu);
void schedule(void);
void idle_loop(void) __attribute__((noreturn));
void runq_add(struct thread *t, int cpu);
extern struct thread *ihk_mc_switch_context(ihk_mc_kernel_context_t *old, ihk_mc_kernel_context_t *new_ctx, void *prev);
extern void enter_user_mode(void);
void timer_tick(struct x86_user_context *frame);

/* proc.c */
struct process *create_process(const char *prog_name, const char *const argv[], int argc);
struct thread *create_thread(struct process *proc);
struct process *find_process(int pid);
struct thread *find_thread(int tid);
int alloc_id(void);
unsigned long vm_add_range(struct process_vm *vm, unsigned long start, unsigned long end,
			   unsigned long flag, struct memobj *memobj, int pgshift, int populate);
int vm_remove_range(struct process_vm *vm, unsigned long start, unsigned long end);
struct vm_range *vm_lookup(struct process_vm *vm, unsigned long va);
int vm_ranges_sorted(struct process_vm *vm, struct vm_range **out, int max);

/* syscall.c */
void syscall_init_cpu(void);
long syscall_dispatch(struct x86_user_context *frame);
void sys_test_panic_marker(void);

/* dump.c */
void dump_nmi(struct x86_user_context *frame);
void panic_from_fault(struct x86_user_context *frame, const char *function);
void setup_linux_memory(void);

/* manifest.c */
void print_manifest(const char *phase);
extern int panic_cpu;
extern unsigned long panic_rip;
extern const char *panic_function;

/* scenario.c */
void scenario_start(void);
void scenario_tick(void);

#endif
