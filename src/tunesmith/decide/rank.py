"""Which measured method wins, with costs taken into account. Pure: used by the bakeoff to name its winner
and by `advise --from-bakeoff`, so both always agree.

    contenders = methods whose quality is within ``tolerance`` of the best measured quality
    winner     = the cheapest contender: lowest cost over ``horizon_months`` of ``requests_per_month``
                 (training once + prompt tokens of every request) when the traffic is known, else the
                 fewest prompt tokens per request, then the lowest training cost
"""

from __future__ import annotations

from typing import Any

from tunesmith.decide import economics as econ

DEFAULT_TOLERANCE = 0.02  # two points of a 0-1 measure (chrF: two points of 100) count as a tie
HORIZON_MONTHS = 12


def rank_methods(
    items: list[dict[str, Any]],
    *,
    quality_scale: float = 1.0,
    tolerance: float = DEFAULT_TOLERANCE,
    price_per_1k_input_tokens: float = econ.DEFAULT_PRICE_PER_1K_INPUT_TOKENS,
    requests_per_month: float | None = None,
    horizon_months: float = HORIZON_MONTHS,
    metric: str | None = None,
) -> dict[str, Any]:
    """``items``: dicts with name, quality (None: not measurable), prompt_tokens_per_request, training_cost.
    ``metric``: what quality is (e.g. "fact accuracy"), named in the reason: the measure decided."""
    measured = [i for i in items if i.get("quality") is not None]
    if not measured:
        return {"winner": None, "contenders": [], "order": [i["name"] for i in items], "reason": "no method was scored"}
    best = max(i["quality"] for i in measured)
    margin = tolerance * quality_scale
    contenders = [i for i in measured if i["quality"] >= best - margin]
    costs: dict[str, float] = {}
    if requests_per_month:
        requests = requests_per_month * horizon_months
        for i in measured:
            costs[i["name"]] = econ.total_cost(
                i.get("training_cost"), i["prompt_tokens_per_request"], requests, price_per_1k_input_tokens
            )

        def key(i: dict[str, Any]) -> tuple[float, ...]:
            return (costs[i["name"]], i["prompt_tokens_per_request"])

        criterion = (
            f"the lowest cost over {horizon_months:g} months at {requests_per_month:,.0f} requests/month "
            f"(training once + prompt tokens at {price_per_1k_input_tokens:g} per 1k)"
        )
    else:

        def key(i: dict[str, Any]) -> tuple[float, ...]:
            return (i["prompt_tokens_per_request"], i.get("training_cost") or 0.0)

        criterion = "the fewest prompt tokens per request (pass --requests-per-month to weigh training cost too)"
    contenders.sort(key=key)
    others = sorted((i for i in measured if i not in contenders), key=lambda i: -i["quality"])
    winner = contenders[0]
    tied = [i["name"] for i in contenders[1:]]
    q, within = _q(winner["quality"], quality_scale), _q(margin, quality_scale)
    if winner["quality"] >= best:
        reason = f"{winner['name']} has the best quality, {q}"
    else:
        top = max(measured, key=lambda i: i["quality"])
        reason = f"{winner['name']} scores {q}, within {within} of the best ({top['name']} {_q(best, quality_scale)})"
    if tied:
        names = ", ".join([winner["name"], *tied])
        reason += f"; of the methods within {within} of the best ({names}) it has {criterion}"
    if metric:
        reason = f"ranked by {metric}: {reason}"
    return {
        "winner": winner["name"],
        "best_quality": best,
        "tolerance": margin,
        "contenders": [i["name"] for i in contenders],
        "order": [i["name"] for i in contenders + others] + [i["name"] for i in items if i.get("quality") is None],
        "criterion": criterion,
        "costs_over_horizon": costs or None,
        "horizon_months": horizon_months if costs else None,
        "reason": reason,
        "metric": metric,
    }


def _q(value: float, scale: float) -> str:
    return f"{value:.1f}" if scale != 1.0 else f"{value * 100:.1f}%"
