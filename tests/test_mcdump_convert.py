"""vmcore → mcdump against the harness's own dumps of the same frozen kernel.

The fixture vmcore (QEMU dump-guest-memory) was taken during the level-24
freeze that also produced level24.mcdump (the bitmap McKernel cleared) and
level0.mcdump (the boot-time bitmap: whole chunks).  So: the bitmap as found
must give level24.mcdump exactly, level 0 must give level0.mcdump exactly.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess

import pytest

from mcktools.formats.mcdump import McDump
from tests.test_mcdump_common import chunk_table, leftovers, one_line_error, run_cli, same_memory

#: smp_boot_param.dump_page_set offset of the default build (ABI reference §2.2 / §6.7)
DUMP_PAGE_SET_OFFSET = 6632


@pytest.fixture(scope="module")
def multi(fixture_dir):
    d = fixture_dir("multi")
    if not (d / "vmcore.elf").exists():
        pytest.fail("the multi fixture has no vmcore.elf")
    return d


@pytest.fixture(scope="module")
def manifest(multi):
    return json.loads((multi / "manifest.json").read_text())


def test_auto_level_equals_harness_level24(multi, tmp_path):
    out = tmp_path / "conv.mcdump"
    r = run_cli("convert", multi / "vmcore.elf", "-k", multi / "mckernel.img", "-o", out)
    assert r.returncode == 0, r.stderr
    same_memory(out, multi / "level24.mcdump")


def test_level0_equals_harness_level0(multi, tmp_path):
    out = tmp_path / "conv0.mcdump"
    r = run_cli("convert", multi / "vmcore.elf", "-k", multi / "mckernel.img", "--level", "0", "-o", out)
    assert r.returncode == 0, r.stderr
    same_memory(out, multi / "level0.mcdump")


def test_chunks_keep_ihk_order_and_readelf_agrees(multi, tmp_path, manifest):
    out = tmp_path / "c.mcdump"
    assert run_cli("convert", multi / "vmcore.elf", "-o", out, "-k", multi / "mckernel.img").returncode == 0
    # IHK lists runs block by block (reserved chunk order), rising inside a block.
    with McDump.open(out) as d, McDump.open(multi / "level24.mcdump") as h:
        assert [(c.addr, c.size) for c in d.chunks] == [(c.addr, c.size) for c in h.chunks]
        assert d.kernel_base == manifest["kernel_base"]
    r = subprocess.run(["readelf", "-SW", str(out)], capture_output=True, text=True)
    physmem = [l for l in r.stdout.splitlines() if "physmem" in l]
    assert len(physmem) == len(chunk_table(multi / "level24.mcdump"))


def test_vmcore2mckdump_upstream_argument_order_without_image(multi, tmp_path):
    """No image: McKernel is found by scanning for smp_boot_param; kernel_base from the largest chunk."""
    out = tmp_path / "up.mcdump"
    r = run_cli(multi / "vmcore.elf", out, prog="vmcore2mckdump")
    assert r.returncode == 0, r.stderr
    same_memory(out, multi / "level24.mcdump")


@pytest.mark.parametrize("how", ["boot-param", "dump-page-set"])
def test_addresses_given_by_hand(multi, tmp_path, manifest, how):
    bp = manifest["boot_param_pa"]
    pa = bp if how == "boot-param" else bp + DUMP_PAGE_SET_OFFSET
    out = tmp_path / f"{how}.mcdump"
    r = run_cli("convert", multi / "vmcore.elf", f"--{how}", hex(pa), "-o", out)
    assert r.returncode == 0, r.stderr
    same_memory(out, multi / "level24.mcdump")


def test_wrong_address_by_hand_is_one_line(multi, tmp_path):
    out = tmp_path / "x.mcdump"
    msg = one_line_error(run_cli("convert", multi / "vmcore.elf", "--boot-param", "0x1000", "-o", out))
    assert "smp_boot_param" in msg
    assert not out.exists() and not leftovers(tmp_path)


def test_kmsg_section_reads_like_the_kernel_printed_it(multi, tmp_path, manifest):
    out = tmp_path / "k.mcdump"
    assert run_cli("convert", multi / "vmcore.elf", "-k", multi / "mckernel.img", "-o", out).returncode == 0
    with McDump.open(out) as d:
        assert "kmsg" in d.extra_section_names
    from mcktools.model.kmsg import read_kmsg
    from mcktools.model.target import Target
    with Target.open(str(multi / "mckernel.img"), str(out)) as t:
        res = read_kmsg(t)
    assert res.available and res.text == manifest["kmsg"]


def test_level24_classified_when_bitmap_untouched(multi, tmp_path, manifest):
    """A vmcore whose bitmap McKernel never cleared (no completed freeze): --level 24
    classifies pages itself and still matches the kernel's own level-24 verdict."""
    src = tmp_path / "unfrozen.elf"
    shutil.copyfile(multi / "vmcore.elf", src)
    from mcktools.formats.elfcore import ElfCore
    bp = manifest["boot_param_pa"]
    with ElfCore.open(src) as core:
        seg = next(s for s in core.segments if s.paddr <= bp < s.paddr + s.filesz)
        dps_off = seg.offset + bp - seg.paddr + DUMP_PAGE_SET_OFFSET
        phy_page = struct.unpack("<Q", core.read_segment(seg, bp - seg.paddr + DUMP_PAGE_SET_OFFSET + 16, 8))[0]
        count = struct.unpack("<I", core.read_segment(seg, bp - seg.paddr + DUMP_PAGE_SET_OFFSET + 4, 4))[0]
    full = chunk_table(multi / "level0.mcdump")
    with open(src, "r+b") as f:
        f.seek(dps_off)
        f.write(struct.pack("<I", 0))                     # completion_flag: INCOMPLETE
        pa = phy_page                                     # every bit set again, as at boot
        for _ in range(count):
            f.seek(seg.offset + pa - seg.paddr)
            start, words = struct.unpack("<QQ", f.read(16))
            size = next(s for a, s in full if a == start)
            bits = (1 << (size // 4096)) - 1
            f.write(bits.to_bytes(8 * words, "little"))
            pa += 16 + 8 * words
    auto = tmp_path / "auto.mcdump"
    assert run_cli("convert", src, "-k", multi / "mckernel.img", "-o", auto).returncode == 0
    same_memory(auto, multi / "level0.mcdump")
    l24 = tmp_path / "l24.mcdump"
    r = run_cli("convert", src, "-k", multi / "mckernel.img", "--level", "24", "-o", l24)
    assert r.returncode == 0, r.stderr
    same_memory(l24, multi / "level24.mcdump")
    r = run_cli("convert", src, "--level", "24", "-o", tmp_path / "noimg.mcdump")
    assert "needs the kernel image" in one_line_error(r)


def test_mcdump_input_refused(multi, tmp_path):
    msg = one_line_error(run_cli("convert", multi / "level0.mcdump", "-o", tmp_path / "o"))
    assert "already an mcdump" in msg


def test_drgn_argument_validation(multi, tmp_path):
    out = tmp_path / "d.mcdump"
    msg = one_line_error(run_cli("convert", multi / "vmcore.elf", "--vmlinux", multi / "mckernel.img", "-o", out))
    assert "--ihk-module" in msg
    msg = one_line_error(run_cli("convert", multi / "vmcore.elf", "--vmlinux", tmp_path / "nope",
                                 "--ihk-module", tmp_path / "nope.ko", "-o", out))
    assert "does not exist" in msg
    # A QEMU vmcore is not a Linux kernel core: drgn cannot read module variables from it.
    msg = one_line_error(run_cli("convert", multi / "vmcore.elf", "--vmlinux", multi / "mckernel.img",
                                 "--ihk-module", multi / "mckernel.img", "-o", out))
    assert "drgn" in msg or "Linux" in msg
    msg = one_line_error(run_cli("convert", multi / "vmcore.elf", "--boot-param", "0x800000",
                                 "--dump-page-set", "0x801000", "-o", out))
    assert "not both" in msg
    msg = one_line_error(run_cli("convert", multi / "vmcore.elf", "--boot-param", "zz", "-o", out))
    assert "hexadecimal" in msg
    assert not out.exists()
