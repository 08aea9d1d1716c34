"""VmcoreSource: a QEMU dump-guest-memory checked against the guest's memory-backend
file, and a gdb core with physical addresses and a filtered segment patched in at the
places readelf reports."""

from __future__ import annotations

import json
import random
import re
import shutil
import socket
import struct
import subprocess
import time

import pytest

from mcktools.errors import ExcludedAddress, UnreadableAddress
from mcktools.memory.sources import detect_format, open_source
from mcktools.memory.sources.elfcore import VmcoreSource

from .test_formats_elfcore import gcore, readelf_segments, run  # noqa: F401  (fixture)


def _phoff(path) -> int:
    return int(re.search(r"Start of program headers:\s+(\d+)", run("readelf", "-h", str(path))).group(1))


def test_gdb_core_with_physical_addresses_and_filtering(gcore, tmp_path):  # noqa: F811
    core, sym = gcore
    data = bytearray(core.read_bytes())
    phoff = _phoff(core)
    segs = readelf_segments(core)           # in program-header order
    target = None
    for i, (kind, off, vaddr, paddr, filesz, memsz) in enumerate(segs):
        if kind != "LOAD":
            continue
        # p_paddr (header offset 24) := p_vaddr, so PA == VA for this test.
        struct.pack_into("<Q", data, phoff + 56 * i + 24, vaddr)
        if vaddr <= sym + 0x8000 < vaddr + filesz:
            target = (i, vaddr, filesz)
    assert target is not None
    i, vaddr, filesz = target
    # Filter the segment holding pattern+0x8000: keep only what lies before that address
    # (pattern may start in the previous segment: the read below then spans two segments).
    keep = sym + 0x8000 - vaddr
    struct.pack_into("<Q", data, phoff + 56 * i + 32, keep)   # p_filesz
    patched = tmp_path / "patched.core"
    patched.write_bytes(bytes(data))
    row = readelf_segments(patched)[i]
    assert (row[3], row[4], row[5]) == (vaddr, keep, filesz)   # readelf sees PA=VA, FileSiz < MemSiz

    expected = bytes((k * 7 + 3) & 0xFF for k in range(65536))
    assert detect_format(patched) == "elfcore"
    with open_source(patched) as src:
        assert isinstance(src, VmcoreSource)
        assert src.read(sym, 0x8000) == expected[:0x8000]
        with pytest.raises(ExcludedAddress, match="excluded") as ei:
            src.read(sym + 0x7ff0, 0x20)
        assert ei.value.address == sym + 0x8000
        assert any(r.start == sym + 0x8000 for r in src.excluded_ranges())
        with pytest.raises(UnreadableAddress, match="not in the core") as ei:
            src.read(0x10, 4)
        assert not isinstance(ei.value, ExcludedAddress)


class _Qmp:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.f = self.sock.makefile("rwb")
        json.loads(self.f.readline())
        self.cmd("qmp_capabilities")

    def cmd(self, name, **args):
        self.f.write(json.dumps({"execute": name, "arguments": args}).encode() + b"\n")
        self.f.flush()
        while True:
            r = json.loads(self.f.readline())
            if "return" in r:
                return r["return"]
            if "error" in r:
                raise RuntimeError(r["error"])


@pytest.mark.qemu
@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="needs QEMU")
def test_qemu_dump_guest_memory_matches_backend_file(tmp_path):
    size = 32 << 20
    mem = tmp_path / "guest.ram"
    mem.write_bytes(random.Random(4).randbytes(size))   # non-trivial contents the BIOS leaves alone
    sock = tmp_path / "qmp.sock"
    dump = tmp_path / "guest.core"
    qemu = subprocess.Popen(
        ["qemu-system-x86_64", "-accel", "tcg", "-display", "none", "-serial", "none", "-monitor", "none",
         "-net", "none", "-m", "32M", "-object",
         f"memory-backend-file,id=mem,size=32M,mem-path={mem},share=on", "-machine", "memory-backend=mem",
         "-qmp", f"unix:{sock},server=on,wait=off"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            if sock.exists():
                break
            time.sleep(0.05)
        q = _Qmp(str(sock))
        time.sleep(0.5)                      # let the firmware touch low memory
        q.cmd("stop")
        q.cmd("dump-guest-memory", paging=False, protocol=f"file:{dump}")
        ram = mem.read_bytes()               # guest stopped: file == guest RAM now
        q.cmd("quit")
    finally:
        try:
            qemu.wait(timeout=10)
        except subprocess.TimeoutExpired:
            qemu.kill()
            qemu.wait()
    loads = [s for s in readelf_segments(dump) if s[0] == "LOAD"]
    with open_source(dump) as src:
        checked = 0
        for _, off, vaddr, paddr, filesz, memsz in loads:
            if paddr + filesz <= size:       # guest RAM below 4 GiB: file offset == PA
                assert src.read(paddr, filesz) == ram[paddr:paddr + filesz]
                checked += filesz
        assert checked > size // 2
        # Reads spanning the PC hole at 0xa0000 fail at its first byte.
        with pytest.raises(UnreadableAddress) as ei:
            src.read(0x9fff0, 0x20)
        assert ei.value.address == 0xA0000
        assert [(r.start, r.end) for r in src.ranges()][:2] == [(loads[0][3], loads[0][3] + loads[0][4]),
                                                                 (loads[1][3], loads[1][3] + loads[1][4])]
