"""The one source of stop ids: the tokens that end a reply, for training (the last token trained on each
reply), generation (where decoding stops), serving and export (the generation config written out).

A model's stops are its generation config's ``eos_token_id`` (an int, a list, or nothing), then the chat
template's end-of-turn token (measured from the template: <|im_end|>, <|eot_id|>, <end_of_turn>, ...), then the
tokenizer's EOS token, in that order, without repeats. The same list whatever loaded the model: a GGUF file's
generation config knows only EOS, so without the template's end-of-turn a Gemma-it model would train
``<end_of_turn><eos>`` on its last turn and stop on neither in generation. (``models.load.model_stop_ids``
reads the generation config's part from a model's files, before any weights are loaded.)
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


def template_stops(tokenizer: Any, generation_eos: int | list[int] | None = None) -> list[int]:
    """``generation_eos``, then the chat template's end-of-turn token, then the tokenizer's EOS."""
    from tunesmith.data.chat_templates import end_of_turn_id

    out = eos_list(generation_eos)
    eot = end_of_turn_id(tokenizer)
    if eot is not None and eot not in out:
        out.append(eot)
    return with_tokenizer_eos(out, tokenizer)


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """The stops of a loaded model."""
    return template_stops(tokenizer, model.generation_config.eos_token_id)
