"""mcinspect --json on the reference kernel's fixtures equals manifest.json, and
bad input (patched copies of a fixture dump or image) gives one error line."""

from __future__ import annotations

import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHYS_MASK = ((1 << 52) - 1) & ~0xFFF


@pytest.fixture(scope="module")
def multi(fixture_dir):
    from tests.test_model_fixtures import _fixture
    folder = _fixture(fixture_dir, "multi")
    return folder, json.loads((folder / "manifest.json").read_text())


def run(*args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("MCKERNEL_IMG", None)
    env.pop("MCKERNEL_DUMP", None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run([sys.executable, "-c", "import sys; from mcinspect.cli import main; "
                        "sys.exit(main(sys.argv[1:]))", *args], capture_output=True, text=True, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds of the child: what the tool costs, independent of how loaded the machine is
    p.elapsed = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return p


def inproc(*args):
    """mcinspect run in this process (no interpreter start-up): (exit code, stdout, stderr)."""
    import contextlib
    import io
    from mcinspect.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def inproc_ns(*args):
    from types import SimpleNamespace
    t0 = time.monotonic()
    code, out, err = inproc(*args)
    return SimpleNamespace(returncode=code, stdout=out, stderr=err, elapsed=time.monotonic() - t0)


def jrun(folder, dump, *args):
    code, out, err = inproc("-k", str(folder / "mckernel.img"), "-d", str(folder / dump), *args, "--json")
    assert code == 0, err
    return json.loads(out)


@pytest.mark.parametrize("dump", ["level0.mcdump", "level24.mcdump", "vmcore.elf"])
def test_ps_matches_manifest(multi, dump):
    folder, m = multi
    rows = {r["addr"]: r for r in jrun(folder, dump, "ps")}
    current = {c["current"] for c in m["cpus"]}
    for w in m["threads"]:
        r = rows[w["addr"]]
        assert (r["tid"], r["pid"], r["cpu"], r["state"], r["comm"], r["idle"]) == \
            (w["tid"], w["pid"], w["cpu"], w["state"], w["comm"], w["idle"])
        assert r["current"] == (w["addr"] in current)


@pytest.mark.parametrize("dump", ["level0.mcdump", "level24.mcdump", "vmcore.elf"])
def test_mem_matches_manifest(multi, dump):
    folder, m = multi
    for pid, want in m["vm_ranges"].items():
        got = jrun(folder, dump, "mem", pid)[0]["ranges"]
        assert [(r["start"], r["end"], r["flag"], r["path"]) for r in got] == \
            [(w["start"], w["end"], w["flag"], w["path"]) for w in want]
        labels = {r["label"] for r in got}
        assert "[stack]" in labels


@pytest.mark.parametrize("dump", ["level0.mcdump", "level24.mcdump", "vmcore.elf"])
def test_vtop_matches_manifest(multi, dump):
    folder, m = multi
    chunks = [(c["addr"], c["addr"] + c["size"]) for c in m["chunks"]]
    for pid, want in m["translations"].items():
        if not want:
            continue
        got = jrun(folder, dump, "vtop", "-p", pid, *[f"{w['va']:x}" for w in want])["translations"]
        for g, w in zip(got, want):
            assert g["found"] and (g["phys"], g["size"], g["pte"] & ~PHYS_MASK) == (w["pa"], w["size"], w["flags"])
            if dump == "level24.mcdump" and any(a <= w["pa"] < b for a, b in chunks):
                assert g["excluded"] is True


def test_kmsg(multi):
    folder, m = multi
    assert jrun(folder, "vmcore.elf", "kmsg")["text"] == m["kmsg"]
    code, out, _ = inproc("-k", str(folder / "mckernel.img"), "-d", str(folder / "level0.mcdump"), "kmsg")
    assert code == 0
    if out.startswith("kmsg not available"):
        assert len(out.splitlines()) == 1 and "Linux memory" in out
    else:
        assert out.rstrip("\n") == m["kmsg"].rstrip("\n")


def _one_line(p, text):
    assert p.returncode != 0 and p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mcinspect: error:") and text in lines[0], p.stderr
    assert p.elapsed < 15       # hang/loop guard only; speed is measured by bench/mcps.py


def _patch_dump(src, dst, patches):
    """Copy an mcdump and overwrite bytes at physical addresses (located via `readelf -S`)."""
    out = subprocess.run(["readelf", "-SW", str(src)], capture_output=True, text=True, check=True).stdout
    secs = []
    for line in out.splitlines():
        parts = line.replace("[ ", "[").split()
        if len(parts) > 5 and parts[1].startswith("physmem"):
            secs.append((int(parts[3], 16), int(parts[4], 16), int(parts[5], 16)))   # addr, off, size
    shutil.copyfile(src, dst)
    with open(dst, "r+b") as f:
        for pa, blob in patches.items():
            addr, off, size = next(s for s in secs if s[0] <= pa < s[0] + s[2])
            f.seek(off + pa - addr)
            f.write(blob)
    return dst


def _drgn_offsetof(img, typename, member):
    drgn = pytest.importorskip("drgn")
    prog = drgn.Program(drgn.Platform(drgn.Architecture.X86_64,
                                      drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN))
    mod = prog.extra_module("kernel", create=True)
    mod.address_ranges = [(0xFFFFFFFFFE800000, 0xFFFFFFFFFFFFF000)]
    mod.try_file(str(img))
    return drgn.offsetof(prog.type(typename), member)


def test_bad_input(multi, tmp_path):
    folder, m = multi
    img, dump = folder / "mckernel.img", folder / "level0.mcdump"
    # an image whose build-id differs: flip the descriptor bytes of a copy
    bid = subprocess.run(["readelf", "-n", str(img)], capture_output=True, text=True).stdout
    bid = bid.split("Build ID:")[1].split()[0]
    data = bytearray(img.read_bytes())
    at = data.find(bytes.fromhex(bid))
    data[at:at + 4] = bytes(b ^ 0xFF for b in data[at:at + 4])
    other = tmp_path / "other.img"
    other.write_bytes(bytes(data))
    _one_line(run("-k", str(other), "-d", str(dump), "ps"), "does not match")
    _one_line(inproc_ns("-k", str(img), "-d", str(dump), "mem", "99999"), "99999")
    lpob = m["linux_page_offset_base"]
    sched = _drgn_offsetof(img, "struct thread", "sched_list")
    proc_off = _drgn_offsetof(img, "struct thread", "proc")
    q = next(c for c in m["cpus"] if c["runq"])
    th = q["runq"][0]
    cyc = _patch_dump(dump, tmp_path / "cyc.mcdump",
                      {th + sched - lpob: struct.pack("<Q", th + sched)})
    _one_line(run("-k", str(img), "-d", str(cyc), "ps"), "cyclic")
    wild = _patch_dump(dump, tmp_path / "wild.mcdump",
                       {th + proc_off - lpob: struct.pack("<Q", lpob + 0x40000000)})
    _one_line(inproc_ns("-k", str(img), "-d", str(wild), "ps"), "cannot be read")
    left = _drgn_offsetof(img, "struct rb_node", "rb_left")
    vr = next(s for s in m["structures"] if s["kind"] == "vm_range")
    rb = _patch_dump(dump, tmp_path / "rb.mcdump", {vr["pa"] + left: struct.pack("<Q", vr["addr"])})
    # structures list ranges process by process in pid order: the first belongs to the first
    # process that has any
    pid = next(p["pid"] for p in m["processes"] if m["vm_ranges"][str(p["pid"])])
    _one_line(inproc_ns("-k", str(img), "-d", str(rb), "mem", str(pid)), "vm_range tree")
