"""Break-even arithmetic and the ranking that names a bakeoff's winner: pure functions, every edge case."""

import pytest

from tunesmith.decide import economics as econ
from tunesmith.decide.rank import rank_methods


def test_break_even_is_training_cost_over_the_saving_per_request() -> None:
    # 575 tokens saved at 0.0005 per 1k = 0.0002875 per request; 0.10 of training pays back after ~348 requests.
    assert econ.break_even_requests(0.10, 575, 0.0005) == pytest.approx(0.10 / 0.0002875)
    assert econ.break_even_requests(1.0, 1000, 0.001) == pytest.approx(1000.0)
    assert econ.break_even_months(1000.0, 250) == pytest.approx(4.0)


def test_no_saving_never_breaks_even() -> None:
    assert econ.break_even_requests(1.0, 0, 0.0005) is None
    assert econ.break_even_requests(1.0, -40, 0.0005) is None, "a longer prompt than the baseline never pays back"
    assert econ.break_even_requests(1.0, 500, 0.0) is None, "free input tokens: nothing to save"
    assert econ.break_even_requests(0.0, 0, 0.0005) is None, "free training still saves nothing per request"


def test_zero_training_cost_breaks_even_at_once() -> None:
    assert econ.break_even_requests(0.0, 500, 0.0005) == 0.0


def test_months_need_traffic_and_costs_cannot_be_negative() -> None:
    assert econ.break_even_months(None, 1000) is None
    assert econ.break_even_months(500.0, None) is None
    assert econ.break_even_months(500.0, 0) is None
    assert econ.training_cost(None, 2.0) is None
    assert econ.training_cost(1800, 2.0) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        econ.break_even_requests(-1.0, 100, 0.001)
    with pytest.raises(ValueError):
        econ.training_cost(-5, 1.0)
    assert econ.total_cost(1.0, 1000, 2000, 0.001) == pytest.approx(3.0)
    assert econ.total_cost(None, 1000, 2000, 0.001) == pytest.approx(2.0)


def item(name: str, quality: float | None, tokens: float, cost: float | None = None) -> dict:
    return {"name": name, "quality": quality, "prompt_tokens_per_request": tokens, "training_cost": cost}


def test_ranking_breaks_quality_ties_on_prompt_tokens() -> None:
    items = [item("fewshot", 0.90, 700), item("lora", 0.89, 130, 0.08), item("prompt", 0.40, 330)]
    r = rank_methods(items, tolerance=0.02)
    assert r["winner"] == "lora" and r["contenders"] == ["lora", "fewshot"]
    assert r["order"] == ["lora", "fewshot", "prompt"]
    assert "89.0%" in r["reason"] and "90.0%" in r["reason"] and "fewest prompt tokens" in r["reason"]
    # Outside the tolerance, quality wins whatever the tokens.
    assert rank_methods(items, tolerance=0.001)["winner"] == "fewshot"


def test_ranking_with_traffic_weighs_training_cost() -> None:
    items = [item("fewshot", 0.90, 700), item("lora", 0.90, 130, 50.0)]
    # 1,000 requests a month for 12 months save 570 x 12k tokens = 3.42 at 0.0005/1k: not worth 50 of training.
    low = rank_methods(items, requests_per_month=1000, price_per_1k_input_tokens=0.0005)
    assert low["winner"] == "fewshot" and low["costs_over_horizon"]["lora"] == pytest.approx(50 + 130 * 12 * 0.0005)
    high = rank_methods(items, requests_per_month=1_000_000, price_per_1k_input_tokens=0.0005)
    assert high["winner"] == "lora" and "12 months" in high["reason"]


def test_ranking_without_scores() -> None:
    r = rank_methods([item("prompt", None, 100)])
    assert r["winner"] is None and r["order"] == ["prompt"]
    chrf = rank_methods([item("prompt", 40.0, 100), item("rag", 41.5, 400)], quality_scale=100.0)
    assert chrf["winner"] == "prompt", "chrF is on a 0-100 scale: 1.5 points is within 2"
