"""Boot the reference kernel under QEMU and check it, and the harness's dumps,
against oracles the harness did not compute: the kernel's own manifest, a
page-table walk written here over the raw memory file, readelf/objdump listings
and the memory file itself.  Boots are shared between checks (module scope)."""

from __future__ import annotations

import json
import re
import struct
import subprocess
import time
from pathlib import Path

import pytest

from mcktools.qemu.dump import FIXTURE_IDENTITY, write_frozen_dump, write_vmcore
from mcktools.qemu.freeze import Freezer
from mcktools.qemu.imageinfo import image_info
from mcktools.qemu.machine import Machine, MachineConfig

pytestmark = pytest.mark.qemu

PAGE = 4096
PHYSMASK = ((1 << 52) - 1) & ~0xFFF
MAP_KERNEL_START = 0xFFFFFFFFFE800000
MAP_ST_START = 0xFFFF800000000000
MAP_FIXED_START = 0xFFFF860000000000


# ------------------------------------------------------------------ helpers
def check_manifest_consistent(man: dict, ncpus: int, scenario: str) -> None:
    """The manifest agrees with itself: threads, run queues, processes, CPUs."""
    assert man["scenario"] == scenario
    assert man["ncpus"] == ncpus
    assert sorted(c["id"] for c in man["cpus"]) == list(range(ncpus))
    threads = {t["addr"]: t for t in man["threads"]}
    assert len(threads) == len(man["threads"]), "two threads share an address"
    assert len({t["tid"] for t in man["threads"]}) == len(man["threads"]), "duplicate tids"
    on_runq: dict[int, list[int]] = {}
    for cpu in man["cpus"]:
        assert cpu["idle"] in threads and threads[cpu["idle"]]["idle"]
        assert cpu["current"] in threads, f"cpu {cpu['id']} current {cpu['current']:#x} is not a known thread"
        for addr in cpu["runq"]:
            assert addr in threads, f"cpu {cpu['id']} runq holds unknown thread {addr:#x}"
            on_runq.setdefault(addr, []).append(cpu["id"])
    currents = {c["current"]: c["id"] for c in man["cpus"]}
    for addr, t in threads.items():
        if t["idle"]:
            continue
        queues = on_runq.get(addr, [])
        assert len(queues) <= 1, f"thread {t['tid']} is on run queues of cpus {queues}"
        assert queues or addr in currents, f"thread {t['tid']} is neither current nor on a run queue"
        where = queues[0] if queues else currents[addr]
        assert t["cpu"] == where, f"thread {t['tid']} says cpu {t['cpu']} but is queued on {where}"
        if addr in currents:
            assert currents[addr] == t["cpu"]
    procs = {p["pid"]: p for p in man["processes"]}
    assert len(procs) == len(man["processes"])
    for t in man["threads"]:
        if not t["idle"]:
            assert t["pid"] in procs, f"thread {t['tid']} of unknown pid {t['pid']}"
            assert t["tid"] in procs[t["pid"]]["threads"]
    for p in man["processes"]:
        for tid in p["threads"]:
            assert any(t["tid"] == tid and t["pid"] == p["pid"] for t in man["threads"])
        assert p["page_table_pa"] % PAGE == 0


def walk(read_phys, root_pa: int, va: int):
    """Independent x86_64 4-level walk: (pa, page_size, leaf entry) or None."""
    table = root_pa
    for level, shift in enumerate((39, 30, 21, 12)):
        idx = (va >> shift) & 0x1FF
        entry = struct.unpack("<Q", read_phys(table + 8 * idx, 8))[0]
        if not entry & 1:
            return None
        if shift == 12 or (shift in (30, 21) and entry & 0x80):
            size = 1 << shift
            return (entry & PHYSMASK & ~(size - 1)) | (va & (size - 1)), size, entry
        table = entry & PHYSMASK
    return None


def user_leaves(read_phys, root_pa: int):
    """Every present user-half leaf of a page table: (va, pa, size, entry)."""
    out = []

    def rec(table, shift, base):
        raw = read_phys(table, PAGE)
        for idx in range(256 if shift == 39 else 512):
            entry = struct.unpack_from("<Q", raw, 8 * idx)[0]
            if not entry & 1:
                continue
            va = base | (idx << shift)
            if shift == 12 or (shift in (30, 21) and entry & 0x80):
                size = 1 << shift
                out.append((va, entry & PHYSMASK & ~(size - 1), size, entry))
            else:
                rec(entry & PHYSMASK, shift - 9, va)

    rec(root_pa, 39, 0)
    return out


def va_to_pa(man: dict, va: int) -> int:
    """Linear kernel maps of the reference kernel (ABI ref. §4); structures are never in the fixed map."""
    if va >= MAP_KERNEL_START:
        return va - MAP_KERNEL_START + man["kernel_base"]
    if va >= man["linux_page_offset_base"]:
        return va - man["linux_page_offset_base"]
    if va >= MAP_FIXED_START:
        raise AssertionError(f"structure at fixed-map address {va:#x}")
    if va >= MAP_ST_START:
        return va - MAP_ST_START
    return va  # already physical


def section_table(path: Path, tool: str) -> dict[str, tuple[int, int, int]]:
    """name -> (address, file offset, size) from readelf -S or objdump -h."""
    rows = {}
    if tool == "readelf":
        out = subprocess.run(["readelf", "-S", "-W", str(path)], capture_output=True, text=True, check=True).stdout
        for m in re.finditer(r"\]\s+(\S+)\s+\S+\s+([0-9a-f]+)\s+([0-9a-f]+)\s+([0-9a-f]+)", out):
            rows[m.group(1)] = (int(m.group(2), 16), int(m.group(3), 16), int(m.group(4), 16))
    else:
        out = subprocess.run(["objdump", "-h", str(path)], capture_output=True, text=True, check=True).stdout
        for m in re.finditer(r"^\s*\d+\s+(\S+)\s+([0-9a-f]+)\s+([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)", out, re.M):
            rows[m.group(1)] = (int(m.group(3), 16), int(m.group(4), 16), int(m.group(2), 16))
    return rows


def physmem_sections(rows) -> list[tuple[int, int, int]]:
    idx = sorted(int(n[7:]) for n in rows if re.fullmatch(r"physmem\d+", n))
    assert idx == list(range(len(idx))), f"physmem sections not numbered 0..N-1: {idx}"
    return [rows[f"physmem{i}"] for i in idx]


def pages_of(chunks) -> set[int]:
    return {pa for addr, size in chunks for pa in range(addr, addr + size, PAGE)}


def array_dims(image: Path, name: str) -> list[int]:
    """Dimensions of a global array variable, from the image's DWARF (pyelftools)."""
    from elftools.elf.elffile import ELFFile

    with open(image, "rb") as f:
        dwarf = ELFFile(f).get_dwarf_info()
        for cu in dwarf.iter_CUs():
            for die in cu.get_top_DIE().iter_children():
                if die.tag != "DW_TAG_variable" or die.attributes.get("DW_AT_name") is None:
                    continue
                if die.attributes["DW_AT_name"].value.decode() != name:
                    continue
                t = die.get_DIE_from_attribute("DW_AT_type")
                while t.tag in ("DW_TAG_typedef", "DW_TAG_volatile_type", "DW_TAG_const_type"):
                    t = t.get_DIE_from_attribute("DW_AT_type")
                if t.tag != "DW_TAG_array_type":
                    continue
                dims = []
                for sub in t.iter_children():
                    if "DW_AT_count" in sub.attributes:
                        dims.append(sub.attributes["DW_AT_count"].value)
                    elif "DW_AT_upper_bound" in sub.attributes:
                        dims.append(sub.attributes["DW_AT_upper_bound"].value + 1)
                return dims
    raise AssertionError(f"no array variable {name} in the DWARF of {image}")


def free_pages(image: Path, man: dict, read) -> set[int]:
    """Free pages per the reference kernel's allocator: `chunk_used[chunk][word]`,
    one bit per page of `mem_chunks[chunk]`, 1 = allocated (kernel/mm.c)."""
    info = image_info(str(image))
    _, words = array_dims(image, "chunk_used")
    base = info.image_pa(info.symbol("chunk_used"), man["kernel_base"])
    free = set()
    for c, chunk in enumerate(man["chunks"]):
        row = read(base + c * words * 8, words * 8)
        for i in range(chunk["size"] // PAGE):
            if not row[i // 8] >> (i % 8) & 1:
                free.add(chunk["addr"] + i * PAGE)
    return free


def hash_members(image: Path, man: dict, read, table_kind: str, entry_struct: str) -> set[int]:
    """Addresses of the objects linked in a 73-bucket hash table (`process_hash` /
    `thread_hash`), walked here through memory with DWARF offsets of `list` and of the
    entry's `hash_list` (list_head: next at 0, prev at 8)."""
    from mcktools.qemu.imageinfo import ImageInfo

    info = ImageInfo(str(image), structs=(table_kind, entry_struct))
    (row,) = [s for s in man["structures"] if s["kind"] == table_kind]
    list_off = info.struct(table_kind)["list"]
    link_off = info.struct(entry_struct)["hash_list"]
    found = set()
    for bucket in range(73):
        head = row["addr"] + list_off + 16 * bucket
        node = struct.unpack("<Q", read(va_to_pa(man, head), 8))[0]
        hops = 0
        while node != head:
            found.add(node - link_off)
            node = struct.unpack("<Q", read(va_to_pa(man, node), 8))[0]
            hops += 1
            assert hops < 10000, f"{table_kind} bucket {bucket} does not close"
    return found


# ----------------------------------------------------------------- fixtures
def _boot(image, scenario, ncpus) -> Machine:
    m = Machine(MachineConfig(image=str(image), scenario=scenario, ncpus=ncpus)).start()
    try:
        m.wait_ready(timeout=60)
        if scenario == "panic":
            m.wait_line("MCKTOOLS-PANIC", timeout=60)
    except BaseException:
        m.close()
        raise
    return m


@pytest.fixture(scope="module")
def multi4(qemu_available, kernel_image):
    with _boot(kernel_image, "multi", 4) as m:
        yield m


@pytest.fixture(scope="module")
def frozen0(multi4, kernel_image, tmp_path_factory):
    """One level-0 freeze of multi/4: its dump, the memory it was taken from, counters."""
    fz = Freezer(multi4, image_info(str(kernel_image)))
    fr = fz.freeze(0)
    d = tmp_path_factory.mktemp("frozen0")
    write_frozen_dump(d / "level0.mcdump", multi4, fr, identity=FIXTURE_IDENTITY)
    write_vmcore(d / "vmcore.elf", multi4)
    snapshot = bytes(multi4.mem)  # guest RAM at freeze time (the VM is stopped)
    counters = [(c, multi4.u64(c["pa"])) for c in fr.manifest["counters"]]
    bitmap_after = fz.read_bitmap()
    fz.release()
    return dict(frozen=fr, dir=d, mem=snapshot, counters=counters, freezer=fz, bitmap_after=bitmap_after)


@pytest.fixture(scope="module")
def frozen24(frozen0, multi4, kernel_image, tmp_path_factory):
    fz = frozen0["freezer"]
    time.sleep(0.2)
    fr = fz.freeze(24)
    d = tmp_path_factory.mktemp("frozen24")
    write_frozen_dump(d / "level24.mcdump", multi4, fr, identity=FIXTURE_IDENTITY)
    snapshot = bytes(multi4.mem)
    blocks = fr.blocks
    fz.release()
    return dict(frozen=fr, dir=d, mem=snapshot, blocks=blocks, image=kernel_image)


# ------------------------------------------------------------------- checks
@pytest.mark.parametrize("scenario", ["multi", "panic", "live"])
@pytest.mark.parametrize("ncpus", [2, 4])
def test_scenario_boots_and_manifest_is_consistent(request, qemu_available, kernel_image, scenario, ncpus):
    if (scenario, ncpus) == ("multi", 4):
        m = request.getfixturevalue("multi4")
        check_manifest_consistent(m.setup_manifest, ncpus, scenario)
        return
    with _boot(kernel_image, scenario, ncpus) as m:
        man = m.setup_manifest
        check_manifest_consistent(man, ncpus, scenario)
        assert man["phase"] == "setup"
        assert man["kernel_base"] == m.kernel_base
        assert [(c["addr"], c["size"]) for c in man["chunks"]] == m.chunks
        if scenario == "panic":
            assert any("MCKTOOLS-PANIC" in line for line in m.serial.lines)


def test_frozen_manifest_is_consistent(frozen0):
    man = frozen0["frozen"].manifest
    assert man["phase"] == "frozen" and man["dump_level"] == 0
    check_manifest_consistent(man, 4, "multi")


def test_run_queues_and_hash_tables_agree(frozen0, kernel_image):
    man = frozen0["frozen"].manifest
    read = lambda pa, n: frozen0["mem"][pa:pa + n]
    threads = hash_members(kernel_image, man, read, "thread_hash", "thread")
    on_cpus = {a for c in man["cpus"] for a in c["runq"]} | {c["current"] for c in man["cpus"]}
    on_cpus -= {c["idle"] for c in man["cpus"]}
    assert threads == on_cpus
    assert threads == {t["addr"] for t in man["threads"] if not t["idle"]}
    procs = hash_members(kernel_image, man, read, "process_hash", "process")
    assert procs == {p["addr"] for p in man["processes"]}


def test_translations_agree_with_page_table_walk(frozen0):
    man = frozen0["frozen"].manifest
    mem = frozen0["mem"]
    read = lambda pa, n: mem[pa:pa + n]
    procs = {p["pid"]: p for p in man["processes"]}
    seen_2m = False
    total = 0
    for pid, rows in man["translations"].items():
        root = procs[int(pid)]["page_table_pa"]
        for row in rows:
            got = walk(read, root, row["va"])
            assert got is not None, f"pid {pid} va {row['va']:#x} not mapped by the page table"
            pa, size, entry = got
            assert (pa, size) == (row["pa"], row["size"]), f"pid {pid} va {row['va']:#x}"
            assert row["flags"] & 1 and (entry & row["flags"]) == row["flags"]
            seen_2m |= size == 2 << 20
            total += 1
    assert total > 0 and seen_2m, "the manifest should sample at least one 2 MiB user mapping"


def test_level0_dump_sections_and_bytes(frozen0):
    fr = frozen0["frozen"]
    path = frozen0["dir"] / "level0.mcdump"
    data = path.read_bytes()
    chunks = [(c["addr"], c["size"]) for c in fr.manifest["chunks"]]
    for tool in ("readelf", "objdump"):
        rows = section_table(path, tool)
        for name in ("date", "hostname", "user", "physchunks"):
            assert name in rows
        secs = physmem_sections(rows)
        # Level 0: every reserved chunk whole, in order, at its PA.
        assert [(a, s) for a, _, s in secs] == chunks
        for addr, off, size in secs:
            assert data[off:off + size] == frozen0["mem"][addr:addr + size]
    # physchunks payload, decoded here from the ABI reference §1.4 layout.
    _, off, size = section_table(path, "readelf")["physchunks"]
    n, kbase, phys_start = struct.unpack_from("<i4xQQ", data, off)
    assert (n, kbase, phys_start) == (len(chunks), fr.manifest["kernel_base"], 0)
    assert [struct.unpack_from("<QQ", data, off + 24 + 16 * i) for i in range(n)] == chunks
    assert size == 24 + 16 * n
    hdr = subprocess.run(["readelf", "-h", str(path)], capture_output=True, text=True, check=True).stdout
    assert re.search(r"Type:\s+REL", hdr) and re.search(r"Machine:\s+None", hdr)


def test_level0_freeze_leaves_bitmap_whole(frozen0):
    # At level 0 the kernel must not clear bits (ABI §2.4): the bitmap still covers every chunk.
    chunks = [(c["addr"], c["size"]) for c in frozen0["frozen"].manifest["chunks"]]
    got = set()
    for b in frozen0["bitmap_after"]:
        for j, w in enumerate(b.words):
            for k in range(64):
                if w >> k & 1:
                    got.add(b.start + (j * 64 + k) * PAGE)
    assert got == pages_of(chunks)


def test_vmcore_matches_memory(frozen0):
    path = frozen0["dir"] / "vmcore.elf"
    out = subprocess.run(["readelf", "-l", "-W", str(path)], capture_output=True, text=True, check=True).stdout
    loads = [tuple(int(x, 16) for x in m.groups())
             for m in re.finditer(r"LOAD\s+0x([0-9a-f]+)\s+0x[0-9a-f]+\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)", out)]
    assert loads
    covered = set()
    with open(path, "rb") as f:
        for off, paddr, filesz in loads:
            if paddr >= len(frozen0["mem"]):
                continue
            f.seek(off)
            n = min(filesz, len(frozen0["mem"]) - paddr)
            assert f.read(n) == frozen0["mem"][paddr:paddr + n]
            covered |= set(range(paddr // PAGE, (paddr + n) // PAGE))
    # QEMU leaves out only the legacy VGA/ROM hole of the PC memory map.
    missing = set(range(len(frozen0["mem"]) // PAGE)) - covered
    assert all(0xA0000 <= p * PAGE < 0x100000 for p in missing), sorted(missing)[:4]
    # Every McKernel chunk is in the vmcore.
    assert pages_of([(c["addr"], c["size"]) for c in frozen0["frozen"].manifest["chunks"]]) <= \
        {p * PAGE for p in covered}


def test_kernel_runs_again_after_dump(frozen0, multi4):
    counters = frozen0["counters"]
    assert counters, "the multi scenario should publish counters"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if any(multi4.u64(c["pa"]) > v for c, v in counters):
            break
        time.sleep(0.05)
    advanced = [c for c, v in counters if multi4.u64(c["pa"]) > v]
    assert advanced, "no counter advanced after the release"


def test_level24_dump_excludes_user_and_keeps_structures(frozen24):
    fr = frozen24["frozen"]
    man = fr.manifest
    assert man["phase"] == "frozen" and man["dump_level"] == 24
    mem = frozen24["mem"]
    read = lambda pa, n: mem[pa:pa + n]
    path = frozen24["dir"] / "level24.mcdump"
    data = path.read_bytes()
    rows = section_table(path, "readelf")
    od = section_table(path, "objdump")
    assert {k: v for k, v in rows.items() if k.startswith("physmem")} == \
        {k: v for k, v in od.items() if k.startswith("physmem")}
    secs = physmem_sections(rows)
    dumped = pages_of([(a, s) for a, _, s in secs])
    for addr, off, size in secs:
        assert data[off:off + size] == mem[addr:addr + size]
    chunk_pages = pages_of([(c["addr"], c["size"]) for c in man["chunks"]])
    assert dumped < chunk_pages
    # No page mapped by a user page table (walked here, over every process).
    user = set()
    for p in man["processes"]:
        for va, pa, size, entry in user_leaves(read, p["page_table_pa"]):
            if entry & 4:
                user |= {x for x in range(pa, pa + size, PAGE) if x in chunk_pages}
    assert user, "the scenario should map user pages"
    assert not (user & dumped), f"{len(user & dumped)} user-mapped pages are in the level-24 dump"
    # Every page the kernel says the dump needs is there.
    needed = set()
    for s in man["structures"]:
        pa = va_to_pa(man, s["addr"])
        if "pa" in s:  # the kernel's own PA must agree with the linear maps of ABI §4
            assert s["pa"] == pa, s
        needed |= set(range(pa & ~(PAGE - 1), pa + max(s["size"], 1), PAGE))
    missing = needed - dumped
    assert not missing, f"{len(missing)} structure pages missing, e.g. {sorted(missing)[:3]}"
    # No free page: the allocator's own page bitmap, read here from guest memory.
    free = free_pages(frozen24["image"], man, read)
    assert free, "the allocator should have free pages"
    assert not (free & dumped), f"{len(free & dumped)} free pages are in the level-24 dump"


def test_level24_chunks_follow_bitmap(frozen24):
    """Chunks (section addresses) are exactly the runs of set bits, never across blocks (§2.6)."""
    path = frozen24["dir"] / "level24.mcdump"
    secs = physmem_sections(section_table(path, "objdump"))
    block_of = {}
    want = set()
    for i, b in enumerate(frozen24["blocks"]):
        for j, w in enumerate(b.words):
            for k in range(64):
                pa = b.start + (j * 64 + k) * PAGE
                block_of[pa] = i
                if w >> k & 1:
                    want.add(pa)
    assert pages_of([(a, s) for a, _, s in secs]) == want
    for a, _, s in secs:
        assert block_of[a] == block_of[a + s - PAGE]
        # Maximal: the pages just outside the run are clear or in another block.
        for edge in (a - PAGE, a + s):
            assert edge not in want or block_of.get(edge) != block_of[a]


def test_regenerated_fixtures_match_committed(qemu_available, kernel_image, fixture_dir, tmp_path):
    from mcktools.qemu.fixtures import make_fixture_set

    for scenario in ("multi", "panic"):  # same build -> same image bytes (the build is reproducible)
        assert (fixture_dir(scenario) / "mckernel.img").read_bytes() == Path(kernel_image).read_bytes(), \
            f"committed {scenario} fixtures were made from another kernel build: run dumps/make_fixtures.py"
    new = make_fixture_set(tmp_path, ["multi", "panic"], image=kernel_image, build=False, do_compress=False,
                           log=lambda *a: None)
    for scenario, man in new.items():
        committed_dir = fixture_dir(scenario)
        old = json.loads((committed_dir / "manifest.json").read_text())
        for key in ("scenario", "ncpus", "kernel_base", "chunks", "symbols", "dump_level", "boot_param_pa"):
            assert man[key] == old[key], key
        # pids and tids come from one counter that CPUs race for: compare by program instead.
        shape = lambda m: sorted((p["argv"], p["state"] if p["state"] == "PS_ZOMBIE" else "",
                                  len(p["threads"])) for p in m["processes"])
        assert shape(man) == shape(old)
        prog = lambda m: {str(p["pid"]): p["argv"][0] for p in m["processes"]}
        ranges = lambda m: sorted((prog(m)[pid], [(r["start"], r["end"], r["flag"], r["path"]) for r in rs])
                                  for pid, rs in m["vm_ranges"].items())
        assert ranges(man) == ranges(old)
        comms = lambda m: sorted((t["comm"], t["idle"]) for t in m["threads"])
        assert comms(man) == comms(old)
        assert (man["panic"] is None) == (old["panic"] is None)
        if man["panic"]:
            assert man["panic"]["function"] == old["panic"]["function"]
        assert (tmp_path / scenario / "vmcore.elf").exists() == (scenario == "multi")


def test_live_release_spec_resumes_guest(qemu_available, kernel_image):
    """The freezer's release description works with mcktools.live's release registry
    (what its watchdog runs if the tool dies while the guest is frozen)."""
    release = pytest.importorskip("mcktools.live.release")
    cfg = MachineConfig(image=str(kernel_image), scenario="live", ncpus=2, keep_memfile=True, tool_qmp=True)
    with Machine(cfg) as m:
        man = m.wait_ready(timeout=60)
        fz = Freezer(m, image_info(str(kernel_image)))
        boot_bits = [b.words for b in fz.read_bitmap()]
        fr = fz.freeze(24)
        assert [b.words for b in fz.read_bitmap()] != boot_bits  # level 24 cleared bits
        before = [(c, m.u64(c["pa"])) for c in fr.manifest["counters"]]
        spec = fz.release_spec()
        assert spec is not None and spec["memfile"] == m.memfile_path
        json.dumps(spec)  # plain JSON for the watchdog
        release.release_now(spec)  # another code path than Freezer.release
        m.wait_line("MCKTOOLS-RESUMED", timeout=30)
        deadline = time.monotonic() + 10
        while not any(m.u64(c["pa"]) > v for c, v in before) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any(m.u64(c["pa"]) > v for c, v in before), "guest did not run after the live release"
        assert [b.words for b in fz.read_bitmap()] == boot_bits  # the spec restored the bitmap
        assert man["scenario"] == "live"
        memfile = m.memfile_path
    assert not Path(memfile).exists(), "keep_memfile must still remove the file on close"


def test_repeated_freezes_and_level0_after_level24(frozen24, frozen0, multi4):
    """The host's bitmap restore (PROTOCOL.md step 5) makes a level-0 dump after a
    level-24 one whole again; freeze/release cycles keep working."""
    fz = frozen0["freezer"]
    chunks = [(c["addr"], c["size"]) for c in frozen0["frozen"].manifest["chunks"]]
    for level in (0, 24, 0):
        fr = fz.freeze(level)
        try:
            assert fr.manifest["dump_level"] == level
            got = set()
            for b in fz.read_bitmap():  # decoded here, straight from the guest's bits
                for j, w in enumerate(b.words):
                    got |= {b.start + (j * 64 + k) * PAGE for k in range(64) if w >> k & 1}
            if level == 0:
                assert got == pages_of(chunks)
            else:
                assert got < pages_of(chunks)
        finally:
            fz.release()
