"""The process that resumes a frozen target when the tool that froze it dies.

Signal handlers cannot help against SIGKILL (or the OOM killer, or a crash
of the interpreter), so before freezing, mcktools.live.freeze starts this
small helper with `python -m mcktools.live.watchdog` and keeps a pipe to its
standard input.  Protocol, one line each:

  tool -> watchdog   the release description (JSON, see release.py)
  watchdog -> tool   "ready" once the release is prepared (or "error: MESSAGE")
  tool -> watchdog   "released" after the tool resumed the target itself

If the pipe reaches end-of-file without "released", the tool is gone: the
watchdog performs the release and exits.  Either way it exits right after,
so it never outlives its purpose.  It runs in its own session and ignores
SIGINT/SIGTERM/SIGHUP so that a Ctrl-C or hang-up aimed at the tool does not
take the safety net away while the tool is still releasing.

The pipe's write end is close-on-exec, so programs the tool runs do not keep
the watchdog waiting; a plain os.fork() of the tool while frozen would (the
child holds the pipe open too), so do not fork inside a frozen block.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..errors import LiveError, McktoolsError
from . import release as release_kinds

READY_TIMEOUT = 20.0
EXIT_TIMEOUT = 5.0


class Watchdog:
    """The tool's handle on a running watchdog process."""

    def __init__(self, proc: subprocess.Popen):
        self._proc = proc

    @property
    def pid(self) -> int:
        return self._proc.pid

    @classmethod
    def start(cls, spec: dict, *, timeout: float = READY_TIMEOUT) -> "Watchdog":
        """Start a watchdog armed with `spec`; returns once it is ready to release."""
        try:
            line = json.dumps(spec) + "\n"
        except (TypeError, ValueError) as exc:
            raise LiveError(f"release description is not JSON: {exc}") from None
        env = dict(os.environ)
        # Make `-m mcktools...` importable wherever this package was imported from.
        pkg_parent = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_parent, env.get("PYTHONPATH")) if p)
        try:
            proc = subprocess.Popen([sys.executable, "-m", "mcktools.live.watchdog"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    env=env, close_fds=True, start_new_session=True)
        except OSError as exc:
            raise LiveError(f"cannot start the freeze watchdog: {exc.strerror or exc}") from None
        dog = cls(proc)
        try:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(line.encode())
            proc.stdin.flush()
            reply = dog._read_line(timeout)
        except BaseException:
            dog._reap(kill=True)
            raise
        if reply != "ready":
            dog._reap(kill=True)
            message = reply[len("error: "):] if reply.startswith("error: ") else \
                f"the freeze watchdog did not start (said {reply!r})"
            raise LiveError(message)
        proc.stdout.close()
        return dog

    def _read_line(self, timeout: float) -> str:
        assert self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        data = b""
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return "" if not data else data.decode(errors="replace").strip()
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
        return data.decode(errors="replace").strip()

    def disarm(self) -> None:
        """The tool released the target itself: tell the watchdog and wait for it to exit."""
        self._send(b"released\n")
        self._reap()

    def abandon(self) -> None:
        """The tool could not release: let the watchdog try (as if the tool had died)."""
        self._reap()

    def _send(self, data: bytes) -> None:
        try:
            assert self._proc.stdin is not None
            self._proc.stdin.write(data)
            self._proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass

    def _reap(self, kill: bool = False) -> None:
        try:
            if self._proc.stdin is not None:
                self._proc.stdin.close()
        except OSError:
            pass
        if kill:
            self._proc.kill()
        try:
            self._proc.wait(EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def main() -> int:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    stdin = sys.stdin.buffer
    out = sys.stdout
    try:
        spec = json.loads(stdin.readline() or b"null")
        do_release = release_kinds.prepare(spec)
    except (ValueError, McktoolsError) as exc:
        out.write(f"error: {exc}\n")
        out.flush()
        return 2
    out.write("ready\n")
    out.flush()
    while True:
        line = stdin.readline()
        if not line:
            break  # the tool is gone
        if line.strip() == b"released":
            return 0
    try:
        do_release()
    except Exception as exc:  # nobody else can report it: say it once on stderr
        print(f"mcktools watchdog: error: could not release the frozen target: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
