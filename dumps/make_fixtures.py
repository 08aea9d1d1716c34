#!/usr/bin/env python3
"""Regenerate dumps/fixtures/ with one command: build the kernel, boot each
scenario under QEMU, freeze, dump, compress (see mcktools/qemu/fixtures.py).

    python3 dumps/make_fixtures.py [--no-build] [--out DIR] [multi panic]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mcktools.cli_errors import run_cli  # noqa: E402
from mcktools.qemu.fixtures import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_cli("make_fixtures", lambda: main(sys.argv[1:])))
