"""Freezing the QEMU reference kernel from a process other than the one that
started it, with the harness's own NMI protocol (mcktools.qemu.freeze).

The harness Freezer drives a `Machine`: guest memory through the
memory-backend file, QMP, and the serial log for the protocol markers.  A
live tool only has the run description (mcktools.memory.sources.qemu.QemuRun),
so `RemoteMachine` is a Machine attached to an already running guest: it maps
the memory file read-write, tails the serial file, and opens the spare QMP
socket for each command only (QEMU serves one client per socket, and the
freeze watchdog needs that socket if this tool dies).  `QemuFreezer` adapts
the harness Freezer to the live Freezer contract (mcktools.live.freeze).
"""

from __future__ import annotations

import mmap
import os
import time
from pathlib import Path
from typing import Any, Optional

from ..errors import LiveError
from ..memory.sources.qemu import QemuRun
from ..qemu.freeze import (
    COMPLETED, DUMP_LEVEL_ALL, NMI_MODE_RESUME, Freezer as HarnessFreezer, Frozen as FrozenState,
)
from ..qemu.imageinfo import image_info
from ..qemu.machine import Machine, MachineConfig, SerialLog
from ..qemu.qmp import QMPClient


#: how long release() waits for a freeze that was cut short to complete
LATE_FREEZE_WAIT = 5.0


class OneShotQMP:
    """`execute()` like QMPClient, connecting for each command and closing right after."""

    def __init__(self, path: Optional[str]):
        self.path = path

    def execute(self, command: str, timeout: Optional[float] = None, **arguments: Any) -> Any:
        if not self.path:
            raise LiveError("the QEMU run has no QMP socket for tools (boot it with mcktools-live)")
        client = QMPClient(self.path, timeout=timeout or 10.0)
        try:
            client.connect(wait=5.0)
            return client.execute(command, timeout=timeout, **arguments)
        finally:
            client.close()


class RemoteMachine(Machine):
    """A Machine view of a guest some other process started (never stops QEMU)."""

    def __init__(self, run: QemuRun):
        run.check_alive()
        image = run.image or ""
        super().__init__(MachineConfig(image=image, scenario=run.scenario or "live", ncpus=run.ncpus or 1))
        self.run = run
        if run.kernel_base is not None:
            self.kernel_base = run.kernel_base
        try:
            fd = os.open(run.memfile, os.O_RDWR | os.O_CLOEXEC)
        except PermissionError:
            raise LiveError(f"no permission to write the guest memory file {run.memfile}: freezing "
                            "needs write access (run as the user who started the guest)") from None
        except OSError as exc:
            raise LiveError(f"cannot open the guest memory file {run.memfile}: {exc.strerror}") from None
        try:
            self.mem = mmap.mmap(fd, 0, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        self.shm_path = run.memfile
        self.qmp = OneShotQMP(run.qmp)  # type: ignore[assignment]
        if not run.serial:
            raise LiveError("the QEMU run has no serial log (needed for the freeze protocol markers)")
        self.serial = SerialLog(Path(run.serial))

    def alive(self) -> bool:
        return self.run.alive()

    @property
    def memfile_path(self) -> Optional[str]:
        return self.run.memfile if os.path.exists(self.run.memfile) else None

    @property
    def tool_qmp_path(self) -> Optional[str]:
        return self.run.qmp

    def close(self) -> None:
        if self.mem is not None:
            try:
                self.mem.close()
            except BufferError:
                pass
            self.mem = None


class QemuFreezer:
    """The live Freezer contract over the harness's NMI dump protocol.

    freeze() is idempotent (a second call while frozen does nothing),
    release() is harmless when nothing is frozen, release_spec() is the
    "qemu" kind for the watchdog.  `.state` is the harness's record of the
    current freeze (chunks from the kernel's bitmap, frozen manifest)."""

    def __init__(self, run: QemuRun, image: Optional[str] = None, *, level: int = DUMP_LEVEL_ALL,
                 pause: bool = True, timeout: float = 30.0):
        image = image or run.image
        if not image or not os.path.isfile(image):
            raise LiveError(f"kernel image {image!r} of the QEMU guest does not exist")
        self.level = int(level)
        self.timeout = timeout
        self._attempted = False
        self.machine = RemoteMachine(run)
        try:
            self._fz = HarnessFreezer(self.machine, image_info(image), pause=pause)
            if self._fz.completion_flag() == COMPLETED:
                # The bitmap snapshot taken above would be the frozen one, and the
                # freeze belongs to someone else: refuse rather than fight over it.
                raise LiveError("the QEMU guest is already frozen by another tool")
        except BaseException:
            self.machine.close()
            raise

    @property
    def state(self) -> Optional[FrozenState]:
        return self._fz.frozen

    @property
    def is_frozen(self) -> bool:
        return self._fz.frozen is not None

    def release_spec(self) -> Optional[dict]:
        return self._fz.release_spec()

    def freeze(self) -> None:
        if self._fz.frozen is not None:
            return
        self._attempted = True
        self._fz.freeze(self.level, timeout=self.timeout)

    def release(self) -> None:
        if self.machine.mem is None:
            return
        if self._attempted and self._fz.completion_flag() != COMPLETED:
            # A freeze cut short (timeout, signal) may still complete: let it, then
            # release it, rather than leave CPUs to park after we have gone.
            deadline = time.monotonic() + LATE_FREEZE_WAIT
            while self._fz.completion_flag() != COMPLETED and time.monotonic() < deadline \
                    and self.machine.alive():
                time.sleep(0.01)
        released = self._fz.release(timeout=self.timeout)
        if not released and self._attempted:
            # Never completed: RESUME lets any CPU still on its way through the NMI return.
            self.machine.write_i32(self._fz.nmi_mode_pa, NMI_MODE_RESUME)
            if self.machine.qmp.execute("query-status").get("status") == "paused":
                self.machine.qmp.execute("cont")
        self._attempted = False

    def read_phys(self, pa: int, size: int) -> bytes:
        return self.machine.read_phys(pa, size)

    def close(self) -> None:
        self.machine.close()
