"""Training objectives, by name. Adding one: a module with a class that follows ``base.Objective``, and a
line here."""

from __future__ import annotations

from collections.abc import Callable

from tunesmith.errors import UserError
from tunesmith.train.objectives.base import Objective, Sums
from tunesmith.train.objectives.sft import SFT

OBJECTIVES: dict[str, Callable[[], Objective]] = {
    "sft": SFT,
}


def get_objective(name: str) -> Objective:
    if name not in OBJECTIVES:
        raise UserError(f"unknown objective {name!r}: use one of {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]()


__all__ = ["OBJECTIVES", "Objective", "Sums", "get_objective"]
