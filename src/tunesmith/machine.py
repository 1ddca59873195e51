"""What this machine is: the CPU model, the matrix features that decide bf16's speed, and a key for caching
measurements that hold for this machine only (a GEMM peak). Benchmarks record the same description, so a
number always says where it was measured."""

from __future__ import annotations

import os
import platform
from functools import cache
from pathlib import Path

# The CPU features that change what bf16 costs: AMX tiles (Sapphire Rapids and later: ~5x fp32 GEMMs),
# AVX-512 BF16 (Cooper Lake, Zen 4: ~2x), none (bf16 is emulated and slower than fp32).
MATRIX_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2")


@cache
def cpu_info() -> dict[str, object]:
    """{"model": ..., "flags": [the MATRIX_FLAGS present], "cores": n} from /proc/cpuinfo (Linux), or what
    ``platform`` knows elsewhere."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            model = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
        if model and flags:
            break
    return {"model": model, "flags": [f for f in MATRIX_FLAGS if f in flags], "cores": os.cpu_count() or 1}


def describe() -> str:
    info = cpu_info()
    flags = ", ".join(info["flags"]) or "no AVX2/AVX-512/AMX"  # type: ignore[arg-type]
    return f"{info['model']} ({info['cores']} cores; {flags})"


def key(*parts: object) -> str:
    """A cache key for a measurement of this machine: the CPU, the torch build and the threads it runs with."""
    import torch

    info = cpu_info()
    # The flags too: a cloud VM can name every generation alike ("AMD EPYC" on a Zen 3 without AVX-512 and on
    # a Zen 4 with AVX-512 BF16), and their measurements differ several times over.
    flags = "+".join(info["flags"])  # type: ignore[arg-type]
    return "|".join(str(p) for p in (info["model"], flags, torch.__version__, torch.get_num_threads(), *parts))
