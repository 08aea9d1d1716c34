"""Child processes that must never outlive the harness.

QEMU is started in its own process group (so one killpg reaches anything it
spawns) with PR_SET_PDEATHSIG (so the kernel kills it if Python itself is
SIGKILLed).  Every live group is registered here; an atexit hook and SIGTERM /
SIGHUP handlers kill what is left, so a test failure, Ctrl-C (KeyboardInterrupt
unwinds the context managers) or a `kill` of the test run leaves nothing behind.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import subprocess
import threading
import time
from typing import Callable, Sequence

_PR_SET_PDEATHSIG = 1

_lock = threading.RLock()  # re-entrant: the signal handler may interrupt a holder
_live: dict[int, subprocess.Popen] = {}
_cleanups: dict[int, Callable[[], None]] = {}
_handlers_installed = False


def _pdeathsig() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:
        pass


def spawn(argv: Sequence[str], **kwargs) -> subprocess.Popen:
    """Start `argv` in a new session (own process group) and register it."""
    _install_handlers()
    proc = subprocess.Popen(list(argv), start_new_session=True, preexec_fn=_pdeathsig,
                            close_fds=True, **kwargs)
    with _lock:
        _live[proc.pid] = proc
    return proc


def kill_group(proc: subprocess.Popen, *, grace: float = 0.0) -> None:
    """Kill the process group of `proc` (SIGTERM, then SIGKILL after `grace` s) and reap it."""
    try:
        if proc.poll() is None and grace > 0:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + grace
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
        try:
            # The group may hold other members even when the leader is gone.
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    finally:
        with _lock:
            _live.pop(proc.pid, None)


def register_cleanup(key: int, fn: Callable[[], None]) -> None:
    """Run `fn` at exit (or on SIGTERM) unless `unregister_cleanup(key)` was called."""
    _install_handlers()
    with _lock:
        _cleanups[key] = fn


def unregister_cleanup(key: int) -> None:
    with _lock:
        _cleanups.pop(key, None)


def live_pids() -> list[int]:
    with _lock:
        return [pid for pid, p in _live.items() if p.poll() is None]


def cleanup_all() -> None:
    """Kill every registered group and run every pending cleanup (idempotent)."""
    with _lock:
        procs = list(_live.values())
        cleanups = list(_cleanups.values())
        _cleanups.clear()
    for proc in procs:
        kill_group(proc)
    for fn in cleanups:
        try:
            fn()
        except Exception:
            pass


def _on_signal(signum, frame):
    cleanup_all()
    # Re-deliver with the default action so the exit status says "killed by signal".
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_handlers() -> None:
    global _handlers_installed
    if _handlers_installed:
        return
    _handlers_installed = True
    atexit.register(cleanup_all)
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            if signal.getsignal(sig) in (signal.SIG_DFL, None):
                signal.signal(sig, _on_signal)
        except (ValueError, OSError):
            pass
