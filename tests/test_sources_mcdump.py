"""McDumpSource and open_source over mcdumps built by GNU objcopy."""

from __future__ import annotations

import random
import shutil

import pytest

from mcktools.errors import FormatError, UnreadableAddress
from mcktools.memory.sources import PhysicalSource, PhysRange, detect_format, open_source
from mcktools.memory.sources.mcdump import McDumpSource
from mcktools.formats.mcdump import write_mcdump

from .test_formats_mcdump import objcopy_dump, physchunks_blob

pytestmark = pytest.mark.skipif(shutil.which("objcopy") is None, reason="needs GNU objcopy")


@pytest.fixture()
def dump(tmp_path):
    rng = random.Random(5)
    # Two chunks that touch (reported separately, §1.4) and one far away, listed out of order.
    mem = {0x102000: rng.randbytes(0x1000), 0x100000: rng.randbytes(0x2000), 0x3000000: rng.randbytes(0x1000)}
    order = [0x102000, 0x3000000, 0x100000]
    chunks = [(a, len(mem[a])) for a in order]
    secs = [("physchunks", physchunks_blob(chunks, 0x1200000), None, True)]
    secs += [(f"physmem{i}", mem[a], a, True) for i, a in enumerate(order)]
    return objcopy_dump(tmp_path, "s.mcdump", secs), mem


def test_reads_and_spans_adjacent_chunks(dump):
    path, mem = dump
    assert detect_format(path) == "mcdump"
    with open_source(path) as src:
        assert isinstance(src, McDumpSource) and isinstance(src, PhysicalSource)
        assert src.read(0x100010, 0x20) == mem[0x100000][0x10:0x30]
        span = mem[0x100000] + mem[0x102000]
        assert src.read(0x100000, 0x3000) == span
        assert src.read(0x101ff8, 0x10) == span[0x1ff8:0x2008]
        assert src.read(0x3000ffc, 4) == mem[0x3000000][-4:]
        assert src.ranges() == [PhysRange(0x100000, 0x103000), PhysRange(0x3000000, 0x3001000)]
        assert src.dump.kernel_base == 0x1200000


@pytest.mark.parametrize("pa, size, first_bad", [
    (0x0, 8, 0x0),
    (0x103000, 1, 0x103000),
    (0x102ffc, 8, 0x103000),          # starts inside, runs off the end
    (0xfffff8, 16, 0xfffff8),
    (0x3001000, 1, 0x3001000),
])
def test_unreadable_addresses(dump, pa, size, first_bad):
    path, _ = dump
    with open_source(path) as src:
        with pytest.raises(UnreadableAddress, match="not in the dump") as ei:
            src.read(pa, size)
        assert ei.value.address == first_bad


def test_interactive_dump_reads_fail(tmp_path):
    path = tmp_path / "i.mcdump"
    write_mcdump(path, [(0x100000, 0x4000, None)], kernel_base=0x1200000, interactive=True)
    with open_source(path) as src:
        assert src.interactive
        with pytest.raises(UnreadableAddress, match="metadata only"):
            src.read(0x100000, 8)
        assert src.ranges() == []


def test_unknown_files(tmp_path):
    p = tmp_path / "junk"
    p.write_bytes(b"\x00" * 4096)
    with pytest.raises(FormatError, match="unknown dump format"):
        open_source(p)
    short = tmp_path / "short"
    short.write_bytes(b"\x7fELF\x02\x01")
    with pytest.raises(FormatError, match="truncated"):
        open_source(short)
