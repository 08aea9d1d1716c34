"""Real gdb drives eclair's server (fake provider over a small ELF).

gdb runs in batch mode against `python -m eclair.fakeprovider_stub` through
a pipe or a loopback port.  Expected values come from the ELF file itself
(offsets from readelf), from the random blob assembled into it, and from the
spec the test writes; gdb does the parsing and printing.  Every subprocess
has a timeout and is killed in `finally`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
BLOB_SIZE = 8 << 20

pytestmark = pytest.mark.skipif(subprocess.run(["which", "gdb"], capture_output=True).returncode != 0,
                                reason="gdb not installed")

ASM = """
    .text
    .globl _start
_start:
    nop
    ret
    .data
    .globl blob
blob:
    .incbin "{blob}"
    .section .tail,"a"
    .globl tail
tail:
    .quad 0x1122334455667788, 0x99aabbccddeeff00
"""


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("eclair_gdb")
    blob = d / "blob.bin"
    blob.write_bytes(os.urandom(BLOB_SIZE))
    (d / "t.s").write_text(ASM.format(blob=blob))
    subprocess.run(["as", "-o", str(d / "t.o"), str(d / "t.s")], check=True, timeout=60)
    subprocess.run(["ld", "-o", str(d / "t.elf"), "-Ttext=0x401000", "-Tdata=0x600000",
                    "--section-start=.tail=0x2000000", str(d / "t.o")], check=True, timeout=60)
    return d


def readelf_loads(path):
    out = subprocess.run(["readelf", "-lW", str(path)], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    return [(int(f[2], 16), int(f[1], 16), int(f[4], 16))
            for f in (line.split() for line in out.splitlines()) if f and f[0] == "LOAD"]


def file_bytes(path, vaddr, size):
    for v, off, filesz in readelf_loads(path):
        if v <= vaddr and vaddr + size <= v + filesz:
            with open(path, "rb") as f:
                f.seek(off + vaddr - v)
                return f.read(size)
    raise AssertionError("range not in one segment")


def write_spec(work, name="spec.json", **extra):
    spec = {
        "elf": str(work / "t.elf"),
        "threads": [
            {"id": 12, "name": "init", "extra": "PID 12, running on CPU 3", "core": 3,
             "registers": {"rip": 0x401000, "rsp": 0x7FFFFFF0, "rax": 0x1234, "eflags": 0x246}},
            {"id": 13, "name": "worker", "extra": "PID 12, waiting on CPU 1",
             "registers": {"rip": 0x401001, "rsp": 0x7FFFFF00}},
        ],
        "stop_thread": 12,
        "monitor": {"ps": "PID  TID  CMD\n 12   12  init-from-monitor\n"},
    }
    spec.update(extra)
    path = work / name
    path.write_text(json.dumps(spec))
    return path


def stub_cmd(spec_path):
    return f"{sys.executable} -m eclair.fakeprovider_stub {spec_path} --stdio"


def run_gdb(work, spec_path, *commands, timeout=60):
    argv = ["gdb", "-nx", "-batch", str(work / "t.elf"),
            "-ex", f"target remote | {stub_cmd(spec_path)}"]
    for c in commands:
        argv += ["-ex", c]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=ENV, cwd=str(ROOT))
    return proc.stdout + proc.stderr


def gx_values(out):
    """The 64-bit values gdb printed for x/Ngx lines."""
    vals = []
    for line in out.splitlines():
        m = re.match(r"^0x[0-9a-f]+(?: <[^>]*>)?:\s+(.*)$", line)
        if m:
            vals += [int(v, 16) for v in re.findall(r"0x[0-9a-f]+", m.group(1))]
    return vals


def test_threads_registers_memory_monitor(work):
    spec = write_spec(work)
    out = run_gdb(work, spec, "info threads", "x/8gx 0x600100", "info registers rip rax",
                  "info registers rbx", "monitor ps", "thread 2", "info registers rip")
    assert re.search(r'\* 1\s+Thread 12 "init" \(PID 12, running on CPU 3\)', out), out
    assert re.search(r'  2\s+Thread 13 "worker" \(PID 12, waiting on CPU 1\)', out), out
    want = file_bytes(work / "t.elf", 0x600100, 64)
    got = b"".join(v.to_bytes(8, "little") for v in gx_values(out))
    assert got == want, out
    assert re.search(r"^rip\s+0x401000\s", out, re.M), out
    assert re.search(r"^rax\s+0x1234\s", out, re.M), out
    assert re.search(r"^rbx\s+<unavailable>", out, re.M), out
    assert "init-from-monitor" in out
    assert re.search(r"^rip\s+0x401001\s", out, re.M), out


def test_stop_reply_names_the_stop_thread(work):
    spec = write_spec(work, "spec_stop13.json", stop_thread=13)
    out = run_gdb(work, spec, "info threads")
    assert re.search(r'\* 2\s+Thread 13 "worker"', out), out


def test_read_across_unreadable_boundary_errors(work):
    elf = work / "t.elf"
    end = 0x600000 + BLOB_SIZE
    # Without a memory map gdb asks the stub, which returns the readable
    # prefix and then an error; with one gdb stops at the region edge.
    for mode in ("none", "segments"):
        spec = write_spec(work, f"spec_{mode}.json", memory_map=mode)
        out = run_gdb(work, spec, f"x/4gx {end - 16:#x}")
        assert gx_values(out)[:2] == [int.from_bytes(file_bytes(elf, end - 16 + 8 * i, 8), "little")
                                      for i in range(2)], out
        assert f"Cannot access memory at address {end:#x}" in out, out
        assert len(gx_values(out)) == 2, out  # no invented zeros after the edge
    # a hole inside a listed region is reported, not filled
    spec = write_spec(work, "spec_hole.json", memory_map=[[0x600000, BLOB_SIZE]], holes=[[0x601000, 0x1000]])
    out = run_gdb(work, spec, "x/4gx 0x600ff0")
    assert "Cannot access memory at address 0x601000" in out and len(gx_values(out)) == 2, out


def test_print_string_and_symbol_value(work):
    spec = write_spec(work)
    out = run_gdb(work, spec, "x/2gx &tail", "output (long)tail")
    assert gx_values(out) == [0x1122334455667788, 0x99AABBCCDDEEFF00], out
    assert str(0x1122334455667788) in out


def test_dump_binary_memory_over_tcp_is_fast(work):
    spec = write_spec(work)
    stub = subprocess.Popen([sys.executable, "-m", "eclair.fakeprovider_stub", str(spec), "--listen", "0"],
                            stderr=subprocess.PIPE, text=True, env=ENV, cwd=str(ROOT))
    try:
        line = stub.stderr.readline()
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        assert m, line
        out_file = work / "dumped.bin"
        start = time.monotonic()
        proc = subprocess.run(
            ["gdb", "-nx", "-batch", str(work / "t.elf"), "-ex", f"target remote 127.0.0.1:{m.group(1)}",
             "-ex", f"dump binary memory {out_file} 0x600000 {0x600000 + BLOB_SIZE:#x}"],
            capture_output=True, text=True, timeout=120)
        elapsed = time.monotonic() - start
        assert out_file.read_bytes() == (work / "blob.bin").read_bytes(), proc.stdout + proc.stderr
        # 8 MiB; about 1.5 s on a 2-core test machine.  A byte-at-a-time or
        # 1 KiB-packet stub (upstream eclair) is orders of magnitude slower.
        assert elapsed < 20, elapsed
        stub.wait(timeout=30)  # gdb detached: the stub exits by itself
        assert stub.returncode == 0
    finally:
        if stub.poll() is None:
            stub.kill()
            stub.wait(timeout=30)
        stub.stderr.close()


def test_gdb_session_started_by_eclair_has_prompt_and_no_pagination(work):
    spec = write_spec(work)
    code = (
        "import sys\n"
        "from eclair.cli import serve_with_gdb\n"
        "from eclair.fakeprovider import FakeProvider\n"
        f"sys.exit(serve_with_gdb(FakeProvider.from_json({str(spec)!r}), {str(work / 't.elf')!r}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], input="show pagination\ninfo threads\nquit\n",
                          capture_output=True, text=True, timeout=60, env=ENV, cwd=str(ROOT))
    out = proc.stdout + proc.stderr
    assert "(eclair) " in out, out
    assert "State of pagination is off." in out, out
    assert 'Thread 13 "worker"' in out, out
    assert proc.returncode == 0, out


class Interactive:
    """gdb reading commands from a pipe, so its event loop runs between
    commands (batch mode never processes an asynchronous stop)."""

    def __init__(self, argv):
        import queue
        import threading

        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=ENV, cwd=str(ROOT), bufsize=1)
        self.lines: "queue.Queue[str]" = queue.Queue()
        self.text = ""
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in iter(self.proc.stdout.readline, ""):
            self.lines.put(line)

    def send(self, command):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def wait_for(self, pattern, timeout=30):
        import queue

        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.text):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {pattern!r} in gdb output:\n{self.text}")
            try:
                self.text += self.lines.get(timeout=left)
            except queue.Empty:
                pass
        return self.text

    def close(self):
        try:
            if self.proc.poll() is None:
                self.send("quit")
                self.proc.wait(timeout=20)
        except (BrokenPipeError, subprocess.TimeoutExpired):
            pass
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=20)


def test_live_target_continue_and_ctrl_c(work):
    after = [
        {"id": 12, "name": "init", "extra": "PID 12, waiting on CPU 3", "registers": {"rip": 0x401000}},
        {"id": 14, "name": "newcomer", "extra": "PID 14, running on CPU 0", "core": 0,
         "registers": {"rip": 0x401001}},
    ]
    spec = write_spec(work, "spec_live.json", live=True,
                      after_interrupt={"stop_thread": 14, "threads": after})
    gdb = Interactive(["gdb", "-nx", "-q", str(work / "t.elf"), "-ex", f"target remote | {stub_cmd(spec)}"])
    try:
        gdb.wait_for(r"in _start")
        gdb.send("continue &")
        gdb.wait_for(r"Continuing\.")
        gdb.send("interrupt")  # gdb sends the 0x03 byte
        gdb.wait_for(r"received signal SIGINT")
        gdb.send("info threads")
        gdb.send("info registers rip")
        gdb.send("monitor events")
        out = gdb.wait_for(r"refresh resume interrupt refresh")
        # the stop reports the thread the target named, and the list was re-read
        table = out[out.rindex("Target Id"):]
        assert re.search(r'\* \d+\s+Thread 14 "newcomer" \(PID 14, running on CPU 0\)', table), out
        assert "Thread 13" not in table, out
        assert re.search(r"^(?:\(gdb\) )?rip\s+0x401001\s", out, re.M), out
    finally:
        gdb.close()


def test_target_description_alone_gives_amd64(work):
    # no executable: gdb must learn the architecture from target.xml
    spec = write_spec(work)
    argv = ["gdb", "-nx", "-batch", "-ex", f"target remote | {stub_cmd(spec)}",
            "-ex", "show architecture", "-ex", "info registers rip rsp eflags", "-ex", "p $fs_base"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=ENV, cwd=str(ROOT))
    out = proc.stdout + proc.stderr
    assert 'currently "i386:x86-64"' in out, out
    assert re.search(r"^rip\s+0x401000\s", out, re.M), out
    assert re.search(r"^rsp\s+0x7ffffff0\s", out, re.M), out
    assert re.search(r"^eflags\s+0x246\s+\[ PF ZF IF \]", out, re.M), out
    assert "$1 = <unavailable>" in out, out


def test_thread_core_reaches_gdb(work):
    spec = write_spec(work, "spec_core.json", threads=[
        {"id": 12, "name": "init", "extra": "PID 12", "core": 11, "registers": {"rip": 0x401000}}])
    out = run_gdb(work, spec, 'interpreter-exec mi "-thread-info"')
    assert re.search(r'target-id="Thread 12",details="PID 12",name="init".*core="11"', out), out
