"""What the training loop knows about its run so far: steps, tokens, the best validation and the forgetting probe.
Its own module so that the loop (loop.py) and validation (validation.py) both read it without importing each
other."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LoopState:
    step: int = 0
    best_val: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    bad_steps_in_row: int = 0
    skipped_steps: int = 0
    elapsed_s: float = 0.0
    tokens: int = 0
    trained_tokens: int = 0
    stopped_early: bool = False
    last_val: float | None = None
    last_loss: float | None = None
    history: list[dict[str, float]] = field(default_factory=list)  # validation points
    probe_base: float | None = None  # the forgetting probe's perplexity before the first step
    last_probe: float | None = None
    best_within: bool = False  # the best weights so far are within the forgetting budget
    # With per-row validation (RFT's grades): the rows of the lowest mean loss so far, which later
    # validations are compared with (validation.py, note_validation); best_* are then the weights kept.
    top_rows: list[float] | None = None
    top_within: bool = False
