"""kdump-compressed dumps ("KDUMP   ", makedumpfile -c/-l/-p/-z), 64-bit layout.

Layout (dump-formats reference §3.2): a main header in block 0, a sub header in
block 1, then two bitmaps of `bitmap_blocks / 2` blocks each (1st: the PFN is
RAM; 2nd: the PFN was dumped), then one 24-byte page descriptor per dumped PFN
in PFN order, and the page data they point to.  Pages are decompressed one at
a time into a small LRU cache; the file is never read whole.  Flattened
streams (makedumpfile -F) are read through `flattened.FlattenedView`.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

from ..errors import FormatError
from . import elf64
from .flattened import FlattenedView, is_flattened
from .mapped import MappedFile, map_file

SIGNATURE = b"KDUMP   "
# struct disk_dump_header on LP64: signature, header_version, new_utsname
# (6 x 65 bytes), 6 bytes of padding to align struct timeval, then the counters.
MAIN_HEADER = struct.Struct("<8si390s6xqqIiiIIIIIIi")
UTS_FIELDS = ("sysname", "nodename", "release", "version", "machine", "domainname")
# struct kdump_sub_header on LP64 (fields appear by header_version: 3 adds
# vmcoreinfo, 4 notes, 5 eraseinfo, 6 the 64-bit PFN fields).
SUB_HEADER = struct.Struct("<QiiQQQQQQQQQQQ")
PAGE_DESC = struct.Struct("<QIIQ")

DUMP_DH_COMPRESSED_ZLIB = 0x1
DUMP_DH_COMPRESSED_LZO = 0x2
DUMP_DH_COMPRESSED_SNAPPY = 0x4
DUMP_DH_COMPRESSED_INCOMPLETE = 0x8
DUMP_DH_COMPRESSED_ZSTD = 0x20

RANK_BLOCK = 4096                     # bitmap bytes per prefix-popcount entry


class _MmapBlob(MappedFile):
    def __init__(self, path: str):
        self._file, self._mm = map_file(path, "a kdump file")
        self.size = len(self._mm)

    def pread(self, offset: int, size: int) -> bytes:
        return self._mm[offset:offset + size]


@dataclass(frozen=True)
class PageDesc:
    offset: int
    size: int
    flags: int
    page_flags: int


def _popcount(data: bytes) -> int:
    return bin(int.from_bytes(data, "little")).count("1")


class KdumpFile:
    """An opened kdump-compressed dump (plain or flattened); `KdumpFile.open(path)`."""

    def __init__(self, path: str, blob):
        self.path = path
        self._blob = blob
        self._cache: "OrderedDict[int, bytes]" = OrderedDict()
        self.cache_pages = 256
        try:
            self._parse()
        except BaseException:
            blob.close()
            raise

    @classmethod
    def open(cls, path: "str | os.PathLike[str]") -> "KdumpFile":
        path = os.fspath(path)
        with open(path, "rb") as f:
            head = f.read(16)
        if is_flattened(head):
            blob = FlattenedView(path)
            flattened = True
        else:
            blob = _MmapBlob(path)
            flattened = False
        obj = cls(path, blob)
        obj.flattened = flattened
        return obj

    def close(self) -> None:
        self._blob.close()

    def __enter__(self) -> "KdumpFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- parsing -------------------------------------------------------------

    def _read(self, offset: int, size: int, what: str) -> bytes:
        if offset < 0 or size < 0 or offset + size > self._blob.size:
            raise FormatError(f"{self.path} is truncated: {what} at {offset:#x}+{size:#x} is past the end "
                              f"of the file ({self._blob.size:#x} bytes)")
        return self._blob.pread(offset, size)

    def _parse(self) -> None:
        p = self.path
        raw = self._read(0, MAIN_HEADER.size, "the main header")
        (sig, version, uts, tv_sec, tv_usec, status, block_size, sub_hdr_size, bitmap_blocks, max_mapnr,
         _total_ram, _device, _written, _cur_cpu, nr_cpus) = MAIN_HEADER.unpack(raw)
        if sig != SIGNATURE:
            raise FormatError(f"{p} is not a kdump-compressed file (bad signature)")
        if version < 1 or version > 64:
            raise FormatError(f"{p}: unsupported kdump header version {version}")
        if block_size < 512 or block_size > (1 << 20) or block_size & (block_size - 1):
            raise FormatError(f"{p}: invalid block size {block_size}")
        if sub_hdr_size < 0 or bitmap_blocks == 0 or bitmap_blocks % 2:
            raise FormatError(f"{p}: invalid sub-header size {sub_hdr_size} or bitmap block count {bitmap_blocks}")
        self.header_version = version
        self.block_size = self.page_size = block_size
        self.status = status
        self.incomplete = bool(status & DUMP_DH_COMPRESSED_INCOMPLETE)
        self.timestamp = (tv_sec, tv_usec)
        self.nr_cpus = nr_cpus
        self.utsname = {k: v.split(b"\0", 1)[0].decode("latin-1")
                        for k, v in zip(UTS_FIELDS, (uts[i * 65:(i + 1) * 65] for i in range(6)))}
        self.phys_base = 0
        self.dump_level = None
        self.vmcoreinfo_raw: Optional[bytes] = None
        self.notes: list[elf64.Note] = []
        if version >= 2 and sub_hdr_size > 0:
            sub = SUB_HEADER.unpack(self._read(block_size, SUB_HEADER.size, "the sub header"))
            (self.phys_base, self.dump_level, split, _start, _end, off_vmci, size_vmci, off_note, size_note,
             _off_erase, _size_erase, _start64, _end64, max_mapnr64) = sub
            if split:
                raise FormatError(f"{p} is one part of a split dump; reassemble the parts first "
                                  f"(makedumpfile --reassemble)")
            if version >= 6:
                max_mapnr = max_mapnr64
            if version >= 3 and size_vmci:
                self.vmcoreinfo_raw = self._read(off_vmci, size_vmci, "the VMCOREINFO")
            if version >= 4 and size_note:
                self.notes = elf64.parse_notes(self._read(off_note, size_note, "the ELF notes"), 4, off_note,
                                               f"{p}: ELF notes")
        self.max_mapnr = max_mapnr
        half = bitmap_blocks // 2 * block_size
        if max_mapnr > half * 8:
            raise FormatError(f"{p}: {max_mapnr} PFNs do not fit the {half}-byte bitmaps")
        bm_off = block_size * (1 + sub_hdr_size)
        self._bitmap1_off = bm_off
        self._bitmap2_off = bm_off + half
        self._bitmap_bytes = (max_mapnr + 7) // 8
        self._read(bm_off, 2 * half, "the bitmaps")           # bounds check once
        self._desc_off = bm_off + bitmap_blocks * block_size
        # Prefix popcounts of the 2nd bitmap: rank(pfn) = dumped PFNs below pfn.
        self._rank = [0]
        for i in range(0, self._bitmap_bytes, RANK_BLOCK):
            n = min(RANK_BLOCK, self._bitmap_bytes - i)
            self._rank.append(self._rank[-1] + _popcount(self._blob.pread(self._bitmap2_off + i, n)))
        self.dumped_pages = self._rank[-1]
        self._read(self._desc_off, self.dumped_pages * PAGE_DESC.size, "the page descriptors")

    # -- bitmaps ---------------------------------------------------------------

    def _bit(self, base: int, pfn: int) -> bool:
        if pfn < 0 or pfn >= self.max_mapnr:
            return False
        return bool(self._blob.pread(base + (pfn >> 3), 1)[0] >> (pfn & 7) & 1)

    def is_ram(self, pfn: int) -> bool:
        """1st bitmap: the PFN was memory on the crashed system (not a hole)."""
        return self._bit(self._bitmap1_off, pfn)

    def is_dumped(self, pfn: int) -> bool:
        """2nd bitmap: the page's contents are in the file."""
        return self._bit(self._bitmap2_off, pfn)

    def _bitmap_runs(self, base: int) -> list[tuple[int, int]]:
        runs: list[tuple[int, int]] = []
        chunk = 1 << 16
        for off in range(0, self._bitmap_bytes, chunk):
            data = self._blob.pread(base + off, min(chunk, self._bitmap_bytes - off))
            value = int.from_bytes(data, "little")
            bitpos = 0
            first = off * 8
            while value:
                # Skip zeros, then take the run of ones.
                tz = (value & -value).bit_length() - 1
                value >>= tz
                bitpos += tz
                ones = (~value & (value + 1)).bit_length() - 1
                start = first + bitpos
                end = min(start + ones, self.max_mapnr)
                if runs and runs[-1][1] == start:
                    runs[-1] = (runs[-1][0], end)
                elif start < end:
                    runs.append((start, end))
                value >>= ones
                bitpos += ones
        return runs

    def ram_pfn_runs(self) -> list[tuple[int, int]]:
        """[start_pfn, end_pfn) runs set in the 1st bitmap."""
        return self._bitmap_runs(self._bitmap1_off)

    def dumped_pfn_runs(self) -> list[tuple[int, int]]:
        """[start_pfn, end_pfn) runs set in the 2nd bitmap."""
        return self._bitmap_runs(self._bitmap2_off)

    def _rank_of(self, pfn: int) -> int:
        byte = pfn >> 3
        block = byte // RANK_BLOCK
        r = self._rank[block]
        start = block * RANK_BLOCK
        if byte > start:
            r += _popcount(self._blob.pread(self._bitmap2_off + start, byte - start))
        last = self._blob.pread(self._bitmap2_off + byte, 1)[0] & ((1 << (pfn & 7)) - 1)
        return r + bin(last).count("1")

    def page_desc(self, pfn: int) -> PageDesc:
        idx = self._rank_of(pfn)
        off = self._desc_off + idx * PAGE_DESC.size
        return PageDesc(*PAGE_DESC.unpack(self._blob.pread(off, PAGE_DESC.size)))

    # -- pages -----------------------------------------------------------------

    def read_page(self, pfn: int) -> bytes:
        """The contents of a dumped page (caller checks `is_dumped` first)."""
        cached = self._cache.get(pfn)
        if cached is not None:
            self._cache.move_to_end(pfn)
            return cached
        if not self.is_dumped(pfn):
            raise FormatError(f"{self.path}: page {pfn:#x} is not in the dump")
        d = self.page_desc(pfn)
        data = self._read(d.offset, d.size, f"data of page {pfn:#x}")
        page = self._decompress(pfn, d, data)
        self._cache[pfn] = page
        if len(self._cache) > self.cache_pages:
            self._cache.popitem(last=False)
        return page

    def _decompress(self, pfn: int, d: PageDesc, data: bytes) -> bytes:
        bs = self.block_size
        try:
            if d.flags & DUMP_DH_COMPRESSED_ZLIB:
                page = zlib.decompress(data)
            elif d.flags & DUMP_DH_COMPRESSED_LZO:
                page = _need("lzo", "python-lzo", "LZO").decompress(data, False, bs)
            elif d.flags & DUMP_DH_COMPRESSED_SNAPPY:
                page = _need("snappy", "python-snappy", "snappy").uncompress(data)
            elif d.flags & DUMP_DH_COMPRESSED_ZSTD:
                page = _need("zstandard", "zstandard", "zstd").ZstdDecompressor().decompress(data, max_output_size=bs)
            elif d.size == bs:
                page = data
            else:
                raise FormatError(f"{self.path}: page {pfn:#x} has {d.size} uncompressed bytes, expected {bs}")
        except FormatError:
            raise
        except Exception as exc:       # decompressor libraries raise their own types
            raise FormatError(f"{self.path}: page {pfn:#x} does not decompress ({exc})") from None
        if len(page) != bs:
            raise FormatError(f"{self.path}: page {pfn:#x} decompresses to {len(page)} bytes, expected {bs}")
        return bytes(page)

    def vmcoreinfo(self) -> Optional[dict[str, str]]:
        if self.vmcoreinfo_raw is None:
            return None
        out = {}
        for line in self.vmcoreinfo_raw.decode("latin-1").splitlines():
            k, sep, v = line.partition("=")
            if sep:
                out[k] = v
        return out


def _need(module: str, package: str, what: str):
    try:
        return __import__(module)
    except ImportError:
        raise FormatError(f"this dump uses {what} compression; install the Python package "
                          f"'{package}' to read it") from None
