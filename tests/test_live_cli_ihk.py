"""mcps, mcinspect and `mcdump create` on a "node" whose /dev/mcos0 is the IHK
driver emulator (mcktools.live.fake_ihk, file-backed so the freeze watchdog
process can reach it too) loaded with a committed fixture's memory.

Ground truth: the fixture's manifest (what the reference kernel printed about
itself when the fixture was taken) and the fixture's own level-0 / level-24
mcdumps (written by the harness from the kernel's bitmap).
"""

from __future__ import annotations

import json
import os

import pytest

from mcktools.formats import ihk_ioctl as abi
from mcktools.formats.mcdump import McDump
from mcktools.live.fake_ihk import FakeIhk

IOCTL = "mcktools.live.fake_ihk:file_ioctl"


def _fake_from_dump(dump_path, level24_path=None, **kw) -> FakeIhk:
    with McDump.open(dump_path) as d:
        end = max(c.addr + c.size for c in d.chunks)
        mem = bytearray(end)
        for c in d.chunks:
            mem[c.addr:c.addr + c.size] = d.read_chunk(c.index, 0, c.size)
        chunks = [(c.addr, c.size) for c in d.chunks]
        kernel_base = d.kernel_base
    level24 = []
    if level24_path is not None:
        with McDump.open(level24_path) as d24:
            kept = {pa for c in d24.chunks for pa in range(c.addr, c.addr + c.size, 4096)}
        level24 = [pa for a, s in chunks for pa in range(a, a + s, 4096) if pa not in kept]
    return FakeIhk(memory=mem, chunks=chunks, kernel_base=kernel_base, ncpus=4, level24_pages=level24, **kw)


@pytest.fixture(scope="module")
def multi(fixture_dir):
    d = fixture_dir("multi")
    return d, json.loads((d / "manifest.json").read_text())


@pytest.fixture
def node(multi, tmp_path, monkeypatch):
    """A fake /dev/mcos0 holding the multi fixture; returns (device path, fixture dir, manifest)."""
    d, manifest = multi

    def make(**kw):
        fake = _fake_from_dump(d / "level0.mcdump", d / "level24.mcdump", **kw)
        dev = tmp_path / "mcos0"
        fake.save(str(dev))
        return str(dev)

    monkeypatch.setenv("MCKTOOLS_IHK_DEVICE", str(tmp_path / "mcos{os}"))
    monkeypatch.setenv("MCKTOOLS_IHK_IOCTL", IOCTL)
    for var in ("MCKERNEL_DUMP", "MCKERNEL_IMG", "MCKTOOLS_QEMU_RUN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    return make, d, manifest


def _run(main, argv):
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    return rc


def _mcps(argv, capsys):
    from mcinspect.cli import mcps_main
    rc = _run(mcps_main, argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def _mcdump(argv, capsys):
    from mcdump.cli import main
    rc = _run(main, argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def _thread_key(t):
    return (t["tid"], t["pid"], t["cpu"], t["addr"], t["state"], t["comm"], t["idle"])


def test_mcps_without_dump_reads_dev_mcos0(node, capsys):
    make, d, manifest = node
    make()
    rc, out, err = _mcps(["-k", str(d / "mckernel.img"), "--json"], capsys)
    assert rc == 0, err
    rows = json.loads(out)
    assert sorted(_thread_key(r) for r in rows) == sorted(_thread_key(t) for t in manifest["threads"])
    assert not any(r["changed"] for r in rows)  # the emulated kernel does not run
    current = {c["current"] for c in manifest["cpus"]}
    assert {r["addr"] for r in rows if r["current"]} == current


def test_mcps_live_without_root_uses_read_kaddr_only(node, capsys):
    make, d, manifest = node
    dev = make(root=False)
    rc, out, err = _mcps(["-k", str(d / "mckernel.img"), "--os", "0"], capsys)
    assert rc == 0, err
    assert {int(line.lstrip("> ").split()[0])
            for line in out.splitlines()[1:]} == {t["tid"] for t in manifest["threads"]}
    state = json.loads(open(dev).read())
    assert state["ops"] == [] and state["nmi_count"] == 0  # nothing froze the node


def test_mcinspect_info_live(node, capsys):
    from mcinspect.cli import main
    make, d, manifest = node
    make()
    rc = _run(main, ["-k", str(d / "mckernel.img"), "info", "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    assert str(manifest["kernel_base"]) in out


def test_image_found_through_mckernel_img_env(node, capsys, monkeypatch):
    make, d, manifest = node
    make()
    monkeypatch.setenv("MCKERNEL_IMG", str(d / "mckernel.img"))
    rc, out, err = _mcps(["--json"], capsys)
    assert rc == 0, err
    assert len(json.loads(out)) == len(manifest["threads"])


def test_image_search_order_is_documented_and_followed(tmp_path, monkeypatch):
    from mcktools.live.attach import find_kernel_image, image_candidates
    monkeypatch.delenv("MCKERNEL_IMG", raising=False)
    monkeypatch.setenv("IHK_PREFIX", str(tmp_path / "prefix"))
    monkeypatch.chdir(tmp_path)
    cands = image_candidates()
    assert cands[0] == str(tmp_path / "prefix" / "smp-x86" / "kernel" / "mckernel.img")
    assert "/opt/ppos/smp-x86/kernel/mckernel.img" in cands and cands[-1] == "mckernel.img"
    (tmp_path / "mckernel.img").write_bytes(b"x")
    assert find_kernel_image() == "mckernel.img"
    inst = tmp_path / "prefix" / "smp-x86" / "kernel"
    inst.mkdir(parents=True)
    (inst / "mckernel.img").write_bytes(b"x")
    assert find_kernel_image() == str(inst / "mckernel.img")


@pytest.mark.parametrize("level", ["0", "24"])
def test_mcdump_create_matches_the_kernels_own_dump(node, capsys, level):
    make, d, manifest = node
    dev = make()
    out_file = f"create{level}.mcdump"
    rc, out, err = _mcdump(["create", "-d", level, "-k", str(d / "mckernel.img"), "-o", out_file], capsys)
    assert rc == 0, err
    ref_path = d / ("level0.mcdump" if level == "0" else "level24.mcdump")
    with McDump.open(out_file) as mine, McDump.open(ref_path) as ref:
        assert [(c.addr, c.size) for c in mine.chunks] == [(c.addr, c.size) for c in ref.chunks]
        assert mine.kernel_base == ref.kernel_base
        for a, b in zip(mine.chunks, ref.chunks):
            assert mine.read_chunk(a.index, 0, a.size) == ref.read_chunk(b.index, 0, b.size)
    state = json.loads(open(dev).read())
    # ihkosctl's sequence, and the node was resumed
    dumps = [o for o in state["ops"] if o != "QUERY_ALL"]  # the span probe at open
    assert dumps[:4] == ["SET_LEVEL", "NMI", "QUERY_NUM_MEM_AREAS", "QUERY_MEM_AREAS"]
    assert dumps[-1] == "NMI_CONT" and set(dumps[4:-1]) == {"READ"}
    assert state["completion_flag"] == abi.DumpPageSetState.INCOMPLETE and state["cont_count"] == 1
    # the tools read the new dump the same way as the kernel described itself
    rc, out, err = _mcps(["-k", str(d / "mckernel.img"), "-d", out_file, "--json"], capsys)
    assert rc == 0, err
    assert sorted(_thread_key(r) for r in json.loads(out)) == \
        sorted(_thread_key(t) for t in manifest["threads"])


def test_mcdump_create_default_name(node, capsys):
    make, d, manifest = node
    make()
    rc, out, err = _mcdump(["create"], capsys)  # no image: ihkosctl does not need one
    assert rc == 0, err
    names = [n for n in os.listdir(".") if n.startswith("mcdump_")]
    assert len(names) == 1
    import re
    assert re.fullmatch(r"mcdump_\d{8}_\d{6}", names[0])
    assert "no kmsg section" in err


def test_create_without_root_says_which_operations_need_root(node, capsys):
    make, d, manifest = node
    dev = make(root=False)
    rc, out, err = _mcdump(["create", "-k", str(d / "mckernel.img"), "-o", "x.mcdump"], capsys)
    assert rc != 0
    assert err.count("\n") == 1 and err.startswith("mcdump: error: ")
    assert "needs root" in err and "IHK_OS_DUMP" in err
    assert not os.path.exists("x.mcdump")
    assert json.loads(open(dev).read())["nmi_count"] == 0


def test_no_device_is_one_line(node, capsys):
    make, d, manifest = node
    make()
    rc, out, err = _mcps(["-k", str(d / "mckernel.img"), "--os", "5"], capsys)
    assert rc != 0
    assert err.strip().endswith("McKernel OS 5 is not present (no " + os.path.join(os.getcwd(), "mcos5") + ")")
    assert err.count("\n") == 1


def test_not_booted_is_one_line(node, capsys):
    make, d, manifest = node
    make(status=abi.OsStatus.NOT_BOOTED)
    rc, out, err = _mcps(["-k", str(d / "mckernel.img")], capsys)
    assert rc != 0 and err.count("\n") == 1
    assert "McKernel OS 0 is not booted (status NOT_BOOTED)" in err


def test_no_permission_is_one_line(node, capsys, monkeypatch):
    make, d, manifest = node
    dev = make()
    real_open = os.open

    def refusing_open(path, *a, **kw):
        if os.fspath(path) == dev:
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, *a, **kw)
    monkeypatch.setattr(os, "open", refusing_open)
    rc, out, err = _mcps(["-k", str(d / "mckernel.img")], capsys)
    assert rc != 0 and err.count("\n") == 1
    assert "no permission to open" in err and "IHK_OS_DUMP" in err and "root" in err


def test_dump_and_live_options_exclude_each_other(node, capsys):
    make, d, manifest = node
    rc, out, err = _mcps(["-k", str(d / "mckernel.img"), "-d", str(d / "level0.mcdump"), "--os", "1"], capsys)
    assert rc != 0 and "not both" in err


def _rsp(payload: str) -> bytes:
    return f"${payload}#{sum(payload.encode()) % 256:02x}".encode()


def test_eclair_live_freezes_at_each_stop_and_resumes(node):
    """eclair -i over the emulated /dev/mcos0: attach and Ctrl-C freeze (DUMP_NMI),
    continue and detach resume (DUMP_NMI_CONT); threads are those of the run queues."""
    from eclair.mckernel_provider import open_provider
    from eclair.provider import ProviderOptions
    from eclair.server import GdbServer
    make, d, manifest = node
    dev = make()

    def ops():
        return [o for o in json.loads(open(dev).read())["ops"] if o != "QUERY_ALL"]

    provider = open_provider(None, str(d / "mckernel.img"), ProviderOptions(interactive=True))
    try:
        assert ops() == []  # opening reads only
        srv = GdbServer(provider)
        out = srv.on_bytes(_rsp("?"))
        assert b"$T05thread:" in out
        assert ops() == ["SET_LEVEL", "NMI"]
        out = srv.on_bytes(b"+" + _rsp("qfThreadInfo"))
        ids = {int(x, 16) for x in out.split(b"$m")[1].split(b"#")[0].decode().split(",")}
        runq = {t["tid"] for t in manifest["threads"] if any(t["addr"] in c["runq"] for c in manifest["cpus"])}
        assert ids == runq
        srv.on_bytes(b"+" + _rsp("c"))
        assert ops()[-1] == "NMI_CONT"
        out = srv.on_bytes(b"\x03")
        assert b"$T02" in out
        assert ops() == ["SET_LEVEL", "NMI", "NMI_CONT", "SET_LEVEL", "NMI"]
        srv.on_bytes(b"+" + _rsp("D"))
        assert srv.closed
    finally:
        provider.close()
    state = json.loads(open(dev).read())
    assert ops()[-1] == "NMI_CONT" and state["completion_flag"] == 0 and state["cont_count"] == 2


def test_eclair_live_without_root_fails_at_start(node):
    from eclair.mckernel_provider import open_provider
    from eclair.provider import ProviderOptions
    from mcktools.errors import LiveError
    make, d, manifest = node
    dev = make(root=False)
    with pytest.raises(LiveError, match="needs root"):
        open_provider(None, str(d / "mckernel.img"), ProviderOptions(interactive=True))
    assert json.loads(open(dev).read())["nmi_count"] == 0
