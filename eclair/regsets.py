"""McKernel x86_64 saved register areas -> register dicts for the server.

The decoders live in the model (mcktools.model.registers) so that eclair,
mcinspect's `bt` and the unwinder read `thread->ctx` and `panic_regs` the same
way (reference §7.1-7.3); this module keeps eclair's names for them:

- `switched_out_registers(ctx, switch_context_entry)`: a switched-out thread's
  x86_kregs members; callee-saved registers, rsp and rflags are real, rip is
  the entry of ihk_mc_switch_context so gdb finds the return address at [rsp].
- `panic_registers(raw, enter_user_mode=...)`: a CPU's panic_regs bytes (amd64
  `g` order, 17 qwords then 7 dwords); placeholders come back as None.
"""

from __future__ import annotations

from mcktools.model.registers import PANIC_REGS_QWORDS, PANIC_REGS_SIZE
from mcktools.model.registers import decode_panic_regs as panic_registers
from mcktools.model.registers import kregs_registers as switched_out_registers

__all__ = ["PANIC_REGS_QWORDS", "PANIC_REGS_SIZE", "panic_registers", "switched_out_registers"]
