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

import time
from typing import Any

import torch


def measure_peak_flops(dtype: torch.dtype, size: int = 1024, seconds: float = 0.5) -> float:
    """Best observed FLOP/s of a square matmul in ``dtype`` on the training device."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
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


def flops_per_token(model: Any, seq_len: float) -> float:
    """The formula above, with N counting non-embedding parameters (an embedding lookup is no matmul)."""
    embed = model.get_input_embeddings().weight
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad and p is not embed)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad and p is not embed)
    config = model.config
    layers, width = getattr(config, "num_hidden_layers", 0), getattr(config, "hidden_size", 0)
    return 4 * frozen + 6 * trainable + 12 * layers * width * seq_len
