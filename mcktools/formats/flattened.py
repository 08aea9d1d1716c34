"""makedumpfile's flattened format (`makedumpfile -F`, made for piping over ssh).

A 4096-byte big-endian header ("makedumpfile", type 1, version 1) is followed by
records `{int64 offset; int64 size}` + `size` bytes, each saying "these bytes go
at this offset of the real dump file"; offset -1 ends the stream.  Later records
overwrite earlier ones (makedumpfile rewrites its header at the end).

`FlattenedView` indexes the records in place and serves `pread` like a seekable
file (no copy); `rearrange_flattened` writes the real file, as `makedumpfile -R`.
"""

from __future__ import annotations

import bisect
import mmap
import os
import struct

from ..errors import FormatError
from .intervals import merge_in, uncovered
from .safe_output import atomic_output, check_target

SIGNATURE = b"makedumpfile"
HEADER_SIZE = 4096            # MAX_SIZE_MDF_HEADER
HEADER = struct.Struct(">16sqq")
RECORD = struct.Struct(">qq")
END_FLAG = -1
TYPE_FLAT_HEADER = 1
VERSION_FLAT_HEADER = 1


def is_flattened(head: bytes) -> bool:
    return head[:len(SIGNATURE)] == SIGNATURE


def _scan(mm, path: str) -> list[tuple[int, int, int]]:
    """(target offset, size, position in the flattened file) per record, in stream order."""
    if len(mm) < HEADER_SIZE:
        raise FormatError(f"{path} is truncated: {len(mm)} bytes, shorter than the flattened-format header")
    sig, ftype, version = HEADER.unpack_from(mm, 0)
    if sig.rstrip(b"\0") != SIGNATURE:
        raise FormatError(f"{path} is not a makedumpfile flattened file (bad signature)")
    if ftype != TYPE_FLAT_HEADER or version != VERSION_FLAT_HEADER:
        raise FormatError(f"{path}: unsupported flattened format type {ftype} version {version}")
    records = []
    pos = HEADER_SIZE
    n = len(mm)
    while True:
        if pos + RECORD.size > n:
            raise FormatError(f"{path} is truncated: flattened record header at {pos:#x} is past the end "
                              f"of the file (no end marker)")
        offset, size = RECORD.unpack_from(mm, pos)
        pos += RECORD.size
        if offset == END_FLAG:
            break
        if offset < 0 or size < 0:
            raise FormatError(f"{path}: flattened record at {pos - RECORD.size:#x} has invalid offset "
                              f"{offset} or size {size}")
        if pos + size > n:
            raise FormatError(f"{path} is truncated: flattened record at {pos - RECORD.size:#x} needs "
                              f"{size:#x} bytes, the file ends first")
        records.append((offset, size, pos))
        pos += size
    return records


class FlattenedView:
    """A read-only, seekable view of the dump a flattened stream describes.

    Bytes no record wrote read as zeros: that is what `makedumpfile -R` leaves
    there too (a sparse hole), and the kdump layer above never points into them.
    """

    def __init__(self, path: "str | os.PathLike[str]"):
        self.path = os.fspath(path)
        self._file = open(self.path, "rb")
        try:
            if os.fstat(self._file.fileno()).st_size == 0:
                raise FormatError(f"{self.path}: empty file")
            self._mm = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
            records = _scan(self._mm, self.path)
        except BaseException:
            self.close()
            raise
        # Later records win: walk backwards and keep only the parts not yet covered.
        pieces: list[tuple[int, int, int]] = []      # (start, end, src position of start)
        covered: list[tuple[int, int]] = []
        for offset, size, src in reversed(records):
            for s, e in uncovered(covered, offset, offset + size):
                pieces.append((s, e, src + (s - offset)))
            covered = merge_in(covered, offset, offset + size)
        pieces.sort()
        self._pieces = pieces
        self._starts = [p[0] for p in pieces]
        self.size = max((e for _, e, _ in pieces), default=0)

    def pread(self, offset: int, size: int) -> bytes:
        if self._mm is None:
            raise FormatError(f"{self.path} is closed")
        out = bytearray()
        pos, end = offset, offset + size
        i = max(bisect.bisect_right(self._starts, pos) - 1, 0)
        while pos < end:
            if i < len(self._pieces) and self._pieces[i][1] <= pos:
                i += 1
                continue
            if i >= len(self._pieces) or self._pieces[i][0] >= end:
                out += bytes(end - pos)
                break
            s, e, src = self._pieces[i]
            if s > pos:
                out += bytes(s - pos)
                pos = s
            n = min(e, end) - pos
            start = src + (pos - s)
            out += self._mm[start:start + n]
            pos += n
            i += 1
        return bytes(out)

    def __len__(self) -> int:
        return self.size

    def close(self) -> None:
        if getattr(self, "_mm", None) is not None:
            self._mm.close()
            self._mm = None
        if getattr(self, "_file", None) is not None:
            self._file.close()
            self._file = None


def rearrange_flattened(src: "str | os.PathLike[str]", dst: "str | os.PathLike[str]", *,
                        overwrite: bool = False) -> int:
    """Write the dump file a flattened stream describes (like `makedumpfile -R`),
    streaming record by record; returns the size written."""
    src, dst = os.fspath(src), os.fspath(dst)
    check_target(dst, overwrite)
    with open(src, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise FormatError(f"{src}: empty file")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            records = _scan(mm, src)
            size = 0
            with atomic_output(dst, overwrite=overwrite) as out:
                for offset, length, pos in records:
                    out.seek(offset)
                    for k in range(0, length, 1 << 20):
                        out.write(mm[pos + k:pos + min(length, k + (1 << 20))])
                    size = max(size, offset + length)
                out.truncate(size)
    return size
