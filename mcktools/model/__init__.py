"""The McKernel model: one Target (kernel image + memory) and typed views of it.

Modules: target (opening and the image/dump checks), objects (typed access:
`thread.proc.pid`), lists (bounded list and rb-tree walks), cpus, threads,
processes, vm, pagetables, kmsg, registers (thread contexts, panic_regs, user
frames), info, rows (the dataclasses frontends render).
"""

from .lists import list_for_each, list_for_each_entry, rbtree_for_each_entry, rbtree_inorder
from .objects import Object, container_of
from .target import Target, open_target

__all__ = ["Target", "open_target", "Object", "container_of", "list_for_each", "list_for_each_entry",
           "rbtree_inorder", "rbtree_for_each_entry"]
