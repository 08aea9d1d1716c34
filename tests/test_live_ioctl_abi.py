"""The Python packing of the /dev/mcosN ioctl structs against a real C compiler.

kmod/ihk_debug_abi.h states the ABI in C; mcktools.formats.ihk_ioctl packs it in
Python.  Here gcc lays the structs out (sizeof/offsetof and statically
initialised samples) and the Python side must agree byte for byte.  For
aarch64 the object is only compiled, and the numbers are read out of its data
with pyelftools.  The member lists below are written from the ABI reference,
not taken from either implementation.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from mcktools.errors import FormatError
from mcktools.formats import ihk_ioctl as abi

ROOT = Path(__file__).resolve().parents[1]
HEADER = ROOT / "kmod" / "ihk_debug_abi.h"
REFERENCE = ROOT.parent / "shared" / "reference" / "mckernel-debug-abi.md"

# (C struct, Python layout holder, members) -- from the reference, sections 1.4, 3.2, 3.3, 3.4.
STRUCTS = [
    ("ihk_dump_args", abi.DumpArgs, ["cmd", "level", "start", "size", "buf", "spare"]),
    ("ihk_read_kaddr_desc", abi.ReadKaddrDesc, ["kaddr", "len", "ubuf", "flags"]),
    ("ihk_dump_mem_chunk", abi.MemChunk, ["addr", "size"]),
    ("ihk_dump_mem_chunks", abi.MemChunks, ["nr_chunks", "kernel_base", "phys_start"]),
    ("ihk_os_cpu_monitor", abi.CpuMonitor, ["status", "status_bak", "counter", "ocounter"]),
]

# C macro or enumerator -> Python value.
CONSTANTS = {
    "IHK_OS_QUERY_STATUS": abi.IHK_OS_QUERY_STATUS,
    "IHK_OS_DUMP": abi.IHK_OS_DUMP,
    "IHK_OS_STATUS": abi.IHK_OS_STATUS,
    "IHK_OS_READ_KMSG": abi.IHK_OS_READ_KMSG,
    "IHK_OS_CLEAR_KMSG": abi.IHK_OS_CLEAR_KMSG,
    "IHK_OS_QUERY_CPU": abi.IHK_OS_QUERY_CPU,
    "IHK_OS_QUERY_MEM": abi.IHK_OS_QUERY_MEM,
    "IHK_OS_FREEZE": abi.IHK_OS_FREEZE,
    "IHK_OS_THAW": abi.IHK_OS_THAW,
    "IHK_OS_GET_USAGE": abi.IHK_OS_GET_USAGE,
    "IHK_OS_GET_CPU_USAGE": abi.IHK_OS_GET_CPU_USAGE,
    "IHK_OS_GET_BUILDID": abi.IHK_OS_GET_BUILDID,
    "IHK_OS_GET_NUM_CPUS": abi.IHK_OS_GET_NUM_CPUS,
    "IHK_OS_READ_KADDR": abi.IHK_OS_READ_KADDR,
    "IHK_KMSG_SIZE": abi.IHK_KMSG_SIZE,
    "IHK_DUMP_READ_BLOCK": abi.IHK_DUMP_READ_BLOCK,
    "IHK_X86_MAP_KERNEL_START": abi.IHK_X86_MAP_KERNEL_START,
    "IHK_X86_MODULES_END": abi.IHK_X86_MODULES_END,
    **{f"IHK_DUMP_{c.name}": c.value for c in abi.DumpCmd},
    "IHK_DUMP_LEVEL_ALL": abi.DumpLevel.ALL,
    "IHK_DUMP_LEVEL_USER_UNUSED_EXCLUDE": abi.DumpLevel.USER_UNUSED_EXCLUDE,
    "IHK_READ_KADDR_VIRT": abi.ReadKaddrFlag.VIRT,
    "IHK_READ_KADDR_PHYS": abi.ReadKaddrFlag.PHYS,
    **{f"IHK_NMI_MODE_{m.name}": m.value for m in abi.NmiMode},
    "IHK_DUMP_PAGE_SET_INCOMPLETE": abi.DumpPageSetState.INCOMPLETE,
    "IHK_DUMP_PAGE_SET_COMPLETED": abi.DumpPageSetState.COMPLETED,
    **{f"IHK_OS_STATUS_{s.name}": s.value for s in abi.OsStatus},
}

# Samples: every field a distinct value so a swapped or shifted field shows.
SAMPLE_DUMP_ARGS = abi.DumpArgs(cmd=-7, level=24, start=0x1122334455667788, size=-0x1000,
                                buf=0xFFFF888012345678, spare=(1, 2, 3, 0xFFFFFFFFFFFFFFFF))
SAMPLE_KADDR = abi.ReadKaddrDesc(kaddr=0xFFFFFFFFFE801234, len=0x2345, ubuf=0x7FFF00001000, flags=1)
SAMPLE_CPU_MON = abi.CpuMonitor(status=3, status_bak=-1, counter=0xAABBCCDD00112233, ocounter=42)
SAMPLE_CHUNKS = abi.MemChunks(kernel_base=0x1200000, phys_start=0x80000000,
                              chunks=[abi.MemChunk(0x1000000, 0x400000), abi.MemChunk(0x2000000, 0x3000)])

C_SAMPLES = r"""
struct ihk_dump_args mck_sample_dump_args = {
    .cmd = -7, .level = 24, .start = 0x1122334455667788L, .size = -0x1000L,
    .buf = (void *)0xffff888012345678UL,
    .spare = { (void *)1UL, (void *)2UL, (void *)3UL, (void *)0xffffffffffffffffUL },
};
struct ihk_read_kaddr_desc mck_sample_kaddr = {
    .kaddr = 0xfffffffffe801234UL, .len = 0x2345, .ubuf = (void *)0x7fff00001000UL,
    .flags = IHK_READ_KADDR_PHYS,
};
struct ihk_os_cpu_monitor mck_sample_cpu_mon = {
    .status = 3, .status_bak = -1, .counter = 0xaabbccdd00112233UL, .ocounter = 42,
};
struct mck_sample_chunks_t { struct ihk_dump_mem_chunks h; struct ihk_dump_mem_chunk c[2]; };
struct mck_sample_chunks_t mck_sample_chunks = {
    .h = { .nr_chunks = 2, .kernel_base = 0x1200000UL, .phys_start = 0x80000000UL },
    .c = { { 0x1000000UL, 0x400000UL }, { 0x2000000UL, 0x3000UL } },
};
"""

SAMPLES = {
    "mck_sample_dump_args": SAMPLE_DUMP_ARGS.pack(),
    "mck_sample_kaddr": SAMPLE_KADDR.pack(),
    "mck_sample_cpu_mon": abi.CpuMonitor.STRUCT.pack(3, -1, 0xAABBCCDD00112233, 42),
    "mck_sample_chunks": SAMPLE_CHUNKS.pack(),
}


def _layout_items() -> list[tuple[str, str]]:
    """(label, C expression) for every size, offset and constant to compare."""
    items = []
    for cname, _py, members in STRUCTS:
        items.append((f"sizeof {cname}", f"sizeof(struct {cname})"))
        for m in members:
            items.append((f"offsetof {cname}.{m}", f"offsetof(struct {cname}, {m})"))
    items.append(("sizeof ihk_os_monitor_head", "sizeof(struct ihk_os_monitor_head)"))
    items.append(("offsetof ihk_os_monitor_head.reserved",
                  "offsetof(struct ihk_os_monitor_head, reserved)"))
    for name in CONSTANTS:
        items.append((f"const {name}", f"(unsigned long)({name})"))
    return items


def _c_source(with_main: bool) -> str:
    items = _layout_items()
    lines = [f'#include "{HEADER}"', "#include <stddef.h>", "#include <stdio.h>" if with_main else "",
             "unsigned long mck_layout[] = {"]
    lines += [f"    {expr}," for _label, expr in items]
    lines.append("};")
    lines.append(C_SAMPLES)
    if with_main:
        lines.append("int main(void) {")
        for i, (label, _expr) in enumerate(items):
            lines.append(f'    printf("%s %lu\\n", "{label.replace(" ", "|")}", mck_layout[{i}]);')
        lines.append("    return 0;\n}")
    return "\n".join(lines) + "\n"


def _expected() -> dict[str, int]:
    """The numbers as the Python packing sees them."""
    out: dict[str, int] = {}
    sizes = {"ihk_dump_args": abi.DumpArgs.SIZE, "ihk_read_kaddr_desc": abi.ReadKaddrDesc.SIZE,
             "ihk_dump_mem_chunk": abi.MemChunk.STRUCT.size,
             "ihk_dump_mem_chunks": abi.MemChunks.HEADER_SIZE,
             "ihk_os_cpu_monitor": abi.CpuMonitor.SIZE}
    for cname, py, members in STRUCTS:
        out[f"sizeof {cname}"] = sizes[cname]
        for m in members:
            out[f"offsetof {cname}.{m}"] = py.OFFSETS[m]
    out["sizeof ihk_os_monitor_head"] = abi.OS_MONITOR_STRUCT.size
    out["offsetof ihk_os_monitor_head.reserved"] = abi.OS_MONITOR_OFFSETS["reserved"]
    for name, value in CONSTANTS.items():
        out[f"const {name}"] = int(value)
    return out


def _compile_object(cc: str, tmp_path: Path) -> Path:
    src = tmp_path / f"abi_{cc}.c"
    src.write_text(_c_source(with_main=False))
    obj = tmp_path / f"abi_{cc}.o"
    subprocess.run([cc, "-std=gnu11", "-O0", "-Wall", "-Werror", "-c", str(src), "-o", str(obj)],
                   check=True, capture_output=True, text=True)
    return obj


def _object_data(obj: Path) -> dict[str, bytes]:
    """Bytes of every defined data symbol in a relocatable object."""
    out = {}
    with open(obj, "rb") as f:
        elf = ELFFile(f)
        symtab = elf.get_section_by_name(".symtab")
        for sym in symtab.iter_symbols():
            if sym["st_info"]["type"] != "STT_OBJECT" or not isinstance(sym["st_shndx"], int):
                continue
            sec = elf.get_section(sym["st_shndx"])
            data = sec.data()
            out[sym.name] = data[sym["st_value"]: sym["st_value"] + sym["st_size"]]
    return out


def _check_object(obj: Path, expect_machine: str) -> None:
    with open(obj, "rb") as f:
        elf = ELFFile(f)
        assert elf["e_machine"] == expect_machine
        assert elf.little_endian and elf.elfclass == 64
    data = _object_data(obj)
    items = _layout_items()
    raw = data["mck_layout"]
    assert len(raw) == 8 * len(items)
    got = {label: int.from_bytes(raw[8 * i: 8 * i + 8], "little") for i, (label, _e) in enumerate(items)}
    expected = _expected()
    mismatches = {k: (got[k], expected[k]) for k in expected if got[k] != expected[k]}
    assert not mismatches, f"C (got) vs Python (expected): {mismatches}"
    for name, packed in SAMPLES.items():
        assert data[name] == packed, f"{name}: C {data[name].hex()} != Python {packed.hex()}"


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")
def test_x86_64_program_prints_same_layout(tmp_path):
    """Run a gcc-built program that prints sizeof/offsetof/constants."""
    src = tmp_path / "abi_print.c"
    src.write_text(_c_source(with_main=True))
    exe = tmp_path / "abi_print"
    subprocess.run(["gcc", "-std=gnu11", "-Wall", "-Werror", str(src), "-o", str(exe)],
                   check=True, capture_output=True, text=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    got = {}
    for line in out.splitlines():
        label, value = line.rsplit(" ", 1)
        got[label.replace("|", " ")] = int(value)
    assert got == _expected()


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")
def test_x86_64_object_layout_and_samples(tmp_path):
    _check_object(_compile_object("gcc", tmp_path), "EM_X86_64")


@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-gcc") is None,
                    reason="aarch64-linux-gnu-gcc not installed (apt-get install gcc-aarch64-linux-gnu)")
def test_aarch64_object_layout_and_samples(tmp_path):
    _check_object(_compile_object("aarch64-linux-gnu-gcc", tmp_path), "EM_AARCH64")


def test_header_static_asserts_fire_on_a_wrong_size(tmp_path):
    """The header's own layout pins are live: a program contradicting them fails to build."""
    src = tmp_path / "bad.c"
    src.write_text(f'#include "{HEADER}"\n'
                   "_Static_assert(sizeof(struct ihk_dump_args) == 56, \"wrong on purpose\");\n")
    r = subprocess.run(["gcc", "-std=gnu11", "-c", str(src), "-o", str(tmp_path / "bad.o")],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "wrong on purpose" in r.stderr


@pytest.mark.skipif(not REFERENCE.exists(), reason="shared ABI reference not beside the checkout")
def test_request_numbers_match_the_reference():
    """Numbers in the prose reference (section 3) equal the Python constants."""
    text = REFERENCE.read_text()
    heads = dict(re.findall(r"### 3\.\d `(IHK_OS_\w+)` = `(0x[0-9a-f]+)`", text))
    assert int(heads["IHK_OS_DUMP"], 16) == abi.IHK_OS_DUMP
    assert int(heads["IHK_OS_READ_KADDR"], 16) == abi.IHK_OS_READ_KADDR
    rows = dict(re.findall(r"^\| `(DUMP_\w+)` \| (\d+) \|", text, re.M))
    assert len(rows) == len(abi.DumpCmd)
    for name, value in rows.items():
        assert abi.DumpCmd[name[len("DUMP_"):]] == int(value)
    status = re.search(r"\*\*`enum ihk_os_status`\*\*.*?\n\n(.*?)\n\n", text, re.S).group(1)
    pairs = re.findall(r"^\| (\d+) \| `(\w+)`", status, re.M)
    assert len(pairs) == len(abi.OsStatus)
    for value, name in pairs:
        assert abi.OsStatus[name] == int(value)


def test_mem_chunks_round_trip_and_truncation():
    data = SAMPLE_CHUNKS.pack()
    assert len(data) == 24 + 16 * 2
    assert abi.MemChunks.unpack(data) == SAMPLE_CHUNKS
    for cut in (0, 23, 24, 39, len(data) - 1):
        with pytest.raises(FormatError):
            abi.MemChunks.unpack(data[:cut])
    negative = (-1).to_bytes(4, "little", signed=True) + data[4:]
    with pytest.raises(FormatError):
        abi.MemChunks.unpack(negative)


def test_out_of_range_values_are_format_errors():
    with pytest.raises(FormatError):
        abi.DumpArgs(cmd=1, start=1 << 63).pack()
    with pytest.raises(FormatError):
        abi.ReadKaddrDesc(kaddr=-1).pack()
    with pytest.raises(FormatError):
        abi.DumpArgs.unpack(b"\0" * 63)
