#!/usr/bin/env python3
"""mcps wall time on the fixture dumps against the 0.5 s target.

For each dumps/fixtures/<scenario>/{level0,level24}.mcdump (unpacked with
dumps/unpack.py when only .xz files exist) it runs `mcps` as a fresh process
(what a user waits for: interpreter start, imports, DWARF index load, the
walk) several times and prints the best and median time and their ratio to
the target.  Without fixtures it measures the synthetic test kernel instead.
"""

from __future__ import annotations

import glob
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_S = 0.5
RUNS = 5


def cases() -> list:
    fx = os.environ.get("MCKTOOLS_FIXTURES") or os.path.join(ROOT, "dumps", "fixtures")
    unpack = os.path.join(ROOT, "dumps", "unpack.py")
    if glob.glob(os.path.join(fx, "*", "*.xz")) and os.path.exists(unpack):
        subprocess.run([sys.executable, unpack], cwd=ROOT, check=False, capture_output=True)
    out = []
    for d in sorted(glob.glob(os.path.join(fx, "*"))):
        img = os.path.join(d, "mckernel.img")
        for dump in ("level0.mcdump", "level24.mcdump", "vmcore.elf"):
            p = os.path.join(d, dump)
            if os.path.exists(img) and os.path.exists(p):
                out.append((f"{os.path.basename(d)}/{dump}", img, p))
    if not out:
        sys.path.insert(0, ROOT)
        from tests.model_synth import build
        b = build(tempfile.mkdtemp(prefix="mcps-bench-"))
        out = [("synthetic/level0.mcdump", b.img, b.dump), ("synthetic/level24.mcdump", b.img, b.dump24)]
    return out


def run_once(img: str, dump: str) -> float:
    code = "import sys; from mcinspect.cli import mcps_main; sys.exit(mcps_main(sys.argv[1:]))"
    env = dict(os.environ, PYTHONPATH=ROOT)
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code, "-k", img, "-d", dump], env=env,
                       capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"mcps failed on {dump}: {p.stderr.strip()}")
    return dt


def main() -> int:
    print(f"{'case':32} {'best s':>8} {'median s':>9} {'median/target':>14}  (target {TARGET_S} s)")
    worst = 0.0
    for name, img, dump in cases():
        times = [run_once(img, dump) for _ in range(RUNS)]
        med = statistics.median(times)
        worst = max(worst, med)
        print(f"{name:32} {min(times):8.3f} {med:9.3f} {med / TARGET_S:14.2f}")
    print(f"worst median {worst:.3f} s = {worst / TARGET_S:.2f} x target "
          f"({'meets' if worst <= TARGET_S else 'misses'} the 0.5 s target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
