"""Layouts, variables, symbols and build-id of gcc-built fixtures, checked against
drgn (types), nm (symbols) and readelf (build-id)."""

from __future__ import annotations

import subprocess

import pytest

from mcktools.debuginfo import Image, StructType, strip_typedefs
from mcktools.errors import DebugInfoError, UnreadableAddress

from .test_debuginfo_support import (TYPE_NAMES, VARIABLES, compare_types, compile_fixture, drgn_program,
                                     have_tools, nm_symbols, readelf_build_id)

pytestmark = pytest.mark.skipif(not have_tools(), reason="gcc/nm/readelf not installed")

VARIANTS = [(4, "-O0"), (4, "-O2"), (5, "-O0"), (5, "-O2")]


@pytest.fixture(scope="module", params=VARIANTS, ids=[f"dwarf{d}{o}" for d, o in VARIANTS])
def built(request, tmp_path_factory):
    dwarf, opt = request.param
    path = compile_fixture(tmp_path_factory.mktemp(f"fix{dwarf}{opt}"), dwarf, opt)
    image = Image.open(path, use_cache=False)
    yield path, image, drgn_program(path)
    image.close()


def test_dwarf_version_is_what_we_asked_for(built):
    path, _image, _prog = built
    out = subprocess.run(["readelf", "--debug-dump=info", str(path)], capture_output=True, text=True).stdout
    versions = {line.split()[-1] for line in out.splitlines() if "Version:" in line}
    assert versions and all(v in ("4", "5") for v in versions)
    assert path.name[len("fix-dwarf")] in versions
    # The fixture must exercise both bitfield encodings and DWARF 5's implicit_const.
    abbrev = subprocess.run(["readelf", "--debug-dump=abbrev", str(path)], capture_output=True, text=True).stdout
    if "5" in versions:
        assert "DW_AT_data_bit_offset" in out and "DW_FORM_implicit_const" in abbrev
    else:
        assert "DW_AT_bit_offset" in out and "DW_AT_data_bit_offset" not in out


@pytest.mark.parametrize("name", TYPE_NAMES)
def test_type_matches_drgn(built, name):
    _path, image, prog = built
    compare_types(image.type(name), prog.type(name), name)


def test_sizeof_offsetof_match_drgn(built):
    _path, image, prog = built
    for name in TYPE_NAMES:
        assert image.sizeof(name) == drgn.sizeof(prog.type(name)), name
    for tname, member in [("struct holder", "n.v"), ("struct holder", "pair.label"), ("struct holder", "un.bytes"),
                          ("struct anon", "s2"), ("struct anon", "u2"), ("struct anon", "named_inner.inner_l"),
                          ("struct arr", "m"), ("struct arr", "flex"), ("struct arr", "zero"),
                          ("struct holder", "self"), ("struct node", "pprev")]:
        assert image.offsetof(tname, member) == drgn.offsetof(prog.type(tname), member), (tname, member)


def test_member_search_through_anonymous_members(built):
    _path, image, prog = built
    anon = image.type("struct anon")
    ref = prog.type("struct anon")
    for name in ("u1", "u2", "s1", "s2", "flags_a", "flags_b"):
        assert anon.has_member(name)
        assert anon.member(name).bit_offset == ref.member(name).bit_offset, name
        assert anon.member(name).bit_size == ref.member(name).bit_field_size, name
    with pytest.raises(DebugInfoError):
        anon.member("nope")
    # Indexing into arrays in a member path uses the element size from DWARF.
    assert image.offsetof("struct arr", "m[1][2]") == (1 * 3 + 2) * 4
    with pytest.raises(DebugInfoError):
        image.offsetof("struct bits", "b")  # bitfield: no byte offset


def test_variables_match_drgn_and_nm(built):
    path, image, prog = built
    syms = nm_symbols(path)
    for name in VARIABLES:
        var = image.variable(name)
        ref = prog.variable(name)
        assert var.address == ref.address_, name
        assert {var.address} == syms[name], name
        compare_types(var.type, ref.type_, name)


def test_variable_defined_through_specification(built):
    path, image, _prog = built
    out = subprocess.run(["readelf", "--debug-dump=info", str(path)], capture_output=True, text=True).stdout
    assert "DW_AT_specification" in out  # the fixture really exercises the spec path
    var = image.variable("shared_counter")
    assert var.type.name == "int"
    assert int.from_bytes(image.read_static(var.address, 4), "little") == 7


def test_incomplete_and_cross_cu_structs(built):
    _path, image, _prog = built
    holder = image.type("struct holder")
    opaque = holder.member("op").type.target
    assert isinstance(opaque, StructType) and opaque.size is None
    # struct later is only declared in a.c and defined in b.c: the index prefers the definition.
    later = holder.member("lp").type.target
    assert later.size == image.sizeof("struct later") and later.members
    node = strip_typedefs(image.type("struct node"))
    assert node.member("next").type.target is node  # recursive struct resolves to the same object


def test_enums(built):
    _path, image, prog = built
    for name in ("ST_IDLE", "ST_RUN", "ST_NEG", "ST_BIG", "ANON_A", "ANON_B", "W_SMALL", "W_HUGE"):
        assert image.enum_value(name) == prog.constant(name).value_(), name
    assert image.enumerator_name("enum status", -3) == "ST_NEG"
    assert image.enumerator_name("enum status", 1234) is None
    with pytest.raises(DebugInfoError):
        image.enum_value("NO_SUCH_ENUMERATOR")


def test_symbols_match_nm(built):
    path, image, _prog = built
    ours = image.symbols()
    ref = nm_symbols(path)
    for name, addresses in ref.items():
        assert name in ours, name
        assert ours[name] in addresses, name
    assert "init_pt" in ours and "b_static_counter" in ours  # static (local) symbols
    for name in ("main", "use_b", "gh"):
        addr = image.symbol(name)
        assert image.lookup(addr) == (name, 0)
        assert image.lookup(addr + 1) == (name, 1)
    with pytest.raises(DebugInfoError):
        image.symbol("definitely_not_a_symbol")


def test_build_id_matches_readelf(built):
    path, image, _prog = built
    assert image.build_id is not None
    assert image.build_id == readelf_build_id(path)


def test_read_static_matches_objcopy(built, tmp_path):
    path, image, _prog = built
    addr = image.symbol("local_array")
    data = image.read_static(addr, 7 * 4)
    assert [int.from_bytes(data[i:i + 4], "little") for i in range(0, 28, 4)] == [1, 2, 3, 0, 0, 0, 0]
    dump = tmp_path / "data.bin"
    subprocess.run(["objcopy", "-O", "binary", "--only-section=.data", str(path), str(dump)], check=True)
    sec_addr = int(subprocess.run(["readelf", "-SW", str(path)], capture_output=True, text=True, check=True)
                   .stdout.split(" .data ")[1].split()[1], 16)
    raw = dump.read_bytes()
    assert image.read_static(sec_addr, len(raw)) == raw
    with pytest.raises(UnreadableAddress):
        image.read_static(image.symbol("gh"), 8)  # .bss is not file-backed


def test_type_names_and_unknown_types(built):
    _path, image, prog = built
    with pytest.raises(DebugInfoError):
        image.type("struct does_not_exist")
    with pytest.raises(DebugInfoError):
        image.sizeof("struct opaque")
    assert image.type("struct holder *").target is image.type("struct holder")
    assert image.type("const struct holder *").target is image.type("struct holder")
    assert image.type("char * *").target.target is image.type("char")
    assert image.type("struct node [3]").size == 3 * drgn.sizeof(prog.type("struct node"))
    # C spellings of base types map onto gcc's DWARF names.
    for spelling in ("unsigned long", "long unsigned int", "unsigned long int", "long", "unsigned"):
        assert image.sizeof(spelling) == drgn.sizeof(prog.type(spelling)), spelling


import drgn  # noqa: E402  (after the skip marker so a missing drgn skips via the support module)


def test_drgn_bridge_reads_initialised_data(built):
    _path, image, _prog = built
    prog = image.drgn_program()
    for seg in image.segments:
        if seg.filesz:
            prog.add_memory_segment(seg.vaddr, seg.filesz,
                                    lambda addr, count, offset, physical: image.read_static(addr, count))
    assert prog["shared_counter"].value_() == 7  # the C initialiser in b.c
    assert [prog["local_array"][i].value_() for i in range(3)] == [1, 2, 3]


def test_drgn_bridge_without_drgn(built, monkeypatch):
    import sys

    _path, image, _prog = built
    monkeypatch.setitem(sys.modules, "drgn", None)
    with pytest.raises(DebugInfoError):
        image.drgn_program()
