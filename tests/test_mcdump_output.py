"""Output discipline of every mcdump writer: no overwrite without --force, no
partial file after a full disk (RLIMIT_FSIZE in the child), an error or
Ctrl-C, nothing extra on stderr in a pipe, a progress bar on a terminal."""

from __future__ import annotations

import importlib.util
import io
import os
import pty
import resource
import signal
import subprocess
import sys
import time

import pytest

from mcktools.convert.output import Progress
from tests.test_mcdump_common import REPO, leftovers, one_line_error, run_cli, same_memory


def _bench():
    spec = importlib.util.spec_from_file_location("mcdump_bench_convert", REPO / "bench" / "convert.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _limit_fsize(limit: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def writers(d, out):
    """Every writing command, with the harness file it must reproduce (or None)."""
    img = d / "mckernel.img"
    return {
        "convert": (["convert", d / "vmcore.elf", "-k", img, "-o", out], d / "level24.mcdump"),
        "filter": (["filter", d / "level0.mcdump", "-k", img, "--level", "24", "-o", out], d / "level24.mcdump"),
        "to-elf": (["to-elf", d / "level24.mcdump", "-k", img, "-o", out], None),
    }


@pytest.mark.parametrize("cmd", ["convert", "filter", "to-elf"])
def test_no_overwrite_without_force(fixture_dir, tmp_path, cmd):
    d = fixture_dir("multi")
    out = tmp_path / "out"
    out.write_bytes(b"precious")
    args, ref = writers(d, out)[cmd]
    msg = one_line_error(run_cli(*args))
    assert "already exists" in msg and "--force" in msg
    assert out.read_bytes() == b"precious"
    r = run_cli(*args, "--force")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""                     # in a pipe: nothing extra
    if ref is not None:
        same_memory(out, ref)
    assert not leftovers(tmp_path)


@pytest.mark.parametrize("cmd", ["convert", "filter", "to-elf"])
def test_disk_full_leaves_nothing(fixture_dir, tmp_path, cmd):
    d = fixture_dir("multi")
    out = tmp_path / "out"
    args, _ = writers(d, out)[cmd]
    r = run_cli(*args, preexec_fn=_limit_fsize(1 << 20))
    msg = one_line_error(r)
    assert "out of space" in msg or "File too large" in msg
    assert not out.exists()
    assert not leftovers(tmp_path)


def test_vmcore2mckdump_disk_full(fixture_dir, tmp_path):
    d = fixture_dir("multi")
    out = tmp_path / "mckdump"
    r = run_cli(d / "vmcore.elf", out, preexec_fn=_limit_fsize(256 << 10), prog="vmcore2mckdump")
    one_line_error(r, "vmcore2mckdump")
    assert not out.exists() and not leftovers(tmp_path)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_leaves_nothing(tmp_path, sig):
    bench = _bench()
    src = tmp_path / "big.vmcore"
    bench.make_vmcore(src, 768 << 20)
    outdir = tmp_path / "out"
    outdir.mkdir()
    out = outdir / "big.mcdump"
    code = "import sys; from mcdump.cli import main; main(sys.argv[1:])"
    p = subprocess.Popen([sys.executable, "-c", code, "convert", str(src), "--boot-param",
                          hex(bench.BOOT_PARAM_PA), "-o", str(out)], stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    deadline = time.monotonic() + 60
    while not leftovers(outdir) and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert p.poll() is None, "the conversion finished before it could be interrupted"
    time.sleep(0.05)
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode != 0
    assert "Traceback" not in err and err.strip().endswith("interrupted"), err
    assert not out.exists() and not leftovers(outdir)


def test_big_conversion_copies_the_right_pages(tmp_path):
    """The generated vmcore's marked pages land at their PAs in the mcdump."""
    bench = _bench()
    src = tmp_path / "v"
    pages = bench.make_vmcore(src, 64 << 20)
    out = tmp_path / "o.mcdump"
    r = run_cli("convert", src, "-o", out)                    # boot_param found by scanning
    assert r.returncode == 0, r.stderr
    from mcktools.memory.sources import open_source
    with open_source(out) as s:
        assert [(r.start, r.end) for r in s.ranges()] == [(bench.CHUNK_START, 64 << 20)]
        for pa, blob in pages:
            assert s.read(pa, len(blob)) == blob


def test_progress_bar_only_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True
    tty = Tty()
    p = Progress(100, "converting", stream=tty, delay=0.0)
    p._last = -1.0
    p.advance(50)
    p.finish()
    assert "converting [" in tty.getvalue() and tty.getvalue().endswith("\n")
    pipe = io.StringIO()
    q = Progress(100, "converting", stream=pipe, delay=0.0)
    q.advance(100)
    q.finish()
    assert pipe.getvalue() == ""


def test_progress_bar_on_a_real_pty(tmp_path):
    """On a terminal, a conversion lasting over a second draws a bar on stderr."""
    bench = _bench()
    src = tmp_path / "v"
    bench.make_vmcore(src, 512 << 20)
    out = tmp_path / "o.mcdump"
    master, slave = pty.openpty()
    code = "import sys; from mcdump.cli import main; main(sys.argv[1:])"
    p = subprocess.Popen([sys.executable, "-c", code, "convert", str(src), "--boot-param",
                          hex(bench.BOOT_PARAM_PA), "-o", str(out)], stderr=slave, stdout=subprocess.DEVNULL,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    os.close(slave)
    seen = b""
    t0 = time.monotonic()
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    p.wait(timeout=120)
    os.close(master)
    assert p.returncode == 0
    if time.monotonic() - t0 > 1.5:
        assert b"converting [" in seen, seen[-300:]
    assert out.exists()
