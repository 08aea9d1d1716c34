"""The upstream allocator path of level-24 classification: free pages from
`memory_nodes[i].free_chunks`, an rb-tree of `struct free_chunk`.

The reference kernel uses a page bitmap instead, so this path is checked on a
small statically-initialised C program compiled with gcc and linked with ld:
the tree, its node layout and the array length come from real DWARF, and the
expected free ranges are the literals written into the C source.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from mcktools.convert.filter import apply, free_pages, free_pages_rbtree

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("ld") is None,
                                reason="needs gcc and ld")

FREE = {0: [(0x1010000, 0x3000), (0x1020000, 0x1000), (0x1005000, 0x2000), (0x1030000, 0x10000)],
        1: [(0x2004000, 0x1000)]}

SOURCE = r"""
struct rb_node { unsigned long __rb_parent_color; struct rb_node *rb_right; struct rb_node *rb_left; };
struct rb_root { struct rb_node *rb_node; };
struct free_chunk { unsigned long addr, size; struct rb_node node; void *list_next; };
struct ihk_mc_numa_node { int id; int linux_numa_id; struct rb_root free_chunks; unsigned long nr_free_pages; };

struct free_chunk n0[4] = {
    { 0x1010000, 0x3000, { 0, &n0[2].node, &n0[1].node } },   /* root: right 0x1020000, left 0x1005000 */
    { 0x1005000, 0x2000, { 0, 0, 0 } },
    { 0x1020000, 0x1000, { 0, &n0[3].node, 0 } },
    { 0x1030000, 0x10000, { 0, 0, 0 } },
};
struct free_chunk n1[1] = { { 0x2004000, 0x1000, { 0, 0, 0 } } };
struct ihk_mc_numa_node memory_nodes[2] = {
    { 0, 0, { &n0[0].node }, 22 },
    { 1, 1, { &n1[0].node }, 1 },
};
void _start(void) {}
"""


class ImageOnly:
    """A Target stand-in whose memory is the image's own initialised data."""

    def __init__(self, image):
        self.image = image
        self.mem = self

    def read(self, va, size):
        return self.image.read_static(va, size)

    def read_u64(self, va):
        return int.from_bytes(self.read(va, 8), "little")

    def offsetof(self, t, m):
        return self.image.offsetof(t, m)

    def variable(self, name):
        from mcktools.model.objects import Object
        var = self.image.variable(name)
        return Object(self, var.address, var.type)


@pytest.fixture(scope="module")
def tree_image(tmp_path_factory):
    d = tmp_path_factory.mktemp("freetree")
    (d / "t.c").write_text(SOURCE)
    subprocess.run(["gcc", "-c", "-g", "-O0", "-fno-pic", "-fno-pie", "-ffreestanding", "-o", str(d / "t.o"),
                    str(d / "t.c")], check=True)
    subprocess.run(["ld", "-static", "-nostdlib", "-Ttext=0x401000", "-o", str(d / "t.elf"), str(d / "t.o")],
                   check=True)
    from mcktools.debuginfo import Image
    return Image.open(str(d / "t.elf"), use_cache=False)


def test_free_chunk_tree_walk(tree_image):
    got = sorted(free_pages_rbtree(ImageOnly(tree_image)))
    assert got == sorted(FREE[0] + FREE[1])
    ranges, how = free_pages(ImageOnly(tree_image))
    assert how == "free-chunk rb-tree" and sorted(ranges) == got


def test_free_ranges_cut_chunks_like_ihk():
    chunks = [(0x1000000, 0x40000), (0x2000000, 0x8000)]
    kept = apply(chunks, FREE[0] + FREE[1])
    # expected by hand: every page of the chunks outside the free ranges, block by block
    assert kept == [(0x1000000, 0x5000), (0x1007000, 0x9000), (0x1013000, 0xd000), (0x1021000, 0xf000),
                    (0x2000000, 0x4000), (0x2005000, 0x3000)]
