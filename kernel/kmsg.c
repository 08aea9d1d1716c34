/* Console output: the serial port (COM1) for the host harness, and the kmsg ring that IHK's
 * Linux side reads (writer rules as reference 6.6: byte-wise, tail wraps, head is pushed
 * forward when the free margin is too small). */
#include "mck.h"

#define COM1 0x3f8

struct ihk_kmsg_buf *kmsg_buf;
static ihk_spinlock_t serial_lock_;
static int locals_ready;

void serial_init(void)
{
	outb(COM1 + 1, 0x00);
	outb(COM1 + 3, 0x80);
	outb(COM1 + 0, 0x01);
	outb(COM1 + 1, 0x00);
	outb(COM1 + 3, 0x03);
	outb(COM1 + 2, 0xc7);
	outb(COM1 + 4, 0x0b);
}

void serial_putc_locked(char c)
{
	outb(COM1, (uint8_t)c);  /* QEMU's 16550 never holds THR busy; polling LSR doubles the exits */
}

void serial_lock(void) { spin_lock(&serial_lock_); }
void serial_unlock(void) { spin_unlock(&serial_lock_); }

static void serial_out(void *arg, char c) { (void)arg; serial_putc_locked(c); }

void serial_printf_locked(const char *fmt, ...)
{
	__builtin_va_list ap;
	__builtin_va_start(ap, fmt);
	vformat(serial_out, NULL, fmt, ap);
	__builtin_va_end(ap);
}

void serial_printf(const char *fmt, ...)
{
	__builtin_va_list ap;
	serial_lock();
	__builtin_va_start(ap, fmt);
	vformat(serial_out, NULL, fmt, ap);
	__builtin_va_end(ap);
	serial_unlock();
}

void kmsg_init(unsigned long pa, void *va)
{
	(void)pa;
	kmsg_buf = va;
	locals_ready = 1;
}

struct linebuf { char buf[256]; int n; };

static void line_out(void *arg, char c)
{
	struct linebuf *lb = arg;
	if (lb->n < (int)sizeof(lb->buf) - 1) lb->buf[lb->n++] = c;
}

static void kmsg_write(const char *s, int n)
{
	struct ihk_kmsg_buf *kb = kmsg_buf;
	if (!kb) return;
	while (__sync_val_compare_and_swap(&kb->lock, 0, 1) != 0) cpu_pause();
	int len = kb->len;
	int margin = kb->head == kb->tail ? len : ((kb->head - kb->tail) % len + len) % len;
	for (int i = 0; i < n; i++) {
		kb->str[kb->tail] = s[i];
		kb->tail = (kb->tail + 1) % len;
	}
	if (margin <= n) kb->head = (kb->tail + 1) % len;
	__atomic_store_n(&kb->lock, 0, __ATOMIC_RELEASE);
}

static void line_printf(struct linebuf *lb, const char *fmt, ...)
{
	__builtin_va_list ap;
	__builtin_va_start(ap, fmt);
	vformat(line_out, lb, fmt, ap);
	__builtin_va_end(ap);
}

/* One kernel message, "[%3d]: " + text with the CPU id (-1 before the per-CPU areas exist),
 * to the kmsg ring and, unless to_serial is 0, to the serial console. */
static void kvprintf(int to_serial, const char *fmt, __builtin_va_list ap)
{
	struct linebuf lb;
	lb.n = 0;
	line_printf(&lb, "[%3d]: ", locals_ready ? this_cpu() : -1);
	vformat(line_out, &lb, fmt, ap);
	serial_lock();
	kmsg_write(lb.buf, lb.n);
	if (to_serial)
		for (int i = 0; i < lb.n; i++) serial_putc_locked(lb.buf[i]);
	serial_unlock();
}

void kprintf(const char *fmt, ...)
{
	__builtin_va_list ap;
	__builtin_va_start(ap, fmt);
	kvprintf(1, fmt, ap);
	__builtin_va_end(ap);
}

/* kmsg ring only (boot chatter the serial console does not need). */
void kmsg_printf(const char *fmt, ...)
{
	__builtin_va_list ap;
	__builtin_va_start(ap, fmt);
	kvprintf(0, fmt, ap);
	__builtin_va_end(ap);
}

void fatal(const char *fmt, ...)
{
	__builtin_va_list ap;
	serial_lock();
	serial_printf_locked("MCKTOOLS-ERROR ");
	__builtin_va_start(ap, fmt);
	vformat(serial_out, NULL, fmt, ap);
	__builtin_va_end(ap);
	serial_putc_locked('\n');
	serial_unlock();
	halt_forever();
}
