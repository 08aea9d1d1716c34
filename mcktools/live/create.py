"""`mcdump create`: what `ihkosctl N dump [-d LEVEL] [FILE]` does, plus the kmsg ring.

ihkosctl's sequence (ABI reference §2.4-2.8): DUMP_SET_LEVEL, DUMP_NMI,
DUMP_QUERY_NUM_MEM_AREAS / DUMP_QUERY_MEM_AREAS, DUMP_READ of every chunk
into an mcdump, DUMP_NMI_CONT.  Here the freeze is always held through
mcktools.live.freeze.frozen(), so the kernel is resumed however this ends.
The QEMU reference kernel goes through the same steps with the harness's
NMI protocol (mcktools.live.qemu).  The kmsg ring is Linux memory that an
ihkosctl dump never has; it is added as an extra `kmsg` section (the whole
`struct ihk_kmsg_buf` header plus its text) when the kernel image is known.
"""

from __future__ import annotations

import os
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from ..errors import DebugInfoError, LiveError, McktoolsError, TranslationError, UnreadableAddress
from .freeze import frozen

DEFAULT_NAME = "mcdump_%Y%m%d_%H%M%S"   # ihkosctl's default file name


def default_output() -> str:
    return time.strftime(DEFAULT_NAME)


@dataclass
class CreateResult:
    path: str
    level: int
    chunks: list                    # (addr, size)
    kernel_base: int
    size: int
    kmsg: bool
    frozen_seconds: float
    warnings: list = field(default_factory=list)


def kmsg_bytes(target: Any, allow=None) -> bytes:
    """The whole `struct ihk_kmsg_buf` (header + `len` bytes of text) the kernel points at."""
    o = {m: target.offsetof("struct ihk_kmsg_buf", m) for m in ("head", "tail", "len", "str")}
    va = int(target.variable("kmsg_buf"))
    if not va:
        raise UnreadableAddress(0, "kmsg_buf is NULL")
    pa, span = target.mem.resolve(va)
    total = target.sizeof("struct ihk_kmsg_buf")
    if allow is not None:
        allow(pa, total)  # Linux memory: let a range-checked device source read it
    hdr = target.read(va, o["str"])
    length = struct.unpack_from("<i", hdr, o["len"])[0]
    head = struct.unpack_from("<i", hdr, o["head"])[0]
    tail = struct.unpack_from("<i", hdr, o["tail"])[0]
    if not 0 < length <= total - o["str"] or not 0 <= head < length or not 0 <= tail < length:
        raise ValueError(f"kmsg ring at {va:#x} is inconsistent (head {head}, tail {tail}, len {length})")
    return target.read(va, o["str"] + length)


def _try_kmsg(target: Any, warnings: list, allow=None) -> Optional[bytes]:
    if target is None:
        warnings.append("no kernel image: the dump has no kmsg section")
        return None
    try:
        return kmsg_bytes(target, allow)
    except (DebugInfoError, UnreadableAddress, TranslationError, ValueError, LiveError) as exc:
        warnings.append(f"kmsg ring not copied: {exc}")
        return None


def create_dump(out: Optional[str] = None, *, level: int = 0, os_index: int = 0, qemu: Optional[str] = None,
                kernel: Optional[str] = None, overwrite: bool = False) -> CreateResult:
    """Freeze, write the mcdump (and kmsg), resume.  See the module docstring."""
    from ..formats.mcdump import write_mcdump
    from ..qemu.dump import DumpIdentity
    from .attach import QEMU_RUN_ENV, open_live

    if level not in (0, 24):
        raise McktoolsError(f"dump level must be 0 or 24, not {level}")
    out = out or default_output()
    if os.path.exists(out) and not overwrite:
        raise McktoolsError(f"{out} exists (--force to replace it)")
    warnings: list = []
    qemu = qemu or os.environ.get(QEMU_RUN_ENV) or None
    try:
        live = open_live(kernel, os_index=os_index, qemu=qemu)
    except McktoolsError as exc:
        if qemu or "kernel image" not in str(exc):
            raise
        live = None  # ihkosctl needs no image: dump without kmsg
        warnings.append(f"{exc}; the dump has no kmsg section")
    if live is None:
        from .attach import ihk_source
        from .ihk import IhkFreezer
        source = ihk_source(os_index)
        target = None
        freezer: Any = IhkFreezer(source, level)
        kind = "ihk"
    else:
        target, source, kind = live.target, live.source, live.kind
        freezer = live.freezer(level)
    identity = DumpIdentity.now()
    try:
        with frozen(freezer):
            t0 = time.monotonic()
            if kind == "qemu":
                state = freezer.state
                chunks = list(state.chunks)
                kernel_base, phys_start = state.kernel_base, 0

                def reader_for(addr: int):
                    return lambda off, n: freezer.read_phys(addr + off, n)
                readers = [(a, s, reader_for(a)) for a, s in chunks]
                allow = None
            else:
                areas = source.query_mem_areas()
                chunks = [(c.addr, c.size) for c in areas.chunks]
                kernel_base, phys_start = areas.kernel_base, areas.phys_start
                readers = source.dump_chunk_readers(areas)
                allow = source.allow
            kmsg = _try_kmsg(target, warnings, allow)
            size = write_mcdump(out, readers, kernel_base=kernel_base, phys_start=phys_start,
                                date=identity.date, hostname=identity.hostname, user=identity.user,
                                extra_sections=[("kmsg", kmsg)] if kmsg is not None else [],
                                overwrite=overwrite)
            held = time.monotonic() - t0
    finally:
        close = getattr(freezer, "close", None)
        if callable(close):
            close()
        (live.close() if live is not None else source.close())
    return CreateResult(out, level, chunks, kernel_base, size, kmsg is not None, held, warnings)
