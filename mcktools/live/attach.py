"""Attach the model to a running McKernel: /dev/mcosN or a QEMU guest.

`open_live(kernel=None, os_index=0, qemu=None)` returns a `LiveTarget`: a
model Target over the live memory source, plus `freezer(level)` for the
operations that must freeze (dumps, eclair stops).  Reading never freezes.

Which live kernel:
  1. `qemu` (the --qemu DIR option) or $MCKTOOLS_QEMU_RUN: a reference-kernel
     guest started by `mcktools-live` (its run folder);
  2. otherwise the IHK device /dev/mcos<os_index>.
     ($MCKTOOLS_IHK_DEVICE and $MCKTOOLS_IHK_IOCTL replace the device path and
     the ioctl implementation -- "module:function" -- for tests and demos with
     mcktools.live.fake_ihk.)

Which kernel image (first that exists):
  1. `kernel` (--kernel IMG), 2. $MCKERNEL_IMG,
  3. for a QEMU guest, the image copy in its run folder,
  4. the IHK install: $MCKERNEL_DIR/mckernel.img, then
     <prefix>/smp-x86/kernel/mckernel.img and <prefix>/smp-arm64/kernel/mckernel.img
     for prefix $IHK_PREFIX, /opt/ppos, /usr/local (McKernel's default install
     prefix is /opt/ppos; `mcps` upstream uses <MCKERNELDIR>/mckernel.img),
  5. ./mckernel.img.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ..errors import DebugInfoError, LiveError, McktoolsError, UnreadableAddress

QEMU_RUN_ENV = "MCKTOOLS_QEMU_RUN"
DEVICE_ENV = "MCKTOOLS_IHK_DEVICE"
IOCTL_ENV = "MCKTOOLS_IHK_IOCTL"
INSTALL_PREFIXES = ("/opt/ppos", "/usr/local")
ARCH_DIRS = ("smp-x86", "smp-arm64")


def image_candidates(kernel: Optional[str] = None, qemu_image: Optional[str] = None) -> list:
    """Every place looked at, in order (for the error message as well)."""
    out: list = []
    if kernel:
        return [kernel]
    env = os.environ.get("MCKERNEL_IMG")
    if env:
        return [env]
    if qemu_image:
        out.append(qemu_image)
    mdir = os.environ.get("MCKERNEL_DIR")
    if mdir:
        out.append(os.path.join(mdir, "mckernel.img"))
    prefixes = [os.environ["IHK_PREFIX"]] if os.environ.get("IHK_PREFIX") else []
    for prefix in prefixes + list(INSTALL_PREFIXES):
        for arch in ARCH_DIRS:
            out.append(os.path.join(prefix, arch, "kernel", "mckernel.img"))
    out.append("mckernel.img")
    return out


def find_kernel_image(kernel: Optional[str] = None, qemu_image: Optional[str] = None) -> str:
    cands = image_candidates(kernel, qemu_image)
    for path in cands:
        if os.path.isfile(path):
            return path
    if kernel or os.environ.get("MCKERNEL_IMG"):
        raise McktoolsError(f"kernel image {cands[0]} does not exist")
    raise McktoolsError("no kernel image: give --kernel IMG or set MCKERNEL_IMG (looked in "
                        + ", ".join(cands) + ")")


@dataclass
class LiveTarget:
    """A Target over live memory and how to freeze that kernel."""

    target: Any
    kind: str                       # "ihk" or "qemu"
    make_freezer: Callable[[int], Any] = field(repr=False)
    source: Any = None

    def freezer(self, level: int = 0) -> Any:
        return self.make_freezer(level)

    @property
    def description(self) -> str:
        return self.target.description

    def close(self) -> None:
        self.target.close()


def ihk_source(os_index: int):
    from ..memory.sources.ihkdev import IhkDeviceSource, device_path

    path = os.environ.get(DEVICE_ENV)
    if path:
        path = path.replace("{os}", str(os_index))
    try:
        return IhkDeviceSource(os_index, path=path or device_path(os_index),
                               ioctl=os.environ.get(IOCTL_ENV) or None)
    except LiveError as exc:
        if "no permission" not in str(exc):
            raise
        raise LiveError(f"{exc}; reading (mcps, mcinspect) needs only access to the device, while "
                        "freezing (mcdump create, eclair -i) also needs root for IHK_OS_DUMP") from None


def _kernel_base_via_driver(source: Any, image: Any) -> Optional[int]:
    """x86_kernel_phys_base read through the driver's kernel-image window, which
    the driver translates with the real kernel_base (no root, no freeze)."""
    try:
        va = image.symbol("x86_kernel_phys_base")
        value = struct.unpack("<Q", source.read_virt(va, 8))[0]
    except (DebugInfoError, UnreadableAddress, LiveError):
        return None
    return value or None


def open_live(kernel: Optional[str] = None, *, os_index: int = 0, qemu: Optional[str] = None,
              force: bool = False) -> LiveTarget:
    from ..debuginfo import Image
    from ..model.target import Target

    qemu = qemu or os.environ.get(QEMU_RUN_ENV) or None
    if os_index < 0:
        raise McktoolsError(f"--os {os_index}: OS indexes start at 0")
    if qemu:
        from ..memory.sources.qemu import QemuGuestSource, QemuRun
        run = QemuRun.load(qemu)
        path = find_kernel_image(kernel, run.image)
        image = Image.open(path)
        source = QemuGuestSource(run)

        def qemu_freezer(level: int) -> Any:
            from .qemu import QemuFreezer
            return QemuFreezer(run, path, level=level)
        make, kind = qemu_freezer, "qemu"
    else:
        path = find_kernel_image(kernel)   # before the device: needs nothing from the node
        source = ihk_source(os_index)
        try:
            image = Image.open(path)
        except BaseException:
            source.close()
            raise

        def ihk_freezer(level: int) -> Any:
            from .ihk import IhkFreezer
            return IhkFreezer(source, level)
        make, kind = ihk_freezer, "ihk"
    try:
        kb = None if kind == "qemu" else _kernel_base_via_driver(source, image)
        target = Target(image, source, force=force, kernel_base=kb)
    except BaseException:
        source.close()
        raise
    target.live = True
    return LiveTarget(target, kind, make, source)
