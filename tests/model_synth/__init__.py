"""A synthetic McKernel-shaped image + dump for the model and mcinspect tests.

Everything the model reads lives in one statically-initialised C file that
this package generates from the SCENARIO below, compiles with gcc and links
at MAP_KERNEL_START with GNU ld (build-id in a loaded segment).  The "dump"
is the image's loaded bytes placed at KBASE, written as an mcdump.  Kernel
objects are reached through Linux direct-map addresses (as on McKernel),
kmsg_buf is a fixed-map address only `init_pt` explains, and process A has a
real 4-level page table with 4K and 2M pages.

The expected answers are the SCENARIO literals, never mcktools output.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from dataclasses import dataclass

MAP_KERNEL_START = 0xFFFFFFFFFE800000
KBASE = 0x1200000
LPOB = 0xFFFF888000000000
MAP_FIXED_START = 0xFFFF860000000000
DMOFF = (KBASE + LPOB - MAP_KERNEL_START) % (1 << 64)

# --- the scenario: the oracle ---
PROCESSES = {
    # pid: (ppid, argv, status, cmdline present)
    1: (0, ["/sbin/init"], "PS_RUNNING"),
    100: (1, ["/bin/app", "one", "two"], "PS_RUNNING"),
    101: (100, ["/usr/bin/worker"], "PS_INTERRUPTIBLE"),
}
# tid: (pid, cpu, status, on runq)
THREADS = {
    100: (100, 0, "PS_RUNNING", True),
    102: (100, 1, "PS_INTERRUPTIBLE", True),
    101: (101, 1, "PS_STOPPED", True),
    103: (101, 0, "PS_ZOMBIE", False),
}
CPUS = {0: ("CPU_STATUS_RUNNING", 100, [100]), 1: ("CPU_STATUS_IDLE", None, [102, 101])}
# process 100's vm ranges: (start, end, flag names, path, expected label)
VM_RANGES = [
    (0x400000, 0x402000, ["VR_PROT_READ", "VR_PROT_EXEC", "VR_PRIVATE"], "/bin/app", "/bin/app"),
    (0x600000, 0x800000, ["VR_PROT_READ", "VR_PROT_WRITE", "VR_PRIVATE"], None, "[heap]"),
    (0x7FFF0000, 0x7FFF2000, ["VR_PROT_READ", "VR_PROT_EXEC"], None, "[vdso]"),
    (0x7FFFFFFDE000, 0x7FFFFFFFF000, ["VR_PROT_READ", "VR_PROT_WRITE", "VR_STACK", "VR_PRIVATE"], None, "[stack]"),
]
VR = {"VR_STACK": 0x1, "VR_PRIVATE": 0x2000, "VR_PROT_READ": 0x10000, "VR_PROT_WRITE": 0x20000,
      "VR_PROT_EXEC": 0x40000}
PS = {"PS_RUNNING": 1, "PS_INTERRUPTIBLE": 2, "PS_UNINTERRUPTIBLE": 4, "PS_ZOMBIE": 8,
      "PS_EXITED": 0x10, "PS_STOPPED": 0x20}
KMSG_TEXT = "[  0]: boot ok\n[  1]: cpu 1 up\n[  0]: the ring wrapped around here\n[  1]: last line\n"
KMSG_LEN = 96
KMSG_HEAD = 40
# user mappings of pid 100: va -> (symbol of backing page | 2M at KBASE, size, pte flag bits)
USER_PAGE0_TEXT = b"user page zero data"


def vr(names):
    v = 0
    for n in names:
        v |= VR[n]
    return v


def kmsg_ring() -> tuple[bytes, int, int]:
    """(str bytes, head, tail) holding KMSG_TEXT wrapped around at KMSG_HEAD."""
    t = KMSG_TEXT.encode()
    ring = bytearray(KMSG_LEN)
    first = KMSG_LEN - KMSG_HEAD
    ring[KMSG_HEAD:] = t[:first]
    rest = t[first:]
    ring[:len(rest)] = rest
    return bytes(ring), KMSG_HEAD, len(rest)


def c_source(variant: str = "") -> str:
    L = []
    a = L.append
    a(r'''
#define NULL ((void *)0)
#define DMOFF %#xUL
#define DM(x) ((void *)((char *)&(x) + DMOFF))
#define HASH_SIZE 73
struct list_head { struct list_head *next, *prev; };
struct rb_node { unsigned long __rb_parent_color; struct rb_node *rb_right; struct rb_node *rb_left; };
struct rb_root { struct rb_node *rb_node; };
enum process_status { PS_RUNNING = 1, PS_INTERRUPTIBLE = 2, PS_UNINTERRUPTIBLE = 4, PS_ZOMBIE = 8,
                      PS_EXITED = 0x10, PS_STOPPED = 0x20, PS_TRACED = 0x40 };
enum cpu_status { CPU_STATUS_DISABLE, CPU_STATUS_IDLE, CPU_STATUS_RUNNING, CPU_STATUS_RESERVED };
enum vr_flags { VR_STACK = 1, VR_PRIVATE = 0x2000, VR_PROT_READ = 0x10000, VR_PROT_WRITE = 0x20000,
                VR_PROT_EXEC = 0x40000 };
enum process_status ps_dummy; enum cpu_status cs_dummy; enum vr_flags vr_dummy;
struct x86_kregs { unsigned long rsp, rbp, rbx, rsi, rdi, r12, r13, r14, r15, rflags, rsp0; };
typedef struct x86_kregs ihk_mc_kernel_context_t;
struct memobj { void *ops; unsigned int flags, status; unsigned long size; long refcnt; void *pages;
                long nr_pages; char *path; };
struct vm_range { struct rb_node vm_rb_node; unsigned long start, end, flag, straight_start;
                  struct memobj *memobj; long objoff; int pgshift; void *private_data; };
struct page_table { unsigned long entry[512]; };
struct address_space { struct page_table *page_table; int opt; };
struct vm_regions { unsigned long vm_start, vm_end, text_start, text_end, data_start, data_end,
  brk_start, brk_end, brk_end_allocated, map_start, map_end, stack_start, stack_end, user_start, user_end; };
struct process;
struct thread;
struct process_vm { struct address_space *address_space; struct rb_root vm_range_tree;
  struct vm_regions region; struct process *proc; void *vdso_addr; void *vvar_addr; };
struct process { struct list_head hash_list; long pad0[3]; struct process_vm *vm;
  struct list_head threads_list; struct thread *main_thread; struct process *parent;
  struct process *ppid_parent; int status; int pid;
  struct { unsigned int flag_a : 3; int flag_b : 5; };
  char *saved_cmdline; long saved_cmdline_len; };
typedef struct process process_t;
struct thread { struct list_head hash_list; int cpu_id; int tid; char pthread_routine[40]; int status;
  struct process_vm *vm; ihk_mc_kernel_context_t ctx; void *uctx; process_t *proc;
  struct list_head siblings_list; struct list_head sched_list; };
struct process_hash { struct list_head list[HASH_SIZE]; };
struct thread_hash { struct list_head list[HASH_SIZE]; };
struct resource_set { struct list_head list; char *path; struct process_hash *process_hash;
  struct thread_hash *thread_hash; };
struct cpu_local_var { long free_list[8]; struct thread idle; struct process idle_proc;
  struct thread *current; struct list_head runq; unsigned long runq_len;
  struct resource_set *resource_set; int status; } __attribute__((aligned(64)));
struct ihk_kmsg_buf { int lock; int tail; int len; int head; char pad[4096 - 16]; char str[%d]; };
extern struct cpu_local_var clv_array[2];
extern struct thread th100, th101, th102, th103;
extern struct process proc1, proc100, proc101;
extern struct process_hash phash;
extern struct thread_hash thash;
extern struct resource_set rset;
extern struct process_vm vm100;
extern struct address_space as100;
extern struct vm_range vr0, vr1, vr2, vr3;
extern unsigned long pgd_init[512], pud_kimg[512], pmd_kimg[512], pud_fixed[512], pmd_fixed[512], pte_fixed[512];
extern unsigned long pgd100[512], pud100[512], pmd100[512], pte100[512];
extern struct ihk_kmsg_buf kmsg_ring;
extern char user_page0[4096], user_page1[4096];
void _start(void) { }
''' % (DMOFF, KMSG_LEN))
    # page-table helpers: PA(x) of a static object = VA - MAP_KERNEL_START + KBASE
    pa_off = (KBASE - MAP_KERNEL_START) % (1 << 64)
    a(f"#define PA(x) ((unsigned long)&(x) + {pa_off:#x}UL)\n")
    a('#define ALIGNED __attribute__((aligned(4096)))\n')
    ncpu = 2
    # --- link helpers ---
    def lh(next_, prev_):
        return "{ %s, %s }" % (next_, prev_)

    # run queues
    runq = {c: CPUS[c][2] for c in CPUS}
    # sched_list links per thread
    sched = {}
    for c, tids in runq.items():
        head = f"DM(clv_array[{c}].runq)"
        nodes = [f"DM(th{t}.sched_list)" for t in tids]
        for i, t in enumerate(tids):
            sched[t] = lh(nodes[i + 1] if i + 1 < len(nodes) else head, nodes[i - 1] if i > 0 else head)
        runq[c] = lh(nodes[0] if nodes else head, nodes[-1] if nodes else head)
    # thread hash buckets (tid % 73) and process hash buckets (pid % 73)
    def hashes(name, kind, keys):
        buckets = {}
        for k in keys:
            buckets.setdefault(k % 73, []).append(k)
        entries = []
        links = {}
        for b in range(73):
            head = f"DM({name}.list[{b}])"
            ks = buckets.get(b, [])
            nodes = [f"DM({kind}{k}.hash_list)" for k in ks]
            for i, k in enumerate(ks):
                links[k] = lh(nodes[i + 1] if i + 1 < len(nodes) else head, nodes[i - 1] if i > 0 else head)
            entries.append(lh(nodes[0] if nodes else head, nodes[-1] if nodes else head))
        return entries, links
    th_entries, th_links = hashes("thash", "th", THREADS)
    pr_entries, pr_links = hashes("phash", "proc", PROCESSES)
    a("struct thread_hash thash = { { %s } };\n" % ", ".join(th_entries))
    a("struct process_hash phash = { { %s } };\n" % ", ".join(pr_entries))
    a("struct resource_set rset = { { DM(rset.list), DM(rset.list) }, \"/\", DM(phash), DM(thash) };\n")
    # siblings (threads_list of each process)
    sib = {}
    plist = {}
    for pid in PROCESSES:
        tids = [t for t, v in THREADS.items() if v[0] == pid]
        head = f"DM(proc{pid}.threads_list)"
        nodes = [f"DM(th{t}.siblings_list)" for t in tids]
        for i, t in enumerate(tids):
            sib[t] = lh(nodes[i + 1] if i + 1 < len(nodes) else head, nodes[i - 1] if i > 0 else head)
        plist[pid] = lh(nodes[0] if nodes else head, nodes[-1] if nodes else head)
    # processes
    for pid, (ppid, argv, status) in PROCESSES.items():
        cmd = "\\0".join(argv) + "\\0"
        n = sum(len(x) + 1 for x in argv)
        a(f'char cmdline{pid}[] = "{cmd}";\n')
        vm = "DM(vm100)" if pid == 100 else "NULL"
        parent = f"DM(proc{ppid})" if ppid else "NULL"
        a(f"struct process proc{pid} = {{ .hash_list = {pr_links[pid]}, .vm = {vm}, "
          f".threads_list = {plist[pid]}, .ppid_parent = {parent}, .parent = {parent}, "
          f".status = {status}, .pid = {pid}, .flag_a = 5, .flag_b = -3, "
          f".saved_cmdline = DM(cmdline{pid}), .saved_cmdline_len = {n} }};\n")
    # threads
    for tid, (pid, cpu, status, onq) in THREADS.items():
        sl = sched[tid] if onq else lh(f"DM(th{tid}.sched_list)", f"DM(th{tid}.sched_list)")
        a(f"struct thread th{tid} = {{ .hash_list = {th_links[tid]}, .cpu_id = {cpu}, .tid = {tid}, "
          f".status = {status}, .proc = DM(proc{pid}), .siblings_list = {sib[tid]}, "
          f".sched_list = {sl}, .ctx = {{ .rsp = {0x1000 + tid}, .rbp = {0x2000 + tid} }} }};\n")
    # cpus
    cl = []
    for c in range(ncpu):
        status, cur, _ = CPUS[c]
        cur_s = f"DM(th{cur})" if cur else f"DM(clv_array[{c}].idle)"
        cl.append(f"[{c}] = {{ .idle = {{ .tid = {c}, .cpu_id = {c}, .status = PS_RUNNING, "
                  f".proc = DM(clv_array[{c}].idle_proc), "
                  f".sched_list = {{ DM(clv_array[{c}].idle.sched_list), DM(clv_array[{c}].idle.sched_list) }} }}, "
                  f".idle_proc = {{ .pid = 0, .status = PS_RUNNING, .threads_list = "
                  f"{{ DM(clv_array[{c}].idle_proc.threads_list), DM(clv_array[{c}].idle_proc.threads_list) }} }}, "
                  f".current = {cur_s}, .runq = {runq[c]}, .runq_len = {len(CPUS[c][2])}, "
                  f".resource_set = DM(rset), .status = {status} }}")
    a("struct cpu_local_var clv_array[2] = { %s };\n" % ",\n".join(cl))
    # vm ranges: tree with vr1 at the root, vr0 left, vr2 right, vr3 right of vr2
    kids = {1: ("DM(vr0)", "DM(vr2)"), 0: ("NULL", "NULL"), 2: ("NULL", "DM(vr3)"), 3: ("NULL", "NULL")}
    a('char path_app[] = "/bin/app";\n')
    a("struct memobj mo_app = { .path = DM(path_app) };\n")
    for i, (s, e, flags, path, _lab) in enumerate(VM_RANGES):
        left, right = kids[i]
        mo = "DM(mo_app)" if path else "NULL"
        a(f"struct vm_range vr{i} = {{ .vm_rb_node = {{ 0, (struct rb_node *){right}, (struct rb_node *){left} }}, "
          f".start = {s:#x}UL, .end = {e:#x}UL, .flag = {vr(flags):#x}UL, .memobj = {mo} }};\n")
    a("struct address_space as100 = { .page_table = DM(pgd100) };\n")
    a("struct process_vm vm100 = { .address_space = DM(as100), .vm_range_tree = { (struct rb_node *)DM(vr1) }, "
      ".region = { .brk_start = 0x600000, .brk_end = 0x700000, .brk_end_allocated = 0x800000 }, "
      ".proc = DM(proc100), .vdso_addr = (void *)0x7FFF0000, .vvar_addr = (void *)0x7FFEE000 };\n")
    # kmsg ring
    ring, head, tail = kmsg_ring()
    a("struct ihk_kmsg_buf kmsg_ring ALIGNED = { .tail = %d, .len = %d, .head = %d, .str = { %s } };\n"
      % (tail, KMSG_LEN, head, ", ".join(str(b) for b in ring)))
    a('char user_page0[4096] ALIGNED = "%s";\n' % USER_PAGE0_TEXT.decode())
    a('char user_page1[4096] ALIGNED = "user page one";\n')
    # page tables. init_pt: image 2M pages (PMD index of MAP_KERNEL_START) + one fixed-map page
    def idx(va, shift):
        return (va >> shift) & 511
    k4, k3, k2 = idx(MAP_KERNEL_START, 39), idx(MAP_KERNEL_START, 30), idx(MAP_KERNEL_START, 21)
    f4, f3, f2, f1 = (idx(MAP_FIXED_START, s) for s in (39, 30, 21, 12))
    a(f"unsigned long pmd_kimg[512] ALIGNED = {{ [{k2}] = {KBASE:#x}UL | 0x183, [{k2 + 1}] = {KBASE + 0x200000:#x}UL | 0x183 }};\n")
    a(f"unsigned long pud_kimg[512] ALIGNED = {{ [{k3}] = PA(pmd_kimg) + 3 }};\n")
    a(f"unsigned long pte_fixed[512] ALIGNED = {{ [{f1}] = PA(kmsg_ring) + 0x103, [{f1 + 1}] = PA(kmsg_ring) + 0x1103 }};\n")
    a(f"unsigned long pmd_fixed[512] ALIGNED = {{ [{f2}] = PA(pte_fixed) + 3 }};\n")
    a(f"unsigned long pud_fixed[512] ALIGNED = {{ [{f3}] = PA(pmd_fixed) + 3 }};\n")
    a(f"unsigned long pgd_init[512] ALIGNED = {{ [{k4}] = PA(pud_kimg) + 3, [{f4}] = PA(pud_fixed) + 3 }};\n")
    # pid 100: 0x400000 -> user_page0 (RW|USER), 0x401000 -> user_page1 (USER|NX), 0x600000 -> 2M at KBASE
    a("unsigned long pte100[512] ALIGNED = { [0] = PA(user_page0) + 0x67, "
      "[1] = PA(user_page1) + 0x25 + 0x8000000000000000UL };\n")
    a(f"unsigned long pmd100[512] ALIGNED = {{ [2] = PA(pte100) + 7, [3] = {KBASE:#x}UL | 0xe7 }};\n")
    a("unsigned long pud100[512] ALIGNED = { [0] = PA(pmd100) + 7 };\n")
    a(f"unsigned long pgd100[512] ALIGNED = {{ [0] = PA(pud100) + 7, [{k4}] = PA(pud_kimg) + 3, "
      f"[{f4}] = PA(pud_fixed) + 3 }};\n")
    # the debug ABI globals
    a(f"""
struct cpu_local_var *clv = DM(clv_array[0]);
int num_processors = 2;
int *mck_num_processors = &num_processors;
unsigned long linux_page_offset_base = {LPOB:#x}UL;
unsigned long x86_kernel_phys_base = {KBASE:#x}UL;
static unsigned long *init_pt = DM(pgd_init);
unsigned long *init_pt_export(void) {{ return init_pt; }}
struct ihk_kmsg_buf *kmsg_buf = (struct ihk_kmsg_buf *){MAP_FIXED_START + f1 * 4096 if False else MAP_FIXED_START:#x}UL;
unsigned long debug_constants[12] = {{
  sizeof(struct cpu_local_var), __builtin_offsetof(struct cpu_local_var, current),
  __builtin_offsetof(struct cpu_local_var, runq), __builtin_offsetof(struct cpu_local_var, status),
  __builtin_offsetof(struct cpu_local_var, idle), __builtin_offsetof(struct thread, ctx),
  __builtin_offsetof(struct thread, sched_list), __builtin_offsetof(struct thread, proc),
  __builtin_offsetof(struct thread, status), __builtin_offsetof(struct process, pid),
  __builtin_offsetof(struct thread, tid), (unsigned long)-1 }};
const char variant[] = "{variant}";
""")
    return "".join(L)


LDS = """
SECTIONS {
  . = 0xfffffffffe801000;
  _head = .;
  .text : { *(.text*) }
  .note.gnu.build-id : { *(.note.gnu.build-id) }
  .rodata : { *(.rodata*) }
  . = ALIGN(4096);
  .data : { *(.data*) *(.bss*) *(COMMON) }
  _end = .;
  /DISCARD/ : { *(.comment) *(.note.GNU-stack) *(.eh_frame) }
}
"""


@dataclass
class Built:
    img: str
    dump: str
    dump24: str
    data: bytes            # loaded image bytes from MAP_KERNEL_START
    symbols: dict


def build(workdir: str, variant: str = "") -> Built:
    """Compile, link and dump the synthetic kernel into `workdir`."""
    os.makedirs(workdir, exist_ok=True)
    src = os.path.join(workdir, "synth.c")
    obj = os.path.join(workdir, "synth.o")
    img = os.path.join(workdir, "mckernel.img")
    lds = os.path.join(workdir, "synth.lds")
    with open(src, "w") as f:
        f.write(c_source(variant))
    with open(lds, "w") as f:
        f.write(LDS)
    subprocess.run(["gcc", "-c", "-g", "-O0", "-gdwarf-5", "-ffreestanding", "-fno-pic", "-fno-pie",
                    "-mcmodel=kernel", "-fno-asynchronous-unwind-tables", "-w", "-o", obj, src], check=True)
    subprocess.run(["ld", "-static", "-nostdlib", "--build-id=sha1", "-T", lds, "-o", img, obj], check=True)
    data, symbols = loaded_bytes(img)
    dump = os.path.join(workdir, "level0.mcdump")
    dump24 = os.path.join(workdir, "level24.mcdump")
    from mcktools.formats.mcdump import write_mcdump
    size = (len(data) + 0xFFF) & ~0xFFF
    data = data.ljust(size, b"\0")

    def reader(base):
        return lambda off, n: data[base + off: base + off + n]
    write_mcdump(dump, [(KBASE, size, reader(0))], kernel_base=KBASE, hostname="synth", date="synthetic")
    # level 24 stand-in: leave out the two user 4K pages of pid 100
    holes = sorted(symbols[s] - MAP_KERNEL_START for s in ("user_page0", "user_page1"))
    chunks, pos = [], 0
    for h in holes:
        if h > pos:
            chunks.append((KBASE + pos, h - pos, reader(pos)))
        pos = h + 4096
    chunks.append((KBASE + pos, size - pos, reader(pos)))
    write_mcdump(dump24, chunks, kernel_base=KBASE, hostname="synth", date="synthetic")
    return Built(img, dump, dump24, data, symbols)


def loaded_bytes(img: str) -> tuple[bytes, dict]:
    """Image bytes by VA from MAP_KERNEL_START (zero-filled gaps) and symbols, read with readelf/nm-free ELF parsing."""
    from elftools.elf.elffile import ELFFile
    with open(img, "rb") as f:
        elf = ELFFile(f)
        segs = [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
        end = max(s["p_vaddr"] + s["p_memsz"] for s in segs)
        buf = bytearray(end - MAP_KERNEL_START)
        for s in segs:
            off = s["p_vaddr"] - MAP_KERNEL_START
            buf[off:off + s["p_filesz"]] = s.data()
        syms = {}
        for sym in elf.get_section_by_name(".symtab").iter_symbols():
            if sym.name:
                syms[sym.name] = sym["st_value"]
    return bytes(buf), syms


def have_toolchain() -> bool:
    return shutil.which("gcc") is not None and shutil.which("ld") is not None
