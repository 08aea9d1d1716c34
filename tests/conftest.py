"""Shared pytest fixtures (keep this file small; say what each fixture is for).

- `fixture_dir`: session fixture returning a function `fixture_dir("multi") -> Path`
  of the unpacked committed fixture folder (dumps/fixtures/<scenario>/ holding
  mckernel.img, level0.mcdump, level24.mcdump, vmcore.elf (multi only), manifest.json).
- `qemu_available`: session fixture; skips the test locally with a clear reason
  when qemu-system-x86_64 is missing, but fails under CI (env CI set), where
  QEMU is installed and a missing QEMU is a broken setup.
- `kernel_image`: session fixture; path of kernel/build/mckernel.img, built with
  `make -C kernel` when absent (fails with make's output if the build fails).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _unpack_module():
    spec = importlib.util.spec_from_file_location("mcktools_dumps_unpack", REPO / "dumps" / "unpack.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def fixture_dir():
    unpack = _unpack_module()
    cache: dict[str, Path] = {}

    def get(scenario: str) -> Path:
        if scenario not in cache:
            folder = unpack.FIXTURES / scenario
            if not any(folder.glob("*.xz")):
                pytest.fail(f"no committed fixtures in {folder} (run python3 dumps/make_fixtures.py)")
            cache[scenario] = unpack.fixture_dir(scenario)
        return cache[scenario]

    return get


@pytest.fixture(scope="session")
def qemu_available() -> str:
    qemu = os.environ.get("MCKTOOLS_QEMU", "qemu-system-x86_64")
    path = shutil.which(qemu)
    if path is None:
        msg = f"{qemu} not installed (apt-get install --no-install-recommends qemu-system-x86)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def kernel_image() -> Path:
    image = REPO / "kernel" / "build" / "mckernel.img"
    if not image.is_file():
        res = subprocess.run(["make", "-C", str(REPO / "kernel"), "-j1"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
        if res.returncode != 0 or not image.is_file():
            pytest.fail(f"make -C kernel failed:\n{res.stdout[-3000:]}")
    return image
