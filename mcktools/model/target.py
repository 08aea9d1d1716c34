"""Target: one McKernel node = kernel image (types, symbols) + physical memory.

Every frontend (mcinspect, eclair, gencore) starts here.  Opening a Target
first proves that the image belongs to the memory (the build-id note's bytes
in memory, `debug_constants` against DWARF and the file, the physical base
the kernel recorded for itself) and refuses with ImageMismatch otherwise,
unless `force=True`.  Then it learns the runtime address map from memory
(`linux_page_offset_base`, `init_pt`).
"""

from __future__ import annotations

import os
import struct
from typing import Any, Optional

from ..errors import DebugInfoError, ImageMismatch, McktoolsError, UnreadableAddress
from ..memory.translate import (
    LARGE_PAGE, MAP_KERNEL_START_DEFAULT, KernelMap, PageTableSpace, VirtualMemory,
)
from .imagelayout import ImageLayout
from .objects import Object

#: debug_constants[i] (reference §5): what each slot must equal in DWARF
DEBUG_CONSTANTS = (
    ("sizeof", "struct cpu_local_var", None),
    ("offsetof", "struct cpu_local_var", "current"),
    ("offsetof", "struct cpu_local_var", "runq"),
    ("offsetof", "struct cpu_local_var", "status"),
    ("offsetof", "struct cpu_local_var", "idle"),
    ("offsetof", "struct thread", "ctx"),
    ("offsetof", "struct thread", "sched_list"),
    ("offsetof", "struct thread", "proc"),
    ("offsetof", "struct thread", "status"),
    ("offsetof", "struct process", "pid"),
    ("offsetof", "struct thread", "tid"),
)

#: McKernel's values, used only when the image has no enumerators for them
PS_FALLBACK = {"PS_RUNNING": 0x1, "PS_INTERRUPTIBLE": 0x2, "PS_UNINTERRUPTIBLE": 0x4,
               "PS_ZOMBIE": 0x8, "PS_EXITED": 0x10, "PS_STOPPED": 0x20, "PS_TRACED": 0x40,
               "PS_STOPPING": 0x80, "PS_TRACING": 0x100, "PS_DELAY_STOPPED": 0x200,
               "PS_DELAY_TRACED": 0x400}
CPU_STATUS_FALLBACK = {"CPU_STATUS_DISABLE": 0, "CPU_STATUS_IDLE": 1, "CPU_STATUS_RUNNING": 2,
                       "CPU_STATUS_RESERVED": 3}


def _round_up(v: int, a: int) -> int:
    return (v + a - 1) & ~(a - 1)


class Target:
    """A kernel image bound to the physical memory it ran in."""

    def __init__(self, image: Any, source: Any, *, force: bool = False,
                 kernel_base: Optional[int] = None, layout: Optional[ImageLayout] = None):
        self.image = image
        self.source = source
        self.force = force
        self.warnings: list[str] = []
        self.read_phys = source.read
        if getattr(source, "interactive", False):
            raise McktoolsError(f"{self.description} is an interactive dump (metadata only, no memory "
                                "contents): there is nothing to inspect")
        self.layout = layout or ImageLayout.from_path(str(image.path))
        self._types: dict = {}
        self._offsets: dict = {}
        self._cache: dict = {}

        try:
            head = image.symbol("_head")
            self.map_kernel_start = head - 0x1000      # x86 linker script: _head = base + 4K
        except DebugInfoError:
            self.map_kernel_start = self.layout.start_vaddr & ~(LARGE_PAGE - 1) or MAP_KERNEL_START_DEFAULT
        image_end = _round_up(self.layout.end_vaddr, LARGE_PAGE) + LARGE_PAGE
        self.kernel_base = self._find_kernel_base(kernel_base)
        self.kmap = KernelMap(self.read_phys, self.kernel_base, map_kernel_start=self.map_kernel_start,
                              image_end=image_end)
        self.mem = VirtualMemory(self.read_phys, self.kmap, name="kernel")
        self._check_build_id()
        self._learn_address_map()
        self._check_constants()

    # --- construction ---
    @classmethod
    def open(cls, kernel: str, dump: str, *, force: bool = False) -> "Target":
        from ..debuginfo import Image
        from ..memory.sources import open_source

        image = Image.open(kernel)
        source = open_source(dump)
        try:
            return cls(image, source, force=force)
        except BaseException:
            source.close()
            raise

    def close(self) -> None:
        self.source.close()

    def __enter__(self) -> "Target":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _refuse(self, message: str) -> None:
        if self.force:
            self.warnings.append(message)
            return
        raise ImageMismatch(message + " (--force to use it anyway)")

    def _source_kernel_base(self) -> Optional[int]:
        for holder in (self.source, getattr(self.source, "dump", None)):
            kb = getattr(holder, "kernel_base", None) if holder is not None else None
            if isinstance(kb, int) and kb:
                return kb
        return None

    def _find_kernel_base(self, given: Optional[int]) -> int:
        """The PA of MAP_KERNEL_START: the dump's `kernel_base`, else found by locating
        the image's build-id note in physical memory (2 MiB-aligned candidates)."""
        kb = given if given is not None else self._source_kernel_base()
        if kb is not None:
            return kb
        lay = self.layout
        if lay.note_vaddr is None or not lay.note_bytes:
            raise ImageMismatch(f"{self.image.path}: the dump does not say where the kernel is "
                                "and the image has no loaded build-id note to find it")
        off = lay.note_vaddr - self.map_kernel_start
        for r in self.source.ranges():
            cand = (r.start - off) & ~(LARGE_PAGE - 1)
            while cand + off < r.end:
                pa = cand + off
                if pa >= r.start and pa + len(lay.note_bytes) <= r.end:
                    try:
                        if self.read_phys(pa, len(lay.note_bytes)) == lay.note_bytes:
                            return cand
                    except UnreadableAddress:
                        pass
                cand += LARGE_PAGE
        raise ImageMismatch(f"kernel image {self.image.path} (build-id {self.build_id_hex}) is not "
                            f"in {self.description}: the image does not belong to this dump")

    @property
    def build_id_hex(self) -> str:
        bid = self.layout.build_id or getattr(self.image, "build_id", None)
        return bid.hex() if bid else "none"

    @property
    def description(self) -> str:
        return getattr(self.source, "description", "the dump")

    def _check_build_id(self) -> None:
        lay = self.layout
        if lay.note_vaddr is None or not lay.note_bytes:
            self.warnings.append("image has no loaded build-id note; checked debug_constants only")
            return
        try:
            mem = self.mem.read(lay.note_vaddr, len(lay.note_bytes))
        except UnreadableAddress as exc:
            self._refuse(f"the build-id note of {self.image.path} cannot be read from "
                         f"{self.description} ({exc}); wrong image or wrong kernel_base")
            return
        if mem != lay.note_bytes:
            desc_mem = mem[-len(lay.build_id):].hex() if lay.build_id else mem.hex()
            self._refuse(f"kernel image {self.image.path} does not match {self.description}: "
                         f"build-id {self.build_id_hex} in the image, {desc_mem} in memory")

    def _check_constants(self) -> None:
        try:
            addr = self.image.symbol("debug_constants")
        except DebugInfoError:
            self.warnings.append("image has no debug_constants")
            return
        n = len(DEBUG_CONSTANTS) + 1
        try:
            mem = struct.unpack(f"<{n}Q", self.mem.read(addr, 8 * n))
        except UnreadableAddress as exc:
            self._refuse(f"debug_constants cannot be read from {self.description} ({exc})")
            return
        filed = self.layout.read_file(addr, 8 * n)
        if filed is not None and struct.unpack(f"<{n}Q", filed) != mem:
            self._refuse(f"debug_constants in {self.description} differ from {self.image.path}")
            return
        for i, (op, typ, member) in enumerate(DEBUG_CONSTANTS):
            want = self.sizeof(typ) if op == "sizeof" else self.offsetof(typ, member)
            if mem[i] != want:
                self._refuse(f"debug_constants[{i}] is {mem[i]} in memory but DWARF says "
                             f"{op}({typ}{', ' + member if member else ''}) = {want}")
                return

    def _learn_address_map(self) -> None:
        try:
            phys_base = self.read_u64(self.image.symbol("x86_kernel_phys_base"))
            if phys_base != self.kernel_base:
                self._refuse(f"x86_kernel_phys_base in memory is {phys_base:#x} but the image was "
                             f"found at {self.kernel_base:#x}")
        except DebugInfoError:
            pass
        try:
            lpob = self.read_u64(self.image.symbol("linux_page_offset_base"))
        except DebugInfoError:
            lpob = None
        if lpob:
            self.kmap.linux_page_offset_base = lpob
            self.kmap.rebuild()
        try:
            pgd_va = self.read_u64(self.image.symbol("init_pt"))
            self.kmap.init_pt_pa = self.kmap.resolve(pgd_va)[0] if pgd_va else None
            self.init_pt_va = pgd_va
        except (DebugInfoError, UnreadableAddress) as exc:
            self.warnings.append(f"init_pt not usable: {exc}")
            self.init_pt_va = None

    # --- types and symbols (cached: model code asks the same questions many times) ---
    def type(self, name: str) -> Any:
        t = self._types.get(name)
        if t is None:
            t = self._types[name] = self.image.type(name)
        return t

    def offsetof(self, typename: str, member: str) -> int:
        key = (typename, member)
        v = self._offsets.get(key)
        if v is None:
            v = self._offsets[key] = self.image.offsetof(typename, member)
        return v

    def sizeof(self, typename: str) -> int:
        key = (typename, None)
        v = self._offsets.get(key)
        if v is None:
            v = self._offsets[key] = self.image.sizeof(typename)
        return v

    def symbol(self, name: str) -> int:
        return self.image.symbol(name)

    def variable(self, name: str) -> Object:
        var = self.image.variable(name)
        return Object(self, var.address, var.type)

    def object(self, address: int, typename: str) -> Object:
        return Object(self, address, self.type(typename))

    def read(self, va: int, size: int) -> bytes:
        return self.mem.read(va, size)

    def read_u64(self, va: int) -> int:
        return self.mem.read_u64(va)

    def enum_names(self, fallback: dict) -> dict:
        """{value: name} for the given enumerator names, values from DWARF when present."""
        key = ("enum", tuple(fallback))
        if key not in self._cache:
            out = {}
            for name, default in fallback.items():
                try:
                    value = self.image.enum_value(name)
                except (DebugInfoError, KeyError, LookupError):
                    value = default
                out.setdefault(value, name)
            self._cache[key] = out
        return self._cache[key]

    def ps_name(self, value: int) -> str:
        names = self.enum_names(PS_FALLBACK)
        if value in names:
            return names[value]
        parts = [n for v, n in sorted(names.items()) if v and value & v == v]
        return "|".join(parts) if parts and sum(v for v, n in names.items() if n in parts) == value \
            else f"{value:#x}"

    def cpu_status_name(self, value: int) -> str:
        return self.enum_names(CPU_STATUS_FALLBACK).get(value, f"{value:#x}")

    # --- address spaces ---
    def address_space(self, pgd_va: int, name: str = "process") -> VirtualMemory:
        pgd_pa = self.kmap.resolve(pgd_va)[0]
        return VirtualMemory(self.read_phys, PageTableSpace(self.read_phys, pgd_pa, fallback=self.kmap,
                                                             name=name), name=name)

    def lookup_symbol(self, addr: int):
        try:
            return self.image.lookup(addr)
        except (DebugInfoError, AttributeError):
            return None

    # --- model views (memoised per Target: a dump does not change) ---
    def forget_state(self) -> None:
        """Drop memoised CPUs, threads and processes: a live kernel moves on, so the
        next query must read memory again.  Symbols and enum names stay cached."""
        for key in ("cpus", "threads", "processes"):
            self._cache.pop(key, None)

    def _memo(self, key: str, fn):
        if key not in self._cache:
            self._cache[key] = fn(self)
        return self._cache[key]

    def cpus(self):
        from .cpus import read_cpus
        return self._memo("cpus", read_cpus)

    def threads(self):
        from .threads import read_threads
        return self._memo("threads", read_threads)

    def processes(self):
        from .processes import read_processes
        return self._memo("processes", read_processes)

    def kernel_base_source(self) -> str:
        return "dump metadata" if self._source_kernel_base() is not None else "build-id search"


def open_target(kernel: Optional[str], dump: Optional[str], *, force: bool = False) -> Target:
    """Open from paths, with MCKERNEL_IMG / MCKERNEL_DUMP as defaults."""
    kernel = kernel or os.environ.get("MCKERNEL_IMG")
    dump = dump or os.environ.get("MCKERNEL_DUMP")
    if not kernel:
        raise McktoolsError("no kernel image: give --kernel IMG or set MCKERNEL_IMG")
    if not dump:
        raise McktoolsError("no dump: give --dump FILE or set MCKERNEL_DUMP")
    return Target.open(kernel, dump, force=force)
