"""Small test doubles over real sources: patched memory, a source without dump metadata."""

from __future__ import annotations


class Overlay:
    """A PhysicalSource that serves `base` with some bytes replaced (corruption tests)."""

    def __init__(self, base, patches: dict):
        self.base = base
        self.patches = patches
        self.description = "patched " + base.description

    def read(self, paddr, size):
        data = bytearray(self.base.read(paddr, size))
        for pa, blob in self.patches.items():
            for i, b in enumerate(blob):
                if paddr <= pa + i < paddr + size:
                    data[pa + i - paddr] = b
        return bytes(data)

    def ranges(self):
        return self.base.ranges()

    def close(self):
        self.base.close()


class Anonymous:
    """A source that hides the dump's metadata (like a vmcore: no kernel_base)."""

    def __init__(self, base):
        self.base = base
        self.description = "anonymous memory"

    def read(self, paddr, size):
        return self.base.read(paddr, size)

    def ranges(self):
        return self.base.ranges()

    def close(self):
        self.base.close()
