"""`python -m mcktools.debuginfo IMAGE [...]`: look at what the tools see in an image.

A debugging aid for the image side alone (no dump needed): build-id, index
source, a type layout, a symbol, a member offset.
"""

from __future__ import annotations

import argparse
import sys

from ..cli_errors import run_cli
from .image import Image
from .types import StructType, strip_typedefs, type_name


def _main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="mcktools.debuginfo", description=__doc__.splitlines()[0])
    parser.add_argument("image")
    parser.add_argument("--type", action="append", default=[], help="print a type layout")
    parser.add_argument("--symbol", action="append", default=[], help="print a symbol address")
    parser.add_argument("--offsetof", nargs=2, action="append", default=[], metavar=("TYPE", "MEMBER"))
    parser.add_argument("--no-cache", action="store_true")
    args = parser.parse_args(argv)
    img = Image.open(args.image, use_cache=not args.no_cache)
    print(f"build-id: {img.build_id.hex() if img.build_id else '-'}  index: {img.index_source}")
    for name in args.type:
        t = img.type(name)
        base = strip_typedefs(t)
        print(f"{type_name(t)}: size {t.size}")
        if isinstance(base, StructType):
            for m in base.members:
                bits = f" bits {m.bit_offset}:{m.bit_size}" if m.bit_size is not None else ""
                print(f"  {m.offset:6d}  {m.name or '<anonymous>'}: {type_name(m.type)}{bits}")
    for name in args.symbol:
        print(f"{name} = {img.symbol(name):#x}")
    for tname, member in args.offsetof:
        print(f"offsetof({tname}, {member}) = {img.offsetof(tname, member)}")
    return 0


def main() -> None:
    sys.exit(run_cli("mcktools.debuginfo", _main))


if __name__ == "__main__":
    main()
