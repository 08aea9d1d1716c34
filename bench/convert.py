#!/usr/bin/env python3
"""vmcore → mcdump throughput beside cp of the same file, and peak memory.

    python3 bench/convert.py [--size-mib 1024] [--dir DIR] [--keep]

Generates a sparse ELF vmcore of SIZE MiB (a McKernel-like layout: an
smp_boot_param and its dump bitmap in "Linux memory" below 16 MiB, one reserved
chunk from 16 MiB to the end, a few non-zero pages), then runs in the same
process: `cp --sparse=never` + `sync` of the copy (writes every byte durably, as
convert does: it fsyncs before renaming), the same without sync, plain
(sparse-aware) `cp` for reference, and `mcdump convert` in a child process whose peak RSS is measured.
Targets: convert throughput >= 1/2 of cp's, peak memory <= 200 MB.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PAGE = 4096
CHUNK_START = 16 << 20
BOOT_PARAM_PA = 0x100000
BITMAP_PA = 0x102000
DUMP_LEVEL_OFF = 6624          # smp_boot_param default build (ABI reference §6.7)
DUMP_PAGE_SET_OFF = 6632
DATA_OFFSET = 0x1000           # file offset of PA 0


def make_vmcore(path: "str | os.PathLike[str]", size: int, *, marks: int = 64) -> list[tuple[int, bytes]]:
    """Write a sparse vmcore with one PT_LOAD [0, size) and return the
    (pa, bytes) of the non-zero McKernel pages it holds (for checking copies)."""
    assert size % (2 << 20) == 0 and size > CHUNK_START + (4 << 20)
    chunk_size = size - CHUNK_START
    npages = chunk_size // PAGE
    words = (npages + 63) // 64
    ehdr = b"\x7fELF\x02\x01\x01" + bytes(9) + struct.pack("<HHIQQQIHHHHHH", 4, 62, 1, 0, 64, 0, 0, 64, 56,
                                                         1, 0, 0, 0)
    phdr = struct.pack("<IIQQQQQQ", 1, 7, DATA_OFFSET, 0, 0, size, size, PAGE)
    bp = bytearray(DUMP_PAGE_SET_OFF + 24)
    struct.pack_into("<QQQQQ", bp, 0, CHUNK_START, size, 1, len(bp), CHUNK_START + chunk_size)
    struct.pack_into("<i", bp, DUMP_LEVEL_OFF, 0)
    struct.pack_into("<IIQQ", bp, DUMP_PAGE_SET_OFF, 1, 1, PAGE * ((16 + 8 * words + PAGE - 1) // PAGE),
                     BITMAP_PA)
    bits = (1 << npages) - 1
    block = struct.pack("<QQ", CHUNK_START, words) + bits.to_bytes(8 * words, "little")
    pages = []
    step = max(npages // marks, 1)
    for i in range(0, npages, step):
        pa = CHUNK_START + i * PAGE
        pages.append((pa, (f"page {pa:#x} ".encode() * 400)[:PAGE]))
    with open(path, "wb") as f:
        f.write(ehdr + phdr)
        f.truncate(DATA_OFFSET + size)
        for pa, blob in [(BOOT_PARAM_PA, bytes(bp)), (BITMAP_PA, block)] + pages:
            f.seek(DATA_OFFSET + pa)
            f.write(blob)
    return pages


def _timed(*cmds: list) -> float:
    t0 = time.perf_counter()
    for cmd in cmds:
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def _drop(path: Path) -> None:
    if path.exists():
        path.unlink()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--dir", default=None, help="scratch folder (default: a temp folder on /tmp)")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args(argv)
    size = args.size_mib << 20
    work = Path(args.dir or tempfile.mkdtemp(prefix="mcdump-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    src = work / "vmcore"
    try:
        make_vmcore(src, size)
        nbytes = size - CHUNK_START
        sys.stdout.write(f"vmcore {size >> 20} MiB (sparse), McKernel chunk {nbytes >> 20} MiB\n")
        # convert makes its output durable (fsync before the rename), so the fair
        # baseline is cp writing every byte followed by sync of the copy.
        cp_full = _timed(["cp", "--sparse=never", str(src), str(work / "cp.out")], ["sync", str(work / "cp.out")])
        _drop(work / "cp.out")
        cp_nosync = _timed(["cp", "--sparse=never", str(src), str(work / "cp.out")])
        _drop(work / "cp.out")
        cp_plain = _timed(["cp", str(src), str(work / "cp.out")])
        _drop(work / "cp.out")
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        out = work / "out.mcdump"
        code = ("import sys; from mcdump.cli import main; main(sys.argv[1:])")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code, "convert", str(src), "--boot-param", hex(BOOT_PARAM_PA),
                        "-o", str(out), "-q"], check=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
        conv = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        peak_mb = max(peak, before) / 1024
        _drop(out)
        mib = size / (1 << 20)
        r_full = mib / cp_full
        r_conv = nbytes / (1 << 20) / conv
        print(f"cp --sparse=never + sync : {cp_full:6.2f} s  {r_full:8.1f} MiB/s   (baseline)")
        print(f"cp --sparse=never        : {cp_nosync:6.2f} s  {mib / cp_nosync:8.1f} MiB/s")
        print(f"cp (sparse-aware)        : {cp_plain:6.2f} s  {mib / cp_plain:8.1f} MiB/s")
        print(f"mcdump convert           : {conv:6.2f} s  {r_conv:8.1f} MiB/s  "
              f"({r_conv / r_full:.2f} x baseline; target >= 0.5)")
        print(f"convert peak RSS         : {peak_mb:6.1f} MB (target <= 200 MB)")
        return 0 if r_conv >= 0.5 * r_full and peak_mb <= 200 else 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
