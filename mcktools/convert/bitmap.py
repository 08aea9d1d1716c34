"""IHK's dump page set: `struct ihk_dump_page_set` and its `ihk_dump_page`
bitmap blocks (ABI reference §2.2), and the rule that turns them into chunks
(§2.6).

The bitmap lives in Linux memory and is shared with McKernel: Linux sets every
real page's bit at boot, McKernel clears user-mapped and free pages when a
level-24 dump freezes it.  IHK's DUMP_QUERY_MEM_AREAS then scans the blocks in
order, words upward, bits 0..63, emitting one chunk per run of set bits and
never letting a run continue into the next block.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable, Optional

from ..errors import FormatError

PAGE = 4096
DUMP_PAGE_SET = struct.Struct("<IIQQ")      # completion_flag, count, page_size, phy_page
BLOCK_HEADER = struct.Struct("<QQ")          # start, map_count
COMPLETED = 1
#: more blocks than this is a corrupt count (IHK has one per reserved chunk)
MAX_BLOCKS = 1 << 16
#: 2^26 words cover 16 TiB per chunk
MAX_WORDS = 1 << 26

ReadPhys = Callable[[int, int], bytes]


@dataclass(frozen=True)
class DumpPageSet:
    pa: int
    completion_flag: int
    count: int
    page_size: int
    phy_page: int

    @classmethod
    def parse(cls, pa: int, raw: bytes) -> "DumpPageSet":
        flag, count, page_size, phy_page = DUMP_PAGE_SET.unpack_from(raw, 0)
        return cls(pa, flag, count, page_size, phy_page)

    @property
    def completed(self) -> bool:
        return self.completion_flag == COMPLETED

    def plausible(self) -> Optional[str]:
        """None when the fields look like a dump page set, else why not."""
        if not 0 < self.count <= MAX_BLOCKS:
            return f"block count {self.count}"
        if self.phy_page == 0 or self.phy_page % 8:
            return f"bitmap address {self.phy_page:#x}"
        if self.completion_flag not in (0, 1):
            return f"completion_flag {self.completion_flag}"
        return None


@dataclass
class Block:
    """One `ihk_dump_page`: bit i of `bits` says whether page `start + i*4K` is dumped."""

    start: int
    map_count: int
    bits: int

    @property
    def npages(self) -> int:
        return self.map_count * 64

    def runs(self) -> list[tuple[int, int]]:
        """(first page, page count) of each run of set bits, in page order."""
        out = []
        value = self.bits
        pos = 0
        while value:
            zeros = (value & -value).bit_length() - 1
            value >>= zeros
            pos += zeros
            ones = (~value & (value + 1)).bit_length() - 1
            out.append((pos, ones))
            value >>= ones
            pos += ones
        return out

    def set_pages(self) -> int:
        return bin(self.bits).count("1")


def read_blocks(read: ReadPhys, dps: DumpPageSet) -> list[Block]:
    """The `count` packed blocks starting at `phy_page`."""
    blocks = []
    pa = dps.phy_page
    for i in range(dps.count):
        start, map_count = BLOCK_HEADER.unpack(read(pa, BLOCK_HEADER.size))
        if map_count == 0 or map_count > MAX_WORDS or start % PAGE:
            raise FormatError(f"dump bitmap block {i} at {pa:#x} is corrupt (start {start:#x}, "
                              f"{map_count} words)")
        raw = read(pa + BLOCK_HEADER.size, 8 * map_count)
        blocks.append(Block(start, map_count, int.from_bytes(raw, "little")))
        pa += BLOCK_HEADER.size + 8 * map_count
    return blocks


def blocks_to_chunks(blocks: list[Block]) -> list[tuple[int, int]]:
    """(addr, size) per run of set bits, block by block: DUMP_QUERY_MEM_AREAS's order."""
    out = []
    for b in blocks:
        for first, n in b.runs():
            out.append((b.start + first * PAGE, n * PAGE))
    return out


def full_chunks(blocks: list[Block], sizes: Optional[dict] = None) -> list[tuple[int, int]]:
    """What a level-0 dump of a never-filtered bitmap gives: each block whole.

    A block covers its chunk rounded up to 64 pages; `sizes` (start -> bytes)
    clips it to the real chunk size when known."""
    out = []
    for b in blocks:
        size = b.npages * PAGE
        if sizes and b.start in sizes:
            size = min(size, sizes[b.start])
        out.append((b.start, size))
    return out
