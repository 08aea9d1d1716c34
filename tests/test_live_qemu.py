"""Live tools on the QEMU reference kernel while it runs (one boot for the module).

Ground truth is what the kernel says about itself on its serial console: the
setup manifest (MCKTOOLS-MANIFEST) and, for every freeze, the manifest printed
by its last frozen CPU (MCKTOOLS-FROZEN-MANIFEST).  Counters are read by the
test from the guest memory file at the physical addresses the kernel printed,
through the harness's own mapping, to see whether the guest runs.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mcktools.formats.mcdump import McDump
from mcktools.qemu.dump import write_frozen_dump
from mcktools.qemu.freeze import COMPLETED, Freezer as HarnessFreezer
from mcktools.qemu.imageinfo import image_info

pytestmark = pytest.mark.qemu

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def guest(qemu_available, kernel_image, tmp_path_factory):
    from mcktools.live.target import live_guest
    image = tmp_path_factory.mktemp("img") / "mckernel.img"
    image.write_bytes(Path(kernel_image).read_bytes())  # a rebuild meanwhile cannot change it
    with live_guest(image, scenario="live", ncpus=2) as (m, run, manifest):
        yield m, run, manifest


def _env(run=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    for var in ("MCKERNEL_DUMP", "MCKERNEL_IMG", "MCKTOOLS_QEMU_RUN"):
        env.pop(var, None)
    if run is not None:
        env["MCKTOOLS_QEMU_RUN"] = run.folder
    return env


def _tool(args, run=None, timeout=120):
    return subprocess.run([sys.executable, *args], env=_env(run), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=timeout, cwd=str(REPO))


def _mcps(*args, run=None):
    res = _tool(["-c", "from mcinspect.cli import mcps_main; mcps_main()", *args], run=run)
    assert res.returncode == 0, res.stderr
    return res.stdout


def counters(m, manifest):
    return [struct.unpack("<Q", m.read_phys(c["pa"], 8))[0] for c in manifest["counters"]]


def wait_running(m, manifest, timeout=15.0):
    """True once every counter has moved (the guest runs its threads again)."""
    first = counters(m, manifest)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = counters(m, manifest)
        if all(b != a for a, b in zip(first, now)):
            return True
    return False


def frozen_manifests(m):
    m.serial.poll()
    out = []
    for i, line in enumerate(m.serial.lines):
        if "MCKTOOLS-FROZEN-MANIFEST " in line:
            out.append(json.loads(m.serial.line_from(i, "MCKTOOLS-FROZEN-MANIFEST ")[len("MCKTOOLS-FROZEN-MANIFEST "):]))
    return out


def _key(t):
    return (t["tid"], t["pid"], t["addr"], t["comm"], t["idle"])


def _exact(t):
    return (t["tid"], t["pid"], t["cpu"], t["addr"], t["state"], t["comm"], t["idle"])


def test_live_mcps_equals_manifest_without_freezing(guest):
    m, run, manifest = guest
    n_frozen = len(frozen_manifests(m))
    before = counters(m, manifest)
    rows = json.loads(_mcps("--qemu", run.folder, "--json"))
    time.sleep(0.2)
    after = counters(m, manifest)
    assert sorted(_key(r) for r in rows) == sorted(_key(t) for t in manifest["threads"])
    # threads that spin never leave PS_RUNNING
    spinning = {t["tid"] for t in manifest["threads"] if t["state"] == "PS_RUNNING" and not t["idle"]}
    assert spinning and all(r["state"] == "PS_RUNNING" for r in rows if r["tid"] in spinning)
    assert all(b > a for a, b in zip(before, after)), "a running thread's counter did not advance"
    assert len(frozen_manifests(m)) == n_frozen, "mcps froze the kernel"


def test_counter_advances_between_two_live_reads_through_the_model(guest):
    """Read one thread's counter twice through its process's page tables."""
    from mcktools.live.attach import open_live
    m, run, manifest = guest
    live = open_live(os_index=0, qemu=run.folder)
    try:
        c = manifest["counters"][0]
        proc = next(p for p in manifest["processes"] if p["pid"] == c["pid"])
        space = live.target.address_space(proc["page_table"])
        first = struct.unpack("<Q", space.read(c["va"], 8))[0]
        time.sleep(0.3)
        second = struct.unpack("<Q", space.read(c["va"], 8))[0]
        assert second > first
        # and it is the word the kernel registered (the harness's view of the same PA)
        assert abs(struct.unpack("<Q", m.read_phys(c["pa"], 8))[0] - second) < (1 << 40)
    finally:
        live.close()


def test_env_variable_points_mcps_at_the_guest(guest):
    m, run, manifest = guest
    out = _mcps(run=run)
    assert {int(line.lstrip("> ").split()[0]) for line in out.splitlines()[1:]} == \
        {t["tid"] for t in manifest["threads"]}


@pytest.mark.parametrize("level", [0, 24])
def test_mcdump_create_matches_the_harness_dump(guest, tmp_path, level):
    m, run, manifest = guest
    mine = tmp_path / f"create{level}.mcdump"
    n = len(frozen_manifests(m))
    res = _tool(["-m", "mcdump", "create", "--qemu", run.folder, "-d", str(level), "-o", str(mine)])
    assert res.returncode == 0, res.stderr
    fm = frozen_manifests(m)
    assert len(fm) == n + 1
    my_state = fm[-1]
    assert my_state["dump_level"] == level
    assert wait_running(m, manifest), "the kernel was not resumed after mcdump create"

    # the harness's dump, taken the same way
    fz = HarnessFreezer(m, image_info(run.image))
    frozen = fz.freeze(level)
    try:
        theirs = tmp_path / f"harness{level}.mcdump"
        write_frozen_dump(theirs, m, frozen)
    finally:
        fz.release()
    with McDump.open(mine) as a, McDump.open(theirs) as b:
        assert [(c.addr, c.size) for c in a.chunks] == [(c.addr, c.size) for c in b.chunks]
        assert a.kernel_base == b.kernel_base == manifest["kernel_base"]
        assert "kmsg" in a.extra_section_names
    # kernel state in each dump = what the kernel printed at that freeze
    for path, state in ((mine, my_state), (theirs, frozen.manifest)):
        rows = json.loads(_mcps("-k", run.image, "-d", str(path), "--json"))
        assert sorted(_exact(r) for r in rows) == sorted(_exact(t) for t in state["threads"])
        assert {r["addr"] for r in rows if r["current"]} == {c["current"] for c in state["cpus"]}
    kmsg = _tool(["-m", "mcinspect", "-k", run.image, "-d", str(mine), "kmsg"])
    assert kmsg.returncode == 0, kmsg.stderr
    assert kmsg.stdout.rstrip("\n") == my_state["kmsg"].rstrip("\n")


CHILD = textwrap.dedent("""
    import signal, sys, time
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    from mcktools.live.freeze import frozen
    from mcktools.live.qemu import QemuFreezer
    from mcktools.memory.sources.qemu import QemuRun
    folder, mode = sys.argv[1:3]
    fz = QemuFreezer(QemuRun.load(folder), level=24)
    with frozen(fz):
        print("FROZEN", flush=True)
        if mode == "raise":
            time.sleep(1.5)  # long enough for the test to see the kernel frozen
            raise RuntimeError("injected failure while frozen")
        time.sleep(60)
""")


@pytest.mark.parametrize("mode", ["SIGINT", "SIGTERM", "SIGKILL", "raise"])
def test_killed_tool_leaves_the_kernel_running(guest, mode):
    m, run, manifest = guest
    proc = subprocess.Popen([sys.executable, "-c", CHILD, run.folder, mode], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "FROZEN", proc.stderr.read()
        # really frozen: the bitmap protocol says so, and nothing counts
        fz_state = frozen_manifests(m)[-1]
        assert fz_state["phase"] == "frozen"
        a = counters(m, manifest)
        time.sleep(0.3)
        assert counters(m, manifest) == a
        if mode != "raise":
            proc.send_signal(getattr(signal, mode))
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if mode == "SIGKILL":
        assert proc.returncode == -signal.SIGKILL
    elif mode in ("SIGINT", "SIGTERM"):
        assert proc.returncode in (-getattr(signal, mode), 128 + getattr(signal, mode), 130, 1)
    assert wait_running(m, manifest), f"kernel still frozen after {mode}"
    assert m.qmp.execute("query-status")["status"] == "running"
    # the boot-time bitmap is back, so the next dump is complete
    fz = HarnessFreezer(m, image_info(run.image))
    assert fz.completion_flag() != COMPLETED
    assert all(w == (1 << 64) - 1 for b in fz.boot_blocks for w in b.words[:-1])


def test_freeze_cut_short_is_still_released(guest):
    """A freeze that times out after the NMI went out (the CPUs may still be
    parking) must leave the kernel running, not frozen later."""
    from mcktools.errors import LiveError
    from mcktools.live.freeze import frozen
    from mcktools.live.qemu import QemuFreezer
    m, run, manifest = guest
    fz = QemuFreezer(run)
    hurried = fz._fz.freeze
    fz._fz.freeze = lambda level, timeout: hurried(level, timeout=0.0)
    try:
        with pytest.raises(LiveError, match="timed out|no 'MCKTOOLS-FROZEN-MANIFEST"):
            with frozen(fz):
                pass
    finally:
        fz.close()
    assert wait_running(m, manifest), "a freeze cut short left the kernel frozen"
    assert HarnessFreezer(m, image_info(run.image)).completion_flag() != COMPLETED
    assert m.qmp.execute("query-status")["status"] == "running"
