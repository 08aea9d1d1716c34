/*
 * ihk_debug_abi.h - the debug half of the /dev/mcosN ioctl ABI, as mcktools uses it.
 *
 * This is the project's own statement of the interface between a Linux process
 * and the IHK host driver: request numbers, argument structures and the values
 * they carry.  It is written from the facts collected in the shared ABI
 * reference (sections 1.4, 2.4, 2.8 and 3), not taken from IHK.
 * mcktools/formats/ihk_ioctl.py packs the same structures in Python; the test
 * tests/test_live_ioctl_abi.py compiles this header and checks that both agree.
 *
 * Layout rules: every structure is laid out for an LP64 ABI (x86_64 SysV and
 * AArch64 AAPCS64 give identical results: long and pointers are 8 bytes,
 * natural alignment).  The static assertions below pin the sizes and the
 * offsets that the driver relies on.
 *
 * Usable from kernel code and user space alike (C11 / gnu11): no typedef'd
 * integer types, only the base C types the driver itself uses.
 */
#ifndef MCKTOOLS_IHK_DEBUG_ABI_H
#define MCKTOOLS_IHK_DEBUG_ABI_H

#ifdef __KERNEL__
#include <linux/stddef.h>
#else
#include <stddef.h>
#endif

/* ------------------------------------------------------------------------
 * Request numbers on /dev/mcosN.  They are plain integers, not _IOC-encoded:
 * pass them to ioctl() exactly as written.
 * ------------------------------------------------------------------------ */
#define IHK_OS_QUERY_STATUS      0x112a03  /* no arg; return value = enum ihk_os_status */
#define IHK_OS_DUMP              0x112a06  /* arg = struct ihk_dump_args *; root only */
#define IHK_OS_STATUS            0x112a14  /* no arg; return value = enum ihk_os_status */
#define IHK_OS_READ_KMSG         0x112a20  /* arg = buffer of IHK_KMSG_SIZE bytes */
#define IHK_OS_CLEAR_KMSG        0x112a21
#define IHK_OS_QUERY_CPU         0x112a26
#define IHK_OS_QUERY_MEM         0x112a27
#define IHK_OS_FREEZE            0x112a30  /* root only */
#define IHK_OS_THAW              0x112a31  /* root only */
#define IHK_OS_GET_USAGE         0x112a32  /* arg = struct ihk_os_monitor_head * (+ reserved) */
#define IHK_OS_GET_CPU_USAGE     0x112a33  /* arg = struct ihk_os_cpu_monitor[ncpus] */
#define IHK_OS_GET_BUILDID       0x112a37
#define IHK_OS_GET_NUM_CPUS      0x112a38  /* no arg; return value = CPU count */
#define IHK_OS_READ_KADDR        0x112a39  /* arg = struct ihk_read_kaddr_desc *; no root needed */

/* Requests that ordinary users may issue once mcreboot.sh chowned the device.
 * Everything else on /dev/mcosN, IHK_OS_DUMP included, needs euid 0. */

/* Size of the kmsg ring copied by IHK_OS_READ_KMSG. */
#define IHK_KMSG_SIZE            4190208UL

/* ------------------------------------------------------------------------
 * IHK_OS_DUMP: one request, sub-commands in ihk_dump_args.cmd.
 * The driver copies the whole struct in and back out, even on error.
 * ------------------------------------------------------------------------ */
#define IHK_DUMP_NMI                   1   /* freeze: nmi_mode = 0, NMI every CPU (no-op if already COMPLETED) */
#define IHK_DUMP_QUERY                 2   /* legacy: raw reserved-chunk list */
#define IHK_DUMP_READ                  3   /* copy size bytes at PA start into buf; no range check */
#define IHK_DUMP_QUERY_ALL             4   /* out: start = first PA, size = span of all chunks (holes included) */
#define IHK_DUMP_READ_ALL              5   /* same as IHK_DUMP_READ */
#define IHK_DUMP_SET_LEVEL             6   /* level must be IHK_DUMP_LEVEL_ALL or _USER_UNUSED_EXCLUDE */
#define IHK_DUMP_QUERY_NUM_MEM_AREAS   7   /* waits for COMPLETED; out: size = 24 + 16 * runs */
#define IHK_DUMP_QUERY_MEM_AREAS       8   /* waits for COMPLETED; fills buf with struct ihk_dump_mem_chunks */
#define IHK_DUMP_QUERY_PHYS_START      9   /* arm64 only: 8 bytes of Linux memstart_addr into buf */
#define IHK_DUMP_NMI_CONT             10   /* resume: nmi_mode = 4, NMI every CPU (only if COMPLETED) */

#define IHK_DUMP_LEVEL_ALL                   0
#define IHK_DUMP_LEVEL_USER_UNUSED_EXCLUDE  24

/* DUMP_READ block size used by the dump writer (ihkosctl): 1 MiB. */
#define IHK_DUMP_READ_BLOCK      0x100000UL

struct ihk_dump_args {
	int cmd;                /* IHK_DUMP_* */
	unsigned int level;     /* IHK_DUMP_SET_LEVEL */
	long start;             /* physical address, in or out */
	long size;              /* byte count, in or out */
	void *buf;              /* user buffer */
	void *spare[4];         /* unused, zero */
};

/* Payload of IHK_DUMP_QUERY_MEM_AREAS, also the mcdump "physchunks" section. */
struct ihk_dump_mem_chunk {
	unsigned long addr;     /* physical, page aligned */
	unsigned long size;     /* bytes, multiple of the page size */
};

struct ihk_dump_mem_chunks {
	int nr_chunks;                            /* entries that follow */
	/* 4 bytes of padding, zero in practice */
	unsigned long kernel_base;                /* PA of MAP_KERNEL_START */
	unsigned long phys_start;                 /* arm64 memstart_addr, 0 on x86_64 */
	struct ihk_dump_mem_chunk chunks[];
};

/* ------------------------------------------------------------------------
 * IHK_OS_READ_KADDR: read McKernel memory without freezing it.
 * VIRT addresses go through the driver's vtop: the kernel image window
 * (MAP_KERNEL_START, MODULES_END) maps to kernel_base + offset; anything
 * else is translated as a Linux direct-map address.
 * ------------------------------------------------------------------------ */
#define IHK_READ_KADDR_VIRT      0
#define IHK_READ_KADDR_PHYS      1

/* x86_64 kernel image window used by the driver's vtop. */
#define IHK_X86_MAP_KERNEL_START 0xfffffffffe800000UL
#define IHK_X86_MODULES_END      0xffffffffff000000UL

struct ihk_read_kaddr_desc {
	unsigned long kaddr;    /* virtual or physical address */
	unsigned long len;      /* bytes */
	void *ubuf;             /* user buffer */
	int flags;              /* IHK_READ_KADDR_VIRT / _PHYS */
	/* 4 bytes of tail padding */
};

/* ------------------------------------------------------------------------
 * The freeze handshake in McKernel memory (shared with the QEMU stand-in).
 * ------------------------------------------------------------------------ */
#define IHK_NMI_MODE_DUMP        0  /* save panic_regs, publish the bitmap, park */
#define IHK_NMI_MODE_FREEZE      1  /* legacy freeze/thaw */
#define IHK_NMI_MODE_THAW        2
#define IHK_NMI_MODE_STOP        3  /* park until IHK_NMI_MODE_RESUME */
#define IHK_NMI_MODE_RESUME      4  /* leave the dump/stop loop */

#define IHK_DUMP_PAGE_SET_INCOMPLETE  0
#define IHK_DUMP_PAGE_SET_COMPLETED   1

/* ------------------------------------------------------------------------
 * Status values.
 * ------------------------------------------------------------------------ */
enum ihk_os_status {
	IHK_OS_STATUS_NOT_BOOTED = 0,
	IHK_OS_STATUS_LOADING    = 1,
	IHK_OS_STATUS_BOOTING    = 2,
	IHK_OS_STATUS_BOOTED     = 3,
	IHK_OS_STATUS_READY      = 4,
	IHK_OS_STATUS_RUNNING    = 5,
	IHK_OS_STATUS_FREEZING   = 6,
	IHK_OS_STATUS_FROZEN     = 7,
	IHK_OS_STATUS_SHUTDOWN   = 8,
	IHK_OS_STATUS_FAILED     = 9,   /* a CPU monitor says PANIC */
	IHK_OS_STATUS_HUNGUP     = 10,
};

/* One entry of IHK_OS_GET_CPU_USAGE. */
struct ihk_os_cpu_monitor {
	int status;             /* IHK_OS_MONITOR_* */
	int status_bak;
	unsigned long counter;
	unsigned long ocounter;
};

/* IHK_OS_GET_USAGE copies this header followed by 128 reserved words. */
struct ihk_os_monitor_head {
	unsigned long num_processors;
	unsigned long reserved[128];
};

/* ------------------------------------------------------------------------
 * Layout pins (LP64).
 * ------------------------------------------------------------------------ */
#if defined(__LP64__) || defined(_LP64)
#define IHK_ABI_ASSERT(cond, msg) _Static_assert(cond, msg)
IHK_ABI_ASSERT(sizeof(struct ihk_dump_args) == 64, "ihk_dump_args is 64 bytes");
IHK_ABI_ASSERT(offsetof(struct ihk_dump_args, start) == 8, "dump start at 8");
IHK_ABI_ASSERT(offsetof(struct ihk_dump_args, buf) == 24, "dump buf at 24");
IHK_ABI_ASSERT(sizeof(struct ihk_dump_mem_chunks) == 24, "chunks header is 24 bytes");
IHK_ABI_ASSERT(sizeof(struct ihk_dump_mem_chunk) == 16, "chunk entry is 16 bytes");
IHK_ABI_ASSERT(sizeof(struct ihk_read_kaddr_desc) == 32, "read_kaddr desc is 32 bytes");
IHK_ABI_ASSERT(offsetof(struct ihk_read_kaddr_desc, flags) == 24, "read_kaddr flags at 24");
IHK_ABI_ASSERT(sizeof(struct ihk_os_cpu_monitor) == 24, "cpu monitor is 24 bytes");
IHK_ABI_ASSERT(sizeof(struct ihk_os_monitor_head) == 1032, "os monitor is 1032 bytes");
#undef IHK_ABI_ASSERT
#endif

#endif /* MCKTOOLS_IHK_DEBUG_ABI_H */
