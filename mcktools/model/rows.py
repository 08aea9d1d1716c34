"""Result rows of the model: plain dataclasses that frontends render.

Addresses are ints; frontends choose hex or JSON integers.  `to_dict()`
keeps field names stable for --json output.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional


class Row:
    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CpuRow(Row):
    id: int
    status: str                 # "CPU_STATUS_*"
    clv: int
    current: int                # struct thread address
    idle: int
    runq: list = field(default_factory=list)   # thread addresses, list order


@dataclass
class ThreadRow(Row):
    tid: int
    pid: int
    ppid: int
    cpu: int
    addr: int
    state: str                  # "PS_*" (or a number in hex when unknown)
    st: str                     # short letters for tables (RU, IN, UN, Z, T, E, ??)
    comm: str
    idle: bool
    current: bool


@dataclass
class ProcessRow(Row):
    pid: int
    ppid: int
    argv: list
    addr: int
    page_table: int             # VA of the PGD (0 without a vm)
    page_table_pa: int
    threads: list               # tids
    state: str


@dataclass
class VmRangeRow(Row):
    start: int
    end: int
    flag: int
    perm: str                   # "rwxp"
    size: int
    memobj: int
    path: Optional[str]         # backing file
    label: str                  # path, or [heap] / [stack] / [vdso] / [vsyscall] / ""
    addr: int                   # struct vm_range


@dataclass
class VtopRow(Row):
    virt: int
    phys: Optional[int]         # None when not mapped
    size: int
    flags: list                 # names
    pte: int                    # raw leaf entry (0 for linear kernel maps)
    region: str                 # kernel region name or "user"
    collapsed: bool = False     # True for the "..." marker row
    excluded: Optional[bool] = None   # page data not in the dump (level 24)
    vm_range: Optional[dict] = None


@dataclass
class KmsgResult(Row):
    available: bool
    text: str
    source: str                 # where the ring came from, or why it is missing
