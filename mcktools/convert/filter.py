"""Level 24 after the fact: classify the pages of a level-0 memory image the
way McKernel does when a level-24 dump freezes it (ABI reference §2.5).

* User pages: every process in the resource set's pid hash that has a page
  table; each present leaf entry with the user bit whose PA lies in
  McKernel's memory drops the whole mapping (4 KiB, 2 MiB or 1 GiB).
* Free pages: from the page allocator's own state, when the image's DWARF
  describes it: upstream's per-NUMA-node free-chunk rb-tree
  (`memory_nodes[i].free_chunks`), or a per-chunk page bitmap
  (`chunk_used` with `mem_chunks` / `nr_mem_chunks`, the reference kernel's).
  Without either we refuse rather than guess.

The result is the chunk list IHK would produce from the cleared bitmap: one
block per reserved chunk, runs of kept pages, never merged across blocks.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Optional

from ..debuginfo.types import ArrayType, PointerType, strip_typedefs
from ..errors import DebugInfoError, McktoolsError, UnreadableAddress
from ..memory.translate import PTE_USER, USER_END, iter_mappings

PAGE = 4096
#: visiting more tree nodes than this means a corrupt free-chunk tree
MAX_TREE_NODES = 1 << 24


class CannotFilter(McktoolsError):
    """The image or the memory lacks what classifying pages needs."""


@dataclass
class Classification:
    """Physical ranges level 24 removes, and how they were found."""

    user: list = field(default_factory=list)       # (pa, size)
    free: list = field(default_factory=list)       # (pa, size)
    processes: int = 0
    allocator: str = ""

    @property
    def excluded(self) -> list:
        return self.user + self.free


class _ChunkIndex:
    """Is a PA in McKernel's memory? (ihk_mc_chk_page_address, by bisection)."""

    def __init__(self, chunks: list):
        self.spans = sorted((a, a + s) for a, s in chunks)
        self.starts = [a for a, _ in self.spans]

    def __contains__(self, pa: int) -> bool:
        import bisect
        i = bisect.bisect_right(self.starts, pa) - 1
        return i >= 0 and pa < self.spans[i][1]


def user_pages(t: Any, chunks: list) -> tuple[list, int]:
    """(pa, size) of every user-mapped page in McKernel memory, and the process count."""
    from ..model.processes import hash_processes, page_table_va
    try:
        procs = hash_processes(t)
    except DebugInfoError as exc:
        raise CannotFilter(f"cannot find the processes (the image's DWARF lacks {exc}); "
                           f"user pages cannot be classified") from None
    out = []
    n = 0
    inside = _ChunkIndex(chunks)
    for p in procs:
        pt = page_table_va(p)
        if not pt:
            continue
        n += 1
        pgd_pa = t.kmap.resolve(pt)[0]
        try:
            for tr in iter_mappings(t.read_phys, pgd_pa, 0, USER_END):
                if tr.flags & PTE_USER and tr.pa in inside:
                    out.append((tr.pa, tr.page_size))
        except UnreadableAddress as exc:
            raise CannotFilter(f"the page table of process {int(p.pid)} is not in the dump ({exc}); "
                               f"user pages cannot be classified") from None
    return out, n


def _array_len(t: Any, var: Any) -> Optional[int]:
    typ = strip_typedefs(var.type_)
    if isinstance(typ, ArrayType):
        return typ.count
    return None


def free_pages_bitmap(t: Any) -> list:
    """The reference kernel's allocator: chunk_used[c] bit i = page i of mem_chunks[c] is in use."""
    used = t.variable("chunk_used")
    chunks = t.variable("mem_chunks")
    nr = int(t.variable("nr_mem_chunks"))
    rows = _array_len(t, used)
    if rows is None or not 0 <= nr <= rows:
        raise CannotFilter(f"nr_mem_chunks is {nr}, not a valid index into chunk_used")
    row_size = t.image.sizeof(strip_typedefs(used.type_).element)
    out = []
    for c in range(nr):
        start = int(chunks[c].start)
        size = int(chunks[c].size)
        npages = size // PAGE
        if npages > row_size * 8:
            raise CannotFilter(f"mem_chunks[{c}] has {npages} pages, more than chunk_used can describe")
        bits = int.from_bytes(t.read(used.address_ + c * row_size, row_size), "little")
        i = 0
        while i < npages:
            if bits >> i & 1:
                i += 1
                continue
            j = i
            while j < npages and not bits >> j & 1:
                j += 1
            out.append((start + i * PAGE, (j - i) * PAGE))
            i = j
    return out


def free_pages_rbtree(t: Any) -> list:
    """Upstream's allocator: rb-tree of `struct free_chunk {addr, size, node}` per NUMA node."""
    nodes = t.variable("memory_nodes")
    typ = strip_typedefs(nodes.type_)
    if isinstance(typ, PointerType):
        count = None
        for name in ("nr_memory_nodes", "num_memory_nodes", "ihk_mc_nr_numa_nodes"):
            try:
                count = int(t.variable(name))
                break
            except DebugInfoError:
                continue
        if count is None:
            raise CannotFilter("memory_nodes is a pointer and the image names no NUMA node count")
        base = int(nodes)
        elem = typ.target
    elif isinstance(typ, ArrayType):
        count = typ.count or 0
        base = nodes.address_
        elem = typ.element
    else:
        raise CannotFilter("memory_nodes is neither an array nor a pointer")
    esize = t.image.sizeof(elem)
    off_root = t.image.offsetof(elem, "free_chunks")
    o_addr = t.offsetof("struct free_chunk", "addr")
    o_size = t.offsetof("struct free_chunk", "size")
    o_node = t.offsetof("struct free_chunk", "node")
    o_left = t.offsetof("struct rb_node", "rb_left")
    o_right = t.offsetof("struct rb_node", "rb_right")
    out = []
    seen = 0
    for i in range(count):
        stack = [t.read_u64(base + i * esize + off_root)]
        while stack:
            node = stack.pop()
            if not node:
                continue
            seen += 1
            if seen > MAX_TREE_NODES:
                raise CannotFilter("the free-chunk tree has more nodes than memory could hold: corrupt")
            fc = node - o_node
            addr, size = struct.unpack("<QQ", t.read(fc + o_addr, 8) + t.read(fc + o_size, 8))
            out.append((addr, size))
            stack.append(t.read_u64(node + o_left))
            stack.append(t.read_u64(node + o_right))
    return out


def free_pages(t: Any) -> tuple[list, str]:
    tried = []
    for name, fn, needs in (("free-chunk rb-tree", free_pages_rbtree, "memory_nodes[].free_chunks"),
                            ("page bitmap", free_pages_bitmap, "chunk_used/mem_chunks/nr_mem_chunks")):
        try:
            return fn(t), name
        except DebugInfoError as exc:
            tried.append(f"{needs} ({exc})")
        except UnreadableAddress as exc:
            raise CannotFilter(f"the allocator's {name} is not in the dump ({exc})") from None
    raise CannotFilter("free pages cannot be classified: the image's DWARF describes neither "
                       + " nor ".join(tried))


def classify(t: Any, chunks: list) -> Classification:
    """What level 24 removes from `chunks` (the reserved chunks, or a level-0 dump's)."""
    user, nproc = user_pages(t, chunks)
    free, how = free_pages(t)
    return Classification(user, free, nproc, how)


def merge(ranges: list) -> list:
    """Sorted, merged, page-rounded (start, end) intervals of (pa, size) ranges."""
    out: list = []
    for pa, n in sorted(ranges):
        lo, hi = pa & ~(PAGE - 1), (pa + n + PAGE - 1) & ~(PAGE - 1)
        if out and lo <= out[-1][1]:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def apply(chunks: list, excluded: list) -> list:
    """Runs of the pages of each chunk that no excluded range touches, chunk
    by chunk (a chunk stands for one bitmap block: runs never merge across)."""
    import bisect
    cut = merge(excluded)
    starts = [a for a, _ in cut]
    out = []
    for addr, size in chunks:
        end = addr + size
        pos = addr
        i = max(bisect.bisect_right(starts, addr) - 1, 0)
        while i < len(cut) and cut[i][0] < end:
            lo, hi = cut[i]
            if hi > pos:
                if lo > pos:
                    out.append((pos, lo - pos))
                pos = max(pos, hi)
            i += 1
        if pos < end:
            out.append((pos, end - pos))
    return out

def filter_dump(dump_path: str, image_path: str, out: str, *, force: bool = False, progress=None) -> dict:
    """Write the level-24 reduction of the mcdump at `dump_path` to `out`."""
    from ..formats.mcdump import write_mcdump
    from ..model.target import Target
    from .output import Progress, check_target

    check_target(out, force)
    t = Target.open(image_path, dump_path)
    try:
        dump = t.source.dump
        if dump.interactive:
            raise CannotFilter(f"{dump_path} is an interactive dump: it holds no memory to classify")
        chunks = [(c.addr, c.size) for c in dump.chunks]
        c = classify(t, chunks)
        kept = apply(chunks, c.excluded)
        extra = [(name, dump.section(name)) for name in dump.extra_section_names]
        total = sum(s for _, s in kept)
        prog = progress or Progress(total, "filtering")
        read = t.source.read

        def reader_for(addr: int):
            return prog.wrap(lambda off, n: read(addr + off, n))
        try:
            write_mcdump(out, [(a, s, reader_for(a)) for a, s in kept], kernel_base=dump.kernel_base,
                         phys_start=dump.phys_start, date=dump.date, hostname=dump.hostname, user=dump.user,
                         extra_sections=extra, overwrite=force)
        finally:
            prog.finish()
        dropped_user = _pages_in(c.user, chunks)
        dropped_free = _pages_in(c.free, chunks)
        return {"chunks": len(kept), "bytes": total, "user_pages": dropped_user, "free_pages": dropped_free,
                "processes": c.processes, "allocator": c.allocator}
    finally:
        t.close()


def _pages_in(ranges: list, chunks: list) -> int:
    """Distinct pages of `ranges` inside `chunks` (ranges may overlap: shared pages)."""
    total = 0
    for lo, hi in merge(ranges):
        for addr, size in chunks:
            a, b = max(lo, addr), min(hi, addr + size)
            if a < b:
                total += (b - a) // PAGE
    return total
