"""CPUs: the `clv` array of `struct cpu_local_var`, one per booted CPU.

The stride is sizeof(struct cpu_local_var) from DWARF; Target already checked
it against debug_constants[0].  Each CPU's run queue holds every thread
assigned to it except the idle thread (reference §6.1).
"""

from __future__ import annotations

from typing import Any

from ..errors import CorruptStructure, UnreadableAddress
from .lists import list_for_each_entry
from .objects import Object
from .rows import CpuRow

#: more CPUs than this means num_processors is garbage
MAX_CPUS = 4096


def num_cpus(t: Any) -> int:
    n = int(t.variable("num_processors"))
    if not 0 < n <= MAX_CPUS:
        raise CorruptStructure(f"num_processors is {n}: not a plausible CPU count")
    return n


def clv_base(t: Any) -> int:
    base = int(t.variable("clv"))
    if base == 0:
        raise CorruptStructure("clv is NULL: the kernel had not set up its CPUs")
    return base


def clv(t: Any, cpu: int) -> Object:
    return t.object(clv_base(t) + cpu * t.sizeof("struct cpu_local_var"), "struct cpu_local_var")


def runq_threads(t: Any, cpu: int) -> list:
    c = clv(t, cpu)
    return list(list_for_each_entry(t, c.runq, "struct thread", "sched_list",
                                    what=f"run queue of CPU {cpu}"))


def read_cpus(t: Any) -> list:
    rows = []
    for i in range(num_cpus(t)):
        c = clv(t, i)
        try:
            status = t.cpu_status_name(int(c.status))
            current = int(c.current)
        except UnreadableAddress as exc:
            raise CorruptStructure(f"clv[{i}] at {c.address_:#x} cannot be read: {exc}") from None
        runq = [th.address_ for th in runq_threads(t, i)]
        rows.append(CpuRow(id=i, status=status, clv=c.address_, current=current,
                           idle=c.idle.address_, runq=runq))
    return rows
