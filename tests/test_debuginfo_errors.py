"""Bad images: generated truncations and corruptions, stripped and odd builds.
Every failure must be a McktoolsError (one line for the user), never a crash."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from mcktools.debuginfo import Image, clear_memory_cache
from mcktools.debuginfo.elffile import ElfFile
from mcktools.errors import DebugInfoError, FormatError, McktoolsError

from .test_debuginfo_support import TYPE_NAMES, compare_types, compile_fixture, drgn_program, have_tools, nm_symbols

pytestmark = pytest.mark.skipif(not have_tools(), reason="gcc/nm/readelf not installed")


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("errfix")


@pytest.fixture(scope="module")
def image_path(fixture_dir) -> Path:
    return compile_fixture(fixture_dir, 5, "-O2")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MCKTOOLS_CACHE_DIR", str(tmp_path / "cache"))
    clear_memory_cache()
    yield
    clear_memory_cache()


def _exercise(path: Path) -> None:
    """Open and query; only McktoolsError may escape."""
    try:
        img = Image.open(path, use_cache=False)
    except McktoolsError:
        return
    for name in TYPE_NAMES:
        try:
            t = img.type(name)
            img.sizeof(t)
        except McktoolsError:
            pass
    for name in ("gh", "shared_counter", "main"):
        for call in (img.variable, img.symbol):
            try:
                call(name)
            except McktoolsError:
                pass
    img.lookup(0x1000)
    img.close()


def test_not_elf_and_empty(tmp_path):
    text = tmp_path / "text"
    text.write_text("hello, I am not a kernel\n" * 10)
    with pytest.raises(FormatError):
        Image.open(text)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(FormatError):
        Image.open(empty)
    elf32 = tmp_path / "elf32"
    elf32.write_bytes(b"\x7fELF\x01\x01\x01" + b"\0" * 100)
    with pytest.raises(FormatError):
        Image.open(elf32)


def test_truncated_images(image_path, tmp_path):
    data = image_path.read_bytes()
    rng = random.Random(1234)
    cuts = sorted({0, 1, 16, 63, 64, 65, len(data) // 2, len(data) - 1} | {rng.randrange(len(data)) for _ in range(40)})
    errors = 0
    for cut in cuts:
        p = tmp_path / f"cut{cut}"
        p.write_bytes(data[:cut])
        try:
            Image.open(p, use_cache=False)
        except FormatError:
            errors += 1
    # The section headers sit at the end of the file, so every cut loses them.
    assert errors == len(cuts)


def _section_range(path: Path, name: str):
    elf = ElfFile(path.read_bytes())
    sec = elf.section(name)
    return sec.offset, sec.size


@pytest.mark.parametrize("section", [".debug_info", ".debug_abbrev", ".debug_str"])
def test_corrupted_debug_sections(image_path, tmp_path, section):
    start, size = _section_range(image_path, section)
    rng = random.Random(hash(section) & 0xFFFF)
    for trial in range(25):
        data = bytearray(image_path.read_bytes())
        for _ in range(rng.choice((1, 4, 32))):
            data[start + rng.randrange(size)] = rng.randrange(256)
        p = tmp_path / f"bad{trial}"
        p.write_bytes(bytes(data))
        _exercise(p)


def test_debug_info_header_lies_about_length(image_path, tmp_path):
    start, size = _section_range(image_path, ".debug_info")
    data = bytearray(image_path.read_bytes())
    data[start:start + 4] = (size * 4).to_bytes(4, "little")
    p = tmp_path / "long-unit"
    p.write_bytes(bytes(data))
    with pytest.raises(FormatError):
        Image.open(p, use_cache=False)


def test_no_debug_info_keeps_symbols(image_path, tmp_path):
    p = tmp_path / "nodebug"
    subprocess.run(["objcopy", "--strip-debug", str(image_path), str(p)], check=True)
    img = Image.open(p)
    assert img.symbol("main") == min(nm_symbols(p)["main"])
    with pytest.raises(DebugInfoError):
        img.type("struct holder")
    with pytest.raises(DebugInfoError):
        img.variable("gh")


def test_fully_stripped(image_path, tmp_path):
    p = tmp_path / "stripped"
    subprocess.run(["strip", "-s", str(image_path), "-o", str(p)], check=True)
    img = Image.open(p)
    with pytest.raises(DebugInfoError):
        img.symbol("init_pt")


def test_relocatable_object_is_refused(fixture_dir, tmp_path):
    obj = tmp_path / "a.o"
    subprocess.run(["gcc", "-g", "-c", "-o", str(obj), str(fixture_dir / "a.c")], check=True, cwd=fixture_dir)
    with pytest.raises(DebugInfoError):
        Image.open(obj)


def test_compressed_debug_sections(fixture_dir, tmp_path):
    if subprocess.run(["gcc", "-gz", "-g", "-x", "c", "-c", "-o", "/dev/null", "-"], input=b"int x;",
                      capture_output=True).returncode != 0:
        pytest.skip("gcc here cannot compress debug sections")
    path = compile_fixture(tmp_path / "gz", 5, "-O0", ("-gz=zlib",))
    out = subprocess.run(["readelf", "-SW", str(path)], capture_output=True, text=True).stdout
    assert any(".debug_info" in line and " C " in f" {line.split('PROGBITS')[-1]} " for line in out.splitlines())
    img = Image.open(path)
    prog = drgn_program(path)
    for name in ("struct holder", "struct bits", "enum status"):
        compare_types(img.type(name), prog.type(name), name)


def test_cli_reports_one_line(tmp_path):
    bad = tmp_path / "bad.img"
    bad.write_bytes(b"\x7fELF\x02\x01\x01" + b"\xff" * 57)
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "mcktools.debuginfo", str(bad)], cwd=repo,
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("mcktools.debuginfo: error:")
    assert "Traceback" not in proc.stderr
