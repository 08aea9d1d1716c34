"""`python -m eclair.fakeprovider_stub SPEC.json (--stdio | --listen [HOST:]PORT)`

Serves a FakeProvider (eclair.fakeprovider) so tests and benchmarks can
drive the real server with real gdb, without a McKernel dump.
"""

from __future__ import annotations

import sys
from typing import List, Optional

import click

from mcktools.cli_errors import run_cli

from .cli import invoke_click, make_logger, serve_listen, serve_stdio
from .fakeprovider import FakeProvider


@click.command()
@click.argument("spec")
@click.option("--stdio", is_flag=True)
@click.option("--listen", metavar="[HOST:]PORT")
@click.option("--log", "log_path", metavar="FILE")
@click.option("--packet-size", type=int, default=None,
              help="Advertised PacketSize (benchmarks compare small packets).")
def _cli(spec, stdio, listen, log_path, packet_size):
    provider = FakeProvider.from_json(spec)
    log = make_logger(log_path)
    if listen:
        return serve_listen(provider, listen, log, packet_size=packet_size)
    return serve_stdio(provider, log, packet_size=packet_size)


def main(argv: Optional[List[str]] = None) -> None:
    sys.exit(run_cli("fakeprovider_stub", invoke_click(_cli, "fakeprovider_stub", argv)))


if __name__ == "__main__":
    main()
