"""The bakeoff's result: measured methods -> quality, costs, break-even and the ranking, as one plain dict
(what ``bakeoff.json`` holds; ``decide/report.py`` renders it). Apart from ``decide/bakeoff.py`` so that the
arithmetic and the report can be tested on hand-made numbers."""

from __future__ import annotations

import time
from typing import Any

from tunesmith.data.context import last_user
from tunesmith.decide import economics as econ
from tunesmith.decide.options import TUNED, BakeoffOptions
from tunesmith.decide.rank import rank_methods
from tunesmith.eval import scoring
from tunesmith.eval.rows import EvalRow


def assemble(*, options: BakeoffOptions, rows: list[EvalRow], results: dict[str, dict[str, Any]], **kw: Any) -> dict:
    """Measured methods -> the result dict with quality, costs and break-even. Apart from ``run_bakeoff``
    so that the arithmetic and the report can be tested on hand-made numbers."""
    price, hourly = options.price_per_1k_input_tokens, options.price_per_hour
    # The first measure of eval's order that every method reported (the same data: the same measures).
    common = [k for k in scoring.QUALITY_ORDER if results and all(k in r["metrics"] for r in results.values())]
    quality = common[0] if common else None
    for r in results.values():
        r["quality"] = r["metrics"].get(quality) if quality else None
        r["cost_per_request"] = econ.cost_per_request(r["prompt_tokens_per_request"], price)
        seconds = (r["training"] or {}).get("seconds")
        r["training_cost"] = econ.training_cost(seconds, hourly) if seconds is not None else None
    baselines = [r for n, r in results.items() if n not in TUNED]
    for name in TUNED:
        if name in results:
            results[name]["break_even"] = _break_even(results[name], baselines, price, options.requests_per_month)
    ranking = rank_methods(
        [
            {
                "name": n,
                "quality": r["quality"],
                "prompt_tokens_per_request": r["prompt_tokens_per_request"],
                "training_cost": r["training_cost"],
            }
            for n, r in results.items()
        ],
        quality_scale=100.0 if quality == "chrf" else 1.0,
        tolerance=options.quality_tolerance,
        price_per_1k_input_tokens=price,
        requests_per_month=options.requests_per_month,
        metric=scoring.metric_name(quality),
    )
    if quality == "fact_accuracy" and results and all("chrf" in r["metrics"] for r in results.values()):
        beside = ", ".join(f"{n} {r['metrics']['chrf']:.1f}" for n, r in results.items())
        ranking["reason"] += f" (chrF, not used to rank: {beside})"
    detail = []
    for i, row in enumerate(rows):
        entry: dict[str, Any] = {"source": row.source, "input": last_user(row.prompt), "reference": row.reference}
        if row.fields:
            entry["fields"] = row.fields
        for name, r in results.items():
            entry[name] = r["rows"][i]
            if "retrieved" in r:
                entry[name] = {**entry[name], "retrieved": r["retrieved"][i]}
        detail.append(entry)
    public = {n: {k: v for k, v in r.items() if k not in ("rows", "retrieved")} for n, r in results.items()}
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "train": str(options.train),
        "test": str(options.test),
        "instructions": str(options.instructions) if options.instructions else None,
        "instructions_chars": kw["instructions_chars"],
        "base_model": kw["model_name"],
        "task": kw["task"],
        "schema": kw["schema"],
        "rows": len(rows),
        "rows_with_reference": sum(r.reference is not None for r in rows),
        "k": options.k,
        "methods_requested": list(options.methods),
        "decoding": {"temperature": 0.0, "max_new_tokens": kw["max_new"], "batch_size": options.batch_size},
        "latency": {"samples": options.latency_samples, "how": "median seconds of single requests (batch of 1)"},
        "prices": {
            "price_per_1k_input_tokens": price,
            "price_per_hour": hourly,
            "requests_per_month": options.requests_per_month,
        },
        "quality_metric": quality,
        "quality_label": scoring.BY_KEY[quality].label if quality else None,
        "methods": public,
        "skipped": kw["skipped"],
        "ranking": ranking,
        "winner": ranking["winner"],
        "docs": kw["docs"],
        "rag": kw["rag"],
        "notes": kw["notes"],
        "wall_time_s": kw["wall_s"],
        "rows_detail": detail,
    }


def _break_even(
    tuned: dict[str, Any], baselines: list[dict[str, Any]], price: float, requests_per_month: float | None
) -> dict[str, Any]:
    """Break-even of a tuned method against each prompting method that ran."""
    cost = tuned["training_cost"] or 0.0
    out = {}
    for b in baselines:
        saved = b["prompt_tokens_per_request"] - tuned["prompt_tokens_per_request"]
        requests = econ.break_even_requests(cost, saved, price)
        out[b["name"]] = {
            "tokens_saved_per_request": saved,
            "saved_per_request": saved / 1000.0 * price,
            "requests": requests,
            "months": econ.break_even_months(requests, requests_per_month),
        }
    return out
