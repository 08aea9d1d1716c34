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

Values are dicts name -> int | None in GDB amd64 order (GDB_REGS).
"""

from __future__ import annotations

import struct
from typing import Any, Optional

from ..errors import DebugInfoError, UnreadableAddress
from .objects import Object

GDB_REGS64 = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
              "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip")
GDB_REGS32 = ("eflags", "cs", "ss", "ds", "es", "fs", "gs")
GDB_REGS = GDB_REGS64 + GDB_REGS32


def _empty() -> dict:
    return {r: None for r in GDB_REGS}


def kernel_context(t: Any, thread: Object) -> dict:
    """Registers of a switched-out thread from `thread->ctx`."""
    regs = _empty()
    ctx = thread.ctx
    for name in ("rbx", "rsi", "rdi", "rbp", "rsp", "r12", "r13", "r14", "r15"):
        regs[name] = int(ctx.member_(name))
    regs["eflags"] = int(ctx.rflags) & 0xFFFFFFFF
    try:
        regs["rip"] = t.symbol("ihk_mc_switch_context")
    except DebugInfoError:
        regs["rip"] = None
    return regs


def return_address(t: Any, thread: Object) -> Optional[int]:
    """[ctx.rsp]: where the switched-out thread continues (its caller of the switch)."""
    rsp = int(thread.ctx.rsp)
    if not rsp:
        return None
    try:
        return t.read_u64(rsp)
    except UnreadableAddress:
        return None


def locals_of(t: Any, cpu: int) -> Object:
    """The CPU's `struct x86_cpu_local_variables` (locals + cpu * span)."""
    base = int(t.variable("locals"))
    try:
        span = int(t.variable("x86_cpu_local_variables_span"))
    except DebugInfoError:
        span = 4096          # what eclair assumes without the symbol (reference §5)
    return t.object(base + cpu * span, "struct x86_cpu_local_variables")


def panic_registers(t: Any, cpu: int) -> Optional[dict]:
    """The registers the dump NMI (or a kernel fault) saved on `cpu`, or None if
    the CPU had not saved any (`paniced` clear)."""
    loc = locals_of(t, cpu)
    if not int(loc.paniced):
        return None
    raw = t.read(loc.panic_regs.address_, 21 * 8)
    regs = dict(zip(GDB_REGS64, struct.unpack_from("<17Q", raw)))
    regs.update(zip(GDB_REGS32, struct.unpack_from("<7I", raw, 17 * 8)))
    return regs


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
