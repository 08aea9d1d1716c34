"""Byte pipes between gdb and the server: stdio and loopback TCP.

A transport has recv(n) -> bytes (b'' at end of stream), send(data) and
close().  Stdio uses raw os.read/os.write on the file descriptors because
buffered sys.stdin would hold back a packet gdb is waiting on; nothing else
may write to stdout while serving (log to a file instead).
"""

from __future__ import annotations

import os
import socket
from typing import Optional, Tuple

from mcktools.errors import McktoolsError


class StdioTransport:
    def __init__(self, rfd: int = 0, wfd: int = 1):
        self.rfd = rfd
        self.wfd = wfd

    def recv(self, n: int) -> bytes:
        try:
            return os.read(self.rfd, n)
        except (ConnectionResetError, BrokenPipeError):
            return b""

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                written = os.write(self.wfd, view)
                view = view[written:]
        except (BrokenPipeError, ConnectionResetError):
            pass  # gdb went away; the next recv sees the end of the stream

    def close(self) -> None:
        pass


class SocketTransport:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def recv(self, n: int) -> bytes:
        try:
            return self.sock.recv(n)
        except (ConnectionResetError, BrokenPipeError):
            return b""

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # gdb went away; the next recv sees the end of the stream

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def parse_listen_address(text: str) -> Tuple[str, int]:
    """'[HOST:]PORT' -> (host, port); the host defaults to 127.0.0.1 so a
    dump is never served to the network unless asked for."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host = "127.0.0.1"
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        raise McktoolsError(f"bad listen address {text!r}: port must be a number") from None
    if not 0 <= number <= 65535:
        raise McktoolsError(f"bad listen address {text!r}: port out of range")
    return host, number


class Listener:
    """A listening TCP socket; `port` is known right after creation (port 0
    picks an ephemeral one)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
        except OSError as exc:
            self.sock.close()
            raise McktoolsError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        self.sock.listen(1)
        self.host = host
        self.port = self.sock.getsockname()[1]

    def accept(self, timeout: Optional[float] = None) -> Optional[SocketTransport]:
        """One connection, or None when `timeout` seconds pass without one."""
        self.sock.settimeout(timeout)
        try:
            conn, _ = self.sock.accept()
        except socket.timeout:
            return None
        conn.settimeout(None)
        return SocketTransport(conn)

    def close(self) -> None:
        self.sock.close()
