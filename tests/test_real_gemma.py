"""The second embedded model, Gemma 3 270M (a base model), for real: assembled from its chunk packages, loaded
through the alias, and prompted in distribution by the fallback template's BOS. One short test."""

from __future__ import annotations

import math

import pytest
import torch

pytestmark = pytest.mark.slow


def test_gemma3_alias_loads_and_the_fallback_bos_keeps_it_in_distribution() -> None:
    from tunesmith.data.render import Renderer
    from tunesmith.models.load import load_model

    model, tok, source = load_model("gemma3-270m")
    assert source.kind == "alias" and type(model).__name__ == "Gemma3ForCausalLM"
    assert 260e6 < sum(p.numel() for p in model.parameters()) < 280e6
    renderer = Renderer(tok)
    text = renderer.conversation_text(
        [{"role": "user", "content": "Where is my order?"}, {"role": "assistant", "content": "It ships today."}]
    )
    assert text.startswith("<bos>### user:") and text.endswith("It ships today.<eos>\n\n")

    sentence = "The quick brown fox jumps over the lazy dog, and the farmer watches from the porch."

    def perplexity(ids: list[int]) -> float:
        x = torch.tensor([ids])
        with torch.no_grad():
            return math.exp(model(x, labels=x).loss.item())

    plain = tok(sentence, add_special_tokens=False)["input_ids"]
    with_bos, without = perplexity([tok.bos_token_id, *plain]), perplexity(plain)
    assert with_bos * 10 < without, (with_bos, without)  # measured: ~16 with BOS, ~1400 without
