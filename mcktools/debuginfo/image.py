"""`Image`: one kernel image file with its symbols, build-id, segments and DWARF types.

Opening is cheap when the image was seen before: the DWARF index comes from
this process's memory or from the on-disk cache (see cache.py), and the ELF
headers are read with a few `struct` calls.  Only a first open of a new image
scans .debug_info.
"""

from __future__ import annotations

import bisect
import hashlib
import mmap
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

from ..errors import DebugInfoError, FormatError, UnreadableAddress
from . import cache as _cache
from . import dwarfscan, index as _index
from .elffile import ElfFile, Segment, Symbol
from .index import K_ARRAY, K_BASE, K_ENUM, K_FUNC, K_PTR, K_STRUCT, K_TYPEDEF, K_VOID
from .types import (ArrayType, BaseType, EnumType, FunctionType, Member, PointerType, StructType,
                    Type, TypedefType, VoidType, strip_typedefs, type_name)

# Process-wide counters so tests and benchmarks can see where an index came from.
STATS = {"built": 0, "disk_hits": 0, "memory_hits": 0, "cache_write_failures": 0}
_MEMORY: Dict[str, dict] = {}


def clear_memory_cache() -> None:
    """Forget indexes held by this process (the disk cache is untouched)."""
    _MEMORY.clear()


@dataclass(frozen=True)
class Variable:
    name: str
    address: int
    type: Type


_PAYLOAD_KEYS = frozenset({"build_id", "symbols", "has_dwarf", "types", "names", "variables", "enumerators"})
_QUALIFIERS = frozenset({"const", "volatile", "restrict", "_Atomic"})
_PATH_TOKEN = re.compile(r"\s*(?:\.?\s*([A-Za-z_][A-Za-z0-9_]*)|\[\s*(\d+|0x[0-9a-fA-F]+)\s*\])")


class Image:
    """A kernel image (ELF) and its debug information."""

    def __init__(self, path: Path, data, elf: ElfFile, payload: dict, index_source: str,
                 cache_path: Optional[Path]):
        self.path = path
        self._data = data
        self._elf = elf
        self.build_id: Optional[bytes] = payload["build_id"]
        self.segments: List[Segment] = list(elf.segments)
        self.index_source = index_source  # "built", "disk" or "memory"
        self.cache_path = cache_path
        self._types: tuple = payload["types"]
        self._names: Dict[str, int] = payload["names"]
        self._variables: Dict[str, tuple] = payload["variables"]
        self._enumerators: Dict[str, Tuple[int, int]] = payload["enumerators"]
        self._raw_symbols: tuple = payload["symbols"]
        self.has_dwarf: bool = payload["has_dwarf"]
        self._objects: Dict[int, Type] = {}
        self._building: set = set()
        self._symbol_map: Optional[Dict[str, int]] = None
        self._sorted: Optional[Tuple[List[int], List[tuple]]] = None
        self._base_aliases: Optional[Dict[str, int]] = None

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: Union[str, os.PathLike], *, use_cache: bool = True,
             cache_dir: Union[str, os.PathLike, None] = None) -> "Image":
        """Open an image; the DWARF index is built once per image content and cached."""
        path = Path(path)
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise FormatError(f"{path}: empty file, not a kernel image")
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            elf = ElfFile(data, str(path))
            build_id = elf.build_id()
            digest = hashlib.sha256(data).hexdigest()
            key = _cache.cache_key(build_id, size, digest)
            directory = Path(cache_dir) if cache_dir is not None else _cache.cache_dir()
            cpath = _cache.cache_file(directory, key) if use_cache else None
            payload = _MEMORY.get(key) if use_cache else None
            source = "memory"
            if payload is not None:
                STATS["memory_hits"] += 1
            else:
                if cpath is not None:
                    payload = _cache.load(cpath, key)
                    if payload is not None and not _PAYLOAD_KEYS <= payload.keys():
                        payload = None  # written by something else: rebuild
                    source = "disk"
                if payload is not None:
                    STATS["disk_hits"] += 1
                else:
                    payload = _build_payload(elf, build_id, str(path))
                    source = "built"
                    STATS["built"] += 1
                    if cpath is not None and not _cache.store(cpath, key, payload):
                        STATS["cache_write_failures"] += 1
                        cpath = None
                if use_cache:
                    _MEMORY[key] = payload
            return cls(path, data, elf, payload, source, cpath)
        except BaseException:
            data.close()
            raise

    def close(self) -> None:
        self._data.close()

    def __enter__(self) -> "Image":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def drgn_program(self):
        """A drgn.Program with this image's debug info (optional dependency)."""
        from .drgn_support import drgn_program

        return drgn_program(self)

    @property
    def cache_hit(self) -> bool:
        return self.index_source != "built"

    # ------------------------------------------------------------------ symbols
    def symbol_entries(self) -> List[Symbol]:
        """Every named defined symbol, locals included, in symbol-table order."""
        return [Symbol(*row) for row in self._raw_symbols]

    def symbols(self) -> Dict[str, int]:
        """name -> address; a global wins over a local of the same name."""
        if self._symbol_map is None:
            out: Dict[str, int] = {}
            rank: Dict[str, int] = {}
            order = {"global": 0, "weak": 1}
            for name, value, _size, _kind, binding, _shndx in self._raw_symbols:
                r = order.get(binding, 2)
                if name not in out or r < rank[name]:
                    out[name] = value
                    rank[name] = r
            self._symbol_map = out
        return dict(self._symbol_map)

    def symbol(self, name: str) -> int:
        if self._symbol_map is None:
            self.symbols()
        try:
            return self._symbol_map[name]  # type: ignore[index]
        except KeyError:
            raise DebugInfoError(f"symbol {name!r} not found in {self.path.name}") from None

    def lookup(self, addr: int) -> Optional[Tuple[str, int]]:
        """(symbol, offset) for the symbol containing `addr` (or the nearest label before it)."""
        if self._sorted is None:
            rank = {"func": 0, "object": 0, "notype": 1}
            rows = sorted((r for r in self._raw_symbols if r[3] in ("func", "object", "notype", "tls")),
                          key=lambda r: (r[1], r[4] == "local", rank.get(r[3], 2)))
            keys, kept = [], []
            for r in rows:
                if keys and keys[-1] == r[1]:
                    continue  # first row per address is the preferred name
                keys.append(r[1])
                kept.append(r)
            self._sorted = (keys, kept)
        keys, rows = self._sorted
        i = bisect.bisect_right(keys, addr) - 1
        if i < 0:
            return None
        name, value, size, _kind, _bind, _shndx = rows[i]
        # An unsized symbol (assembly label) covers everything up to the next symbol.
        if size == 0 or addr < value + size:
            return name, addr - value
        return None

    # ------------------------------------------------------------------ memory
    def read_static(self, vaddr: int, size: int) -> bytes:
        """Bytes of the image's file-backed (initialised) data at a link-time address."""
        if size < 0:
            raise ValueError("negative size")
        for seg in self.segments:
            if seg.vaddr <= vaddr and vaddr + size <= seg.vaddr + seg.filesz:
                start = seg.offset + (vaddr - seg.vaddr)
                return bytes(self._data[start:start + size])
        raise UnreadableAddress(vaddr, f"virtual address {vaddr:#x} (+{size}) is not file-backed data "
                                       f"in {self.path.name}", physical=False)

    # ------------------------------------------------------------------ types
    def _need_dwarf(self) -> None:
        if not self.has_dwarf:
            raise DebugInfoError(f"{self.path.name} has no DWARF debug info (.debug_info); rebuild it with -g")

    def type(self, name: str) -> Type:
        """A type by C name: "struct thread", "union x", "enum x", a typedef or base
        type name; a trailing "*" makes a pointer, "[N]" an array."""
        self._need_dwarf()
        # Qualifiers do not change a layout; "const struct x *" is "struct x *".
        text = " ".join(w for w in name.replace("*", " * ").split() if w not in _QUALIFIERS)
        m = re.fullmatch(r"(.*?)\s*\[\s*(\d*)\s*\]", text)
        if m:
            return ArrayType(self.type(m.group(1)), int(m.group(2)) if m.group(2) else None)
        if text.endswith("*"):
            return PointerType(self.type(text[:-1].strip()))
        if text == "void":
            return VoidType()
        tid = self._names.get(text)
        if tid is None:
            tid = self._base_alias(text)
        if tid is None:
            raise DebugInfoError(f"type {name!r} not found in the debug info of {self.path.name}")
        return self._object(tid)

    def variable(self, name: str) -> Variable:
        """A global variable's address and type (static ones included)."""
        self._need_dwarf()
        row = self._variables.get(name)
        if row is None:
            raise DebugInfoError(f"variable {name!r} not found in the debug info of {self.path.name}")
        address, tid, _external = row
        if address is None:
            if self._symbol_map is None:
                self.symbols()
            address = self._symbol_map.get(name)  # type: ignore[union-attr]
            if address is None:
                raise DebugInfoError(f"variable {name!r} is only declared in {self.path.name} (no address)")
        return Variable(name, address, self._object(tid))

    def sizeof(self, typename: Union[str, Type]) -> int:
        t = self.type(typename) if isinstance(typename, str) else typename
        size = t.size
        if size is None:
            raise DebugInfoError(f"{type_name(t)} has no size (incomplete type)")
        return size

    def member_path(self, typename: Union[str, Type], path: str) -> Tuple[int, Type, Optional[Member]]:
        """Walk "a.b[3].c" from a type: (bit offset, final type, final member or None)."""
        t = self.type(typename) if isinstance(typename, str) else typename
        pos, bits, last = 0, 0, None
        path = path.strip()
        while pos < len(path):
            m = _PATH_TOKEN.match(path, pos)
            if m is None or m.end() == pos:
                raise DebugInfoError(f"bad member path {path!r}")
            pos = m.end()
            base = strip_typedefs(t)
            if m.group(1) is not None:
                if not isinstance(base, StructType):
                    raise DebugInfoError(f"{type_name(t)} is not a struct or union (in {path!r})")
                last = base.member(m.group(1))
                bits += last.bit_offset
                t = last.type
            else:
                if not isinstance(base, ArrayType):
                    raise DebugInfoError(f"{type_name(t)} is not an array (in {path!r})")
                element_size = base.element.size
                if element_size is None:
                    raise DebugInfoError(f"array element of {type_name(t)} has no size")
                bits += int(m.group(2), 0) * element_size * 8
                t, last = base.element, None
        return bits, t, last

    def offsetof(self, typename: Union[str, Type], path: str) -> int:
        bits, _t, last = self.member_path(typename, path)
        if bits % 8 or (last is not None and last.bit_size is not None):
            raise DebugInfoError(f"{path!r} is a bitfield; it has no byte offset")
        return bits // 8

    def enum_value(self, name: str) -> int:
        self._need_dwarf()
        row = self._enumerators.get(name)
        if row is None:
            raise DebugInfoError(f"enumerator {name!r} not found in the debug info of {self.path.name}")
        return row[0]

    def enumerator_name(self, enum_type_name: Union[str, Type], value: int) -> Optional[str]:
        """The enumerator of `enum_type_name` with `value`, or None if no enumerator matches."""
        t = self.type(enum_type_name) if isinstance(enum_type_name, str) else enum_type_name
        base = strip_typedefs(t)
        if not isinstance(base, EnumType):
            raise DebugInfoError(f"{type_name(t)} is not an enum")
        return base.name_of(value)

    # ------------------------------------------------------------------ internals
    def _base_alias(self, text: str) -> Optional[int]:
        """C allows "unsigned long" for DWARF's "long unsigned int": compare spellings
        as sorted specifier sets."""
        if self._base_aliases is None:
            self._base_aliases = {}
            for i, entry in enumerate(self._types):
                if entry[0] == K_BASE:
                    self._base_aliases.setdefault(_canonical_base(entry[1]), i)
        return self._base_aliases.get(_canonical_base(text))

    def _object(self, tid: int) -> Type:
        obj = self._objects.get(tid)
        if obj is not None:
            return obj
        entry = self._types[tid]
        kind = entry[0]
        if kind == K_STRUCT:
            struct = StructType(entry[1], entry[2], entry[3], [])
            self._objects[tid] = struct  # before members: recursive structs find it here
            struct.members.extend(Member(n, off, self._object(t), bs, bo) for (n, off, t, bs, bo) in entry[4])
            return struct
        if kind == K_VOID:
            obj = VoidType()
        elif kind == K_BASE:
            obj = BaseType(entry[1], entry[2], entry[3])
        elif kind == K_PTR:
            target = entry[1]
            obj = PointerType(size=entry[2], resolve=lambda: self._object(target))
        elif kind == K_ENUM:
            obj = EnumType(entry[1], entry[2], dict(entry[4]), entry[3])
        elif kind == K_TYPEDEF:
            if tid in self._building:
                raise DebugInfoError(f"typedef cycle at {entry[1]!r} in the debug info of {self.path.name}")
            self._building.add(tid)
            try:
                obj = TypedefType(entry[1], self._object(entry[2]))
            finally:
                self._building.discard(tid)
        elif kind == K_ARRAY:
            if tid in self._building:
                raise DebugInfoError(f"array type cycle in the debug info of {self.path.name}")
            self._building.add(tid)
            try:
                obj = ArrayType(self._object(entry[1]), entry[2])
            finally:
                self._building.discard(tid)
        elif kind == K_FUNC:
            obj = FunctionType(entry[1])
        else:  # pragma: no cover - format version guards this
            raise DebugInfoError(f"corrupt type index entry {tid}")
        self._objects[tid] = obj
        return obj


def _canonical_base(text: str) -> str:
    words = text.split()
    if len(words) > 1 and "int" in words:
        words.remove("int")
    if "signed" in words and "char" not in words and len(words) > 1:
        words.remove("signed")
    return " ".join(sorted(words))


def _build_payload(elf: ElfFile, build_id: Optional[bytes], what: str) -> dict:
    symbols = tuple((s.name, s.value, s.size, s.kind, s.binding, s.section_index) for s in elf.symbols())
    info = elf.section_data(".debug_info")
    payload = {"build_id": build_id, "symbols": symbols, "has_dwarf": bool(info),
               "types": ((K_VOID,),), "names": {}, "variables": {}, "enumerators": {}}
    if not info:
        return payload
    if elf.type == 1 and (elf.section(".rela.debug_info") or elf.section(".rel.debug_info")):
        raise DebugInfoError(f"{what}: relocatable object files are not supported; use the linked image")
    sections = dwarfscan.Sections(info, elf.section_data(".debug_abbrev"), elf.section_data(".debug_str"),
                                  elf.section_data(".debug_line_str"), elf.section_data(".debug_str_offsets"),
                                  elf.section_data(".debug_addr"))
    dies = dwarfscan.scan(sections)
    payload.update(_index.build_index(dies, 8))
    return payload
