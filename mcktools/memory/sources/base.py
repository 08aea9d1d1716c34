"""The one interface every physical-memory source implements.

Sources know physical addresses only (no page tables, no McKernel).  A read
either returns exactly `size` bytes or raises UnreadableAddress (or its
subclass ExcludedAddress) naming the first address it could not serve; it
never invents zeros.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Protocol, runtime_checkable


@dataclass(frozen=True)
class PhysRange:
    """A run of physical memory a source can serve: [start, end)."""

    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


@runtime_checkable
class PhysicalSource(Protocol):
    """Physical memory of one McKernel node, from a dump, a vmcore or a live node."""

    #: short human description, e.g. "mcdump level0.mcdump"
    description: str

    def read(self, paddr: int, size: int) -> bytes:
        """Exactly `size` bytes at `paddr`, spanning adjacent ranges if needed."""
        ...

    def ranges(self) -> list[PhysRange]:
        """The readable physical ranges, sorted by start, adjacent ones merged."""
        ...

    def close(self) -> None:
        ...


def merge_ranges(ranges: "Iterator[PhysRange] | list[PhysRange]") -> list[PhysRange]:
    """Sort ranges and merge the ones that touch or overlap."""
    out: list[PhysRange] = []
    for r in sorted(ranges, key=lambda r: r.start):
        if r.end <= r.start:
            continue
        if out and r.start <= out[-1].end:
            if r.end > out[-1].end:
                out[-1] = PhysRange(out[-1].start, r.end)
        else:
            out.append(r)
    return out
