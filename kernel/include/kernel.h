/* Common kernel definitions: fixed address map, low-level helpers, locks, lists. */
#ifndef MCK_KERNEL_H
#define MCK_KERNEL_H

#include <stddef.h>
#include <stdint.h>

#define MAP_KERNEL_START      0xfffffffffe800000UL
#define MAP_ST_START          0xffff800000000000UL
#define MAP_FIXED_START       0xffff860000000000UL
#define LINUX_PAGE_OFFSET_DEF 0xffff888000000000UL
#define USER_END              0x0000800000000000UL
#define LINK_PHYS_BASE        0x1200000UL  /* kernel_base the image is linked for */

#define PAGE_SHIFT 12
#define PAGE_SIZE  4096UL
#define LARGE_PAGE_SIZE (2UL << 20)
#define PAGE_ALIGN(x) (((x) + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1))

/* x86_64 page-table bits (Intel SDM vol. 3, 4.5) */
#define PTE_P   0x1UL
#define PTE_W   0x2UL
#define PTE_U   0x4UL
#define PTE_PWT 0x8UL
#define PTE_PCD 0x10UL
#define PTE_PS  0x80UL
#define PTE_G   0x100UL
#define PTE_NX  (1UL << 63)
#define PT_PHYSMASK 0x000ffffffffff000UL

/* Segment selectors as McKernel's arch-memory.h */
#define KERNEL_CS 0x20
#define KERNEL_DS 0x28
#define USER_CS   0x33
#define USER_DS   0x3b
#define GDT_TSS   0x40

#define LOCALS_SPAN (4 * 4096)
#define KERNEL_STACK_NR_PAGES 32
#define KERNEL_STACK_SIZE (KERNEL_STACK_NR_PAGES * PAGE_SIZE)
#define MAX_CPUS 8
#define MAX_CHUNKS 4

#define TIMER_VECTOR    0xef
#define SPURIOUS_VECTOR 0xff

static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0,%1" ::"a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port) { uint8_t v; __asm__ volatile("inb %1,%0" : "=a"(v) : "Nd"(port)); return v; }
static inline void outw(uint16_t port, uint16_t v) { __asm__ volatile("outw %0,%1" ::"a"(v), "Nd"(port)); }
static inline void cpu_pause(void) { __asm__ volatile("pause" ::: "memory"); }
static inline void wrmsr(uint32_t msr, uint64_t v) {
	__asm__ volatile("wrmsr" ::"c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)));
}
static inline uint64_t rdmsr(uint32_t msr) {
	uint32_t lo, hi; __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
	return ((uint64_t)hi << 32) | lo;
}
static inline void load_cr3(unsigned long pa) { __asm__ volatile("mov %0,%%cr3" ::"r"(pa) : "memory"); }
static inline unsigned long read_cr2(void) { unsigned long v; __asm__ volatile("mov %%cr2,%0" : "=r"(v)); return v; }
static inline void cli(void) { __asm__ volatile("cli" ::: "memory"); }
static inline __attribute__((noreturn)) void halt_forever(void) { for (;;) __asm__ volatile("cli; hlt"); }
static inline int this_cpu(void) { int v; __asm__ volatile("movl %%gs:0,%0" : "=r"(v)); return v; }

/* Inter-CPU spin lock; all kernel code runs with interrupts off, so no irqsave. */
typedef struct { volatile int locked; } ihk_spinlock_t;
static inline void spin_lock(ihk_spinlock_t *l) {
	while (__atomic_exchange_n(&l->locked, 1, __ATOMIC_ACQUIRE)) cpu_pause();
}
static inline void spin_unlock(ihk_spinlock_t *l) { __atomic_store_n(&l->locked, 0, __ATOMIC_RELEASE); }

struct list_head { struct list_head *next, *prev; };
static inline void INIT_LIST_HEAD(struct list_head *h) { h->next = h->prev = h; }
static inline void list_add_tail(struct list_head *n, struct list_head *h) {
	n->prev = h->prev; n->next = h; h->prev->next = n; h->prev = n;
}
static inline void list_del(struct list_head *n) {
	n->prev->next = n->next; n->next->prev = n->prev; n->next = n->prev = n;
}
#define container_of(p, type, member) ((type *)((char *)(p) - offsetof(type, member)))
#define list_for_each(pos, head) for (pos = (head)->next; pos != (head); pos = pos->next)

/* lib.c */
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strncmp(const char *a, const char *b, size_t n);
char *strstr_kern(const char *h, const char *n);
unsigned long parse_num(const char **p);
typedef void (*putc_fn)(void *arg, char c);
void vformat(putc_fn out, void *arg, const char *fmt, __builtin_va_list ap);

/* kmsg.c */
void serial_init(void);
void kprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void serial_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void serial_lock(void);
void serial_unlock(void);
void serial_printf_locked(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void serial_putc_locked(char c);
void kmsg_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void kmsg_init(unsigned long pa, void *va);
void fatal(const char *fmt, ...) __attribute__((noreturn));

#endif
