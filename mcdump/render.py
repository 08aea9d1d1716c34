"""Text rendering of mcdump results (rows in, lines out)."""

from __future__ import annotations


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} B"


def info_text(res) -> str:
    lines = [f"file:        {res.path}", f"format:      {res.format}", f"file size:   {res.file_size} bytes"]
    for label, value in (("date", res.date), ("hostname", res.hostname), ("user", res.user)):
        if value is not None:
            lines.append(f"{label + ':':<13}{value}")
    if res.kernel_base is not None:
        lines.append(f"kernel_base: {res.kernel_base:#x}")
    if res.phys_start is not None:
        lines.append(f"phys_start:  {res.phys_start:#x}")
    if res.dump_level is not None:
        lines.append(f"dump level:  {res.dump_level} ({res.dump_level_of})")
    else:
        lines.append("dump level:  unknown (the format does not record it)")
    for k, v in sorted(res.details.items()):
        if isinstance(v, (list, dict)):
            continue
        label = k.replace('_', ' ') + ':'
        lines.append(f"{label:<13}{v}" if len(label) < 13 else f"{label} {v}")
    if res.extra_sections:
        lines.append("extra sections: " + ", ".join(f"{s['name']} ({s['size']} bytes)" for s in res.extra_sections))
    if res.notes:
        lines.append("notes: " + ", ".join(f"{k} x{v}" for k, v in sorted(res.notes.items())))
    lines.append(f"chunks:      {len(res.chunks)}, {res.total_bytes} bytes ({_size(res.total_bytes)}), "
                 f"{res.stored_bytes} stored")
    show_va = any(c.vaddr is not None for c in res.chunks)
    head = f"  {'#':>5}  {'start':>18}  {'end':>18}  {'size':>12}  {'stored':>12}"
    if show_va:
        head += f"  {'vaddr':>18}"
    lines.append(head)
    for c in res.chunks:
        row = f"  {c.index:>5}  {c.addr:#18x}  {c.end:#18x}  {c.size:#12x}  {c.stored:#12x}"
        if show_va:
            row += f"  {c.vaddr:#18x}"
        lines.append(row)
    lines.append(f"holes:       {len(res.holes)}, {sum(h.size for h in res.holes)} bytes")
    for h in res.holes:
        lines.append(f"         {h.addr:#18x}  {h.addr + h.size:#18x}  {h.size:#12x}")
    return "\n".join(lines)


def verify_text(res) -> str:
    lines = []
    for c in res.checks:
        lines.append(f"{'ok  ' if c.ok else 'FAIL'}  {c.name}: {c.detail}")
    if res.excluded_pages is not None:
        lines.append(f"excluded: {res.excluded_pages} pages of McKernel memory are not in the dump "
                     f"({len(res.excluded)} ranges)")
    elif res.excluded:
        lines.append(f"holes between chunks: {len(res.excluded)} (the image does not describe its chunk list)")
    for r in res.excluded[:50]:
        lines.append(f"      {r['addr']:#18x}  {r['addr'] + r['size']:#18x}  {r['size'] // 4096:>8} pages")
    if len(res.excluded) > 50:
        lines.append(f"      ... {len(res.excluded) - 50} more")
    lines.append("PASS" if res.ok else "FAIL")
    return "\n".join(lines)
