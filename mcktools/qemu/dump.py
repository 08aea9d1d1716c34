"""Write what `ihkosctl N dump` writes, from a frozen guest, plus QEMU's own vmcore.

The mcdump bytes come from the guest memory file (offset = PA), chunk by chunk
as the freeze reported them; the file format itself is mcktools.formats.mcdump.
"""

from __future__ import annotations

import os
import pwd
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import LiveError
from ..formats.mcdump import write_mcdump
from .freeze import Frozen
from .machine import Machine


@dataclass(frozen=True)
class DumpIdentity:
    """The `date`, `hostname` and `user` sections.  `now()` is what ihkosctl writes."""

    date: str
    hostname: str | None
    user: str | None

    @classmethod
    def now(cls) -> "DumpIdentity":
        # asctime(localtime(now)) without the newline: 24 characters (ABI ref. §1.3).
        try:
            user = pwd.getpwuid(os.getuid()).pw_name
        except KeyError:
            user = None
        return cls(time.asctime(time.localtime()), socket.gethostname() or None, user)


#: Fixed identity for committed fixtures, so regenerating them is reproducible.
FIXTURE_IDENTITY = DumpIdentity("Mon Jan  1 00:00:00 2024", "mcktools-ref", "root")


def write_dump(path: "str | os.PathLike[str]", machine: Machine, chunks: list[tuple[int, int]],
               kernel_base: int, *, identity: DumpIdentity | None = None,
               overwrite: bool = False) -> int:
    """Write an mcdump of `chunks` (PA, size) read from the guest memory file."""
    ident = identity or DumpIdentity.now()

    def reader_for(addr: int):
        return lambda off, size: machine.read_phys(addr + off, size)

    return write_mcdump(path, [(addr, size, reader_for(addr)) for addr, size in chunks],
                        kernel_base=kernel_base, phys_start=0, date=ident.date,
                        hostname=ident.hostname, user=ident.user, overwrite=overwrite)


def write_frozen_dump(path, machine: Machine, frozen: Frozen, *, full: bool = False,
                      identity: DumpIdentity | None = None, overwrite: bool = False) -> int:
    """Dump one freeze: its own level's chunks, or with `full` the boot-time bitmap's
    (what a level-0 dump gives: whole reserved chunks)."""
    chunks = frozen.full_chunks if full else frozen.chunks
    return write_dump(path, machine, chunks, frozen.kernel_base, identity=identity, overwrite=overwrite)


def write_vmcore(path: "str | os.PathLike[str]", machine: Machine, *, timeout: float = 120.0) -> None:
    """QEMU `dump-guest-memory` (paging=false): ELF core with physical PT_LOADs and CPU notes."""
    path = Path(path).resolve()
    if machine.qmp is None:
        raise LiveError("the machine is not running")
    if path.exists():
        path.unlink()
    machine.qmp.execute("dump-guest-memory", timeout=timeout, paging=False, protocol=f"file:{path}")
