"""Command line for the QEMU harness.

    python3 -m mcktools.qemu boot [--scenario live] [--ncpus 4]
        boot and keep running until Ctrl-C; prints one JSON line with the memory
        file, the spare QMP socket and the serial log, for live tools
    python3 -m mcktools.qemu dump [--scenario multi] [--ncpus 4] [-d 0|24] [--vmcore F] OUT
        boot, wait for READY, freeze, write OUT as `ihkosctl dump -d LEVEL` does, release
    python3 -m mcktools.qemu fixtures [...]   same as dumps/make_fixtures.py
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

from ..cli_errors import run_cli
from .dump import write_frozen_dump, write_vmcore
from .fixtures import DEFAULT_IMAGE
from .fixtures import main as fixtures_main
from .freeze import Freezer
from .imageinfo import image_info
from .machine import Machine, MachineConfig


def _common(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    ap.add_argument("--scenario", default="multi")
    ap.add_argument("--ncpus", type=int, default=4)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["fixtures"]:
        return fixtures_main(argv[1:])
    ap = argparse.ArgumentParser(prog="python3 -m mcktools.qemu", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    boot = sub.add_parser("boot", help="boot and keep running until interrupted")
    _common(boot)
    dump = sub.add_parser("dump", help="boot, freeze and write one mcdump")
    _common(dump)
    dump.add_argument("-d", "--level", type=int, default=0, choices=(0, 24))
    dump.add_argument("--vmcore", type=Path, help="also write QEMU's dump-guest-memory ELF here")
    dump.add_argument("out", type=Path)
    sub.add_parser("fixtures", help="regenerate dumps/fixtures (see dumps/make_fixtures.py)")
    args = ap.parse_args(argv)

    if args.cmd == "boot":
        cfg = MachineConfig(image=str(args.image), scenario=args.scenario, ncpus=args.ncpus,
                            keep_memfile=True, tool_qmp=True)
        with Machine(cfg) as m:
            man = m.wait_ready()
            print(json.dumps({"memfile": m.memfile_path, "qmp": m.tool_qmp_path,
                              "serial": str(m.workdir / "serial.log"), "image": str(args.image),
                              "kernel_base": m.kernel_base, "boot_param_pa": man.get("boot_param_pa"),
                              "qemu_pid": m.proc.pid}), flush=True)
            signal.signal(signal.SIGTERM, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
            try:
                while m.alive():
                    time.sleep(0.2)
            except KeyboardInterrupt:
                pass
        return 0

    cfg = MachineConfig(image=str(args.image), scenario=args.scenario, ncpus=args.ncpus)
    with Machine(cfg) as m:
        m.wait_ready()
        fz = Freezer(m, image_info(str(args.image)))
        frozen = fz.freeze(args.level)
        try:
            write_frozen_dump(args.out, m, frozen)
            if args.vmcore:
                write_vmcore(args.vmcore, m)
        finally:
            fz.release()
    print(f"{args.out}: {len(frozen.chunks)} chunks, level {args.level}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli("mcktools.qemu", main))
