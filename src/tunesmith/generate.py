"""Batched generation with the KV cache, shared by `generate`, `chat`, the demo and evaluation.

Prompts are rendered by the same ``Renderer`` as training (so the prompt format cannot drift), sorted by
length and left-padded into batches; ``model.generate`` keeps a KV cache, so each new token costs one
position, not the whole sequence.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tunesmith.data.render import Renderer
from tunesmith.models.stops import stop_token_ids


@dataclass
class Completion:
    text: str
    finish_reason: str  # "stop": ended on its own; "length": hit max_new_tokens
    prompt_tokens: int
    completion_tokens: int


@dataclass
class GenerationStats:
    """Timing of a ``generate`` call, filled in as it runs.

    Time to first token (TTFT) is the wall time from a batch's start to its first new token, i.e. the
    prefill; decode tokens/s counts the tokens produced after that, over the time after that, across the
    batch (rows that already stopped are not counted)."""

    batches: int = 0
    ttft_s: list[float] | None = None
    decode_tokens: int = 0
    decode_s: float = 0.0

    @property
    def first_token_s(self) -> float | None:
        return self.ttft_s[0] if self.ttft_s else None

    @property
    def decode_tokens_per_s(self) -> float | None:
        return self.decode_tokens / self.decode_s if self.decode_s > 0 else None

    def summary(self) -> str:
        parts = []
        if self.ttft_s:
            parts.append(f"time to first token {1000 * sum(self.ttft_s) / len(self.ttft_s):.0f} ms")
        if (tps := self.decode_tokens_per_s) is not None:
            parts.append(f"decode {tps:.1f} tokens/s")
        return ", ".join(parts) + f" ({self.batches} batch{'es' if self.batches != 1 else ''})"


class GenerationClock:
    """A transformers streamer that only records when tokens arrive: the first ``put`` is the prompt,
    each later one a decoding step for the whole batch."""

    def __init__(self, stats: GenerationStats, stops: list[int]) -> None:
        self.stats, self.stops = stats, torch.tensor(stops, dtype=torch.long)
        self.start = time.perf_counter()
        self.first: float | None = None
        self.live: torch.Tensor | None = None  # rows still generating
        self.seen_prompt = False

    def put(self, value: torch.Tensor) -> None:
        if not self.seen_prompt:
            self.seen_prompt = True
            return
        now = time.perf_counter()
        tokens = value.reshape(-1)
        if self.first is None:
            self.first = now
            self.stats.ttft_s = [*(self.stats.ttft_s or []), now - self.start]
            self.live = ~torch.isin(tokens, self.stops)
            return
        assert self.live is not None
        self.stats.decode_tokens += int(self.live.sum())
        self.live &= ~torch.isin(tokens, self.stops)

    def end(self) -> None:
        if self.first is not None:
            self.stats.decode_s += time.perf_counter() - self.first
        self.stats.batches += 1


def generate(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[Sequence[dict[str, str]]],
    *,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
    batch_size: int = 16,
    seed: int | None = None,
    renderer: Renderer | None = None,
    stats: GenerationStats | None = None,
    tools: Sequence[list[dict[str, Any]] | None] | None = None,
) -> list[Completion]:
    """Replies for every conversation; pass ``stats`` to have it filled with TTFT and decode tokens/s.
    ``tools``: each conversation's tool definitions (OpenAI's ``tools``), rendered into its prompt."""
    stops = stop_token_ids(model, tokenizer)
    renderer = renderer or Renderer(tokenizer, stop_token_ids=stops)
    per_row = tools if tools is not None else [None] * len(conversations)
    prompts = [renderer.prompt_ids(c, t) for c, t in zip(conversations, per_row, strict=True)]
    if seed is not None:
        torch.manual_seed(seed)
    outs = generate_ids(
        model,
        prompts,
        stops=stops,
        pad=pad_id(tokenizer, stops),
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        batch_size=batch_size,
        stats=stats,
    )
    return [
        Completion(
            text=tokenizer.decode(out.tokens, skip_special_tokens=True),
            finish_reason="stop" if out.stopped else "length",
            prompt_tokens=len(prompt),
            completion_tokens=len(out.tokens) + int(out.stopped),
        )
        for prompt, out in zip(prompts, outs, strict=True)
    ]


@dataclass
class GeneratedIds:
    tokens: list[int]  # the new tokens, without the stop token
    stopped: bool  # True: ended on a stop token (``stop_id``); False: hit max_new_tokens
    stop_id: int | None = None


def pad_id(tokenizer: Any, stops: list[int]) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]


@torch.inference_mode()
def generate_ids(
    model: Any,
    prompts: Sequence[list[int]],
    *,
    stops: list[int],
    pad: int,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
    batch_size: int = 16,
    stats: GenerationStats | None = None,
) -> list[GeneratedIds]:
    """New token ids for every tokenized prompt: sorted by length, left-padded into batches of
    ``batch_size``, each batch through ``generate_batch``. Leaves ``model`` in eval mode."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: list[GeneratedIds | None] = [None] * len(prompts)
    model.eval()
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = max(len(prompts[i]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            ids[row, width - len(prompts[i]) :] = torch.tensor(prompts[i])
            mask[row, width - len(prompts[i]) :] = 1
        out = generate_batch(
            model,
            ids,
            mask,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            stops=stops,
            pad=pad,
            streamer=GenerationClock(stats, stops) if stats is not None else None,
        )
        for row, i in enumerate(idx):
            new = out[row, width:].tolist()
            cut = next((k for k, t in enumerate(new) if t in stops), None)
            results[i] = GeneratedIds(new, False) if cut is None else GeneratedIds(new[:cut], True, new[cut])
    return [r for r in results if r is not None]


def sample_groups(
    model: Any,
    prompts: Sequence[list[int]],
    k: int,
    *,
    stops: list[int],
    pad: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float = 1.0,
    batch_size: int = 16,
) -> list[list[GeneratedIds]]:
    """K sampled completions of every prompt (reinforcement fine-tuning's groups), through the same batched
    KV-cache path as ``generate``: each prompt is repeated K times, so a batch holds whole groups."""
    flat = generate_ids(
        model,
        [p for p in prompts for _ in range(k)],
        stops=stops,
        pad=pad,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        batch_size=batch_size,
    )
    return [flat[i * k : (i + 1) * k] for i in range(len(prompts))]


def generate_batch(
    model: Any,
    ids: torch.Tensor,
    mask: torch.Tensor,
    *,
    max_new_tokens: int,
    stops: list[int],
    pad: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    min_new_tokens: int = 0,
    streamer: Any = None,
) -> torch.Tensor:
    """One left-padded batch through ``model.generate``, with the KV cache that grows in place
    (``kv_cache.py``: the same greedy output as transformers' default cache, less copying per step).
    Returns prompt + new ids, as ``generate`` does."""
    from tunesmith.kv_cache import cache_argument, growing_cache  # transformers, imported only when generating

    sampling = temperature > 0
    cache = growing_cache(model, headroom=max_new_tokens)
    return model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens or None,
        do_sample=sampling,
        temperature=temperature if sampling else None,
        top_p=top_p if sampling else None,
        top_k=None,
        eos_token_id=stops,
        pad_token_id=pad,
        streamer=streamer,
        **({cache_argument(model): cache} if cache is not None else {}),
    )
