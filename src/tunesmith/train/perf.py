"""Model FLOPs utilisation (MFU): how much of the machine's measured matmul peak the training uses.

flops per token ~= 4 N_frozen + 6 N_trainable + 12 L d T
  * a frozen weight costs a forward (2N) and the gradient w.r.t. its input (2N), but no weight gradient;
  * a trainable weight also costs its weight gradient (2N more);
  * attention scores and values add 12 L d T per token for a sequence of T tokens (forward + backward).
(Kaplan et al. 2020 / PaLM's appendix B, with the frozen-weight term for LoRA.)

The peak is not taken from a spec sheet: a short GEMM probe in the training dtype measures it at start-up,
so the MFU is against what this machine actually delivers, and the run summary names the peak it used.
"""

from __future__ import annotations

import json
import time
from typing import Any

import torch

from tunesmith import machine, paths, runs

PEAK_CACHE = "peak_flops.json"  # under $TUNESMITH_HOME: one GEMM probe per machine, torch build and threads


def measure_peak_flops(dtype: torch.dtype, size: int = 1024, seconds: float = 0.5) -> float:
    """Best observed FLOP/s of a square matmul in ``dtype`` on the training device."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # Its own generator: the probe runs only when the machine's peak is not cached yet, and must not move the
    # run's seeded RNG (the LoRA init follows), or a run's weights would depend on the cache.
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=gen).to(device=device, dtype=dtype)
    torch.matmul(a, b)  # warm-up: first call pays for kernel selection
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        torch.matmul(a, b)
        if device == "cuda":
            torch.cuda.synchronize()
        best = max(best, 2 * size**3 / (time.perf_counter() - t0))
    return best


def peak_flops(dtype: torch.dtype) -> tuple[float, str]:
    """(this machine's GEMM peak in ``dtype``, where the number came from). The probe runs once per machine
    (CPU, torch build, threads) and dtype, and is read back on later runs: half a second saved at every
    start, and a steadier MFU denominator than a probe taken while the machine is busy with something else."""
    if torch.cuda.is_available():
        return measure_peak_flops(dtype), "GEMM probe at start-up"
    where = paths.home() / "cache" / PEAK_CACHE
    name = machine.key(dtype)
    try:
        cached = json.loads(where.read_text())
    except (OSError, ValueError):
        cached = {}
    if isinstance(cached, dict) and isinstance(cached.get(name), dict):
        entry = cached[name]
        return float(entry["flops"]), f"GEMM probe of {entry['when']}, cached for this machine"
    value = measure_peak_flops(dtype)
    cached = cached if isinstance(cached, dict) else {}
    cached[name] = {"flops": value, "when": time.strftime("%Y-%m-%d")}
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        runs.write_text_atomic(where, json.dumps(cached, indent=1))  # two runs starting at once: no half file
    except OSError:
        pass  # a read-only home only costs the next run its own probe
    return value, "GEMM probe at start-up"


def flops_per_token(model: Any, seq_len: float) -> float:
    """The formula above, with N counting non-embedding parameters (an embedding lookup is no matmul)."""
    embed = model.get_input_embeddings().weight
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad and p is not embed)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad and p is not embed)
    config = model.config
    layers, width = getattr(config, "num_hidden_layers", 0), getattr(config, "hidden_size", 0)
    return 4 * frozen + 6 * trainable + 12 * layers * width * seq_len
