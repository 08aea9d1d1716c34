#!/usr/bin/env python3
"""Manual smoke check of the reference kernel: boot a scenario under QEMU, wait for the setup
manifest, optionally freeze it like IHK's dump path (nmi_mode via the memory file, QMP
inject-nmi), check the frozen manifest and the resume. Standalone on purpose (no mcktools),
so the kernel can be checked while the host harness is being written.

    python3 kernel/tools/smoke.py --smp 4 --scenario multi --freeze --level 24
"""
from __future__ import annotations

import argparse
import json
import mmap
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
IMG = os.path.join(HERE, "..", "build", "mckernel.img")
MEM = 48 << 20
# smp_boot_param offsets as laid out in include/bootparam.h (the tools must use DWARF)
OFF_NMI_MODE_ADDR, OFF_DUMP_LEVEL, OFF_COMPLETION = 104, 6624, 6632


def qmp(path: str, *cmds: dict) -> list:
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    f = s.makefile("rwb")
    f.readline()
    out = []
    for c in ({"execute": "qmp_capabilities"},) + cmds:
        f.write(json.dumps(c).encode() + b"\n")
        f.flush()
        while True:
            r = json.loads(f.readline())
            if "event" not in r:
                out.append(r)
                break
    s.close()
    return out[1:]


def wait_for(serial: str, marker: str, timeout: float, start: int = 0) -> tuple[str, int]:
    end = time.time() + timeout
    while time.time() < end:
        if not os.path.exists(serial):
            time.sleep(0.05)
            continue
        with open(serial, "rb") as fh:
            data = fh.read().decode("latin-1")
        i = data.find(marker, start)
        if i >= 0:
            j = data.find("\n", i)
            if j >= 0:
                return data[i:j], j
        time.sleep(0.05)
    raise SystemExit(f"timeout waiting for {marker!r}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smp", type=int, default=2)
    ap.add_argument("--scenario", default="multi")
    ap.add_argument("--freeze", action="store_true")
    ap.add_argument("--level", type=int, default=24)
    ap.add_argument("--img", default=IMG)
    ap.add_argument("--count", type=int, default=1, help="freeze/resume this many times")
    ap.add_argument("--save", help="directory to store memory.raw and frozen.json while frozen")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="mcksmoke")
    shm = f"/dev/shm/mcksmoke-{os.getpid()}"
    serial, qsock = os.path.join(tmp, "serial"), os.path.join(tmp, "qmp")
    t0 = time.time()
    p = subprocess.Popen([
        "qemu-system-x86_64", "-accel", "tcg", "-nographic", "-no-reboot", "-net", "none", "-m", "48M",
        "-smp", str(a.smp), "-object", f"memory-backend-file,id=mem,size=48M,mem-path={shm},share=on",
        "-machine", "memory-backend=mem", "-kernel", a.img,
        "-append", f"mem=12M@0x1000000,4M@0x2000000 scenario={a.scenario} dump_level=24",
        "-serial", f"file:{serial}", "-qmp", f"unix:{qsock},server=on,wait=off", "-monitor", "none"],
        stdin=subprocess.DEVNULL)
    try:
        line, pos = wait_for(serial, "MCKTOOLS-MANIFEST ", 30)
        m = json.loads(line.split(" ", 1)[1])
        print(f"setup manifest after {time.time() - t0:.2f}s: {len(m['threads'])} threads, "
              f"{len(m['processes'])} processes, states "
              f"{sorted({t['state'] for t in m['threads']})}")
        wait_for(serial, "MCKTOOLS-READY", 10)
        if a.scenario == "panic":
            print(wait_for(serial, "MCKTOOLS-PANIC", 20)[0])
        if not a.freeze:
            return 0
        fd = os.open(shm, os.O_RDWR)
        mem = mmap.mmap(fd, MEM)
        bp = m["boot_param_pa"]
        spos = 0
        for round_ in range(a.count):
            nmi_pa = struct.unpack_from("<Q", mem, bp + OFF_NMI_MODE_ADDR)[0]
            struct.pack_into("<i", mem, bp + OFF_DUMP_LEVEL, a.level)
            struct.pack_into("<i", mem, nmi_pa, 0)
            qmp(qsock, {"execute": "inject-nmi"})
            end = time.time() + 20
            while struct.unpack_from("<I", mem, bp + OFF_COMPLETION)[0] != 1:
                if time.time() > end:
                    raise SystemExit("completion_flag never set")
                time.sleep(0.02)
            line, spos = wait_for(serial, "MCKTOOLS-FROZEN-MANIFEST ", 5, spos)
            f = json.loads(line.split(" ", 1)[1])
            print(f"frozen manifest: phase {f['phase']}, dump_level {f['dump_level']}, panic {f['panic']}")
            for c in f["cpus"]:
                print(f"  cpu {c['id']} {c['status']} current {c['current']:#x} runq {len(c['runq'])}")
            kb, lpob = f["kernel_base"], f["linux_page_offset_base"]
            img_pa = lambda va: va - 0xfffffffffe800000 + kb
            locals_pa = struct.unpack_from("<Q", mem, img_pa(f["symbols"]["locals"]))[0] - lpob
            span = struct.unpack_from("<Q", mem, img_pa(f["symbols"]["x86_cpu_local_variables_span"]))[0]
            for c in range(f["ncpus"]):
                base = locals_pa + c * span
                paniced = struct.unpack_from("<Q", mem, base + 280)[0]
                regs = struct.unpack_from("<17Q", mem, base + 288)
                print(f"  cpu {c} paniced {paniced} panic_regs rip {regs[16]:#x} rsp {regs[7]:#x}")
            if f["panic"]:
                regs = struct.unpack_from("<17Q", mem, locals_pa + f["panic"]["cpu"] * span + 288)
                assert regs[16] == f["panic"]["rip"], "panic_regs do not hold the fault registers"
                print("  panic_regs of the panicked CPU hold the fault rip")
            if a.save:
                os.makedirs(a.save, exist_ok=True)
                with open(os.path.join(a.save, "memory.raw"), "wb") as out:
                    out.write(mem[:])
                with open(os.path.join(a.save, "frozen.json"), "w") as out:
                    json.dump(f, out)
            # level-24 bitmap: user pages excluded, kernel structures kept
            count, _, phy = struct.unpack_from("<IQQ", mem, bp + OFF_COMPLETION + 4)
            blocks, off = [], phy
            for _ in range(count):
                start, n = struct.unpack_from("<QQ", mem, off)
                blocks.append((start, n, off + 16))
                off += 16 + 8 * n

            def bit(pa):
                for start, n, words in blocks:
                    if start <= pa < start + n * 64 * 4096:
                        i = (pa - start) >> 12
                        return (struct.unpack_from("<Q", mem, words + 8 * (i // 64))[0] >> (i % 64)) & 1
                return None
            user = [t["pa"] for ts in f["translations"].values() for t in ts]
            kern = [s_["pa"] for s_ in f["structures"]]
            print(f"  bitmap: user pages kept {sum(bit(p) == 1 for p in user)}/{len(user)}, "
                  f"structures kept {sum(bit(p) == 1 for p in kern)}/{len(kern)}")
            struct.pack_into("<i", mem, nmi_pa, 4)
            _, spos = wait_for(serial, "MCKTOOLS-RESUMED", 10, spos)
            print("resumed")
            for start, n, words in blocks:  # the host restores every bit, as PROTOCOL.md says
                for w in range(n):
                    bits = min(64, {c["addr"]: c["size"] for c in f["chunks"]}[start] // 4096 - w * 64)
                    struct.pack_into("<Q", mem, words + 8 * w, (1 << bits) - 1)
            c0 = {(c["pid"], c["tid"]): c["pa"] for c in f["counters"]}
            v1 = {k: struct.unpack_from("<Q", mem, pa)[0] for k, pa in c0.items()}
            time.sleep(1.0)
            v2 = {k: struct.unpack_from("<Q", mem, pa)[0] for k, pa in c0.items()}
            print("counters advancing after resume:", sum(v2[k] > v1[k] for k in c0), "of", len(c0))
        return 0
    finally:
        p.kill()
        p.wait()
        if os.path.exists(shm):
            os.unlink(shm)


if __name__ == "__main__":
    sys.exit(main())
