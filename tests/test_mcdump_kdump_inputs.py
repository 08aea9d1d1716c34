"""kdump-compressed and flattened vmcores from real third-party writers.

Debian's makedumpfile only takes Linux vmcores, so the fixture's QEMU vmcore
is given the few Linux structures makedumpfile insists on, written into two
unused pages of "Linux memory" (`tests/kdump_support.linuxify_core`); McKernel's
chunks, boot_param and bitmap stay untouched.  Every converted file must hold the
same bytes as the conversion of the ELF original, i.e. as the harness's dumps.
(kdumpling 0.4.0 was tried as a second writer: it stores the size of one
bitmap in `bitmap_blocks`, where makedumpfile and crash store both, so its
files are rejected by every reader, ours included.)

The last test plays IHK's panic-notifier workaround: McKernel's pages marked
as anonymous user pages in mem_map, so `makedumpfile -d 8` drops them, and
convert must say so in one line.
"""

from __future__ import annotations

import shutil
import struct
import subprocess

import pytest

from mcktools.formats.elfcore import ElfCore
from tests.test_mcdump_common import chunk_table, leftovers, one_line_error, run_cli, same_memory

SCRATCH_PA = 0x400000          # unused Linux memory below 16 MiB in the fixture guest
MEM_MAP_PA = 0x200000          # FLATMEM struct page array (64 bytes per PFN), also unused memory
PAGE = 4096
DIRECT = 0xFFFF888000000000

needs_makedumpfile = pytest.mark.skipif(shutil.which("makedumpfile") is None, reason="needs makedumpfile")


def _linuxify():
    from tests.kdump_support import linuxify_core
    return linuxify_core


@pytest.fixture(scope="module")
def linux_vmcore(fixture_dir, tmp_path_factory):
    multi = fixture_dir("multi")
    d = tmp_path_factory.mktemp("mcdump_kdump")
    path = d / "vmcore"
    low = d / "low.core"
    _low_memory_core(multi / "vmcore.elf", low)
    _linuxify()(low, path, SCRATCH_PA, mem_map_pa=MEM_MAP_PA)
    # The converted ELF original: what every other encoding must reproduce.
    ref = d / "ref.mcdump"
    r = run_cli("convert", path, "-k", multi / "mckernel.img", "-o", ref)
    assert r.returncode == 0, r.stderr
    same_memory(ref, multi / "level24.mcdump")
    return multi, d, path, ref


def _low_memory_core(src, dst, limit: int = 1 << 30) -> None:
    """A copy of the QEMU core with only the RAM below `limit` (QEMU also dumps
    the BIOS ROM at 0xfffc0000, whose struct pages the one 2 MiB mem_map
    mapping could not cover)."""
    with ElfCore.open(src) as core:
        segs = [s for s in core.segments if s.filesz and s.paddr + s.memsz <= limit]
        notes = b"".join(_note(n.name, n.type, n.desc) for n in core.notes)
        nph = 1 + len(segs)
        note_off = 64 + 56 * nph
        pos = data_off = (note_off + len(notes) + PAGE - 1) & ~(PAGE - 1)
        ph = struct.pack("<IIQQQQQQ", 4, 0, note_off, 0, 0, len(notes), len(notes), 0)
        for s in segs:
            ph += struct.pack("<IIQQQQQQ", 1, 7, pos, s.vaddr, s.paddr, s.filesz, s.filesz, 0)
            pos += s.filesz
        eh = b"\x7fELF\x02\x01\x01" + bytes(9) + struct.pack("<HHIQQQIHHHHHH", 4, 62, 1, 0, 64, 0, 0, 64, 56,
                                                             nph, 0, 0, 0)
        with open(dst, "wb") as f:
            f.write(eh + ph + notes + bytes(data_off - note_off - len(notes)))
            for s in segs:
                for off in range(0, s.filesz, 1 << 20):
                    f.write(core.read_segment(s, off, min(1 << 20, s.filesz - off)))


def _note(name: str, ntype: int, desc: bytes) -> bytes:
    nb = name.encode() + b"\0"
    return struct.pack("<III", len(nb), len(desc), ntype) + nb + bytes(-len(nb) % 4) + desc + bytes(-len(desc) % 4)


def makedumpfile(*args, stdout=None):
    r = subprocess.run(["makedumpfile", *map(str, args)], stdout=stdout or subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=300)
    if r.returncode != 0:
        pytest.fail(f"makedumpfile {' '.join(map(str, args))} failed: {r.stderr.decode()[-500:]}")


@needs_makedumpfile
def test_makedumpfile_kdump_compressed(linux_vmcore):
    multi, d, path, ref = linux_vmcore
    kd = d / "vmcore.kdump"
    makedumpfile("-c", "-d", "0", path, kd)
    r = run_cli("info", kd)
    assert r.returncode == 0 and "kdump-compressed" in r.stdout
    out = d / "from-kdump.mcdump"
    r = run_cli("convert", kd, "-k", multi / "mckernel.img", "-o", out)
    assert r.returncode == 0, r.stderr
    same_memory(out, ref)


@needs_makedumpfile
def test_makedumpfile_flattened(linux_vmcore):
    multi, d, path, ref = linux_vmcore
    flat = d / "vmcore.flat"
    with open(flat, "wb") as f:
        makedumpfile("-F", "-c", "-d", "1", path, stdout=f)
    r = run_cli("info", flat)
    assert r.returncode == 0 and "flattened" in r.stdout
    out = d / "from-flat.mcdump"
    r = run_cli(flat, out, prog="vmcore2mckdump")          # no image: boot_param scan
    assert r.returncode == 0, r.stderr
    same_memory(out, ref)


@needs_makedumpfile
@pytest.mark.parametrize("fmt", ["kdump", "elf"])
def test_panic_notifier_workaround_named_in_one_line(linux_vmcore, fmt):
    """McKernel's pages marked PAGE_MAPPING_ANON (as IHK's panic notifier does);
    makedumpfile -d 8 drops them; convert explains why and how to capture."""
    multi, d, path, ref = linux_vmcore
    marked = d / f"marked-{fmt}.vmcore"
    shutil.copyfile(path, marked)
    with ElfCore.open(marked) as core:
        seg = next(s for s in core.segments if s.paddr <= MEM_MAP_PA < s.paddr + s.filesz)
    with open(marked, "r+b") as f:
        for addr, size in chunk_table(multi / "level0.mcdump"):
            for pfn in range(addr // PAGE, (addr + size) // PAGE):
                f.seek(seg.offset + MEM_MAP_PA + 64 * pfn + 24 - seg.paddr)
                f.write(struct.pack("<Q", DIRECT + 0x1000 | 1))
    out_dump = d / f"filtered.{fmt}"
    if fmt == "kdump":
        makedumpfile("-c", "-d", "8", marked, out_dump)
    else:
        makedumpfile("-E", "-d", "8", marked, out_dump)
    out = d / f"never-{fmt}.mcdump"
    msg = one_line_error(run_cli("convert", out_dump, "-k", multi / "mckernel.img", "-o", out))
    assert "does not hold McKernel" in msg or "filtered out" in msg
    assert "makedumpfile -d 8" in msg and "-d 1" in msg
    assert not out.exists() and not leftovers(d)


@needs_makedumpfile
@pytest.mark.parametrize("flag,module,package", [("-l", "lzo", "python-lzo"), ("-p", "snappy", "python-snappy"),
                                                 ("-z", "zstandard", "zstandard")])
def test_other_compressions_convert_or_name_the_package(linux_vmcore, flag, module, package):
    import importlib.util
    multi, d, path, ref = linux_vmcore
    kd = d / f"vmcore{flag}.kdump"
    r = subprocess.run(["makedumpfile", flag, "-d", "1", str(path), str(kd)], capture_output=True, timeout=300)
    if r.returncode != 0:
        pytest.skip(f"this makedumpfile cannot write {flag}: {r.stderr.decode()[-200:]}")
    out = d / f"from{flag}.mcdump"
    r = run_cli("convert", kd, "-k", multi / "mckernel.img", "-o", out)
    if r.returncode != 0:
        # only acceptable reason: the decompressor's package is missing, and it is named
        assert importlib.util.find_spec(module) is None
        assert package in one_line_error(r)
        assert not out.exists() and not leftovers(d)
    else:          # the package is there, or makedumpfile stored the pages another way
        same_memory(out, ref)
