#!/usr/bin/env python3
"""Unpack the committed xz fixtures in place (standard library only).

    python3 dumps/unpack.py            # every scenario under dumps/fixtures
    python3 dumps/unpack.py multi      # one scenario

`dumps/fixtures/<scenario>/X.xz` becomes `X` beside it.  An unpacked file is
up to date when its mtime equals the .xz's mtime (set here after unpacking,
and by make_fixtures.py); a newer or changed .xz (e.g. after `git pull`) gets
unpacked again.  Unpacked files are git-ignored.
"""

from __future__ import annotations

import lzma
import os
import shutil
import sys
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def unpack_file(xz: Path) -> Path:
    """Unpack one .xz next to itself unless the unpacked file is already current."""
    out = xz.with_name(xz.name[:-3])
    st = os.stat(xz)
    try:
        if os.stat(out).st_mtime_ns == st.st_mtime_ns:
            return out
    except FileNotFoundError:
        pass
    tmp = out.with_name(out.name + ".unpacking")
    try:
        with lzma.open(xz, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def unpack(scenario: str | None = None, root: Path = FIXTURES) -> list[Path]:
    """Unpack every .xz of one scenario (or all); return the unpacked paths."""
    dirs = [root / scenario] if scenario else sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    done = []
    for d in dirs:
        if not d.is_dir():
            raise FileNotFoundError(f"no fixture folder {d}")
        for xz in sorted(d.glob("*.xz")):
            done.append(unpack_file(xz))
    return done


def fixture_dir(scenario: str, root: Path = FIXTURES) -> Path:
    """The unpacked folder of one scenario (what tests use)."""
    unpack(scenario, root)
    return root / scenario


def main(argv: list[str]) -> int:
    try:
        for name in (argv or [None]):
            for p in unpack(name):
                print(p.relative_to(FIXTURES.parent.parent) if p.is_relative_to(FIXTURES.parent.parent) else p)
    except (FileNotFoundError, lzma.LZMAError, OSError) as exc:
        print(f"unpack: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
