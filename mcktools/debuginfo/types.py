"""C type layouts as the tools see them: plain objects built from the DWARF index.

Every type has `.size` (bytes, None when unknown: void, incomplete struct,
flexible array).  Pointers resolve their target lazily, which is what lets
recursive structures (a list node pointing at its own struct) exist without
building the whole type graph up front.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Union

from ..errors import DebugInfoError

ENCODINGS = ("signed", "unsigned", "float", "bool", "signed_char", "unsigned_char")


@dataclass(frozen=True)
class VoidType:
    size: Optional[int] = None

    @property
    def name(self) -> str:
        return "void"


@dataclass(frozen=True)
class BaseType:
    name: str
    size: int
    encoding: str  # one of ENCODINGS


@dataclass(frozen=True)
class FunctionType:
    """A function (subroutine) type; only ever seen behind a pointer."""

    name: Optional[str] = None
    size: Optional[int] = None


class PointerType:
    """Pointer to `target`.  `target` may be given directly or through
    `resolve` (a zero-argument callable) so cycles through pointers stay lazy."""

    __slots__ = ("_target", "_resolve", "size")

    def __init__(self, target: Optional["Type"] = None, size: int = 8, *,
                 resolve: Optional[Callable[[], "Type"]] = None):
        self._target = target
        self._resolve = resolve
        self.size = size

    @property
    def target(self) -> "Type":
        if self._target is None:
            self._target = self._resolve() if self._resolve is not None else VoidType()
            self._resolve = None
        return self._target

    @property
    def name(self) -> None:
        return None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PointerType):
            return NotImplemented
        return self.size == other.size and _same(self.target, other.target)

    def __hash__(self) -> int:
        return hash(("ptr", self.size, type_name(self.target)))

    def __repr__(self) -> str:
        return f"PointerType({type_name(self.target)!r}, size={self.size})"


@dataclass(eq=False)
class Member:
    name: Optional[str]  # None for an anonymous struct/union member
    offset: int  # bytes from the start of the enclosing struct
    type: "Type"
    bit_size: Optional[int] = None  # set for bitfields only
    bit_offset: int = 0  # bits from the start of the struct (DW_AT_data_bit_offset style)


@dataclass(eq=False)
class StructType:
    kind: str  # "struct" or "union"
    name: Optional[str]
    size: Optional[int]  # None for a declaration without a definition anywhere
    members: List[Member] = field(default_factory=list, repr=False)

    @property
    def complete(self) -> bool:
        return self.size is not None

    def member(self, name: str) -> Member:
        """Find a member by name, looking through anonymous struct/union members
        (their offsets are added so the result is relative to this struct)."""
        found = _find_member(self, name, 0)
        if found is None:
            raise DebugInfoError(f"{type_name(self)} has no member {name!r}")
        return found

    def has_member(self, name: str) -> bool:
        return _find_member(self, name, 0) is not None

    def __repr__(self) -> str:
        return f"StructType({self.kind!r}, {self.name!r}, size={self.size}, {len(self.members)} members)"


@dataclass(eq=False)
class ArrayType:
    element: "Type"
    count: Optional[int]  # None for a flexible / incomplete array

    @property
    def size(self) -> Optional[int]:
        if self.count is None or self.element.size is None:
            return None
        return self.count * self.element.size

    def __repr__(self) -> str:
        return f"ArrayType({type_name(self.element)!r}, {self.count})"


@dataclass(eq=False)
class EnumType:
    name: Optional[str]
    size: Optional[int]
    enumerators: Dict[str, int] = field(default_factory=dict)
    signed: bool = False

    def name_of(self, value: int) -> Optional[str]:
        for key, val in self.enumerators.items():
            if val == value:
                return key
        return None


@dataclass(eq=False)
class TypedefType:
    name: str
    target: "Type"

    @property
    def size(self) -> Optional[int]:
        return self.target.size


Type = Union[VoidType, BaseType, FunctionType, PointerType, StructType, ArrayType, EnumType, TypedefType]


def strip_typedefs(t: Type) -> Type:
    """Follow typedef chains down to the underlying type."""
    seen = 0
    while isinstance(t, TypedefType):
        t = t.target
        seen += 1
        if seen > 256:
            raise DebugInfoError("typedef chain too long (cycle in debug info?)")
    return t


def type_name(t: Type) -> str:
    """The C spelling of a type, e.g. "struct thread *" or "int [4]"."""
    if isinstance(t, PointerType):
        inner = t._target if t._target is not None else None
        if inner is None and t._resolve is not None:
            inner = t.target
        return f"{type_name(inner) if inner is not None else 'void'} *"
    if isinstance(t, StructType):
        return f"{t.kind} {t.name or '<anonymous>'}"
    if isinstance(t, EnumType):
        return f"enum {t.name or '<anonymous>'}"
    if isinstance(t, ArrayType):
        return f"{type_name(t.element)} [{'' if t.count is None else t.count}]"
    if isinstance(t, FunctionType):
        return f"{t.name or 'function'}()"
    if isinstance(t, VoidType):
        return "void"
    return t.name


def _same(a: Type, b: Type) -> bool:
    if a is b:
        return True
    if isinstance(a, (StructType, EnumType)) or isinstance(b, (StructType, EnumType)):
        return type(a) is type(b) and type_name(a) == type_name(b) and a.size == b.size
    return a == b


def _find_member(struct: StructType, name: str, base: int) -> Optional[Member]:
    for m in struct.members:
        if m.name == name:
            if base == 0:
                return m
            return Member(m.name, m.offset + base, m.type, m.bit_size, m.bit_offset + base * 8)
    for m in struct.members:
        if m.name is None:
            inner = strip_typedefs(m.type)
            if isinstance(inner, StructType):
                hit = _find_member(inner, name, base + m.offset)
                if hit is not None:
                    return hit
    return None
