"""The few facts the harness needs from the kernel image, read with pyelftools.

The harness plays Linux, which knows McKernel only through a handful of
symbols and the shared `smp_boot_param` / `ihk_dump_page_set` /
`ihk_dump_page` layouts.  Offsets come from the image's DWARF (our reference
kernel need not match McKernel's byte offsets), read here directly so the
harness does not depend on the richer mcktools.debuginfo layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from elftools.elf.elffile import ELFFile

from ..errors import DebugInfoError

MAP_KERNEL_START = 0xFFFFFFFFFE800000


def _member_offset(die) -> int | None:
    attr = die.attributes.get("DW_AT_data_member_location")
    if attr is None:
        bit = die.attributes.get("DW_AT_data_bit_offset")
        return None if bit is None else bit.value // 8
    if isinstance(attr.value, int):
        return attr.value
    # DWARF 2 style location expression: DW_OP_plus_uconst N
    if isinstance(attr.value, list) and len(attr.value) >= 2 and attr.value[0] == 0x23:
        return attr.value[1]
    return None


@dataclass(frozen=True)
class StructLayout:
    name: str
    size: int
    members: dict  # member name -> byte offset

    def __getitem__(self, member: str) -> int:
        try:
            return self.members[member]
        except KeyError:
            raise DebugInfoError(f"struct {self.name} has no member {member!r} in the kernel image") from None


class ImageInfo:
    """Symbols and selected struct layouts of one kernel image."""

    def __init__(self, path: str, structs: tuple[str, ...] = ("smp_boot_param", "ihk_dump_page_set", "ihk_dump_page")):
        self.path = str(path)
        with open(self.path, "rb") as f:
            elf = ELFFile(f)
            self.symbols = self._read_symbols(elf)
            self.structs = self._read_structs(elf, set(structs)) if elf.has_dwarf_info() else {}

    @staticmethod
    def _read_symbols(elf: ELFFile) -> dict[str, int]:
        out: dict[str, int] = {}
        symtab = elf.get_section_by_name(".symtab")
        if symtab is None:
            return out
        for sym in symtab.iter_symbols():
            if sym.name and sym["st_shndx"] != "SHN_UNDEF":
                # Prefer global definitions over same-named locals.
                if sym.name not in out or sym["st_info"]["bind"] == "STB_GLOBAL":
                    out[sym.name] = sym["st_value"]
        return out

    @staticmethod
    def _read_structs(elf: ELFFile, wanted: set[str]) -> dict[str, StructLayout]:
        found: dict[str, StructLayout] = {}
        dwarf = elf.get_dwarf_info()
        for cu in dwarf.iter_CUs():
            for die in cu.get_top_DIE().iter_children():
                if die.tag != "DW_TAG_structure_type" or "DW_AT_declaration" in die.attributes:
                    continue
                name_attr = die.attributes.get("DW_AT_name")
                if name_attr is None:
                    continue
                name = name_attr.value.decode()
                if name not in wanted or name in found:
                    continue
                members = {}
                for m in die.iter_children():
                    if m.tag == "DW_TAG_member" and "DW_AT_name" in m.attributes:
                        off = _member_offset(m)
                        if off is not None:
                            members[m.attributes["DW_AT_name"].value.decode()] = off
                found[name] = StructLayout(name, die.attributes["DW_AT_byte_size"].value, members)
            if len(found) == len(wanted):
                break
        return found

    def symbol(self, name: str) -> int:
        try:
            return self.symbols[name]
        except KeyError:
            raise DebugInfoError(f"symbol {name!r} is not in {self.path}") from None

    def struct(self, name: str) -> StructLayout:
        try:
            return self.structs[name]
        except KeyError:
            raise DebugInfoError(f"struct {name} is not described in the DWARF of {self.path}") from None

    def image_pa(self, vaddr: int, kernel_base: int) -> int:
        """PA of an image address: IHK loads PT_LOADs at kernel_base + (v − MAP_KERNEL_START)."""
        return vaddr - MAP_KERNEL_START + kernel_base


@lru_cache(maxsize=8)
def _cached(path: str, mtime_ns: int, size: int) -> ImageInfo:
    return ImageInfo(path)


def image_info(path: str) -> ImageInfo:
    """ImageInfo cached per (path, mtime, size): tests boot the same image many times."""
    import os

    st = os.stat(path)
    return _cached(str(path), st.st_mtime_ns, st.st_size)
