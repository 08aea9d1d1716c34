"""The model over a synthetic McKernel-shaped kernel (tests/model_synth).

Expected values come from the scenario literals the C file was generated
from, from `nm` and from drgn reading the same memory with its own DWARF
parser; never from mcktools output.
"""

from __future__ import annotations

import struct
import subprocess

import pytest

from mcktools.errors import CorruptStructure, ImageMismatch, UnreadableAddress
from tests.model_synth import (
    CPUS, KBASE, KMSG_TEXT, LPOB, MAP_KERNEL_START, PROCESSES, PS, THREADS, USER_PAGE0_TEXT,
    VM_RANGES, build, have_toolchain, vr,
)
from tests.model_synth.fakes import Anonymous, Overlay

pytestmark = pytest.mark.skipif(not have_toolchain(), reason="gcc/ld not installed")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return build(str(tmp_path_factory.mktemp("synth")))


@pytest.fixture(scope="module")
def nm(synth):
    out = subprocess.run(["nm", synth.img], capture_output=True, text=True, check=True).stdout
    return {parts[2]: int(parts[0], 16) for parts in (l.split() for l in out.splitlines()) if len(parts) == 3}


def open_target(img, source, **kw):
    from mcktools.debuginfo import Image
    from mcktools.model.target import Target
    return Target(Image.open(img), source, **kw)


def mcdump_source(path):
    from mcktools.memory.sources import open_source
    return open_source(path)


@pytest.fixture(scope="module")
def target(synth):
    t = open_target(synth.img, mcdump_source(synth.dump))
    yield t
    t.close()


def dm(nm, name, off=0):
    """Direct-map VA of a static object in the synthetic image."""
    return nm[name] - MAP_KERNEL_START + KBASE + LPOB + off


def pa(nm, name):
    return nm[name] - MAP_KERNEL_START + KBASE


def test_opens_and_learns_map(target, nm):
    assert target.kernel_base == KBASE
    assert target.kmap.linux_page_offset_base == LPOB
    assert target.kmap.init_pt_pa == pa(nm, "pgd_init")
    assert target.warnings == []


def test_cpus(target, nm):
    cpus = target.cpus()
    assert [c.id for c in cpus] == sorted(CPUS)
    for c in cpus:
        status, cur, runq = CPUS[c.id]
        assert c.status == status
        assert c.current == (dm(nm, f"th{cur}") if cur else c.idle)
        assert c.runq == [dm(nm, f"th{t}") for t in runq]


def test_threads(target, nm):
    rows = {r.tid: r for r in (i.row for i in target.threads()) if not r.idle}
    assert set(rows) == set(THREADS)
    for tid, (pid, cpu, status, _onq) in THREADS.items():
        r = rows[tid]
        assert (r.pid, r.cpu, r.state, r.addr) == (pid, cpu, status, dm(nm, f"th{tid}"))
        assert r.ppid == PROCESSES[pid][0]
        assert r.comm == PROCESSES[pid][1][0].rsplit("/", 1)[-1]
        assert r.current == (CPUS[cpu][1] == tid)
    idle = [i.row for i in target.threads() if i.row.idle]
    assert sorted(r.cpu for r in idle) == sorted(CPUS)
    assert all(r.comm == "idle" and r.pid == 0 for r in idle)


def test_processes(target):
    procs = {p.pid: p for p in target.processes() if p.pid}
    assert set(procs) == set(PROCESSES)
    for pid, (ppid, argv, status) in PROCESSES.items():
        p = procs[pid]
        assert (p.ppid, p.argv, p.state) == (ppid, argv, status)
        assert sorted(p.threads) == sorted(t for t, v in THREADS.items() if v[0] == pid)


def test_vm_ranges_in_order(target):
    from mcktools.model.vm import vm_ranges
    proc = target.object(next(p.addr for p in target.processes() if p.pid == 100), "struct process")
    rows = vm_ranges(target, proc)
    assert [(r.start, r.end, r.flag, r.path, r.label) for r in rows] == \
        [(s, e, vr(f), p, lab) for s, e, f, p, lab in VM_RANGES]


def test_user_translations(target, nm):
    from mcktools.model.pagetables import Space
    sp = Space(target, pid=100)
    r = sp.lookup(0x400123)
    assert (r.phys, r.size) == (pa(nm, "user_page0") + 0x123, 4096)
    assert r.vm_range["label"] == "/bin/app"
    r = sp.lookup(0x401000)
    assert r.phys == pa(nm, "user_page1") and "NX" in r.flags and "RW" not in r.flags
    r = sp.lookup(0x6ABCDE)
    assert (r.phys, r.size) == (KBASE + 0xABCDE, 2 << 20)
    assert sp.lookup(0x402000) is None
    vm = target.address_space(next(p.page_table for p in target.processes() if p.pid == 100))
    assert vm.read(0x400000, len(USER_PAGE0_TEXT)) == USER_PAGE0_TEXT
    # a read crossing from user_page0 into user_page1 (separate physical pages)
    assert vm.read(0x400FFE, 2 + 4) == b"\0\0user"


def test_kernel_translations(target, nm):
    from mcktools.model.pagetables import Space
    sp = Space(target)
    r = sp.lookup(0xFFFF860000000010)       # fixed map: only init_pt knows
    assert r.phys == pa(nm, "kmsg_ring") + 0x10 and r.region == "fixed"
    r = sp.lookup(nm["clv_array"])
    assert r.phys == pa(nm, "clv_array") and r.size == 2 << 20
    r = sp.lookup(dm(nm, "th100"))           # direct map: not in init_pt here, linear rule
    assert r.phys == pa(nm, "th100") and r.region == "direct"


def test_kmsg_wrapped(target):
    from mcktools.model.kmsg import read_kmsg
    res = read_kmsg(target)
    assert res.available and res.text == KMSG_TEXT


def test_objects(target, nm):
    p = target.object(dm(nm, "proc100"), "struct process")
    assert int(p.pid) == 100
    assert (int(p.flag_a), int(p.flag_b)) == (5, -3)     # bit-fields in an anonymous struct
    th = target.object(dm(nm, "th102"), "struct thread")
    assert int(th.proc.pid) == 100                      # typedef'd pointer followed
    assert int(th.proc.vm.region.brk_start) == 0x600000
    assert th.status.enum_name_() is None and target.ps_name(int(th.status)) == "PS_INTERRUPTIBLE"
    c = target.variable("clv")
    assert c[1].address_ == dm(nm, "clv_array") + target.sizeof("struct cpu_local_var")
    assert int(target.variable("debug_constants")[11]) == (1 << 64) - 1


def test_agrees_with_drgn(synth, target, nm):
    drgn = pytest.importorskip("drgn")
    prog = drgn.Program(drgn.Platform(drgn.Architecture.X86_64,
                                      drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN))
    data = synth.data

    def reader(base):
        return lambda address, count, offset, physical: data[address - base:address - base + count]
    prog.add_memory_segment(MAP_KERNEL_START, len(data), reader(MAP_KERNEL_START))
    prog.add_memory_segment(KBASE + LPOB, len(data), reader(KBASE + LPOB))
    from elftools.elf.elffile import ELFFile
    with open(synth.img, "rb") as f:
        ranges = [(s["p_vaddr"], s["p_vaddr"] + s["p_memsz"]) for s in ELFFile(f).iter_segments()
                  if s["p_type"] == "PT_LOAD"]
    m = prog.extra_module("kernel", create=True)
    m.address_ranges = ranges
    m.try_file(synth.img)
    clv = prog["clv"]
    for i, c in enumerate(target.cpus()):
        assert c.current == clv[i].current.value_()
        assert c.idle == clv[i].idle.address_
    for info in target.threads():
        d = drgn.Object(prog, "struct thread *", info.row.addr)
        assert info.row.tid == d.tid.value_()
        assert PS[info.row.state] == d.status.value_()
        assert info.row.pid == d.proc.pid.value_()
        assert int(info.obj.sched_list.next) == d.sched_list.next.value_()
        assert int(info.obj.ctx.rbp) == d.ctx.rbp.value_()


def test_level24_excluded_user_pages(synth, nm):
    from mcktools.model.pagetables import Space
    t = open_target(synth.img, mcdump_source(synth.dump24))
    try:
        assert sorted(r.tid for r in (i.row for i in t.threads()) if not r.idle) == sorted(THREADS)
        r = Space(t, pid=100).lookup(0x400000)
        assert r.phys == pa(nm, "user_page0") and r.excluded is True
        vm = t.address_space(next(p.page_table for p in t.processes() if p.pid == 100))
        with pytest.raises(UnreadableAddress):
            vm.read(0x400000, 8)
        assert Space(t).lookup(0xFFFF860000000000).excluded is False
    finally:
        t.close()


def test_wrong_image_refused(synth, tmp_path):
    other = build(str(tmp_path / "other"), variant="another build")
    with pytest.raises(ImageMismatch, match="does not match"):
        open_target(other.img, mcdump_source(synth.dump))
    t = open_target(other.img, mcdump_source(synth.dump), force=True)
    assert t.warnings and int(t.cpus()[0].id) == 0
    t.close()


def test_kernel_base_found_without_metadata(synth):
    t = open_target(synth.img, Anonymous(mcdump_source(synth.dump)))
    assert t.kernel_base == KBASE and t.kernel_base_source() == "build-id search"
    t.close()


def test_debug_constants_mismatch_refused(synth, nm):
    src = Overlay(mcdump_source(synth.dump), {pa(nm, "debug_constants") + 8: struct.pack("<Q", 12345)})
    with pytest.raises(ImageMismatch, match=r"debug_constants"):
        open_target(synth.img, src)


def test_cyclic_runq(synth, nm, target):
    # th102.sched_list.next -> th102.sched_list itself: never returns to the head
    off = target.offsetof("struct thread", "sched_list")
    node = dm(nm, "th102") + off
    src = Overlay(mcdump_source(synth.dump), {pa(nm, "th102") + off: struct.pack("<Q", node)})
    t = open_target(synth.img, src)
    with pytest.raises(CorruptStructure, match="run queue of CPU 1.*cyclic"):
        t.threads()


def test_cyclic_rbtree(synth, nm, target):
    from mcktools.model.vm import vm_ranges
    right = target.offsetof("struct rb_node", "rb_right")
    # vr3 (rightmost) gets vr1 (the root) as its right child
    src = Overlay(mcdump_source(synth.dump), {pa(nm, "vr3") + right: struct.pack("<Q", dm(nm, "vr1"))})
    t = open_target(synth.img, src)
    with pytest.raises(CorruptStructure, match="vm_range tree of pid 100"):
        vm_ranges(t, t.object(dm(nm, "proc100"), "struct process"))


def test_pointer_outside_dump(synth, nm, target):
    off = target.offsetof("struct thread", "proc")
    src = Overlay(mcdump_source(synth.dump), {pa(nm, "th101") + off: struct.pack("<Q", LPOB + 0x7000000)})
    t = open_target(synth.img, src)
    with pytest.raises(CorruptStructure, match="cannot be read"):
        t.threads()
