"""A minimal DWARF 2-5 .debug_info scanner that keeps only what type layouts need.

pyelftools builds an object per DIE and per attribute, which takes seconds on a
kernel-sized .debug_info (see toolchain notes).  This scanner walks the raw
bytes with one precomputed "plan" per abbreviation: runs of attributes we do not
need become one skip, and only the attributes listed in WANTED are decoded.
Function bodies are jumped over with DW_AT_sibling when gcc provides it (and
walked without collecting otherwise), so types declared inside functions and
function-local variables are not indexed.

Output: {absolute DIE offset: (tag, attrs, children)} for type-related DIEs,
members, enumerators, subranges and CU-level variables.  References are made
absolute (.debug_info offsets) here so later stages never need the CU.
"""

from __future__ import annotations

import struct
from typing import Dict, List, Optional, Tuple

from ..errors import FormatError

# Tags (DWARF 5 section 7.5.3)
T_ARRAY, T_CLASS, T_ENUM, T_MEMBER, T_POINTER, T_REFERENCE = 0x01, 0x02, 0x04, 0x0D, 0x0F, 0x10
T_CU, T_STRUCT, T_SUBROUTINE_TYPE, T_TYPEDEF, T_UNION = 0x11, 0x13, 0x15, 0x16, 0x17
T_SUBRANGE, T_BASE, T_CONST, T_ENUMERATOR, T_VARIABLE = 0x21, 0x24, 0x26, 0x28, 0x34
T_VOLATILE, T_RESTRICT, T_NAMESPACE, T_UNSPECIFIED = 0x35, 0x37, 0x39, 0x3B
T_PARTIAL_UNIT, T_RVALUE_REF, T_ATOMIC, T_PACKED, T_SHARED, T_IMMUTABLE = 0x3C, 0x42, 0x47, 0x2D, 0x40, 0x4B

# Attributes we decode
A_SIBLING, A_LOCATION, A_NAME, A_BYTE_SIZE, A_BIT_OFFSET, A_BIT_SIZE = 0x01, 0x02, 0x03, 0x0B, 0x0C, 0x0D
A_CONST_VALUE, A_LOWER_BOUND, A_UPPER_BOUND, A_ABSTRACT_ORIGIN = 0x1C, 0x22, 0x2F, 0x31
A_COUNT, A_DATA_MEMBER_LOCATION, A_DECLARATION, A_ENCODING, A_EXTERNAL = 0x37, 0x38, 0x3C, 0x3E, 0x3F
A_SPECIFICATION, A_TYPE, A_DATA_BIT_OFFSET, A_STR_OFFSETS_BASE, A_ADDR_BASE = 0x47, 0x49, 0x6B, 0x72, 0x73

QUALIFIER_TAGS = frozenset({T_CONST, T_VOLATILE, T_RESTRICT, T_ATOMIC, T_PACKED, T_SHARED, T_IMMUTABLE})
TYPE_TAGS = frozenset({T_ARRAY, T_CLASS, T_ENUM, T_POINTER, T_REFERENCE, T_RVALUE_REF, T_STRUCT,
                       T_SUBROUTINE_TYPE, T_TYPEDEF, T_UNION, T_BASE, T_UNSPECIFIED}) | QUALIFIER_TAGS
CHILD_TAGS = frozenset({T_MEMBER, T_ENUMERATOR, T_SUBRANGE})
CONTAINER_TAGS = frozenset({T_STRUCT, T_UNION, T_CLASS, T_ENUM, T_ARRAY})
SCOPE_TAGS = frozenset({T_CU, T_PARTIAL_UNIT, T_NAMESPACE})
_NAMED_KIND = {T_STRUCT: "struct", T_CLASS: "struct", T_UNION: "union", T_ENUM: "enum"}

_TYPE_ATTRS = frozenset({A_NAME, A_BYTE_SIZE, A_TYPE, A_DECLARATION, A_ENCODING, A_SIBLING})
WANTED = {
    T_MEMBER: frozenset({A_NAME, A_TYPE, A_DATA_MEMBER_LOCATION, A_BIT_SIZE, A_BIT_OFFSET,
                         A_DATA_BIT_OFFSET, A_BYTE_SIZE}),
    T_ENUMERATOR: frozenset({A_NAME, A_CONST_VALUE}),
    T_SUBRANGE: frozenset({A_COUNT, A_UPPER_BOUND, A_LOWER_BOUND}),
    T_VARIABLE: frozenset({A_NAME, A_TYPE, A_LOCATION, A_DECLARATION, A_SPECIFICATION,
                           A_ABSTRACT_ORIGIN, A_EXTERNAL, A_SIBLING}),
    T_CU: frozenset({A_STR_OFFSETS_BASE, A_ADDR_BASE}),
    T_PARTIAL_UNIT: frozenset({A_STR_OFFSETS_BASE, A_ADDR_BASE}),
}
_SIBLING_ONLY = frozenset({A_SIBLING})

# Forms
F_ADDR, F_BLOCK2, F_BLOCK4, F_DATA2, F_DATA4, F_DATA8, F_STRING, F_BLOCK = 0x01, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09
F_BLOCK1, F_DATA1, F_FLAG, F_SDATA, F_STRP, F_UDATA, F_REF_ADDR = 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F, 0x10
F_REF1, F_REF2, F_REF4, F_REF8, F_REF_UDATA, F_INDIRECT, F_SEC_OFFSET = 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17
F_EXPRLOC, F_FLAG_PRESENT, F_STRX, F_ADDRX, F_REF_SUP4, F_STRP_SUP, F_DATA16 = 0x18, 0x19, 0x1A, 0x1B, 0x1C, 0x1D, 0x1E
F_LINE_STRP, F_REF_SIG8, F_IMPLICIT_CONST, F_LOCLISTX, F_RNGLISTX, F_REF_SUP8 = 0x1F, 0x20, 0x21, 0x22, 0x23, 0x24
F_STRX1, F_STRX2, F_STRX3, F_STRX4, F_ADDRX1, F_ADDRX2, F_ADDRX3, F_ADDRX4 = range(0x25, 0x2D)
F_GNU_ADDR_INDEX, F_GNU_STR_INDEX, F_GNU_REF_ALT, F_GNU_STRP_ALT = 0x1F01, 0x1F02, 0x1F20, 0x1F21

# Post-processing of a decoded fixed-size value
P_RAW, P_REF, P_STRP, P_LINE_STRP, P_STRX, P_FLAG, P_CONST, P_NONE, P_ADDRX = range(9)

_U8, _U16, _U32, _U64 = (struct.Struct(f) for f in ("<B", "<H", "<I", "<Q"))


class Plan:
    __slots__ = ("tag", "children", "steps", "fixed", "decode")

    def __init__(self, tag: int, children: bool, steps: list, fixed: int):
        self.decode = None  # generated on first use, see _Compiler
        self.tag = tag
        self.children = children
        self.steps = steps
        self.fixed = fixed  # total size when every step is a fixed skip/constant, else -1


def uleb(buf, p: int) -> Tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[p]
        p += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, p
        shift += 7


def sleb(buf, p: int) -> Tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[p]
        p += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            if b & 0x40:
                result -= 1 << shift
            return result, p


def _fixed_size(form: int, offsize: int, addrsize: int, version: int) -> Optional[int]:
    if form in (F_DATA1, F_REF1, F_FLAG, F_STRX1, F_ADDRX1):
        return 1
    if form in (F_DATA2, F_REF2, F_STRX2, F_ADDRX2):
        return 2
    if form in (F_STRX3, F_ADDRX3):
        return 3
    if form in (F_DATA4, F_REF4, F_STRX4, F_ADDRX4, F_REF_SUP4):
        return 4
    if form in (F_DATA8, F_REF8, F_REF_SIG8, F_REF_SUP8):
        return 8
    if form == F_DATA16:
        return 16
    if form == F_ADDR:
        return addrsize
    if form in (F_STRP, F_LINE_STRP, F_SEC_OFFSET, F_STRP_SUP, F_GNU_REF_ALT, F_GNU_STRP_ALT):
        return offsize
    if form == F_REF_ADDR:
        return offsize if version >= 3 else addrsize
    if form in (F_FLAG_PRESENT, F_IMPLICIT_CONST):
        return 0
    return None


def _post(form: int, attr: int) -> int:
    if attr in (A_UPPER_BOUND, A_COUNT, A_LOWER_BOUND) and form in (F_REF1, F_REF2, F_REF4, F_REF8, F_REF_ADDR):
        return P_NONE  # a bound held in a variable (VLA): no static count
    if form in (F_REF1, F_REF2, F_REF4, F_REF8):
        return P_REF
    if form == F_REF_ADDR:
        return P_RAW  # already absolute
    if form == F_STRP:
        return P_STRP
    if form == F_LINE_STRP:
        return P_LINE_STRP
    if form in (F_STRX1, F_STRX2, F_STRX3, F_STRX4):
        return P_STRX
    if form in (F_ADDRX1, F_ADDRX2, F_ADDRX3, F_ADDRX4):
        return P_ADDRX
    if form == F_FLAG:
        return P_FLAG
    if form in (F_REF_SIG8, F_REF_SUP4, F_REF_SUP8, F_STRP_SUP, F_GNU_REF_ALT, F_GNU_STRP_ALT, F_DATA16):
        return P_NONE  # outside this file / not representable: treated as absent
    if attr == A_CONST_VALUE and form in (F_DATA1, F_DATA2, F_DATA4, F_DATA8):
        return P_CONST
    return P_RAW


def _make_plan(tag: int, children: bool, specs: list, offsize: int, addrsize: int, version: int) -> Plan:
    if tag in TYPE_TAGS:
        wanted = _TYPE_ATTRS
    else:
        wanted = WANTED.get(tag, _SIBLING_ONLY)
    steps: list = []
    pending = 0
    fixed = True
    for attr, form, const in specs:
        size = _fixed_size(form, offsize, addrsize, version)
        if attr in wanted:
            if form == F_IMPLICIT_CONST:
                if pending:
                    steps.append((0, pending))
                    pending = 0
                steps.append((3, attr, const))
                continue
            if form == F_FLAG_PRESENT:
                if pending:
                    steps.append((0, pending))
                    pending = 0
                steps.append((3, attr, 1))
                continue
            if pending:
                steps.append((0, pending))
                pending = 0
            fixed = False
            if size is not None:
                steps.append((1, attr, size, _post(form, attr)))
            elif form == F_STRING:
                steps.append((5, attr))
            else:
                steps.append((4, attr, form))
        elif size is not None:
            pending += size
        else:
            if pending:
                steps.append((0, pending))
                pending = 0
            fixed = False
            steps.append((2, form))
    if pending:
        steps.append((0, pending))
    total = sum(s[1] for s in steps if s[0] == 0) if fixed else -1
    return Plan(tag, children, steps, total)


def parse_abbrevs(abbrev: bytes, offset: int) -> Dict[int, Tuple[int, bool, list]]:
    table: Dict[int, Tuple[int, bool, list]] = {}
    p = offset
    n = len(abbrev)
    while p < n:
        code, p = uleb(abbrev, p)
        if code == 0:
            break
        tag, p = uleb(abbrev, p)
        children = abbrev[p] != 0
        p += 1
        specs = []
        while True:
            attr, p = uleb(abbrev, p)
            form, p = uleb(abbrev, p)
            if attr == 0 and form == 0:
                break
            const = 0
            if form == F_IMPLICIT_CONST:
                const, p = sleb(abbrev, p)
            specs.append((attr, form, const))
        table[code] = (tag, children, specs)
    return table


class Sections:
    """The raw DWARF sections the scanner reads."""

    def __init__(self, info: bytes, abbrev: bytes, str_: bytes = b"", line_str: bytes = b"",
                 str_offsets: bytes = b"", addr: bytes = b""):
        self.info = info
        self.abbrev = abbrev
        self.str = str_
        self.line_str = line_str
        self.str_offsets = str_offsets
        self.addr = addr


def scan(sec: Sections) -> Dict[int, tuple]:
    """Scan every unit in .debug_info; return the collected DIE records."""
    info = sec.info
    dies: Dict[int, tuple] = {}
    abbrev_cache: Dict[int, dict] = {}
    plan_cache: Dict[tuple, Dict[int, Plan]] = {}
    compiler = _Compilers(sec)
    complete_seen: set = set()
    off = 0
    n = len(info)
    try:
        while off + 11 <= n:
            unit_length = _U32.unpack_from(info, off)[0]
            if unit_length == 0xFFFFFFFF:
                unit_length = _U64.unpack_from(info, off + 4)[0]
                offsize, p = 8, off + 12
            else:
                offsize, p = 4, off + 4
            end = p + unit_length
            if end > n:
                raise FormatError(f".debug_info unit at {off:#x} runs past the end of the section")
            version = _U16.unpack_from(info, p)[0]
            p += 2
            if version < 2 or version > 5:
                raise FormatError(f".debug_info unit at {off:#x} has unsupported DWARF version {version}")
            if version >= 5:
                unit_type = info[p]
                addrsize = info[p + 1]
                p += 2
                abbrev_off = (_U32 if offsize == 4 else _U64).unpack_from(info, p)[0]
                p += offsize
                if unit_type in (4, 5):  # skeleton / split compile: dwo_id
                    p += 8
                elif unit_type in (2, 6):  # type units: signature + type offset
                    p += 8 + offsize
            else:
                abbrev_off = (_U32 if offsize == 4 else _U64).unpack_from(info, p)[0]
                p += offsize
                addrsize = info[p]
                p += 1
            key = (abbrev_off, offsize, addrsize, version)
            plans = plan_cache.get(key)
            if plans is None:
                table = abbrev_cache.get(abbrev_off)
                if table is None:
                    table = abbrev_cache[abbrev_off] = parse_abbrevs(sec.abbrev, abbrev_off)
                plans = plan_cache[key] = {code: _make_plan(tag, ch, specs, offsize, addrsize, version)
                                           for code, (tag, ch, specs) in table.items()}
            _scan_unit(sec, info, p, end, off, plans, offsize, addrsize, dies,
                       compiler.for_unit(offsize, addrsize), complete_seen)
            off = end
    except (IndexError, struct.error, KeyError, ValueError, TypeError) as exc:
        raise FormatError(f".debug_info is malformed near unit {off:#x}: {exc!r}") from None
    return dies


_TOP = "top"
_SKIP = "skip"


def _scan_unit(sec: Sections, info, p: int, end: int, cu_off: int, plans: Dict[int, Plan],
               offsize: int, addrsize: int, dies: dict, compiler: "_Compiler", complete_seen: set) -> None:
    str_base = 8 if offsize == 4 else 16  # DWARF 5 default: just past the section header
    addr_base = 8
    stack: List[object] = [_TOP]
    type_tags, child_tags, container_tags, scope_tags = TYPE_TAGS, CHILD_TAGS, CONTAINER_TAGS, SCOPE_TAGS
    named_tags = _NAMED_KIND
    while p < end:
        die_off = p
        code = info[p]
        if code < 0x80:
            p += 1
        else:
            code, p = uleb(info, p)
        if code == 0:
            if len(stack) > 1:
                stack.pop()
            continue
        plan = plans[code]
        parent = stack[-1]
        if plan.fixed >= 0 and (parent is _SKIP or not plan.children):
            tag = plan.tag
            if parent is _SKIP or not (tag in type_tags or tag in child_tags or tag == T_VARIABLE):
                p += plan.fixed
                if plan.children:
                    stack.append(_SKIP)
                continue
        decode = plan.decode
        if decode is None:
            decode = plan.decode = compiler.compile(plan)
        attrs, p = decode(info, p, cu_off, str_base, addr_base)
        tag = plan.tag
        if parent is _SKIP:
            if plan.children:
                stack.append(_SKIP)
            continue
        if tag in scope_tags:
            if tag != T_NAMESPACE:
                str_base = attrs.get(A_STR_OFFSETS_BASE, str_base)
                addr_base = attrs.get(A_ADDR_BASE, addr_base)
            if plan.children:
                stack.append(_TOP)
            continue
        if tag in type_tags or (tag in child_tags and parent is not _TOP) or (tag == T_VARIABLE and parent is _TOP):
            if plan.children and tag in named_tags and A_NAME in attrs and A_BYTE_SIZE in attrs \
                    and not attrs.get(A_DECLARATION):
                # The index only ever uses the first complete definition of a named
                # struct/union/enum, so later copies (one per CU including the header)
                # need not be walked: keep the DIE, jump over its members.
                key = (named_tags[tag], attrs[A_NAME])
                sib = attrs.get(A_SIBLING)
                if key in complete_seen and sib is not None and sib > die_off:
                    dies[die_off] = (tag, attrs, [])
                    if parent is not _TOP:
                        parent.append(die_off)  # type: ignore[attr-defined]
                    p = sib
                    continue
                complete_seen.add(key)
            kids: Optional[list] = [] if (plan.children and tag in container_tags) else None
            dies[die_off] = (tag, attrs, kids)
            if parent is not _TOP:
                parent.append(die_off)  # type: ignore[attr-defined]
            if plan.children:
                if kids is not None:
                    stack.append(kids)
                elif A_SIBLING in attrs and attrs[A_SIBLING] > die_off:
                    p = attrs[A_SIBLING]
                else:
                    stack.append(_SKIP)
            continue
        if plan.children:
            sib = attrs.get(A_SIBLING)
            if sib is not None and sib > die_off:
                p = sib
            else:
                stack.append(_SKIP)


class _Compilers:
    """One _Compiler per (offset size, address size) for a scan, sharing the string cache."""

    def __init__(self, sec: Sections):
        self.sec = sec
        self.strcache: Dict[int, str] = {}
        self.by_shape: Dict[Tuple[int, int], "_Compiler"] = {}

    def for_unit(self, offsize: int, addrsize: int) -> "_Compiler":
        c = self.by_shape.get((offsize, addrsize))
        if c is None:
            c = self.by_shape[(offsize, addrsize)] = _Compiler(self.sec, self.strcache, offsize, addrsize)
        return c


class _Compiler:
    """Turns an abbreviation's plan into a straight-line Python function.

    Interpreting the plan step by step costs a tuple unpack and a chain of
    comparisons per attribute per DIE; generated code does only the reads, which
    roughly halves the scan time on large images.  Identical plans (the same
    abbreviation in many CUs) share one function.
    """

    def __init__(self, sec: Sections, strcache: Dict[int, str], offsize: int, addrsize: int):
        dstr, line_str, str_offsets, addr = sec.str, sec.line_str, sec.str_offsets, sec.addr

        def strp(v: int) -> str:
            e = dstr.index(b"\0", v)
            s = strcache[v] = dstr[v:e].decode("utf-8", "replace")
            return s

        def line_strp(v: int) -> str:
            e = line_str.index(b"\0", v)
            return line_str[v:e].decode("utf-8", "replace")

        def read_form(info, p, form, cu_off, str_base, addr_base):
            return _read_form(info, p, form, offsize, addrsize, cu_off, sec, str_base, addr_base, strcache)

        self.namespace = {
            "u16": _U16.unpack_from, "u32": _U32.unpack_from, "u64": _U64.unpack_from,
            "sc_get": strcache.get, "strp": strp, "line_strp": line_strp,
            "strx": lambda base, v: _strx(dstr, str_offsets, base, offsize, v, strcache),
            "addrx": lambda base, v: _addrx(addr, base, addrsize, v),
            "skip_form": lambda info, p, form: _skip_form(info, p, form, offsize, addrsize),
            "read_form": read_form,
        }
        self.cache: Dict[tuple, object] = {}

    def compile(self, plan: Plan):
        key = tuple(plan.steps)
        fn = self.cache.get(key)
        if fn is None:
            fn = self.cache[key] = self._generate(plan.steps)
        return fn

    def _generate(self, steps: list):
        out = ["def decode(info, p, cu_off, str_base, addr_base):", "    attrs = {}"]
        for step in steps:
            kind = step[0]
            if kind == 0:
                out.append(f"    p += {step[1]}")
            elif kind == 1:
                attr, size, post = step[1], step[2], step[3]
                if post == P_NONE:
                    out.append(f"    p += {size}")
                    continue
                if size == 1:
                    read = "info[p]"
                elif size == 3:
                    read = "int.from_bytes(info[p:p + 3], 'little')"
                elif size == 16:
                    read = "0"
                else:
                    read = f"u{size * 8}(info, p)[0]"
                out.append(f"    v = {read}")
                out.append(f"    p += {size}")
                if post == P_STRP:
                    out.append("    s = sc_get(v)")
                    out.append("    attrs[%d] = s if s is not None else strp(v)" % attr)
                    continue
                expr = {P_REF: "v + cu_off", P_LINE_STRP: "line_strp(v)", P_STRX: "strx(str_base, v)",
                        P_CONST: f"(v, {size})", P_FLAG: "v != 0", P_ADDRX: "addrx(addr_base, v)"}.get(post, "v")
                out.append(f"    attrs[{attr}] = {expr}")
            elif kind == 3:
                out.append(f"    attrs[{step[1]}] = {step[2]!r}")
            elif kind == 5:
                out.append("    e = info.index(b'\\0', p)")
                out.append(f"    attrs[{step[1]}] = info[p:e].decode('utf-8', 'replace')")
                out.append("    p = e + 1")
            elif kind == 2:
                out.append(f"    p = skip_form(info, p, {step[1]})")
            else:
                out.append(f"    v, p = read_form(info, p, {step[2]}, cu_off, str_base, addr_base)")
                out.append(f"    if v is not None: attrs[{step[1]}] = v")
        out.append("    return attrs, p")
        namespace = dict(self.namespace)
        exec(compile("\n".join(out), "<dwarf-abbrev-decoder>", "exec"), namespace)
        return namespace["decode"]


def _strx(dstr: bytes, str_offsets: bytes, base: int, offsize: int, index: int, strcache: dict) -> Optional[str]:
    at = base + index * offsize
    if at + offsize > len(str_offsets):
        return None
    v = (_U32 if offsize == 4 else _U64).unpack_from(str_offsets, at)[0]
    s = strcache.get(v)
    if s is None:
        e = dstr.index(b"\0", v)
        s = strcache[v] = dstr[v:e].decode("utf-8", "replace")
    return s


def _addrx(addr: bytes, base: int, addrsize: int, index: int) -> Optional[int]:
    at = base + index * addrsize
    if at + addrsize > len(addr):
        return None
    return int.from_bytes(addr[at:at + addrsize], "little")


def _skip_form(info, p: int, form: int, offsize: int, addrsize: int) -> int:
    if form == F_STRING:
        return info.index(b"\0", p) + 1
    if form in (F_EXPRLOC, F_BLOCK):
        length, p = uleb(info, p)
        return p + length
    if form in (F_SDATA, F_UDATA, F_REF_UDATA, F_STRX, F_ADDRX, F_LOCLISTX, F_RNGLISTX,
                F_GNU_ADDR_INDEX, F_GNU_STR_INDEX):
        while info[p] & 0x80:
            p += 1
        return p + 1
    if form == F_BLOCK1:
        return p + 1 + info[p]
    if form == F_BLOCK2:
        return p + 2 + _U16.unpack_from(info, p)[0]
    if form == F_BLOCK4:
        return p + 4 + _U32.unpack_from(info, p)[0]
    if form == F_INDIRECT:
        real, p = uleb(info, p)
        size = _fixed_size(real, offsize, addrsize, 5)
        return p + size if size is not None else _skip_form(info, p, real, offsize, addrsize)
    raise FormatError(f"unknown DWARF form {form:#x}")


def _read_form(info, p: int, form: int, offsize: int, addrsize: int, cu_off: int, sec: Sections,
               str_base: int, addr_base: int, strcache: dict):
    """Slow path for variable-length forms of attributes we want."""
    if form == F_STRING:
        e = info.index(b"\0", p)
        return info[p:e].decode("utf-8", "replace"), e + 1
    if form in (F_EXPRLOC, F_BLOCK):
        length, p = uleb(info, p)
        return bytes(info[p:p + length]), p + length
    if form == F_BLOCK1:
        length = info[p]
        return bytes(info[p + 1:p + 1 + length]), p + 1 + length
    if form == F_BLOCK2:
        length = _U16.unpack_from(info, p)[0]
        return bytes(info[p + 2:p + 2 + length]), p + 2 + length
    if form == F_BLOCK4:
        length = _U32.unpack_from(info, p)[0]
        return bytes(info[p + 4:p + 4 + length]), p + 4 + length
    if form == F_SDATA:
        return sleb(info, p)
    if form == F_UDATA:
        return uleb(info, p)
    if form == F_REF_UDATA:
        v, p = uleb(info, p)
        return v + cu_off, p
    if form in (F_STRX, F_GNU_STR_INDEX):
        v, p = uleb(info, p)
        return _strx(sec.str, sec.str_offsets, str_base, offsize, v, strcache), p
    if form in (F_ADDRX, F_GNU_ADDR_INDEX):
        v, p = uleb(info, p)
        return _addrx(sec.addr, addr_base, addrsize, v), p
    if form in (F_LOCLISTX, F_RNGLISTX):
        v, p = uleb(info, p)
        return None, p
    if form == F_INDIRECT:
        real, p = uleb(info, p)
        size = _fixed_size(real, offsize, addrsize, 5)
        if size is None:
            return _read_form(info, p, real, offsize, addrsize, cu_off, sec, str_base, addr_base, strcache)
        raw = int.from_bytes(info[p:p + size], "little")
        if real in (F_REF1, F_REF2, F_REF4, F_REF8):
            raw += cu_off
        elif real == F_STRP:
            e = sec.str.index(b"\0", raw)
            raw = sec.str[raw:e].decode("utf-8", "replace")
        return raw, p + size
    raise FormatError(f"unknown DWARF form {form:#x}")
