"""mcdump → ELF ET_CORE of McKernel's kernel address space, for `gdb IMG CORE`
and drgn.

PT_LOAD segments sit at McKernel kernel virtual addresses with p_paddr the
physical address: the image map (MAP_KERNEL_START → kernel_base), the Linux
direct map McKernel's heap pointers use (`linux_page_offset_base` + PA), the
straight map (MAP_ST_START + PA), and the fixed-map pages `init_pt` maps into
dumped memory.  Each chunk's bytes are stored once; the segments of the
different maps point at the same file bytes.

Notes: one NT_PRSTATUS per CPU from its `panic_regs` (the panicking CPU
first, so gdb selects it), optionally one per switched-out thread from its
saved `ctx`, and a MCKTOOLS note saying where the core came from.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Optional

from ..errors import DebugInfoError, McktoolsError, UnreadableAddress
from ..formats import elf64
from ..memory.translate import (
    LINUX_PAGE_OFFSET_DEFAULT, MAP_FIXED_START, MAP_ST_START, MAP_VMAP_START, iter_mappings,
)
from ..model.registers import core_cpu_registers, panicked_cpus
from .detect import MCK_NOTE_NAME
from ..formats.safe_output import atomic_output
from .output import Progress

PAGE = 4096
NT_PRSTATUS = 1
PF_X, PF_W, PF_R = 1, 2, 4
#: struct elf_prstatus on x86_64: 112 bytes of header, 27 x u64 user_regs_struct, pr_fpvalid + pad
PRSTATUS_HEAD = struct.Struct("<iiihxxQQiiii32x32x")
PRSTATUS_SIZE = 336
USER_REGS = ("r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx",
             "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base",
             "ds", "es", "fs", "gs")
COPY_BLOCK = 1 << 20
SIGSEGV = 11


@dataclass
class Segment:
    vaddr: int
    paddr: int
    size: int
    flags: int
    region: str
    offset: int = 0


@dataclass
class PrStatus:
    pid: int
    what: str
    regs: dict


@dataclass
class CoreResult:
    segments: list = field(default_factory=list)
    prstatus: list = field(default_factory=list)
    warnings: list = field(default_factory=list)


def prstatus_desc(pid: int, regs: dict, signo: int = 0) -> bytes:
    head = PRSTATUS_HEAD.pack(signo, 0, 0, signo, 0, 0, pid, 0, pid, pid)
    body = struct.pack("<27Q", *(regs.get(r, 0) & 0xFFFFFFFFFFFFFFFF for r in USER_REGS))
    out = head + body + bytes(8)
    assert len(out) == PRSTATUS_SIZE
    return out


def note_bytes(name: str, ntype: int, desc: bytes) -> bytes:
    nb = name.encode() + b"\0"
    return (struct.pack("<III", len(nb), len(desc), ntype) + nb + bytes(-len(nb) % 4)
            + desc + bytes(-len(desc) % 4))


def thread_registers(t: Any, warnings: list) -> list:
    """(tid, regs) of every thread that is not running on a CPU, from its saved ctx."""
    try:
        rip = t.symbol("ihk_mc_switch_context")
    except DebugInfoError:
        rip = 0
    out = []
    for info in t.threads():
        if info.row.current:
            continue
        try:
            ctx = info.obj.ctx
            regs = {r: int(getattr(ctx, r)) for r in ("rsp", "rbp", "rbx", "r12", "r13", "r14", "r15")}
            regs["eflags"] = int(ctx.rflags) & 0xFFFFFFFF
        except (UnreadableAddress, DebugInfoError) as exc:
            warnings.append(f"thread {info.row.tid}: saved context unreadable ({exc})")
            continue
        regs["rip"] = rip
        out.append((info.row.tid, info.row.idle, regs))
    return out


def _chunk_of(chunks: list, pa: int) -> Optional[tuple]:
    for c in chunks:
        if c[0] <= pa < c[0] + c[1]:
            return c
    return None


def plan_segments(t: Any, chunks: list, warnings: list) -> list:
    """Segments of every kernel map over the dumped `chunks` ((addr, size) list)."""
    km = t.kmap
    segs = []
    img_lo, img_hi = km.kernel_base, km.kernel_base + (km.image_end - km.map_kernel_start)
    for addr, size in chunks:
        lo, hi = max(addr, img_lo), min(addr + size, img_hi)
        if lo < hi:
            segs.append(Segment(km.map_kernel_start + (lo - img_lo), lo, hi - lo, PF_R | PF_W | PF_X, "image"))
    if km.linux_page_offset_base:
        for addr, size in chunks:
            segs.append(Segment(km.linux_page_offset_base + addr, addr, size, PF_R | PF_W, "direct"))
    for addr, size in chunks:
        if MAP_ST_START + addr + size <= MAP_VMAP_START:
            segs.append(Segment(MAP_ST_START + addr, addr, size, PF_R | PF_W, "straight"))
    if km.init_pt_pa is not None:
        end = km.linux_page_offset_base or LINUX_PAGE_OFFSET_DEFAULT
        run: Optional[Segment] = None
        try:
            for tr in iter_mappings(t.read_phys, km.init_pt_pa, MAP_FIXED_START, end):
                c = _chunk_of(chunks, tr.pa)
                if c is None or tr.pa + tr.page_size > c[0] + c[1]:
                    continue          # Linux memory (boot_param, kmsg): not in an mcdump
                if run and run.vaddr + run.size == tr.va and run.paddr + run.size == tr.pa \
                        and _chunk_of(chunks, run.paddr) == c:
                    run.size += tr.page_size
                    continue
                run = Segment(tr.va, tr.pa, tr.page_size, PF_R | PF_W, "fixed")
                segs.append(run)
        except UnreadableAddress as exc:
            warnings.append(f"fixed map incomplete: init_pt is not fully in the dump ({exc})")
    return segs


def write_core(dump: str, image: str, out: str, *, threads: bool = False, force: bool = False,
               progress: Optional[Progress] = None) -> CoreResult:
    from ..model.target import Target

    t = Target.open(image, dump, force=force)
    try:
        return _write(t, out, threads=threads, force=force, progress=progress)
    finally:
        t.close()


def _write(t: Any, out: str, *, threads: bool, force: bool, progress: Optional[Progress]) -> CoreResult:
    res = CoreResult(warnings=list(t.warnings))
    src = t.source
    dump = getattr(src, "dump", None)
    if dump is not None and hasattr(dump, "chunks"):
        chunks = sorted((c.addr, c.size) for c in dump.chunks)
    else:
        chunks = [(r.start, r.size) for r in src.ranges()]
    if not chunks:
        raise McktoolsError(f"{t.description} holds no memory")

    regs = core_cpu_registers(t, res.warnings)
    panicked = panicked_cpus(t)
    first = panicked[0] if panicked else None
    regs.sort(key=lambda cr: (cr[0] != first, cr[0]))
    used = set()
    for cpu, r in regs:
        pid = cpu + 1
        used.add(pid)
        res.prstatus.append(PrStatus(pid, f"CPU {cpu}", r))
    if threads:
        for tid, idle, r in thread_registers(t, res.warnings):
            pid = tid if tid > 0 and tid not in used else 1_000_000 + len(res.prstatus)
            used.add(pid)
            res.prstatus.append(PrStatus(pid, f"{'idle ' if idle else ''}thread {tid}", r))
    notes = b"".join(note_bytes("CORE", NT_PRSTATUS, prstatus_desc(p.pid, p.regs, SIGSEGV if i == 0 else 0))
                     for i, p in enumerate(res.prstatus))
    info = (f"mcktools mcdump to-elf\nkernel_base={t.kernel_base:#x}\nbuild_id={t.build_id_hex}\n"
            f"source={t.description}\ncpus=" + ",".join(p.what for p in res.prstatus) + "\n").encode()
    notes += note_bytes(MCK_NOTE_NAME, 1, info)

    res.segments = plan_segments(t, chunks, res.warnings)
    nphdr = 1 + len(res.segments)
    ext = nphdr >= elf64.PN_XNUM
    data_start = elf64.align_up(elf64.EHDR_SIZE + nphdr * elf64.PHDR_SIZE + len(notes)
                                + (elf64.SHDR_SIZE if ext else 0), PAGE)
    chunk_off = {}
    pos = data_start
    for addr, size in chunks:
        chunk_off[addr] = pos
        pos = elf64.align_up(pos + size, PAGE)
    for s in res.segments:
        c = _chunk_of(chunks, s.paddr)
        s.offset = chunk_off[c[0]] + (s.paddr - c[0])
    note_off = elf64.EHDR_SIZE + nphdr * elf64.PHDR_SIZE
    shoff = note_off + len(notes) if ext else 0
    ehdr = elf64.build_ehdr(e_type=elf64.ET_CORE, e_machine=elf64.EM_X86_64, e_phoff=elf64.EHDR_SIZE,
                            e_phentsize=elf64.PHDR_SIZE, e_phnum=elf64.PN_XNUM if ext else nphdr,
                            e_shoff=shoff, e_shentsize=elf64.SHDR_SIZE if ext else 0, e_shnum=1 if ext else 0)
    phdrs = [elf64.PHDR_STRUCT.pack(elf64.PT_NOTE, 0, note_off, 0, 0, len(notes), 0, 4)]
    phdrs += [elf64.PHDR_STRUCT.pack(elf64.PT_LOAD, s.flags, s.offset, s.vaddr, s.paddr, s.size, s.size, PAGE)
              for s in res.segments]

    total = sum(s for _, s in chunks)
    prog = progress or Progress(total, "writing core")
    try:
        with atomic_output(out, overwrite=force) as f:
            f.write(ehdr)
            f.write(b"".join(phdrs))
            f.write(notes)
            if ext:
                f.write(elf64.build_shdr(0, elf64.SHT_NULL, info=nphdr, addralign=0))
            for addr, size in chunks:
                f.seek(chunk_off[addr])
                done = 0
                while done < size:
                    n = min(COPY_BLOCK, size - done)
                    f.write(src.read(addr + done, n))
                    prog.advance(n)
                    done += n
            f.truncate(pos if chunks else data_start)
    finally:
        prog.finish()
    return res
