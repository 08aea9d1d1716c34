"""Reading a kernel that keeps running: retries and "changed" marks.

The model's walks are bounded (mcktools.model.lists), so a list that changes
under the reader ends in CorruptStructure or UnreadableAddress, never in an
endless loop.  For a live source that is not a corrupt kernel but bad
timing, so the whole read is tried again a few times.  A successful read is
then done twice: a thread whose row differs between the two passes (state,
CPU, current, ...) or that only the second pass saw is marked `changed`, so
the user knows that row is a moving picture.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from ..errors import CorruptStructure, UnreadableAddress
from ..model.rows import ThreadRow

T = TypeVar("T")

ATTEMPTS = 8
#: keys of Target's memo that describe kernel state (re-read at every live query)


@dataclass
class LiveThreadRow(ThreadRow):
    """A ThreadRow from a running kernel; `changed` when two reads disagreed."""

    changed: bool = False


def invalidate(target: Any) -> None:
    """Forget the model's memoised kernel state so the next query reads memory again.

    Target memoises cpus/threads/processes because a dump never changes; a live
    kernel does."""
    target.forget_state()


def retry(target: Any, fn: Callable[[], T], *, attempts: int = ATTEMPTS, what: str = "kernel state") -> T:
    """fn() with fresh model state, again on inconsistent reads (bounded)."""
    last: Exception | None = None
    for i in range(attempts):
        invalidate(target)
        try:
            return fn()
        except (CorruptStructure, UnreadableAddress) as exc:
            last = exc
            time.sleep(0.001 * (1 << min(i, 6)))
    raise CorruptStructure(f"{what} kept changing while being read ({attempts} attempts; last: {last})")


def live_threads(target: Any, *, attempts: int = ATTEMPTS) -> list:
    """LiveThreadRow for every thread, in ps order, from two consecutive reads."""
    def two_reads():
        first = {i.row.addr: i.row for i in target.threads()}
        invalidate(target)
        second = [i.row for i in target.threads()]
        return first, second

    first, second = retry(target, two_reads, attempts=attempts, what="the thread lists")
    out = []
    for row in second:
        before = first.get(row.addr)
        changed = before is None or before.to_dict() != row.to_dict()
        out.append(LiveThreadRow(**row.to_dict(), changed=changed))
    return out
