"""Physical memory from a raw file plus a chunk map, e.g. a QEMU
memory-backend file (file offset == guest PA below 4 GiB) or a pmemsave image."""

from __future__ import annotations

import mmap
import os
from typing import Optional, Sequence

from ...errors import ExcludedAddress, FormatError, UnreadableAddress
from .base import PhysRange
from .extents import Extent, ExtentMap


class RawFileSource:
    """`chunk_map` lists `(paddr, file_offset, size)`; without one the whole
    file is physical memory from PA 0.  The file is mapped shared and
    read-only, so a live guest's writes show up in later reads."""

    def __init__(self, path: "str | os.PathLike[str]",
                 chunk_map: Optional[Sequence[tuple[int, int, int]]] = None):
        self.path = os.fspath(path)
        self.description = f"raw memory {os.path.basename(self.path)}"
        self._file = open(self.path, "rb")
        try:
            size = os.fstat(self._file.fileno()).st_size
            if size == 0:
                raise FormatError(f"{self.path}: empty file, no memory to read")
            self._mm = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        except BaseException:
            self._file.close()
            raise
        if chunk_map is None:
            chunk_map = [(0, 0, size)]
        extents = []
        for paddr, offset, length in chunk_map:
            if paddr < 0 or offset < 0 or length < 0:
                self.close()
                raise FormatError(f"{self.path}: invalid chunk map entry ({paddr:#x}, {offset:#x}, {length:#x})")
            if offset + length > size:
                self.close()
                raise FormatError(f"{self.path}: chunk map entry for PA {paddr:#x} needs file bytes "
                                  f"[{offset:#x}, {offset + length:#x}) but the file has {size:#x}")
            extents.append(Extent(paddr, paddr + length, self._reader(paddr, offset)))
        name = self.path

        def missing(pa: int) -> UnreadableAddress:
            return UnreadableAddress(pa, f"physical address {pa:#x} is not in the memory file {name}")

        self._map = ExtentMap(extents, missing=missing, excluded_error=lambda pa: ExcludedAddress(pa))

    def _reader(self, paddr: int, offset: int):
        delta = offset - paddr

        def read(pa: int, n: int) -> bytes:
            start = pa + delta
            return self._mm[start:start + n]
        return read

    def read(self, paddr: int, size: int) -> bytes:
        if self._mm is None:
            raise UnreadableAddress(paddr, f"{self.path} is closed")
        return self._map.read(paddr, size)

    def ranges(self) -> list[PhysRange]:
        return self._map.ranges()

    def close(self) -> None:
        if getattr(self, "_mm", None) is not None:
            self._mm.close()
            self._mm = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "RawFileSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
