"""A job's metrics.jsonl as the jobs API shows it: OpenAI-named metrics per step (the metrics events and
the checkpoints' metrics), the estimated finish, and the results CSV of a job that succeeded.

The CSV has the columns of OpenAI's results file, in its order: OpenAI's fine-tuning guide ("Analyzing
your fine-tuned model": "Each results CSV file has the following columns: step, train_loss,
train_accuracy, valid_loss, and valid_mean_token_accuracy"), with an empty cell where a step has no
value (validation runs only every few steps), as in the guide's example ``1,1.52347,0.0,,``. OpenAI's
numbers have five decimals; so do these. ``train_accuracy`` is the step's mean token accuracy (SFT), or
its preference accuracy (DPO, which predicts no tokens); ``valid_mean_token_accuracy`` likewise.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

RESULTS_COLUMNS = ("step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy")
RESULTS_FILENAME = "step_metrics.csv"
RESULTS_PURPOSE = "fine-tune-results"

# metrics.jsonl key -> OpenAI's name in a metrics event's data
_NAMES = {
    "loss": "train_loss",
    "val_loss": "valid_loss",
    "token_accuracy": "train_mean_token_accuracy",
    "val_token_accuracy": "valid_mean_token_accuracy",
    "total_steps": "total_steps",
    # reinforcement fine-tuning: the step's rewards and the held-out mean grade
    "reward_mean": "train_reward_mean",
    "reward_std": "train_reward_std",
    "zero_variance_groups": "train_zero_variance_groups",
    "kl": "train_kl",
    "completion_len": "train_completion_length",
    "grader_errors": "train_grader_errors",
    "sample_s": "sample_seconds",
    "grade_s": "grade_seconds",
    "train_s": "train_seconds",
    "val_grade": "valid_reward_mean",
}
# ... and for DPO, whose accuracy is over pairs: shown in the accuracy columns when there is no token one
_DPO_NAMES = {
    "preference_accuracy": "train_mean_token_accuracy",
    "val_preference_accuracy": "valid_mean_token_accuracy",
}


def read_lines(metrics_file: Path) -> list[dict[str, Any]]:
    """The parsed lines of metrics.jsonl, skipping a line being written right now; [] if it is not there."""
    try:
        text = metrics_file.read_text(encoding="utf-8")
    except OSError:
        return []
    out = []
    for ln in text.splitlines():
        try:
            rec = json.loads(ln)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int):
            out.append(rec)
    return out


def metric_points(lines: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """metrics.jsonl lines (one per step, plus validation lines) -> OpenAI-named metrics per step."""
    points: dict[int, dict[str, Any]] = {}
    for rec in lines:
        if rec["step"] < 1:  # the start's validation (RFT's bar): OpenAI's metrics are per training step, from 1
            continue
        point = points.setdefault(rec["step"], {"step": rec["step"]})
        for ours, theirs in _NAMES.items():
            if ours in rec:
                point[theirs] = rec[ours]
        for ours, theirs in _DPO_NAMES.items():
            if ours in rec and theirs not in point:
                point[theirs] = rec[ours]
    return points


def read_metrics(metrics_file: Path) -> dict[int, dict[str, Any]]:
    return metric_points(read_lines(metrics_file))


def estimate_finish(lines: list[dict[str, Any]], now: float) -> int | None:
    """When the job should finish, as a unix time: the steps left at the pace of the steps done so far
    (training time per step, which a resumed run carries on from its checkpoint). None before the first
    step, or when the line does not say how many steps there are."""
    last = next((r for r in reversed(lines) if "elapsed_s" in r), None)
    if last is None or not last.get("total_steps") or last["step"] < 1:
        return None
    per_step = last["elapsed_s"] / last["step"]
    return math.ceil(now + max(0, last["total_steps"] - last["step"]) * per_step)


def _cell(value: Any) -> str:
    return "" if value is None else str(round(float(value), 5))


def results_csv(points: dict[int, dict[str, Any]]) -> str:
    """The results file: one row per step, in OpenAI's columns."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(RESULTS_COLUMNS)
    for step in sorted(points):
        p = points[step]
        writer.writerow(
            [
                step,
                _cell(p.get("train_loss")),
                _cell(p.get("train_mean_token_accuracy")),
                _cell(p.get("valid_loss")),
                _cell(p.get("valid_mean_token_accuracy")),
            ]
        )
    return out.getvalue()
