"""Reading a kernel that changes under the reader (mcktools.live.consistent).

A fixture dump is served through a source that misbehaves the way a running
kernel does: a thread's status word that flips between reads, and a run
queue link that is NULL for a while (a list being updated).  Which thread
flips and which link breaks come from the fixture's manifest.
"""

from __future__ import annotations

import json
import struct

import pytest

from mcktools.debuginfo import Image
from mcktools.errors import CorruptStructure
from mcktools.live.consistent import ATTEMPTS, live_threads
from mcktools.memory.sources import open_source
from mcktools.model.target import Target


class Tampered:
    """A PhysicalSource over `base` whose 8 bytes at `pa` are replaced by
    `value(n)` on the n-th read that covers them (None = the real bytes)."""

    def __init__(self, base, pa, value):
        self.base, self.pa, self.value = base, pa, value
        self.description = base.description
        self.kernel_base = base.dump.kernel_base
        self.hits = 0

    def ranges(self):
        return self.base.ranges()

    def read(self, paddr, size):
        data = self.base.read(paddr, size)
        if paddr <= self.pa < paddr + size:
            self.hits += 1
            v = self.value(self.hits)
            if v is not None:
                off = self.pa - paddr
                buf = bytearray(data)
                buf[off:off + 8] = struct.pack("<Q", v)[:min(8, size - off)]
                data = bytes(buf)
        return data

    def close(self):
        self.base.close()


@pytest.fixture(scope="module")
def multi(fixture_dir):
    d = fixture_dir("multi")
    image = Image.open(str(d / "mckernel.img"))
    manifest = json.loads((d / "manifest.json").read_text())
    plain = Target(image, open_source(d / "level0.mcdump"))
    yield d, image, manifest, plain
    plain.close()


def _target(d, image, pa, value):
    src = Tampered(open_source(d / "level0.mcdump"), pa, value)
    t = Target(image, src)
    t.live = True
    return t, src


def test_thread_changing_between_reads_is_marked(multi):
    d, image, manifest, plain = multi
    victim = next(th for th in manifest["threads"] if th["state"] == "PS_INTERRUPTIBLE")
    status_pa = plain.kmap.resolve(victim["addr"] + image.offsetof("struct thread", "status"))[0]
    real = struct.unpack("<Q", plain.source.read(status_pa, 8))[0]
    running = image.enum_value("PS_RUNNING")
    # every other read of the word sees the thread running: a thread waking up and sleeping
    t, src = _target(d, image, status_pa,
                     lambda n: (real & ~0xFFFFFFFF) | running if n % 2 == 0 else None)
    rows = live_threads(t)
    changed = {r.tid for r in rows if r.changed}
    assert changed == {victim["tid"]}
    assert sorted(r.tid for r in rows) == sorted(th["tid"] for th in manifest["threads"])
    t.close()


def test_list_broken_for_a_while_is_read_again(multi):
    d, image, manifest, plain = multi
    cpu = next(c for c in manifest["cpus"] if c["runq"])
    head = cpu["clv"] + image.offsetof("struct cpu_local_var", "runq") + \
        image.offsetof("struct list_head", "next")
    head_pa = plain.kmap.resolve(head)[0]
    t, src = _target(d, image, head_pa, lambda n: 0 if n <= 3 else None)  # NULL link, then fixed
    rows = live_threads(t)
    assert sorted(r.tid for r in rows) == sorted(th["tid"] for th in manifest["threads"])
    assert src.hits > 3
    t.close()


def test_list_that_never_settles_ends_with_one_error(multi):
    d, image, manifest, plain = multi
    cpu = next(c for c in manifest["cpus"] if c["runq"])
    head = cpu["clv"] + image.offsetof("struct cpu_local_var", "runq") + \
        image.offsetof("struct list_head", "next")
    head_pa = plain.kmap.resolve(head)[0]
    # a link pointing at itself's neighbour forever: the bounded walk must stop
    t, src = _target(d, image, head_pa, lambda n: head + 0x1000)
    with pytest.raises(CorruptStructure, match="kept changing"):
        live_threads(t)
    assert src.hits <= 2 * ATTEMPTS + 2
    t.close()
