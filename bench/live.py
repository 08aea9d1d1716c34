#!/usr/bin/env python3
"""Live mcps latency beside mcps on a dump of the same kernel, in the same run.

Boots the reference kernel's `live` scenario under QEMU (2 CPUs), takes one
mcdump of it with `mcdump create` (level 0), then times, alternating:
  live:  mcps --qemu RUNDIR   (reads the running guest, no freeze, two passes
                               for the "changed" marks)
  dump:  mcps -k IMG -d DUMP  (the baseline)
each as a fresh process (what a user waits for) and, separately, the
in-process thread walk only (open excluded).  Ratios are live / dump.
The guest keeps running meanwhile (its CPUs compete for the same host cores,
as on a loaded node).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
RUNS = 5
PYCACHE = os.path.join(tempfile.gettempdir(), "mcktools-bench-pycache")


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=ROOT, PYTHONPYCACHEPREFIX=PYCACHE)
    for var in ("PYTHONDONTWRITEBYTECODE", "MCKERNEL_DUMP", "MCKERNEL_IMG", "MCKTOOLS_QEMU_RUN"):
        env.pop(var, None)
    return env


def mcps_process(args: list) -> float:
    code = "import sys; from mcinspect.cli import mcps_main; sys.exit(mcps_main(sys.argv[1:]))"
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code, *args], env=_env(), capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"mcps {' '.join(args)} failed: {p.stderr.strip()}")
    return dt


def main() -> int:
    from mcktools.live.attach import open_live
    from mcktools.live.consistent import live_threads
    from mcktools.live.target import DEFAULT_IMAGE, live_guest
    from mcktools.model.target import Target

    with tempfile.TemporaryDirectory(prefix="mck-bench-live-") as tmp:
        with live_guest(DEFAULT_IMAGE, scenario="live", ncpus=2) as (m, run, manifest):
            dump = os.path.join(tmp, "live.mcdump")
            res = subprocess.run([sys.executable, "-m", "mcdump", "create", "--qemu", run.folder, "-o", dump],
                                 env=_env(), capture_output=True, text=True)
            if res.returncode != 0:
                raise SystemExit(f"mcdump create failed: {res.stderr.strip()}")
            live_args, dump_args = ["--qemu", run.folder], ["-k", run.image, "-d", dump]
            mcps_process(live_args)
            mcps_process(dump_args)                  # warm byte-code and DWARF caches
            live_t, dump_t = [], []
            for _ in range(RUNS):
                live_t.append(mcps_process(live_args))
                dump_t.append(mcps_process(dump_args))

            lt = open_live(qemu=run.folder)
            dt = Target.open(run.image, dump)
            walk_live, walk_dump = [], []
            try:
                for _ in range(RUNS * 4):
                    t0 = time.perf_counter()
                    rows = live_threads(lt.target)
                    walk_live.append(time.perf_counter() - t0)
                    dt._cache.clear()
                    t0 = time.perf_counter()
                    drows = dt.threads()
                    walk_dump.append(time.perf_counter() - t0)
                changed = sum(r.changed for r in rows)
            finally:
                lt.close()
                dt.close()

    def line(name, a, b):
        ma, mb = statistics.median(a), statistics.median(b)
        print(f"{name:34} {ma * 1000:9.1f} {mb * 1000:9.1f} {ma / mb:8.2f}")

    print(f"{'median ms (live vs dump)':34} {'live':>9} {'dump':>9} {'ratio':>8}"
          f"   ({len(rows)} threads live, {len(drows)} in the dump; load {os.getloadavg()[0]:.1f})")
    line("mcps as a process", live_t, dump_t)
    line("thread walk in process", walk_live, walk_dump)
    print(f"(the live walk reads twice to mark changed threads; {changed} marked in the last read)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
