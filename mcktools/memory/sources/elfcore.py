"""Physical memory from an ELF vmcore / ELF core, addressed by PT_LOAD p_paddr."""

from __future__ import annotations

import os

from ...errors import ExcludedAddress, UnreadableAddress
from ...formats.elfcore import PADDR_INVALID, ElfCore
from .base import PhysRange
from .extents import Extent, ExtentMap


class VmcoreSource:
    """Reads by physical address through the PT_LOAD segments' p_paddr.

    The part of a filtered segment that is not in the file (p_filesz < p_memsz)
    raises ExcludedAddress: the dumper dropped it, and reading it as zeros
    would show the user memory that never had those values.  Segments whose
    p_paddr is the "unknown" marker (-1) are skipped.
    """

    def __init__(self, core: "ElfCore | str | os.PathLike[str]"):
        self.core = core if isinstance(core, ElfCore) else ElfCore.open(core)
        self.path = self.core.path
        self.description = f"ELF core {os.path.basename(self.path)}"
        name = self.path

        def missing(pa: int) -> UnreadableAddress:
            return UnreadableAddress(pa, f"physical address {pa:#x} is not in the core file {name}")

        def excluded(pa: int) -> ExcludedAddress:
            return ExcludedAddress(pa, f"physical address {pa:#x} was excluded from the dump {name} "
                                       f"(filtered out by the dumper, contents unknown)")

        data, dropped = [], []
        for seg in self.core.segments:
            if seg.paddr == PADDR_INVALID or seg.memsz == 0 or seg.paddr + seg.memsz > 1 << 64:
                continue
            if seg.filesz:
                data.append(Extent(seg.paddr, seg.paddr + seg.filesz, self._reader(seg)))
            if seg.filtered:
                dropped.append((seg.paddr + seg.filesz, seg.paddr + seg.memsz))
        self._map = ExtentMap(data, dropped, missing=missing, excluded_error=excluded)

    def _reader(self, seg):
        core, base = self.core, seg.paddr
        return lambda pa, n: core.read_segment(seg, pa - base, n)

    def read(self, paddr: int, size: int) -> bytes:
        return self._map.read(paddr, size)

    def ranges(self) -> list[PhysRange]:
        return self._map.ranges()

    def excluded_ranges(self) -> list[PhysRange]:
        return self._map.excluded_ranges()

    def close(self) -> None:
        self.core.close()

    def __enter__(self) -> "VmcoreSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
