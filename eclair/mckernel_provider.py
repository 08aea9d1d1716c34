"""The McKernel target behind eclair: a Provider over an mcktools.model Target.

    open_provider(dump, kernel, options) -> McKernelProvider

What gdb sees (ABI reference §7 and §9, kernel/PROTOCOL.md):
- threads: every run-queue thread (gdb id = TID), -l adds idle threads
  (2000000000 + TID), -c adds CPU pseudo-threads (1000000 + cpu); names are
  the command names, extra text "PID 12, running on CPU 3" (eclair.threadlist);
- the stop is reported for the panicking CPU's thread when the kernel
  recorded a panic (`panic_cpu`, or a CPU whose `panic_regs_saved` is set),
  else for the first thread, as upstream;
- registers: a thread that is the `current` of its CPU (and a CPU
  pseudo-thread) gets that CPU's `panic_regs`; a switched-out thread its
  saved `ctx` with rip = `ihk_mc_switch_context` (eclair.regsets); what was
  not saved is unavailable, never zero;
- memory: kernel addresses through the kernel map (image, direct, straight
  maps and `init_pt`), user addresses through the page tables of the
  selected thread's process (upstream eclair cannot read user memory).  A
  read returns the readable prefix; nothing readable raises
  UnreadableAddress; missing pages (level-24 dumps drop user pages) are
  never filled with zeros;
- monitor: `ps`, `mem`, `vtop`, `kmsg`, `info` run mcinspect's own commands
  on this provider's Target, so the text is the same as mcinspect's.

Memory map decision: `memory_map()` returns None.  A gdb memory map is one
global list fetched once per connection, and gdb refuses every access
outside it.  Listing only the kernel ranges would make gdb refuse the user
reads this provider can do for the selected thread; adding user ranges
would have to be the union over all processes, which lists addresses that
are unreadable for most threads.  Without a map gdb asks for any address
and gets an E reply where nothing is readable, which is exact.
`kernel_regions()` still computes the kernel virtual ranges that map the
dump's chunks (the benchmark and tests use it).

With -i, open_provider hands over to eclair.live_provider, whose provider
subclasses this one: at every stop it clears the per-stop caches
(`_panicked`, `_spaces`, `_selected`) and calls `_build_threads()` again.
"""

from __future__ import annotations

import contextlib
import io
import shlex
import struct
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from mcktools.debuginfo.types import StructType, strip_typedefs
from mcktools.errors import CorruptStructure, DebugInfoError, McktoolsError, UnreadableAddress
from mcktools.memory.translate import USER_END, VirtualMemory
from mcktools.model.processes import page_table_va
from mcktools.model.registers import panic_registers, panicked_cpus

from .provider import CPU_TID_BASE, ProviderBase, ProviderOptions, ThreadInfo
from .regsets import switched_out_registers
from .threadlist import IDLE_TID_BASE, choose_stop_thread, gdb_threads

#: the monitor commands that are mcinspect subcommands
MCINSPECT_COMMANDS = ("ps", "mem", "vtop", "kmsg", "info")

MONITOR_HELP = """\
McKernel commands (same output as mcinspect):
  monitor ps [-p PID] [--cpu N] [--json]   threads per CPU
  monitor mem [PID|TID|THREAD-ADDR] [--json]
                                            memory map (default: the selected thread's process)
  monitor vtop [-p PID|-t TID] [-a] [ADDR...] [--json]
                                            translate addresses (user ones in the selected
                                            thread's process unless -p/-t is given)
  monitor kmsg [--json]                     the kmsg ring
  monitor info [--json]                     dump metadata, CPUs, address map, symbols
  monitor help                              this text"""


@dataclass(frozen=True)
class GdbThread:
    """What the provider keeps about one gdb thread."""

    id: int
    cpu: int
    thread_addr: Optional[int]   # struct thread, None for CPU pseudo-threads
    proc_addr: Optional[int]     # struct process whose page tables serve user reads
    current: bool                # registers come from the CPU's panic_regs


class McKernelProvider(ProviderBase):
    """A Provider for one McKernel dump (the Target is owned and closed here)."""

    architecture = "i386:x86-64"
    live = False

    def __init__(self, target, options: ProviderOptions = ProviderOptions()):
        self.t = target
        self.options = options
        self._rows: Optional[List[ThreadInfo]] = None
        self._entries: Dict[int, GdbThread] = {}
        self._spaces: Dict[int, VirtualMemory] = {}
        self._panicked: Optional[List[int]] = None
        self._selected: Optional[int] = None
        self._build_threads()

    # ---------------------------------------------------------------- threads

    def _build_threads(self) -> None:
        t = self.t
        by_addr = {info.row.addr: info for info in t.threads()}
        cpus = t.cpus()
        runq, idle = [], []
        entries: Dict[int, GdbThread] = {}
        for c in cpus:
            for addr in c.runq:
                info = by_addr.get(addr)
                if info is None:
                    raise CorruptStructure(f"run queue of CPU {c.id} holds {addr:#x}, which the "
                                           "thread walk did not find")
                runq.append(info.row)
                entries[info.row.tid] = GdbThread(info.row.tid, c.id, addr, info.proc_addr or None,
                                                  addr == c.current)
            info = by_addr.get(c.idle)
            if info is not None:
                idle.append(info.row)
                entries[IDLE_TID_BASE + info.row.tid] = GdbThread(
                    IDLE_TID_BASE + info.row.tid, c.id, c.idle, None, c.idle == c.current)
        for c in cpus:
            cur = by_addr.get(c.current)
            proc = cur.proc_addr if cur is not None and not cur.row.idle else None
            entries[CPU_TID_BASE + c.id] = GdbThread(CPU_TID_BASE + c.id, c.id, None, proc or None, True)
        self._rows = gdb_threads(runq, idle, cpus, self.options)
        shown = {r.id for r in self._rows}
        self._entries = {k: v for k, v in entries.items() if k in shown}

    def threads(self) -> List[ThreadInfo]:
        return list(self._rows or [])

    def panicked_cpus(self) -> List[int]:
        """CPUs the kernel says panicked: `panic_cpu` (when the image has it)
        and CPUs whose cpu_local_var has `panic_regs_saved` set."""
        if self._panicked is None:
            self._panicked = sorted(panicked_cpus(self.t))
        return self._panicked

    def stop_thread(self) -> Optional[int]:
        return choose_stop_thread(self.threads(), self.panicked_cpus())

    def _entry(self, thread_id: int) -> GdbThread:
        e = self._entries.get(thread_id)
        if e is None:
            raise McktoolsError(f"no thread {thread_id} in {self.t.description}")
        return e

    # -------------------------------------------------------------- registers

    def cpu_registers(self, cpu: int) -> Dict[str, Optional[int]]:
        """A CPU's panic_regs; all unavailable when the dump NMI never filled them."""
        return panic_registers(self.t, cpu, require_paniced=False) or {}

    def context_registers(self, thread_addr: int) -> Dict[str, Optional[int]]:
        """A switched-out thread's saved ctx (struct x86_kregs, members by DWARF)."""
        ctx = self.t.object(thread_addr, "struct thread").ctx
        st = strip_typedefs(ctx.type_)
        values: Dict[str, int] = {}
        if isinstance(st, StructType):
            raw = ctx.read_()
            for m in st.members:
                if m.name and strip_typedefs(m.type).size == 8 and m.offset + 8 <= len(raw):
                    values[m.name] = struct.unpack_from("<Q", raw, m.offset)[0]
        try:
            entry = self.t.symbol("ihk_mc_switch_context")
        except DebugInfoError:
            entry = None
        return switched_out_registers(values, entry)

    def registers(self, thread_id: int) -> Dict[str, Optional[int]]:
        e = self._entry(thread_id)
        self._selected = thread_id
        if e.current or e.thread_addr is None:
            return self.cpu_registers(e.cpu)
        return self.context_registers(e.thread_addr)

    # ----------------------------------------------------------------- memory

    def _space(self, thread_id: int) -> VirtualMemory:
        """The address space `thread_id` sees: its process's page tables for
        user addresses (kernel ones fall through to the kernel map), or the
        kernel map alone for idle threads, CPUs without a user thread, and 0."""
        e = self._entries.get(thread_id)
        proc = e.proc_addr if e is not None else None
        if not proc:
            return self.t.mem
        vm = self._spaces.get(proc)
        if vm is None:
            pobj = self.t.object(proc, "struct process")
            pgd = page_table_va(pobj)
            if not pgd:
                vm = self.t.mem
            else:
                vm = self.t.address_space(pgd, name=f"pid {int(pobj.pid)}")
            self._spaces[proc] = vm
        return vm

    def read_memory(self, thread_id: int, addr: int, size: int) -> bytes:
        if thread_id in self._entries:
            self._selected = thread_id
        vm = self._space(thread_id)
        size = max(0, min(size, (1 << 64) - addr))
        if size and not addr < USER_END and vm is not self.t.mem:
            vm = self.t.mem
        data = read_prefix(vm, addr, size)
        if size and not data:
            raise UnreadableAddress(addr, f"virtual address {addr:#x} is not readable in "
                                          f"{self.t.description}", physical=False)
        return data

    def kernel_regions(self) -> List[Tuple[int, int]]:
        """(start, length) of the kernel virtual ranges that map the dump's
        physical chunks: the direct map (when linux_page_offset_base is
        known), the straight map, and the image map's part of them."""
        kmap = self.t.kmap
        out: List[Tuple[int, int]] = []
        for r in self.t.source.ranges():
            for reg in kmap.regions:
                lo = max(r.start, reg.phys)
                hi = min(r.end, reg.phys + (reg.end - reg.start))
                if lo < hi:
                    out.append((reg.start + lo - reg.phys, hi - lo))
        return sorted(out)

    def direct_map_regions(self) -> List[Tuple[int, int]]:
        """The dump's chunks in the Linux direct map (empty if it is unknown)."""
        base = self.t.kmap.linux_page_offset_base
        if base is None:
            return []
        return [(base + r.start, r.end - r.start) for r in self.t.source.ranges()]

    # ---------------------------------------------------------------- monitor

    def monitor(self, command: str) -> str:
        try:
            words = shlex.split(command)
        except ValueError as exc:
            raise McktoolsError(f"monitor: {exc}") from None
        if not words or words[0] in ("help", "-h", "--help"):
            return MONITOR_HELP
        name, args = words[0], words[1:]
        if name not in MCINSPECT_COMMANDS:
            raise McktoolsError(f"unknown monitor command {name!r} (try 'monitor help')")
        args = self._default_args(name, args)
        return run_mcinspect(self.t, name, args)

    def _selected_thread(self) -> Optional[GdbThread]:
        if self._selected is None:
            sid = self.stop_thread()
            return self._entries.get(sid) if sid is not None else None
        return self._entries.get(self._selected)

    def _selected_pid(self) -> Optional[int]:
        e = self._selected_thread()
        if e is None or not e.proc_addr:
            return None
        return int(self.t.object(e.proc_addr, "struct process").pid)

    def _default_args(self, name: str, args: List[str]) -> List[str]:
        """`mem` and `vtop` of user addresses default to the selected thread's process."""
        positional = [a for a in args if not a.startswith("-")]
        if name == "mem" and not positional:
            pid = self._selected_pid()
            if pid is None:
                raise McktoolsError("monitor mem: the selected thread has no process; give a PID")
            return args + [str(pid)]
        if name == "vtop":
            has_space = any(a in ("-p", "--pid", "-t", "--thread") or a.startswith(("--pid=", "--thread="))
                            for a in args)
            listing = any(a in ("-a", "--all") for a in args)
            if not has_space and not listing and any(_is_user(a) for a in positional):
                pid = self._selected_pid()
                if pid is not None:
                    return ["-p", str(pid)] + args
        return args

    def close(self) -> None:
        self.t.close()


def _is_user(text: str) -> bool:
    try:
        return int(text, 16) < USER_END
    except ValueError:
        return False


def read_prefix(vm: VirtualMemory, addr: int, size: int) -> bytes:
    """The readable prefix of [addr, addr+size) in `vm`: stops at the first
    byte whose translation or physical page the dump does not hold."""
    out: List[bytes] = []
    pos, end = addr, addr + size
    read_phys = vm.read_phys
    while pos < end:
        try:
            pa, span = vm.resolve(pos)
        except UnreadableAddress:
            break
        n = min(end - pos, max(1, span))
        try:
            out.append(read_phys(pa, n))
        except UnreadableAddress as exc:
            # a physical hole inside the span: keep what comes before it
            if pa < exc.address < pa + n:
                try:
                    out.append(read_phys(pa, exc.address - pa))
                except UnreadableAddress:
                    pass
            break
        pos += n
    return b"".join(out)


def run_mcinspect(target, name: str, args: List[str]) -> str:
    """Run mcinspect subcommand `name` on an open Target; return its output.

    The subcommand runs inside a click context whose root object already
    holds the Target, so mcinspect's parsing and rendering are used as they
    are.  Output is captured (stdout may be the gdb protocol channel)."""
    import click
    from mcinspect import cli as mcli

    cmd = mcli.cli.commands[name]
    buf = io.StringIO()
    obj = {"kernel": str(getattr(target.image, "path", "")), "dump": None, "force": target.force,
           "target": target}
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            with click.Context(mcli.cli, obj=obj, info_name="monitor") as root:
                with cmd.make_context(name, list(args), parent=root) as sub:
                    cmd.invoke(sub)
    except click.exceptions.Exit:
        pass
    except click.ClickException as exc:
        raise McktoolsError(f"monitor {name}: {exc.format_message()}") from None
    return buf.getvalue()


def open_provider(dump: Optional[str], kernel: str, options: ProviderOptions) -> McKernelProvider:
    """eclair's entry point (see eclair.provider): a dump, or with -i (dump
    None) the live McKernel of eclair.live_provider."""
    if dump is None or options.interactive:
        try:
            from .live_provider import open_live_provider
        except ModuleNotFoundError as exc:
            if exc.name != "eclair.live_provider":
                raise
            raise McktoolsError("live debugging (-i) is not available in this installation; "
                                "take a dump with ihkosctl and use -d DUMP") from None
        return open_live_provider(kernel, options)
    from mcktools.model.target import Target
    target = Target.open(kernel, dump, force=options.force)
    try:
        return McKernelProvider(target, options)
    except BaseException:
        target.close()
        raise
