"""Generated corruption: random words of the synthetic kernel's data overwritten
with random values, pointers into other objects, or self-pointers.  Every
model view must either answer or raise a McktoolsError (one clear line for
the user) — never another exception, never hang."""

from __future__ import annotations

import random
import struct
import time

import pytest

from mcktools.errors import McktoolsError
from tests.model_synth import KBASE, LPOB, MAP_KERNEL_START, build, have_toolchain
from tests.model_synth.fakes import Overlay

pytestmark = pytest.mark.skipif(not have_toolchain(), reason="gcc/ld not installed")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return build(str(tmp_path_factory.mktemp("synth_fuzz")))


def exercise(t):
    from mcktools.model.kmsg import read_kmsg
    from mcktools.model.pagetables import Space
    from mcktools.model.vm import vm_ranges
    t.cpus()
    t.threads()
    for p in t.processes():
        vm_ranges(t, t.object(p.addr, "struct process"))
        if p.page_table:
            sp = Space(t, pid=p.pid)
            sp.lookup(0x400000)
            list(sp.all())
    read_kmsg(t)


def test_random_corruption(synth):
    from mcktools.debuginfo import Image
    from mcktools.memory.sources import open_source
    from mcktools.model.target import Target
    image = Image.open(synth.img)
    base = open_source(synth.dump)
    data_start = next(v for n, v in synth.symbols.items() if n == "thash") - MAP_KERNEL_START
    data_end = len(synth.data) - 8
    rng = random.Random(1234)
    outcomes = {"ok": 0, "error": 0}
    t0 = time.monotonic()
    for _ in range(300):
        patches = {}
        for _ in range(rng.randint(2, 12)):
            off = rng.randrange(data_start, data_end) & ~7
            kind = rng.random()
            if kind < 0.3:
                val = rng.getrandbits(64)
            elif kind < 0.6:          # a pointer to some other object (direct map)
                val = LPOB + KBASE + (rng.randrange(data_start, data_end) & ~7)
            elif kind < 0.8:          # a pointer to itself
                val = LPOB + KBASE + off
            else:
                val = rng.choice([0, 1, (1 << 64) - 1, 0x7FFFFFFF])
            patches[KBASE + off] = struct.pack("<Q", val)
        src = Overlay(base, patches)
        try:
            t = Target(image, src, force=True)
            exercise(t)
            outcomes["ok"] += 1
        except McktoolsError as exc:
            assert str(exc) and "\n" not in str(exc)
            outcomes["error"] += 1
    print(outcomes)
    assert outcomes["error"] > 0 and outcomes["ok"] > 0
    assert time.monotonic() - t0 < 60
