"""ELF core reader against a core written by real gdb (gcore) and readelf's view of it."""

from __future__ import annotations

import random
import re
import shutil
import struct
import subprocess

import pytest

from mcktools.errors import FormatError
from mcktools.formats.elfcore import ElfCore

pytestmark = pytest.mark.skipif(not (shutil.which("gdb") and shutil.which("gcc") and shutil.which("readelf")),
                                reason="needs gdb, gcc and readelf")

PROG = r"""
unsigned char pattern[65536];
void pause_here(void) { __asm__ volatile(""); }
int main(void) {
    for (int i = 0; i < 65536; i++) pattern[i] = (unsigned char)(i * 7 + 3);
    pause_here();
    return 0;
}
"""


def run(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def gcore(tmp_path_factory):
    d = tmp_path_factory.mktemp("gcore")
    (d / "prog.c").write_text(PROG)
    subprocess.run(["gcc", "-O0", "-no-pie", "-o", str(d / "prog"), str(d / "prog.c")], check=True)
    core = d / "prog.core"
    r = subprocess.run(["gdb", "-nx", "-batch", "-ex", "break pause_here", "-ex", "run",
                        "-ex", f"gcore {core}", str(d / "prog")], capture_output=True, text=True, timeout=120)
    if not core.exists():
        pytest.skip(f"gdb could not write a core here: {r.stdout[-300:]} {r.stderr[-300:]}")
    sym = int(re.search(r"^([0-9a-f]+) B pattern$", run("nm", str(d / "prog")), re.M).group(1), 16)
    return core, sym


def readelf_segments(path):
    rows = []
    for line in run("readelf", "-lW", str(path)).splitlines():
        m = re.match(r"\s+(LOAD|NOTE)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)",
                     line)
        if m:
            rows.append((m.group(1),) + tuple(int(g, 16) for g in m.groups()[1:]))
    return rows


def readelf_notes(path):
    """(owner, descsz, type name) from `readelf -n`."""
    rows = []
    for line in run("readelf", "-n", str(path)).splitlines():
        m = re.match(r"\s+(\S+)\s+0x([0-9a-f]+)\s+(NT_\w+|Unknown note type: \(0x[0-9a-f]+\))", line)
        if m:
            rows.append((m.group(1), int(m.group(2), 16), m.group(3)))
    return rows


# Type numbers from the ELF core conventions (linux/elf.h), independent of the reader.
NT_NUMBERS = {"NT_PRSTATUS": 1, "NT_FPREGSET": 2, "NT_PRPSINFO": 3, "NT_AUXV": 6,
              "NT_X86_XSTATE": 0x202, "NT_SIGINFO": 0x53494749, "NT_FILE": 0x46494C45}


def test_segments_match_readelf(gcore):
    core, _ = gcore
    want = readelf_segments(core)
    with ElfCore.open(core) as c:
        got = [("LOAD", s.offset, s.vaddr, s.paddr, s.filesz, s.memsz) for s in c.segments]
        assert got == [w for w in want if w[0] == "LOAD"]
        assert c.type == 4 and c.machine == 62


def test_notes_match_readelf(gcore):
    core, _ = gcore
    want = readelf_notes(core)
    with ElfCore.open(core) as c:
        assert [(n.name, len(n.desc)) for n in c.notes] == [(o, s) for o, s, _ in want]
        for n, (_, _, tname) in zip(c.notes, want):
            if tname in NT_NUMBERS:
                assert n.type == NT_NUMBERS[tname], tname
        prs = c.notes_named("CORE", 1)
        assert len(prs) >= 1
        assert c.vmcoreinfo() is None


def test_memory_contents_match_program(gcore):
    core, sym = gcore
    expected = bytes((i * 7 + 3) & 0xFF for i in range(65536))
    with ElfCore.open(core) as c:
        out = bytearray()
        addr = sym
        while len(out) < len(expected):
            seg = next(s for s in c.segments if s.vaddr <= addr < s.vaddr + s.filesz)
            n = min(seg.vaddr + seg.filesz - addr, len(expected) - len(out))
            out += c.read_segment(seg, addr - seg.vaddr, n)
            addr += n
        assert bytes(out) == expected


def test_truncated_and_fuzzed_cores(gcore, tmp_path):
    core, _ = gcore
    data = core.read_bytes()
    segs = readelf_segments(core)
    p = tmp_path / "bad.core"
    # Cut inside the header, the program headers and every segment's data.
    cuts = {0, 10, 63, 64, 64 + 56 * len(segs) - 1}
    for _, off, _, _, filesz, _ in segs:
        if filesz:
            cuts |= {off, off + filesz - 1}
    for cut in sorted(cuts):
        p.write_bytes(data[:cut])
        with pytest.raises(FormatError):
            ElfCore.open(p).close()
    # Flip bytes in the headers and the note segment; only FormatError may escape.
    note = next(s for s in segs if s[0] == "NOTE")
    hot = [(0, 64 + 56 * len(segs)), (note[1], note[1] + note[4])]
    head = data[:max(note[1] + note[4], 64 + 56 * len(segs))]
    rng = random.Random(99)
    errors = 0
    for _ in range(400):
        buf = bytearray(head)
        for _ in range(rng.randint(1, 3)):
            lo, hi = hot[rng.randrange(2)]
            buf[rng.randrange(lo, hi)] = rng.randrange(256)
        p.write_bytes(bytes(buf) + data[len(head):])
        try:
            ElfCore.open(p).close()
        except FormatError:
            errors += 1
    assert errors > 20


def test_not_a_core(tmp_path):
    src = tmp_path / "x.c"
    src.write_text("int main(void) { return 0; }\n")
    exe = tmp_path / "x"
    subprocess.run(["gcc", "-o", str(exe), str(src)], check=True)
    with pytest.raises(FormatError, match="not a core"):
        ElfCore.open(exe)
    txt = tmp_path / "t"
    txt.write_bytes(struct.pack("<Q", 42))
    with pytest.raises(FormatError, match="not an ELF"):
        ElfCore.open(txt)


# -- writer: checked by readelf and gdb --------------------------------------------

from mcktools.errors import OutputError  # noqa: E402
from mcktools.formats.elfcore import CoreSegment, write_elfcore  # noqa: E402


def _prstatus(pid: int, regs: dict) -> bytes:
    """struct elf_prstatus for x86_64 (336 bytes): pr_pid at 32, pr_reg (27 u64, user_regs_struct
    order) at 112 — from <sys/procfs.h>, independent of the code under test."""
    order = ["r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx", "rsi",
             "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base", "ds", "es", "fs", "gs"]
    buf = bytearray(336)
    struct.pack_into("<i", buf, 32, pid)
    struct.pack_into("<27Q", buf, 112, *[regs.get(r, 0) for r in order])
    return bytes(buf)


def test_writer_read_by_readelf_and_gdb(tmp_path):
    rng = random.Random(11)
    text = rng.randbytes(0x4000)
    direct = rng.randbytes(0x1000)
    path = tmp_path / "w.core"
    calls = []

    def reader(data):
        def r(off, n):
            calls.append(n)
            return data[off:off + n]
        return r
    regs = {"rip": 0xFFFFFFFF81234567, "rsp": 0xFFFF888000123450, "rax": 0x1111}
    write_elfcore(path, [CoreSegment(0xFFFFFFFF80000000, 0x1000000, len(text), reader(text)),
                         CoreSegment(0xFFFF888000000000, 0, 0x3000, reader(direct), filesz=0x1000)],
                  [("CORE", 1, _prstatus(42, regs))])
    segs = [s for s in readelf_segments(path) if s[0] == "LOAD"]
    assert [(s[2], s[3], s[4], s[5]) for s in segs] == [(0xFFFFFFFF80000000, 0x1000000, 0x4000, 0x4000),
                                                          (0xFFFF888000000000, 0, 0x1000, 0x3000)]
    assert _phoff_of(path) == 64                       # /proc/vmcore layout (makedumpfile needs it)
    assert readelf_notes(path) == [("CORE", 336, "NT_PRSTATUS")]
    out = run("gdb", "-nx", "-batch", "-c", str(path), "-ex", "info registers rip rsp rax",
              "-ex", "x/4xb 0xffffffff80000010")
    assert re.search(r"rip\s+0xffffffff81234567", out) and re.search(r"rsp\s+0xffff888000123450", out)
    assert re.search(r"rax\s+0x1111", out)
    want = " ".join(f"0x{b:02x}" for b in text[0x10:0x14])
    assert re.search(r"0xffffffff80000010:\s+" + re.escape(want).replace(r"\ ", r"\s+"), out), out
    with ElfCore.open(path) as c:
        assert c.read_segment(c.segments[0], 0, 0x4000) == text
        assert c.segments[1].filtered
    with pytest.raises(OutputError, match="already exists"):
        write_elfcore(path, [], [])


def _phoff_of(path) -> int:
    return int(re.search(r"Start of program headers:\s+(\d+)", run("readelf", "-h", str(path))).group(1))


def test_writer_extended_program_header_count(tmp_path):
    n = 70000
    path = tmp_path / "many.core"
    write_elfcore(path, [CoreSegment(0x1000 * i, 0x1000 * i, 8, lambda o, k, i=i: struct.pack("<Q", i))
                         for i in range(n)], [("CORE", 1, bytes(336))])
    head = run("readelf", "-hW", str(path))
    assert re.search(rf"Number of program headers:\s+65535 \({n + 1}\)", head), head
    loads = [s for s in readelf_segments(path) if s[0] == "LOAD"]
    assert len(loads) == n and loads[-1][3] == 0x1000 * (n - 1)
    with ElfCore.open(path) as c:
        assert len(c.segments) == n
        assert c.read_segment(c.segments[-1], 0, 8) == struct.pack("<Q", n - 1)
