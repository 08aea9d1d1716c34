"""McKernel x86_64 saved register areas -> register dicts for the server.

Two sources (ABI reference §7):
- a switched-out thread's `thread->ctx` (struct x86_kregs), saved by
  ihk_mc_switch_context: only callee-saved registers, rsp and rflags are
  real.  As upstream eclair does, rip is reported as the entry of
  ihk_mc_switch_context so gdb finds the return address at [rsp].
- a CPU's `panic_regs` (21 qwords filled by the dump NMI): the amd64 `g`
  order, 17 qwords then 7 dwords (eflags, cs, ss, ds, es, fs, gs).

Where the kernel stored placeholders rather than register values we report
None (unavailable) instead of passing the placeholder on: ds/es/fs/gs come
from a frame area the entry code never fills, and for an interrupt taken in
user mode the kernel writes 0 for rax, rcx, rdx and r8-r11.
"""

from __future__ import annotations

import struct
from typing import Dict, Mapping, Optional

PANIC_REGS_QWORDS = 21
PANIC_REGS_SIZE = PANIC_REGS_QWORDS * 8

_GPR_ORDER = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
              "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip")
_DWORD_ORDER = ("eflags", "cs", "ss", "ds", "es", "fs", "gs")
_NEVER_FILLED = ("ds", "es", "fs", "gs")
_ZEROED_FOR_USER = ("rax", "rcx", "rdx", "r8", "r9", "r10", "r11")

# struct x86_kregs members that hold real values after a switch-out
_KREGS_KEPT = ("rsp", "rbp", "rbx", "rsi", "rdi", "r12", "r13", "r14", "r15")


def switched_out_registers(ctx: Mapping[str, int], switch_context_entry: Optional[int]) -> Dict[str, Optional[int]]:
    """Registers of a thread that is not running, from its x86_kregs members
    (a mapping member name -> value, read through DWARF by the model)."""
    regs: Dict[str, Optional[int]] = {name: None for name in _GPR_ORDER + _DWORD_ORDER}
    for name in _KREGS_KEPT:
        if name in ctx:
            regs[name] = int(ctx[name])
    if "rflags" in ctx:
        regs["eflags"] = int(ctx["rflags"]) & 0xFFFFFFFF
    regs["rip"] = switch_context_entry
    return regs


def panic_registers(raw: bytes, *, enter_user_mode: Optional[int] = None) -> Dict[str, Optional[int]]:
    """Registers of a CPU stopped by the dump NMI, from its panic_regs bytes.

    `enter_user_mode` is that symbol's address: the kernel stores it as rip
    when the NMI hit user mode, and then the zeroed slots are not values."""
    if len(raw) < 17 * 8 + 7 * 4:
        raise ValueError(f"panic_regs needs {17 * 8 + 7 * 4} bytes, got {len(raw)}")
    qwords = struct.unpack_from("<17Q", raw, 0)
    dwords = struct.unpack_from("<7I", raw, 17 * 8)
    regs: Dict[str, Optional[int]] = dict(zip(_GPR_ORDER, qwords))
    regs.update(zip(_DWORD_ORDER, dwords))
    for name in _NEVER_FILLED:
        regs[name] = None
    if enter_user_mode is not None and regs["rip"] == enter_user_mode:
        for name in _ZEROED_FOR_USER:
            regs[name] = None
    return regs
