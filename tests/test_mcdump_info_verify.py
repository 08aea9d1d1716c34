"""`mcdump info` and `mcdump verify` against readelf, the manifest and generated bad input."""

from __future__ import annotations

import json
import random
import shutil
import subprocess

import pytest

from tests.test_mcdump_common import one_line_error, run_cli


def readelf_physmem(path) -> list[tuple[int, int]]:
    """(addr, size) of every physmemN section, as GNU readelf sees them."""
    r = subprocess.run(["readelf", "-SW", str(path)], capture_output=True, text=True)
    out = []
    for line in r.stdout.splitlines():
        parts = line.replace("[ ", "[").split()
        if len(parts) > 5 and parts[1].startswith("physmem"):
            out.append((int(parts[3], 16), int(parts[5], 16)))
    return sorted(out)


@pytest.mark.parametrize("name", ["level0.mcdump", "level24.mcdump"])
def test_info_json_matches_readelf_and_manifest(fixture_dir, name):
    d = fixture_dir("multi")
    r = run_cli("info", d / name, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    m = json.loads((d / "manifest.json").read_text())
    assert info["kind"] == "mcdump"
    assert sorted((c["addr"], c["size"]) for c in info["chunks"]) == readelf_physmem(d / name)
    assert info["kernel_base"] == m["kernel_base"]
    assert info["date"] and info["hostname"] and info["user"]
    # holes are the gaps between chunks: chunks + holes tile the span exactly
    span = max(c["addr"] + c["size"] for c in info["chunks"]) - min(c["addr"] for c in info["chunks"])
    assert info["total_bytes"] + sum(h["size"] for h in info["holes"]) == span


def test_info_text_and_other_formats(fixture_dir, tmp_path):
    d = fixture_dir("multi")
    r = run_cli("info", d / "level24.mcdump")
    assert r.returncode == 0 and "kernel_base: 0x" in r.stdout and "holes:" in r.stdout
    r = run_cli("info", d / "vmcore.elf", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["kind"] == "elf-vmcore"
    ph = subprocess.run(["readelf", "-lW", str(d / "vmcore.elf")], capture_output=True, text=True).stdout
    assert len(info["chunks"]) == sum(1 for l in ph.splitlines() if l.strip().startswith("LOAD"))


def test_info_interactive_dump(fixture_dir, tmp_path):
    """An interactive dump written by objcopy: the same chunk table, one zero page per physmemN."""
    d = fixture_dir("multi")
    src = d / "level0.mcdump"
    from mcktools.formats.mcdump import McDump
    with McDump.open(src) as dump:
        chunks = [(c.index, c.addr) for c in dump.chunks]
    page = tmp_path / "page"
    page.write_bytes(bytes(4096))
    out = tmp_path / "interactive.mcdump"
    args = ["objcopy", "-I", "elf64-little", "-O", "elf64-little"]
    for i, addr in chunks:
        args += [f"--update-section=physmem{i}={page}"]
    r = subprocess.run(args + [str(src), str(out)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"objcopy cannot rewrite the sections: {r.stderr[-300:]}")
    r = run_cli("info", out, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["kind"] == "mcdump-interactive" and info["stored_bytes"] == 0
    r = run_cli("verify", out, "-k", d / "mckernel.img")
    assert r.returncode == 1 and "interactive" in r.stdout


@pytest.mark.parametrize("name", ["level0.mcdump", "level24.mcdump"])
def test_verify_passes_on_harness_dumps(fixture_dir, name):
    d = fixture_dir("multi")
    r = run_cli("verify", d / name, "-k", d / "mckernel.img", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(r.stdout)
    assert res["ok"]
    m = json.loads((d / "manifest.json").read_text())
    reserved = sum(c["size"] for c in m["chunks"]) // 4096
    dumped = sum(s for _, s in readelf_physmem(d / name)) // 4096
    assert res["excluded_pages"] == reserved - dumped


def test_verify_fails_for_another_build(fixture_dir, tmp_path):
    d = fixture_dir("multi")
    bad = tmp_path / "other.img"
    data = bytearray((d / "mckernel.img").read_bytes())
    i = data.find(b"\x03\x00\x00\x00GNU\0")
    data[i + 8:i + 12] = bytes(b ^ 0xFF for b in data[i + 8:i + 12])
    bad.write_bytes(bytes(data))
    r = run_cli("verify", d / "level24.mcdump", "-k", bad)
    assert r.returncode == 1
    assert "FAIL  build-id" in r.stdout


def test_verify_and_info_on_truncated_and_corrupt_files(fixture_dir, tmp_path):
    d = fixture_dir("multi")
    blob = (d / "level24.mcdump").read_bytes()
    rnd = random.Random(5)
    cases = {"truncated": blob[:len(blob) // 2], "empty": b"", "header-only": blob[:64],
             "text": b"this is not a dump\n" * 10}
    for k in range(8):                               # random damage in the ELF header
        corrupt = bytearray(blob)
        for _ in range(4):
            corrupt[rnd.randrange(0, 64)] ^= 1 << rnd.randrange(8)
        cases[f"bad-header-{k}"] = bytes(corrupt)
    tail = bytearray(blob)
    tail[-200:] = rnd.randbytes(200)                  # the section header table
    cases["bad-sections"] = bytes(tail)
    for name, data in cases.items():
        p = tmp_path / f"{name}.mcdump"
        p.write_bytes(data)
        r = run_cli("info", p)
        if r.returncode == 0:          # a random flip may leave the file valid; then it must still parse
            continue
        one_line_error(r)
        r = run_cli("verify", p, "-k", d / "mckernel.img")
        assert r.returncode != 0 and "Traceback" not in r.stderr, (name, r.stderr)


def test_missing_files_are_one_line(tmp_path, fixture_dir):
    d = fixture_dir("multi")
    one_line_error(run_cli("info", tmp_path / "nope"))
    one_line_error(run_cli("verify", d / "level0.mcdump", "-k", tmp_path / "nope.img"))
    one_line_error(run_cli("info"))                     # usage error: still one line
    one_line_error(run_cli("frobnicate"))
    assert shutil.which("readelf")
