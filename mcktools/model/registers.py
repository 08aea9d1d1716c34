"""Register sets of threads, as a debugger needs them (reference §7).

* A switched-out thread: its `ctx` (struct x86_kregs) gives the callee-saved
  registers; rip is `ihk_mc_switch_context`'s entry so an unwinder finds the
  return address at [rsp] (what eclair sends, §7.2).  Caller-saved ones are
  unknown (None), never zero.
* A CPU's current thread in a dump: that CPU's `panic_regs` (21 qwords in GDB
  amd64 `g` order: 17 64-bit registers, then eflags and 6 selectors as 32-bit
  values), valid when `paniced` is set.
* The user registers of a thread inside the kernel: the `x86_user_context`
  frame at `uctx` (§7.4).

Values are dicts name -> int | None in GDB amd64 order (GDB_REGS).  Where the
kernel stored placeholders rather than register values the dicts say None
(unavailable), never the placeholder: ds/es/fs/gs come from a frame area the
entry code never fills, and for an NMI taken in user mode the kernel writes 0
for rax, rcx, rdx and r8-r11 (reference §7.3).  The byte-level decoders
(`decode_panic_regs`, `kregs_registers`) are shared with eclair (eclair.regsets).

This module is also the one place that finds a CPU's saved registers
(`panic_registers`, locals + cpu * span) and which CPUs panicked
(`panicked_cpus`) for every frontend: mcinspect, eclair's provider and
`mcdump to-elf` (`core_cpu_registers`, registers as plain ints).
"""

from __future__ import annotations

import struct
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..errors import CorruptStructure, DebugInfoError, UnreadableAddress
from .objects import Object

GDB_REGS64 = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
              "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip")
GDB_REGS32 = ("eflags", "cs", "ss", "ds", "es", "fs", "gs")
GDB_REGS = GDB_REGS64 + GDB_REGS32


PANIC_REGS_QWORDS = 21
PANIC_REGS_SIZE = PANIC_REGS_QWORDS * 8
_NEVER_FILLED = ("ds", "es", "fs", "gs")
_ZEROED_FOR_USER = ("rax", "rcx", "rdx", "r8", "r9", "r10", "r11")
#: struct x86_kregs members that hold real values after a switch-out (reference §7.1)
KREGS_KEPT = ("rsp", "rbp", "rbx", "rsi", "rdi", "r12", "r13", "r14", "r15")


def _empty() -> dict:
    return {r: None for r in GDB_REGS}


def kregs_registers(ctx: Mapping[str, int], switch_context_entry: Optional[int]) -> Dict[str, Optional[int]]:
    """Registers of a switched-out thread from its x86_kregs members (a mapping
    member name -> value); rip is `ihk_mc_switch_context`'s entry (§7.2)."""
    regs: Dict[str, Optional[int]] = _empty()
    for name in KREGS_KEPT:
        if name in ctx:
            regs[name] = int(ctx[name])
    if "rflags" in ctx:
        regs["eflags"] = int(ctx["rflags"]) & 0xFFFFFFFF
    regs["rip"] = switch_context_entry
    return regs


def decode_panic_regs(raw: bytes, *, enter_user_mode: Optional[int] = None) -> Dict[str, Optional[int]]:
    """A CPU's panic_regs bytes -> registers.  `enter_user_mode` is that symbol's
    address: the kernel stores it as rip when the NMI hit user mode, and then the
    zeroed slots are not values."""
    if len(raw) < 17 * 8 + 7 * 4:
        raise ValueError(f"panic_regs needs {17 * 8 + 7 * 4} bytes, got {len(raw)}")
    regs: Dict[str, Optional[int]] = dict(zip(GDB_REGS64, struct.unpack_from("<17Q", raw, 0)))
    regs.update(zip(GDB_REGS32, struct.unpack_from("<7I", raw, 17 * 8)))
    for name in _NEVER_FILLED:
        regs[name] = None
    if enter_user_mode is not None and regs["rip"] == enter_user_mode:
        for name in _ZEROED_FOR_USER:
            regs[name] = None
    return regs


def _symbol_or_none(t: Any, name: str) -> Optional[int]:
    try:
        return t.symbol(name)
    except DebugInfoError:
        return None


def kernel_context(t: Any, thread: Object) -> dict:
    """Registers of a switched-out thread from `thread->ctx`."""
    ctx = thread.ctx
    values = {name: int(ctx.member_(name)) for name in KREGS_KEPT}
    values["rflags"] = int(ctx.rflags)
    return kregs_registers(values, _symbol_or_none(t, "ihk_mc_switch_context"))


def return_address(t: Any, thread: Object) -> Optional[int]:
    """[ctx.rsp]: where the switched-out thread continues (its caller of the switch)."""
    rsp = int(thread.ctx.rsp)
    if not rsp:
        return None
    try:
        return t.read_u64(rsp)
    except UnreadableAddress:
        return None


#: x86_cpu_local_variables_span when the image lacks the symbol (or it reads 0):
#: LOCALS_SPAN = 4 pages, what McKernel's x86_64 build sets (reference §5)
LOCALS_SPAN_DEFAULT = 4 * 4096
#: offsetof(struct x86_cpu_local_variables, panic_regs) without DWARF (reference §6.8)
PANIC_REGS_OFFSET = 288


def locals_span(t: Any) -> int:
    """Stride between the CPUs' `struct x86_cpu_local_variables`."""
    try:
        return int(t.variable("x86_cpu_local_variables_span")) or LOCALS_SPAN_DEFAULT
    except DebugInfoError:
        return LOCALS_SPAN_DEFAULT


def locals_address(t: Any, cpu: int) -> int:
    """VA of the CPU's `struct x86_cpu_local_variables` (locals + cpu * span)."""
    base = int(t.variable("locals"))
    if not base:
        # an UnreadableAddress (not CorruptStructure) so that callers which
        # already cope with an unreadable area cope with this too
        raise UnreadableAddress(cpu * locals_span(t), "locals is NULL: the per-CPU areas were not set up",
                                physical=False)
    return base + cpu * locals_span(t)


def locals_of(t: Any, cpu: int) -> Object:
    """The CPU's `struct x86_cpu_local_variables`."""
    return t.object(locals_address(t, cpu), "struct x86_cpu_local_variables")


def panic_regs_address(t: Any, cpu: int) -> int:
    """VA of the CPU's `panic_regs` (the fixed offset when DWARF lacks the struct)."""
    try:
        off = t.offsetof("struct x86_cpu_local_variables", "panic_regs")
    except DebugInfoError:
        off = PANIC_REGS_OFFSET
    return locals_address(t, cpu) + off


def panic_registers(t: Any, cpu: int, *, require_paniced: bool = True) -> Optional[dict]:
    """The registers the dump NMI (or a kernel fault) saved on `cpu`.

    None when the CPU saved none: with `require_paniced` (the default) that is
    `paniced` clear; without it (no DWARF needed) an all-zero area, which the
    kernel never filled - a resumed kernel clears `paniced` but keeps the
    registers, so eclair still shows them."""
    if require_paniced and not int(locals_of(t, cpu).paniced):
        return None
    raw = t.read(panic_regs_address(t, cpu), PANIC_REGS_SIZE)
    if not require_paniced and not any(raw):
        return None
    return decode_panic_regs(raw, enter_user_mode=_symbol_or_none(t, "enter_user_mode"))


def integer_registers(regs: Optional[Mapping[str, Optional[int]]]) -> Dict[str, int]:
    """Every GDB register as an int, unavailable ones (None, or no set) as 0: for
    formats that cannot say "unavailable", such as an ELF core's NT_PRSTATUS."""
    regs = regs or {}
    return {name: regs.get(name) or 0 for name in GDB_REGS}


def core_cpu_registers(t: Any, warnings: List[str]) -> List[Tuple[int, Dict[str, int]]]:
    """(cpu, registers as ints) for every CPU, whether or not it saved any (to-elf
    writes one NT_PRSTATUS per CPU).  Missing symbols or unreadable areas become
    `warnings` rather than errors: a core without registers is still useful."""
    from .cpus import num_cpus
    n = num_cpus(t)
    try:
        locals_address(t, 0)
    except (DebugInfoError, UnreadableAddress) as exc:
        warnings.append(f"no per-CPU registers: {exc}")
        return []
    out = []
    for cpu in range(n):
        try:
            regs = panic_registers(t, cpu, require_paniced=False)
        except UnreadableAddress as exc:
            warnings.append(f"CPU {cpu}: panic_regs not in the dump ({exc})")
            continue
        out.append((cpu, integer_registers(regs)))
    return out


def panicked_cpus(t: Any) -> List[int]:
    """CPUs the kernel says panicked: `panic_cpu` first (when the image has it and
    it is set), then, ascending, CPUs whose cpu_local_var has `panic_regs_saved`
    set.  Empty when the dump holds no such evidence."""
    found: List[int] = []
    try:
        v = int(t.variable("panic_cpu"))
        if v >= 0:
            found.append(v)
    except (DebugInfoError, UnreadableAddress):
        pass
    try:
        cpus = t.cpus()
    except (DebugInfoError, CorruptStructure, UnreadableAddress):
        cpus = []              # no CPU table (e.g. no DWARF): panic_cpu is all we know
    for c in cpus:
        if c.id in found:
            continue
        clv = t.object(c.clv, "struct cpu_local_var")
        try:
            if clv.has_member_("panic_regs_saved") and int(clv.panic_regs_saved):
                found.append(c.id)
        except UnreadableAddress:
            pass
    return found


def user_registers(t: Any, thread: Object) -> Optional[dict]:
    """The user frame at `thread->uctx` (None when there is none)."""
    if not int(thread.uctx):
        return None
    gpr = thread.uctx.gpr
    regs = _empty()
    for name in GDB_REGS64:
        regs[name] = int(gpr.member_(name))
    regs["eflags"] = int(gpr.rflags) & 0xFFFFFFFF
    regs["cs"] = int(gpr.cs) & 0xFFFF
    regs["ss"] = int(gpr.ss) & 0xFFFF
    return regs


def thread_registers(t: Any, info: Any) -> dict:
    """Best register set of a thread (a threads.ThreadInfo): the CPU's saved
    registers for a current thread, the switch context otherwise."""
    if info.row.current:
        regs = panic_registers(t, info.row.cpu)
        return regs if regs is not None else _empty()
    return kernel_context(t, info.obj)
