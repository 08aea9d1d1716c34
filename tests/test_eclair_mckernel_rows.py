"""eclair's McKernel-facing helpers: thread-list rules and register areas.

Expected texts, ids and slot orders are those of the ABI reference (§7.2,
§7.3, §9), written out here by hand; raw panic_regs bytes are packed with
struct in the reference's slot order, not with the code under test.
"""

from __future__ import annotations

import struct

import pytest

from eclair.provider import ProviderOptions
from eclair.regsets import panic_registers, switched_out_registers
from eclair.threadlist import KernelCpu, KernelThread, choose_stop_thread, gdb_threads

RUNQ = [
    KernelThread(tid=13, pid=12, cpu=1, state=0x2, comm="worker"),
    KernelThread(tid=12, pid=12, cpu=0, state=0x1, comm="a.out", current=True),
    KernelThread(tid=20, pid=20, cpu=1, state=0x20, comm="stopme"),
    KernelThread(tid=21, pid=20, cpu=1, state=0x40, comm="traced"),
    KernelThread(tid=22, pid=20, cpu=1, state=0x8, comm="zombie"),
]
IDLE = [KernelThread(tid=1, pid=1, cpu=1, state=0x2, comm="idle", current=True, idle=True),
        KernelThread(tid=0, pid=1, cpu=0, state=0x20, comm="idle", idle=True)]
CPUS = [KernelCpu(0, 2), KernelCpu(1, 1), KernelCpu(2, 3), KernelCpu(3, 0)]


def test_default_list_is_run_queues_by_cpu():
    rows = gdb_threads(RUNQ, IDLE, CPUS, ProviderOptions())
    assert [r.id for r in rows] == [12, 13, 20, 21, 22]
    assert rows[0].extra == "PID 12, running on CPU 0" and rows[0].core == 0 and rows[0].name == "a.out"
    assert rows[1].extra == "PID 12, waiting on CPU 1" and rows[1].core is None
    assert rows[2].extra == "PID 20, stopped on CPU 1"
    assert rows[3].extra == "PID 20, traced on CPU 1"
    assert "0x8" in rows[4].extra


def test_idle_and_cpu_threads():
    rows = gdb_threads(RUNQ, IDLE, CPUS, ProviderOptions(idle_threads=True, cpu_threads=True))
    ids = [r.id for r in rows]
    assert ids == [12, 13, 20, 21, 22, 2000000000, 2000000001, 1000000, 1000001, 1000002]
    idle1 = rows[6]
    assert idle1.extra == "PID 1, idle waiting on CPU 1" and idle1.core == 1
    assert [r.extra for r in rows[7:]] == ["CPU 0 running", "CPU 1 idle", "CPU 2 reserved"]
    assert [r.core for r in rows[7:]] == [0, 1, 2]


def test_cpu_threads_appear_when_no_thread_found():
    rows = gdb_threads([], [], CPUS, ProviderOptions())
    assert [r.id for r in rows] == [1000000, 1000001, 1000002]


def test_stop_thread_prefers_panicking_cpu():
    rows = gdb_threads(RUNQ, IDLE, CPUS, ProviderOptions(idle_threads=True, cpu_threads=True))
    assert choose_stop_thread(rows, [0]) == 12
    assert choose_stop_thread(rows, [1]) == 2000000001  # idle thread is current there
    assert choose_stop_thread(rows, [2]) == 1000002
    assert choose_stop_thread(rows, []) == 12
    assert choose_stop_thread([], [1]) is None


def test_switched_out_registers_follow_upstream_rules():
    ctx = {"rsp": 0x1000, "rbp": 0x2000, "rbx": 3, "rsi": 4, "rdi": 5, "r12": 12, "r13": 13,
           "r14": 14, "r15": 15, "rflags": 0xFFFFFFFF00000246, "rsp0": 0x9999}
    regs = switched_out_registers(ctx, 0xFFFFFFFFFE801234)
    assert regs["rip"] == 0xFFFFFFFFFE801234
    assert regs["eflags"] == 0x246
    for name in ("rsp", "rbp", "rbx", "rsi", "rdi", "r12", "r13", "r14", "r15"):
        assert regs[name] == ctx[name]
    for name in ("rax", "rcx", "rdx", "r8", "r9", "r10", "r11", "cs", "ss", "ds", "es", "fs", "gs"):
        assert regs[name] is None, name


def _panic_raw(values, dwords):
    return struct.pack("<17Q", *values) + struct.pack("<7I", *dwords) + b"\0" * 4


def test_panic_registers_kernel_mode():
    values = list(range(100, 117))  # rax..r15, rip in the reference's slot order
    raw = _panic_raw(values, [0x246, 0x10, 0x18, 0x9000, 0x9000, 0, 0])
    assert len(raw) == 168
    regs = panic_registers(raw, enter_user_mode=0xFFFF0000)
    assert regs["rax"] == 100 and regs["rsp"] == 107 and regs["r15"] == 115 and regs["rip"] == 116
    assert regs["eflags"] == 0x246 and regs["cs"] == 0x10 and regs["ss"] == 0x18
    assert all(regs[n] is None for n in ("ds", "es", "fs", "gs"))


def test_panic_registers_user_mode_drops_placeholders():
    values = [0, 1, 0, 0, 4, 5, 6, 7, 0, 0, 0, 0, 12, 13, 14, 15, 0xFFFF0000]
    regs = panic_registers(_panic_raw(values, [0x202, 0x10, 0x18, 0, 0, 0, 0]), enter_user_mode=0xFFFF0000)
    for name in ("rax", "rcx", "rdx", "r8", "r9", "r10", "r11"):
        assert regs[name] is None, name
    assert regs["rbx"] == 1 and regs["r12"] == 12 and regs["rip"] == 0xFFFF0000


def test_panic_registers_too_short():
    with pytest.raises(ValueError):
        panic_registers(b"\0" * 100)


def test_accepts_model_rows_with_state_names():
    from mcktools.model.rows import CpuRow, ThreadRow

    def row(tid, cpu, state, current=False, idle=False):
        return ThreadRow(tid=tid, pid=7, ppid=1, cpu=cpu, addr=0, state=state, st="", comm="prog",
                         idle=idle, current=current)

    runq = [row(8, 1, "PS_INTERRUPTIBLE"), row(7, 0, "PS_RUNNING", current=True), row(9, 1, "0x1000")]
    cpus = [CpuRow(id=0, status="CPU_STATUS_RUNNING", clv=0, current=0, idle=0),
            CpuRow(id=1, status="CPU_STATUS_DISABLE", clv=0, current=0, idle=0)]
    rows = gdb_threads(runq, [], cpus, ProviderOptions(cpu_threads=True))
    assert [(r.id, r.extra, r.core) for r in rows] == [
        (7, "PID 7, running on CPU 0", 0),
        (8, "PID 7, waiting on CPU 1", None),
        (9, "PID 7, status=0x1000 on CPU 1", None),
        (1000000, "CPU 0 running", 0),
    ]
