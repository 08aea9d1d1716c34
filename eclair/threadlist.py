"""McKernel threads and CPUs -> gdb threads, as upstream eclair lists them.

Pure functions over plain rows, so the McKernel provider only has to read
the kernel (run queues, idle threads, CPU states) and hand the rows over.
Rules (ABI reference §9 "Thread list"):
- run-queue threads first, by CPU, with gdb id = TID;
- with -l, each CPU's idle thread, id = 2000000000 + idle TID;
- with -c, or when no thread was found at all, one pseudo-thread per CPU in
  use, id = 1000000 + cpu.
Extra text follows upstream ("PID 12, running on CPU 3", "CPU 3 idle").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence

from .provider import CPU_TID_BASE, ProviderOptions, ThreadInfo

#: gdb id of an idle thread is IDLE_TID_BASE + its TID (upstream eclair).
IDLE_TID_BASE = 2000000000

# thread.status bits (MCK kernel/include/process.h, ABI reference §6.9)
PS_RUNNING = 0x1
PS_INTERRUPTIBLE = 0x2
PS_UNINTERRUPTIBLE = 0x4
PS_STOPPED = 0x20
PS_TRACED = 0x40

# clv.status values (CS_*), shown by upstream as status << 16
CPU_STATUS_TEXT = {1: "idle", 2: "running", 3: "reserved"}


@dataclass(frozen=True)
class KernelThread:
    """What the model knows about one McKernel thread."""

    tid: int
    pid: int
    cpu: int  # CPU whose run queue holds it
    status: int  # PS_* bits
    comm: str = ""
    current: bool = False  # it is the running thread of its CPU
    idle: bool = False


@dataclass(frozen=True)
class KernelCpu:
    cpu: int
    status: int  # raw clv.status; 0 means the CPU is not in use


def thread_state_word(status: int) -> Optional[str]:
    if status & PS_RUNNING:
        return "running"
    if status & (PS_INTERRUPTIBLE | PS_UNINTERRUPTIBLE):
        return "waiting"
    if status & PS_STOPPED:
        return "stopped"
    if status & PS_TRACED:
        return "traced"
    return None


def thread_text(t: KernelThread) -> str:
    """'PID 12, running on CPU 3' (upstream wording), 'idle ' before the
    state for idle threads, the raw status when it is none of the four."""
    word = thread_state_word(t.status)
    idle = "idle " if t.idle else ""
    if word is None:
        return f"PID {t.pid}, {idle}status={t.status:#x} on CPU {t.cpu}"
    return f"PID {t.pid}, {idle}{word} on CPU {t.cpu}"


def cpu_text(c: KernelCpu) -> str:
    word = CPU_STATUS_TEXT.get(c.status)
    return f"CPU {c.cpu} {word}" if word else f"CPU {c.cpu} status={c.status << 16:#x}"


def thread_row(t: KernelThread) -> ThreadInfo:
    gid = IDLE_TID_BASE + t.tid if t.idle else t.tid
    name = t.comm or ("idle" if t.idle else "")
    return ThreadInfo(gid, name, thread_text(t), t.cpu if t.current else None)


def cpu_row(c: KernelCpu) -> ThreadInfo:
    return ThreadInfo(CPU_TID_BASE + c.cpu, f"CPU {c.cpu}", cpu_text(c), c.cpu)


def gdb_threads(
    runq: Iterable[KernelThread],
    idle: Iterable[KernelThread],
    cpus: Iterable[KernelCpu],
    options: ProviderOptions,
) -> List[ThreadInfo]:
    rows = [thread_row(t) for t in sorted(runq, key=lambda t: t.cpu)]
    if options.idle_threads:
        rows += [thread_row(t) for t in sorted(idle, key=lambda t: t.cpu)]
    if options.cpu_threads or not rows:
        rows += [cpu_row(c) for c in sorted(cpus, key=lambda c: c.cpu) if c.status != 0]
    return rows


def choose_stop_thread(rows: Sequence[ThreadInfo], panicked_cpus: Iterable[int] = ()) -> Optional[int]:
    """The thread a stop is reported for: on the first panicking CPU, its
    running thread, else its CPU pseudo-thread; otherwise the first row."""
    for cpu in sorted(panicked_cpus):
        for r in rows:
            if r.core == cpu and r.id != CPU_TID_BASE + cpu:
                return r.id
        for r in rows:
            if r.id == CPU_TID_BASE + cpu:
                return r.id
    return rows[0].id if rows else None
