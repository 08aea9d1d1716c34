"""Machine life cycle under a real QEMU, with a 30-byte stub kernel built here
(PVH note, prints the READY markers on COM1 and halts): the memory-file view,
serial markers, and that neither QEMU nor its /dev/shm file outlives the harness."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mcktools.errors import LiveError
from mcktools.qemu.machine import Machine, MachineConfig

pytestmark = pytest.mark.qemu
REPO = Path(__file__).resolve().parent.parent

STUB = r"""
.section .note.Xen, "a", @note
.align 4
.long 4, 4, 18
.asciz "Xen"
.long _start
.text
.globl _start
.code32
_start:
  mov $msg, %esi
1: lodsb
  test %al, %al
  jz 2f
  mov $0x3f8, %dx
  out %al, %dx
  jmp 1b
2: cli
  hlt
  jmp 2b
.data
msg: .ascii "MCKTOOLS-MANIFEST {\"scenario\": \"stub\", \"n\": 7}\nMCKTOOLS-READY\n\0"
"""


@pytest.fixture(scope="module")
def stub_kernel(tmp_path_factory):
    d = tmp_path_factory.mktemp("stub")
    (d / "k.S").write_text(STUB)
    subprocess.run(["as", "--32", "-o", str(d / "k.o"), str(d / "k.S")], check=True)
    subprocess.run(["ld", "-m", "elf_i386", "-Ttext=0x100000", "-Tdata=0x101000", "-o", str(d / "k.elf"),
                    str(d / "k.o")], check=True)
    subprocess.run(["objcopy", "-O", "binary", "-j", ".data", str(d / "k.elf"), str(d / "data.bin")], check=True)
    return d


def _dead(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state == "Z"
    except (OSError, IndexError):
        return True


def test_machine_memory_serial_and_cleanup(qemu_available, stub_kernel, tmp_path):
    cfg = MachineConfig(image=str(stub_kernel / "k.elf"), scenario="stub", ncpus=1)
    with Machine(cfg) as m:
        man = m.wait_ready(timeout=30)
        assert man == {"scenario": "stub", "n": 7}
        shm = m.shm_path
        pid = m.proc.pid
        workdir = m.workdir
        # The mmap view is guest RAM: the loaded .data section sits at its PA.
        data = (stub_kernel / "data.bin").read_bytes()
        assert m.read_phys(0x101000, len(data)) == data
        # Writes through the file are what QEMU sees (pmemsave is QEMU's own reader).
        m.write_phys(0x200000, b"mcktools-harness!")
        m.qmp.execute("pmemsave", val=0x200000, size=17, filename=str(tmp_path / "pm.bin"))
        assert (tmp_path / "pm.bin").read_bytes() == b"mcktools-harness!"
        assert not os.path.exists(shm), "the /dev/shm name should be unlinked once mapped"
        with pytest.raises(LiveError, match="NEVER"):
            m.wait_line("MCKTOOLS-NEVER", timeout=0.3)
        with pytest.raises(LiveError, match="outside guest RAM"):
            m.read_phys(48 << 20, 1)
    assert _dead(pid)
    assert not workdir.exists()


_CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    from mcktools.qemu.machine import Machine, MachineConfig
    with Machine(MachineConfig(image={image!r}, ncpus=1)) as m:
        m.wait_ready()
        print(m.proc.pid, m.shm_path, m.workdir, flush=True)
        {action}
""")


@pytest.mark.parametrize("how", [signal.SIGINT, "double-ctrl-c", signal.SIGTERM, signal.SIGKILL, "exception"])
def test_no_qemu_or_shm_file_survives(qemu_available, stub_kernel, how):
    action = "raise RuntimeError('boom')" if how == "exception" else "time.sleep(60)"
    code = _CHILD.format(repo=str(REPO), image=str(stub_kernel / "k.elf"), action=action)
    py = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = py.stdout.readline().split()
    assert line, "child did not boot the stub"
    pid, shm, workdir = int(line[0]), line[1], line[2]
    if how == "double-ctrl-c":  # an impatient user: the second ^C lands during the cleanup
        py.send_signal(signal.SIGINT)
        time.sleep(0.05)
        py.send_signal(signal.SIGINT)
    elif how != "exception":
        py.send_signal(how)
    py.wait(timeout=20)
    deadline = time.monotonic() + 10
    while not _dead(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _dead(pid), f"QEMU {pid} survived {how}"
    assert not os.path.exists(shm)
    assert not glob.glob(f"/dev/shm/mcktools-{py.pid}-*")
    if how != signal.SIGKILL:
        assert not os.path.exists(workdir)
    else:  # SIGKILL leaves the small temp folder behind; the next Machine sweeps it
        assert os.path.exists(workdir)
        from mcktools.qemu.machine import _sweep_stale

        _sweep_stale()
        assert not os.path.exists(workdir)
