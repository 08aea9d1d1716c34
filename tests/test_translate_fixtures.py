"""The translate layer alone on the reference kernel's dumps: page-table walks from
the manifest's page_table_pa, and the kernel map, against the manifest's numbers."""

from __future__ import annotations

import json
import struct

import pytest

from mcktools.errors import UnreadableAddress
from mcktools.memory.translate import PHYS_MASK, KernelMap, VirtualMemory, walk_x86_64


@pytest.fixture(scope="module", params=["level0.mcdump", "level24.mcdump"])
def dump(request, fixture_dir):
    from tests.test_model_fixtures import _fixture
    folder = _fixture(fixture_dir, "multi")
    from mcktools.memory.sources import open_source
    src = open_source(str(folder / request.param))
    yield src, json.loads((folder / "manifest.json").read_text())
    src.close()


def test_user_walks(dump):
    src, m = dump
    roots = {str(p["pid"]): p["page_table_pa"] for p in m["processes"]}
    for pid, rows in m["translations"].items():
        for w in rows:
            t = walk_x86_64(src.read, roots[pid], w["va"])
            assert (t.pa, t.page_size, t.flags & ~PHYS_MASK) == (w["pa"], w["size"], w["flags"])


def test_kernel_map(dump):
    src, m = dump
    syms = m["symbols"]
    map_kernel_start = syms["_head"] - 0x1000
    km = KernelMap(src.read, m["kernel_base"], map_kernel_start=map_kernel_start,
                   image_end=map_kernel_start + (8 << 20))
    kmem = VirtualMemory(src.read, km)
    # image map: variables hold what the manifest printed
    assert kmem.read_u64(syms["linux_page_offset_base"]) == m["linux_page_offset_base"]
    assert kmem.read_u64(syms["x86_kernel_phys_base"]) == m["kernel_base"]
    km.linux_page_offset_base = m["linux_page_offset_base"]
    km.rebuild()
    # direct map: clv pointer -> clv[i] as the manifest lists them
    assert kmem.read_u64(syms["clv"]) == m["cpus"][0]["clv"]
    for s in m["structures"]:
        if s["addr"] >= m["linux_page_offset_base"]:
            assert km.translate(s["addr"]).pa == s["pa"]
    # fixed map: kmsg_buf is only explained by init_pt; its PA is Linux memory
    init_pt_va = kmem.read_u64(syms["init_pt"])
    km.init_pt_pa = km.translate(init_pt_va).pa
    kmsg_va = kmem.read_u64(syms["kmsg_buf"])
    t = km.translate(kmsg_va)
    assert km.region_name(kmsg_va) == "fixed"
    assert t.pa != kmsg_va - 0xFFFF860000000000       # the linear rule (eclair, crash) is wrong here
    assert not any(c["addr"] <= t.pa < c["addr"] + c["size"] for c in m["chunks"])
    with pytest.raises(UnreadableAddress):
        kmem.read(kmsg_va, 16)          # Linux memory: not in an mcdump
