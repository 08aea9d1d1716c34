"""ELF core files and ELF vmcores (Linux /proc/vmcore, makedumpfile -E, QEMU
dump-guest-memory, gdb gcore): PT_LOAD segments and PT_NOTE notes, via mmap;
and `write_elfcore`, a streaming writer in the /proc/vmcore layout.

Filtered dumps have PT_LOAD segments with p_filesz < p_memsz; the tail is
memory the writer left out, and this reader reports it as such (it never
hands out the missing bytes as zeros: see `ElfCore.read_segment`).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence

from ..errors import FormatError, OutputError
from . import elf64
from .elf64 import Note
from .mapped import MappedFile, map_file
from .safe_output import atomic_output, check_target

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


class ElfCore(MappedFile):
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
        f, mm = map_file(path, "an ELF core")
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


# -- writer -------------------------------------------------------------------

PF_X, PF_W, PF_R = 1, 2, 4
_COPY_BLOCK = 1 << 20


@dataclass(frozen=True)
class CoreSegment:
    """A PT_LOAD to write: `memsz` bytes at vaddr/paddr, of which the first
    `filesz` (default: all) come from `reader(offset, size)`; the rest is
    marked filtered (p_filesz < p_memsz)."""

    vaddr: int
    paddr: int
    memsz: int
    reader: Optional[Callable[[int, int], bytes]] = None
    filesz: Optional[int] = None
    flags: int = PF_R | PF_W | PF_X


def build_note(name: str, ntype: int, desc: bytes) -> bytes:
    """One ELF note with 4-byte padding (what Linux, gdb and QEMU write for ELF64 cores)."""
    nb = name.encode() + b"\0"
    return (struct.pack("<III", len(nb), len(desc), ntype) + nb + bytes(-len(nb) % 4)
            + desc + bytes(-len(desc) % 4))


def write_elfcore(path: "str | os.PathLike[str]", segments: Sequence[CoreSegment],
                  notes: Iterable[tuple[str, int, bytes]] = (), *, machine: int = elf64.EM_X86_64,
                  overwrite: bool = False, data_align: int = 4096) -> int:
    """Write an ELF64 ET_CORE in the Linux /proc/vmcore layout (program headers
    right after the ELF header, then one PT_NOTE, then segment data from a
    page-aligned offset), streaming segment data; returns the file size.

    More than 65534 program headers use PN_XNUM with the real count in section
    0's sh_info.  Same output discipline as the mcdump writer (temp + rename).
    """
    path = os.fspath(path)
    check_target(path, overwrite)
    note_blob = b"".join(build_note(n, t, d) for n, t, d in notes)
    segs = list(segments)
    for s in segs:
        fs = s.memsz if s.filesz is None else s.filesz
        if not 0 <= fs <= s.memsz or (fs and s.reader is None):
            raise OutputError(f"invalid core segment at {s.vaddr:#x}: filesz {fs:#x}, memsz {s.memsz:#x}")
    nph = len(segs) + (1 if note_blob else 0)
    xnum = nph >= elf64.PN_XNUM
    phoff = elf64.EHDR_SIZE
    shoff = phoff + nph * elf64.PHDR_SIZE if xnum else 0
    note_off = (shoff + elf64.SHDR_SIZE) if xnum else phoff + nph * elf64.PHDR_SIZE
    data_off = elf64.align_up(note_off + len(note_blob), data_align)
    phdrs = []
    if note_blob:
        phdrs.append(elf64.PHDR_STRUCT.pack(elf64.PT_NOTE, 0, note_off, 0, 0, len(note_blob), len(note_blob), 0))
    pos = data_off
    for s in segs:
        fs = s.memsz if s.filesz is None else s.filesz
        phdrs.append(elf64.PHDR_STRUCT.pack(elf64.PT_LOAD, s.flags, pos, s.vaddr, s.paddr, fs, s.memsz, 0))
        pos += fs
    ehdr = elf64.build_ehdr(e_type=elf64.ET_CORE, e_machine=machine, e_phoff=phoff, e_shoff=shoff,
                            e_phentsize=elf64.PHDR_SIZE, e_phnum=elf64.PN_XNUM if xnum else nph,
                            e_shentsize=elf64.SHDR_SIZE if xnum else 0, e_shnum=1 if xnum else 0)
    with atomic_output(path, overwrite=overwrite) as out:
        out.write(ehdr)
        out.write(b"".join(phdrs))
        if xnum:
            out.write(elf64.build_shdr(0, elf64.SHT_NULL, info=nph, addralign=0))
        out.write(note_blob)
        out.write(bytes(data_off - note_off - len(note_blob)))
        for s in segs:
            fs = s.memsz if s.filesz is None else s.filesz
            done = 0
            while done < fs:
                n = min(_COPY_BLOCK, fs - done)
                data = s.reader(done, n)
                if len(data) != n:
                    raise FormatError(f"reader for the segment at {s.vaddr:#x} returned {len(data)} bytes at "
                                      f"offset {done:#x}, expected {n}")
                out.write(data)
                done += n
    return pos
