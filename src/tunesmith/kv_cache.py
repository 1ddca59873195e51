"""A KV cache that grows in place instead of being copied at every decoding step.

transformers' ``DynamicLayer`` appends each step's keys and values with ``torch.cat``, which copies the whole
cache of every layer once per generated token: at batch 8 on the default model, ~200 cached positions means
~37 MB copied per step, a noticeable share of a CPU decode step. ``GrowingLayer`` keeps the cache in a larger
buffer and writes only the new positions into it; attention gets a view of the filled part. The values and
the attended length are exactly those of ``DynamicLayer`` (unlike a static cache, which attends over its whole
preallocated length behind a mask and so rounds differently in bf16), so greedy output does not change.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class GrowingLayer(DynamicLayer):
    """A ``DynamicLayer`` whose storage has room to grow along the sequence axis.

    ``headroom`` is how many positions to reserve beyond what the first update brings (generation knows it:
    ``max_new_tokens``); without it, the buffer doubles whenever it is full. Anything that replaces
    ``keys``/``values`` from outside (``crop``, ``batch_select_indices``, beam reordering, ``reset``) is
    noticed at the next update, which then starts a new buffer from what is there."""

    def __init__(self, headroom: int = 0) -> None:
        super().__init__()
        self.headroom = headroom
        self._store: tuple[torch.Tensor, torch.Tensor] | None = None
        self._views: tuple[torch.Tensor, torch.Tensor] | None = None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        held = self.get_seq_length()
        total = held + key_states.shape[-2]
        if not self._fits(key_states, value_states, total):
            self._grow(key_states, value_states, held, total)
        assert self._store is not None
        keys, values = self._store
        keys[..., held:total, :].copy_(key_states)
        values[..., held:total, :].copy_(value_states)
        self.keys, self.values = keys[..., :total, :], values[..., :total, :]
        self._views = (self.keys, self.values)
        return self.keys, self.values

    def _fits(self, key_states: torch.Tensor, value_states: torch.Tensor, total: int) -> bool:
        if self._store is None or self._views is None:
            return False
        if self.keys is not self._views[0] or self.values is not self._views[1]:
            return False  # replaced from outside since the last update
        keys, values = self._store
        return (
            total <= keys.shape[-2]
            and keys.shape[:-2] == key_states.shape[:-2]
            and keys.shape[-1] == key_states.shape[-1]
            and values.shape[-1] == value_states.shape[-1]
            and keys.dtype == key_states.dtype
        )

    def _grow(self, key_states: torch.Tensor, value_states: torch.Tensor, held: int, total: int) -> None:
        capacity = total + (self.headroom or total)

        def storage(current: torch.Tensor | None, new: torch.Tensor) -> torch.Tensor:
            store = new.new_empty((*new.shape[:-2], capacity, new.shape[-1]))
            if held and current is not None:
                store[..., :held, :].copy_(current)
            return store

        self._store = (storage(self.keys, key_states), storage(self.values, value_states))
        self.headroom = 0  # later growth (past what was asked for) doubles

    def reset(self) -> None:
        self._store = self._views = None
        super().reset()


def growing_cache(model: Any, headroom: int = 0) -> DynamicCache | None:
    """A ``DynamicCache`` for ``model`` whose full-attention layers are ``GrowingLayer``s; other layer kinds
    (sliding window and the like) stay as transformers builds them. ``None`` where the model does not use
    transformers' dynamic cache, so the caller leaves the choice to ``generate``."""
    supports = getattr(model, "_supports_default_dynamic_cache", None)
    config = model.config
    if supports is None or not supports() or getattr(config, "is_encoder_decoder", False):
        return None
    if getattr(getattr(model, "generation_config", None), "cache_implementation", None) not in (None, "dynamic"):
        return None  # the model asks for another kind of cache
    try:
        cache = DynamicCache(config=config.get_text_config(decoder=True))
    except (KeyError, ValueError, AttributeError, TypeError):
        return None
    cache.layers = [GrowingLayer(headroom) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


def cache_argument(model: Any) -> str:
    """The keyword the model's forward takes its cache by: transformers renamed ``past_key_values`` to
    ``cache`` during 5.x."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
