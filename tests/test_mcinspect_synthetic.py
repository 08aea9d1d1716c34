"""mcinspect / mcps end to end (subprocesses) on the synthetic kernel dump.

Expected values: the scenario literals of tests/model_synth and `nm`.
Bad input must give one `mcinspect: error:` line and a non-zero exit quickly.
"""

from __future__ import annotations

import json
import os
import resource
import struct
import subprocess
import sys
import time

import pytest

from tests.model_synth import (
    CPUS, KBASE, KMSG_TEXT, LPOB, MAP_KERNEL_START, PROCESSES, THREADS, VM_RANGES, build,
    have_toolchain, vr,
)

pytestmark = pytest.mark.skipif(not have_toolchain(), reason="gcc/ld not installed")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return build(str(tmp_path_factory.mktemp("synth_cli")))


@pytest.fixture(scope="module")
def nm(synth):
    out = subprocess.run(["nm", synth.img], capture_output=True, text=True, check=True).stdout
    return {p[2]: int(p[0], 16) for p in (l.split() for l in out.splitlines()) if len(p) == 3}


def run(*args, prog="mcinspect", env=None):
    e = dict(os.environ, PYTHONPATH=ROOT)
    e.pop("MCKERNEL_IMG", None)
    e.pop("MCKERNEL_DUMP", None)
    e.update(env or {})
    code = ("import sys; from mcinspect.cli import main, mcps_main; "
            f"sys.exit({'mcps_main' if prog == 'mcps' else 'main'}(sys.argv[1:]))")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=e, cwd=ROOT)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds of the child: what the tool costs, independent of how loaded the machine is
    p.elapsed = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return p


def inproc(*args, prog="mcinspect"):
    """The CLI in this process (no interpreter start-up), same result shape as `run`."""
    import contextlib
    import io
    from types import SimpleNamespace
    from mcinspect.cli import main, mcps_main
    out, err = io.StringIO(), io.StringIO()
    t0 = time.monotonic()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = (mcps_main if prog == "mcps" else main)(list(args))
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue(),
                           elapsed=time.monotonic() - t0)


def kd(synth, dump=None):
    return ["-k", synth.img, "-d", dump or synth.dump]


def test_ps_json(synth):
    p = inproc(*kd(synth), "ps", "--json")
    assert p.returncode == 0, p.stderr
    rows = json.loads(p.stdout)
    users = {r["tid"]: r for r in rows if not r["idle"]}
    assert set(users) == set(THREADS)
    for tid, (pid, cpu, state, _q) in THREADS.items():
        assert (users[tid]["pid"], users[tid]["cpu"], users[tid]["state"]) == (pid, cpu, state)
        assert users[tid]["ppid"] == PROCESSES[pid][0]
    current = {r["cpu"]: r for r in rows if r["current"]}
    for cpu, (_st, cur, _rq) in CPUS.items():
        assert (current[cpu]["tid"] if not current[cpu]["idle"] else None) == cur


def test_ps_text_marks_current(synth):
    p = inproc(*kd(synth), "ps")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["TID", "PID", "PPID", "CPU", "THREAD", "ST", "COMM"]
    marked = [l for l in lines[1:] if l.startswith(">")]
    assert len(marked) == len(CPUS)
    assert any(l.split()[1] == "100" and l.split()[-1] == "app" for l in marked)


def test_upstream_spelling_and_mcps(synth):
    new = run(*kd(synth), "ps")
    old = run("--kernel", synth.img, "--dump", synth.dump, "--ps")
    mcps = run(*kd(synth), prog="mcps")
    env = run("ps", env={"MCKERNEL_IMG": synth.img, "MCKERNEL_DUMP": synth.dump})
    assert new.stdout == old.stdout == mcps.stdout == env.stdout and new.returncode == 0


def test_ps_filters(synth):
    rows = json.loads(inproc(*kd(synth), "ps", "-p", "101", "--json").stdout)
    assert sorted(r["tid"] for r in rows) == sorted(t for t, v in THREADS.items() if v[0] == 101)
    rows = json.loads(inproc(*kd(synth), "ps", "--cpu", "1", "--json").stdout)
    assert {r["cpu"] for r in rows} == {1}


def test_mem(synth):
    p = inproc(*kd(synth), "mem", "100", "--json")
    assert p.returncode == 0, p.stderr
    ranges = json.loads(p.stdout)[0]["ranges"]
    assert [(r["start"], r["end"], r["flag"], r["label"]) for r in ranges] == \
        [(s, e, vr(f), lab) for s, e, f, _p, lab in VM_RANGES]
    text = inproc(*kd(synth), "mem", "102").stdout      # a tid resolves to its process
    assert "[heap]" in text and "[stack]" in text and "[vdso]" in text and "/bin/app" in text


def test_vtop_user_and_kernel(synth, nm):
    p = inproc(*kd(synth), "vtop", "-p", "100", "400010", "6abcde", "402000", "--json")
    assert p.returncode == 0, p.stderr
    tr = json.loads(p.stdout)["translations"]
    assert tr[0]["phys"] == nm["user_page0"] - MAP_KERNEL_START + KBASE + 0x10 and tr[0]["size"] == 4096
    assert tr[1]["phys"] == KBASE + 0xABCDE and tr[1]["size"] == 2 << 20
    assert tr[2]["found"] is False
    # upstream spelling, by thread, and a fixed-map kernel address without -p
    old = inproc("--kernel", synth.img, "--dump", synth.dump, "--vtop", "--pid", "100", "--va", "400010")
    assert old.stdout == inproc(*kd(synth), "vtop", "-t", "102", "400010").stdout
    k = json.loads(inproc(*kd(synth), "vtop", "ffff860000000000", "--json").stdout)["translations"][0]
    assert k["phys"] == nm["kmsg_ring"] - MAP_KERNEL_START + KBASE


def test_vtop_all_collapses(synth):
    p = inproc(*kd(synth), "vtop", "--all")         # kernel: two 2M image pages + two fixed 4K pages
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()[1:]
    assert [l.split()[0] for l in lines] == ["ffff860000000000", "ffff860000001000",
                                            "fffffffffe800000", "fffffffffea00000"]
    u = inproc(*kd(synth), "vtop", "--all", "-p", "100", "--json")
    assert [m["virt"] for m in json.loads(u.stdout)["mappings"]] == [0x400000, 0x401000, 0x600000]


def test_kmsg(synth):
    p = inproc(*kd(synth), "kmsg")
    assert p.returncode == 0 and p.stdout == KMSG_TEXT


def test_info(synth):
    p = inproc(*kd(synth), "info", "--json")
    info = json.loads(p.stdout)
    assert info["kernel_base"] == KBASE and info["cpus"] == len(CPUS)
    bid = subprocess.run(["readelf", "-n", synth.img], capture_output=True, text=True).stdout
    assert info["image"]["build_id"] in bid


def _patched_dump(synth, tmp_path, name, patches):
    from mcktools.formats.mcdump import write_mcdump
    data = bytearray(synth.data)
    for off, blob in patches.items():
        data[off:off + len(blob)] = blob
    path = str(tmp_path / name)
    write_mcdump(path, [(KBASE, len(data), lambda o, n: bytes(data[o:o + n]))], kernel_base=KBASE)
    return path


def _one_error_line(p, pattern):
    assert p.returncode != 0
    assert p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mcinspect: error:"), p.stderr
    assert pattern in lines[0]
    assert p.elapsed < 15       # hang/loop guard only; speed is measured by bench/mcps.py


def test_bad_input(synth, tmp_path, nm):
    other = build(str(tmp_path / "other"), variant="a different build")
    _one_error_line(run("-k", other.img, "-d", synth.dump, "ps"), "does not match")
    assert run("-k", other.img, "-d", synth.dump, "--force", "ps").returncode == 0
    _one_error_line(run(*kd(synth), "mem", "999"), "no process with pid 999")
    _one_error_line(inproc(*kd(synth), "vtop", "-p", "999", "400000"), "pid 999")
    _one_error_line(inproc(*kd(synth), "ps", "-p", "999"), "pid 999")
    _one_error_line(inproc(*kd(synth), "vtop", "zz"), "not a hexadecimal address")
    _one_error_line(inproc(*kd(synth), "vtop", "400000"), "user address")
    idle = f"{nm['clv_array'] - MAP_KERNEL_START + KBASE + LPOB + 64:x}"      # clv[0].idle (after free_list)
    _one_error_line(inproc(*kd(synth), "mem", idle), "no process")
    _one_error_line(inproc(*kd(synth), "vtop", "-t", idle, "400000"), "no process")
    _one_error_line(inproc("-k", synth.img, "-d", str(tmp_path / "missing"), "ps"), "missing")
    _one_error_line(run("ps"), "--kernel")
    from mcktools.formats.mcdump import write_mcdump
    inter = str(tmp_path / "interactive.mcdump")
    write_mcdump(inter, [(KBASE, 4096, lambda o, n: bytes(n))], kernel_base=KBASE, interactive=True)
    _one_error_line(inproc("-k", synth.img, "-d", inter, "ps"), "interactive")
    notdump = tmp_path / "notadump"
    notdump.write_bytes(b"hello world" * 10)
    _one_error_line(inproc("-k", synth.img, "-d", str(notdump), "ps"), "notadump")
    _one_error_line(inproc("-k", str(notdump), "-d", synth.dump, "ps"), "notadump")


def test_corrupt_structures(synth, tmp_path, nm):
    from mcktools.debuginfo import Image
    img = Image.open(synth.img)
    sl = img.offsetof("struct thread", "sched_list")
    th102 = nm["th102"] - MAP_KERNEL_START
    cyc = _patched_dump(synth, tmp_path, "cyc.mcdump",
                        {th102 + sl: struct.pack("<Q", th102 + sl + KBASE + LPOB)})
    _one_error_line(run(*kd(synth, cyc), "ps"), "cyclic")
    right = img.offsetof("struct rb_node", "rb_right")
    vr3, vr1 = nm["vr3"] - MAP_KERNEL_START, nm["vr1"] - MAP_KERNEL_START
    rb = _patched_dump(synth, tmp_path, "rb.mcdump", {vr3 + right: struct.pack("<Q", vr1 + KBASE + LPOB)})
    _one_error_line(inproc(*kd(synth, rb), "mem", "100"), "vm_range tree")
    wild = _patched_dump(synth, tmp_path, "wild.mcdump",
                         {nm["th101"] - MAP_KERNEL_START + img.offsetof("struct thread", "proc"):
                          struct.pack("<Q", LPOB + 0x7000000)})
    _one_error_line(inproc(*kd(synth, wild), "ps"), "not in the dump")


def test_kmsg_missing_is_one_line(synth, tmp_path, nm):
    """An mcdump without the ring's pages says why instead of failing."""
    from mcktools.formats.mcdump import write_mcdump
    data = synth.data
    ring = nm["kmsg_ring"] - MAP_KERNEL_START
    path = str(tmp_path / "noring.mcdump")
    write_mcdump(path, [(KBASE, ring, lambda o, n: data[o:o + n]),
                        (KBASE + ring + 0x2000, len(data) - ring - 0x2000,
                         lambda o, n: data[ring + 0x2000 + o: ring + 0x2000 + o + n])], kernel_base=KBASE)
    p = inproc(*kd(synth, path), "kmsg")
    assert p.returncode == 0 and p.stdout.startswith("kmsg not available: the kmsg ring is Linux memory")
    assert len(p.stdout.splitlines()) == 1


@pytest.mark.parametrize("form", ["struct", "text"])
def test_kmsg_from_extra_section(synth, tmp_path, nm, form):
    """An mcdump without the ring's pages but with a `kmsg` section (the whole
    ihk_kmsg_buf, or plain text) prints the ring in order."""
    from mcktools.formats.mcdump import write_mcdump
    from tests.model_synth import KMSG_LEN
    data = synth.data
    ring = nm["kmsg_ring"] - MAP_KERNEL_START
    blob = data[ring:ring + 4096 + KMSG_LEN] if form == "struct" else KMSG_TEXT.encode()
    path = str(tmp_path / f"sec-{form}.mcdump")
    write_mcdump(path, [(KBASE, ring, lambda o, n: data[o:o + n]),
                        (KBASE + ring + 0x2000, len(data) - ring - 0x2000,
                         lambda o, n: data[ring + 0x2000 + o: ring + 0x2000 + o + n])],
                 kernel_base=KBASE, extra_sections=[("kmsg", blob)])
    p = inproc(*kd(synth, path), "kmsg")
    assert p.returncode == 0 and p.stdout == KMSG_TEXT
