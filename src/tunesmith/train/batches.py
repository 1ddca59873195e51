"""Which examples go into which optimizer step, and how a micro-batch becomes tensors.

The plan for the whole run is a pure function of (lengths, batch size, seed, epochs), so a resumed run
recomputes it and continues at the saved step: the data position is just the step number.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from tunesmith.data.render import IGNORE, Rendered


@dataclass(frozen=True)
class StepPlan:
    epoch: int
    micro_batches: list[list[int]]  # example indices, one list per forward pass

    @property
    def indices(self) -> list[int]:
        return [i for mb in self.micro_batches for i in mb]


def plan_steps(lengths: list[int], batch_size: int, micro_batch_size: int, epochs: int, seed: int) -> list[StepPlan]:
    """Seeded shuffle per epoch; a partial last batch is kept, so no example is skipped.

    Inside one optimizer step the examples are sorted by length before being cut into micro-batches,
    which cuts padding without changing what the step trains on."""
    steps: list[StepPlan] = []
    for epoch in range(epochs):
        order = list(range(len(lengths)))
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        for start in range(0, len(order), batch_size):
            chunk = sorted(order[start : start + batch_size], key=lambda i: (lengths[i], i))
            micro = [chunk[j : j + micro_batch_size] for j in range(0, len(chunk), micro_batch_size)]
            steps.append(StepPlan(epoch, micro))
    return steps


def collate(examples: list[Rendered], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a micro-batch; padding is masked out of attention and out of the labels."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}
