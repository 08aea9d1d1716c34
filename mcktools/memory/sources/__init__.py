"""Physical-memory sources: one module per kind of input, all implementing
`base.PhysicalSource`.  `open_source(path)` picks the module by file magic."""

from __future__ import annotations

import os
import stat
from typing import Optional, Sequence

from ...errors import FormatError
from .base import PhysicalSource, PhysRange, merge_ranges

__all__ = ["PhysicalSource", "PhysRange", "merge_ranges", "open_source", "detect_format"]

ET_REL = 1
ET_CORE = 4


def detect_format(path: "str | os.PathLike[str]") -> str:
    """"mcdump", "elfcore", "kdump" or "flattened" from the file's first bytes;
    FormatError for anything else."""
    path = os.fspath(path)
    st = os.stat(path)
    if stat.S_ISDIR(st.st_mode):
        raise FormatError(f"{path} is a directory, not a dump file")
    if not stat.S_ISREG(st.st_mode):
        # Reading a device or FIFO to sniff a magic could block or disturb it.
        raise FormatError(f"{path} is not a regular file (for a live node use the /dev/mcosN source)")
    with open(path, "rb") as f:
        head = f.read(64)
    if head[:4] == b"\x7fELF":
        if len(head) < 64:
            raise FormatError(f"{path} is truncated: {len(head)} bytes, shorter than an ELF64 header")
        e_type = int.from_bytes(head[16:18], "little")
        if e_type == ET_CORE:
            return "elfcore"
        if e_type == ET_REL:
            return "mcdump"
        raise FormatError(f"{path} is an ELF file of type {e_type}, neither an mcdump (REL) nor a core (CORE)")
    if head[:8] == b"KDUMP   ":
        return "kdump"
    if head[:12] == b"makedumpfile":
        return "flattened"
    raise FormatError(f"{path}: unknown dump format (not an mcdump, ELF vmcore or kdump file; "
                      f"for a raw memory file give a chunk map)")


def open_source(path: "str | os.PathLike[str]", *,
                raw_map: Optional[Sequence[tuple[int, int, int]]] = None) -> PhysicalSource:
    """Open a physical-memory source.  With `raw_map` (a list of
    `(paddr, file_offset, size)`) the file is taken as raw memory; otherwise the
    format is detected by magic."""
    if raw_map is not None:
        from .raw import RawFileSource
        return RawFileSource(path, raw_map)
    kind = detect_format(path)
    if kind == "mcdump":
        from .mcdump import McDumpSource
        return McDumpSource(path)
    if kind == "elfcore":
        from .elfcore import VmcoreSource
        return VmcoreSource(path)
    try:
        from .kdump import KdumpSource
    except ImportError:
        raise FormatError(f"{os.fspath(path)}: {kind} dumps are not supported yet") from None
    return KdumpSource(path)
