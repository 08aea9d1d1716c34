/* Freestanding string helpers and a small printf formatter. */
#include "kernel.h"

void *memset(void *d, int c, size_t n)
{
	unsigned char *p = d;
	while (n--) *p++ = (unsigned char)c;
	return d;
}

void *memcpy(void *d, const void *s, size_t n)
{
	unsigned char *dp = d;
	const unsigned char *sp = s;
	while (n--) *dp++ = *sp++;
	return d;
}

int memcmp(const void *a, const void *b, size_t n)
{
	const unsigned char *x = a, *y = b;
	for (; n; n--, x++, y++)
		if (*x != *y) return *x - *y;
	return 0;
}

size_t strlen(const char *s)
{
	size_t n = 0;
	while (s[n]) n++;
	return n;
}

int strncmp(const char *a, const char *b, size_t n)
{
	for (; n; n--, a++, b++) {
		if (*a != *b) return (unsigned char)*a - (unsigned char)*b;
		if (!*a) return 0;
	}
	return 0;
}

char *strstr_kern(const char *h, const char *n)
{
	size_t ln = strlen(n);
	for (; *h; h++)
		if (!strncmp(h, n, ln)) return (char *)h;
	return NULL;
}

/* Decimal or 0x-hex number with an optional K/M/G suffix; advances *p. */
unsigned long parse_num(const char **p)
{
	const char *s = *p;
	unsigned long v = 0;
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		s += 2;
		for (;; s++) {
			int d;
			if (*s >= '0' && *s <= '9') d = *s - '0';
			else if (*s >= 'a' && *s <= 'f') d = *s - 'a' + 10;
			else if (*s >= 'A' && *s <= 'F') d = *s - 'A' + 10;
			else break;
			v = v * 16 + d;
		}
	} else {
		while (*s >= '0' && *s <= '9') v = v * 10 + (*s++ - '0');
	}
	if (*s == 'K' || *s == 'k') { v <<= 10; s++; }
	else if (*s == 'M' || *s == 'm') { v <<= 20; s++; }
	else if (*s == 'G' || *s == 'g') { v <<= 30; s++; }
	*p = s;
	return v;
}

static void out_num(putc_fn out, void *arg, unsigned long v, int base, int width, char pad, int neg)
{
	char buf[24];
	int n = 0;
	do {
		int d = v % base;
		buf[n++] = d < 10 ? '0' + d : 'a' + d - 10;
		v /= base;
	} while (v);
	if (neg) buf[n++] = '-';
	while (width-- > n) out(arg, pad);
	while (n) out(arg, buf[--n]);
}

/* Supports %d %i %u %x %lx %ld %lu %p %s %c %% with width and 0 padding. */
void vformat(putc_fn out, void *arg, const char *fmt, __builtin_va_list ap)
{
	for (; *fmt; fmt++) {
		if (*fmt != '%') { out(arg, *fmt); continue; }
		fmt++;
		char pad = ' ';
		int width = 0, lng = 0;
		if (*fmt == '0') { pad = '0'; fmt++; }
		while (*fmt >= '0' && *fmt <= '9') width = width * 10 + (*fmt++ - '0');
		while (*fmt == 'l') { lng = 1; fmt++; }
		switch (*fmt) {
		case 'd': case 'i': {
			long v = lng ? __builtin_va_arg(ap, long) : __builtin_va_arg(ap, int);
			out_num(out, arg, v < 0 ? -(unsigned long)v : (unsigned long)v, 10, width, pad, v < 0);
			break;
		}
		case 'u':
			out_num(out, arg, lng ? __builtin_va_arg(ap, unsigned long) : __builtin_va_arg(ap, unsigned int), 10, width, pad, 0);
			break;
		case 'x':
			out_num(out, arg, lng ? __builtin_va_arg(ap, unsigned long) : __builtin_va_arg(ap, unsigned int), 16, width, pad, 0);
			break;
		case 'p':
			out(arg, '0'); out(arg, 'x');
			out_num(out, arg, (unsigned long)__builtin_va_arg(ap, void *), 16, width, pad, 0);
			break;
		case 's': {
			const char *s = __builtin_va_arg(ap, const char *);
			if (!s) s = "(null)";
			int l = (int)strlen(s);
			while (width-- > l) out(arg, ' ');
			while (*s) out(arg, *s++);
			break;
		}
		case 'c': out(arg, (char)__builtin_va_arg(ap, int)); break;
		case '%': out(arg, '%'); break;
		default: out(arg, '%'); out(arg, *fmt); break;
		}
	}
}
