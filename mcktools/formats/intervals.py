"""Sorted, merged lists of half-open [start, end) intervals.

Readers that assemble a file or an address space from records in arbitrary order
(flattened kdump streams, overlapping chunks and segments) keep what they have
covered in such a list; both operations bisect, since streams have thousands of
records.
"""

from __future__ import annotations

import bisect
from typing import List, Tuple

Intervals = List[Tuple[int, int]]


def uncovered(covered: Intervals, start: int, end: int) -> Intervals:
    """Parts of [start, end) not in `covered`."""
    out = []
    pos = start
    i = max(bisect.bisect_right(covered, (start, float("inf"))) - 1, 0)
    while pos < end and i < len(covered):
        s, e = covered[i]
        if e <= pos:
            i += 1
            continue
        if s >= end:
            break
        if s > pos:
            out.append((pos, s))
        pos = max(pos, e)
        i += 1
    if pos < end:
        out.append((pos, end))
    return out


def merge_in(covered: Intervals, start: int, end: int) -> Intervals:
    """Insert [start, end) into the sorted, merged list (in place, bisect-based:
    streams have thousands of records)."""
    if end <= start:
        return covered
    lo = bisect.bisect_left(covered, (start, start))
    if lo > 0 and covered[lo - 1][1] >= start:
        lo -= 1
    hi = lo
    while hi < len(covered) and covered[hi][0] <= end:
        hi += 1
    if hi > lo:
        start = min(start, covered[lo][0])
        end = max(end, covered[hi - 1][1])
    covered[lo:hi] = [(start, end)]
    return covered
