"""What the Target knows about the dump and the kernel, as one dict for `mcinspect info`."""

from __future__ import annotations

from typing import Any

from ..errors import DebugInfoError, McktoolsError
from ..memory.translate import MAP_FIXED_START, MAP_ST_START, USER_END

KEY_SYMBOLS = ("_head", "clv", "locals", "num_processors", "mck_num_processors", "debug_constants",
               "init_pt", "linux_page_offset_base", "x86_kernel_phys_base", "boot_param",
               "boot_param_pa", "kmsg_buf", "ihk_mc_switch_context")


def read_info(t: Any) -> dict:
    src = t.source
    dump = getattr(src, "dump", None)
    meta: dict = {"source": t.description}
    for k in ("date", "hostname", "user", "phys_start", "interactive"):
        if dump is not None and hasattr(dump, k):
            meta[k] = getattr(dump, k)
    ranges = src.ranges()
    meta["ranges"] = len(ranges)
    meta["bytes"] = sum(r.size for r in ranges)
    symbols = {}
    for name in KEY_SYMBOLS:
        try:
            symbols[name] = t.symbol(name)
        except DebugInfoError:
            pass
    try:
        ncpu = len(t.cpus())
    except McktoolsError as exc:
        ncpu = f"unreadable ({exc})"
    km = t.kmap
    amap = {
        "user": {"start": 0, "end": USER_END},
        "straight": {"start": MAP_ST_START, "phys": 0},
        "fixed": {"start": MAP_FIXED_START, "via": "init_pt"},
        "direct": {"start": km.linux_page_offset_base, "phys": 0},
        "image": {"start": km.map_kernel_start, "end": km.image_end, "phys": km.kernel_base},
        "init_pt": {"va": getattr(t, "init_pt_va", None), "pa": km.init_pt_pa},
    }
    return {
        "dump": meta,
        "image": {"path": str(t.image.path), "build_id": t.build_id_hex},
        "kernel_base": t.kernel_base,
        "kernel_base_from": t.kernel_base_source(),
        "cpus": ncpu,
        "address_map": amap,
        "symbols": symbols,
        "warnings": list(t.warnings),
    }
