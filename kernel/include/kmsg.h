/* The kmsg ring shared with the host, as IHK's ihk_debug.h (smaller str). */
#ifndef MCK_KMSG_H
#define MCK_KMSG_H

#define IHK_KMSG_SIZE (16 * 1024)

struct ihk_kmsg_buf {
	int lock;  /* inter-kernel lock, CAS 0 -> 1 */
	int tail;  /* next write index */
	int len;   /* sizeof(str) */
	int head;  /* oldest byte */
	char padding[4096 - 16];
	char str[IHK_KMSG_SIZE];
};

extern struct ihk_kmsg_buf *kmsg_buf;

#endif
