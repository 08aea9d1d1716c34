"""Virtual-to-physical translation for McKernel on x86_64.

Two kinds of translators live here, both answering `resolve(va) -> (pa, span)`
(span = bytes that stay physically contiguous from `va`):

* `PageTableSpace`: a 4-level x86_64 page-table walk (4K, 2M and 1G pages)
  from a root (PGD) physical address.  Used for user address spaces and for
  kernel addresses that no linear map explains (McKernel's fixed map).
* `KernelMap`: McKernel's kernel address map (reference §4): the image map at
  MAP_KERNEL_START backed by `kernel_base`, the Linux direct map at
  `linux_page_offset_base`, the straight map at MAP_ST_START, and an `init_pt`
  walk for the rest (fixed map: `map_fixed_area` hands out pages one after the
  other, so `va - MAP_FIXED_START` is wrong there).

`VirtualMemory` reads through a translator and a PhysicalSource, splitting
reads at page boundaries.  This layer knows page tables, not processes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Protocol

from ..errors import CorruptStructure, ExcludedAddress, TranslationError, UnreadableAddress

ReadPhys = Callable[[int, int], bytes]

# --- x86_64 paging facts (Intel SDM vol. 3 §4.5; McKernel arch-memory.h) ---
PAGE_SIZE = 4096
LEVEL_SHIFTS = (39, 30, 21, 12)          # PGD, PUD, PMD, PTE
ENTRIES = 512
PHYS_MASK = ((1 << 52) - 1) & ~0xFFF     # bits 12..51 (PT_PHYSMASK)

PTE_PRESENT = 1 << 0
PTE_RW = 1 << 1
PTE_USER = 1 << 2
PTE_PWT = 1 << 3
PTE_PCD = 1 << 4
PTE_ACCESSED = 1 << 5
PTE_DIRTY = 1 << 6
PTE_PS = 1 << 7        # large page at the PUD (1G) and PMD (2M) levels
PTE_GLOBAL = 1 << 8
PTE_FILEOFF = 1 << 11  # McKernel software bit
PTE_NX = 1 << 63

#: flag names in the order crash's mcvtop prints them
FLAG_NAMES = (
    (PTE_RW, "RW"), (PTE_USER, "USER"), (PTE_PWT, "PWT"), (PTE_PCD, "PCD"),
    (PTE_ACCESSED, "ACCESSED"), (PTE_DIRTY, "DIRTY"), (PTE_GLOBAL, "GLOBAL"),
    (PTE_NX, "NX"),
)

# --- McKernel x86_64 address map (reference §4) ---
USER_END = 0x0000800000000000
MAP_ST_START = 0xFFFF800000000000
MAP_VMAP_START = 0xFFFF850000000000
MAP_FIXED_START = 0xFFFF860000000000
LINUX_PAGE_OFFSET_DEFAULT = 0xFFFF880000000000
MAP_KERNEL_START_DEFAULT = 0xFFFFFFFFFE800000
DIRECT_MAP_SIZE = 0x20000000000        # McKernel maps PA 0..2 TiB at linux_page_offset_base
LARGE_PAGE = 2 << 20

SIZE_NAMES = {4096: "4K", 1 << 16: "64K", 2 << 20: "2M", 512 << 20: "512M", 1 << 30: "1G",
              16 << 30: "16G", 512 << 30: "512G", 4 << 40: "4T", 32 << 50: "32P"}


def flag_names(entry: int) -> list[str]:
    """The attribute names of a page-table entry, crash mcvtop style."""
    return [name for bit, name in FLAG_NAMES if entry & bit]


def size_name(size: int) -> str:
    return SIZE_NAMES.get(size, f"{size:#x}")


def is_canonical(va: int) -> bool:
    top = va >> 47
    return top == 0 or top == 0x1FFFF


def _sign_extend(va: int) -> int:
    return va | 0xFFFF000000000000 if va & (1 << 47) else va


@dataclass(frozen=True)
class Translation:
    """One resolved virtual address: the leaf entry that maps it."""

    va: int
    pa: int
    page_size: int
    #: the raw leaf entry (PTE, or PDE/PUDE for large pages)
    flags: int
    #: raw entries read at each level, root first
    levels: tuple = ()

    @property
    def page_va(self) -> int:
        return self.va & ~(self.page_size - 1)

    @property
    def page_pa(self) -> int:
        return self.pa & ~(self.page_size - 1)

    @property
    def flag_names(self) -> list[str]:
        return flag_names(self.flags)

    @property
    def span(self) -> int:
        return self.page_va + self.page_size - self.va


def _entry(read_phys: ReadPhys, table_pa: int, index: int) -> int:
    return struct.unpack("<Q", read_phys(table_pa + index * 8, 8))[0]


def walk_x86_64(read_phys: ReadPhys, root_pa: int, va: int) -> Translation:
    """Walk the 4-level table rooted at `root_pa` for `va`.

    Raises TranslationError when an entry on the way is not present; an
    unreadable table page propagates the source's UnreadableAddress.
    """
    if not is_canonical(va):
        raise TranslationError(va, f"virtual address {va:#x} is not canonical")
    table = root_pa & PHYS_MASK
    seen = []
    for depth, shift in enumerate(LEVEL_SHIFTS):
        index = (va >> shift) & (ENTRIES - 1)
        entry = _entry(read_phys, table, index)
        seen.append(entry)
        if not entry & PTE_PRESENT:
            raise TranslationError(
                va, f"virtual address {va:#x} is not mapped (level-{4 - depth} entry "
                    f"{index} at {table + index * 8:#x} is not present)")
        if shift == 12 or (shift in (30, 21) and entry & PTE_PS):
            size = 1 << shift
            base = entry & PHYS_MASK & ~(size - 1)
            return Translation(va, base + (va & (size - 1)), size, entry, tuple(seen))
        table = entry & PHYS_MASK
    raise AssertionError("unreachable")


def iter_mappings(read_phys: ReadPhys, root_pa: int, start: int = 0,
                  end: int = 1 << 64, max_entries: int = 1 << 22) -> Iterator[Translation]:
    """Every leaf mapping whose page overlaps [start, end), in VA order.

    Reads each table page once (512 entries at a time) so that a full walk of
    an address space stays fast.  Translation.va is the page's VA.  A walk
    that meets more than `max_entries` present entries (16 GiB mapped with 4K
    pages) is taken as corrupt rather than followed for minutes.
    """
    seen = [0]

    def count() -> None:
        seen[0] += 1
        if seen[0] > max_entries:
            raise CorruptStructure(f"page table at {root_pa:#x} has more than {max_entries} present "
                                   "entries (corrupt entries?)")

    def table_entries(pa: int):
        return struct.unpack("<512Q", read_phys(pa & PHYS_MASK, PAGE_SIZE))

    def rec(table_pa: int, depth: int, base: int, trail: tuple):
        shift = LEVEL_SHIFTS[depth]
        size = 1 << shift
        entries = table_entries(table_pa)
        for index in range(ENTRIES):
            va = base + (index << shift)
            sva = _sign_extend(va) if depth == 0 else va
            if sva + size <= start or sva >= end:
                continue
            entry = entries[index]
            if not entry & PTE_PRESENT:
                continue
            count()
            if shift == 12 or (shift in (30, 21) and entry & PTE_PS):
                pa = entry & PHYS_MASK & ~(size - 1)
                yield Translation(sva, pa, size, entry, trail + (entry,))
            else:
                yield from rec(entry & PHYS_MASK, depth + 1, sva, trail + (entry,))

    yield from rec(root_pa, 0, 0, ())


class Translator(Protocol):
    def resolve(self, va: int) -> tuple[int, int]:
        """(physical address, contiguous bytes from va) or TranslationError."""
        ...


class PageTableSpace:
    """An address space described by one x86_64 page-table root."""

    def __init__(self, read_phys: ReadPhys, root_pa: int, *, fallback: Optional[Translator] = None,
                 name: str = "page table"):
        self.read_phys = read_phys
        self.root_pa = root_pa
        self.fallback = fallback
        self.name = name

    def translate(self, va: int) -> Translation:
        return walk_x86_64(self.read_phys, self.root_pa, va)

    def resolve(self, va: int) -> tuple[int, int]:
        if self.fallback is not None and va >= USER_END:
            return self.fallback.resolve(va)
        t = self.translate(va)
        return t.pa, t.span

    def mappings(self, start: int = 0, end: int = USER_END) -> Iterator[Translation]:
        return iter_mappings(self.read_phys, self.root_pa, start, end)


@dataclass
class LinearRegion:
    """A kernel VA range mapped by a fixed offset."""

    name: str
    start: int
    end: int
    phys: int          # PA of `start`

    def contains(self, va: int) -> bool:
        return self.start <= va < self.end


@dataclass
class KernelMap:
    """McKernel x86_64 kernel address map (reference §4).

    Linear regions are checked first (image, direct, straight); the fixed map
    and anything else the linear maps do not explain goes through `init_pt`
    once `init_pt_pa` is set.
    """

    read_phys: ReadPhys
    kernel_base: int
    map_kernel_start: int = MAP_KERNEL_START_DEFAULT
    #: exclusive end VA of the image map (init_text_area maps round_up(_end, 2M) + 2M)
    image_end: int = MAP_KERNEL_START_DEFAULT + (64 << 20)
    linux_page_offset_base: Optional[int] = None
    init_pt_pa: Optional[int] = None
    straight: bool = True
    regions: list = field(default_factory=list)

    def __post_init__(self):
        self.rebuild()

    def rebuild(self) -> None:
        """Recompute the linear regions after a base was learned from memory."""
        regions = [LinearRegion("image", self.map_kernel_start, self.image_end, self.kernel_base)]
        if self.linux_page_offset_base is not None:
            regions.append(LinearRegion("direct", self.linux_page_offset_base,
                                        self.linux_page_offset_base + DIRECT_MAP_SIZE, 0))
        if self.straight:
            regions.append(LinearRegion("straight", MAP_ST_START, MAP_VMAP_START, 0))
        self.regions = regions

    def region_name(self, va: int) -> str:
        for r in self.regions:
            if r.contains(va):
                return r.name
        if MAP_FIXED_START <= va < (self.linux_page_offset_base or LINUX_PAGE_OFFSET_DEFAULT):
            return "fixed"
        if va < USER_END:
            return "user"
        return "kernel"

    def translate(self, va: int) -> Translation:
        """A Translation for `va` (linear maps report 4K pages and no entry bits)."""
        for r in self.regions:
            if r.contains(va):
                pa = va - r.start + r.phys
                return Translation(va, pa, PAGE_SIZE, 0)
        return self.walk(va)

    def walk(self, va: int) -> Translation:
        """Walk init_pt for `va`, whatever region it is in."""
        if va < USER_END:
            raise TranslationError(va, f"{va:#x} is a user address; give a process (-p PID)")
        if self.init_pt_pa is None:
            raise TranslationError(va, f"kernel address {va:#x} is outside the linear maps "
                                       "and init_pt is not known")
        return walk_x86_64(self.read_phys, self.init_pt_pa, va)

    def resolve(self, va: int) -> tuple[int, int]:
        for r in self.regions:
            if r.contains(va):
                return va - r.start + r.phys, r.end - va
        t = self.walk(va)
        return t.pa, t.span


class VirtualMemory:
    """Reads of virtual memory through a translator over a physical source.

    Reads may cross page boundaries; each piece is translated separately.
    Unreadable physical memory is reported with the virtual address, and an
    excluded page stays an ExcludedAddress (never zeros).
    """

    def __init__(self, read_phys: ReadPhys, translator: Translator, name: str = "kernel"):
        self.read_phys = read_phys
        self.translator = translator
        self.name = name

    def resolve(self, va: int) -> tuple[int, int]:
        return self.translator.resolve(va)

    def read(self, va: int, size: int) -> bytes:
        if size < 0:
            raise ValueError("negative size")
        va &= (1 << 64) - 1
        out = []
        pos = va
        left = size
        while left > 0:
            pa, span = self.translator.resolve(pos)
            n = min(left, span)
            try:
                out.append(self.read_phys(pa, n))
            except ExcludedAddress as exc:
                bad_va = pos + (exc.address - pa if pa <= exc.address < pa + n else 0)
                raise ExcludedAddress(
                    exc.address,
                    f"{self.name} virtual address {bad_va:#x} (physical {exc.address:#x}) "
                    "was excluded from the dump") from None
            except UnreadableAddress as exc:
                if isinstance(exc, TranslationError):
                    raise
                bad_va = pos + (exc.address - pa if pa <= exc.address < pa + n else 0)
                raise UnreadableAddress(
                    exc.address,
                    f"{self.name} virtual address {bad_va:#x} (physical {exc.address:#x}) "
                    "is not in the dump") from None
            pos += n
            left -= n
        return b"".join(out)

    def read_u64(self, va: int) -> int:
        return struct.unpack("<Q", self.read(va, 8))[0]

    def read_u32(self, va: int) -> int:
        return struct.unpack("<I", self.read(va, 4))[0]

    def read_s32(self, va: int) -> int:
        return struct.unpack("<i", self.read(va, 4))[0]

    def read_cstring(self, va: int, limit: int = 4096) -> bytes:
        """Bytes up to the first NUL (or `limit`), reading page by page."""
        out = bytearray()
        pos = va
        while len(out) < limit:
            n = min(limit - len(out), PAGE_SIZE - (pos & (PAGE_SIZE - 1)))
            chunk = self.read(pos, n)
            nul = chunk.find(b"\0")
            if nul >= 0:
                out += chunk[:nul]
                return bytes(out)
            out += chunk
            pos += n
        return bytes(out)
