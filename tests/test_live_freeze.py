"""Freeze safety: whatever happens to the process holding a freeze, the target
is released within a couple of seconds and no watchdog process is left.

A child Python process freezes a fake target -- the "file" kind (a marker file)
or the IHK kind driven through the file-backed driver emulator -- and then
exits, raises, or is sent SIGINT, SIGTERM, SIGHUP or SIGKILL by this test.
The test observes the target itself (marker file, emulator state) and /proc.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mcktools.errors import LiveError
from mcktools.formats import ihk_ioctl as abi
from mcktools.live import release as release_kinds
from mcktools.live.fake_ihk import FakeIhk
from mcktools.live.freeze import FileFreezer, frozen
from mcktools.live.ihk import IhkFreezer
from mcktools.memory.sources.ihkdev import IhkDeviceSource

ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent("""
    import os, signal, sys, time
    # start from the conventional dispositions whatever the test runner inherited
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    from mcktools.cli_errors import run_cli
    from mcktools.live.freeze import FileFreezer, frozen
    from mcktools.live.ihk import IhkFreezer
    from mcktools.memory.sources.ihkdev import IhkDeviceSource

    kind, target, mode = sys.argv[1:4]

    def main():
        if kind == "file":
            freezer = FileFreezer(target)
        else:
            src = IhkDeviceSource(0, path=target, ioctl="mcktools.live.fake_ihk:file_ioctl")
            freezer = IhkFreezer(src, level=24)
        with frozen(freezer) as f:
            print("READY", f.watchdog_pid, flush=True)
            if mode == "raise":
                raise RuntimeError("boom inside the frozen block")
            if mode in ("wait", "cli"):
                time.sleep(60)
            if mode == "swallow":
                try:
                    time.sleep(60)
                except BaseException:
                    pass   # careless code: the signal still ends the process after the release
        print("AFTER", flush=True)

    if mode == "cli":
        sys.exit(run_cli("child", main))
    main()
""")


def _gone(pid: int) -> bool:
    """True when the process no longer runs (absent, or a zombie waiting for init)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _wait_until(cond, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def _start_child(tmp_path: Path, kind: str, target: str, mode: str):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen([sys.executable, str(script), kind, target, mode], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    assert ready, "child did not freeze within 30 s"
    line = proc.stdout.readline().decode().split()
    if not line or line[0] != "READY":
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"child failed: {line} {err.decode()}")
    return proc, int(line[1])


def _make_fake_ihk(tmp_path: Path) -> str:
    dev = str(tmp_path / "mcos0")
    FakeIhk(memory=bytearray(0x40000), chunks=[(0x10000, 0x20000)], kernel_base=0x10000,
            level24_pages=[0x11000]).save(dev)
    return dev


CASES = [  # mode, signal to send, expected return code
    ("exit", None, 0),
    ("raise", None, 1),
    ("wait", signal.SIGINT, -signal.SIGINT),      # KeyboardInterrupt left uncaught
    ("cli", signal.SIGINT, 130),                  # run_cli turns it into exit code 130
    ("wait", signal.SIGTERM, -signal.SIGTERM),
    ("wait", signal.SIGHUP, -signal.SIGHUP),
    ("wait", signal.SIGKILL, -signal.SIGKILL),
    ("swallow", signal.SIGTERM, -signal.SIGTERM),
]


def _run_case(tmp_path, kind, target, mode, sig):
    proc, dog = _start_child(tmp_path, kind, target, mode)
    assert dog and not _gone(dog), "watchdog should run while frozen"
    return proc, dog


@pytest.mark.parametrize("mode,sig,rc", CASES, ids=[f"{m}-{s.name if s else 'none'}" for m, s, _ in CASES])
def test_file_target_always_released(tmp_path, mode, sig, rc):
    marker = tmp_path / "marker"
    proc, dog = _run_case(tmp_path, "file", str(marker), mode, sig)
    if sig is not None:
        assert marker.read_text().splitlines() == [f"frozen pid={proc.pid}"]  # frozen, not yet released
        proc.send_signal(sig)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == rc, err.decode()
    assert b"AFTER" not in out or mode == "exit"
    assert _wait_until(lambda: len(marker.read_text().splitlines()) >= 2)
    lines = marker.read_text().splitlines()
    releaser = dog if sig == signal.SIGKILL else proc.pid   # only the watchdog can act after SIGKILL
    assert lines == [f"frozen pid={proc.pid}", f"released pid={releaser}"]
    assert _wait_until(lambda: _gone(dog)), "watchdog still running"
    if mode == "raise":
        assert b"boom inside the frozen block" in err


@pytest.mark.parametrize("mode,sig,rc", CASES, ids=[f"{m}-{s.name if s else 'none'}" for m, s, _ in CASES])
def test_fake_ihk_target_always_resumed(tmp_path, mode, sig, rc):
    dev = _make_fake_ihk(tmp_path)
    proc, dog = _run_case(tmp_path, "ihk", dev, mode, sig)
    if sig is not None:
        state = FakeIhk.load(dev)
        assert state.frozen and state.dump_level == 24 and state.nmi_count == 1
        proc.send_signal(sig)
    proc.communicate(timeout=10)
    assert proc.returncode == rc

    def resumed() -> bool:
        s = FakeIhk.load(dev)
        return not s.frozen and s.cont_count == 1
    assert _wait_until(resumed)
    state = FakeIhk.load(dev)
    assert state.nmi_mode == abi.NmiMode.RESUME and state.nmi_count == 1
    # exactly one resume: the watchdog stood down when the child released itself
    assert [o for o in state.ops if o in ("SET_LEVEL", "NMI", "NMI_CONT")] == ["SET_LEVEL", "NMI", "NMI_CONT"]
    assert _wait_until(lambda: _gone(dog)), "watchdog still running"


def test_in_process_exception_releases_once_and_reaps_watchdog(tmp_path):
    marker = tmp_path / "m"
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    with pytest.raises(ZeroDivisionError):
        with frozen(FileFreezer(marker)) as f:
            dog = f.watchdog_pid
            1 / 0
    assert marker.read_text().splitlines() == [f"frozen pid={os.getpid()}", f"released pid={os.getpid()}"]
    assert _gone(dog)
    # the previous handlers are back
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_failed_freeze_reports_the_freeze_error(tmp_path):
    dev = str(tmp_path / "mcos0")
    FakeIhk(memory=bytearray(0x40000), chunks=[(0x10000, 0x20000)], kernel_base=0x10000, root=False).save(dev)
    src = IhkDeviceSource(0, path=dev, ioctl="mcktools.live.fake_ihk:file_ioctl")
    holder = {}
    with pytest.raises(LiveError, match="needs root"):
        with frozen(IhkFreezer(src, level=0)) as f:  # pragma: no cover - never entered
            holder["entered"] = True
    assert "entered" not in holder
    state = FakeIhk.load(dev)
    assert state.nmi_count == 0 and not state.frozen


def test_bad_release_descriptions_fail_before_freezing(tmp_path):
    with pytest.raises(LiveError, match="unknown release kind"):
        release_kinds.prepare({"kind": "nosuch"})
    with pytest.raises(LiveError, match="lacks"):
        release_kinds.prepare({"kind": "qemu", "memfile": str(tmp_path / "x")})
    with pytest.raises(LiveError):
        release_kinds.prepare({"kind": "qemu", "memfile": str(tmp_path / "absent"), "nmi_mode_pa": 0})
    with pytest.raises(LiveError):
        release_kinds.prepare(["not", "a", "dict"])


def test_qemu_kind_writes_resume_into_guest_memory(tmp_path):
    mem = tmp_path / "guest.mem"
    mem.write_bytes(b"\xff" * 0x2000)
    release_kinds.release_now({"kind": "qemu", "memfile": str(mem), "nmi_mode_pa": 0x1234})
    data = mem.read_bytes()
    assert int.from_bytes(data[0x1234:0x1238], "little", signed=True) == 4
    assert data[:0x1234] == b"\xff" * 0x1234 and data[0x1238:] == b"\xff" * (0x2000 - 0x1238)


def test_qemu_kind_restores_memory_then_continues_the_vm(tmp_path):
    """With "writes" and "qmp": bytes written, nmi_mode = 4, then QMP cont on a fresh connection."""
    import socket
    import threading

    mem = tmp_path / "guest.mem"
    mem.write_bytes(bytes(0x3000))
    sock_path = str(tmp_path / "qmp.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(sock_path)
    server.listen(1)
    seen: list = []

    def serve():
        conn, _ = server.accept()
        seen.append(("memory at connect", mem.read_bytes()[0x2000:0x2004]))
        f = conn.makefile("rwb")
        f.write(b'{"QMP": {"version": {}, "capabilities": []}}\n')
        f.flush()
        for line in f:
            msg = json.loads(line)
            seen.append(msg["execute"])
            f.write(json.dumps({"return": {}, "id": msg.get("id")}).encode() + b"\n")
            f.flush()
        conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    release_kinds.release_now({"kind": "qemu", "memfile": str(mem), "nmi_mode_pa": 0x2000,
                               "writes": [[0x100, "ffee"], [0x1ffe, "0102"]], "qmp": sock_path})
    t.join(5)
    server.close()
    data = mem.read_bytes()
    assert data[0x100:0x102] == b"\xff\xee" and data[0x1FFE:0x2000] == b"\x01\x02"
    assert seen == [("memory at connect", (4).to_bytes(4, "little")), "qmp_capabilities", "cont"]
    with pytest.raises(LiveError, match="beyond"):
        release_kinds.prepare({"kind": "qemu", "memfile": str(mem), "nmi_mode_pa": 0, "writes": [[0x2fff, "0102"]]})


def test_watchdog_rejects_a_bad_description_with_one_line(tmp_path):
    from mcktools.live.watchdog import Watchdog
    with pytest.raises(LiveError, match="unknown release kind 'bogus'"):
        Watchdog.start({"kind": "bogus"})


class _StuckFreezer(FileFreezer):
    """Its own release fails; the watchdog must then release."""

    def release(self) -> None:
        raise LiveError("resume refused")


def test_failed_release_is_reported_and_left_to_the_watchdog(tmp_path):
    marker = tmp_path / "m"
    with pytest.raises(LiveError, match="resume refused"):
        with frozen(_StuckFreezer(marker)) as f:
            dog = f.watchdog_pid
    assert _wait_until(lambda: len(marker.read_text().splitlines()) == 2)
    assert marker.read_text().splitlines() == [f"frozen pid={os.getpid()}", f"released pid={dog}"]
    assert _gone(dog)


def test_without_watchdog_the_block_still_releases(tmp_path):
    marker = tmp_path / "m"
    with frozen(FileFreezer(marker), watchdog=False) as f:
        assert f.watchdog_pid is None
    assert marker.read_text().splitlines() == [f"frozen pid={os.getpid()}", f"released pid={os.getpid()}"]


def test_not_a_freezer_is_refused():
    with pytest.raises(LiveError):
        frozen(object())
