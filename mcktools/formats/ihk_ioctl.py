"""Byte layouts of the /dev/mcosN debug ioctls (IHK_OS_DUMP, IHK_OS_READ_KADDR, ...).

The same ABI is stated once in C in kmod/ihk_debug_abi.h; this module packs
those structures for Python, and tests/test_live_ioctl_abi.py checks the two
against each other with a real compiler.  Bytes only: which request to send
when, and what the answers mean for McKernel, lives in
mcktools.memory.sources.ihkdev.

Every layout is LP64 little-endian (x86_64 and AArch64 agree), written with
explicit padding ("x") so that no platform-dependent alignment is involved.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import ClassVar, Sequence

from ..errors import FormatError

# --- request numbers (plain integers, not _IOC encoded) -------------------
IHK_OS_QUERY_STATUS = 0x112A03
IHK_OS_DUMP = 0x112A06
IHK_OS_STATUS = 0x112A14
IHK_OS_READ_KMSG = 0x112A20
IHK_OS_CLEAR_KMSG = 0x112A21
IHK_OS_QUERY_CPU = 0x112A26
IHK_OS_QUERY_MEM = 0x112A27
IHK_OS_FREEZE = 0x112A30
IHK_OS_THAW = 0x112A31
IHK_OS_GET_USAGE = 0x112A32
IHK_OS_GET_CPU_USAGE = 0x112A33
IHK_OS_GET_BUILDID = 0x112A37
IHK_OS_GET_NUM_CPUS = 0x112A38
IHK_OS_READ_KADDR = 0x112A39

#: Requests the driver lets non-root users issue (the rest, IHK_OS_DUMP
#: included, need euid 0).  Only the ones this package sends are listed.
UNPRIVILEGED_REQUESTS = frozenset({
    IHK_OS_QUERY_STATUS, IHK_OS_STATUS, IHK_OS_READ_KMSG, IHK_OS_CLEAR_KMSG,
    IHK_OS_QUERY_CPU, IHK_OS_QUERY_MEM, IHK_OS_GET_USAGE, IHK_OS_GET_CPU_USAGE,
    IHK_OS_GET_BUILDID, IHK_OS_GET_NUM_CPUS, IHK_OS_READ_KADDR,
})

IHK_KMSG_SIZE = 4190208
#: The dump writer copies chunks in blocks of at most this many bytes.
IHK_DUMP_READ_BLOCK = 0x100000

# x86_64 image window of the driver's vtop (READ_KADDR with VIRT).
IHK_X86_MAP_KERNEL_START = 0xFFFFFFFFFE800000
IHK_X86_MODULES_END = 0xFFFFFFFFFF000000


class DumpCmd(enum.IntEnum):
    """Sub-commands of IHK_OS_DUMP (`ihk_dump_args.cmd`)."""

    NMI = 1
    QUERY = 2
    READ = 3
    QUERY_ALL = 4
    READ_ALL = 5
    SET_LEVEL = 6
    QUERY_NUM_MEM_AREAS = 7
    QUERY_MEM_AREAS = 8
    QUERY_PHYS_START = 9
    NMI_CONT = 10


class DumpLevel(enum.IntEnum):
    ALL = 0
    USER_UNUSED_EXCLUDE = 24


class ReadKaddrFlag(enum.IntEnum):
    VIRT = 0
    PHYS = 1


class NmiMode(enum.IntEnum):
    """Values of McKernel's `nmi_mode` word during the freeze handshake."""

    DUMP = 0
    FREEZE = 1
    THAW = 2
    STOP = 3
    RESUME = 4


class DumpPageSetState(enum.IntEnum):
    """`ihk_dump_page_set.completion_flag`."""

    INCOMPLETE = 0
    COMPLETED = 1


class OsStatus(enum.IntEnum):
    """`enum ihk_os_status`, the return value of IHK_OS_QUERY_STATUS."""

    NOT_BOOTED = 0
    LOADING = 1
    BOOTING = 2
    BOOTED = 3
    READY = 4
    RUNNING = 5
    FREEZING = 6
    FROZEN = 7
    SHUTDOWN = 8
    FAILED = 9
    HUNGUP = 10


def _layout(spec: Sequence[tuple[str | None, str]]) -> tuple[struct.Struct, dict[str, int]]:
    """Build a little-endian Struct and the byte offset of each named field
    from an ordered list of (name, struct code); name None marks padding."""
    offsets: dict[str, int] = {}
    fmt = "<"
    for name, code in spec:
        if name is not None:
            offsets[name] = struct.calcsize(fmt)
        fmt += code
    return struct.Struct(fmt), offsets


@dataclass
class DumpArgs:
    """`struct ihk_dump_args` (64 bytes): the argument of IHK_OS_DUMP."""

    cmd: int = 0
    level: int = 0
    start: int = 0
    size: int = 0
    buf: int = 0
    spare: tuple[int, int, int, int] = (0, 0, 0, 0)

    STRUCT, OFFSETS = _layout([("cmd", "i"), ("level", "I"), ("start", "q"), ("size", "q"),
                               ("buf", "Q"), ("spare", "4Q")])
    SIZE: ClassVar[int] = STRUCT.size

    def pack(self) -> bytes:
        try:
            return self.STRUCT.pack(self.cmd, self.level, self.start, self.size, self.buf,
                                    *self.spare)
        except struct.error as exc:
            raise FormatError(f"ihk_dump_args value out of range: {exc}") from None

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview) -> "DumpArgs":
        if len(data) < cls.SIZE:
            raise FormatError(f"ihk_dump_args needs {cls.SIZE} bytes, got {len(data)}")
        v = cls.STRUCT.unpack_from(data)
        return cls(v[0], v[1], v[2], v[3], v[4], tuple(v[5:9]))  # type: ignore[arg-type]


@dataclass
class ReadKaddrDesc:
    """`struct ihk_read_kaddr_desc` (32 bytes): the argument of IHK_OS_READ_KADDR."""

    kaddr: int = 0
    len: int = 0
    ubuf: int = 0
    flags: int = ReadKaddrFlag.PHYS

    STRUCT, OFFSETS = _layout([("kaddr", "Q"), ("len", "Q"), ("ubuf", "Q"), ("flags", "i"),
                               (None, "4x")])
    SIZE: ClassVar[int] = STRUCT.size

    def pack(self) -> bytes:
        try:
            return self.STRUCT.pack(self.kaddr, self.len, self.ubuf, self.flags)
        except struct.error as exc:
            raise FormatError(f"ihk_read_kaddr_desc value out of range: {exc}") from None

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview) -> "ReadKaddrDesc":
        if len(data) < cls.SIZE:
            raise FormatError(f"ihk_read_kaddr_desc needs {cls.SIZE} bytes, got {len(data)}")
        return cls(*cls.STRUCT.unpack_from(data))


@dataclass(frozen=True)
class MemChunk:
    """`struct ihk_dump_mem_chunk`: one physical run [addr, addr + size)."""

    addr: int
    size: int

    STRUCT, OFFSETS = _layout([("addr", "Q"), ("size", "Q")])


@dataclass
class MemChunks:
    """`struct ihk_dump_mem_chunks`: the DUMP_QUERY_MEM_AREAS answer and the
    mcdump `physchunks` payload (24-byte header, then 16 bytes per chunk)."""

    kernel_base: int
    phys_start: int = 0
    chunks: list[MemChunk] = field(default_factory=list)

    HEADER, OFFSETS = _layout([("nr_chunks", "i"), (None, "4x"), ("kernel_base", "Q"),
                               ("phys_start", "Q")])
    HEADER_SIZE: ClassVar[int] = HEADER.size
    ENTRY_SIZE: ClassVar[int] = MemChunk.STRUCT.size

    @classmethod
    def byte_size(cls, nr_chunks: int) -> int:
        return cls.HEADER_SIZE + cls.ENTRY_SIZE * nr_chunks

    def pack(self) -> bytes:
        out = bytearray(self.HEADER.pack(len(self.chunks), self.kernel_base, self.phys_start))
        for c in self.chunks:
            out += MemChunk.STRUCT.pack(c.addr, c.size)
        return bytes(out)

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview) -> "MemChunks":
        """Parse a chunk list; a count that the bytes cannot hold is a FormatError
        (the driver truncates its answer to the buffer size it was given)."""
        if len(data) < cls.HEADER_SIZE:
            raise FormatError(f"chunk list needs at least {cls.HEADER_SIZE} bytes, got {len(data)}")
        n, kernel_base, phys_start = cls.HEADER.unpack_from(data)
        if n < 0:
            raise FormatError(f"chunk list has a negative count ({n})")
        need = cls.byte_size(n)
        if len(data) < need:
            raise FormatError(f"chunk list claims {n} chunks ({need} bytes) but holds {len(data)} bytes")
        chunks = [MemChunk(*MemChunk.STRUCT.unpack_from(data, cls.HEADER_SIZE + cls.ENTRY_SIZE * i))
                  for i in range(n)]
        return cls(kernel_base, phys_start, chunks)


@dataclass
class CpuMonitor:
    """`struct ihk_os_cpu_monitor` (24 bytes), one per CPU from IHK_OS_GET_CPU_USAGE."""

    status: int
    status_bak: int
    counter: int
    ocounter: int

    STRUCT, OFFSETS = _layout([("status", "i"), ("status_bak", "i"), ("counter", "Q"),
                               ("ocounter", "Q")])
    SIZE: ClassVar[int] = STRUCT.size

    @classmethod
    def unpack_array(cls, data: bytes | bytearray | memoryview, count: int) -> list["CpuMonitor"]:
        if len(data) < cls.SIZE * count:
            raise FormatError(f"{count} CPU monitors need {cls.SIZE * count} bytes, got {len(data)}")
        return [cls(*cls.STRUCT.unpack_from(data, i * cls.SIZE)) for i in range(count)]


#: `struct ihk_os_monitor_head`: num_processors then 128 reserved words.
OS_MONITOR_STRUCT, OS_MONITOR_OFFSETS = _layout([("num_processors", "Q"), ("reserved", "128Q")])
