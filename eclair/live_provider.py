"""`eclair -i`: gdb on a running McKernel (/dev/mcosN, or the QEMU reference
kernel of $MCKTOOLS_QEMU_RUN).

The McKernel is frozen whenever gdb sees it stopped: on attach (gdb's first
`?`), and at each Ctrl-C (interrupt()); `continue` (resume()) and the end of
the session (close(), after detach, quit or a lost connection) release it.
Every freeze is a mcktools.live.freeze.frozen() session held open between
stop and resume, so a signal or a SIGKILL of eclair still resumes the kernel
(signal handlers plus the watchdog).  The thread list, registers and page
tables are read again at every stop (refresh()).
"""

from __future__ import annotations

import os
from typing import Any, List, Optional

from mcktools.errors import McktoolsError

from .mckernel_provider import McKernelProvider
from .provider import ProviderOptions, ThreadInfo


class LiveMcKernelProvider(McKernelProvider):
    live = True

    def __init__(self, live: Any, options: ProviderOptions = ProviderOptions(), *, level: int = 0):
        self.live_target = live
        self._level = level
        self._session: Any = None
        # Made now so that a target we could not freeze (no root, no QMP socket)
        # fails at start-up with its own message, not as an E reply to gdb.
        self._freezer = live.freezer(level)
        if live.kind == "ihk":
            from mcktools.errors import LiveError
            try:
                live.source.query_span()     # an IHK_OS_DUMP call that changes nothing
            except LiveError as exc:
                raise LiveError(f"eclair -i stops McKernel with IHK_OS_DUMP: {exc}") from None
        # The base constructor reads the thread list; that waits for the first stop.
        self._started = False
        super().__init__(live.target, options)
        self._started = True

    # ---------------------------------------------------------------- freezing

    @property
    def frozen(self) -> bool:
        return self._session is not None

    def _freeze(self) -> None:
        if self._session is not None:
            return
        from mcktools.live.freeze import frozen

        session = frozen(self._freezer)
        session.__enter__()
        self._session = session

    def _thaw(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.__exit__(None, None, None)

    # ------------------------------------------------------------ Provider hooks

    def _build_threads(self) -> None:
        if not self._started or self._session is None:
            self._rows = None
            self._entries = {}
            return
        super()._build_threads()

    def threads(self) -> List[ThreadInfo]:
        if self._rows is None:
            self.refresh()
        return super().threads()

    def interrupt(self) -> None:
        self._freeze()

    def resume(self) -> None:
        self._thaw()

    def refresh(self) -> None:
        """A stop: make sure the kernel is frozen, then forget every derived view."""
        from mcktools.live.consistent import invalidate

        self._freeze()
        invalidate(self.t)
        self._panicked = None
        self._spaces = {}
        self._selected = None
        self._build_threads()

    def write_memory(self, thread_id: int, addr: int, data: bytes) -> None:
        raise McktoolsError("eclair does not write McKernel memory")

    def close(self) -> None:
        try:
            self._thaw()
        finally:
            try:
                close = getattr(self._freezer, "close", None)
                if callable(close):
                    close()
            finally:
                self.live_target.close()


def open_live_provider(kernel: Optional[str], options: ProviderOptions) -> LiveMcKernelProvider:
    """The -i target: /dev/mcos<-o N>, or a QEMU run folder (--qemu or $MCKTOOLS_QEMU_RUN)."""
    from mcktools.live.attach import QEMU_RUN_ENV, open_live

    qemu = options.qemu_run or os.environ.get(QEMU_RUN_ENV) or None
    live = open_live(kernel, os_index=options.os_index, qemu=qemu, force=options.force)
    try:
        return LiveMcKernelProvider(live, options)
    except BaseException:
        live.close()
        raise
