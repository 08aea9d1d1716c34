#!/usr/bin/env python3
"""How long does it take to get type layouts out of an image?

Prints, for the kernel image (or images given on the command line) and for a
generated image with at least 6 MB of .debug_info:
  cold      Image.open with an empty cache (scan .debug_info, build, write the index)
  cold-cpu  the same in CPU seconds (the machine may be shared; wall time then lies)
  warm-mem  a second Image.open in the same process (index kept in memory)
  warm-disk Image.open in the same process after forgetting the in-memory copy
  fresh     Image.open in a new Python process (disk cache; interpreter start excluded)
and drgn's time to load the same file and answer a first type lookup, with
each figure also given as a ratio to drgn's.

Usage: python3 bench/dwarf_load.py [IMAGE ...] [--size-mb 6] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mcktools.debuginfo import Image, clear_memory_cache  # noqa: E402
from mcktools.debuginfo.elffile import ElfFile  # noqa: E402

KERNEL = REPO / "kernel" / "build" / "mckernel.img"


# ---------------------------------------------------------------- generated image
def _struct(name: str, i: int, others: list) -> str:
    lines = [f"struct {name} {{"]
    lines.append(f"    unsigned long id_{i}; int count; unsigned flags:3, kind:5, pad_{i}:24;")
    lines.append(f"    char label[{8 + i % 24}]; struct list_head link; void *priv;")
    if others:
        lines.append(f"    struct {others[i % len(others)]} *peer; struct {others[(i * 7) % len(others)]} *peer2;")
    lines.append(f"    union {{ long l; double d; unsigned char raw[{8 + i % 8}]; }} u;")
    lines.append("    struct { short a, b; int c[4][2]; } inner;")
    lines.append(f"    enum mode_{i % 50} mode; spin_t lock; u64 stamp[{1 + i % 4}];")
    lines.append("};")
    return "\n".join(lines)


def generate_source(folder: Path, shared: int = 350, units: int = 60, per_unit: int = 40) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"shared_{i}" for i in range(shared)]
    header = ["typedef unsigned long long u64;", "typedef struct { volatile int v; } spin_t;",
              "struct list_head { struct list_head *next, *prev; };"]
    header += [f"enum mode_{i} {{ MODE_{i}_A, MODE_{i}_B = {i}, MODE_{i}_C = -{i + 1} }};" for i in range(50)]
    header += [f"struct {n};" for n in names]
    header += [_struct(n, i, names) for i, n in enumerate(names)]
    (folder / "gen.h").write_text("\n".join(header) + "\n")
    files = []
    for u in range(units):
        local = [f"u{u}_s{j}" for j in range(per_unit)]
        body = ['#include "gen.h"']
        body += [f"struct {n};" for n in local]
        body += [_struct(n, j + u, local + names[:20]) for j, n in enumerate(local)]
        body += [f"struct {n} g_{n};" for n in local]
        body += [f"struct shared_{(u * 5 + k) % shared} *gp_{u}_{k};" for k in range(5)]
        for k in range(6):
            body.append(textwrap.dedent(f"""
                long fn_{u}_{k}(struct {local[k]} *p, int n) {{
                    long acc = 0;
                    for (int i = 0; i < n; i++) {{
                        struct {{ int x, y; }} tmp = {{ i, n }};
                        acc += p->count + tmp.x * tmp.y + p->inner.c[i & 3][1];
                    }}
                    return acc;
                }}"""))
        if u == 0:
            body.append("int main(void) { return 0; }")
        path = folder / f"unit{u}.c"
        path.write_text("\n".join(body) + "\n")
        files.append(path)
    return files


def build_generated(folder: Path, size_mb: float) -> Path:
    units = 60
    while True:
        files = generate_source(folder, units=units)
        out = folder / "generated.img"
        objs = []
        for f in files:
            obj = f.with_suffix(".o")
            subprocess.run(["gcc", "-c", "-g", "-gdwarf-5", "-O0", "-fno-eliminate-unused-debug-types",
                            "-o", str(obj), str(f)], check=True, cwd=folder)
            objs.append(str(obj))
        subprocess.run(["gcc", "-o", str(out), *objs], check=True, cwd=folder)
        size = ElfFile(out.read_bytes()).section(".debug_info").size
        if size >= size_mb * 1e6:
            return out
        units = int(units * size_mb * 1e6 / size) + 2


# ---------------------------------------------------------------- measurements
def _probe_type(path: Path) -> str:
    img = Image.open(path, use_cache=False)
    for candidate in ("struct thread", "struct cpu_local_var", "struct shared_0"):
        try:
            img.type(candidate)
            return candidate
        except Exception:
            pass
    return next(iter(n for n in img._names if n.startswith("struct ")), "int")


def time_ours(path: Path, probe: str) -> dict:
    cache = Path(tempfile.mkdtemp(prefix="mck-bench-cache-"))
    os.environ["MCKTOOLS_CACHE_DIR"] = str(cache)
    try:
        clear_memory_cache()
        c0 = time.process_time()
        t0 = time.perf_counter()
        img = Image.open(path)
        img.sizeof(probe)
        cold = time.perf_counter() - t0
        cold_cpu = time.process_time() - c0
        assert img.index_source == "built"
        t0 = time.perf_counter()
        img = Image.open(path)
        img.sizeof(probe)
        warm_mem = time.perf_counter() - t0
        clear_memory_cache()
        t0 = time.perf_counter()
        img = Image.open(path)
        img.sizeof(probe)
        warm_disk = time.perf_counter() - t0
        assert img.index_source == "disk"
        code = textwrap.dedent(f"""
            import sys, time
            sys.path.insert(0, {str(REPO)!r})
            t0 = time.perf_counter()
            from mcktools.debuginfo import Image
            t1 = time.perf_counter()
            img = Image.open({str(path)!r}); img.sizeof({probe!r})
            t2 = time.perf_counter()
            print(t2 - t1, t1 - t0, img.index_source)
        """)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
        index_bytes = sum(f.stat().st_size for f in cache.iterdir())
        return {"cold": cold, "cold-cpu": cold_cpu, "warm-mem": warm_mem, "warm-disk": warm_disk, "fresh": float(out[0]),
                "fresh-import": float(out[1]), "fresh-source": out[2], "index_bytes": index_bytes}
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def time_drgn(path: Path, probe: str):
    try:
        import drgn
    except ImportError:
        return None
    segs = ElfFile(path.read_bytes()).segments
    t0 = time.perf_counter()
    prog = drgn.Program(drgn.Platform(drgn.Architecture.X86_64,
                                      drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN))
    module = prog.extra_module("image", create=True)
    module.address_ranges = [(s.vaddr, s.vaddr + s.memsz) for s in segs]
    module.try_file(str(path))
    drgn.sizeof(prog.type(probe))
    return time.perf_counter() - t0


def report(label: str, path: Path) -> None:
    info = ElfFile(path.read_bytes()).section(".debug_info")
    probe = _probe_type(path)
    ours = time_ours(path, probe)
    ref = time_drgn(path, probe)
    print(f"\n{label}: {path}")
    print(f"  .debug_info {info.size / 1e6:.2f} MB, file {path.stat().st_size / 1e6:.2f} MB, "
          f"index on disk {ours['index_bytes'] / 1e6:.2f} MB, probe type {probe!r}")
    print(f"  {'measure':<10} {'seconds':>10} {'x drgn':>10}")
    for key in ("cold", "cold-cpu", "warm-mem", "warm-disk", "fresh"):
        ratio = f"{ours[key] / ref:10.2f}" if ref else f"{'n/a':>10}"
        print(f"  {key:<10} {ours[key]:10.4f} {ratio}")
    if ref:
        print(f"  {'drgn':<10} {ref:10.4f} {1.0:10.2f}")
    print(f"  (fresh process: importing mcktools.debuginfo took {ours['fresh-import']:.4f} s more; "
          f"index came from {ours['fresh-source']})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="*", type=Path)
    parser.add_argument("--size-mb", type=float, default=6.0, help="minimum .debug_info of the generated image")
    parser.add_argument("--keep", type=Path, help="build the generated image here and keep it")
    args = parser.parse_args()
    images = list(args.images) or ([KERNEL] if KERNEL.exists() else [])
    if not images:
        print(f"(no kernel image at {KERNEL}; pass an image to measure one)")
    for img in images:
        report("image", img)
    folder = args.keep or Path(tempfile.mkdtemp(prefix="mck-bench-gen-"))
    try:
        existing = folder / "generated.img"
        gen = existing if (args.keep and existing.exists()) else build_generated(folder, args.size_mb)
        report("generated", gen)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
