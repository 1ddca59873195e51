"""Held-out preference accuracy, for runs trained on preference pairs (DPO) and any other run evaluated on
pairs: does the model give the preferred reply more probability than the other one?

For each held-out pair, log p(preferred | prompt) - log p(other | prompt), summed over each reply's tokens
(masked exactly as training masks a reply). Reported for the start (the run's base: the model the run
started from) and the tuned model:
  * accuracy: the share of pairs where that difference is positive;
  * reward accuracy: DPO's own measure, the share of pairs where the tuned model's difference is larger than
    the start's (the implicit reward beta x log-ratio prefers the preferred reply).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tunesmith.data.formats import Conversation, parse_file
from tunesmith.data.render import Renderer
from tunesmith.models.stops import stop_token_ids
from tunesmith.train.objectives.dpo import pair_logps, render_pairs


def pairs_in(path: Path, columns: dict[str, str] | None = None) -> list[Conversation]:
    """The preference pairs of an evaluation file ([] when it holds no pairs)."""
    parsed = parse_file(path, require_reply=False, columns=columns)
    return parsed.examples if parsed.format == "preference" else []


@torch.no_grad()
def log_prob_margins(model: Any, tokenizer: Any, convs: list[Conversation], batch: int = 8) -> list[float]:
    """Per pair, log p(preferred) - log p(other), as training renders and masks them."""
    renderer = Renderer(tokenizer, train_on="last", max_len=1 << 30, stop_token_ids=stop_token_ids(model, tokenizer))
    pairs, _ = render_pairs(renderer, convs)
    return [c - r for c, r in pair_logps(model, pairs, batch, tokenizer.pad_token_id)]


def summary(start: list[float], tuned: list[float]) -> dict[str, Any]:
    n = len(tuned)
    return {
        "pairs": n,
        "start_accuracy": sum(d > 0 for d in start) / n,
        "tuned_accuracy": sum(d > 0 for d in tuned) / n,
        "reward_accuracy": sum(t > s for s, t in zip(start, tuned, strict=True)) / n,
        "start_mean_margin": sum(start) / n,
        "tuned_mean_margin": sum(tuned) / n,
    }
