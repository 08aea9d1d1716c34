"""The live target for humans (`mcktools-live` / python3 -m mcktools.live.target):
boots, prints how to reach the guest, serves the tools, and cleans up on Ctrl-C
or SIGTERM (no QEMU process, memory file or run folder left)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.test_live_qemu import _env, _mcps

pytestmark = pytest.mark.qemu


def _start(args, kernel_image):
    return subprocess.Popen([sys.executable, "-c",
                             "import signal; signal.signal(signal.SIGINT, signal.default_int_handler);"
                             "from mcktools.live.target import console_main; console_main()",
                             "--image", str(kernel_image), *args],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_live_target_serves_tools_and_cleans_up(qemu_available, kernel_image, stop):
    p = _start(["--json", "--smp", "2"], kernel_image)
    try:
        line = p.stdout.readline()
        assert line, p.stderr.read()
        desc = json.loads(line)
        folder = desc["folder"]
        assert os.path.isfile(os.path.join(folder, "target.json"))
        out = _mcps("--qemu", folder, "--json")
        rows = json.loads(out)
        assert {r["comm"] for r in rows if not r["idle"]} == {"spinner", "worker", "sleeper"}
        p.send_signal(stop)
        assert p.wait(timeout=30) == 0, p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert not os.path.exists(desc["memfile"])
    assert not os.path.exists(folder)
    assert not _pid_alive(desc["qemu_pid"])
    # and a tool pointed at the old folder says so in one line
    res = subprocess.run([sys.executable, "-c", "from mcinspect.cli import mcps_main; mcps_main()",
                          "--qemu", folder], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, timeout=60)
    assert res.returncode != 0
    assert res.stderr.count("\n") == 1 and "not a live QEMU run folder" in res.stderr


def test_human_instructions(qemu_available, kernel_image):
    p = _start(["--smp", "1"], kernel_image)
    try:
        text = ""
        while "Ctrl-C" not in text:
            line = p.stdout.readline()
            assert line, p.stderr.read()
            text += line
        folder = text.split("Run folder: ")[1].split()[0]
        assert f"mcps --qemu {folder}" in text and f"MCKTOOLS_QEMU_RUN={folder} eclair -i" in text
        assert f"mcdump create --qemu {folder}" in text
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=30) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
