"""Speed levers that must not change results: generation timing, torch.compile."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunesmith.generate import GenerationStats, generate
from tunesmith.models.load import load_model

from .conftest import chat_rows, write_jsonl


def test_generation_stats_time_the_prefill_and_count_decoded_tokens(tiny_model_dir: Path) -> None:
    model, tok, _ = load_model(str(tiny_model_dir))
    convs = [[{"role": "user", "content": text}] for text in ("Hi", "Paint the car red", "What is two plus two?")]
    stats = GenerationStats()
    timed = generate(model, tok, convs, max_new_tokens=6, batch_size=2, stats=stats)
    plain = generate(model, tok, convs, max_new_tokens=6, batch_size=2)
    assert [c.text for c in timed] == [c.text for c in plain], "timing must not change the output"
    assert stats.batches == 2 and len(stats.ttft_s or []) == 2 and all(t > 0 for t in stats.ttft_s or [])
    # The first token of each row comes from the prefill; every later one, up to and including a stop
    # token, is a decoded token.
    assert stats.decode_tokens == sum(c.completion_tokens - 1 for c in timed) > 0
    assert stats.decode_s > 0 and stats.decode_tokens_per_s is not None
    assert "time to first token" in stats.summary() and "decode" in stats.summary()


@pytest.mark.slow
def test_compiled_layers_give_the_eager_loss_and_gradients(tmp_path: Path, tiny_model_dir: Path) -> None:
    """torch.compile on each decoder layer (the --compile path) through PEFT's LoRA layers and the packed
    4-D mask. The aot_eager backend traces and runs the same graphs as inductor without its C++ code
    generation, which takes minutes on 2 cores; inductor itself is measured in BENCHMARKS.md."""
    import torch

    from tunesmith.config import LoraSettings
    from tunesmith.data.formats import read_examples
    from tunesmith.data.render import Renderer
    from tunesmith.models.lora import add_lora
    from tunesmith.train.batches import to_batch
    from tunesmith.train.loss import causal_lm_parts, token_loss_and_accuracy
    from tunesmith.train.pipeline import compile_layers

    def loss_and_grads(compiled: bool, batch: dict[str, torch.Tensor]) -> tuple[float, dict[str, torch.Tensor]]:
        torch.manual_seed(0)
        model, _, _ = load_model(str(tiny_model_dir))
        model = add_lora(model, LoraSettings(r=4, alpha=8, dropout=0.0))
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.02)
        if compiled:
            compile_layers(model, backend="aot_eager")
            layers = causal_lm_parts(model)[0].layers
            assert all(layer._compiled_call_impl is not None for layer in layers)
        loss, _, _ = token_loss_and_accuracy(model, batch)
        loss.backward()
        return float(loss), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}

    _, tok, _ = load_model(str(tiny_model_dir))
    rows, _ = Renderer(tok).render_all(
        read_examples(write_jsonl(Path(tiny_model_dir).parent / "c.jsonl", chat_rows(4))).examples
    )
    batch = to_batch([[rows[0], rows[1]], [rows[2], rows[3]]], tok.pad_token_id)  # two packed rows
    eager_loss, eager_grads = loss_and_grads(False, batch)
    compiled_loss, compiled_grads = loss_and_grads(True, batch)
    assert compiled_loss == pytest.approx(eager_loss, rel=1e-5)
    for name, g in eager_grads.items():
        torch.testing.assert_close(compiled_grads[name], g, atol=1e-5, rtol=1e-4, msg=name)
