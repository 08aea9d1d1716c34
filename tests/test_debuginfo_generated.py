"""A small version of the benchmark's generated image (many CUs repeating one
header, as a kernel does): every struct and enum checked against drgn."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest

from mcktools.debuginfo import Image

from .test_debuginfo_support import compare_types, drgn_program, have_tools

pytestmark = pytest.mark.skipif(not have_tools(), reason="gcc/nm/readelf not installed")

BENCH = Path(__file__).resolve().parents[1] / "bench" / "dwarf_load.py"


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("dwarf_load_bench", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    folder = tmp_path_factory.mktemp("gen")
    files = bench.generate_source(folder, shared=25, units=4, per_unit=6)
    out = folder / "gen.img"
    subprocess.run(["gcc", "-g", "-O2", "-fno-eliminate-unused-debug-types", "-o", str(out),
                    *map(str, files)], check=True, cwd=folder)
    return out, Image.open(out, use_cache=False), drgn_program(out)


def test_every_struct_matches_drgn(generated):
    _path, image, prog = generated
    names = [f"struct shared_{i}" for i in range(25)] + [f"struct u{u}_s{j}" for u in range(4) for j in range(6)]
    names += [f"enum mode_{i}" for i in range(50)] + ["u64", "spin_t", "struct list_head"]
    for name in names:
        compare_types(image.type(name), prog.type(name), name)


def test_variables_and_enumerators(generated):
    _path, image, prog = generated
    for u in range(4):
        for k in range(5):
            name = f"gp_{u}_{k}"
            assert image.variable(name).address == prog.variable(name).address_
            compare_types(image.variable(name).type, prog.variable(name).type_, name)
    for i in (0, 7, 49):
        assert image.enum_value(f"MODE_{i}_C") == prog.constant(f"MODE_{i}_C").value_() == -(i + 1)
