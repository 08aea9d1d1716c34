"""A tiny synchronous QMP client (QEMU Machine Protocol over a Unix socket).

Only what the harness needs: connect (retrying while QEMU creates the socket),
negotiate capabilities, run one command at a time and collect asynchronous
events on the side.  QMP is line-delimited JSON; each reply is either
{"return": ...}, {"error": {...}} or an event {"event": ...}.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

from ..errors import LiveError


class QMPError(LiveError):
    """QEMU answered a command with an error object."""

    def __init__(self, command: str, error: dict):
        self.command = command
        self.error_class = error.get("class", "")
        self.desc = error.get("desc", "")
        super().__init__(f"QMP {command} failed: {self.error_class}: {self.desc}")


class QMPClient:
    """One connection to one QMP socket (QEMU serves one client per socket)."""

    def __init__(self, path: str, *, timeout: float = 10.0):
        self.path = path
        self.timeout = timeout
        self.events: list[dict] = []
        self.greeting: dict | None = None
        self._sock: socket.socket | None = None
        self._buf = b""
        self._next_id = 0

    # -- connection -------------------------------------------------------
    def connect(self, *, wait: float = 10.0, alive=None) -> "QMPClient":
        """Connect, retrying for `wait` seconds while the socket does not exist yet.

        `alive` is an optional callable returning False once QEMU has exited, so
        that a QEMU that died at start-up fails fast instead of after `wait`.
        """
        deadline = time.monotonic() + wait
        last: Exception | None = None
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(self.timeout)
                sock.connect(self.path)
                self._sock = sock
                break
            except OSError as exc:
                sock.close()
                last = exc
            if alive is not None and not alive():
                raise LiveError(f"QEMU exited before its QMP socket {self.path} accepted a connection")
            if time.monotonic() > deadline:
                raise LiveError(f"cannot connect to QMP socket {self.path}: {last}")
            time.sleep(0.02)
        self.greeting = self._read_message()
        if "QMP" not in self.greeting:
            raise LiveError(f"unexpected QMP greeting: {self.greeting!r}")
        self.execute("qmp_capabilities")
        return self

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def __enter__(self) -> "QMPClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- messages ---------------------------------------------------------
    def _read_message(self) -> dict:
        if self._sock is None:
            raise LiveError("QMP client is not connected")
        while b"\n" not in self._buf:
            try:
                data = self._sock.recv(65536)
            except socket.timeout:
                raise LiveError(f"QMP socket {self.path}: no reply within {self.timeout} s") from None
            except OSError as exc:
                raise LiveError(f"QMP socket {self.path}: {exc}") from None
            if not data:
                raise LiveError(f"QMP socket {self.path} closed by QEMU")
            self._buf += data
        line, self._buf = self._buf.split(b"\n", 1)
        try:
            msg = json.loads(line)
        except ValueError:
            raise LiveError(f"QMP sent a line that is not JSON: {line[:80]!r}") from None
        if not isinstance(msg, dict):
            raise LiveError(f"QMP sent a non-object message: {line[:80]!r}")
        return msg

    def execute(self, command: str, timeout: float | None = None, **arguments: Any) -> Any:
        """Run one command and return its "return" value (events are kept in .events)."""
        if self._sock is None:
            raise LiveError("QMP client is not connected")
        self._next_id += 1
        ident = f"mck-{self._next_id}"
        req: dict = {"execute": command, "id": ident}
        if arguments:
            req["arguments"] = arguments
        old = self._sock.gettimeout()
        if timeout is not None:
            self._sock.settimeout(timeout)
        try:
            self._sock.sendall(json.dumps(req).encode() + b"\n")
            while True:
                msg = self._read_message()
                if "event" in msg:
                    self.events.append(msg)
                    continue
                if msg.get("id") not in (ident, None):
                    continue  # a late reply to an abandoned command
                if "error" in msg:
                    raise QMPError(command, msg["error"])
                if "return" in msg:
                    return msg["return"]
        except BrokenPipeError:
            raise LiveError(f"QMP socket {self.path} closed by QEMU") from None
        finally:
            if timeout is not None and self._sock is not None:
                self._sock.settimeout(old)
