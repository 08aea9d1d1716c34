"""Write a file so that it appears under its name only when complete.

Writers stream into a temporary file in the target folder (same file system,
so the final rename is atomic) and publish it at the end.  On any exception,
including KeyboardInterrupt, the temporary file is removed: no partial dump is
ever left behind.  Without `overwrite`, an existing file is never replaced,
even one that appears while we write (link(2) refuses existing names).
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from typing import BinaryIO, Iterator

from ..errors import OutputError


_SPACE_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def check_target(path: str, overwrite: bool) -> None:
    """Refuse early (before any work) when the output cannot be written: it exists
    (without `overwrite`), is a directory, or its folder is missing or read-only."""
    if os.path.isdir(path):
        raise OutputError(f"{path} is a directory")
    if not overwrite and os.path.lexists(path):
        raise OutputError(f"{path} already exists (use --force to replace it)")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise OutputError(f"folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise OutputError(f"folder {folder} is not writable")


def write_error(path: str, exc: OSError) -> OutputError:
    """One line for a failed write, naming the usual cause."""
    if exc.errno in _SPACE_ERRNOS:
        return OutputError(f"cannot write {path}: {exc.strerror} (out of space or over the file-size "
                           f"limit); nothing was left behind")
    return OutputError(f"cannot write {path}: {exc.strerror or exc}")


@contextlib.contextmanager
def atomic_output(path: "str | os.PathLike[str]", *, overwrite: bool = False) -> Iterator[BinaryIO]:
    """`with atomic_output(p) as f: f.write(...)`; OSError becomes OutputError."""
    path = os.fspath(path)
    check_target(path, overwrite)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".partial", dir=folder)
    except OSError as exc:
        raise OutputError(f"cannot create a file in {folder}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            # mkstemp creates 0600; a published dump gets the usual 0666 & ~umask.
            os.fchmod(out.fileno(), 0o666 & ~_umask())
            os.fsync(out.fileno())
        _publish(tmp, path, overwrite)
    except OutputError:
        _unlink_quietly(tmp)
        raise
    except OSError as exc:
        _unlink_quietly(tmp)
        raise write_error(path, exc) from None
    except BaseException:
        _unlink_quietly(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish(tmp: str, path: str, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise OutputError(f"{path} already exists (use --force to replace it)") from None
    except OSError:
        # File systems without hard links: check-then-rename is the best we can do.
        if os.path.lexists(path):
            raise OutputError(f"{path} already exists (use --force to replace it)") from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def _unlink_quietly(p: str) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass
