"""Rendering of model rows: text tables in the upstream tools' formats, and JSON.

Kept apart from the CLI so other frontends (eclair's `monitor` command) can
print the same tables.
"""

from __future__ import annotations

from typing import Any, Iterable

from mcktools.memory.translate import size_name


def to_json(data: Any) -> str:
    """JSON with rows (dataclasses with to_dict) turned into objects; ints stay ints."""
    import json  # only --json output needs it (start-up time of the text commands)

    def conv(o):
        if hasattr(o, "to_dict"):
            return conv(o.to_dict())
        if isinstance(o, dict):
            return {str(k): conv(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [conv(v) for v in o]
        if isinstance(o, bytes):
            return o.hex()
        return o
    return json.dumps(conv(data), indent=1)


def ps_table(rows: Iterable) -> str:
    """crash mcps layout: a `>` before each CPU's current thread."""
    out = [" %6s %6s %6s %3s %-16s %2s %s" % ("TID", "PID", "PPID", "CPU", "THREAD", "ST", "COMM")]
    for r in rows:
        out.append("%s%6d %6d %6d %3d %016x %2s %s" % (
            ">" if r.current else " ", r.tid, r.pid, r.ppid, r.cpu, r.addr, r.st, r.comm))
    return "\n".join(out)


def mem_header() -> str:
    return "%-16s %-16s %4s %-8s %-16s  %s" % ("START", "END", "PERM", "SIZE", "MEMOBJ", "BACKING-FILE")


def mem_row(r) -> str:
    return "%016x-%016x %4s %08x %016x   %s" % (r.start, r.end, r.perm, r.size, r.memobj, r.label)


def mem_table(title: str, rows: Iterable) -> str:
    out = [title, mem_header()]
    out.extend(mem_row(r) for r in rows)
    return "\n".join(out)


def vtop_header() -> str:
    return "%-16s %-16s %s %s" % ("VIRT", "PHYS", "SIZE", "FLAGS")


def vtop_row(r) -> str:
    if r.collapsed:
        return "..."
    line = "%016x %016x %4s (%s)" % (r.virt, r.phys, size_name(r.size), "|".join(r.flags))
    if r.excluded:
        line += "  [page not in the dump]"
    return line


def vtop_lookup(va: int, r) -> str:
    """One address looked up: the leaf row, the PTE, the vm range holding it."""
    if r is None:
        return f"Couldn't find valid PTE for {va:#x}"
    out = [vtop_header(), vtop_row(r)]
    if r.pte:
        out.append(f"PTE: {r.pte:x}")
    else:
        out.append(f"(linear {r.region} map)")
    if r.vm_range is not None:
        from types import SimpleNamespace
        out += ["", "Memory range:", mem_header(), mem_row(SimpleNamespace(**r.vm_range))]
    return "\n".join(out)


def kv_table(pairs: Iterable) -> str:
    pairs = list(pairs)
    width = max((len(k) for k, _ in pairs), default=0)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in pairs)
