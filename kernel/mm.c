/* Physical memory of the chunks named by mem=, kernel heap, and the kernel address map:
 * image at MAP_KERNEL_START, direct map at linux_page_offset_base (heap pointers live there),
 * straight map at MAP_ST_START, fixed map at MAP_FIXED_START (handed out page after page). */
#include "mck.h"

struct mem_chunk mem_chunks[MAX_CHUNKS];
int nr_mem_chunks;

/* One bit per 4 KiB page of each chunk, 1 = allocated. 64 MiB of chunks at most. */
#define MAX_CHUNK_PAGES (16 * 1024)
static uint64_t chunk_used[MAX_CHUNKS][MAX_CHUNK_PAGES / 64];
static ihk_spinlock_t alloc_lock;

static struct page_table *init_pt;   /* kernel PGD (direct-map VA); static like McKernel's */
static unsigned long init_pt_phys;
static unsigned long fixed_next;     /* next free page of the fixed map */
static unsigned long *fixed_pt;      /* the fixed map's last-level table (VA) */

static int page_used(int c, unsigned long i) { return (chunk_used[c][i / 64] >> (i % 64)) & 1; }
static void page_set(int c, unsigned long i, int used)
{
	if (used) chunk_used[c][i / 64] |= 1UL << (i % 64);
	else chunk_used[c][i / 64] &= ~(1UL << (i % 64));
}

int pa_in_chunks(unsigned long pa)
{
	for (int c = 0; c < nr_mem_chunks; c++)
		if (pa >= mem_chunks[c].start && pa < mem_chunks[c].start + mem_chunks[c].size) return 1;
	return 0;
}

int page_is_free(unsigned long pa)
{
	for (int c = 0; c < nr_mem_chunks; c++)
		if (pa >= mem_chunks[c].start && pa < mem_chunks[c].start + mem_chunks[c].size)
			return !page_used(c, (pa - mem_chunks[c].start) >> PAGE_SHIFT);
	return 0;
}

/* Reserve the image (up to the next 2 MiB boundary) so the allocator never hands it out. */
void mm_early_init(void)
{
	unsigned long img_start = x86_kernel_phys_base;
	unsigned long img_end = ((unsigned long)_end - MAP_KERNEL_START + x86_kernel_phys_base + LARGE_PAGE_SIZE - 1) & ~(LARGE_PAGE_SIZE - 1);
	for (int c = 0; c < nr_mem_chunks; c++) {
		unsigned long n = mem_chunks[c].size >> PAGE_SHIFT;
		if (n > MAX_CHUNK_PAGES) fatal("chunk %d too large", c);
		for (unsigned long i = 0; i < n; i++) {
			unsigned long pa = mem_chunks[c].start + (i << PAGE_SHIFT);
			page_set(c, i, pa >= img_start && pa < img_end);
		}
	}
}

unsigned long alloc_pages_pa(unsigned long npages, unsigned long align)
{
	if (align < PAGE_SIZE) align = PAGE_SIZE;
	spin_lock(&alloc_lock);
	for (int c = 0; c < nr_mem_chunks; c++) {
		unsigned long n = mem_chunks[c].size >> PAGE_SHIFT;
		unsigned long base = mem_chunks[c].start;
		unsigned long i = ((base + align - 1) & ~(align - 1)) - base;
		for (i >>= PAGE_SHIFT; i + npages <= n; i += align >> PAGE_SHIFT) {
			unsigned long k;
			for (k = 0; k < npages && !page_used(c, i + k); k++)
				;
			if (k == npages) {
				for (k = 0; k < npages; k++) page_set(c, i + k, 1);
				spin_unlock(&alloc_lock);
				unsigned long pa = base + (i << PAGE_SHIFT);
				memset(phys_to_virt(pa), 0, npages << PAGE_SHIFT);
				return pa;
			}
		}
	}
	spin_unlock(&alloc_lock);
	fatal("out of memory (%lu pages)", npages);
}

void free_pages_pa(unsigned long pa, unsigned long npages)
{
	spin_lock(&alloc_lock);
	for (int c = 0; c < nr_mem_chunks; c++)
		if (pa >= mem_chunks[c].start && pa < mem_chunks[c].start + mem_chunks[c].size)
			for (unsigned long k = 0; k < npages; k++)
				page_set(c, ((pa - mem_chunks[c].start) >> PAGE_SHIFT) + k, 0);
	spin_unlock(&alloc_lock);
}

void *ihk_mc_alloc_pages(unsigned long npages) { return phys_to_virt(alloc_pages_pa(npages, PAGE_SIZE)); }

/* Bump allocator for small objects (never freed); large ones get their own pages. */
static ihk_spinlock_t kmalloc_lock;
static char *kmalloc_cur, *kmalloc_end;

void *kmalloc(size_t size)
{
	size = (size + 15) & ~15UL;
	if (size > 2048) return ihk_mc_alloc_pages(PAGE_ALIGN(size) >> PAGE_SHIFT);
	spin_lock(&kmalloc_lock);
	if (!kmalloc_cur || kmalloc_cur + size > kmalloc_end) {
		spin_unlock(&kmalloc_lock);
		char *p = ihk_mc_alloc_pages(4);
		spin_lock(&kmalloc_lock);
		kmalloc_cur = p;
		kmalloc_end = p + 4 * PAGE_SIZE;
	}
	void *r = kmalloc_cur;
	kmalloc_cur += size;
	spin_unlock(&kmalloc_lock);
	memset(r, 0, size);
	return r;
}

static unsigned long *table_next(unsigned long *table, int idx, unsigned long flags)
{
	if (!(table[idx] & PTE_P)) {
		unsigned long pa = alloc_pages_pa(1, PAGE_SIZE);
		table[idx] = pa | PTE_P | PTE_W | flags;
	}
	return phys_to_virt(table[idx] & PT_PHYSMASK);
}

int pt_map(struct page_table *pgd, unsigned long va, unsigned long pa, unsigned long flags, int large)
{
	unsigned long uflag = va < USER_END ? PTE_U : 0;
	unsigned long *l3 = table_next(pgd->entry, (va >> 39) & 511, uflag);
	unsigned long *l2 = table_next(l3, (va >> 30) & 511, uflag);
	if (large) {
		l2[(va >> 21) & 511] = pa | flags | PTE_PS;
		return 0;
	}
	unsigned long *l1 = table_next(l2, (va >> 21) & 511, uflag);
	l1[(va >> 12) & 511] = pa | flags;
	return 0;
}

/* Returns the PA for va (0 if unmapped); *size gets the page size, *entry the raw entry. */
unsigned long pt_lookup(struct page_table *pgd, unsigned long va, unsigned long *size, unsigned long *entry)
{
	unsigned long *t = pgd->entry;
	for (int shift = 39; shift >= 12; shift -= 9) {
		unsigned long e = t[(va >> shift) & 511];
		if (!(e & PTE_P)) return 0;
		if (shift == 12 || ((shift == 21 || shift == 30) && (e & PTE_PS))) {
			unsigned long psize = 1UL << shift;
			if (size) *size = psize;
			if (entry) *entry = e;
			return (e & PT_PHYSMASK & ~(psize - 1)) + (va & (psize - 1));
		}
		t = phys_to_virt(e & PT_PHYSMASK);
	}
	return 0;
}

void pt_unmap(struct page_table *pgd, unsigned long va, unsigned long *pa_out, int *large_out)
{
	unsigned long *t = pgd->entry;
	*pa_out = 0;
	for (int shift = 39; shift >= 12; shift -= 9) {
		unsigned long *e = &t[(va >> shift) & 511];
		if (!(*e & PTE_P)) return;
		if (shift == 12 || (shift == 21 && (*e & PTE_PS))) {
			*pa_out = *e & PT_PHYSMASK;
			*large_out = shift == 21;
			*e = 0;
			__asm__ volatile("invlpg (%0)" ::"r"(va) : "memory");
			return;
		}
		t = phys_to_virt(*e & PT_PHYSMASK);
	}
}

unsigned long init_pt_symbol_addr(void) { return (unsigned long)&init_pt; }
unsigned long init_pt_pa(void) { return init_pt_phys; }
struct page_table *init_pt_va(void) { return init_pt; }

unsigned long virt_to_phys(const void *p)
{
	unsigned long va = (unsigned long)p;
	if (va >= MAP_KERNEL_START) return va - MAP_KERNEL_START + x86_kernel_phys_base;
	if (va >= linux_page_offset_base) return va - linux_page_offset_base;
	if (va >= MAP_FIXED_START && va < MAP_FIXED_START + LARGE_PAGE_SIZE)
		return pt_lookup(init_pt, va, NULL, NULL);  /* fixed map is not linear */
	if (va >= MAP_ST_START) return va - MAP_ST_START;
	return pt_lookup(init_pt, va, NULL, NULL);
}

/* Hands out fixed-map VAs one page after another, as McKernel's map_fixed_area. */
void *map_fixed_area(unsigned long pa, unsigned long size, int uncached)
{
	unsigned long off = pa & (PAGE_SIZE - 1);
	unsigned long n = PAGE_ALIGN(size + off) >> PAGE_SHIFT;
	unsigned long va = MAP_FIXED_START + (fixed_next << PAGE_SHIFT);
	for (unsigned long i = 0; i < n; i++)
		fixed_pt[fixed_next + i] = ((pa & ~(PAGE_SIZE - 1)) + (i << PAGE_SHIFT)) | PTE_P | PTE_W | PTE_G | PTE_NX |
					   (uncached ? PTE_PCD | PTE_PWT : 0);
	fixed_next += n;
	return (void *)(va + off);
}

/* Builds init_pt while the boot tables (identity 1 GiB) are still active: during this
 * window phys_to_virt must be the identity, so linux_page_offset_base is set afterwards. */
void mm_init_pt(void)
{
	unsigned long lpob = linux_page_offset_base;
	linux_page_offset_base = 0;

	init_pt_phys = alloc_pages_pa(1, PAGE_SIZE);
	init_pt = phys_to_virt(init_pt_phys);

	/* direct map of PA 0..1 GiB */
	for (unsigned long pa = 0; pa < (1UL << 30); pa += LARGE_PAGE_SIZE)
		pt_map(init_pt, lpob + pa, pa, PTE_P | PTE_W | PTE_G | PTE_NX, 1);

	/* straight map of [start, end) of the chunks */
	unsigned long s = ~0UL, e = 0;
	for (int c = 0; c < nr_mem_chunks; c++) {
		if (mem_chunks[c].start < s) s = mem_chunks[c].start;
		if (mem_chunks[c].start + mem_chunks[c].size > e) e = mem_chunks[c].start + mem_chunks[c].size;
	}
	for (unsigned long pa = s & ~(LARGE_PAGE_SIZE - 1); pa < e; pa += LARGE_PAGE_SIZE)
		pt_map(init_pt, MAP_ST_START + pa, pa, PTE_P | PTE_W | PTE_G | PTE_NX, 1);

	/* fixed map: one last-level table, filled by map_fixed_area */
	pt_map(init_pt, MAP_FIXED_START, 0, 0, 0);
	unsigned long *l3 = phys_to_virt(init_pt->entry[(MAP_FIXED_START >> 39) & 511] & PT_PHYSMASK);
	unsigned long *l2 = phys_to_virt(l3[(MAP_FIXED_START >> 30) & 511] & PT_PHYSMASK);
	unsigned long fixed_pt_pa = l2[(MAP_FIXED_START >> 21) & 511] & PT_PHYSMASK;

	/* image: [MAP_KERNEL_START, round_up(_end, 2M) + 2M) -> x86_kernel_phys_base */
	unsigned long img_end = (((unsigned long)_end + LARGE_PAGE_SIZE - 1) & ~(LARGE_PAGE_SIZE - 1)) + LARGE_PAGE_SIZE;
	for (unsigned long va = MAP_KERNEL_START; va < img_end; va += LARGE_PAGE_SIZE)
		pt_map(init_pt, va, va - MAP_KERNEL_START + x86_kernel_phys_base, PTE_P | PTE_W | PTE_G, 1);

	/* Pre-create every upper-half top-level entry a process PGD copies (256..511). */
	linux_page_offset_base = lpob;
	init_pt = phys_to_virt(init_pt_phys);
	fixed_pt = phys_to_virt(fixed_pt_pa);
	load_cr3(init_pt_phys);
}

/* New process PGD: user half empty, entries 256..511 copied from init_pt. */
struct page_table *pt_create(void)
{
	struct page_table *pgd = ihk_mc_alloc_pages(1);
	for (int i = 256; i < 512; i++) pgd->entry[i] = init_pt->entry[i];
	return pgd;
}
