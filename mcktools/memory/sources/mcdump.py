"""Physical memory from an mcdump file (ihkosctl dump / write_mcdump)."""

from __future__ import annotations

import os

from ...errors import ExcludedAddress, UnreadableAddress
from ...formats.mcdump import McDump
from .base import PhysRange
from .extents import Extent, ExtentMap


class McDumpSource:
    """Serves reads from the `physmemN` chunks; the McDump metadata
    (kernel_base, phys_start, date, extra sections) stays reachable as `.dump`.

    Addresses outside every chunk raise UnreadableAddress: a level-24 dump
    cannot tell "excluded" from "never McKernel's", so it says "not in the dump".
    """

    def __init__(self, dump: "McDump | str | os.PathLike[str]"):
        self.dump = dump if isinstance(dump, McDump) else McDump.open(dump)
        self.path = self.dump.path
        self.description = f"mcdump {os.path.basename(self.path)}"
        name = self.path

        def missing(pa: int) -> UnreadableAddress:
            return UnreadableAddress(pa, f"physical address {pa:#x} is not in the dump {name}")

        def excluded(pa: int) -> ExcludedAddress:  # mcdumps have no excluded extents
            return ExcludedAddress(pa)

        extents = []
        if not self.dump.interactive:
            for c in sorted(self.dump.chunks, key=lambda c: c.addr):
                extents.append(Extent(c.addr, c.end, self._reader(c)))
        self._map = ExtentMap(extents, missing=missing, excluded_error=excluded)

    def _reader(self, chunk):
        dump, index, base = self.dump, chunk.index, chunk.addr
        return lambda pa, n: dump.read_chunk(index, pa - base, n)

    @property
    def interactive(self) -> bool:
        return self.dump.interactive

    def read(self, paddr: int, size: int) -> bytes:
        if self.dump.interactive:
            raise UnreadableAddress(paddr, f"cannot read physical address {paddr:#x}: {self.path} is an "
                                           f"interactive dump (metadata only, no memory contents)")
        return self._map.read(paddr, size)

    def ranges(self) -> list[PhysRange]:
        return self._map.ranges()

    def close(self) -> None:
        self.dump.close()

    def __enter__(self) -> "McDumpSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
