/* Boot parameters shared with the "Linux" side (IHK's smp_boot_param), plus the dump bitmaps.
 * Members keep IHK's names and, where the reference lists them, its default-build offsets. */
#ifndef MCK_BOOTPARAM_H
#define MCK_BOOTPARAM_H

enum ihk_dump_level {
	DUMP_LEVEL_ALL = 0,
	DUMP_LEVEL_USER_UNUSED_EXCLUDE = 24,
};

enum ihk_dump_page_set_state {
	IHK_DUMP_PAGE_SET_INCOMPLETE = 0,
	IHK_DUMP_PAGE_SET_COMPLETED = 1,
};

struct ihk_dump_page {
	unsigned long start;     /* PA of the chunk */
	unsigned long map_count; /* 64-bit words in map[] */
	unsigned long map[];     /* bit set = page is included in the dump */
};

struct ihk_dump_page_set {
	volatile unsigned int completion_flag;
	unsigned int count;
	unsigned long page_size;
	unsigned long phy_page;  /* PA of the first ihk_dump_page */
};

struct smp_boot_param {
	unsigned long start, end;        /* 0, 8 */
	unsigned long status;            /* 16 */
	unsigned long param_size;        /* 24 */
	unsigned long bootstrap_mem_end; /* 32 */
	unsigned long msg_buffer;        /* 40: PA of struct ihk_kmsg_buf */
	unsigned long msg_buffer_size;   /* 48 */
	char __pad0[104 - 56];
	unsigned long nmi_mode_addr;     /* 104: PA of nmi_mode */
	char __pad1[136 - 112];
	unsigned long page_offset_base;  /* 136 */
	char __pad2[176 - 144];
	unsigned long boot_sec, boot_nsec; /* 176, 184 */
	char __pad3[4296 - 192];
	int ihk_ikc_irq;                 /* 4296 */
	char __pad4[6348 - 4300];
	char kernel_args[256];           /* 6348 */
	char __pad5[6608 - 6604];
	int nr_cpus;                     /* 6608 */
	char __pad6[6624 - 6612];
	int dump_level;                  /* 6624 */
	int __pad7;
	struct ihk_dump_page_set dump_page_set; /* 6632 */
	char __pad8[7616 - 6656];
};

extern struct smp_boot_param *boot_param;
extern unsigned long boot_param_pa;
extern struct ihk_dump_page *dump_page;

#endif
