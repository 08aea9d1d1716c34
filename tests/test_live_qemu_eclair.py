"""Real gdb on a running reference kernel through `eclair -i` (one boot).

gdb is driven through its MI interpreter with mi-async on, so `-exec-interrupt`
sends the remote interrupt (0x03) exactly like Ctrl-C at a terminal.  What gdb
shows is compared with the manifest the kernel prints at every freeze, and
the guest's counters tell whether it runs.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time

import pytest

from tests.test_live_qemu import _env, counters, frozen_manifests, wait_running
from tests.test_live_qemu import guest  # noqa: F401  (the module-scoped boot fixture)

pytestmark = pytest.mark.qemu


class MI:
    """A minimal gdb/MI driver: numbered commands, result and async records."""

    def __init__(self, argv, env):
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, env=env)
        self.lines: list = []
        self._buf = b""
        self._token = 100

    def _fill(self, timeout):
        r, _, _ = select.select([self.p.stdout], [], [], timeout)
        if not r:
            return
        data = os.read(self.p.stdout.fileno(), 65536)
        if not data:
            raise AssertionError("gdb exited:\n" + "\n".join(self.lines[-40:]))
        self._buf += data
        *done, self._buf = self._buf.split(b"\n")
        self.lines += [d.decode(errors="replace").rstrip("\r") for d in done]

    def wait(self, pred, timeout=60.0, start=0):
        deadline = time.monotonic() + timeout
        while True:
            for i in range(start, len(self.lines)):
                if pred(self.lines[i]):
                    return i, self.lines[i]
            if time.monotonic() > deadline:
                raise AssertionError("timeout; gdb said:\n" + "\n".join(self.lines[-40:]))
            self._fill(0.2)

    def cmd(self, text, timeout=60.0):
        self._token += 1
        tok = str(self._token)
        mark = len(self.lines)
        self.p.stdin.write(f"{tok}{text}\n".encode())
        self.p.stdin.flush()
        _, line = self.wait(lambda ln: ln.startswith(tok + "^"), timeout, mark)
        assert not line.startswith(tok + "^error"), line
        return line[len(tok):]

    def async_after(self, mark, prefix, timeout=60.0):
        return self.wait(lambda ln: ln.startswith(prefix), timeout, mark)[1]

    def close(self):
        try:
            self.p.stdin.write(b"-gdb-exit\n")
            self.p.stdin.flush()
            self.p.wait(timeout=20)
        except Exception:
            self.p.kill()
            self.p.wait()


def gdb_threads(mi):
    """{tid: core or None} from -thread-info ('Thread N' target ids)."""
    line = mi.cmd("-thread-info")
    out = {}
    for m in re.finditer(r'\{id="\d+",target-id="Thread (\d+)"(.*?)\}(?=,\{id=|\],)', line):
        core = re.search(r'core="(\d+)"', m.group(2))
        out[int(m.group(1))] = int(core.group(1)) if core else None
    return out


def kernel_threads(state):
    """What gdb must show for one freeze: run-queue threads, and the CPU of the current ones."""
    by_addr = {t["addr"]: t for t in state["threads"]}
    current = {c["current"]: c["id"] for c in state["cpus"]}
    return {by_addr[a]["tid"]: current.get(a) for c in state["cpus"] for a in c["runq"]}


def test_gdb_interrupt_continue_interrupt_detach(guest):
    m, run, manifest = guest
    n0 = len(frozen_manifests(m))
    gdb = MI(["gdb", "-nx", "-q", "--interpreter=mi2", run.image], _env(run))
    try:
        mi = gdb
        mi.wait(lambda ln: ln.startswith("(gdb)"))
        mi.cmd("-gdb-set mi-async on")
        mi.cmd(f"-target-select remote | {sys.executable} -m eclair --stdio -i -k {run.image}", timeout=120)
        # attaching froze the kernel once; gdb's thread list is that freeze's
        states = frozen_manifests(m)
        assert len(states) == n0 + 1
        assert gdb_threads(mi) == kernel_threads(states[-1])
        a = counters(m, manifest)
        time.sleep(0.3)
        assert counters(m, manifest) == a, "kernel not frozen while gdb is stopped"

        # bt of a switched-out thread: frame 1 is where the kernel says it resumes
        waiting = [t for t in states[-1]["threads"] if not t["idle"] and t["kernel_rip"] is not None]
        assert waiting  # 5 threads on 2 CPUs
        w = waiting[0]
        ids = re.findall(r'\{id="(\d+)",target-id="Thread (\d+)"', mi.cmd("-thread-info"))
        gid = next(g for g, tid in ids if int(tid) == w["tid"])
        mi.cmd(f"-thread-select {gid}")
        frames = mi.cmd("-stack-list-frames 0 3")
        addrs = [int(x, 16) for x in re.findall(r'addr="(0x[0-9a-f]+)"', frames)]
        assert 'func="ihk_mc_switch_context"' in frames
        assert len(addrs) >= 2 and addrs[1] == w["kernel_rip"]

        # continue: the kernel runs again
        mark = len(mi.lines)
        assert mi.cmd("-exec-continue").startswith("^running")
        assert wait_running(m, manifest), "continue did not release the kernel"
        assert len(frozen_manifests(m)) == n0 + 1

        # Ctrl-C: frozen again, and gdb reads the thread list of this freeze
        mi.cmd("-exec-interrupt")
        stop = mi.async_after(mark, "*stopped")
        assert 'signal-name="SIGINT"' in stop
        states = frozen_manifests(m)
        assert len(states) == n0 + 2
        assert gdb_threads(mi) == kernel_threads(states[-1])
        a = counters(m, manifest)
        time.sleep(0.3)
        assert counters(m, manifest) == a

        # detach releases it
        mi.cmd("-target-detach")
        assert wait_running(m, manifest), "detach did not release the kernel"
    finally:
        gdb.close()
    assert wait_running(m, manifest)
    assert m.qmp.execute("query-status")["status"] == "running"


def test_quit_without_detach_releases(guest):
    m, run, manifest = guest
    n0 = len(frozen_manifests(m))
    res = subprocess.run(["gdb", "-nx", "-batch", run.image,
                          "-ex", f"target remote | {sys.executable} -m eclair --stdio -i -k {run.image}",
                          "-ex", "info threads", "-ex", "bt"],
                         env=_env(run), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stdout
    state = frozen_manifests(m)[n0]
    for t in state["threads"]:
        if not t["idle"]:
            assert f"Thread {t['tid']}" in res.stdout
    assert wait_running(m, manifest), "gdb's exit did not release the kernel"


def _rsp(payload: str) -> bytes:
    return f"${payload}#{sum(payload.encode()) % 256:02x}".encode()


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL", "SIGHUP"])
def test_eclair_killed_while_the_kernel_is_stopped(guest, sig):
    """eclair dies while gdb has the kernel stopped: the kernel runs again."""
    import signal as signal_mod
    m, run, manifest = guest
    n0 = len(frozen_manifests(m))
    p = subprocess.Popen([sys.executable, "-m", "eclair", "--stdio", "-i", "-k", run.image],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(run))
    try:
        p.stdin.write(_rsp("?"))   # gdb's "why did you stop": the attach stop
        p.stdin.flush()
        got = b""
        deadline = time.monotonic() + 60
        while b"#" not in got.partition(b"$")[2] and time.monotonic() < deadline:
            r, _, _ = select.select([p.stdout], [], [], 0.5)
            if r:
                got += os.read(p.stdout.fileno(), 4096)
        assert b"$T" in got, (got, p.stderr.read() if p.poll() is not None else "")
        assert len(frozen_manifests(m)) == n0 + 1
        a = counters(m, manifest)
        time.sleep(0.3)
        assert counters(m, manifest) == a
        p.send_signal(getattr(signal_mod, sig))
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == -getattr(signal_mod, sig)
    assert wait_running(m, manifest), f"kernel still frozen after eclair got {sig}"
