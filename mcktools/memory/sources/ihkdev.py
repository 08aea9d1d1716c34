"""Live McKernel memory through the IHK host driver (/dev/mcosN).

Two ways in, with different costs:

* IHK_OS_READ_KADDR reads physical (or driver-translated virtual) memory while
  McKernel keeps running: no freeze, no root.  This is what `read()` uses, so
  the source serves a live node the same way a dump file does.
* IHK_OS_DUMP (root only) is the freeze path the dump writer uses: set the
  level, NMI every CPU, ask for the chunk list, copy with DUMP_READ, resume
  with DUMP_NMI_CONT.  Freezing is dangerous to leave half done, so callers
  normally go through mcktools.live.freeze.frozen() with an IhkFreezer.

Every ioctl goes through one function (`device_ioctl`, or the `ioctl=` given
to the constructor) so tests can swap in an emulator of the driver
(mcktools.live.fake_ihk).  The driver does no bounds checks on these reads; a
wild physical address can fault the host kernel, so reads are checked against
the known ranges whenever they are known.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import importlib
import os
from typing import Callable, Iterable, Union

from ...errors import LiveError, UnreadableAddress
from ...formats import ihk_ioctl as abi
from .base import PhysRange, merge_ranges

#: fd, request, argument (a mutable struct buffer or a plain int) -> ioctl return value.
IoctlFn = Callable[[int, int, Union[bytearray, int]], int]

#: READ_KADDR has no documented limit; stay at the dump writer's block size.
READ_BLOCK = abi.IHK_DUMP_READ_BLOCK

_ROOT_NOTE = ("IHK_OS_DUMP (dump level, NMI freeze/resume, chunk query, DUMP_READ) needs root; "
              "READ_KADDR and status queries only need access to the device")

# Statuses in which McKernel memory is not (or no longer) set up.
_NOT_BOOTED = {abi.OsStatus.NOT_BOOTED, abi.OsStatus.LOADING, abi.OsStatus.SHUTDOWN}


def device_ioctl(fd: int, request: int, arg: "bytearray | int") -> int:
    """The one place that calls into the IHK driver.

    A bytearray argument is passed by address and updated in place (the
    driver copies structs back out); an int is passed by value."""
    if isinstance(arg, int):
        return fcntl.ioctl(fd, request, arg)
    return fcntl.ioctl(fd, request, arg, True)


def device_path(os_index: int, dev_dir: str = "/dev") -> str:
    return os.path.join(dev_dir, f"mcos{os_index}")


def resolve_ioctl(spec: "str | IoctlFn | None") -> IoctlFn:
    """An ioctl implementation from a callable or a "module:function" name
    (the watchdog receives the name in its JSON release description)."""
    if spec is None:
        return device_ioctl
    if callable(spec):
        return spec
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise LiveError(f"ioctl implementation must be 'module:function', got {spec!r}")
    try:
        obj = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise LiveError(f"cannot load ioctl implementation {spec!r}: {exc}") from None
    if not callable(obj):
        raise LiveError(f"ioctl implementation {spec!r} is not callable")
    return obj  # type: ignore[return-value]


def ioctl_name(fn: IoctlFn) -> "str | None":
    """The importable "module:qualname" of an ioctl function, None for the real device,
    raising LiveError when another process could not load it by name."""
    if fn is device_ioctl:
        return None
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    name = f"{module}:{qualname}"
    if not module or not qualname or "<" in qualname or resolve_ioctl(name) is not fn:
        raise LiveError(f"ioctl implementation {fn!r} has no importable name to hand to another process")
    return name


class _UserBuffer:
    """A C buffer whose address goes into an ioctl struct (the driver's copy_to_user target)."""

    def __init__(self, size: int):
        self._buf = ctypes.create_string_buffer(max(size, 1))
        self.address = ctypes.addressof(self._buf)

    def take(self, size: int) -> bytes:
        return ctypes.string_at(self.address, size)


class IhkDeviceSource:
    """Physical memory of a running McKernel OS instance, read through /dev/mcosN.

    `ranges`: the physical ranges reads may touch.  When not given, the span of
    the OS memory is asked with DUMP_QUERY_ALL (root only); without root the
    ranges stay unknown, `ranges()` is empty and reads are passed to the driver
    unchecked, as IHK's own tools do.  `allow()` adds ranges later (Linux memory
    such as boot_param or the kmsg ring).
    """

    def __init__(self, os_index: int, *, path: "str | None" = None,
                 ioctl: "str | IoctlFn | None" = None,
                 ranges: "Iterable[PhysRange] | None" = None,
                 check_status: bool = True, probe_ranges: bool = True):
        self.os_index = os_index
        self.path = path or device_path(os_index)
        self._ioctl = resolve_ioctl(ioctl)
        self.description = f"live {self.path}"
        self._fd = -1
        self._block: "_UserBuffer | None" = None
        try:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise LiveError(f"McKernel OS {os_index} is not present (no {self.path})") from None
        except PermissionError:
            raise LiveError(f"no permission to open {self.path}: run as root or as the user "
                            f"who booted McKernel (mcreboot.sh hands the device to that user)") from None
        except OSError as exc:
            raise LiveError(f"cannot open {self.path}: {exc.strerror}") from None
        try:
            if check_status:
                st = self.status()
                if st in _NOT_BOOTED:
                    name = st.name if isinstance(st, abi.OsStatus) else str(st)
                    raise LiveError(f"McKernel OS {os_index} is not booted (status {name})")
            self._ranges = merge_ranges(list(ranges)) if ranges is not None else []
            if ranges is None and probe_ranges:
                self._ranges = self._probe_span()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ plumbing
    @property
    def ioctl_impl(self) -> IoctlFn:
        return self._ioctl

    def _call(self, request: int, arg: "bytearray | int", what: str,
              address: "int | None" = None, physical: bool = True) -> int:
        if self._fd < 0:
            raise LiveError(f"{self.path} is closed")
        try:
            return self._ioctl(self._fd, request, arg)
        except OSError as exc:
            code = exc.errno
            if code in (errno.EPERM, errno.EACCES):
                raise LiveError(f"{what} on {self.path} was refused: {_ROOT_NOTE}") from None
            if code == errno.EFAULT and address is not None:
                raise UnreadableAddress(address, f"{'physical' if physical else 'virtual'} address "
                                        f"{address:#x} cannot be read through {self.path}",
                                        physical=physical) from None
            if code == errno.ENOTTY:
                raise LiveError(f"{self.path} is not an IHK OS device ({what} not supported)") from None
            if code in (errno.ENODEV, errno.ENXIO):
                raise LiveError(f"McKernel OS {self.os_index} went away ({what} on {self.path})") from None
            raise LiveError(f"{what} on {self.path} failed: {exc.strerror or exc}") from None

    def _dump(self, cmd: abi.DumpCmd, **fields: int) -> tuple[abi.DumpArgs, int]:
        args = abi.DumpArgs(cmd=int(cmd), **fields)
        raw = bytearray(args.pack())
        rc = self._call(abi.IHK_OS_DUMP, raw, f"IHK_OS_DUMP {cmd.name}",
                        address=fields.get("start") if cmd in (abi.DumpCmd.READ, abi.DumpCmd.READ_ALL) else None)
        return abi.DumpArgs.unpack(raw), rc

    def _probe_span(self) -> list[PhysRange]:
        try:
            out, _ = self._dump(abi.DumpCmd.QUERY_ALL)
        except LiveError:
            return []  # not root: ranges stay unknown
        if out.size <= 0 or out.start < 0:
            return []
        return [PhysRange(out.start, out.start + out.size)]

    # ------------------------------------------------------------------ queries
    def status(self) -> "abi.OsStatus | int":
        """`enum ihk_os_status` from IHK_OS_QUERY_STATUS (an int if unknown)."""
        value = self._call(abi.IHK_OS_QUERY_STATUS, 0, "IHK_OS_QUERY_STATUS")
        try:
            return abi.OsStatus(value)
        except ValueError:
            return value

    def num_cpus(self) -> int:
        return self._call(abi.IHK_OS_GET_NUM_CPUS, 0, "IHK_OS_GET_NUM_CPUS")

    # ------------------------------------------------------------------ PhysicalSource
    def ranges(self) -> list[PhysRange]:
        return list(self._ranges)

    def allow(self, start: int, size: int) -> None:
        """Let reads touch [start, start + size) as well (e.g. Linux memory shared with McKernel)."""
        if self._ranges:
            self._ranges = merge_ranges(self._ranges + [PhysRange(start, start + size)])

    def _check_known(self, paddr: int, size: int) -> None:
        if not self._ranges:
            return
        pos, end = paddr, paddr + size
        for r in self._ranges:
            if r.start <= pos < r.end:
                pos = r.end
                if pos >= end:
                    return
        if pos < end:
            raise UnreadableAddress(pos, f"physical address {pos:#x} is outside McKernel OS "
                                    f"{self.os_index}'s memory")

    def read(self, paddr: int, size: int) -> bytes:
        """Exactly `size` bytes at physical `paddr` via READ_KADDR (no freeze)."""
        if paddr < 0 or size < 0:
            raise UnreadableAddress(paddr, f"bad physical read {paddr:#x}+{size:#x}")
        if size == 0:
            return b""
        self._check_known(paddr, size)
        return self._read_kaddr(paddr, size, abi.ReadKaddrFlag.PHYS)

    def read_virt(self, vaddr: int, size: int) -> bytes:
        """Read a McKernel kernel VA, translated by the driver.

        The driver only knows two maps: the kernel image window and Linux's
        direct map.  Anything else (MAP_ST, fixed map, user space) comes back
        as the wrong memory, so user-half addresses are refused here; other
        VAs are the caller's responsibility (translate them with the page
        tables and use read())."""
        if vaddr < 0xFFFF800000000000 or size < 0:
            raise UnreadableAddress(vaddr, f"virtual address {vaddr:#x} cannot be read through the "
                                    "driver (only kernel image and direct-map addresses)", physical=False)
        if size == 0:
            return b""
        return self._read_kaddr(vaddr, size, abi.ReadKaddrFlag.VIRT)

    def _read_kaddr(self, addr: int, size: int, flag: abi.ReadKaddrFlag) -> bytes:
        out = bytearray()
        buf = self._block_buffer(min(size, READ_BLOCK))
        while len(out) < size:
            n = min(READ_BLOCK, size - len(out))
            at = addr + len(out)
            desc = bytearray(abi.ReadKaddrDesc(kaddr=at, len=n, ubuf=buf.address, flags=int(flag)).pack())
            self._call(abi.IHK_OS_READ_KADDR, desc, "IHK_OS_READ_KADDR", address=at,
                       physical=flag == abi.ReadKaddrFlag.PHYS)
            out += buf.take(n)
        return bytes(out)

    def _block_buffer(self, size: int) -> _UserBuffer:
        if size > READ_BLOCK:
            return _UserBuffer(size)
        if self._block is None:
            self._block = _UserBuffer(READ_BLOCK)
        return self._block

    # ------------------------------------------------------------------ dump (freeze) path, root only
    def set_level(self, level: int) -> None:
        """DUMP_SET_LEVEL: 0 (everything) or 24 (drop user-mapped and free pages)."""
        if level not in (abi.DumpLevel.ALL, abi.DumpLevel.USER_UNUSED_EXCLUDE):
            raise LiveError(f"dump level must be 0 or 24, not {level}")
        self._dump(abi.DumpCmd.SET_LEVEL, level=int(level))

    def nmi(self) -> None:
        """DUMP_NMI: freeze every McKernel CPU (the driver skips it if a freeze is complete)."""
        self._dump(abi.DumpCmd.NMI)

    def nmi_cont(self) -> None:
        """DUMP_NMI_CONT: resume the CPUs (the driver does nothing unless frozen)."""
        self._dump(abi.DumpCmd.NMI_CONT)

    def query_span(self) -> PhysRange:
        """DUMP_QUERY_ALL: first byte to last byte of the OS memory, holes included."""
        out, _ = self._dump(abi.DumpCmd.QUERY_ALL)
        return PhysRange(out.start, out.start + out.size)

    def query_mem_areas(self) -> abi.MemChunks:
        """The chunk list the dump covers (DUMP_QUERY_NUM_MEM_AREAS then _MEM_AREAS).

        The driver waits, without a timeout, until the last McKernel CPU has
        finished its part of the freeze: call this only after nmi()."""
        head, _ = self._dump(abi.DumpCmd.QUERY_NUM_MEM_AREAS)
        need = head.size
        if need < abi.MemChunks.HEADER_SIZE or (need - abi.MemChunks.HEADER_SIZE) % abi.MemChunks.ENTRY_SIZE:
            raise LiveError(f"{self.path} reported an impossible chunk list size ({need} bytes)")
        buf = _UserBuffer(need)
        self._dump(abi.DumpCmd.QUERY_MEM_AREAS, size=need, buf=buf.address)
        return abi.MemChunks.unpack(buf.take(need))

    def dump_read(self, paddr: int, size: int) -> bytes:
        """DUMP_READ in blocks of at most 1 MiB, as the dump writer does."""
        if paddr < 0 or size < 0:
            raise UnreadableAddress(paddr, f"bad physical read {paddr:#x}+{size:#x}")
        self._check_known(paddr, size)
        out = bytearray()
        buf = self._block_buffer(min(size, READ_BLOCK))
        while len(out) < size:
            n = min(READ_BLOCK, size - len(out))
            self._dump(abi.DumpCmd.READ, start=paddr + len(out), size=n, buf=buf.address)
            out += buf.take(n)
        return bytes(out)

    def dump_chunk_readers(self, areas: abi.MemChunks) -> list[tuple[int, int, Callable[[int, int], bytes]]]:
        """(addr, size, reader(offset, size)) per chunk, the shape write_mcdump streams from."""
        def reader_for(base: int) -> Callable[[int, int], bytes]:
            return lambda offset, size: self.dump_read(base + offset, size)
        return [(c.addr, c.size, reader_for(c.addr)) for c in areas.chunks]

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "IhkDeviceSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
