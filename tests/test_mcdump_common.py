"""Helpers shared by the test_mcdump_* files (no tests here).

Ground truth always comes from outside the code under test: the harness's own
level-0 / level-24 mcdumps and manifest of the same frozen kernel, readelf,
gdb, drgn, makedumpfile, kdumpling.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mcktools.formats.mcdump import McDump

REPO = Path(__file__).resolve().parent.parent


def chunk_table(path) -> list[tuple[int, int]]:
    with McDump.open(path) as d:
        return sorted((c.addr, c.size) for c in d.chunks)


def same_memory(a, b) -> None:
    """Assert two mcdumps hold the same chunks with the same bytes (any section order)."""
    with McDump.open(a) as da, McDump.open(b) as db:
        ca = {c.addr: c for c in da.chunks}
        cb = {c.addr: c for c in db.chunks}
        assert sorted((c.addr, c.size) for c in ca.values()) == sorted((c.addr, c.size) for c in cb.values())
        assert da.kernel_base == db.kernel_base
        for addr, c in ca.items():
            assert da.read_chunk(c.index, 0, c.size) == db.read_chunk(cb[addr].index, 0, c.size), \
                f"chunk at {addr:#x} differs"


def run_cli(*args, env=None, timeout=300, preexec_fn=None, prog="mcdump") -> subprocess.CompletedProcess:
    """Run a console script in a fresh interpreter (how users run it)."""
    code = ("import sys; from mcdump.cli import main, vmcore2mckdump_main; "
            f"{'main' if prog == 'mcdump' else 'vmcore2mckdump_main'}(sys.argv[1:])")
    full_env = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=full_env, preexec_fn=preexec_fn, cwd=str(REPO))


def one_line_error(r: subprocess.CompletedProcess, prog: str = "mcdump") -> str:
    """Assert `r` failed with exactly one `PROG: error: ...` line and no traceback."""
    assert r.returncode != 0, r.stdout + r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"{prog}: error: "), r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


def leftovers(folder) -> list[str]:
    """Files a failed writer might have left (temporary or partial)."""
    return sorted(p.name for p in Path(folder).iterdir() if ".partial" in p.name or p.name.startswith("."))
