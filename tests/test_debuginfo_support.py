"""Shared helpers for the debuginfo tests: C fixtures compiled with gcc, and a
drgn-backed reference to compare our layouts against (drgn parses DWARF with
its own C code, so agreement is real evidence)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

drgn = pytest.importorskip("drgn")

HEADER = r"""
#include <stdbool.h>
struct node { struct node *next; struct node **pprev; int v; };
struct opaque;                                  /* never defined anywhere */
struct later;                                   /* defined only in b.c */
extern int shared_counter;                      /* defined in b.c: DW_AT_specification */
extern struct node shared_nodes[];
typedef unsigned long u64;
typedef u64 pfn_t;
typedef pfn_t pfn2_t;
typedef struct { int key; const char *label; } pair_t;
enum status { ST_IDLE, ST_RUN = 5, ST_NEG = -3, ST_BIG = 0x7fffffff };
"""

A_C = r"""
#include "fix.h"
enum { ANON_A = 11, ANON_B = 12 };
enum wide { W_SMALL = 1, W_HUGE = 0x8000000000000000ULL };
struct bits { unsigned a:3; unsigned b:5; int c:7; unsigned long long d:40; char e; bool f:1; signed char g:4; };
struct anon {
    int x;
    union { int u1; float u2; struct { short s1, s2; }; };
    struct { char inner_c; long inner_l; } named_inner;
    struct { unsigned char flags_a:2, flags_b:6; };
};
struct arr { int m[2][3]; char name[16]; struct node *ptrs[4]; long zero[0]; char flex[]; };
struct holder {
    struct opaque *op; struct later *lp; struct node n; pfn2_t pfn; enum status st;
    volatile const int cv; void (*cb)(int, char *); pair_t pair; double d; float fl; bool ok;
    union u { long l; unsigned char bytes[8]; } un;
    struct holder *self;
};
union standalone { int i; struct holder *h; char c[3]; };
static struct holder *init_pt __attribute__((used));
static int local_array[7] __attribute__((used)) = {1, 2, 3};
struct bits gb; struct anon ga; struct arr *gar; struct holder gh; union standalone gu;
enum wide gw; pair_t gpair; int anon_enum_user = ANON_B;
int main(void) { init_pt = &gh; return shared_counter + gb.a + shared_nodes[0].v + local_array[1]; }
"""

B_C = r"""
#include "fix.h"
struct later { int filled; char tail[5]; };
struct node shared_nodes[3];
int shared_counter = 7;
struct later glater;
static int b_static_counter __attribute__((used));
int use_b(struct later *l) { return shared_counter + l->filled + shared_nodes[1].v + b_static_counter; }
"""

TYPE_NAMES = ["struct node", "struct later", "struct bits", "struct anon", "struct arr", "struct holder",
              "union standalone", "union u", "enum status", "enum wide", "u64", "pfn_t", "pfn2_t", "pair_t",
              "int", "unsigned int", "unsigned long", "long long unsigned int", "char", "_Bool", "double"]
VARIABLES = ["shared_counter", "shared_nodes", "gb", "ga", "gar", "gh", "gu", "gw", "gpair", "init_pt",
             "local_array", "glater", "anon_enum_user"]


def have_tools() -> bool:
    return all(shutil.which(t) for t in ("gcc", "nm", "readelf"))


def compile_fixture(directory: Path, dwarf: int, opt: str, extra: tuple = ()) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "fix.h").write_text(HEADER)
    (directory / "a.c").write_text(A_C)
    (directory / "b.c").write_text(B_C)
    out = directory / f"fix-dwarf{dwarf}{opt}"
    subprocess.run(["gcc", f"-gdwarf-{dwarf}", opt, "-Wl,--build-id", *extra, "-o", str(out),
                    str(directory / "a.c"), str(directory / "b.c")], check=True, cwd=directory)
    return out


def drgn_program(path: Path):
    """drgn Program for a non-running ELF file (recipe from toolchain-notes.md)."""
    from elftools.elf.elffile import ELFFile

    prog = drgn.Program(drgn.Platform(drgn.Architecture.X86_64,
                                      drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN))
    module = prog.extra_module("image", create=True)
    with open(path, "rb") as f:
        elf = ELFFile(f)
        module.address_ranges = [(s["p_vaddr"], s["p_vaddr"] + s["p_memsz"]) for s in elf.iter_segments()
                                 if s["p_type"] == "PT_LOAD"]
    module.try_file(str(path))
    return prog


def _canonical_base(name: str) -> str:
    words = name.split()
    if len(words) > 1 and "int" in words:
        words.remove("int")
    if "signed" in words and "char" not in words and len(words) > 1:
        words.remove("signed")
    return " ".join(sorted(words))


def compare_types(ours, theirs, where: str, seen=None) -> None:
    """Assert that our Type matches a drgn Type (recursively, cycles cut at structs)."""
    from mcktools.debuginfo import (ArrayType, BaseType, EnumType, FunctionType, PointerType, StructType,
                                    TypedefType, VoidType)

    K = drgn.TypeKind
    seen = set() if seen is None else seen
    kind = theirs.kind
    if kind == K.TYPEDEF:
        assert isinstance(ours, TypedefType), f"{where}: expected typedef {theirs.name}, got {ours!r}"
        assert ours.name == theirs.name, where
        compare_types(ours.target, theirs.type, f"{where}->{theirs.name}", seen)
    elif kind in (K.INT, K.BOOL, K.FLOAT):
        assert isinstance(ours, BaseType), f"{where}: expected base type {theirs}, got {ours!r}"
        assert ours.size == theirs.size, where
        assert _canonical_base(ours.name) == _canonical_base(theirs.name), f"{where}: {ours.name} vs {theirs.name}"
        if kind == K.INT:
            assert (ours.encoding in ("signed", "signed_char")) == theirs.is_signed, where
        elif kind == K.BOOL:
            assert ours.encoding == "bool", where
        else:
            assert ours.encoding == "float", where
    elif kind in (K.STRUCT, K.UNION):
        assert isinstance(ours, StructType), f"{where}: expected {theirs}, got {ours!r}"
        assert ours.kind == ("struct" if kind == K.STRUCT else "union"), where
        assert ours.name == theirs.tag, where
        if not theirs.is_complete():
            assert ours.size is None, f"{where}: drgn says incomplete, we have size {ours.size}"
            return
        assert ours.size == theirs.size, f"{where}: size {ours.size} vs drgn {theirs.size}"
        if id(ours) in seen:
            return
        seen.add(id(ours))
        assert [m.name for m in ours.members] == [m.name for m in theirs.members], where
        for mine, ref in zip(ours.members, theirs.members):
            at = f"{where}.{ref.name or '<anon>'}"
            assert mine.bit_offset == ref.bit_offset, f"{at}: bit offset {mine.bit_offset} vs {ref.bit_offset}"
            assert mine.bit_size == ref.bit_field_size, f"{at}: bit size {mine.bit_size} vs {ref.bit_field_size}"
            if ref.bit_field_size is None:
                assert mine.offset * 8 == ref.bit_offset, at
            compare_types(mine.type, ref.type, at, seen)
    elif kind == K.ENUM:
        assert isinstance(ours, EnumType), f"{where}: expected {theirs}, got {ours!r}"
        assert ours.name == theirs.tag, where
        assert ours.size == drgn.sizeof(theirs), where
        assert ours.signed == theirs.type.is_signed, where
        assert ours.enumerators == {e.name: e.value for e in theirs.enumerators}, where
    elif kind == K.POINTER:
        assert isinstance(ours, PointerType), f"{where}: expected pointer, got {ours!r}"
        assert ours.size == theirs.size, where
        target, ref = ours.target, theirs.type
        if ref.kind in (K.STRUCT, K.UNION, K.ENUM) and ref.tag is not None:
            # Pointer targets are compared by name; a complete definition found in
            # another CU is an improvement over drgn's per-CU declaration.
            assert getattr(target, "name", None) == ref.tag, where
            if ref.is_complete():
                assert target.size == ref.size, where
        else:
            compare_types(target, ref, f"{where}->*", seen)
    elif kind == K.ARRAY:
        assert isinstance(ours, ArrayType), f"{where}: expected array, got {ours!r}"
        assert ours.count == theirs.length, f"{where}: count {ours.count} vs {theirs.length}"
        compare_types(ours.element, theirs.type, f"{where}[]", seen)
    elif kind == K.FUNCTION:
        assert isinstance(ours, FunctionType), where
    elif kind == K.VOID:
        assert isinstance(ours, VoidType), where
    else:  # pragma: no cover
        raise AssertionError(f"{where}: unhandled drgn kind {kind}")


def nm_symbols(path: Path) -> dict:
    """name -> set of addresses for every defined symbol, as nm sees them."""
    out = subprocess.run(["nm", "--defined-only", str(path)], check=True, capture_output=True, text=True).stdout
    table: dict = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3:
            table.setdefault(parts[2], set()).add(int(parts[0], 16))
    return table


def readelf_build_id(path: Path):
    out = subprocess.run(["readelf", "-n", str(path)], check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        if "Build ID:" in line:
            return bytes.fromhex(line.split("Build ID:")[1].strip())
    return None
