"""Scores for generated replies against references. One module for every metric we report."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


def parse_json_object(text: str) -> dict[str, Any] | None:
    """The reply as a JSON object, or None. Surrounding whitespace is allowed; prose is not."""
    try:
        value = json.loads(text.strip())
    except (json.JSONDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def json_validity(predictions: Sequence[str]) -> float:
    """Share of replies that are a JSON object."""
    if not predictions:
        return 0.0
    return sum(parse_json_object(p) is not None for p in predictions) / len(predictions)


def field_accuracy(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Per reference field: share of rows whose prediction has that field with an equal value.

    A reply that is not JSON, or lacks the field, or has the wrong type, counts as wrong."""
    totals: dict[str, int] = {}
    hits: dict[str, int] = {}
    for pred, ref in zip(predictions, references, strict=True):
        ref_obj = parse_json_object(ref)
        if ref_obj is None:
            continue
        pred_obj = parse_json_object(pred) or {}
        for key, value in ref_obj.items():
            totals[key] = totals.get(key, 0) + 1
            got = pred_obj.get(key, _MISSING)
            hits[key] = hits.get(key, 0) + (type(got) is type(value) and got == value)
    return {k: hits[k] / totals[k] for k in totals}


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    if not predictions:
        return 0.0
    pairs = zip(predictions, references, strict=True)
    return sum(p.strip() == r.strip() for p, r in pairs) / len(predictions)


def stop_rate(finish_reasons: Sequence[str]) -> float:
    """Share of replies that ended on their own before the token limit."""
    if not finish_reasons:
        return 0.0
    return sum(r == "stop" for r in finish_reasons) / len(finish_reasons)


_MISSING = object()
