"""`mcdump verify`: does this mcdump hold what it claims, and does the image belong to it?

Each check is a row (name, ok, detail).  Failing checks make the command exit
non-zero; excluded pages are reported but are not a failure (a level-24 dump
leaves pages out on purpose).
"""

from __future__ import annotations

import struct
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from ..errors import DebugInfoError, FormatError, UnreadableAddress
from ..formats.mcdump import McDump
from ..memory.sources.mcdump import McDumpSource
from . import locate
from .detect import MCDUMP, MCDUMP_INTERACTIVE, detect

PAGE = 4096
LARGE_PAGE = 2 << 20


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class VerifyResult:
    path: str
    image: str
    checks: list = field(default_factory=list)
    excluded: list = field(default_factory=list)     # {"addr", "size"} ranges of reserved memory not dumped
    excluded_pages: Optional[int] = None

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        return d


def _image_read(kernel_base: int, mks: int, src: McDumpSource):
    def read(vaddr: int, size: int) -> bytes:
        return src.read(locate.image_pa(kernel_base, mks, vaddr), size)
    return read


def subtract(ranges: list, holes_of: list) -> list:
    """Parts of `ranges` (addr, size) that no range in `holes_of` covers."""
    out = []
    cover = sorted(holes_of)
    for addr, size in ranges:
        pos, end = addr, addr + size
        for a, s in cover:
            if a + s <= pos or a >= end:
                continue
            if a > pos:
                out.append((pos, a - pos))
            pos = max(pos, a + s)
        if pos < end:
            out.append((pos, end - pos))
    return out


def verify(dump_path: str, image_path: str) -> VerifyResult:
    from ..debuginfo import Image
    from ..model.imagelayout import ImageLayout

    res = VerifyResult(dump_path, image_path)
    checks = res.checks
    try:
        kind = detect(dump_path)
        if kind.kind not in (MCDUMP, MCDUMP_INTERACTIVE):
            raise FormatError(f"{dump_path} is a {kind.label}, not an mcdump")
        dump = McDump.open(dump_path)
    except FormatError as exc:
        checks.append(Check("format", False, str(exc)))
        return res
    with dump:
        checks.append(Check("format", True, f"mcdump with {len(dump.chunks)} chunks, {len(dump.sections) - 1} "
                                            f"sections"))
        if dump.interactive:
            checks.append(Check("sections", False, "interactive dump: the physmem sections hold one page of "
                                                   "zeros each, no memory contents"))
            return res
        total = sum(c.size for c in dump.chunks)
        checks.append(Check("sections", True, f"every physmemN section is present and holds its chunk's "
                                              f"{total} bytes in all"))
        bad = [c for c in dump.chunks if c.addr % PAGE or c.size % PAGE or c.size == 0]
        kb_ok = dump.kernel_base % LARGE_PAGE == 0 and dump.kernel_base != 0
        detail = (f"{len(dump.chunks)} chunks, page-aligned, no overlaps; kernel_base {dump.kernel_base:#x}"
                  if not bad and kb_ok else
                  (f"chunk {bad[0].index} [{bad[0].addr:#x}, +{bad[0].size:#x}) is not whole pages" if bad else
                   f"kernel_base {dump.kernel_base:#x} is not 2 MiB-aligned"))
        checks.append(Check("chunk table", not bad and kb_ok, detail))

        image = Image.open(image_path)
        layout = ImageLayout.from_path(image_path)
        src = McDumpSource(dump)
        mks = locate.map_kernel_start(image, layout)
        read_image = _image_read(dump.kernel_base, mks, src)
        checks.append(_check_build_id(layout, read_image, image_path))
        checks.append(_check_phys_base(image, read_image, dump.kernel_base))
        checks.append(_check_constants(image, layout, read_image))

        reserved = locate.reserved_chunks(image, read_image)
        dumped = [(c.addr, c.size) for c in dump.chunks]
        if reserved:
            missing = subtract(reserved, dumped)
            res.excluded = [{"addr": a, "size": s} for a, s in missing]
            res.excluded_pages = sum(s for _, s in missing) // PAGE
            outside = subtract(dumped, reserved)
            checks.append(Check("chunks inside McKernel memory", not outside,
                                "every chunk lies in a reserved chunk" if not outside else
                                f"{len(outside)} ranges lie outside McKernel's chunks, first at {outside[0][0]:#x}"))
        else:
            ordered = sorted(dumped)
            gaps = [(a + s, b - a - s) for (a, s), (b, _) in zip(ordered, ordered[1:]) if b > a + s]
            res.excluded = [{"addr": a, "size": s} for a, s in gaps]
            res.excluded_pages = None
    return res


def _check_build_id(layout: Any, read_image, image_path: str) -> Check:
    if layout.note_vaddr is None or not layout.note_bytes:
        return Check("build-id", False, f"{image_path} has no loaded build-id note to compare")
    try:
        mem = read_image(layout.note_vaddr, len(layout.note_bytes))
    except UnreadableAddress as exc:
        return Check("build-id", False, f"the image's build-id note is not in the dump ({exc})")
    want = layout.build_id.hex() if layout.build_id else "?"
    if mem != layout.note_bytes:
        got = mem[-len(layout.build_id):].hex() if layout.build_id else mem.hex()
        return Check("build-id", False, f"image {want}, dump {got}: the image does not belong to this dump")
    return Check("build-id", True, f"{want} found at the image's place in memory")


def _check_phys_base(image: Any, read_image, kernel_base: int) -> Check:
    try:
        v = struct.unpack("<Q", read_image(image.symbol("x86_kernel_phys_base"), 8))[0]
    except DebugInfoError:
        return Check("kernel_base", True, "image has no x86_kernel_phys_base (not checked)")
    except UnreadableAddress as exc:
        return Check("kernel_base", False, f"x86_kernel_phys_base is not in the dump ({exc})")
    if v != kernel_base:
        return Check("kernel_base", False, f"the kernel recorded x86_kernel_phys_base {v:#x}, the dump says "
                                           f"kernel_base {kernel_base:#x}")
    return Check("kernel_base", True, f"x86_kernel_phys_base in memory equals kernel_base {kernel_base:#x}")


def _check_constants(image: Any, layout: Any, read_image) -> Check:
    try:
        addr = image.symbol("debug_constants")
    except DebugInfoError:
        return Check("debug_constants", True, "image has no debug_constants (not checked)")
    n = 12
    filed = layout.read_file(addr, 8 * n)
    try:
        mem = read_image(addr, 8 * n)
    except UnreadableAddress as exc:
        return Check("debug_constants", False, f"not in the dump ({exc})")
    if filed is not None and filed != mem:
        return Check("debug_constants", False, "the dump's debug_constants differ from the image file's")
    return Check("debug_constants", True, "the dump's debug_constants equal the image file's")
