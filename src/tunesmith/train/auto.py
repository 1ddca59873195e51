"""Hyperparameters chosen for the data, the way hosted fine-tuning services do it.

A new user with a few hundred rows and no flags should get a model that learned the task and learned
to stop. Every automatic choice comes with the reason, which the run summary prints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tunesmith.config import TrainSettings

# OpenAI's published defaults for epochs: aim for 3 passes, but see at least ~100 examples in total
# and at most ~25k, within 1..25 epochs.
TARGET_EPOCHS, MIN_TARGET_EXAMPLES, MAX_TARGET_EXAMPLES = 3, 100, 25_000
MIN_EPOCHS, MAX_EPOCHS = 1, 25
# Peak learning rates that worked across our small-model runs (see BENCHMARKS.md / README defaults).
LORA_LR = 1e-3
FULL_LR = 5e-5
# DPO moves the log-ratio of two replies at once and is held near the start only by beta: an order of
# magnitude below SFT's rates (TRL's examples use 5e-6..5e-5 for full, ~1e-4 for LoRA).
DPO_LORA_LR = 1e-4
DPO_FULL_LR = 5e-6
DPO_BETA = 0.1
DPO_NLL = 1.0  # RPO's weight (Pang et al. 2024); see README for the demo run without it
# Tokens per forward pass: bounds activation memory whatever the row length.
MICRO_BATCH_TOKENS = 4096


@dataclass
class Resolved:
    settings: TrainSettings
    reasons: list[str]
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int


def default_epochs(n: int) -> tuple[int, str]:
    if n * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        e = min(MAX_EPOCHS, math.ceil(MIN_TARGET_EXAMPLES / n))
        return e, f"{e} epochs: only {n} rows, so repeat them to see >= {MIN_TARGET_EXAMPLES} examples"
    if n * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        e = max(MIN_EPOCHS, MAX_TARGET_EXAMPLES // n)
        return e, f"{e} epoch(s): {n} rows is plenty; capped at ~{MAX_TARGET_EXAMPLES} examples seen"
    return TARGET_EPOCHS, f"{TARGET_EPOCHS} epochs: the usual choice for {n} rows"


def default_batch_size(n: int) -> tuple[int, str]:
    b = 4 if n < 100 else 8 if n < 2_000 else 16 if n < 20_000 else 32
    return b, f"batch {b}: enough optimizer steps for {n} rows"


def default_learning_rate(method: str, objective: str | None = "sft") -> float:
    """The peak learning rate a run gets when none is given (the jobs API's multiplier scales it)."""
    if objective == "dpo":
        return DPO_LORA_LR if method == "lora" else DPO_FULL_LR
    return LORA_LR if method == "lora" else FULL_LR


def _dpo_defaults(s: TrainSettings) -> list[str]:
    """DPO's own choices: beta, a lower learning rate, and whole pairs (no packing)."""
    reasons = []
    if s.beta is None:
        s.beta = DPO_BETA
        reasons.append(f"beta {s.beta:g}: DPO's usual pull toward the starting model (the paper's and TRL's)")
    if s.learning_rate is None:
        s.learning_rate = DPO_LORA_LR if s.method == "lora" else DPO_FULL_LR
        reasons.append(f"learning rate {s.learning_rate:g}: the DPO {s.method} default, 10x below SFT's")
    if s.dpo_nll is None:
        s.dpo_nll = DPO_NLL
        reasons.append(
            f"DPO + {s.dpo_nll:g} x the preferred reply's NLL (RPO): keeps it likely while the pair is pulled apart"
        )
    if s.packing:
        s.packing = False
        reasons.append("packing: off (DPO compares each pair's two replies whole)")
    return reasons


def resolve(settings: TrainSettings, n_train: int, p95_len: int, has_val: bool) -> Resolved:
    s = settings.model_copy()
    reasons: list[str] = []
    if s.epochs is None:
        s.epochs, why = default_epochs(n_train)
        reasons.append(why)
    if s.batch_size is None:
        s.batch_size, why = default_batch_size(n_train)
        reasons.append(why)
    if s.micro_batch_size is None:
        fit = max(1, MICRO_BATCH_TOKENS // max(1, p95_len))
        s.micro_batch_size = max(d for d in range(1, s.batch_size + 1) if s.batch_size % d == 0 and d <= fit)
        reasons.append(f"micro-batch {s.micro_batch_size}: ~{MICRO_BATCH_TOKENS} tokens per forward pass")
    if s.objective == "dpo":
        reasons += _dpo_defaults(s)
    if s.learning_rate is None:
        s.learning_rate = LORA_LR if s.method == "lora" else FULL_LR
        reasons.append(f"learning rate {s.learning_rate:g}: the {s.method} default, cosine-decayed")
    steps_per_epoch = math.ceil(n_train / s.batch_size)
    total = steps_per_epoch * s.epochs
    if s.max_steps is not None:
        total = min(total, s.max_steps)
    warmup = math.ceil(total * s.warmup_ratio) if s.warmup_ratio else 0
    if s.eval_every is None and has_val:
        s.eval_every = max(1, total // 10)
        reasons.append(f"validation every {s.eval_every} steps (~10 times a run)")
    if s.save_every is None:
        s.save_every = s.eval_every or max(1, total // 5)
    return Resolved(s, reasons, steps_per_epoch, total, warmup)
