"""Kernel stack unwinding: register set -> frames, as crash's `bt` shows them.

Where the walk starts (reference §7):
* a switched-out thread: rip = `ihk_mc_switch_context` with its saved `ctx`
  (rsp points at the return address into schedule());
* a CPU's current thread in a dump: that CPU's `panic_regs`; when the NMI hit
  user mode the kernel stored rip = `enter_user_mode` and stale kernel
  registers, so there is no kernel stack to walk, only the user frame.

Each step uses the image's CFI (.eh_frame/.debug_frame, mcktools.debuginfo.
unwindinfo); code without CFI is crossed by one of two rules:
* the interrupt/syscall entry stubs: the `struct x86_user_context` the entry
  code pushed sits at the stub frame's sp (the callee was called with rsp =
  the frame).  A frame saved in user mode ends the walk (reported as the user
  frame); one saved in kernel mode continues with its registers.
* otherwise the frame-pointer chain ([rbp] = caller's rbp, [rbp+8] = return).

The walk is bounded: at most MAX_FRAMES frames, every stack slot it reads must
lie inside the thread's kernel stack allocation, and sp must grow from frame to
frame.  A violation ends the trace with a "stack corrupt at ADDR: ..." reason
instead of an exception.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from ..debuginfo.unwindinfo import RA_REGNO, unwind_tables
from ..debuginfo.unwindinfo import X86_64_DWARF_REGS as _DWARF
from ..errors import DebugInfoError, McktoolsError, UnreadableAddress
from .rows import Row

MAX_FRAMES = 64
#: reference §7.4 / §4: selectors and the end of the user half
KERNEL_CS = 0x20
USER_CS = 0x33
USER_END = 0x0000800000000000
#: a user thread's kernel stack is the 128 KiB allocation that starts with the
#: struct thread; rsp0 = thread + 0x20000 (reference §7.1)
THREAD_ALLOC = 0x20000

_CALLEE_SAVED = ("rbx", "rbp", "r12", "r13", "r14", "r15")
_GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
         "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip")


@dataclass
class Frame(Row):
    index: int
    pc: int
    sp: int                     # rsp in this frame (frame 1's sp = frame 0's CFA)
    function: Optional[str]
    offset: Optional[int]       # pc - function start
    file: Optional[str] = None
    line: Optional[int] = None
    #: "exception" when pc/registers came from an interrupt frame on the stack
    kind: str = "kernel"
    #: a call the compiler inlined into the next frame's function (same pc and sp)
    inlined: bool = False


@dataclass
class Backtrace(Row):
    """One thread's (or CPU's) trace plus how and why it ended."""

    thread: Optional[int]
    tid: Optional[int]
    pid: Optional[int]
    cpu: Optional[int]
    comm: Optional[str]
    state: Optional[str]
    start: str                  # "ctx", "panic_regs", "user mode" (no kernel stack to walk)
    frames: list = field(default_factory=list)
    end: str = ""               # why the walk stopped
    corrupt: Optional[str] = None   # "stack corrupt at ADDR: ..." when it stopped on bad data
    user_frame: Optional[int] = None   # address of the x86_user_context the trace ended at
    user_regs: Optional[dict] = None
    stack: Optional[Tuple[int, int]] = None   # [lo, hi) the walk was confined to


class _Stop(Exception):
    def __init__(self, end: str, corrupt: bool = False):
        super().__init__(end)
        self.end = end
        self.corrupt = corrupt


class Unwinder:
    """Walks kernel stacks of one Target (CFI tables loaded once)."""

    def __init__(self, t: Any, tables: Any = None):
        self.t = t
        if tables is None:
            tables = unwind_tables(t.image)
        self.tables = tables
        self._text = [(s.vaddr, s.vaddr + s.memsz) for s in t.image.segments if s.flags & 1 and s.memsz]
        self.enter_user_mode = self._sym("enter_user_mode")
        self.switch_context = self._sym("ihk_mc_switch_context")
        self._uctx_layout: Optional[dict] = None

    def _sym(self, name: str) -> Optional[int]:
        try:
            return self.t.symbol(name)
        except DebugInfoError:
            return None

    # --- helpers ---
    def is_text(self, pc: int) -> bool:
        return any(lo <= pc < hi for lo, hi in self._text)

    def symbolize(self, pc: int, exact: bool) -> Tuple[Optional[str], Optional[int]]:
        # A return address may point past the end of a call at a function's end: name pc - 1.
        hit = self.t.lookup_symbol(pc if exact else pc - 1)
        if hit is None:
            return None, None
        name, off = hit
        return name, off + (0 if exact else 1)

    def _read(self, addr: int, stack: Optional[Tuple[int, int]], what: str) -> int:
        if stack is not None and not stack[0] <= addr <= stack[1] - 8:
            raise _Stop(f"stack corrupt at {addr:#x}: {what} lies outside the kernel stack "
                        f"[{stack[0]:#x}, {stack[1]:#x})", corrupt=True)
        try:
            return self.t.read_u64(addr)
        except UnreadableAddress as exc:
            raise _Stop(f"stack corrupt at {addr:#x}: {what} cannot be read ({exc})", corrupt=True) from None

    def user_context_layout(self) -> dict:
        """Offsets inside struct x86_user_context (DWARF), cached."""
        if self._uctx_layout is None:
            t = self.t
            lay = {"size": t.sizeof("struct x86_user_context"),
                   "is_gpr_valid": t.offsetof("struct x86_user_context", "is_gpr_valid")}
            for r in _GPRS + ("cs", "rflags", "ss"):
                lay[r] = t.offsetof("struct x86_user_context", f"gpr.{r}")
            self._uctx_layout = lay
        return self._uctx_layout

    def read_user_context(self, addr: int) -> Optional[dict]:
        """Registers of the entry frame at `addr`, or None if it does not look like one."""
        try:
            lay = self.user_context_layout()
            raw = self.t.read(addr, lay["size"])
        except (UnreadableAddress, DebugInfoError):
            return None
        if raw[lay["is_gpr_valid"]] != 1:
            return None
        regs = {r: int.from_bytes(raw[lay[r]:lay[r] + 8], "little") for r in _GPRS + ("cs", "rflags", "ss")}
        cs = regs["cs"] & 0xFFFF
        if cs == USER_CS:
            return regs if regs["rip"] < USER_END else None
        if cs == KERNEL_CS:
            return regs if self.is_text(regs["rip"]) and regs["rsp"] > addr else None
        return None

    # --- the walk ---
    def unwind(self, regs: Dict[str, Optional[int]], stack: Optional[Tuple[int, int]] = None,
               *, max_frames: int = MAX_FRAMES) -> Tuple[list, str, bool, Optional[int], Optional[dict]]:
        """Frames from `regs` (GDB names, None = unknown).

        Returns (frames, end reason, corrupt?, user frame address, user registers)."""
        regs = dict(regs)
        frames: list = []
        exact = True          # frame 0 and frames restored from an interrupt frame
        kind = "kernel"
        where = None          # stack slot the current pc came from (for messages)
        user_at = None
        user_regs = None
        try:
            while True:
                pc, sp = regs.get("rip"), regs.get("rsp")
                if pc is None or sp is None:
                    raise _Stop("no program counter or stack pointer to start from", corrupt=True)
                if not self.is_text(pc):
                    if where is None:
                        raise _Stop(f"stack corrupt: pc {pc:#x} is not kernel code", corrupt=True)
                    raise _Stop(f"stack corrupt at {where:#x}: return address {pc:#x} is not kernel code",
                                corrupt=True)
                if stack is not None and not stack[0] <= sp <= stack[1]:
                    raise _Stop(f"stack corrupt at {sp:#x}: stack pointer outside the kernel stack "
                                f"[{stack[0]:#x}, {stack[1]:#x})", corrupt=True)
                if len(frames) >= max_frames:
                    raise _Stop(f"trace truncated after {max_frames} frames")
                name, off = self.symbolize(pc, exact)
                look = pc if exact else pc - 1
                src = self.tables.line(look)
                # Calls the compiler inlined at this pc are frames of their own (as in gdb and
                # drgn): innermost first, each at the source line of the next one's call.
                for iname, cfile, cline in self.tables.inlined_at(look):
                    frames.append(Frame(len(frames), pc, sp, iname, None, src[0] if src else None,
                                        src[1] if src else None, kind, inlined=True))
                    src = (cfile, cline) if cfile and cline else None
                frames.append(Frame(len(frames), pc, sp, name, off, src[0] if src else None,
                                    src[1] if src else None, kind))
                new, where, user = self._step(regs, look, stack)
                if user is not None:
                    user_at, user_regs = user
                    raise _Stop("entered the kernel from user mode")
                if new is None:
                    raise _Stop("end of the call chain")
                if new["rip"] == 0:
                    raise _Stop("end of the call chain")
                if new["rsp"] is None or new["rsp"] <= sp:
                    raise _Stop(f"stack corrupt at {sp:#x}: the caller's stack pointer "
                                f"{(new['rsp'] or 0):#x} does not lie above it", corrupt=True)
                exact = new.pop("_exact", False)
                kind = "exception" if exact else "kernel"
                if new["rip"] == self.enter_user_mode:
                    exact = True   # not a return address: the first "return" of a new thread
                regs = new
        except _Stop as stop:
            return frames, stop.end, stop.corrupt, user_at, user_regs

    def _step(self, regs: dict, look: int, stack: Optional[Tuple[int, int]]):
        """Caller registers of the frame at `look`: (regs | None, slot of the return address,
        (user frame address, user regs) | None)."""
        row = self.tables.row(look)
        if row is not None and row.cfa_reg is not None and row.cfa_reg < len(_DWARF) \
                and regs.get(_DWARF[row.cfa_reg]) is not None:
            return self._step_cfi(regs, row, stack)
        found = self._entry_frame(regs, stack)
        if found != (None, None, None):
            return found
        hit = self.t.lookup_symbol(look)
        return self._step_fp(regs, stack, at_entry=hit is not None and hit[1] == 0 and look == regs.get("rip"))

    def _entry_frame(self, regs: dict, stack: Optional[Tuple[int, int]]):
        """The x86_user_context an entry stub pushed at sp, if there is one: user mode ends
        the walk (the user frame); kernel mode continues with the interrupted registers."""
        sp = regs["rsp"]
        if stack is not None and not stack[0] <= sp < stack[1]:
            return None, None, None
        frame = self.read_user_context(sp)
        if frame is None:
            return None, None, None
        if frame["cs"] & 3:
            return None, None, (sp, frame)
        new = {r: frame[r] for r in _GPRS}
        new["_exact"] = True
        return new, sp, None

    def _step_cfi(self, regs: dict, row: Any, stack: Optional[Tuple[int, int]]):
        cfa = regs[_DWARF[row.cfa_reg]] + row.cfa_offset
        ra = row.rule(RA_REGNO)
        if ra is None or ra[0] == "u":
            # The outermost frame as CFI sees it (entry code marks rip undefined, and so
            # does enter_user_mode, where a new thread "returns" to): an entry frame at
            # sp still leads on, to user mode or to the interrupted kernel code.
            return self._entry_frame(regs, stack)
        new: Dict[str, Optional[int]] = {r: None for r in _GPRS}
        for r in _CALLEE_SAVED:
            new[r] = regs.get(r)
        ra_slot = None
        for regno, kind, arg in row.rules:
            if regno >= len(_DWARF):
                continue
            name = _DWARF[regno]
            if kind == "o":
                slot = cfa + arg
                val = self._read(slot, stack, f"saved {name if regno != RA_REGNO else 'return address'}")
                if regno == RA_REGNO:
                    ra_slot = slot
            elif kind == "v":
                val = cfa + arg
            elif kind == "r":
                val = regs.get(_DWARF[arg]) if arg < len(_DWARF) else None
            elif kind == "s":
                val = regs.get(name)
            else:
                val = None
            new[name] = val
        new["rsp"] = cfa
        if new["rip"] is None:
            return None, None, None
        return new, ra_slot, None

    def _step_fp(self, regs: dict, stack: Optional[Tuple[int, int]], at_entry: bool = False):
        if at_entry:
            # pc is a function's first instruction: nothing pushed yet, [rsp] is the return address
            new: Dict[str, Optional[int]] = {r: None for r in _GPRS}
            for r in _CALLEE_SAVED:
                new[r] = regs.get(r)
            new["rip"] = self._read(regs["rsp"], stack, "return address")
            new["rsp"] = regs["rsp"] + 8
            return new, regs["rsp"], None
        rbp = regs.get("rbp")
        if not rbp:
            return None, None, None
        if rbp < regs["rsp"] or (stack is not None and not stack[0] <= rbp < stack[1]):
            # Code without CFI whose rbp is not a frame on this stack: the chain ends here
            # (e.g. an entry stub whose rbp still holds the user's value).
            return None, None, None
        new: Dict[str, Optional[int]] = {r: None for r in _GPRS}
        for r in _CALLEE_SAVED:
            new[r] = regs.get(r)
        new["rbp"] = self._read(rbp, stack, "saved frame pointer")
        new["rip"] = self._read(rbp + 8, stack, "return address")
        new["rsp"] = rbp + 16
        return new, rbp + 8, None


# --- threads and CPUs -----------------------------------------------------------

def _unwinder(t: Any) -> Unwinder:
    cache = getattr(t, "_cache", None)
    if cache is None:
        return Unwinder(t)
    if "unwinder" not in cache:
        cache["unwinder"] = Unwinder(t)
    return cache["unwinder"]


def stack_range(t: Any, info: Any) -> Optional[Tuple[int, int]]:
    """[lo, hi) of a thread's kernel stack: its 128 KiB allocation (rsp0 = top) for a
    user thread, its CPU's `locals` area for an idle thread (which runs there)."""
    from .registers import locals_of
    if info.row.idle:
        try:
            loc = locals_of(t, info.row.cpu)
            span = t.sizeof("struct x86_cpu_local_variables")
            try:
                span = max(span, int(t.variable("x86_cpu_local_variables_span")))
            except DebugInfoError:
                pass
            return loc.address_, loc.address_ + span
        except (DebugInfoError, UnreadableAddress):
            return None
    addr = info.row.addr
    try:
        top = int(info.obj.ctx.rsp0)
    except (DebugInfoError, UnreadableAddress, McktoolsError):
        top = 0
    if not addr < top <= addr + 4 * THREAD_ALLOC:
        top = addr + THREAD_ALLOC
    return addr, top


def _base(info: Any, start: str) -> Backtrace:
    r = info.row
    return Backtrace(thread=r.addr, tid=r.tid, pid=r.pid, cpu=r.cpu, comm=r.comm, state=r.state, start=start)


def thread_backtrace(t: Any, info: Any, *, max_frames: int = MAX_FRAMES) -> Backtrace:
    """Backtrace of a thread (a threads.ThreadInfo)."""
    from .registers import kernel_context, panic_registers
    uw = _unwinder(t)
    stack = stack_range(t, info)
    if info.row.current:
        try:
            regs = panic_registers(t, info.row.cpu)
        except (UnreadableAddress, DebugInfoError) as exc:
            bt = _base(info, "panic_regs")
            bt.end = bt.corrupt = f"the registers of CPU {info.row.cpu} cannot be read ({exc})"
            return bt
        if regs is None:
            bt = _base(info, "panic_regs")
            bt.end = (f"CPU {info.row.cpu} saved no registers (paniced is clear): "
                      "its current thread's stack cannot be walked")
            return bt
        if uw.enter_user_mode is not None and regs.get("rip") == uw.enter_user_mode:
            # The NMI hit user mode (reference §7.3): kernel registers are stale.
            bt = _base(info, "user mode")
            bt.end = f"CPU {info.row.cpu} was running in user mode"
            _attach_uctx(t, info, bt)
            bt.stack = stack
            return bt
        bt = _base(info, "panic_regs")
    else:
        try:
            regs = kernel_context(t, info.obj)
        except (UnreadableAddress, DebugInfoError) as exc:
            bt = _base(info, "ctx")
            bt.end = bt.corrupt = f"the saved context of thread {info.row.addr:#x} cannot be read ({exc})"
            return bt
        bt = _base(info, "ctx")
    bt.stack = stack
    frames, end, corrupt, user_at, user_regs = uw.unwind(regs, stack, max_frames=max_frames)
    bt.frames, bt.end = frames, end
    bt.corrupt = end if corrupt else None
    if user_at is not None:
        bt.user_frame, bt.user_regs = user_at, _user_dict(user_regs)
    return bt


def _attach_uctx(t: Any, info: Any, bt: Backtrace) -> None:
    try:
        addr = int(info.obj.uctx)
    except (UnreadableAddress, DebugInfoError):
        return
    if not addr:
        return
    regs = _unwinder(t).read_user_context(addr)
    if regs is not None and regs["cs"] & 3:
        bt.user_frame, bt.user_regs = addr, _user_dict(regs)


def _user_dict(regs: Optional[dict]) -> Optional[dict]:
    if regs is None:
        return None
    out = {r: regs[r] for r in _GPRS}
    out["eflags"] = regs["rflags"] & 0xFFFFFFFF
    out["cs"] = regs["cs"] & 0xFFFF
    out["ss"] = regs["ss"] & 0xFFFF
    return out


def cpu_backtrace(t: Any, cpu: int, *, max_frames: int = MAX_FRAMES) -> Backtrace:
    """Backtrace of what `cpu` was running (its current thread, from panic_regs)."""
    ncpu = len(t.cpus())
    if not 0 <= cpu < ncpu:
        raise McktoolsError(f"no CPU {cpu}: the dump has CPUs 0-{ncpu - 1}")
    current = t.cpus()[cpu].current
    for info in t.threads():
        if info.row.addr == current and info.row.current:
            return thread_backtrace(t, info, max_frames=max_frames)
    raise McktoolsError(f"CPU {cpu} has no current thread in {t.description}")
