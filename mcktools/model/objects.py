"""Typed access to kernel memory: an address plus a DWARF type.

`Object` makes model code read like the C it mirrors (`thread.proc.pid`):
attribute access follows struct members and dereferences pointers to structs
on the way, `int()` reads scalars, `[i]` indexes arrays and pointers.  Every
layout comes from the image's DWARF (mcktools.debuginfo), never from
constants here.  Reads go through the target's kernel VirtualMemory.
"""

from __future__ import annotations

import struct
from typing import Any, Optional

from ..debuginfo.types import (
    ArrayType, BaseType, EnumType, PointerType, StructType, strip_typedefs,
)
from ..errors import CorruptStructure, DebugInfoError


def type_name(t: Any) -> str:
    """A C-like spelling of a debuginfo Type, for messages."""
    name = getattr(t, "name", None)
    kind = getattr(t, "kind", None)
    if isinstance(t, PointerType):
        return type_name(t.target) + " *"
    if isinstance(t, ArrayType):
        return f"{type_name(t.element)}[{t.count if t.count is not None else ''}]"
    if kind and name:
        return f"{kind} {name}"
    if isinstance(t, EnumType):
        return f"enum {name or '<anonymous>'}"
    return name or type(t).__name__


def _is_char(t: Any) -> bool:
    t = strip_typedefs(t)
    return isinstance(t, BaseType) and t.size == 1 and t.encoding in (
        "signed_char", "unsigned_char", "signed", "unsigned")


class Object:
    """A value of some DWARF type at a kernel virtual address.

    `prog` is anything with `.mem` (read(va, size)) and `.image` (type
    lookups): the Target.  Names ending in `_` are Object's own methods so
    they never hide a struct member.
    """

    __slots__ = ("prog_", "address_", "type_", "bits_")

    def __init__(self, prog: Any, address: int, type: Any, bits: Optional[tuple] = None):
        self.prog_ = prog
        self.address_ = address
        self.type_ = type
        #: (bit offset from address_, bit size) for bit-field members
        self.bits_ = bits

    # --- structure ---
    def _resolved(self) -> Any:
        return strip_typedefs(self.type_)

    def member_(self, name: str) -> "Object":
        obj = self
        for part in name.split("."):
            obj = obj._member1(part)
        return obj

    def _member1(self, name: str) -> "Object":
        t = self._resolved()
        if isinstance(t, PointerType):
            return self.deref_()._member1(name)
        if not isinstance(t, StructType):
            raise DebugInfoError(f"{type_name(self.type_)} has no member {name!r} (not a struct)")
        try:
            m = t.member(name)
        except (KeyError, LookupError, ValueError):
            m = None
        if m is None:
            raise DebugInfoError(f"{type_name(t)} has no member {name!r} in this image")
        if getattr(m, "bit_size", None):
            return Object(self.prog_, self.address_, m.type, (m.bit_offset, m.bit_size))
        return Object(self.prog_, self.address_ + m.offset, m.type)

    def __getattr__(self, name: str) -> "Object":
        if name.startswith("_") or name.endswith("_"):
            raise AttributeError(name)
        return self._member1(name)

    def has_member_(self, name: str) -> bool:
        t = self._resolved()
        if isinstance(t, PointerType):
            t = strip_typedefs(t.target)
        if not isinstance(t, StructType):
            return False
        try:
            return t.member(name) is not None
        except (KeyError, LookupError, ValueError):
            return False

    def deref_(self) -> "Object":
        t = self._resolved()
        if isinstance(t, ArrayType):
            return self[0]
        if not isinstance(t, PointerType):
            raise DebugInfoError(f"cannot dereference {type_name(self.type_)}")
        ptr = self.value_()
        if ptr == 0:
            raise CorruptStructure(
                f"NULL {type_name(self.type_)} dereferenced (read at {self.address_:#x})")
        return Object(self.prog_, ptr, t.target)

    def __getitem__(self, index: int) -> "Object":
        t = self._resolved()
        if isinstance(t, ArrayType):
            if t.count is not None and not 0 <= index < t.count and t.count != 0:
                raise IndexError(f"index {index} out of range for {type_name(t)}")
            elem = t.element
            return Object(self.prog_, self.address_ + index * strip_typedefs(elem).size, elem)
        if isinstance(t, PointerType):
            base = self.value_()
            return Object(self.prog_, base + index * strip_typedefs(t.target).size, t.target)
        raise DebugInfoError(f"cannot index {type_name(self.type_)}")

    # --- values ---
    def read_(self) -> bytes:
        t = self._resolved()
        return self.prog_.mem.read(self.address_, t.size)

    def value_(self) -> int:
        t = self._resolved()
        if self.bits_ is not None:
            bit_off, bit_size = self.bits_
            first = bit_off // 8
            nbytes = (bit_off % 8 + bit_size + 7) // 8
            raw = int.from_bytes(self.prog_.mem.read(self.address_ + first, nbytes), "little")
            v = (raw >> (bit_off % 8)) & ((1 << bit_size) - 1)
            if isinstance(t, BaseType) and t.encoding in ("signed", "signed_char") and v >> (bit_size - 1):
                v -= 1 << bit_size
            return v
        if isinstance(t, PointerType):
            return struct.unpack("<Q", self.prog_.mem.read(self.address_, 8))[0]
        if isinstance(t, BaseType):
            data = self.prog_.mem.read(self.address_, t.size)
            if t.encoding == "float":
                return struct.unpack("<d" if t.size == 8 else "<f", data)[0]
            return int.from_bytes(data, "little", signed=t.encoding in ("signed", "signed_char"))
        if isinstance(t, EnumType):
            data = self.prog_.mem.read(self.address_, t.size)
            signed = getattr(t, "signed", False) or any(v < 0 for v in t.enumerators.values())
            return int.from_bytes(data, "little", signed=signed)
        raise DebugInfoError(f"{type_name(self.type_)} is not a scalar")

    def __int__(self) -> int:
        return int(self.value_())

    __index__ = __int__

    def __bool__(self) -> bool:
        return self.value_() != 0

    def enum_name_(self) -> Optional[str]:
        t = self._resolved()
        v = self.value_()
        if isinstance(t, EnumType):
            for k, val in t.enumerators.items():
                if val == v:
                    return k
        return None

    def string_(self, limit: int = 4096) -> str:
        """A NUL-terminated string from a char array or a char pointer."""
        t = self._resolved()
        if isinstance(t, ArrayType) and _is_char(t.element):
            n = t.count if t.count else limit
            raw = self.prog_.mem.read(self.address_, min(n, limit))
            raw = raw.split(b"\0", 1)[0]
        elif isinstance(t, PointerType):
            ptr = self.value_()
            if ptr == 0:
                return ""
            raw = self.prog_.mem.read_cstring(ptr, limit)
        else:
            raise DebugInfoError(f"{type_name(self.type_)} is not a string")
        return raw.decode("utf-8", "replace")

    def __repr__(self) -> str:
        return f"Object({type_name(self.type_)} @ {self.address_:#x})"


def container_of(prog: Any, address: int, typename: str, member: str) -> Object:
    """The `typename` object whose `member` lives at `address` (C's container_of)."""
    return Object(prog, address - prog.offsetof(typename, member), prog.type(typename))
