"""Write a file so that it appears under its name only when complete.

Writers stream into a temporary file in the target folder (same file system,
so the final rename is atomic) and publish it at the end.  On any exception,
including KeyboardInterrupt, the temporary file is removed: no partial dump is
ever left behind.  Without `overwrite`, an existing file is never replaced,
even one that appears while we write (link(2) refuses existing names).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import BinaryIO, Iterator

from ..errors import OutputError


def check_target(path: str, overwrite: bool) -> None:
    """Refuse early (before any work) when the output cannot be written."""
    if os.path.isdir(path):
        raise OutputError(f"{path} is a directory")
    if not overwrite and os.path.lexists(path):
        raise OutputError(f"{path} already exists (refusing to overwrite)")


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
    except OSError as exc:
        _unlink_quietly(tmp)
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
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
        raise OutputError(f"{path} already exists (refusing to overwrite)") from None
    except OSError:
        # File systems without hard links: check-then-rename is the best we can do.
        if os.path.lexists(path):
            raise OutputError(f"{path} already exists (refusing to overwrite)") from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def _unlink_quietly(p: str) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass
