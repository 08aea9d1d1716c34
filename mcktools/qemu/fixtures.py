"""Make the committed fixture set: boot each scenario, freeze once, dump, compress.

One freeze per scenario at level 24 yields everything: `level24.mcdump` from the
bitmap the kernel cleared, `level0.mcdump` from the boot-time bitmap (all bits
set, i.e. what a level-0 `ihkosctl dump` of the same moment gives: every
reserved chunk whole), QEMU's `vmcore.elf` and the kernel's frozen manifest.
All of them therefore describe the same instant, which is what tests comparing
tools with `manifest.json` need.  Binary files are committed xz-compressed.
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import LiveError
from .dump import FIXTURE_IDENTITY, DumpIdentity, write_frozen_dump, write_vmcore
from .freeze import DUMP_LEVEL_USER_UNUSED_EXCLUDE, Freezer
from .imageinfo import image_info
from .machine import Machine, MachineConfig

REPO = Path(__file__).resolve().parents[2]
KERNEL_DIR = REPO / "kernel"
DEFAULT_IMAGE = KERNEL_DIR / "build" / "mckernel.img"
FIXTURES = REPO / "dumps" / "fixtures"
XZ_PRESET = 9


@dataclass(frozen=True)
class ScenarioSpec:
    name: str
    ncpus: int
    vmcore: bool
    wait_for: str | None = None  # console marker to wait for after READY


SCENARIOS = {
    "multi": ScenarioSpec("multi", 4, vmcore=True),
    "panic": ScenarioSpec("panic", 2, vmcore=False, wait_for="MCKTOOLS-PANIC"),
}


def build_kernel(kernel_dir: Path = KERNEL_DIR) -> Path:
    """`make -C kernel` (serial build: the machine is shared) and return the image path."""
    res = subprocess.run(["make", "-C", str(kernel_dir), "-j1"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    if res.returncode != 0:
        raise LiveError(f"make -C {kernel_dir} failed:\n{res.stdout[-2000:]}")
    image = kernel_dir / "build" / "mckernel.img"
    if not image.is_file():
        raise LiveError(f"make -C {kernel_dir} did not produce {image}")
    return image


def compress(path: Path, *, keep: bool = True) -> Path:
    """Write `path`.xz (lzma, preset 9); the unpacked file gets the .xz's mtime,
    which is how dumps/unpack.py recognises an up-to-date unpacked file."""
    xz = path.with_name(path.name + ".xz")
    tmp = xz.with_name(xz.name + ".tmp")
    with open(path, "rb") as src, lzma.open(tmp, "wb", preset=XZ_PRESET) as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    os.replace(tmp, xz)
    if keep:
        st = os.stat(xz)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    else:
        path.unlink()
    return xz


def capture_scenario(spec: ScenarioSpec, image: Path, out_dir: Path, *,
                     identity: DumpIdentity = FIXTURE_IDENTITY, settle: float = 0.3,
                     vmcore: bool | None = None, log=print) -> dict:
    """Boot one scenario, freeze once at level 24, write the uncompressed fixture files.

    Returns the frozen manifest (also written to manifest.json).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    info = image_info(str(image))
    cfg = MachineConfig(image=str(image), scenario=spec.name, ncpus=spec.ncpus)
    t0 = time.monotonic()
    with Machine(cfg) as m:
        m.wait_ready()
        log(f"{spec.name}: ready after {time.monotonic() - t0:.1f} s")
        if spec.wait_for:
            m.wait_line(spec.wait_for, timeout=30)
        time.sleep(settle)
        fz = Freezer(m, info)
        frozen = fz.freeze(DUMP_LEVEL_USER_UNUSED_EXCLUDE)
        try:
            write_frozen_dump(out_dir / "level0.mcdump", m, frozen, full=True, identity=identity, overwrite=True)
            write_frozen_dump(out_dir / "level24.mcdump", m, frozen, identity=identity, overwrite=True)
            if spec.vmcore if vmcore is None else vmcore:
                write_vmcore(out_dir / "vmcore.elf", m)
        finally:
            fz.release()
        log(f"{spec.name}: dumped {len(frozen.full_chunks)} level-0 and {len(frozen.chunks)} level-24 chunks")
    shutil.copyfile(image, out_dir / "mckernel.img")
    for p in out_dir.iterdir():  # the dump writers create 0600/0400 files; fixtures are for everyone
        if p.is_file():
            p.chmod(0o644)
    (out_dir / "manifest.json").write_text(json.dumps(frozen.manifest, indent=1, sort_keys=True) + "\n")
    return frozen.manifest


BINARY_FILES = ("mckernel.img", "level0.mcdump", "level24.mcdump", "vmcore.elf")


def make_fixture_set(root: Path = FIXTURES, scenarios=("multi", "panic"), *, image: Path | None = None,
                     build: bool = True, do_compress: bool = True, log=print) -> dict[str, dict]:
    """Regenerate dumps/fixtures/<scenario>/ for each scenario; returns the manifests."""
    if image is None:
        image = build_kernel() if build else DEFAULT_IMAGE
    for name in scenarios:
        if name not in SCENARIOS:
            raise LiveError(f"unknown scenario {name!r} (known: {', '.join(SCENARIOS)})")
    if not Path(image).is_file():
        raise LiveError(f"kernel image {image} does not exist (run make -C kernel)")
    # One copy of the image serves every scenario, even if kernel/build changes meanwhile.
    with tempfile.TemporaryDirectory(prefix="mckfix-") as tmp:
        frozen_image = Path(tmp) / "mckernel.img"
        shutil.copyfile(image, frozen_image)
        return _make_all(Path(root), scenarios, frozen_image, do_compress, log)


def _make_all(root: Path, scenarios, image: Path, do_compress: bool, log) -> dict[str, dict]:
    manifests = {}
    for name in scenarios:
        # Build the new set beside the old one and swap at the end, so a failed
        # run leaves the previous fixtures intact.
        work = root / f".{name}.new"
        shutil.rmtree(work, ignore_errors=True)
        try:
            manifests[name] = capture_scenario(SCENARIOS[name], image, work, log=log)
            if do_compress:
                for fname in BINARY_FILES:
                    p = work / fname
                    if p.exists():
                        compress(p)
                        log(f"{name}: {fname}.xz {os.path.getsize(str(p) + '.xz')} bytes")
            out = root / name
            out.mkdir(parents=True, exist_ok=True)
            for stale in BINARY_FILES:  # a scenario that lost its vmcore must not keep an old one
                for p in (out / stale, out / (stale + ".xz")):
                    if p.exists():
                        p.unlink()
            for p in work.iterdir():
                os.replace(p, out / p.name)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return manifests


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="make_fixtures", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=FIXTURES, help="fixture root (default dumps/fixtures)")
    ap.add_argument("--image", type=Path, help="use this kernel image instead of building one")
    ap.add_argument("--no-build", action="store_true", help="do not run make -C kernel")
    ap.add_argument("--no-compress", action="store_true", help="leave only the uncompressed files")
    ap.add_argument("scenarios", nargs="*", default=["multi", "panic"])
    args = ap.parse_args(argv)
    make_fixture_set(args.out, args.scenarios, image=args.image, build=not args.no_build,
                     do_compress=not args.no_compress)
    return 0


if __name__ == "__main__":
    from ..cli_errors import run_cli

    sys.exit(run_cli("make_fixtures", main))
