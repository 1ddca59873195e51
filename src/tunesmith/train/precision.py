"""bf16 autocast, the one context every training forward runs in (the loop's, validation's, and an
objective's own forwards such as DPO's reference pass), so all of them compute in the same precision."""

from __future__ import annotations

import contextlib
from typing import Any

import torch


def autocast(bf16: bool) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast where the run trains in bf16 (weights stay fp32 where they train)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.autocast(device, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
