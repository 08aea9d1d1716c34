"""Find McKernel inside a Linux vmcore: where its image sits, its
`smp_boot_param`, the dump page set and the kmsg ring.

Ways in, most reliable first (ABI reference §1.5, §2.2, §5, §11):
1. `--dump-page-set PADDR` or `--boot-param PADDR` given by hand;
2. the IHK module's `dump_page_set_addr` and `dump_bootstrap_mem_start`
   through drgn, with the vmlinux and module debug files (what upstream's
   ldump2mcdump reads through crash);
3. the kernel image's build-id note, which the loader copies into memory
   with the image: found at a 2 MiB-aligned kernel_base, it gives the image's
   own `boot_param_pa` variable;
4. without an image, a scan of memory for a page that looks like an
   `smp_boot_param` whose dump page set points at a consistent bitmap.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from typing import Any, Optional

from ..errors import DebugInfoError, ImageMismatch, McktoolsError, UnreadableAddress
from .bitmap import DUMP_PAGE_SET, DumpPageSet

PAGE = 4096
LARGE_PAGE = 2 << 20
MAP_KERNEL_START_DEFAULT = 0xFFFFFFFFFE800000

#: smp_boot_param member offsets of the default McKernel build (reference §6.7),
#: and of a build without IHK_IKC_USE_LINUX_WORK_IRQ (4104 bytes lower from ihk_ikc_irq on)
BOOT_PARAM_LAYOUTS = (
    {"start": 0, "end": 8, "status": 16, "msg_buffer": 40, "msg_buffer_size": 48,
     "dump_level": 6624, "dump_page_set": 6632},
    {"start": 0, "end": 8, "status": 16, "msg_buffer": 40, "msg_buffer_size": 48,
     "dump_level": 2520, "dump_page_set": 2528},
)
CAPTURE_HINT = ("IHK's panic-notifier workaround marks McKernel's pages as anonymous user pages and "
                "makedumpfile -d 8 and above drop them; capture with a dump level that keeps user pages "
                "(core_collector makedumpfile -d 1 in kdump.conf, or -d 0 / an unfiltered ELF vmcore)")

#: struct ihk_kmsg_buf (reference §6.6)
KMSG_LAYOUT = {"tail": 4, "len": 8, "head": 12, "str": 4096}


@dataclass
class Location:
    """What we learned about McKernel in the vmcore."""

    dps: DumpPageSet
    how: str
    kernel_base: Optional[int] = None
    boot_param_pa: Optional[int] = None
    dump_level: Optional[int] = None
    msg_buffer: Optional[int] = None
    msg_buffer_size: Optional[int] = None
    bootstrap_mem_start: Optional[int] = None
    notes: list = field(default_factory=list)


def kernel_base_from_bootstrap(bootstrap_mem_start: int) -> int:
    """round_up(start, 2 MiB) + 2 MiB (reference §1.5)."""
    return ((bootstrap_mem_start + LARGE_PAGE - 1) & ~(LARGE_PAGE - 1)) + LARGE_PAGE


def _u64(read, pa: int) -> int:
    return struct.unpack("<Q", read(pa, 8))[0]


def boot_param_layout(image: Any) -> dict:
    """Member offsets of `struct smp_boot_param` from DWARF, else the defaults."""
    if image is None:
        return dict(BOOT_PARAM_LAYOUTS[0])
    try:
        return {m: image.offsetof("struct smp_boot_param", m) for m in BOOT_PARAM_LAYOUTS[0]}
    except DebugInfoError:
        return dict(BOOT_PARAM_LAYOUTS[0])


def kmsg_layout(image: Any) -> dict:
    if image is not None:
        try:
            return {m: image.offsetof("struct ihk_kmsg_buf", m) for m in KMSG_LAYOUT}
        except DebugInfoError:
            pass
    return dict(KMSG_LAYOUT)


# --- the image in memory ------------------------------------------------------

def map_kernel_start(image: Any, layout: Any) -> int:
    try:
        return image.symbol("_head") - 0x1000      # x86 linker script: _head = base + 4 KiB
    except DebugInfoError:
        return (layout.start_vaddr & ~(LARGE_PAGE - 1)) or MAP_KERNEL_START_DEFAULT


def find_image(source: Any, image: Any, layout: Any) -> int:
    """kernel_base: the 2 MiB-aligned PA where the image's build-id note sits in memory."""
    if layout.note_vaddr is None or not layout.note_bytes:
        raise ImageMismatch(f"{image.path} has no loaded build-id note, so it cannot be found in the "
                            f"vmcore; give --boot-param or --dump-page-set")
    off = layout.note_vaddr - map_kernel_start(image, layout)
    note = layout.note_bytes
    for r in source.ranges():
        cand = max((r.start - off) & ~(LARGE_PAGE - 1), 0)
        while cand + off < r.end:
            pa = cand + off
            if pa >= r.start and pa + len(note) <= r.end:
                try:
                    if source.read(pa, len(note)) == note:
                        return cand
                except UnreadableAddress:
                    pass
            cand += LARGE_PAGE
    excluded = getattr(source, "excluded_ranges", None)
    dropped = sum(r.size for r in excluded()) // PAGE if excluded is not None else 0
    if dropped:
        raise McktoolsError(f"the vmcore does not hold McKernel's memory: the image {os.path.basename(image.path)} "
                            f"is not in the pages it holds, and {dropped} pages were filtered out by the dump "
                            f"tool; {CAPTURE_HINT}")
    raise ImageMismatch(f"kernel image {image.path} (build-id {layout.build_id.hex() if layout.build_id else '?'}) "
                        f"is not in {getattr(source, 'description', 'the vmcore')}: either the image does not "
                        f"belong to this vmcore or the vmcore lacks McKernel's pages")


def image_pa(kernel_base: int, mks: int, vaddr: int) -> int:
    return kernel_base + (vaddr - mks)


def reserved_chunks(image: Any, read_vaddr) -> Optional[list]:
    """McKernel's reserved chunks [(start, size)] when the image describes its
    chunk list (`mem_chunks[nr_mem_chunks]` of {start, size}, as the reference
    kernel has), read through `read_vaddr(va, size)`; None otherwise."""
    try:
        var = image.variable("mem_chunks")
        nr = struct.unpack("<i", read_vaddr(image.symbol("nr_mem_chunks"), 4))[0]
        elem = var.type.element
        esize = image.sizeof(elem)
        o_start, o_size = image.offsetof(elem, "start"), image.offsetof(elem, "size")
        out = []
        for i in range(max(0, min(nr, var.type.count or 0))):
            base = var.address + i * esize
            out.append((_u64(read_vaddr, base + o_start), _u64(read_vaddr, base + o_size)))
        return out
    except (DebugInfoError, UnreadableAddress, AttributeError, TypeError):
        return None


# --- boot_param ---------------------------------------------------------------

def read_boot_param(read, bp_pa: int, layout: dict) -> dict:
    need = max(layout.values()) + DUMP_PAGE_SET.size
    raw = read(bp_pa, need)
    out = {}
    for name, off in layout.items():
        if name == "dump_page_set":
            continue
        fmt = "<i" if name == "dump_level" else "<Q"
        out[name] = struct.unpack_from(fmt, raw, off)[0]
    out["dps"] = DumpPageSet.parse(bp_pa + layout["dump_page_set"], raw[layout["dump_page_set"]:])
    return out


def boot_param_plausible(bp: dict) -> Optional[str]:
    if bp["start"] % PAGE or bp["end"] <= bp["start"] or bp["end"] - bp["start"] > 1 << 50:
        return f"chunk span [{bp['start']:#x}, {bp['end']:#x})"
    if bp["status"] > 16:
        return f"status {bp['status']}"
    return bp["dps"].plausible()


def location_from_boot_param(read, bp_pa: int, image: Any, how: str) -> Location:
    layouts = [boot_param_layout(image)] if image is not None else list(BOOT_PARAM_LAYOUTS)
    why = None
    for lay in layouts:
        try:
            bp = read_boot_param(read, bp_pa, lay)
        except UnreadableAddress as exc:
            raise McktoolsError(f"smp_boot_param at {bp_pa:#x} is not in the vmcore ({exc}); the dump "
                                f"lacks the Linux memory IHK keeps it in") from None
        why = boot_param_plausible(bp)
        if why is None:
            return Location(bp["dps"], how, boot_param_pa=bp_pa, dump_level=bp["dump_level"],
                            msg_buffer=bp["msg_buffer"], msg_buffer_size=bp["msg_buffer_size"])
    raise McktoolsError(f"no smp_boot_param at {bp_pa:#x} ({how}): implausible {why}")


def location_from_dump_page_set(read, dps_pa: int, how: str) -> Location:
    try:
        dps = DumpPageSet.parse(dps_pa, read(dps_pa, DUMP_PAGE_SET.size))
    except UnreadableAddress as exc:
        raise McktoolsError(f"the dump page set at {dps_pa:#x} is not in the vmcore ({exc})") from None
    why = dps.plausible()
    if why is not None:
        raise McktoolsError(f"no ihk_dump_page_set at {dps_pa:#x} ({how}): implausible {why}")
    return Location(dps, how)


def scan_for_boot_param(source: Any, progress=None) -> Location:
    """Look at every page-aligned address for an smp_boot_param (no image given)."""
    found = []
    block = 1 << 20
    for r in source.ranges():
        pa = (r.start + PAGE - 1) & ~(PAGE - 1)
        while pa < r.end:
            n = min(block, r.end - pa)
            try:
                data = source.read(pa, n)
            except UnreadableAddress:
                pa += n
                continue
            for off in range(0, n - 56 + 1, PAGE):
                start, end, status = struct.unpack_from("<QQQ", data, off)
                if not (start and end > start and start % PAGE == 0 and 0 < status <= 16
                        and end - start < 1 << 50):
                    continue
                cand = pa + off
                for lay in BOOT_PARAM_LAYOUTS:
                    try:
                        bp = read_boot_param(source.read, cand, lay)
                    except UnreadableAddress:
                        continue
                    if boot_param_plausible(bp) is None and _first_block_fits(source.read, bp):
                        found.append(Location(bp["dps"], f"memory scan found smp_boot_param at {cand:#x}",
                                              boot_param_pa=cand, dump_level=bp["dump_level"],
                                              msg_buffer=bp["msg_buffer"],
                                              msg_buffer_size=bp["msg_buffer_size"]))
                        break
            if progress is not None:
                progress.advance(n)
            pa += n
    if not found:
        raise McktoolsError("found no McKernel smp_boot_param in the vmcore; give the kernel image "
                            "(-k IMG), --boot-param PADDR or --dump-page-set PADDR")
    if len(found) > 1:
        where = ", ".join(f"{f.boot_param_pa:#x}" for f in found[:5])
        raise McktoolsError(f"found {len(found)} candidate smp_boot_param pages ({where}); choose one with "
                            f"--boot-param PADDR or give the kernel image (-k IMG)")
    return found[0]


def _first_block_fits(read, bp: dict) -> bool:
    dps = bp["dps"]
    try:
        start, map_count = struct.unpack("<QQ", read(dps.phy_page, 16))
    except UnreadableAddress:
        return False
    return bp["start"] <= start < bp["end"] and 0 < map_count and start % PAGE == 0 and \
        start + map_count * 64 * PAGE <= bp["end"] + 64 * PAGE


# --- drgn: the IHK module's statics ---------------------------------------------

def location_from_drgn(vmcore: str, vmlinux: str, module: str) -> Location:
    """Read `dump_page_set_addr` and `dump_bootstrap_mem_start` from the IHK
    module's statics in a Linux vmcore (what ldump2mcdump does through crash)."""
    for what, p in (("vmlinux", vmlinux), ("IHK module", module)):
        if not os.path.isfile(p):
            raise McktoolsError(f"{what} debug file {p} does not exist")
    try:
        import drgn
    except ImportError:
        raise McktoolsError("--vmlinux/--ihk-module need drgn (pip install drgn); give --boot-param or "
                            "--dump-page-set instead") from None
    try:
        prog = drgn.Program()
        prog.set_core_dump(vmcore)
        if not prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL:
            raise McktoolsError(f"{vmcore} is not a Linux kernel vmcore (no VMCOREINFO), so the IHK "
                                f"module's variables cannot be read from it")
        prog.load_debug_info([vmlinux, module])
        dps_va = prog["dump_page_set_addr"].value_()
        bootstrap = prog["dump_bootstrap_mem_start"].value_()
        raw = prog.read(dps_va, DUMP_PAGE_SET.size)
        # the module stores a direct-map VA; drgn translates it, and we want the PA too
        try:
            from drgn.helpers.linux.mm import virt_to_phys
            dps_pa = int(virt_to_phys(prog, dps_va))
        except Exception:          # only used in messages
            dps_pa = 0
    except McktoolsError:
        raise
    except (drgn.FaultError, LookupError, ValueError, OSError, drgn.MissingDebugInfoError) as exc:
        raise McktoolsError(f"cannot read the IHK module's dump_page_set_addr through drgn: {exc}") from None
    except Exception as exc:       # drgn raises a few of its own types
        raise McktoolsError(f"drgn cannot open {vmcore} with {vmlinux} and {module}: {exc}") from None
    if not dps_va:
        raise McktoolsError("the IHK module's dump_page_set_addr is 0: no McKernel was booted")
    dps = DumpPageSet.parse(dps_pa, raw)
    why = dps.plausible()
    if why is not None:
        raise McktoolsError(f"the IHK module's dump page set is implausible ({why})")
    return Location(dps, "IHK module's dump_page_set_addr (drgn)", bootstrap_mem_start=bootstrap,
                    kernel_base=kernel_base_from_bootstrap(bootstrap) if bootstrap else None)
