"""Page-table walks and virtual reads over synthetic page tables.

The oracle is the mapping the test builds by hand (VA -> PA chosen here),
not anything computed by mcktools.
"""

from __future__ import annotations

import struct

import pytest

from mcktools.errors import ExcludedAddress, TranslationError, UnreadableAddress
from mcktools.memory.translate import (
    KernelMap, PageTableSpace, VirtualMemory, iter_mappings, walk_x86_64,
)


class FakePhys:
    """Sparse physical memory: 4K pages in a dict; some pages 'excluded'."""

    def __init__(self):
        self.pages: dict[int, bytearray] = {}
        self.excluded: set[int] = set()

    def page(self, pa):
        return self.pages.setdefault(pa & ~0xFFF, bytearray(4096))

    def write(self, pa, data):
        for i, b in enumerate(data):
            self.page(pa + i)[(pa + i) & 0xFFF] = b

    def read(self, pa, size):
        out = bytearray()
        while size:
            base = pa & ~0xFFF
            if base in self.excluded:
                raise ExcludedAddress(pa)
            if base not in self.pages:
                raise UnreadableAddress(pa)
            n = min(size, 4096 - (pa & 0xFFF))
            out += self.pages[base][pa & 0xFFF:(pa & 0xFFF) + n]
            pa += n
            size -= n
        return bytes(out)


class Builder:
    """Builds x86_64 4-level tables in FakePhys, allocating table pages from 0x100000."""

    def __init__(self, mem):
        self.mem = mem
        self.next = 0x100000
        self.root = self.alloc()

    def alloc(self):
        pa = self.next
        self.next += 0x1000
        self.mem.page(pa)
        return pa

    def entry(self, table, index):
        return struct.unpack("<Q", self.mem.read(table + 8 * index, 8))[0]

    def set(self, table, index, value):
        self.mem.write(table + 8 * index, struct.pack("<Q", value))

    def map(self, va, pa, size, flags=0x3):
        stop = {1 << 30: 1, 2 << 20: 2, 4096: 3}[size]
        table = self.root
        for depth, shift in enumerate((39, 30, 21, 12)):
            index = (va >> shift) & 511
            if depth == stop:
                large = 0x80 if size > 4096 else 0
                self.set(table, index, pa | flags | large | 1)
                return
            e = self.entry(table, index)
            if not e & 1:
                new = self.alloc()
                self.set(table, index, new | 0x7)
                e = new | 0x7
            table = e & 0x000FFFFFFFFFF000


@pytest.fixture
def setup():
    mem = FakePhys()
    b = Builder(mem)
    b.map(0x400000, 0x2345000, 4096, 0x7)                       # user 4K RW
    b.map(0x401000, 0x2000000, 4096, 0x5 | (1 << 63))          # user 4K RO NX, not contiguous
    b.map(0x600000, 0x3000000, 2 << 20, 0x7 | 0x40)            # 2M dirty
    b.map(0x40000000, 0x80000000, 1 << 30, 0x3)                # 1G kernel-ish
    b.map(0xFFFF860000000000, 0x1234000, 4096, 0x3 | 0x100)    # fixed map page
    for pa, fill in ((0x2345000, b"A"), (0x2000000, b"B"), (0x3000000, b"C"), (0x31FF000, b"D")):
        mem.write(pa, fill * 4096)
    mem.write(0x1234000, b"fixed-map-data\0")
    return mem, b


def test_walk_sizes_and_offsets(setup):
    mem, b = setup
    t = walk_x86_64(mem.read, b.root, 0x400123)
    assert (t.pa, t.page_size) == (0x2345123, 4096)
    assert t.flag_names == ["RW", "USER"]
    t = walk_x86_64(mem.read, b.root, 0x401fff)
    assert (t.pa, t.page_size) == (0x2000fff, 4096)
    assert "NX" in t.flag_names and "RW" not in t.flag_names
    t = walk_x86_64(mem.read, b.root, 0x7FF123)
    assert (t.pa, t.page_size) == (0x31FF123, 2 << 20)
    assert "DIRTY" in t.flag_names
    t = walk_x86_64(mem.read, b.root, 0x40000000 + 0x12345678)
    assert (t.pa, t.page_size) == (0x80000000 + 0x12345678, 1 << 30)
    assert len(t.levels) == 2


def test_unmapped_and_noncanonical(setup):
    mem, b = setup
    with pytest.raises(TranslationError, match="not mapped"):
        walk_x86_64(mem.read, b.root, 0x402000)
    with pytest.raises(TranslationError, match="canonical"):
        walk_x86_64(mem.read, b.root, 0x0000900000000000)


def test_iter_mappings(setup):
    mem, b = setup
    got = [(t.va, t.pa, t.page_size) for t in iter_mappings(mem.read, b.root)]
    assert got == [
        (0x400000, 0x2345000, 4096), (0x401000, 0x2000000, 4096),
        (0x600000, 0x3000000, 2 << 20), (0x40000000, 0x80000000, 1 << 30),
        (0xFFFF860000000000, 0x1234000, 4096),
    ]
    assert [t.va for t in iter_mappings(mem.read, b.root, 0x401000, 0x600001)] == [0x401000, 0x600000]


def test_virtual_read_crosses_pages(setup):
    mem, b = setup
    vm = VirtualMemory(mem.read, PageTableSpace(mem.read, b.root), name="pid 5")
    data = vm.read(0x400ffe, 4)
    assert data == b"AABB"          # two physically distant pages
    data = vm.read(0x7FFFFE, 2)
    assert data == b"DD"
    with pytest.raises(TranslationError):
        vm.read(0x401ffe, 4)        # runs into the unmapped 0x402000


def test_excluded_page_is_never_zero(setup):
    mem, b = setup
    mem.excluded.add(0x2000000)
    vm = VirtualMemory(mem.read, PageTableSpace(mem.read, b.root), name="pid 5")
    with pytest.raises(ExcludedAddress, match=r"0x401000.*excluded"):
        vm.read(0x400ff0, 0x20)


def test_kernel_map_linear_and_fixed(setup):
    mem, b = setup
    km = KernelMap(mem.read, kernel_base=0x1200000, linux_page_offset_base=0xFFFF888000000000,
                   init_pt_pa=b.root)
    assert km.translate(0xFFFFFFFFFE800000 + 0x1234).pa == 0x1200000 + 0x1234
    assert km.translate(0xFFFF888000000000 + 0x2345010).pa == 0x2345010
    assert km.translate(0xFFFF800000000000 + 0x99).pa == 0x99
    # fixed map: not an offset from MAP_FIXED_START, only the walk knows
    assert km.translate(0xFFFF860000000000 + 8).pa == 0x1234008
    assert km.region_name(0xFFFF860000000000) == "fixed"
    vm = VirtualMemory(mem.read, km)
    assert vm.read_cstring(0xFFFF860000000000) == b"fixed-map-data"
    with pytest.raises(TranslationError):
        km.translate(0xFFFF860000001000)
    with pytest.raises(TranslationError, match="user address"):
        km.translate(0x400000)


def test_full_walk_of_garbage_tables_is_bounded():
    """A PGD whose every entry points back at itself would describe 512^3 tables."""
    from mcktools.errors import CorruptStructure
    mem = FakePhys()
    root = 0x100000
    mem.write(root, struct.pack("<512Q", *([root | 0x7] * 512)))
    with pytest.raises(CorruptStructure, match="more than"):
        for _ in iter_mappings(mem.read, root, max_entries=5000):
            pass
