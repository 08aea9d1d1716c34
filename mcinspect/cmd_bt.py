"""`mcinspect bt`: kernel backtraces of threads, like crash's `bt`.

    mcinspect bt [TID | THREAD-ADDR ...] [--cpu N ...] [--all] [--json]

Without arguments: the current thread of every CPU (crash's `bt -a`).
`--all`: every thread, in ps order (crash's `foreach bt`).
"""

from __future__ import annotations

from typing import Optional

import click

from mcktools.errors import McktoolsError

_USER_LINES = (("rip", "rsp", "eflags"), ("rax", "rbx", "rcx"), ("rdx", "rsi", "rdi"),
               ("rbp", "r8", "r9"), ("r10", "r11", "r12"), ("r13", "r14", "r15"))


def render_backtrace(bt) -> str:
    """crash-like text: header line, `#N [sp] function+off at pc (file:line)`, user frame."""
    head = (f"PID: {bt.pid}  TID: {bt.tid}  CPU: {bt.cpu}  THREAD: {bt.thread:x}  "
            f"COMMAND: \"{bt.comm}\"  STATE: {bt.state}")
    out = [head]
    for f in bt.frames:
        if f.inlined:
            where = f"{f.function} (inlined)"
        elif f.function is not None:
            where = f"{f.function}+{f.offset:#x}"
        else:
            where = "??"
        src = f" ({f.file}:{f.line})" if f.file and f.line else ""
        mark = "  [exception frame]" if f.kind == "exception" and not f.inlined else ""
        out.append(f" #{f.index:<2} [{f.sp:016x}] {where} at {f.pc:016x}{src}{mark}")
    if bt.start == "user mode":
        out.append(f"    ({bt.end})")
    if bt.user_regs is not None:
        out.append(f"    USER MODE FRAME at {bt.user_frame:016x}:")
        for names in _USER_LINES:
            out.append("    " + "  ".join(f"{n.upper()}: {_hex(bt.user_regs.get(n), 8 if n == 'eflags' else 16)}" for n in names))
        out.append(f"    CS: {_hex(bt.user_regs.get('cs'), 4)}  SS: {_hex(bt.user_regs.get('ss'), 4)}")
    if bt.corrupt:
        out.append(f"    -- {bt.corrupt}")
    elif bt.start != "user mode" and bt.user_regs is None and not bt.frames:
        out.append(f"    ({bt.end})")
    elif bt.end.startswith("trace truncated"):
        out.append(f"    -- {bt.end}")
    return "\n".join(out)


def _hex(v: Optional[int], width: int = 16) -> str:
    return "?" * width if v is None else f"{v:0{width}x}"


def select_threads(t, who: tuple, cpus: tuple, all_: bool) -> list:
    """ThreadInfos named by WHO / --cpu / --all (default: every CPU's current thread)."""
    from mcktools.model.threads import find_thread
    infos = t.threads()
    if all_:
        if who or cpus:
            raise McktoolsError("--all takes no TID, THREAD-ADDR or --cpu")
        return list(infos)
    chosen = [find_thread(t, w) for w in who]
    if cpus or not who:
        ncpu = len(t.cpus())
        for cpu in cpus or range(ncpu):
            if not 0 <= cpu < ncpu:
                raise McktoolsError(f"no CPU {cpu}: the dump has CPUs 0-{ncpu - 1}")
            current = t.cpus()[cpu].current
            hit = [i for i in infos if i.row.addr == current and i.row.current]
            if not hit:
                raise McktoolsError(f"CPU {cpu} has no current thread in {t.description}")
            chosen.append(hit[0])
    return chosen


@click.command()
@click.argument("who", nargs=-1)
@click.option("--cpu", "cpus", type=int, multiple=True, metavar="N", help="the current thread of CPU N")
@click.option("-a", "--all", "all_", is_flag=True, help="every thread")
@click.option("--max-frames", type=click.IntRange(1, 4096), default=64, show_default=True,
              help="stop after this many frames")
@click.option("--json", "as_json", is_flag=True, help="machine-readable rows")
@click.pass_context
def bt(ctx, who, cpus, all_, max_frames, as_json):
    """Kernel backtraces: WHO is a tid or a struct thread address (hex).

    Without WHO or --cpu: the current thread of every CPU.  A thread that came
    from user mode ends with its user register frame; bad stack data ends the
    trace with "-- stack corrupt at ADDR: ..."."""
    from mcktools.model.unwind import thread_backtrace

    from . import render
    from .cli import _target
    t = _target(ctx)
    traces = [thread_backtrace(t, info, max_frames=max_frames) for info in select_threads(t, who, cpus, all_)]
    if as_json:
        click.echo(render.to_json(traces))
    else:
        click.echo("\n\n".join(render_backtrace(b) for b in traces))
