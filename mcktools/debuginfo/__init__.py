"""The kernel image: ELF symbols, build-id, segments and DWARF type layouts.

`Image.open(path)` is the entry point; type layouts come from a compact index
built once per image content and cached on disk (see cache.py).
"""

from __future__ import annotations

from .elffile import Segment, Symbol
from .image import STATS, Image, Variable, clear_memory_cache
from .types import (ArrayType, BaseType, EnumType, FunctionType, Member, PointerType, StructType, Type,
                    TypedefType, VoidType, strip_typedefs, type_name)

__all__ = ["Image", "Variable", "Segment", "Symbol", "STATS", "clear_memory_cache", "ArrayType", "BaseType",
           "EnumType", "FunctionType", "Member", "PointerType", "StructType", "Type", "TypedefType", "VoidType",
           "strip_typedefs", "type_name"]
