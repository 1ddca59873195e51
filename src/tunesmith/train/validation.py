"""Validation for the training loop (loop.py): the loss over the validation set, the forgetting probe, which
evaluation is the best so far (with early stopping), and the best weights kept in memory.

    Validator(model, engine, val_data, ...)(state, progress, total_steps) -> True when the best so far
    validate(model, data, micro, pad_id, bf16, engine)                    the loss and the objective's metrics
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from tunesmith.errors import UserError
from tunesmith.train.engine import Engine
from tunesmith.train.general import General
from tunesmith.train.objectives.base import add_sums
from tunesmith.train.precision import autocast
from tunesmith.train.progress import Progress

if TYPE_CHECKING:
    from tunesmith.train.loop_state import LoopState


@dataclass
class Validator:
    """One validation of the loop: the validation loss (or the objective's own evaluation), the probe, their
    metrics line and console line; returns True when it is the best so far (the caller snapshots the weights)."""

    model: Any
    engine: Engine
    data: list[Any]
    micro: int
    pad_id: int
    bf16: bool
    patience: int | None
    general: General

    def __call__(self, state: LoopState, progress: Progress, total_steps: int) -> bool:
        model, engine = self.model, self.engine
        own = getattr(engine.objective, "evaluate", None)  # RFT: the mean grade, not a loss
        val = own(model, self.data) if own else validate(model, self.data, self.micro, self.pad_id, self.bf16, engine)
        rows = val.pop("rows", None)  # RFT: each prompt's loss, for the paired comparison
        probe = measure_probe(self.general, model, state, last=state.step == total_steps)
        progress.log({"step": state.step, **{f"val_{k}": round(v, 6) for k, v in val.items()}, **probe})
        best = note_validation(state, val["loss"], self.patience, self.general, rows, probed=bool(probe))
        shown = f"grade {val['grade']:.4f}" if "grade" in val else f"{state.last_val:.4f}"
        if probe:
            shown += f"  general ppl {probe['probe_perplexity']:.2f} ({probe['probe_change']:+.0%})"
        loss = "the start" if state.last_loss is None else f"loss {state.last_loss:.4f}"
        progress.say(f"step {state.step}/{total_steps}  {loss}  val {shown}")
        return best


@torch.no_grad()
def validate(
    model: Any, data: list[Any], micro: int, pad_id: int, bf16: bool, engine: Engine | None = None
) -> dict[str, float]:
    """{"loss": mean loss per unit of weight, and the objective's metrics} over a whole dataset, micro-batched
    and sorted by length. With several processes each evaluates its share of the micro-batches and the sums
    are added up."""
    engine = engine or Engine(model)
    objective = engine.objective
    was_training = model.training
    model.eval()
    order = sorted(range(len(data)), key=lambda i: objective.length(data[i]))
    starts = list(range(0, len(order), micro))
    mine, rounds = engine.eval_shard(len(starts))
    total, weight, sums = 0.0, 0, {}
    for k in range(rounds):
        # A rank with one micro-batch fewer repeats the first one and ignores it (FSDP2 needs every rank
        # to take part in every forward).
        start = starts[mine[k]] if k < len(mine) else starts[0]
        examples = [data[i] for i in order[start : start + micro]]
        with autocast(bf16):
            loss, mb_sums = engine.forward(objective.collate([[e] for e in examples], pad_id))
        if k < len(mine):
            total += float(loss)
            weight += objective.weight(examples)
            sums = add_sums(sums, mb_sums)
    names = sorted(sums)
    total, weight, *summed = engine.all_sum(total, weight, *(sums[k] for k in names))
    model.train(was_training)
    return {"loss": total / max(1, weight), **objective.metrics(dict(zip(names, summed, strict=True)), weight)}


def evaluate(model: Any, data: list[Any], micro: int, pad_id: int, bf16: bool) -> float:
    """Mean loss per trained token over a whole dataset (micro-batched, length-sorted)."""
    return validate(model, data, micro, pad_id, bf16)["loss"]


def measure_probe(general: General, model: Any, state: LoopState, last: bool = True) -> dict[str, float]:
    """The forgetting probe at a validation, as metrics.jsonl fields (none when the run has no probe, or when
    it reads at the ``last`` validation only and this is an earlier one)."""
    if general.probe is None or state.probe_base is None or (general.probe.last_only and not last):
        return {}
    if state.step > 0:  # (at step 0 the start's reading is the base one, just taken)
        state.last_probe = general.probe.measure(model)
    return {
        "probe_perplexity": round(state.last_probe, 4),
        "probe_change": round(state.last_probe / state.probe_base - 1.0, 6),
    }


def note_validation(
    state: LoopState,
    val_loss: float,
    patience: int | None,
    general: General | None = None,
    rows: list[float] | None = None,
    probed: bool = True,
) -> bool:
    """Record a validation loss (and the probe's perplexity, where measured); True when its weights are the
    ones to keep so far (the caller snapshots them).

    Without ``rows`` the kept weights are those with the lowest loss. With ``rows`` (each held-out row's
    loss, in the same order at every validation: RFT's per-prompt grades, whose mean over a few dozen
    prompts moves in coarse, noisy steps) they are the latest whose rows are not clearly worse than those of
    the lowest mean so far (``clearly_worse``): a tie or a drop within noise keeps the more-trained weights.

    With a forgetting budget, an evaluation whose probe rose by more than the budget is never preferred to
    one within it: the best is the lowest validation loss among those within, and only while none is within,
    the lowest overall. An evaluation that is not kept counts toward early stopping, so a run that has
    left the budget stops after ``patience`` evaluations. ``probed``: the probe read at this evaluation (one
    that reads at the last only skips the others, whose points then have no perplexity)."""
    state.last_val = val_loss
    point = {"step": state.step, "val_loss": val_loss}
    probe = general.probe if general is not None else None
    within = True
    if probed and probe is not None and state.probe_base is not None and state.last_probe is not None:
        point["probe_perplexity"] = state.last_probe
        if probe.budget is not None:
            within = state.last_probe / state.probe_base - 1.0 <= probe.budget
    state.history.append(point)
    if rows is None:
        keep = _preferred(val_loss, within, state.best_val, state.best_within)
    else:
        top = sum(state.top_rows) / len(state.top_rows) if state.top_rows else None
        if _preferred(val_loss, within, top, state.top_within):  # (the first validation always is)
            state.top_rows, state.top_within = list(rows), within
        keep = (within or not state.best_within) and not clearly_worse(rows, state.top_rows)
    if keep:
        state.best_val, state.best_step, state.bad_evals, state.best_within = val_loss, state.step, 0, within
        return True
    state.bad_evals += 1
    if patience is not None and state.bad_evals >= patience:
        state.stopped_early = True
    return False


def _preferred(loss: float, within: bool, best: float | None, best_within: bool) -> bool:
    """Whether an evaluation with ``loss`` (``within`` the forgetting budget) beats the one so far."""
    lower = best is None or loss < best
    return (within and (lower or not best_within)) or (not within and not best_within and lower)


NOISE_Z = 2.0  # "clearly worse": a mean paired difference beyond two of its standard errors


def clearly_worse(rows: list[float], than: list[float], z: float = NOISE_Z) -> bool:
    """Whether per-row losses ``rows`` are worse than ``than`` (the same rows, in order) beyond noise: their
    mean paired difference is positive and more than ``z`` standard errors of it. Rows that did not change
    add no noise, so a drop spread over many rows counts and one row that flipped does not."""
    diffs = [a - b for a, b in zip(rows, than, strict=True)]
    n = len(diffs)
    mean = sum(diffs) / max(1, n)
    if mean <= 0:
        return False
    var = sum((d - mean) ** 2 for d in diffs) / (n - 1) if n > 1 else 0.0
    return mean > z * math.sqrt(var / n)


def probe_kept_weights(general: General, model: Any, state: LoopState) -> None:
    """A probe that reads at the last validation only, measured once more on the weights the run keeps when
    it did not read them (earlier best weights, or a run stopped early), so run.json's figure is theirs."""
    probe = general.probe
    if probe is None or not probe.last_only or state.probe_base is None:
        return
    point = next((h for h in state.history if h["step"] == state.best_step), None)
    if point is not None and "probe_perplexity" not in point:
        state.last_probe = point["probe_perplexity"] = probe.measure(model)


# ---- the best weights, kept in memory -------------------------------------------------------------------


def snapshot(params: dict[str, torch.nn.Parameter]) -> dict[str, torch.Tensor]:
    return {n: p.detach().to("cpu", copy=True) for n, p in params.items()}


def restore(params: dict[str, torch.nn.Parameter], weights: dict[str, torch.Tensor]) -> None:
    missing = set(params) - set(weights)
    if missing:
        raise UserError(f"the checkpoint does not match this model ({len(missing)} tensors missing)")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(weights[name])
