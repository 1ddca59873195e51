"""From generated replies to the numbers in the report: which measures apply, per condition and per row.

A measure is reported only where it applies to the data: JSON measures when the replies are JSON
objects, chrF / ROUGE-L / style markers for free text, anything that compares with a reference only on
rows that have one. Rows whose reference is a tool call are scored by the tool-call measures only (the
right function, arguments that parse, arguments equal to the reference, per-argument accuracy); rows that
offer tools but need none, by whether the model answered without calling one. Every metric itself lives
in ``metrics.py``; this module only chooses and assembles.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tunesmith.eval import facts
from tunesmith.eval import metrics as m


@dataclass(frozen=True)
class Measure:
    key: str
    label: str
    better: str  # "higher" | "lower" | "one" (closest to 1.0 is best)
    fmt: str  # "pct" (a 0-1 share) | "num"


# The order of the headline table.
MEASURES = [
    Measure("fact_accuracy", "Fact accuracy (rows' fact / must_contain)", "higher", "pct"),
    Measure("fact_consistency", "Facts found in the docs", "higher", "pct"),
    Measure("tool_call_exact", "Tool call exact (function + arguments)", "higher", "pct"),
    Measure("tool_name_accuracy", "Tool call: right function", "higher", "pct"),
    Measure("tool_args_valid", "Tool call: arguments valid JSON", "higher", "pct"),
    Measure("tool_arg_accuracy", "Tool call: argument accuracy", "higher", "pct"),
    Measure("no_call_accuracy", "No call where none is needed", "higher", "pct"),
    Measure("mean_field_accuracy", "Field accuracy (mean)", "higher", "pct"),
    Measure("json_valid", "JSON valid", "higher", "pct"),
    Measure("schema_adherence", "Schema adherence", "higher", "pct"),
    Measure("exact_match", "Exact match", "higher", "pct"),
    Measure("chrf", "chrF", "higher", "num"),
    Measure("rouge_l", "ROUGE-L", "higher", "pct"),
    Measure("style_adherence", "Style markers used", "higher", "pct"),
    Measure("stop_rate", "Stopped on its own", "higher", "pct"),
    Measure("length_ratio", "Length ratio (reply / reference)", "one", "num"),
    Measure("loss", "Loss on references (nats/token)", "lower", "num"),
    Measure("perplexity", "Perplexity on references", "lower", "num"),
]
BY_KEY = {x.key: x for x in MEASURES}
# The one number that stands for "quality" in the token-savings table and the verdict, first that applies.
# Facts come first: a reply in the right voice with a stale number is wrong, and chrF barely sees it.
QUALITY_ORDER = [
    *(
        "fact_accuracy",
        "tool_call_exact",
        "mean_field_accuracy",
        "chrf",
        "schema_adherence",
        "json_valid",
        "exact_match",
        "stop_rate",
    )
]


def metric_name(key: str | None) -> str | None:
    """A measure's short name for a sentence: "fact accuracy", "chrF", "field accuracy"."""
    if key is None:
        return None
    label = BY_KEY[key].label.split(" (")[0]
    return label if label[1:2].isupper() or label[:3] == "chr" else label[0].lower() + label[1:]


def detect_task(references: Sequence[str], schema: dict[str, Any] | None) -> str:
    """'json' when a schema applies or most references are JSON objects, else 'text'."""
    if schema is not None:
        return "json"
    if references and sum(m.parse_json_object(r) is not None for r in references) >= 0.5 * len(references):
        return "json"
    return "text"


def score_condition(
    texts: Sequence[str],
    finish: Sequence[str],
    references: Sequence[str | None],
    losses: Sequence[tuple[float, int] | None],
    *,
    task: str,
    schema: dict[str, Any] | None,
    markers: m.StyleMarkers | None,
) -> dict[str, Any]:
    """Corpus-level measures for one condition (a model and a prompt recipe) over all rows."""
    pairs = [(t, r) for t, r in zip(texts, references, strict=True) if r is not None]
    preds, refs = [p for p, _ in pairs], [r for _, r in pairs]
    out: dict[str, Any] = {}
    scored = [x for x in losses if x is not None]
    if scored:
        total, count = sum(s for s, _ in scored), sum(n for _, n in scored)
        out["loss"] = total / max(1, count)
        out["perplexity"] = math.exp(min(out["loss"], 50.0))  # capped: exp of a huge loss is just noise
    if task == "json":
        out["json_valid"] = m.json_validity(texts)
        if refs:
            fields = m.field_accuracy(preds, refs)
            if fields:
                out["field_accuracy"] = fields
                out["mean_field_accuracy"] = sum(fields.values()) / len(fields)
    if schema is not None:
        out["schema_adherence"] = m.schema_adherence(texts, schema)
    if refs:
        out["exact_match"] = m.exact_match(preds, refs)
        if task == "text":
            out["chrf"] = m.chrf(preds, refs)
            out["rouge_l"] = m.rouge_l(preds, refs)
        out["length_ratio"] = m.length_ratio(preds, refs)
    out["stop_rate"] = m.stop_rate(finish)
    if markers and task == "text":
        out["style_adherence"] = m.style_adherence(texts, markers)
    return out


def score_tools(
    texts: Sequence[str], calls: Sequence[list[dict[str, Any]] | None], offers_tools: Sequence[bool]
) -> tuple[dict[str, Any], list[m.CallScore | None]]:
    """Tool-call measures for one condition: over the rows whose reference is a call (``calls``), and
    ``no_call_accuracy`` over the rows that offer tools but whose reference is an answer in text."""
    scores = [None if c is None else m.score_call(t, c) for t, c in zip(texts, calls, strict=True)]
    scored = [s for s in scores if s is not None]
    out = m.tool_call_metrics(scored) if scored else {}
    plain = [t for t, c, o in zip(texts, calls, offers_tools, strict=True) if o and c is None]
    if plain:
        out["no_call_accuracy"] = sum(not m.called_a_tool(t) for t in plain) / len(plain)
        out["no_call_rows"] = len(plain)
    return out, scores


def score_facts(
    texts: Sequence[str],
    specs: Sequence[facts.FactSpec | None],
    docs: facts.DocsFacts | None = None,
    skips: Sequence[set[str]] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any] | None]]:
    """Fact accuracy over the rows that say what a right answer must (not) contain; with the docs, the
    share of the replies' numbers, dates and names that the docs state. Per row: what it got wrong."""
    checks = [None if s is None else facts.check_facts(t, s) for t, s in zip(texts, specs, strict=True)]
    out: dict[str, Any] = {}
    accuracy = facts.fact_accuracy(checks)
    if accuracy is not None:
        out["fact_accuracy"] = accuracy
        out["fact_rows"] = sum(c is not None for c in checks)
    unsupported: list[list[str] | None] = [None] * len(texts)
    if docs is not None:
        value, found = facts.consistency(texts, docs, skips or [set()] * len(texts))
        unsupported = list(found)
        if value is not None:
            out["fact_consistency"] = value
    rows: list[dict[str, Any] | None] = []
    for c, u in zip(checks, unsupported, strict=True):
        row = ({"facts": c.as_dict()} if c else {}) | ({"not_in_docs": u} if u is not None else {})
        rows.append(row or None)
    return out, rows


def tool_row_score(call: m.CallScore) -> float:
    """A call row: 1 for the exact call; else half for the right function plus just under half times the
    share of the reference's arguments it got right (so only the exact call scores 1)."""
    if call.exact:
        return 1.0
    share = sum(call.args.values()) / len(call.args) if call.args else 0.0
    return 0.5 * call.name + 0.49 * share


def row_score(
    text: str, finish: str, reference: str | None, *, task: str, schema: dict[str, Any] | None, markers: Any
) -> float:
    """One number in [0, 1] per reply, to compare base and tuned row by row.

    With a reference: field accuracy (JSON) or chrF / 100 (text). Without: the reference-free checks
    that apply (schema, JSON validity, style, stopping), as the share that pass."""
    if reference is not None:
        if task == "json":
            acc = m.row_field_accuracy(text, reference)
            if acc is not None:
                return acc
            return float(text.strip() == reference.strip())
        return m.row_chrf(text, reference) / 100.0
    checks = [finish == "stop"]
    if schema is not None:
        checks.append(m.schema_checks([text], schema)[0])
    elif task == "json":
        checks.append(m.parse_json_object(text) is not None)
    if markers and task == "text":
        checks.append(m.uses_style(text, markers))
    return sum(checks) / len(checks)


def change(base: float, tuned: float, eps: float = 1e-9) -> str:
    if tuned > base + eps:
        return "improved"
    if tuned < base - eps:
        return "regressed"
    return "same"


def quality_key(conditions: dict[str, dict[str, Any]], reference: str = "tuned") -> str | None:
    """The first measure of QUALITY_ORDER that the ``reference`` condition reported."""
    measured = conditions[reference]["metrics"]
    return next((k for k in QUALITY_ORDER if k in measured), None)


def headline(conditions: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of the headline table: one per measure that any condition reported."""
    rows = []
    for measure in MEASURES:
        values = {name: c["metrics"].get(measure.key) for name, c in conditions.items()}
        if all(v is None for v in values.values()):
            continue
        rows.append({**measure.__dict__, **values, "verdict": verdict(measure, values.get("base"), values["tuned"])})
    return rows


def verdict(measure: Measure, base: float | None, tuned: float | None) -> str:
    """'better' | 'worse' | 'same' for tuned against base on one measure."""
    if base is None or tuned is None:
        return "same"
    if measure.better == "one":
        base, tuned = -abs(base - 1.0), -abs(tuned - 1.0)
    elif measure.better == "lower":
        base, tuned = -base, -tuned
    scale = 100.0 if measure.key == "chrf" else 1.0
    if tuned - base > 0.005 * scale:
        return "better"
    if base - tuned > 0.005 * scale:
        return "worse"
    return "same"


def savings(
    conditions: dict[str, dict[str, Any]], price_per_1k: float | None, quality: str | None
) -> dict[str, Any] | None:
    """Prompt tokens per request of 'base + instructions' against 'tuned, no instructions', and what the
    difference is worth over a million requests at the given input price."""
    if "base_prompted" not in conditions:
        return None
    prompted, tuned = conditions["base_prompted"], conditions["tuned"]
    saved = prompted["prompt_tokens_per_request"] - tuned["prompt_tokens_per_request"]
    return {
        "prompted_label": prompted["label"],
        "tuned_label": tuned["label"],
        "prompt_tokens_prompted": prompted["prompt_tokens_per_request"],
        "prompt_tokens_tuned": tuned["prompt_tokens_per_request"],
        "tokens_saved_per_request": saved,
        "tokens_saved_per_1m_requests": saved * 1_000_000,
        "price_per_1k_input_tokens": price_per_1k,
        "saved_per_1m_requests": None if price_per_1k is None else saved * 1_000 * price_per_1k,
        "quality_metric": None if quality is None else BY_KEY[quality].label,
        "quality_key": quality,
        "quality_prompted": None if quality is None else prompted["metrics"].get(quality),
        "quality_tuned": None if quality is None else tuned["metrics"].get(quality),
    }
