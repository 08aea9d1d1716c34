"""The decoded CFI, line and inline tables (mcktools.debuginfo.unwindinfo) against binutils:
`readelf -wF` (interpreted .eh_frame) and `addr2line -f -i` (lines and inlined calls)."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.test_model_fixtures import _fixture

DWARF_NAMES = ("rax", "rdx", "rcx", "rbx", "rsi", "rdi", "rbp", "rsp",
               "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "ra")


@pytest.fixture(scope="module", params=["multi", "panic"])
def image(request, fixture_dir, tmp_path_factory):
    return _fixture(fixture_dir, request.param) / "mckernel.img"


@pytest.fixture(scope="module")
def tables(image, tmp_path_factory):
    import os
    from mcktools.debuginfo import Image
    from mcktools.debuginfo.unwindinfo import unwind_tables
    os.environ["MCKTOOLS_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    try:
        from mcktools.debuginfo import unwindinfo
        with Image.open(image) as im:
            built = unwind_tables(im, use_cache=False)
            unwindinfo._MEMORY.clear()           # forget what earlier tests loaded
            first = unwind_tables(im)            # builds and stores (empty cache folder)
            unwindinfo._MEMORY.clear()
            again = unwind_tables(im)            # from disk
    finally:
        del os.environ["MCKTOOLS_CACHE_DIR"]
    assert first.source == "built" and again.source == "disk"
    assert again._fdes == built._fdes and again._lines == built._lines and again._inlines == built._inlines
    return again


def _readelf_rows(image) -> dict:
    """({fde start: [(loc, cfa, {column: rule})]}, number of FDEs) from readelf's
    interpreted .eh_frame table."""
    out = subprocess.run(["readelf", "-wF", str(image)], capture_output=True, text=True, check=True).stdout
    out = out.split("Contents of the .debug_frame section")[0]      # we read .eh_frame
    fdes, cies = {}, {}
    cur, cols = None, None
    for line in out.splitlines():
        m = re.match(r"([0-9a-f]+) [0-9a-f]+ ([0-9a-f]+) (CIE|FDE)(?: cie=([0-9a-f]+) pc=([0-9a-f]+)\.\.)?", line)
        if m:
            if m.group(3) == "CIE":
                cur = cies.setdefault(int(m.group(1), 16), [])
            else:
                start = int(m.group(5), 16)
                cur = fdes.setdefault(int(m.group(1), 16), [])
                cur.append((start, int(m.group(4), 16)))     # readelf prints the CIE's offset
            continue
        if line.strip().startswith("LOC"):
            cols = line.split()[2:]
            continue
        parts = line.split()
        if cur is not None and cols and len(parts) == 2 + len(cols) and re.fullmatch(r"[0-9a-f]+", parts[0]):
            cur.append((int(parts[0], 16), parts[1], dict(zip(cols, parts[2:]))))
    result = {}
    for rows in fdes.values():
        start, cie = rows[0]
        body = rows[1:]
        if not body:      # no instructions of its own: the CIE's initial rules hold
            body = [(start, cfa, regs) for _loc, cfa, regs in cies.get(cie, [])]
        result.setdefault(start, []).extend(body)
    return result, len(fdes)


def _ours(row) -> tuple:
    cfa = f"{DWARF_NAMES[row.cfa_reg]}{row.cfa_offset:+d}" if row.cfa_reg is not None else "exp"
    regs = {}
    for regno, kind, arg in row.rules:
        name = DWARF_NAMES[regno]
        if kind in ("o", "v"):
            regs[name] = f"{'c' if kind == 'o' else 'v'}{arg:+d}"
        elif kind == "r":
            regs[name] = DWARF_NAMES[arg]
        else:
            regs[name] = {"u": "u", "s": "s"}.get(kind, "exp")
    return cfa, regs


def test_cfi_rows_match_readelf(image, tables):
    theirs, count = _readelf_rows(image)
    assert theirs and count == tables.fde_count
    checked = 0
    for start, rows in theirs.items():
        for loc, cfa, regs in rows:
            row = tables.row(loc)
            assert row is not None and row.pc == loc, hex(loc)
            our_cfa, our_regs = _ours(row)
            assert our_cfa == cfa, (hex(loc), our_cfa, cfa)
            for col, rule in regs.items():
                # readelf prints "u" for a column without a rule in this row
                assert our_regs.get(col, "u") == rule, (hex(loc), col, our_regs, regs)
            checked += 1
    assert checked > 100


def _instruction_addresses(image, every=5) -> list:
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(image)], capture_output=True,
                         text=True, check=True).stdout
    addrs = [int(m.group(1), 16) for m in re.finditer(r"^([0-9a-f]{16}):\t", out, re.M)]
    return addrs[::every]


def test_lines_and_inlined_calls_match_addr2line(image, tables):
    from mcktools.debuginfo import Image
    addrs = _instruction_addresses(image)
    assert len(addrs) > 300
    out = subprocess.run(["addr2line", "-f", "-i", "-a", "-e", str(image)] + [f"{a:#x}" for a in addrs],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    chains, cur = {}, None
    i = 0
    while i < len(out):
        if out[i].startswith("0x"):
            cur = chains.setdefault(int(out[i], 16), [])
            i += 1
            continue
        fn, loc = out[i], out[i + 1]
        file, _, line = loc.split(" ")[0].rpartition(":")
        cur.append((fn, file.rsplit("/", 1)[-1], int(line) if line.isdigit() else None))
        i += 2
    with Image.open(image) as im:
        compared = 0
        for a in addrs:
            chain = chains[a]
            if chain[0][0] == "??" or chain[0][2] is None:
                assert tables.line(a) is None or chain[0][0] == "??", hex(a)
                continue
            inl = tables.inlined_at(a)
            names = [n for n, _f, _l in inl]
            sym = im.lookup(a)
            assert names + [chain[-1][0]] == [fn for fn, _f, _l in chain], (hex(a), inl, chain, sym)
            assert tables.line(a) == chain[0][1:], (hex(a), tables.line(a), chain[0])
            # each outer frame is at the line of the call that was inlined into it
            for (_n, cfile, cline), (_fn, file, line) in zip(inl, chain[1:]):
                assert (cfile, cline) == (file, line), hex(a)
            compared += 1
    assert compared > 300
