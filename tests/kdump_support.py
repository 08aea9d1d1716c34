"""Make Debian's makedumpfile accept a non-Linux ELF core, for tests that need real
kdump-compressed and flattened files written by a third party.

makedumpfile insists on Linux facts: a VMCOREINFO note, a utsname reachable through
`init_top_pgt`, and a FLATMEM `mem_map`.  `linuxify_core` rewrites any physical ELF core
into that shape, overwriting only two scratch pages that it returns so callers can
correct their expected bytes.
"""

from __future__ import annotations

import struct

from mcktools.formats.elfcore import ElfCore

PAGE = 4096
LARGE = 2 << 20
KTEXT = 0xFFFFFFFF80000000                    # __START_KERNEL_map (phys_base 0)
DIRECT = 0xFFFF888000000000                   # p_vaddr base of the rewritten PT_LOADs


def _note(name: str, ntype: int, desc: bytes) -> bytes:
    nb = name.encode() + b"\0"
    pad = lambda b: b + b"\0" * (-len(b) % 4)  # noqa: E731
    return struct.pack("<III", len(nb), len(desc), ntype) + pad(nb) + pad(desc)


def linuxify_core(src, dst, scratch_pa: int, *, mem_map_pa: int = None, release: str = "5.10.0") -> dict:
    """Write `dst`, a vmcore makedumpfile accepts, from the ELF core `src`.

    Pages [scratch_pa, scratch_pa + 2 pages) must lie in a stored PT_LOAD and may
    be overwritten: page 1 is a self-referencing page table (PML4[511] -> itself
    as PDPT, PDPT[510] -> itself as PD, PD[1] -> the 2 MiB page holding page 2,
    PD[2] -> the 2 MiB page holding `mem_map_pa`), page 2 holds init_uts_ns and
    the mem_map pointer.  Returns {pa: bytes} of what was overwritten so callers
    can correct their expected memory.  Only makedumpfile's needs are met: dump
    levels that look at struct page (2, 4, 8, 16) need a real array at mem_map_pa.
    """
    assert scratch_pa % PAGE == 0
    pt, data = scratch_pa, scratch_pa + PAGE
    mm_pa = data + 0x800 if mem_map_pa is None else mem_map_pa
    page_pt = bytearray(PAGE)
    struct.pack_into("<Q", page_pt, 511 * 8, pt | 0x3)
    struct.pack_into("<Q", page_pt, 510 * 8, pt | 0x3)
    struct.pack_into("<Q", page_pt, 1 * 8, (data & ~(LARGE - 1)) | 0x83)
    struct.pack_into("<Q", page_pt, 2 * 8, (mm_pa & ~(LARGE - 1)) | 0x83)
    va_data = KTEXT + 1 * LARGE + (data & (LARGE - 1))
    va_mm = KTEXT + 2 * LARGE + (mm_pa & (LARGE - 1))
    page_data = bytearray(PAGE)
    uts = b"".join(f.ljust(65, b"\0") for f in (b"Linux", b"node", release.encode(), b"#1", b"x86_64", b"(none)"))
    page_data[4:4 + len(uts)] = uts                       # init_uts_ns.name sits after an int
    struct.pack_into("<Q", page_data, 0x400, va_mm)       # the mem_map pointer variable
    patches = {pt: bytes(page_pt), data: bytes(page_data)}
    vmcoreinfo = "".join(f"{k}={v}\n" for k, v in [
        ("OSRELEASE", release), ("PAGESIZE", PAGE), ("SYMBOL(init_uts_ns)", f"{va_data:x}"),
        ("SYMBOL(init_top_pgt)", f"{KTEXT + pt:x}"), ("NUMBER(phys_base)", 0),
        ("SYMBOL(mem_map)", f"{va_data + 0x400:x}"), ("SIZE(page)", 64), ("OFFSET(page.flags)", 0),
        ("OFFSET(page._refcount)", 52), ("OFFSET(page.mapping)", 24), ("OFFSET(page.lru)", 8)]).encode()
    with ElfCore.open(src) as core:
        notes = b"".join(_note(n.name, n.type, n.desc) for n in core.notes if n.name != "VMCOREINFO")
        notes += _note("VMCOREINFO", 0, vmcoreinfo)
        segs = [s for s in core.segments if s.memsz]
        nph = 1 + len(segs)
        note_off = 64 + 56 * nph
        pos = data_off = (note_off + len(notes) + PAGE - 1) & ~(PAGE - 1)
        ph = struct.pack("<IIQQQQQQ", 4, 0, note_off, 0, 0, len(notes), len(notes), 0)
        for s in segs:
            ph += struct.pack("<IIQQQQQQ", 1, 7, pos, DIRECT + s.paddr, s.paddr, s.filesz, s.memsz, 0)
            pos += s.filesz
        eh = b"\x7fELF\x02\x01\x01" + bytes(9) + struct.pack("<HHIQQQIHHHHHH", 4, 62, 1, 0, 64, 0, 0, 64, 56,
                                                             nph, 0, 0, 0)
        with open(dst, "wb") as f:
            f.write(eh + ph + notes + bytes(data_off - note_off - len(notes)))
            for s in segs:
                for off in range(0, s.filesz, 1 << 20):
                    f.write(core.read_segment(s, off, min(1 << 20, s.filesz - off)))
            for pa, blob in patches.items():
                s = next((s for s in segs if s.paddr <= pa and pa + PAGE <= s.paddr + s.filesz), None)
                assert s is not None, f"scratch page {pa:#x} is not stored in {src}"
                f.seek(data_off + sum(x.filesz for x in segs[:segs.index(s)]) + pa - s.paddr)
                f.write(blob)
    return patches
