"""How to un-freeze each kind of live target, described by plain JSON.

A frozen McKernel must be resumed even when the tool that froze it dies
(mcktools.live.watchdog does it then), so a release has to be expressible
as data that another process can act on.  Each kind registers one
*preparer*: it validates the description and opens whatever the release
needs (the device, the memory file) up front, and returns the callable that
performs the release.  Opening early means a release after the tool died
does not depend on paths or permissions that might have changed.

Every release must be idempotent and harmless when the target is not
frozen: the tool and its watchdog may both run it.

Kinds:
  {"kind": "file", "path": P, "text": T?}   test target: append "T pid=N" to P
  {"kind": "ihk", "os": N, "device": P?, "ioctl": "module:function"?}
                                            DUMP_NMI_CONT on /dev/mcosN
  {"kind": "qemu", "memfile": P, "nmi_mode_pa": A, "writes": [[PA, HEX], ...]?, "qmp": S?}
                                            apply the writes (e.g. restore the dump bitmap),
                                            write nmi_mode = 4 (RESUME) at offset A of the
                                            guest memory file (kernel/PROTOCOL.md, freeze step 5),
                                            then send QMP "cont" on socket S if the VM was stopped
A new kind (e.g. a richer QEMU reference-kernel release) is one more
`@register("name")` function in this file.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from ..errors import LiveError

Release = Callable[[], None]
Preparer = Callable[[dict], Release]

_KINDS: dict[str, Preparer] = {}


def register(kind: str) -> Callable[[Preparer], Preparer]:
    def deco(fn: Preparer) -> Preparer:
        _KINDS[kind] = fn
        return fn
    return deco


def kinds() -> list[str]:
    return sorted(_KINDS)


def prepare(spec: Any) -> Release:
    """Validate a release description and return the callable that performs it."""
    if not isinstance(spec, dict) or not isinstance(spec.get("kind"), str):
        raise LiveError(f"release description must be an object with a 'kind', got {spec!r}")
    kind = spec["kind"]
    try:
        preparer = _KINDS[kind]
    except KeyError:
        raise LiveError(f"unknown release kind {kind!r} (known: {', '.join(kinds())})") from None
    try:
        return preparer(spec)
    except KeyError as exc:
        raise LiveError(f"release description of kind {kind!r} lacks {exc}") from None


def release_now(spec: dict) -> None:
    prepare(spec)()


def _int(spec: dict, key: str) -> int:
    value = spec[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise LiveError(f"release description: {key!r} must be a non-negative integer, got {value!r}")
    return value


@register("file")
def _file(spec: dict) -> Release:
    path = os.fspath(spec["path"])
    text = str(spec.get("text", "released"))

    def release() -> None:
        with open(path, "a") as f:
            f.write(f"{text} pid={os.getpid()}\n")
    return release


@register("ihk")
def _ihk(spec: dict) -> Release:
    from ..memory.sources.ihkdev import IhkDeviceSource

    source = IhkDeviceSource(_int(spec, "os"), path=spec.get("device"), ioctl=spec.get("ioctl"),
                             check_status=False, probe_ranges=False)
    return source.nmi_cont


@register("qemu")
def _qemu(spec: dict) -> Release:
    from ..formats.ihk_ioctl import NmiMode

    pa = _int(spec, "nmi_mode_pa")
    writes = []
    for item in spec.get("writes", []):
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[1], str)):
            raise LiveError(f"release description: 'writes' entries are [pa, hex], got {item!r}")
        try:
            writes.append((_int({"pa": item[0]}, "pa"), bytes.fromhex(item[1])))
        except ValueError:
            raise LiveError(f"release description: bad hex data for PA {item[0]!r}") from None
    qmp = spec.get("qmp")
    try:
        fd = os.open(os.fspath(spec["memfile"]), os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise LiveError(f"cannot open guest memory file {spec['memfile']}: {exc.strerror}") from None
    size = os.fstat(fd).st_size
    for at, data in [(pa, b"1234")] + writes:
        if at + len(data) > size:
            os.close(fd)
            raise LiveError(f"release write at {at:#x} is beyond the guest memory file")

    def release() -> None:
        # Memory file offset = guest physical address (kernel/PROTOCOL.md).
        for at, data in writes:  # e.g. the boot-time dump bitmap, PROTOCOL.md freeze step 5
            os.pwrite(fd, data, at)
        # nmi_mode is a 4-byte int; RESUME lets the parked CPUs return.
        os.pwrite(fd, int(NmiMode.RESUME).to_bytes(4, "little"), pa)
        if qmp:  # the VM was also stopped: continue it (the dead tool's QMP session is gone)
            from ..qemu.qmp import QMPClient
            client = QMPClient(os.fspath(qmp)).connect(wait=5.0)
            try:
                client.execute("cont")
            finally:
                client.close()
    return release
