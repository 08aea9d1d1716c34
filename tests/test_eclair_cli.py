"""eclair's command line: upstream options, clean one-line errors, the
gdb command it builds, and the listen-address rule (loopback by default)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from eclair.gdb_launcher import gdb_command
from eclair.transport import Listener, parse_listen_address
from mcktools.errors import McktoolsError

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def run_eclair(*args, env=ENV):
    return subprocess.run([sys.executable, "-m", "eclair", *args], capture_output=True, text=True,
                          timeout=60, env=env, cwd=str(ROOT))


def test_help_lists_upstream_options():
    proc = run_eclair("-h")
    assert proc.returncode == 0
    for opt in ("-d", "-k", "-c", "-l", "-i", "-o", "--stdio", "--listen"):
        assert f"{opt} " in proc.stdout or f"{opt}," in proc.stdout, opt


def test_missing_dump_is_one_line_error(tmp_path):
    img = tmp_path / "mckernel.img"
    img.write_bytes(b"\x7fELF")
    proc = run_eclair("-k", str(img), "-d", str(tmp_path / "nope"), "--stdio")
    assert proc.returncode != 0
    assert proc.stderr.strip().count("\n") == 0 and "dump file not found" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_image_is_one_line_error(tmp_path):
    proc = run_eclair("-k", str(tmp_path / "none.img"), "-d", str(tmp_path / "x"))
    assert proc.returncode != 0 and "kernel image not found" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_option_is_one_line_error():
    proc = run_eclair("--no-such-option")
    assert proc.returncode == 2 and proc.stderr.startswith("eclair: error:")
    assert "Traceback" not in proc.stderr


def test_stdio_and_listen_exclude_each_other(tmp_path):
    img = tmp_path / "i"
    img.write_bytes(b"")
    dump = tmp_path / "d"
    dump.write_bytes(b"")
    proc = run_eclair("-k", str(img), "-d", str(dump), "--stdio", "--listen", "0")
    assert proc.returncode != 0 and "exclude" in proc.stderr


def test_missing_mckernel_provider_gives_clear_error(tmp_path):
    img = tmp_path / "i"
    img.write_bytes(b"")
    dump = tmp_path / "d"
    dump.write_bytes(b"")
    # Make the provider module unimportable whether or not it exists yet.
    code = ("import sys; sys.modules['eclair.mckernel_provider'] = None\n"
            "from eclair.cli import main\n"
            f"main(['-k', {str(img)!r}, '-d', {str(dump)!r}, '--stdio'])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env=ENV, cwd=str(ROOT))
    assert proc.returncode != 0
    assert "mckernel_provider" in proc.stderr and "Traceback" not in proc.stderr


def test_gdb_command_shape():
    argv = gdb_command("mckernel.img", port=4321)
    assert argv[:3] == ["gdb", "-q", "-nx"] and "mckernel.img" in argv
    assert "set prompt (eclair) " in argv and "set pagination off" in argv
    assert argv[argv.index("target remote 127.0.0.1:4321") - 1] == "-ex"
    argv = gdb_command("img", pipe_command=["eclair", "--stdio", "-d", "my dump"])
    target = argv[-1]
    assert target.startswith("target remote | ")
    assert shlex.split(target[len("target remote | "):]) == ["eclair", "--stdio", "-d", "my dump"]
    with pytest.raises(ValueError):
        gdb_command("img")


@pytest.mark.parametrize("text,expected", [
    ("1234", ("127.0.0.1", 1234)),
    (":1234", ("127.0.0.1", 1234)),
    ("0.0.0.0:99", ("0.0.0.0", 99)),
    ("[::1]:5", ("::1", 5)),
])
def test_listen_address(text, expected):
    assert parse_listen_address(text) == expected


@pytest.mark.parametrize("text", ["abc", "host:", "1:99999"])
def test_bad_listen_address(text):
    with pytest.raises(McktoolsError):
        parse_listen_address(text)


def test_listener_binds_loopback_by_default():
    lst = Listener(*parse_listen_address("0"))
    try:
        assert lst.sock.getsockname()[0] == "127.0.0.1" and lst.port > 0
        assert lst.accept(timeout=0.01) is None
    finally:
        lst.close()
