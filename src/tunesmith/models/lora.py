"""LoRA through PEFT.

    x ──► W (frozen) ──────────────┐
    │                              + ──► h        h = W x + (alpha / r) · B A x
    └──► dropout ─► A (r×in) ─► B (out×r)         A random, B zero: training starts at the base model

Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models" (2021), arXiv:2106.09685.
We use PEFT rather than our own layers: its adapter files load in PEFT, transformers and vLLM.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

from tunesmith.config import LoraSettings


@contextlib.contextmanager
def quiet_peft() -> Iterator[None]:
    # PEFT calls a transformers property that transformers itself has deprecated; not ours to act on.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


def continue_lora(model: Any) -> Any:
    """A loaded PeftModel (a LoRA run's adapter on its base) made to train its adapter further, the adapter
    weights in fp32 as a fresh adapter's are."""
    for name, p in model.named_parameters():
        trains = "lora_" in name
        if trains:
            p.data = p.data.float()
        p.requires_grad_(trains)
    return model


def add_lora(model: Any, settings: LoraSettings) -> Any:
    from peft import LoraConfig, get_peft_model

    from tunesmith.models.coverage import check_targets

    check_targets(model, settings.target_modules)
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        task_type="CAUSAL_LM",
        bias="none",
    )
    with quiet_peft():
        return get_peft_model(model, config)


def randomize_b(model: Any, std: float) -> Any:
    """Draw the adapter's B matrices from N(0, ``std``) (torch's global generator), in place; returns ``model``.
    A fresh adapter's B is zero, so it changes nothing: this makes a random change of the weights of a known
    size (the behavioural probe's fragility filter, and tests that need a moved adapter or nonzero gradients)."""
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, std)
    return model
