"""`mcdump filter --level 24` against the kernel's own level-24 verdict.

The harness's level24.mcdump is what the reference kernel itself excluded
during the freeze (user-mapped and free pages); filtering the level-0 dump
of the same instant must give exactly that.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from mcktools.formats.mcdump import McDump
from tests.test_mcdump_common import leftovers, one_line_error, run_cli, same_memory


@pytest.mark.parametrize("scenario", ["multi", "panic"])
def test_filter_level0_gives_the_kernels_level24(fixture_dir, tmp_path, scenario):
    d = fixture_dir(scenario)
    out = tmp_path / "f24.mcdump"
    r = run_cli("filter", d / "level0.mcdump", "-k", d / "mckernel.img", "--level", "24", "-o", out)
    assert r.returncode == 0, r.stderr
    same_memory(out, d / "level24.mcdump")
    with McDump.open(out) as a, McDump.open(d / "level0.mcdump") as b:
        assert (a.date, a.hostname, a.user) == (b.date, b.hostname, b.user)


def test_filter_keeps_extra_sections(fixture_dir, tmp_path):
    d = fixture_dir("multi")
    full = tmp_path / "full.mcdump"
    assert run_cli("convert", d / "vmcore.elf", "-k", d / "mckernel.img", "--level", "0", "-o", full).returncode == 0
    out = tmp_path / "f.mcdump"
    r = run_cli("filter", full, "-k", d / "mckernel.img", "--level", "24", "-o", out)
    assert r.returncode == 0, r.stderr
    same_memory(out, d / "level24.mcdump")
    with McDump.open(out) as a, McDump.open(full) as b:
        assert a.section("kmsg") == b.section("kmsg") is not None


def test_filter_refuses_without_dwarf(fixture_dir, tmp_path):
    if shutil.which("objcopy") is None:
        pytest.skip("needs objcopy")
    d = fixture_dir("multi")
    stripped = tmp_path / "stripped.img"
    subprocess.run(["objcopy", "--strip-debug", str(d / "mckernel.img"), str(stripped)], check=True)
    out = tmp_path / "f.mcdump"
    msg = one_line_error(run_cli("filter", d / "level0.mcdump", "-k", stripped, "--level", "24", "-o", out))
    assert "debug" in msg.lower() or "DWARF" in msg
    assert not out.exists() and not leftovers(tmp_path)


def test_filter_only_level_24(fixture_dir, tmp_path):
    d = fixture_dir("multi")
    r = run_cli("filter", d / "level0.mcdump", "-k", d / "mckernel.img", "--level", "8", "-o", tmp_path / "x")
    assert "8" in one_line_error(r)
