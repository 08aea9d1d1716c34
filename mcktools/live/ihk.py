"""Freezing a real McKernel through /dev/mcosN, the way `ihkosctl dump` does.

freeze(): DUMP_SET_LEVEL then DUMP_NMI; release(): DUMP_NMI_CONT.  The driver
makes both safe to repeat (NMI is skipped once a freeze is complete,
NMI_CONT only acts on a complete freeze), which is what the watchdog needs.
Use it as `with frozen(IhkFreezer(source, level)) as f:` and read the chunk
list and memory through `source` inside the block.
"""

from __future__ import annotations

from ..formats.ihk_ioctl import DumpLevel
from ..memory.sources.ihkdev import IhkDeviceSource, ioctl_name


class IhkFreezer:
    def __init__(self, source: IhkDeviceSource, level: int = DumpLevel.ALL):
        self.source = source
        self.level = int(level)

    def release_spec(self) -> dict:
        spec: dict = {"kind": "ihk", "os": self.source.os_index, "device": self.source.path}
        name = ioctl_name(self.source.ioctl_impl)  # raises if another process could not load it
        if name is not None:
            spec["ioctl"] = name
        return spec

    def freeze(self) -> None:
        self.source.set_level(self.level)
        self.source.nmi()

    def release(self) -> None:
        self.source.nmi_cont()
