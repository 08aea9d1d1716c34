"""`mcinspect shell`: a Python console on the opened dump (or live kernel).

Preloaded names: `target` (mcktools Target), `prog` (a drgn Program over the same
memory, or None without drgn), and helpers: `threads()`, `cpus()`, `processes()`,
`thread(tid_or_addr)`, `obj(addr, "struct x")`, `sym(name)`, `read(addr, size)`,
`bt(tid_or_addr)` (prints and returns the backtrace), `stack_trace(tid_or_addr)`
(drgn's trace from the same registers).  `-c CODE` runs CODE and exits.
"""

from __future__ import annotations

from typing import Any, Optional

import click

from mcktools.errors import McktoolsError

#: kernel half of the x86_64 address space: everything drgn may ask us to read
_KERNEL_HALF = (0xFFFF800000000000, 1 << 47)
_PT_REGS = "r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi orig_rax rip cs eflags rsp ss".split()


def drgn_program(t: Any):
    """A drgn Program that reads kernel virtual memory through `t` (None without drgn)."""
    try:
        import drgn
    except ImportError:
        return None
    from mcktools.errors import UnreadableAddress

    prog = t.image.drgn_program()

    def read(address, count, offset, physical):
        try:
            return t.read(address, count)
        except UnreadableAddress as exc:
            raise drgn.FaultError(str(exc), address) from None

    prog.add_memory_segment(_KERNEL_HALF[0], _KERNEL_HALF[1], read)
    return prog


def namespace(t: Any, prog: Any = None) -> dict:
    """The console's globals."""
    from mcktools.model.threads import find_thread
    from mcktools.model.unwind import thread_backtrace

    from .cmd_bt import render_backtrace

    def thread(spec):
        return find_thread(t, spec)

    def bt(spec, quiet: bool = False):
        trace = thread_backtrace(t, find_thread(t, spec))
        if not quiet:
            print(render_backtrace(trace))
        return trace

    def stack_trace(spec):
        """drgn's unwinding of the registers our bt starts from (to compare)."""
        if prog is None:
            raise McktoolsError("drgn is not installed")
        import drgn
        from mcktools.model.registers import thread_registers
        regs = {k: v for k, v in thread_registers(t, find_thread(t, spec)).items() if v is not None}
        ul = prog.int_type("unsigned long", 8, False)
        pt_regs = prog.struct_type("pt_regs", 8 * len(_PT_REGS),
                                   [drgn.TypeMember(ul, n, 64 * i) for i, n in enumerate(_PT_REGS)])
        full = dict.fromkeys(_PT_REGS, 0)
        full.update({k: v for k, v in regs.items() if k in full})
        return prog.stack_trace(drgn.Object(prog, pt_regs, value=full))

    return {
        "target": t, "prog": prog,
        "threads": lambda: [i.row for i in t.threads()],
        "cpus": t.cpus, "processes": t.processes,
        "thread": thread, "obj": t.object, "sym": t.symbol, "read": t.read,
        "bt": bt, "stack_trace": stack_trace,
    }


BANNER = ("mcinspect shell: target, prog (drgn or None); threads(), cpus(), processes(), "
          "thread(X), obj(addr, 'struct x'), sym(name), read(addr, n), bt(X), stack_trace(X)")


@click.command()
@click.option("-c", "--command", "code", metavar="CODE", help="run CODE and exit (no console)")
@click.option("--no-drgn", is_flag=True, help="do not build the drgn Program")
@click.pass_context
def shell(ctx, code: Optional[str], no_drgn: bool):
    """Interactive Python console with the target, drgn's `prog` and helpers loaded."""
    from .cli import _target
    t = _target(ctx)
    prog = None if no_drgn else drgn_program(t)
    ns = namespace(t, prog)
    if code is not None:
        try:
            exec(compile(code, "<mcinspect shell -c>", "exec"), ns)
        except SystemExit:
            raise
        except McktoolsError:
            raise
        except Exception as exc:      # the user's code failed: one line, like every error here
            raise McktoolsError(f"shell -c: {type(exc).__name__}: {exc}") from None
        return
    import code as _code
    try:
        import readline  # noqa: F401  (line editing when available)
    except ImportError:
        pass
    _code.interact(banner=BANNER, local=ns, exitmsg="")
