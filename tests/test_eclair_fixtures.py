"""eclair on the reference kernel's fixture dumps, driven by real gdb.

Expected values come from each fixture's manifest.json (what the kernel
printed about itself while frozen) and from the dump file read with
mcktools.formats.mcdump, never from the provider under test.  Each gdb run
is one batch session (`target remote | eclair --stdio ...`) with a timeout;
command outputs are split at `echo` markers.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from mcktools.formats.mcdump import McDump

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
SCENARIOS = ("multi", "panic")
IDLE_BASE = 2000000000
CPU_BASE = 1000000

pytestmark = pytest.mark.skipif(subprocess.run(["which", "gdb"], capture_output=True).returncode != 0,
                                reason="gdb not installed")

# gdb-side helper: `select-tid N` switches to the gdb thread whose remote id is N,
# so the tests never depend on gdb's own thread numbering.
GDB_HELPER = '''
import gdb
class SelectTid(gdb.Command):
    def __init__(self):
        super().__init__("select-tid", gdb.COMMAND_USER)
    def invoke(self, arg, from_tty):
        want = int(arg, 0)
        for t in gdb.selected_inferior().threads():
            if t.ptid[1] == want:
                t.switch()
                return
        raise gdb.GdbError("no thread with remote id %d" % want)
SelectTid()
'''


@pytest.fixture(scope="module")
def helper(tmp_path_factory):
    p = tmp_path_factory.mktemp("eclair_fx") / "select_tid.py"
    p.write_text(GDB_HELPER)
    return p


class Fixture:
    def __init__(self, folder: Path):
        self.folder = folder
        self.img = folder / "mckernel.img"
        self.m = json.loads((folder / "manifest.json").read_text())
        self.threads = {t["addr"]: t for t in self.m["threads"]}

    def dump(self, level: int) -> Path:
        return self.folder / f"level{level}.mcdump"

    def runq(self):
        """Manifest threads on run queues, CPU by CPU, in list order."""
        return [self.threads[a] for c in sorted(self.m["cpus"], key=lambda c: c["id"]) for a in c["runq"]]

    def current(self, cpu: int):
        c = next(c for c in self.m["cpus"] if c["id"] == cpu)
        return self.threads[c["current"]]

    def image_pa(self, va: int) -> int:
        # PROTOCOL.md: symbol VA - MAP_KERNEL_START + kernel_base; MAP_KERNEL_START = _head - 4K
        return va - (self.m["symbols"]["_head"] - 0x1000) + self.m["kernel_base"]


@pytest.fixture(scope="module", params=SCENARIOS)
def fx(request, fixture_dir):
    return Fixture(fixture_dir(request.param))


def dump_bytes(path: Path, pa: int, size: int):
    """Bytes at physical `pa` straight from the mcdump file, or None if not all held."""
    with McDump.open(str(path)) as d:
        for c in d.chunks:
            if c.addr <= pa and pa + size <= c.addr + c.size:
                return bytes(d.read_chunk(c.index, pa - c.addr, size))
    return None


def gdb_session(fx: Fixture, helper: Path, commands, *, level=0, flags=(), timeout=120):
    """Run gdb once; returns (list of per-command outputs, whole output)."""
    stub = " ".join([sys.executable, "-m", "eclair", "--stdio", "-d", str(fx.dump(level)),
                     "-k", str(fx.img), *flags])
    argv = ["gdb", "-nx", "-batch", "-x", str(helper), str(fx.img), "-ex", f"target remote | {stub}"]
    for i, c in enumerate(commands):
        argv += ["-ex", f"echo @@{i}@@\\n", "-ex", c]
    argv += ["-ex", f"echo @@{len(commands)}@@\\n"]
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
                       env=ENV, cwd=str(ROOT))
    out = p.stdout
    parts = []
    for i in range(len(commands)):
        m = re.search(rf"@@{i}@@\n(.*?)@@{i + 1}@@\n", out, re.S)
        assert m, f"no output for {commands[i]!r}:\n{out[-3000:]}"
        parts.append(m.group(1))
    return parts, out


THREAD_LINE = re.compile(r'^(\*?)\s+\d+\s+Thread (\d+) "([^"]*)" \(([^)]*)\)', re.M)


def info_threads(text):
    return [(int(tid), name, extra, star == "*") for star, tid, name, extra in THREAD_LINE.findall(text)]


def gx_values(out):
    vals = []
    for line in out.splitlines():
        m = re.match(r"^0x[0-9a-f]+(?: <[^>]*>)?:\s+(.*)$", line)
        if m:
            vals += [int(v, 16) for v in m.group(1).split("\t") if re.fullmatch(r"0x[0-9a-f]+", v.strip())]
    return vals


def reg_value(out, name):
    m = re.search(rf"^{name}\s+(\S+)", out, re.M)
    assert m, out
    return m.group(1)


# ------------------------------------------------------------------ threads

def test_thread_ids_names_and_text_equal_manifest(fx, helper):
    (plain,), _ = gdb_session(fx, helper, ["info threads"])
    (full,), _ = gdb_session(fx, helper, ["info threads"], flags=("-l", "-c"))
    runq = fx.runq()
    got = info_threads(plain)
    assert [(t, n) for t, n, _, _ in got] == [(t["tid"], t["comm"]) for t in runq]
    words = {"PS_RUNNING": "running", "PS_INTERRUPTIBLE": "waiting", "PS_UNINTERRUPTIBLE": "waiting",
             "PS_STOPPED": "stopped"}
    for (tid, _, extra, _), t in zip(got, runq):
        assert extra.startswith(f"PID {t['pid']}, ") and extra.endswith(f" on CPU {t['cpu']}"), extra
        if t["state"] in words:
            assert words[t["state"]] in extra

    cpus = sorted(fx.m["cpus"], key=lambda c: c["id"])
    idle = [fx.threads[c["idle"]] for c in cpus]
    want = [(t["tid"], t["comm"]) for t in runq] + [(IDLE_BASE + t["tid"], "idle") for t in idle] \
        + [(CPU_BASE + c["id"], f"CPU {c['id']}") for c in cpus]
    got_full = info_threads(full)
    assert [(t, n) for t, n, _, _ in got_full] == want
    assert [e for t, _, e, _ in got_full if t >= CPU_BASE and t < IDLE_BASE] == \
        [f"CPU {c['id']} running" for c in cpus if c["status"] == "CPU_STATUS_RUNNING"]


def test_stop_thread_is_the_panicking_cpus(fx, helper):
    (threads, bt), _ = gdb_session(fx, helper, ["info threads", "bt 3"])
    starred = [t for t, _, _, star in info_threads(threads) if star]
    panic = fx.m["panic"]
    if panic is None:
        assert starred == [fx.runq()[0]["tid"]]
        return
    assert starred == [fx.current(panic["cpu"])["tid"]]
    assert re.search(rf"^#0\s+(0x[0-9a-f]+ in )?{panic['function']} ", bt, re.M), bt
    # the faulting pc itself, as the kernel printed it
    (pc,), _ = gdb_session(fx, helper, ["p/x $pc"])
    assert int(pc.split("=")[1], 16) == panic["rip"]


# ---------------------------------------------------------------- registers

def sleeping(fx):
    return [t for t in fx.runq() if t["state"] == "PS_INTERRUPTIBLE" and t["kernel_rip"] is not None]


def test_sleeping_thread_unwinds_from_switch_context_into_its_syscall(fx, helper):
    threads = sleeping(fx)
    assert threads, "fixture has no sleeping thread"
    cmds = []
    for t in threads:
        cmds += [f"select-tid {t['tid']}", "bt", "info registers rip rsp rax r8 cs"]
    parts, out = gdb_session(fx, helper, cmds)
    sw = fx.m["symbols"]["ihk_mc_switch_context"]
    for i, t in enumerate(threads):
        bt, regs = parts[3 * i + 1], parts[3 * i + 2]
        frames = re.findall(r"^#(\d+)\s+(?:(0x[0-9a-f]+) in )?(\S+) ", bt, re.M)
        assert frames[0][2] == "ihk_mc_switch_context", bt
        # frame 1 resumes where the kernel says the thread will return to
        assert int(frames[1][1], 16) == t["kernel_rip"] and frames[1][2] == "schedule", bt
        names = [f[2] for f in frames]
        sys_frames = [n for n in names if n.startswith("sys_")]
        assert sys_frames, f"no syscall frame for tid {t['tid']}:\n{bt}"
        assert names.index(sys_frames[0]) < names.index("syscall_entry"), bt
        assert int(reg_value(regs, "rip"), 16) == sw
        assert int(reg_value(regs, "rsp"), 16) == t["kernel_rsp"]
        for unsaved in ("rax", "r8", "cs"):
            assert reg_value(regs, unsaved) == "<unavailable>", regs


# ------------------------------------------------------------------- memory

def test_kernel_memory_equals_dump_bytes(fx, helper):
    sym = fx.m["symbols"]
    chunk = fx.m["chunks"][0]
    lpob = fx.m["linux_page_offset_base"]
    some = fx.runq()[:3]
    cmds = ["x/8gx &clv", f"x/8gx {lpob + chunk['addr'] + 0x3000:#x}"]
    for t in some:
        cmds += [f"p ((struct thread *){t['addr']:#x})->tid", f"p *(struct thread *){t['addr']:#x}"]
    parts, out = gdb_session(fx, helper, cmds)
    want = struct.unpack("<8Q", dump_bytes(fx.dump(0), fx.image_pa(sym["clv"]), 64))
    assert gx_values(parts[0]) == list(want)
    want = struct.unpack("<8Q", dump_bytes(fx.dump(0), chunk["addr"] + 0x3000, 64))
    assert gx_values(parts[1]) == list(want)
    for i, t in enumerate(some):
        assert parts[2 + 2 * i].strip() == f"$%d = {t['tid']}" % (2 * i + 1)
        assert "ctx = {" in parts[3 + 2 * i] and "Cannot access" not in parts[3 + 2 * i]


def test_dump_binary_memory_of_direct_map_equals_dump(fx, helper, tmp_path):
    chunk = fx.m["chunks"][-1]
    lpob = fx.m["linux_page_offset_base"]
    size = 1 << 20
    out = tmp_path / "mem.bin"
    start = lpob + chunk["addr"]
    gdb_session(fx, helper, [f"dump binary memory {out} {start:#x} {start + size:#x}"])
    assert out.read_bytes() == dump_bytes(fx.dump(0), chunk["addr"], size)


def test_read_stops_at_the_end_of_a_chunk(fx, helper):
    chunk = fx.m["chunks"][0]
    end = fx.m["linux_page_offset_base"] + chunk["addr"] + chunk["size"]
    if any(c["addr"] == chunk["addr"] + chunk["size"] for c in fx.m["chunks"]):
        pytest.skip("chunks touch")
    parts, _ = gdb_session(fx, helper, [f"x/2gx {end - 16:#x}", f"x/2gx {end - 8:#x}", f"x/gx {end:#x}"])
    want = struct.unpack("<2Q", dump_bytes(fx.dump(0), chunk["addr"] + chunk["size"] - 16, 16))
    assert gx_values(parts[0]) == list(want)
    assert gx_values(parts[1])[:1] == [want[1]] and f"Cannot access memory at address {end:#x}" in parts[1]
    assert "Cannot access memory" in parts[2] and not gx_values(parts[2])


def test_user_memory_reads_through_the_threads_page_tables(fx, helper):
    counters = fx.m["counters"]
    assert counters
    cmds = []
    for c in counters:
        cmds += [f"select-tid {c['tid']}", f"x/1gx {c['va']:#x}"]
    # translations of every process, read with one of its threads selected
    checks = []
    for proc in fx.m["processes"]:
        rows = fx.m["translations"].get(str(proc["pid"]), [])
        rows = [r for r in rows if dump_bytes(fx.dump(0), r["pa"], 16) is not None][:4]
        if rows:
            cmds.append(f"select-tid {proc['threads'][0]}")
            checks += [(len(cmds), proc["pid"], r) for r in rows]
            cmds += [f"x/2gx {r['va']:#x}" for r in rows]
    parts, out = gdb_session(fx, helper, cmds)
    for i, c in enumerate(counters):
        want = struct.unpack("<Q", dump_bytes(fx.dump(0), c["pa"], 8))[0]
        assert gx_values(parts[2 * i + 1]) == [want], (c, parts[2 * i + 1])
    pas_by_va = {}
    for i, (at, pid, r) in enumerate(checks):
        n = at + [k for k, (a, _, _) in enumerate(checks) if a == at].index(i)
        want = struct.unpack("<2Q", dump_bytes(fx.dump(0), r["pa"], 16))
        assert gx_values(parts[n]) == list(want), (pid, r, parts[n])
        pas_by_va.setdefault(r["va"], set()).add(r["pa"])
    # the premise that makes this a per-process test: one VA, several processes, several pages
    assert any(len(pas) > 1 for pas in pas_by_va.values())


def test_level24_reports_user_memory_unreadable(fx, helper):
    c = fx.m["counters"][0]
    parts, _ = gdb_session(fx, helper, [f"select-tid {c['tid']}", f"x/1gx {c['va']:#x}", "x/2gx &clv"],
                           level=24)
    assert dump_bytes(fx.dump(24), c["pa"], 8) is None  # the premise: page left out
    assert f"Cannot access memory at address {c['va']:#x}" in parts[1]
    assert not gx_values(parts[1])
    want = struct.unpack("<2Q", dump_bytes(fx.dump(24), fx.image_pa(fx.m["symbols"]["clv"]), 16))
    assert gx_values(parts[2]) == list(want)


def test_idle_thread_has_no_user_address_space(fx, helper):
    c = fx.m["counters"][0]
    parts, _ = gdb_session(fx, helper, [f"select-tid {IDLE_BASE}", f"x/1gx {c['va']:#x}"], flags=("-l",))
    assert "Cannot access memory" in parts[1]


# ------------------------------------------------------------------ monitor

def mcinspect(*args):
    p = subprocess.run([sys.executable, "-m", "mcinspect", *args], capture_output=True, text=True,
                       timeout=120, env=ENV, cwd=str(ROOT))
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_monitor_commands_print_what_mcinspect_prints(fx, helper):
    d, k = str(fx.dump(0)), str(fx.img)
    proc = fx.m["processes"][0]
    tr = fx.m["translations"][str(proc["pid"])][0]
    parts, _ = gdb_session(fx, helper, ["monitor ps", f"select-tid {proc['threads'][0]}",
                                        f"monitor vtop {tr['va']:#x}", "monitor mem", "monitor info",
                                        "monitor kmsg", "monitor nosuch"])
    assert parts[0] == mcinspect("-k", k, "-d", d, "ps")
    tids = [int(re.match(r"^>?\s*(\d+)", line).group(1)) for line in parts[0].splitlines()[1:]]
    assert sorted(tids) == sorted(t["tid"] for t in fx.m["threads"])
    assert parts[2] == mcinspect("-k", k, "-d", d, "vtop", "-p", str(proc["pid"]), f"{tr['va']:#x}")
    row = parts[2].splitlines()[1].split()
    assert int(row[0], 16) == tr["va"] and int(row[1], 16) == tr["pa"]
    assert parts[3] == mcinspect("-k", k, "-d", d, "mem", str(proc["pid"]))
    assert f"process {proc['pid']} " in parts[3]
    assert parts[4] == mcinspect("-k", k, "-d", d, "info")
    assert parts[5] == mcinspect("-k", k, "-d", d, "kmsg")
    assert "unknown monitor command" in parts[6]


# ------------------------------------------------- protocol, without gdb

@pytest.fixture(scope="module")
def served(fx):
    from eclair.mckernel_provider import open_provider
    from eclair.provider import ProviderOptions
    from eclair.server import GdbServer
    prov = open_provider(str(fx.dump(0)), str(fx.img), ProviderOptions(cpu_threads=True))
    yield GdbServer(prov), prov
    prov.close()


def ask(server, packet: str) -> bytes:
    replies = server.handle(packet.encode())
    return replies[-1]


def test_threads_xml_gives_cores_of_running_threads(fx, served):
    server, _ = served
    xml = ask(server, "qXfer:threads:read::0,ffff")[1:].decode()
    cores = {int(tid, 16): core for tid, core in re.findall(r'<thread id="([0-9a-f]+)"(?: core="(\d+)")?', xml)}
    for c in fx.m["cpus"]:
        assert cores[fx.threads[c["current"]]["tid"]] == str(c["id"])
        assert cores[CPU_BASE + c["id"]] == str(c["id"])
    for t in fx.runq():
        if t["addr"] not in {c["current"] for c in fx.m["cpus"]}:
            assert cores[t["tid"]] == "", t


def test_no_memory_map_and_no_invented_bytes(fx, served):
    server, _ = served
    assert b"memory-map" not in ask(server, "qSupported:xmlRegisters=i386")
    assert ask(server, "qXfer:memory-map:read::0,fff") == b""
    t = sleeping(fx)[0]
    assert ask(server, f"Hg{t['tid']:x}") == b"OK"
    regs = ask(server, "g").decode()
    assert regs.startswith("x" * 16)  # rax of a switched-out thread: not saved
    assert ask(server, "m0,8") == b"E0e"  # page 0 is never mapped


# ---------------------------------------------------------------- bad input

def run_eclair(*args):
    env = {k: v for k, v in ENV.items() if k != "MCKTOOLS_QEMU_RUN"}
    return subprocess.run([sys.executable, "-m", "eclair", *args], capture_output=True, text=True,
                          timeout=60, env=env, cwd=str(ROOT), stdin=subprocess.DEVNULL)


def test_bad_input_gives_one_line(fx, tmp_path):
    bad = tmp_path / "short.mcdump"
    with open(fx.dump(0), "rb") as f:
        bad.write_bytes(f.read(3000))
    for args in (["--stdio", "-d", str(bad), "-k", str(fx.img)],
                 ["--stdio", "-d", str(fx.dump(0)), "-k", str(fx.dump(0))],
                 ["--stdio", "-i", "-k", str(fx.img)]):
        p = run_eclair(*args)
        assert p.returncode != 0
        assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert p.stderr.startswith("eclair: error: "), p.stderr


# ------------------------------------------------------ run-length encoding

def rle_decode(text: bytes) -> bytes:
    """The GDB manual's rule: `X*c` is X then ord(c) - 29 more X; '#' and '$'
    never appear as counts."""
    out = bytearray()
    i = 0
    while i < len(text):
        if i + 2 < len(text) and text[i + 1:i + 2] == b"*":
            count = text[i + 2]
            assert count not in b"#$" and 32 <= count <= 126, text[i:i + 3]
            out += text[i:i + 1] * (1 + count - 29)
            i += 3
        else:
            out.append(text[i])
            i += 1
    return bytes(out)


def test_m_replies_are_run_length_encoded_hex(fx):
    import random
    from eclair.packets import hex_rle
    rng = random.Random(4)
    cases = [bytes(n) for n in range(0, 300)] + [b"\x01" + bytes(n) + b"\x10" for n in range(0, 200)]
    for _ in range(200):
        parts = [bytes(rng.choice([1, 7, 8, 9, 49, 50, 4096, 5000])) if rng.random() < 0.5
                 else rng.randbytes(rng.randrange(1, 40)) for _ in range(rng.randrange(1, 8))]
        cases.append(b"".join(parts))
    with McDump.open(str(fx.dump(0))) as d:
        cases.append(bytes(d.read_chunk(0, 0, 1 << 16)))
    for data in cases:
        enc = hex_rle(data)
        assert rle_decode(enc) == data.hex().encode(), data[:64]
        assert not any(c in enc for c in b"#$}")
    assert len(hex_rle(bytes(4096))) * 30 < 8192  # a zero page shrinks
