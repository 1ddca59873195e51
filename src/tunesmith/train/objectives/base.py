"""What an objective is: how a step's rows become a loss, its normaliser and its metrics.

The loop (train/loop.py) owns everything else: steps, accumulation, clipping, the schedule, validation,
early stopping, best weights, checkpoints, signals and logging. An objective is small on purpose, so that
adding one (DPO, reinforcement fine-tuning, a toy loss in a test) is one module plus one registry line.

Accumulation is exact for every objective because the loss is a *sum* over the step's units (trained
tokens for SFT) and the loop divides it by ``weight`` of the whole step, never by a micro-batch's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch

Sums = dict[str, float]  # summed metric numerators of one or more micro-batches, e.g. {"correct": 17}


def add_sums(a: Sums, b: Sums) -> Sums:
    return {k: a.get(k, 0) + b.get(k, 0) for k in a.keys() | b.keys()}


class Objective(Protocol):
    name: str
    width_multiple: int  # ``collate`` pads a micro-batch's width up to a multiple of this (1: to its longest)

    def length(self, example: Any) -> int:
        """Positions the example occupies in a batch (planning, padding and tokens/s use it)."""
        ...

    def weight(self, examples: Sequence[Any]) -> int:
        """The normaliser of a step holding ``examples``: its summed loss is divided by this."""
        ...

    def collate(self, rows: list[list[Any]], pad_id: int) -> dict[str, torch.Tensor]:
        """Tensors for one micro-batch (``rows``: the examples sharing each sequence; one unless packed)."""
        ...

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Sums]:
        """(summed loss of the micro-batch, summed metric numerators). Runs inside the engine's forward."""
        ...

    def metrics(self, sums: Sums, weight: float) -> dict[str, float]:
        """The logged metrics of a step or a validation pass, from its sums and its weight."""
        ...

    def start(self, model: Any, examples: Sequence[Any], micro: int, pad_id: int, bf16: bool) -> None:
        """Called once with the starting weights, before the loop (or a resume) changes them: what the
        objective needs from the start (DPO: the reference log-probs). Most objectives need nothing."""
        ...
