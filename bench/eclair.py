"""Benchmark: how fast real gdb pulls memory through eclair's server.

Builds an ELF holding a random blob, serves it with the fake provider, and
times `dump binary memory` of the blob in gdb.  The baseline is the same
server limited to 1 KiB packets (upstream eclair's receive buffer size);
figures are printed as ratios against it.  The pipe transport is shown too:
gdb polls its stderr pipe once per received byte there, so loopback TCP
(what `eclair` uses when it starts gdb) is the fast path.

    python bench/eclair.py [--mib 8]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
BASE = 0x600000


def build(d: Path, size: int) -> Path:
    blob = d / "blob.bin"
    blob.write_bytes(os.urandom(size))
    (d / "t.s").write_text(f'.text\n.globl _start\n_start: ret\n.data\nblob: .incbin "{blob}"\n')
    subprocess.run(["as", "-o", str(d / "t.o"), str(d / "t.s")], check=True, timeout=60)
    subprocess.run(["ld", "-o", str(d / "t.elf"), "-Ttext=0x401000", f"-Tdata={BASE:#x}", str(d / "t.o")],
                   check=True, timeout=60)
    spec = d / "spec.json"
    spec.write_text(json.dumps({"elf": str(d / "t.elf"),
                                "threads": [{"id": 1, "name": "t", "registers": {"rip": 0x401000}}]}))
    return spec


def run(d: Path, spec: Path, size: int, packet_size: int, tcp: bool) -> float:
    out = d / "out.bin"
    stub = [sys.executable, "-m", "eclair.fakeprovider_stub", str(spec), "--packet-size", str(packet_size)]
    dump = f"dump binary memory {out} {BASE:#x} {BASE + size:#x}"
    server = None
    try:
        if tcp:
            server = subprocess.Popen(stub + ["--listen", "0"], stderr=subprocess.PIPE, text=True,
                                      env=ENV, cwd=str(ROOT))
            port = re.search(r":(\d+)$", server.stderr.readline().strip()).group(1)
            target = f"target remote 127.0.0.1:{port}"
        else:
            target = "target remote | " + " ".join(stub + ["--stdio"])
        start = time.monotonic()
        subprocess.run(["gdb", "-nx", "-batch", str(d / "t.elf"), "-ex", target, "-ex", dump],
                       capture_output=True, timeout=600, env=ENV, cwd=str(ROOT), check=True)
        elapsed = time.monotonic() - start
    finally:
        if server is not None:
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            server.stderr.close()
    if out.read_bytes() != (d / "blob.bin").read_bytes():
        raise SystemExit("dumped bytes differ from the blob")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=8)
    args = ap.parse_args()
    size = args.mib << 20
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        spec = build(d, size)
        cases = [("baseline: 1 KiB packets, TCP", 0x400, True),
                 ("16 KiB packets, TCP", 0x4000, True),
                 ("128 KiB packets, TCP (default)", 0x20000, True),
                 ("128 KiB packets, pipe", 0x20000, False)]
        base = None
        print(f"gdb 'dump binary memory' of {args.mib} MiB through eclair's server")
        for label, packet_size, tcp in cases:
            t = run(d, spec, size, packet_size, tcp)
            base = base or t
            print(f"  {label:34s} {t:7.2f} s  {size / t / 1e6:7.1f} MB/s  speed-up x{base / t:.1f}")


if __name__ == "__main__":
    main()
