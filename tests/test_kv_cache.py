"""The in-place KV cache: the same keys, values and greedy tokens as transformers' DynamicCache, with the
storage written in place rather than re-copied at every step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers.cache_utils import DynamicLayer

from tunesmith.generate import generate, generate_batch
from tunesmith.kv_cache import GrowingLayer, cache_argument, growing_cache
from tunesmith.models.load import load_model


def kv(batch: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 2, length, 8, generator=g), torch.randn(batch, 2, length, 4, generator=g)


@pytest.mark.parametrize("headroom", [0, 3, 64])
def test_updates_match_dynamic_layer_and_reuse_storage(headroom: int) -> None:
    growing, plain = GrowingLayer(headroom), DynamicLayer()
    buffers = set()
    for step, length in enumerate([5, 1, 1, 1, 1, 2, 1, 7]):
        k, v = kv(3, length, step)
        gk, gv = growing.update(k, v)
        pk, pv = plain.update(k, v)
        assert torch.equal(gk, pk) and torch.equal(gv, pv)
        assert growing.get_seq_length() == plain.get_seq_length()
        buffers.add(gk.untyped_storage().data_ptr())
    # 19 positions in all: room for 64 after the first update means one buffer for the whole sequence;
    # without room asked for, the buffer doubles when full (5 -> 10 -> 22; 5 + 3 -> 16 -> 38).
    assert len(buffers) == {64: 1, 0: 2, 3: 3}[headroom]


def test_changes_made_from_outside_are_kept() -> None:
    """crop and batch_select replace keys/values; the next update must build on what they left."""
    growing, plain = GrowingLayer(16), DynamicLayer()
    for layer in (growing, plain):
        layer.update(*kv(4, 6, 0))
        layer.update(*kv(4, 1, 1))
        layer.crop(-2)
        layer.batch_select_indices(torch.tensor([0, 2]))
    for step in range(3):
        gk, gv = growing.update(*kv(2, 1, 10 + step))
        pk, pv = plain.update(*kv(2, 1, 10 + step))
        assert torch.equal(gk, pk) and torch.equal(gv, pv)
    growing.reset()
    assert growing.get_seq_length() == 0
    gk, _ = growing.update(*kv(1, 2, 5))
    assert torch.equal(gk, kv(1, 2, 5)[0])


def greedy_both_ways(model, lengths: list[int], new_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same left-padded batch decoded greedily with HF's default cache and with the growing one."""
    g = torch.Generator().manual_seed(1)
    width = max(lengths)
    ids = torch.randint(3, model.config.vocab_size, (len(lengths), width), generator=g)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, : width - n] = 2
        mask[row, width - n :] = 1
    kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, do_sample=False, pad_token_id=2)
    kw["eos_token_id"] = -1  # run every row to the end, so every step is compared
    with torch.inference_mode():
        plain = model.generate(**kw)
        cache = growing_cache(model, headroom=new_tokens)
        assert cache is not None and all(isinstance(layer, GrowingLayer) for layer in cache.layers)
        growing = model.generate(**kw, **{cache_argument(model): cache})
    return plain, growing


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_greedy_generation_is_unchanged(tiny_model_dir: Path, dtype: torch.dtype) -> None:
    model, _, _ = load_model(tiny_model_dir, dtype=dtype)
    plain, growing = greedy_both_ways(model, [3, 11, 30, 7, 18], new_tokens=20)
    assert torch.equal(plain, growing)


def test_generate_batch_decodes_with_the_growing_cache(tiny_model_dir: Path) -> None:
    """tunesmith's batch call (used by generate, eval, the bakeoff and the benchmark) really hands the model
    the growing cache at every forward pass, prefill and decode steps alike."""
    model, _, _ = load_model(tiny_model_dir)
    seen: list[list[str]] = []

    def record(_module, _args, kwargs):  # type: ignore[no-untyped-def]
        cache = kwargs.get(cache_argument(model))
        seen.append(sorted({type(layer).__name__ for layer in getattr(cache, "layers", [])}))

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        ids, mask = torch.full((2, 6), 5), torch.ones(2, 6, dtype=torch.long)
        with torch.inference_mode():
            out = generate_batch(model, ids, mask, max_new_tokens=5, min_new_tokens=5, stops=[2], pad=2)
    finally:
        handle.remove()
    assert out.shape == (2, 11) and len(seen) == 5
    assert all(names == ["GrowingLayer"] for names in seen), seen


@pytest.mark.slow
def test_greedy_generation_is_unchanged_on_the_default_model_in_bf16() -> None:
    """bf16 is where a static cache changed 1 token in 8; the growing cache attends over exactly the same
    positions as the default one, so the tokens must be identical."""
    model, tok, _ = load_model("smollm2-135m", dtype=torch.bfloat16)
    plain, growing = greedy_both_ways(model, [40, 90, 64, 120], new_tokens=24)
    assert torch.equal(plain, growing)
    replies = generate(model, tok, [[{"role": "user", "content": "What is the capital of France?"}]], max_new_tokens=24)
    assert "Paris" in replies[0].text
