"""A process's memory map: the `vm_range` rb-tree of its `process_vm`, in order.

Labels follow crash's `mcmem`: the backing file's path when the memobj has
one, else [vdso] (start == vdso_addr), [vvar] (start == vvar_addr; crash
prints [vsyscall] there), [stack] (VR_STACK), [heap] (inside
[brk_start, brk_end_allocated]).
"""

from __future__ import annotations

from typing import Any, Optional

from ..errors import CorruptStructure, UnreadableAddress
from .lists import rbtree_for_each_entry
from .objects import Object
from .rows import VmRangeRow

VR_FALLBACK = {"VR_STACK": 0x1, "VR_PRIVATE": 0x2000, "VR_PROT_READ": 0x10000,
               "VR_PROT_WRITE": 0x20000, "VR_PROT_EXEC": 0x40000}


def vr_bits(t: Any) -> dict:
    key = ("vr_bits",)
    if key not in t._cache:
        names = t.enum_names(VR_FALLBACK)
        t._cache[key] = {n: v for v, n in names.items()}
    return t._cache[key]


def perm_string(t: Any, flag: int) -> str:
    b = vr_bits(t)
    return "".join((
        "r" if flag & b["VR_PROT_READ"] else "-",
        "w" if flag & b["VR_PROT_WRITE"] else "-",
        "x" if flag & b["VR_PROT_EXEC"] else "-",
        "p" if flag & b["VR_PRIVATE"] else "-",
    ))


def vm_ranges(t: Any, proc: Object) -> list:
    """VmRangeRows of `proc` (a struct process Object), ascending."""
    if not int(proc.vm):
        return []
    vm = proc.vm.deref_()
    bits = vr_bits(t)
    try:
        vdso = int(vm.vdso_addr) if vm.has_member_("vdso_addr") else 0
        vvar = int(vm.vvar_addr) if vm.has_member_("vvar_addr") else 0
        brk_start = int(vm.region.brk_start)
        brk_end = int(vm.region.brk_end_allocated) if vm.region.has_member_("brk_end_allocated") \
            else int(vm.region.brk_end)
    except UnreadableAddress as exc:
        raise CorruptStructure(f"process_vm at {vm.address_:#x} cannot be read: {exc}") from None
    rows = []
    prev_end = 0
    what = f"vm_range tree of pid {int(proc.pid)}"
    for r in rbtree_for_each_entry(t, vm.vm_range_tree, "struct vm_range", "vm_rb_node", what=what):
        try:
            start, end, flag = int(r.start), int(r.end), int(r.flag)
            memobj = int(r.memobj)
            path: Optional[str] = None
            if memobj:
                p = int(r.memobj.path)
                if p:
                    path = t.mem.read_cstring(p, 4096).decode("utf-8", "replace") or None
        except UnreadableAddress as exc:
            raise CorruptStructure(f"{what}: vm_range at {r.address_:#x} cannot be read: {exc}") from None
        if end <= start or start < prev_end:
            raise CorruptStructure(f"{what}: range {start:#x}-{end:#x} at {r.address_:#x} is out of order")
        prev_end = end
        if path:
            label = path
        elif vdso and start == vdso:
            label = "[vdso]"
        elif vvar and start == vvar:
            label = "[vvar]"
        elif flag & bits["VR_STACK"]:
            label = "[stack]"
        elif brk_start <= start and end <= brk_end and brk_end > brk_start:
            label = "[heap]"
        else:
            label = ""
        rows.append(VmRangeRow(start=start, end=end, flag=flag, perm=perm_string(t, flag),
                               size=end - start, memobj=memobj, path=path, label=label,
                               addr=r.address_))
    return rows


def range_for(rows: list, va: int) -> Optional[VmRangeRow]:
    for r in rows:
        if r.start <= va < r.end:
            return r
    return None
