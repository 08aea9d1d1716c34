"""Shared lookup for sources made of physical extents (dump chunks, PT_LOADs,
regions of a raw memory file): find the extent holding an address, serve reads
that span adjacent extents, and refuse gaps and excluded memory with the right
exception instead of returning zeros.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

from ...errors import ExcludedAddress, UnreadableAddress
from ...formats.intervals import merge_in, uncovered
from .base import PhysRange, merge_ranges

ReadFn = Callable[[int, int], bytes]  # (paddr, size) -> bytes, absolute address


@dataclass  # not frozen: built by the tens of thousands, and frozen init is 2x slower
class Extent:
    """[start, end) of physical memory served by `read(paddr, size)`, or, when
    `read` is None, memory the dump deliberately left out (excluded)."""

    start: int
    end: int
    read: Optional[ReadFn]


class ExtentMap:
    """Non-overlapping, sorted extents built from possibly overlapping input.

    Overlaps happen in real files (a Linux vmcore maps kernel text twice: once
    in its RAM segment, once in a text segment); the earlier-listed data extent
    wins, and excluded extents only fill holes no data extent covers.
    """

    def __init__(self, data: Iterable[Extent], excluded: Iterable[tuple[int, int]] = (),
                 *, missing: Callable[[int], UnreadableAddress], excluded_error: Callable[[int], ExcludedAddress]):
        self._missing = missing
        self._excluded_error = excluded_error
        data = list(data)
        excluded = list(excluded)
        if not excluded and all(a.end <= b.start for a, b in zip(data, data[1:])):
            # Already sorted and disjoint (mcdump chunks, raw maps): nothing to resolve.
            self.extents = [x for x in data if x.end > x.start]
            self._starts = [x.start for x in self.extents]
            return
        placed: list[Extent] = []
        covered: list[tuple[int, int]] = []   # sorted, merged
        for ext in data:
            for s, e in uncovered(covered, ext.start, ext.end):
                placed.append(Extent(s, e, ext.read))
            covered = merge_in(covered, ext.start, ext.end)
        for start, end in excluded:
            for s, e in uncovered(covered, start, end):
                placed.append(Extent(s, e, None))
            covered = merge_in(covered, start, end)
        placed.sort(key=lambda x: x.start)
        self.extents = placed
        self._starts = [x.start for x in placed]

    def ranges(self) -> list[PhysRange]:
        return merge_ranges(PhysRange(x.start, x.end) for x in self.extents if x.read is not None)

    def excluded_ranges(self) -> list[PhysRange]:
        return merge_ranges(PhysRange(x.start, x.end) for x in self.extents if x.read is None)

    def find(self, paddr: int) -> Optional[Extent]:
        i = bisect.bisect_right(self._starts, paddr) - 1
        if i >= 0 and paddr < self.extents[i].end:
            return self.extents[i]
        return None

    def read(self, paddr: int, size: int) -> bytes:
        if size < 0 or paddr < 0:
            raise UnreadableAddress(paddr, f"invalid read of {size} bytes at physical address {paddr:#x}")
        if size == 0:
            return b""
        pieces = []
        pos, end = paddr, paddr + size
        i = bisect.bisect_right(self._starts, pos) - 1
        while pos < end:
            if i < 0 or i >= len(self.extents) or not (self.extents[i].start <= pos < self.extents[i].end):
                raise self._missing(pos)
            ext = self.extents[i]
            if ext.read is None:
                raise self._excluded_error(pos)
            n = min(end, ext.end) - pos
            pieces.append(ext.read(pos, n))
            pos += n
            i += 1
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)
