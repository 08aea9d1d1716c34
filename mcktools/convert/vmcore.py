"""vmcore → mcdump: McKernel's memory out of a Linux (or QEMU) vmcore, with
no crash and no expect (what upstream's vmcore2mckdump/ldump2mcdump do, §11).

The page set comes from McKernel's own data in the vmcore (see `locate`): the
dump page set's bitmap, turned into chunks exactly as IHK does (`bitmap`).
Level "auto" takes the bitmap as McKernel left it (what IHK would have
dumped); level 0 takes every page of every block; level 24 takes the bitmap
when McKernel finished a level-24 freeze and otherwise classifies the pages
itself (`filter`).  Pages are copied streaming, 1 MiB at a time; the kmsg
ring rides along as an extra `kmsg` section.
"""

from __future__ import annotations

import os
import pwd
import socket
import struct
from dataclasses import dataclass, field
from typing import Any, Optional

from ..errors import DebugInfoError, FormatError, McktoolsError, UnreadableAddress
from ..formats.mcdump import write_mcdump
from ..memory.sources import detect_format, open_source
from . import bitmap as bm
from . import locate
from .info import time_text
from .output import Progress, check_target

LEVELS = ("auto", "0", "24")


class NotInVmcore(McktoolsError):
    """The vmcore does not hold (all of) McKernel's memory."""


@dataclass
class ConvertOptions:
    image: Optional[str] = None
    boot_param: Optional[int] = None
    dump_page_set: Optional[int] = None
    vmlinux: Optional[str] = None
    ihk_module: Optional[str] = None
    level: str = "auto"
    kmsg: bool = True

    def validate(self) -> None:
        if self.level not in LEVELS:
            raise McktoolsError(f"dump level must be one of {', '.join(LEVELS)}, not {self.level!r}")
        if self.boot_param is not None and self.dump_page_set is not None:
            raise McktoolsError("give --boot-param or --dump-page-set, not both")
        if (self.vmlinux is None) != (self.ihk_module is None):
            raise McktoolsError("--vmlinux and --ihk-module go together (the IHK module's debug file "
                                "holds dump_page_set_addr)")
        for name in ("boot_param", "dump_page_set"):
            v = getattr(self, name)
            if v is not None and (v < 0 or v >= 1 << 64 or v % 8):
                raise McktoolsError(f"--{name.replace('_', '-')} {v:#x} is not an aligned physical address")
        if self.image is not None and not os.path.isfile(self.image):
            raise McktoolsError(f"kernel image {self.image} does not exist")


@dataclass
class Plan:
    """Everything needed to write the mcdump, decided before writing starts."""

    source: Any
    location: locate.Location
    chunks: list
    kernel_base: int
    level: str
    kmsg: Optional[bytes] = None
    date: Optional[str] = None
    hostname: Optional[str] = None
    user: Optional[str] = None
    warnings: list = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(s for _, s in self.chunks)

    def close(self) -> None:
        self.source.close()


CAPTURE_HINT = locate.CAPTURE_HINT


def open_vmcore(path: str):
    kind = detect_format(path)
    if kind == "mcdump":
        raise McktoolsError(f"{path} is already an mcdump; convert takes a Linux vmcore")
    return open_source(path)


def _missing(source: Any, chunks: list) -> list:
    """(pa, size) parts of `chunks` the source cannot serve."""
    ranges = source.ranges()
    out = []
    for addr, size in chunks:
        pos, end = addr, addr + size
        for r in ranges:
            if r.end <= pos or r.start >= end:
                continue
            if r.start > pos:
                out.append((pos, r.start - pos))
            pos = max(pos, r.end)
            if pos >= end:
                break
        if pos < end:
            out.append((pos, end - pos))
    return out


def _excluded_overlap(source: Any, missing: list) -> int:
    fn = getattr(source, "excluded_ranges", None)
    if fn is None:
        return 0
    total = 0
    for r in fn():
        for pa, n in missing:
            lo, hi = max(pa, r.start), min(pa + n, r.end)
            if lo < hi:
                total += hi - lo
    return total


def check_complete(source: Any, chunks: list) -> None:
    missing = _missing(source, chunks)
    if not missing:
        return
    pages = sum(n for _, n in missing) // bm.PAGE
    total = sum(n for _, n in chunks) // bm.PAGE
    excluded = _excluded_overlap(source, missing) // bm.PAGE
    first = missing[0][0]
    if excluded:
        raise NotInVmcore(f"the vmcore does not hold McKernel's memory: {pages} of {total} pages were "
                          f"filtered out by the dump tool (first at {first:#x}); {CAPTURE_HINT}")
    raise NotInVmcore(f"the vmcore does not hold McKernel's memory: {pages} of {total} pages are not in "
                      f"it (first at {first:#x}); {CAPTURE_HINT}")


def _unreadable_hint(exc: UnreadableAddress, what: str) -> NotInVmcore:
    from ..errors import ExcludedAddress
    if isinstance(exc, ExcludedAddress):
        return NotInVmcore(f"{what} at {exc.address:#x} was filtered out of the vmcore; {CAPTURE_HINT}")
    return NotInVmcore(f"{what} at {exc.address:#x} is not in the vmcore")


def _identity(source: Any, path: str) -> tuple:
    """(date, hostname) of the crashed node when the vmcore says, else of this conversion."""
    date = host = None
    holder = getattr(source, "core", None) or getattr(source, "dump", None)
    info = holder.vmcoreinfo() if holder is not None and hasattr(holder, "vmcoreinfo") else None
    if info and info.get("CRASHTIME", "").isdigit():
        date = time_text(int(info["CRASHTIME"]))
    ts = getattr(holder, "timestamp", None)
    if date is None and ts and ts[0]:
        date = time_text(ts[0])
    uts = getattr(holder, "utsname", None)
    if uts and uts.get("nodename"):
        host = uts["nodename"]
    if date is None:
        date = time_text(int(os.path.getmtime(path)))
    if host is None:
        host = socket.gethostname() or None
    return date, host


def _current_user() -> Optional[str]:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return None


def _open_image(path: Optional[str]):
    if path is None:
        return None, None
    from ..debuginfo import Image
    from ..model.imagelayout import ImageLayout
    return Image.open(path), ImageLayout.from_path(path)


def _locate(source: Any, vmcore: str, opts: ConvertOptions, image: Any, layout: Any) -> tuple:
    """(Location, kernel_base or None)."""
    read = source.read
    kernel_base = None
    if image is not None:
        kernel_base = locate.find_image(source, image, layout)
    if opts.dump_page_set is not None:
        loc = locate.location_from_dump_page_set(read, opts.dump_page_set, "--dump-page-set")
    elif opts.boot_param is not None:
        loc = locate.location_from_boot_param(read, opts.boot_param, image, "--boot-param")
    elif opts.vmlinux is not None:
        loc = locate.location_from_drgn(vmcore, opts.vmlinux, opts.ihk_module)
    elif image is not None:
        loc = _location_from_image(source, image, layout, kernel_base)
    else:
        loc = locate.scan_for_boot_param(source)
    if kernel_base is None:
        kernel_base = loc.kernel_base
    return loc, kernel_base


def _location_from_image(source: Any, image: Any, layout: Any, kernel_base: int) -> locate.Location:
    read = source.read
    mks = locate.map_kernel_start(image, layout)
    how = f"boot_param_pa of {os.path.basename(image.path)} (image found at {kernel_base:#x})"
    try:
        bp_pa = locate._u64(read, locate.image_pa(kernel_base, mks, image.symbol("boot_param_pa")))
    except DebugInfoError:
        bp_pa = 0
    except UnreadableAddress as exc:
        raise _unreadable_hint(exc, "the image's boot_param_pa") from None
    if not bp_pa:
        bp_pa = _boot_param_via_pointer(source, image, mks, kernel_base)
        how = f"boot_param of {os.path.basename(image.path)} through init_pt"
    return locate.location_from_boot_param(read, bp_pa, image, how)


def _boot_param_via_pointer(source: Any, image: Any, mks: int, kernel_base: int) -> int:
    """`boot_param` is a MAP_ST VA early and a fixed-map VA later: translate it
    with McKernel's kernel map (init_pt walk for the fixed map)."""
    from ..memory.translate import KernelMap
    read = source.read
    try:
        ptr = locate._u64(read, locate.image_pa(kernel_base, mks, image.symbol("boot_param")))
        kmap = KernelMap(read, kernel_base, map_kernel_start=mks)
        lpob = locate._u64(read, locate.image_pa(kernel_base, mks, image.symbol("linux_page_offset_base")))
        if lpob:
            kmap.linux_page_offset_base = lpob
            kmap.rebuild()
        pgd = locate._u64(read, locate.image_pa(kernel_base, mks, image.symbol("init_pt")))
        if pgd:
            kmap.init_pt_pa = kmap.resolve(pgd)[0]
        if not ptr:
            raise McktoolsError("the image's boot_param_pa and boot_param are both 0: McKernel had not "
                                "booted far enough to record its boot parameters")
        return kmap.resolve(ptr)[0]
    except DebugInfoError as exc:
        raise McktoolsError(f"cannot find smp_boot_param through the image ({exc}); give --boot-param "
                            f"or --dump-page-set") from None
    except UnreadableAddress as exc:
        raise _unreadable_hint(exc, "McKernel's boot_param pointer") from None


def _chunk_sizes(source: Any, image: Any, layout: Any, kernel_base: int) -> Optional[dict]:
    """Real reserved-chunk sizes, when the image describes its chunk list
    (a bitmap block only knows its chunk rounded up to 64 pages)."""
    if image is None or kernel_base is None:
        return None
    mks = locate.map_kernel_start(image, layout)
    chunks = locate.reserved_chunks(image, lambda va, n: source.read(locate.image_pa(kernel_base, mks, va), n))
    return dict(chunks) if chunks else None


def _read_kmsg(source: Any, loc: locate.Location, image: Any, warnings: list) -> Optional[bytes]:
    if not loc.msg_buffer:
        warnings.append("no kmsg ring address in boot_param; the mcdump has no kmsg section")
        return None
    lay = locate.kmsg_layout(image)
    try:
        hdr = source.read(loc.msg_buffer, max(lay[k] for k in ("head", "tail", "len")) + 4)
        head, tail, length = (struct.unpack_from("<i", hdr, lay[k])[0] for k in ("head", "tail", "len"))
        limit = (loc.msg_buffer_size or (lay["str"] + length)) - lay["str"]
        if not 0 < length <= limit or not 0 <= head < length or not 0 <= tail < length:
            warnings.append(f"kmsg ring at {loc.msg_buffer:#x} is inconsistent (head {head}, tail {tail}, "
                            f"len {length}); not copied")
            return None
        return source.read(loc.msg_buffer, lay["str"] + length)
    except UnreadableAddress as exc:
        warnings.append(f"the kmsg ring is not in the vmcore ({exc}); not copied")
        return None


def plan(vmcore: str, opts: ConvertOptions) -> Plan:
    """Open the vmcore, find McKernel in it and decide the chunk list."""
    opts.validate()
    image, layout = _open_image(opts.image)
    source = open_vmcore(vmcore)
    try:
        warnings: list = []
        loc, kernel_base = _locate(source, vmcore, opts, image, layout)
        try:
            blocks = bm.read_blocks(source.read, loc.dps)
        except UnreadableAddress as exc:
            raise _unreadable_hint(exc, "the dump bitmap") from None
        except FormatError as exc:
            raise McktoolsError(f"{exc} ({loc.how})") from None
        if kernel_base is None:
            # the image is loaded into the largest reserved chunk (reference §1.5)
            biggest = max(blocks, key=lambda b: b.npages)
            kernel_base = locate.kernel_base_from_bootstrap(biggest.start)
            warnings.append(f"kernel_base {kernel_base:#x} computed from the largest chunk (no image given)")
        filtered = loc.dps.completed and loc.dump_level == 24
        if loc.dump_level is None and loc.dps.completed:
            filtered = any(b.set_pages() < b.npages for b in blocks)
        sizes = _chunk_sizes(source, image, layout, kernel_base)
        if not loc.dps.completed:
            warnings.append("completion_flag is not set: McKernel had not finished a dump freeze, so the "
                            "bitmap is the boot-time one (every page)")
        level = opts.level
        if level == "auto":
            chunks = bm.blocks_to_chunks(blocks)
        elif level == "0":
            chunks = bm.full_chunks(blocks, sizes) if filtered else bm.blocks_to_chunks(blocks)
            if filtered and sizes is None and any(b.npages * bm.PAGE % (64 * bm.PAGE) for b in blocks):
                warnings.append("chunk ends rounded up to 64 pages (the image does not describe its chunks)")
        else:
            if filtered:
                chunks = bm.blocks_to_chunks(blocks)
            else:
                chunks = _filter_level24(source, image, kernel_base, bm.blocks_to_chunks(blocks), warnings)
        check_complete(source, chunks)
        kmsg = _read_kmsg(source, loc, image, warnings) if opts.kmsg else None
        date, host = _identity(source, vmcore)
        return Plan(source, loc, chunks, kernel_base, level, kmsg, date, host, _current_user(), warnings)
    except BaseException:
        source.close()
        raise


def _filter_level24(source: Any, image: Any, kernel_base: int, chunks: list, warnings: list) -> list:
    if image is None:
        raise McktoolsError("McKernel did not exclude pages itself (no completed level-24 freeze in the "
                            "vmcore); --level 24 then needs the kernel image (-k IMG) to classify them")
    from ..model.target import Target
    from .filter import apply, classify
    check_complete(source, chunks)
    t = Target(image, source, kernel_base=kernel_base)
    c = classify(t, chunks)
    warnings.append(f"level 24 classified here: {sum(n for _, n in c.user) // bm.PAGE} user pages of "
                    f"{c.processes} processes, {sum(n for _, n in c.free) // bm.PAGE} free pages ({c.allocator})")
    return apply(chunks, c.excluded)


def write(p: Plan, out: str, *, force: bool = False, progress: Optional[Progress] = None) -> int:
    """Stream the planned chunks into an mcdump at `out` (temp file + rename)."""
    check_target(out, force)
    prog = progress or Progress(p.total, "converting")
    direct = DirectReader.for_source(p.source)
    read = direct.read if direct is not None else p.source.read

    def reader_for(addr: int):
        return prog.wrap(lambda off, n: read(addr + off, n))

    extra = [("kmsg", p.kmsg)] if p.kmsg is not None else []
    try:
        size = write_mcdump(out, [(a, s, reader_for(a)) for a, s in p.chunks], kernel_base=p.kernel_base,
                            phys_start=0, date=p.date, hostname=p.hostname, user=p.user,
                            extra_sections=extra, overwrite=force)
    except UnreadableAddress as exc:
        raise _unreadable_hint(exc, "McKernel memory") from None
    finally:
        prog.finish()
        if direct is not None:
            direct.close()
    return size


class DirectReader:
    """Physical reads of an ELF vmcore with pread(2) on the segments' file
    offsets: no mmap, so copying gigabytes neither page-faults 4 KiB at a time
    nor counts the whole input into the process's resident memory.  Anything
    not wholly inside one stored segment goes to the source (which knows
    excluded and missing memory)."""

    def __init__(self, source: Any, path: str, segments: list):
        self.source = source
        self.fd = os.open(path, os.O_RDONLY)
        self.segs = sorted((s.paddr, s.paddr + s.filesz, s.offset) for s in segments if s.filesz)
        self.starts = [s[0] for s in self.segs]
        self.buf = bytearray()
        self.view = memoryview(self.buf)

    @classmethod
    def for_source(cls, source: Any) -> "Optional[DirectReader]":
        core = getattr(source, "core", None)
        if core is None or not hasattr(core, "segments") or not getattr(core, "path", None):
            return None
        from ..formats.elfcore import PADDR_INVALID
        return cls(source, core.path, [s for s in core.segments if s.paddr != PADDR_INVALID])

    def read(self, pa: int, n: int) -> bytes:
        import bisect
        i = bisect.bisect_right(self.starts, pa) - 1
        if i >= 0:
            start, end, off = self.segs[i]
            if pa + n <= end:
                # One reused buffer: the writer consumes each block before asking for the next.
                if len(self.buf) != n:
                    self.buf = bytearray(n)
                    self.view = memoryview(self.buf)
                if os.preadv(self.fd, [self.buf], off + pa - start) == n:
                    return self.view
        return self.source.read(pa, n)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def convert(vmcore: str, out: str, opts: ConvertOptions, *, force: bool = False,
            progress: Optional[Progress] = None) -> Plan:
    check_target(out, force)
    p = plan(vmcore, opts)
    try:
        write(p, out, force=force, progress=progress)
    finally:
        p.close()
    return p

