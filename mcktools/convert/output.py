"""The safe-output discipline every mcdump writer follows.

* Refuse to replace an existing file unless the user said --force; say so
  before any work is done (`check_target`).
* Write into a temporary file in the target's own folder and rename it into
  place only when complete, so a full disk, an error or Ctrl-C never leaves a
  partial file under the real name (`SafeOutput`).  The formats layer's
  `write_mcdump` follows the same rule; `publish`/`discard` are shared here
  for writers that stream their own layout (to-elf).
* A progress bar on stderr when it is a terminal and the job lasts more than a
  second; nothing at all in a pipe (`Progress`).
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import tempfile
import time
from typing import Callable, Optional, TextIO

from ..errors import OutputError

ChunkReader = Callable[[int, int], bytes]

_SPACE_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def prepare_signals() -> None:
    """Make the kernel report an exceeded file-size limit as EFBIG instead of
    killing the process with SIGXFSZ (whose default action is to die without
    running any cleanup, which would leave the temporary file behind), and
    turn SIGTERM into the same clean abort as Ctrl-C."""
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    def _term(signum, frame):
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, _term)
    except ValueError:          # not the main thread (embedded use): keep defaults
        pass


def check_target(path: str, force: bool) -> None:
    """Fail early when `path` cannot be the output (exists without --force,
    is a directory, or its folder is missing)."""
    if os.path.isdir(path):
        raise OutputError(f"{path} is a directory")
    if not force and os.path.lexists(path):
        raise OutputError(f"{path} already exists (use --force to replace it)")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise OutputError(f"folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise OutputError(f"folder {folder} is not writable")


def os_error(path: str, exc: OSError) -> OutputError:
    """One line for a failed write, naming the usual cause."""
    if exc.errno in _SPACE_ERRNOS:
        return OutputError(f"cannot write {path}: {exc.strerror} (out of space or over the file-size "
                           f"limit); nothing was left behind")
    return OutputError(f"cannot write {path}: {exc.strerror or exc}")


class SafeOutput:
    """`with SafeOutput(path, force) as f:` gives a binary file in the target
    folder; leaving the block normally publishes it under `path`, leaving it
    by any exception (KeyboardInterrupt included) deletes it."""

    def __init__(self, path: str, force: bool = False):
        self.path = os.fspath(path)
        self.force = force
        self.tmp: Optional[str] = None
        self.file = None

    def __enter__(self):
        check_target(self.path, self.force)
        folder = os.path.dirname(os.path.abspath(self.path))
        try:
            fd, self.tmp = tempfile.mkstemp(prefix="." + os.path.basename(self.path) + ".",
                                            suffix=".partial", dir=folder)
        except OSError as exc:
            raise OutputError(f"cannot create a file in {folder}: {exc.strerror}") from None
        self.file = os.fdopen(fd, "wb")
        return self.file

    def __exit__(self, etype, exc, tb) -> bool:
        if etype is None:
            try:
                self.file.flush()
                os.fsync(self.file.fileno())
                self.file.close()
                publish(self.tmp, self.path, self.force)
            except OSError as err:
                discard(self.tmp, self.file)
                raise os_error(self.path, err) from None
            except BaseException:
                discard(self.tmp, self.file)
                raise
            return False
        discard(self.tmp, self.file)
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise os_error(self.path, exc) from None
        return False


def publish(tmp: str, path: str, force: bool) -> None:
    """Move a finished temp file to `path`; without `force` a file that
    appeared meanwhile is kept (link(2) refuses an existing name)."""
    os.chmod(tmp, 0o644 & ~_umask())
    if force:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise OutputError(f"{path} already exists (use --force to replace it)") from None
    except OSError:
        if os.path.lexists(path):
            raise OutputError(f"{path} already exists (use --force to replace it)") from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def discard(tmp: Optional[str], fileobj=None) -> None:
    if fileobj is not None:
        try:
            fileobj.close()
        except OSError:
            pass
    if tmp:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class Progress:
    """A one-line progress bar on a terminal, shown only once the job has
    run for `delay` seconds; silent when stderr is not a terminal."""

    def __init__(self, total: int, label: str, *, stream: Optional[TextIO] = None, delay: float = 1.0,
                 enabled: Optional[bool] = None):
        self.total = max(total, 1)
        self.label = label
        self.stream = stream or sys.stderr
        self.delay = delay
        if enabled is None:
            try:
                enabled = self.stream.isatty()
            except (AttributeError, ValueError):
                enabled = False
        self.enabled = enabled
        self.done = 0
        self.start = time.monotonic()
        self._last = 0.0
        self._shown = False

    def advance(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.start < self.delay or now - self._last < 0.1:
            return
        self._last = now
        self._draw(now)

    def _draw(self, now: float) -> None:
        frac = min(self.done / self.total, 1.0)
        width = 30
        bar = "#" * int(frac * width)
        rate = self.done / max(now - self.start, 1e-6) / (1 << 20)
        self.stream.write(f"\r{self.label} [{bar:<{width}}] {frac * 100:5.1f}% {rate:7.1f} MiB/s")
        self.stream.flush()
        self._shown = True

    def wrap(self, reader: ChunkReader) -> ChunkReader:
        """A reader that reports what it returned."""
        def read(offset: int, size: int) -> bytes:
            data = reader(offset, size)
            self.advance(len(data))
            return data
        return read

    def finish(self) -> None:
        if self._shown:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False
