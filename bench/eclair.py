"""Benchmark: how fast real gdb pulls memory through eclair's server.

Builds an ELF holding a random blob, serves it with the fake provider, and
times `dump binary memory` of the blob in gdb.  The baseline is the same
server limited to 1 KiB packets (upstream eclair's receive buffer size);
figures are printed as ratios against it.  The pipe transport is shown too:
gdb polls its stderr pipe once per received byte there, so loopback TCP
(what `eclair` uses when it starts gdb) is the fast path.

The fixture figure serves a real McKernel dump with the McKernel provider
(`eclair --listen`, TCP) and times gdb's `dump binary memory` of the Linux
direct map of every chunk of the fixture's level-0 dump (16 MiB), against
reading the same bytes straight from the dump file in the same run; the
target is at least 20 MB/s through gdb.

    python bench/eclair.py [--mib 8] [--fixture multi] [--only fake|fixture]
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


TARGET_MBPS = 20.0


def fixture_figure(scenario: str) -> None:
    """gdb through `eclair --listen` on a fixture dump vs. reading the dump file."""
    sys.path.insert(0, str(ROOT))
    from mcktools.formats.mcdump import McDump
    subprocess.run([sys.executable, str(ROOT / "dumps" / "unpack.py"), scenario], check=True, timeout=300,
                   stdout=subprocess.DEVNULL)
    folder = ROOT / "dumps" / "fixtures" / scenario
    img, dump = folder / "mckernel.img", folder / "level0.mcdump"
    lpob = json.loads((folder / "manifest.json").read_text())["linux_page_offset_base"]
    with McDump.open(str(dump)) as d:
        chunks = [(c.index, c.addr, c.size) for c in d.chunks]
        start = time.monotonic()
        direct = [bytes(d.read_chunk(i, 0, size)) for i, _, size in chunks]
        direct_s = time.monotonic() - start
    total = sum(size for _, _, size in chunks)
    with tempfile.TemporaryDirectory() as tmp:
        outs = [Path(tmp) / f"chunk{i}.bin" for i, _, _ in chunks]
        server = subprocess.Popen([sys.executable, "-m", "eclair", "--listen", "0", "-d", str(dump),
                                   "-k", str(img)], stderr=subprocess.PIPE, text=True, env=ENV, cwd=str(ROOT))
        try:
            line = server.stderr.readline().strip()
            m = re.search(r":(\d+)$", line)
            if not m:
                raise SystemExit(f"eclair did not start: {line} {server.stderr.read()}")
            argv = ["gdb", "-nx", "-batch", str(img), "-ex", f"target remote 127.0.0.1:{m.group(1)}",
                    "-ex", "python import time; t0 = time.monotonic()"]
            for out, (_, addr, size) in zip(outs, chunks):
                argv += ["-ex", f"dump binary memory {out} {lpob + addr:#x} {lpob + addr + size:#x}"]
            argv += ["-ex", "python print('ELAPSED %.6f' % (time.monotonic() - t0))"]
            res = subprocess.run(argv, capture_output=True, text=True, timeout=900, env=ENV, cwd=str(ROOT))
        finally:
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            server.stderr.close()
        m = re.search(r"ELAPSED ([0-9.]+)", res.stdout)
        if not m:
            raise SystemExit(f"gdb failed:\n{res.stdout[-2000:]}{res.stderr[-2000:]}")
        gdb_s = float(m.group(1))
        for out, data in zip(outs, direct):
            if not out.exists() or out.read_bytes() != data:
                raise SystemExit(f"{out.name}: bytes through gdb differ from the dump file")
    rate = total / gdb_s / 1e6
    print(f"gdb 'dump binary memory' of the direct map of {scenario}/level0.mcdump's chunks "
          f"({total >> 20} MiB), McKernel provider over TCP")
    print(f"  {'read from the dump file (baseline)':34s} {direct_s:7.3f} s  {total / direct_s / 1e6:7.1f} MB/s")
    print(f"  {'through eclair and gdb':34s} {gdb_s:7.3f} s  {rate:7.1f} MB/s  "
          f"x{gdb_s / direct_s:.0f} the direct read's time")
    print(f"  target >= {TARGET_MBPS:.0f} MB/s through gdb: {'met' if rate >= TARGET_MBPS else 'NOT met'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=8)
    ap.add_argument("--fixture", default="multi", help="fixture scenario for the McKernel figure")
    ap.add_argument("--only", choices=("fake", "fixture"), help="run one of the two figures")
    args = ap.parse_args()
    if args.only != "fake":
        fixture_figure(args.fixture)
    if args.only == "fixture":
        return
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
