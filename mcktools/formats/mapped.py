"""Read-only memory-mapped files: how every dump reader opens its input.

Readers never load a dump into memory; they map it and slice.  This module holds
the one way to open such a file (refusing an empty one with a FormatError, and
never leaking the descriptor when mapping fails) and the close/context-manager
plumbing the readers share.
"""

from __future__ import annotations

import mmap
import os
from typing import Any, BinaryIO, Tuple

from ..errors import FormatError


def map_file(path: str, what: str) -> Tuple[BinaryIO, mmap.mmap]:
    """Open `path` and map it read-only; `what` names the expected format for the
    empty-file message ("an mcdump", "an ELF core", ...)."""
    f = open(path, "rb")
    try:
        if os.fstat(f.fileno()).st_size == 0:
            raise FormatError(f"{path}: empty file, not {what}")
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except BaseException:
        f.close()
        raise
    return f, mm


class MappedFile:
    """Base of readers holding `_file` and `_mm`: idempotent close and `with` support."""

    _file: Any = None
    _mm: Any = None

    def close(self) -> None:
        if self._mm is not None:
            self._mm.close()
            self._mm = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
