"""`mcdump to-elf` read by real gdb and drgn, checked against the panic manifest."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from tests.test_mcdump_common import leftovers, one_line_error, run_cli

pytestmark = pytest.mark.skipif(shutil.which("gdb") is None, reason="needs gdb")


@pytest.fixture(scope="module")
def panic_core(fixture_dir, tmp_path_factory):
    d = fixture_dir("panic")
    out = tmp_path_factory.mktemp("toelf") / "panic.core"
    r = run_cli("to-elf", d / "level24.mcdump", "-k", d / "mckernel.img", "-o", out, "--threads")
    assert r.returncode == 0, r.stderr
    return d, out, json.loads((d / "manifest.json").read_text())


def gdb(image, core, *cmds) -> str:
    args = ["gdb", "-nx", "-batch", str(image), str(core)]
    for c in cmds:
        args += ["-ex", c]
    r = subprocess.run(args, capture_output=True, text=True, timeout=120)
    return r.stdout + r.stderr


def test_gdb_reads_kernel_memory_and_panic_registers(panic_core):
    d, core, m = panic_core
    out = gdb(d / "mckernel.img", core, "print num_processors", "info registers rip",
              "print/x (unsigned long)clv[1].current")
    assert re.search(rf"\$1 = {m['ncpus']}\b", out), out
    rip = re.search(r"^rip\s+(0x[0-9a-f]+)", out, re.M)
    assert rip and int(rip.group(1), 16) == m["panic"]["rip"], out
    assert m["panic"]["function"] in out
    current = next(c["current"] for c in m["cpus"] if c["id"] == 1)
    assert re.search(rf"\$2 = {current:#x}\b", out), out


def test_gdb_threads_and_heap_pointers(panic_core):
    d, core, m = panic_core
    out = gdb(d / "mckernel.img", core, "info threads", "print clv[0].current->tid")
    cpu0_current = next(c["current"] for c in m["cpus"] if c["id"] == 0)
    tid = next(t["tid"] for t in m["threads"] if t["addr"] == cpu0_current)
    assert re.search(rf"\$1 = {tid}\b", out), out
    # one thread per CPU plus one per thread that is not running on a CPU
    currents = {c["current"] for c in m["cpus"]}
    n = len(re.findall(r"^\*?\s+\d+\s+LWP", out, re.M))
    assert n == m["ncpus"] + len([t for t in m["threads"] if t["addr"] not in currents]), out


def test_drgn_opens_the_core_with_the_image(panic_core):
    drgn = pytest.importorskip("drgn")
    from elftools.elf.elffile import ELFFile
    d, core, m = panic_core
    prog = drgn.Program()
    prog.set_core_dump(str(core))
    mod = prog.extra_module(str(d / "mckernel.img"), create=True)
    if isinstance(mod, tuple):
        mod = mod[0]
    with open(d / "mckernel.img", "rb") as f:
        mod.address_ranges = [(s["p_vaddr"], s["p_vaddr"] + s["p_memsz"])
                              for s in ELFFile(f).iter_segments() if s["p_type"] == "PT_LOAD"]
    mod.try_file(str(d / "mckernel.img"))
    clv = prog["clv"]
    cpu0 = next(c for c in m["cpus"] if c["id"] == 0)
    assert clv.value_() == cpu0["clv"]
    assert clv[0].current.value_() == cpu0["current"]
    assert prog["num_processors"].value_() == m["ncpus"]


def test_readelf_sees_kernel_segments(panic_core):
    d, core, m = panic_core
    r = subprocess.run(["readelf", "-lW", str(core)], capture_output=True, text=True)
    loads = [l.split() for l in r.stdout.splitlines() if l.strip().startswith("LOAD")]
    vaddrs = {int(l[2], 16) for l in loads}
    assert m["symbols"]["_head"] - 0x1000 in vaddrs                 # image map at MAP_KERNEL_START
    assert any(int(l[2], 16) == int(l[3], 16) + m["linux_page_offset_base"] for l in loads)  # direct map
    r = subprocess.run(["readelf", "-nW", str(core)], capture_output=True, text=True)
    assert r.stdout.count("NT_PRSTATUS") >= m["ncpus"]


def test_wrong_image_refused_and_nothing_written(fixture_dir, tmp_path):
    d = fixture_dir("panic")
    bad = tmp_path / "other.img"
    data = bytearray((d / "mckernel.img").read_bytes())
    i = data.find(b"GNU\0", data.find(b"\x03\x00\x00\x00GNU\0"))
    data[i + 4:i + 8] = bytes(4)            # change the build-id: a different build
    bad.write_bytes(bytes(data))
    out = tmp_path / "x.core"
    msg = one_line_error(run_cli("to-elf", d / "level24.mcdump", "-k", bad, "-o", out))
    assert "does not match" in msg or "build-id" in msg
    assert not out.exists() and not leftovers(tmp_path)
