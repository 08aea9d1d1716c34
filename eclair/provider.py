"""What the GDB server needs from a debug target, and nothing more.

The server (eclair.server) speaks the protocol; a Provider knows the target:
its threads, their registers, and memory as seen by a thread.  The McKernel
provider (eclair.mckernel_provider, built on mcktools.model) and the test
provider (eclair.fakeprovider) both implement it.  `ProviderBase` gives the
optional hooks their dump-friendly defaults.

The McKernel provider plugs into the CLI through one function:

    eclair.mckernel_provider.open_provider(dump: str | None, kernel: str,
                                           options: ProviderOptions) -> Provider

(`dump` is None with -i).  It raises McktoolsError subclasses for bad input;
the returned object may have a `close()` that the CLI calls at the end (a
live provider resumes the frozen kernel there).  eclair.threadlist and
eclair.regsets turn kernel rows into ThreadInfo rows and register dicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Protocol, Tuple, runtime_checkable

from mcktools.errors import McktoolsError


@dataclass(frozen=True)
class ThreadInfo:
    """One gdb thread.

    id: the gdb thread id (McKernel TID, or 1000000 + cpu for CPU
        pseudo-threads); must be > 0.
    name: short name (command name), shown by gdb in quotes.
    extra: free text, e.g. "PID 12, running on CPU 3".
    core: CPU number the thread is on, or None when it is not running.
    """

    id: int
    name: str = ""
    extra: str = ""
    core: Optional[int] = None


@dataclass(frozen=True)
class ProviderOptions:
    """The command-line choices that shape what a provider shows (upstream
    eclair's -c, -l, -i, -o)."""

    cpu_threads: bool = False  # -c: one pseudo-thread per CPU (id 1000000 + cpu)
    idle_threads: bool = False  # -l: include idle threads
    interactive: bool = False  # -i: live /dev/mcosN instead of a dump
    os_index: int = 0  # -o: which /dev/mcosN
    qemu_run: Optional[str] = None  # --qemu: a reference-kernel run folder instead of /dev/mcosN
    force: bool = False  # --force: use an image that does not match the dump


#: gdb thread id of CPU pseudo-threads is CPU_TID_BASE + cpu (as upstream eclair).
CPU_TID_BASE = 1000000


@runtime_checkable
class Provider(Protocol):
    """The target behind the server.  All errors a user can cause are
    McktoolsError subclasses; the server turns them into E replies."""

    #: gdb architecture name, selects the register layout and target.xml
    architecture: str
    #: True for targets that can run (live); False for dumps
    live: bool

    def threads(self) -> List[ThreadInfo]:
        """The thread list, in display order; re-read after refresh()."""
        ...

    def stop_thread(self) -> Optional[int]:
        """The thread the stop is reported for (the panicking CPU's, if any)."""
        ...

    def registers(self, thread_id: int) -> Dict[str, Optional[int]]:
        """Register name -> value; None (or absent) means not saved."""
        ...

    def read_memory(self, thread_id: int, addr: int, size: int) -> bytes:
        """Up to `size` bytes at virtual `addr` in `thread_id`'s address space.

        May return fewer bytes (a readable prefix), or raise
        mcktools.errors.UnreadableAddress whose .address is the first byte
        that cannot be read.  Never zeros for missing memory.
        """
        ...

    def write_memory(self, thread_id: int, addr: int, data: bytes) -> None:
        """Write memory (live targets only); dumps raise McktoolsError."""
        ...

    def memory_map(self) -> Optional[List[Tuple[int, int]]]:
        """Readable (start, length) regions, or None when unknown (then gdb
        may try any address)."""
        ...

    def monitor(self, command: str) -> str:
        """Run a `monitor` command line and return its output text."""
        ...

    def interrupt(self) -> None:
        """Stop a running live target (Ctrl-C).  No-op for dumps."""
        ...

    def resume(self) -> None:
        """Let a live target run.  Dumps raise McktoolsError."""
        ...

    def refresh(self) -> None:
        """Called at every stop: re-read thread lists of live targets."""
        ...


class ProviderBase:
    """Defaults for the optional parts of `Provider`, suited to dumps."""

    architecture = "i386:x86-64"
    live = False

    def stop_thread(self) -> Optional[int]:
        threads = self.threads()  # type: ignore[attr-defined]
        return threads[0].id if threads else None

    def write_memory(self, thread_id: int, addr: int, data: bytes) -> None:
        raise McktoolsError("memory of a dump is read-only")

    def memory_map(self) -> Optional[List[Tuple[int, int]]]:
        return None

    def monitor(self, command: str) -> str:
        raise McktoolsError(f"unknown monitor command: {command.split()[0] if command.split() else ''}")

    def interrupt(self) -> None:
        pass

    def resume(self) -> None:
        raise McktoolsError("a dump cannot run")

    def refresh(self) -> None:
        pass
