"""Physical memory from a kdump-compressed dump (plain or makedumpfile -F flattened)."""

from __future__ import annotations

import os

from ...errors import ExcludedAddress, UnreadableAddress
from ...formats.kdump import KdumpFile
from .base import PhysRange, merge_ranges


class KdumpSource:
    """Pages the dump holds are decompressed on demand.  A page that was RAM but
    left out by the dump level raises ExcludedAddress (never zeros: excluded
    zero pages and excluded user pages look the same here); a PFN that was not
    RAM raises UnreadableAddress."""

    def __init__(self, dump: "KdumpFile | str | os.PathLike[str]"):
        self.dump = dump if isinstance(dump, KdumpFile) else KdumpFile.open(dump)
        self.path = self.dump.path
        kind = "flattened kdump" if getattr(self.dump, "flattened", False) else "kdump"
        self.description = f"{kind} {os.path.basename(self.path)}"
        self._ranges = None

    def read(self, paddr: int, size: int) -> bytes:
        if paddr < 0 or size < 0:
            raise UnreadableAddress(paddr, f"invalid read of {size} bytes at physical address {paddr:#x}")
        ps = self.dump.page_size
        out = []
        pos, end = paddr, paddr + size
        while pos < end:
            pfn, off = divmod(pos, ps)
            n = min(ps - off, end - pos)
            if not self.dump.is_dumped(pfn):
                if self.dump.is_ram(pfn):
                    raise ExcludedAddress(pos, f"physical address {pos:#x} was excluded from the dump "
                                               f"{self.path} (filtered out by makedumpfile, contents unknown)")
                raise UnreadableAddress(pos, f"physical address {pos:#x} is not in the dump {self.path}")
            page = self.dump.read_page(pfn)
            out.append(page[off:off + n])
            pos += n
        return b"".join(out)

    def ranges(self) -> list[PhysRange]:
        if self._ranges is None:
            ps = self.dump.page_size
            self._ranges = merge_ranges(PhysRange(s * ps, e * ps) for s, e in self.dump.dumped_pfn_runs())
        return list(self._ranges)

    def excluded_ranges(self) -> list[PhysRange]:
        ps = self.dump.page_size
        ram = merge_ranges(PhysRange(s * ps, e * ps) for s, e in self.dump.ram_pfn_runs())
        dumped = self.ranges()
        out, j = [], 0
        for r in ram:
            pos = r.start
            for d in dumped:
                if d.end <= pos or d.start >= r.end:
                    continue
                if d.start > pos:
                    out.append(PhysRange(pos, d.start))
                pos = max(pos, d.end)
            if pos < r.end:
                out.append(PhysRange(pos, r.end))
        return out

    def close(self) -> None:
        self.dump.close()

    def __enter__(self) -> "KdumpSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
