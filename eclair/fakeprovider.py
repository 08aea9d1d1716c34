"""A Provider made from an ELF file and a JSON description, for tests and
benchmarks of the server without a McKernel dump.

Memory is the file's PT_LOAD segments at their virtual addresses (bytes past
p_filesz up to p_memsz are zero, as the ELF says).  The JSON spec:

    {"elf": PATH,
     "threads": [{"id": 12, "name": "init", "extra": "...", "core": 0,
                  "registers": {"rip": 4198400, "rsp": ...}}],
     "stop_thread": 12,                 # optional
     "monitor": {"ps": "text"},          # command word -> output
     "memory_map": "segments" | "none" | [[start, length], ...],
     "holes": [[start, length], ...],    # listed in the map, unreadable
     "live": true,                       # optional: may run; Ctrl-C stops it
     "after_interrupt": {"stop_thread": 13, "threads": [...]}}  # state after a stop
"""

from __future__ import annotations

import json
from bisect import bisect_right
from typing import Dict, List, Optional, Tuple

from elftools.elf.elffile import ELFFile

from mcktools.errors import FormatError, McktoolsError, UnreadableAddress

from .provider import ProviderBase, ThreadInfo


class FakeProvider(ProviderBase):
    def __init__(self, spec: dict):
        self.spec = spec
        self._segments: List[Tuple[int, int, bytes]] = []  # (vaddr, memsz, data)
        try:
            with open(spec["elf"], "rb") as f:
                elf = ELFFile(f)
                for seg in elf.iter_segments():
                    if seg["p_type"] != "PT_LOAD" or seg["p_memsz"] == 0:
                        continue
                    data = seg.data()
                    data += bytes(seg["p_memsz"] - len(data))
                    self._segments.append((seg["p_vaddr"], seg["p_memsz"], data))
        except KeyError as exc:
            raise FormatError(f"fake provider spec lacks {exc}") from None
        except Exception as exc:  # pyelftools raises its own error types
            if isinstance(exc, OSError):
                raise
            raise FormatError(f"{spec.get('elf')}: not an ELF file ({exc})") from None
        self._segments.sort()
        self._starts = [s[0] for s in self._segments]
        self._holes = [(int(s), int(n)) for s, n in spec.get("holes", [])]
        self._load_threads(spec.get("threads", []))
        self.live = bool(spec.get("live", False))
        self.running = False
        self.reads = 0
        self.events: List[str] = []

    def _load_threads(self, rows) -> None:
        self._threads = [
            ThreadInfo(int(t["id"]), t.get("name", ""), t.get("extra", ""), t.get("core"))
            for t in rows
        ]
        self._registers = {int(t["id"]): dict(t.get("registers", {})) for t in rows}

    @classmethod
    def from_json(cls, path: str) -> "FakeProvider":
        with open(path, encoding="utf-8") as f:
            return cls(json.load(f))

    def threads(self) -> List[ThreadInfo]:
        return list(self._threads)

    def stop_thread(self) -> Optional[int]:
        if "stop_thread" in self.spec:
            return int(self.spec["stop_thread"])
        return super().stop_thread()

    def registers(self, thread_id: int) -> Dict[str, Optional[int]]:
        if thread_id not in self._registers:
            raise McktoolsError(f"no thread {thread_id}")
        return {k: (None if v is None else int(v)) for k, v in self._registers[thread_id].items()}

    def _in_hole(self, addr: int) -> Optional[int]:
        """End of the hole containing addr, or None."""
        for start, length in self._holes:
            if start <= addr < start + length:
                return start + length
        return None

    def _next_hole(self, addr: int) -> Optional[int]:
        starts = [s for s, _ in self._holes if s > addr]
        return min(starts) if starts else None

    def read_memory(self, thread_id: int, addr: int, size: int) -> bytes:
        self.reads += 1
        out = bytearray()
        cur = addr
        end = addr + size
        while cur < end:
            if self._in_hole(cur) is not None:
                break
            i = bisect_right(self._starts, cur) - 1
            if i < 0:
                break
            vaddr, memsz, data = self._segments[i]
            if cur >= vaddr + memsz:
                break
            stop = min(end, vaddr + memsz)
            hole = self._next_hole(cur)
            if hole is not None:
                stop = min(stop, hole)
            out += data[cur - vaddr:stop - vaddr]
            cur = stop
        if not out and size:
            raise UnreadableAddress(addr, physical=False)
        return bytes(out)

    def memory_map(self) -> Optional[List[Tuple[int, int]]]:
        mode = self.spec.get("memory_map", "segments")
        if mode == "none":
            return None
        if mode == "segments":
            return [(v, n) for v, n, _ in self._segments]
        return [(int(s), int(n)) for s, n in mode]

    def resume(self) -> None:
        if not self.live:
            super().resume()
        self.events.append("resume")
        self.running = True

    def interrupt(self) -> None:
        self.events.append("interrupt")
        if self.running:
            self.running = False
            after = self.spec.get("after_interrupt", {})
            if "stop_thread" in after:
                self.spec["stop_thread"] = after["stop_thread"]
            if "threads" in after:
                self._load_threads(after["threads"])

    def refresh(self) -> None:
        self.events.append("refresh")

    def monitor(self, command: str) -> str:
        if command.strip() == "events":  # lets tests see the hook calls
            return " ".join(self.events)
        words = command.split()
        table = self.spec.get("monitor", {})
        if words and words[0] in table:
            return table[words[0]]
        return super().monitor(command)
