"""Training objectives, by name. Adding one: a module with a class that follows ``base.Objective``, and a
line here."""

from __future__ import annotations

from collections.abc import Callable

from tunesmith.config import TrainSettings
from tunesmith.errors import UserError
from tunesmith.train.objectives.base import Objective, Sums
from tunesmith.train.objectives.dpo import DPO
from tunesmith.train.objectives.sft import SFT

# name -> how to make it from the run's (resolved) training settings
OBJECTIVES: dict[str, Callable[[TrainSettings], Objective]] = {
    "sft": lambda s: SFT(),
    "dpo": lambda s: DPO(beta=s.beta or DPO.default_beta),
}


def check_objective(name: str) -> None:
    if name not in OBJECTIVES:
        raise UserError(f"unknown objective {name!r}: use one of {', '.join(OBJECTIVES)}")


def get_objective(name: str, settings: TrainSettings | None = None) -> Objective:
    check_objective(name)
    return OBJECTIVES[name](settings or TrainSettings())


__all__ = ["OBJECTIVES", "Objective", "Sums", "check_objective", "get_objective"]
