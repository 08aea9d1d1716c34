"""Page tables of processes and of the kernel (`init_pt`), as vtop rows.

A user page's data may be missing from a level-24 dump while its page-table
entries are present: rows then say `excluded`, and nothing reads it as zeros.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional

from ..errors import TranslationError, UnreadableAddress
from ..memory.translate import (
    PHYS_MASK, USER_END, PageTableSpace, Translation, flag_names, iter_mappings, walk_x86_64,
)
from .rows import VtopRow


def process_space(t: Any, pgd_va: int, name: str) -> PageTableSpace:
    return PageTableSpace(t.read_phys, t.kmap.resolve(pgd_va)[0], fallback=t.kmap, name=name)


def _in_dump(t: Any, pa: int) -> bool:
    try:
        t.read_phys(pa, 1)
        return True
    except UnreadableAddress:
        return False


def _row(t: Any, tr: Translation, region: str, va: Optional[int] = None) -> VtopRow:
    return VtopRow(virt=tr.va if va is None else va, phys=tr.pa, size=tr.page_size,
                   flags=flag_names(tr.flags), pte=tr.flags, region=region,
                   excluded=not _in_dump(t, tr.pa))


def vtop_user(t: Any, pgd_pa: int, va: int) -> Optional[VtopRow]:
    """The user mapping of `va`, or None when not mapped."""
    try:
        tr = walk_x86_64(t.read_phys, pgd_pa, va)
    except TranslationError:
        return None
    return _row(t, tr, "user")


def vtop_kernel(t: Any, va: int) -> Optional[VtopRow]:
    """A kernel VA through init_pt (real flags and size); the linear maps when
    init_pt does not map it but McKernel's linear rules do."""
    region = t.kmap.region_name(va)
    if t.kmap.init_pt_pa is not None:
        try:
            return _row(t, walk_x86_64(t.read_phys, t.kmap.init_pt_pa, va), region)
        except TranslationError:
            pass
    if region in ("image", "direct", "straight"):
        try:
            tr = t.kmap.translate(va)
        except TranslationError:
            return None
        return _row(t, tr, region)
    return None


def collapse(rows: Iterator[VtopRow]) -> Iterator[VtopRow]:
    """Collapse runs of like entries (same size and attributes, consecutive VA and
    PA) into first, a `...` marker, last — crash mcvtop's display."""
    run: list = []

    def flush():
        if len(run) <= 2:
            yield from run
        else:
            first, last = run[0], run[-1]
            yield first
            yield VtopRow(virt=first.virt + first.size, phys=None, size=first.size, flags=first.flags,
                          pte=0, region=first.region, collapsed=True)
            yield last

    for r in rows:
        if run:
            prev = run[-1]
            if (r.size == prev.size and r.virt == prev.virt + prev.size
                    and r.phys == prev.phys + prev.size
                    and (r.pte & ~PHYS_MASK) == (prev.pte & ~PHYS_MASK)
                    and r.excluded == prev.excluded):
                run.append(r)
                continue
            yield from flush()
            run = []
        run.append(r)
    yield from flush()


def all_mappings(t: Any, pgd_pa: int, user: bool) -> Iterator[VtopRow]:
    start, end = (0, USER_END) if user else (USER_END, 1 << 64)
    for tr in iter_mappings(t.read_phys, pgd_pa, start, end):
        yield _row(t, tr, "user" if user else t.kmap.region_name(tr.va))


class Space:
    """The address space a vtop request is about: a process's, or the kernel's."""

    def __init__(self, t: Any, pid: Optional[int] = None, thread: Optional[str] = None):
        from .processes import find_process
        from .threads import find_thread
        self.t = t
        self.proc_row = None
        if thread is not None:
            info = find_thread(t, thread)
            pid = info.row.pid
            self.proc_row = next((p for p in t.processes() if p.addr == info.proc_addr), None)
            if self.proc_row is None:
                from ..errors import McktoolsError
                raise McktoolsError(f"thread {thread} belongs to no process with an address space "
                                    "(an idle thread?); omit -t for kernel addresses")
        elif pid is not None:
            self.proc_row = find_process(t, pid)
        if self.proc_row is not None and not self.proc_row.page_table:
            from ..errors import McktoolsError
            raise McktoolsError(f"process {self.proc_row.pid} has no address space (no vm)")
        self._ranges = None

    @property
    def user(self) -> bool:
        return self.proc_row is not None

    @property
    def name(self) -> str:
        return f"pid {self.proc_row.pid}" if self.user else "kernel (init_pt)"

    def ranges(self) -> list:
        if self._ranges is None:
            from .vm import vm_ranges
            self._ranges = vm_ranges(self.t, self.t.object(self.proc_row.addr, "struct process")) \
                if self.user else []
        return self._ranges

    def lookup(self, va: int) -> Optional[VtopRow]:
        if not self.user and va < USER_END:
            from ..errors import McktoolsError
            raise McktoolsError(f"{va:#x} is a user address: give -p PID or -t THREAD")
        if self.user and va < USER_END:
            row = vtop_user(self.t, self.proc_row.page_table_pa, va)
        else:
            row = vtop_kernel(self.t, va)
        if row is not None and self.user and va < USER_END:
            from .vm import range_for
            rng = range_for(self.ranges(), va)
            row.vm_range = rng.to_dict() if rng else None
        return row

    def all(self) -> Iterator[VtopRow]:
        if self.user:
            return collapse(all_mappings(self.t, self.proc_row.page_table_pa, True))
        if self.t.kmap.init_pt_pa is None:
            from ..errors import McktoolsError
            raise McktoolsError("init_pt is not known: cannot list kernel mappings")
        return collapse(all_mappings(self.t, self.t.kmap.init_pt_pa, False))
