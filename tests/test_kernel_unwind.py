"""The reference kernel's switched-out contexts and panic registers unwind with a real
debugger: drgn reads the kernel's DWARF/CFI (not our code) over guest memory frozen through
the dump NMI, and must find the call chains the kernel's own manifest implies."""
from __future__ import annotations

import pytest

from mcktools.qemu.freeze import Freezer
from mcktools.qemu.imageinfo import image_info
from mcktools.qemu.machine import Machine, MachineConfig

drgn = pytest.importorskip("drgn")
elftools = pytest.importorskip("elftools")
from elftools.elf.elffile import ELFFile  # noqa: E402

pytestmark = pytest.mark.qemu

MAP_KERNEL_START = 0xFFFFFFFFFE800000
PT_REGS = "r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi orig_rax rip cs eflags rsp ss".split()
# panic_regs slot order (reference 7.3, GDB amd64 'g' order)
PANIC_SLOTS = "rax rbx rcx rdx rsi rdi rbp rsp r8 r9 r10 r11 r12 r13 r14 r15 rip".split()


def _program(image, memory: bytes, man: dict):
    prog = drgn.Program(drgn.Platform(drgn.Architecture.X86_64,
                                      drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN))

    def reader(base):
        return lambda address, count, offset, physical: memory[base + offset:base + offset + count]

    prog.add_memory_segment(MAP_KERNEL_START, 0x2000000, reader(man["kernel_base"]))
    prog.add_memory_segment(man["linux_page_offset_base"], len(memory), reader(0))
    module = prog.extra_module("kernel", create=True)
    with open(image, "rb") as fh:
        module.address_ranges = [(s["p_vaddr"], s["p_vaddr"] + s["p_memsz"])
                                 for s in ELFFile(fh).iter_segments() if s["p_type"] == "PT_LOAD"]
    module.try_file(str(image))
    ul = prog.int_type("unsigned long", 8, False)
    pt_regs = prog.struct_type("pt_regs", 168, [drgn.TypeMember(ul, n, 64 * i) for i, n in enumerate(PT_REGS)])
    return prog, pt_regs


def _trace(prog, pt_regs, regs: dict):
    full = dict.fromkeys(PT_REGS, 0)
    full.update(regs)
    return list(prog.stack_trace(drgn.Object(prog, pt_regs, value=full)))


def _frozen(kernel_image, scenario):
    m = Machine(MachineConfig(image=str(kernel_image), scenario=scenario, ncpus=2)).start()
    try:
        m.wait_ready(timeout=60)
        if scenario == "panic":
            m.wait_line("MCKTOOLS-PANIC", timeout=60)
        fr = Freezer(m, image_info(str(kernel_image)))
        frozen = fr.freeze(0)
        memory = m.read_phys(0, len(m.mem))
        fr.release()
        return memory, frozen.manifest
    finally:
        m.close()


@pytest.mark.parametrize("scenario", ["multi", "panic"])
def test_switched_out_threads_unwind(qemu_available, kernel_image, scenario):
    memory, man = _frozen(kernel_image, scenario)
    prog, pt_regs = _program(kernel_image, memory, man)
    switch = prog.symbol("ihk_mc_switch_context").address
    expect = {"PS_INTERRUPTIBLE": "sys_nanosleep", "PS_STOPPED": "sys_tgkill"}
    checked = 0
    for t in man["threads"]:
        if t["kernel_rsp"] is None:
            continue
        ctx = drgn.Object(prog, "struct thread", address=t["addr"]).ctx
        frames = _trace(prog, pt_regs, {"rip": switch, "rsp": ctx.rsp.value_(), "rbp": ctx.rbp.value_(),
                                        "rbx": ctx.rbx.value_(), "r12": ctx.r12.value_(),
                                        "r13": ctx.r13.value_(), "r14": ctx.r14.value_(),
                                        "r15": ctx.r15.value_()})
        names = [f.name for f in frames]
        assert names[0] == "ihk_mc_switch_context" and names[1] == "schedule", (t["tid"], names)
        assert frames[1].pc == t["kernel_rip"], t["tid"]
        if t["idle"]:
            assert "idle_loop" in names
        elif t["state"] in expect:
            assert expect[t["state"]] in names, (t["tid"], t["state"], names)
        elif t["state"] == "PS_ZOMBIE":
            assert "sys_exit" in names or "sys_exit_group" in names, names
        checked += 1
    assert checked >= 4


def test_panic_regs_unwind_to_the_faulting_syscall(qemu_available, kernel_image):
    memory, man = _frozen(kernel_image, "panic")
    assert man["panic"] and man["panic"]["function"] == "sys_test_panic"
    prog, pt_regs = _program(kernel_image, memory, man)
    span = prog["x86_cpu_local_variables_span"].value_()
    base = prog["locals"].value_() + man["panic"]["cpu"] * span
    lv = drgn.Object(prog, "struct x86_cpu_local_variables", address=base)
    assert lv.paniced.value_() == 1
    regs = {name: lv.panic_regs[i].value_() for i, name in enumerate(PANIC_SLOTS)}
    assert regs["rip"] == man["panic"]["rip"]
    assert prog.symbol(regs["rip"]).name == "sys_test_panic"
    names = [f.name for f in _trace(prog, pt_regs, regs)]
    assert names[:3] == ["sys_test_panic", "syscall_dispatch", "syscall_entry"], names
