"""The compact type index: DWARF DIE records folded into one table of plain tuples.

The same struct appears in every CU that includes its header; the index keeps
one entry per name (the first complete definition wins over declarations) and
hash-conses anonymous types (pointers, arrays, unnamed structs) so duplicates
collapse.  Everything is plain tuples/dicts/str/int so the whole index can be
stored with `marshal` and loaded again in milliseconds.

Entry layouts (ids index `types`; id 0 is void):
    (K_VOID,)
    (K_BASE, name, size, encoding)
    (K_PTR, target_id, size)
    (K_STRUCT, "struct"|"union", name|None, size|None, ((name|None, byte_offset, type_id, bit_size|None, bit_offset), ...))
    (K_ENUM, name|None, size|None, signed, ((name, value), ...))
    (K_TYPEDEF, name, target_id)
    (K_ARRAY, element_id, count|None)
    (K_FUNC, name|None)
"""

from __future__ import annotations

import sys
from typing import Dict, List, Optional, Tuple

from ..errors import FormatError
from . import dwarfscan as D
from .dwarfscan import uleb

K_VOID, K_BASE, K_PTR, K_STRUCT, K_ENUM, K_TYPEDEF, K_ARRAY, K_FUNC = range(8)

# DW_ATE_* -> our encoding names (DWARF 5 section 7.8)
_ENCODINGS = {0x01: "unsigned", 0x02: "bool", 0x03: "float", 0x04: "float", 0x05: "signed",
              0x06: "signed_char", 0x07: "unsigned", 0x08: "unsigned_char", 0x09: "float",
              0x0D: "signed", 0x0E: "unsigned", 0x10: "unsigned", 0x11: "unsigned", 0x12: "unsigned"}

_KIND_OF_TAG = {D.T_STRUCT: "struct", D.T_CLASS: "struct", D.T_UNION: "union", D.T_ENUM: "enum"}


def _location_address(expr, addrsize: int) -> Optional[int]:
    """Static address of a variable: only a lone DW_OP_addr (0x03) qualifies."""
    if isinstance(expr, (bytes, bytearray)) and len(expr) == 1 + addrsize and expr[0] == 0x03:
        return int.from_bytes(expr[1:], "little")
    return None


def _member_location(value) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, tuple):  # (value, width) from a data form
        return value[0]
    if isinstance(value, (bytes, bytearray)) and value and value[0] == 0x23:  # DW_OP_plus_uconst
        return uleb(value, 1)[0]
    return 0


class _Builder:
    def __init__(self, dies: Dict[int, tuple], addrsize: int = 8):
        self.dies = dies
        self.addrsize = addrsize
        self.types: List[tuple] = [(K_VOID,)]
        self.memo: Dict[int, int] = {}
        self.interned: Dict[tuple, int] = {(K_VOID,): 0}
        self.named: Dict[Tuple[str, str], int] = {}
        self.names: Dict[str, int] = {}
        self.pending: List[Tuple[int, int]] = []
        self.enumerators: Dict[str, Tuple[int, int]] = {}
        self.definition: Dict[Tuple[str, str], int] = {}
        for off, (tag, attrs, _kids) in dies.items():
            kind = _KIND_OF_TAG.get(tag)
            if kind is not None and D.A_NAME in attrs and not attrs.get(D.A_DECLARATION):
                self.definition.setdefault((kind, attrs[D.A_NAME]), off)

    def intern(self, entry: tuple) -> int:
        tid = self.interned.get(entry)
        if tid is None:
            tid = self.interned[entry] = len(self.types)
            self.types.append(entry)
        return tid

    def reserve(self) -> int:
        self.types.append((K_VOID,))
        return len(self.types) - 1

    def resolve(self, off: Optional[int]) -> int:
        if off is None:
            return 0
        tid = self.memo.get(off)
        if tid is not None:
            return tid
        rec = self.dies.get(off)
        if rec is None:  # reference we did not collect (function scope, other file): unknown
            self.memo[off] = 0
            return 0
        tag, attrs, kids = rec
        self.memo[off] = 0  # placeholder: a reference cycle in corrupt DWARF ends at void
        if tag in D.QUALIFIER_TAGS:
            tid = self.resolve(attrs.get(D.A_TYPE))
        elif tag in _KIND_OF_TAG:
            name = attrs.get(D.A_NAME)
            if name is not None:
                key = (_KIND_OF_TAG[tag], name)
                tid = self.named.get(key)
                if tid is None:
                    tid = self.named[key] = self.reserve()
                    self.names.setdefault(f"{key[0]} {name}", tid)
                    self.pending.append((tid, self.definition.get(key, off)))
            else:
                entry = self.build_aggregate(off)
                tid = self.intern(entry)
                if entry[0] == K_ENUM:
                    for ename, value in entry[4]:
                        self.enumerators.setdefault(ename, (value, tid))
        elif tag == D.T_TYPEDEF:
            name = attrs.get(D.A_NAME, "")
            key = ("typedef", name)
            tid = self.named.get(key)
            if tid is None:
                tid = self.named[key] = self.reserve()
                self.names.setdefault(name, tid)
                self.pending.append((tid, off))
        elif tag == D.T_BASE:
            name = attrs.get(D.A_NAME, "?")
            tid = self.intern((K_BASE, name, attrs.get(D.A_BYTE_SIZE, 0),
                               _ENCODINGS.get(attrs.get(D.A_ENCODING), "unsigned")))
            self.names.setdefault(name, tid)
        elif tag in (D.T_POINTER, D.T_REFERENCE, D.T_RVALUE_REF):
            tid = self.intern((K_PTR, self.resolve(attrs.get(D.A_TYPE)), attrs.get(D.A_BYTE_SIZE, self.addrsize)))
        elif tag == D.T_ARRAY:
            tid = self.resolve(attrs.get(D.A_TYPE))
            dims = [self.dies[k][1] for k in (kids or ()) if self.dies[k][0] == D.T_SUBRANGE] or [{}]
            for sub in reversed(dims):
                tid = self.intern((K_ARRAY, tid, _count(sub)))
        elif tag == D.T_SUBROUTINE_TYPE:
            tid = self.intern((K_FUNC, attrs.get(D.A_NAME)))
        else:
            tid = 0
        self.memo[off] = tid
        return tid

    def type_size(self, off: Optional[int]) -> Optional[int]:
        for _ in range(64):
            rec = self.dies.get(off) if off is not None else None
            if rec is None:
                return None
            tag, attrs, _kids = rec
            if D.A_BYTE_SIZE in attrs:
                return attrs[D.A_BYTE_SIZE]
            off = attrs.get(D.A_TYPE)
        return None

    def build_aggregate(self, off: int) -> tuple:
        tag, attrs, kids = self.dies[off]
        kind = _KIND_OF_TAG[tag]
        size = None if attrs.get(D.A_DECLARATION) else attrs.get(D.A_BYTE_SIZE)
        if kind == "enum":
            underlying = attrs.get(D.A_TYPE)
            signed = False
            if underlying is not None:
                base = self.types[self.resolve(underlying)]
                for _ in range(64):
                    if base[0] != K_TYPEDEF:
                        break
                    base = self.types[base[2]]
                signed = base[0] == K_BASE and base[3] in ("signed", "signed_char")
            values = []
            for k in kids or ():
                ktag, kattrs, _ = self.dies[k]
                if ktag != D.T_ENUMERATOR:
                    continue
                value = kattrs.get(D.A_CONST_VALUE, 0)
                if isinstance(value, tuple):
                    value, width = value
                    if signed and value >= 1 << (8 * width - 1):
                        value -= 1 << (8 * width)
                elif not isinstance(value, int):
                    value = 0
                values.append((kattrs.get(D.A_NAME, "?"), value))
            return (K_ENUM, attrs.get(D.A_NAME), size, signed, tuple(values))
        members = []
        for k in kids or ():
            ktag, m, _ = self.dies[k]
            if ktag != D.T_MEMBER:
                continue
            loc = _member_location(m.get(D.A_DATA_MEMBER_LOCATION))
            bit_size = m.get(D.A_BIT_SIZE)
            if bit_size is not None:
                if D.A_DATA_BIT_OFFSET in m:
                    bit_offset = m[D.A_DATA_BIT_OFFSET]
                elif D.A_BIT_OFFSET in m:
                    # DWARF 2-4 counts from the most significant bit of the storage
                    # unit; on a little-endian target convert to a plain bit offset.
                    storage = m.get(D.A_BYTE_SIZE) or self.type_size(m.get(D.A_TYPE)) or 0
                    bit_offset = loc * 8 + storage * 8 - m[D.A_BIT_OFFSET] - bit_size
                else:
                    bit_offset = loc * 8
                byte_offset = bit_offset // 8
            else:
                byte_offset, bit_offset = loc, loc * 8
            members.append((m.get(D.A_NAME), byte_offset, self.resolve(m.get(D.A_TYPE)), bit_size, bit_offset))
        return (K_STRUCT, kind, attrs.get(D.A_NAME), size, tuple(members))

    def drain(self) -> None:
        while self.pending:
            tid, off = self.pending.pop()
            tag, attrs, _ = self.dies[off]
            if tag == D.T_TYPEDEF:
                self.types[tid] = (K_TYPEDEF, attrs.get(D.A_NAME, ""), self.resolve(attrs.get(D.A_TYPE)))
            else:
                entry = self.build_aggregate(off)
                self.types[tid] = entry
            if tag == D.T_ENUM:
                for name, value in self.types[tid][4]:
                    self.enumerators.setdefault(name, (value, tid))


def _count(sub: dict) -> Optional[int]:
    count = sub.get(D.A_COUNT)
    if isinstance(count, tuple):
        count = count[0]
    if isinstance(count, int):
        return count
    upper = sub.get(D.A_UPPER_BOUND)
    if isinstance(upper, tuple):  # data form: gcc writes -1 (all ones) for zero-length arrays
        value, width = upper
        upper = value - (1 << (8 * width)) if value >= 1 << (8 * width - 1) else value
    if not isinstance(upper, int):
        return None
    lower = sub.get(D.A_LOWER_BOUND, 0)
    if isinstance(lower, tuple):
        lower = lower[0]
    return max(upper - (lower if isinstance(lower, int) else 0) + 1, 0)


def build_index(dies: Dict[int, tuple], addrsize: int = 8) -> dict:
    """Fold scanned DIE records into the marshal-friendly index payload."""
    try:
        return _build_index(dies, addrsize)
    except (IndexError, KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"DWARF debug info is malformed: {exc!r}") from None


def _build_index(dies: Dict[int, tuple], addrsize: int) -> dict:
    old_limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old_limit, 20000))
    try:
        b = _Builder(dies, addrsize)
        variables: Dict[str, tuple] = {}
        for off, (tag, attrs, _kids) in dies.items():
            if tag in _KIND_OF_TAG or tag in (D.T_TYPEDEF, D.T_BASE):
                if D.A_NAME in attrs or tag == D.T_ENUM:
                    b.resolve(off)
                b.drain()
            elif tag == D.T_VARIABLE:
                _add_variable(b, variables, attrs)
                b.drain()
        b.drain()
    finally:
        sys.setrecursionlimit(old_limit)
    return {"types": tuple(b.types), "names": b.names, "variables": variables, "enumerators": b.enumerators}


def _add_variable(b: _Builder, variables: Dict[str, tuple], attrs: dict) -> None:
    name, type_off, external = attrs.get(D.A_NAME), attrs.get(D.A_TYPE), bool(attrs.get(D.A_EXTERNAL))
    origin = attrs.get(D.A_SPECIFICATION, attrs.get(D.A_ABSTRACT_ORIGIN))
    if origin is not None and origin in b.dies:
        decl = b.dies[origin][1]
        name = name or decl.get(D.A_NAME)
        type_off = type_off if type_off is not None else decl.get(D.A_TYPE)
        external = external or bool(decl.get(D.A_EXTERNAL))
    if name is None:
        return
    address = _location_address(attrs.get(D.A_LOCATION), b.addrsize)
    old = variables.get(name)
    if old is not None:
        # Keep a definition with an address over a declaration, and an external
        # definition over a static one of the same name in another file.
        old_rank = (old[0] is not None, old[2])
        if (address is not None, external) <= old_rank:
            return
    variables[name] = (address, b.resolve(type_off), external)
