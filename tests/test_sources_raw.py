"""RawFileSource over a generated memory file and chunk map."""

from __future__ import annotations

import os
import random

import pytest

from mcktools.errors import FormatError, UnreadableAddress
from mcktools.memory.sources import PhysRange, open_source
from mcktools.memory.sources.raw import RawFileSource


def test_whole_file_is_memory_from_zero(tmp_path):
    data = random.Random(1).randbytes(0x10000)
    p = tmp_path / "mem.raw"
    p.write_bytes(data)
    with RawFileSource(p) as src:
        assert src.read(0x1234, 0x100) == data[0x1234:0x1334]
        assert src.ranges() == [PhysRange(0, 0x10000)]
        with pytest.raises(UnreadableAddress) as ei:
            src.read(0xfff0, 0x20)
        assert ei.value.address == 0x10000


def test_chunk_map_and_spanning(tmp_path):
    data = random.Random(2).randbytes(0x3000)
    p = tmp_path / "mem.raw"
    p.write_bytes(data)
    # file [0x1000,0x2000) holds PA 0x100000, file [0x2000,0x3000) PA 0x101000, file [0,0x1000) PA 0x800000.
    cmap = [(0x100000, 0x1000, 0x1000), (0x101000, 0x2000, 0x1000), (0x800000, 0, 0x1000)]
    with open_source(p, raw_map=cmap) as src:
        assert src.read(0x100ff0, 0x20) == data[0x1ff0:0x2010]
        assert src.read(0x800010, 4) == data[0x10:0x14]
        assert src.ranges() == [PhysRange(0x100000, 0x102000), PhysRange(0x800000, 0x801000)]
        with pytest.raises(UnreadableAddress, match="not in the memory file"):
            src.read(0x102000, 1)


def test_chunk_map_past_end_of_file(tmp_path):
    p = tmp_path / "mem.raw"
    p.write_bytes(bytes(0x1000))
    with pytest.raises(FormatError, match="needs file bytes"):
        RawFileSource(p, [(0, 0x800, 0x1000)])
    e = tmp_path / "empty"
    e.write_bytes(b"")
    with pytest.raises(FormatError, match="empty"):
        RawFileSource(e)


def test_live_file_changes_are_visible(tmp_path):
    p = tmp_path / "mem.raw"
    p.write_bytes(bytes(0x2000))
    with RawFileSource(p) as src:
        with open(p, "r+b") as f:
            f.seek(0x1000)
            f.write(b"guest wrote this")
            f.flush()
        assert src.read(0x1000, 16) == b"guest wrote this"


def test_open_source_refuses_non_files(tmp_path):
    with pytest.raises(FormatError, match="directory"):
        open_source(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(FormatError, match="not a regular file"):
        open_source(fifo)                  # must not block waiting for a writer
    with pytest.raises(FileNotFoundError):
        open_source(tmp_path / "missing")  # OSError: run_cli prints it as one line
