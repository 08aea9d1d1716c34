"""What kind of dump a file is, from its bytes (never from its name).

The sources layer tells mcdump / ELF core / kdump / flattened apart by magic;
this module refines that for users: an interactive (metadata-only) mcdump, a
Linux or QEMU vmcore versus another ELF core (a process core, or a McKernel
kernel core written by `mcdump to-elf`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import FormatError
from ..formats.elfcore import ElfCore
from ..formats.mcdump import McDump
from ..memory.sources import detect_format

MCDUMP = "mcdump"
MCDUMP_INTERACTIVE = "mcdump-interactive"
ELF_VMCORE = "elf-vmcore"
ELF_CORE = "elf-core"
MCK_ELF_CORE = "mckernel-elf-core"
KDUMP = "kdump"
FLATTENED = "flattened"

LABELS = {
    MCDUMP: "mcdump (ihkosctl dump format)",
    MCDUMP_INTERACTIVE: "interactive mcdump (metadata only, no memory contents)",
    ELF_VMCORE: "ELF vmcore",
    ELF_CORE: "ELF core",
    MCK_ELF_CORE: "McKernel kernel ELF core (mcdump to-elf)",
    KDUMP: "kdump-compressed vmcore",
    FLATTENED: "flattened kdump vmcore (makedumpfile -F)",
}

#: note name that `mcdump to-elf` writes so the core can be recognised later
MCK_NOTE_NAME = "MCKTOOLS"
NT_AUXV = 6
NT_FILE = 0x46494C45


@dataclass(frozen=True)
class Detected:
    kind: str
    label: str
    #: where the ELF vmcore came from, when the notes say ("Linux", "QEMU")
    origin: str | None = None


def vmcore_origin(core: ElfCore) -> str | None:
    names = {n.name for n in core.notes}
    if "VMCOREINFO" in names:
        return "Linux"
    if "QEMU" in names:
        return "QEMU dump-guest-memory"
    return None


def classify_elf_core(core: ElfCore) -> Detected:
    names = {n.name for n in core.notes}
    types = {n.type for n in core.notes}
    if MCK_NOTE_NAME in names:
        return Detected(MCK_ELF_CORE, LABELS[MCK_ELF_CORE])
    origin = vmcore_origin(core)
    if origin is not None:
        return Detected(ELF_VMCORE, f"{LABELS[ELF_VMCORE]} ({origin})", origin)
    if NT_AUXV in types or NT_FILE in types:
        return Detected(ELF_CORE, f"{LABELS[ELF_CORE]} (user process)")
    # Physical addresses in the segments are what a whole-machine dump has.
    if any(s.paddr not in (0, (1 << 64) - 1) for s in core.segments):
        return Detected(ELF_VMCORE, LABELS[ELF_VMCORE])
    return Detected(ELF_CORE, LABELS[ELF_CORE])


def detect(path: "str | os.PathLike[str]") -> Detected:
    """The kind of `path`; FormatError for anything that is not a dump."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise FormatError(f"{path} is a directory, not a dump file")
    if os.path.getsize(path) == 0:
        raise FormatError(f"{path} is empty, not a dump file")
    kind = detect_format(path)
    if kind == "mcdump":
        with McDump.open(path) as d:
            if d.interactive:
                return Detected(MCDUMP_INTERACTIVE, LABELS[MCDUMP_INTERACTIVE])
        return Detected(MCDUMP, LABELS[MCDUMP])
    if kind == "elfcore":
        with ElfCore.open(path) as core:
            return classify_elf_core(core)
    if kind == "kdump":
        return Detected(KDUMP, LABELS[KDUMP])
    if kind == "flattened":
        return Detected(FLATTENED, LABELS[FLATTENED])
    raise FormatError(f"{path}: unknown dump format")
