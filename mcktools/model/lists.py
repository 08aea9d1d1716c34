"""Bounded walks over kernel lists and red-black trees.

A dump can hold a half-updated or corrupted list: every walk remembers the
nodes it visited and stops with CorruptStructure on a cycle, a NULL link or a
pointer outside the dump, naming the structure it was walking.
"""

from __future__ import annotations

from typing import Any, Iterator

from ..errors import CorruptStructure, UnreadableAddress
from .objects import Object, container_of

#: hard cap on any walk, so a garbage pointer chain cannot run for long
MAX_NODES = 1 << 20
MAX_RB_DEPTH = 128


def _read_ptr(prog: Any, addr: int, what: str, role: str) -> int:
    try:
        return prog.mem.read_u64(addr)
    except UnreadableAddress as exc:
        raise CorruptStructure(f"{what}: {role} at {addr:#x} cannot be read ({exc})") from None


def list_for_each(prog: Any, head: int, what: str = "list") -> Iterator[int]:
    """Addresses of the `struct list_head` nodes of the circular list at `head`."""
    next_off = prog.offsetof("struct list_head", "next")
    node = _read_ptr(prog, head + next_off, what, "list head")
    seen = set()
    while node != head:
        if node == 0:
            raise CorruptStructure(f"{what}: NULL link in the list at {head:#x}")
        if node in seen or len(seen) >= MAX_NODES:
            raise CorruptStructure(
                f"{what}: list at {head:#x} is cyclic (node {node:#x} seen twice "
                "without returning to the head)")
        seen.add(node)
        nxt = _read_ptr(prog, node + next_off, what, f"node {node:#x}")
        yield node
        node = nxt


def list_for_each_entry(prog: Any, head: Object | int, typename: str, member: str,
                        what: str = "list") -> Iterator[Object]:
    """The `typename` objects linked through their `member` into the list at `head`."""
    head_addr = head.address_ if isinstance(head, Object) else head
    for node in list_for_each(prog, head_addr, what):
        yield container_of(prog, node, typename, member)


def list_empty(prog: Any, head: Object | int) -> bool:
    head_addr = head.address_ if isinstance(head, Object) else head
    return _read_ptr(prog, head_addr + prog.offsetof("struct list_head", "next"),
                     "list", "list head") == head_addr


def rbtree_inorder(prog: Any, root_node: int, what: str = "rb-tree") -> Iterator[int]:
    """Addresses of the `struct rb_node`s of a tree, in order (left, node, right).

    `root_node` is the value of `rb_root.rb_node`.
    """
    left_off = prog.offsetof("struct rb_node", "rb_left")
    right_off = prog.offsetof("struct rb_node", "rb_right")
    seen = set()
    stack: list[int] = []
    node = root_node
    while stack or node:
        while node:
            if node in seen or len(seen) >= MAX_NODES:
                raise CorruptStructure(f"{what}: node {node:#x} is reached twice (cyclic tree)")
            if len(stack) >= MAX_RB_DEPTH:
                raise CorruptStructure(f"{what}: tree deeper than {MAX_RB_DEPTH} (corrupt links)")
            seen.add(node)
            stack.append(node)
            node = _read_ptr(prog, node + left_off, what, f"rb_left of {node:#x}")
        node = stack.pop()
        yield node
        node = _read_ptr(prog, node + right_off, what, f"rb_right of {node:#x}")


def rbtree_for_each_entry(prog: Any, root: Object, typename: str, member: str,
                          what: str = "rb-tree") -> Iterator[Object]:
    """The `typename` objects of an rb-tree (`root` is a `struct rb_root` Object), in order."""
    top = int(root.rb_node)
    for node in rbtree_inorder(prog, top, what):
        yield container_of(prog, node, typename, member)
