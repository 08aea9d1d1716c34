"""Just enough ELF64 to read a kernel image: sections, segments, symbols, build-id.

Hand-written with `struct` rather than pyelftools because the warm path
(cache hit) must open an image in a few milliseconds; importing and driving
pyelftools alone costs more than that.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from ..errors import DebugInfoError, FormatError

ET_REL = 1
SHT_SYMTAB = 2
SHT_NOTE = 7
SHT_NOBITS = 8
SHT_DYNSYM = 11
SHF_COMPRESSED = 0x800
PT_LOAD = 1
PT_NOTE = 4
NT_GNU_BUILD_ID = 3
ELFCOMPRESS_ZLIB = 1

STT_NAMES = {0: "notype", 1: "object", 2: "func", 3: "section", 4: "file", 5: "common", 6: "tls"}
STB_NAMES = {0: "local", 1: "global", 2: "weak"}


@dataclass(frozen=True)
class Section:
    name: str
    type: int
    flags: int
    addr: int
    offset: int
    size: int
    link: int


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
        if len(data) < 64 or bytes(data[:4]) != b"\x7fELF":
            raise FormatError(f"{what}: not an ELF file")
        if data[4] != 2 or data[5] != 1:
            raise FormatError(f"{what}: only ELF64 little-endian images are supported")
        (self.type, self.machine, _ver, self.entry, phoff, shoff, _flags, _ehsize,
         phentsize, phnum, shentsize, shnum, shstrndx) = struct.unpack_from("<HHIQQQIHHHHHH", data, 16)
        size = len(data)
        if shoff and shnum == 0 and shoff + 64 <= size:
            shnum = struct.unpack_from("<Q", data, shoff + 32)[0]  # extended numbering
        if shstrndx == 0xFFFF and shoff + 64 <= size:
            shstrndx = struct.unpack_from("<I", data, shoff + 40)[0]
        if shoff + shnum * 64 > size or phoff + phnum * 56 > size:
            raise FormatError(f"{what}: truncated ELF headers")
        raw = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
        names = b""
        if 0 < shstrndx < len(raw):
            s = raw[shstrndx]
            names = bytes(data[s[4]:s[4] + s[5]])
        self.sections: List[Section] = []
        for (nm, typ, flags, addr, off, sz, link, _info, _align, _ent) in raw:
            end = names.find(b"\0", nm)
            name = names[nm:end if end >= 0 else None].decode("utf-8", "replace") if nm < len(names) else ""
            if typ != SHT_NOBITS and off + sz > size:
                raise FormatError(f"{what}: section {name or '?'} runs past the end of the file")
            self.sections.append(Section(name, typ, flags, addr, off, sz, link))
        self._by_name: Dict[str, Section] = {}
        for sec in self.sections:
            self._by_name.setdefault(sec.name, sec)
        self.segments: List[Segment] = []
        self.note_segments: List[Tuple[int, int]] = []
        for i in range(phnum):
            (ptype, pflags, off, vaddr, paddr, filesz, memsz, _align) = struct.unpack_from(
                "<IIQQQQQQ", data, phoff + i * phentsize)
            if ptype == PT_LOAD:
                if off + filesz > size:
                    raise FormatError(f"{what}: segment at {vaddr:#x} runs past the end of the file")
                self.segments.append(Segment(vaddr, paddr, off, filesz, memsz, pflags))
            elif ptype == PT_NOTE:
                self.note_segments.append((off, filesz))

    def section(self, name: str) -> Optional[Section]:
        return self._by_name.get(name)

    def section_data(self, name: str) -> bytes:
        """Contents of a section (decompressed if SHF_COMPRESSED); b"" if absent."""
        sec = self._by_name.get(name)
        if sec is None or sec.type == SHT_NOBITS:
            return b""
        raw = bytes(self.data[sec.offset:sec.offset + sec.size])
        if sec.flags & SHF_COMPRESSED:
            if len(raw) < 24:
                raise FormatError(f"{self.what}: compressed section {name} is truncated")
            ch_type, _res, ch_size, _align = struct.unpack_from("<IIQQ", raw, 0)
            if ch_type != ELFCOMPRESS_ZLIB:
                raise DebugInfoError(f"{self.what}: section {name} uses an unsupported compression ({ch_type})")
            try:
                raw = zlib.decompress(raw[24:])
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
            found = _find_build_id(self.data, off, size)
            if found is not None:
                return found
        return None

    def symbols(self) -> List[Symbol]:
        """All named, defined symbols (locals included) from .symtab, else .dynsym."""
        table = next((s for s in self.sections if s.type == SHT_SYMTAB), None)
        if table is None:
            table = next((s for s in self.sections if s.type == SHT_DYNSYM), None)
        if table is None or table.link >= len(self.sections):
            return []
        strs = self.sections[table.link]
        strtab = bytes(self.data[strs.offset:strs.offset + strs.size])
        raw = bytes(self.data[table.offset:table.offset + table.size - table.size % 24])
        out: List[Symbol] = []
        for (nm, info, _other, shndx, value, size) in struct.iter_unpack("<IBBHQQ", raw):
            kind = info & 0xF
            if nm == 0 or shndx == 0 or kind in (3, 4):  # unnamed, undefined, section, file
                continue
            end = strtab.find(b"\0", nm)
            name = strtab[nm:end if end >= 0 else None].decode("utf-8", "replace")
            out.append(Symbol(name, value, size, STT_NAMES.get(kind, str(kind)),
                              STB_NAMES.get(info >> 4, str(info >> 4)), shndx))
        return out


def _find_build_id(data, off: int, size: int) -> Optional[bytes]:
    end = off + size
    while off + 12 <= end:
        namesz, descsz, ntype = struct.unpack_from("<III", data, off)
        name_off = off + 12
        desc_off = name_off + ((namesz + 3) & ~3)
        nxt = desc_off + ((descsz + 3) & ~3)
        if nxt > end:
            return None
        if ntype == NT_GNU_BUILD_ID and bytes(data[name_off:name_off + namesz]).rstrip(b"\0") == b"GNU":
            return bytes(data[desc_off:desc_off + descsz])
        off = nxt
    return None
