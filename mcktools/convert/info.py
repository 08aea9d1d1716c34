"""`mcdump info`: what a dump file holds, for every format we read.

Results are dataclass rows; the CLI renders them as text or JSON.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import asdict, dataclass, field
from typing import Optional

from ..formats.elfcore import PADDR_INVALID, ElfCore
from ..formats.kdump import KdumpFile
from ..formats.mcdump import McDump
from . import detect as det

PAGE = 4096


@dataclass
class ChunkRow:
    """A run of physical memory the file holds (`stored` False: listed but
    not stored, as in an interactive mcdump or a filtered vmcore segment tail)."""

    index: int
    addr: int
    size: int
    stored: int
    vaddr: Optional[int] = None

    @property
    def end(self) -> int:
        return self.addr + self.size


@dataclass
class HoleRow:
    addr: int
    size: int


@dataclass
class DumpInfo:
    path: str
    kind: str
    format: str
    file_size: int
    chunks: list = field(default_factory=list)
    holes: list = field(default_factory=list)
    total_bytes: int = 0
    stored_bytes: int = 0
    date: Optional[str] = None
    hostname: Optional[str] = None
    user: Optional[str] = None
    kernel_base: Optional[int] = None
    phys_start: Optional[int] = None
    dump_level: Optional[int] = None
    #: whose level `dump_level` is: "makedumpfile" (-d bits) or "mckernel" (0 / 24)
    dump_level_of: Optional[str] = None
    extra_sections: list = field(default_factory=list)
    notes: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        return d


def holes_between(chunks: list) -> list:
    """Gaps between the chunks in address order (inside their overall span)."""
    out = []
    ordered = sorted(chunks, key=lambda c: c.addr)
    for a, b in zip(ordered, ordered[1:]):
        if b.addr > a.end:
            out.append(HoleRow(a.end, b.addr - a.end))
    return out


def _mcdump_info(path: str, kind: str) -> DumpInfo:
    with McDump.open(path) as d:
        info = DumpInfo(path, kind, det.LABELS[kind], d.file_size, date=d.date, hostname=d.hostname,
                        user=d.user, kernel_base=d.kernel_base, phys_start=d.phys_start)
        info.chunks = [ChunkRow(c.index, c.addr, c.size, 0 if d.interactive else c.size) for c in d.chunks]
        info.extra_sections = [{"name": n, "size": d.section_header(n).size} for n in d.extra_section_names]
        info.details["interactive"] = d.interactive
        info.details["sections"] = len(d.sections) - 1
    return info


def _note_summary(notes) -> dict:
    out: dict = {}
    for n in notes:
        key = f"{n.name}/{n.type}"
        out[key] = out.get(key, 0) + 1
    return out


def _elf_info(path: str, detected: det.Detected) -> DumpInfo:
    with ElfCore.open(path) as core:
        info = DumpInfo(path, detected.kind, detected.label, core.file_size)
        rows = []
        for i, s in enumerate(core.segments):
            paddr = s.paddr if s.paddr != PADDR_INVALID else s.vaddr
            rows.append(ChunkRow(i, paddr, s.memsz, s.filesz, vaddr=s.vaddr))
        info.chunks = rows
        info.notes = _note_summary(core.notes)
        info.details["machine"] = core.machine
        info.details["filtered_segments"] = sum(1 for s in core.segments if s.filtered)
        vmci = core.vmcoreinfo()
        if vmci:
            info.details["osrelease"] = vmci.get("OSRELEASE")
            crash = vmci.get("CRASHTIME")
            if crash and crash.isdigit():
                info.date = time_text(int(crash))
        for n in core.notes:
            if n.name == det.MCK_NOTE_NAME:
                info.details["mckernel"] = n.desc.rstrip(b"\0").decode("utf-8", "replace")
    return info


def time_text(seconds: int) -> str:
    """asctime-style text, as ihkosctl writes its `date` section."""
    return datetime.datetime.fromtimestamp(seconds).strftime("%a %b %e %H:%M:%S %Y")


def _kdump_info(path: str, detected: det.Detected) -> DumpInfo:
    with KdumpFile.open(path) as k:
        info = DumpInfo(path, detected.kind, detected.label, os.path.getsize(path))
        ps = k.page_size
        dumped = k.dumped_pfn_runs()
        info.chunks = [ChunkRow(i, s * ps, (e - s) * ps, (e - s) * ps) for i, (s, e) in enumerate(dumped)]
        ram = k.ram_pfn_runs()
        info.details["ram_ranges"] = [{"addr": s * ps, "size": (e - s) * ps} for s, e in ram]
        info.details["ram_bytes"] = sum(e - s for s, e in ram) * ps
        info.details["header_version"] = k.header_version
        info.details["incomplete"] = k.incomplete
        info.details["nr_cpus"] = k.nr_cpus
        info.details["osrelease"] = k.utsname.get("release")
        info.hostname = k.utsname.get("nodename") or None
        if k.timestamp[0]:
            info.date = time_text(k.timestamp[0])
        info.dump_level = k.dump_level
        info.dump_level_of = "makedumpfile" if k.dump_level is not None else None
        info.notes = _note_summary(k.notes)
    return info


def dump_info(path: str) -> DumpInfo:
    d = det.detect(path)
    if d.kind in (det.MCDUMP, det.MCDUMP_INTERACTIVE):
        info = _mcdump_info(path, d.kind)
    elif d.kind in (det.ELF_VMCORE, det.ELF_CORE, det.MCK_ELF_CORE):
        info = _elf_info(path, d)
    else:
        info = _kdump_info(path, d)
    info.total_bytes = sum(c.size for c in info.chunks)
    info.stored_bytes = sum(c.stored for c in info.chunks)
    info.holes = holes_between(info.chunks)
    return info
