"""GDB remote serial protocol framing: a pure codec, bytes in and bytes out.

Nothing here touches a socket or a file descriptor, so every framing rule
(checksums, escapes, run-length encoding, acks, Ctrl-C, garbage, oversized
packets) can be tested by feeding byte strings.

Two layers:
- `PacketDecoder.feed(data) -> list[event]` splits a byte stream into events.
- `Connection` adds the ack discipline on top: it queues `+`/`-` for received
  packets, retransmits the last packet on a `-`, and stops acking once
  no-ack mode is on.  Its output is collected with `take_output()`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional, Union

INTERRUPT_BYTE = 0x03

# Characters that must not appear raw inside binary data: '#' and '$' frame
# packets, '}' is the escape itself and '*' starts a run-length sequence.
# The escape is '}' followed by the byte XOR 0x20 (GDB manual, "Overview").
_ESCAPE = 0x7D
_NEEDS_ESCAPE = frozenset(b"#$}*")


@dataclass(frozen=True)
class Packet:
    """A well-formed packet; `payload` is already run-length decoded."""

    payload: bytes


@dataclass(frozen=True)
class Ack:
    """A '+' from the peer."""


@dataclass(frozen=True)
class Nak:
    """A '-' from the peer: it wants the last packet again."""


@dataclass(frozen=True)
class Interrupt:
    """A raw 0x03 outside any packet: GDB's Ctrl-C."""


@dataclass(frozen=True)
class BadPacket:
    """A framed packet that cannot be used (checksum mismatch, broken RLE)."""

    reason: str
    body: bytes


@dataclass(frozen=True)
class Oversized:
    """A packet longer than the decoder accepts; its body was discarded."""

    length: int


@dataclass(frozen=True)
class Garbage:
    """Bytes outside any packet that mean nothing; reported for logging only."""

    data: bytes


Event = Union[Packet, Ack, Nak, Interrupt, BadPacket, Oversized, Garbage]


def checksum(body: bytes) -> int:
    """The RSP checksum: the sum of the body bytes modulo 256."""
    return sum(body) & 0xFF


def frame(payload: bytes) -> bytes:
    """`$payload#cs`.  The payload must already be escaped where needed."""
    return b"$" + payload + b"#" + b"%02x" % checksum(payload)


#: run-length encoding (GDB manual, "Overview" of the remote protocol): `X*c`
#: stands for X followed by ord(c) - 29 more copies of X.  Counts giving '#'
#: or '$' (6, 7) are not allowed; we also avoid '}' (96), the escape byte.
_RLE_MAX = 126 - 29          # extra copies per `X*~`
_ZERO_RUN_MIN = 16           # shorter runs are not worth a search
_NUL_RUN = re.compile(b"\\x00*")
_ZERO_BLOCK = bytes(1 << 16)


def _rle_run(char: bytes, n: int) -> bytes:
    """Encode n copies of one character (n >= 1)."""
    full, rest = divmod(n, _RLE_MAX + 1)
    out = (char + b"*" + bytes([_RLE_MAX + 29])) * full
    if rest <= 3:
        return out + char * rest
    extra = rest - 1
    if extra in (6, 7):
        return out + char + b'*"' + char * (extra - 5)
    if extra == 96:
        return out + char + b"*|" + char
    return out + char + b"*" + bytes([extra + 29])


def _zero_run_end(data: bytes, pos: int) -> int:
    """First index >= pos whose byte is not zero (len(data) if none):
    compares growing blocks against zeros (memcmp), then scans the last block."""
    n = len(data)
    step = 64
    while pos < n:
        k = min(step, n - pos)
        if data[pos:pos + k] != _ZERO_BLOCK[:k]:
            return _NUL_RUN.match(data, pos).end()
        pos += k
        step = min(step * 2, len(_ZERO_BLOCK))
    return n


def hex_rle(data: bytes) -> bytes:
    """`data` as hex text for an `m` reply, with runs of zero bytes
    run-length encoded.

    gdb decodes run-length encoding in every reply, and it pays per
    character it parses: kernel memory is mostly zero pages, so this cuts a
    large read's reply many times over.  Zero runs are found with
    bytes.find and block compares, so other data costs little more than
    bytes.hex().
    """
    start = data.find(_ZERO_BLOCK[:_ZERO_RUN_MIN // 2])
    if start < 0:
        return data.hex().encode()
    out = []
    done = 0
    while start >= 0:
        end = _zero_run_end(data, start)
        out.append(data[done:start].hex().encode())
        out.append(_rle_run(b"0", 2 * (end - start)))
        done = end
        start = data.find(_ZERO_BLOCK[:_ZERO_RUN_MIN // 2], end)
    out.append(data[done:].hex().encode())
    return b"".join(out)


def escape_binary(data: bytes, limit: Optional[int] = None) -> tuple[bytes, int]:
    """Escape binary data for a reply; stop before the output exceeds `limit`.

    Returns (escaped bytes, number of input bytes consumed).  The limit lets a
    reply fit a packet even when escaping makes it grow.
    """
    if limit is None and not any(b in _NEEDS_ESCAPE for b in data):
        return data, len(data)
    out = bytearray()
    consumed = 0
    for b in data:
        piece = (_ESCAPE, b ^ 0x20) if b in _NEEDS_ESCAPE else (b,)
        if limit is not None and len(out) + len(piece) > limit:
            break
        out.extend(piece)
        consumed += 1
    return bytes(out), consumed


def unescape_binary(data: bytes) -> bytes:
    """Undo `escape_binary` (used for X and other binary packets from GDB)."""
    if _ESCAPE not in data:
        return data
    out = bytearray()
    it = iter(data)
    for b in it:
        if b == _ESCAPE:
            nxt = next(it, None)
            if nxt is None:
                raise ValueError("binary data ends inside an escape")
            out.append(nxt ^ 0x20)
        else:
            out.append(b)
    return bytes(out)


def decode_rle(body: bytes) -> bytes:
    """Expand run-length encoding: `X*n` means X repeated (ord(n) - 29) more times.

    GDB never sends RLE to a stub, but the protocol allows it, so accept it.
    Raises ValueError for a '*' with nothing to repeat or no count.
    """
    if b"*" not in body:
        return body
    out = bytearray()
    i = 0
    while i < len(body):
        b = body[i]
        if b == 0x2A:  # '*'
            if not out or i + 1 >= len(body):
                raise ValueError("run-length marker without a character or a count")
            count = body[i + 1] - 29
            if count < 0:
                raise ValueError("run-length count below zero")
            out.extend(out[-1:] * count)
            i += 2
        else:
            out.append(b)
            i += 1
    return bytes(out)


_HEX = frozenset(b"0123456789abcdefABCDEF")

# decoder states
_IDLE, _BODY, _CSUM, _DISCARD, _DISCARD_CSUM = range(5)


class PacketDecoder:
    """Incremental parser: `feed` any slice of the stream, get events back.

    Bytes outside packets other than '+', '-' and 0x03 are garbage and are
    skipped.  A '$' inside a body restarts the packet (the first one was
    torn).  Bodies longer than `max_payload` are discarded up to their '#'
    and two checksum characters, and reported as one Oversized event, so
    memory stays bounded whatever the peer sends.
    """

    def __init__(self, max_payload: int = 0x20000):
        self.max_payload = max_payload
        self._state = _IDLE
        self._body = bytearray()
        self._csum = bytearray()
        self._discarded = 0
        self._garbage = bytearray()

    def _flush_garbage(self, events: List[Event]) -> None:
        if self._garbage:
            events.append(Garbage(bytes(self._garbage)))
            self._garbage.clear()

    def feed(self, data: bytes) -> List[Event]:
        events: List[Event] = []
        i = 0
        n = len(data)
        while i < n:
            state = self._state
            if state == _BODY:
                # Copy the run up to the next framing byte in one step: memory
                # replies are long and a per-byte loop would dominate.
                j = i
                while j < n and data[j] not in (0x23, 0x24):  # '#', '$'
                    j += 1
                room = self.max_payload - len(self._body)
                if j - i > room:
                    self._discarded = len(self._body) + (j - i)
                    self._body.clear()
                    self._state = _DISCARD
                    i = j
                    continue
                self._body += data[i:j]
                i = j
                if i < n:
                    if data[i] == 0x23:
                        self._state = _CSUM
                        self._csum.clear()
                    else:  # a new '$': the packet so far was torn
                        self._garbage += b"$" + self._body
                        self._flush_garbage(events)
                        self._body.clear()
                    i += 1
                continue
            b = data[i]
            i += 1
            if state == _IDLE:
                if b == 0x24:  # '$'
                    self._flush_garbage(events)
                    self._state = _BODY
                    self._body.clear()
                elif b == 0x2B:
                    self._flush_garbage(events)
                    events.append(Ack())
                elif b == 0x2D:
                    self._flush_garbage(events)
                    events.append(Nak())
                elif b == INTERRUPT_BYTE:
                    self._flush_garbage(events)
                    events.append(Interrupt())
                else:
                    self._garbage.append(b)
            elif state == _CSUM:
                self._csum.append(b)
                if len(self._csum) == 2:
                    self._state = _IDLE
                    events.append(self._finish())
            elif state == _DISCARD:
                if b == 0x23:
                    self._state = _DISCARD_CSUM
                    self._csum.clear()
                else:
                    self._discarded += 1
                    # skip the rest of the run quickly
                    j = data.find(b"#", i)
                    stop = n if j < 0 else j
                    self._discarded += stop - i
                    i = stop
            elif state == _DISCARD_CSUM:
                self._csum.append(b)
                if len(self._csum) == 2:
                    self._state = _IDLE
                    events.append(Oversized(self._discarded))
                    self._discarded = 0
        self._flush_garbage(events)
        return events

    def _finish(self) -> Event:
        body = bytes(self._body)
        self._body.clear()
        cs = bytes(self._csum)
        if not all(c in _HEX for c in cs):
            return BadPacket(f"checksum {cs!r} is not two hex digits", body)
        if int(cs, 16) != checksum(body):
            return BadPacket(f"checksum {cs.decode()} != {checksum(body):02x}", body)
        try:
            return Packet(decode_rle(body))
        except ValueError as exc:
            return BadPacket(str(exc), body)


class Connection:
    """The ack discipline over a `PacketDecoder`, still free of I/O.

    `feed(data)` returns the events the server must act on (Packet,
    Interrupt, Oversized) and queues acks; `send(payload)` queues a framed
    reply; `take_output()` returns everything queued, in order.

    In ack mode only one packet is in flight: further packets (monitor
    output comes as several) wait for the peer's '+', and a '-' resends the
    one in flight.  Without acks everything goes out at once.
    """

    @property
    def ack_mode(self) -> bool:
        return self._ack_mode

    @ack_mode.setter
    def ack_mode(self, on: bool) -> None:
        self._ack_mode = on
        if not on:
            # nothing will be acknowledged any more: release what waits
            self._release_all()

    def _release_all(self) -> None:
        self._last = None
        for framed in self._queue:
            self._out += framed
        self._queue.clear()

    def __init__(self, max_payload: int = 0x20000):
        self.decoder = PacketDecoder(max_payload)
        self._ack_mode = True
        self._out = bytearray()
        self._last: Optional[bytes] = None  # sent, not yet acknowledged
        self._queue: List[bytes] = []  # waiting for the ack of _last
        self.log: List[Event] = []  # ignored events (garbage, bad packets) for diagnostics

    def feed(self, data: bytes) -> List[Event]:
        result: List[Event] = []
        for ev in self.decoder.feed(data):
            if isinstance(ev, Packet):
                if self.ack_mode:
                    self._out += b"+"
                    # A new request means gdb has our previous reply even if
                    # its '+' went missing: never let a lost ack wedge replies.
                    self._release_all()
                result.append(ev)
            elif isinstance(ev, BadPacket):
                # Ask for it again; without acks the transport is reliable and
                # a retransmit request would not be honoured, so just drop it.
                if self.ack_mode:
                    self._out += b"-"
                self.log.append(ev)
            elif isinstance(ev, Oversized):
                if self.ack_mode:
                    self._out += b"+"
                result.append(ev)
            elif isinstance(ev, Nak):
                if self.ack_mode and self._last is not None:
                    self._out += self._last
            elif isinstance(ev, Ack):
                if self.ack_mode:
                    self._last = self._queue.pop(0) if self._queue else None
                    if self._last is not None:
                        self._out += self._last
            elif isinstance(ev, Interrupt):
                result.append(ev)
            elif isinstance(ev, Garbage):
                self.log.append(ev)
        return result

    def send(self, payload: bytes) -> None:
        framed = frame(payload)
        if not self._ack_mode:
            self._out += framed
        elif self._last is None:
            self._last = framed
            self._out += framed
        else:
            self._queue.append(framed)

    def take_output(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out
