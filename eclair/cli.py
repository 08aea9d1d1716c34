"""`eclair`: gdb for McKernel dumps and live McKernel instances.

Keeps upstream's options (-d DUMP, -k IMAGE, -c, -l, -i, -o ID, -h).  By
default it opens the target, listens on an ephemeral loopback port and starts
gdb on the image connected to it (prompt "(eclair) ", pagination off).
`--stdio` serves one session on stdin/stdout for
`target remote | eclair --stdio ...`; `--listen [HOST:]PORT` serves one
session on a TCP port, on 127.0.0.1 unless a host is given.
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time
from typing import Callable, List, Optional, Sequence

import click

from mcktools.cli_errors import run_cli
from mcktools.errors import McktoolsError

from .gdb_launcher import gdb_command
from .provider import Provider, ProviderOptions
from .server import GdbServer
from .transport import Listener, StdioTransport, parse_listen_address


def load_open_provider() -> Callable[[Optional[str], str, ProviderOptions], Provider]:
    """eclair.mckernel_provider.open_provider, imported only when needed so
    the server and its tests work without the McKernel model."""
    try:
        module = importlib.import_module("eclair.mckernel_provider")
    except ModuleNotFoundError as exc:
        if exc.name == "eclair.mckernel_provider":
            raise McktoolsError(
                "the McKernel target support (eclair.mckernel_provider) is not installed"
            ) from None
        raise
    return module.open_provider


def make_logger(path: Optional[str]) -> Optional[Callable[[str], None]]:
    """A packet logger writing to `path`; never to stdout, which may be the
    protocol channel."""
    if not path:
        return None
    try:
        handle = open(path, "a", encoding="utf-8", errors="replace", buffering=1)
    except OSError as exc:
        raise McktoolsError(f"cannot open log file {path}: {exc.strerror}") from None
    start = time.monotonic()

    def log(message: str) -> None:
        handle.write(f"{time.monotonic() - start:10.4f} {message}\n")

    return log


def serve_stdio(provider: Provider, log=None, packet_size: Optional[int] = None) -> int:
    # gdb owns the terminal; a Ctrl-C there must reach us as a 0x03 byte on
    # the pipe, not as a signal that ends the session.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    GdbServer(provider, log=log, **_size(packet_size)).serve(StdioTransport())
    return 0


def _size(packet_size: Optional[int]) -> dict:
    return {} if packet_size is None else {"packet_size": packet_size}


def serve_listen(provider: Provider, address: str, log=None, announce=None,
                 packet_size: Optional[int] = None) -> int:
    host, port = parse_listen_address(address)
    listener = Listener(host, port)
    try:
        (announce or _stderr)(f"eclair: listening on {listener.host}:{listener.port}")
        transport = listener.accept()
        assert transport is not None
        try:
            GdbServer(provider, log=log, **_size(packet_size)).serve(transport)
        finally:
            transport.close()
    finally:
        listener.close()
    return 0


def serve_with_gdb(
    provider: Provider,
    image: str,
    *,
    gdb: str = "gdb",
    log=None,
    extra_commands: Sequence[str] = (),
    batch: bool = False,
) -> int:
    """Start gdb on `image` connected to a loopback port we serve; return
    gdb's exit status."""
    listener = Listener("127.0.0.1", 0)
    argv = gdb_command(image, gdb=gdb, port=listener.port, batch=batch, extra_commands=extra_commands)
    # Ctrl-C at the terminal reaches gdb too; gdb turns it into a 0x03 byte
    # on the connection, which is how the target gets interrupted.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        try:
            proc = subprocess.Popen(argv)
        except FileNotFoundError:
            raise McktoolsError(f"cannot run gdb: {gdb} not found") from None
        try:
            transport = None
            while transport is None:
                transport = listener.accept(timeout=0.5)
                if transport is None and proc.poll() is not None:
                    return proc.returncode
            try:
                GdbServer(provider, log=log).serve(transport)
            finally:
                transport.close()
            return proc.wait()
        finally:
            if proc.poll() is None:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    finally:
        listener.close()
        signal.signal(signal.SIGINT, previous)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def close_provider(provider: object) -> None:
    """Providers may hold files or a frozen live target; `close()` is
    optional and releases them (a live provider resumes the target)."""
    close = getattr(provider, "close", None)
    if callable(close):
        close()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-d", "dump", default="mcdump", show_default=True, metavar="DUMP",
              help="Dump file written by ihkosctl dump.")
@click.option("-k", "kernel", default=None, metavar="IMAGE",
              help="McKernel image with symbols [default: mckernel.img for a dump; with -i the "
                   "installed image, as mcinspect finds it].")
@click.option("-c", "cpu_threads", is_flag=True, help="Add one thread per CPU (id 1000000 + cpu).")
@click.option("-l", "idle_threads", is_flag=True, help="Also list idle threads.")
@click.option("-i", "interactive", is_flag=True, help="Debug a live McKernel via /dev/mcosN.")
@click.option("-o", "os_index", type=int, default=0, show_default=True, metavar="ID",
              help="OS index for -i.")
@click.option("--qemu", "qemu_run", metavar="DIR",
              help="With -i: a reference-kernel run folder (mcktools-live) instead of /dev/mcosN.")
@click.option("--force", is_flag=True, help="Use an image whose build-id does not match the dump.")
@click.option("--stdio", is_flag=True, help="Serve on stdin/stdout (for 'target remote | eclair --stdio').")
@click.option("--listen", metavar="[HOST:]PORT", help="Serve one connection on a TCP port (127.0.0.1 by default).")
@click.option("--gdb", "gdb_path", default="gdb", envvar="ECLAIR_GDB", show_default=True, metavar="PATH",
              help="gdb to start.")
@click.option("--log", "log_path", metavar="FILE", help="Write a packet log to FILE.")
def _cli(dump, kernel, cpu_threads, idle_threads, interactive, os_index, qemu_run, force, stdio, listen,
         gdb_path, log_path):
    """Debug a McKernel dump (or a live McKernel with -i) with gdb."""
    if stdio and listen:
        raise McktoolsError("--stdio and --listen exclude each other")
    if qemu_run and not interactive:
        raise McktoolsError("--qemu needs -i (live debugging)")
    if kernel is None and not interactive:
        kernel = "mckernel.img"           # upstream eclair's default
    if kernel is not None and not os.path.exists(kernel):
        raise McktoolsError(f"kernel image not found: {kernel}")
    if not interactive and not os.path.exists(dump):
        raise McktoolsError(f"dump file not found: {dump}")
    options = ProviderOptions(cpu_threads=cpu_threads, idle_threads=idle_threads,
                              interactive=interactive, os_index=os_index, qemu_run=qemu_run, force=force)
    log = make_logger(log_path)
    open_provider = load_open_provider()
    provider = open_provider(None if interactive else dump, kernel, options)
    try:
        if stdio:
            return serve_stdio(provider, log)
        if listen:
            return serve_listen(provider, listen, log)
        if interactive:
            where = f"QEMU run {qemu_run}" if qemu_run else f"/dev/mcos{os_index}"
            source = f"live debug mode ({where})"
        else:
            source = f"dump file: {dump}"
        print(f"eclair using {source}", flush=True)
        image = kernel or _provider_image(provider)
        return serve_with_gdb(provider, image, gdb=gdb_path, log=log)
    finally:
        close_provider(provider)


def _provider_image(provider: object) -> str:
    """The image a live provider resolved (gdb needs it for symbols)."""
    target = getattr(provider, "t", None) or getattr(provider, "target", None)
    image = getattr(target, "image", None)
    path = getattr(image, "path", None)
    if not path:
        raise McktoolsError("no kernel image: give -k IMAGE")
    return str(path)


def invoke_click(command: click.Command, prog: str, argv: Optional[List[str]]) -> Callable[[], object]:
    """Run a click command in non-standalone mode so errors reach run_cli as
    McktoolsError (one line, non-zero exit) rather than click's own exits."""

    def run() -> object:
        try:
            return command.main(args=argv, prog_name=prog, standalone_mode=False)
        except click.exceptions.Abort:
            raise KeyboardInterrupt from None
        except click.exceptions.Exit as exc:
            return exc.exit_code
        except click.ClickException as exc:
            err = McktoolsError(exc.format_message())
            err.exit_code = 2
            raise err from None

    return run


def main(argv: Optional[List[str]] = None) -> None:
    sys.exit(run_cli("eclair", invoke_click(_cli, "eclair", argv)))


if __name__ == "__main__":
    main()
