"""Corrupt kernel stacks end a backtrace with a "stack corrupt at ..." marker: patched
copies of a fixture dump (through the CLI) and generated garbage over real stacks."""

from __future__ import annotations

import json
import random
import shutil
import struct

import pytest

from tests.test_model_fixtures import _fixture

JUNK = 0x4141414141414141


@pytest.fixture(scope="module")
def multi(fixture_dir):
    folder = _fixture(fixture_dir, "multi")
    return folder, json.loads((folder / "manifest.json").read_text())


def _sleeper(man):
    return next(t for t in man["threads"]
                if not t["idle"] and t["state"] == "PS_INTERRUPTIBLE" and t["kernel_rsp"])


def _file_offset(dump_path, man, va):
    """File offset of a direct-map VA in an mcdump (PA = VA - linux_page_offset_base)."""
    from mcktools.formats.mcdump import McDump
    pa = va - man["linux_page_offset_base"]
    with McDump.open(str(dump_path)) as d:
        for c in d.chunks:
            if c.addr <= pa < c.addr + c.size:
                return c.file_offset + (pa - c.addr)
    raise AssertionError(f"{va:#x} not in the dump")


def _patched(tmp_path, folder, man, patches):
    dump = tmp_path / "patched.mcdump"
    shutil.copyfile(folder / "level0.mcdump", dump)
    with open(dump, "r+b") as f:
        for va, data in patches:
            f.seek(_file_offset(dump, man, va))
            f.write(data)
    return dump


def _bt(folder, dump, *args):
    from tests.test_mcinspect_fixtures import inproc
    return inproc("-k", str(folder / "mckernel.img"), "-d", str(dump), "bt", *args)


def test_garbage_return_address(tmp_path, multi):
    folder, man = multi
    th = _sleeper(man)
    # [ctx.rsp] is the return address into schedule() (reference 7.1)
    dump = _patched(tmp_path, folder, man, [(th["kernel_rsp"], struct.pack("<Q", JUNK))])
    code, out, err = _bt(folder, dump, str(th["tid"]))
    assert code == 0 and "Traceback" not in err, err
    lines = out.splitlines()
    assert "ihk_mc_switch_context+0x0" in lines[1]
    assert lines[-1].strip() == (f"-- stack corrupt at {th['kernel_rsp']:#x}: return address "
                                 f"{JUNK:#x} is not kernel code")
    code, out, _ = _bt(folder, dump, str(th["tid"]), "--json")
    row = json.loads(out)[0]
    assert len(row["frames"]) == 1 and row["corrupt"].startswith(f"stack corrupt at {th['kernel_rsp']:#x}")


def _ctx_slot(folder, man, th):
    """Offset of ctx.rsp in the struct thread, found by its value (the manifest's kernel_rsp);
    ctx.rbp follows it (x86_kregs, reference 7.1).  Returns (offset, ctx.rbp)."""
    off = _file_offset(folder / "level0.mcdump", man, th["addr"])
    with open(folder / "level0.mcdump", "rb") as f:
        f.seek(off)
        raw = f.read(0x2000)
    slot = raw.find(struct.pack("<Q", th["kernel_rsp"]))
    assert slot >= 0 and slot % 8 == 0
    return slot, struct.unpack_from("<Q", raw, slot + 8)[0]


def test_saved_stack_pointer_outside_the_stack(tmp_path, multi):
    folder, man = multi
    th = _sleeper(man)
    slot, _ = _ctx_slot(folder, man, th)
    dump = _patched(tmp_path, folder, man, [(th["addr"] + slot, struct.pack("<Q", 0x1000))])
    code, out, err = _bt(folder, dump, f"{th['addr']:x}")
    assert code == 0 and "Traceback" not in err, err
    assert "-- stack corrupt at 0x1000: stack pointer outside the kernel stack" in out


def test_looping_stack_is_bounded(tmp_path, multi):
    folder, man = multi
    th = _sleeper(man)
    _, rbp = _ctx_slot(folder, man, th)
    top = th["addr"] + 0x20000          # rsp0 of a user thread (reference 7.1)
    assert th["kernel_rsp"] < rbp < top
    # a frame-pointer chain that says "return into schedule" again and again up to the
    # stack top: every step is plausible, only the frame limit / stack bounds end the walk
    chain = b"".join(struct.pack("<QQ", a + 16, th["kernel_rip"]) for a in range(rbp, top - 16, 16))
    dump = _patched(tmp_path, folder, man, [(rbp, chain)])
    links = len(chain) // 16
    assert links > 20
    code, out, err = _bt(folder, dump, str(th["tid"]), "--max-frames", "20")
    assert code == 0 and "Traceback" not in err, err
    assert out.count(" schedule+") == 19
    assert out.splitlines()[-1].strip() == "-- trace truncated after 20 frames"
    code, out, err = _bt(folder, dump, str(th["tid"]), "--max-frames", "4096")
    assert code == 0 and "Traceback" not in err, err
    assert out.splitlines()[-1].strip().startswith("-- stack corrupt at")
    assert out.count(" schedule+") >= links


class _Overlay:
    """Kernel memory with some bytes replaced (generated corruption, no file copy)."""

    def __init__(self, mem, patches: dict):
        self._mem = mem
        self._patches = patches

    def read(self, va, size):
        data = bytearray(self._mem.read(va, size))
        for i in range(size):
            b = self._patches.get(va + i)
            if b is not None:
                data[i] = b
        return bytes(data)

    def read_u64(self, va):
        return struct.unpack("<Q", self.read(va, 8))[0]

    def __getattr__(self, name):
        return getattr(self._mem, name)


@pytest.mark.parametrize("seed", range(40))
def test_random_garbage_never_raises(multi, seed):
    from mcktools.model.target import Target
    from mcktools.model.unwind import thread_backtrace
    folder, man = multi
    rng = random.Random(seed)
    with Target.open(str(folder / "mckernel.img"), str(folder / "level0.mcdump")) as t:
        infos = [i for i in t.threads() if not i.row.current]
        info = rng.choice(infos)
        rsp = next(x["kernel_rsp"] for x in man["threads"] if x["addr"] == info.row.addr)
        patches = {}
        for _ in range(rng.randint(1, 12)):
            at = rsp + rng.randrange(0, 0x180, 8)
            word = rng.choice([rng.getrandbits(64), 0, rsp + rng.randrange(-64, 256, 8),
                               t.symbol("schedule") + rng.randrange(0, 0x140)])
            for i, b in enumerate(struct.pack("<Q", word)):
                patches[at + i] = b
        t.mem = _Overlay(t.mem, patches)
        bt = thread_backtrace(t, info, max_frames=64)
    assert len(bt.frames) <= 64
    assert bt.frames and bt.frames[0].function == "ihk_mc_switch_context"
    assert bt.end
    if bt.corrupt:
        assert bt.corrupt.startswith("stack corrupt")
    sps = [f.sp for f in bt.frames if not f.inlined]
    assert sps == sorted(sps)
