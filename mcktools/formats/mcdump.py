"""The IHK/McKernel dump file ("mcdump"): mmap-based reader and streaming writer.

The file is what libbfd makes of `ihkosctl N dump` (ABI reference §1): an ELF64
ET_REL with no program headers whose sections are found by name: optional
`date`, `hostname`, `user` text, the `physchunks` table, one `physmemN` per
chunk holding its physical memory, and possibly extra sections (e.g. `kmsg`).
This module knows bytes only: what a chunk *means* is the sources' business.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence

from ..errors import FormatError, OutputError
from . import elf64
from .elf64 import SectionHeader
from .mapped import MappedFile, map_file
from .safe_output import atomic_output, check_target

PHYSCHUNKS = "physchunks"
PHYSMEM_PREFIX = "physmem"
# dump_mem_chunks_t (§1.4): int nr_chunks; 4 bytes padding; u64 kernel_base;
# u64 phys_start; then {u64 addr; u64 size} per chunk.
CHUNKS_HEADER = struct.Struct("<i4xQQ")
CHUNK_ENTRY = struct.Struct("<QQ")
# The interactive variant (§1.6) writes a single zero-filled page per physmemN.
INTERACTIVE_SECTION_SIZE = 4096
# ihkosctl copies chunk data in blocks of at most 1 MiB; so do we.
COPY_BLOCK = 1 << 20
TEXT_SECTIONS = ("date", "hostname", "user")
_U64 = 1 << 64

ChunkReader = Callable[[int, int], bytes]


@dataclass
class DumpChunk:
    """One physical-memory chunk: `size` bytes at PA `addr`, stored as section
    `physmem<index>` at `file_offset` (`file_size` bytes: equal to `size`
    except in an interactive dump, where it is one page of zeros)."""

    index: int
    addr: int
    size: int
    file_offset: int
    file_size: int

    @property
    def end(self) -> int:
        return self.addr + self.size


class McDump(MappedFile):
    """An opened mcdump file.  Use `McDump.open(path)`, ideally as a context manager."""

    def __init__(self, path: str, fileobj, mm, sections: list[SectionHeader]):
        self.path = path
        self._file = fileobj
        self._mm = mm
        self.file_size = len(mm)
        self.sections = sections
        self._by_name: dict[str, SectionHeader] = {}
        for sh in sections[1:]:
            self._by_name.setdefault(sh.name, sh)
        self._parse_metadata()

    # -- opening -------------------------------------------------------------

    @classmethod
    def open(cls, path: "str | os.PathLike[str]") -> "McDump":
        path = os.fspath(path)
        f, mm = map_file(path, "an mcdump")
        try:
            hdr = elf64.parse_ehdr(mm, path)
            sections = elf64.read_section_headers(mm, hdr, path)
            return cls(path, f, mm, sections)
        except BaseException:
            mm.close()
            f.close()
            raise

    def __repr__(self) -> str:
        return f"McDump({self.path!r}, chunks={len(self.chunks)}, interactive={self.interactive})"

    # -- validation ----------------------------------------------------------

    def _section_bytes(self, sh: SectionHeader) -> bytes:
        if sh.type == elf64.SHT_NOBITS:
            return b""
        if sh.offset + sh.size > self.file_size:
            raise FormatError(f"{self.path} is truncated: section {sh.name!r} at {sh.offset:#x}+{sh.size:#x} "
                              f"extends past the end of the file ({self.file_size:#x} bytes)")
        return self._mm[sh.offset:sh.offset + sh.size]

    def _parse_metadata(self) -> None:
        p = self.path
        for sh in self.sections[1:]:
            if sh.type != elf64.SHT_NOBITS and sh.offset + sh.size > self.file_size:
                raise FormatError(f"{p} is truncated: section {sh.name!r} at {sh.offset:#x}+{sh.size:#x} "
                                  f"extends past the end of the file ({self.file_size:#x} bytes)")
        pc = self._by_name.get(PHYSCHUNKS)
        if pc is None:
            raise FormatError(f"{p} is not an mcdump: it has no {PHYSCHUNKS!r} section")
        blob = self._section_bytes(pc)
        if len(blob) < CHUNKS_HEADER.size:
            raise FormatError(f"{p}: {PHYSCHUNKS!r} section is {len(blob)} bytes, shorter than its "
                              f"{CHUNKS_HEADER.size}-byte header")
        nr, self.kernel_base, self.phys_start = CHUNKS_HEADER.unpack_from(blob, 0)
        if nr < 0:
            raise FormatError(f"{p}: {PHYSCHUNKS!r} claims a negative chunk count ({nr})")
        want = CHUNKS_HEADER.size + CHUNK_ENTRY.size * nr
        if len(blob) != want:
            raise FormatError(f"{p}: {PHYSCHUNKS!r} lists {nr} chunks, which needs {want} bytes, "
                              f"but the section has {len(blob)}")
        n_physmem = sum(1 for name in self._by_name if _physmem_index(name) is not None)
        if n_physmem != nr:
            raise FormatError(f"{p}: {PHYSCHUNKS!r} lists {nr} chunks but the file has {n_physmem} "
                              f"physmem sections")
        entries = list(CHUNK_ENTRY.iter_unpack(blob[CHUNKS_HEADER.size:]))
        secs = []
        for i, (addr, size) in enumerate(entries):
            sh = self._by_name.get(f"{PHYSMEM_PREFIX}{i}")
            if sh is None:
                raise FormatError(f"{p}: section {PHYSMEM_PREFIX}{i} is missing ({PHYSCHUNKS!r} lists {nr} chunks)")
            if sh.type == elf64.SHT_NOBITS:
                raise FormatError(f"{p}: section {sh.name} has no contents in the file (SHT_NOBITS)")
            if addr + size > _U64:
                raise FormatError(f"{p}: chunk {i} at {addr:#x} with size {size:#x} wraps around the address space")
            if sh.addr != addr:
                raise FormatError(f"{p}: section {sh.name} has address {sh.addr:#x} but {PHYSCHUNKS!r} "
                                  f"says chunk {i} starts at {addr:#x}")
            secs.append(sh)
        # An interactive dump stores one page per chunk whatever the chunk size.
        sizes_match = all(sh.size == size for sh, (_, size) in zip(secs, entries))
        self.interactive = bool(entries) and not sizes_match and all(
            sh.size == INTERACTIVE_SECTION_SIZE for sh in secs)
        if not sizes_match and not self.interactive:
            for i, (sh, (addr, size)) in enumerate(zip(secs, entries)):
                if sh.size != size:
                    raise FormatError(f"{p}: section {sh.name} holds {sh.size:#x} bytes but {PHYSCHUNKS!r} "
                                      f"says chunk {i} is {size:#x} bytes")
        self.chunks = [DumpChunk(i, addr, size, sh.offset, sh.size)
                       for i, (sh, (addr, size)) in enumerate(zip(secs, entries))]
        ordered = sorted(self.chunks, key=lambda c: c.addr)
        for a, b in zip(ordered, ordered[1:]):
            if b.addr < a.end:
                raise FormatError(f"{p}: chunks {a.index} [{a.addr:#x}, {a.end:#x}) and {b.index} "
                                  f"[{b.addr:#x}, {b.end:#x}) overlap")
        self.date = self._text("date")
        self.hostname = self._text("hostname")
        self.user = self._text("user")

    def _text(self, name: str) -> Optional[str]:
        data = self.section(name)
        if data is None:
            return None
        return data.rstrip(b"\0").decode("utf-8", errors="replace")

    # -- access --------------------------------------------------------------

    def section(self, name: str) -> Optional[bytes]:
        """Contents of the section called `name`, or None if there is none."""
        sh = self._by_name.get(name)
        if sh is None:
            return None
        return self._section_bytes(sh)

    def section_header(self, name: str) -> Optional[SectionHeader]:
        return self._by_name.get(name)

    @property
    def extra_section_names(self) -> list[str]:
        """Sections other than the standard ones (e.g. `kmsg`), in file order."""
        std = {PHYSCHUNKS, ".shstrtab", *TEXT_SECTIONS}
        return [sh.name for sh in self.sections[1:]
                if sh.name not in std and _physmem_index(sh.name) is None]

    def read_chunk(self, i: int, offset: int, size: int) -> bytes:
        """`size` bytes at `offset` inside chunk `i` (raises FormatError for an
        interactive dump, which holds no memory, or a range outside the chunk)."""
        if self._mm is None:
            raise FormatError(f"{self.path}: dump is closed")
        c = self.chunks[i]
        if self.interactive:
            raise FormatError(f"{self.path} is an interactive dump: it holds metadata only, no memory contents")
        if offset < 0 or size < 0 or offset + size > c.size:
            raise FormatError(f"{self.path}: read of {size:#x} bytes at offset {offset:#x} is outside chunk {i} "
                              f"({c.size:#x} bytes)")
        start = c.file_offset + offset
        return self._mm[start:start + size]


def _physmem_index(name: str) -> Optional[int]:
    if not name.startswith(PHYSMEM_PREFIX):
        return None
    digits = name[len(PHYSMEM_PREFIX):]
    if not digits.isdigit() or (len(digits) > 1 and digits[0] == "0"):
        return None
    return int(digits)


# -- writer -------------------------------------------------------------------


@dataclass
class _Out:
    name: str
    flags: int
    addr: int
    size: int
    type: int = elf64.SHT_PROGBITS
    data: Optional[bytes] = None              # small sections held in memory
    reader: Optional[ChunkReader] = None      # chunk data streamed at write time
    offset: int = 0
    name_off: int = 0


def _text_bytes(value, what: str) -> bytes:
    data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    return data


def write_mcdump(path: "str | os.PathLike[str]", chunks: Sequence[tuple[int, int, ChunkReader]], *,
                 kernel_base: int, phys_start: int = 0, date: "str | bytes | None" = None,
                 hostname: "str | bytes | None" = None, user: "str | bytes | None" = None,
                 extra_sections: Iterable[tuple[str, bytes]] = (), interactive: bool = False,
                 overwrite: bool = False) -> int:
    """Write an mcdump laid out like libbfd's output for `ihkosctl dump` and
    return its size in bytes.

    `chunks` is a list of `(addr, size, reader)`; `reader(offset, size)` returns
    chunk bytes and is called in blocks of at most 1 MiB so the data streams.
    `extra_sections` are `(name, data)` pairs placed after the physmem sections.
    With `interactive=True` no reader is called and every physmemN is one page
    of zeros.  The file appears under its name only when complete; an existing
    file is kept unless `overwrite=True` (OutputError otherwise).
    """
    path = os.fspath(path)
    check_target(path, overwrite)
    for name, value in (("kernel_base", kernel_base), ("phys_start", phys_start)):
        if not 0 <= value < _U64:
            raise OutputError(f"{name} {value:#x} does not fit in 64 bits")

    sections: list[_Out] = []
    for name, value in zip(TEXT_SECTIONS, (date, hostname, user)):
        if value is not None:
            data = _text_bytes(value, name)
            sections.append(_Out(name, elf64.SHF_WRITE, 0, len(data), data=data))
    chunk_list = list(chunks)
    if len(chunk_list) >= 1 << 31:
        raise OutputError(f"too many chunks ({len(chunk_list)})")
    table = bytearray(CHUNKS_HEADER.pack(len(chunk_list), kernel_base, phys_start))
    for i, (addr, size, _) in enumerate(chunk_list):
        if addr < 0 or size < 0 or addr + size > _U64:
            raise OutputError(f"chunk {i} ({addr:#x}, {size:#x}) is not a valid physical range")
        table += CHUNK_ENTRY.pack(addr, size)
    sections.append(_Out(PHYSCHUNKS, elf64.SHF_WRITE | elf64.SHF_ALLOC, 0, len(table), data=bytes(table)))
    for i, (addr, size, reader) in enumerate(chunk_list):
        if interactive:
            sections.append(_Out(f"{PHYSMEM_PREFIX}{i}", elf64.SHF_WRITE | elf64.SHF_ALLOC, addr,
                                 INTERACTIVE_SECTION_SIZE, data=bytes(INTERACTIVE_SECTION_SIZE)))
        else:
            sections.append(_Out(f"{PHYSMEM_PREFIX}{i}", elf64.SHF_WRITE | elf64.SHF_ALLOC, addr, size,
                                 reader=reader))
    reserved = {PHYSCHUNKS, ".shstrtab", *TEXT_SECTIONS}
    for name, data in extra_sections:
        if not name or "\0" in name or name in reserved or _physmem_index(name) is not None:
            raise OutputError(f"extra section name {name!r} is empty, reserved or contains NUL")
        data = bytes(data)
        sections.append(_Out(name, elf64.SHF_WRITE, 0, len(data), data=data))

    # Section name table: leading NUL, then every name once.
    strtab = bytearray(b"\0")
    for s in sections:
        s.name_off = len(strtab)
        strtab += s.name.encode("utf-8") + b"\0"
    shstr = _Out(".shstrtab", 0, 0, 0, type=elf64.SHT_STRTAB)
    shstr.name_off = len(strtab)
    strtab += b".shstrtab\0"
    shstr.data = bytes(strtab)
    shstr.size = len(strtab)
    sections.append(shstr)

    # Layout: contents packed from 0x40 with alignment 1, header table aligned to 8.
    pos = elf64.EHDR_SIZE
    for s in sections:
        s.offset = pos
        pos += s.size
    shoff = elf64.align_up(pos, 8)
    shnum = len(sections) + 1                  # plus the null section 0
    shstrndx = shnum - 1
    ext_num = shnum >= elf64.SHN_LORESERVE
    ext_str = shstrndx >= elf64.SHN_LORESERVE
    ehdr = elf64.build_ehdr(
        e_type=elf64.ET_REL, e_machine=elf64.EM_NONE, e_shoff=shoff, e_shentsize=elf64.SHDR_SIZE,
        e_shnum=0 if ext_num else shnum, e_shstrndx=elf64.SHN_XINDEX if ext_str else shstrndx)
    shdrs = [elf64.build_shdr(0, elf64.SHT_NULL, size=shnum if ext_num else 0,
                              link=shstrndx if ext_str else 0, addralign=0)]
    shdrs += [elf64.build_shdr(s.name_off, s.type, s.flags, s.addr, s.offset, s.size) for s in sections]
    total = shoff + shnum * elf64.SHDR_SIZE

    with atomic_output(path, overwrite=overwrite) as out:
        out.write(ehdr)
        for s in sections:
            if s.data is not None:
                out.write(s.data)
            else:
                _copy_chunk(out, s)
        out.write(bytes(shoff - pos))
        out.write(b"".join(shdrs))
    return total


def _copy_chunk(out, s: _Out) -> None:
    done = 0
    while done < s.size:
        n = min(COPY_BLOCK, s.size - done)
        data = s.reader(done, n)
        if len(data) != n:
            raise FormatError(f"reader for {s.name} returned {len(data)} bytes at offset {done:#x}, "
                              f"expected {n}")
        out.write(data)
        done += n
