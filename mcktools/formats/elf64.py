"""ELF64 little-endian structures: the one ELF reading layer of mcktools.

The dump formats (mcdump, ELF cores, vmcores) and the kernel-image view in
debuginfo.elffile all parse through here: the file header, section headers
(with extended numbering), program headers, notes and symbol table entries.
The schemas are `construct` definitions; the bulk section-table parser uses
an equivalent `struct` format because an mcdump can hold 70 000+ section
headers and per-record construct parsing would take seconds.  The construct schemas are built on first use (module __getattr__),
where their equivalence with the `struct` formats is checked: importing
construct costs ~40 ms, more than a whole `mcps` run may spend on imports, and
readers only need the `struct` formats.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterator, Optional

from ..errors import FormatError

ELF_MAGIC = b"\x7fELF"
ELFCLASS64 = 2
ELFDATA2LSB = 1
EV_CURRENT = 1

ET_REL = 1
ET_EXEC = 2
ET_CORE = 4
EM_NONE = 0
EM_X86_64 = 62

SHT_NULL = 0
SHT_PROGBITS = 1
SHT_SYMTAB = 2
SHT_STRTAB = 3
SHT_NOTE = 7
SHT_NOBITS = 8
SHT_DYNSYM = 11

SHF_WRITE = 0x1
SHF_ALLOC = 0x2
SHF_COMPRESSED = 0x800

ELFCOMPRESS_ZLIB = 1
NT_GNU_BUILD_ID = 3

PT_LOAD = 1
PT_NOTE = 4

# Extended numbering (ELF gABI): when the section count does not fit below
# SHN_LORESERVE, e_shnum is 0 and section 0's sh_size holds the count; when the
# string-table index does not fit, e_shstrndx is SHN_XINDEX and section 0's
# sh_link holds it.  Likewise e_phnum == PN_XNUM moves the segment count to
# section 0's sh_info.
SHN_UNDEF = 0
SHN_LORESERVE = 0xFF00
SHN_XINDEX = 0xFFFF
PN_XNUM = 0xFFFF

EHDR_SIZE = 64
SHDR_SIZE = 64
PHDR_SIZE = 56

def _schemas() -> dict:
    """The construct definitions (imported and built on first use)."""
    from construct import Bytes, Int8ul, Int16ul, Int32ul, Int64ul, Padding, Struct

    ehdr = Struct(
        "ei_magic" / Bytes(4),
        "ei_class" / Int8ul,
        "ei_data" / Int8ul,
        "ei_version" / Int8ul,
        "ei_osabi" / Int8ul,
        "ei_abiversion" / Int8ul,
        Padding(7),
        "e_type" / Int16ul,
        "e_machine" / Int16ul,
        "e_version" / Int32ul,
        "e_entry" / Int64ul,
        "e_phoff" / Int64ul,
        "e_shoff" / Int64ul,
        "e_flags" / Int32ul,
        "e_ehsize" / Int16ul,
        "e_phentsize" / Int16ul,
        "e_phnum" / Int16ul,
        "e_shentsize" / Int16ul,
        "e_shnum" / Int16ul,
        "e_shstrndx" / Int16ul,
    )
    shdr = Struct(
        "sh_name" / Int32ul,
        "sh_type" / Int32ul,
        "sh_flags" / Int64ul,
        "sh_addr" / Int64ul,
        "sh_offset" / Int64ul,
        "sh_size" / Int64ul,
        "sh_link" / Int32ul,
        "sh_info" / Int32ul,
        "sh_addralign" / Int64ul,
        "sh_entsize" / Int64ul,
    )
    phdr = Struct(
        "p_type" / Int32ul,
        "p_flags" / Int32ul,
        "p_offset" / Int64ul,
        "p_vaddr" / Int64ul,
        "p_paddr" / Int64ul,
        "p_filesz" / Int64ul,
        "p_memsz" / Int64ul,
        "p_align" / Int64ul,
    )
    nhdr = Struct(
        "n_namesz" / Int32ul,
        "n_descsz" / Int32ul,
        "n_type" / Int32ul,
    )
    assert SHDR_STRUCT.size == shdr.sizeof() == SHDR_SIZE
    assert PHDR_STRUCT.size == phdr.sizeof() == PHDR_SIZE
    assert EHDR_STRUCT.size == ehdr.sizeof() == EHDR_SIZE
    return {"Elf64_Ehdr": ehdr, "Elf64_Shdr": shdr, "Elf64_Phdr": phdr, "Elf64_Nhdr": nhdr}


_SCHEMAS: dict = {}


def __getattr__(name: str):
    """Elf64_Ehdr / Elf64_Shdr / Elf64_Phdr / Elf64_Nhdr, built on first access."""
    if name in ("Elf64_Ehdr", "Elf64_Shdr", "Elf64_Phdr", "Elf64_Nhdr"):
        if not _SCHEMAS:
            _SCHEMAS.update(_schemas())
        return _SCHEMAS[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Same layouts as the construct schemas, for fast parsing and building.
SHDR_STRUCT = struct.Struct("<IIQQQQIIQQ")
PHDR_STRUCT = struct.Struct("<IIQQQQQQ")
EHDR_STRUCT = struct.Struct("<4sBBBBB7xHHIQQQIHHHHHH")
SYM_STRUCT = struct.Struct("<IBBHQQ")  # Elf64_Sym: name, info, other, shndx, value, size
CHDR_STRUCT = struct.Struct("<IIQQ")  # Elf64_Chdr: type, reserved, size, addralign
NHDR_STRUCT = struct.Struct("<III")  # Elf64_Nhdr: namesz, descsz, type
_EHDR_FIELDS = ("ei_magic", "ei_class", "ei_data", "ei_version", "ei_osabi", "ei_abiversion", "e_type",
                "e_machine", "e_version", "e_entry", "e_phoff", "e_shoff", "e_flags", "e_ehsize",
                "e_phentsize", "e_phnum", "e_shentsize", "e_shnum", "e_shstrndx")


class ElfHeader:
    """A parsed ELF64 file header with the construct schema's field names as attributes."""

    __slots__ = _EHDR_FIELDS

    def __init__(self, values):
        for name, v in zip(_EHDR_FIELDS, values):
            setattr(self, name, v)

    def __getitem__(self, name: str):
        return getattr(self, name)

    def __repr__(self) -> str:
        return "ElfHeader(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in _EHDR_FIELDS) + ")"


@dataclass  # not frozen: built by the tens of thousands, and frozen init is 2x slower
class SectionHeader:
    """One section header row, with its resolved name."""

    index: int
    name: str
    type: int
    flags: int
    addr: int
    offset: int
    size: int
    link: int
    info: int
    addralign: int
    entsize: int


@dataclass
class ProgramHeader:
    """One program header row."""

    index: int
    type: int
    flags: int
    offset: int
    vaddr: int
    paddr: int
    filesz: int
    memsz: int
    align: int


def parse_ehdr(buf, what: str = "file"):
    """Parse and sanity-check an ELF64 LSB header from the start of `buf`."""
    if len(buf) < 4 or bytes(buf[:4]) != ELF_MAGIC:
        raise FormatError(f"{what} is not an ELF file (bad magic)")
    if len(buf) < EHDR_SIZE:
        raise FormatError(f"{what} is truncated: {len(buf)} bytes, shorter than an ELF64 header")
    hdr = ElfHeader(EHDR_STRUCT.unpack_from(bytes(buf[:EHDR_SIZE])))
    if hdr.ei_class != ELFCLASS64:
        raise FormatError(f"{what} is not a 64-bit ELF file (class {hdr.ei_class})")
    if hdr.ei_data != ELFDATA2LSB:
        raise FormatError(f"{what} is not a little-endian ELF file (data encoding {hdr.ei_data})")
    return hdr


def build_ehdr(**fields) -> bytes:
    """An ELF64 LSB header; unspecified fields default to 0 / the usual sizes."""
    values = dict(
        ei_magic=ELF_MAGIC, ei_class=ELFCLASS64, ei_data=ELFDATA2LSB, ei_version=EV_CURRENT,
        ei_osabi=0, ei_abiversion=0, e_type=0, e_machine=0, e_version=EV_CURRENT, e_entry=0,
        e_phoff=0, e_shoff=0, e_flags=0, e_ehsize=EHDR_SIZE, e_phentsize=0, e_phnum=0,
        e_shentsize=0, e_shnum=0, e_shstrndx=0,
    )
    values.update(fields)
    return EHDR_STRUCT.pack(*(values[name] for name in _EHDR_FIELDS))


def _cstr(table, offset: int, what: str) -> str:
    """NUL-terminated string at `offset` of a string table."""
    if offset >= len(table):
        raise FormatError(f"{what}: name offset {offset:#x} is outside the section name table")
    end = table.find(b"\0", offset)
    if end < 0:
        raise FormatError(f"{what}: section name at {offset:#x} is not NUL-terminated")
    return bytes(table[offset:end]).decode("latin-1")


def read_section_headers(buf, hdr, what: str = "file") -> list[SectionHeader]:
    """All section headers of an ELF64 file held in `buf` (bytes or mmap),
    resolving extended numbering and names; raises FormatError on anything
    that points outside the file."""
    size = len(buf)
    shoff = hdr.e_shoff
    if shoff == 0:
        return []
    if hdr.e_shentsize != SHDR_SIZE:
        raise FormatError(f"{what}: section header size is {hdr.e_shentsize}, expected {SHDR_SIZE}")
    if shoff + SHDR_SIZE > size:
        raise FormatError(f"{what} is truncated: section header table at {shoff:#x} is past the end "
                          f"of the file ({size:#x} bytes)")
    first = SHDR_STRUCT.unpack_from(buf, shoff)
    shnum = hdr.e_shnum
    if shnum == 0:
        shnum = first[5]  # sh_size of section 0
    shstrndx = hdr.e_shstrndx
    if shstrndx == SHN_XINDEX:
        shstrndx = first[6]  # sh_link of section 0
    if shnum == 0:
        return []
    end = shoff + shnum * SHDR_SIZE
    if end > size:
        raise FormatError(f"{what} is truncated: {shnum} section headers at {shoff:#x} end at {end:#x}, "
                          f"past the end of the file ({size:#x} bytes)")
    raw = list(SHDR_STRUCT.iter_unpack(memoryview(buf)[shoff:end]))
    if shstrndx == SHN_UNDEF or shstrndx >= shnum:
        raise FormatError(f"{what}: section name table index {shstrndx} is invalid ({shnum} sections)")
    st = raw[shstrndx]
    st_off, st_size = st[4], st[5]
    if st_off + st_size > size:
        raise FormatError(f"{what} is truncated: section name table at {st_off:#x}+{st_size:#x} is past "
                          f"the end of the file ({size:#x} bytes)")
    table = bytes(buf[st_off:st_off + st_size])
    out = []
    for i, r in enumerate(raw):
        name = _cstr(table, r[0], f"{what} section {i}") if i else ""
        out.append(SectionHeader(i, name, r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9]))
    return out


def read_program_headers(buf, hdr, what: str = "file") -> list[ProgramHeader]:
    """All program headers, resolving PN_XNUM; FormatError when they leave the file."""
    size = len(buf)
    phnum = hdr.e_phnum
    phoff = hdr.e_phoff
    if phoff == 0 or phnum == 0:
        return []
    if hdr.e_phentsize != PHDR_SIZE:
        raise FormatError(f"{what}: program header size is {hdr.e_phentsize}, expected {PHDR_SIZE}")
    if phnum == PN_XNUM:
        if hdr.e_shoff == 0 or hdr.e_shoff + SHDR_SIZE > size:
            raise FormatError(f"{what}: extended program header count but no section 0 to hold it")
        phnum = SHDR_STRUCT.unpack_from(buf, hdr.e_shoff)[7]  # sh_info of section 0
    end = phoff + phnum * PHDR_SIZE
    if end > size:
        raise FormatError(f"{what} is truncated: {phnum} program headers at {phoff:#x} end at {end:#x}, "
                          f"past the end of the file ({size:#x} bytes)")
    return [ProgramHeader(i, *r) for i, r in enumerate(PHDR_STRUCT.iter_unpack(memoryview(buf)[phoff:end]))]


def build_shdr(name: int, type: int, flags: int = 0, addr: int = 0, offset: int = 0, size: int = 0,
               link: int = 0, info: int = 0, addralign: int = 1, entsize: int = 0) -> bytes:
    """One packed section header (struct-based for speed, see module docstring)."""
    return SHDR_STRUCT.pack(name, type, flags, addr, offset, size, link, info, addralign, entsize)


def align_up(value: int, alignment: int) -> int:
    return (value + alignment - 1) & ~(alignment - 1)


@dataclass(frozen=True)
class Note:
    """One ELF note: name (without the NUL), type, descriptor bytes."""

    name: str
    type: int
    desc: bytes
    offset: Optional[int] = None  # file offset of the descriptor, when known


def iter_notes(data, align: int = 4, base_offset: int | None = None, what: str = "note segment",
               strict: bool = True) -> Iterator[Note]:
    """Walk a PT_NOTE / SHT_NOTE payload note by note.  ELF64 cores written by
    Linux, gdb and QEMU pad name and descriptor to 4 bytes, not 8.  With
    strict=False a note that does not fit ends the walk instead of raising
    (a kernel image with a damaged note is still worth opening)."""
    pos = 0
    n = len(data)
    while pos < n:
        if n - pos < 12:
            # Trailing padding shorter than a header is tolerated only if it is zeros.
            if strict and any(data[pos:]):
                raise FormatError(f"{what}: truncated note header at offset {pos:#x}")
            return
        namesz, descsz, ntype = NHDR_STRUCT.unpack_from(data, pos)
        name_start = pos + 12
        desc_start = name_start + align_up(namesz, align)
        desc_end = desc_start + descsz
        if desc_end > n or name_start + namesz > n:
            if not strict:
                return
            raise FormatError(f"{what}: note at offset {pos:#x} (name {namesz} bytes, desc {descsz} bytes) "
                              f"runs past the end of the segment ({n:#x} bytes)")
        name = bytes(data[name_start:name_start + namesz]).rstrip(b"\0").decode("latin-1")
        desc = bytes(data[desc_start:desc_end])
        yield Note(name, ntype, desc, None if base_offset is None else base_offset + desc_start)
        pos = align_up(desc_end, align)


def parse_notes(data: bytes, align: int = 4, base_offset: int | None = None, what: str = "note segment") -> list[Note]:
    """All notes of a PT_NOTE / SHT_NOTE payload; FormatError on a truncated one."""
    return list(iter_notes(data, align, base_offset, what))


def iter_symbols(buf, table: SectionHeader,
                 strtab: SectionHeader) -> Iterator[tuple[Optional[str], int, int, int, int, int]]:
    """(name, value, size, info, other, shndx) for every Elf64_Sym of a
    SHT_SYMTAB / SHT_DYNSYM section; `strtab` is the section its sh_link
    names.  name is None for an unnamed entry (st_name 0); names are decoded
    leniently (UTF-8, bad bytes replaced) because odd symbol tables should
    not stop an image from opening."""
    names = bytes(buf[strtab.offset:strtab.offset + strtab.size])
    raw = bytes(buf[table.offset:table.offset + table.size - table.size % SYM_STRUCT.size])
    for (nm, info, other, shndx, value, size) in SYM_STRUCT.iter_unpack(raw):
        if nm:
            end = names.find(b"\0", nm)
            name = names[nm:end if end >= 0 else None].decode("utf-8", "replace")
        else:
            name = None
        yield name, value, size, info, other, shndx
