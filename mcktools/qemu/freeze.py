"""The dump freeze as IHK's Linux driver performs it, and the bitmap → chunk rule.

Linux side of ABI reference §2: set `boot_param->dump_level` and McKernel's
`nmi_mode` through shared memory, NMI every CPU, wait for the last CPU to set
`dump_page_set.completion_flag`, turn the page bitmap into chunks (§2.6), and
later release the CPUs with `nmi_mode = 4`.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field
from typing import Callable

from ..errors import LiveError
from .imageinfo import ImageInfo
from .machine import Machine

PAGE = 4096
NMI_MODE_DUMP = 0
NMI_MODE_RESUME = 4
DUMP_LEVEL_ALL = 0
DUMP_LEVEL_USER_UNUSED_EXCLUDE = 24
COMPLETED = 1


@dataclass
class BitmapBlock:
    """One `ihk_dump_page`: the include-bits of one reserved chunk (bit 1 = dump the page)."""

    start: int
    words: list[int]

    @property
    def map_count(self) -> int:
        return len(self.words)

    def encode(self) -> bytes:
        return struct.pack(f"<QQ{len(self.words)}Q", self.start, len(self.words), *self.words)


def bitmap_to_chunks(blocks: list[BitmapBlock]) -> list[tuple[int, int]]:
    """Turn bitmap blocks into (addr, size) runs exactly as IHK's DUMP_QUERY_MEM_AREAS does.

    Blocks are scanned in order, words from 0 up, bits 0..63; a run of set bits
    is one chunk; runs never continue from one block into the next (§2.6), so
    two touching reserved chunks stay two chunks.
    """
    out: list[tuple[int, int]] = []
    full = (1 << 64) - 1
    for block in blocks:
        run_start: int | None = None  # page index within the block
        for j, word in enumerate(block.words):
            if word == full and run_start is not None:
                continue
            if word == 0 and run_start is None:
                continue
            for k in range(64):
                bit = (word >> k) & 1
                page = j * 64 + k
                if bit and run_start is None:
                    run_start = page
                elif not bit and run_start is not None:
                    out.append((block.start + run_start * PAGE, (page - run_start) * PAGE))
                    run_start = None
        if run_start is not None:
            end = len(block.words) * 64
            out.append((block.start + run_start * PAGE, (end - run_start) * PAGE))
    return out


def parse_bitmap(read: Callable[[int, int], bytes], phy_page: int, count: int) -> list[BitmapBlock]:
    """Read `count` packed `ihk_dump_page` blocks starting at PA `phy_page`."""
    blocks = []
    pa = phy_page
    for _ in range(count):
        start, map_count = struct.unpack("<QQ", read(pa, 16))
        if map_count > (1 << 24):
            raise LiveError(f"dump bitmap block at {pa:#x} claims {map_count} words: corrupt bitmap")
        words = list(struct.unpack(f"<{map_count}Q", read(pa + 16, 8 * map_count)))
        blocks.append(BitmapBlock(start, words))
        pa += 16 + 8 * map_count
    return blocks


@dataclass
class Frozen:
    """What one freeze produced: the kernel's bitmap verdict and its frozen manifest."""

    level: int
    blocks: list[BitmapBlock]
    chunks: list[tuple[int, int]]
    full_chunks: list[tuple[int, int]]  # the same freeze read with the boot-time (all-set) bitmap
    kernel_base: int
    manifest: dict
    frozen_at: float = field(default_factory=time.monotonic)


class Freezer:
    """Drive the NMI dump protocol of one running Machine.

    Create it after MCKTOOLS-READY: it snapshots the boot-time bitmap then, which
    the release step writes back (PROTOCOL.md step 5) so later dumps are complete.
    """

    def __init__(self, machine: Machine, image: ImageInfo, *, pause: bool = True):
        self.m = machine
        self.image = image
        self.pause = pause
        bp = image.struct("smp_boot_param")
        dps = image.struct("ihk_dump_page_set")
        # Linux finds boot_param through the image symbol boot_param_pa (PROTOCOL.md).
        sym_pa = image.image_pa(image.symbol("boot_param_pa"), machine.kernel_base)
        self.boot_param_pa = machine.u64(sym_pa)
        if self.boot_param_pa == 0 or self.boot_param_pa >= len(machine.mem):
            raise LiveError(f"boot_param_pa holds {self.boot_param_pa:#x}: kernel did not publish boot_param")
        self.dump_level_pa = self.boot_param_pa + bp["dump_level"]
        self.nmi_mode_addr_pa = self.boot_param_pa + bp["nmi_mode_addr"]
        dps_pa = self.boot_param_pa + bp["dump_page_set"]
        self.completion_pa = dps_pa + dps["completion_flag"]
        self.count_pa = dps_pa + dps["count"]
        self.phy_page_pa = dps_pa + dps["phy_page"]
        self.boot_blocks = self.read_bitmap()
        self._snapshot = b"".join(b.encode() for b in self.boot_blocks)
        self.frozen: Frozen | None = None

    # -- shared-memory fields --------------------------------------------
    @property
    def nmi_mode_pa(self) -> int:
        return self.m.u64(self.nmi_mode_addr_pa)

    def completion_flag(self) -> int:
        return self.m.u32(self.completion_pa)

    def read_bitmap(self) -> list[BitmapBlock]:
        count = self.m.u32(self.count_pa)
        return parse_bitmap(self.m.read_phys, self.m.u64(self.phy_page_pa), count)

    def _wait(self, what: str, cond: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if not self.m.alive():
                raise LiveError(f"QEMU exited while waiting for {what}")
            if time.monotonic() > deadline:
                tail = self.m.serial.text()[-600:] if self.m.serial else ""
                raise LiveError(f"timed out after {timeout} s waiting for {what}; console tail:\n{tail}")
            time.sleep(0.005)

    # -- the protocol -----------------------------------------------------
    def freeze(self, level: int = DUMP_LEVEL_ALL, *, timeout: float = 30.0) -> Frozen:
        """Freeze every CPU for a dump at `level` (0 or 24) and return the chunks to dump."""
        if level not in (DUMP_LEVEL_ALL, DUMP_LEVEL_USER_UNUSED_EXCLUDE):
            raise LiveError(f"dump level {level} is not supported (0 or 24, as IHK's DUMP_SET_LEVEL)")
        if self.frozen is not None or self.completion_flag() == COMPLETED:
            raise LiveError("the kernel is already frozen for a dump; release it first")
        self.m.serial.poll()
        mark = len(self.m.serial.lines)
        self.m.write_i32(self.dump_level_pa, level)
        nmi_pa = self.nmi_mode_pa
        self.m.write_i32(nmi_pa, NMI_MODE_DUMP)
        self.m.qmp.execute("inject-nmi")
        self._wait("completion_flag (the last CPU finishing the freeze)",
                   lambda: self.completion_flag() == COMPLETED, timeout)
        _, manifest = self.m.wait_json("MCKTOOLS-FROZEN-MANIFEST", timeout=timeout, start=mark)
        if self.pause:
            # Every CPU already spins in its NMI handler; stopping the VM as well
            # makes "memory at freeze time" exact while the host copies it.
            self.m.qmp.execute("stop")
        blocks = self.read_bitmap()
        self.frozen = Frozen(level=level, blocks=blocks, chunks=bitmap_to_chunks(blocks),
                             full_chunks=bitmap_to_chunks(self.boot_blocks),
                             kernel_base=self.m.kernel_base, manifest=manifest)
        return self.frozen

    def release(self, *, timeout: float = 30.0, restore_bitmap: bool = True) -> bool:
        """DUMP_NMI_CONT: let every CPU return to where it was, then reset the bitmap.

        Harmless when nothing is frozen (returns False), like IHK's DUMP_NMI_CONT,
        which acts only when completion_flag is set: the freeze-safety code in
        mcktools.live may call it more than once.
        """
        if self.completion_flag() != COMPLETED:
            self.frozen = None
            return False
        self.m.serial.poll()
        mark = len(self.m.serial.lines)
        if self.pause and self.m.qmp.execute("query-status").get("status") == "paused":
            self.m.qmp.execute("cont")
        self.m.write_i32(self.nmi_mode_pa, NMI_MODE_RESUME)
        self.m.wait_line("MCKTOOLS-RESUMED", timeout=timeout, start=mark)
        self._wait("CPU 0 to reset completion_flag", lambda: self.completion_flag() != COMPLETED, timeout)
        if restore_bitmap:
            self.m.write_phys(self.m.u64(self.phy_page_pa), self._snapshot)
        self.frozen = None
        return True

    def release_spec(self) -> dict | None:
        """The mcktools.live "qemu" release description for this guest (docs/interfaces.md,
        live section), so a watchdog process can release it if we die; None when the
        memory file has no path (MachineConfig.keep_memfile is off)."""
        memfile = self.m.memfile_path
        if memfile is None:
            return None
        spec = {"kind": "qemu", "memfile": memfile, "nmi_mode_pa": self.nmi_mode_pa,
                "writes": [[self.m.u64(self.phy_page_pa), self._snapshot.hex()]]}
        if self.pause and self.m.tool_qmp_path:
            spec["qmp"] = self.m.tool_qmp_path
        return spec
