"""On-disk cache of DWARF indexes, one file per image content.

Staleness is impossible by construction: the file name and the key stored
inside both contain the format version, the build-id, the file size and a
digest of the whole image, so a rebuilt or edited image simply misses.  The
payload is `marshal` data of plain tuples/dicts (fast, and unlike pickle it
cannot run code).  Writes go to a temporary file in the same folder and are
renamed into place, so two processes building at once both succeed and a
reader never sees half a file.  Every failure (unwritable folder, corrupt or
foreign file) means "no cache", never an error: the index is rebuilt.
"""

from __future__ import annotations

import marshal
import os
from pathlib import Path
from typing import Optional

FORMAT_VERSION = 1
MAGIC = "mcktools-dwarf-index"
_MARSHAL_VERSION = 4


def cache_dir() -> Path:
    """MCKTOOLS_CACHE_DIR, else $XDG_CACHE_HOME/mcktools, else ~/.cache/mcktools."""
    env = os.environ.get("MCKTOOLS_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "mcktools"
    return Path.home() / ".cache" / "mcktools"


def cache_key(build_id: Optional[bytes], size: int, digest: str) -> str:
    return f"v{FORMAT_VERSION}-{build_id.hex() if build_id else 'nobuildid'}-{size}-{digest}"


def cache_file(directory: Path, key: str) -> Path:
    # The name carries a prefix of the key for humans; the full key is checked inside.
    return directory / f"dwarf-{key[:120]}.idx"


def load(path: Path, key: str) -> Optional[dict]:
    """The payload stored under `key`, or None (missing, corrupt, other key/version)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        record = marshal.loads(data)
    except (OSError, ValueError, EOFError, TypeError):
        return None
    if (not isinstance(record, tuple) or len(record) != 4 or record[0] != MAGIC
            or record[1] != FORMAT_VERSION or record[2] != key or not isinstance(record[3], dict)):
        return None
    return record[3]


def store(path: Path, key: str, payload: dict) -> bool:
    """Write atomically (temp file + rename).  Returns False when caching is impossible."""
    import tempfile  # only needed when writing; keeps the warm (read) path's imports small

    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".idx", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(marshal.dumps((MAGIC, FORMAT_VERSION, key, payload), _MARSHAL_VERSION))
        os.replace(tmp, path)
        return True
    except (OSError, ValueError):
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        return False
