"""The reference kernel image (kernel/build/mckernel.img, built by the conftest's
`kernel_image` fixture when missing): McKernel's key structures against drgn, and the image's own debug_constants
table (offsets computed by the C compiler) against our DWARF offsets."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mcktools.debuginfo import Image

from .test_debuginfo_support import compare_types, drgn_program, have_tools, nm_symbols, readelf_build_id

pytestmark = [
    pytest.mark.skipif(not have_tools(), reason="gcc/nm/readelf not installed"),
]

STRUCTS = ["struct thread", "struct cpu_local_var", "struct process"]
SYMBOLS = ["clv", "locals", "num_processors", "mck_num_processors", "x86_cpu_local_variables_span",
           "debug_constants", "init_pt", "boot_param", "linux_page_offset_base", "x86_kernel_phys_base",
           "kmsg_buf", "ihk_mc_switch_context", "_head", "boot_param_pa"]


@pytest.fixture(scope="module")
def KERNEL(kernel_image) -> Path:
    return kernel_image


@pytest.fixture(scope="module")
def kernel(KERNEL):
    image = Image.open(KERNEL, use_cache=False)
    yield image, drgn_program(KERNEL)
    image.close()


@pytest.mark.parametrize("name", STRUCTS)
def test_structures_match_drgn(kernel, name):
    image, prog = kernel
    compare_types(image.type(name), prog.type(name), name)


def test_debug_constants_table(kernel):
    image, _prog = kernel
    var = image.variable("debug_constants")
    raw = image.read_static(var.address, 12 * 8)
    table = [int.from_bytes(raw[i:i + 8], "little") for i in range(0, len(raw), 8)]
    ours = [image.sizeof("struct cpu_local_var"),
            image.offsetof("struct cpu_local_var", "current"), image.offsetof("struct cpu_local_var", "runq"),
            image.offsetof("struct cpu_local_var", "status"), image.offsetof("struct cpu_local_var", "idle"),
            image.offsetof("struct thread", "ctx"), image.offsetof("struct thread", "sched_list"),
            image.offsetof("struct thread", "proc"), image.offsetof("struct thread", "status"),
            image.offsetof("struct process", "pid"), image.offsetof("struct thread", "tid"), (1 << 64) - 1]
    assert table == ours


def test_key_symbols_match_nm(kernel, KERNEL):
    image, _prog = kernel
    ref = nm_symbols(KERNEL)
    for name in SYMBOLS:
        if name not in ref:
            continue  # the reference kernel may not define every optional symbol
        assert image.symbol(name) in ref[name], name
    assert "init_pt" in ref and image.symbol("init_pt") in ref["init_pt"]
    out = subprocess.run(["readelf", "-sW", str(KERNEL)], capture_output=True, text=True, check=True).stdout
    assert any(line.split()[-1] == "init_pt" and " LOCAL " in line for line in out.splitlines() if line.split())


def test_variables_match_drgn(kernel):
    image, prog = kernel
    for name in ("clv", "num_processors", "mck_num_processors", "debug_constants", "init_pt"):
        try:
            ref = prog.variable(name)
        except LookupError:
            continue
        var = image.variable(name)
        assert var.address == ref.address_, name
        compare_types(var.type, ref.type_, name)


def test_build_id(kernel, KERNEL):
    image, _prog = kernel
    assert image.build_id == readelf_build_id(KERNEL)
