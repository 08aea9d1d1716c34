"""mcdump reader/writer against GNU binutils (objcopy builds, readelf/objdump read)."""

from __future__ import annotations

import random
import re
import shutil
import struct
import subprocess
import time

import pytest

from mcktools.errors import FormatError, McktoolsError, OutputError
from mcktools.formats.mcdump import McDump, write_mcdump

pytestmark = pytest.mark.skipif(shutil.which("objcopy") is None or shutil.which("readelf") is None,
                                reason="needs GNU binutils")


def run(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def physchunks_blob(chunks, kernel_base, phys_start=0, count=None) -> bytes:
    """dump_mem_chunks_t laid out from the ABI table (§1.4), independently of the reader."""
    n = len(chunks) if count is None else count
    out = struct.pack("<i", n) + b"\0" * 4 + struct.pack("<QQ", kernel_base, phys_start)
    for addr, size in chunks:
        out += struct.pack("<QQ", addr, size)
    return out


def objcopy_dump(tmp_path, name, sections, *, extra=()):
    """Build an mcdump with GNU objcopy only.  `sections` is a list of
    (section name, bytes, address or None, alloc?)."""
    seed = tmp_path / f"{name}.seed"
    seed.write_bytes(b"x")   # objcopy refuses empty input; its .data is removed below
    out = tmp_path / name
    args = ["objcopy", "-I", "binary", "-O", "elf64-little", "--remove-section", ".data"]
    for sec, data, addr, alloc in sections:
        f = tmp_path / f"{name}.{sec}.bin"
        f.write_bytes(data)
        args += ["--add-section", f"{sec}={f}",
                 "--set-section-flags", f"{sec}={'alloc,' if alloc else ''}contents,data"]
        if addr is not None:
            args += ["--change-section-address", f"{sec}={addr:#x}"]
    args += list(extra) + [str(seed), str(out)]
    subprocess.run(args, check=True, capture_output=True)
    return out


def readelf_sections(path) -> dict[str, tuple[int, int, int, str]]:
    """name -> (address, offset, size, flags) from `readelf -SW`."""
    rows = {}
    for line in run("readelf", "-SW", str(path)).splitlines():
        m = re.match(r"\s*\[\s*(\d+)\]\s+(\S+)\s+(\S+)\s+([0-9a-f]+)\s+([0-9a-f]+)\s+([0-9a-f]+)\s+[0-9a-f]+\s*([A-Za-z]*)\s+\d+",
                     line)
        if m and m.group(2) != "NULL":
            rows[m.group(2)] = (int(m.group(4), 16), int(m.group(5), 16), int(m.group(6), 16), m.group(7))
    return rows


def data_reader(data: bytes):
    return lambda off, n: data[off:off + n]


# -- objcopy-built dumps are read ------------------------------------------------

def test_reads_objcopy_built_dump(tmp_path):
    rng = random.Random(1)
    mem0 = rng.randbytes(0x2000)
    mem1 = rng.randbytes(0x1000)
    chunks = [(0x200000, len(mem0)), (0x100000, len(mem1))]   # not sorted on purpose (§1.4)
    path = objcopy_dump(tmp_path, "oc.mcdump", [
        ("date", b"Tue May 31 13:39:07 2022", None, False),
        ("user", b"root", None, False),
        ("physchunks", physchunks_blob(chunks, 0x1200000), None, True),
        ("physmem0", mem0, 0x200000, True),
        ("physmem1", mem1, 0x100000, True),
        ("kmsg", b"boot ok\n", None, False),
    ])
    assert "elf64-little" in run("objdump", "-h", str(path))
    with McDump.open(path) as d:
        assert d.date == "Tue May 31 13:39:07 2022"
        assert d.user == "root" and d.hostname is None
        assert d.kernel_base == 0x1200000 and d.phys_start == 0
        assert not d.interactive
        assert [(c.addr, c.size) for c in d.chunks] == chunks
        assert d.read_chunk(0, 0, len(mem0)) == mem0
        assert d.read_chunk(1, 0x10, 0x20) == mem1[0x10:0x30]
        assert d.section("kmsg") == b"boot ok\n"
        assert d.section("hostname") is None
        assert "kmsg" in d.extra_section_names
        secs = readelf_sections(path)
        assert [c.file_offset for c in d.chunks] == [secs["physmem0"][1], secs["physmem1"][1]]


@pytest.mark.parametrize("case, message", [
    ("count", "lists 3 chunks but the file has 2"),
    ("address", "has address 0x300000"),
    ("size", "holds 0x2000 bytes"),
    ("missing", "physmem1 is missing"),
    ("short_table", "needs 56 bytes"),
    ("no_physchunks", "no 'physchunks' section"),
])
def test_objcopy_built_inconsistent_dumps(tmp_path, case, message):
    mem = bytes(0x2000)
    chunks = [(0x100000, 0x2000), (0x300000, 0x1000)]
    secs = [("physchunks", physchunks_blob(chunks, 0x1200000), None, True),
            ("physmem0", mem, 0x100000, True),
            ("physmem1", mem[:0x1000], 0x300000, True)]
    if case == "count":
        secs[0] = ("physchunks", physchunks_blob(chunks + [(0x500000, 0x1000)], 0x1200000), None, True)
    elif case == "address":
        secs[2] = ("physmem1", mem[:0x1000], 0x300000, True)
        secs[1] = ("physmem0", mem, 0x300000, True)
    elif case == "size":
        secs[2] = ("physmem1", mem, 0x300000, True)
    elif case == "missing":
        secs[2] = ("physmem2", mem[:0x1000], 0x300000, True)
    elif case == "short_table":
        secs[0] = ("physchunks", physchunks_blob(chunks[:1], 0x1200000, count=2), None, True)
    elif case == "no_physchunks":
        secs = secs[1:]
    path = objcopy_dump(tmp_path, f"{case}.mcdump", secs)
    with pytest.raises(FormatError, match=re.escape(message)):
        McDump.open(path)


def test_not_elf_and_empty(tmp_path):
    p = tmp_path / "text"
    p.write_bytes(b"hello world, definitely not an ELF file" * 4)
    with pytest.raises(FormatError, match="not an ELF"):
        McDump.open(p)
    e = tmp_path / "empty"
    e.write_bytes(b"")
    with pytest.raises(FormatError, match="empty"):
        McDump.open(e)
    # A real ELF that is not a dump: the test interpreter's own object file from gcc.
    src = tmp_path / "x.c"
    src.write_text("int x = 1;\n")
    obj = tmp_path / "x.o"
    subprocess.run(["gcc", "-c", "-o", str(obj), str(src)], check=True)
    with pytest.raises(FormatError, match="no 'physchunks'"):
        McDump.open(obj)


# -- the writer, checked by binutils ----------------------------------------------

def _sample_chunks():
    rng = random.Random(7)
    return [(0x100000, rng.randbytes(0x3000)), (0x103000, rng.randbytes(0x1000)),
            (0x40000000, rng.randbytes(0x200000 + 0x1000))]    # > 1 MiB: streamed in blocks


def test_writer_output_read_by_binutils(tmp_path):
    chunks = _sample_chunks()
    path = tmp_path / "w.mcdump"
    calls = []

    def reader_for(data):
        def r(off, n):
            calls.append(n)
            return data[off:off + n]
        return r

    size = write_mcdump(path, [(a, len(d), reader_for(d)) for a, d in chunks], kernel_base=0x1200000,
                        date="Tue May 31 13:39:07 2022", hostname="node7", user="root",
                        extra_sections=[("kmsg", b"log line\n")])
    assert size == path.stat().st_size
    assert max(calls) <= 1 << 20               # streamed, never one huge read
    header = run("readelf", "-hW", str(path))
    assert re.search(r"Type:\s+REL", header) and re.search(r"Machine:\s+None", header)
    assert re.search(r"Number of program headers:\s+0", header)
    secs = readelf_sections(path)
    names = list(secs)
    assert names == ["date", "hostname", "user", "physchunks", "physmem0", "physmem1", "physmem2",
                     "kmsg", ".shstrtab"]
    assert secs["date"][1] == 0x40                             # packed from 0x40 ...
    offs = [secs[n][1] for n in names]
    sizes = [secs[n][2] for n in names]
    assert all(offs[i] + sizes[i] == offs[i + 1] for i in range(len(names) - 1))   # ... alignment 1
    assert {n: secs[n][3] for n in names} == {
        "date": "W", "hostname": "W", "user": "W", "physchunks": "WA", "physmem0": "WA",
        "physmem1": "WA", "physmem2": "WA", "kmsg": "W", ".shstrtab": ""}
    for i, (addr, data) in enumerate(chunks):
        assert secs[f"physmem{i}"][0] == addr and secs[f"physmem{i}"][2] == len(data)
    # objdump agrees on names, VMAs and sizes.
    oh = {m.group(1): (int(m.group(3), 16), int(m.group(2), 16))
          for m in re.finditer(r"^\s*\d+\s+(\S+)\s+([0-9a-f]+)\s+([0-9a-f]+)\s", run("objdump", "-h", str(path)), re.M)}
    for i, (addr, data) in enumerate(chunks):
        assert oh[f"physmem{i}"] == (addr, len(data))
    # objcopy extracts exactly the bytes we streamed in, and the ABI layout of physchunks.
    out = tmp_path / "pm2.bin"
    pc = tmp_path / "pc.bin"
    # EM_NONE files are ambiguous to objcopy (elf64-little vs others): name the BFD target.
    subprocess.run(["objcopy", "-I", "elf64-little", "--dump-section", f"physmem2={out}", "--dump-section", f"physchunks={pc}",
                    str(path), str(tmp_path / "scratch")], check=True, capture_output=True)
    assert out.read_bytes() == chunks[2][1]
    assert pc.read_bytes() == physchunks_blob([(a, len(d)) for a, d in chunks], 0x1200000)
    # Section header table aligned to 8 and at the end of the file.
    shoff = int(re.search(r"Start of section headers:\s+(\d+)", header).group(1))
    assert shoff % 8 == 0 and shoff + 10 * 64 == path.stat().st_size
    with McDump.open(path) as d:
        assert (d.date, d.hostname, d.user) == ("Tue May 31 13:39:07 2022", "node7", "root")
        for c, (addr, data) in zip(d.chunks, chunks):
            assert (c.addr, c.size) == (addr, len(data))
            assert d.read_chunk(c.index, 0, c.size) == data


def test_writer_without_optional_sections(tmp_path):
    path = tmp_path / "min.mcdump"
    write_mcdump(path, [(0x1000, 0x1000, data_reader(bytes(range(256)) * 16))], kernel_base=0x400000)
    assert list(readelf_sections(path)) == ["physchunks", "physmem0", ".shstrtab"]
    with McDump.open(path) as d:
        assert d.date is None and d.hostname is None and d.user is None
        assert d.read_chunk(0, 0, 4) == b"\x00\x01\x02\x03"


def test_interactive_dump(tmp_path):
    path = tmp_path / "i.mcdump"

    def never(off, n):
        raise AssertionError("an interactive dump must not read memory")
    write_mcdump(path, [(0x100000, 0x200000, never), (0x800000, 0x3000, never)], kernel_base=0x1200000,
                 interactive=True)
    secs = readelf_sections(path)
    assert secs["physmem0"][0] == 0x100000 and secs["physmem0"][2] == 4096
    assert secs["physmem1"][0] == 0x800000 and secs["physmem1"][2] == 4096
    with McDump.open(path) as d:
        assert d.interactive
        assert [(c.addr, c.size, c.file_size) for c in d.chunks] == [(0x100000, 0x200000, 4096),
                                                                     (0x800000, 0x3000, 4096)]
        with pytest.raises(FormatError, match="metadata only"):
            d.read_chunk(0, 0, 16)


def test_extended_section_numbering(tmp_path):
    n = 70000
    path = tmp_path / "many.mcdump"
    t0 = time.monotonic()
    write_mcdump(path, [(0x1000 * i, 8, data_reader(struct.pack("<Q", i))) for i in range(n)],
                 kernel_base=0x1200000)
    header = run("readelf", "-hW", str(path))
    total = n + 3   # null, physchunks, physmemN, .shstrtab
    assert re.search(rf"Number of section headers:\s+0 \({total}\)", header), header
    assert re.search(rf"Section header string table index:\s+65535 \({total - 1}\)", header), header
    secs = readelf_sections(path)
    assert len(secs) == n + 2
    assert secs[f"physmem{n - 1}"][0] == 0x1000 * (n - 1) and secs["physmem65300"][2] == 8
    t1 = time.monotonic()
    with McDump.open(path) as d:
        assert len(d.chunks) == n
        assert d.read_chunk(n - 1, 0, 8) == struct.pack("<Q", n - 1)
        assert d.read_chunk(65300, 0, 8) == struct.pack("<Q", 65300)
    assert time.monotonic() - t1 < 60, "reading 70k section headers must not hang"
    assert t1 - t0 < 60


# -- writer safety ------------------------------------------------------------------

def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


def test_writer_refuses_to_overwrite(tmp_path):
    path = tmp_path / "x.mcdump"
    path.write_bytes(b"precious")
    with pytest.raises(OutputError, match="already exists"):
        write_mcdump(path, [(0, 16, data_reader(bytes(16)))], kernel_base=0)
    assert path.read_bytes() == b"precious"
    write_mcdump(path, [(0, 16, data_reader(bytes(16)))], kernel_base=0, overwrite=True)
    with McDump.open(path) as d:
        assert len(d.chunks) == 1
    assert _leftovers(tmp_path) == ["x.mcdump"]


@pytest.mark.parametrize("exc", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_writer_leaves_nothing_on_failure(tmp_path, exc):
    path = tmp_path / "y.mcdump"

    def failing(off, n):
        if off >= 1 << 20:
            raise exc
        return bytes(n)
    with pytest.raises(type(exc)):
        write_mcdump(path, [(0, 3 << 20, failing)], kernel_base=0)
    assert _leftovers(tmp_path) == []


def test_writer_short_reader_and_bad_folder(tmp_path):
    with pytest.raises(McktoolsError, match="returned 3 bytes"):
        write_mcdump(tmp_path / "z", [(0, 16, lambda o, n: b"abc")], kernel_base=0)
    assert _leftovers(tmp_path) == []
    with pytest.raises(OutputError):
        write_mcdump(tmp_path / "no" / "such" / "dir" / "z", [], kernel_base=0)


# -- truncated and fuzzed input --------------------------------------------------------

@pytest.fixture(scope="module")
def small_dump(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    path = d / "small.mcdump"
    rng = random.Random(3)
    write_mcdump(path, [(0x100000, 0x100, data_reader(rng.randbytes(0x100))),
                        (0x200000, 0x80, data_reader(rng.randbytes(0x80)))],
                 kernel_base=0x1200000, date="Tue May 31 13:39:07 2022", hostname="h", user="root",
                 extra_sections=[("kmsg", b"x" * 40)])
    return path


def _exercise(path):
    """Open and read everything; only FormatError may escape."""
    with McDump.open(path) as d:
        for c in d.chunks:
            if not d.interactive:
                d.read_chunk(c.index, 0, c.size)
        for name in ("date", "hostname", "user", "kmsg"):
            d.section(name)


def test_truncated_at_every_structure_boundary(small_dump, tmp_path):
    data = small_dump.read_bytes()
    secs = readelf_sections(small_dump)
    shoff = int(re.search(r"Start of section headers:\s+(\d+)", run("readelf", "-h", str(small_dump))).group(1))
    cuts = {0, 1, 3, 4, 16, 63, 64, shoff, len(data) - 1}
    for addr, off, size, _ in secs.values():
        cuts |= {off, off + size, off + size - 1}
    cuts |= {shoff + 64 * i for i in range((len(data) - shoff) // 64)}
    for cut in sorted(c for c in cuts if 0 <= c < len(data)):
        p = tmp_path / "cut"
        p.write_bytes(data[:cut])
        with pytest.raises(FormatError):
            _exercise(p)


def test_random_byte_flips_give_format_errors_only(small_dump, tmp_path):
    data = small_dump.read_bytes()
    rng = random.Random(12345)
    p = tmp_path / "fuzz"
    t0 = time.monotonic()
    outcomes = {"ok": 0, "error": 0}
    # Structure-heavy regions (header, physchunks, section table) get most flips.
    secs = readelf_sections(small_dump)
    hot = [(0, 64), (secs["physchunks"][1], secs["physchunks"][1] + secs["physchunks"][2]),
           (len(data) - 11 * 64, len(data))]
    for i in range(1500):
        buf = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            lo, hi = hot[rng.randrange(len(hot))] if rng.random() < 0.8 else (0, len(buf))
            buf[rng.randrange(lo, hi)] = rng.randrange(256)
        p.write_bytes(buf)
        try:
            _exercise(p)
            outcomes["ok"] += 1
        except FormatError:
            outcomes["error"] += 1
    assert outcomes["error"] > 100       # the fuzzer really hits the structures
    assert time.monotonic() - t0 < 30
