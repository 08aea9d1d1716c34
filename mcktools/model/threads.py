"""Threads: every CPU's idle thread, current thread and run queue, plus the
resource set's tid hash (threads that sit on no run queue, e.g. zombies).

Order follows crash's `mcps`: per CPU the idle thread, then the current one,
then the rest of the run queue; then threads found only in the hash.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..errors import CorruptStructure, McktoolsError, UnreadableAddress
from .cpus import clv, num_cpus, runq_threads
from .lists import list_for_each_entry
from .objects import Object
from .processes import argv, ppid, resource_set, _array_count
from .rows import ThreadRow

#: short state letters for tables (crash mcps spellings, plus E for exited)
ST_LETTERS = {"PS_RUNNING": "RU", "PS_INTERRUPTIBLE": "IN", "PS_UNINTERRUPTIBLE": "UN",
              "PS_ZOMBIE": "Z", "PS_STOPPED": "T", "PS_TRACED": "T", "PS_EXITED": "E"}


@dataclass
class ThreadInfo:
    """A thread as the model sees it: its row plus the typed object."""

    row: ThreadRow
    obj: Object
    proc_addr: int


def comm_of(t: Any, proc: Object, idle: bool) -> str:
    if idle:
        return "idle"
    args = argv(t, proc)
    if not args:
        return "(unknown)"
    return os.path.basename(args[0]) or args[0]


def _thread_info(t: Any, th: Object, cpu: int, *, idle: bool, current: bool) -> ThreadInfo:
    try:
        proc_addr = int(th.proc)
        proc = th.proc.deref_() if proc_addr else None
        state = t.ps_name(int(th.status))
        pid = int(proc.pid) if proc is not None else 0
        row = ThreadRow(
            tid=int(th.tid), pid=pid, ppid=ppid(proc) if proc is not None else 0,
            cpu=cpu, addr=th.address_, state=state, st=ST_LETTERS.get(state, "??"),
            comm=comm_of(t, proc, idle) if proc is not None else ("idle" if idle else "(unknown)"),
            idle=idle, current=current)
    except UnreadableAddress as exc:
        raise CorruptStructure(f"thread at {th.address_:#x} (CPU {cpu}) cannot be read: {exc}") from None
    return ThreadInfo(row, th, proc_addr)


def hash_threads(t: Any) -> list:
    rs = resource_set(t)
    if rs is None or not rs.has_member_("thread_hash") or not int(rs.thread_hash):
        return []
    buckets = rs.thread_hash.deref_().list
    out = []
    for b in range(_array_count(buckets)):
        out.extend(list_for_each_entry(t, buckets[b], "struct thread", "hash_list",
                                       what=f"thread hash bucket {b}"))
    return out


def read_threads(t: Any) -> list:
    """ThreadInfo for every thread, in ps order."""
    out: list = []
    seen: set = set()
    for cpu in range(num_cpus(t)):
        c = clv(t, cpu)
        current = int(c.current)
        idle = c.idle
        order = [(idle, True)]
        if current and current != idle.address_:
            order.append((t.object(current, "struct thread"), False))
        for th in runq_threads(t, cpu):
            if th.address_ != current:
                order.append((th, False))
        for th, is_idle in order:
            if th.address_ in seen:
                continue
            seen.add(th.address_)
            out.append(_thread_info(t, th, cpu, idle=is_idle, current=th.address_ == current))
    for th in hash_threads(t):
        if th.address_ not in seen:
            seen.add(th.address_)
            out.append(_thread_info(t, th, int(th.cpu_id), idle=False, current=False))
    return out


def find_thread(t: Any, spec: str | int) -> ThreadInfo:
    """A thread by tid (decimal) or by `struct thread` address (hex, 0x optional)."""
    infos = t.threads()
    text = str(spec).strip()
    if isinstance(spec, int) or text.isdigit():
        tid = int(text)
        for info in infos:
            if info.row.tid == tid and not info.row.idle:
                return info
    try:
        addr = int(text, 16)
    except ValueError:
        raise McktoolsError(f"{text!r} is neither a tid nor a thread address") from None
    for info in infos:
        if info.row.addr == addr:
            return info
    raise McktoolsError(f"no thread {text} in {t.description}")
