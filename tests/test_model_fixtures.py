"""The model on the reference kernel's fixture dumps against its own manifest.json,
and against drgn reading the same memory with its own DWARF parser."""

from __future__ import annotations

import json

import pytest

from mcktools.memory.translate import PHYS_MASK

SCENARIOS = ("multi", "panic")
DUMPS = ("level0.mcdump", "level24.mcdump", "vmcore.elf")


def _fixture(fixture_dir, scenario):
    """The scenario's folder; MCKTOOLS_FIXTURES=DIR points at freshly made, unpacked fixtures."""
    import os
    from pathlib import Path
    from tests.conftest import REPO
    if os.environ.get("MCKTOOLS_FIXTURES"):
        folder = Path(os.environ["MCKTOOLS_FIXTURES"]) / scenario
        if not (folder / "manifest.json").exists():
            pytest.skip(f"no {scenario} in $MCKTOOLS_FIXTURES")
        return folder
    folder = REPO / "dumps" / "fixtures" / scenario
    if not any(folder.glob("*.xz")) and not (folder / "manifest.json").exists():
        pytest.skip(f"no fixtures for {scenario} yet (python3 dumps/make_fixtures.py)")
    return fixture_dir(scenario)


@pytest.fixture(scope="module", params=[(s, d) for s in SCENARIOS for d in DUMPS],
                ids=lambda p: f"{p[0]}-{p[1]}")
def case(request, fixture_dir):
    scenario, dump = request.param
    folder = _fixture(fixture_dir, scenario)
    if not (folder / dump).exists():
        pytest.skip(f"{scenario} has no {dump}")
    from mcktools.model.target import Target
    t = Target.open(str(folder / "mckernel.img"), str(folder / dump))
    manifest = json.loads((folder / "manifest.json").read_text())
    yield t, manifest, dump
    t.close()


def test_cpus(case):
    t, m, _ = case
    got = t.cpus()
    assert len(got) == m["ncpus"] == len(m["cpus"])
    for g, want in zip(got, m["cpus"]):
        assert (g.id, g.status, g.clv, g.current, g.idle, g.runq) == \
            (want["id"], want["status"], want["clv"], want["current"], want["idle"], want["runq"])


def test_threads(case):
    t, m, _ = case
    rows = {i.row.addr: i.row for i in t.threads()}
    ppid = {p["pid"]: p["ppid"] for p in m["processes"]}
    current = {c["current"] for c in m["cpus"]}
    for want in m["threads"]:
        r = rows[want["addr"]]
        assert (r.tid, r.pid, r.cpu, r.state, r.idle, r.comm) == \
            (want["tid"], want["pid"], want["cpu"], want["state"], want["idle"], want["comm"])
        assert r.current == (want["addr"] in current)
        if not want["idle"]:
            assert r.ppid == ppid[want["pid"]]
    # threads the tool finds beyond the run queues come from the tid hash and are real threads
    manifest_tids = {p_tid for p in m["processes"] for p_tid in p["threads"]}
    for r in rows.values():
        if not r.idle:
            assert r.tid in manifest_tids


def test_processes(case):
    t, m, _ = case
    got = {p.pid: p for p in t.processes()}
    assert set(got) == {p["pid"] for p in m["processes"]}
    for want in m["processes"]:
        g = got[want["pid"]]
        assert (g.ppid, g.argv, g.addr, g.page_table, g.page_table_pa, g.state) == \
            (want["ppid"], want["argv"], want["addr"], want["page_table"], want["page_table_pa"], want["state"])
        assert sorted(g.threads) == sorted(want["threads"])


def test_vm_ranges(case):
    from mcktools.model.vm import vm_ranges
    t, m, _ = case
    for p in t.processes():
        rows = vm_ranges(t, t.object(p.addr, "struct process"))
        want = m["vm_ranges"][str(p.pid)]
        assert [(r.start, r.end, r.flag, r.path) for r in rows] == \
            [(w["start"], w["end"], w["flag"], w["path"]) for w in want]


def test_translations(case):
    from mcktools.model.pagetables import Space
    t, m, dump = case
    chunks = [(c["addr"], c["addr"] + c["size"]) for c in m["chunks"]]
    n = 0
    for pid, rows in m["translations"].items():
        sp = Space(t, pid=int(pid))
        for w in rows:
            r = sp.lookup(w["va"])
            assert r is not None, hex(w["va"])
            assert (r.phys, r.size, r.pte & ~PHYS_MASK) == (w["pa"], w["size"], w["flags"])
            if dump == "level24.mcdump" and any(a <= w["pa"] < b for a, b in chunks):
                assert r.excluded is True          # user page: left out, never read as zeros
            if dump == "level0.mcdump":
                assert r.excluded is False
            n += 1
    assert n > 0
    if m["scenario"] == "multi":      # the kernel's brief puts a 2M mapping there
        assert any(w["size"] == 2 << 20 for rows in m["translations"].values() for w in rows)


def test_kernel_vtop(case):
    from mcktools.model.pagetables import Space
    t, m, _ = case
    sp = Space(t)
    kmsg_va = t.read_u64(m["symbols"]["kmsg_buf"])     # a fixed-map VA: init_pt only
    r = sp.lookup(kmsg_va)
    assert r is not None and r.region == "fixed"
    for c in m["cpus"]:
        r = sp.lookup(c["clv"])
        assert r is not None and r.excluded is False


def test_counters_via_vtop(case):
    from mcktools.model.pagetables import Space
    t, m, _ = case
    for c in m["counters"]:
        r = Space(t, pid=c["pid"]).lookup(c["va"])
        assert r is not None and r.phys == c["pa"]


def test_kmsg(case):
    from mcktools.model.kmsg import read_kmsg
    t, m, dump = case
    res = read_kmsg(t)
    if dump == "vmcore.elf":
        assert res.available and res.text == m["kmsg"]
    elif res.available:
        assert res.text == m["kmsg"]
    else:
        assert "Linux memory" in res.source


def test_agrees_with_drgn(case):
    """drgn reads the same thread members through its own DWARF parser."""
    drgn = pytest.importorskip("drgn")
    t, m, _ = case
    prog = drgn.Program(drgn.Platform(drgn.Architecture.X86_64,
                                      drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN))
    src = t.source

    def phys_reader(address, count, offset, physical):
        return src.read(address, count)
    for r in src.ranges():
        prog.add_memory_segment(r.start, r.size, phys_reader, True)
    # the kernel's own linear maps, as the manifest states them (not from mcktools)
    lpob, kbase = m["linux_page_offset_base"], m["kernel_base"]
    map_kernel_start = m["symbols"]["_head"] - 0x1000
    for r in src.ranges():
        prog.add_memory_segment(lpob + r.start, r.size,
                                lambda a, c, o, p, base=lpob: src.read(a - base, c))
    prog.add_memory_segment(map_kernel_start, 64 << 20,
                            lambda a, c, o, p: src.read(a - map_kernel_start + kbase, c))
    from elftools.elf.elffile import ELFFile
    img = str(t.image.path)
    with open(img, "rb") as f:
        ranges = [(s["p_vaddr"], s["p_vaddr"] + s["p_memsz"]) for s in ELFFile(f).iter_segments()
                  if s["p_type"] == "PT_LOAD"]
    mod = prog.extra_module("kernel", create=True)
    mod.address_ranges = ranges
    mod.try_file(img)
    clv = prog["clv"]
    assert prog["num_processors"].value_() == len(t.cpus())
    for i, c in enumerate(t.cpus()):
        assert c.current == clv[i].current.value_() and c.idle == clv[i].idle.address_
    for info in t.threads():
        d = drgn.Object(prog, "struct thread *", info.row.addr)
        assert info.row.tid == d.tid.value_()
        assert t.image.enum_value(info.row.state) == d.status.value_()
        assert info.row.pid == d.proc.pid.value_()
        assert int(info.obj.cpu_id) == d.cpu_id.value_()
        assert int(info.obj.sched_list.next) == d.sched_list.next.value_()
        assert int(info.obj.ctx.rsp) == d.ctx.rsp.value_()
    for p in t.processes():
        d = drgn.Object(prog, "struct process *", p.addr)
        assert p.pid == d.pid.value_()
        assert p.ppid == (d.ppid_parent.pid.value_() if d.ppid_parent.value_() else 0)
        raw = prog.read(d.saved_cmdline.value_(), d.saved_cmdline_len.value_())
        assert p.argv == [a.decode() for a in raw.split(b"\0")[:-1]]
        assert p.page_table == d.vm.address_space.page_table.value_()


def test_registers(case):
    """Saved kernel contexts, user frames and panic registers against the manifest."""
    from mcktools.model.registers import (
        kernel_context, panic_registers, return_address, user_registers,
    )
    t, m, _ = case
    infos = {i.row.addr: i for i in t.threads()}
    checked = 0
    for w in m["threads"]:
        th = infos[w["addr"]].obj
        if w["kernel_rsp"] is not None:
            regs = kernel_context(t, th)
            assert regs["rsp"] == w["kernel_rsp"] and regs["rax"] is None
            assert regs["rip"] == m["symbols"]["ihk_mc_switch_context"]
            assert return_address(t, th) == w["kernel_rip"]
            checked += 1
        if w["user_rip"] is not None:
            u = user_registers(t, th)
            assert (u["rip"], u["rsp"]) == (w["user_rip"], w["user_rsp"])
    assert checked > 0
    # every CPU saved its registers on the dump NMI
    for c in m["cpus"]:
        assert panic_registers(t, c["id"]) is not None
    if m.get("panic"):
        assert panic_registers(t, m["panic"]["cpu"])["rip"] == m["panic"]["rip"]
