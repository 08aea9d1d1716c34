"""Optional bridge to drgn: a drgn.Program that knows the kernel image.

drgn brings CFI unwinding and a C-expression view of memory.  McKernel is not
Linux, so the Program is built by hand (see toolchain notes): the image is an
"extra module" whose address ranges must be set from the PT_LOAD headers before
the file is attached.  Memory is the caller's business (`add_memory_segment`).
"""

from __future__ import annotations

from ..errors import DebugInfoError

_EM_X86_64 = 62
_EM_AARCH64 = 183


def drgn_program(image):
    """A drgn.Program with `image`'s debug info loaded (no memory attached)."""
    try:
        import drgn
    except ImportError:
        raise DebugInfoError("drgn is not installed (pip install drgn)") from None
    arch = {_EM_X86_64: drgn.Architecture.X86_64, _EM_AARCH64: drgn.Architecture.AARCH64}.get(image._elf.machine)
    if arch is None:
        raise DebugInfoError(f"{image.path.name}: drgn support covers x86_64 and arm64 images only")
    platform = drgn.Platform(arch, drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN)
    prog = drgn.Program(platform)
    module = prog.extra_module(image.path.name, create=True)
    module.address_ranges = [(s.vaddr, s.vaddr + s.memsz) for s in image.segments if s.memsz]
    module.try_file(str(image.path))
    if module.debug_file_path is None:
        raise DebugInfoError(f"drgn could not use the debug info of {image.path.name}")
    return prog
