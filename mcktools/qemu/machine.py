"""Launch the reference kernel under QEMU (TCG) and give the host Linux's view of it.

The guest's RAM is a memory-backend file on /dev/shm (file offset = guest PA,
kernel/PROTOCOL.md), mapped here with mmap: the host reads and writes guest
memory the way IHK's Linux driver reaches McKernel's memory.  The serial
console goes to a file that `SerialLog` tails for protocol markers.  The file
on /dev/shm is unlinked as soon as both QEMU and we hold it open, so nothing is
left there even if the harness is SIGKILLed.
"""

from __future__ import annotations

import glob
import json
import mmap
import os
import re
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LiveError
from . import procs
from .qmp import QMPClient

MIB = 1 << 20
DEFAULT_MEM = "12M@0x1000000,4M@0x2000000"
QEMU = os.environ.get("MCKTOOLS_QEMU", "qemu-system-x86_64")


def parse_mem_arg(spec: str) -> list[tuple[int, int]]:
    """Parse McKernel's `mem=SIZE@ADDR,...` into [(addr, size)] in command-line order."""
    out = []
    for part in spec.split(","):
        m = re.fullmatch(r"\s*(\d+)([KMG]?)@(0x[0-9a-fA-F]+|\d+)\s*", part)
        if not m:
            raise LiveError(f"bad mem= element {part!r} (want SIZE[KMG]@ADDR)")
        size = int(m.group(1)) * {"": 1, "K": 1 << 10, "M": MIB, "G": 1 << 30}[m.group(2)]
        out.append((int(m.group(3), 0), size))
    return out


def kernel_base_for(chunks: list[tuple[int, int]]) -> int:
    """IHK's kernel_base: round_up(start of the largest chunk, 2 MiB) + 2 MiB (ABI ref. §1.5).

    max() keeps the first of equally large chunks, as a walk of the list does.
    """
    start, _ = max(chunks, key=lambda c: c[1])
    large = 2 * MIB
    return (start + 2 * large - 1) & ~(large - 1)


@dataclass
class MachineConfig:
    image: str
    scenario: str = "multi"
    ncpus: int = 4
    mem_mb: int = 48
    mem: str = DEFAULT_MEM
    dump_level: int = 24
    extra_append: str = ""
    qemu: str = QEMU
    extra_args: list = field(default_factory=list)
    #: keep the /dev/shm name while the guest runs, so another process (a live
    #: tool, mcktools.live's release watchdog) can open the memory file by path
    keep_memfile: bool = False
    #: a second QMP socket for another process (QEMU serves one client per socket)
    tool_qmp: bool = False

    def append_line(self) -> str:
        line = f"mem={self.mem} scenario={self.scenario} dump_level={self.dump_level}"
        return f"{line} {self.extra_append}".strip()


_HELD = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _block_signals():
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.pthread_sigmask(signal.SIG_BLOCK, _HELD)


def _unblock_signals(previous) -> None:
    if previous is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep_stale() -> None:
    """Remove what a SIGKILLed harness left: its temp folder (serial log, sockets) and,
    with keep_memfile, its /dev/shm file.  Both names carry the owner's pid."""
    for pattern in (os.path.join(tempfile.gettempdir(), "mckq-*-*"), "/dev/shm/mcktools-*-*"):
        for path in glob.glob(pattern):
            m = re.match(r"(?:mckq|mcktools)-(\d+)-", os.path.basename(path))
            if not m or _pid_alive(int(m.group(1))):
                continue
            try:
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.unlink(path)
            except OSError:
                pass


class SerialLog:
    """Tail of the guest's serial console file, read line by line as it grows."""

    def __init__(self, path: Path):
        self.path = path
        self.lines: list[str] = []
        self._pos = 0
        self._partial = b""

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._pos)
                data = f.read()
        except FileNotFoundError:
            return
        if not data:
            return
        self._pos += len(data)
        data = self._partial + data
        *complete, self._partial = data.split(b"\n")
        for raw in complete:
            self.lines.append(raw.decode("utf-8", "replace").rstrip("\r"))

    def text(self) -> str:
        self.poll()
        return "\n".join(self.lines + ([self._partial.decode("utf-8", "replace")] if self._partial else []))

    def find(self, marker: str, start: int = 0) -> int | None:
        """Index of the first line from `start` holding `marker`.  Markers are
        searched inside lines because firmware output without a newline
        (SeaBIOS's "Booting from ROM..") can precede the first one."""
        for i in range(start, len(self.lines)):
            if marker in self.lines[i]:
                return i
        return None

    def line_from(self, i: int, marker: str) -> str:
        """Line i from `marker` on."""
        line = self.lines[i]
        return line[line.index(marker):]


class Machine:
    """One QEMU guest running the reference kernel.  Use as a context manager."""

    def __init__(self, config: MachineConfig):
        self.config = config
        self.proc: subprocess.Popen | None = None
        self.qmp: QMPClient | None = None
        self.mem: mmap.mmap | None = None
        self._memfd: int | None = None
        self.workdir: Path | None = None
        self.shm_path: str | None = None
        self.serial: SerialLog | None = None
        self.chunks = parse_mem_arg(config.mem)
        self.kernel_base = kernel_base_for(self.chunks)
        self.setup_manifest: dict | None = None

    # -- life cycle -------------------------------------------------------
    def command_line(self) -> list[str]:
        c = self.config
        assert self.workdir is not None and self.shm_path is not None
        return [
            c.qemu, "-accel", "tcg", "-nographic", "-no-reboot", "-net", "none",
            "-m", f"{c.mem_mb}M", "-smp", str(c.ncpus),
            "-object", f"memory-backend-file,id=mem,size={c.mem_mb}M,mem-path={self.shm_path},share=on",
            "-machine", "memory-backend=mem",
            "-kernel", str(c.image), "-append", c.append_line(),
            "-serial", f"file:{self.workdir / 'serial.log'}",
            "-qmp", f"unix:{self.workdir / 'qmp.sock'},server=on,wait=off",
            *(["-qmp", f"unix:{self.tool_qmp_path},server=on,wait=off"] if c.tool_qmp else []),
            "-monitor", "none", "-display", "none", "-vga", "none",
            *c.extra_args,
        ]

    def start(self) -> "Machine":
        if not Path(self.config.image).is_file():
            raise LiveError(f"kernel image {self.config.image} does not exist (run make -C kernel)")
        if shutil.which(self.config.qemu) is None:
            raise LiveError(f"{self.config.qemu} is not installed")
        _sweep_stale()
        self.workdir = Path(tempfile.mkdtemp(prefix=f"mckq-{os.getpid()}-"))
        shm_dir = "/dev/shm" if os.path.isdir("/dev/shm") else str(self.workdir)
        self.shm_path = os.path.join(shm_dir, f"mcktools-{os.getpid()}-{self.workdir.name}")
        procs.register_cleanup(id(self), self.close)
        self.serial = SerialLog(self.workdir / "serial.log")
        try:
            with open(self.workdir / "qemu.out", "wb") as out:
                self.proc = procs.spawn(self.command_line(), stdin=subprocess.DEVNULL,
                                        stdout=out, stderr=subprocess.STDOUT)
            self.qmp = QMPClient(str(self.workdir / "qmp.sock")).connect(alive=self.alive)
            self._map_memory()
        except BaseException:
            self.close()
            raise
        return self

    def _map_memory(self) -> None:
        """mmap the guest RAM file once QEMU has sized it, then unlink its name."""
        want = self.config.mem_mb * MIB
        deadline = time.monotonic() + 10
        while True:
            try:
                if os.stat(self.shm_path).st_size >= want:
                    break
            except FileNotFoundError:
                pass
            if not self.alive():
                raise LiveError(f"QEMU exited at start-up: {self.qemu_output()}")
            if time.monotonic() > deadline:
                raise LiveError(f"QEMU did not create its memory file {self.shm_path}")
            time.sleep(0.01)
        self._memfd = os.open(self.shm_path, os.O_RDWR)
        self.mem = mmap.mmap(self._memfd, want, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        if not self.config.keep_memfile:
            self._unlink_shm()

    @property
    def memfile_path(self) -> str | None:
        """Path of the guest memory file while it has one (only with keep_memfile)."""
        if self.shm_path and os.path.exists(self.shm_path):
            return self.shm_path
        return None

    @property
    def tool_qmp_path(self) -> str | None:
        """The spare QMP socket for another process (only with tool_qmp)."""
        if not self.config.tool_qmp or self.workdir is None:
            return None
        return str(self.workdir / "tool-qmp.sock")

    def _unlink_shm(self) -> None:
        if self.shm_path:
            try:
                os.unlink(self.shm_path)
            except FileNotFoundError:
                pass

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def qemu_output(self) -> str:
        try:
            return (self.workdir / "qemu.out").read_text(errors="replace").strip()[-500:]
        except (OSError, TypeError):
            return ""

    def close(self) -> None:
        """Stop QEMU (its whole process group), unmap and remove every file we made.

        SIGINT/SIGTERM/SIGHUP are held back meanwhile (delivered afterwards), so a
        second Ctrl-C cannot cut the cleanup short and leave a file on /dev/shm.
        """
        held = _block_signals()
        try:
            self._close()
        finally:
            _unblock_signals(held)

    def _close(self) -> None:
        procs.unregister_cleanup(id(self))
        self._unlink_shm()
        if self.qmp is not None:
            if self.alive():
                try:
                    self.qmp.execute("quit", timeout=2)
                except Exception:
                    pass
            self.qmp.close()
            self.qmp = None
        if self.proc is not None:
            if self.alive():
                try:
                    self.proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    pass
            procs.kill_group(self.proc)
        if self.mem is not None:
            try:
                self.mem.close()
            except BufferError:
                pass  # a caller still holds a memoryview; the mapping dies with the process
            self.mem = None
        if self._memfd is not None:
            os.close(self._memfd)
            self._memfd = None
        if self.serial is not None:
            self.serial.poll()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> "Machine":
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- serial console ---------------------------------------------------
    def wait_line(self, prefix: str, *, timeout: float = 20.0, start: int = 0) -> tuple[int, str]:
        """Wait for a console line starting with `prefix`; fail fast on MCKTOOLS-ERROR or QEMU exit."""
        assert self.serial is not None
        deadline = time.monotonic() + timeout
        while True:
            self.serial.poll()
            i = self.serial.find(prefix, start)
            if i is not None:
                return i, self.serial.line_from(i, prefix)
            err = self.serial.find("MCKTOOLS-ERROR", start)
            if err is not None and not prefix.startswith("MCKTOOLS-ERROR"):
                raise LiveError(f"guest reported: {self.serial.line_from(err, 'MCKTOOLS-ERROR')}")
            if not self.alive():
                raise LiveError(f"QEMU exited while waiting for {prefix!r}; console tail:\n"
                                f"{self.serial.text()[-800:]}\n{self.qemu_output()}")
            if time.monotonic() > deadline:
                raise LiveError(f"no {prefix!r} on the console within {timeout} s; console tail:\n"
                                f"{self.serial.text()[-800:]}")
            time.sleep(0.02)

    def wait_json(self, prefix: str, *, timeout: float = 20.0, start: int = 0) -> tuple[int, dict]:
        i, line = self.wait_line(prefix + " ", timeout=timeout, start=start)
        try:
            return i, json.loads(line[len(prefix) + 1:])
        except ValueError as exc:
            raise LiveError(f"{prefix} line is not valid JSON ({exc}): {line[:120]}...") from None

    def wait_ready(self, *, timeout: float = 30.0) -> dict:
        """Wait for the setup manifest and MCKTOOLS-READY; return the manifest."""
        i, manifest = self.wait_json("MCKTOOLS-MANIFEST", timeout=timeout)
        self.wait_line("MCKTOOLS-READY", timeout=timeout, start=i)
        self.setup_manifest = manifest
        return manifest

    # -- guest physical memory -------------------------------------------
    def _check(self, pa: int, size: int) -> None:
        if self.mem is None:
            raise LiveError("guest memory is not mapped (machine not running)")
        if pa < 0 or size < 0 or pa + size > len(self.mem):
            raise LiveError(f"physical range {pa:#x}+{size:#x} is outside guest RAM")

    def read_phys(self, pa: int, size: int) -> bytes:
        self._check(pa, size)
        return self.mem[pa:pa + size]

    def write_phys(self, pa: int, data: bytes) -> None:
        self._check(pa, len(data))
        self.mem[pa:pa + len(data)] = data

    def u32(self, pa: int) -> int:
        return struct.unpack("<I", self.read_phys(pa, 4))[0]

    def u64(self, pa: int) -> int:
        return struct.unpack("<Q", self.read_phys(pa, 8))[0]

    def write_u32(self, pa: int, value: int) -> None:
        self.write_phys(pa, struct.pack("<I", value))

    def write_u64(self, pa: int, value: int) -> None:
        self.write_phys(pa, struct.pack("<Q", value))

    def write_i32(self, pa: int, value: int) -> None:
        self.write_phys(pa, struct.pack("<i", value))
