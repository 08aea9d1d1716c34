"""ELF core files and ELF vmcores (Linux /proc/vmcore, makedumpfile -E, QEMU
dump-guest-memory, gdb gcore): PT_LOAD segments and PT_NOTE notes, via mmap.

Filtered dumps have PT_LOAD segments with p_filesz < p_memsz; the tail is
memory the writer left out, and this reader reports it as such (it never
hands out the missing bytes as zeros: see `ElfCore.read_segment`).
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from typing import Optional

from ..errors import FormatError
from . import elf64
from .elf64 import Note

# Linux "physical address unknown" marker used in some vmcore segments.
PADDR_INVALID = (1 << 64) - 1


@dataclass(frozen=True)
class LoadSegment:
    """One PT_LOAD: `memsz` bytes at `vaddr`/`paddr`, the first `filesz` of
    which are stored at file `offset` (the rest was filtered out)."""

    index: int
    vaddr: int
    paddr: int
    offset: int
    filesz: int
    memsz: int
    flags: int = 0

    @property
    def filtered(self) -> bool:
        return self.filesz < self.memsz


class ElfCore:
    """An opened ELF core; use `ElfCore.open(path)` (context manager)."""

    def __init__(self, path: str, fileobj, mm, hdr, phdrs):
        self.path = path
        self._file = fileobj
        self._mm = mm
        self.file_size = len(mm)
        self.machine = hdr.e_machine
        self.type = hdr.e_type
        self.segments: list[LoadSegment] = []
        self.notes: list[Note] = []
        for ph in phdrs:
            if ph.type == elf64.PT_LOAD:
                if ph.filesz > ph.memsz:
                    raise FormatError(f"{path}: PT_LOAD {ph.index} stores {ph.filesz:#x} bytes but spans only "
                                      f"{ph.memsz:#x}")
                self._check_in_file(ph, "PT_LOAD")
                self.segments.append(LoadSegment(ph.index, ph.vaddr, ph.paddr, ph.offset, ph.filesz,
                                                 ph.memsz, ph.flags))
            elif ph.type == elf64.PT_NOTE:
                self._check_in_file(ph, "PT_NOTE")
                align = 8 if ph.align == 8 else 4
                self.notes += elf64.parse_notes(mm[ph.offset:ph.offset + ph.filesz], align, ph.offset,
                                                f"{path}: PT_NOTE {ph.index}")

    def _check_in_file(self, ph, kind: str) -> None:
        if ph.filesz and ph.offset + ph.filesz > self.file_size:
            raise FormatError(f"{self.path} is truncated: {kind} segment {ph.index} at {ph.offset:#x}+"
                              f"{ph.filesz:#x} extends past the end of the file ({self.file_size:#x} bytes)")

    @classmethod
    def open(cls, path: "str | os.PathLike[str]") -> "ElfCore":
        path = os.fspath(path)
        f = open(path, "rb")
        try:
            if os.fstat(f.fileno()).st_size == 0:
                raise FormatError(f"{path}: empty file, not an ELF core")
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except BaseException:
            f.close()
            raise
        try:
            hdr = elf64.parse_ehdr(mm, path)
            if hdr.e_type != elf64.ET_CORE:
                raise FormatError(f"{path} is an ELF file but not a core dump (e_type {hdr.e_type})")
            phdrs = elf64.read_program_headers(mm, hdr, path)
            return cls(path, f, mm, hdr, phdrs)
        except BaseException:
            mm.close()
            f.close()
            raise

    def close(self) -> None:
        if self._mm is not None:
            self._mm.close()
            self._mm = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "ElfCore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def read_segment(self, seg: LoadSegment, offset: int, size: int) -> bytes:
        """Bytes stored for `seg` at `offset`; the range must lie in the stored
        part [0, filesz) — callers decide what the filtered tail means."""
        if self._mm is None:
            raise FormatError(f"{self.path}: core file is closed")
        if offset < 0 or size < 0 or offset + size > seg.filesz:
            raise FormatError(f"{self.path}: read of {size:#x} bytes at offset {offset:#x} is outside the "
                              f"stored part of PT_LOAD {seg.index} ({seg.filesz:#x} bytes)")
        start = seg.offset + offset
        return self._mm[start:start + size]

    def notes_named(self, name: str, type: Optional[int] = None) -> list[Note]:
        return [n for n in self.notes if n.name == name and (type is None or n.type == type)]

    def vmcoreinfo(self) -> Optional[dict[str, str]]:
        """The VMCOREINFO note as a KEY -> VALUE dict, or None without one."""
        for n in self.notes:
            if n.name == "VMCOREINFO":
                text = n.desc.rstrip(b"\0").decode("latin-1")
                out = {}
                for line in text.splitlines():
                    key, sep, value = line.partition("=")
                    if sep:
                        out[key] = value
                return out
        return None
