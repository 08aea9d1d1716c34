"""kdump-compressed and flattened readers against Debian's makedumpfile.

makedumpfile only accepts Linux vmcores: it wants program headers right after
the ELF header, a VMCOREINFO note, a utsname it can reach through the kernel
page tables (init_uts_ns, init_top_pgt) and a memory model (FLATMEM mem_map plus
the struct page offsets it checks for).  `linuxify_core` turns any ELF core with
physical PT_LOADs (e.g. QEMU dump-guest-memory) into such a vmcore by rewriting
two scratch pages; everything else is byte-for-byte the original memory, which
is the ground truth for every read below.
"""

from __future__ import annotations

import random
import shutil
import struct
import subprocess

import pytest

from mcktools.errors import ExcludedAddress, FormatError, McktoolsError, UnreadableAddress
from mcktools.formats.flattened import rearrange_flattened
from mcktools.formats.kdump import KdumpFile
from mcktools.memory.sources import detect_format, open_source
from mcktools.memory.sources.kdump import KdumpSource

pytestmark = pytest.mark.skipif(shutil.which("makedumpfile") is None, reason="needs makedumpfile")

PAGE = 4096
LARGE = 2 << 20
MEM_SIZE = 0x800000
HOLE = (0xA0000, 0x100000)                    # a PC-style hole between two PT_LOADs
ZERO_PFNS = set(range(0x500, 0x510)) | {0x123, 0x7FF}
USER_PFNS = set(range(0x520, 0x640)) | {0x150}     # anonymous in mem_map; > 256 pages in a row
TEXT_PFNS = set(range(0x700, 0x710))              # compressible (random pages are stored raw)
MEM_MAP_PA = 0x400000                              # FLATMEM struct page array, 64 bytes per PFN
SCRATCH_PA = 0x300000                              # two pages linuxify_core may overwrite
KTEXT = 0xFFFFFFFF80000000                    # __START_KERNEL_map (phys_base 0)
DIRECT = 0xFFFF888000000000                   # p_vaddr base of the rewritten PT_LOADs


from tests.kdump_support import linuxify_core  # noqa: E402  (shared with the mcdump tests)


def make_memory() -> bytearray:
    mem = bytearray(random.Random(2024).randbytes(MEM_SIZE))
    for pfn in ZERO_PFNS:
        mem[pfn * PAGE:(pfn + 1) * PAGE] = bytes(PAGE)
    mem[HOLE[0]:HOLE[1]] = bytes(HOLE[1] - HOLE[0])
    for pfn in TEXT_PFNS:
        mem[pfn * PAGE:(pfn + 1) * PAGE] = (f"page {pfn:#x} of some compressible text. " * 200).encode()[:PAGE]
    mem[MEM_MAP_PA:MEM_MAP_PA + 64 * (MEM_SIZE // PAGE)] = bytes(64 * (MEM_SIZE // PAGE))
    for pfn in USER_PFNS:
        # page.mapping (offset 24) with PAGE_MAPPING_ANON (bit 0): an anonymous user page.
        struct.pack_into("<Q", mem, MEM_MAP_PA + 64 * pfn + 24, DIRECT + 0x1000 | 1)
    return mem


def write_plain_core(path, mem: bytes, segs) -> None:
    """A minimal ELF core (QEMU-like: physical PT_LOADs, program headers not at 64)."""
    nph = len(segs)
    phoff = 0x100                                      # deliberately not right after the header
    data_off = 0x1000
    ph, pos = b"", data_off
    for start, end in segs:
        ph += struct.pack("<IIQQQQQQ", 1, 0, pos, start, start, end - start, end - start, 0)
        pos += end - start
    eh = b"\x7fELF\x02\x01\x01" + bytes(9) + struct.pack("<HHIQQQIHHHHHH", 4, 62, 1, 0, phoff, 0, 0, 64, 56,
                                                         nph, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(eh + bytes(phoff - 64) + ph + bytes(data_off - phoff - len(ph)))
        for start, end in segs:
            f.write(mem[start:end])


@pytest.fixture(scope="module")
def vmcore(tmp_path_factory):
    d = tmp_path_factory.mktemp("kdump")
    mem = make_memory()
    segs = [(0, HOLE[0]), (HOLE[1], MEM_SIZE)]
    write_plain_core(d / "plain.core", mem, segs)
    path = d / "vmcore"
    for pa, blob in linuxify_core(d / "plain.core", path, SCRATCH_PA, mem_map_pa=MEM_MAP_PA).items():
        mem[pa:pa + len(blob)] = blob
    return d, path, bytes(mem), segs


def makedumpfile(*args, stdout=None):
    r = subprocess.run(["makedumpfile", *map(str, args)], stdout=stdout or subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=120)
    if r.returncode != 0:
        pytest.fail(f"makedumpfile {' '.join(map(str, args))} failed: {r.stderr.decode()[-500:]}")


def check_all_memory(src, mem, segs, excluded_pfns=frozenset()):
    for start, end in segs:
        pos = start
        while pos < end:
            pfn = pos // PAGE
            if pfn in excluded_pfns:
                with pytest.raises(ExcludedAddress):
                    src.read(pos, 16)
            else:
                n = min(0x10000, end - pos)
                # Stop each read before the next excluded page.
                stop = next((p * PAGE for p in sorted(excluded_pfns) if pos < p * PAGE < pos + n), pos + n)
                assert src.read(pos, stop - pos) == mem[pos:stop], hex(pos)
                pos = stop
                continue
            pos += PAGE


def test_zlib_level0(vmcore):
    d, path, mem, segs = vmcore
    out = d / "l0.kdump"
    makedumpfile("-c", "-d", "0", path, out)
    assert detect_format(out) == "kdump"
    with open_source(out) as src:
        assert isinstance(src, KdumpSource)
        assert [(r.start, r.end) for r in src.ranges()] == segs
        assert src.dump.utsname["release"] == "5.10.0"
        assert src.dump.vmcoreinfo()["OSRELEASE"] == "5.10.0"
        assert src.dump.page_size == PAGE and src.dump.dump_level == 0
        check_all_memory(src, mem, segs)
        flags = {src.dump.page_desc(p).flags for p in TEXT_PFNS}
        assert flags == {1}                  # DUMP_DH_COMPRESSED_ZLIB: the zlib path really ran
        assert src.read(0x9FFF8, 8) == mem[0x9FFF8:0xA0000]
        with pytest.raises(UnreadableAddress, match="not in the dump") as ei:
            src.read(0x9FFF8, 16)            # runs into the hole
        assert ei.value.address == 0xA0000 and not isinstance(ei.value, ExcludedAddress)
        with pytest.raises(UnreadableAddress):
            src.read(MEM_SIZE, 1)


def test_level1_zero_pages_share_one_descriptor(vmcore):
    """makedumpfile -d 1 keeps zero pages in the bitmap and points them all at one
    shared zero page (it writes the bitmap first), so they read as zeros."""
    d, path, mem, segs = vmcore
    out = d / "l1.kdump"
    makedumpfile("-c", "-d", "1", path, out)
    with open_source(out) as src:
        check_all_memory(src, mem, segs)
        descs = {src.dump.page_desc(p).offset for p in ZERO_PFNS}
        assert len(descs) == 1


def test_user_pages_excluded_level8(vmcore):
    d, path, mem, segs = vmcore
    out = d / "l8.kdump"
    makedumpfile("-c", "-d", "8", path, out)
    with open_source(out) as src:
        check_all_memory(src, mem, segs, USER_PFNS)
        with pytest.raises(ExcludedAddress, match="excluded") as ei:
            src.read(0x520 * PAGE - 8, 16)
        assert ei.value.address == 0x520 * PAGE
        excl = {(r.start, r.end) for r in src.excluded_ranges()}
        assert excl == {(0x150 * PAGE, 0x151 * PAGE), (0x520 * PAGE, 0x640 * PAGE)}


def test_flattened_and_rearranged(vmcore, tmp_path):
    d, path, mem, segs = vmcore
    flat = tmp_path / "flat.kdump"
    with open(flat, "wb") as f:
        makedumpfile("-F", "-c", "-d", "8", path, stdout=f)
    assert detect_format(flat) == "flattened"
    with open_source(flat) as src:
        assert "flattened" in src.description
        check_all_memory(src, mem, segs, USER_PFNS)
    # Our rearranged file is byte-identical to makedumpfile -R's.
    ours = tmp_path / "ours.kdump"
    rearrange_flattened(flat, ours)
    theirs = tmp_path / "theirs.kdump"
    with open(flat, "rb") as f:
        r = subprocess.run(["makedumpfile", "-R", str(theirs)], stdin=f, capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert ours.read_bytes() == theirs.read_bytes()
    with pytest.raises(McktoolsError, match="already exists"):
        rearrange_flattened(flat, ours)


def test_lzo_needs_its_package_or_reads(vmcore, tmp_path):
    d, path, mem, segs = vmcore
    out = tmp_path / "lzo.kdump"
    makedumpfile("-l", "-d", "0", path, out)
    try:
        import lzo  # noqa: F401
        have = True
    except ImportError:
        have = False
    with open_source(out) as src:
        if have:
            check_all_memory(src, mem, segs)
        else:
            with pytest.raises(FormatError, match="python-lzo"):
                src.read(0x700 * PAGE, 8)


def test_elf_output_read_as_vmcore(vmcore, tmp_path):
    d, path, mem, segs = vmcore
    out = tmp_path / "e.vmcore"
    makedumpfile("-E", "-d", "0", path, out)
    with open_source(out) as src:
        check_all_memory(src, mem, segs)


def test_filtered_elf_output(vmcore, tmp_path):
    """makedumpfile -E cuts runs of >= 256 excluded pages out with p_filesz < p_memsz
    (shorter runs, like PFN 0x150, stay in the file as they were): the cut part must
    raise ExcludedAddress."""
    from .test_formats_elfcore import readelf_segments
    d, path, mem, segs = vmcore
    out = tmp_path / "e8.vmcore"
    makedumpfile("-E", "-d", "8", path, out)
    filtered = [s for s in readelf_segments(out) if s[0] == "LOAD" and s[4] < s[5]]
    assert len(filtered) == 1
    _, _, _, paddr, filesz, memsz = filtered[0]
    assert (paddr + filesz, paddr + memsz) == (0x520 * PAGE, 0x640 * PAGE)
    with open_source(out) as src:
        check_all_memory(src, mem, segs, set(range(0x520, 0x640)))
        with pytest.raises(ExcludedAddress) as ei:
            src.read(0x520 * PAGE - 4, 8)
        assert ei.value.address == 0x520 * PAGE


def test_truncated_and_fuzzed_kdump(vmcore, tmp_path):
    d, path, mem, segs = vmcore
    out = d / "fz.kdump"
    makedumpfile("-c", "-d", "0", path, out)
    data = out.read_bytes()
    with KdumpFile.open(out) as k:
        bs, desc_off, n = k.block_size, k._desc_off, k.dumped_pages
    p = tmp_path / "bad"
    for cut in (0, 8, 100, 463, bs, bs + 50, 2 * bs, desc_off - 1, desc_off + 24 * n - 1, len(data) - 1):
        p.write_bytes(data[:cut])
        with pytest.raises(FormatError):
            with open_source(p) as src:
                for start, end in segs:
                    src.read(start, end - start)
    rng = random.Random(8)
    hot = [(0, 464), (bs, bs + 104), (desc_off, desc_off + 24 * 64)]
    errors = 0
    for _ in range(300):
        buf = bytearray(data[:desc_off + 24 * n + 0x20000])   # header, bitmaps, descriptors, some pages
        for _ in range(rng.randint(1, 3)):
            lo, hi = hot[rng.randrange(len(hot))]
            buf[rng.randrange(lo, hi)] = rng.randrange(256)
        p.write_bytes(bytes(buf))
        try:
            with open_source(p) as src:
                src.read(0, 0x4000)
                src.read(0x100000, 0x4000)
        except McktoolsError:
            errors += 1
    assert errors > 30


def test_truncated_flattened(vmcore, tmp_path):
    d, path, mem, segs = vmcore
    flat = tmp_path / "flat"
    with open(flat, "wb") as f:
        makedumpfile("-F", "-c", "-d", "0", path, stdout=f)
    data = flat.read_bytes()
    p = tmp_path / "cut"
    for cut in (20, 4095, 4096, 4100, 4096 + 16 + 10, len(data) // 2, len(data) - 1):
        p.write_bytes(data[:cut])
        with pytest.raises(FormatError):
            open_source(p).close()
        with pytest.raises(FormatError):
            rearrange_flattened(p, tmp_path / "never")
        assert not (tmp_path / "never").exists()
