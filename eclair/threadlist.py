"""McKernel threads and CPUs -> gdb threads, as upstream eclair lists them.

Pure functions over plain rows, so the McKernel provider only has to read
the kernel (run queues, idle threads, CPU states) and hand the rows over.
Rules (ABI reference §9 "Thread list"):
- run-queue threads first, by CPU, with gdb id = TID;
- with -l, each CPU's idle thread, id = 2000000000 + idle TID;
- with -c, or when no thread was found at all, one pseudo-thread per CPU in
  use, id = 1000000 + cpu.
Extra text follows upstream ("PID 12, running on CPU 3", "CPU 3 idle").

The inputs may be this module's KernelThread/KernelCpu rows or the model's
ThreadRow/CpuRow (mcktools.model.rows): states are accepted as PS_* bit
values or names ("PS_RUNNING", "PS_INTERRUPTIBLE|..."), CPU states as CS_*
values or "CPU_STATUS_*" names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, List, Optional, Sequence, Union

from .provider import CPU_TID_BASE, ProviderOptions, ThreadInfo

#: gdb id of an idle thread is IDLE_TID_BASE + its TID (upstream eclair).
IDLE_TID_BASE = 2000000000

# thread.status bits (MCK kernel/include/process.h, ABI reference §6.9)
PS_RUNNING = 0x1
PS_INTERRUPTIBLE = 0x2
PS_UNINTERRUPTIBLE = 0x4
PS_STOPPED = 0x20
PS_TRACED = 0x40

_PS_BITS = {"PS_RUNNING": PS_RUNNING, "PS_INTERRUPTIBLE": PS_INTERRUPTIBLE,
            "PS_UNINTERRUPTIBLE": PS_UNINTERRUPTIBLE, "PS_STOPPED": PS_STOPPED,
            "PS_TRACED": PS_TRACED}

# clv.status values (CS_*), shown by upstream as status << 16
CPU_STATUS_TEXT = {1: "idle", 2: "running", 3: "reserved"}
_CPU_STATUS_VALUES = {"CPU_STATUS_DISABLE": 0, "CPU_STATUS_IDLE": 1,
                      "CPU_STATUS_RUNNING": 2, "CPU_STATUS_RESERVED": 3}


@dataclass(frozen=True)
class KernelThread:
    """What the model knows about one McKernel thread."""

    tid: int
    pid: int
    cpu: int  # CPU whose run queue holds it
    state: Union[int, str]  # PS_* bits, or the model's "PS_*" name
    comm: str = ""
    current: bool = False  # it is the running thread of its CPU
    idle: bool = False


@dataclass(frozen=True)
class KernelCpu:
    id: int
    status: Union[int, str]  # clv.status (CS_*) or "CPU_STATUS_*"; 0 = not in use


def _ps_value(state: Union[int, str]) -> Optional[int]:
    if isinstance(state, int):
        return state
    bits = 0
    for part in str(state).split("|"):
        if part in _PS_BITS:
            bits |= _PS_BITS[part]
        else:
            try:
                bits |= int(part, 0)
            except ValueError:
                return None
    return bits


def _cpu_value(status: Union[int, str]) -> Optional[int]:
    if isinstance(status, int):
        return status
    if status in _CPU_STATUS_VALUES:
        return _CPU_STATUS_VALUES[status]
    try:
        return int(status, 0)
    except ValueError:
        return None


def thread_state_word(state: Union[int, str]) -> Optional[str]:
    status = _ps_value(state)
    if status is None:
        return None
    if status & PS_RUNNING:
        return "running"
    if status & (PS_INTERRUPTIBLE | PS_UNINTERRUPTIBLE):
        return "waiting"
    if status & PS_STOPPED:
        return "stopped"
    if status & PS_TRACED:
        return "traced"
    return None


def thread_text(t: Any) -> str:
    """'PID 12, running on CPU 3' (upstream wording), 'idle ' before the
    state for idle threads, the raw status when it is none of the four."""
    word = thread_state_word(t.state)
    idle = "idle " if t.idle else ""
    if word is None:
        value = _ps_value(t.state)
        shown = f"{value:#x}" if value is not None else str(t.state)
        return f"PID {t.pid}, {idle}status={shown} on CPU {t.cpu}"
    return f"PID {t.pid}, {idle}{word} on CPU {t.cpu}"


def cpu_text(c: Any) -> str:
    value = _cpu_value(c.status)
    word = CPU_STATUS_TEXT.get(value) if value is not None else None
    if word:
        return f"CPU {c.id} {word}"
    return f"CPU {c.id} status={value << 16:#x}" if value is not None else f"CPU {c.id} {c.status}"


def thread_row(t: Any) -> ThreadInfo:
    gid = IDLE_TID_BASE + t.tid if t.idle else t.tid
    name = t.comm or ("idle" if t.idle else "")
    return ThreadInfo(gid, name, thread_text(t), t.cpu if t.current else None)


def cpu_row(c: Any) -> ThreadInfo:
    return ThreadInfo(CPU_TID_BASE + c.id, f"CPU {c.id}", cpu_text(c), c.id)


def gdb_threads(
    runq: Iterable[Any],
    idle: Iterable[Any],
    cpus: Iterable[Any],
    options: ProviderOptions,
) -> List[ThreadInfo]:
    """runq/idle: KernelThread or model ThreadRow; cpus: KernelCpu or CpuRow.
    Order within a CPU is kept (run-queue order)."""
    rows = [thread_row(t) for t in sorted(runq, key=lambda t: t.cpu)]
    if options.idle_threads:
        rows += [thread_row(t) for t in sorted(idle, key=lambda t: t.cpu)]
    if options.cpu_threads or not rows:
        rows += [cpu_row(c) for c in sorted(cpus, key=lambda c: c.id) if _cpu_value(c.status) != 0]
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
