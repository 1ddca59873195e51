"""AdamW with linear warmup and cosine decay to a floor."""

from __future__ import annotations

import math

import torch


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Multiplier on the peak learning rate for optimizer step ``step`` (0-based)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(
    params: list[torch.nn.Parameter],
    lr: float,
    weight_decay: float,
    total: int,
    warmup: int,
    min_ratio: float,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    # Biases and norms are not decayed (standard practice; decaying a norm gain pulls it towards 0).
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=(0.9, 0.999), eps=1e-8)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total, warmup, min_ratio))
    return optimizer, scheduler
