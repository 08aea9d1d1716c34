"""Processes: `struct process` found through the resource set's pid hash and
through the threads; pid, ppid (the real parent, `ppid_parent`), argv from
`saved_cmdline` (NUL-separated strings, `saved_cmdline_len` bytes)."""

from __future__ import annotations

from typing import Any, Optional

from ..errors import CorruptStructure, McktoolsError, UnreadableAddress
from .lists import list_for_each_entry
from .objects import Object
from .rows import ProcessRow

#: longest command line we read (McKernel copies it from Linux; a larger
#: length means a corrupt process)
MAX_CMDLINE = 1 << 20


def resource_set(t: Any) -> Optional[Object]:
    from .cpus import clv
    c = clv(t, 0)
    if not c.has_member_("resource_set"):
        return None
    rs = c.resource_set
    return rs.deref_() if int(rs) else None


def hash_processes(t: Any) -> list:
    """Processes in resource_set->process_hash, bucket by bucket."""
    rs = resource_set(t)
    if rs is None or not int(rs.process_hash):
        return []
    table = rs.process_hash.deref_()
    out = []
    buckets = table.list
    n = _array_count(buckets)
    for b in range(n):
        out.extend(list_for_each_entry(t, buckets[b], "struct process", "hash_list",
                                       what=f"process hash bucket {b}"))
    return out


def _array_count(arr: Object) -> int:
    from ..debuginfo.types import strip_typedefs
    return strip_typedefs(arr.type_).count or 0


def argv(t: Any, proc: Object) -> list:
    ptr = int(proc.saved_cmdline)
    n = int(proc.saved_cmdline_len)
    if ptr == 0 or n <= 0:
        return []
    if n > MAX_CMDLINE:
        raise CorruptStructure(f"process {int(proc.pid)}: saved_cmdline_len {n} is implausible")
    raw = t.read(ptr, n)
    parts = raw.split(b"\0")
    if parts and parts[-1] == b"":
        parts.pop()
    return [p.decode("utf-8", "replace") for p in parts]


def ppid(proc: Object) -> int:
    parent = int(proc.ppid_parent) if proc.has_member_("ppid_parent") else 0
    if not parent:
        return 0
    return int(proc.ppid_parent.pid)


def page_table_va(proc: Object) -> int:
    vm = int(proc.vm)
    if not vm:
        return 0
    asp = int(proc.vm.address_space)
    if not asp:
        return 0
    return int(proc.vm.address_space.page_table)


def read_processes(t: Any) -> list:
    """ProcessRows for every process with a pid hash entry or a known thread, by pid."""
    procs: dict = {}
    for p in hash_processes(t):
        procs[p.address_] = p
    threads_by_proc: dict = {}
    for th in t.threads():
        threads_by_proc.setdefault(th.proc_addr, []).append(th.row.tid)
        # a CPU's idle thread belongs to that CPU's embedded idle_proc: not a process
        if th.proc_addr and th.proc_addr not in procs and not th.row.idle:
            procs[th.proc_addr] = t.object(th.proc_addr, "struct process")
    rows = []
    for addr, p in procs.items():
        try:
            pt = page_table_va(p)
            pt_pa = t.kmap.resolve(pt)[0] if pt else 0
            tids = threads_from_list(t, p)
            for tid in threads_by_proc.get(addr, []):
                if tid not in tids:
                    tids.append(tid)
            rows.append(ProcessRow(pid=int(p.pid), ppid=ppid(p), argv=argv(t, p), addr=addr,
                                   page_table=pt, page_table_pa=pt_pa, threads=tids,
                                   state=t.ps_name(int(p.status))))
        except UnreadableAddress as exc:
            raise CorruptStructure(f"process at {addr:#x} cannot be read: {exc}") from None
    rows.sort(key=lambda r: (r.pid, r.addr))
    return rows


def threads_from_list(t: Any, proc: Object) -> list:
    if not proc.has_member_("threads_list"):
        return []
    return [int(th.tid) for th in list_for_each_entry(
        t, proc.threads_list, "struct thread", "siblings_list",
        what=f"thread list of process at {proc.address_:#x}")]


def find_process(t: Any, pid: int) -> ProcessRow:
    for r in t.processes():
        if r.pid == pid:
            return r
    raise McktoolsError(f"no process with pid {pid} in {t.description}")
