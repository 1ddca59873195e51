"""The one source of stop ids: the tokens that end a reply, for training (the last token trained on each
reply), generation (where decoding stops), serving and export (the generation config written out).

A model's stops are its generation config's ``eos_token_id`` (an int, a list, or nothing) plus the
tokenizer's EOS token, in that order, without repeats. (``models.load.model_stop_ids`` reads them from a
model's files, before any weights are loaded.)
"""

from __future__ import annotations

from typing import Any


def eos_list(eos: int | list[int] | None) -> list[int]:
    """A generation config's ``eos_token_id``, whichever of its three shapes, as a list."""
    return [eos] if isinstance(eos, int) else list(eos or [])


def with_tokenizer_eos(ids: list[int], tokenizer: Any) -> list[int]:
    """``ids`` and then the tokenizer's EOS token, if it has one that is not already there."""
    out = list(ids)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in out:
        out.append(tokenizer.eos_token_id)
    return out


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """The stops of a loaded model."""
    return with_tokenizer_eos(eos_list(model.generation_config.eos_token_id), tokenizer)
