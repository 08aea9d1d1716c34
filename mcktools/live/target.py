"""A live McKernel for humans: boot a reference-kernel scenario under QEMU,
say how to point the tools at it, and keep it running until Ctrl-C.

    mcktools-live [--scenario live] [--smp 2] [--image IMG]
    python3 -m mcktools.live.target ...

The run folder it prints holds `target.json` (mcktools.memory.sources.qemu),
which is what `mcps --qemu DIR`, `mcinspect --qemu DIR ...`, `mcdump create
--qemu DIR` and `MCKTOOLS_QEMU_RUN=DIR eclair -i` read.  QEMU, the memory
file and the folder go away when this command ends (Ctrl-C, SIGTERM, or a
kill of this process: QEMU dies with its parent).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Iterator, Optional

from ..errors import LiveError
from ..memory.sources.qemu import RUN_FILE, QemuRun
from ..qemu.machine import Machine, MachineConfig

REPO = Path(__file__).resolve().parents[2]
DEFAULT_IMAGE = REPO / "kernel" / "build" / "mckernel.img"
#: environment variable naming a run folder (MCKTOOLS_QEMU already names the QEMU binary)
RUN_ENV = "MCKTOOLS_QEMU_RUN"


@contextlib.contextmanager
def live_guest(image: "str | os.PathLike[str]" = DEFAULT_IMAGE, *, scenario: str = "live", ncpus: int = 2,
               timeout: float = 60.0) -> Iterator[tuple[Machine, QemuRun, dict]]:
    """Boot `scenario`, wait for READY, write the run folder; yields
    (machine, run, setup manifest) and shuts QEMU down on exit."""
    image = Path(image)
    if not image.is_file():
        raise LiveError(f"kernel image {image} does not exist (run make -C kernel)")
    cfg = MachineConfig(image=str(image), scenario=scenario, ncpus=ncpus, keep_memfile=True, tool_qmp=True)
    with Machine(cfg) as m:
        assert m.workdir is not None and m.proc is not None
        # The tools read symbols from this copy, so a rebuild of kernel/ meanwhile
        # cannot hand them an image that does not match the running guest.
        own_image = m.workdir / "mckernel.img"
        shutil.copyfile(image, own_image)
        manifest = m.wait_ready(timeout=timeout)
        memfile = m.memfile_path
        if memfile is None:
            raise LiveError("the guest memory file has no name (keep_memfile did not take)")
        run = QemuRun(folder=str(m.workdir), memfile=memfile, qmp=m.tool_qmp_path,
                      serial=str(m.workdir / "serial.log"), image=str(own_image),
                      kernel_base=m.kernel_base, boot_param_pa=manifest.get("boot_param_pa"),
                      qemu_pid=m.proc.pid, scenario=scenario, ncpus=ncpus)
        tmp = m.workdir / (RUN_FILE + ".tmp")
        tmp.write_text(run.to_json() + "\n")
        os.replace(tmp, m.workdir / RUN_FILE)
        yield m, run, manifest


def instructions(run: QemuRun) -> str:
    d = run.folder
    return "\n".join([
        f"McKernel reference kernel running under QEMU (scenario {run.scenario}, {run.ncpus} CPUs).",
        f"Run folder: {d}",
        "",
        "Point the tools at it:",
        f"  mcps --qemu {d}                       (or: export {RUN_ENV}={d}; mcps)",
        f"  mcinspect --qemu {d} info | kmsg | mem PID | vtop ...",
        f"  mcdump create --qemu {d} [-d 0|24] [-o FILE]",
        f"  {RUN_ENV}={d} eclair -i -k {run.image}",
        "",
        "Ctrl-C here shuts the guest down.",
    ])


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(prog="mcktools-live", description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="live", help="reference-kernel scenario (live, multi, panic)")
    ap.add_argument("--smp", "--ncpus", dest="ncpus", type=int, default=2, help="number of CPUs")
    ap.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="kernel image (default kernel/build)")
    ap.add_argument("--json", action="store_true", help="print the run description as one JSON line instead")
    args = ap.parse_args(argv)
    if args.ncpus < 1 or args.ncpus > 16:
        raise LiveError(f"--smp {args.ncpus}: give 1 to 16 CPUs")

    def stop(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, stop)
    try:
        with live_guest(args.image, scenario=args.scenario, ncpus=args.ncpus) as (m, run, _):
            if args.json:
                print(json.dumps(json.loads(run.to_json()) | {"folder": run.folder}), flush=True)
            else:
                print(instructions(run), flush=True)
            while m.alive():
                time.sleep(0.2)
            print("QEMU exited.", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        return 0   # Ctrl-C or SIGTERM: the guest was shut down on the way out
    finally:
        signal.signal(signal.SIGTERM, old)


def console_main() -> None:
    from ..cli_errors import run_cli

    sys.exit(run_cli("mcktools-live", main))


if __name__ == "__main__":
    console_main()
