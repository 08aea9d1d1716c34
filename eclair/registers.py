"""Register layout and target description served to gdb (amd64).

The target description fixes the remote register numbering and so the `g`
layout: registers in the order listed here, little-endian, each `bitsize`
wide.  gdb's amd64 support validates the "org.gnu.gdb.i386.core" feature
against its own register names, and that feature must carry the x87
registers too (i386-tdep.c checks num_core_regs = 24 GPR/segment + 16 x87),
so they are described even though a dump never holds them; they are always
sent as unavailable.  fs_base/gs_base go in "org.gnu.gdb.i386.segments", the
feature gdb's 64bit-segments.xml uses for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional
from xml.sax.saxutils import quoteattr


@dataclass(frozen=True)
class RegDef:
    name: str
    bitsize: int
    type: str
    feature: str
    group: Optional[str] = None

    @property
    def size(self) -> int:
        return self.bitsize // 8


_CORE = "org.gnu.gdb.i386.core"
_SEGMENTS = "org.gnu.gdb.i386.segments"


def _amd64() -> tuple[RegDef, ...]:
    regs = []
    for name in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi"):
        regs.append(RegDef(name, 64, "int64", _CORE))
    regs.append(RegDef("rbp", 64, "data_ptr", _CORE))
    regs.append(RegDef("rsp", 64, "data_ptr", _CORE))
    for i in range(8, 16):
        regs.append(RegDef(f"r{i}", 64, "int64", _CORE))
    regs.append(RegDef("rip", 64, "code_ptr", _CORE))
    regs.append(RegDef("eflags", 32, "i386_eflags", _CORE))
    for name in ("cs", "ss", "ds", "es", "fs", "gs"):
        regs.append(RegDef(name, 32, "int32", _CORE))
    for i in range(8):
        regs.append(RegDef(f"st{i}", 80, "i387_ext", _CORE))
    for name in ("fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop"):
        regs.append(RegDef(name, 32, "int", _CORE, "float"))
    regs.append(RegDef("fs_base", 64, "int", _SEGMENTS))
    regs.append(RegDef("gs_base", 64, "int", _SEGMENTS))
    return tuple(regs)


AMD64_REGISTERS: tuple[RegDef, ...] = _amd64()
AMD64_INDEX = {r.name: i for i, r in enumerate(AMD64_REGISTERS)}

# Bit names of EFLAGS so gdb prints "[ IF ZF ]" rather than a bare number.
_EFLAGS_BITS = [
    (0, "CF"), (1, ""), (2, "PF"), (4, "AF"), (6, "ZF"), (7, "SF"), (8, "TF"),
    (9, "IF"), (10, "DF"), (11, "OF"), (14, "NT"), (16, "RF"), (17, "VM"),
    (18, "AC"), (19, "VIF"), (20, "VIP"), (21, "ID"),
]


class RegisterLayout:
    """One architecture's register set: encodes values for `g`/`p` and
    produces target.xml."""

    def __init__(self, architecture: str, registers: tuple[RegDef, ...]):
        self.architecture = architecture
        self.registers = registers
        self.index = {r.name: i for i, r in enumerate(registers)}

    @staticmethod
    def encode_one(reg: RegDef, value: Optional[int]) -> str:
        """Little-endian hex of one register, or 'xx' per byte when unknown.

        Unknown must never be sent as zeros: gdb shows 'xx' as <unavailable>.
        """
        if value is None:
            return "xx" * reg.size
        return (value & ((1 << reg.bitsize) - 1)).to_bytes(reg.size, "little").hex()

    def encode_all(self, values: Mapping[str, Optional[int]]) -> str:
        return "".join(self.encode_one(r, values.get(r.name)) for r in self.registers)

    def encode_number(self, regno: int, values: Mapping[str, Optional[int]]) -> Optional[str]:
        if not 0 <= regno < len(self.registers):
            return None
        reg = self.registers[regno]
        return self.encode_one(reg, values.get(reg.name))

    def target_xml(self) -> str:
        lines = [
            '<?xml version="1.0"?>',
            '<!DOCTYPE target SYSTEM "gdb-target.dtd">',
            '<target version="1.0">',
            f"  <architecture>{self.architecture}</architecture>",
        ]
        features: dict[str, list[RegDef]] = {}
        for reg in self.registers:
            features.setdefault(reg.feature, []).append(reg)
        for name, regs in features.items():
            lines.append(f"  <feature name={quoteattr(name)}>")
            if any(r.type == "i386_eflags" for r in regs):
                lines.append('    <flags id="i386_eflags" size="4">')
                for bit, field in _EFLAGS_BITS:
                    lines.append(f'      <field name="{field}" start="{bit}" end="{bit}"/>')
                lines.append("    </flags>")
            for reg in regs:
                group = f" group={quoteattr(reg.group)}" if reg.group else ""
                lines.append(
                    f"    <reg name={quoteattr(reg.name)} bitsize=\"{reg.bitsize}\""
                    f" type={quoteattr(reg.type)} regnum=\"{self.index[reg.name]}\"{group}/>"
                )
            lines.append("  </feature>")
        lines.append("</target>")
        return "\n".join(lines) + "\n"


AMD64 = RegisterLayout("i386:x86-64", AMD64_REGISTERS)

LAYOUTS = {"i386:x86-64": AMD64}
