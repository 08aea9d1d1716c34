"""The GDB remote protocol state machine, over a `Provider`.

`GdbServer.on_bytes(data) -> bytes` is the whole protocol: bytes from gdb in,
bytes for gdb out, no I/O, so tests can drive it directly.  `serve()` pumps
a transport (eclair.transport) through it.

Replies follow the GDB manual and what gdb 13 does with them:
- unknown packets get an empty reply (gdb then stops using them);
- registers a thread has not saved are 'xx' bytes, shown as <unavailable>;
- memory reads return the readable prefix, or an E reply when nothing at
  the address is readable, never zeros for missing memory; `m` replies
  run-length encode runs of '0' (gdb decodes that in every reply);
- qXfer objects honour offset/length and are binary-escaped.
"""

from __future__ import annotations

import traceback
from typing import Callable, Dict, List, Optional, Tuple
from xml.sax.saxutils import escape, quoteattr

from mcktools.errors import McktoolsError, UnreadableAddress

from .packets import (
    Connection, Interrupt, Oversized, Packet, escape_binary, hex_rle, unescape_binary,
)
from .provider import Provider, ThreadInfo
from .registers import LAYOUTS, RegisterLayout

#: Advertised PacketSize (payload bytes gdb may send and we may send back).
#: gdb reads memory in chunks of about half of this (hex doubles the size).
DEFAULT_PACKET_SIZE = 0x20000

SIGINT = 2
SIGTRAP = 5

_E_GENERIC = b"E01"
_E_BADARG = b"E02"
_E_MEMORY = b"E0e"  # EFAULT-like; gdb reports "Cannot access memory"


class ProtocolArgumentError(ValueError):
    """A packet's arguments do not parse."""


def _hex_int(text: str) -> int:
    try:
        return int(text, 16)
    except ValueError:
        raise ProtocolArgumentError(f"not a hex number: {text!r}") from None


def _addr_len(args: str) -> Tuple[int, int]:
    addr, sep, length = args.partition(",")
    if not sep:
        raise ProtocolArgumentError(f"expected ADDR,LENGTH: {args!r}")
    return _hex_int(addr), _hex_int(length)


def parse_thread_id(text: str) -> Optional[int]:
    """gdb thread-id syntax: hex id, '0' (any), '-1' (all), or 'pPID.TID'.

    Returns None for 'any'/'all'."""
    if text.startswith("p"):
        _, dot, text = text[1:].partition(".")
        if not dot:
            return None
    if text in ("0", "-1", ""):
        return None
    return _hex_int(text)


class GdbServer:
    """One gdb connection's protocol state."""

    def __init__(
        self,
        provider: Provider,
        *,
        packet_size: int = DEFAULT_PACKET_SIZE,
        log: Optional[Callable[[str], None]] = None,
    ):
        self.provider = provider
        layout = LAYOUTS.get(provider.architecture)
        if layout is None:
            raise McktoolsError(f"no register layout for architecture {provider.architecture!r}")
        self.layout: RegisterLayout = layout
        self.packet_size = packet_size
        self.conn = Connection(max_payload=packet_size)
        self.log = log or (lambda msg: None)
        self.closed = False
        self.running = False
        self._general: Optional[int] = None  # Hg selection
        self._threads: Optional[List[ThreadInfo]] = None
        self._thread_list_rest: List[int] = []
        self._xfer_cache: Dict[Tuple[str, str], bytes] = {}
        self._commands: Dict[str, Callable[[str], object]] = {
            "?": self._cmd_stop_reason,
            "g": self._cmd_read_registers,
            "G": lambda args: _E_GENERIC,
            "p": self._cmd_read_register,
            "P": lambda args: _E_GENERIC,
            "m": self._cmd_read_memory,
            "x": self._cmd_read_memory_binary,
            "M": self._cmd_write_memory,
            "X": self._cmd_write_memory_binary,
            "H": self._cmd_set_thread,
            "T": self._cmd_thread_alive,
            "c": self._cmd_continue,
            "C": self._cmd_continue,
            "s": self._cmd_step,
            "S": self._cmd_step,
            "D": self._cmd_detach,
            "k": self._cmd_kill,
        }
        self._queries: Dict[str, Callable[[str], object]] = {
            "qSupported": self._q_supported,
            "QStartNoAckMode": self._q_start_no_ack,
            "qXfer": self._q_xfer,
            "qfThreadInfo": self._q_first_thread_info,
            "qsThreadInfo": self._q_subsequent_thread_info,
            "qThreadExtraInfo": self._q_thread_extra_info,
            "qC": self._q_current_thread,
            "qAttached": lambda args: b"1",
            "qSymbol": lambda args: b"OK",
            "qRcmd": self._q_rcmd,
            "vKill": self._v_kill,
            "vCont": self._v_cont,
        }

    # ---------------------------------------------------------------- driving

    def on_bytes(self, data: bytes) -> bytes:
        """Feed bytes received from gdb; return the bytes to send back."""
        for ev in self.conn.feed(data):
            if self.closed:
                break
            if isinstance(ev, Packet):
                self._dispatch(ev.payload)
            elif isinstance(ev, Interrupt):
                self._on_interrupt()
            elif isinstance(ev, Oversized):
                self.log(f"oversized packet ({ev.length} bytes) discarded")
                self._send(_E_GENERIC)
        for ignored in self.conn.log:
            self.log(f"ignored {ignored!r:.200}")
        self.conn.log.clear()
        return self.conn.take_output()

    def serve(self, transport) -> None:
        """Serve one connection until gdb detaches, kills or disconnects."""
        while not self.closed:
            data = transport.recv(1 << 16)
            if not data:
                self.log("connection closed by gdb")
                break
            out = self.on_bytes(data)
            if out:
                transport.send(out)

    def handle(self, payload: bytes) -> List[bytes]:
        """Answer one packet payload; returns the reply payloads in order
        (several for monitor output, none for 'k' or a running target)."""
        text = payload.decode("latin-1")
        try:
            reply = self._route(text)
        except ProtocolArgumentError as exc:
            self.log(f"bad arguments: {exc}")
            reply = _E_BADARG
        except McktoolsError as exc:
            self.log(f"error: {exc}")
            reply = _E_GENERIC
        except Exception:  # a bug: keep the session alive, tell the log
            self.log("internal error:\n" + traceback.format_exc())
            reply = _E_GENERIC
        if reply is None:
            return []
        if isinstance(reply, (bytes, bytearray)):
            return [bytes(reply)]
        return [bytes(r) for r in reply]

    def _dispatch(self, payload: bytes) -> None:
        self.log(f"<- {payload[:200]!r}")
        for reply in self.handle(payload):
            self._send(reply)
        if payload == b"QStartNoAckMode":
            # The OK itself is still acked; nothing after it is.
            self.conn.ack_mode = False

    def _send(self, payload: bytes) -> None:
        self.log(f"-> {payload[:200]!r}")
        self.conn.send(payload)

    def _route(self, text: str) -> object:
        if not text:
            return b""
        if text[0] in "qQv":
            name = text
            for i, ch in enumerate(text):
                if ch in ":,;?":
                    name = text[:i]
                    break
            handler = self._queries.get(name)
            if handler is None:
                return b""
            return handler(text[len(name):])
        handler = self._commands.get(text[0])
        if handler is None:
            return b""
        return handler(text[1:])

    # ---------------------------------------------------------------- threads

    def _thread_list(self) -> List[ThreadInfo]:
        if self._threads is None:
            self._threads = list(self.provider.threads())
        return self._threads

    def _find_thread(self, tid: int) -> Optional[ThreadInfo]:
        for t in self._thread_list():
            if t.id == tid:
                return t
        return None

    def _stop_thread(self) -> Optional[ThreadInfo]:
        tid = self.provider.stop_thread()
        if tid is not None:
            found = self._find_thread(tid)
            if found is not None:
                return found
        threads = self._thread_list()
        return threads[0] if threads else None

    def _current(self) -> Optional[int]:
        if self._general is not None:
            return self._general
        t = self._stop_thread()
        return t.id if t else None

    def _on_stop(self) -> None:
        """A new stop: forget everything derived from the previous one."""
        self.running = False
        self.provider.refresh()
        self._threads = None
        self._general = None
        self._xfer_cache.clear()

    def _stop_reply(self, signal: int = SIGTRAP) -> bytes:
        t = self._stop_thread()
        if t is None:
            return b"S%02x" % signal
        self._general = t.id
        reply = f"T{signal:02x}thread:{t.id:x};"
        if t.core is not None:
            reply += f"core:{t.core:x};"
        return reply.encode()

    def _cmd_stop_reason(self, args: str) -> bytes:
        if not self.running:
            self._on_stop()
        return self._stop_reply()

    def _cmd_set_thread(self, args: str) -> bytes:
        if not args:
            raise ProtocolArgumentError("H without operation")
        op, tid = args[0], parse_thread_id(args[1:])
        if op != "g":
            return b"OK"  # Hc: resumption applies to the whole target anyway
        if tid is None:
            return b"OK"
        if self._find_thread(tid) is None:
            return _E_GENERIC
        self._general = tid
        return b"OK"

    def _cmd_thread_alive(self, args: str) -> bytes:
        tid = parse_thread_id(args)
        if tid is None or self._find_thread(tid) is not None:
            return b"OK"
        return _E_GENERIC

    def _q_current_thread(self, args: str) -> bytes:
        cur = self._current()
        return b"" if cur is None else f"QC{cur:x}".encode()

    def _q_first_thread_info(self, args: str) -> bytes:
        self._thread_list_rest = [t.id for t in self._thread_list()]
        return self._q_subsequent_thread_info(args)

    def _q_subsequent_thread_info(self, args: str) -> bytes:
        if not self._thread_list_rest:
            return b"l"
        ids: List[str] = []
        size = 1
        while self._thread_list_rest:
            item = f"{self._thread_list_rest[0]:x}"
            if size + len(item) + 1 > self.packet_size:
                break
            ids.append(item)
            size += len(item) + 1
            self._thread_list_rest.pop(0)
        return ("m" + ",".join(ids)).encode()

    def _q_thread_extra_info(self, args: str) -> bytes:
        tid = parse_thread_id(args.lstrip(","))
        t = self._find_thread(tid) if tid is not None else None
        if t is None:
            return _E_GENERIC
        text = t.extra
        if t.name and t.name not in text:
            text = f"{text} ({t.name})" if text else t.name
        return text.encode("utf-8", "replace").hex().encode()

    # -------------------------------------------------------------- registers

    def _registers(self) -> Dict[str, Optional[int]]:
        cur = self._current()
        if cur is None:
            return {}
        return dict(self.provider.registers(cur))

    def _cmd_read_registers(self, args: str) -> bytes:
        return self.layout.encode_all(self._registers()).encode()

    def _cmd_read_register(self, args: str) -> bytes:
        encoded = self.layout.encode_number(_hex_int(args), self._registers())
        return _E_GENERIC if encoded is None else encoded.encode()

    # ----------------------------------------------------------------- memory

    def _read(self, addr: int, length: int) -> bytes:
        """Readable prefix of [addr, addr+length); b'' when none is readable."""
        tid = self._current() or 0
        try:
            data = self.provider.read_memory(tid, addr, length)
        except UnreadableAddress as exc:
            if not addr < exc.address < addr + length:
                return b""
            # The provider said where reading stops: serve what comes before.
            try:
                data = self.provider.read_memory(tid, addr, exc.address - addr)
            except McktoolsError:
                return b""
        except McktoolsError as exc:
            self.log(f"read {addr:#x}+{length:#x}: {exc}")
            return b""
        return bytes(data[:length])

    def _cmd_read_memory(self, args: str) -> bytes:
        addr, length = _addr_len(args)
        if length == 0:
            return b""
        data = self._read(addr, min(length, self.packet_size // 2))
        # run-length encoded: gdb's cost is per character it parses
        return hex_rle(data) if data else _E_MEMORY

    def _cmd_read_memory_binary(self, args: str) -> bytes:
        addr, length = _addr_len(args)
        if length == 0:
            return b"b"
        data = self._read(addr, min(length, self.packet_size - 1))
        if not data:
            return _E_MEMORY
        escaped, _ = escape_binary(data, self.packet_size - 1)
        return b"b" + escaped

    def _cmd_write_memory(self, args: str) -> bytes:
        where, _, hexdata = args.partition(":")
        addr, length = _addr_len(where)
        try:
            data = bytes.fromhex(hexdata)
        except ValueError:
            raise ProtocolArgumentError("M data is not hex") from None
        if len(data) != length:
            raise ProtocolArgumentError("M length does not match its data")
        self.provider.write_memory(self._current() or 0, addr, data)
        return b"OK"

    def _cmd_write_memory_binary(self, args: str) -> bytes:
        where, sep, raw = args.partition(":")
        addr, length = _addr_len(where)
        try:
            data = unescape_binary(raw.encode("latin-1"))
        except ValueError as exc:
            raise ProtocolArgumentError(str(exc)) from None
        if len(data) != length:
            raise ProtocolArgumentError("X length does not match its data")
        if length == 0:
            # gdb probes X support with an empty write; answer for a read-only target
            return b"OK" if self.provider.live else _E_GENERIC
        self.provider.write_memory(self._current() or 0, addr, data)
        return b"OK"

    # ------------------------------------------------------------ run control

    def _refuse_run(self, what: str, exc: Exception) -> List[bytes]:
        return [b"O" + f"eclair: {what}: {exc}\n".encode().hex().encode(), self._stop_reply()]

    def _cmd_continue(self, args: str) -> object:
        try:
            self.provider.resume()
        except McktoolsError as exc:
            return self._refuse_run("cannot continue", exc)
        self.running = True
        self._threads = None
        return None  # the stop reply comes when the target stops (Ctrl-C)

    def _cmd_step(self, args: str) -> object:
        return self._refuse_run("cannot single-step", McktoolsError("not supported by eclair"))

    def _v_cont(self, args: str) -> object:
        if args == "?":
            return b""  # no vCont: gdb falls back to c/s
        return b""

    def _on_interrupt(self) -> None:
        if not self.running:
            self.log("interrupt while stopped: ignored")
            return
        try:
            self.provider.interrupt()
        except McktoolsError as exc:
            self.log(f"interrupt failed: {exc}")
            self._send(b"O" + f"eclair: cannot stop the target: {exc}\n".encode().hex().encode())
            return
        try:
            self._on_stop()
            reply = self._stop_reply(SIGINT)
        except McktoolsError as exc:
            # the target did stop: report it even if re-reading its state failed
            self.log(f"reading the stopped target failed: {exc}")
            self.running = False
            reply = b"S%02x" % SIGINT
        self._send(reply)

    def _cmd_detach(self, args: str) -> bytes:
        self.closed = True
        return b"OK"

    def _cmd_kill(self, args: str) -> None:
        self.closed = True
        return None

    def _v_kill(self, args: str) -> bytes:
        self.closed = True
        return b"OK"

    # --------------------------------------------------------------- queries

    def _q_supported(self, args: str) -> bytes:
        features = [
            f"PacketSize={self.packet_size:x}",
            "QStartNoAckMode+",
            "qXfer:features:read+",
            "qXfer:threads:read+",
            "binary-upload+",
        ]
        if self.provider.memory_map() is not None:
            features.append("qXfer:memory-map:read+")
        return ";".join(features).encode()

    def _q_start_no_ack(self, args: str) -> bytes:
        return b"OK"

    def _q_rcmd(self, args: str) -> List[bytes]:
        try:
            command = bytes.fromhex(args.lstrip(",")).decode("utf-8", "replace")
        except ValueError:
            raise ProtocolArgumentError("qRcmd argument is not hex") from None
        try:
            output = self.provider.monitor(command)
        except McktoolsError as exc:
            output = f"error: {exc}"
        if output and not output.endswith("\n"):
            output += "\n"
        data = output.encode("utf-8", "replace")
        chunk = max(1, (self.packet_size - 1) // 2)
        replies = [b"O" + data[i:i + chunk].hex().encode() for i in range(0, len(data), chunk)]
        replies.append(b"OK")
        return replies

    def _q_xfer(self, args: str) -> bytes:
        # args = ":OBJECT:read:ANNEX:OFFSET,LENGTH"
        parts = args.split(":")
        if len(parts) != 5 or parts[0] != "":
            raise ProtocolArgumentError(f"bad qXfer: {args!r}")
        _, obj, op, annex, span = parts
        if op != "read":
            return b""
        offset, length = _addr_len(span)
        key = (obj, annex)
        doc = self._xfer_cache.get(key) if offset else None
        if doc is None:
            made = self._xfer_document(obj, annex)
            if made is None:
                return b""  # object not supported
            if made is False:
                return b"E00"  # annex unknown
            doc = made
            self._xfer_cache[key] = doc
        if offset > len(doc):
            return b"E01"
        piece = doc[offset:offset + length]
        escaped, used = escape_binary(piece, self.packet_size - 1)
        last = offset + used >= len(doc)
        return (b"l" if last else b"m") + escaped

    def _xfer_document(self, obj: str, annex: str):
        if obj == "features":
            if annex != "target.xml":
                return False
            return self.layout.target_xml().encode()
        if obj == "threads":
            if annex:
                return False
            return self._threads_xml().encode("utf-8", "replace")
        if obj == "memory-map":
            regions = self.provider.memory_map()
            if regions is None:
                return None
            if annex:
                return False
            return memory_map_xml(regions).encode()
        return None

    def _threads_xml(self) -> str:
        lines = ['<?xml version="1.0"?>', "<threads>"]
        for t in self._thread_list():
            attrs = f'id="{t.id:x}"'
            if t.core is not None:
                attrs += f' core="{t.core}"'
            if t.name:
                attrs += f" name={quoteattr(t.name)}"
            lines.append(f"<thread {attrs}>{escape(t.extra)}</thread>")
        lines.append("</threads>")
        return "\n".join(lines) + "\n"


def merge_regions(regions) -> List[Tuple[int, int]]:
    """Sort (start, length) regions and merge overlapping or touching ones:
    gdb rejects a memory map whose regions overlap."""
    merged: List[List[int]] = []
    for start, length in sorted((int(s), int(n)) for s, n in regions if n > 0):
        end = start + length
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(s, e - s) for s, e in merged]


def memory_map_xml(regions) -> str:
    lines = [
        '<?xml version="1.0"?>',
        '<!DOCTYPE memory-map PUBLIC "+//IDN gnu.org//DTD GDB Memory Map V1.0//EN"'
        ' "http://sourceware.org/gdb/gdb-memory-map.dtd">',
        "<memory-map>",
    ]
    for start, length in merge_regions(regions):
        lines.append(f'  <memory type="ram" start="{start:#x}" length="{length:#x}"/>')
    lines.append("</memory-map>")
    return "\n".join(lines) + "\n"
