"""Scores for generated replies against references. One module for every metric we report.

Corpus-level scores take parallel lists of predictions and references; ``row_*`` helpers score one
reply, for the side-by-side table. Reference-free measures (JSON validity, schema adherence, stop rate,
style markers) take predictions only, so rows without a reference can still be scored. Tool calls are read
by data/tools.py's parser, the one serve uses, and compared as parsed JSON. Heavy packages
(sacrebleu, rouge-score, jsonschema) are imported inside the functions that use them.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
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


def row_field_accuracy(prediction: str, reference: str) -> float | None:
    """Share of the reference's fields that one reply gets right; None when the reference is not JSON."""
    ref_obj = parse_json_object(reference)
    if not ref_obj:
        return None
    return sum(field_accuracy([prediction], [reference]).values()) / len(ref_obj)


def mean_or_none(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


# ---- JSON Schema: given by the user, or inferred from the training replies ---------------------------
_JSON_TYPES = ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"), (list, "array"))
ENUM_MAX_VALUES = 20  # a string field with more distinct values than this is free text, not a category


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    for py, name in _JSON_TYPES:  # bool before int: True is an int in Python, not in JSON
        if isinstance(value, py):
            return name
    return "object"


def infer_schema(replies: Sequence[str]) -> dict[str, Any] | None:
    """A JSON Schema from example replies: field names, types, required fields and enum values.

    None unless most replies are JSON objects. A field present in every reply is required; a string
    field becomes an enum when it takes few distinct values and each recurs (a category, not prose)."""
    objects = [o for o in (parse_json_object(r) for r in replies) if o is not None]
    if not objects or len(objects) < 0.5 * len(replies):
        return None
    keys: dict[str, None] = {}  # insertion-ordered set: keep the replies' field order
    for obj in objects:
        keys.update(dict.fromkeys(obj))
    properties: dict[str, Any] = {}
    for key in keys:
        values = [o[key] for o in objects if key in o]
        types = sorted({_json_type(v) for v in values})
        if types == ["integer", "number"]:
            types = ["number"]
        prop: dict[str, Any] = {"type": types[0] if len(types) == 1 else types}
        if types == ["string"]:
            distinct = sorted(set(values))
            if len(distinct) <= ENUM_MAX_VALUES and len(values) >= 2 * len(distinct):
                prop["enum"] = distinct
        properties[key] = prop
    required = [k for k in keys if all(k in o for o in objects)]
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def schema_checks(predictions: Sequence[str], schema: dict[str, Any]) -> list[bool]:
    """Per reply: does it parse as JSON and validate against the schema?"""
    import jsonschema

    validator_cls = jsonschema.validators.validator_for(schema)
    validator = validator_cls(schema)
    out = []
    for pred in predictions:
        try:
            value = json.loads(pred.strip())
        except (json.JSONDecodeError, ValueError):
            out.append(False)
            continue
        out.append(validator.is_valid(value))
    return out


def schema_adherence(predictions: Sequence[str], schema: dict[str, Any]) -> float:
    """Share of replies that are valid JSON and satisfy the schema."""
    checks = schema_checks(predictions, schema)
    return sum(checks) / len(checks) if checks else 0.0


# ---- free text: chrF (sacrebleu), ROUGE-L (rouge-score), length ------------------------------------
def chrf(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus chrF (0-100) from sacrebleu: character n-gram F-score, robust to wording and morphology."""
    from sacrebleu.metrics import CHRF

    if not predictions:
        return 0.0
    return float(CHRF().corpus_score(list(predictions), [list(references)]).score)


def row_chrf(prediction: str, reference: str) -> float:
    from sacrebleu.metrics import CHRF

    return float(CHRF().sentence_score(prediction, [reference]).score)


class _WordTokenizer:
    """rouge-score's default tokenizer keeps only [a-z0-9], which scores any non-Latin text as empty;
    Unicode word characters keep ROUGE-L meaningful for every language."""

    def tokenize(self, text: str) -> list[str]:
        return re.findall(r"\w+", text.lower())


def rouge_l_rows(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_WordTokenizer())
    return [scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references, strict=True)]


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F-measure (0-1): longest common subsequence of words."""
    rows = rouge_l_rows(predictions, references)
    return sum(rows) / len(rows) if rows else 0.0


def length_ratio(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Total reply length over total reference length, in characters: 1.0 is right, >1 rambles."""
    ref_chars = sum(len(r.strip()) for r in references)
    return sum(len(p.strip()) for p in predictions) / ref_chars if ref_chars else 0.0


# ---- style markers: openings and closings that recur in the training replies ---------------------------
@dataclass
class StyleMarkers:
    openings: list[str] = field(default_factory=list)
    closings: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.openings or self.closings)

    def as_dict(self) -> dict[str, list[str]]:
        return {"openings": self.openings, "closings": self.closings}


def _words(text: str) -> list[str]:
    return text.lower().split()


def _recurring(sequences: list[list[str]], min_share: float, max_words: int) -> list[str]:
    """Word sequences (up to max_words long) that start at least min_share of the given sequences;
    the longest such sequence wins over its own prefixes, so "thanks for reaching out," beats "thanks"."""
    chosen: list[list[str]] = []
    need = max(2, min_share * len(sequences))
    for n in range(max_words, 0, -1):
        counts = Counter(tuple(s[:n]) for s in sequences if len(s) >= n)
        for seq, count in counts.most_common():
            if count < need:
                break
            if not any(list(seq) == c[:n] for c in chosen):
                chosen.append(list(seq))
    return [" ".join(c) for c in chosen]


def find_style_markers(replies: Sequence[str], *, min_share: float = 0.3, max_words: int = 4) -> StyleMarkers:
    """Openings and closings that at least ``min_share`` of the replies use (case-insensitive words)."""
    words = [_words(r) for r in replies if r.strip()]
    openings = _recurring(words, min_share, max_words)
    closings = [" ".join(reversed(c.split())) for c in _recurring([w[::-1] for w in words], min_share, max_words)]
    return StyleMarkers(openings, closings)


def uses_style(reply: str, markers: StyleMarkers) -> bool:
    """A reply follows the style when it opens with one of the openings and closes with one of the
    closings (each required only where the training replies have one)."""
    words = _words(reply)
    # Whole words, so that the opening "thanks" does not match "thanksgiving".
    opens = not markers.openings or any(words[: len(m.split())] == m.split() for m in markers.openings)
    closes = not markers.closings or any(words[-len(m.split()) :] == m.split() for m in markers.closings)
    return opens and closes


def style_adherence(predictions: Sequence[str], markers: StyleMarkers) -> float:
    if not predictions:
        return 0.0
    return sum(uses_style(p, markers) for p in predictions) / len(predictions)


_MISSING = object()


# ---- tool calls: the reply parsed by data/tools.py (the parser serve uses) against the reference calls --------
@dataclass
class CallScore:
    """One reply against the reference call(s) of its row."""

    parsed: bool  # at least one call that parses: a function name and arguments that are a JSON object
    name: bool  # the same function(s) as the reference, as a multiset
    exact: bool  # the same calls: functions and arguments equal as parsed JSON (order of calls aside)
    args: dict[str, bool]  # "function.argument" -> equal to the reference's value


def _canonical(name: str, args: dict[str, Any]) -> str:
    return name + json.dumps(args, sort_keys=True, ensure_ascii=False)


def same_calls(got: Sequence[tuple[str, Any]], reference: Sequence[dict[str, Any]]) -> bool:
    """The exact-call rule: ``got`` ((name, parsed arguments) pairs) are the reference's calls, functions and
    arguments equal as parsed JSON, in any order. eval scores by it, and so does benchmarks/tool_loop.py."""
    want = Counter(_canonical(r["name"], r["arguments"]) for r in reference)
    return Counter(_canonical(name, args) for name, args in got) == want


def score_call(prediction: str, reference: Sequence[dict[str, Any]]) -> CallScore:
    """``reference``: [{"name": ..., "arguments": {...}}]. Arguments are matched per function, in order;
    a missing argument, or one with another value or type, is wrong."""
    from tunesmith.data.tools import parse_tool_calls

    calls = parse_tool_calls(prediction).calls
    unused = list(calls)
    args: dict[str, bool] = {}
    for ref in reference:
        match = next((c for c in unused if c.name == ref["name"]), None)
        if match is not None:
            unused.remove(match)
        have = match.arguments if match is not None else {}
        for key, value in ref["arguments"].items():
            value_got = have.get(key, _MISSING)
            args[f"{ref['name']}.{key}"] = type(value_got) is type(value) and value_got == value
    names = Counter(c.name for c in calls) == Counter(r["name"] for r in reference)
    exact = same_calls([(c.name, c.arguments) for c in calls], reference)
    return CallScore(bool(calls), names, exact, args)


def called_a_tool(prediction: str) -> bool:
    from tunesmith.data.tools import parse_tool_calls

    return bool(parse_tool_calls(prediction).calls)


def tool_call_metrics(scores: Sequence[CallScore]) -> dict[str, Any]:
    """Corpus-level tool-call measures over the rows whose reference is a call."""
    n = len(scores)
    hits: dict[str, list[bool]] = {}
    for s in scores:
        for key, ok in s.args.items():
            hits.setdefault(key, []).append(ok)
    flat = [ok for oks in hits.values() for ok in oks]
    return {
        "tool_call_rows": n,
        "tool_call_exact": sum(s.exact for s in scores) / n,
        "tool_name_accuracy": sum(s.name for s in scores) / n,
        "tool_args_valid": sum(s.parsed for s in scores) / n,
        "tool_arg_accuracy": sum(flat) / len(flat) if flat else sum(s.name for s in scores) / n,
        "tool_arguments": {k: sum(v) / len(v) for k, v in hits.items()},
    }
