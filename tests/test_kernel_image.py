"""The reference kernel image carries McKernel's debug ABI: symbols, struct/member names and
enumerators in DWARF (5 by default, 4 with DWARF=4), debug_constants that agree with DWARF,
and the boot/ELF properties the harness relies on. Facts are checked against readelf and
pyelftools output and against the values in the shared ABI reference, never against numbers
produced by the kernel's own code."""
from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

elftools = pytest.importorskip("elftools")
from elftools.elf.elffile import ELFFile  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KERNEL = ROOT / "kernel"
MAP_KERNEL_START = 0xFFFFFFFFFE800000

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("readelf") is None,
                                reason="needs gcc and binutils")

SYMBOLS = ["clv", "locals", "num_processors", "mck_num_processors", "x86_cpu_local_variables_span",
           "debug_constants", "init_pt", "boot_param", "boot_param_pa", "linux_page_offset_base",
           "x86_kernel_phys_base", "kmsg_buf", "nmi_mode", "ihk_mc_switch_context", "_head"]

STRUCTS = {
    "cpu_local_var": ["idle", "current", "runq", "status", "resource_set"],
    "thread": ["tid", "status", "proc", "sched_list", "siblings_list", "hash_list", "ctx", "uctx", "vm"],
    "process": ["pid", "ppid_parent", "saved_cmdline", "saved_cmdline_len", "vm", "threads_list",
                "status", "hash_list"],
    "process_vm": ["address_space", "vm_range_tree", "region", "vdso_addr", "vvar_addr"],
    "vm_regions": ["brk_start", "brk_end_allocated", "stack_start", "stack_end", "text_start", "text_end"],
    "vm_range": ["vm_rb_node", "start", "end", "flag", "memobj", "pgshift"],
    "rb_node": ["__rb_parent_color", "rb_right", "rb_left"],
    "rb_root": ["rb_node"],
    "memobj": ["path"],
    "address_space": ["page_table"],
    "resource_set": ["process_hash", "thread_hash"],
    "process_hash": ["list"],
    "thread_hash": ["list"],
    "ihk_kmsg_buf": ["lock", "tail", "len", "head", "str"],
    "x86_cpu_local_variables": ["panic_regs", "paniced", "tss", "processor_id", "user_stack"],
    "x86_user_context": ["sr", "gpr"],
    "x86_basic_regs": ["r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax",
                       "rcx", "rdx", "rsi", "rdi", "rip", "cs", "rflags", "rsp", "ss"],
    "x86_kregs": ["rsp", "rbp", "rbx", "rsi", "rdi", "r12", "r13", "r14", "r15", "rflags", "rsp0"],
    "smp_boot_param": ["start", "end", "msg_buffer", "msg_buffer_size", "nmi_mode_addr",
                       "page_offset_base", "dump_level", "dump_page_set", "kernel_args", "nr_cpus"],
    "ihk_dump_page_set": ["completion_flag", "count", "page_size", "phy_page"],
    "ihk_dump_page": ["start", "map_count", "map"],
}

# Reference section 6.9 (McKernel's values).
ENUMERATORS = {
    "PS_RUNNING": 0x1, "PS_INTERRUPTIBLE": 0x2, "PS_UNINTERRUPTIBLE": 0x4, "PS_ZOMBIE": 0x8,
    "PS_EXITED": 0x10, "PS_STOPPED": 0x20, "PS_TRACED": 0x40, "PS_STOPPING": 0x80,
    "PS_TRACING": 0x100, "PS_DELAY_STOPPED": 0x200, "PS_DELAY_TRACED": 0x400,
    "CPU_STATUS_DISABLE": 0, "CPU_STATUS_IDLE": 1, "CPU_STATUS_RUNNING": 2, "CPU_STATUS_RESERVED": 3,
    "VR_STACK": 0x1, "VR_RESERVED": 0x2, "VR_AP_USER": 0x4, "VR_IO_NOCACHE": 0x100,
    "VR_REMOTE": 0x200, "VR_WRITE_COMBINED": 0x400, "VR_DONTFORK": 0x800,
    "VR_DEMAND_PAGING": 0x1000, "VR_PRIVATE": 0x2000, "VR_LOCKED": 0x4000, "VR_FILEOFF": 0x8000,
    "VR_PROT_READ": 0x10000, "VR_PROT_WRITE": 0x20000, "VR_PROT_EXEC": 0x40000,
    "VR_MAXPROT_READ": 0x100000, "VR_MAXPROT_WRITE": 0x200000, "VR_MAXPROT_EXEC": 0x400000,
    "VR_MEMTYPE_UC": 0x01000000, "VR_PAGEOUT": 0x10000000, "VR_DONTDUMP": 0x20000000,
    "VR_XPMEM": 0x40000000, "VR_WIPEONFORK": 0x80000000,
}


def _build(tmp: Path, dwarf: int) -> Path:
    subprocess.run(["make", "-s", "-C", str(KERNEL), f"DWARF={dwarf}", f"BUILD={tmp}"], check=True,
                   stdout=subprocess.DEVNULL)
    return tmp / "mckernel.img"


@pytest.fixture(scope="module", params=[5, 4])
def image(request, tmp_path_factory) -> tuple[int, Path]:
    return request.param, _build(tmp_path_factory.mktemp(f"kdwarf{request.param}"), request.param)


def _dwarf_index(path: Path):
    """struct name -> {member: (offset, type DIE)}, enumerators, variables, CU versions."""
    structs: dict[str, dict[str, int]] = {}
    sizes: dict[str, int] = {}
    enums: dict[str, tuple[int, str | None]] = {}
    variables: set[str] = set()
    versions = set()
    with open(path, "rb") as fh:
        dw = ELFFile(fh).get_dwarf_info()
        for cu in dw.iter_CUs():
            versions.add(cu.header["version"])
            for die in cu.iter_DIEs():
                if die.tag == "DW_TAG_structure_type" and "DW_AT_name" in die.attributes \
                        and "DW_AT_declaration" not in die.attributes:
                    name = die.attributes["DW_AT_name"].value.decode()
                    members = structs.setdefault(name, {})
                    sizes[name] = die.attributes["DW_AT_byte_size"].value
                    for child in die.iter_children():
                        if child.tag == "DW_TAG_member" and "DW_AT_name" in child.attributes:
                            loc = child.attributes.get("DW_AT_data_member_location")
                            members[child.attributes["DW_AT_name"].value.decode()] = loc.value if loc else 0
                elif die.tag == "DW_TAG_enumerator":
                    parent = die.get_parent()
                    pname = parent.attributes.get("DW_AT_name")
                    enums[die.attributes["DW_AT_name"].value.decode()] = (
                        die.attributes["DW_AT_const_value"].value, pname.value.decode() if pname else None)
                elif die.tag == "DW_TAG_variable" and "DW_AT_name" in die.attributes:
                    variables.add(die.attributes["DW_AT_name"].value.decode())
    return structs, sizes, enums, variables, versions


@pytest.fixture(scope="module")
def dwarf(image):
    return image[0], image[1], _dwarf_index(image[1])


def _readelf_symbols(path: Path) -> dict[str, tuple[int, str, str]]:
    out = subprocess.run(["readelf", "-sW", str(path)], check=True, capture_output=True, text=True).stdout
    syms = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) == 8 and f[0].endswith(":") and f[0][:-1].isdigit():
            syms[f[7]] = (int(f[1], 16), f[3], f[4])
    return syms


def test_dwarf_version(dwarf):
    version, _, (_, _, _, _, versions) = dwarf
    assert versions == {version}


def test_symbols_present(image):
    syms = _readelf_symbols(image[1])
    missing = [s for s in SYMBOLS if s not in syms]
    assert not missing, missing
    assert syms["init_pt"][2] == "LOCAL"          # static, as McKernel's
    assert syms["ihk_mc_switch_context"][1] == "FUNC"
    assert syms["_head"][0] == MAP_KERNEL_START + 0x1000


def test_structs_and_members(dwarf):
    _, _, (structs, sizes, _, variables, _) = dwarf
    for name, members in STRUCTS.items():
        assert name in structs, f"struct {name} missing from DWARF"
        missing = [m for m in members if m not in structs[name]]
        assert not missing, f"struct {name} lacks {missing}"
    for var in [s for s in SYMBOLS if s not in ("ihk_mc_switch_context", "_head")]:
        assert var in variables, f"variable {var} missing from DWARF"


def test_fixed_layouts(dwarf):
    """Offsets the reference pins regardless of configuration."""
    _, _, (structs, sizes, _, _, _) = dwarf
    assert structs["x86_cpu_local_variables"]["paniced"] == 280
    assert structs["x86_cpu_local_variables"]["panic_regs"] == 288
    assert structs["x86_cpu_local_variables"]["tss"] == 176
    assert sizes["x86_user_context"] == 224
    assert structs["x86_user_context"]["gpr"] == 56
    assert structs["x86_basic_regs"]["rip"] == 184 - 56
    assert sizes["x86_kregs"] == 88
    assert structs["ihk_kmsg_buf"]["str"] == 4096
    assert structs["vm_range"]["vm_rb_node"] == 0
    assert structs["rb_node"] == {"__rb_parent_color": 0, "rb_right": 8, "rb_left": 16}
    assert structs["address_space"]["page_table"] == 0
    assert sizes["ihk_dump_page_set"] == 24
    assert structs["smp_boot_param"]["msg_buffer"] == 40
    assert structs["smp_boot_param"]["nmi_mode_addr"] == 104


def test_enumerators(dwarf):
    _, _, (_, _, enums, _, _) = dwarf
    for name, value in ENUMERATORS.items():
        assert name in enums, f"enumerator {name} missing"
        assert enums[name][0] == value, name
        assert enums[name][1] is not None, f"{name} is not in a named enum type"


def _read_static(path: Path, va: int, size: int) -> bytes:
    with open(path, "rb") as fh:
        elf = ELFFile(fh)
        for seg in elf.iter_segments():
            if seg["p_type"] == "PT_LOAD" and seg["p_vaddr"] <= va < seg["p_vaddr"] + seg["p_filesz"]:
                fh.seek(seg["p_offset"] + va - seg["p_vaddr"])
                return fh.read(size)
    raise AssertionError(f"{va:#x} is not file-backed")


def test_debug_constants_match_dwarf(dwarf):
    _, path, (structs, sizes, _, _, _) = dwarf
    syms = _readelf_symbols(path)
    values = struct.unpack("<12Q", _read_static(path, syms["debug_constants"][0], 96))
    clv, th = structs["cpu_local_var"], structs["thread"]
    expected = [sizes["cpu_local_var"], clv["current"], clv["runq"], clv["status"], clv["idle"],
                th["ctx"], th["sched_list"], th["proc"], th["status"], structs["process"]["pid"],
                th["tid"], 2**64 - 1]
    assert list(values) == expected


def test_span_and_phys_base_are_static_data(dwarf):
    _, path, _ = dwarf
    syms = _readelf_symbols(path)
    span = struct.unpack("<Q", _read_static(path, syms["x86_cpu_local_variables_span"][0], 8))[0]
    assert span == 4 * 4096
    base = struct.unpack("<Q", _read_static(path, syms["x86_kernel_phys_base"][0], 8))[0]
    assert base == 0x1200000


def test_elf_boot_properties(image):
    _, path = image
    hdr = subprocess.run(["readelf", "-hlnW", str(path)], check=True, capture_output=True, text=True).stdout
    assert re.search(r"Type:\s+EXEC", hdr) and "X86-64" in hdr
    assert "NT_GNU_BUILD_ID" in hdr
    assert re.search(r"Xen\s+0x00000008\s+Unknown note type: \(0x00000012\)", hdr)
    with open(path, "rb") as fh:
        elf = ELFFile(fh)
        loads = [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
        note = elf.get_section_by_name(".notes")
        bid = next(n for n in note.iter_notes() if n["n_type"] == "NT_GNU_BUILD_ID")
        xen = next(n for n in note.iter_notes() if n["n_name"] == "Xen")
        # the build-id note lies in a loaded segment, so it is in guest memory
        addr = note["sh_addr"]
        assert any(s["p_vaddr"] <= addr < s["p_vaddr"] + s["p_filesz"] for s in loads)
        assert bid["n_desc"]
        entry_pa = struct.unpack("<Q", xen["n_descdata"])[0]
        for s in loads:  # every VA maps to PA = VA - MAP_KERNEL_START + 0x1200000
            assert s["p_paddr"] == s["p_vaddr"] - MAP_KERNEL_START + 0x1200000
        text = loads[0]
        assert text["p_paddr"] <= entry_pa < text["p_paddr"] + text["p_filesz"]


def test_switch_context_has_cfi(image):
    _, path = image
    syms = _readelf_symbols(path)
    fn = syms["ihk_mc_switch_context"][0]
    out = subprocess.run(["readelf", "--debug-dump=frames-interp", str(path)], check=True,
                         capture_output=True, text=True).stdout
    found = False
    for m in re.finditer(r"pc=([0-9a-f]+)\.\.([0-9a-f]+)\n(.*?)(?=\n\n)", out, re.S):
        lo, hi = int(m.group(1), 16), int(m.group(2), 16)
        if lo <= fn < hi:
            rows = m.group(3).splitlines()
            first = rows[1].split()
            assert first[1] == "rsp+8" and first[-1] == "c-8"   # CFA and return address at entry
            found = True
    assert found, "no FDE covers ihk_mc_switch_context"


def test_build_is_deterministic(image, tmp_path):
    version, path = image
    if version != 5:
        pytest.skip("checked once")
    again = _build(tmp_path / "again", 5)
    assert again.read_bytes() == path.read_bytes()
