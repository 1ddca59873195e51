"""Forgetting check: did tuning damage general language ability?

Both models read the same shipped general-English text (``examples/general_english.txt``: ~3k tokens of
plain, varied prose that no training set of ours contains) as plain text, without a chat template, and
we compare perplexities. Tuning on a narrow task usually costs a little here; a rise above the threshold
(a share of the base perplexity, settable with ``--forgetting-threshold``) is flagged as a regression.

Beside it, the behavioural probe (``behaviour.py``): everyday questions the base answers right, asked again of
the tuned model. ``probe`` takes both readings of one model; ``compare`` turns base's and tuned's into a
``Forgetting``, whose ``as_dict`` is ``result["forgetting"]`` (the behavioural part under ``behaviour``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from typing import Any

import torch

from tunesmith.data.render import Rendered
from tunesmith.eval import behaviour as bh
from tunesmith.train.batches import to_batch
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
        batch = {k: v.to(device) for k, v in to_batch([[r] for r in rows[start : start + 4]], pad_id).items()}
        loss, n = token_loss_sum(model, batch)
        total, count = total + float(loss), count + n
    return math.exp(total / count), count


def text_perplexity(model: Any, tokenizer: Any, text: str, *, chunk_tokens: int = CHUNK_TOKENS) -> tuple[float, int]:
    """(perplexity, predicted tokens) of plain text, read in independent chunks of ``chunk_tokens``."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return rows_perplexity(model, text_rows(tokenizer, text, chunk_tokens=chunk_tokens), pad)


@dataclass
class Reading:
    """One model's side of the check: its perplexity on the general text, which probe items it answers."""

    perplexity: float
    tokens: int
    right: list[bool]
    replies: list[str] | None = None


def probe(
    model: Any, tokenizer: Any, items: list[bh.Item] | None = None, *, batch_size: int = bh.BATCH_SIZE
) -> Reading:
    """Both probes on one model: general-text perplexity and the behavioural questions (shipped set by default)."""
    perplexity, tokens = text_perplexity(model, tokenizer, general_text())
    items = bh.load_items() if items is None else items
    replies = bh.replies(model, tokenizer, items, batch_size=batch_size)
    return Reading(perplexity, tokens, bh.scored(items, replies), replies)


def compare(
    base: Reading,
    tuned: Reading,
    threshold: float = DEFAULT_THRESHOLD,
    behaviour_threshold: float = bh.DEFAULT_THRESHOLD,
    items: list[bh.Item] | None = None,
) -> Forgetting:
    items = bh.load_items() if items is None else items
    answers = bh.Behaviour(items, base.right, tuned.right, behaviour_threshold, tuned.replies)
    return Forgetting(base.perplexity, tuned.perplexity, base.tokens, threshold, answers)


@dataclass
class Forgetting:
    base_perplexity: float
    tuned_perplexity: float
    tokens: int
    threshold: float
    behaviour: bh.Behaviour | None = None  # None: a result from before the behavioural probe

    @property
    def change(self) -> float:
        """Relative change of perplexity: +0.05 means tuned is 5% more surprised by general text."""
        return self.tuned_perplexity / self.base_perplexity - 1.0

    @property
    def regressed(self) -> bool:
        """The perplexity probe's flag (what ``regressed`` has always meant); the behavioural one is its own."""
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
            **({"behaviour": self.behaviour.as_dict()} if self.behaviour is not None else {}),
        }
