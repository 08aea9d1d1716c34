#!/usr/bin/env python3
"""Benchmark the QEMU harness: boot to manifest, freeze, dump, release.

    python3 bench/qemu_boot.py [--runs 3] [--scenario multi] [--ncpus 4]

Baseline = starting QEMU with no guest (-S) until its QMP socket answers: the
fixed cost every boot pays.  Every other figure is printed in seconds and as a
ratio to that baseline, so numbers stay comparable across machines.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mcktools.qemu import procs  # noqa: E402
from mcktools.qemu.dump import FIXTURE_IDENTITY, write_frozen_dump  # noqa: E402
from mcktools.qemu.freeze import Freezer  # noqa: E402
from mcktools.qemu.imageinfo import image_info  # noqa: E402
from mcktools.qemu.machine import QEMU, Machine, MachineConfig  # noqa: E402
from mcktools.qemu.qmp import QMPClient  # noqa: E402


def baseline_once() -> float:
    with tempfile.TemporaryDirectory(prefix="mckb-") as d:
        sock = f"{d}/q.sock"
        t0 = time.perf_counter()
        p = procs.spawn([QEMU, "-S", "-accel", "tcg", "-nographic", "-nodefaults", "-m", "48M",
                         "-display", "none", "-qmp", f"unix:{sock},server=on,wait=off"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            QMPClient(sock).connect(alive=lambda: p.poll() is None).close()
            return time.perf_counter() - t0
        finally:
            procs.kill_group(p)


def harness_once(image: Path, scenario: str, ncpus: int) -> dict[str, float]:
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    with Machine(MachineConfig(image=str(image), scenario=scenario, ncpus=ncpus)) as m:
        out["qmp up"] = time.perf_counter() - t0
        m.wait_ready(timeout=120)
        out["boot to READY"] = time.perf_counter() - t0
        fz = Freezer(m, image_info(str(image)))
        for level in (0, 24):
            t = time.perf_counter()
            fr = fz.freeze(level)
            out[f"freeze level {level}"] = time.perf_counter() - t
            with tempfile.TemporaryDirectory(prefix="mckb-") as d:
                t = time.perf_counter()
                write_frozen_dump(Path(d) / "x.mcdump", m, fr, identity=FIXTURE_IDENTITY)
                out[f"write level-{level} mcdump"] = time.perf_counter() - t
            t = time.perf_counter()
            fz.release()
            out[f"release level {level}"] = time.perf_counter() - t
        t = time.perf_counter()
    out["shutdown"] = time.perf_counter() - t
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--scenario", default="multi")
    ap.add_argument("--ncpus", type=int, default=4)
    ap.add_argument("--image", type=Path, default=REPO / "kernel" / "build" / "mckernel.img")
    args = ap.parse_args()
    base = statistics.median(baseline_once() for _ in range(args.runs))
    runs = [harness_once(args.image, args.scenario, args.ncpus) for _ in range(args.runs)]
    print(f"baseline: QEMU -S start to QMP answer  {base:7.3f} s  (1.00x)")
    for key in runs[0]:
        v = statistics.median(r[key] for r in runs)
        print(f"{key:38s} {v:7.3f} s  ({v / base:5.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
