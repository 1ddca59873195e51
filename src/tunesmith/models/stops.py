"""The one source of stop ids: the tokens that end a reply, for training (the last token trained on each
reply), generation (where decoding stops), serving and export (the generation config written out).

A model's stops are its generation config's ``eos_token_id`` (an int, a list, or nothing) plus the
tokenizer's EOS token, in that order, without repeats.
"""

from __future__ import annotations

from pathlib import Path
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


def model_stop_ids(name: str) -> list[int]:
    """The EOS ids of a model's generation config, read without loading its weights (the dataset doctor
    runs before any weights are loaded); the Renderer adds the tokenizer's EOS to them, as
    ``stop_token_ids`` does for a loaded model."""
    from transformers import GenerationConfig

    from tunesmith import runs
    from tunesmith.models.load import resolve

    source = resolve(name)
    path = source.path
    if source.kind == "gguf":
        return []  # load_gguf stops on the tokenizer's EOS, which the Renderer adds anyway
    if source.kind == "run":
        info = runs.read_run(Path(source.path))
        if info["method"] != "full":
            return model_stop_ids(info["base_model"])
        path = str(Path(source.path) / info["weights_dir"])
    try:
        eos = GenerationConfig.from_pretrained(path, local_files_only=source.kind != "hub").eos_token_id
    except (OSError, ValueError):
        return []
    return eos_list(eos)
