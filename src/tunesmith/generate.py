"""Batched generation with the KV cache, shared by `generate`, `chat`, the demo and evaluation.

Prompts are rendered by the same ``Renderer`` as training (so the prompt format cannot drift), sorted by
length and left-padded into batches; ``model.generate`` keeps a KV cache, so each new token costs one
position, not the whole sequence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tunesmith.data.render import Renderer


@dataclass
class Completion:
    text: str
    finish_reason: str  # "stop": ended on its own; "length": hit max_new_tokens
    prompt_tokens: int
    completion_tokens: int


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    eos = model.generation_config.eos_token_id
    ids = [eos] if isinstance(eos, int) else list(eos or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


@torch.inference_mode()
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
) -> list[Completion]:
    stops = stop_token_ids(model, tokenizer)
    renderer = renderer or Renderer(tokenizer, stop_token_ids=stops)
    prompts = [renderer.prompt_ids(c) for c in conversations]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: list[Completion | None] = [None] * len(prompts)
    if seed is not None:
        torch.manual_seed(seed)
    model.eval()
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = max(len(prompts[i]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            ids[row, width - len(prompts[i]) :] = torch.tensor(prompts[i])
            mask[row, width - len(prompts[i]) :] = 1
        sampling = temperature > 0
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=sampling,
            temperature=temperature if sampling else None,
            top_p=top_p if sampling else None,
            top_k=None,
            eos_token_id=stops,
            pad_token_id=pad,
        )
        for row, i in enumerate(idx):
            new = out[row, width:].tolist()
            cut = next((k for k, t in enumerate(new) if t in stops), None)
            tokens = new if cut is None else new[:cut]
            results[i] = Completion(
                text=tokenizer.decode(tokens, skip_special_tokens=True),
                finish_reason="length" if cut is None else "stop",
                prompt_tokens=len(prompts[i]),
                completion_tokens=len(tokens) + (0 if cut is None else 1),
            )
    return [r for r in results if r is not None]
