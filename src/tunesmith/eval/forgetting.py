"""Forgetting check: did tuning damage general language ability?

Both models read the same shipped general-English text (``examples/general_english.txt``: ~3k tokens of
plain, varied prose that no training set of ours contains) as plain text, without a chat template, and
we compare perplexities. Tuning on a narrow task usually costs a little here; a rise above the threshold
(a share of the base perplexity, settable with ``--forgetting-threshold``) is flagged as a regression.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from typing import Any

import torch

from tunesmith.data.render import Rendered
from tunesmith.train.batches import collate
from tunesmith.train.loss import token_loss_sum

TEXT_NAME = "general_english.txt"
CHUNK_TOKENS = 512  # short enough for any model's context, long enough that most tokens see real context
DEFAULT_THRESHOLD = 0.10


def general_text() -> str:
    return (resources.files("tunesmith.examples") / TEXT_NAME).read_text(encoding="utf-8")


def text_rows(tokenizer: Any, text: str, *, chunk_tokens: int = CHUNK_TOKENS) -> list[Rendered]:
    """Plain text as independent chunks of ``chunk_tokens``, every token a label (token_loss_sum shifts by one,
    so each chunk predicts all but its first token)."""
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    chunks = [ids[i : i + chunk_tokens] for i in range(0, len(ids), chunk_tokens)]
    return [Rendered(c, list(c)) for c in chunks if len(c) > 1]


@torch.no_grad()  # not inference_mode: during training, a compiled model would compile once more for it
def rows_perplexity(model: Any, rows: list[Rendered], pad_id: int) -> tuple[float, int]:
    """(perplexity, predicted tokens) of ``text_rows``; leaves the model in eval mode."""
    if not rows:
        return float("nan"), 0
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(rows), 4):  # a few chunks per forward keeps memory flat on long texts
        batch = {k: v.to(device) for k, v in collate(rows[start : start + 4], pad_id).items()}
        loss, n = token_loss_sum(model, batch)
        total, count = total + float(loss), count + n
    return math.exp(total / count), count


def text_perplexity(model: Any, tokenizer: Any, text: str, *, chunk_tokens: int = CHUNK_TOKENS) -> tuple[float, int]:
    """(perplexity, predicted tokens) of plain text, read in independent chunks of ``chunk_tokens``."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return rows_perplexity(model, text_rows(tokenizer, text, chunk_tokens=chunk_tokens), pad)


@dataclass
class Forgetting:
    base_perplexity: float
    tuned_perplexity: float
    tokens: int
    threshold: float

    @property
    def change(self) -> float:
        """Relative change of perplexity: +0.05 means tuned is 5% more surprised by general text."""
        return self.tuned_perplexity / self.base_perplexity - 1.0

    @property
    def regressed(self) -> bool:
        return self.change > self.threshold

    def as_dict(self) -> dict[str, Any]:
        return {
            "text": TEXT_NAME,
            "tokens": self.tokens,
            "base_perplexity": self.base_perplexity,
            "tuned_perplexity": self.tuned_perplexity,
            "change": self.change,
            "threshold": self.threshold,
            "regressed": self.regressed,
        }
