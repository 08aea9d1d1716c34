"""Physical memory of a running QEMU guest (the reference kernel): its
memory-backend file, with the run description that says where it is.

The live-target command (`mcktools-live`, mcktools.live.target) writes a
run folder holding `target.json`:

    {"memfile": "/dev/shm/...", "qmp": ".../tool-qmp.sock", "serial": ".../serial.log",
     "image": ".../mckernel.img", "kernel_base": N, "boot_param_pa": N,
     "qemu_pid": N, "scenario": "live", "ncpus": N}

The memory file's offset is the guest physical address (kernel/PROTOCOL.md),
so reads are plain mmap reads that see the guest's writes as they happen:
nothing is frozen to read.  QMP (freeze, stop/cont) is the freezer's
business (mcktools.live.qemu), not the source's.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Optional

from ...errors import LiveError
from .raw import RawFileSource

RUN_FILE = "target.json"


@dataclass(frozen=True)
class QemuRun:
    """What a live-target run folder says about its guest."""

    folder: str
    memfile: str
    qmp: Optional[str]
    serial: Optional[str]
    image: Optional[str]
    kernel_base: Optional[int]
    boot_param_pa: Optional[int]
    qemu_pid: Optional[int]
    scenario: Optional[str] = None
    ncpus: Optional[int] = None

    @classmethod
    def load(cls, folder: "str | os.PathLike[str]") -> "QemuRun":
        folder = os.fspath(folder)
        path = folder if folder.endswith(".json") else os.path.join(folder, RUN_FILE)
        try:
            with open(path) as f:
                data = json.load(f)
        except FileNotFoundError:
            raise LiveError(f"{folder} is not a live QEMU run folder (no {RUN_FILE}); start one with "
                            "mcktools-live and use the folder it prints") from None
        except (OSError, ValueError) as exc:
            raise LiveError(f"cannot read {path}: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("memfile"), str):
            raise LiveError(f"{path} does not describe a QEMU guest (no 'memfile')")

        def opt_int(key: str) -> Optional[int]:
            v = data.get(key)
            return v if isinstance(v, int) and not isinstance(v, bool) else None

        def opt_str(key: str) -> Optional[str]:
            v = data.get(key)
            return v if isinstance(v, str) else None

        run = cls(os.path.dirname(os.path.abspath(path)), data["memfile"], opt_str("qmp"), opt_str("serial"),
                  opt_str("image"), opt_int("kernel_base"), opt_int("boot_param_pa"), opt_int("qemu_pid"),
                  opt_str("scenario"), opt_int("ncpus"))
        run.check_alive()
        return run

    def to_json(self) -> str:
        d = {k: getattr(self, k) for k in ("memfile", "qmp", "serial", "image", "kernel_base",
                                          "boot_param_pa", "qemu_pid", "scenario", "ncpus")}
        return json.dumps(d, indent=1)

    def alive(self) -> bool:
        if self.qemu_pid is None:
            return os.path.exists(self.memfile)
        try:
            os.kill(self.qemu_pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def check_alive(self) -> None:
        if not self.alive() or not os.path.exists(self.memfile):
            raise LiveError(f"the QEMU guest of {self.folder} is not running any more "
                            f"(memory file {self.memfile} or QEMU pid {self.qemu_pid} is gone)")


class QemuGuestSource(RawFileSource):
    """A PhysicalSource over a running guest's RAM file (whole file from PA 0).

    `kernel_base` (from the run description) lets Target skip the build-id
    search; the Target still checks the image against memory."""

    def __init__(self, run: QemuRun):
        try:
            super().__init__(run.memfile)
        except FileNotFoundError:
            raise LiveError(f"guest memory file {run.memfile} is gone (QEMU stopped?)") from None
        except PermissionError:
            raise LiveError(f"no permission to read the guest memory file {run.memfile} "
                            "(run as the user who started the guest)") from None
        self.run = run
        self.kernel_base = run.kernel_base
        self.description = f"live QEMU guest ({run.folder})"
        self.live = True


def open_qemu_source(folder: "str | os.PathLike[str]") -> QemuGuestSource:
    return QemuGuestSource(QemuRun.load(folder))
