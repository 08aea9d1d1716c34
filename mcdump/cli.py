"""mcdump and vmcore2mckdump command lines (click).

    mcdump info FILE [--json]
    mcdump verify FILE -k IMG [--json]
    mcdump convert VMCORE -o OUT [-k IMG] [--boot-param PA | --dump-page-set PA]
                                 [--vmlinux F --ihk-module F] [--level auto|0|24] [--force]
    mcdump to-elf DUMP -k IMG -o CORE [--threads] [--force]
    mcdump filter DUMP -k IMG --level 24 -o OUT [--force]
    mcdump create [-d 0|24] [--os N | --qemu DIR] [-k IMG] [-o FILE] [--force]
    vmcore2mckdump VMCORE OUT [the convert options]      (upstream's argument order)

Every failure a user can cause ends as one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import json
import sys
from typing import Optional

import click

from mcktools.cli_errors import run_cli
from mcktools.errors import McktoolsError


class UsageProblem(McktoolsError):
    exit_code = 2


def _addr(ctx, param, value: Optional[str]) -> Optional[int]:
    if value is None:
        return None
    text = value.strip().lower()
    try:
        return int(text, 16) if not text.startswith("0x") else int(text, 0)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a hexadecimal physical address") from None


def _echo_json(obj) -> None:
    click.echo(json.dumps(obj, indent=1, sort_keys=True))


def _tty() -> bool:
    """Summaries go to a terminal only: in a pipe the tools print nothing extra."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _warn(lines) -> None:
    for w in lines:
        click.echo(f"warning: {w}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Inspect, check and convert McKernel dumps."""


# --- info -------------------------------------------------------------------

@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def info(file: str, as_json: bool) -> None:
    """What FILE is and what memory it holds."""
    from mcktools.convert.info import dump_info
    res = dump_info(file)
    if as_json:
        _echo_json(res.to_dict())
        return
    from . import render
    click.echo(render.info_text(res))


# --- verify -----------------------------------------------------------------

@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-k", "--kernel", "image", required=True, metavar="IMG", help="mckernel.img of the dumped kernel")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def verify(file: str, image: str, as_json: bool) -> int:
    """Check that FILE is complete and that IMG belongs to it (exit 0 = pass)."""
    from mcktools.convert.verify import verify as run
    _need_file(image, "kernel image")
    res = run(file, image)
    if as_json:
        _echo_json(res.to_dict())
    else:
        from . import render
        click.echo(render.verify_text(res))
    return 0 if res.ok else 1


def _need_file(path: str, what: str) -> None:
    import os
    if not os.path.isfile(path):
        raise McktoolsError(f"{what} {path} does not exist")


# --- convert ----------------------------------------------------------------

def convert_options(f):
    opts = [
        click.option("-k", "--kernel", "image", metavar="IMG", help="mckernel.img: find McKernel by its build-id"),
        click.option("--boot-param", callback=_addr, metavar="PADDR", help="physical address of smp_boot_param"),
        click.option("--dump-page-set", callback=_addr, metavar="PADDR",
                     help="physical address of the ihk_dump_page_set"),
        click.option("--vmlinux", metavar="FILE", help="Linux debug vmlinux (with --ihk-module; needs drgn)"),
        click.option("--ihk-module", metavar="FILE", help="debug file of the ihk-smp module"),
        click.option("--level", type=click.Choice(["auto", "0", "24"]), default="auto", show_default=True,
                     help="auto: the bitmap as McKernel left it; 0: all memory; 24: without user and free pages"),
        click.option("--no-kmsg", is_flag=True, help="do not add the kmsg ring as a 'kmsg' section"),
        click.option("--force", is_flag=True, help="replace an existing output file"),
        click.option("-q", "--quiet", is_flag=True, help="no summary line on a terminal"),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _convert(vmcore, out, image, boot_param, dump_page_set, vmlinux, ihk_module, level, no_kmsg, force,
             quiet) -> int:
    from mcktools.convert.output import check_target
    from mcktools.convert.vmcore import ConvertOptions, convert
    _need_file(vmcore, "vmcore")
    check_target(out, force)
    opts = ConvertOptions(image=image, boot_param=boot_param, dump_page_set=dump_page_set, vmlinux=vmlinux,
                          ihk_module=ihk_module, level=level, kmsg=not no_kmsg)
    plan = convert(vmcore, out, opts, force=force)
    _warn(plan.warnings)
    if not quiet and _tty():
        click.echo(f"{out}: {len(plan.chunks)} chunks, {plan.total} bytes, kernel_base {plan.kernel_base:#x} "
                   f"(McKernel found by {plan.location.how})", err=True)
    return 0


@cli.command()
@click.argument("vmcore", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out", required=True, metavar="OUT", help="mcdump to write")
@convert_options
def convert(vmcore, out, **kw) -> int:
    """Extract McKernel's memory from a Linux vmcore into an mcdump."""
    return _convert(vmcore, out, **kw)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("vmcore", type=click.Path(dir_okay=False))
@click.argument("out", metavar="MCKDUMP")
@convert_options
def vmcore2mckdump(vmcore, out, **kw) -> int:
    """Extract McKernel's memory from VMCORE into the mcdump MCKDUMP."""
    return _convert(vmcore, out, **kw)


# --- to-elf -----------------------------------------------------------------

@cli.command("to-elf")
@click.argument("dump", type=click.Path(dir_okay=False))
@click.option("-k", "--kernel", "image", required=True, metavar="IMG", help="mckernel.img of the dumped kernel")
@click.option("-o", "--output", "out", required=True, metavar="CORE", help="ELF core to write")
@click.option("--threads", is_flag=True, help="also one NT_PRSTATUS per switched-out thread")
@click.option("--force", is_flag=True, help="replace an existing output file; use a mismatching image")
def to_elf(dump: str, image: str, out: str, threads: bool, force: bool) -> int:
    """Write an ELF core of McKernel's kernel memory for gdb and drgn."""
    from mcktools.convert.output import check_target
    from mcktools.convert.toelf import write_core
    _need_file(dump, "dump")
    _need_file(image, "kernel image")
    check_target(out, force)
    res = write_core(dump, image, out, threads=threads, force=force)
    _warn(res.warnings)
    if _tty():
        click.echo(f"{out}: {len(res.segments)} PT_LOAD segments, {len(res.prstatus)} NT_PRSTATUS notes", err=True)
    return 0


# --- filter -----------------------------------------------------------------

@cli.command("filter")
@click.argument("dump", type=click.Path(dir_okay=False))
@click.option("-k", "--kernel", "image", required=True, metavar="IMG", help="mckernel.img of the dumped kernel")
@click.option("--level", type=click.Choice(["24"]), required=True, help="the level to reduce to")
@click.option("-o", "--output", "out", required=True, metavar="OUT", help="mcdump to write")
@click.option("--force", is_flag=True, help="replace an existing output file")
def filter_cmd(dump: str, image: str, level: str, out: str, force: bool) -> int:
    """Reduce a level-0 mcdump to level 24 from the kernel state it holds."""
    from mcktools.convert.filter import filter_dump
    from mcktools.convert.output import check_target
    _need_file(dump, "dump")
    _need_file(image, "kernel image")
    check_target(out, force)
    res = filter_dump(dump, image, out, force=force)
    if _tty():
        click.echo(f"{out}: {res['chunks']} chunks, {res['bytes']} bytes ({res['user_pages']} user and "
               f"{res['free_pages']} free pages dropped)", err=True)
    return 0


# --- create (live) ----------------------------------------------------------

@cli.command()
@click.option("-d", "--level", type=click.Choice(["0", "24"]), default="0", show_default=True,
              help="0: all McKernel memory; 24: without user and free pages (as ihkosctl dump -d)")
@click.option("--os", "os_index", type=int, default=0, show_default=True, metavar="N", help="/dev/mcosN")
@click.option("--qemu", metavar="DIR", envvar="MCKTOOLS_QEMU_RUN",
              help="the QEMU reference kernel of this mcktools-live run folder ($MCKTOOLS_QEMU_RUN)")
@click.option("-k", "--kernel", "image", metavar="IMG", help="mckernel.img (to add the kmsg ring)")
@click.option("-o", "--output", "out", metavar="FILE", help="default mcdump_%Y%m%d_%H%M%S, like ihkosctl")
@click.option("--force", is_flag=True, help="replace an existing output file")
def create(level: str, os_index: int, qemu: Optional[str], image: Optional[str], out: Optional[str],
           force: bool) -> int:
    """Dump a running McKernel as `ihkosctl N dump` does (freezes it briefly, always resumes)."""
    from mcktools.live.create import create_dump
    res = create_dump(out, level=int(level), os_index=os_index, qemu=qemu, kernel=image, overwrite=force)
    _warn(res.warnings)
    click.echo(f"{res.path}: {len(res.chunks)} chunks, {res.size} bytes, level {res.level}, "
               f"kmsg {'included' if res.kmsg else 'not included'}, frozen {res.frozen_seconds:.2f} s",
               err=True)
    return 0


# --- entry points -----------------------------------------------------------

def _run(command: click.Command, prog: str, argv: Optional[list] = None) -> int:
    from mcktools.convert.output import prepare_signals

    def main() -> int:
        prepare_signals()
        try:
            rv = command.main(args=argv, prog_name=prog, standalone_mode=False)
        except click.exceptions.Abort:
            raise KeyboardInterrupt from None
        except click.exceptions.ClickException as exc:
            ctx = getattr(exc, "ctx", None)
            if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
                click.echo(ctx.get_help())          # bare `mcdump`: the help, as usual
                return 2
            raise UsageProblem(exc.format_message().replace("\n", " ")) from None
        return int(rv or 0) if isinstance(rv, int) else 0

    return run_cli(prog, main)


def main(argv: Optional[list] = None) -> None:
    sys.exit(_run(cli, "mcdump", argv))


def vmcore2mckdump_main(argv: Optional[list] = None) -> None:
    sys.exit(_run(vmcore2mckdump, "vmcore2mckdump", argv))
