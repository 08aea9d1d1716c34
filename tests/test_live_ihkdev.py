"""IhkDeviceSource driven through the IHK driver emulator (mcktools.live.fake_ihk).

Memory contents are random bytes made here, so every read is checked against
data the source never saw; chunk lists are worked out by hand from the
reference's bitmap rules (§2.6) for the layout the test sets up.
"""

from __future__ import annotations

import os
import random

import pytest

from mcktools.errors import LiveError, McktoolsError, UnreadableAddress
from mcktools.formats import ihk_ioctl as abi
from mcktools.live.fake_ihk import FakeIhk, file_ioctl
from mcktools.memory.sources.base import PhysicalSource, PhysRange
from mcktools.memory.sources.ihkdev import IhkDeviceSource, ioctl_name

MEM = 0x400000                     # 4 MiB of emulated physical memory
CHUNKS = [(0x100000, 0x20000), (0x120000, 0x10000), (0x200000, 0x180000)]
KERNEL_BASE = 0x200000


@pytest.fixture
def memory():
    rng = random.Random(1234)
    return bytearray(rng.randbytes(MEM))


@pytest.fixture
def device(tmp_path):
    path = tmp_path / "mcos0"
    path.write_bytes(b"")
    return str(path)


def make(memory, device, **kw):
    fake = FakeIhk(memory=memory, chunks=list(CHUNKS), kernel_base=KERNEL_BASE, **kw)
    src = IhkDeviceSource(0, path=device, ioctl=fake.ioctl)
    return fake, src


def test_is_a_physical_source_and_reads_exact_bytes(memory, device):
    fake, src = make(memory, device)
    assert isinstance(src, PhysicalSource)
    # root: the span came from DUMP_QUERY_ALL (first chunk start .. last chunk end)
    assert src.ranges() == [PhysRange(0x100000, 0x380000)]
    for pa, n in [(0x100000, 16), (0x11FFF0, 0x40), (0x200123, 0x123456), (0x37FFFF, 1)]:
        assert src.read(pa, n) == bytes(memory[pa:pa + n])
    # more than one 1 MiB READ_KADDR block
    assert fake.ops.count("READ_KADDR") >= 4
    assert src.read(0x100000, 0) == b""


def test_reads_outside_known_ranges_never_reach_the_driver(memory, device):
    fake, src = make(memory, device)
    before = len(fake.ops)
    with pytest.raises(UnreadableAddress) as e:
        src.read(0x37FFF0, 0x20)
    assert e.value.address == 0x380000
    with pytest.raises(UnreadableAddress):
        src.read(0x0, 8)
    assert len(fake.ops) == before


def test_unprivileged_reads_work_and_dump_ops_say_root(memory, device):
    fake, src = make(memory, device, root=False)
    assert src.ranges() == []        # DUMP_QUERY_ALL refused: ranges unknown
    assert src.read(0x180000, 64) == bytes(memory[0x180000:0x180040])
    with pytest.raises(LiveError, match="needs root"):
        src.nmi()
    with pytest.raises(LiveError, match="needs root"):
        src.set_level(24)
    # unchecked read outside the emulated memory: the driver's EFAULT becomes UnreadableAddress
    with pytest.raises(UnreadableAddress) as e:
        src.read(MEM - 8, 16)
    assert e.value.address == MEM - 8


def test_virtual_reads_use_the_drivers_two_maps(memory, device):
    fake, src = make(memory, device)
    # kernel image window: kernel_base + offset from MAP_KERNEL_START
    va = abi.IHK_X86_MAP_KERNEL_START + 0x1234
    assert src.read_virt(va, 32) == bytes(memory[KERNEL_BASE + 0x1234:KERNEL_BASE + 0x1254])
    # Linux direct map
    assert src.read_virt(0xFFFF888000150000, 8) == bytes(memory[0x150000:0x150008])
    with pytest.raises(UnreadableAddress) as e:
        src.read_virt(0x400000, 8)   # user address: refused before the driver
    assert not e.value.physical


def test_dump_sequence_level24_and_sticky_bitmap(memory, device):
    user = [0x101000, 0x102000, 0x11F000, 0x120000, 0x250000]
    fake, src = make(memory, device, level24_pages=user)
    src.set_level(24)
    src.nmi()
    assert fake.frozen and fake.nmi_count == 1
    src.nmi()                                   # second NMI while complete: no-op
    assert fake.nmi_count == 1
    areas = src.query_mem_areas()
    assert areas.kernel_base == KERNEL_BASE and areas.phys_start == 0
    got = [(c.addr, c.size) for c in areas.chunks]
    # chunk 0: pages 0x100000 kept, 0x101000-0x102fff cut, 0x103000-0x11efff kept, 0x11f000 cut
    # chunk 1: first page cut; chunk 2: one page cut in the middle
    assert got == [(0x100000, 0x1000), (0x103000, 0x1C000), (0x121000, 0xF000),
                   (0x200000, 0x50000), (0x251000, 0x12F000)]
    data = src.dump_read(0x200000, 0x150000)
    assert data == bytes(memory[0x200000:0x350000])
    readers = src.dump_chunk_readers(areas)
    assert [(a, s) for a, s, _r in readers] == got
    assert readers[1][2](0x10, 0x20) == bytes(memory[0x103010:0x103030])
    src.nmi_cont()
    assert not fake.frozen and fake.cont_count == 1 and fake.nmi_mode == abi.NmiMode.RESUME
    src.nmi_cont()                              # not frozen: no-op
    assert fake.cont_count == 1
    # level 0 afterwards still lacks the cleared pages (sticky bitmap, §2.9)
    src.set_level(0)
    src.nmi()
    assert [(c.addr, c.size) for c in src.query_mem_areas().chunks] == got
    src.nmi_cont()


def test_level0_dump_covers_each_chunk_separately(memory, device):
    fake, src = make(memory, device)
    src.set_level(0)
    src.nmi()
    # the two touching chunks stay two entries
    assert [(c.addr, c.size) for c in src.query_mem_areas().chunks] == CHUNKS
    src.nmi_cont()


def test_bad_level_is_refused_before_the_driver(memory, device):
    fake, src = make(memory, device)
    with pytest.raises(LiveError, match="0 or 24"):
        src.set_level(4)
    assert "SET_LEVEL" not in fake.ops


def test_missing_device_one_line_error(tmp_path):
    with pytest.raises(LiveError) as e:
        IhkDeviceSource(3, path=str(tmp_path / "mcos3"))
    assert str(e.value) == f"McKernel OS 3 is not present (no {tmp_path / 'mcos3'})"
    with pytest.raises(LiveError, match=r"McKernel OS 7 is not present \(no /dev/mcos7\)"):
        IhkDeviceSource(7)


def test_unopenable_device_says_permission(device, monkeypatch):
    os.chmod(device, 0)
    if os.geteuid() == 0:  # root opens anything: make open() answer as for a non-owner
        real_open = os.open

        def refusing_open(path, *a, **kw):
            if os.fspath(path) == device:
                raise PermissionError(13, "Permission denied", path)
            return real_open(path, *a, **kw)
        monkeypatch.setattr(os, "open", refusing_open)
    with pytest.raises(LiveError, match="no permission"):
        IhkDeviceSource(0, path=device, ioctl=lambda *a: 0)


@pytest.mark.parametrize("status", [abi.OsStatus.NOT_BOOTED, abi.OsStatus.SHUTDOWN])
def test_not_booted_is_reported(memory, device, status):
    fake = FakeIhk(memory=memory, chunks=list(CHUNKS), kernel_base=KERNEL_BASE, status=status)
    with pytest.raises(LiveError, match=f"McKernel OS 0 is not booted \\(status {status.name}\\)"):
        IhkDeviceSource(0, path=device, ioctl=fake.ioctl)


def test_panicked_kernel_is_still_readable(memory, device):
    fake = FakeIhk(memory=memory, chunks=list(CHUNKS), kernel_base=KERNEL_BASE, status=abi.OsStatus.FAILED)
    src = IhkDeviceSource(0, path=device, ioctl=fake.ioctl)
    assert src.status() == abi.OsStatus.FAILED
    assert src.read(0x100000, 4) == bytes(memory[0x100000:0x100004])


def test_a_regular_file_is_not_an_ihk_device(device):
    # the real fcntl.ioctl on a regular file: ENOTTY
    with pytest.raises(LiveError, match="not an IHK OS device"):
        IhkDeviceSource(0, path=device)


def test_file_backed_emulator_and_named_ioctl(memory, tmp_path):
    path = str(tmp_path / "mcos1")
    FakeIhk(memory=memory, chunks=list(CHUNKS), kernel_base=KERNEL_BASE).save(path)
    src = IhkDeviceSource(1, path=path, ioctl="mcktools.live.fake_ihk:file_ioctl")
    assert src.ioctl_impl is file_ioctl
    assert ioctl_name(src.ioctl_impl) == "mcktools.live.fake_ihk:file_ioctl"
    assert src.read(0x123456, 100) == bytes(memory[0x123456:0x1234BA])
    src.set_level(0)
    src.nmi()
    assert FakeIhk.load(path).frozen
    src.nmi_cont()
    state = FakeIhk.load(path)
    assert not state.frozen and state.cont_count == 1


def test_bad_ioctl_names_are_user_errors(device):
    for bad in ("nocolon", "no.such.module:f", "mcktools.live.fake_ihk:nothing"):
        with pytest.raises(McktoolsError):
            IhkDeviceSource(0, path=device, ioctl=bad)
    with pytest.raises(LiveError):
        ioctl_name(lambda fd, r, a: 0)


def test_cli_gets_one_line_for_a_missing_os(capsys):
    from mcktools.cli_errors import run_cli
    assert run_cli("mcinspect", lambda: IhkDeviceSource(5)) == 1
    err = capsys.readouterr().err
    assert err == "mcinspect: error: McKernel OS 5 is not present (no /dev/mcos5)\n"
