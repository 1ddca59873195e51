"""How the loop runs one model in this process: the ``Engine``.

The loop (loop.py) never touches a model directly: it asks its engine to run a micro-batch's forward (the
objective's loss), to deal a step's rows, to add up what was measured, to clip, and to save and load
checkpoints and the finished weights. ``Engine`` is the single-process engine, and also the protocol: the
engines for several processes (DDP for LoRA, FSDP2 for full fine-tuning) subclass it in distributed.py,
where dealing and adding up become collectives.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch

from tunesmith.train import checkpoint as ckpt
from tunesmith.train.batches import Row
from tunesmith.train.objectives import Objective, Sums
from tunesmith.train.objectives.sft import SFT


class ObjectiveModule(torch.nn.Module):
    """The model and its objective's loss as one module, so that DDP and FSDP2 see the whole forward pass
    (their hooks run on the wrapped module's forward; a loss calls the decoder and the output head directly)."""

    def __init__(self, model: Any, objective: Objective) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Sums]:
        return self.objective.loss(self.model, batch)


class Engine:
    """One process, the model as it is."""

    def __init__(self, model: Any, objective: Objective | None = None, *, sharded_checkpoints: bool = False) -> None:
        self.model = model
        self.objective = objective or SFT()
        self.module: Any = None  # the wrapped ObjectiveModule, where peers need one (DDP / FSDP2)
        self.sharded_checkpoints = sharded_checkpoints  # full fine-tuning: torch.distributed.checkpoint
        self.rank, self.world = 0, 1
        self.grad_scale = 1.0  # what each micro-batch's loss is multiplied by before backward
        first = next(model.parameters(), None)
        self.device = first.device if first is not None else torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device) for k, v in batch.items()}

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Sums]:
        batch = self.to_device(batch)
        if self.module is None:
            return self.objective.loss(self.model, batch)
        return self.module(batch)

    def sync(self, last: bool) -> contextlib.AbstractContextManager[Any]:
        """Around one micro-batch's forward and backward: whether gradients are reduced after it."""
        return contextlib.nullcontext()

    # -- dealing and adding up: identities with one process -------------------------------------------------

    def shard(self, micro_batches: list[list[Row]], lengths: list[int]) -> tuple[list[list[Row]], int]:
        """(this process's micro-batches of a step, how many are real): the rest are weight-0 placeholders."""
        return micro_batches, len(micro_batches)

    def eval_shard(self, n_batches: int) -> tuple[list[int], int]:
        """(indices of the evaluation micro-batches this process runs, how many forwards every process makes)."""
        return list(range(n_batches)), n_batches

    def all_sum(self, *values: float) -> list[float]:
        return list(values)

    def all_max(self, value: float) -> float:
        return value

    def clip_grad_norm(self, params: list[torch.nn.Parameter], max_norm: float) -> float:
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        if hasattr(norm, "full_tensor"):  # FSDP2: a DTensor reduced over the shards
            norm = norm.full_tensor()
        return float(norm)

    # -- checkpoints (checkpoint.py has the formats) and the finished weights -------------------------------

    def latest_checkpoint(self, folder: Path) -> Path | None:
        return ckpt.latest_valid(folder)

    def load_checkpoint(self, found: Path, params: dict[str, Any], optimizer: Any) -> dict[str, Any]:
        """What ``checkpoint.load_checkpoint`` returns; a sharded checkpoint is loaded in place, so its
        "weights" and "optimizer" are None."""
        if ckpt.is_sharded(found):
            return ckpt.load_sharded(found, self.model, params, optimizer)
        return ckpt.load_checkpoint(found)

    def save_checkpoint(self, folder: Path, step: int, **kwargs: Any) -> None:
        if self.sharded_checkpoints:
            ckpt.save_sharded(folder, step, model=self.model, **kwargs)
        else:
            ckpt.save_checkpoint(folder, step, **kwargs)

    def save_pretrained(self, out: Path) -> None:
        """The finished weights as a plain HF folder."""
        self.model.save_pretrained(out, safe_serialization=True)
