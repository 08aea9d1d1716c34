"""Freeze a live target for as short as possible, and always let it go.

A frozen McKernel stops every application on the node; a tool that dies
while holding it frozen leaves the node hung.  `frozen(freezer)` therefore
guarantees the release when the block

* ends normally or raises,
* is interrupted by SIGINT, SIGTERM or SIGHUP (handlers are installed for the
  duration; the target is released first, then the signal is re-delivered to
  the previous handler, so the process ends the conventional way: Ctrl-C
  still raises KeyboardInterrupt, SIGTERM with the default action still kills
  with that signal), or
* is cut off by SIGKILL or a crash: a watchdog process (watchdog.py), armed
  before the freeze with the freezer's JSON release description, notices the
  pipe closing and performs the release itself.

Signals are blocked while the release runs, so a second Ctrl-C cannot cut a
resume in half; it is delivered afterwards.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Optional, Protocol, runtime_checkable

from ..errors import LiveError
from . import release as release_kinds
from .watchdog import Watchdog

DEFAULT_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@runtime_checkable
class Freezer(Protocol):
    """Something that can stop a live target and let it go again.

    `release()` must be idempotent and harmless when the target is not frozen
    (it also runs after a freeze() that failed half way).  `release_spec()`
    returns the JSON description (see release.py) with which another process
    can perform the same release, or None when no watchdog can help."""

    def release_spec(self) -> Optional[dict]:
        ...

    def freeze(self) -> None:
        ...

    def release(self) -> None:
        ...


class SpecFreezer:
    """Base for freezers whose release is exactly their release description."""

    def __init__(self, spec: dict):
        self._spec = spec
        release_kinds.prepare(spec)  # validate now, before anything is frozen

    def release_spec(self) -> dict:
        return dict(self._spec)

    def freeze(self) -> None:
        raise NotImplementedError

    def release(self) -> None:
        release_kinds.release_now(self._spec)


class FileFreezer(SpecFreezer):
    """A stand-in target for tests and demos: freezing appends "frozen pid=N"
    to a marker file, releasing appends "released pid=N"."""

    def __init__(self, path: "str | os.PathLike[str]"):
        self.path = os.fspath(path)
        super().__init__({"kind": "file", "path": self.path})

    def freeze(self) -> None:
        with open(self.path, "a") as f:
            f.write(f"frozen pid={os.getpid()}\n")


class _Interrupted(BaseException):
    """Raised inside the frozen block by our signal handler (BaseException so that
    `except Exception` in the block does not swallow it)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class Frozen:
    """The context manager behind frozen(); `.watchdog_pid` is None without a watchdog."""

    def __init__(self, freezer: Freezer, *, watchdog: bool = True,
                 signals: tuple[int, ...] = DEFAULT_SIGNALS):
        self.freezer = freezer
        self._use_watchdog = watchdog
        self._signals = signals
        self._dog: Optional[Watchdog] = None
        self._old: dict[int, object] = {}
        self._caught: Optional[int] = None
        self._exiting = False
        self._done = False

    @property
    def watchdog_pid(self) -> Optional[int]:
        return self._dog.pid if self._dog else None

    # ------------------------------------------------------------------ signals
    def _handler(self, signum: int, frame: object) -> None:
        if self._caught is None:
            self._caught = signum
        if not self._exiting:
            raise _Interrupted(signum)

    def _install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # handlers only work in the main thread; the watchdog still covers death
        for sig in self._signals:
            old = signal.getsignal(sig)
            if old is signal.SIG_IGN:
                continue  # e.g. nohup: the user asked for this signal to be ignored
            self._old[sig] = old
            signal.signal(sig, self._handler)

    def _block(self) -> None:
        if self._old:
            signal.pthread_sigmask(signal.SIG_BLOCK, list(self._old))

    def _restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)  # type: ignore[arg-type]
        if self._old:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, list(self._old))
        self._old = {}

    # ------------------------------------------------------------------ enter / exit
    def __enter__(self) -> "Frozen":
        spec = self.freezer.release_spec() if self._use_watchdog else None
        if spec is not None:
            self._dog = Watchdog.start(spec)  # armed before anything is frozen
        try:
            self._install()
            self.freezer.freeze()
        except BaseException as exc:
            self._finish(freeze_failed=True)
            if isinstance(exc, _Interrupted):
                self._redeliver()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._finish(freeze_failed=False)
        if self._caught is not None:
            self._redeliver()
        return False

    def _finish(self, *, freeze_failed: bool) -> None:
        """Release exactly once, with the handled signals blocked."""
        self._exiting = True
        if self._done:
            return
        self._done = True
        self._block()
        try:
            try:
                self.freezer.release()
            except BaseException:
                if self._dog:
                    self._dog.abandon()  # a second attempt by the watchdog
                    self._dog = None
                if not freeze_failed:
                    raise  # the target may still be frozen: that is the news
        finally:
            if self._dog:
                self._dog.disarm()
            self._restore()

    def _redeliver(self) -> None:
        """End the way the signal would have ended us without the freeze."""
        signum = self._caught
        assert signum is not None
        signal.raise_signal(signum)
        # The previous handler returned instead of ending the process.
        raise SystemExit(128 + signum)


def frozen(freezer: Freezer, *, watchdog: bool = True,
           signals: tuple[int, ...] = DEFAULT_SIGNALS) -> Frozen:
    """`with frozen(freezer) as f:` -- the target is frozen inside the block and
    released on every way out of it (see the module docstring)."""
    if not isinstance(freezer, Freezer):
        raise LiveError(f"{freezer!r} is not a freezer (needs freeze, release, release_spec)")
    return Frozen(freezer, watchdog=watchdog, signals=signals)
