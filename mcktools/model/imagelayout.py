"""The few ELF-level facts of the kernel image the model needs to anchor it in memory.

Where the image's loaded segments go (to size the image map), and where the
GNU build-id note sits at run time (its bytes in memory prove that the image
belongs to the dump).  Uses debuginfo's small ELF reader (no pyelftools: the
warm mcps path must stay fast).
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from typing import Optional

from ..debuginfo.elffile import SHT_NOTE, ElfFile

NT_GNU_BUILD_ID = 3
SHF_ALLOC = 0x2


@dataclass(frozen=True)
class LoadSegment:
    vaddr: int
    memsz: int
    offset: int
    filesz: int


@dataclass
class ImageLayout:
    path: str
    segments: list
    #: VA of the whole build-id note (header + name + descriptor) and its bytes
    note_vaddr: Optional[int]
    note_bytes: Optional[bytes]
    build_id: Optional[bytes]

    @classmethod
    def from_path(cls, path: str) -> "ImageLayout":
        with open(path, "rb") as f:
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            elf = ElfFile(data, what=str(path))
            segs = [LoadSegment(s.vaddr, s.memsz, s.offset, s.filesz) for s in elf.segments]
            note_vaddr = note_bytes = build_id = None
            for sec in elf.sections:
                if sec.type != SHT_NOTE:
                    continue
                off, end = sec.offset, sec.offset + sec.size
                while off + 12 <= end:
                    namesz, descsz, ntype = struct.unpack_from("<III", data, off)
                    desc_off = off + 12 + ((namesz + 3) & ~3)
                    nxt = desc_off + ((descsz + 3) & ~3)
                    if nxt > end:
                        break
                    if ntype == NT_GNU_BUILD_ID and data[off + 12:off + 12 + namesz].rstrip(b"\0") == b"GNU":
                        note_bytes = bytes(data[off:desc_off + descsz])
                        build_id = bytes(data[desc_off:desc_off + descsz])
                        if sec.addr and sec.flags & SHF_ALLOC:
                            note_vaddr = sec.addr + off - sec.offset
                        break
                    off = nxt
                if note_bytes is not None:
                    break
        finally:
            data.close()
        return cls(str(path), segs, note_vaddr, note_bytes, build_id)

    @property
    def end_vaddr(self) -> int:
        return max((s.vaddr + s.memsz for s in self.segments), default=0)

    @property
    def start_vaddr(self) -> int:
        return min((s.vaddr for s in self.segments if s.memsz), default=0)

    def read_file(self, vaddr: int, size: int) -> Optional[bytes]:
        """File-backed bytes at `vaddr` (initialised data), or None."""
        for s in self.segments:
            if s.vaddr <= vaddr and vaddr + size <= s.vaddr + s.filesz:
                with open(self.path, "rb") as f:
                    f.seek(s.offset + vaddr - s.vaddr)
                    return f.read(size)
        return None
