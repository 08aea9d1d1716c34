"""The on-disk DWARF index cache: hits, invalidation, corruption, concurrency,
unwritable folders.  Layouts read through the cache are checked against drgn."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mcktools.debuginfo import STATS, Image, clear_memory_cache
from mcktools.debuginfo import cache as dcache

from .test_debuginfo_support import compare_types, compile_fixture, drgn_program, have_tools

pytestmark = pytest.mark.skipif(not have_tools(), reason="gcc/nm/readelf not installed")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def image_path(tmp_path_factory) -> Path:
    return compile_fixture(tmp_path_factory.mktemp("cachefix"), 5, "-O0")


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("MCKTOOLS_CACHE_DIR", str(d))
    clear_memory_cache()
    yield d
    clear_memory_cache()


def _open_in_subprocess(path: Path, cache: Path, expr: str = "img.sizeof('struct holder')") -> str:
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from mcktools.debuginfo import Image
        img = Image.open({str(path)!r})
        print(img.index_source, {expr})
    """)
    env = dict(os.environ, MCKTOOLS_CACHE_DIR=str(cache))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def _check_against_drgn(path: Path, image: Image) -> None:
    prog = drgn_program(path)
    for name in ("struct holder", "struct anon", "struct bits", "enum status", "pfn2_t"):
        compare_types(image.type(name), prog.type(name), name)


def test_default_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("MCKTOOLS_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert dcache.cache_dir() == tmp_path / "xdg" / "mcktools"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert dcache.cache_dir() == tmp_path / "home" / ".cache" / "mcktools"
    monkeypatch.setenv("MCKTOOLS_CACHE_DIR", str(tmp_path / "override"))
    assert dcache.cache_dir() == tmp_path / "override"


def test_second_load_hits_cache(image_path, cache_dir):
    built_before = STATS["built"]
    first = Image.open(image_path)
    assert first.index_source == "built" and not first.cache_hit
    assert first.cache_path is not None and first.cache_path.parent == cache_dir and first.cache_path.exists()
    assert STATS["built"] == built_before + 1
    again = Image.open(image_path)
    assert again.index_source == "memory" and again.cache_hit
    clear_memory_cache()
    disk = Image.open(image_path)
    assert disk.index_source == "disk"
    assert STATS["built"] == built_before + 1
    _check_against_drgn(image_path, disk)
    # A fresh process finds the same file.
    assert _open_in_subprocess(image_path, cache_dir).split()[0] == "disk"


def test_changed_file_with_same_build_id_invalidates(tmp_path, cache_dir):
    src = tmp_path / "src"
    path = compile_fixture(src, 5, "-O0", ("-Wl,--build-id=0x1234abcd",))
    first = Image.open(path)
    assert first.build_id == bytes.fromhex("1234abcd")
    old_size = first.sizeof("struct later")
    first.close()
    # Same path, same (forced) build-id, different layout.
    b_c = (src / "b.c").read_text().replace("char tail[5];", "char tail[5]; long added[3];")
    (src / "b.c").write_text(b_c)
    subprocess.run(["gcc", "-gdwarf-5", "-O0", "-Wl,--build-id=0x1234abcd", "-o", str(path), "a.c", "b.c"],
                   cwd=src, check=True)
    clear_memory_cache()
    second = Image.open(path)
    assert second.build_id == bytes.fromhex("1234abcd")
    assert second.index_source == "built"
    assert second.sizeof("struct later") != old_size
    _check_against_drgn(path, second)
    prog = drgn_program(path)
    compare_types(second.type("struct later"), prog.type("struct later"), "struct later")


def test_image_without_build_id_keys_on_content(tmp_path, cache_dir):
    path = compile_fixture(tmp_path / "nobid", 4, "-O0", ("-Wl,--build-id=none",))
    out = subprocess.run(["readelf", "-n", str(path)], capture_output=True, text=True).stdout
    assert "Build ID" not in out
    first = Image.open(path)
    assert first.build_id is None and first.index_source == "built"
    clear_memory_cache()
    assert Image.open(path).index_source == "disk"
    # Same size, one byte of .comment changed: a different image as far as the cache goes.
    data = bytearray(path.read_bytes())
    at = data.index(b"GCC: ")
    data[at] = ord("g")
    path.write_bytes(bytes(data))
    clear_memory_cache()
    assert Image.open(path).index_source == "built"


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "other-key"])
def test_corrupt_cache_file_is_rebuilt(image_path, cache_dir, damage):
    first = Image.open(image_path)
    cpath = first.cache_path
    blob = cpath.read_bytes()
    if damage == "garbage":
        cpath.write_bytes(os.urandom(len(blob)))
    elif damage == "truncated":
        cpath.write_bytes(blob[: len(blob) // 2])
    elif damage == "empty":
        cpath.write_bytes(b"")
    else:  # a valid marshal file holding a different key (e.g. a hash collision of names)
        import marshal
        cpath.write_bytes(marshal.dumps((dcache.MAGIC, dcache.FORMAT_VERSION, "not-the-key", {})))
    clear_memory_cache()
    again = Image.open(image_path)
    assert again.index_source == "built"
    _check_against_drgn(image_path, again)
    clear_memory_cache()
    assert Image.open(image_path).index_source == "disk"  # the rebuild rewrote a good file


def test_cache_folder_can_be_deleted(image_path, cache_dir):
    Image.open(image_path)
    for f in cache_dir.iterdir():
        f.unlink()
    cache_dir.rmdir()
    clear_memory_cache()
    assert Image.open(image_path).index_source == "built"
    assert cache_dir.is_dir()


def test_concurrent_builders_both_succeed(image_path, tmp_path):
    cache = tmp_path / "shared-cache"
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from mcktools.debuginfo import Image
        img = Image.open({str(image_path)!r})
        print(img.index_source, img.sizeof('struct holder'), img.offsetof('struct anon', 's2'))
    """)
    env = dict(os.environ, MCKTOOLS_CACHE_DIR=str(cache))
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], results
    prog = drgn_program(image_path)
    import drgn
    expected = f"{drgn.sizeof(prog.type('struct holder'))} {drgn.offsetof(prog.type('struct anon'), 's2')}"
    for out, _err in results:
        assert out.split(None, 1)[1].strip() == expected
    assert [f.name for f in cache.iterdir() if f.name.startswith(".tmp-")] == []  # no temp files left
    assert _open_in_subprocess(image_path, cache).split()[0] == "disk"


def test_unwritable_cache_dir_just_does_not_cache(image_path, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MCKTOOLS_CACHE_DIR", str(blocker / "cache"))  # mkdir fails even for root
    clear_memory_cache()
    failures = STATS["cache_write_failures"]
    img = Image.open(image_path)
    assert img.index_source == "built" and img.cache_path is None
    assert STATS["cache_write_failures"] == failures + 1
    _check_against_drgn(image_path, img)
    clear_memory_cache()


def _drop_root():
    os.setgid(65534)
    os.setuid(65534)


def test_read_only_cache_dir(image_path, tmp_path, monkeypatch):
    """A cache folder the user cannot write: open works, nothing is written.
    As root (permissions do not apply) the open runs in a child as `nobody`."""
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        monkeypatch.setenv("MCKTOOLS_CACHE_DIR", str(ro))
        clear_memory_cache()
        try:
            img = Image.open(image_path)
            assert img.index_source == "built" and img.cache_path is None
            assert list(ro.iterdir()) == []
        finally:
            ro.chmod(0o700)
            clear_memory_cache()
        return
    import shutil
    import tempfile
    # The child runs as nobody, who cannot reach root's own Python install; the
    # debuginfo package needs only the standard library, so the system Python will do.
    python = next((p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if os.access(p, os.X_OK)), None)
    if python is None:
        pytest.skip("no system python3 usable by an unprivileged user")
    public = Path(tempfile.mkdtemp(prefix="mck-ro-"))
    try:
        public.chmod(0o755)
        img = public / "img"
        shutil.copy(image_path, img)
        img.chmod(0o644)
        ro = public / "cache"
        ro.mkdir()
        ro.chmod(0o555)
        code = textwrap.dedent(f"""
            import os, sys
            sys.path.insert(0, {str(REPO)!r})
            from mcktools.debuginfo import Image, STATS
            assert not os.access({str(ro)!r}, os.W_OK)
            im = Image.open({str(img)!r})
            print(im.index_source, im.cache_path, STATS["cache_write_failures"], im.sizeof("struct holder"))
        """)
        env = dict(os.environ, MCKTOOLS_CACHE_DIR=str(ro), HOME=str(public), PYTHONDONTWRITEBYTECODE="1")
        proc = subprocess.run([python, "-c", code], env=env, capture_output=True, text=True,
                              preexec_fn=_drop_root, cwd=str(public))
        assert proc.returncode == 0, proc.stderr
        source, cpath, failures, size = proc.stdout.split()
        assert (source, cpath, failures) == ("built", "None", "1")
        import drgn
        assert int(size) == drgn.sizeof(drgn_program(img).type("struct holder"))
        assert list(ro.iterdir()) == []
    finally:
        shutil.rmtree(public, ignore_errors=True)


def test_read_only_cache_with_an_existing_index_still_hits(image_path, tmp_path, monkeypatch):
    d = tmp_path / "filled"
    monkeypatch.setenv("MCKTOOLS_CACHE_DIR", str(d))
    clear_memory_cache()
    Image.open(image_path)
    d.chmod(0o500)
    try:
        clear_memory_cache()
        assert Image.open(image_path).index_source == "disk"
    finally:
        d.chmod(0o700)
        clear_memory_cache()


def test_use_cache_false_touches_nothing(image_path, cache_dir):
    img = Image.open(image_path, use_cache=False)
    assert img.index_source == "built" and img.cache_path is None
    assert not cache_dir.exists()
