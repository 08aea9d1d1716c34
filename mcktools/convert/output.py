"""The safe-output discipline every mcdump writer follows.

* Refuse to replace an existing file unless the user said --force; say so
  before any work is done (`check_target`).
* Write into a temporary file in the target's own folder and rename it into
  place only when complete, so a full disk, an error or Ctrl-C never leaves a
  partial file under the real name.  That part is the formats layer's
  `atomic_output` (and `check_target`), which every writer uses.
* A progress bar on stderr when it is a terminal and the job lasts more than a
  second; nothing at all in a pipe (`Progress`).
"""

from __future__ import annotations

import signal
import sys
import time
from typing import Callable, Optional, TextIO

from ..formats.safe_output import check_target

__all__ = ["check_target", "prepare_signals", "Progress"]

ChunkReader = Callable[[int, int], bytes]


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
