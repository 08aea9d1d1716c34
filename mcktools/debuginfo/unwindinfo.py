"""Call-frame information (CFI), line table and inlined calls of a kernel image.

The unwinder needs, for any code address, the rule that recovers the caller's
registers (CFA = reg + offset, saved registers at CFA + n) and, for display,
the source line and the calls the compiler inlined there (each is a frame, as
in gdb and drgn).  They are decoded from `.eh_frame` (else `.debug_frame`),
`.debug_line` and the DW_TAG_inlined_subroutine DIEs with pyelftools -- slow to
import and to run -- so the decoded tables are stored as plain tuples (marshal)
in the DWARF index's cache folder, under the same kind of content key (format,
build-id, size, SHA-256), and memoised per process.

Rule kinds in a row: "o" = saved at CFA+arg, "v" = value is CFA+arg,
"r" = in register arg, "s" = same value, "u" = undefined, "x" = an expression
we do not evaluate (the unwinder then falls back to frame pointers).
"""

from __future__ import annotations

import bisect
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..errors import DebugInfoError
from . import cache as _cache

FORMAT = 1
_MEMORY: Dict[str, "UnwindTables"] = {}

#: DWARF register numbers of x86_64 (System V psABI, figure 3.36); 16 = return address
X86_64_DWARF_REGS = ("rax", "rdx", "rcx", "rbx", "rsi", "rdi", "rbp", "rsp",
                     "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip")
RA_REGNO = 16


@dataclass(frozen=True)
class CfiRow:
    """The unwind rule that holds from `pc` up to the next row of its FDE."""

    pc: int
    cfa_reg: Optional[int]      # None: CFA given by an expression (not evaluated)
    cfa_offset: int
    rules: Tuple[Tuple[int, str, Optional[int]], ...]   # (regno, kind, arg)

    def rule(self, regno: int) -> Optional[Tuple[str, Optional[int]]]:
        for r, kind, arg in self.rules:
            if r == regno:
                return kind, arg
        return None


class UnwindTables:
    """Sorted FDEs (start, end, rows) and a sorted line table."""

    def __init__(self, payload: dict, source: str):
        self.source = source                     # "built", "disk" or "memory"
        self.cfi_section: Optional[str] = payload["cfi_section"]
        self._fdes: list = sorted(payload["fdes"], key=lambda f: f[0])
        self._starts = [f[0] for f in self._fdes]
        self._files: list = payload["files"]
        self._line_addrs: list = [r[0] for r in payload["lines"]]
        self._lines: list = payload["lines"]
        self._inlines: list = sorted(payload["inlines"])
        self._inline_starts = [r[0] for r in self._inlines]
        self._inline_span = max((r[1] - r[0] for r in self._inlines), default=0)

    @property
    def fde_count(self) -> int:
        return len(self._fdes)

    def row(self, pc: int) -> Optional[CfiRow]:
        """The CFI row covering `pc`, or None when no FDE covers it."""
        i = bisect.bisect_right(self._starts, pc) - 1
        if i < 0:
            return None
        start, end, rows = self._fdes[i]
        if not start <= pc < end or not rows:
            return None
        j = bisect.bisect_right([r[0] for r in rows], pc) - 1
        if j < 0:
            return None
        pc0, reg, off, rules = rows[j]
        return CfiRow(pc0, reg, off, tuple(tuple(r) for r in rules))

    def line(self, pc: int) -> Optional[Tuple[str, int]]:
        """(file, line) of the instruction at `pc`, or None."""
        i = bisect.bisect_right(self._line_addrs, pc) - 1
        if i < 0:
            return None
        _addr, file_idx, line, end_seq = self._lines[i]
        if end_seq or file_idx < 0 or file_idx >= len(self._files) or line <= 0:
            return None
        return self._files[file_idx], line


    def inlined_at(self, pc: int) -> list:
        """Functions inlined at `pc`, innermost first: [(name, call_file, call_line)]."""
        hits = []
        i = bisect.bisect_right(self._inline_starts, pc)
        lo_bound = pc - self._inline_span
        while i > 0:
            i -= 1
            lo, hi, depth, name, cfile, cline = self._inlines[i]
            if lo < lo_bound:
                break
            if lo <= pc < hi:
                hits.append((depth, name, cfile, cline))
        hits.sort(reverse=True)
        seen, out = set(), []
        for depth, name, cfile, cline in hits:
            if depth not in seen:        # one inlined call per nesting level
                seen.add(depth)
                out.append((name, cfile, cline))
        return out


def _content_key(path: Path, build_id: Optional[bytes]) -> str:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            size += len(block)
    return f"unwind{FORMAT}-" + _cache.cache_key(build_id, size, h.hexdigest())


def unwind_tables(image: Any, *, use_cache: bool = True) -> UnwindTables:
    """The image's CFI and line tables: from this process, the disk cache, or built."""
    path = Path(image.path)
    st = os.stat(path)
    memo = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    if use_cache and memo in _MEMORY:
        return _MEMORY[memo]
    key = _content_key(path, getattr(image, "build_id", None))
    cpath = None
    payload = None
    if use_cache:
        cpath = _cache.cache_dir() / f"{key[:120]}.idx"   # "unwind1-v1-<build-id>-..."
        payload = _cache.load(cpath, key)
        if payload is not None and not {"fdes", "lines", "files", "cfi_section", "inlines"} <= payload.keys():
            payload = None
    source = "disk"
    if payload is None:
        payload = build_payload(path)
        source = "built"
        if cpath is not None:
            _cache.store(cpath, key, payload)
    tables = UnwindTables(payload, source)
    if use_cache:
        _MEMORY[memo] = tables
    return tables


def build_payload(path: Path) -> dict:
    """Decode CFI and line programs with pyelftools into plain tuples."""
    try:
        from elftools.common.exceptions import ELFError, DWARFError
        from elftools.elf.elffile import ELFFile
    except ImportError:  # pragma: no cover - pyelftools is a dependency
        raise DebugInfoError("pyelftools is needed to unwind (pip install pyelftools)") from None
    with open(path, "rb") as fh:
        try:
            elf = ELFFile(fh)
            if not elf.has_dwarf_info() and elf.get_section_by_name(".eh_frame") is None:
                return {"cfi_section": None, "fdes": [], "lines": [], "files": [], "inlines": []}
            dwarf = elf.get_dwarf_info()
            fdes, section = _decode_cfi(dwarf)
            lines, files = _decode_lines(dwarf)
            inlines = _decode_inlines(dwarf)
        except (ELFError, DWARFError, ValueError, KeyError, IndexError, AttributeError, TypeError) as exc:
            # a damaged .eh_frame/.debug_line must not stop the tools: unwind by frame pointers
            return {"cfi_section": None, "fdes": [], "lines": [], "files": [], "inlines": [], "error": str(exc)}
    return {"cfi_section": section, "fdes": fdes, "lines": lines, "files": files, "inlines": inlines}


def _decode_cfi(dwarf: Any) -> Tuple[list, Optional[str]]:
    if dwarf.has_EH_CFI():
        entries, section = dwarf.EH_CFI_entries(), ".eh_frame"
    elif dwarf.has_CFI():
        entries, section = dwarf.CFI_entries(), ".debug_frame"
    else:
        return [], None
    out = []
    for e in entries:
        if type(e).__name__ != "FDE":
            continue
        start = e.header["initial_location"]
        end = start + e.header["address_range"]
        rows = []
        for row in e.get_decoded().table:
            cfa = row["cfa"]
            reg = cfa.reg if cfa.expr is None else None
            rules = []
            for regno, rule in row.items():
                if not isinstance(regno, int):
                    continue
                kind = {"OFFSET": "o", "VAL_OFFSET": "v", "REGISTER": "r", "SAME_VALUE": "s",
                        "UNDEFINED": "u"}.get(rule.type, "x")
                arg = rule.arg if kind in ("o", "v", "r") else None
                rules.append((regno, kind, arg))
            rows.append((row["pc"], reg, cfa.offset or 0, tuple(sorted(rules))))
        out.append((start, end, tuple(rows)))
    return out, section


def _decode_lines(dwarf: Any) -> Tuple[list, list]:
    """(address, file index, line, end_sequence) rows sorted by address, and file names."""
    files: List[str] = []
    file_ids: Dict[str, int] = {}
    rows: list = []
    if not dwarf.has_debug_info:
        return rows, files
    for cu in dwarf.iter_CUs():
        prog = dwarf.line_program_for_CU(cu)
        if prog is None:
            continue
        version = prog.header["version"]
        names = []
        for fe in prog.header["file_entry"]:
            name = fe.name.decode("utf-8", "replace") if isinstance(fe.name, bytes) else str(fe.name)
            names.append(os.path.basename(name))
        for entry in prog.get_entries():
            st = entry.state
            if st is None:
                continue
            idx = st.file if version >= 5 else st.file - 1
            name = names[idx] if 0 <= idx < len(names) else "?"
            fid = file_ids.setdefault(name, len(files))
            if fid == len(files):
                files.append(name)
            rows.append((st.address, fid, st.line, bool(st.end_sequence)))
    # at one address an end_sequence of the previous sequence loses against a new row
    rows.sort(key=lambda r: (r[0], not r[3]))
    return rows, files


def _die_name(die: Any, hops: int = 0) -> Optional[str]:
    if "DW_AT_name" in die.attributes:
        v = die.attributes["DW_AT_name"].value
        return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
    for attr in ("DW_AT_abstract_origin", "DW_AT_specification"):
        if attr in die.attributes and hops < 8:
            return _die_name(die.get_DIE_from_attribute(attr), hops + 1)
    return None


def _die_ranges(dwarf: Any, die: Any, cu: Any, cu_base: int) -> list:
    a = die.attributes
    if "DW_AT_low_pc" in a and "DW_AT_high_pc" in a:
        lo = a["DW_AT_low_pc"].value
        hi = a["DW_AT_high_pc"]
        end = hi.value if hi.form == "DW_FORM_addr" else lo + hi.value
        return [(lo, end)]
    if "DW_AT_ranges" in a:
        rl = dwarf.range_lists()
        if rl is None:
            return []
        out, base = [], cu_base
        for e in rl.get_range_list_at_offset(a["DW_AT_ranges"].value, cu=cu):
            if hasattr(e, "base_address"):
                base = e.base_address
            elif getattr(e, "is_absolute", False):
                out.append((e.begin_offset, e.end_offset))
            else:
                out.append((base + e.begin_offset, base + e.end_offset))
        return [(lo, hi) for lo, hi in out if hi > lo]
    return []


def _decode_inlines(dwarf: Any) -> list:
    """(lo, hi, depth, name, call file, call line) for every inlined call's code range."""
    out: list = []
    if not dwarf.has_debug_info:
        return out
    for cu in dwarf.iter_CUs():
        top = cu.get_top_DIE()
        cu_base = top.attributes["DW_AT_low_pc"].value if "DW_AT_low_pc" in top.attributes else 0
        prog = dwarf.line_program_for_CU(cu)
        names = []
        version = 5
        if prog is not None:
            version = prog.header["version"]
            for fe in prog.header["file_entry"]:
                n = fe.name.decode("utf-8", "replace") if isinstance(fe.name, bytes) else str(fe.name)
                names.append(os.path.basename(n))
        stack = [(top, 0)]
        while stack:
            die, depth = stack.pop()
            for child in die.iter_children():
                tag = child.tag
                if tag == "DW_TAG_inlined_subroutine":
                    name = _die_name(child) or "?"
                    a = child.attributes
                    cf = a["DW_AT_call_file"].value if "DW_AT_call_file" in a else -1
                    idx = cf if version >= 5 else cf - 1
                    cfile = names[idx] if 0 <= idx < len(names) else None
                    cline = a["DW_AT_call_line"].value if "DW_AT_call_line" in a else None
                    for lo, hi in _die_ranges(dwarf, child, cu, cu_base):
                        out.append((lo, hi, depth + 1, name, cfile, cline))
                    stack.append((child, depth + 1))
                elif tag in ("DW_TAG_subprogram", "DW_TAG_lexical_block"):
                    stack.append((child, depth))
    return out
