"""The one exception family that user-caused problems travel in.

Every error a user can provoke (bad file, wrong image, unreadable address,
missing device) is a McktoolsError; frontends turn it into one line on stderr
and a non-zero exit code (see mcktools.cli_errors).  Anything else escaping is
a bug in mcktools and may show a traceback.
"""

from __future__ import annotations


class McktoolsError(Exception):
    """Base of all user-facing errors."""

    exit_code = 1


class FormatError(McktoolsError):
    """A file is not what it claims to be: truncated, corrupted, wrong format."""


class UnreadableAddress(McktoolsError):
    """A read touched memory that the source does not hold."""

    def __init__(self, address: int, message: str | None = None, *, physical: bool = True):
        self.address = address
        self.physical = physical
        kind = "physical" if physical else "virtual"
        super().__init__(message or f"{kind} address {address:#x} is not in the source")


class ExcludedAddress(UnreadableAddress):
    """The address existed on the node but the dump deliberately left it out
    (dump level 24 drops user and free pages).  Never read such memory as zeros."""


class TranslationError(UnreadableAddress):
    """A virtual address has no mapping (page-table entry not present)."""

    def __init__(self, address: int, message: str | None = None):
        super().__init__(address, message or f"virtual address {address:#x} is not mapped", physical=False)


class DebugInfoError(McktoolsError):
    """A symbol, type or member that the tools need is missing from the image."""


class ImageMismatch(McktoolsError):
    """The kernel image does not belong to the dump or live kernel."""


class CorruptStructure(McktoolsError):
    """A kernel list, tree or pointer is inconsistent (cycle, wild pointer)."""


class LiveError(McktoolsError):
    """A live target (device, QEMU guest) cannot be used."""


class OutputError(McktoolsError):
    """An output file cannot be written (exists, no space, no permission)."""
