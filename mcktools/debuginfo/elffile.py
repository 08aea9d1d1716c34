"""Image-level view of an ELF64 kernel image: sections by name (decompressed),
PT_LOAD segments, symbols with locals, build-id.

The bytes are parsed by mcktools.formats.elf64 (the one ELF reading layer);
this module adds what an image reader wants on top: name lookup, zlib
section decompression, symbol rows with readable kinds, the build-id.  Both
stay `struct`-based rather than pyelftools or construct because the warm path
(cache hit) must open an image in a few milliseconds.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from ..errors import DebugInfoError, FormatError
from ..formats import elf64
from ..formats.elf64 import (ELFCOMPRESS_ZLIB, ET_REL, NT_GNU_BUILD_ID, PT_LOAD, PT_NOTE, SHF_COMPRESSED,
                             SHT_DYNSYM, SHT_NOBITS, SHT_NOTE, SHT_SYMTAB)
from ..formats.elf64 import SectionHeader as Section

# The ELF constants stay importable from here, where they used to be defined.
__all__ = ["ElfFile", "Section", "Segment", "Symbol", "STT_NAMES", "STB_NAMES", "ET_REL", "SHT_SYMTAB",
           "SHT_NOTE", "SHT_NOBITS", "SHT_DYNSYM", "SHF_COMPRESSED", "PT_LOAD", "PT_NOTE", "NT_GNU_BUILD_ID",
           "ELFCOMPRESS_ZLIB"]

STT_NAMES = {0: "notype", 1: "object", 2: "func", 3: "section", 4: "file", 5: "common", 6: "tls"}
STB_NAMES = {0: "local", 1: "global", 2: "weak"}


@dataclass(frozen=True)
class Segment:
    """A PT_LOAD program header."""

    vaddr: int
    paddr: int
    offset: int
    filesz: int
    memsz: int
    flags: int


@dataclass(frozen=True)
class Symbol:
    name: str
    value: int
    size: int
    kind: str  # "func", "object", "notype", ...
    binding: str  # "local", "global", "weak"
    section_index: int


class ElfFile:
    """Read-only view of an ELF64 little-endian file held in memory (bytes or mmap)."""

    def __init__(self, data, what: str = "image"):
        try:
            self._parse(data, what)
        except struct.error as exc:
            raise FormatError(f"{what}: malformed ELF headers ({exc})") from None

    def _parse(self, data, what: str) -> None:
        self.data = data
        self.what = what
        hdr = elf64.parse_ehdr(data, what)
        self.type, self.machine, self.entry = hdr.e_type, hdr.e_machine, hdr.e_entry
        size = len(data)
        self.sections: List[Section] = elf64.read_section_headers(data, hdr, what)
        for sec in self.sections:
            if sec.type != SHT_NOBITS and sec.offset + sec.size > size:
                raise FormatError(f"{what}: section {sec.name or '?'} runs past the end of the file")
        self._by_name: Dict[str, Section] = {}
        for sec in self.sections:
            self._by_name.setdefault(sec.name, sec)
        self.segments: List[Segment] = []
        self.note_segments: List[Tuple[int, int]] = []
        for ph in elf64.read_program_headers(data, hdr, what):
            if ph.type == PT_LOAD:
                if ph.offset + ph.filesz > size:
                    raise FormatError(f"{what}: segment at {ph.vaddr:#x} runs past the end of the file")
                self.segments.append(Segment(ph.vaddr, ph.paddr, ph.offset, ph.filesz, ph.memsz, ph.flags))
            elif ph.type == PT_NOTE:
                self.note_segments.append((ph.offset, ph.filesz))

    def section(self, name: str) -> Optional[Section]:
        return self._by_name.get(name)

    def section_data(self, name: str) -> bytes:
        """Contents of a section (decompressed if SHF_COMPRESSED); b"" if absent."""
        sec = self._by_name.get(name)
        if sec is None or sec.type == SHT_NOBITS:
            return b""
        raw = bytes(self.data[sec.offset:sec.offset + sec.size])
        if sec.flags & SHF_COMPRESSED:
            if len(raw) < elf64.CHDR_STRUCT.size:
                raise FormatError(f"{self.what}: compressed section {name} is truncated")
            ch_type, _res, ch_size, _align = elf64.CHDR_STRUCT.unpack_from(raw, 0)
            if ch_type != ELFCOMPRESS_ZLIB:
                raise DebugInfoError(f"{self.what}: section {name} uses an unsupported compression ({ch_type})")
            try:
                raw = zlib.decompress(raw[elf64.CHDR_STRUCT.size:])
            except zlib.error as exc:
                raise FormatError(f"{self.what}: section {name} does not decompress: {exc}") from None
            if len(raw) != ch_size:
                raise FormatError(f"{self.what}: section {name} decompresses to the wrong size")
        return raw

    def build_id(self) -> Optional[bytes]:
        """The NT_GNU_BUILD_ID descriptor from any note section or PT_NOTE segment."""
        places = [(s.offset, s.size) for s in self.sections if s.type == SHT_NOTE]
        places += self.note_segments
        for off, size in places:
            for note in elf64.iter_notes(self.data[off:off + size], strict=False):
                if note.type == NT_GNU_BUILD_ID and note.name == "GNU":
                    return note.desc
        return None

    def symbols(self) -> List[Symbol]:
        """All named, defined symbols (locals included) from .symtab, else .dynsym."""
        table = next((s for s in self.sections if s.type == SHT_SYMTAB), None)
        if table is None:
            table = next((s for s in self.sections if s.type == SHT_DYNSYM), None)
        if table is None or table.link >= len(self.sections):
            return []
        out: List[Symbol] = []
        for (name, value, size, info, _other, shndx) in elf64.iter_symbols(self.data, table,
                                                                          self.sections[table.link]):
            kind = info & 0xF
            if name is None or shndx == 0 or kind in (3, 4):  # unnamed, undefined, section, file
                continue
            out.append(Symbol(name, value, size, STT_NAMES.get(kind, str(kind)),
                              STB_NAMES.get(info >> 4, str(info >> 4)), shndx))
        return out
