"""Packet layer of eclair: framing, checksums, escapes, RLE, acks, Ctrl-C,
malformed and oversized input.  Bytes in, bytes out; no sockets.

Expected frames come from the GDB manual and from what gdb 13 puts on the
wire (e.g. `$OK#9a`, `$g#67`), not from the codec under test.
"""

from __future__ import annotations

import random

import pytest

from eclair.packets import (
    Ack, BadPacket, Connection, Garbage, Interrupt, Nak, Oversized, Packet, PacketDecoder,
    decode_rle, escape_binary, frame, unescape_binary,
)

# Frames as gdb and gdbserver send them (checksums from the protocol traces
# in the GDB manual / gdb's own `set debug remote 1` output).
KNOWN_FRAMES = [
    (b"OK", b"$OK#9a"),
    (b"g", b"$g#67"),
    (b"?", b"$?#3f"),
    (b"qC", b"$qC#b4"),
    (b"vMustReplyEmpty", b"$vMustReplyEmpty#3a"),
    (b"QStartNoAckMode", b"$QStartNoAckMode#b0"),
    (b"", b"$#00"),
]


@pytest.mark.parametrize("payload,wire", KNOWN_FRAMES)
def test_frame_matches_gdb_wire_format(payload, wire):
    assert frame(payload) == wire


@pytest.mark.parametrize("payload,wire", KNOWN_FRAMES)
def test_decoder_accepts_gdb_frames(payload, wire):
    assert PacketDecoder().feed(wire) == [Packet(payload)]


def test_checksum_hex_is_case_insensitive():
    assert PacketDecoder().feed(b"$OK#9A") == [Packet(b"OK")]


def test_bad_checksum_is_reported_and_nakked():
    dec = PacketDecoder()
    events = dec.feed(b"$OK#00")
    assert len(events) == 1 and isinstance(events[0], BadPacket)
    conn = Connection()
    assert conn.feed(b"$OK#00") == []
    assert conn.take_output() == b"-"


def test_non_hex_checksum_is_bad():
    events = PacketDecoder().feed(b"$OK#zz")
    assert isinstance(events[0], BadPacket)


def test_good_packet_is_acked_in_ack_mode_only():
    conn = Connection()
    assert conn.feed(b"$g#67") == [Packet(b"g")]
    assert conn.take_output() == b"+"
    conn.ack_mode = False
    assert conn.feed(b"$g#67") == [Packet(b"g")]
    assert conn.take_output() == b""


def test_nak_retransmits_last_packet():
    conn = Connection()
    conn.send(b"OK")
    assert conn.take_output() == b"$OK#9a"
    conn.feed(b"-")
    assert conn.take_output() == b"$OK#9a"
    conn.feed(b"+")
    assert conn.take_output() == b""


def test_nak_ignored_without_acks():
    conn = Connection()
    conn.send(b"OK")
    conn.take_output()
    conn.ack_mode = False
    conn.feed(b"-")
    assert conn.take_output() == b""


def test_ctrl_c_outside_packet_is_interrupt_inside_is_data():
    dec = PacketDecoder()
    assert dec.feed(b"\x03") == [Interrupt()]
    # 0x03 inside a body (X packets carry raw binary) is data, not Ctrl-C
    body = b"X1000,1:\x03"
    assert dec.feed(b"$" + body + b"#%02x" % (sum(body) & 0xFF)) == [Packet(body)]


def test_acks_naks_and_garbage_between_packets():
    events = PacketDecoder().feed(b"+junk$g#67\r\n-$?#3f")
    kinds = [type(e) for e in events]
    assert kinds == [Ack, Garbage, Packet, Garbage, Nak, Packet]
    assert [e.payload for e in events if isinstance(e, Packet)] == [b"g", b"?"]


def test_torn_packet_restarts_at_dollar():
    events = PacketDecoder().feed(b"$qSupp$g#67")
    assert [e for e in events if isinstance(e, Packet)] == [Packet(b"g")]


def test_byte_by_byte_feeding_equals_whole_feeding():
    stream = b"+$qSupported:xmlRegisters=i386#6a\x03$m1000,10#f1--$OK#00garbage$?#3f"
    whole = PacketDecoder().feed(stream)
    dec = PacketDecoder()
    pieces = []
    for i in range(len(stream)):
        pieces += dec.feed(stream[i:i + 1])
    # garbage may be reported in several pieces; compare everything else
    strip = lambda evs: [e for e in evs if not isinstance(e, Garbage)]  # noqa: E731
    assert strip(pieces) == strip(whole)
    assert b"".join(e.data for e in pieces if isinstance(e, Garbage)) == \
        b"".join(e.data for e in whole if isinstance(e, Garbage))


def test_rle_example_from_gdb_manual():
    # GDB manual, "Overview": "0* " means the same as "0000".
    assert decode_rle(b"0* ") == b"0000"
    body = b"0* "
    wire = b"$" + body + b"#%02x" % (sum(body) & 0xFF)
    assert PacketDecoder().feed(wire) == [Packet(b"0000")]


@pytest.mark.parametrize("body", [b"*a", b"ab*"])
def test_broken_rle_is_a_bad_packet(body):
    wire = b"$" + body + b"#%02x" % (sum(body) & 0xFF)
    events = PacketDecoder().feed(wire)
    assert len(events) == 1 and isinstance(events[0], BadPacket)


def test_escape_rules_of_the_manual():
    # '}' then the byte XOR 0x20 for '#', '$', '}' and '*'.
    assert escape_binary(b"#$}*a")[0] == b"}\x03}\x04}\x5d}\x0aa"
    assert unescape_binary(b"}\x03}\x04}\x5d}\x0aa") == b"#$}*a"


def test_escape_roundtrip_random_and_never_raw_special():
    rng = random.Random(1)
    for _ in range(200):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
        esc, used = escape_binary(data)
        assert used == len(data)
        assert unescape_binary(esc) == data
        raw = esc.replace(b"}\x03", b"").replace(b"}\x04", b"").replace(b"}\x5d", b"").replace(b"}\x0a", b"")
        assert not any(c in raw for c in b"#$*}")


def test_escape_limit_never_splits_an_escape():
    esc, used = escape_binary(b"a}}}", limit=4)
    assert esc == b"a}\x5d" and used == 2


def test_unescape_rejects_dangling_escape():
    with pytest.raises(ValueError):
        unescape_binary(b"ab}")


def test_oversized_packet_is_discarded_and_stream_recovers():
    dec = PacketDecoder(max_payload=16)
    big = b"m" + b"1" * 100
    events = dec.feed(b"$" + big + b"#%02x" % (sum(big) & 0xFF) + b"$g#67")
    assert isinstance(events[0], Oversized) and events[0].length == len(big)
    assert events[1:] == [Packet(b"g")]


def test_oversized_packet_split_across_feeds():
    dec = PacketDecoder(max_payload=16)
    events = []
    events += dec.feed(b"$" + b"a" * 10)
    events += dec.feed(b"b" * 1000)
    events += dec.feed(b"#00$?#3f")
    assert [type(e) for e in events] == [Oversized, Packet]


def test_exactly_max_payload_is_accepted():
    dec = PacketDecoder(max_payload=16)
    body = b"x" * 16
    assert dec.feed(frame(body)) == [Packet(body)]


def test_random_garbage_never_crashes_and_keeps_state_bounded():
    rng = random.Random(7)
    dec = PacketDecoder(max_payload=64)
    for _ in range(300):
        chunk = bytes(rng.choice(b"$#+-\x03}*0a9fz") for _ in range(rng.randrange(50)))
        dec.feed(chunk)
        assert len(dec._body) <= 64
    # and it still decodes a good packet afterwards (after closing any open one)
    events = dec.feed(b"#00$g#67")
    assert Packet(b"g") in events


def test_ack_mode_keeps_one_packet_in_flight():
    conn = Connection()
    for p in (b"O41", b"O42", b"OK"):
        conn.send(p)
    assert conn.take_output() == b"$O41#b4"
    conn.feed(b"-")
    assert conn.take_output() == b"$O41#b4"
    conn.feed(b"+")
    assert conn.take_output() == b"$O42#b5"
    conn.feed(b"+")
    assert conn.take_output() == b"$OK#9a"
    conn.feed(b"+")
    assert conn.take_output() == b""


def test_leaving_ack_mode_releases_waiting_packets():
    conn = Connection()
    conn.send(b"OK")
    conn.send(b"O41")
    conn.ack_mode = False
    assert conn.take_output() == b"$OK#9a$O41#b4"
