"""Unit checks of the QEMU harness pieces that need no booted kernel:
QMP client, process cleanup, bitmap → chunks, mem= parsing, dump writing, unpack."""

from __future__ import annotations

import json
import lzma
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from mcktools.errors import LiveError
from mcktools.qemu import procs
from mcktools.qemu.freeze import BitmapBlock, bitmap_to_chunks, parse_bitmap
from mcktools.qemu.machine import kernel_base_for, parse_mem_arg
from mcktools.qemu.qmp import QMPClient, QMPError

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- QMP client
def _fake_qmp_server(path: str, script):
    """Serve one QMP client: greeting, then `script(request) -> list of reply dicts`."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)

    def run():
        conn, _ = srv.accept()
        f = conn.makefile("rwb")
        f.write(b'{"QMP": {"version": {}, "capabilities": []}}\n')
        f.flush()
        for line in f:
            req = json.loads(line)
            replies = script(req)
            if replies is None:
                break
            for r in replies:
                f.write(json.dumps(r).encode() + b"\r\n")
            f.flush()
        conn.close()
        srv.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_qmp_client_returns_values_keeps_events_and_raises_errors(tmp_path):
    path = str(tmp_path / "q.sock")

    def script(req):
        ident = req["id"]
        cmd = req["execute"]
        if cmd == "qmp_capabilities":
            return [{"return": {}, "id": ident}]
        if cmd == "query-status":
            return [{"event": "STOP", "timestamp": {}}, {"return": {"status": "paused"}, "id": ident}]
        if cmd == "echo":
            return [{"return": req["arguments"], "id": ident}]
        if cmd == "bad":
            return [{"error": {"class": "GenericError", "desc": "nope"}, "id": ident}]
        return None  # hang up

    _fake_qmp_server(path, script)
    c = QMPClient(path, timeout=5).connect()
    assert c.execute("query-status") == {"status": "paused"}
    assert [e["event"] for e in c.events] == ["STOP"]
    assert c.execute("echo", a=1, b="x") == {"a": 1, "b": "x"}
    with pytest.raises(QMPError, match="GenericError: nope"):
        c.execute("bad")
    with pytest.raises(LiveError, match="closed"):
        c.execute("hangup")
    c.close()


def test_qmp_connect_gives_up_with_a_clear_error(tmp_path):
    t0 = time.monotonic()
    with pytest.raises(LiveError, match="cannot connect"):
        QMPClient(str(tmp_path / "missing.sock")).connect(wait=0.3)
    assert time.monotonic() - t0 < 5
    with pytest.raises(LiveError, match="exited"):
        QMPClient(str(tmp_path / "missing.sock")).connect(wait=30, alive=lambda: False)


@pytest.mark.qemu
def test_qmp_against_real_qemu(qemu_available, tmp_path):
    sock = tmp_path / "q.sock"
    p = procs.spawn([qemu_available, "-S", "-accel", "tcg", "-nographic", "-nodefaults", "-m", "16M",
                     "-display", "none", "-qmp", f"unix:{sock},server=on,wait=off"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        c = QMPClient(str(sock)).connect(alive=lambda: p.poll() is None)
        assert c.greeting["QMP"]["version"]["qemu"]["major"] >= 5
        assert c.execute("query-status")["status"] == "prelaunch"
        with pytest.raises(QMPError, match="CommandNotFound"):
            c.execute("no-such-command")
        c.close()
    finally:
        procs.kill_group(p)
    assert p.poll() is not None


# ---------------------------------------------------------- process cleanup
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); look at its state.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_dead(pids, timeout=5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_alive(p) for p in pids):
            return True
        time.sleep(0.02)
    return False


def test_kill_group_reaches_grandchildren(tmp_path):
    pidfile = tmp_path / "pids"
    p = procs.spawn(["sh", "-c", f"sleep 60 & echo $! > {pidfile}; sleep 60"])
    deadline = time.monotonic() + 5
    while not pidfile.exists() or not pidfile.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    grandchild = int(pidfile.read_text())
    procs.kill_group(p)
    assert p.poll() is not None
    assert _wait_dead([grandchild])
    assert p.pid not in procs.live_pids()


_CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    from mcktools.qemu import procs
    p = procs.spawn(["sleep", "60"])
    ran = []
    procs.register_cleanup(1, lambda: open({marker!r}, "w").write("cleaned"))
    print(p.pid, flush=True)
    {action}
""")


@pytest.mark.parametrize("action, how", [
    ("time.sleep(60)", signal.SIGTERM),        # killed by a signal
    ("time.sleep(60)", signal.SIGINT),         # Ctrl-C: KeyboardInterrupt, then atexit
    ("raise RuntimeError('test failure')", None),  # an exception escaping
    ("time.sleep(60)", signal.SIGKILL),        # no Python cleanup at all: PDEATHSIG
])
def test_no_child_outlives_the_harness(tmp_path, action, how):
    marker = tmp_path / "marker"
    code = _CHILD.format(repo=str(REPO), marker=str(marker), action=action)
    py = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          text=True)
    child = int(py.stdout.readline())
    if how is not None:
        assert _alive(child)
        py.send_signal(how)
    py.wait(timeout=10)
    assert _wait_dead([child]), f"sleep {child} survived {how or action}"
    if how != signal.SIGKILL:
        assert marker.read_text() == "cleaned"


# ------------------------------------------------------------ bitmap → chunks
def _oracle_pages(blocks):
    """Set of (block index, PA) of included pages, straight from the bits."""
    out = set()
    for b_i, b in enumerate(blocks):
        for j, w in enumerate(b.words):
            for k in range(64):
                if w >> k & 1:
                    out.add((b_i, b.start + (j * 64 + k) * 4096))
    return out


def _random_blocks(rng: random.Random):
    blocks = []
    addr = rng.randrange(0, 64) * 0x200000
    for _ in range(rng.randrange(1, 5)):
        n = rng.randrange(1, 6)
        style = rng.choice(["full", "empty", "sparse", "runs", "random"])
        words = []
        for _ in range(n):
            if style == "full":
                words.append((1 << 64) - 1)
            elif style == "empty":
                words.append(0)
            elif style == "sparse":
                words.append(1 << rng.randrange(64) if rng.random() < 0.5 else 0)
            elif style == "runs":
                lo, hi = sorted(rng.sample(range(65), 2))
                words.append(((1 << hi) - 1) ^ ((1 << lo) - 1))
            else:
                words.append(rng.getrandbits(64))
        blocks.append(BitmapBlock(addr, words))
        # Sometimes the next chunk touches this one: runs must still not merge.
        addr += n * 64 * 4096 + rng.choice([0, 0, 0x200000])
    return blocks


def test_bitmap_to_chunks_on_generated_bitmaps():
    rng = random.Random(1234)
    for _ in range(300):
        blocks = _random_blocks(rng)
        chunks = bitmap_to_chunks(blocks)
        # Attribute every chunk to the single block it lies in, in order.
        pages = set()
        b_i = 0
        prev_end = {}
        for addr, size in chunks:
            assert size > 0 and size % 4096 == 0 and addr % 4096 == 0
            while not (blocks[b_i].start <= addr and addr + size <= blocks[b_i].start + len(blocks[b_i].words) * 64 * 4096):
                b_i += 1  # raises IndexError if chunks are out of block order
            # Within a block: ascending and maximal (a gap of at least one clear page).
            if b_i in prev_end:
                assert addr > prev_end[b_i]
            prev_end[b_i] = addr + size
            for pa in range(addr, addr + size, 4096):
                assert (b_i, pa) not in pages
                pages.add((b_i, pa))
        assert pages == _oracle_pages(blocks)


def test_touching_full_blocks_stay_two_chunks():
    # ABI reference §2.6: a run never continues across two bitmap blocks.
    a = BitmapBlock(0x1000000, [(1 << 64) - 1] * 2)
    b = BitmapBlock(0x1000000 + 128 * 4096, [(1 << 64) - 1])
    assert bitmap_to_chunks([a, b]) == [(0x1000000, 128 * 4096), (0x1000000 + 128 * 4096, 64 * 4096)]


def test_boot_bitmap_of_default_chunks():
    # What IHK's driver sets at boot for mem=12M@0x1000000,4M@0x2000000: bits 0..pages-1.
    blocks = []
    for addr, size in parse_mem_arg("12M@0x1000000,4M@0x2000000"):
        pages = size // 4096
        nwords = -(-pages // 64)
        bits = (1 << pages) - 1
        blocks.append(BitmapBlock(addr, [(bits >> (64 * j)) & ((1 << 64) - 1) for j in range(nwords)]))
    assert bitmap_to_chunks(blocks) == [(0x1000000, 12 << 20), (0x2000000, 4 << 20)]


def test_parse_bitmap_reads_packed_blocks():
    rng = random.Random(7)
    blocks = _random_blocks(rng)
    base = 0x5000
    # Encode independently of BitmapBlock.encode: ABI §2.2 layout start, map_count, map[].
    raw = b"".join(struct.pack("<QQ", b.start, len(b.words)) + b"".join(struct.pack("<Q", w) for w in b.words)
                   for b in blocks)
    mem = bytes(base) + raw + b"\xff" * 64
    parsed = parse_bitmap(lambda pa, n: mem[pa:pa + n], base, len(blocks))
    assert [(b.start, b.words) for b in parsed] == [(b.start, b.words) for b in blocks]


def test_mem_arg_and_kernel_base():
    assert parse_mem_arg("12M@0x1000000,4M@0x2000000") == [(0x1000000, 12 << 20), (0x2000000, 4 << 20)]
    # PROTOCOL.md: the default chunks give kernel_base 0x1200000.
    assert kernel_base_for(parse_mem_arg("12M@0x1000000,4M@0x2000000")) == 0x1200000
    # ABI §1.5: round_up(start, 2 MiB) + 2 MiB of the largest chunk.
    assert kernel_base_for([(0x100000, 1 << 20), (0x2100000, 8 << 20)]) == 0x2400000
    with pytest.raises(LiveError):
        parse_mem_arg("12Q@0x1000")


# --------------------------------------------------------------- dump writing
class _FakeMachine:
    def __init__(self, size):
        rng = random.Random(3)
        self.mem = bytes(rng.getrandbits(8) for _ in range(size))

    def read_phys(self, pa, n):
        return self.mem[pa:pa + n]


def test_written_dump_is_listed_by_readelf(tmp_path):
    pytest.importorskip("mcktools.formats.mcdump")
    from mcktools.qemu.dump import FIXTURE_IDENTITY, write_dump

    m = _FakeMachine(0x10000)
    chunks = [(0x3000, 0x2000), (0x8000, 0x1000)]
    out = tmp_path / "d.mcdump"
    write_dump(out, m, chunks, 0x1200000, identity=FIXTURE_IDENTITY)
    text = subprocess.run(["readelf", "-S", "-W", str(out)], capture_output=True, text=True, check=True).stdout
    rows = {}
    for line in text.splitlines():
        parts = line.replace("[ ", "[").split()
        if len(parts) > 5 and parts[0].startswith("[") and parts[0] != "[Nr]":
            rows[parts[1]] = (int(parts[3], 16), int(parts[4], 16), int(parts[5], 16))
    assert rows["physmem0"][0] == 0x3000 and rows["physmem0"][2] == 0x2000
    assert rows["physmem1"][0] == 0x8000 and rows["physmem1"][2] == 0x1000
    data = out.read_bytes()
    off = rows["physmem0"][1]
    assert data[off:off + 0x2000] == m.mem[0x3000:0x5000]
    off = rows["date"][1]
    assert data[off:off + 24] == b"Mon Jan  1 00:00:00 2024"


# -------------------------------------------------------------------- unpack
def test_unpack_in_place_skips_current_and_redoes_changed(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("unpack_t", REPO / "dumps" / "unpack.py")
    unpack = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(unpack)
    d = tmp_path / "sc"
    d.mkdir()
    xz = d / "blob.bin.xz"
    xz.write_bytes(lzma.compress(b"first" * 1000, preset=9))
    (out,) = unpack.unpack("sc", root=tmp_path)
    assert out.read_bytes() == b"first" * 1000
    # Up to date: not rewritten (we would notice the edit being undone).
    st = os.stat(out)
    with open(out, "r+b") as f:
        f.write(b"X")
    os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
    unpack.unpack("sc", root=tmp_path)
    assert out.read_bytes()[:1] == b"X"
    # A changed .xz (new mtime) is unpacked again.
    xz.write_bytes(lzma.compress(b"second", preset=9))
    os.utime(xz, ns=(st.st_mtime_ns + 10**9, st.st_mtime_ns + 10**9))
    unpack.unpack("sc", root=tmp_path)
    assert out.read_bytes() == b"second"
    res = subprocess.run([sys.executable, str(REPO / "dumps" / "unpack.py"), "no-such-scenario"],
                         capture_output=True, text=True)
    assert res.returncode == 1 and "error" in res.stderr and "Traceback" not in res.stderr


# ------------------------------------------- freeze protocol vs a fake kernel
class _Layout:
    def __init__(self, name, members):
        self.name, self.members = name, members

    def __getitem__(self, k):
        return self.members[k]


class _FakeImage:
    """Offsets from the ABI reference §2.2 / §6.7 (default IHK build)."""

    def __init__(self, sym_va):
        self.sym_va = sym_va

    def struct(self, name):
        return {
            "smp_boot_param": _Layout(name, {"dump_level": 6624, "dump_page_set": 6632, "nmi_mode_addr": 104}),
            "ihk_dump_page_set": _Layout(name, {"completion_flag": 0, "count": 4, "page_size": 8, "phy_page": 16}),
        }[name]

    def symbol(self, name):
        assert name == "boot_param_pa"
        return self.sym_va

    def image_pa(self, va, kernel_base):
        return va - 0xFFFFFFFFFE800000 + kernel_base


def _fake_guest(tmp_path):
    """A Machine whose 'kernel' is a Python thread following PROTOCOL.md's freeze steps."""
    from mcktools.qemu.machine import Machine, MachineConfig, SerialLog

    m = Machine(MachineConfig(image="unused", mem_mb=48))
    m.mem = bytearray(48 << 20)
    m.serial = SerialLog(tmp_path / "serial.log")
    (tmp_path / "serial.log").write_text("MCKTOOLS-MANIFEST {}\nMCKTOOLS-READY\n")
    m.alive = lambda: True
    bp, nmi, bitmap = 0x100000, 0x101F00, 0x102000
    sym_va = 0xFFFFFFFFFE800000 + 0x3000
    struct.pack_into("<Q", m.mem, m.kernel_base + 0x3000, bp)
    struct.pack_into("<Q", m.mem, bp + 104, nmi)
    struct.pack_into("<i", m.mem, nmi, -1)
    # Boot bitmap as IHK's driver writes it: one block per chunk, bits 0..pages-1.
    pa = bitmap
    for addr, size in m.chunks:
        pages = size // 4096
        words = -(-pages // 64)
        struct.pack_into("<QQ", m.mem, pa, addr, words)
        for j in range(words):
            struct.pack_into("<Q", m.mem, pa + 16 + 8 * j, (1 << min(64, pages - 64 * j)) - 1)
        pa += 16 + 8 * words
    struct.pack_into("<IIQQ", m.mem, bp + 6632, 0, len(m.chunks), 4096, bitmap)
    log = []

    class FakeQMP:
        def execute(self, cmd, **kw):
            if cmd == "query-status":
                return {"status": "paused" if log and log[-1] == "stop" else "running"}
            log.append(cmd)
            if cmd == "inject-nmi":
                assert struct.unpack_from("<i", m.mem, nmi)[0] == 0, "nmi_mode must be 0 before the NMI"
                level = struct.unpack_from("<i", m.mem, bp + 6624)[0]
                if level == 24:  # "clear" pages 1..3 of the first chunk (word 0 of block 0)
                    w = struct.unpack_from("<Q", m.mem, bitmap + 16)[0]
                    struct.pack_into("<Q", m.mem, bitmap + 16, w & ~0b1110)
                with open(tmp_path / "serial.log", "a") as f:
                    f.write('MCKTOOLS-FROZEN-MANIFEST {"dump_level": %d}\n' % level)
                struct.pack_into("<I", m.mem, bp + 6632, 1)

                def resume():
                    while struct.unpack_from("<i", m.mem, nmi)[0] != 4:
                        time.sleep(0.005)
                    with open(tmp_path / "serial.log", "a") as f:
                        f.write("MCKTOOLS-RESUMED\n")
                    struct.pack_into("<I", m.mem, bp + 6632, 0)

                threading.Thread(target=resume, daemon=True).start()
            return {}

    m.qmp = FakeQMP()
    return m, _FakeImage(sym_va), log, bitmap


def test_freeze_protocol_with_fake_kernel(tmp_path):
    from mcktools.qemu.freeze import Freezer

    m, img, log, bitmap = _fake_guest(tmp_path)
    boot_bits = bytes(m.mem[bitmap:bitmap + 16 + 8 * 48])
    fz = Freezer(m, img, pause=True)
    fr = fz.freeze(24, timeout=5)
    assert fr.manifest == {"dump_level": 24}
    assert log == ["inject-nmi", "stop"]
    assert fr.chunks == [(0x1000000, 4096), (0x1004000, (12 << 20) - 0x4000), (0x2000000, 4 << 20)]
    assert fr.full_chunks == [(0x1000000, 12 << 20), (0x2000000, 4 << 20)]
    with pytest.raises(LiveError, match="already frozen"):
        fz.freeze(0)
    fz.release(timeout=5)
    assert log[-1] == "cont"
    # The host restored the boot bitmap after the release (PROTOCOL.md step 5).
    assert bytes(m.mem[bitmap:bitmap + 16 + 8 * 48]) == boot_bits
    fr0 = fz.freeze(0, timeout=5)
    assert fr0.chunks == fr0.full_chunks
    fz.release(timeout=5)
    assert fz.release(timeout=1) is False  # idempotent: nothing frozen
    with pytest.raises(LiveError, match="level 4"):
        fz.freeze(4)
