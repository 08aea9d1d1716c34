"""The kmsg ring (`struct ihk_kmsg_buf`, reference §6.6), in order.

The ring is Linux memory (allocated by IHK's driver), so an ihkosctl mcdump
never holds it; a Linux vmcore does, and so does an mcdump that carries an
extra `kmsg` section.  Ring order follows IHK's reader: when head > tail the
text is str[head:] up to a NUL, then str[:tail]; otherwise str[head:tail].
"""

from __future__ import annotations

import struct
from typing import Any, Optional

from ..errors import DebugInfoError, TranslationError, UnreadableAddress
from .rows import KmsgResult


def ring_text(data: bytes, head: int, tail: int, length: int) -> str:
    """The text of a ring whose `str` is `data` (at least `length` bytes)."""
    if length <= 0 or length > len(data) or not (0 <= head < length) or not (0 <= tail < length):
        raise ValueError(f"inconsistent kmsg ring (head {head}, tail {tail}, len {length})")
    if head > tail:
        first = data[head:length]
        nul = first.find(b"\0")
        if nul >= 0:
            first = first[:nul]
        raw = first + data[:tail]
    else:
        raw = data[head:tail]
    return raw.decode("utf-8", "replace")


def _layout(t: Any) -> tuple:
    return tuple(t.offsetof("struct ihk_kmsg_buf", m) for m in ("head", "tail", "len", "str"))


def _parse_struct(t: Any, blob: bytes) -> Optional[str]:
    """`blob` is a whole ihk_kmsg_buf when its header is consistent with its size."""
    try:
        o_head, o_tail, o_len, o_str = _layout(t)
    except DebugInfoError:
        return None
    if len(blob) < o_str + 1:
        return None
    head, = struct.unpack_from("<i", blob, o_head)
    tail, = struct.unpack_from("<i", blob, o_tail)
    length, = struct.unpack_from("<i", blob, o_len)
    if not 0 < length <= len(blob) - o_str:
        return None
    try:
        return ring_text(blob[o_str:o_str + length], head, tail, length)
    except ValueError:
        return None


def _section(t: Any) -> Optional[bytes]:
    for holder in (t.source, getattr(t.source, "dump", None)):
        fn = getattr(holder, "section", None) if holder is not None else None
        if callable(fn):
            data = fn("kmsg")
            if data is not None:
                return bytes(data)
    return None


def _ring_from_memory(t: Any) -> tuple:
    """(text, where) read from the kernel's pointer to the ring, or raises."""
    o_head, o_tail, o_len, o_str = _layout(t)
    va = int(t.variable("kmsg_buf"))
    if not va:
        raise UnreadableAddress(0, "kmsg_buf is NULL (the kernel had not set up its ring)")
    hdr = t.read(va, o_str)
    head, = struct.unpack_from("<i", hdr, o_head)
    tail, = struct.unpack_from("<i", hdr, o_tail)
    length, = struct.unpack_from("<i", hdr, o_len)
    str_size = t.image.sizeof("struct ihk_kmsg_buf") - o_str
    if not 0 < length <= max(str_size, 0) or not 0 <= head < length or not 0 <= tail < length:
        raise ValueError(f"kmsg ring at {va:#x} is inconsistent (head {head}, tail {tail}, len {length})")
    data = t.read(va + o_str, length)
    return ring_text(data, head, tail, length), f"ring at {va:#x}"


def read_kmsg(t: Any) -> KmsgResult:
    blob = _section(t)
    if blob is not None:
        text = _parse_struct(t, blob)
        if text is None:
            text = blob.rstrip(b"\0").decode("utf-8", "replace")
        return KmsgResult(True, text, "kmsg section of the dump")
    try:
        text, where = _ring_from_memory(t)
        return KmsgResult(True, text, where)
    except (UnreadableAddress, TranslationError) as exc:
        why = (f"the kmsg ring is Linux memory, which {t.description} does not contain "
               f"(an ihkosctl mcdump holds only McKernel's memory; a vmcore or an mcdump "
               f"with a kmsg section does): {exc}")
        return KmsgResult(False, "", why)
    except ValueError as exc:
        return KmsgResult(False, "", str(exc))
    except DebugInfoError as exc:
        return KmsgResult(False, "", f"the image does not describe the kmsg ring: {exc}")
