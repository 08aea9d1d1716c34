"""`mcinspect bt` and `mcinspect shell` on the fixture dumps: text and JSON against the
manifest and `nm`, and one-line errors for bad arguments."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.test_mcinspect_fixtures import inproc
from tests.test_model_fixtures import _fixture
from tests.test_unwind_fixtures import _nm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module", params=["multi", "panic"])
def fx(request, fixture_dir):
    folder = _fixture(fixture_dir, request.param)
    return folder, json.loads((folder / "manifest.json").read_text())


def _bt(folder, *args, dump="level0.mcdump"):
    return inproc("-k", str(folder / "mckernel.img"), "-d", str(folder / dump), "bt", *args)


def test_text_frames_of_sleeping_threads(fx):
    folder, man = fx
    nm = _nm(folder / "mckernel.img")
    sleepers = [t for t in man["threads"] if t["kernel_rip"] is not None]
    code, out, err = _bt(folder, *[f"{t['addr']:x}" for t in sleepers])
    assert code == 0, err
    blocks = out.split("\n\n")
    assert len(blocks) == len(sleepers)
    for t, block in zip(sleepers, blocks):
        lines = block.splitlines()
        assert lines[0].startswith(f"PID: {t['pid']}  TID: {t['tid']}  CPU: {t['cpu']}  THREAD: {t['addr']:x}")
        assert lines[1].startswith(f" #0  [{t['kernel_rsp']:016x}] ihk_mc_switch_context+0x0 at "
                                   f"{nm['ihk_mc_switch_context']:016x}")
        off = t["kernel_rip"] - nm["schedule"]
        assert f"] schedule+{off:#x} at {t['kernel_rip']:016x}" in lines[2]
        if not t["idle"]:
            user = [ln for ln in lines if ln.strip().startswith("RIP:")]
            assert user and user[0].split()[1] == f"{t['user_rip']:016x}"
            assert user[0].split()[3] == f"{t['user_rsp']:016x}"


def test_cpu_and_default_and_all(fx):
    folder, man = fx
    code, out, err = _bt(folder, "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["thread"] for r in rows] == [c["current"] for c in man["cpus"]]
    code, out, err = _bt(folder, "--all", "--json", dump="level24.mcdump")
    assert code == 0, err
    rows = json.loads(out)
    assert sorted(r["thread"] for r in rows) == sorted(t["addr"] for t in man["threads"])
    assert all(r["corrupt"] is None for r in rows)
    panic = man.get("panic")
    if panic:
        code, out, err = _bt(folder, "--cpu", str(panic["cpu"]))
        assert code == 0, err
        first = out.splitlines()[1]
        assert f"] {panic['function']}+" in first and f" at {panic['rip']:016x}" in first


@pytest.mark.parametrize("args, message", [
    (["99999"], "no thread 99999"),
    (["--cpu", "64"], "no CPU 64"),
    (["--all", "1000"], "--all takes no"),
    (["zz-top"], "neither a tid nor a thread address"),
])
def test_bad_arguments_give_one_line(fx, args, message):
    folder, _ = fx
    code, out, err = _bt(folder, *args)
    assert code != 0 and out == ""
    assert err.count("\n") == 1 and err.startswith("mcinspect: error: ") and message in err, err


def test_shell_command(fx):
    folder, man = fx
    pytest.importorskip("drgn")
    code, out, err = inproc("-k", str(folder / "mckernel.img"), "-d", str(folder / "level0.mcdump"), "shell", "-c",
                            "print(len(threads())); print(prog['num_processors'].value_()); "
                            "print(hex(sym('clv')))")
    assert code == 0, err
    n, ncpus, clv = out.split()
    assert int(n) == len(man["threads"]) and int(ncpus) == man["ncpus"]
    assert int(clv, 16) == man["symbols"]["clv"]
    sleeper = next(t for t in man["threads"] if t["kernel_rip"] and not t["idle"])
    code, out, err = inproc("-k", str(folder / "mckernel.img"), "-d", str(folder / "level0.mcdump"), "shell", "-c",
                            f"ours = bt({sleeper['tid']}, quiet=True); theirs = stack_trace({sleeper['tid']}); "
                            "print([f.function for f in ours.frames][:3]); print([f.name for f in theirs][:3])")
    assert code == 0, err
    ours, theirs = out.splitlines()
    assert ours == theirs


def test_shell_errors_and_console(fx):
    folder, man = fx
    code, out, err = inproc("-k", str(folder / "mckernel.img"), "-d", str(folder / "level0.mcdump"),
                            "shell", "--no-drgn", "-c", "undefined_name")
    assert code == 1 and err.strip() == "mcinspect: error: shell -c: NameError: name 'undefined_name' is not defined"
    env = dict(os.environ, PYTHONPATH=ROOT)
    p = subprocess.run([sys.executable, "-m", "mcinspect", "-k", str(folder / "mckernel.img"), "-d",
                        str(folder / "level0.mcdump"), "shell", "--no-drgn"],
                       input="print('ncpu', len(cpus()))\n", capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    assert f"ncpu {man['ncpus']}" in p.stdout
