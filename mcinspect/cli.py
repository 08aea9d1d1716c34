"""mcinspect and mcps command lines (click).

    mcinspect [-k IMG] [-d DUMP | --os N | --qemu DIR] [--force] {ps,mem,vtop,kmsg,info} [--json] ...
    mcps [-k IMG] [-d DUMP | --os N | --qemu DIR] [--force] [-p PID] [--cpu N] [--json]

Without a dump (no -d, no $MCKERNEL_DUMP) the tools read the running kernel
without freezing it: /dev/mcosN (--os N, default 0), or the QEMU reference
kernel of a `mcktools-live` run folder (--qemu DIR or $MCKTOOLS_QEMU_RUN).
The image search order for live use is in mcktools.live.attach.

Upstream spellings keep working: `mcinspect --kernel IMG --ps` and
`mcinspect --kernel IMG --vtop --pid P --va ADDR` are rewritten to the
subcommand form before parsing.
"""

from __future__ import annotations

import functools
import sys
from typing import Optional

import click

from mcktools.cli_errors import run_cli
from mcktools.errors import McktoolsError

from . import render


def _parse_addr(text: str) -> int:
    try:
        return int(text, 16)
    except ValueError:
        raise McktoolsError(f"{text!r} is not a hexadecimal address") from None


def _target(ctx: click.Context):
    obj = ctx.find_root().obj
    if obj.get("target") is None:
        if obj["dump"]:
            from mcktools.model.target import open_target
            obj["target"] = open_target(obj["kernel"], obj["dump"], force=obj["force"])
        else:
            from mcktools.errors import LiveError
            from mcktools.live.attach import open_live
            try:
                obj["target"] = open_live(obj["kernel"], os_index=obj.get("os") or 0, qemu=obj.get("qemu"),
                                          force=obj["force"]).target
            except LiveError as exc:
                if obj.get("os") is not None or obj.get("qemu"):
                    raise
                raise LiveError(f"{exc} (no dump given, so the running McKernel was tried; "
                                "-d DUMP reads a dump)") from None
        for w in obj["target"].warnings:
            click.echo(f"warning: {w}", err=True)
    return obj["target"]


def _emit(text: str) -> None:
    click.echo(text)


def _live_retry(fn):
    """On a running kernel, run the command again when a read was inconsistent
    (a list or tree changed under the walk).  Commands print only at their end,
    so a retry never repeats output.  Dumps run the command once."""
    @functools.wraps(fn)
    def wrapper(ctx, *args, **kwargs):
        obj = ctx.find_root().obj
        if obj.get("dump") or (obj.get("target") is not None and not getattr(obj["target"], "live", False)):
            return fn(ctx, *args, **kwargs)
        from mcktools.errors import CorruptStructure, UnreadableAddress
        from mcktools.live.consistent import ATTEMPTS, invalidate
        attempt = 1
        while True:
            try:
                return fn(ctx, *args, **kwargs)
            except (CorruptStructure, UnreadableAddress):
                if obj.get("target") is None or attempt >= ATTEMPTS:
                    raise
                invalidate(obj["target"])
                attempt += 1
    return wrapper


json_option = click.option("--json", "as_json", is_flag=True, help="machine-readable rows")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-k", "--kernel", envvar="MCKERNEL_IMG", metavar="IMG", help="mckernel.img ($MCKERNEL_IMG)")
@click.option("-d", "--dump", envvar="MCKERNEL_DUMP", metavar="FILE",
              help="mcdump or vmcore ($MCKERNEL_DUMP)")
@click.option("--os", "os_index", type=int, metavar="N",
              help="without a dump: the running McKernel of /dev/mcosN (default 0)")
@click.option("--qemu", metavar="DIR", envvar="MCKTOOLS_QEMU_RUN",
              help="without a dump: the QEMU reference kernel of this mcktools-live run folder "
                   "($MCKTOOLS_QEMU_RUN)")
@click.option("--force", is_flag=True, help="use an image that does not match the dump")
@click.pass_context
def cli(ctx: click.Context, kernel: Optional[str], dump: Optional[str], os_index: Optional[int],
        qemu: Optional[str], force: bool) -> None:
    """Inspect a McKernel dump (or a running McKernel) with its kernel image."""
    from click.core import ParameterSource
    cmdline = (ParameterSource.COMMANDLINE,)
    live_asked = os_index is not None or (qemu and ctx.get_parameter_source("qemu") in cmdline)
    if live_asked:
        if dump and ctx.get_parameter_source("dump") in cmdline:
            raise McktoolsError("give a dump or a live kernel (--os/--qemu), not both")
        dump = None
    elif dump:
        qemu = None   # an explicit or $MCKERNEL_DUMP dump wins over $MCKTOOLS_QEMU_RUN
    ctx.obj = {"kernel": kernel, "dump": dump, "os": os_index, "qemu": qemu, "force": force, "target": None}

    def close():
        t = ctx.obj.get("target")
        if t is not None:
            t.close()
    ctx.call_on_close(close)


def ps_rows(t, pid: Optional[int], cpu: Optional[int]) -> list:
    if getattr(t, "live", False):
        from mcktools.live.consistent import live_threads
        rows = live_threads(t)
    else:
        rows = [info.row for info in t.threads()]
    if pid is not None:
        rows = [r for r in rows if r.pid == pid]
        if not rows:
            raise McktoolsError(f"no process with pid {pid} in {t.description}")
    if cpu is not None:
        ncpu = len(t.cpus())
        if not 0 <= cpu < ncpu:
            raise McktoolsError(f"no CPU {cpu}: the dump has CPUs 0-{ncpu - 1}")
        rows = [r for r in rows if r.cpu == cpu]
    return rows


@cli.command()
@click.option("-p", "--pid", type=int, help="only this process's threads")
@click.option("--cpu", type=int, help="only this CPU's threads")
@json_option
@click.pass_context
def ps(ctx, pid, cpu, as_json):
    """Threads per CPU: TID PID PPID CPU THREAD ST COMM (`>` = current)."""
    rows = ps_rows(_target(ctx), pid, cpu)
    _emit(render.to_json(rows) if as_json else _mark_changed(render.ps_table(rows), rows))


def _mark_changed(table: str, rows: list) -> str:
    """Live reads: flag the rows whose thread changed while it was being read."""
    if not any(getattr(r, "changed", False) for r in rows):
        return table
    lines = table.split("\n")
    for i, r in enumerate(rows, start=1):
        if getattr(r, "changed", False):
            lines[i] += "  (changed while read)"
    return "\n".join(lines)


@cli.command()
@click.argument("who", nargs=-1, required=True)
@json_option
@click.pass_context
@_live_retry
def mem(ctx, who, as_json):
    """Memory map of processes: WHO is a pid (or tid) or a struct thread address in hex."""
    from mcktools.model.threads import find_thread
    from mcktools.model.vm import vm_ranges
    t = _target(ctx)
    out = []
    procs = {p.pid: p for p in t.processes() if p.pid}
    for w in who:
        if w.isdigit() and int(w) in procs:
            prow, thr = procs[int(w)], None
        else:
            try:
                info = find_thread(t, w)
            except McktoolsError:
                if w.isdigit():
                    raise McktoolsError(f"no process with pid {w} (nor a thread with that tid) "
                                        f"in {t.description}") from None
                raise
            prow = next((p for p in t.processes() if p.addr == info.proc_addr), None)
            if prow is None:
                raise McktoolsError(f"thread {w} ({'idle' if info.row.idle else 'tid ' + str(info.row.tid)}) "
                                    "belongs to no process with a memory map")
            thr = info.row.addr
        if thr is None:
            main = [i for i in t.threads() if i.proc_addr == prow.addr]
            thr = main[0].row.addr if main else 0
        rows = vm_ranges(t, t.object(prow.addr, "struct process"))
        out.append((prow, thr, rows))
    if as_json:
        _emit(render.to_json([{"pid": p.pid, "thread": th, "ranges": rows} for p, th, rows in out]))
    else:
        _emit("\n\n".join(render.mem_table(f"Memory mapping for process {p.pid} / {th:x}", rows)
                          for p, th, rows in out))


@cli.command()
@click.option("-p", "--pid", type=int, help="walk this process's page table")
@click.option("-t", "--thread", help="walk the page table of this thread's process (tid or hex address)")
@click.option("-a", "--all", "all_", is_flag=True, help="list every mapping")
@click.argument("addrs", nargs=-1)
@json_option
@click.pass_context
@_live_retry
def vtop(ctx, pid, thread, all_, addrs, as_json):
    """Translate virtual addresses (kernel ones through init_pt without -p/-t)."""
    from mcktools.model.pagetables import Space
    if pid is not None and thread is not None:
        raise McktoolsError("give -p PID or -t THREAD, not both")
    if not all_ and not addrs:
        raise McktoolsError("give at least one ADDR, or --all")
    t = _target(ctx)
    space = Space(t, pid=pid, thread=thread)
    if all_:
        rows = list(space.all())
        if as_json:
            _emit(render.to_json({"space": space.name, "mappings": rows}))
        else:
            _emit("\n".join([render.vtop_header()] + [render.vtop_row(r) for r in rows]))
        return
    vas = [_parse_addr(a) for a in addrs]
    results = [(va, space.lookup(va)) for va in vas]
    if as_json:
        _emit(render.to_json({"space": space.name, "translations": [
            {"va": va, "found": r is not None, **(r.to_dict() if r else {})} for va, r in results]}))
    else:
        _emit("\n\n".join(render.vtop_lookup(va, r) for va, r in results))


@cli.command()
@json_option
@click.pass_context
@_live_retry
def kmsg(ctx, as_json):
    """The kmsg ring, oldest line first (when the dump holds it)."""
    from mcktools.model.kmsg import read_kmsg
    res = read_kmsg(_target(ctx))
    if as_json:
        _emit(render.to_json(res))
    elif res.available:
        click.echo(res.text, nl=not res.text.endswith("\n"))
    else:
        _emit(f"kmsg not available: {res.source}")


@cli.command()
@json_option
@click.pass_context
@_live_retry
def info(ctx, as_json):
    """Dump metadata, CPUs, address map, key symbols, image build-id."""
    from mcktools.model.info import read_info
    data = read_info(_target(ctx))
    if as_json:
        _emit(render.to_json(data))
        return
    pairs = []
    for k, v in data.items():
        if isinstance(v, dict):
            pairs.append((k, ""))
            pairs.extend((f"  {kk}", _fmt(vv)) for kk, vv in v.items())
        elif isinstance(v, list):
            pairs.append((k, ""))
            pairs.extend((f"  {i}", _fmt(vv)) for i, vv in enumerate(v))
        else:
            pairs.append((k, _fmt(v)))
    _emit(render.kv_table(pairs))


def _fmt(v) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:#x}" if v > 9 else str(v)
    if isinstance(v, dict):
        return " ".join(f"{k}={_fmt(x)}" for k, x in v.items())
    if isinstance(v, list):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


# --- subcommands kept in their own modules --------------------------------------

from .cmd_bt import bt as _bt_command  # noqa: E402
from .cmd_shell import shell as _shell_command  # noqa: E402

cli.add_command(_bt_command)
cli.add_command(_shell_command)


# --- upstream spellings -------------------------------------------------------

_GROUP_OPTS_WITH_ARG = {"-k", "--kernel", "-d", "--dump", "--os", "--qemu"}


def legacy_argv(argv: list) -> list:
    """Rewrite `--ps` / `--vtop --pid P --va ADDR` (upstream mcinspect) to subcommands."""
    if not any(a in ("--ps", "--vtop") or a.startswith(("--va=", "--vtop")) for a in argv):
        return argv
    group, sub, rest, vas, pid = [], None, [], [], None
    i = 0
    while i < len(argv):
        a = argv[i]
        name, eq, val = a.partition("=")
        if name in _GROUP_OPTS_WITH_ARG:
            if eq:
                group.append(a)
            else:
                group += argv[i:i + 2]
                i += 1
        elif a == "--force":
            group.append(a)
        elif a == "--debug":
            pass
        elif a == "--ps":
            sub = sub or "ps"
        elif a == "--vtop":
            sub = "vtop"
        elif name in ("-v", "--va"):
            if eq:
                vas.append(val)
            else:
                vas.append(argv[i + 1] if i + 1 < len(argv) else "")
                i += 1
        elif name in ("-p", "--pid"):
            pid = val if eq else (argv[i + 1] if i + 1 < len(argv) else "")
            i += 0 if eq else 1
        else:
            rest.append(a)
        i += 1
    out = group + [sub]
    if pid is not None:
        out += ["-p", pid]
    return out + rest + vas


def _run(argv: list, prog: str) -> int:
    try:
        cli.main(args=argv, prog_name=prog, standalone_mode=False)
        return 0
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:
        click.echo(f"{prog}: error: {e.format_message()}", err=True)
        return e.exit_code
    except click.exceptions.Abort:
        raise KeyboardInterrupt from None


def main(argv: Optional[list] = None) -> int:
    args = legacy_argv(list(sys.argv[1:] if argv is None else argv))
    code = run_cli("mcinspect", lambda: _run(args, "mcinspect"))
    if argv is None:
        sys.exit(code)
    return code


def mcps_main(argv: Optional[list] = None) -> int:
    """`mcps` = `mcinspect ps` (group options and ps options may be mixed)."""
    args = list(sys.argv[1:] if argv is None else argv)
    group, rest = [], []
    i = 0
    while i < len(args):
        a = args[i]
        name, eq, _ = a.partition("=")
        if name in _GROUP_OPTS_WITH_ARG:
            group += [a] if eq else args[i:i + 2]
            i += 0 if eq else 1
        elif a == "--force":
            group.append(a)
        elif a == "--ps":
            pass
        else:
            rest.append(a)
        i += 1
    code = run_cli("mcps", lambda: _run(group + ["ps"] + rest, "mcps"))
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":
    main()
