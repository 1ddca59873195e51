"""Token economics: what a method costs once (training) and per request (prompt tokens), and when a
fine-tuned model's shorter prompts have paid back its training. Pure arithmetic, no I/O, so every edge
case is a unit test.

    training cost      = training seconds / 3600 x price per hour
    saving per request = (prompt tokens of the baseline - prompt tokens of the tuned model) / 1000
                         x price per 1k input tokens
    break-even         = training cost / saving per request          (requests; None = never)
"""

from __future__ import annotations

import math

# Illustrative defaults, printed with every result so nobody mistakes them for measurements: a cloud
# machine of the size the run used, and the input price of a small hosted model. Set your own.
DEFAULT_PRICE_PER_HOUR = 1.0
DEFAULT_PRICE_PER_1K_INPUT_TOKENS = 0.0005


def training_cost(seconds: float | None, price_per_hour: float) -> float | None:
    """Money for ``seconds`` of training at ``price_per_hour``; None when there was no training time."""
    if seconds is None:
        return None
    if seconds < 0 or price_per_hour < 0:
        raise ValueError("training seconds and price per hour cannot be negative")
    return seconds / 3600.0 * price_per_hour


def cost_per_request(prompt_tokens: float, price_per_1k_input_tokens: float) -> float:
    return prompt_tokens / 1000.0 * price_per_1k_input_tokens


def break_even_requests(
    training_cost: float, tokens_saved_per_request: float, price_per_1k_input_tokens: float
) -> float | None:
    """Requests after which the saved prompt tokens have paid for the training.

    None means never: the tuned model saves nothing per request (or costs more), or input tokens are free.
    0 means at once: the training cost nothing (a run that already exists, or a free machine)."""
    if training_cost < 0 or price_per_1k_input_tokens < 0:
        raise ValueError("costs and prices cannot be negative")
    saving = tokens_saved_per_request / 1000.0 * price_per_1k_input_tokens
    if saving <= 0 or not math.isfinite(saving):
        return None
    return training_cost / saving


def break_even_months(requests: float | None, requests_per_month: float | None) -> float | None:
    """Months of traffic to reach ``requests``; None when either is unknown or there is no traffic."""
    if requests is None or not requests_per_month or requests_per_month <= 0:
        return None
    return requests / requests_per_month


def total_cost(
    training_cost: float | None,
    prompt_tokens: float,
    requests: float,
    price_per_1k_input_tokens: float,
) -> float:
    """One-off training plus the prompt tokens of ``requests`` requests."""
    return (training_cost or 0.0) + requests * cost_per_request(prompt_tokens, price_per_1k_input_tokens)
