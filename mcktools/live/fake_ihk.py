"""An emulator of the IHK host driver's /dev/mcosN debug ioctls.

Tests (and demos on machines without IHK) drive IhkDeviceSource and the
freeze machinery through it instead of a real driver.  It follows the driver
behaviour recorded in the ABI reference (§2.4-2.8, §3): DUMP_NMI is a no-op
once a freeze is complete, DUMP_NMI_CONT only acts on a complete freeze, the
chunk list comes from a sticky page bitmap scanned per reserved chunk, the
dump args struct is copied back out even on error, IHK_OS_DUMP needs root and
READ_KADDR does not.  Data is written to the caller's buffer address the way
copy_to_user does, so the pointer plumbing of the caller is exercised too.

Two ways to use it:
* in-process: `FakeIhk(...).ioctl` as the `ioctl=` of IhkDeviceSource (the
  fd is ignored; memory is a bytearray);
* across processes (the freeze watchdog): `FakeIhk.save(path)` writes the
  state to a JSON file (memory beside it in PATH.mem); that file is then the
  "device" and `file_ioctl` the ioctl implementation, which loads, applies
  and saves under an exclusive lock.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import mmap
import os
from dataclasses import dataclass, field

from ..formats import ihk_ioctl as abi

PAGE = 4096
#: Linux's direct-map base on a default x86_64 host without KASLR.
DEFAULT_PAGE_OFFSET = 0xFFFF888000000000


def _err(code: int, what: str) -> OSError:
    return OSError(code, f"{os.strerror(code)} (fake IHK: {what})")


@dataclass
class FakeIhk:
    """State of one emulated OS instance: physical memory [0, len(memory)),
    its reserved chunks, and the freeze handshake words."""

    memory: bytearray
    chunks: list[tuple[int, int]]
    kernel_base: int
    status: int = abi.OsStatus.RUNNING
    root: bool = True
    ncpus: int = 2
    page_offset_base: int = DEFAULT_PAGE_OFFSET
    #: pages (PA) that McKernel's last CPU clears from the bitmap at level 24
    #: (user-mapped and free pages in the real kernel)
    level24_pages: list[int] = field(default_factory=list)
    dump_level: int = abi.DumpLevel.USER_UNUSED_EXCLUDE  # McKernel's boot default
    completion_flag: int = abi.DumpPageSetState.INCOMPLETE
    nmi_mode: int = -1  # never written yet
    excluded: list[int] = field(default_factory=list)  # sticky cleared bits (page PAs)
    nmi_count: int = 0
    cont_count: int = 0
    ops: list[str] = field(default_factory=list)

    # ------------------------------------------------------------------ derived state
    @property
    def frozen(self) -> bool:
        return self.nmi_mode == abi.NmiMode.DUMP and self.completion_flag == abi.DumpPageSetState.COMPLETED

    def mem_areas(self) -> list[tuple[int, int]]:
        """Runs of included pages, per reserved chunk in list order, never merged across chunks."""
        gone = set(self.excluded)
        out = []
        for start, size in self.chunks:
            run = None
            for pa in range(start, start + size, PAGE):
                if pa in gone:
                    if run is not None:
                        out.append((run, pa - run))
                        run = None
                elif run is None:
                    run = pa
            if run is not None:
                out.append((run, start + size - run))
        return out

    # ------------------------------------------------------------------ the driver
    def ioctl(self, fd: int, request: int, arg: "bytearray | int") -> int:
        if request in (abi.IHK_OS_QUERY_STATUS, abi.IHK_OS_STATUS):
            return int(self.status)
        if request == abi.IHK_OS_GET_NUM_CPUS:
            return self.ncpus
        if request == abi.IHK_OS_READ_KADDR:
            return self._read_kaddr(arg)
        if request == abi.IHK_OS_DUMP:
            if not self.root:
                raise _err(errno.EPERM, "IHK_OS_DUMP needs euid 0")
            assert isinstance(arg, bytearray)
            args = abi.DumpArgs.unpack(arg)
            try:
                return self._dump(args)
            finally:
                arg[:abi.DumpArgs.SIZE] = args.pack()  # copied back out even on error
        raise _err(errno.ENOTTY, f"request {request:#x} not emulated")

    def _copy_to_user(self, ubuf: int, pa: int, size: int) -> None:
        if ubuf == 0 or pa < 0 or size < 0 or pa + size > len(self.memory):
            raise _err(errno.EFAULT, f"copy of {size:#x} bytes at PA {pa:#x}")
        ctypes.memmove(ubuf, bytes(self.memory[pa:pa + size]), size)

    def _vtop(self, va: int) -> int:
        if abi.IHK_X86_MAP_KERNEL_START < va < abi.IHK_X86_MODULES_END:
            return self.kernel_base + (va - abi.IHK_X86_MAP_KERNEL_START)
        return va - self.page_offset_base  # Linux virt_to_phys of a direct-map address

    def _read_kaddr(self, arg: "bytearray | int") -> int:
        assert isinstance(arg, bytearray)
        desc = abi.ReadKaddrDesc.unpack(arg)
        pa = desc.kaddr if desc.flags == abi.ReadKaddrFlag.PHYS else self._vtop(desc.kaddr)
        self._copy_to_user(desc.ubuf, pa, desc.len)
        self.ops.append("READ_KADDR")
        return 0

    def _dump(self, a: abi.DumpArgs) -> int:
        cmd = a.cmd
        name = abi.DumpCmd(cmd).name if cmd in abi.DumpCmd._value2member_map_ else str(cmd)
        self.ops.append(name)
        completed = self.completion_flag == abi.DumpPageSetState.COMPLETED
        if cmd == abi.DumpCmd.SET_LEVEL:
            if a.level not in (0, 24):
                raise _err(errno.EINVAL, f"dump level {a.level}")
            self.dump_level = a.level
        elif cmd == abi.DumpCmd.NMI:
            if not completed:
                self.nmi_mode = abi.NmiMode.DUMP
                self.nmi_count += 1
                # McKernel's last CPU: clear level-24 bits (sticky), then publish.
                if self.dump_level == abi.DumpLevel.USER_UNUSED_EXCLUDE:
                    self.excluded = sorted(set(self.excluded) | set(self.level24_pages))
                self.completion_flag = abi.DumpPageSetState.COMPLETED
        elif cmd == abi.DumpCmd.NMI_CONT:
            if completed:
                self.nmi_mode = abi.NmiMode.RESUME
                self.completion_flag = abi.DumpPageSetState.INCOMPLETE  # CPU 0 resets it
                self.cont_count += 1
        elif cmd in (abi.DumpCmd.QUERY_NUM_MEM_AREAS, abi.DumpCmd.QUERY_MEM_AREAS):
            if not completed:
                # The real driver polls forever here; an emulator must not hang a test.
                raise _err(errno.EDEADLK, "chunk query without a completed freeze would block forever")
            areas = abi.MemChunks(self.kernel_base, 0,
                                  [abi.MemChunk(s, n) for s, n in self.mem_areas()]).pack()
            if cmd == abi.DumpCmd.QUERY_NUM_MEM_AREAS:
                a.size = len(areas)
            else:
                n = min(len(areas), a.size)
                if a.buf == 0:
                    raise _err(errno.EFAULT, "null chunk buffer")
                ctypes.memmove(a.buf, areas[:n], n)
        elif cmd in (abi.DumpCmd.READ, abi.DumpCmd.READ_ALL):
            self._copy_to_user(a.buf, a.start, a.size)
        elif cmd == abi.DumpCmd.QUERY_ALL:
            lo = min(s for s, _ in self.chunks)
            hi = max(s + n for s, n in self.chunks)
            a.start, a.size = lo, hi - lo
        else:
            raise _err(errno.EINVAL, f"dump command {cmd}")
        return 0

    # ------------------------------------------------------------------ persistence
    _STATE_KEYS = ("chunks", "kernel_base", "status", "root", "ncpus", "page_offset_base",
                   "level24_pages", "dump_level", "completion_flag", "nmi_mode", "excluded",
                   "nmi_count", "cont_count", "ops")

    def to_json(self) -> str:
        state = {k: getattr(self, k) for k in self._STATE_KEYS}
        state["chunks"] = [list(c) for c in self.chunks]
        state["memory_size"] = len(self.memory)
        return json.dumps(state, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, memory: bytearray) -> "FakeIhk":
        state = json.loads(text)
        state.pop("memory_size", None)
        state["chunks"] = [tuple(c) for c in state["chunks"]]
        return cls(memory=memory, **state)

    def save(self, path: str) -> None:
        """Write the state to `path` (JSON) and memory to `path`.mem."""
        with open(path + ".mem", "wb") as f:
            f.write(self.memory)
        self.save_state(path)

    def save_state(self, path: str) -> None:
        """Rewrite only the JSON state (no ioctl changes memory)."""
        with open(path, "a+") as f:  # rewrite in place: the inode may be locked by others
            f.seek(0)
            f.truncate()
            f.write(self.to_json())

    @classmethod
    def load(cls, path: str) -> "FakeIhk":
        # Mapped, not read: no ioctl changes memory, and a read per ioctl of a
        # fixture-sized memory made every call cost tens of milliseconds.
        with open(path + ".mem", "rb") as f:
            size = os.fstat(f.fileno()).st_size
            memory = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else bytearray()
        with open(path) as f:
            return cls.from_json(f.read(), memory)  # type: ignore[arg-type]


#: requests that change no driver state: served from a cached load, not recorded in the file
_STATELESS = (abi.IHK_OS_READ_KADDR, abi.IHK_OS_QUERY_STATUS, abi.IHK_OS_STATUS, abi.IHK_OS_GET_NUM_CPUS)
_cache: dict = {}


def _load_cached(path: str) -> FakeIhk:
    st = os.stat(path)
    key = (st.st_ino, st.st_mtime_ns, st.st_size)
    hit = _cache.get(path)
    if hit is None or hit[0] != key:
        hit = _cache[path] = (key, FakeIhk.load(path))
    return hit[1]


def file_ioctl(fd: int, request: int, arg: "bytearray | int") -> int:
    """ioctl implementation whose "device" is a file written by FakeIhk.save:
    load the state, apply the request, save it back, all under flock.

    Requests that change nothing (READ_KADDR, status queries) take a shared
    lock and a cached load and are not added to the file's `ops` (a live tool
    makes thousands of them; rewriting the state for each made reads slow)."""
    path = os.readlink(f"/proc/self/fd/{fd}")
    if request in _STATELESS:
        fcntl.flock(fd, fcntl.LOCK_SH)
        try:
            return _load_cached(path).ioctl(fd, request, arg)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        dev = FakeIhk.load(path)
        try:
            return dev.ioctl(fd, request, arg)
        finally:
            dev.save_state(path)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
