"""The committed fixture set checks out without QEMU: dumps agree with the frozen
manifest, with each other, with QEMU's vmcore, and with page tables walked here."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.test_qemu_kernel import PAGE, pages_of, physmem_sections, section_table, user_leaves, va_to_pa, walk

SCENARIOS = ["multi", "panic"]


class DumpFile:
    """Physical reads from an mcdump through readelf's section table (not our reader)."""

    def __init__(self, path):
        self.data = path.read_bytes()
        self.secs = physmem_sections(section_table(path, "readelf"))

    def pages(self) -> set[int]:
        return pages_of([(a, s) for a, _, s in self.secs])

    def read(self, pa: int, n: int) -> bytes:
        for addr, off, size in self.secs:
            if addr <= pa and pa + n <= addr + size:
                return self.data[off + pa - addr:off + pa - addr + n]
        raise AssertionError(f"{pa:#x}+{n} not in dump")


@pytest.fixture(scope="module", params=SCENARIOS)
def fx(request, fixture_dir):
    d = fixture_dir(request.param)
    man = json.loads((d / "manifest.json").read_text())
    return request.param, d, man, DumpFile(d / "level0.mcdump"), DumpFile(d / "level24.mcdump")


def test_manifest_is_the_frozen_one(fx):
    scenario, d, man, _, _ = fx
    assert man["scenario"] == scenario and man["phase"] == "frozen" and man["dump_level"] == 24
    assert man["ncpus"] == {"multi": 4, "panic": 2}[scenario]
    if scenario == "panic":
        assert man["panic"] and man["panic"]["function"] == "sys_test_panic"


def test_level0_is_every_chunk_and_level24_a_subset(fx):
    _, d, man, l0, l24 = fx
    assert [(a, s) for a, _, s in l0.secs] == [(c["addr"], c["size"]) for c in man["chunks"]]
    assert l24.pages() < l0.pages()
    for addr, _, size in l24.secs:  # same instant: identical bytes where both have the page
        assert l24.read(addr, size) == l0.read(addr, size)
    for path in (d / "level0.mcdump", d / "level24.mcdump"):
        raw = path.read_bytes()
        _, off, _ = section_table(path, "readelf")["date"]
        assert raw[off:off + 24] == b"Mon Jan  1 00:00:00 2024"


def test_level24_excludes_user_pages_and_keeps_structures(fx):
    _, _, man, l0, l24 = fx
    kept = l24.pages()
    user = set()
    for p in man["processes"]:
        for _, pa, size, entry in user_leaves(l0.read, p["page_table_pa"]):
            if entry & 4:
                user |= set(range(pa, pa + size, PAGE)) & l0.pages()
    assert user and not (user & kept)
    for s in man["structures"]:
        pa = va_to_pa(man, s["addr"])
        assert set(range(pa & ~(PAGE - 1), pa + max(s["size"], 1), PAGE)) <= kept, s["kind"]


def test_translations_walk_in_level0(fx):
    _, _, man, l0, _ = fx
    procs = {str(p["pid"]): p for p in man["processes"]}
    n = 0
    for pid, rows in man["translations"].items():
        for row in rows:
            got = walk(l0.read, procs[pid]["page_table_pa"], row["va"])
            assert got and got[:2] == (row["pa"], row["size"])
            n += 1
    assert n


def test_vmcore_holds_the_same_memory(fixture_dir):
    d = fixture_dir("multi")
    l0 = DumpFile(d / "level0.mcdump")
    out = subprocess.run(["readelf", "-l", "-W", str(d / "vmcore.elf")], capture_output=True, text=True,
                         check=True).stdout
    loads = [tuple(int(x, 16) for x in m.groups())
             for m in re.finditer(r"LOAD\s+0x([0-9a-f]+)\s+0x[0-9a-f]+\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)", out)]
    raw = (d / "vmcore.elf").read_bytes()
    for addr, _, size in l0.secs:
        seg = next((o, p, s) for o, p, s in loads if p <= addr and addr + size <= p + s)
        off = seg[0] + addr - seg[1]
        assert raw[off:off + size] == l0.read(addr, size)
    notes = subprocess.run(["readelf", "-n", str(d / "vmcore.elf")], capture_output=True, text=True,
                           check=True).stdout
    assert notes.count("NT_PRSTATUS") == 4
