"""Training objectives, by name. Adding one: a module with a class that follows ``base.Objective``, and a
line here."""

from __future__ import annotations

from collections.abc import Callable

from tunesmith.config import TrainSettings
from tunesmith.errors import UserError
from tunesmith.train.objectives.base import Objective, Sums
from tunesmith.train.objectives.dpo import DPO
from tunesmith.train.objectives.rft import GRPO
from tunesmith.train.objectives.sft import SFT

# name -> how to make it from the run's (resolved) training settings
OBJECTIVES: dict[str, Callable[[TrainSettings], Objective]] = {
    "sft": lambda s: SFT(),
    "dpo": lambda s: DPO(beta=s.beta or DPO.default_beta, nll=s.dpo_nll or 0.0),
    "rft": lambda s: GRPO(
        k=s.generations or 4,
        temperature=s.temperature or 1.0,
        max_new_tokens=s.max_completion_len or 128,
        beta=s.beta or 0.0,
    ),
}


def choose_objective(requested: str | None, pairs: bool, data: object) -> str:
    """The objective for a training file: the one asked for, else DPO for preference pairs and SFT for
    everything else. Pairs and DPO go together; anything else is one clear error naming the file."""
    name = requested or ("dpo" if pairs else "sft")
    if name == "rft":
        return name  # prompts, read by data/rft.py
    if name == "dpo" and not pairs:
        raise UserError(
            f"{data} holds supervised rows, and DPO trains on preference pairs (OpenAI's "
            "input/preferred_output/non_preferred_output or prompt/chosen/rejected rows)"
        )
    if name != "dpo" and pairs:
        raise UserError(
            f"{data} holds preference pairs: train them with DPO (tunesmith train --method dpo; jobs: method type dpo)"
        )
    return name


def check_objective(name: str) -> None:
    if name not in OBJECTIVES:
        raise UserError(f"unknown objective {name!r}: use one of {', '.join(OBJECTIVES)}")


def get_objective(name: str, settings: TrainSettings | None = None) -> Objective:
    check_objective(name)
    return OBJECTIVES[name](settings or TrainSettings())


__all__ = ["OBJECTIVES", "Objective", "Sums", "check_objective", "choose_objective", "get_objective"]
