"""eclair's protocol server driven packet by packet (no sockets, no gdb).

Memory comes from a small ELF built here with `as`/`ld`; expected bytes are
read from the file at the offsets `readelf` reports, registers and thread
texts come from the spec the test writes.  XML replies are parsed with
xml.etree, not with anything in eclair.
"""

from __future__ import annotations

import os
import subprocess
import xml.etree.ElementTree as ET

import pytest

from eclair.fakeprovider import FakeProvider
from eclair.packets import Packet, PacketDecoder, frame, unescape_binary
from eclair.provider import ProviderBase, ThreadInfo
from eclair.server import GdbServer, parse_thread_id
from mcktools.errors import McktoolsError

ASM = """
    .text
    .globl _start
_start:
    nop
    ret
    .data
    .globl blob
blob:
    .incbin "{blob}"
    .section .tail,"a"
    .globl tail
tail:
    .ascii "TAIL-SECTION-0123456789"
"""


@pytest.fixture(scope="module")
def elf(tmp_path_factory):
    d = tmp_path_factory.mktemp("eclair_srv")
    blob = d / "blob.bin"
    blob.write_bytes(os.urandom(0x3000) + b"$#}*" * 64)
    (d / "t.s").write_text(ASM.format(blob=blob))
    subprocess.run(["as", "-o", str(d / "t.o"), str(d / "t.s")], check=True, timeout=60)
    subprocess.run(["ld", "-o", str(d / "t.elf"), "-Ttext=0x401000", "-Tdata=0x600000",
                    "--section-start=.tail=0x800000", str(d / "t.o")], check=True, timeout=60)
    return d / "t.elf"


def readelf_loads(path):
    """(vaddr, offset, filesz) of each PT_LOAD, as readelf sees them."""
    out = subprocess.run(["readelf", "-lW", str(path)], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    rows = []
    for line in out.splitlines():
        f = line.split()
        if f and f[0] == "LOAD":
            rows.append((int(f[2], 16), int(f[1], 16), int(f[4], 16)))
    return rows


def file_bytes(path, vaddr, size):
    for v, off, filesz in readelf_loads(path):
        if v <= vaddr and vaddr + size <= v + filesz:
            with open(path, "rb") as f:
                f.seek(off + vaddr - v)
                return f.read(size)
    raise AssertionError("range not in one segment")


def spec(elf, **extra):
    base = {
        "elf": str(elf),
        "threads": [
            {"id": 12, "name": "init", "extra": "PID 12, running on CPU 3", "core": 3,
             "registers": {"rip": 0x401000, "rsp": 0x7FFF0000, "rax": 0x1122334455667788,
                           "eflags": 0x246, "cs": 0x10, "fs_base": 0xABCDEF}},
            {"id": 13, "name": "wo}rk*er$#", "extra": "PID 12, waiting on CPU 1 <&>",
             "registers": {"rip": 0x401001, "rbx": None}},
        ],
        "stop_thread": 12,
        "monitor": {"ps": "PID TID CMD\n12 12 init\n"},
    }
    base.update(extra)
    return base


class Driver:
    """Speaks to a GdbServer the way gdb does: framed packets in, replies out."""

    def __init__(self, provider, **kw):
        self.server = GdbServer(provider, **kw)
        self.dec = PacketDecoder(max_payload=1 << 24)
        self.server.on_bytes(frame(b"QStartNoAckMode"))

    def ask_all(self, payload: bytes):
        out = self.server.on_bytes(frame(payload))
        return [e.payload for e in self.dec.feed(out) if isinstance(e, Packet)]

    def ask(self, payload: bytes) -> bytes:
        replies = self.ask_all(payload)
        assert len(replies) == 1, replies
        return replies[0]


@pytest.fixture
def drv(elf):
    return Driver(FakeProvider(spec(elf)))


def xfer(d: Driver, obj: str, annex: str, chunk: int) -> bytes:
    doc = b""
    while True:
        r = d.ask(f"qXfer:{obj}:read:{annex}:{len(doc):x},{chunk:x}".encode())
        assert r[:1] in (b"m", b"l"), r
        doc += unescape_binary(r[1:])
        if r[:1] == b"l":
            return doc


def test_ack_mode_handshake_then_no_acks(elf):
    server = GdbServer(FakeProvider(spec(elf)))
    out = server.on_bytes(b"+" + frame(b"QStartNoAckMode"))
    assert out == b"+" + frame(b"OK")
    assert server.on_bytes(b"+" + frame(b"qAttached")) == frame(b"1")


def test_qsupported_features(drv):
    feats = dict(
        (f.split("=", 1) if "=" in f else (f[:-1], f[-1]))
        for f in drv.ask(b"qSupported:multiprocess+;xmlRegisters=i386").decode().split(";")
    )
    assert int(feats["PacketSize"], 16) >= 0x4000
    for name in ("QStartNoAckMode", "qXfer:features:read", "qXfer:threads:read", "qXfer:memory-map:read"):
        assert feats[name] == "+"


def test_unknown_packets_get_empty_reply(drv):
    for p in (b"vMustReplyEmpty", b"qTStatus", b"Z0,401000,1", b"qWhatever:1", b"!", b"vCont?"):
        assert drv.ask(p) == b""


def test_target_xml_in_small_chunks_is_amd64(drv):
    doc = xfer(drv, "features", "target.xml", 0x40)
    root = ET.fromstring(doc)
    assert root.find("architecture").text == "i386:x86-64"
    names = [r.get("name") for r in root.iter("reg")]
    expected = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp"] + [f"r{i}" for i in range(8, 16)] + \
        ["rip", "eflags", "cs", "ss", "ds", "es", "fs", "gs"]
    assert names[:24] == expected
    assert "fs_base" in names and "gs_base" in names
    # offset/length are honoured: a mid-document read returns that slice
    r = drv.ask(b"qXfer:features:read:target.xml:10,20")
    assert unescape_binary(r[1:]) == doc[0x10:0x30] and r[:1] == b"m"
    assert drv.ask(b"qXfer:features:read:other.xml:0,100").startswith(b"E")


def test_threads_xml_names_escaping_and_cores(drv):
    doc = xfer(drv, "threads", "", 0x10)  # forces many chunks and escapes
    threads = ET.fromstring(doc).findall("thread")
    assert [(t.get("id"), t.get("name"), t.get("core"), t.text) for t in threads] == [
        ("c", "init", "3", "PID 12, running on CPU 3"),
        ("d", "wo}rk*er$#", None, "PID 12, waiting on CPU 1 <&>"),
    ]


def test_thread_list_extra_info_alive_and_selection(drv):
    assert drv.ask(b"qfThreadInfo") == b"mc,d"
    assert drv.ask(b"qsThreadInfo") == b"l"
    assert bytes.fromhex(drv.ask(b"qThreadExtraInfo,c").decode()).decode() == \
        "PID 12, running on CPU 3 (init)"
    assert drv.ask(b"T" + b"c") == b"OK"
    assert drv.ask(b"T" + b"63") != b"OK"
    assert drv.ask(b"?") == b"T05thread:c;core:3;"
    assert drv.ask(b"qC") == b"QCc"
    assert drv.ask(b"Hgd") == b"OK"
    assert drv.ask(b"qC") == b"QCd"
    assert drv.ask(b"Hg0") == b"OK" and drv.ask(b"qC") == b"QCd"
    assert drv.ask(b"Hg99").startswith(b"E")
    assert drv.ask(b"Hc-1") == b"OK"


def test_parse_thread_id_forms():
    assert parse_thread_id("c") == 12
    assert parse_thread_id("-1") is None and parse_thread_id("0") is None
    assert parse_thread_id("p1.d") == 13


def test_g_and_p_registers(drv):
    g = drv.ask(b"g").decode()
    # amd64 g layout: 17 x 8 bytes (rax..r15, rip), 7 x 4 bytes (eflags, segments)
    assert g[0:16] == (0x1122334455667788).to_bytes(8, "little").hex()
    assert g[16:32] == "x" * 16  # rbx not saved: unavailable, not zeros
    assert g[7 * 16:8 * 16] == (0x7FFF0000).to_bytes(8, "little").hex()  # rsp
    assert g[16 * 16:17 * 16] == (0x401000).to_bytes(8, "little").hex()  # rip
    assert g[17 * 16:17 * 16 + 8] == (0x246).to_bytes(4, "little").hex()  # eflags
    assert g[17 * 16 + 8:17 * 16 + 16] == (0x10).to_bytes(4, "little").hex()  # cs
    assert "0" * 16 not in g  # nothing invented
    assert drv.ask(b"p10") == (0x401000).to_bytes(8, "little").hex().encode()  # regnum 16 = rip
    assert drv.ask(b"p1") == b"x" * 16
    assert drv.ask(b"P10=0000000000000000").startswith(b"E")
    assert drv.ask(b"G" + b"00" * 8).startswith(b"E")
    assert drv.ask(b"p400").startswith(b"E")
    drv.ask(b"Hgd")
    assert drv.ask(b"p10") == (0x401001).to_bytes(8, "little").hex().encode()
    assert drv.ask(b"p0") == b"x" * 16


def test_memory_reads_match_file(drv, elf):
    want = file_bytes(elf, 0x600000, 0x400)
    assert bytes.fromhex(drv.ask(b"m600000,400").decode()) == want
    r = drv.ask(b"x600000,400")
    assert r[:1] == b"b" and unescape_binary(r[1:]) == want
    # the blob ends with bytes that need escaping in binary replies
    end = 0x600000 + 0x3000
    r = drv.ask(f"x{end:x},100".encode())
    assert unescape_binary(r[1:]) == b"$#}*" * 64


def test_memory_partial_and_unreadable(drv, elf):
    loads = readelf_loads(elf)
    data_seg = next(s for s in loads if s[0] == 0x600000)
    seg_end = data_seg[0] + data_seg[2]
    # a read running off the end of the segment returns the readable prefix
    r = drv.ask(f"m{seg_end - 8:x},20".encode())
    assert bytes.fromhex(r.decode()) == file_bytes(elf, seg_end - 8, 8)
    # nothing readable: an error, never zeros
    assert drv.ask(f"m{seg_end:x},10".encode()).startswith(b"E")
    assert drv.ask(f"x{seg_end:x},10".encode()).startswith(b"E")
    assert drv.ask(b"m0,8").startswith(b"E")
    assert drv.ask(b"m600000,0") == b""


def test_memory_hole_via_exception_address(elf):
    class Raising(FakeProvider):
        # reports partial reads by raising with the first bad address
        def read_memory(self, tid, addr, size):
            from mcktools.errors import UnreadableAddress
            if addr < 0x600100 < addr + size:
                raise UnreadableAddress(0x600100, physical=False)
            return super().read_memory(tid, addr, size)

    d = Driver(Raising(spec(elf)))
    r = d.ask(b"m6000f0,40")
    assert bytes.fromhex(r.decode()) == file_bytes(elf, 0x6000F0, 0x10)


def test_large_read_is_capped_by_packet_size(elf):
    d = Driver(FakeProvider(spec(elf)), packet_size=0x4000)
    r = d.ask(b"m600000,10000")
    assert 0 < len(r) <= 0x4000
    assert bytes.fromhex(r.decode()) == file_bytes(elf, 0x600000, len(r) // 2)


def test_writes_are_refused_on_dumps(drv, elf):
    assert drv.ask(b"M600000,2:4142").startswith(b"E")
    assert drv.ask(b"X600000,2:AB").startswith(b"E")
    assert drv.ask(b"X600000,0:").startswith(b"E")
    assert bytes.fromhex(drv.ask(b"m600000,2").decode()) == file_bytes(elf, 0x600000, 2)


def test_malformed_arguments_get_error_not_crash(drv):
    for p in (b"mzz,1", b"m600000", b"pzz", b"qXfer:features:read:target.xml", b"Hgzz", b"qRcmd,zz",
              b"M600000,2:41", b"qXfer:threads:read::zz,10"):
        assert drv.ask(p).startswith(b"E"), p


def test_memory_map_lists_segments_merged(drv, elf):
    doc = xfer(drv, "memory-map", "", 0x1000)
    regions = [(int(m.get("start"), 16), int(m.get("length"), 16))
               for m in ET.fromstring(doc).findall("memory")]
    loads = readelf_loads(elf)
    # every readelf PT_LOAD lies inside one listed region; regions do not overlap
    for v, _, filesz in loads:
        assert any(s <= v and v + filesz <= s + n for s, n in regions)
    for (s1, n1), (s2, _) in zip(regions, regions[1:]):
        assert s1 + n1 < s2


def test_no_memory_map_when_provider_has_none(elf):
    d = Driver(FakeProvider(spec(elf, memory_map="none")))
    assert b"memory-map" not in d.ask(b"qSupported")
    assert d.ask(b"qXfer:memory-map:read::0,100") == b""


def test_monitor_output_as_o_packets(elf):
    d = Driver(FakeProvider(spec(elf)), packet_size=0x20)
    replies = d.ask_all(b"qRcmd," + b"ps -a".hex().encode())
    assert replies[-1] == b"OK"
    text = b"".join(bytes.fromhex(r[1:].decode()) for r in replies[:-1] if r[:1] == b"O")
    assert text.decode() == "PID TID CMD\n12 12 init\n"
    assert len(replies) > 2  # split to fit the small packet size
    replies = d.ask_all(b"qRcmd," + b"nosuch".hex().encode())
    text = b"".join(bytes.fromhex(r[1:].decode()) for r in replies[:-1])
    assert b"unknown monitor command" in text


def test_dump_cannot_continue_or_step(drv):
    for p in (b"c", b"s", b"C02"):
        replies = drv.ask_all(p)
        assert replies[0][:1] == b"O" and replies[-1] == b"T05thread:c;core:3;"


def test_oversized_packet_gets_error_reply(elf):
    server = GdbServer(FakeProvider(spec(elf)), packet_size=0x100)
    server.on_bytes(frame(b"QStartNoAckMode"))
    out = server.on_bytes(frame(b"M600000,200:" + b"41" * 0x200) + frame(b"qAttached"))
    events = [e.payload for e in PacketDecoder().feed(out) if isinstance(e, Packet)]
    assert events[0].startswith(b"E") and events[1] == b"1"


def test_detach_and_kill_close(elf):
    d = Driver(FakeProvider(spec(elf)))
    assert d.ask(b"D") == b"OK" and d.server.closed
    d = Driver(FakeProvider(spec(elf)))
    assert d.ask_all(b"k") == [] and d.server.closed


class LiveFake(ProviderBase):
    """A pretend live target: records resume/interrupt/refresh calls and
    changes its thread list while running."""

    live = True

    def __init__(self):
        self.calls = []
        self.generation = 0

    def threads(self):
        return [ThreadInfo(100 + self.generation, "a", "x", 0)]

    def registers(self, tid):
        return {}

    def read_memory(self, tid, addr, size):
        raise McktoolsError("nothing")

    def resume(self):
        self.calls.append("resume")

    def interrupt(self):
        self.calls.append("interrupt")
        self.generation += 1

    def refresh(self):
        self.calls.append("refresh")


def test_live_continue_then_ctrl_c_stops_and_rereads_threads():
    p = LiveFake()
    d = Driver(p)
    assert d.ask(b"?") == b"T05thread:64;core:0;"
    assert d.ask_all(b"c") == []  # no reply while running
    out = d.server.on_bytes(b"\x03")
    replies = [e.payload for e in d.dec.feed(out) if isinstance(e, Packet)]
    assert replies == [b"T02thread:65;core:0;"]
    assert p.calls == ["refresh", "resume", "interrupt", "refresh"]
    assert d.ask(b"qfThreadInfo") == b"m65"
    # Ctrl-C while stopped does nothing
    assert d.server.on_bytes(b"\x03") == b""


def test_interrupt_reports_stop_even_if_refresh_fails():
    class Failing(LiveFake):
        def refresh(self):
            raise McktoolsError("device went away")

    d = Driver(Failing())
    d.ask_all(b"c")
    out = d.server.on_bytes(b"\x03")
    assert [e.payload for e in d.dec.feed(out) if isinstance(e, Packet)] == [b"S02"]
    assert not d.server.running


def test_thread_list_split_over_packets(elf):
    many = [{"id": 1000 + i, "name": f"t{i}", "registers": {}} for i in range(300)]
    d = Driver(FakeProvider(spec(elf, threads=many, stop_thread=1000)), packet_size=0x40)
    ids = []
    reply = d.ask(b"qfThreadInfo")
    while reply != b"l":
        assert reply[:1] == b"m" and len(reply) <= 0x40
        ids += [int(x, 16) for x in reply[1:].decode().split(",")]
        reply = d.ask(b"qsThreadInfo")
    assert ids == [1000 + i for i in range(300)]
    doc = xfer(d, "threads", "", 0x30)
    assert [int(t.get("id"), 16) for t in ET.fromstring(doc).findall("thread")] == ids
