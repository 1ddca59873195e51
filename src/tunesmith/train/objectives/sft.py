"""Supervised fine-tuning: next-token cross-entropy on the trained (assistant) tokens only.

The normaliser is the step's trained-token count, so every trained token weighs the same however the step
is cut into micro-batches or packed rows; the metric is OpenAI's "mean token accuracy" (the share of
trained tokens the argmax predicts).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from tunesmith.data.render import Rendered
from tunesmith.train.batches import WIDTH_MULTIPLE, to_batch
from tunesmith.train.loss import decoder_hidden, trained_token_loss
from tunesmith.train.objectives.base import Sums


class SFT:
    name = "sft"
    width_multiple = WIDTH_MULTIPLE  # (batches.py says why)

    def length(self, example: Rendered) -> int:
        return len(example.input_ids)

    def weight(self, examples: Sequence[Rendered]) -> int:
        return sum(e.n_trained for e in examples)

    def collate(self, rows: list[list[Rendered]], pad_id: int) -> dict[str, torch.Tensor]:
        return to_batch(rows, pad_id, self.width_multiple)

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Sums]:
        return self.loss_from(*decoder_hidden(model, batch), batch)

    def loss_from(self, hidden: torch.Tensor, head: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Sums]:
        """``loss`` from the decoder's hidden states: the KL-to-base term reads the same pass (loop.py)."""
        loss, _, correct = trained_token_loss(hidden, head, batch)
        return loss, {"correct": correct}

    def metrics(self, sums: Sums, weight: float) -> dict[str, float]:
        return {"token_accuracy": sums.get("correct", 0) / max(1, weight)}

    def start(self, model: Any, examples: Sequence[Rendered], micro: int, pad_id: int, bf16: bool) -> None:
        return None
