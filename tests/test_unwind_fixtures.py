"""Kernel backtraces of the fixture dumps against the reference kernel's manifest and
against drgn, which unwinds the same memory and registers with its own CFI/DWARF reader."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.test_model_fixtures import _fixture

MAP_KERNEL_START = 0xFFFFFFFFFE800000
PT_REGS = "r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi orig_rax rip cs eflags rsp ss".split()
#: the system call each blocked state's thread sleeps in (kernel/syscall.c, PROTOCOL.md scenarios)
SLEPT_IN = {"PS_INTERRUPTIBLE": {"sys_nanosleep"}, "PS_STOPPED": {"sys_tgkill"},
            "PS_ZOMBIE": {"sys_exit", "sys_exit_group"}}


def _open(fixture_dir, scenario, level):
    from mcktools.model.target import Target
    folder = _fixture(fixture_dir, scenario)
    man = json.loads((folder / "manifest.json").read_text())
    return Target.open(str(folder / "mckernel.img"), str(folder / f"{level}.mcdump")), man, folder


def _nm(image) -> dict:
    out = subprocess.run(["nm", str(image)], capture_output=True, text=True, check=True).stdout
    syms = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "tTwW":
            syms.setdefault(parts[2], int(parts[0], 16))
    return syms


@pytest.fixture(scope="module", params=[("multi", "level0"), ("multi", "level24"),
                                        ("panic", "level0"), ("panic", "level24")],
                ids=lambda p: "/".join(p))
def case(request, fixture_dir):
    t, man, folder = _open(fixture_dir, *request.param)
    yield t, man, folder
    t.close()


def _traces(t):
    from mcktools.model.unwind import thread_backtrace
    return {info.row.addr: (info, thread_backtrace(t, info)) for info in t.threads()}


def test_switched_out_threads_go_through_schedule_to_their_syscall(case):
    t, man, folder = case
    traces = _traces(t)
    nm = _nm(folder / "mckernel.img")
    checked = 0
    for mt in man["threads"]:
        info, bt = traces[mt["addr"]]
        assert bt.corrupt is None, (mt["tid"], bt.corrupt)
        if mt["kernel_rsp"] is None:
            continue
        names = [f.function for f in bt.frames]
        assert names[:2] == ["ihk_mc_switch_context", "schedule"], (mt["tid"], names)
        assert bt.frames[0].sp == mt["kernel_rsp"]
        assert bt.frames[1].pc == mt["kernel_rip"], mt["tid"]
        # offsets against nm's symbol values, not our own symbol table
        for f in bt.frames:
            if not f.inlined and f.function in nm:
                assert f.pc - nm[f.function] == f.offset, (f.function, f.pc, f.offset)
        if mt["idle"]:
            assert "idle_loop" in names and bt.user_regs is None
        else:
            if mt["state"] in SLEPT_IN:
                assert SLEPT_IN[mt["state"]] & set(names), (mt["tid"], mt["state"], names)
                # the syscall frame sits right above schedule (inlined into syscall_dispatch here)
                assert names[2] in SLEPT_IN[mt["state"]], names
            # every user thread entered the kernel from user mode: its uctx frame ends the trace
            assert bt.user_regs is not None, (mt["tid"], bt.end)
            assert bt.user_regs["rip"] == mt["user_rip"] and bt.user_regs["rsp"] == mt["user_rsp"]
        checked += 1
    assert checked >= 6


def test_current_threads(case):
    t, man, _ = case
    from mcktools.model.unwind import cpu_backtrace
    panic = man.get("panic")
    for c in man["cpus"]:
        bt = cpu_backtrace(t, c["id"])
        assert bt.thread == c["current"]
        mt = next(x for x in man["threads"] if x["addr"] == c["current"])
        if panic and panic["cpu"] == c["id"]:
            assert bt.start == "panic_regs"
            assert bt.frames[0].function == panic["function"]
            assert bt.frames[0].pc == panic["rip"]
            assert [f.function for f in bt.frames[1:2]] == ["syscall_dispatch"]
            assert bt.user_regs is not None and bt.user_regs["rip"] == mt["user_rip"]
        elif not mt["idle"]:
            # the dump NMI hit these CPUs in user mode (spinning threads): no kernel frames
            assert bt.start == "user mode" and bt.frames == []
            assert bt.user_regs["rip"] == mt["user_rip"] and bt.user_regs["rsp"] == mt["user_rsp"]


# --- drgn -----------------------------------------------------------------------

def _drgn_program(t, man, image):
    drgn = pytest.importorskip("drgn")
    from elftools.elf.elffile import ELFFile

    prog = drgn.Program(drgn.Platform(drgn.Architecture.X86_64,
                                      drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN))

    def reader(base):
        def read(address, count, offset, physical):
            try:
                return t.source.read(base + offset, count)
            except Exception as exc:     # a hole in the dump: a fault for drgn
                raise drgn.FaultError(str(exc), address) from None
        return read

    # the two linear maps the kernel uses, from the manifest (not from our translation code)
    prog.add_memory_segment(MAP_KERNEL_START, 0x2000000, reader(man["kernel_base"]))
    prog.add_memory_segment(man["linux_page_offset_base"], 0x4000000, reader(0))
    module = prog.extra_module("kernel", create=True)
    with open(image, "rb") as fh:
        module.address_ranges = [(s["p_vaddr"], s["p_vaddr"] + s["p_memsz"])
                                 for s in ELFFile(fh).iter_segments() if s["p_type"] == "PT_LOAD"]
    module.try_file(str(image))
    ul = prog.int_type("unsigned long", 8, False)
    pt_regs = prog.struct_type("pt_regs", 168, [drgn.TypeMember(ul, n, 64 * i) for i, n in enumerate(PT_REGS)])

    def trace(regs):
        full = dict.fromkeys(PT_REGS, 0)
        full.update({k: v for k, v in regs.items() if k in PT_REGS and v is not None})
        frames = []
        for f in prog.stack_trace(drgn.Object(prog, pt_regs, value=full)):
            try:
                f.pc
            except LookupError:      # drgn's marker frame past "rip undefined": nothing to compare
                break
            frames.append(f)
        return frames
    return prog, trace


def test_frames_agree_with_drgn(case):
    t, man, folder = case
    prog, trace = _drgn_program(t, man, folder / "mckernel.img")
    traces = _traces(t)
    switch = prog.symbol("ihk_mc_switch_context").address
    compared = 0
    for mt in man["threads"]:
        info, bt = traces[mt["addr"]]
        if mt["kernel_rsp"] is not None:
            import drgn
            ctx = drgn.Object(prog, "struct thread", address=mt["addr"]).ctx
            regs = {"rip": switch, **{r: ctx.member_(r).value_() for r in
                                      ("rsp", "rbp", "rbx", "r12", "r13", "r14", "r15")}}
        elif man.get("panic") and man["panic"]["cpu"] == mt["cpu"]:
            import drgn
            span = prog["x86_cpu_local_variables_span"].value_()
            lv = drgn.Object(prog, "struct x86_cpu_local_variables",
                             address=prog["locals"].value_() + mt["cpu"] * span)
            slots = "rax rbx rcx rdx rsi rdi rbp rsp r8 r9 r10 r11 r12 r13 r14 r15 rip".split()
            regs = {name: lv.panic_regs[i].value_() for i, name in enumerate(slots)}
        else:
            continue
        theirs = trace(regs)
        assert len(theirs) >= 3
        ours = bt.frames
        assert len(ours) >= len(theirs), (mt["tid"], [f.name for f in theirs], [f.function for f in ours])
        for mine, other in zip(ours, theirs):
            assert (mine.function, mine.pc, mine.sp, mine.inlined) == \
                (other.name, other.pc, other.sp, other.is_inline), mt["tid"]
            if not mine.inlined and mine.line is not None:
                try:
                    loc = other.source()
                except LookupError:
                    continue
                assert (mine.file, mine.line) == (loc.filename.rsplit("/", 1)[-1], loc.line)
        compared += 1
    assert compared >= 6


def test_frame_pointer_fallback_agrees_with_cfi(case):
    """Without CFI (an image built without .eh_frame) the frame-pointer chain and the entry
    frames must find the same physical frames for the switched-out threads."""
    from mcktools.debuginfo.unwindinfo import UnwindTables
    from mcktools.model.registers import kernel_context
    from mcktools.model.unwind import Unwinder, stack_range
    t, man, _ = case
    no_cfi = Unwinder(t, UnwindTables({"cfi_section": None, "fdes": [], "lines": [], "files": [],
                                       "inlines": []}, "built"))
    traces = _traces(t)
    compared = 0
    for mt in man["threads"]:
        if mt["kernel_rsp"] is None:
            continue
        info, bt = traces[mt["addr"]]
        frames, end, corrupt, user_at, _ = no_cfi.unwind(kernel_context(t, info.obj), stack_range(t, info))
        assert not corrupt, end
        assert [(f.function, f.pc, f.sp) for f in frames] == \
            [(f.function, f.pc, f.sp) for f in bt.frames if not f.inlined], mt["tid"]
        assert user_at == bt.user_frame
        compared += 1
    assert compared >= 6


def test_kernel_mode_exception_frame_is_crossed(fixture_dir):
    """The #PF frame of the panic scenario sits on the panicking thread's stack; a walk that
    starts in the fault's entry stub crosses it into the faulting code (sys_test_panic) and
    goes on to the same user frame as the panic_regs trace."""
    from mcktools.model.unwind import Unwinder, cpu_backtrace
    t, man, _ = _open(fixture_dir, "panic", "level0")
    with t:
        panic = man["panic"]
        info = next(i for i in t.threads() if i.row.current and i.row.cpu == panic["cpu"])
        lo, hi = info.row.addr, info.row.addr + 0x20000
        raw = t.read(lo, hi - lo)
        # x86_user_context offsets from the ABI reference (7.4): is_gpr_valid 48, rip 184, cs 192
        frames = [a for a in range(0, len(raw) - 224, 8)
                  if raw[a + 48] == 1 and int.from_bytes(raw[a + 184:a + 192], "little") == panic["rip"]
                  and int.from_bytes(raw[a + 192:a + 200], "little") == 0x20]
        assert len(frames) == 1
        at = lo + frames[0]
        stub_return = int.from_bytes(raw[frames[0] - 8:frames[0]], "little")   # pushed by `call`
        uw = Unwinder(t)
        got, end, corrupt, user_at, _ = uw.unwind({"rip": stub_return, "rsp": at}, (lo, hi))
        assert not corrupt, end
        names = [(f.function, f.kind) for f in got]
        assert names[0][0] == "vector_14"
        assert names[1] == (panic["function"], "exception") and got[1].pc == panic["rip"]
        assert [n for n, _ in names[2:]] == ["syscall_dispatch", "syscall_entry"]
        assert user_at == cpu_backtrace(t, panic["cpu"]).user_frame
